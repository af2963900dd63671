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

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};

/// How many events the watch history keeps (etcd's `newWatchHub(1000)`).
pub const HISTORY_CAPACITY: usize = 1000;

/// The interval of the leader's SYNC ticks that expire keys (etcd's 500 ms `syncTicker`).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// The `X-Etcd-Index` a fresh single-member etcd 3.4/3.5 reports: the bootstrap wrote 3 events.
pub const INITIAL_INDEX: u64 = 3;

/// The fake wall clock's time zero, as Unix seconds: `start` is `2020-01-01T00:00:00Z`.
pub const WALL_CLOCK_EPOCH_UNIX_SECS: i64 = 1_577_836_800;

/// etcd's `minExpireTime` (2000-01-01T00:00:00Z): earlier expiry times make a node permanent.
const MIN_EXPIRE_UNIX_SECS: i64 = 946_684_800;
const NANOS_PER_SEC: i128 = 1_000_000_000;
/// Go's `parsePostForm` limit.
const MAX_FORM_BYTES: usize = 10 << 20;
const KEYS_PREFIX: &[u8] = b"/v2/keys";

const E_KEY_NOT_FOUND: u32 = 100;
const E_TEST_FAILED: u32 = 101;
const E_NOT_FILE: u32 = 102;
const E_NOT_DIR: u32 = 104;
const E_NODE_EXIST: u32 = 105;
const E_ROOT_RONLY: u32 = 107;
const E_DIR_NOT_EMPTY: u32 = 108;
const E_PREV_VALUE_REQUIRED: u32 = 201;
const E_TTL_NAN: u32 = 202;
const E_INDEX_NAN: u32 = 203;
const E_INVALID_FIELD: u32 = 209;
const E_INVALID_FORM: u32 = 210;
const E_REFRESH_VALUE: u32 = 211;
const E_REFRESH_TTL_REQUIRED: u32 = 212;
const E_RAFT_INTERNAL: u32 = 300;
const E_EVENT_INDEX_CLEARED: u32 = 401;

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

#[derive(Debug, Clone)]
struct Node {
    /// `None` for a directory.
    value: Option<Vec<u8>>,
    created: u64,
    modified: u64,
    /// Expiry time in nanoseconds since `start`; `None` for a permanent node.
    expire: Option<i128>,
    ttl_seq: u64,
}

#[derive(Debug, Clone)]
struct HistEvent {
    index: u64,
    /// When it was applied (ns since `start`).
    time: i128,
    key: Vec<u8>,
    refresh: bool,
    /// One of the invisible bootstrap events of a fresh member.
    bootstrap: bool,
    /// For `delete`/`expire` of a directory: its path (etcd's `PrevNode.Dir` scan rule).
    deleted_dir: Option<Vec<u8>>,
    /// The event as etcd encodes it, trailing newline included (shared: replicas of the
    /// store share their history).
    body: Arc<[u8]>,
}

#[derive(Debug, Clone)]
struct Watcher {
    id: u64,
    seq: u64,
    recursive: bool,
    since: u64,
    start_index: u64,
}

/// An event produced by a store operation (etcd's `v2store.Event`).
struct Ev {
    action: &'static str,
    key: Vec<u8>,
    /// The node's modifiedIndex (`Event.Index()`).
    index: u64,
    etcd_index: u64,
    node: Vec<u8>,
    prev: Option<Vec<u8>>,
    deleted_dir: bool,
}

impl Ev {
    /// etcd's `Event.IsCreated`: answered with 201.
    fn is_created(&self) -> bool {
        self.action == "create" || (self.action == "set" && self.prev.is_none())
    }

    fn body(&self, bare: bool) -> Vec<u8> {
        let mut out = b"{\"action\":".to_vec();
        json_str(&mut out, self.action.as_bytes());
        if !bare {
            out.extend_from_slice(b",\"node\":");
            out.extend_from_slice(&self.node);
            if let Some(prev) = &self.prev {
                out.extend_from_slice(b",\"prevNode\":");
                out.extend_from_slice(prev);
            }
        }
        out.extend_from_slice(b"}\n");
        out
    }
}

#[derive(Debug)]
struct EtcdError {
    code: u32,
    cause: Vec<u8>,
    index: u64,
}

impl EtcdError {
    fn new(code: u32, cause: impl Into<Vec<u8>>, index: u64) -> EtcdError {
        EtcdError {
            code,
            cause: cause.into(),
            index,
        }
    }

    fn message(&self) -> &'static str {
        match self.code {
            100 => "Key not found",
            101 => "Compare failed",
            102 => "Not a file",
            104 => "Not a directory",
            105 => "Key already exists",
            107 => "Root is read only",
            108 => "Directory not empty",
            201 => "PrevValue is Required in POST form",
            202 => "The given TTL in POST form is not a number",
            203 => "The given index in POST form is not a number",
            209 => "Invalid field",
            210 => "Invalid POST form",
            211 => "Value provided on refresh",
            212 => "A TTL must be provided on refresh",
            300 => "Raft Internal Error",
            401 => "The event in requested index is outdated and cleared",
            _ => "",
        }
    }

    fn status(&self) -> u16 {
        match self.code {
            100 => 404,
            101 | 105 => 412,
            102 | 108 => 403,
            110 => 401,
            300 | 301 => 500,
            _ => 400,
        }
    }

    fn response(&self) -> Response<Vec<u8>> {
        let mut body = format!("{{\"errorCode\":{},\"message\":", self.code).into_bytes();
        json_str(&mut body, self.message().as_bytes());
        if !self.cause.is_empty() {
            body.extend_from_slice(b",\"cause\":");
            json_str(&mut body, &self.cause);
        }
        body.extend_from_slice(format!(",\"index\":{}}}\n", self.index).as_bytes());
        json_response(self.status(), self.index, body)
    }
}

/// The parameters of a keys request (etcd's `etcdserverpb.Request` fields).
struct Params {
    prev_index: u64,
    wait_index: u64,
    recursive: bool,
    sorted: bool,
    wait: bool,
    dir: bool,
    quorum: bool,
    prev_value: Vec<u8>,
    no_value_on_success: bool,
    ttl: Option<u64>,
    prev_exist: Option<bool>,
    refresh: bool,
    value: Vec<u8>,
}

type Form = Vec<(Vec<u8>, Vec<u8>)>;

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

    // ----------------------------------------------------------------------------------------
    // HTTP layer

    fn ns(&self, t: Instant) -> i128 {
        t.saturating_duration_since(self.start).as_nanos() as i128
    }

    fn serve(&mut self, id: u64, req: &Request<Vec<u8>>, now: i128) -> Served {
        let method = req.method();
        // Go's server decodes the path while parsing the request line.
        let path = match unescape(req.uri().path().as_bytes(), false) {
            Ok(p) if p.is_empty() => b"/".to_vec(),
            Ok(p) => p,
            Err(_) => return Served::Now(go_bad_request(), None),
        };
        // etcd's CORS wrapper answers every OPTIONS request (a preflight) itself.
        if *method == Method::OPTIONS {
            return Served::Now(build(200, &[], Vec::new()), None);
        }
        // Go's ServeMux redirects unclean paths.
        let clean = mux_clean_path(&path);
        if clean != path {
            return Served::Now(redirect(method, &clean, req.uri().query()), None);
        }
        if !(path == KEYS_PREFIX || path.starts_with(b"/v2/keys/")) {
            return Served::Now(plain_error(404, "404 page not found\n", &[]), None);
        }
        if !matches!(
            *method,
            Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE
        ) {
            return Served::Now(
                plain_error(
                    405,
                    "Method Not Allowed\n",
                    &[("allow", "HEAD,GET,PUT,POST,DELETE")],
                ),
                None,
            );
        }
        let form = match self.parse_form(req) {
            Ok(form) => form,
            Err(cause) => {
                return Served::Now(EtcdError::new(E_INVALID_FORM, cause, 0).response(), None)
            }
        };
        let params = match parse_params(&form, method) {
            Ok(p) => p,
            Err(e) => return Served::Now(e.response(), None),
        };
        let mut key = b"/".to_vec();
        key.extend_from_slice(&path[KEYS_PREFIX.len()..]);
        let key = path_clean(&key);
        match self.dispatch(id, method, &key, &params, now) {
            Ok(served) => served,
            Err(e) => Served::Now(e.response(), None),
        }
    }

    /// Go's `Request.ParseForm`: the body (PUT/POST with a form content type) first, then the
    /// query.
    fn parse_form(&self, req: &Request<Vec<u8>>) -> Result<Form, String> {
        let legacy = self.version == EtcdVersion::V3_5;
        let mut err: Option<String> = None;
        let mut form = Form::new();
        if matches!(*req.method(), Method::PUT | Method::POST) {
            let ct = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty())
                .unwrap_or(b"application/octet-stream");
            match parse_media_type(ct, legacy) {
                Err(e) => err = Some(e.to_string()),
                Ok(media_type) if media_type == b"application/x-www-form-urlencoded" => {
                    if req.body().len() > MAX_FORM_BYTES {
                        err = Some("http: POST too large".to_string());
                    } else {
                        let (values, e) = parse_query(req.body(), legacy);
                        err = e;
                        form = values;
                    }
                }
                Ok(_) => {}
            }
        }
        let (values, e) = parse_query(req.uri().query().unwrap_or("").as_bytes(), legacy);
        form.extend(values);
        match err.or(e) {
            Some(e) => Err(e),
            None => Ok(form),
        }
    }

    /// etcd's `RequestV2.Handle` and `applierV2store`.
    fn dispatch(
        &mut self,
        id: u64,
        method: &Method,
        key: &[u8],
        p: &Params,
        now: i128,
    ) -> Result<Served, EtcdError> {
        let through_raft = *method != Method::GET && *method != Method::HEAD
            || (*method == Method::GET && p.quorum);
        if through_raft && self.opts.defer_raft {
            return Ok(Served::Raft);
        }
        if through_raft && self.paused {
            return Err(EtcdError::new(
                E_RAFT_INTERNAL,
                "etcdserver: request timed out",
                0,
            ));
        }
        if through_raft {
            // A failed write (412, 404, ...) went through raft too: its answer also waits for
            // the member to apply it.
            return match self.apply(id, method, key, p, now) {
                Ok(served) => Ok(served),
                Err(e) => Ok(Served::Now(e.response(), Some(self.stamp_now()))),
            };
        }
        self.apply(id, method, key, p, now)
    }

    /// The store's current index, applied now.
    fn stamp_now(&self) -> EventStamp {
        EventStamp {
            index: self.index,
            committed: self.start + duration_from_nanos(self.op_time),
        }
    }

    /// Applies one validated request (etcd's `applierV2store`).
    fn apply(
        &mut self,
        id: u64,
        method: &Method,
        key: &[u8],
        p: &Params,
        now: i128,
    ) -> Result<Served, EtcdError> {
        let through_raft = *method != Method::GET && *method != Method::HEAD
            || (*method == Method::GET && p.quorum);
        // Go: time.Now().Add(time.Duration(ttl) * time.Second), wrapping like Go, on the member
        // that parsed the request.
        let received = self.opts.received.map_or(now, |r| self.ns(r));
        let expire = p
            .ttl
            .map(|ttl| received + i128::from((ttl as i64).wrapping_mul(1_000_000_000)));
        let ev = match *method {
            Method::GET if !p.quorum && p.wait => {
                return self.watch(id, key, p.recursive, p.wait_index);
            }
            Method::GET | Method::HEAD => self.get_event(key, p.recursive, p.sorted, now)?,
            Method::POST => {
                let ev =
                    self.internal_create(key, p.dir, &p.value, true, false, expire, "create", now)?;
                self.commit(ev, false, &[])
            }
            Method::PUT => match p.prev_exist {
                Some(true) if p.prev_index == 0 && p.prev_value.is_empty() => {
                    self.update(key, &p.value, expire, p.refresh, now)?
                }
                Some(true) => self.compare_and_swap(key, p, expire, now)?,
                Some(false) => {
                    let ev = self.internal_create(
                        key, p.dir, &p.value, false, false, expire, "create", now,
                    )?;
                    self.commit(ev, false, &[])
                }
                None if p.prev_index > 0 || !p.prev_value.is_empty() => {
                    self.compare_and_swap(key, p, expire, now)?
                }
                None => self.set(key, p.dir, &p.value, expire, p.refresh, now)?,
            },
            _ => {
                if p.prev_index > 0 || !p.prev_value.is_empty() {
                    self.compare_and_delete(key, &p.prev_value, p.prev_index, now)?
                } else {
                    self.delete(key, p.dir, p.recursive, now)?
                }
            }
        };
        let bare = p.no_value_on_success
            && matches!(ev.action, "set" | "compareAndSwap" | "create" | "update");
        let status = if ev.is_created() { 201 } else { 200 };
        // An answer through raft is sent once the serving member has applied the entry.
        let applied = through_raft.then(|| self.stamp_now());
        Ok(Served::Now(
            json_response(status, ev.etcd_index, ev.body(bare)),
            applied,
        ))
    }

    // ----------------------------------------------------------------------------------------
    // The store (etcd's v2store)

    fn is_dir(&self, path: &[u8]) -> bool {
        path == b"/" || self.nodes.get(path).is_some_and(|n| n.value.is_none())
    }

    /// The children of directory `dir`, in key order.
    fn children(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        let mut prefix = dir.to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        self.nodes
            .range::<[u8], _>((
                std::ops::Bound::Included(&prefix[..]),
                std::ops::Bound::Unbounded,
            ))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .filter(|k| !k[prefix.len()..].contains(&b'/'))
            .cloned()
            .collect()
    }

    /// etcd's `internalGet`: the node must exist; errors name the first missing path or the
    /// first non-directory parent.
    fn internal_get(&self, path: &[u8]) -> Result<(), EtcdError> {
        let mut cur = b"/".to_vec();
        for comp in path.split(|&b| b == b'/').skip(1) {
            if comp.is_empty() {
                return Ok(());
            }
            if !self.is_dir(&cur) {
                return Err(EtcdError::new(E_NOT_DIR, ext(&cur), self.index));
            }
            let child = join(&cur, comp);
            if !self.nodes.contains_key(&child) {
                return Err(EtcdError::new(E_KEY_NOT_FOUND, child, self.index));
            }
            cur = child;
        }
        Ok(())
    }

    /// (value, expire, modifiedIndex, createdIndex) of an existing node or the root.
    fn info(&self, path: &[u8]) -> (Option<&[u8]>, Option<i128>, u64, u64) {
        match self.nodes.get(path) {
            Some(n) => (n.value.as_deref(), n.expire, n.modified, n.created),
            None => (None, None, 0, 0),
        }
    }

    /// etcd's `node.Repr` (`list_top == recursive`) and `loadInternalNode` (`list_top`: a
    /// directory lists its children, each rendered with `Repr(recursive)`), without recursion
    /// on the call stack.
    fn render(&self, path: &[u8], list_top: bool, recursive: bool, now: i128) -> Vec<u8> {
        struct Frame {
            path: Vec<u8>,
            list: bool,
            kids: Vec<Vec<u8>>,
            next: usize,
            done: Vec<Vec<u8>>,
        }
        let frame = |me: &SimEtcd, path: Vec<u8>, list: bool| {
            let kids = if list && me.is_dir(&path) {
                me.children(&path)
                    .into_iter()
                    .filter(|k| !is_hidden_node(k))
                    .collect()
            } else {
                Vec::new()
            };
            Frame {
                path,
                list,
                kids,
                next: 0,
                done: Vec::new(),
            }
        };
        let mut stack = vec![frame(self, path.to_vec(), list_top)];
        loop {
            let Some(top) = stack.last_mut() else {
                return Vec::new();
            };
            if let Some(kid) = top.kids.get(top.next).cloned() {
                top.next += 1;
                stack.push(frame(self, kid, recursive));
                continue;
            }
            let Some(f) = stack.pop() else {
                return Vec::new();
            };
            let (value, expire, modified, created) = self.info(&f.path);
            let json = node_json(&NodeJson {
                key: ext(&f.path),
                value,
                dir: self.is_dir(&f.path),
                expire,
                now,
                nodes: if f.list { Some(&f.done) } else { None },
                modified,
                created,
            });
            match stack.last_mut() {
                Some(parent) => parent.done.push(json),
                None => return json,
            }
        }
    }

    fn repr(&self, path: &[u8], now: i128) -> Vec<u8> {
        self.render(path, false, false, now)
    }

    fn add_ttl(&mut self, path: &[u8], expire: i128) {
        self.ttl_seq += 1;
        let seq = self.ttl_seq;
        if let Some(n) = self.nodes.get_mut(path) {
            n.expire = Some(expire);
            n.ttl_seq = seq;
            self.ttl.insert((expire, seq, path.to_vec()));
        }
    }

    fn remove_ttl(&mut self, path: &[u8]) {
        if let Some(n) = self.nodes.get_mut(path) {
            if let Some(expire) = n.expire.take() {
                self.ttl.remove(&(expire, n.ttl_seq, path.to_vec()));
            }
        }
    }

    /// etcd's `node.UpdateTTL`: no expiry time makes the node permanent.
    fn update_ttl(&mut self, path: &[u8], expire: Option<i128>) {
        self.remove_ttl(path);
        if let Some(expire) = expire {
            self.add_ttl(path, expire);
        }
    }

    /// Removes `path` and everything under it; returns the removed paths in the order etcd's
    /// `node.Remove` calls its callback (children first, then the directory itself).
    fn remove_subtree(&mut self, path: &[u8]) -> Vec<Vec<u8>> {
        let mut order = Vec::new();
        let mut stack: Vec<(Vec<u8>, bool)> = vec![(path.to_vec(), false)];
        while let Some((p, expanded)) = stack.pop() {
            if expanded || !self.is_dir(&p) {
                order.push(p);
                continue;
            }
            let kids = self.children(&p);
            stack.push((p, true));
            for kid in kids.into_iter().rev() {
                stack.push((kid, false));
            }
        }
        for p in &order {
            self.remove_ttl(p);
            self.nodes.remove(p);
        }
        order
    }

    /// Adds the event to the history and, unless it is a refresh, notifies watchers: first the
    /// watchers of every removed path (etcd's delete callback), then those of every prefix of
    /// the event's key (etcd's `watcherHub.notify`).
    fn commit(&mut self, ev: Ev, refresh: bool, removed: &[Vec<u8>]) -> Ev {
        let body = ev.body(false);
        let deleted_dir = if ev.deleted_dir && matches!(ev.action, "delete" | "expire") {
            Some(ev.key.clone())
        } else {
            None
        };
        self.history.push_back(HistEvent {
            index: ev.index,
            time: self.op_time,
            key: ev.key.clone(),
            refresh,
            bootstrap: false,
            deleted_dir,
            body: Arc::from(&body[..]),
        });
        while self.history.len() > HISTORY_CAPACITY {
            self.history.pop_front();
        }
        if !refresh {
            for path in removed {
                self.notify_watchers(&ev, &body, path, true);
            }
            let mut prefix = b"/".to_vec();
            self.notify_watchers(&ev, &body, &prefix, false);
            for comp in ev.key.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
                prefix = join(&prefix, comp);
                self.notify_watchers(&ev, &body, &prefix, false);
            }
        }
        ev
    }

    /// etcd's `watcherHub.notifyWatchers` and `watcher.notify`.
    fn notify_watchers(&mut self, ev: &Ev, body: &[u8], path: &[u8], deleted: bool) {
        let original = ev.key == path;
        if !original && is_hidden(path, &ev.key) {
            return;
        }
        let Some(list) = self.watchers.get_mut(path) else {
            return;
        };
        let mut fired = Vec::new();
        list.retain(|w| {
            let hit = (w.recursive || original || deleted) && ev.index >= w.since;
            if hit {
                fired.push((w.id, w.start_index));
            }
            !hit
        });
        if list.is_empty() {
            self.watchers.remove(path);
        }
        let stamp = EventStamp {
            index: ev.index,
            committed: self.start + duration_from_nanos(self.op_time),
        };
        for (id, start_index) in fired {
            self.completed
                .push_back((id, json_response(200, start_index, body.to_vec()), stamp));
        }
    }

    fn get_event(
        &self,
        key: &[u8],
        recursive: bool,
        _sorted: bool,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        self.internal_get(key)?;
        let (_, _, modified, _) = self.info(key);
        Ok(Ev {
            action: "get",
            key: key.to_vec(),
            index: modified,
            etcd_index: self.index,
            node: self.render(key, true, recursive, now),
            prev: None,
            deleted_dir: false,
        })
    }

    /// etcd's `store.Watch` and `EventHistory.scan`.
    fn watch(
        &mut self,
        id: u64,
        key: &[u8],
        recursive: bool,
        wait_index: u64,
    ) -> Result<Served, EtcdError> {
        // A member behind the store starts from (and reports) the index it has applied.
        let store_index = self.opts.member_index.unwrap_or(self.index);
        let since = if wait_index == 0 {
            store_index + 1
        } else {
            wait_index
        };
        if let (Some(front), Some(back)) = (self.history.front(), self.history.back()) {
            if since < front.index {
                let cause = format!(
                    "the requested history has been cleared [{}/{}]",
                    front.index, since
                );
                return Err(EtcdError::new(E_EVENT_INDEX_CLEARED, cause, store_index));
            }
            if since <= back.index {
                let skip = usize::try_from(since - front.index).unwrap_or(usize::MAX);
                let mut prefix = key.to_vec();
                if prefix.last() != Some(&b'/') {
                    prefix.push(b'/');
                }
                let found = self.history.iter().skip(skip).find(|e| {
                    !e.refresh
                        && !e.bootstrap
                        && (e.key == key
                            || (recursive && e.key.starts_with(&prefix))
                            || e.deleted_dir.as_ref().is_some_and(|d| key.starts_with(d)))
                });
                if let Some(e) = found {
                    let hit = EventStamp {
                        index: e.index,
                        committed: self.start + duration_from_nanos(e.time),
                    };
                    self.last_hit = Some(hit);
                    let response = json_response(200, store_index, e.body.to_vec());
                    return Ok(Served::Now(response, Some(hit)));
                }
            }
        }
        self.watch_seq += 1;
        self.watchers
            .entry(key.to_vec())
            .or_default()
            .push(Watcher {
                id,
                seq: self.watch_seq,
                recursive,
                since,
                start_index: store_index,
            });
        Ok(Served::Parked)
    }

    /// etcd's `internalCreate`: creates missing parent directories (with the new index, no
    /// event), refuses the root, replaces a file when `replace`.
    #[allow(clippy::too_many_arguments)]
    fn internal_create(
        &mut self,
        key: &[u8],
        dir: bool,
        value: &[u8],
        unique: bool,
        replace: bool,
        expire: Option<i128>,
        action: &'static str,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        let next = cur + 1;
        let mut path = key.to_vec();
        if unique {
            path.extend_from_slice(format!("/{next:020}").as_bytes());
        }
        let path = path_clean(&path);
        if path == b"/" {
            return Err(EtcdError::new(E_ROOT_RONLY, "/", cur));
        }
        let expire = expire.filter(|&e| !before_min_expire(e));
        let split = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let mut parent = b"/".to_vec();
        for comp in path[..split]
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
        {
            let child = join(&parent, comp);
            match self.nodes.get(&child) {
                Some(n) if n.value.is_none() => {}
                Some(_) => return Err(EtcdError::new(E_NOT_DIR, child, cur)),
                None => {
                    self.nodes.insert(
                        child.clone(),
                        Node {
                            value: None,
                            created: next,
                            modified: next,
                            expire: None,
                            ttl_seq: 0,
                        },
                    );
                }
            }
            parent = child;
        }
        let mut prev = None;
        if let Some(existing) = self.nodes.get(&path) {
            if !replace {
                return Err(EtcdError::new(E_NODE_EXIST, path, cur));
            }
            if existing.value.is_none() {
                return Err(EtcdError::new(E_NOT_FILE, path, cur));
            }
            prev = Some(self.repr(&path, now));
            self.remove_subtree(&path);
        }
        self.nodes.insert(
            path.clone(),
            Node {
                value: if dir { None } else { Some(value.to_vec()) },
                created: next,
                modified: next,
                expire: None,
                ttl_seq: 0,
            },
        );
        if let Some(e) = expire {
            self.add_ttl(&path, e);
        }
        self.index = next;
        let node = node_json(&NodeJson {
            key: &path,
            value: if dir { None } else { Some(value) },
            dir,
            expire,
            now,
            nodes: None,
            modified: next,
            created: next,
        });
        Ok(Ev {
            action,
            key: path,
            index: next,
            etcd_index: next,
            node,
            prev,
            deleted_dir: false,
        })
    }

    /// etcd's `store.Set`.
    fn set(
        &mut self,
        key: &[u8],
        dir: bool,
        value: &[u8],
        expire: Option<i128>,
        refresh: bool,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let got = self.internal_get(key);
        let exists = match got {
            Ok(()) => true,
            Err(e) if e.code == E_KEY_NOT_FOUND && !refresh => false,
            Err(e) => return Err(e),
        };
        let value = if refresh {
            self.info(key).0.unwrap_or_default().to_vec()
        } else {
            value.to_vec()
        };
        let prev = exists.then(|| self.repr(key, now));
        let mut ev = self.internal_create(key, dir, &value, false, true, expire, "set", now)?;
        if prev.is_some() {
            ev.prev = prev;
        }
        Ok(self.commit(ev, refresh, &[]))
    }

    /// etcd's `store.Update` (`prevExist=true`).
    fn update(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire: Option<i128>,
        refresh: bool,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        let next = cur + 1;
        if key == b"/" {
            return Err(EtcdError::new(E_ROOT_RONLY, "/", cur));
        }
        self.internal_get(key)?;
        let (old_value, _, _, created) = self.info(key);
        let is_dir = old_value.is_none();
        if is_dir && !value.is_empty() {
            return Err(EtcdError::new(E_NOT_FILE, key, cur));
        }
        let value = if refresh {
            old_value.unwrap_or_default().to_vec()
        } else {
            value.to_vec()
        };
        let prev = self.repr(key, now);
        if let Some(n) = self.nodes.get_mut(key) {
            // etcd's node.Write fails (ignored) on a directory: its modifiedIndex stays.
            if !is_dir {
                n.value = Some(value.clone());
                n.modified = next;
            }
        }
        self.update_ttl(key, expire);
        let node = node_json(&NodeJson {
            key,
            value: if is_dir { None } else { Some(&value) },
            dir: is_dir,
            expire: self.info(key).1,
            now,
            nodes: None,
            modified: next,
            created,
        });
        self.index = next;
        let ev = Ev {
            action: "update",
            key: key.to_vec(),
            index: next,
            etcd_index: next,
            node,
            prev: Some(prev),
            deleted_dir: false,
        };
        Ok(self.commit(ev, refresh, &[]))
    }

    /// etcd's `store.CompareAndSwap`.
    fn compare_and_swap(
        &mut self,
        key: &[u8],
        p: &Params,
        expire: Option<i128>,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        if key == b"/" {
            return Err(EtcdError::new(E_ROOT_RONLY, "/", cur));
        }
        self.internal_get(key)?;
        let (old_value, _, modified, created) = self.info(key);
        let Some(old_value) = old_value else {
            return Err(EtcdError::new(E_NOT_FILE, key, cur));
        };
        compare(old_value, modified, &p.prev_value, p.prev_index)
            .map_err(|cause| EtcdError::new(E_TEST_FAILED, cause, cur))?;
        let value = if p.refresh {
            old_value.to_vec()
        } else {
            p.value.clone()
        };
        self.index += 1;
        let index = self.index;
        let prev = self.repr(key, now);
        if let Some(n) = self.nodes.get_mut(key) {
            n.value = Some(value.clone());
            n.modified = index;
        }
        self.update_ttl(key, expire);
        let node = node_json(&NodeJson {
            key,
            value: Some(&value),
            dir: false,
            expire: self.info(key).1,
            now,
            nodes: None,
            modified: index,
            created,
        });
        let ev = Ev {
            action: "compareAndSwap",
            key: key.to_vec(),
            index,
            etcd_index: index,
            node,
            prev: Some(prev),
            deleted_dir: false,
        };
        Ok(self.commit(ev, p.refresh, &[]))
    }

    /// etcd's `store.Delete`.
    fn delete(
        &mut self,
        key: &[u8],
        dir: bool,
        recursive: bool,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        if key == b"/" {
            return Err(EtcdError::new(E_ROOT_RONLY, "/", cur));
        }
        let dir = dir || recursive;
        self.internal_get(key)?;
        let next = cur + 1;
        let is_dir = self.is_dir(key);
        if is_dir {
            if !dir {
                return Err(EtcdError::new(E_NOT_FILE, key, cur));
            }
            if !recursive && !self.children(key).is_empty() {
                return Err(EtcdError::new(E_DIR_NOT_EMPTY, key, cur));
            }
        }
        let (_, _, _, created) = self.info(key);
        let prev = self.repr(key, now);
        let node = node_json(&NodeJson {
            key,
            value: None,
            dir: is_dir,
            expire: None,
            now,
            nodes: None,
            modified: next,
            created,
        });
        let removed = self.remove_subtree(key);
        self.index = next;
        let ev = Ev {
            action: "delete",
            key: key.to_vec(),
            index: next,
            etcd_index: next,
            node,
            prev: Some(prev),
            deleted_dir: is_dir,
        };
        Ok(self.commit(ev, false, &removed))
    }

    /// etcd's `store.CompareAndDelete` (it has no root check: the root is "Not a file").
    fn compare_and_delete(
        &mut self,
        key: &[u8],
        prev_value: &[u8],
        prev_index: u64,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        self.internal_get(key)?;
        let (value, _, modified, created) = self.info(key);
        let Some(value) = value.filter(|_| key != b"/") else {
            return Err(EtcdError::new(E_NOT_FILE, ext(key), cur));
        };
        compare(value, modified, prev_value, prev_index)
            .map_err(|cause| EtcdError::new(E_TEST_FAILED, cause, cur))?;
        self.index += 1;
        let index = self.index;
        let prev = self.repr(key, now);
        let node = node_json(&NodeJson {
            key,
            value: None,
            dir: false,
            expire: None,
            now,
            nodes: None,
            modified: index,
            created,
        });
        let removed = self.remove_subtree(key);
        let ev = Ev {
            action: "compareAndDelete",
            key: key.to_vec(),
            index,
            etcd_index: index,
            node,
            prev: Some(prev),
            deleted_dir: false,
        };
        Ok(self.commit(ev, false, &removed))
    }

    /// etcd's `store.DeleteExpiredKeys(cutoff)`, run at tick time `tick` (ns since start).
    fn expire_at(&mut self, tick: i128) {
        let saved = self.op_time;
        self.op_time = tick;
        while let Some((deadline, _, path)) = self.ttl.first().cloned() {
            if deadline > tick {
                break;
            }
            if !self.nodes.contains_key(&path) {
                // Cannot happen (removals keep the set in step); never loop on it.
                self.ttl.pop_first();
                continue;
            }
            self.index += 1;
            let index = self.index;
            let is_dir = self.is_dir(&path);
            let (_, _, _, created) = self.info(&path);
            let prev = self.repr(&path, tick);
            let node = node_json(&NodeJson {
                key: &path,
                value: None,
                dir: is_dir,
                expire: None,
                now: tick,
                nodes: None,
                modified: index,
                created,
            });
            let removed = self.remove_subtree(&path);
            let ev = Ev {
                action: "expire",
                key: path,
                index,
                etcd_index: index,
                node,
                prev: Some(prev),
                deleted_dir: is_dir,
            };
            self.commit(ev, false, &removed);
        }
        self.op_time = saved;
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

/// etcd's `node.Compare` and `getCompareFailCause`.
fn compare(value: &[u8], modified: u64, prev_value: &[u8], prev_index: u64) -> Result<(), Vec<u8>> {
    let index_match = prev_index == 0 || modified == prev_index;
    let value_match = prev_value.is_empty() || value == prev_value;
    let value_cause = || [b"[", prev_value, b" != ", value, b"]"].concat();
    let index_cause = || format!("[{prev_index} != {modified}]").into_bytes();
    match (value_match, index_match) {
        (true, true) => Ok(()),
        (false, true) => Err(value_cause()),
        (true, false) => Err(index_cause()),
        (false, false) => {
            let mut cause = value_cause();
            cause.push(b' ');
            cause.extend(index_cause());
            Err(cause)
        }
    }
}

// --------------------------------------------------------------------------------------------
// Parameters (etcd's parseKeyRequest)

fn form_get<'a>(form: &'a Form, name: &str) -> Option<&'a [u8]> {
    form.iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

fn parse_params(form: &Form, method: &Method) -> Result<Params, EtcdError> {
    let index = |name: &str| -> Result<u64, EtcdError> {
        match form_get(form, name) {
            None => Ok(0),
            Some(v) => parse_uint(v).ok_or_else(|| {
                EtcdError::new(E_INDEX_NAN, format!("invalid value for \"{name}\""), 0)
            }),
        }
    };
    let flag = |name: &str| -> Result<bool, EtcdError> {
        match form_get(form, name) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| {
                EtcdError::new(E_INVALID_FIELD, format!("invalid value for \"{name}\""), 0)
            }),
        }
    };
    let prev_index = index("prevIndex")?;
    let wait_index = index("waitIndex")?;
    let recursive = flag("recursive")?;
    let sorted = flag("sorted")?;
    let wait = flag("wait")?;
    let dir = flag("dir")?;
    let quorum = flag("quorum")?;
    let _stream = flag("stream")?;
    if wait && *method != Method::GET {
        return Err(EtcdError::new(
            E_INVALID_FIELD,
            "\"wait\" can only be used with GET requests",
            0,
        ));
    }
    let prev_value = form_get(form, "prevValue");
    if prev_value.is_some_and(<[u8]>::is_empty) {
        return Err(EtcdError::new(
            E_PREV_VALUE_REQUIRED,
            "\"prevValue\" cannot be empty",
            0,
        ));
    }
    let no_value_on_success = flag("noValueOnSuccess")?;
    let ttl = match form_get(form, "ttl") {
        Some(v) if !v.is_empty() => Some(
            parse_uint(v)
                .ok_or_else(|| EtcdError::new(E_TTL_NAN, "invalid value for \"ttl\"", 0))?,
        ),
        _ => None,
    };
    let prev_exist = match form_get(form, "prevExist") {
        None => None,
        Some(v) => Some(
            parse_bool(v)
                .ok_or_else(|| EtcdError::new(E_INVALID_FIELD, "invalid value for prevExist", 0))?,
        ),
    };
    let value = form_get(form, "value").unwrap_or_default().to_vec();
    let refresh = match form_get(form, "refresh") {
        None => false,
        Some(v) => parse_bool(v)
            .ok_or_else(|| EtcdError::new(E_INVALID_FIELD, "invalid value for refresh", 0))?,
    };
    if refresh {
        if !value.is_empty() {
            return Err(EtcdError::new(
                E_REFRESH_VALUE,
                "A value was provided on a refresh",
                0,
            ));
        }
        if ttl.is_none() {
            return Err(EtcdError::new(
                E_REFRESH_TTL_REQUIRED,
                "No TTL value set",
                0,
            ));
        }
    }
    Ok(Params {
        prev_index,
        wait_index,
        recursive,
        sorted,
        wait,
        dir,
        quorum,
        prev_value: prev_value.unwrap_or_default().to_vec(),
        no_value_on_success,
        ttl,
        prev_exist,
        refresh,
        value,
    })
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(v, 10, 64)`.
fn parse_uint(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

// --------------------------------------------------------------------------------------------
// Go's net/url and mime

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b.wrapping_sub(b'A').wrapping_add(10),
    }
}

/// Go's `url.unescape` in path (`+` kept) or query-component (`+` is a space) mode; the error
/// is Go's `EscapeError` text.
fn unescape(s: &[u8], query: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                if i + 2 >= s.len() || !is_hex(s[i + 1]) || !is_hex(s[i + 2]) {
                    let bad = &s[i..s.len().min(i + 3)];
                    return Err(format!("invalid URL escape {}", go_quote(bad)));
                }
                out.push(hex_val(s[i + 1]) << 4 | hex_val(s[i + 2]));
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Go's `url.ParseQuery`: the values in order and the error to report, if any. `legacy` is Go
/// 1.16's behaviour (`;` separates like `&`); newer Go reports a `;` as an error (and keeps
/// parsing).
fn parse_query(s: &[u8], legacy: bool) -> (Form, Option<String>) {
    let mut out = Form::new();
    let mut err: Option<String> = None;
    let mut rest = s;
    while !rest.is_empty() {
        let (key, tail) = match rest
            .iter()
            .position(|&b| b == b'&' || (legacy && b == b';'))
        {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = tail;
        if !legacy && key.contains(&b';') {
            err = Some("invalid semicolon separator in query".to_string());
            continue;
        }
        if key.is_empty() {
            continue;
        }
        let (k, v) = match key.iter().position(|&b| b == b'=') {
            Some(i) => (&key[..i], &key[i + 1..]),
            None => (key, &key[key.len()..]),
        };
        match (unescape(k, true), unescape(v, true)) {
            (Ok(k), Ok(v)) => out.push((k, v)),
            (Err(e), _) | (_, Err(e)) => {
                if err.is_none() {
                    err = Some(e);
                }
            }
        }
    }
    (out, err)
}

/// Go's `strconv.Quote` (non-ASCII characters are all taken as printable).
fn go_quote(s: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut i = 0;
    while i < s.len() {
        match decode_rune(&s[i..]) {
            Some((c, n)) => {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{7}' => out.push_str("\\a"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{b}' => out.push_str("\\v"),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => {
                        out.push_str(&format!("\\x{:02x}", c as u32));
                    }
                    c => out.push(c),
                }
                i += n;
            }
            None => {
                out.push_str(&format!("\\x{:02x}", s[i]));
                i += 1;
            }
        }
    }
    out.push('"');
    out
}

/// Decodes one UTF-8 character at the start of `s` (Go's `utf8.DecodeRune` when valid).
fn decode_rune(s: &[u8]) -> Option<(char, usize)> {
    let len = match *s.first()? {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(s.get(..len)?).ok()?.chars().next()?;
    Some((c, len))
}

fn is_tspecial(b: u8) -> bool {
    b"()<>@,;:\\\"/[]?=".contains(&b)
}

fn is_token_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !is_tspecial(b)
}

fn consume_token(v: &[u8]) -> (&[u8], &[u8]) {
    let end = v.iter().position(|&b| !is_token_char(b)).unwrap_or(v.len());
    v.split_at(end)
}

fn trim_left_space(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !is_go_space(*b)).unwrap_or(v.len());
    &v[start..]
}

fn trim_space(v: &[u8]) -> &[u8] {
    let v = trim_left_space(v);
    let end = v
        .iter()
        .rposition(|b| !is_go_space(*b))
        .map_or(0, |i| i + 1);
    &v[..end]
}

fn is_go_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// Go's `mime.consumeValue`.
fn consume_value(v: &[u8]) -> (Vec<u8>, &[u8]) {
    match v.first() {
        None => (Vec::new(), v),
        Some(&b'"') => {
            let mut buf = Vec::new();
            let mut i = 1;
            while i < v.len() {
                let r = v[i];
                if r == b'"' {
                    return (buf, &v[i + 1..]);
                }
                if r == b'\\' && i + 1 < v.len() && is_tspecial(v[i + 1]) {
                    buf.push(v[i + 1]);
                    i += 2;
                    continue;
                }
                if r == b'\r' || r == b'\n' {
                    return (Vec::new(), v);
                }
                buf.push(r);
                i += 1;
            }
            (Vec::new(), v)
        }
        Some(_) => {
            let (token, rest) = consume_token(v);
            (token.to_vec(), rest)
        }
    }
}

/// Go's `mime.consumeMediaParam`.
fn consume_media_param(v: &[u8]) -> Option<(Vec<u8>, Vec<u8>, &[u8])> {
    let rest = trim_left_space(v);
    let rest = trim_left_space(rest.strip_prefix(b";")?);
    let (param, rest) = consume_token(rest);
    if param.is_empty() {
        return None;
    }
    let rest = trim_left_space(trim_left_space(rest).strip_prefix(b"=")?);
    let (value, rest2) = consume_value(rest);
    if value.is_empty() && rest2.len() == rest.len() {
        return None;
    }
    Some((param.to_ascii_lowercase(), value, rest2))
}

/// Go's `mime.ParseMediaType`, reduced to what decides a request's fate: the lower-cased media
/// type, or the error `Request.ParseForm` would report.
fn parse_media_type(v: &[u8], legacy: bool) -> Result<Vec<u8>, &'static str> {
    let base = v.split(|&b| b == b';').next().unwrap_or_default();
    let media_type = trim_space(&base.to_ascii_lowercase()).to_vec();
    let (kind, rest) = consume_token(&media_type);
    if kind.is_empty() {
        return Err("mime: no media type");
    }
    if !rest.is_empty() {
        let Some(rest) = rest.strip_prefix(b"/") else {
            return Err("mime: expected slash after first token");
        };
        let (sub, rest) = consume_token(rest);
        if sub.is_empty() {
            return Err("mime: expected token after slash");
        }
        if !rest.is_empty() {
            return Err("mime: unexpected content after media subtype");
        }
    }
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut rest = &v[base.len()..];
    loop {
        rest = trim_left_space(rest);
        if rest.is_empty() {
            break;
        }
        let Some((key, value, tail)) = consume_media_param(rest) else {
            if trim_space(rest) == b";" {
                break;
            }
            return Err("mime: invalid media parameter");
        };
        match params.iter().find(|(k, _)| *k == key) {
            Some((_, old)) if legacy || *old != value => {
                return Err("mime: duplicate parameter name")
            }
            Some(_) => {}
            None => params.push((key, value)),
        }
        rest = tail;
    }
    Ok(media_type)
}

// --------------------------------------------------------------------------------------------
// Paths

/// Go's `path.Clean` (same algorithm: a write index over a lazily copied buffer).
fn path_clean(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b".".to_vec();
    }
    let rooted = p[0] == b'/';
    let n = p.len();
    let mut buf: Vec<u8> = Vec::with_capacity(n);
    let mut w = 0usize;
    let append = |buf: &mut Vec<u8>, w: &mut usize, c: u8| {
        if *w < buf.len() {
            buf[*w] = c;
        } else {
            buf.push(c);
        }
        *w += 1;
    };
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        append(&mut buf, &mut w, b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if p[r] == b'/' || (p[r] == b'.' && (r + 1 == n || p[r + 1] == b'/')) {
            // An empty or `.` element.
            r += 1;
        } else if p[r] == b'.' && p.get(r + 1) == Some(&b'.') && (r + 2 == n || p[r + 2] == b'/') {
            r += 2;
            if w > dotdot {
                w -= 1;
                while w > dotdot && buf.get(w) != Some(&b'/') {
                    w -= 1;
                }
            } else if !rooted {
                if w > 0 {
                    append(&mut buf, &mut w, b'/');
                }
                append(&mut buf, &mut w, b'.');
                append(&mut buf, &mut w, b'.');
                dotdot = w;
            }
        } else {
            if (rooted && w != 1) || (!rooted && w != 0) {
                append(&mut buf, &mut w, b'/');
            }
            while r < n && p[r] != b'/' {
                append(&mut buf, &mut w, p[r]);
                r += 1;
            }
        }
    }
    if w == 0 {
        return b".".to_vec();
    }
    buf.truncate(w);
    buf
}

/// Go's `net/http.cleanPath` (what `ServeMux` compares the request path against).
fn mux_clean_path(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b"/".to_vec();
    }
    let rooted: Vec<u8> = if p[0] == b'/' {
        p.to_vec()
    } else {
        [b"/", p].concat()
    };
    let mut np = path_clean(&rooted);
    if rooted.last() == Some(&b'/') && np != b"/" {
        np.push(b'/');
    }
    np
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A path as etcd shows it (keys live under `/1`, trimmed from keys and causes): the root is
/// the empty string.
fn ext(path: &[u8]) -> &[u8] {
    if path == b"/" {
        b""
    } else {
        path
    }
}

/// etcd's `node.IsHidden`: the last component starts with `_`.
fn is_hidden_node(path: &[u8]) -> bool {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
    name.first() == Some(&b'_')
}

/// etcd's `isHidden(watchPath, keyPath)`, on etcd's own paths (under `/1`).
fn is_hidden(watch: &[u8], key: &[u8]) -> bool {
    let real = |p: &[u8]| [b"/1", ext(p)].concat();
    let (watch, key) = (real(watch), real(key));
    if watch.len() > key.len() {
        return false;
    }
    let after = path_clean(&[b"/", &key[watch.len()..]].concat());
    after.windows(2).any(|w| w == b"/_")
}

fn before_min_expire(expire: i128) -> bool {
    i128::from(WALL_CLOCK_EPOCH_UNIX_SECS) * NANOS_PER_SEC + expire
        < i128::from(MIN_EXPIRE_UNIX_SECS) * NANOS_PER_SEC
}

fn ceil_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b) + i128::from(a.rem_euclid(b) != 0)
}

fn duration_from_nanos(ns: i128) -> Duration {
    let ns = ns.max(0);
    let secs = u64::try_from(ns / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (ns % NANOS_PER_SEC) as u32)
}

// --------------------------------------------------------------------------------------------
// Encoding (Go's encoding/json and time.Time.MarshalJSON)

struct NodeJson<'a> {
    key: &'a [u8],
    value: Option<&'a [u8]>,
    dir: bool,
    expire: Option<i128>,
    now: i128,
    nodes: Option<&'a [Vec<u8>]>,
    modified: u64,
    created: u64,
}

/// etcd's `NodeExtern` JSON: fields in struct order, each `omitempty`.
fn node_json(n: &NodeJson<'_>) -> Vec<u8> {
    let mut out = b"{".to_vec();
    let field = |out: &mut Vec<u8>, name: &str| {
        if out.len() > 1 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    };
    if !n.key.is_empty() {
        field(&mut out, "key");
        json_str(&mut out, ext(n.key));
    }
    if let Some(value) = n.value {
        field(&mut out, "value");
        json_str(&mut out, value);
    }
    if n.dir {
        field(&mut out, "dir");
        out.extend_from_slice(b"true");
    }
    if let Some(expire) = n.expire {
        field(&mut out, "expiration");
        out.push(b'"');
        out.extend_from_slice(rfc3339_nano(expire).as_bytes());
        out.push(b'"');
        let ttl = ttl_secs(expire, n.now);
        if ttl != 0 {
            field(&mut out, "ttl");
            out.extend_from_slice(ttl.to_string().as_bytes());
        }
    }
    if let Some(nodes) = n.nodes.filter(|nodes| !nodes.is_empty()) {
        field(&mut out, "nodes");
        out.push(b'[');
        for (i, node) in nodes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(node);
        }
        out.push(b']');
    }
    if n.modified != 0 {
        field(&mut out, "modifiedIndex");
        out.extend_from_slice(n.modified.to_string().as_bytes());
    }
    if n.created != 0 {
        field(&mut out, "createdIndex");
        out.extend_from_slice(n.created.to_string().as_bytes());
    }
    out.push(b'}');
    out
}

/// etcd's `expirationAndTTL`: the remaining time rounded up to whole seconds (toward zero when
/// negative).
fn ttl_secs(expire: i128, now: i128) -> i64 {
    let left = expire - now;
    let mut ttl = left / NANOS_PER_SEC;
    if left % NANOS_PER_SEC > 0 {
        ttl += 1;
    }
    i64::try_from(ttl).unwrap_or(if ttl < 0 { i64::MIN } else { i64::MAX })
}

/// `t` (ns since start) on the fake wall clock, as Go's `time.RFC3339Nano` in UTC.
fn rfc3339_nano(t: i128) -> String {
    let unix_ns = i128::from(WALL_CLOCK_EPOCH_UNIX_SECS) * NANOS_PER_SEC + t;
    let secs = unix_ns.div_euclid(NANOS_PER_SEC);
    let nanos = unix_ns.rem_euclid(NANOS_PER_SEC);
    let days = i64::try_from(secs.div_euclid(86_400)).unwrap_or_default();
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A JSON string as Go's `encoding/json` writes it (HTML escaping on, invalid UTF-8 bytes as
/// `\ufffd` one by one, U+2028/U+2029 escaped).
fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'<' | b'>' | b'&' | 0x00..=0x1f => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0xf)]);
                }
                _ => out.push(b),
            }
            i += 1;
            continue;
        }
        match decode_rune(&s[i..]) {
            Some(('\u{2028}', n)) => {
                out.extend_from_slice(b"\\u2028");
                i += n;
            }
            Some(('\u{2029}', n)) => {
                out.extend_from_slice(b"\\u2029");
                i += n;
            }
            Some((_, n)) => {
                out.extend_from_slice(&s[i..i + n]);
                i += n;
            }
            None => {
                out.extend_from_slice(b"\\ufffd");
                i += 1;
            }
        }
    }
    out.push(b'"');
}

// --------------------------------------------------------------------------------------------
// Responses

fn build(status: u16, headers: &[(&str, &[u8])], body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn json_response(status: u16, etcd_index: u64, body: Vec<u8>) -> Response<Vec<u8>> {
    build(
        status,
        &[
            ("content-type", b"application/json"),
            ("x-etcd-index", etcd_index.to_string().as_bytes()),
        ],
        body,
    )
}

/// Go's `http.Error`.
fn plain_error(status: u16, body: &str, extra: &[(&str, &str)]) -> Response<Vec<u8>> {
    let mut headers: Vec<(&str, &[u8])> = extra.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    headers.push(("content-type", b"text/plain; charset=utf-8"));
    headers.push(("x-content-type-options", b"nosniff"));
    build(status, &headers, body.as_bytes().to_vec())
}

/// What Go's server answers to a request line it cannot parse (here: a bad `%` escape).
fn go_bad_request() -> Response<Vec<u8>> {
    build(
        400,
        &[
            ("content-type", b"text/plain; charset=utf-8"),
            ("connection", b"close"),
        ],
        b"400 Bad Request".to_vec(),
    )
}

/// Go's `ServeMux` redirect to the clean path (`http.Redirect` with 301).
fn redirect(method: &Method, clean: &[u8], query: Option<&str>) -> Response<Vec<u8>> {
    let mut location = escape_path(clean);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        location.push('?');
        location.push_str(q);
    }
    let mut headers: Vec<(&str, &[u8])> = vec![("location", location.as_bytes())];
    if *method == Method::GET || *method == Method::HEAD {
        headers.push(("content-type", b"text/html; charset=utf-8"));
    }
    let body = if *method == Method::GET {
        format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            html_escape(&location)
        )
        .into_bytes()
    } else {
        Vec::new()
    };
    build(301, &headers, body)
}

/// Go's `url.PathEscape`-like escaping of `URL.EscapedPath` (mode `encodePath`).
fn escape_path(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len());
    for &b in p {
        let keep = b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = "application/x-www-form-urlencoded";

    fn req(method: &str, path_and_query: &str, body: Option<&str>) -> Request<Vec<u8>> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:2379{path_and_query}"));
        if body.is_some() {
            b = b.header("content-type", FORM);
        }
        b.body(body.unwrap_or("").as_bytes().to_vec()).unwrap()
    }

    struct T {
        etcd: SimEtcd,
        t0: Instant,
        next_id: u64,
    }

    impl T {
        fn new() -> T {
            let t0 = Instant::now();
            T {
                etcd: SimEtcd::new(t0),
                t0,
                next_id: 0,
            }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
        fn send(&mut self, ms: u64, r: Request<Vec<u8>>) -> Reply {
            self.next_id += 1;
            let now = self.at(ms);
            self.etcd.handle(self.next_id, &r, now)
        }
        fn now(
            &mut self,
            ms: u64,
            method: &str,
            pq: &str,
            body: Option<&str>,
        ) -> Response<Vec<u8>> {
            match self.send(ms, req(method, pq, body)) {
                Reply::Now(r) => r,
                Reply::Parked => panic!("{method} {pq} parked"),
            }
        }
        /// (status, X-Etcd-Index, body)
        fn call(
            &mut self,
            ms: u64,
            method: &str,
            pq: &str,
            body: Option<&str>,
        ) -> (u16, String, String) {
            let r = self.now(ms, method, pq, body);
            text(&r)
        }
    }

    fn text(r: &Response<Vec<u8>>) -> (u16, String, String) {
        (
            r.status().as_u16(),
            r.headers()
                .get("x-etcd-index")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            String::from_utf8(r.body().clone()).unwrap(),
        )
    }

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
    fn lock_cycle_exact_bytes() {
        let mut t = T::new();
        let (s, i, b) = t.call(
            0,
            "PUT",
            "/v2/keys/lock?prevExist=false",
            Some("value=node-a&ttl=10"),
        );
        assert_eq!((s, i.as_str()), (201, "4"));
        assert_eq!(b, "{\"action\":\"create\",\"node\":{\"key\":\"/lock\",\"value\":\"node-a\",\"expiration\":\"2020-01-01T00:00:10Z\",\"ttl\":10,\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        let (s, i, b) = t.call(
            100,
            "PUT",
            "/v2/keys/lock?prevExist=false",
            Some("value=node-b&ttl=10"),
        );
        assert_eq!((s, i.as_str()), (412, "4"));
        assert_eq!(b, "{\"errorCode\":105,\"message\":\"Key already exists\",\"cause\":\"/lock\",\"index\":4}\n");
        // renew
        let (s, i, b) = t.call(
            1500,
            "PUT",
            "/v2/keys/lock?prevValue=node-a",
            Some("refresh=true&ttl=10"),
        );
        assert_eq!((s, i.as_str()), (200, "5"));
        assert_eq!(b, "{\"action\":\"compareAndSwap\",\"node\":{\"key\":\"/lock\",\"value\":\"node-a\",\"expiration\":\"2020-01-01T00:00:11.5Z\",\"ttl\":10,\"modifiedIndex\":5,\"createdIndex\":4},\"prevNode\":{\"key\":\"/lock\",\"value\":\"node-a\",\"expiration\":\"2020-01-01T00:00:10Z\",\"ttl\":9,\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        // renew by the wrong holder
        let (s, _, b) = t.call(
            1600,
            "PUT",
            "/v2/keys/lock?prevValue=node-b",
            Some("refresh=true&ttl=10"),
        );
        assert_eq!(s, 412);
        assert_eq!(b, "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[node-b != node-a]\",\"index\":5}\n");
        // unlock by the wrong holder, then the right one
        let (s, _, _) = t.call(1700, "DELETE", "/v2/keys/lock?prevValue=node-b", None);
        assert_eq!(s, 412);
        let (s, i, b) = t.call(1800, "DELETE", "/v2/keys/lock?prevValue=node-a", None);
        assert_eq!((s, i.as_str()), (200, "6"));
        assert_eq!(b, "{\"action\":\"compareAndDelete\",\"node\":{\"key\":\"/lock\",\"modifiedIndex\":6,\"createdIndex\":4},\"prevNode\":{\"key\":\"/lock\",\"value\":\"node-a\",\"expiration\":\"2020-01-01T00:00:11.5Z\",\"ttl\":10,\"modifiedIndex\":5,\"createdIndex\":4}}\n");
        let (s, i, b) = t.call(1900, "DELETE", "/v2/keys/lock?prevValue=node-a", None);
        assert_eq!((s, i.as_str()), (404, "6"));
        assert_eq!(
            b,
            "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/lock\",\"index\":6}\n"
        );
        let (s, _, _) = t.call(
            1900,
            "PUT",
            "/v2/keys/lock?prevValue=node-a",
            Some("refresh=true&ttl=10"),
        );
        assert_eq!(s, 404);
    }

    #[test]
    fn refresh_variants_and_errors() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/r", Some("value=a&ttl=100"));
        let (s, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/r?prevValue=a",
            Some("refresh=true&ttl=5&value=x"),
        );
        assert_eq!((s, b.as_str()), (400, "{\"errorCode\":211,\"message\":\"Value provided on refresh\",\"cause\":\"A value was provided on a refresh\",\"index\":0}\n"));
        let (s, i, b) = t.call(0, "PUT", "/v2/keys/r?prevValue=a", Some("refresh=true"));
        assert_eq!((s, i.as_str(), b.as_str()), (400, "0", "{\"errorCode\":212,\"message\":\"A TTL must be provided on refresh\",\"cause\":\"No TTL value set\",\"index\":0}\n"));
        // an empty value is not "a value"
        let (s, _, _) = t.call(
            0,
            "PUT",
            "/v2/keys/r?prevValue=a",
            Some("refresh=true&ttl=5&value="),
        );
        assert_eq!(s, 200);
        // prevExist=true refresh: update, value kept
        let (s, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/r?prevExist=true",
            Some("refresh=true&ttl=5"),
        );
        assert_eq!(s, 200);
        assert!(
            b.starts_with("{\"action\":\"update\",\"node\":{\"key\":\"/r\",\"value\":\"a\""),
            "{b}"
        );
        // unconditional refresh: set, new createdIndex
        let (s, i, b) = t.call(0, "PUT", "/v2/keys/r", Some("refresh=true&ttl=5"));
        assert_eq!((s, i.as_str()), (200, "7"));
        assert!(b.starts_with("{\"action\":\"set\",\"node\":{\"key\":\"/r\",\"value\":\"a\",\"expiration\":\"2020-01-01T00:00:05Z\",\"ttl\":5,\"modifiedIndex\":7,\"createdIndex\":7},\"prevNode\""), "{b}");
        assert_eq!(t.etcd.get("/r"), Some(("a".into(), 7, 7)));
        // unconditional refresh of a missing key
        let (s, _, _) = t.call(0, "PUT", "/v2/keys/nope", Some("refresh=true&ttl=5"));
        assert_eq!(s, 404);
        // refresh=bogus
        let (s, _, b) = t.call(0, "PUT", "/v2/keys/r", Some("refresh=yes&ttl=5"));
        assert_eq!((s, b.as_str()), (400, "{\"errorCode\":209,\"message\":\"Invalid field\",\"cause\":\"invalid value for refresh\",\"index\":0}\n"));
    }

    #[test]
    fn refresh_does_not_notify_and_is_skipped_in_history() {
        let mut t = T::new();
        t.call(
            0,
            "PUT",
            "/v2/keys/r?prevExist=false",
            Some("value=a&ttl=100"),
        ); // 4
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/r?wait=true&waitIndex=5", None)),
            Reply::Parked
        ));
        t.call(
            0,
            "PUT",
            "/v2/keys/r?prevValue=a",
            Some("refresh=true&ttl=100"),
        ); // 5
        t.call(
            0,
            "PUT",
            "/v2/keys/r?prevIndex=5",
            Some("refresh=true&ttl=100"),
        ); // 6
        assert!(t.etcd.poll_watch().is_none());
        assert_eq!(t.etcd.get("r"), Some(("a".into(), 4, 6)));
        // A new watch from the refresh index is parked too.
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/r?wait=true&waitIndex=5", None)),
            Reply::Parked
        ));
        // The next real change completes both, in order.
        t.call(0, "DELETE", "/v2/keys/r", None); // 7
        let (a, ra) = t.etcd.poll_watch().unwrap();
        let (b, rb) = t.etcd.poll_watch().unwrap();
        assert_eq!((a, b), (2, 5));
        let (s, i, body) = text(&ra);
        assert_eq!((s, i.as_str()), (200, "4"));
        assert!(body.starts_with("{\"action\":\"delete\",\"node\":{\"key\":\"/r\",\"modifiedIndex\":7,\"createdIndex\":4}"));
        assert_eq!(text(&rb).1, "6");
    }

    #[test]
    fn parse_errors() {
        let mut t = T::new();
        let cases = [
            (
                "PUT",
                "/v2/keys/a?prevValue=",
                "value=x",
                201,
                "\"prevValue\" cannot be empty",
            ),
            (
                "PUT",
                "/v2/keys/a",
                "value=x&ttl=abc",
                202,
                "invalid value for \"ttl\"",
            ),
            (
                "PUT",
                "/v2/keys/a",
                "value=x&ttl=-1",
                202,
                "invalid value for \"ttl\"",
            ),
            (
                "PUT",
                "/v2/keys/a",
                "value=x&ttl=+1",
                202,
                "invalid value for \"ttl\"",
            ),
            (
                "PUT",
                "/v2/keys/a?prevIndex=x",
                "value=x",
                203,
                "invalid value for \"prevIndex\"",
            ),
            (
                "GET",
                "/v2/keys/a?wait=true&waitIndex=x",
                "",
                203,
                "invalid value for \"waitIndex\"",
            ),
            (
                "GET",
                "/v2/keys/a?wait=",
                "",
                209,
                "invalid value for \"wait\"",
            ),
            (
                "PUT",
                "/v2/keys/a?prevExist=maybe",
                "value=x",
                209,
                "invalid value for prevExist",
            ),
            (
                "PUT",
                "/v2/keys/a?wait=true",
                "value=x",
                209,
                "\"wait\" can only be used with GET requests",
            ),
            (
                "GET",
                "/v2/keys/a?x=%zz",
                "",
                210,
                "invalid URL escape \"%zz\"",
            ),
            (
                "GET",
                "/v2/keys/a?x=%4",
                "",
                210,
                "invalid URL escape \"%4\"",
            ),
            (
                "GET",
                "/v2/keys/a?x=1;y=2",
                "",
                210,
                "invalid semicolon separator in query",
            ),
            (
                "PUT",
                "/v2/keys/a",
                "a;b=c",
                210,
                "invalid semicolon separator in query",
            ),
        ];
        for (m, pq, body, code, cause) in cases {
            let body = if m == "GET" { None } else { Some(body) };
            let (s, i, b) = t.call(0, m, pq, body);
            let mut want = format!("{{\"errorCode\":{code},\"message\":\"");
            want.push_str(EtcdError::new(code, "", 0).message());
            want.push_str("\",\"cause\":");
            let mut c = Vec::new();
            json_str(&mut c, cause.as_bytes());
            want.push_str(std::str::from_utf8(&c).unwrap());
            want.push_str(",\"index\":0}\n");
            assert_eq!(
                (s, i.as_str(), b.as_str()),
                (400, "0", want.as_str()),
                "{m} {pq}"
            );
        }
        assert_eq!(t.etcd.index(), 3);
    }

    #[test]
    fn semicolons_per_version() {
        let t0 = Instant::now();
        let mut e = SimEtcd::new(t0).with_version(EtcdVersion::V3_5);
        let Reply::Now(r) = e.handle(
            1,
            &req(
                "PUT",
                "/v2/keys/a?x=1;prevExist=false",
                Some("value=v;ttl=5"),
            ),
            t0,
        ) else {
            panic!()
        };
        assert_eq!(r.status(), 201);
        assert!(r.body().starts_with(
            b"{\"action\":\"create\",\"node\":{\"key\":\"/a\",\"value\":\"v\",\"expiration\""
        ));
        assert_eq!(EtcdVersion::from_version_string("3.5.1"), EtcdVersion::V3_5);
        assert_eq!(
            EtcdVersion::from_version_string("3.4.23"),
            EtcdVersion::V3_4
        );
    }

    #[test]
    fn ttl_zero_lives_until_the_next_tick() {
        let mut t = T::new();
        let (s, _, b) = t.call(700, "PUT", "/v2/keys/z", Some("value=x&ttl=0"));
        assert_eq!(s, 201);
        assert_eq!(b, "{\"action\":\"set\",\"node\":{\"key\":\"/z\",\"value\":\"x\",\"expiration\":\"2020-01-01T00:00:00.7Z\",\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        assert_eq!(t.call(999, "GET", "/v2/keys/z", None).0, 200);
        assert_eq!(t.etcd.next_expiry(), Some(t.at(1000)));
        assert_eq!(t.call(1000, "GET", "/v2/keys/z", None).0, 404);
        assert_eq!(t.etcd.index(), 5);
    }

    #[test]
    fn expiry_on_sync_ticks() {
        let mut t = T::new();
        t.call(200, "PUT", "/v2/keys/k", Some("value=x&ttl=1")); // deadline 1.2 s
        assert_eq!(t.etcd.next_expiry(), Some(t.at(1500)));
        t.etcd.advance(t.at(1499));
        assert!(t.etcd.get("/k").is_some());
        // ttl while late: 0 is omitted
        let (_, _, b) = t.call(1400, "GET", "/v2/keys/k", None);
        assert!(!b.contains("\"ttl\""), "{b}");
        t.etcd.advance(t.at(1500));
        assert!(t.etcd.get("/k").is_none());
        assert_eq!(t.etcd.next_expiry(), None);
        // the expire event is in the history
        let (s, i, b) = t.call(1600, "GET", "/v2/keys/k?wait=true&waitIndex=5", None);
        assert_eq!((s, i.as_str()), (200, "5"));
        assert_eq!(b, "{\"action\":\"expire\",\"node\":{\"key\":\"/k\",\"modifiedIndex\":5,\"createdIndex\":4},\"prevNode\":{\"key\":\"/k\",\"value\":\"x\",\"expiration\":\"2020-01-01T00:00:01.2Z\",\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        // custom interval
        let mut e = SimEtcd::new(t.t0).with_sync_interval(Duration::from_millis(100));
        e.handle(
            1,
            &req("PUT", "/v2/keys/k", Some("value=x&ttl=1")),
            t.at(250),
        );
        assert_eq!(e.next_expiry(), Some(t.at(1300)));
        assert_eq!(e.sync_interval(), Duration::from_millis(100));
    }

    #[test]
    fn ttl_rounds_up_and_goes_negative() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/k", Some("value=x&ttl=5"));
        let (_, _, b) = t.call(100, "GET", "/v2/keys/k", None);
        assert!(b.contains("\"ttl\":5,"), "{b}");
        let (_, _, b) = t.call(1000, "GET", "/v2/keys/k", None);
        assert!(b.contains("\"ttl\":4,"), "{b}");
        t.etcd.advance(t.at(1000));
        t.etcd.set_paused(true);
        let (_, _, b) = t.call(7200, "GET", "/v2/keys/k", None);
        assert!(b.contains("\"ttl\":-2,"), "{b}");
    }

    #[test]
    fn watch_parked_then_completed_by_expire() {
        let mut t = T::new();
        t.call(
            0,
            "PUT",
            "/v2/keys/lock?prevExist=false",
            Some("value=a&ttl=1"),
        );
        let (s, _, _) = t.call(
            0,
            "PUT",
            "/v2/keys/lock?prevExist=false",
            Some("value=b&ttl=1"),
        );
        assert_eq!(s, 412);
        assert!(matches!(
            t.send(100, req("GET", "/v2/keys/lock?wait=true&waitIndex=5", None)),
            Reply::Parked
        ));
        assert!(matches!(
            t.send(100, req("GET", "/v2/keys/other?wait=true", None)),
            Reply::Parked
        ));
        assert_eq!(t.etcd.parked_watches(), 2);
        assert!(t.etcd.poll_watch().is_none());
        t.etcd.advance(t.at(999));
        assert!(t.etcd.poll_watch().is_none());
        t.etcd.advance(t.at(1000));
        let (id, r) = t.etcd.poll_watch().unwrap();
        assert_eq!(id, 3);
        let (s, i, b) = text(&r);
        assert_eq!((s, i.as_str()), (200, "4"));
        assert_eq!(b, "{\"action\":\"expire\",\"node\":{\"key\":\"/lock\",\"modifiedIndex\":5,\"createdIndex\":4},\"prevNode\":{\"key\":\"/lock\",\"value\":\"a\",\"expiration\":\"2020-01-01T00:00:01Z\",\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        assert!(t.etcd.poll_watch().is_none());
        assert_eq!(t.etcd.parked_watches(), 1);
    }

    #[test]
    fn watch_from_history_and_future_index() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/w", Some("value=1")); // 4
        t.call(0, "PUT", "/v2/keys/x", Some("value=1")); // 5
        t.call(0, "PUT", "/v2/keys/w", Some("value=2")); // 6
        let (s, i, b) = t.call(0, "GET", "/v2/keys/w?wait=true&waitIndex=5", None);
        assert_eq!((s, i.as_str()), (200, "6"));
        assert!(b.starts_with("{\"action\":\"set\",\"node\":{\"key\":\"/w\",\"value\":\"2\",\"modifiedIndex\":6,\"createdIndex\":6},\"prevNode\":{\"key\":\"/w\",\"value\":\"1\""));
        // wait=true&quorum=true is a read
        let (s, _, b) = t.call(0, "GET", "/v2/keys/w?wait=true&quorum=true", None);
        assert_eq!(s, 200);
        assert!(b.starts_with("{\"action\":\"get\""));
        // a future waitIndex stays parked past earlier events
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/w?wait=true&waitIndex=8", None)),
            Reply::Parked
        ));
        t.call(0, "PUT", "/v2/keys/w", Some("value=3")); // 7
        assert!(t.etcd.poll_watch().is_none());
        t.call(0, "PUT", "/v2/keys/w", Some("value=4")); // 8
        assert!(t
            .etcd
            .poll_watch()
            .unwrap()
            .1
            .body()
            .starts_with(b"{\"action\":\"set\",\"node\":{\"key\":\"/w\",\"value\":\"4\""));
        // bootstrap events are never seen
        assert!(matches!(
            t.send(
                0,
                req("GET", "/v2/keys?wait=true&recursive=true&waitIndex=1", None)
            ),
            Reply::Now(_)
        ));
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/q?wait=true&waitIndex=1", None)),
            Reply::Parked
        ));
    }

    #[test]
    fn recursive_and_directory_watches() {
        let mut t = T::new();
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/d?wait=true&recursive=true", None)),
            Reply::Parked
        ));
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/d/f?wait=true", None)),
            Reply::Parked
        ));
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/d?wait=true", None)),
            Reply::Parked
        ));
        t.call(0, "PUT", "/v2/keys/d/f", Some("value=1")); // 4: creates dir d
                                                           // walk order: the recursive watcher on /d, then the one on /d/f; the plain one on /d stays
        let ids: Vec<u64> = std::iter::from_fn(|| t.etcd.poll_watch())
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        assert!(t.etcd.poll_watch().is_none());
        // the plain watcher on the directory fires on its recursive delete
        t.call(0, "DELETE", "/v2/keys/d?recursive=true", None);
        let (id, r) = t.etcd.poll_watch().unwrap();
        assert_eq!(id, 3);
        assert!(r
            .body()
            .starts_with(b"{\"action\":\"delete\",\"node\":{\"key\":\"/d\",\"dir\":true,"));
        // history rule: a deleted directory matches watchers of keys under it
        let (s, _, b) = t.call(0, "GET", "/v2/keys/d/f/g?wait=true&waitIndex=5", None);
        assert_eq!(s, 200);
        assert!(b.contains("\"action\":\"delete\""));
    }

    #[test]
    fn history_is_1000_events_then_401() {
        let mut t = T::new();
        for i in 0..1100 {
            t.call(0, "PUT", "/v2/keys/h", Some(&format!("value={i}")));
        }
        assert_eq!(t.etcd.index(), 1103);
        let (s, i, b) = t.call(0, "GET", "/v2/keys/h?wait=true&waitIndex=5", None);
        assert_eq!((s, i.as_str()), (400, "1103"));
        assert_eq!(b, "{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\"cause\":\"the requested history has been cleared [104/5]\",\"index\":1103}\n");
        let (s, _, b) = t.call(0, "GET", "/v2/keys/h?wait=true&waitIndex=104", None);
        assert_eq!(s, 200);
        assert!(b.contains("\"modifiedIndex\":104,"));
        assert_eq!(
            t.call(0, "GET", "/v2/keys/h?wait=true&waitIndex=103", None)
                .0,
            400
        );
    }

    #[test]
    fn close_watches_and_cancel() {
        let mut t = T::new();
        for k in ["a", "b", "c"] {
            assert!(matches!(
                t.send(0, req("GET", &format!("/v2/keys/{k}?wait=true"), None)),
                Reply::Parked
            ));
        }
        t.etcd.cancel(2);
        t.etcd.cancel(99);
        let closed = t.etcd.close_watches();
        assert_eq!(
            closed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![1, 3]
        );
        for (_, r) in &closed {
            assert_eq!(text(r), (200, "3".into(), String::new()));
        }
        assert_eq!(t.etcd.parked_watches(), 0);
        t.call(0, "PUT", "/v2/keys/a", Some("value=1"));
        assert!(t.etcd.poll_watch().is_none());
        // cancel also drops a completed, unpolled response
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/a?wait=true", None)),
            Reply::Parked
        ));
        t.call(0, "PUT", "/v2/keys/a", Some("value=2"));
        t.etcd.cancel(5);
        assert!(t.etcd.poll_watch().is_none());
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
    fn paths_like_go() {
        let mut t = T::new();
        let r = t.now(0, "GET", "/v2/keys/a//b", None);
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], "/v2/keys/a/b");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(
            r.body().as_slice(),
            b"<a href=\"/v2/keys/a/b\">Moved Permanently</a>.\n\n"
        );
        let r = t.now(0, "PUT", "/v2/keys/a//b?x=1&y=a%20b", Some("value=1"));
        assert_eq!((r.status().as_u16(), r.body().len()), (301, 0));
        assert_eq!(r.headers()["location"], "/v2/keys/a/b?x=1&y=a%20b");
        assert!(r.headers().get("content-type").is_none());
        for (p, loc) in [
            ("/v2/keys/a/%2E%2E/b%20c%3Fd?q=1", "/v2/keys/b%20c%3Fd?q=1"),
            ("/v2/keys/a%2F%2Fb", "/v2/keys/a/b"),
            ("/v2/keys/./a", "/v2/keys/a"),
            ("/v2/keys/..", "/v2"),
            ("/v2/keys/a/..", "/v2/keys"),
            ("/v2/keys//", "/v2/keys/"),
            ("/v2//keys/a", "/v2/keys/a"),
        ] {
            let r = t.now(0, "GET", p, None);
            assert_eq!(
                (
                    r.status().as_u16(),
                    r.headers()["location"].to_str().unwrap()
                ),
                (301, loc),
                "{p}"
            );
        }
        let r = t.now(0, "GET", "/v2/keys/a%zz", None);
        assert_eq!(
            (r.status().as_u16(), r.body().as_slice()),
            (400, &b"400 Bad Request"[..])
        );
        let r = t.now(0, "GET", "/v2/keysfoo", None);
        assert_eq!(
            (r.status().as_u16(), r.body().as_slice()),
            (404, &b"404 page not found\n"[..])
        );
        let r = t.now(0, "OPTIONS", "/v2/keys//a", None);
        assert_eq!((r.status().as_u16(), r.body().len()), (200, 0));
        let r = t.now(0, "PATCH", "/v2/keys/a", None);
        assert_eq!(
            (r.status().as_u16(), r.body().as_slice()),
            (405, &b"Method Not Allowed\n"[..])
        );
        assert_eq!(r.headers()["allow"], "HEAD,GET,PUT,POST,DELETE");
        // root
        for (m, pq) in [
            ("PUT", "/v2/keys/"),
            ("PUT", "/v2/keys"),
            ("PUT", "/v2/keys?prevExist=true"),
            ("PUT", "/v2/keys?prevValue=x"),
            ("DELETE", "/v2/keys?recursive=true"),
        ] {
            let (s, i, b) = t.call(0, m, pq, Some("value=1"));
            assert_eq!((s, i.as_str(), b.as_str()), (400, "3", "{\"errorCode\":107,\"message\":\"Root is read only\",\"cause\":\"/\",\"index\":3}\n"), "{m} {pq}");
        }
        let (s, _, b) = t.call(0, "DELETE", "/v2/keys?prevValue=x", None);
        assert_eq!(
            (s, b.as_str()),
            (
                403,
                "{\"errorCode\":102,\"message\":\"Not a file\",\"index\":3}\n"
            )
        );
        // special characters; %2F is a separator, trailing slash dropped
        let (s, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/sp%20a%3Fb%25c+d%2Be",
            Some("value=x+y%2Bz"),
        );
        assert_eq!(s, 201);
        assert!(
            b.contains("\"key\":\"/sp a?b%c+d+e\",\"value\":\"x y+z\""),
            "{b}"
        );
        assert_eq!(t.call(0, "PUT", "/v2/keys/n%2Fm/", Some("value=1")).0, 201);
        assert_eq!(t.etcd.get("/n/m").unwrap().0, "1");
        let (s, _, b) = t.call(0, "GET", "/v2/keys/n/m/", None);
        assert_eq!(s, 200);
        assert!(b.contains("\"key\":\"/n/m\""));
        let (s, _, b) = t.call(0, "GET", "/v2/keys/x/y/z", None);
        assert_eq!(
            (s, b.as_str()),
            (
                404,
                "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/x\",\"index\":5}\n"
            )
        );
        let (s, _, b) = t.call(0, "PUT", "/v2/keys/n/m/o", Some("value=1"));
        assert_eq!((s, b.as_str()), (400, "{\"errorCode\":104,\"message\":\"Not a directory\",\"cause\":\"/n/m\",\"index\":5}\n"));
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/n/m/o?prevExist=false", Some("value=1"))
                .0,
            400
        );
        assert_eq!(t.call(0, "GET", "/v2/keys/n/m/o", None).0, 400);
        // HEAD: no body
        let r = t.now(0, "HEAD", "/v2/keys/n/m", None);
        assert_eq!((r.status().as_u16(), r.body().len()), (200, 0));
    }

    #[test]
    fn form_rules() {
        let mut t = T::new();
        // body wins over query
        let (_, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/q?value=query",
            Some("value=body&value=body2"),
        );
        assert!(b.contains("\"value\":\"body\""));
        // query used when body lacks it; content-type parameters are fine
        let r = Request::put("/v2/keys/q?value=query")
            .header(
                "content-type",
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            )
            .body(b"ttl=5".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(1, &r, t.t0) else {
            panic!()
        };
        assert!(String::from_utf8_lossy(r.body()).contains("\"value\":\"query\",\"expiration\""));
        // without the form content type the body is ignored
        let r = Request::put("/v2/keys/q")
            .header("content-type", "text/plain")
            .body(b"value=b".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(2, &r, t.t0) else {
            panic!()
        };
        assert!(String::from_utf8_lossy(r.body()).contains("\"value\":\"\""));
        let r = Request::put("/v2/keys/q")
            .body(b"value=b".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(3, &r, t.t0) else {
            panic!()
        };
        assert!(String::from_utf8_lossy(r.body()).contains("\"value\":\"\""));
        let r = Request::put("/v2/keys/q")
            .header("content-type", "bad/;;;")
            .body(b"value=b".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(4, &r, t.t0) else {
            panic!()
        };
        assert_eq!(text(&r).2, "{\"errorCode\":210,\"message\":\"Invalid POST form\",\"cause\":\"mime: expected token after slash\",\"index\":0}\n");
        // DELETE body is ignored: unconditional delete
        t.call(0, "PUT", "/v2/keys/d", Some("value=v"));
        let r = Request::delete("/v2/keys/d")
            .header("content-type", FORM)
            .body(b"prevValue=zz".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(5, &r, t.t0) else {
            panic!()
        };
        assert!(text(&r).2.starts_with("{\"action\":\"delete\""));
        // noValueOnSuccess
        let (s, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/nv?noValueOnSuccess=true",
            Some("value=1"),
        );
        assert_eq!((s, b.as_str()), (201, "{\"action\":\"set\"}\n"));
    }

    #[test]
    fn compare_causes() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/r", Some("value=a")); // 4
        let cause = |t: &mut T, q: &str| {
            let (s, _, b) = t.call(0, "PUT", &format!("/v2/keys/r?{q}"), Some("value=b"));
            assert_eq!(s, 412);
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            v["cause"].as_str().unwrap().to_string()
        };
        assert_eq!(cause(&mut t, "prevIndex=99"), "[99 != 4]");
        assert_eq!(
            cause(&mut t, "prevIndex=99&prevValue=zz"),
            "[zz != a] [99 != 4]"
        );
        assert_eq!(cause(&mut t, "prevIndex=4&prevValue=zz"), "[zz != a]");
        assert_eq!(cause(&mut t, "prevExist=true&prevValue=zz"), "[zz != a]");
        let (s, _, b) = t.call(0, "DELETE", "/v2/keys/r?prevIndex=3", None);
        assert_eq!((s, b.as_str()), (412, "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[3 != 4]\",\"index\":4}\n"));
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/r?prevIndex=4", Some("value=c"))
                .0,
            200
        );
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/nope?prevExist=true", Some("value=c"))
                .0,
            404
        );
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/nope?prevValue=x", Some("value=c"))
                .0,
            404
        );
    }

    #[test]
    fn ttl_removed_by_write_without_ttl() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/k", Some("value=a&ttl=1"));
        t.call(0, "PUT", "/v2/keys/k?prevValue=a", Some("value=b"));
        assert_eq!(t.etcd.next_expiry(), None);
        t.etcd.advance(t.at(10_000));
        assert_eq!(t.etcd.get("k").unwrap().0, "b");
    }

    #[test]
    fn in_order_keys_and_directories() {
        let mut t = T::new();
        let (s, _, b) = t.call(0, "POST", "/v2/keys/queue", Some("value=q&ttl=5"));
        assert_eq!(s, 201);
        assert!(b.starts_with("{\"action\":\"create\",\"node\":{\"key\":\"/queue/00000000000000000004\",\"value\":\"q\""), "{b}");
        t.call(0, "POST", "/v2/keys/queue", Some("value=q2"));
        t.call(0, "PUT", "/v2/keys/queue/_hidden", Some("value=h"));
        let (_, _, b) = t.call(0, "GET", "/v2/keys/queue?sorted=true", None);
        assert_eq!(b, "{\"action\":\"get\",\"node\":{\"key\":\"/queue\",\"dir\":true,\"nodes\":[{\"key\":\"/queue/00000000000000000004\",\"value\":\"q\",\"expiration\":\"2020-01-01T00:00:05Z\",\"ttl\":5,\"modifiedIndex\":4,\"createdIndex\":4},{\"key\":\"/queue/00000000000000000005\",\"value\":\"q2\",\"modifiedIndex\":5,\"createdIndex\":5}],\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        let (s, _, b) = t.call(0, "POST", "/v2/keys", Some("value=r"));
        assert_eq!(s, 201);
        assert!(b.contains("\"key\":\"/00000000000000000007\""));
        // directories
        let (s, _, b) = t.call(0, "PUT", "/v2/keys/d1?dir=true", Some("ttl=100"));
        assert_eq!((s, b.as_str()), (201, "{\"action\":\"set\",\"node\":{\"key\":\"/d1\",\"dir\":true,\"expiration\":\"2020-01-01T00:01:40Z\",\"ttl\":100,\"modifiedIndex\":8,\"createdIndex\":8}}\n"));
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/d1?dir=true", None).2,
            "{\"errorCode\":102,\"message\":\"Not a file\",\"cause\":\"/d1\",\"index\":8}\n"
        );
        t.call(0, "PUT", "/v2/keys/d1/f", Some("value=v"));
        assert_eq!(t.call(0, "DELETE", "/v2/keys/d1", None).0, 403);
        assert_eq!(t.call(0, "DELETE", "/v2/keys/d1?dir=true", None).2, "{\"errorCode\":108,\"message\":\"Directory not empty\",\"cause\":\"/d1\",\"index\":9}\n");
        let (_, _, b) = t.call(0, "GET", "/v2/keys/?recursive=true&sorted=true", None);
        assert!(b.contains("{\"key\":\"/d1\",\"dir\":true,\"expiration\":\"2020-01-01T00:01:40Z\",\"ttl\":100,\"nodes\":[{\"key\":\"/d1/f\",\"value\":\"v\",\"modifiedIndex\":9,\"createdIndex\":9}],\"modifiedIndex\":8,\"createdIndex\":8}"), "{b}");
        let (s, _, b) = t.call(0, "DELETE", "/v2/keys/d1?recursive=true", None);
        assert_eq!((s, b.as_str()), (200, "{\"action\":\"delete\",\"node\":{\"key\":\"/d1\",\"dir\":true,\"modifiedIndex\":10,\"createdIndex\":8},\"prevNode\":{\"key\":\"/d1\",\"dir\":true,\"expiration\":\"2020-01-01T00:01:40Z\",\"ttl\":100,\"modifiedIndex\":8,\"createdIndex\":8}}\n"));
        assert_eq!(t.etcd.next_expiry(), Some(t.at(5000)));
        // a TTL directory expires with its children
        t.call(0, "PUT", "/v2/keys/d2?dir=true", Some("ttl=1"));
        t.call(0, "PUT", "/v2/keys/d2/a/b", Some("value=v"));
        t.etcd.advance(t.at(1000));
        assert!(t.etcd.get("/d2/a/b").is_none());
        assert_eq!(t.call(1000, "GET", "/v2/keys/d2", None).0, 404);
    }

    #[test]
    fn go_json_escaping() {
        let mut out = Vec::new();
        json_str(
            &mut out,
            "<a>&b\u{1}\u{8}\u{c}\t\n\r\"\\\u{2028}é\u{7f}x".as_bytes(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"\\u003ca\\u003e\\u0026b\\u0001\\u0008\\u000c\\t\\n\\r\\\"\\\\\\u2028é\u{7f}x\""
        );
        let mut out = Vec::new();
        json_str(&mut out, b"bad\xff\xe2\x82A");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"bad\\ufffd\\ufffd\\ufffdA\""
        );
        let mut t = T::new();
        let (_, _, b) = t.call(0, "PUT", "/v2/keys/bad%FF", Some("value=%FE%41"));
        assert_eq!(b, "{\"action\":\"set\",\"node\":{\"key\":\"/bad\\ufffd\",\"value\":\"\\ufffdA\",\"modifiedIndex\":4,\"createdIndex\":4}}\n");
    }

    #[test]
    fn time_formatting() {
        assert_eq!(rfc3339_nano(0), "2020-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(1_500_000_000), "2020-01-01T00:00:01.5Z");
        assert_eq!(rfc3339_nano(123), "2020-01-01T00:00:00.000000123Z");
        assert_eq!(
            rfc3339_nano(60 * 86_400 * NANOS_PER_SEC),
            "2020-03-01T00:00:00Z"
        );
        assert_eq!(rfc3339_nano(-NANOS_PER_SEC), "2019-12-31T23:59:59Z");
        assert_eq!(ttl_secs(NANOS_PER_SEC, 1), 1);
        assert_eq!(ttl_secs(NANOS_PER_SEC + 1, 0), 2);
        assert_eq!(ttl_secs(0, NANOS_PER_SEC / 2), 0);
        assert_eq!(ttl_secs(0, 3 * NANOS_PER_SEC / 2), -1);
    }

    #[test]
    fn go_path_clean() {
        for (i, o) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/..", "/"),
            ("/a/b/..", "/a"),
            ("/a/", "/a"),
            ("", "."),
            ("a/../..", ".."),
            ("a/..", "."),
            ("/a/b/../../..", "/"),
            ("/abc/def/../x", "/abc/x"),
            ("a/b/../../../c", "../c"),
        ] {
            assert_eq!(
                String::from_utf8(path_clean(i.as_bytes())).unwrap(),
                o,
                "{i}"
            );
        }
        assert_eq!(mux_clean_path(b"/a/b/"), b"/a/b/");
        assert_eq!(mux_clean_path(b"/a/b//"), b"/a/b/");
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
