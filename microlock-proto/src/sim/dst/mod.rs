//! Deterministic simulation of microlock clients contending for one lock on a simulated etcd
//! cluster, through a faulty network, with drifting clocks, pauses and crashes, while etcd's
//! members die, hang, restart, lag and get cut off — the test is the scheduler, and a seed
//! reproduces everything.
//!
//! [`run`] plays one world for a seed: 2–8 [`Lock`] machines doing waiting acquires with
//! auto-renew and fenced writes to a simulated resource, a [`SimCluster`] of 1, 3 or 5 members
//! (each client knows every member, in its own seeded order), a network that delays, reorders,
//! loses and duplicates requests, loses replies *after* etcd applied them, cuts clients off
//! (partitions) and closes watches; per-client clocks drift within a bound; clients pause (like
//! `SIGSTOP`) and crash. Faults stop at a heal time (a member may stay dead for good when the
//! others keep a quorum).
//!
//! # Two protocols
//! Half the seeds make **etcd v2** worlds (the keys API, the fair queue of
//! `sim/_microlock/queue/lock`), half **etcd v3** worlds (the JSON gateway, Go's
//! `concurrency.Mutex` layout: `sim/lock/<lease>` under a lease, the oldest key holds)
//! ([`Params::protocol`], drawn last from the seed, so a seed's other parameters do not depend
//! on it). The trace's first line and [`Report::describe`] say which. The faults and the
//! checkers are the same; what they read in the store differs (see `dialect.rs`): the fencing
//! token is the holder key's create revision, the queue is the keys under `sim/lock/` in
//! create-revision order, the lock is free when no key is left or the oldest is a waiter's
//! still acquiring (owed the lock, not yet told), a waiter sleeps on a watch *stream* (a head,
//! then one message per piece, each after its own latency and never before the one sent
//! before it), and acting on the lock is sending a transaction. Member faults take v3's shapes
//! (see [`crate::sim::cluster`]): `503 no leader` at once from a member without a leader (the
//! machine asks with `hasleader`), its streams ended some seconds later, leases revoked only
//! with quorum and promoted by each new term.
//!
//! # Member faults
//! The nemesis injects, with the seed, on a random member (see [`crate::sim::cluster`] for what
//! each means for requests, watches and quorum):
//! - **kill**: the member dies (connections refused → the machine's `handle_connect_error`;
//!   its parked watches and unsent answers are cut → `handle_transport_error`), until the heal
//!   time or, in clusters of 3 or 5, possibly for good;
//! - **restart**: dead for 0.1–3 s, then back up to date, with no watches;
//! - **hang** (`SIGSTOP`): no answers at all for 0.1 s–3 TTL; on resume the kept requests are
//!   served (late writes included) and watches fire;
//! - **lag**: for 1–10 s, the member applies the store `lag` late (50 ms – [`Params::max_lag`]):
//!   watches deliver late but in order, answers wait for its apply;
//! - **isolate**: cut off from its peers for 0.5 s–3 TTL (writes and quorum reads answer etcd's
//!   timeout after its 7 s raft timeout, or never — on v3, once the member knows it has no
//!   leader, at once with `503 no leader`; watches go silent, v3 streams end 4–5 s in);
//! - **quorum loss** (cluster-wide, as before) and **watch closes** (one member ends its long
//!   polls or streams cleanly or cuts them).
//!
//! When the leader fails a new one is elected after 1–2 s; a majority failing loses quorum.
//!
//! # Checkers
//! After every step:
//!
//! - (a) at every instant at most one client has `is_held(its local now)`;
//! - (b) the fenced resource never accepts a token lower than one it accepted;
//! - (c) tokens strictly increase across successive acquisitions (the same client taking up
//!   again a hold it never released keeps its token: on v3 its key is still there);
//! - (d) no silent stall: a busy, holding or watching machine has a request out or a timer;
//! - (f) liveness: after the faults heal, some waiter acquires within the TTL + a bound;
//! - (g) watch liveness: no waiter stays asleep past the liveness bound while quorum holds
//!   (below);
//! - (h) fair waiting: when a waiter's acquire completes, no queue entry older than its own is
//!   left (served in queue order, unless one ahead left or expired — then its entry is gone);
//! - (i) truthful answers about a valid hold: nobody else can have taken a hold still valid by
//!   its client's clock, so no command (an unlock, a renew) that completes then answers
//!   `LockNotOwned`, and such a hold is never reported lost as `NotOwned` or `Superseded`
//!   (an unlock whose write the network duplicated is not judged: a copy that went first
//!   removed the key, as a deletion by someone else would, and the machine cannot tell which).
//!
//! (e) — same seed, same trace — is checked by running twice and comparing
//! [`Report::trace_hash`]; the trace never shows an [`Instant`] (times are offsets from the
//! world's start, `+12.345678901s`), so it is the same text whatever the epoch and in every
//! process ([`replay`] returns the whole trace).
//!
//! ## (g) watch liveness, precisely
//! Let `L` be the machines' watch liveness bound ([`Params::watch_liveness`], given to every
//! machine with `Config::with_watch_liveness`), and
//!
//! > `B = L × (1 + drift) + acquire jitter + slack`, `slack = 4 × the world's largest one-way
//! > latency + the largest member lag` ([`Params::max_lag`], when members lag)
//!
//! (`drift`: the clients' largest clock-rate error, as a fraction). The slack is what no client
//! can shorten: two round trips (a probe of the member a watch sits on, then a read or the
//! write on the next member) at the worst latency of the world, and a member's apply delay. The
//! machine's own timers (how often it probes, how long a probe may take, retry back-offs) must
//! fit in `L`.
//!
//! For a waiting client `w` (a `Waiter` with an `acquire` in progress), let
//! `s = max(free, waiting, hindered, turn)` where
//! - `free`: since when the lock key has been absent from the quorum store **and** the cluster
//!   has had quorum ([`SimCluster::has_quorum`]) — a release, an expiry, or quorum coming back
//!   while the key is free starts it; the key taken (by anyone) or quorum lost ends it;
//! - `waiting`: when `w`'s acquire started;
//! - `hindered`: the latest client-side fault of `w` — the end of a pause, of a partition of the
//!   client, a crash, or a request or reply of `w` lost by the network (member faults do not
//!   count: surviving them is the machine's job);
//! - `turn`: since when no queue entry older than `w`'s own is left (a fair waiter sleeps,
//!   rightly, while one is ahead of it — until that one is served, leaves or expires).
//!
//! Violation (g) when, since `s`, `w` has spent more than `B` *asleep* — with no request out
//! but long polls — while it is still waiting, has sent no write of the lock key since `s`, the
//! key is still free and quorum still holds: `w` slept through a release. Time with a write or
//! a read out does not count (a machine waiting for an answer is bounded by its request
//! timeout, not by `L`: a hung write, then a hung resolution read, may take two request
//! timeouts), so a machine that probes with quorum reads is charged only the time between its
//! probes. A write sent at or after `s` discharges `w` for this free interval even if it is
//! lost or hangs (how soon a failed write is retried is progress, checker (f)'s business). A
//! long poll lost by the network before the release is no excuse: the machine has `B` from the
//! release. Each violation is reported once per `s`, with the waiter's requests in flight and
//! the state of their members. Member-fault-free worlds meet (g) with any machine that watches
//! correctly; with hung, isolated or lagging members it needs the watch liveness probes.
//!
//! ```
//! use std::time::Instant;
//! use microlock_proto::sim::dst::{run, Params};
//!
//! // The epoch is any instant: only offsets from it are used, so the trace never depends on it.
//! fn check_seed(seed: u64, epoch: Instant) {
//!     let report = run(seed, &Params::from_seed(seed), epoch);
//!     assert!(report.violations.is_empty(), "{}", report.describe());
//!     assert_eq!(report.trace_hash, run(seed, &Params::from_seed(seed), epoch).trace_hash);
//! }
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use http::{Request, Response};

use crate::rng::Rng;
use crate::sim::cluster::{ClusterConfig, SimCluster};
use crate::sim::logs::Logs;
use crate::{Endpoint, Lock, OpId};

mod checkers;
mod dialect;
mod net;
mod params;
mod report;
mod world;

pub use params::Params;
pub use report::{offset, Report, TraceClock, Violation};

use params::ACQUIRE_JITTER;

/// The lock key every client of a world contends for.
const KEY: &str = "sim/lock";
/// Where its fair acquires queue (v2).
const QUEUE: &str = "sim/_microlock/queue/lock";

// ----- the world ---------------------------------------------------------------------------

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doing {
    Idle,
    Acquiring,
    Holding {
        token: u64,
        writes_left: u32,
    },
    /// Releasing (the unlock `op`) a hold valid until then (the client's clock), if it was
    /// still valid; `copied`: the network sent a write of the release twice (a copy that goes
    /// first removes the key, and the machine cannot know: checker (i) does not judge it).
    Releasing {
        op: OpId,
        valid_until: Option<Instant>,
        copied: bool,
    },
}

/// How a client uses the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `acquire` (waiting) with auto-renew.
    Waiter,
    /// `lock` (try once), renewing by hand between writes.
    TryLocker,
}

/// A request in flight, for cancels and diagnostics.
#[derive(Debug, Clone)]
struct Out {
    global: u64,
    member: Option<usize>,
    /// A long poll (`wait=true` without `quorum`).
    watch: bool,
    what: String,
    sent: Duration,
}

struct Client {
    lock: Lock,
    style: Style,
    /// The members' endpoints in this client's order.
    endpoints: Vec<Endpoint>,
    /// Bumped on crash: replies and timers of an earlier incarnation are dropped.
    incarnation: u32,
    /// Clock rate error in ppm (signed).
    drift_ppm: i64,
    doing: Doing,
    paused_until: Option<Duration>,
    cut_off_until: Option<Duration>,
    timer_generation: u64,
    /// Requests out, by request id.
    out: BTreeMap<u64, Out>,
    /// Checker (g): since when this client waits in an acquire.
    waiting_since: Option<Duration>,
    /// Checker (g): when it last sent a write of the lock key.
    wrote: Duration,
    /// Checker (g): the latest client-side fault (pause or partition end, a lost message).
    hindered: Duration,
    /// Checker (g): the obligation being watched.
    g: Obligation,
    /// Checker (g): since when no queue entry is ahead of this client's (`None`: one is).
    turn_since: Option<Duration>,
    /// Checker (h): the store's index when its current acquire started (an entry of its
    /// made later may be its ticket, before it knows).
    acquire_index: u64,
    /// Checker (i): until when its hold was valid, as last seen (its clock), if it held one.
    valid_until: Option<Instant>,
}

/// Checker (g)'s bookkeeping for one client.
#[derive(Debug, Clone, Copy, Default)]
struct Obligation {
    /// Its start `s`, while the client waits and the key is free with quorum.
    start: Option<Duration>,
    /// Time since `start` with nothing but long polls out.
    idle: Duration,
    /// Accounted up to here.
    last: Duration,
    /// Whether a request other than a long poll was out since the last step.
    busy: bool,
    /// Reported already.
    reported: bool,
}

/// What reaches a client for a request.
#[derive(Debug)]
enum Net {
    Response(Response<Vec<u8>>),
    /// A streamed response's head (a v3 watch).
    Head(http::response::Parts),
    /// The next piece of a streamed response's body.
    Chunk(Vec<u8>),
    /// A streamed response's end.
    End,
    /// Never reached etcd (connection refused).
    Refused(&'static str),
    /// Broke after sending (outcome unknown).
    Reset(&'static str),
}

/// Where a cluster answer goes.
#[derive(Debug, Clone, Copy)]
struct Route {
    client: usize,
    incarnation: u32,
    rid: u64,
    reply_lost: bool,
    /// A network duplicate: its answer goes nowhere.
    duplicate: bool,
}

#[derive(Debug, Clone, Copy)]
enum MemberFault {
    Kill { until: Option<Duration> },
    Restart,
    Hang { until: Duration },
    Resume,
    Lag { lag: Duration, until: Duration },
    LagEnd,
    Isolate { until: Duration },
    Rejoin,
}

#[derive(Debug)]
enum Ev {
    /// A client's machine timer (valid if the generation still matches).
    Timer {
        client: usize,
        generation: u64,
    },
    /// A client's behaviour step.
    Act {
        client: usize,
        incarnation: u32,
    },
    /// A request reaches its member.
    AtEtcd {
        global: u64,
        request: Request<Vec<u8>>,
    },
    /// A reply reaches a client.
    AtClient {
        client: usize,
        incarnation: u32,
        rid: u64,
        reply: Net,
    },
    /// The cluster has something due (an expiry, an election, a lagging apply, a timeout).
    ClusterWake {
        at: Duration,
    },
    Pause {
        client: usize,
        until: Duration,
    },
    Crash {
        client: usize,
    },
    CutOff {
        client: usize,
        until: Duration,
    },
    CloseWatches {
        member: usize,
    },
    QuorumLoss {
        until: Duration,
    },
    QuorumBack,
    Member {
        member: usize,
        fault: MemberFault,
    },
}

struct World {
    p: Params,
    rng: Rng,
    base: Instant,
    clock: TraceClock,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: BTreeMap<u64, Ev>,
    cluster: SimCluster,
    clients: Vec<Client>,
    next_global: u64,
    /// Requests handed to the cluster: global id → where the answer goes.
    routes: BTreeMap<u64, Route>,
    /// Streamed answers on their way: global id → when their last piece sent arrives.
    streams: BTreeMap<u64, Duration>,
    wake_at: Option<Duration>,
    highest_accepted: Option<u64>,
    /// The last token acquired, and by whom (client, incarnation).
    last_token: Option<(u64, (usize, u32))>,
    violations: Vec<Violation>,
    trace_hash: u64,
    /// The last lines (time, text), rendered when the report is made.
    tail: VecDeque<(Duration, String)>,
    full: Option<Vec<(Duration, String)>>,
    /// The machines' `tracing` events (replay only), written into `full` after each input.
    logs: Option<Logs>,
    before_violation: Vec<(Duration, String)>,
    acquisitions: usize,
    acquisitions_after_heal: usize,
    wanted_after_heal: bool,
    writes: (usize, usize),
    steps: usize,
    /// Checker (g): since when the key has been free with quorum.
    free_since: Option<Duration>,
    /// The store's index (or revision) when the lock was last looked at, and its owner there
    /// then (see `owner_in_store`).
    key_seen: (u64, Option<Option<String>>),
    /// The lock's queue as last read from the store, and the store's index then.
    queue_seen: (Option<u64>, Vec<(String, String, u64)>),
    had_quorum: bool,
    elections: u64,
    /// Since when each member is in its current state.
    member_since: Vec<Duration>,
    bound: Duration,
}

const TAIL: usize = 400;

/// Plays the world `params` describes with randomness from `seed`. `epoch` is the simulated
/// time zero; only offsets from it are used, so the result does not depend on its value.
pub fn run(seed: u64, params: &Params, epoch: Instant) -> Report {
    play(seed, params, epoch, false)
}

/// [`run`], keeping the whole trace in [`Report::trace`] (for a replay).
pub fn replay(seed: u64, params: &Params, epoch: Instant) -> Report {
    play(seed, params, epoch, true)
}

fn play(seed: u64, params: &Params, epoch: Instant, keep_trace: bool) -> Report {
    let base = epoch;
    let mut rng = Rng::new(seed);
    let cluster_seed = rng.next_u64();
    let mut config =
        ClusterConfig::new(params.members, cluster_seed).with_protocol(params.protocol);
    config.planted_bug = params.planted_bug;
    let cluster = SimCluster::new(base, config);
    let mut w = World {
        p: params.clone(),
        rng,
        base,
        clock: TraceClock::new(base),
        now: Duration::ZERO,
        seq: 0,
        queue: BinaryHeap::new(),
        events: BTreeMap::new(),
        cluster,
        clients: Vec::new(),
        next_global: 0,
        routes: BTreeMap::new(),
        streams: BTreeMap::new(),
        wake_at: None,
        highest_accepted: None,
        last_token: None,
        violations: Vec::new(),
        trace_hash: 0xcbf2_9ce4_8422_2325,
        tail: VecDeque::new(),
        full: keep_trace.then(Vec::new),
        logs: keep_trace.then(Logs::default),
        before_violation: Vec::new(),
        acquisitions: 0,
        acquisitions_after_heal: 0,
        wanted_after_heal: false,
        writes: (0, 0),
        steps: 0,
        free_since: Some(Duration::ZERO),
        key_seen: (0, None),
        queue_seen: (None, Vec::new()),
        had_quorum: true,
        elections: 0,
        member_since: vec![Duration::ZERO; params.members.max(1)],
        bound: params.liveness_bound(),
    };
    // A replay collects the machines' events (this thread only, for this world only).
    let _logging = w.logs.as_ref().map(Logs::install);
    w.setup(seed);
    w.run_loop();
    let render = |lines: Vec<(Duration, String)>| -> Vec<String> {
        lines
            .into_iter()
            .map(|(t, line)| format!("{:>15} {line}", offset(t)))
            .collect()
    };
    Report {
        seed,
        params: w.p.clone(),
        violations: w.violations,
        trace_hash: w.trace_hash,
        trace_tail: render(w.tail.into_iter().collect()),
        before_violation: render(w.before_violation),
        trace: render(w.full.unwrap_or_default()),
        acquisitions: w.acquisitions,
        writes: w.writes,
        steps: w.steps,
    }
}

fn clone_request(r: &Request<Vec<u8>>) -> Request<Vec<u8>> {
    let mut b = Request::builder()
        .method(r.method().clone())
        .uri(r.uri().clone());
    for (k, v) in r.headers() {
        b = b.header(k, v);
    }
    b.body(r.body().clone()).expect("a copy of a valid request")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_render_without_the_epoch() {
        assert_eq!(offset(Duration::from_millis(1500)), "+1.500000000s");
        let epoch = Instant::now();
        let clock = TraceClock::new(epoch);
        assert_eq!(
            clock.instant(epoch + Duration::from_micros(12_345_678)),
            "+12.345678000s"
        );
        let fence_text = |epoch: Instant| {
            let report = replay(3, &Params::from_seed(3), epoch);
            report.trace.join("\n")
        };
        let a = fence_text(epoch);
        let b = fence_text(epoch + Duration::from_secs(1000));
        assert!(!a.contains("Instant"), "an Instant leaked into the trace");
        assert!(a.contains("valid_until: +"), "no fence in the trace");
        assert_eq!(a, b);
    }

    #[test]
    fn bound_of_checker_g() {
        let mut p = Params::from_seed(1);
        p.watch_liveness = Duration::from_secs(4);
        p.drift_ppm = 10_000;
        p.latency = (Duration::from_millis(1), Duration::from_millis(100));
        p.members = 3;
        p.member_lags = 1;
        p.max_lag = Duration::from_millis(500);
        assert_eq!(p.liveness_slack(), Duration::from_millis(900));
        assert_eq!(
            p.liveness_bound(),
            Duration::from_millis(4000 + 40 + 10 + 900)
        );
    }
}
