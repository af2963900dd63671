//! A deterministic, in-memory model of etcd's v2 keys API, for deterministic simulation testing.
//!
//! [`SimEtcd`] is a whole etcd cluster seen as one linearizable store. It takes the exact
//! `http::Request<Vec<u8>>` values a v2 client sends and answers the `http::Response<Vec<u8>>`
//! that etcd 3.4 (or 3.5, see [`EtcdVersion`]) answers: status, `Content-Type`, `X-Etcd-Index`,
//! and a body that is byte for byte what etcd writes (same JSON field order, Go's JSON string
//! escaping, trailing newline), except for the wall-clock `expiration` timestamps (see below).
//!
//! It is pure: no clock, no threads, no randomness, no I/O. Time is always an argument, and
//! every collection is ordered, so the same calls give the same answers.
//!
//! # What is modelled
//! Every detail below was checked against etcd 3.4.23 and 3.5.1 with `--enable-v2=true`, and
//! is re-checked by the differential test `tests/tests/model_vs_etcd.rs`.
//!
//! - **HTTP layer (Go's `net/http`)**: the path is percent-decoded (`%2F` becomes `/`); a path
//!   that is not clean (`//`, `.` or `..` segments, also when written `%2F`/`%2E`) gets Go's
//!   `301 Moved Permanently` to the cleaned path; a bad `%` escape in the path gets Go's plain
//!   `400 Bad Request`; paths outside `/v2/keys` get `404 page not found`; `OPTIONS` (a CORS
//!   preflight) gets an empty `200` anywhere; other methods than `GET HEAD PUT POST DELETE` get
//!   `405`. Parameters come from the query string and, for `PUT`
//!   and `POST` with `Content-Type: application/x-www-form-urlencoded`, from the body; a body
//!   value wins over a query value of the same name (Go's `r.Form` lists `PostForm` first); a
//!   `DELETE` body is ignored. Query syntax errors (bad `%` escape, and for 3.4 a `;`) are
//!   `400 {"errorCode":210,...}`.
//! - **Request validation** (`parseKeyRequest` of etcd's `v2http`): codes 201, 202, 203, 209,
//!   211, 212 with etcd's exact causes, in etcd's order, all with `index` 0.
//! - **The store** (`v2store`): `get` (with `recursive`, `sorted`, hidden `_` nodes), `set`,
//!   `create` (`prevExist=false`, and `POST` in-order keys `%020d`), `update` (`prevExist=true`),
//!   `compareAndSwap` (`prevValue`/`prevIndex`, causes like `[b != a]`), `delete` (`dir`,
//!   `recursive`), `compareAndDelete`, `refresh=true` (value kept, no watcher notified, the
//!   event is in the history but skipped by watches), directories created on the way, TTLs
//!   (`ttl=0` expires at the next sync tick), every error code with etcd's cause and index.
//! - **Expiry**: like etcd's leader, keys expire on SYNC ticks every [`DEFAULT_SYNC_INTERVAL`]
//!   (500 ms, see [`SimEtcd::with_sync_interval`]): a key expires at the first tick at or after
//!   its deadline. Tick `k` happens at `start + k × interval`. Each expired node is one `expire`
//!   event (its own index), which may complete parked watches.
//! - **Watches** (`wait=true`, optional `waitIndex`, `recursive`): answered at once from the
//!   history (the last [`HISTORY_CAPACITY`] events of the whole store) when an event with an
//!   index ≥ `waitIndex` matches, else parked ([`Reply::Parked`]) until one happens. A
//!   `waitIndex` older than the oldest kept event gets `400 {"errorCode":401,...,"cause":"the
//!   requested history has been cleared [OLDEST/REQUESTED]"}`. `wait=true&quorum=true` is a
//!   plain quorum read, not a watch. The response's `X-Etcd-Index` is the store index when the
//!   watch started, as etcd sends it.
//! - **Faults**: [`SimEtcd::set_paused`] (no quorum: writes and quorum reads answer
//!   `500 {"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request timed
//!   out","index":0}`, expiry stops, plain reads and watches are still served by the member);
//!   [`SimEtcd::close_watches`] (member shutdown: every parked watch ends with 200 and an empty
//!   body). Faults of single members of a cluster (death, hangs, lag, partitions, late
//!   commits) are modelled on top of this store by [`crate::sim::cluster::SimCluster`], which
//!   uses the store's member-facing extras: a `ttl` counted from when the member received the
//!   request, a watch reporting the serving member's index, the event (index and time) that
//!   answered each watch ([`SimEtcd::poll_watch_event`]), the index at a past time
//!   ([`SimEtcd::index_at`]), and hidden events ([`SimEtcd::hidden_event`]).
//! - **Bootstrap**: a fresh store of an `n`-member cluster ([`SimEtcd::new_cluster`]) starts
//!   at index `2n + 1` ([`initial_index`]), like a fresh real cluster (checked with 1 and 3
//!   members); a restarted member's attribute publication is one more hidden event.
//!
//! # Time and the fake wall clock
//! All times are [`Instant`]s given by the caller; `start` (given to [`SimEtcd::new`]) is time
//! zero. etcd writes `expiration` as an RFC 3339 wall-clock time; the model has no wall clock, so
//! it writes `2020-01-01T00:00:00Z + (t - start)` ([`WALL_CLOCK_EPOCH_UNIX_SECS`]), formatted
//! as Go does (`2020-01-01T00:00:01.5Z`). `ttl` is the remaining time rounded up to whole
//! seconds, as etcd computes it (it is omitted when 0 and negative when expiry is late).
//!
//! # Known deviations from real etcd
//! - `expiration` uses the fake wall clock above; the sync ticks are aligned on `start` (a real
//!   leader's ticker has an arbitrary phase).
//! - Children of a directory are always listed in key order (etcd lists them in Go's random map
//!   order unless `sorted=true`); nodes expiring at the same instant expire in creation order.
//! - A watch's `200` head is sent by etcd at once and its body later; the model answers the whole
//!   response when the event happens. `stream=true` is answered like a one-shot watch.
//! - [`SimEtcd::close_watches`] ends watches with a clean empty body; a stopping etcd cuts the
//!   connection in the middle of the (chunked) body instead.
//! - Without quorum etcd answers `500` after about 7 s and the write may still commit later;
//!   the store alone ([`SimEtcd::set_paused`]) answers at once and never commits it.
//!   [`crate::sim::cluster::SimCluster`] models the 7 s and the late commits.
//! - Headers other than `Content-Type`, `X-Etcd-Index`, `Location`, `Allow`,
//!   `X-Content-Type-Options` and `Connection` (`X-Raft-Index`, `X-Raft-Term`,
//!   `X-Etcd-Cluster-Id`, CORS, `Date`, `Content-Length`) are not produced.
//! - Only the keys API exists: `/v2/members`, `/v2/stats`, `/version`, `/health`, `/v3/...`
//!   answer `404 page not found`. Authentication is not modelled.
//! - `Content-Type` parameter parsing follows Go's `mime.ParseMediaType` for ASCII input only;
//!   the `strconv.Quote` text inside a bad-escape cause treats every non-ASCII character as
//!   printable.
//! - The 3 events of a fresh member's bootstrap (membership and cluster version, under etcd's
//!   hidden `/0` namespace) are modelled as 3 invisible events, so a fresh model starts at
//!   index [`INITIAL_INDEX`] with a history that starts at 1, like a fresh etcd.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};

// The model by concern; this file holds the public API.
// - `net_http`: Go's net/http server (routing, redirects, `ParseForm`, responses); `url` and
//   `mime`: Go's percent-decoding, query parsing, `path.Clean` and `mime.ParseMediaType`.
// - `request`: etcd's `parseKeyRequest` and the way from a valid request to the store.
// - `store`: the v2 node tree and its operations; `expiry`: TTLs and the SYNC ticks;
//   `watch`: the event history and the parked watches.
// - `error`: etcd's v2 errors; `json`: Go's `encoding/json`; `clock`: time and the fake wall
//   clock.
mod clock;
mod error;
mod expiry;
mod json;
mod mime;
mod net_http;
mod request;
mod store;
#[cfg(test)]
mod test_util;
mod url;
mod watch;

use self::clock::{ceil_div, duration_from_nanos};
use self::error::{EtcdError, E_RAFT_INTERNAL};
use self::net_http::{json_response, KEYS_PREFIX};
use self::request::parse_params;
use self::store::Node;
use self::url::{mux_clean_path, path_clean, unescape};
use self::watch::{HistEvent, Watcher};

/// How many events the watch history keeps (etcd's `newWatchHub(1000)`).
pub const HISTORY_CAPACITY: usize = 1000;

/// The interval of the leader's SYNC ticks that expire keys (etcd's 500 ms `syncTicker`).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// The `X-Etcd-Index` a fresh single-member etcd 3.4/3.5 reports: the bootstrap wrote 3 events.
pub const INITIAL_INDEX: u64 = 3;

/// The fake wall clock's time zero, as Unix seconds: `start` is `2020-01-01T00:00:00Z`.
pub const WALL_CLOCK_EPOCH_UNIX_SECS: i64 = 1_577_836_800;

/// Which etcd build the model mimics where they differ.
///
/// The only difference found between etcd 3.4.23 (built with Go 1.19) and 3.5.1 (built with
/// Go 1.16) on the keys API is how a `;` in a query string or form body is read: Go ≥ 1.17
/// rejects it, Go 1.16 splits on it like on `&`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EtcdVersion {
    /// etcd 3.4 (the default): a `;` in the query or form makes the request fail with
    /// `400 {"errorCode":210,"message":"Invalid POST form","cause":"invalid semicolon separator
    /// in query",...}`.
    #[default]
    V3_4,
    /// etcd 3.5.1: a `;` separates parameters like `&`.
    V3_5,
}

impl EtcdVersion {
    /// The variant for a version string such as `"3.5.1"` (as `GET /version` reports it):
    /// [`EtcdVersion::V3_5`] for `3.5.*`, else [`EtcdVersion::V3_4`].
    pub fn from_version_string(version: &str) -> EtcdVersion {
        if version.trim().starts_with("3.5.") {
            EtcdVersion::V3_5
        } else {
            EtcdVersion::V3_4
        }
    }
}

/// The answer to one request given to [`SimEtcd::handle`].
#[derive(Debug)]
pub enum Reply {
    /// The complete response, available now.
    Now(Response<Vec<u8>>),
    /// A watch (`wait=true`) that no event matches yet. Its response comes later from
    /// [`SimEtcd::poll_watch`] (when a matching event happens) or [`SimEtcd::close_watches`];
    /// [`SimEtcd::cancel`] drops it.
    Parked,
}

/// The simulated etcd cluster: one linearizable v2 store, its watch history, its parked
/// watches and its TTL expiry.
///
/// ```
/// use std::time::{Duration, Instant};
/// use microlock_proto::sim::etcd::{Reply, SimEtcd};
///
/// // Simulated time starts wherever the caller says (the model never reads a clock).
/// # fn main() {}
/// fn demo(t0: Instant) {
/// let mut etcd = SimEtcd::new(t0);
/// let put = |query: &str, body: &str| {
///     http::Request::put(format!("http://127.0.0.1:2379/v2/keys/lock?{query}"))
///         .header("Content-Type", "application/x-www-form-urlencoded")
///         .body(body.as_bytes().to_vec())
///         .unwrap()
/// };
///
/// // Take the lock: create the key with a TTL.
/// let Reply::Now(r) = etcd.handle(1, &put("prevExist=false", "value=node-a&ttl=1"), t0) else {
///     unreachable!()
/// };
/// assert_eq!(r.status(), 201);
/// assert_eq!(r.headers()["X-Etcd-Index"], "4");
///
/// // Someone else fails to take it.
/// let Reply::Now(r) = etcd.handle(2, &put("prevExist=false", "value=node-b&ttl=1"), t0) else {
///     unreachable!()
/// };
/// assert_eq!(r.status(), 412);
/// assert_eq!(
///     r.body().as_slice(),
///     b"{\"errorCode\":105,\"message\":\"Key already exists\",\"cause\":\"/lock\",\"index\":4}\n"
/// );
///
/// // ... and waits for its release.
/// let watch = http::Request::get("http://127.0.0.1:2379/v2/keys/lock?wait=true&waitIndex=5")
///     .body(Vec::new())
///     .unwrap();
/// assert!(matches!(etcd.handle(3, &watch, t0), Reply::Parked));
///
/// // The TTL runs out: the key expires at the first 500 ms sync tick at or after t0 + 1 s.
/// assert_eq!(etcd.next_expiry(), Some(t0 + Duration::from_secs(1)));
/// etcd.advance(t0 + Duration::from_secs(1));
/// let (id, r) = etcd.poll_watch().unwrap();
/// assert_eq!((id, r.status().as_u16()), (3, 200));
/// assert!(r.body().starts_with(b"{\"action\":\"expire\""));
/// assert_eq!(etcd.get("/lock"), None);
/// assert_eq!(etcd.index(), 5);
/// }
/// ```
#[derive(Debug)]
pub struct SimEtcd {
    start: Instant,
    version: EtcdVersion,
    /// The sync interval in nanoseconds (≥ 1).
    sync_ns: i128,
    /// Every tick `k ≤ last_tick` has run (or was skipped while paused).
    last_tick: i128,
    index: u64,
    /// Every node but the root, by path (`/a/b`); the root `/` is an implicit directory.
    nodes: BTreeMap<Vec<u8>, Node>,
    /// Nodes with a TTL: (expiry, insertion sequence, path).
    ttl: BTreeSet<(i128, u64, Vec<u8>)>,
    ttl_seq: u64,
    history: VecDeque<HistEvent>,
    /// Parked watches by watched path, each list in registration order.
    watchers: BTreeMap<Vec<u8>, Vec<Watcher>>,
    watch_seq: u64,
    completed: VecDeque<(u64, Response<Vec<u8>>, EventStamp)>,
    paused: bool,
    /// The time (ns since `start`) of the operation being applied: a request's arrival or an
    /// expiry tick. Stamps history events and completed watches.
    op_time: i128,
    /// Options of the request being served ([`SimEtcd::serve_with`]).
    opts: ServeOpts,
    /// The event that answered the last watch served from the history at once.
    last_hit: Option<EventStamp>,
}

/// Where and when an event that completed a watch was committed: its index and the time it
/// was applied to the store (a request's arrival, or the sync tick that expired a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStamp {
    /// The event's index (`modifiedIndex` of its node).
    pub index: u64,
    /// When it was applied.
    pub committed: Instant,
}

/// How [`SimEtcd::serve_with`] serves one request on behalf of a member of a simulated
/// cluster ([`crate::sim::cluster`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ServeOpts {
    /// When the member parsed the request: a `ttl` counts from then (etcd computes the
    /// expiry time on the member that receives the request). Default: now.
    pub received: Option<Instant>,
    /// The index the serving member has applied, when it is behind the store: a watch
    /// without `waitIndex` starts after it and reports it as `X-Etcd-Index`.
    pub member_index: Option<u64>,
    /// Answer [`Served::Raft`] instead of applying a write or a quorum read (the member has
    /// no quorum: the caller decides what becomes of the proposal).
    pub defer_raft: bool,
    /// Do not run expiry ticks up to `now` first (a replica serving a stale read).
    pub no_advance: bool,
}

/// What a valid keys request asks for ([`SimEtcd::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A plain read (`GET`/`HEAD` without `quorum` or `wait`): served by the member alone.
    Read,
    /// A watch (`wait=true` without `quorum`).
    Watch,
    /// A write or a quorum read: a raft proposal.
    Raft,
    /// Anything answered by the HTTP layer or refused by validation.
    Other,
}

/// What [`SimEtcd::serve_with`] did with a request.
#[derive(Debug)]
pub(crate) enum Served {
    /// Answered (a watch answered from the history has its event in `hit`).
    Now(Response<Vec<u8>>, Option<EventStamp>),
    /// A parked watch.
    Parked,
    /// A write or quorum read that needs raft, and raft was deferred
    /// ([`ServeOpts::defer_raft`]).
    Raft,
}

impl SimEtcd {
    /// A fresh cluster whose time zero is `start`, at index [`INITIAL_INDEX`], mimicking etcd
    /// 3.4 ([`EtcdVersion::V3_4`]) with 500 ms sync ticks.
    pub fn new(start: Instant) -> SimEtcd {
        SimEtcd::with_bootstrap(start, INITIAL_INDEX)
    }

    /// A fresh store of an `members`-member cluster: its bootstrap wrote
    /// [`initial_index(members)`](initial_index) invisible events (one member-add and one
    /// attribute publication per member, and the cluster version), as a fresh real cluster's
    /// members report.
    pub fn new_cluster(start: Instant, members: usize) -> SimEtcd {
        SimEtcd::with_bootstrap(start, initial_index(members))
    }

    fn with_bootstrap(start: Instant, events: u64) -> SimEtcd {
        let mut history = VecDeque::with_capacity(HISTORY_CAPACITY);
        for index in 1..=events {
            history.push_back(HistEvent {
                index,
                time: 0,
                key: Vec::new(),
                refresh: false,
                bootstrap: true,
                deleted_dir: None,
                body: Arc::from(&b""[..]),
            });
        }
        SimEtcd {
            start,
            version: EtcdVersion::default(),
            sync_ns: DEFAULT_SYNC_INTERVAL.as_nanos() as i128,
            last_tick: 0,
            index: events,
            nodes: BTreeMap::new(),
            ttl: BTreeSet::new(),
            ttl_seq: 0,
            history,
            watchers: BTreeMap::new(),
            watch_seq: 0,
            completed: VecDeque::new(),
            paused: false,
            op_time: 0,
            opts: ServeOpts::default(),
            last_hit: None,
        }
    }

    /// The same cluster mimicking another etcd build (see [`EtcdVersion`]).
    pub fn with_version(mut self, version: EtcdVersion) -> SimEtcd {
        self.version = version;
        self
    }

    /// The same cluster with another SYNC tick interval (a zero interval counts as 1 ns).
    /// Ticks stay aligned on `start`: tick `k` is at `start + k × interval`.
    pub fn with_sync_interval(mut self, interval: Duration) -> SimEtcd {
        self.sync_ns = (interval.as_nanos() as i128).max(1);
        self
    }

    /// The etcd build this model mimics.
    pub fn version(&self) -> EtcdVersion {
        self.version
    }

    /// The SYNC tick interval.
    pub fn sync_interval(&self) -> Duration {
        duration_from_nanos(self.sync_ns)
    }

    /// Answers one request at time `now`, as etcd would.
    ///
    /// `id` names the request so that a parked watch can be completed ([`SimEtcd::poll_watch`])
    /// or cancelled ([`SimEtcd::cancel`]) later. The model first runs every expiry tick up to
    /// `now` ([`SimEtcd::advance`]). A TTL given in the request counts from `now` (etcd computes
    /// the deadline on the member that receives the request). Never panics: any request gets
    /// an etcd-like answer.
    pub fn handle(&mut self, id: u64, req: &Request<Vec<u8>>, now: Instant) -> Reply {
        match self.serve_with(id, req, now, ServeOpts::default()) {
            Served::Now(response, _) => Reply::Now(response),
            Served::Parked | Served::Raft => Reply::Parked,
        }
    }

    /// [`SimEtcd::handle`] with a member's options (see [`ServeOpts`]).
    pub(crate) fn serve_with(
        &mut self,
        id: u64,
        req: &Request<Vec<u8>>,
        now: Instant,
        opts: ServeOpts,
    ) -> Served {
        if !opts.no_advance {
            self.advance(now);
        }
        let now_ns = self.ns(now);
        self.op_time = now_ns;
        self.opts = opts;
        self.last_hit = None;
        let served = self.serve(id, req, now_ns);
        self.opts = ServeOpts::default();
        match served {
            // Go's server writes no body for HEAD.
            Served::Now(mut response, hit) if req.method() == Method::HEAD => {
                response.body_mut().clear();
                Served::Now(response, hit)
            }
            other => other,
        }
    }

    /// An event in etcd's hidden `/0` namespace at `now`, such as a restarted member
    /// publishing its attributes: the index grows by one, and no watch of the keys API ever
    /// sees the event (checked on etcd 3.4.23 and 3.5.1: a restarted member of a 3-member
    /// cluster moves `X-Etcd-Index` by one).
    pub fn hidden_event(&mut self, now: Instant) {
        self.advance(now);
        self.index += 1;
        self.history.push_back(HistEvent {
            index: self.index,
            time: self.ns(now),
            key: Vec::new(),
            refresh: false,
            bootstrap: true,
            deleted_dir: None,
            body: Arc::from(&b""[..]),
        });
        while self.history.len() > HISTORY_CAPACITY {
            self.history.pop_front();
        }
    }

    /// Whether the last request served was a watch answered at once from the history.
    pub(crate) fn answered_watch(&self) -> bool {
        self.last_hit.is_some()
    }

    /// The latest completed parked watch with the event that completed it (see
    /// [`SimEtcd::poll_watch`]).
    pub fn poll_watch_event(&mut self) -> Option<(u64, Response<Vec<u8>>, EventStamp)> {
        self.completed.pop_front()
    }

    /// The store's index as it was at time `at`: the index of the last event applied at or
    /// before `at` (bootstrap events count as applied at `start`). Exact as far back as the
    /// history goes ([`HISTORY_CAPACITY`] events); earlier times answer the index just before
    /// the oldest kept event.
    pub fn index_at(&self, at: Instant) -> u64 {
        let t = self.ns(at);
        let after = self.history.partition_point(|e| e.time <= t);
        match after.checked_sub(1) {
            Some(i) => self.history[i].index,
            None => self.history.front().map_or(self.index, |e| e.index - 1),
        }
    }

    /// Ends the parked watch `id` as a member shutting down does (see
    /// [`SimEtcd::close_watches`]): `200`, the `X-Etcd-Index` it started with, an empty body.
    /// `None` when no such watch is parked.
    pub(crate) fn close_watch(&mut self, id: u64) -> Option<Response<Vec<u8>>> {
        let mut found = None;
        for list in self.watchers.values_mut() {
            if let Some(i) = list.iter().position(|w| w.id == id) {
                found = Some(list.remove(i));
                break;
            }
        }
        self.watchers.retain(|_, list| !list.is_empty());
        found.map(|w| json_response(200, w.start_index, Vec::new()))
    }

    /// What `req` asks for, as a member decides before serving it (no state is read).
    pub(crate) fn classify(&self, req: &Request<Vec<u8>>) -> Class {
        let method = req.method();
        let path = match unescape(req.uri().path().as_bytes(), false) {
            Ok(p) if p.is_empty() => b"/".to_vec(),
            Ok(p) => p,
            Err(_) => return Class::Other,
        };
        if *method == Method::OPTIONS
            || mux_clean_path(&path) != path
            || !(path == KEYS_PREFIX || path.starts_with(b"/v2/keys/"))
            || !matches!(
                *method,
                Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE
            )
        {
            return Class::Other;
        }
        let Ok(form) = self.parse_form(req) else {
            return Class::Other;
        };
        let Ok(p) = parse_params(&form, method) else {
            return Class::Other;
        };
        match *method {
            Method::GET if p.quorum => Class::Raft,
            Method::GET if p.wait => Class::Watch,
            Method::GET | Method::HEAD => Class::Read,
            _ => Class::Raft,
        }
    }

    /// A copy of the store (nodes, TTLs, history, ticks, pause) without its parked or
    /// completed watches: a member's replica that replays the same operations.
    pub(crate) fn replica(&self) -> SimEtcd {
        SimEtcd {
            start: self.start,
            version: self.version,
            sync_ns: self.sync_ns,
            last_tick: self.last_tick,
            index: self.index,
            nodes: self.nodes.clone(),
            ttl: self.ttl.clone(),
            ttl_seq: self.ttl_seq,
            history: self.history.clone(),
            watchers: BTreeMap::new(),
            watch_seq: self.watch_seq,
            completed: VecDeque::new(),
            paused: self.paused,
            op_time: self.op_time,
            opts: ServeOpts::default(),
            last_hit: None,
        }
    }

    /// Runs the SYNC ticks up to `now`: every node whose deadline is at or before a tick
    /// expires at that tick, each as one `expire` event that may complete parked watches. Does
    /// nothing for ticks while [`SimEtcd::set_paused`] is on (they are skipped, not delayed).
    /// Calling it again with the same or an earlier `now` does nothing.
    pub fn advance(&mut self, now: Instant) {
        let k_now = self.ns(now).div_euclid(self.sync_ns);
        if !self.paused {
            while let Some(&(deadline, _, _)) = self.ttl.first() {
                let k = ceil_div(deadline, self.sync_ns).max(self.last_tick + 1);
                if k > k_now {
                    break;
                }
                self.expire_at(k * self.sync_ns);
                self.last_tick = k;
            }
        }
        self.last_tick = self.last_tick.max(k_now);
    }

    /// The next completed parked watch, in completion order: the request id and its response.
    pub fn poll_watch(&mut self) -> Option<(u64, Response<Vec<u8>>)> {
        self.completed.pop_front().map(|(id, r, _)| (id, r))
    }

    /// The client gave up on request `id`: forget its parked watch, and its completed response
    /// if it was not polled yet. Unknown ids are ignored.
    pub fn cancel(&mut self, id: u64) {
        for list in self.watchers.values_mut() {
            list.retain(|w| w.id != id);
        }
        self.watchers.retain(|_, list| !list.is_empty());
        self.completed.retain(|(done, _, _)| *done != id);
    }

    /// Fault: the member shuts down its watches. Every parked watch ends, in the order they
    /// were parked, with `200`, `Content-Type: application/json`, the `X-Etcd-Index` it started
    /// with, and an empty body.
    ///
    /// What a client of a real member sees when it stops (checked on 3.4.23 and 3.5.1, SIGTERM):
    /// the `200` head (etcd flushes it when the watch starts), then the connection closes in the
    /// middle of the chunked body, so reading the body fails. A simulator can deliver this
    /// response, or a transport error, or both kinds in turn.
    pub fn close_watches(&mut self) -> Vec<(u64, Response<Vec<u8>>)> {
        let mut all: Vec<Watcher> = std::mem::take(&mut self.watchers)
            .into_values()
            .flatten()
            .collect();
        all.sort_by_key(|w| w.seq);
        all.into_iter()
            .map(|w| (w.id, json_response(200, w.start_index, Vec::new())))
            .collect()
    }

    /// When [`SimEtcd::advance`] will next have something to do: the first sync tick at or
    /// after the earliest deadline (never a tick already run). `None` without TTL nodes or while
    /// paused.
    pub fn next_expiry(&self) -> Option<Instant> {
        if self.paused {
            return None;
        }
        let &(deadline, _, _) = self.ttl.first()?;
        let k = ceil_div(deadline, self.sync_ns).max(self.last_tick + 1);
        self.start
            .checked_add(duration_from_nanos(k.checked_mul(self.sync_ns)?))
    }

    /// The store's current index (`X-Etcd-Index`).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Inspection for tests: the value (lossily decoded as UTF-8), `createdIndex` and
    /// `modifiedIndex` of the key `key` (decoded, e.g. `"/a/b"`; the leading `/` may be
    /// omitted). `None` when there is no such key or it is a directory. A key past its deadline
    /// is still there until the tick that expires it.
    pub fn get(&self, key: &str) -> Option<(String, u64, u64)> {
        let mut path = b"/".to_vec();
        path.extend_from_slice(key.as_bytes());
        let node = self.nodes.get(&path_clean(&path))?;
        let value = node.value.as_ref()?;
        Some((
            String::from_utf8_lossy(value).into_owned(),
            node.created,
            node.modified,
        ))
    }

    /// Inspection for tests: the files directly in directory `dir` (decoded, leading `/`
    /// optional), in key order, as (name, value, `createdIndex`). Empty when there is no such
    /// directory.
    pub fn files_in(&self, dir: &str) -> Vec<(String, String, u64)> {
        let mut prefix = path_clean(format!("/{}", dir.trim_start_matches('/')).as_bytes());
        prefix.push(b'/');
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .filter(|(path, _)| !path[prefix.len()..].contains(&b'/'))
            .filter_map(|(path, node)| {
                let value = node.value.as_ref()?;
                Some((
                    String::from_utf8_lossy(&path[prefix.len()..]).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                    node.created,
                ))
            })
            .collect()
    }

    /// Fault: while `no_quorum` is true, writes (`PUT`, `POST`, `DELETE`) and quorum reads
    /// answer at once `500 {"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver:
    /// request timed out","index":0}` and change nothing, and no key expires (ticks are
    /// skipped). Plain reads and watches are still answered from the store. Call
    /// [`SimEtcd::advance`] with the current time before switching, so ticks before the switch
    /// are run (or skipped) as they should.
    pub fn set_paused(&mut self, no_quorum: bool) {
        self.paused = no_quorum;
    }

    /// Whether [`SimEtcd::set_paused`] is on.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// How many watches are parked.
    pub fn parked_watches(&self) -> usize {
        self.watchers.values().map(Vec::len).sum()
    }
}

/// etcd's answer to a proposal that was not applied within its request timeout (`500`,
/// `errorCode` 300 "Raft Internal Error", `index` 0) with one of etcd's causes:
/// `"etcdserver: request timed out"`, `"etcdserver: request timed out, possibly due to previous
/// leader failure"`, `"etcdserver: request timed out, possibly due to connection lost"`.
pub fn raft_timeout_response(cause: &str) -> Response<Vec<u8>> {
    EtcdError::new(E_RAFT_INTERNAL, cause, 0).response()
}

/// The `X-Etcd-Index` of a fresh `members`-member etcd 3.4/3.5 cluster: its bootstrap wrote
/// one member-add and one attribute publication per member, and the cluster version
/// (1 member: [`INITIAL_INDEX`] = 3; 3 members: 7).
pub const fn initial_index(members: usize) -> u64 {
    2 * members as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::test_util::{req, FORM, T};
    use super::*;

    #[test]
    fn fresh_store_like_fresh_etcd() {
        let mut t = T::new();
        assert_eq!(t.etcd.index(), 3);
        let (s, i, b) = t.call(0, "GET", "/v2/keys/", None);
        assert_eq!(
            (s, i.as_str(), b.as_str()),
            (200, "3", "{\"action\":\"get\",\"node\":{\"dir\":true}}\n")
        );
        let r = t.now(0, "GET", "/v2/keys", None);
        assert_eq!(r.headers()["content-type"], "application/json");
    }

    #[test]
    fn paused_cluster() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/k", Some("value=x&ttl=1"));
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/k?wait=true&waitIndex=5", None)),
            Reply::Parked
        ));
        t.etcd.set_paused(true);
        assert!(t.etcd.is_paused());
        let raft = "{\"errorCode\":300,\"message\":\"Raft Internal Error\",\"cause\":\"etcdserver: request timed out\",\"index\":0}\n";
        for (m, pq, body) in [
            ("PUT", "/v2/keys/k2", Some("value=1")),
            ("POST", "/v2/keys/q", Some("value=1")),
            ("DELETE", "/v2/keys/k", None),
            ("GET", "/v2/keys/k?quorum=true", None),
        ] {
            let (s, i, b) = t.call(100, m, pq, body);
            assert_eq!((s, i.as_str(), b.as_str()), (500, "0", raft), "{m} {pq}");
        }
        // local reads and watches still work; parse errors come first
        assert_eq!(t.call(100, "GET", "/v2/keys/k", None).0, 200);
        assert_eq!(t.call(100, "PUT", "/v2/keys/k", Some("ttl=x")).0, 400);
        assert_eq!(t.etcd.next_expiry(), None);
        t.etcd.advance(t.at(5000));
        assert!(t.etcd.get("k").is_some());
        assert!(t.etcd.poll_watch().is_none());
        t.etcd.set_paused(false);
        assert_eq!(t.etcd.next_expiry(), Some(t.at(5500)));
        t.etcd.advance(t.at(5500));
        let (_, r) = t.etcd.poll_watch().unwrap();
        // the late expiry shows in the prevNode's ttl
        assert!(r.body().ends_with(b"\"expiration\":\"2020-01-01T00:00:01Z\",\"ttl\":-4,\"modifiedIndex\":4,\"createdIndex\":4}}\n"), "{}", String::from_utf8_lossy(r.body()));
        assert_eq!(t.etcd.index(), 5);
    }

    #[test]
    fn deterministic_and_never_panics() {
        // A fixed pseudo-random stream of garbage requests: same answers twice, no panic.
        fn run() -> Vec<u8> {
            let t0 = Instant::now();
            let mut e = SimEtcd::new(t0);
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut out = Vec::new();
            let pieces = [
                "/v2/keys",
                "/",
                "a",
                "b",
                "%2F",
                "%2E",
                ".",
                "..",
                "_h",
                "%zz",
                "%",
                "?",
                "&",
                "=",
                ";",
                "wait=true",
                "waitIndex=1",
                "waitIndex=9",
                "prevExist=false",
                "prevExist=true",
                "prevValue=a",
                "prevIndex=4",
                "ttl=0",
                "ttl=1",
                "ttl=99999999999",
                "refresh=true",
                "value=a",
                "dir=true",
                "recursive=true",
                "sorted=true",
                "quorum=true",
                "value=",
                "+",
                "%41",
                "é",
            ];
            let methods = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"];
            for i in 0..3000u64 {
                let mut next = || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let method = methods[(next() % 6) as usize];
                let mut pq = String::from("/v2/keys/");
                for _ in 0..(next() % 6) {
                    pq.push_str(pieces[(next() % pieces.len() as u64) as usize]);
                }
                pq.push('?');
                for _ in 0..(next() % 4) {
                    pq.push_str(pieces[(next() % pieces.len() as u64) as usize]);
                    pq.push('&');
                }
                let mut body = String::new();
                for _ in 0..(next() % 3) {
                    body.push_str(pieces[(next() % pieces.len() as u64) as usize]);
                    body.push('&');
                }
                let now = t0 + Duration::from_millis(i * 37);
                let Ok(uri) = pq.parse::<http::Uri>() else {
                    continue;
                };
                let r = Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("content-type", FORM)
                    .body(body.into_bytes())
                    .unwrap();
                match e.handle(i, &r, now) {
                    Reply::Now(r) => out.extend_from_slice(r.body()),
                    Reply::Parked => out.push(b'P'),
                }
                if next() % 50 == 0 {
                    e.set_paused(!e.is_paused());
                }
                if next() % 100 == 0 {
                    for (_, r) in e.close_watches() {
                        out.extend_from_slice(r.headers()["x-etcd-index"].as_bytes());
                    }
                }
                while let Some((id, r)) = e.poll_watch() {
                    out.extend_from_slice(id.to_string().as_bytes());
                    out.extend_from_slice(r.body());
                }
            }
            out
        }
        assert_eq!(run(), run());
    }
}
