//! A deterministic, in-memory model of etcd's v3 JSON gateway (`POST /v3/...`), for
//! deterministic simulation testing.
//!
//! [`SimEtcdV3`] is a whole etcd cluster seen as one linearizable store, as
//! [`crate::sim::etcd::SimEtcd`] is for the v2 keys API. It takes the `http::Request<Vec<u8>>`
//! a v3 client sends and answers the `http::Response<Vec<u8>>` etcd 3.4 (or 3.5, see
//! [`EtcdVersion`]) answers: status, `Content-Type`, and a body that is byte for byte what the
//! gateway writes (proto field order, int64 as JSON strings, zero values omitted, keys and
//! values in padded standard base64, no trailing newline on unary answers, one `\n`-ended line
//! per message on streams). Watches are streams: [`SimEtcdV3::open_watch`],
//! [`SimEtcdV3::poll_watch`], [`SimEtcdV3::close_watch`].
//!
//! It is pure: no clock, no threads, no randomness, no I/O. Time is an argument, every
//! collection is ordered, lease IDs come from a counter.
//!
//! # What is modelled
//! Checked against etcd 3.4.23 and 3.5.1 (single member, and 3 members for quorum loss), and
//! re-checked by the differential test `tests/tests/model_vs_etcd_v3.rs`.
//!
//! - **Revisions**: a fresh store is at revision [`INITIAL_REVISION`] (1, on 3.4 and 3.5).
//!   Every put, every delete that deletes something, every transaction that writes, and every
//!   lease revocation that deletes keys makes one revision (several keys: sub-revisions in
//!   order). Grants, keepalives, compactions and empty deletes make none. Headers carry
//!   [`CLUSTER_ID`], [`MEMBER_ID`], [`RAFT_TERM`] and the store's revision after the request.
//! - **`/v3/kv/range`**: one key, `[key, range_end)`, `"\0"` (everything from `key` on);
//!   `limit` (`more`), `count` (counted before the create/mod revision filters, as etcd does),
//!   `keys_only`, `count_only`, `serializable`, `sort_order`/`sort_target` (a target other than
//!   KEY sorts ascending by default), `min/max_mod_revision`, `min/max_create_revision`, and
//!   `revision` (a past read; `mvcc: required revision has been compacted` / `is a future
//!   revision`, gRPC `OutOfRange`, 400).
//! - **`/v3/kv/put`** (`lease`, `prev_kv`, `ignore_value`, `ignore_lease` with etcd's errors),
//!   **`/v3/kv/deleterange`** (`prev_kv`, ranges), **`/v3/kv/txn`** (compares on VERSION,
//!   CREATE, MOD, VALUE, LEASE with EQUAL, NOT_EQUAL, GREATER, LESS, over a range too; every
//!   branch decided before anything is applied; ops `request_range`/`put`/`delete_range`/`txn`
//!   nested; reads in a txn see its earlier writes; sub-response headers hold only the
//!   revision, a nested txn's header is `{}`; etcd's checks: too many ops, duplicate keys, empty
//!   ops, empty keys, a missing lease, a compacted or future read), **`/v3/kv/compaction`**.
//! - **Leases** (`/v3/lease/grant`, `revoke`, `keepalive`, `timetolive`, `leases`): IDs from a
//!   counter (see [`SimEtcdV3::new`]) or as asked; TTLs below [`lease::MIN_LEASE_TTL`] (2 s)
//!   raised to it, above [`lease::MAX_LEASE_TTL`] refused; a revocation deletes the lease's
//!   keys in one revision; `keepalive` answers one line `{"result":{...}}\n` (for an unknown or
//!   expired lease: no `TTL`); `timetolive` of an unknown lease answers `"TTL":"-1"`.
//!   **Expiry**: at the first lessor check at or after the deadline, checks every
//!   [`lease::EXPIRY_CHECK_INTERVAL`] (500 ms, etcd's `revokeExpiredLeases` loop; a 2 s lease
//!   was gone 2.0–2.5 s after its grant on both versions), each expired lease in its own
//!   revision. A keepalive of a lease past its deadline but not yet revoked revokes it first
//!   (etcd's `Renew` waits for that revocation).
//! - **Watches** (`/v3/watch`): see [`SimEtcdV3::open_watch`]; `created`, history since
//!   `start_revision` (one message, header at the current revision), then one message per
//!   revision; PUT events have no `type`, DELETE events (lease expiry included) have
//!   `"type":"DELETE"` and a `kv` with only `key` and `mod_revision`; `prev_kv` (never on a
//!   creation); filters `NOPUT`/`NODELETE`; a client `watch_id`; a compacted start revision
//!   gets `canceled` with `compact_revision` (header without revision) and the stream stays
//!   open; `progress_request` answers `"watch_id":"-1"`.
//! - **Errors**: gRPC errors as `{"error":M,"message":M,"code":C}` (3.4) or
//!   `{"error":M,"code":C,"message":M}` (3.5) with the gateway's status (`FailedPrecondition`
//!   is 412 on 3.4, 400 on 3.5); a stream failing before its first message (keepalive without
//!   quorum) as `{"error":{"grpc_code":..,"http_code":..,"message":..,"http_status":..}}`.
//!   Request bodies are read as Go's `json.Decoder` and `jsonpb` read them (see `gojson`): Go's
//!   syntax error texts, `unexpected EOF`, type errors, Go's base64 errors, int64 as number or
//!   string, `null` as absent, unknown fields ignored, camelCase names accepted, an empty body
//!   as an empty request, only the first JSON value read. Unary calls answer these with 400
//!   and code 3, streams (watch, keepalive) with 500 and code 2.
//! - **HTTP**: `POST` only (`405 Method Not Allowed` text for a known path with another method;
//!   `OPTIONS` is an empty 200); `/v3beta/` serves the same as `/v3/` (3.4 and 3.5.1 both
//!   do); an unknown path under them is `404 Not Found` (text), elsewhere `404 page not found`;
//!   `/v3` and unclean paths get Go's `301`; a bad `%` escape Go's plain `400`.
//! - **No quorum** ([`SimEtcdV3::set_paused`]): checked on a 3-member cluster with two members
//!   SIGSTOPped: linearizable calls (range, put, deleterange, txn, compaction, grant, revoke,
//!   timetolive) answer `503 etcdserver: request timed out` (code 14) after about 7 s; a
//!   keepalive fails with the stream error body and 503; serializable ranges and read-only
//!   serializable txns are served; watches stay open and silent (with the gRPC metadata
//!   `hasleader=true` etcd cuts them with `etcdserver: no leader` after a few seconds). The
//!   model answers at once, stops expiring leases, and ignores `hasleader`.
//!
//! # Known deviations
//! - Answers come at once (etcd's timeouts take ~7 s; a leader that has not yet noticed the
//!   lost quorum still serves keepalive and timetolive, seen on 3.5).
//! - Lease IDs are not etcd's (they embed the member ID and the start time); expiry checks are
//!   aligned on `start`. Leases expiring at the same check are revoked by deadline, then ID.
//! - Sorting is stable at any size (Go's `sort.Sort` is only below 12 items); lease key lists
//!   (`timetolive` with `keys`) and `leases` are in order (etcd: Go map order).
//! - Watch history beyond 1000 revisions is split as etcd does, but all messages come at once
//!   (etcd sends one per 100 ms sync); `progress_notify` (every 10 min) and `fragment` are
//!   accepted and ignored. A stream with no create request gets no head at all on etcd; the
//!   model gives it a watch that never writes.
//! - Unmodelled RPCs (auth, cluster, maintenance, election, lock, `/v3/kv/lease/...` aliases)
//!   answer `404 Not Found` like unknown paths. Headers other than `Content-Type`,
//!   `Grpc-Metadata-Content-Type`, `X-Content-Type-Options`, `Location` are not produced.
//! - A `null` item in a repeated message field is an empty message (3.5; 3.4 drops the
//!   connection). Two members of a oneof: the last in proto order wins. Enum type errors (an
//!   enum given as `true`) use 3.4's Go type name on both versions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::{Request, Response};

pub use crate::sim::etcd::EtcdVersion;
pub use store::{Event, KeyValue};

mod apply;
mod gojson;
mod gotext;
pub mod lease;
mod render;
mod requests;
mod routing;
mod store;
mod watch;

use render::Ids;

/// The revision of a fresh etcd 3.4/3.5 member.
pub const INITIAL_REVISION: i64 = 1;
/// The `cluster_id` in every header (a real cluster's is derived from its members).
pub const CLUSTER_ID: u64 = 14_841_639_068_965_178_418;
/// The `member_id` in every header (etcd's ID of a member named `default`).
pub const MEMBER_ID: u64 = 10_276_657_743_932_975_437;
/// The `raft_term` in every header (a fresh single member elects itself in term 2).
pub const RAFT_TERM: u64 = 2;

/// A watch stream opened by [`SimEtcdV3::open_watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);

/// The simulated etcd cluster behind the v3 gateway.
///
/// ```
/// use std::time::{Duration, Instant};
/// use microlock_proto::sim::etcd_v3::{EtcdVersion, SimEtcdV3};
///
/// # fn main() {}
/// fn demo(t0: Instant) {
/// let mut etcd = SimEtcdV3::new(EtcdVersion::V3_5, t0);
/// let post = |path: &str, body: &str| {
///     http::Request::post(format!("http://127.0.0.1:2379{path}"))
///         .body(body.as_bytes().to_vec())
///         .unwrap()
/// };
/// let r = etcd.handle(&post("/v3/lease/grant", r#"{"TTL":2}"#), t0);
/// assert_eq!(r.status(), 200);
/// let w = etcd.open_watch(&post("/v3/watch", r#"{"create_request":{"key":"bA=="}}"#), t0);
/// let w = w.unwrap();
/// assert_eq!(etcd.poll_watch(w).len(), 1); // "created"
/// let r = etcd.handle(&post("/v3/kv/put", r#"{"key":"bA==","value":"MQ=="}"#), t0);
/// assert_eq!(r.status(), 200);
/// assert_eq!(etcd.revision(), 2);
/// let lines = etcd.poll_watch(w);
/// assert!(lines[0].ends_with(b"\n"));
/// }
/// ```
#[derive(Debug, Clone)]
pub struct SimEtcdV3 {
    version: EtcdVersion,
    ids: Ids,
    store: store::Store,
    lessor: lease::Lessor,
    watches: BTreeMap<WatchId, watch::Watcher>,
    next_watch: u64,
    paused: bool,
    /// Set while a txn renders its sub-responses (their headers hold only the revision).
    in_txn: bool,
}

/// The high bits of generated lease IDs: the member ID's low 16 bits, then 40 bits of
/// milliseconds (the fake start time 2020-01-01T00:00:00Z) shifted by 8, as etcd's ID
/// generator lays them out.
const LEASE_ID_PREFIX: i64 =
    (((MEMBER_ID & 0xffff) << 48) | ((1_577_836_800_000u64 & 0xff_ffff_ffff) << 8)) as i64;

impl SimEtcdV3 {
    /// A fresh single store at revision [`INITIAL_REVISION`], answering like `version`, with
    /// time zero at `start` (lease expiry checks happen at `start + k × 500 ms`). Generated
    /// lease IDs count up from a fixed prefix, skipping IDs in use.
    pub fn new(version: EtcdVersion, start: Instant) -> SimEtcdV3 {
        SimEtcdV3 {
            version,
            ids: Ids {
                cluster_id: CLUSTER_ID,
                member_id: MEMBER_ID,
                raft_term: RAFT_TERM,
            },
            store: store::Store::new(INITIAL_REVISION),
            lessor: lease::Lessor::new(start, LEASE_ID_PREFIX),
            watches: BTreeMap::new(),
            next_watch: 0,
            paused: false,
            in_txn: false,
        }
    }

    /// The etcd version mimicked.
    pub fn version(&self) -> EtcdVersion {
        self.version
    }

    /// Answers one unary call at time `now` (expiry up to `now` happens first). A `/v3/watch`
    /// request given here is answered with what the stream writes at once (its `created` line
    /// and history), as if the client then hung up.
    pub fn handle(&mut self, req: &Request<Vec<u8>>, now: Instant) -> Response<Vec<u8>> {
        self.advance(now);
        routing::handle(self, req, now)
    }

    /// Opens a watch stream: `Ok` is a stream answered `200` (`Content-Type:
    /// application/json`) whose lines come from [`SimEtcdV3::poll_watch`]; `Err` is the whole
    /// response when the request fails (routing, a bad body: `500` with gRPC code 2) or is not
    /// a watch (then it is handled as by [`SimEtcdV3::handle`]).
    // The error is the whole HTTP answer, by value like `handle`'s.
    #[allow(clippy::result_large_err)]
    pub fn open_watch(
        &mut self,
        req: &Request<Vec<u8>>,
        now: Instant,
    ) -> Result<WatchId, Response<Vec<u8>>> {
        self.advance(now);
        let watcher = routing::open_watch(self, req, now)?;
        let id = WatchId(self.next_watch);
        self.next_watch += 1;
        self.watches.insert(id, watcher);
        Ok(id)
    }

    /// The lines a watch stream wrote since the last poll, each a JSON object ending with
    /// `\n`, as etcd writes them (empty for an unknown or closed stream). Call
    /// [`SimEtcdV3::advance`] first for expiries up to now.
    pub fn poll_watch(&mut self, id: WatchId) -> Vec<Vec<u8>> {
        self.watches
            .get_mut(&id)
            .map(watch::Watcher::take_lines)
            .unwrap_or_default()
    }

    /// Closes a watch stream (the client hung up).
    pub fn close_watch(&mut self, id: WatchId) {
        self.watches.remove(&id);
    }

    /// Runs the lease expiry checks due at or before `now` (none without quorum).
    pub fn advance(&mut self, now: Instant) {
        if self.paused {
            self.lessor.skip_checks(now);
            return;
        }
        for (_, ids) in self.lessor.expire_due(now) {
            for id in ids {
                // The lease is gone already: delete its keys in one revision.
                let keys = self.store.keys_with_lease(id);
                if !keys.is_empty() {
                    self.write(|s, wt| {
                        for k in &keys {
                            s.store.delete(wt, &store::Span::One(k.clone()));
                        }
                        render::Obj::new()
                    });
                }
            }
        }
    }

    /// When the next lease expires (the expiry check that will revoke it), if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.lessor.next_expiry()
    }

    /// The store's revision.
    pub fn revision(&self) -> i64 {
        self.store.revision()
    }

    /// The current value of `key`, if it exists (for checkers).
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.store.get(key).cloned()
    }

    /// The IDs of the live leases, in order.
    pub fn leases(&self) -> Vec<i64> {
        self.lessor.ids()
    }

    /// Loses (`true`) or regains quorum: see the module docs. Expiry checks due meanwhile are
    /// skipped; a lease past its deadline goes at the first check after quorum is back (a new
    /// etcd leader extends every lease instead: not modelled).
    pub fn set_paused(&mut self, no_quorum: bool) {
        self.paused = no_quorum;
    }

    /// Whether quorum is lost ([`SimEtcdV3::set_paused`]).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        self.watches.len()
    }

    /// The keys of `key` and `range_end` as etcd reads them (empty `range_end`: `key` alone;
    /// `"\0"`: every key from `key` on; else `[key, range_end)`), in key order, at the current
    /// revision (for checkers).
    pub fn keys_in(&self, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
        self.store
            .range_unchecked(&store::Span::new(key, range_end), self.store.revision())
    }

    /// What a new leader's lessor does once it has applied the first entry of its term (etcd's
    /// `lessor.Promote(electionTimeout)`, called from `applyEntryNormal`): every lease's
    /// deadline becomes `now + extend + TTL`, whatever it was. A lease therefore outlives a
    /// leader change by at least `extend` beyond its TTL (and no lease expires while no leader
    /// is there to revoke it).
    pub fn promote_leases(&mut self, now: Instant, extend: Duration) {
        self.advance(now);
        self.lessor.promote(now, extend);
    }

    /// Plants a bug (for checking a simulation's checkers, never in a differential test): from
    /// now on the lessor expires every lease after `1 / divisor` of its TTL, while its answers
    /// (grant, keep-alive, time-to-live's `grantedTTL`) still give the full TTL.
    pub fn plant_short_lived_leases(&mut self, divisor: u32) {
        self.lessor.shorten_lifetimes(divisor);
    }

    /// A failed unary call's answer, as the gateway writes it for this version: the gRPC
    /// code's HTTP status, `{"error":M,...,"code":C}`.
    pub(crate) fn error_response(&self, code: u32, message: &str) -> Response<Vec<u8>> {
        routing::json_error(self.version, (code, message))
    }

    /// A streamed call (watch, keepalive) that fails before its first message: the gRPC
    /// code's HTTP status and the stream error body.
    pub(crate) fn stream_error_response(&self, code: u32, message: &str) -> Response<Vec<u8>> {
        routing::stream_failure(self.version, code, message)
    }

    /// The last thing a stream that fails after its head writes:
    /// `{"error":{"grpc_code":..,"http_code":..,"message":..,"http_status":..}}`, no newline.
    pub(crate) fn stream_error_line(code: u32, message: &str) -> Vec<u8> {
        render::stream_error(code, message)
    }

    fn notify(&mut self, revision: i64, events: &[Event]) {
        for w in self.watches.values_mut() {
            w.notify(&self.ids, revision, events);
        }
    }
}

#[cfg(test)]
mod tests;
