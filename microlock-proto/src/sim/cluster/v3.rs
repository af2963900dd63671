//! The v3 store of a cluster: [`SimEtcdV3`] with its watch streams tied to request ids, the
//! time each of its messages depends on (so that a lagging member sends it late), and etcd's
//! v3 answers to a cluster's faults (timeouts without quorum, `hasleader` refusals, streams
//! ended by a member shutting down or losing its leader).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};

use super::{Delivery, PlantedBug};
use crate::sim::etcd::{Class, EtcdVersion, EventStamp};
use crate::sim::etcd_v3::{SimEtcdV3, WatchId};

/// The header the gateway forwards as the gRPC metadata `hasleader=true`.
const HAS_LEADER: &str = "grpc-metadata-hasleader";
const NO_LEADER: &str = "etcdserver: no leader";
/// gRPC `Unavailable`.
const UNAVAILABLE: u32 = 14;

#[derive(Debug)]
pub(super) struct V3Store {
    etcd: SimEtcdV3,
    start: Instant,
    /// Open streams: request id → the model's watch.
    streams: BTreeMap<u64, WatchId>,
    /// When the store's current revision was made (ns since `start`).
    revision_at: i128,
    /// Stream pieces not yet taken by the cluster, with the time each depends on.
    out: VecDeque<(u64, Delivery, i128)>,
}

/// What a v3 request is, by its path (and, for a range, its `serializable` flag).
pub(super) fn classify(req: &Request<Vec<u8>>) -> Class {
    if req.method() != Method::POST {
        return Class::Other;
    }
    let path = req.uri().path();
    let Some(rpc) = path
        .strip_prefix("/v3/")
        .or_else(|| path.strip_prefix("/v3beta/"))
    else {
        return Class::Other;
    };
    match rpc {
        "watch" => Class::Watch,
        "kv/range" if serializable(req.body()) => Class::Read,
        "lease/leases" => Class::Read,
        "kv/range" | "kv/put" | "kv/deleterange" | "kv/txn" | "kv/compaction" | "lease/grant"
        | "lease/revoke" | "lease/keepalive" | "lease/timetolive" => Class::Raft,
        _ => Class::Other,
    }
}

/// Whether a range asks to be served by the member alone.
fn serializable(body: &[u8]) -> bool {
    // Most ranges do not mention it: no parse then.
    body.windows(12).any(|w| w == b"serializable")
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("serializable")?.as_bool())
            .unwrap_or(false)
}

/// The RPC a request calls (`kv/txn`), or "".
fn rpc(req: &Request<Vec<u8>>) -> &str {
    let path = req.uri().path();
    path.strip_prefix("/v3/")
        .or_else(|| path.strip_prefix("/v3beta/"))
        .unwrap_or("")
}

impl V3Store {
    pub(super) fn new(
        start: Instant,
        version: EtcdVersion,
        planted_bug: Option<PlantedBug>,
    ) -> V3Store {
        let mut etcd = SimEtcdV3::new(version, start);
        if planted_bug == Some(PlantedBug::ShortLivedLeases) {
            etcd.plant_short_lived_leases(3);
        }
        V3Store {
            etcd,
            start,
            streams: BTreeMap::new(),
            revision_at: 0,
            out: VecDeque::new(),
        }
    }

    pub(super) fn etcd(&self) -> &SimEtcdV3 {
        &self.etcd
    }

    fn ns(&self, t: Instant) -> i128 {
        t.saturating_duration_since(self.start).as_nanos() as i128
    }

    fn stamp(&self, ns: i128) -> EventStamp {
        EventStamp {
            index: self.etcd.revision().max(0) as u64,
            committed: self.start + Duration::from_nanos(ns.max(0) as u64),
        }
    }

    /// Serves `req` at `at` (`defer_raft`: a proposal is not applied, [`Answer::Raft`]).
    pub(super) fn serve(
        &mut self,
        id: u64,
        req: &Request<Vec<u8>>,
        at: Instant,
        defer_raft: bool,
    ) -> super::backend::Answer {
        use super::backend::Answer;
        let class = classify(req);
        if defer_raft && class == Class::Raft {
            return Answer::Raft;
        }
        self.advance(at);
        let t = self.ns(at);
        if class == Class::Watch {
            return match self.etcd.open_watch(req, at) {
                Ok(watch) => {
                    self.streams.insert(id, watch);
                    // `created` and the history: as of the current revision.
                    let since = self.revision_at;
                    for line in self.etcd.poll_watch(watch) {
                        self.out.push_back((id, Delivery::Chunk(line), since));
                    }
                    let (head, ()) = Response::builder()
                        .status(200)
                        .header("Content-Type", "application/json")
                        .header("Grpc-Metadata-Content-Type", "application/grpc")
                        .body(())
                        .expect("static response parts are valid")
                        .into_parts();
                    Answer::Opened(head)
                }
                Err(response) => Answer::Now(response, None),
            };
        }
        let before = self.etcd.revision();
        let response = self.etcd.handle(req, at);
        if self.etcd.revision() != before {
            self.revision_at = t;
            self.collect(t);
        }
        // An answer through raft waits for its member to apply it.
        let stamp = (class == Class::Raft).then(|| self.stamp(t));
        Answer::Now(response, stamp)
    }

    /// The streams' new messages, as of time `t`.
    fn collect(&mut self, t: i128) {
        for (&id, &watch) in &self.streams {
            for line in self.etcd.poll_watch(watch) {
                self.out.push_back((id, Delivery::Chunk(line), t));
            }
        }
    }

    pub(super) fn poll(&mut self) -> Option<(u64, Delivery, EventStamp)> {
        let (id, delivery, t) = self.out.pop_front()?;
        Some((id, delivery, self.stamp(t)))
    }

    /// The client closed stream `id`.
    pub(super) fn close(&mut self, id: u64) {
        if let Some(watch) = self.streams.remove(&id) {
            self.etcd.close_watch(watch);
        }
        self.out.retain(|(i, _, _)| *i != id);
    }

    /// Stream `id` ends with `error` (code 14) and the end of its body.
    fn end_with(&mut self, id: u64, message: &str) -> Option<Vec<Delivery>> {
        self.streams.get(&id)?;
        self.close(id);
        let line = SimEtcdV3::stream_error_line(UNAVAILABLE, message);
        Some(vec![Delivery::Chunk(line), Delivery::End])
    }

    /// The member shuts down (SIGTERM): its streams end with gRPC's `Unavailable` as etcd 3.4
    /// (`transport is closing`) or 3.5 (`error reading from server: EOF`) writes it.
    pub(super) fn shut_down(&mut self, id: u64) -> Option<Vec<Delivery>> {
        let message = match self.etcd.version() {
            EtcdVersion::V3_4 => "transport is closing",
            EtcdVersion::V3_5 => "error reading from server: EOF",
        };
        self.end_with(id, message)
    }

    /// The member has known no leader for a while (`hasleader`): its streams end.
    pub(super) fn no_leader_end(&mut self, id: u64) -> Option<Vec<Delivery>> {
        self.end_with(id, NO_LEADER)
    }

    /// `503 "etcdserver: no leader"` for a request carrying `hasleader` (a stream's in the
    /// stream error shape); `None` without it, or for what the gateway answers itself.
    pub(super) fn no_leader_response(&self, req: &Request<Vec<u8>>) -> Option<Response<Vec<u8>>> {
        let asks = req
            .headers()
            .get(HAS_LEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if !asks || classify(req) == Class::Other {
            return None;
        }
        Some(match rpc(req) {
            "watch" | "lease/keepalive" => self.etcd.stream_error_response(UNAVAILABLE, NO_LEADER),
            _ => self.etcd.error_response(UNAVAILABLE, NO_LEADER),
        })
    }

    /// What etcd answered, after its 7 s request timeout without a leader, to each call the
    /// machine makes (measured on 3.4.23 and 3.5.1: see `wire/v3.rs`).
    pub(super) fn timeout_response(
        &self,
        req: &Request<Vec<u8>>,
        cause: &str,
    ) -> Response<Vec<u8>> {
        match rpc(req) {
            "kv/put" | "lease/grant" | "lease/revoke" => {
                self.etcd.error_response(2, "context deadline exceeded")
            }
            "lease/keepalive" => self.etcd.stream_error_response(UNAVAILABLE, NO_LEADER),
            "lease/timetolive" => self.etcd.error_response(UNAVAILABLE, NO_LEADER),
            _ => self.etcd.error_response(UNAVAILABLE, cause),
        }
    }

    /// Runs the lease expiry checks due up to `at`, each revocation's messages stamped with
    /// its check's time.
    pub(super) fn advance(&mut self, at: Instant) {
        if !self.etcd.is_paused() {
            while let Some(check) = self.etcd.next_expiry().filter(|c| *c <= at) {
                let before = self.etcd.revision();
                self.etcd.advance(check);
                if self.etcd.revision() != before {
                    let t = self.ns(check);
                    self.revision_at = t;
                    self.collect(t);
                }
            }
        }
        self.etcd.advance(at);
    }

    /// The next lease expiry check with something to revoke (none without quorum).
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        if self.etcd.is_paused() {
            return None;
        }
        self.etcd.next_expiry()
    }

    pub(super) fn set_paused(&mut self, no_quorum: bool) {
        self.etcd.set_paused(no_quorum);
    }

    pub(super) fn promote(&mut self, at: Instant, extend: Duration) {
        self.etcd.promote_leases(at, extend);
    }
}
