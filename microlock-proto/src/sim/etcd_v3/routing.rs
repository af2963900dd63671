//! The HTTP side: Go's `net/http` (path unescaping, clean-path redirects, the mux's 404), the
//! gateway's routes and methods, body decoding, and the dispatch of each RPC.

use std::time::Instant;

use http::{Method, Request, Response};

use super::gojson::{self, Body, Obj as In};
use super::render::{self, Obj};
use super::requests::{self, Refusal, WatchReq};
use super::watch::Watcher;
use super::{EtcdVersion, SimEtcdV3};

const TIMED_OUT: Refusal = (14, "etcdserver: request timed out");

/// The RPCs modelled, by path under `/v3/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compaction,
    LeaseGrant,
    LeaseRevoke,
    LeaseKeepAlive,
    LeaseTimeToLive,
    LeaseLeases,
    Watch,
}

fn rpc(path: &str) -> Option<Rpc> {
    Some(match path {
        "kv/range" => Rpc::Range,
        "kv/put" => Rpc::Put,
        "kv/deleterange" => Rpc::DeleteRange,
        "kv/txn" => Rpc::Txn,
        "kv/compaction" => Rpc::Compaction,
        "lease/grant" => Rpc::LeaseGrant,
        "lease/revoke" => Rpc::LeaseRevoke,
        "lease/keepalive" => Rpc::LeaseKeepAlive,
        "lease/timetolive" => Rpc::LeaseTimeToLive,
        "lease/leases" => Rpc::LeaseLeases,
        "watch" => Rpc::Watch,
        _ => return None,
    })
}

fn build(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::builder().status(status);
    for (n, v) in headers {
        r = r.header(*n, *v);
    }
    r.body(body).expect("static response parts are valid")
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    build(
        status,
        &[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Content-Type-Options", "nosniff"),
        ],
        body.as_bytes().to_vec(),
    )
}

fn json_ok(body: Vec<u8>) -> Response<Vec<u8>> {
    build(
        200,
        &[
            ("Content-Type", "application/json"),
            ("Grpc-Metadata-Content-Type", "application/grpc"),
        ],
        body,
    )
}

pub(super) fn json_error(version: EtcdVersion, (code, message): (u32, &str)) -> Response<Vec<u8>> {
    build(
        render::http_status(version, code),
        &[("Content-Type", "application/json")],
        render::unary_error(version, code, message),
    )
}

/// Go's `url.PathUnescape` of the path, or `None` for a bad `%` escape.
fn unescape(path: &str) -> Option<Vec<u8>> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = b.get(i + 1).copied().and_then(hex)?;
            let lo = b.get(i + 2).copied().and_then(hex)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Go's `path.Clean` as the mux applies it (a trailing slash is kept).
fn clean(p: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in p.split(|&c| c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = Vec::new();
    for s in &parts {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    let trailing = p.ends_with(b"/") || p.ends_with(b"/.") || p.ends_with(b"/..");
    if out.is_empty() || trailing && !out.ends_with(b"/") {
        out.push(b'/');
    }
    out
}

/// Where the request goes: an answer from the HTTP layer, or a gateway RPC.
enum Route {
    Answer(Response<Vec<u8>>),
    Rpc(Rpc),
}

fn route(req: &Request<Vec<u8>>) -> Route {
    if req.method() == Method::OPTIONS {
        return Route::Answer(build(200, &[], Vec::new()));
    }
    let Some(path) = unescape(req.uri().path()) else {
        return Route::Answer(build(
            400,
            &[
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Connection", "close"),
            ],
            b"400 Bad Request".to_vec(),
        ));
    };
    let cleaned = clean(&path);
    let cleaned = if cleaned == b"/v3" {
        b"/v3/".to_vec()
    } else {
        cleaned
    };
    if cleaned != path {
        let mut location = String::from_utf8_lossy(&cleaned).into_owned();
        if let Some(q) = req.uri().query() {
            location.push('?');
            location.push_str(q);
        }
        return Route::Answer(build(301, &[("Location", &location)], Vec::new()));
    }
    let rest = path
        .strip_prefix(b"/v3/")
        .or_else(|| path.strip_prefix(b"/v3beta/"));
    let Some(rest) = rest else {
        return Route::Answer(text(404, "404 page not found\n"));
    };
    match std::str::from_utf8(rest).ok().and_then(rpc) {
        None => Route::Answer(text(404, "Not Found\n")),
        Some(_) if req.method() != Method::POST => Route::Answer(text(405, "Method Not Allowed\n")),
        Some(rpc) => Route::Rpc(rpc),
    }
}

/// The decoded body, or the decoding error's text.
fn with_body<T>(
    version: EtcdVersion,
    body: &[u8],
    f: impl FnOnce(&In<'_>) -> Result<T, String>,
) -> Result<T, String> {
    match gojson::decode_body(body)? {
        Body::Empty => f(&In::empty(version)),
        Body::Value(v) => f(&In::new(&v, version)?),
    }
}

pub(super) fn handle(
    etcd: &mut SimEtcdV3,
    req: &Request<Vec<u8>>,
    now: Instant,
) -> Response<Vec<u8>> {
    let rpc = match route(req) {
        Route::Answer(r) => return r,
        Route::Rpc(rpc) => rpc,
    };
    let version = etcd.version;
    match rpc {
        Rpc::Watch => match open_watch(etcd, req, now) {
            Ok(mut w) => json_ok(w.take_lines().concat()),
            Err(r) => r,
        },
        Rpc::LeaseKeepAlive => keepalive(etcd, req, now),
        _ => {
            let bad = |m: String| json_error(version, (3, &m));
            let answer = match rpc {
                Rpc::Range => match with_body(version, req.body(), requests::range) {
                    Err(m) => return bad(m),
                    Ok(r) => requests::check_range(&r).and_then(|()| {
                        etcd.quorum(r.serializable)?;
                        etcd.apply_range(&r, etcd.store.revision()).map(Obj::done)
                    }),
                },
                Rpc::Put => match with_body(version, req.body(), requests::put) {
                    Err(m) => return bad(m),
                    Ok(p) => requests::check_put(&p).and_then(|()| {
                        etcd.quorum(false)?;
                        etcd.put(&p)
                    }),
                },
                Rpc::DeleteRange => match with_body(version, req.body(), requests::delete) {
                    Err(m) => return bad(m),
                    Ok(d) => requests::check_delete(&d).and_then(|()| {
                        etcd.quorum(false)?;
                        Ok(etcd.delete(&d))
                    }),
                },
                Rpc::Txn => match with_body(version, req.body(), requests::txn) {
                    Err(m) => return bad(m),
                    Ok(t) => requests::check_txn(&t).and_then(|()| {
                        etcd.quorum(SimEtcdV3::txn_is_serializable(&t))?;
                        etcd.txn(&t)
                    }),
                },
                Rpc::Compaction => {
                    match with_body(version, req.body(), |o| {
                        let rev = o.int64("revision", "revision")?;
                        o.bool("physical", "physical")?;
                        Ok(rev)
                    }) {
                        Err(m) => return bad(m),
                        Ok(rev) => etcd.quorum(false).and_then(|()| etcd.compact(rev)),
                    }
                }
                Rpc::LeaseGrant => match with_body(version, req.body(), |o| {
                    Ok((o.int64("TTL", "TTL")?, o.int64("ID", "ID")?))
                }) {
                    Err(m) => return bad(m),
                    Ok((ttl, id)) => {
                        if ttl > super::lease::MAX_LEASE_TTL {
                            etcd.lease_grant(ttl, id, now)
                        } else {
                            etcd.quorum(false)
                                .and_then(|()| etcd.lease_grant(ttl, id, now))
                        }
                    }
                },
                Rpc::LeaseRevoke => match with_body(version, req.body(), |o| o.int64("ID", "ID")) {
                    Err(m) => return bad(m),
                    Ok(id) => etcd.quorum(false).and_then(|()| etcd.lease_revoke(id)),
                },
                Rpc::LeaseTimeToLive => match with_body(version, req.body(), |o| {
                    Ok((o.int64("ID", "ID")?, o.bool("keys", "keys")?))
                }) {
                    Err(m) => return bad(m),
                    Ok((id, keys)) => etcd
                        .quorum(false)
                        .map(|()| etcd.lease_time_to_live(id, keys, now)),
                },
                Rpc::LeaseLeases => match with_body(version, req.body(), |_| Ok(())) {
                    Err(m) => return bad(m),
                    Ok(()) => Ok(etcd.lease_leases()),
                },
                Rpc::Watch | Rpc::LeaseKeepAlive => unreachable!("handled above"),
            };
            match answer {
                Ok(body) => json_ok(body),
                Err(refusal) => json_error(version, refusal),
            }
        }
    }
}

/// A stream's decoding error: 500, gRPC `Unknown`.
fn stream_decode_error(version: EtcdVersion, message: &str) -> Response<Vec<u8>> {
    json_error(version, (2, message))
}

fn keepalive(etcd: &mut SimEtcdV3, req: &Request<Vec<u8>>, now: Instant) -> Response<Vec<u8>> {
    let version = etcd.version;
    let id = match gojson::decode_body(req.body()) {
        Err(m) => return stream_decode_error(version, &m),
        // No request on the stream: no answer, the body ends.
        Ok(Body::Empty) => return json_ok(Vec::new()),
        Ok(Body::Value(v)) => match In::new(&v, version).and_then(|o| o.int64("ID", "ID")) {
            Err(m) => return stream_decode_error(version, &m),
            Ok(id) => id,
        },
    };
    if etcd.paused {
        let (code, message) = TIMED_OUT;
        return stream_failure(version, code, message);
    }
    json_ok(etcd.lease_keepalive(id, now))
}

/// A stream that fails before its first message: the code's status, the stream error body.
pub(super) fn stream_failure(version: EtcdVersion, code: u32, message: &str) -> Response<Vec<u8>> {
    build(
        render::http_status(version, code),
        &[("Content-Type", "application/json")],
        render::stream_error(code, message),
    )
}

/// A watch stream; any other request is answered whole (as `Err`).
#[allow(clippy::result_large_err)]
pub(super) fn open_watch(
    etcd: &mut SimEtcdV3,
    req: &Request<Vec<u8>>,
    now: Instant,
) -> Result<Watcher, Response<Vec<u8>>> {
    match route(req) {
        Route::Answer(r) => return Err(r),
        Route::Rpc(Rpc::Watch) => {}
        Route::Rpc(_) => return Err(handle(etcd, req, now)),
    }
    let version = etcd.version;
    let w = match gojson::decode_body(req.body()) {
        Err(m) => return Err(stream_decode_error(version, &m)),
        Ok(Body::Empty) => WatchReq::Nothing,
        Ok(Body::Value(v)) => match In::new(&v, version).and_then(|o| requests::watch(&o)) {
            Err(m) => return Err(stream_decode_error(version, &m)),
            Ok(w) => w,
        },
    };
    Ok(match w {
        WatchReq::Create(c) => Watcher::create(&etcd.ids, &etcd.store, &c),
        WatchReq::Progress => Watcher::progress(&etcd.ids, &etcd.store),
        WatchReq::Nothing => Watcher::silent(),
    })
}

impl SimEtcdV3 {
    /// Without quorum only serializable reads are served.
    fn quorum(&self, serializable: bool) -> Result<(), Refusal> {
        if self.paused && !serializable {
            Err(TIMED_OUT)
        } else {
            Ok(())
        }
    }
}
