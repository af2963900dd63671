//! etcd's side of the wire, for the fuzz targets: the recorded real answers
//! (`microlock-proto/tests/fixtures/`), well-formed answers made to measure, and an oracle that
//! says which answers no lock may accept.

use std::sync::OnceLock;

use microlock_proto::http::{HeaderValue, Response};
use microlock_proto::MAX_RESPONSE_BYTES;
use serde_json::{json, Value};

/// One recorded etcd answer.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// `etcd-3.4` or `etcd-3.5`.
    pub version: &'static str,
    /// The file name without `.json`, e.g. `lock_ok`.
    pub name: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// The recorded `X-Etcd-Index`.
    pub etcd_index: Option<String>,
    /// The exact body.
    pub body: String,
}

impl Fixture {
    /// The answer as an adapter would hand it to the machine.
    pub fn response(&self) -> Response<Vec<u8>> {
        response(
            self.status,
            self.etcd_index.as_deref().map(str::as_bytes),
            self.body.as_bytes().to_vec(),
        )
    }
}

macro_rules! fixture_files {
    ($($name:literal),* $(,)?) => {
        &[
            $(
                ("etcd-3.4", $name, include_str!(concat!(
                    "../../microlock-proto/tests/fixtures/etcd-3.4/", $name, ".json"))),
                ("etcd-3.5", $name, include_str!(concat!(
                    "../../microlock-proto/tests/fixtures/etcd-3.5/", $name, ".json"))),
            )*
        ]
    };
}

const FIXTURE_FILES: &[(&str, &str, &str)] = fixture_files![
    "bad_ttl",
    "get_missing",
    "get_ok",
    "get_ok_unicode",
    "lock_conflict",
    "lock_ok",
    "lock_ok_unicode",
    "refresh_with_value",
    "refresh_without_ttl",
    "renew_missing",
    "renew_ok",
    "renew_other",
    "root_read_only",
    "unlock_missing",
    "unlock_ok",
    "unlock_ok_unicode",
    "unlock_other",
    "watch_cleared",
    "watch_compare_and_delete",
    "watch_compare_and_swap",
    "watch_create",
    "watch_delete",
    "watch_expire",
    "watch_set",
    "watch_update",
];

/// Every recorded answer of etcd 3.4.23 and 3.5.1 (50 of them).
pub fn fixtures() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        FIXTURE_FILES
            .iter()
            .map(|&(version, name, text)| {
                let v: Value = serde_json::from_str(text).expect("fixture JSON");
                let r = &v["response"];
                Fixture {
                    version,
                    name,
                    status: r["status"].as_u64().expect("status") as u16,
                    etcd_index: r["headers"]["x-etcd-index"].as_str().map(str::to_owned),
                    body: r["body"].as_str().expect("body").to_owned(),
                }
            })
            .collect()
    })
}

/// The recorded answer `name` of `version`.
pub fn fixture(version: &str, name: &str) -> &'static Fixture {
    fixtures()
        .iter()
        .find(|f| f.version == version && f.name == name)
        .unwrap_or_else(|| panic!("no fixture {version}/{name}"))
}

/// A response; `status` outside 100..=999 becomes 100 + status % 900, an `X-Etcd-Index`
/// value `http` refuses (control characters) is left out, as hyper would refuse the answer.
pub fn response(status: u16, etcd_index: Option<&[u8]>, body: Vec<u8>) -> Response<Vec<u8>> {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        100 + status % 900
    };
    let mut r = Response::new(body);
    *r.status_mut() = microlock_proto::http::StatusCode::from_u16(status).expect("100..=999");
    if let Some(value) = etcd_index.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        r.headers_mut().insert("x-etcd-index", value);
    }
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn json_response(status: u16, etcd_index: u64, body: &Value) -> Response<Vec<u8>> {
    let mut text = body.to_string();
    text.push('\n');
    response(
        status,
        Some(etcd_index.to_string().as_bytes()),
        text.into_bytes(),
    )
}

/// A node as etcd describes it (`value: None` for a directory).
pub fn node(key: &str, value: Option<&str>, created: u64, modified: u64) -> Value {
    match value {
        Some(value) => json!({
            "key": format!("/{key}"), "value": value, "ttl": 5,
            "modifiedIndex": modified, "createdIndex": created,
        }),
        None => json!({
            "key": format!("/{key}"), "dir": true,
            "modifiedIndex": modified, "createdIndex": created,
        }),
    }
}

/// `201 create`.
pub fn created(key: &str, value: &str, index: u64) -> Response<Vec<u8>> {
    let body = json!({ "action": "create", "node": node(key, Some(value), index, index) });
    json_response(201, index, &body)
}

/// `200 compareAndSwap` (a renew).
pub fn refreshed(key: &str, value: &str, created: u64, modified: u64) -> Response<Vec<u8>> {
    let n = node(key, Some(value), created, modified);
    let body = json!({ "action": "compareAndSwap", "node": n.clone(), "prevNode": n });
    json_response(200, modified, &body)
}

/// `200 compareAndDelete` (an unlock).
pub fn deleted(key: &str, value: &str, created: u64, modified: u64) -> Response<Vec<u8>> {
    let body = json!({
        "action": "compareAndDelete",
        "node": { "key": format!("/{key}"), "modifiedIndex": modified, "createdIndex": created },
        "prevNode": node(key, Some(value), created, created),
    });
    json_response(200, modified, &body)
}

/// `200 get` of a quorum read (`value: None`: a directory).
pub fn got(
    key: &str,
    value: Option<&str>,
    created: u64,
    modified: u64,
    index: u64,
) -> Response<Vec<u8>> {
    let body = json!({ "action": "get", "node": node(key, value, created, modified) });
    json_response(200, index, &body)
}

/// An etcd error body.
pub fn error(status: u16, code: u64, message: &str, cause: &str, index: u64) -> Response<Vec<u8>> {
    let body = json!({ "errorCode": code, "message": message, "cause": cause, "index": index });
    json_response(status, index, &body)
}

/// `412` errorCode 105.
pub fn exists(key: &str, index: u64) -> Response<Vec<u8>> {
    error(412, 105, "Key already exists", &format!("/{key}"), index)
}

/// `412` errorCode 101.
pub fn compare_failed(index: u64) -> Response<Vec<u8>> {
    error(412, 101, "Compare failed", "[node != other]", index)
}

/// `404` errorCode 100.
pub fn not_found(key: &str, index: u64) -> Response<Vec<u8>> {
    error(404, 100, "Key not found", &format!("/{key}"), index)
}

/// `400` errorCode 401: the watch's history was cleared.
pub fn cleared(index: u64) -> Response<Vec<u8>> {
    error(
        400,
        401,
        "The event in requested index is outdated and cleared",
        "the requested history has been cleared",
        index,
    )
}

/// `500` errorCode 300: the write may or may not have committed.
pub fn raft_error() -> Response<Vec<u8>> {
    error(
        500,
        300,
        "Raft Internal Error",
        "etcdserver: request timed out",
        0,
    )
}

/// A watch event (`X-Etcd-Index` is where the watch started, as etcd sends it).
pub fn watch_event(
    key: &str,
    action: &str,
    value: Option<&str>,
    previous: Option<&str>,
    created: u64,
    modified: u64,
    watch_index: u64,
) -> Response<Vec<u8>> {
    let mut n =
        json!({ "key": format!("/{key}"), "modifiedIndex": modified, "createdIndex": created });
    if let Some(value) = value {
        n["value"] = json!(value);
    }
    let mut body = json!({ "action": action, "node": n });
    if let Some(previous) = previous {
        body["prevNode"] = node(
            key,
            Some(previous),
            created.min(modified),
            created.min(modified),
        );
    }
    json_response(200, watch_index, &body)
}

/// A 200 with no body: how a member ends a long poll without an event.
pub fn empty_close() -> Response<Vec<u8>> {
    response(200, None, Vec::new())
}

/// `base` padded with trailing spaces to exactly `len` bytes (still the same JSON).
pub fn padded(base: &[u8], len: usize) -> Vec<u8> {
    let mut body = base.to_vec();
    body.resize(len.max(base.len()), b' ');
    body
}

/// What a response is, judged independently of microlock-proto's parser.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// No lock may accept it: the machine must treat it as a [`Protocol`] failure.
    ///
    /// [`Protocol`]: microlock_proto::Error::Protocol
    Garbage(&'static str),
    /// A 2xx with an empty (all whitespace) body.
    Empty,
    /// A 2xx JSON object with a string `action`.
    Action(Value),
    /// A 4xx/5xx etcd error body.
    EtcdError {
        /// The HTTP status.
        status: u16,
        /// `errorCode`.
        code: u64,
        /// `index`, else the `X-Etcd-Index` header.
        index: Option<u64>,
    },
    /// Well-formed enough JSON that the oracle makes no claim about (e.g. a number out of
    /// `f64` range in an ignored field).
    Unclear,
}

/// The `X-Etcd-Index` header: `Ok(None)` when absent, `Err` (the raw value) when not a number.
pub fn etcd_index(r: &Response<Vec<u8>>) -> Result<Option<u64>, String> {
    match r.headers().get("x-etcd-index") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| format!("{v:?}")),
    }
}

/// Judges `r` by etcd's documented shapes: a body over [`MAX_RESPONSE_BYTES`], a status that
/// is neither 2xx nor 4xx/5xx, a non-numeric `X-Etcd-Index`, a body that is not UTF-8 or not
/// JSON, or JSON of the wrong shape (not an object, `action` / `errorCode` / `message` of the
/// wrong type) is garbage.
pub fn shape(r: &Response<Vec<u8>>) -> Shape {
    let status = r.status().as_u16();
    let body = r.body();
    if body.len() > MAX_RESPONSE_BYTES {
        return Shape::Garbage("body larger than MAX_RESPONSE_BYTES");
    }
    let Ok(header_index) = etcd_index(r) else {
        return Shape::Garbage("X-Etcd-Index is not a number");
    };
    if !(200..=299).contains(&status) && !(400..=599).contains(&status) {
        return Shape::Garbage("status is neither 2xx nor 4xx/5xx");
    }
    if (200..=299).contains(&status) && body.iter().all(u8::is_ascii_whitespace) {
        return Shape::Empty;
    }
    if std::str::from_utf8(body).is_err() {
        return Shape::Garbage("body is not UTF-8");
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return Shape::Garbage("body is not JSON");
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Shape::Unclear;
    };
    if !v.is_object() {
        return Shape::Garbage("body is JSON but not an object");
    }
    if (200..=299).contains(&status) {
        if !v["action"].is_string() {
            return Shape::Garbage("2xx body without a string `action`");
        }
        return Shape::Action(v);
    }
    match (v["errorCode"].as_u64(), v["message"].is_string()) {
        (Some(code), true) => Shape::EtcdError {
            status,
            code,
            index: v["index"].as_u64().or(header_index),
        },
        _ => Shape::Garbage("4xx/5xx body without a numeric `errorCode` and a `message`"),
    }
}
