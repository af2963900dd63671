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
//! - **isolate**: cut off from its peers for 0.5 s–3 TTL (writes and quorum reads answer `500`
//!   "Raft Internal Error" after etcd's 7 s raft timeout, or never; watches go silent);
//! - **quorum loss** (cluster-wide, as before) and **watch closes** (one member ends its long
//!   polls cleanly or cuts them).
//!
//! When the leader fails a new one is elected after 1–2 s; a majority failing loses quorum.
//!
//! # Checkers
//! After every step:
//!
//! - (a) at every instant at most one client has `is_held(its local now)`;
//! - (b) the fenced resource never accepts a token lower than one it accepted;
//! - (c) tokens strictly increase across successive acquisitions;
//! - (d) no silent stall: a busy, holding or watching machine has a request out or a timer;
//! - (f) liveness: after the faults heal, some waiter acquires within the TTL + a bound;
//! - (g) watch liveness: no waiter stays asleep past the liveness bound while quorum holds
//!   (below);
//! - (h) fair waiting: when a waiter's acquire completes, no queue entry older than its own is
//!   left (served in queue order, unless one ahead left or expired — then its entry is gone).
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
use crate::sim::cluster::{ClusterConfig, Delivery, MemberState, NoteKind, SimCluster};
use crate::sim::logs::Logs;
use crate::{Completion, Config, Endpoint, Error, Event, Lock, Outcome, RequestId};

/// The lock key every client of a world contends for.
const KEY: &str = "sim/lock";
/// Where its fair acquires queue.
const QUEUE: &str = "sim/_microlock/queue/lock";

/// Everything a world is made of; [`Params::from_seed`] derives one from a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Number of clients (2–8).
    pub clients: usize,
    /// Number of etcd members (1, 3 or 5).
    pub members: usize,
    /// The lock TTL.
    pub ttl: Duration,
    /// The safety margin of the clients' validity deadline.
    pub margin: Duration,
    /// The clients' request timeout (`Config::with_request_timeout`).
    pub request_timeout: Duration,
    /// The clients' watch liveness bound (`Config::with_watch_liveness`), `L` of checker (g).
    pub watch_liveness: Duration,
    /// The `L` checker (g) holds the machines to, when not [`Params::watch_liveness`] (a test
    /// knob: machines configured with a long bound held to a short one must fail (g)).
    pub liveness_checked: Option<Duration>,
    /// Largest clock-rate error of a client, in parts per million (±).
    pub drift_ppm: u64,
    /// One-way network latency range.
    pub latency: (Duration, Duration),
    /// Probability that a request is lost before reaching etcd.
    pub request_loss: f64,
    /// Probability that a reply is lost after etcd applied the request.
    pub reply_loss: f64,
    /// Probability that a request is delivered twice.
    pub duplication: f64,
    /// Number of partitions (a client cut off for a while).
    pub partitions: usize,
    /// Number of process pauses (a client frozen for a while, its clock running).
    pub pauses: usize,
    /// Longest pause (of a client or a member).
    pub max_pause: Duration,
    /// Number of crashes (a client loses all state and restarts).
    pub crashes: usize,
    /// Number of times a member closes every watch it holds (empty 200 or cut).
    pub watch_closes: usize,
    /// Number of cluster-wide quorum-loss windows.
    pub quorum_losses: usize,
    /// Members killed (until the heal time, or for good when the others keep a quorum).
    pub member_kills: usize,
    /// Members killed and restarted 0.1–3 s later.
    pub member_restarts: usize,
    /// Members hung (`SIGSTOP`) for 0.1 s up to [`Params::max_pause`].
    pub member_hangs: usize,
    /// Members lagging for 1–10 s.
    pub member_lags: usize,
    /// Largest lag of a lagging member.
    pub max_lag: Duration,
    /// Members cut off from their peers for 0.5 s–3 TTL.
    pub member_isolations: usize,
    /// When faults stop.
    pub heal_at: Duration,
    /// When the world ends.
    pub end_at: Duration,
}

impl Params {
    /// A world derived from `seed`: the number of clients and members, faults and their
    /// intensity.
    pub fn from_seed(seed: u64) -> Params {
        let mut rng = Rng::new(seed ^ 0x5eed_5eed_5eed_5eed);
        let pick = |rng: &mut Rng, lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo + 1);
        let ttl = Duration::from_secs(pick(&mut rng, 1, 4));
        let heal_at = Duration::from_secs(pick(&mut rng, 10, 30));
        let clients = pick(&mut rng, 2, 8) as usize;
        let drift_ppm = pick(&mut rng, 0, 20_000); // up to 2 %: well inside a 10 % margin
        let latency = (
            Duration::from_micros(pick(&mut rng, 100, 2_000)),
            Duration::from_millis(pick(&mut rng, 3, 300)),
        );
        let request_loss = pick(&mut rng, 0, 10) as f64 / 100.0;
        let reply_loss = pick(&mut rng, 0, 10) as f64 / 100.0;
        let duplication = pick(&mut rng, 0, 5) as f64 / 100.0;
        let partitions = pick(&mut rng, 0, 3) as usize;
        let pauses = pick(&mut rng, 0, 3) as usize;
        let crashes = pick(&mut rng, 0, 2) as usize;
        let watch_closes = pick(&mut rng, 0, 3) as usize;
        let quorum_losses = pick(&mut rng, 0, 1) as usize;
        // Most worlds have 3 members; some keep the single member of old, some have 5.
        let members = match pick(&mut rng, 0, 19) {
            0..=4 => 1,
            5..=17 => 3,
            _ => 5,
        };
        let multi = members > 1;
        let request_timeout = match pick(&mut rng, 0, 9) {
            0..=5 => Duration::from_millis(1500),
            6..=8 => Duration::from_secs(2),
            _ => Duration::from_secs(5),
        };
        let watch_liveness = if pick(&mut rng, 0, 3) == 0 {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(4)
        };
        Params {
            clients,
            members,
            ttl,
            margin: ttl / 10,
            request_timeout,
            watch_liveness,
            liveness_checked: None,
            drift_ppm,
            latency,
            request_loss,
            reply_loss,
            duplication,
            partitions,
            pauses,
            max_pause: ttl * 3,
            crashes,
            watch_closes,
            quorum_losses,
            member_kills: pick(&mut rng, 0, 1) as usize,
            member_restarts: pick(&mut rng, 0, 2) as usize,
            member_hangs: pick(&mut rng, 0, if multi { 2 } else { 1 }) as usize,
            member_lags: if multi {
                pick(&mut rng, 0, 2) as usize
            } else {
                0
            },
            max_lag: Duration::from_millis(pick(&mut rng, 50, 1000)),
            member_isolations: if multi {
                pick(&mut rng, 0, 2) as usize
            } else {
                0
            },
            heal_at,
            end_at: heal_at + ttl * 3 + Duration::from_secs(10),
        }
    }

    /// The bound `B` of checker (g): see the module docs.
    pub fn liveness_bound(&self) -> Duration {
        let l = self.liveness_checked.unwrap_or(self.watch_liveness);
        let drift = Duration::from_nanos(
            (l.as_nanos() * u128::from(self.drift_ppm)).div_ceil(1_000_000) as u64,
        );
        l + drift + ACQUIRE_JITTER + self.liveness_slack()
    }

    /// The slack in `B` for what no client can shorten: 4 × the largest one-way latency, plus
    /// the largest member lag when members lag.
    pub fn liveness_slack(&self) -> Duration {
        let lag = if self.member_lags > 0 && self.members > 1 {
            self.max_lag
        } else {
            Duration::ZERO
        };
        self.latency.1 * 4 + lag
    }
}

/// The machines' acquire jitter (the `Config` default).
const ACQUIRE_JITTER: Duration = Duration::from_millis(10);

/// A checker's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which checker: `a` … `g`.
    pub check: char,
    /// When (simulated time since the start).
    pub at: Duration,
    /// What.
    pub what: String,
}

/// The result of one world.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The world's parameters.
    pub params: Params,
    /// Every checker finding (empty: the run is clean), at most 20.
    pub violations: Vec<Violation>,
    /// A hash of the whole trace: the same seed gives the same hash.
    pub trace_hash: u64,
    /// The last lines of the trace.
    pub trace_tail: Vec<String>,
    /// The trace lines leading to the first violation.
    pub before_violation: Vec<String>,
    /// The whole trace (only from [`replay`]; empty from [`run`]).
    pub trace: Vec<String>,
    /// Successful acquisitions.
    pub acquisitions: usize,
    /// Writes the fenced resource accepted / refused.
    pub writes: (usize, usize),
    /// Simulation steps.
    pub steps: usize,
}

impl Report {
    /// A human-readable account: seed, parameters, violations, trace tail. The same for the
    /// same seed and parameters, whatever the epoch or the process.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {} (replay: MICROLOCK_SEED={} make dst)",
            self.seed, self.seed
        );
        let _ = writeln!(s, "params {:?}", self.params);
        let _ = writeln!(
            s,
            "acquisitions {}, writes accepted/refused {:?}, steps {}, trace hash {:016x}",
            self.acquisitions, self.writes, self.steps, self.trace_hash
        );
        for v in &self.violations {
            let _ = writeln!(s, "VIOLATION ({}) at {}: {}", v.check, offset(v.at), v.what);
        }
        if !self.before_violation.is_empty() {
            let _ = writeln!(s, "trace up to the first violation:");
            for line in &self.before_violation {
                let _ = writeln!(s, "  {line}");
            }
        }
        let _ = writeln!(s, "trace tail:");
        for line in &self.trace_tail {
            let _ = writeln!(s, "  {line}");
        }
        s
    }

    /// The violations of one checker.
    pub fn of(&self, check: char) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.check == check)
    }
}

/// A simulated time as shown in the trace: `+12.345678901s` after the world's start.
pub fn offset(d: Duration) -> String {
    format!("+{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

/// Renders trace values that hold [`Instant`]s (a [`Fence`](crate::Fence)'s validity
/// deadline) as offsets from the world's epoch, so that a trace is the same text in every
/// process.
#[derive(Debug, Clone, Copy)]
pub struct TraceClock {
    epoch: Instant,
}

impl TraceClock {
    /// Offsets from `epoch`.
    pub fn new(epoch: Instant) -> TraceClock {
        TraceClock { epoch }
    }

    /// `+1.500000000s`, or `-0.250000000s` before the epoch.
    pub fn instant(&self, t: Instant) -> String {
        match t.checked_duration_since(self.epoch) {
            Some(d) => offset(d),
            None => format!("-{}", &offset(self.epoch.duration_since(t))[1..]),
        }
    }

    /// A completion's result: fences with their deadline as an offset, errors as `Debug`
    /// (which holds no instant).
    pub fn result(&self, result: &Result<Outcome, Error>) -> String {
        match result {
            Ok(outcome) => format!("Ok({})", self.outcome(outcome)),
            Err(e) => format!("Err({e:?})"),
        }
    }

    /// An outcome, its fence's deadline as an offset.
    pub fn outcome(&self, outcome: &Outcome) -> String {
        let fence = |name: &str, f: &crate::Fence| {
            format!(
                "{name}(Fence {{ token: {}, valid_until: {} }})",
                f.token(),
                self.instant(f.valid_until())
            )
        };
        match outcome {
            Outcome::Locked(f) => fence("Locked", f),
            Outcome::Renewed(f) => fence("Renewed", f),
            Outcome::Acquired(f) => fence("Acquired", f),
            // Any other outcome holds no fence; a future one that holds an instant shows in
            // the epoch test of tests/tests/dst.rs.
            other => format!("{other:?}"),
        }
    }
}

// ----- the world ---------------------------------------------------------------------------

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doing {
    Idle,
    Acquiring,
    Holding { token: u64, writes_left: u32 },
    Releasing,
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
    wake_at: Option<Duration>,
    highest_accepted: Option<u64>,
    last_token: Option<u64>,
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
    /// The store's index when the key was last looked at, and whether it was absent then.
    key_seen: (u64, bool),
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
    let cluster = SimCluster::new(base, ClusterConfig::new(params.members, cluster_seed));
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
        key_seen: (0, true),
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

impl World {
    fn setup(&mut self, seed: u64) {
        let members = self.cluster.len();
        let all: Vec<Endpoint> = (0..members)
            .map(|m| Endpoint::parse(&self.cluster.endpoint(m)).expect("a valid member URL"))
            .collect();
        self.trace(format!(
            "world: {} clients, {members} member(s), leader m{}, bound (g) {} (L {} + slack {})",
            self.p.clients,
            self.cluster.leader().unwrap_or(0),
            offset(self.bound),
            offset(self.p.liveness_checked.unwrap_or(self.p.watch_liveness)),
            offset(self.p.liveness_slack())
        ));
        for i in 0..self.p.clients {
            let drift = self.p.drift_ppm as i64;
            let drift_ppm = if drift == 0 {
                0
            } else {
                (self.rng.next_u64() % (2 * drift as u64 + 1)) as i64 - drift
            };
            let style = if self.rng.next_u64() % 3 == 0 {
                Style::TryLocker
            } else {
                Style::Waiter
            };
            // Each client knows every member, in its own order.
            let mut endpoints = all.clone();
            for k in (1..endpoints.len()).rev() {
                let j = (self.rng.next_u64() % (k as u64 + 1)) as usize;
                endpoints.swap(k, j);
            }
            let mut lock = self.new_machine(i, seed, 0, style, &endpoints);
            let watching = self.rng.next_u64() % 2 == 0;
            if watching {
                lock.set_watching(true, self.base); // follows the key's events too
            }
            let order: Vec<&str> = endpoints
                .iter()
                .map(|e| e.as_str().trim_start_matches("http://"))
                .collect();
            self.trace(format!(
                "c{i}: {style:?}, drift {drift_ppm} ppm, watching {watching}, members {order:?}"
            ));
            self.clients.push(Client {
                lock,
                style,
                endpoints,
                incarnation: 0,
                drift_ppm,
                doing: Doing::Idle,
                paused_until: None,
                cut_off_until: None,
                timer_generation: 0,
                out: BTreeMap::new(),
                waiting_since: None,
                turn_since: Some(Duration::ZERO),
                acquire_index: 0,
                wrote: Duration::ZERO,
                hindered: Duration::ZERO,
                g: Obligation::default(),
            });
            let start = self.rand_dur(Duration::ZERO, Duration::from_millis(500));
            self.at(
                start,
                Ev::Act {
                    client: i,
                    incarnation: 0,
                },
            );
            self.drain(i);
        }
        let heal = self.p.heal_at;
        for _ in 0..self.p.partitions {
            let (c, from, len) = (
                self.rand_client(),
                self.rand_dur(Duration::ZERO, heal),
                self.rand_dur(Duration::from_millis(100), self.p.ttl * 3),
            );
            let until = (from + len).min(heal);
            self.at(from, Ev::CutOff { client: c, until });
        }
        for _ in 0..self.p.pauses {
            let (c, from, len) = (
                self.rand_client(),
                self.rand_dur(Duration::ZERO, heal),
                self.rand_dur(Duration::from_millis(100), self.p.max_pause),
            );
            let until = (from + len).min(heal);
            self.at(from, Ev::Pause { client: c, until });
        }
        for _ in 0..self.p.crashes {
            let (c, at) = (self.rand_client(), self.rand_dur(Duration::ZERO, heal));
            self.at(at, Ev::Crash { client: c });
        }
        for _ in 0..self.p.watch_closes {
            let at = self.rand_dur(Duration::ZERO, heal);
            let member = self.rand_member();
            self.at(at, Ev::CloseWatches { member });
        }
        for _ in 0..self.p.quorum_losses {
            let from = self.rand_dur(Duration::ZERO, heal);
            let until =
                (from + self.rand_dur(Duration::from_millis(100), self.p.ttl * 2)).min(heal);
            self.at(from, Ev::QuorumLoss { until });
        }
        // Member faults. At most a minority of members may stay dead after the heal time.
        let mut for_good = (members.saturating_sub(1)) / 2;
        for _ in 0..self.p.member_kills {
            let (member, from) = (self.rand_member(), self.rand_dur(Duration::ZERO, heal));
            let until = if for_good > 0 && self.rng.next_u64() % 2 == 0 {
                for_good -= 1;
                None
            } else {
                Some(heal)
            };
            self.at(
                from,
                Ev::Member {
                    member,
                    fault: MemberFault::Kill { until },
                },
            );
        }
        for _ in 0..self.p.member_restarts {
            let (member, from) = (self.rand_member(), self.rand_dur(Duration::ZERO, heal));
            let back = (from + self.rand_dur(Duration::from_millis(100), Duration::from_secs(3)))
                .min(heal.max(from));
            self.at(
                from,
                Ev::Member {
                    member,
                    fault: MemberFault::Kill { until: Some(back) },
                },
            );
        }
        for _ in 0..self.p.member_hangs {
            let (member, from) = (self.rand_member(), self.rand_dur(Duration::ZERO, heal));
            let len = self.rand_dur(Duration::from_millis(100), self.p.max_pause);
            let until = (from + len).min(heal.max(from));
            self.at(
                from,
                Ev::Member {
                    member,
                    fault: MemberFault::Hang { until },
                },
            );
        }
        for _ in 0..self.p.member_lags {
            let (member, from) = (self.rand_member(), self.rand_dur(Duration::ZERO, heal));
            let lag = self.rand_dur(Duration::from_millis(50), self.p.max_lag);
            let len = self.rand_dur(Duration::from_secs(1), Duration::from_secs(10));
            let until = (from + len).min(heal.max(from));
            self.at(
                from,
                Ev::Member {
                    member,
                    fault: MemberFault::Lag { lag, until },
                },
            );
        }
        for _ in 0..self.p.member_isolations {
            let (member, from) = (self.rand_member(), self.rand_dur(Duration::ZERO, heal));
            let len = self.rand_dur(Duration::from_millis(500), self.p.ttl * 3);
            let until = (from + len).min(heal.max(from));
            self.at(
                from,
                Ev::Member {
                    member,
                    fault: MemberFault::Isolate { until },
                },
            );
        }
    }

    fn new_machine(
        &mut self,
        client: usize,
        seed: u64,
        incarnation: u32,
        style: Style,
        endpoints: &[Endpoint],
    ) -> Lock {
        let config = Config::new(KEY, &format!("client-{client}.{incarnation}"), self.p.ttl)
            .expect("valid")
            .with_endpoints(endpoints.to_vec())
            .expect("at least one member")
            .with_safety_margin(self.p.margin)
            .with_auto_renew(style == Style::Waiter)
            .with_request_timeout(self.p.request_timeout)
            .with_watch_liveness(self.p.watch_liveness)
            .with_acquire_jitter(ACQUIRE_JITTER)
            .with_seed(
                seed.wrapping_mul(31)
                    .wrapping_add(client as u64 * 7919 + u64::from(incarnation)),
            );
        Lock::new(config)
    }

    // ----- time ---------------------------------------------------------------------------

    /// A client's local clock: true elapsed time scaled by its rate error.
    fn local(&self, client: usize, t: Duration) -> Instant {
        let ns = t.as_nanos() as i128;
        let scaled = ns + ns * i128::from(self.clients[client].drift_ppm) / 1_000_000;
        self.base + Duration::from_nanos(scaled.max(0) as u64)
    }

    /// The true time at which a client's clock shows `local` (rounded up).
    fn true_time(&self, client: usize, local: Instant) -> Duration {
        let l = local.saturating_duration_since(self.base).as_nanos() as i128;
        let rate = 1_000_000 + i128::from(self.clients[client].drift_ppm);
        let t = (l * 1_000_000 + rate - 1) / rate;
        Duration::from_nanos(t.max(0) as u64)
    }

    fn at(&mut self, t: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn rand_dur(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + self.rng.duration_up_to(hi.saturating_sub(lo))
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() % 1_000_000) < (p * 1_000_000.0) as u64
    }

    fn rand_client(&mut self) -> usize {
        (self.rng.next_u64() % self.p.clients as u64) as usize
    }

    fn rand_member(&mut self) -> usize {
        (self.rng.next_u64() % self.cluster.len() as u64) as usize
    }

    fn faulty(&self) -> bool {
        self.now < self.p.heal_at
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.p.latency;
        self.rand_dur(lo, hi)
    }

    fn trace(&mut self, line: String) {
        let time = self.now.as_nanos() as u64;
        for b in time
            .to_le_bytes()
            .into_iter()
            .chain(line.bytes())
            .chain([b'\n'])
        {
            self.trace_hash = (self.trace_hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        if let Some(full) = self.full.as_mut() {
            full.push((self.now, line.clone()));
        }
        self.tail.push_back((self.now, line));
    }

    fn violation(&mut self, check: char, what: String) {
        self.trace(format!("VIOLATION ({check}): {what}"));
        if self.violations.is_empty() {
            self.before_violation = self.tail.iter().cloned().collect();
        }
        if self.violations.len() < 20 {
            self.violations.push(Violation {
                check,
                at: self.now,
                what,
            });
        }
    }

    // ----- the loop ---------------------------------------------------------------------

    fn run_loop(&mut self) {
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t > self.p.end_at {
                break;
            }
            self.now = t;
            let ev = self.events.remove(&seq).expect("event");
            self.steps += 1;
            self.step(ev);
            self.check();
            if self.steps > 2_000_000 {
                self.violation('d', "runaway: more than 2,000,000 steps".into());
                break;
            }
        }
        self.now = self.now.max(self.p.end_at);
        self.check_liveness();
        // (f) liveness: once healed, the lock keeps changing hands.
        if self.wanted_after_heal && self.acquisitions_after_heal == 0 {
            self.violation('f', "no acquisition after the faults healed".into());
        }
    }

    fn step(&mut self, ev: Ev) {
        // Events for a paused client wait until it resumes (its clock keeps running).
        if let Ev::Timer { client, .. } | Ev::Act { client, .. } | Ev::AtClient { client, .. } = ev
        {
            match self.clients[client].paused_until {
                Some(until) if until > self.now => return self.at(until, ev),
                Some(_) => self.clients[client].paused_until = None,
                None => {}
            }
        }
        match ev {
            Ev::Timer { client, generation } => {
                if self.clients[client].timer_generation != generation {
                    return;
                }
                let now = self.local(client, self.now);
                self.clients[client].lock.handle_timeout(now);
                self.drain(client);
            }
            Ev::Act {
                client,
                incarnation,
            } => {
                if self.clients[client].incarnation != incarnation {
                    return;
                }
                self.act(client);
            }
            Ev::AtEtcd { global, request } => {
                if let Some(route) = self.routes.get(&global).copied() {
                    let member = request
                        .uri()
                        .authority()
                        .and_then(|a| self.cluster.member_of(a.as_str()));
                    let who = member.map_or("?".to_owned(), |m| format!("m{m}"));
                    let dup = if route.duplicate { " (duplicate)" } else { "" };
                    self.trace(format!(
                        "{who} <- c{}.{} r{} {} {}{dup}",
                        route.client,
                        route.incarnation,
                        route.rid,
                        request.method(),
                        request.uri().path_and_query().map_or("", |p| p.as_str())
                    ));
                }
                let now = self.base + self.now;
                self.cluster.handle(global, &request, now);
                self.after_cluster();
            }
            Ev::AtClient {
                client,
                incarnation,
                rid,
                reply,
            } => {
                if self.clients[client].incarnation != incarnation {
                    return;
                }
                let Some(out) = self.clients[client].out.remove(&rid) else {
                    return; // cancelled meanwhile
                };
                let now = self.local(client, self.now);
                let id = RequestId::from_raw(rid);
                let from = out.member.map_or("?".to_owned(), |m| format!("m{m}"));
                match reply {
                    Net::Response(response) => {
                        self.trace(format!(
                            "c{client} <- r{rid} {} from {from}",
                            response.status()
                        ));
                        self.clients[client].lock.handle_response(id, response, now);
                    }
                    Net::Refused(reason) => {
                        self.trace(format!("c{client} <- r{rid} connect error ({reason})"));
                        self.clients[client]
                            .lock
                            .handle_connect_error(id, reason, now);
                    }
                    Net::Reset(reason) => {
                        self.trace(format!(
                            "c{client} <- r{rid} transport error ({reason}) from {from}"
                        ));
                        self.clients[client]
                            .lock
                            .handle_transport_error(id, reason, now);
                    }
                }
                self.drain(client);
            }
            Ev::ClusterWake { at } => {
                if self.wake_at == Some(at) {
                    self.wake_at = None;
                }
                self.cluster.advance(self.base + self.now);
                self.after_cluster();
            }
            Ev::Pause { client, until } => {
                self.trace(format!("fault: c{client} paused until {}", offset(until)));
                let until = self.clients[client]
                    .paused_until
                    .map_or(until, |u| u.max(until));
                self.clients[client].paused_until = Some(until);
                let c = &mut self.clients[client];
                c.hindered = c.hindered.max(until);
            }
            Ev::Crash { client } => self.crash(client),
            Ev::CutOff { client, until } => {
                self.trace(format!("fault: c{client} cut off until {}", offset(until)));
                let c = &mut self.clients[client];
                c.cut_off_until = Some(until);
                c.hindered = c.hindered.max(until);
            }
            Ev::CloseWatches { member } => {
                // A member shutting down ends its long polls: a clean empty 200, or (as a
                // real etcd does when stopped) a body cut short, which is a transport error.
                let cut = self.rng.next_u64() % 2 == 0;
                self.trace(format!("fault: m{member} closes every watch (cut: {cut})"));
                let now = self.base + self.now;
                self.cluster.close_watches(member, cut, now);
                self.after_cluster();
            }
            Ev::QuorumLoss { until } => {
                self.trace(format!(
                    "fault: quorum lost (cluster-wide) until {}",
                    offset(until)
                ));
                let now = self.base + self.now;
                self.cluster.set_quorum_lost(true, now);
                self.after_cluster();
                self.at(until, Ev::QuorumBack);
            }
            Ev::QuorumBack => {
                self.trace("fault: cluster-wide quorum loss over".into());
                let now = self.base + self.now;
                self.cluster.set_quorum_lost(false, now);
                self.after_cluster();
            }
            Ev::Member { member, fault } => self.member_fault(member, fault),
        }
    }

    fn member_fault(&mut self, m: usize, fault: MemberFault) {
        let now = self.base + self.now;
        let state = self.cluster.state(m);
        let held = self.cluster.held_by(m);
        let line = match fault {
            MemberFault::Kill { until } if state != MemberState::Dead => {
                self.cluster.kill(m, now);
                if let Some(until) = until {
                    self.at(
                        until,
                        Ev::Member {
                            member: m,
                            fault: MemberFault::Restart,
                        },
                    );
                }
                let until = until.map_or("for good".to_owned(), |u| format!("until {}", offset(u)));
                format!("fault: m{m} dies {until} ({held} requests cut)")
            }
            MemberFault::Restart if state == MemberState::Dead => {
                self.cluster.restart(m, now);
                format!("m{m} restarts")
            }
            MemberFault::Hang { until } if state == MemberState::Up => {
                self.cluster.hang(m, now);
                self.at(
                    until,
                    Ev::Member {
                        member: m,
                        fault: MemberFault::Resume,
                    },
                );
                format!("fault: m{m} hangs (SIGSTOP) until {}", offset(until))
            }
            MemberFault::Resume if state == MemberState::Hung => {
                self.cluster.resume(m, now);
                format!("m{m} resumes ({held} requests held)")
            }
            MemberFault::Lag { lag, until } if state != MemberState::Dead => {
                self.cluster.set_lag(m, Some(lag), now);
                self.at(
                    until,
                    Ev::Member {
                        member: m,
                        fault: MemberFault::LagEnd,
                    },
                );
                format!(
                    "fault: m{m} lags {} behind until {}",
                    offset(lag),
                    offset(until)
                )
            }
            MemberFault::LagEnd if self.cluster.lag(m).is_some() => {
                self.cluster.set_lag(m, None, now);
                format!("m{m} catches up")
            }
            MemberFault::Isolate { until } if state == MemberState::Up => {
                self.cluster.isolate(m, now);
                self.at(
                    until,
                    Ev::Member {
                        member: m,
                        fault: MemberFault::Rejoin,
                    },
                );
                format!("fault: m{m} cut off from its peers until {}", offset(until))
            }
            MemberFault::Rejoin if state == MemberState::Isolated => {
                self.cluster.rejoin(m, now);
                format!("m{m} rejoins its peers")
            }
            other => format!("fault: {other:?} on m{m} skipped (m{m} is {state:?})"),
        };
        if self.cluster.state(m) != state {
            self.member_since[m] = self.now;
        }
        self.trace(line);
        self.after_cluster();
    }

    /// Sends the cluster's answers on their way, schedules its next wake-up, traces quorum and
    /// leader changes.
    fn after_cluster(&mut self) {
        while let Some(note) = self.cluster.poll_note() {
            let m = note.member;
            let line = match note.kind {
                NoteKind::Committed { answered, received } => format!(
                    "m{m}: a proposal that waited for quorum commits: {} (received {}{})",
                    note.request,
                    offset(received),
                    if answered { "" } else { ", its client gone" }
                ),
                NoteKind::Dropped => format!("m{m}: a proposal is dropped: {}", note.request),
                NoteKind::ServedForNobody => {
                    format!("m{m}: serves a kept request for nobody: {}", note.request)
                }
            };
            self.trace(line);
        }
        while let Some((global, delivery)) = self.cluster.poll() {
            let Some(route) = self.routes.remove(&global) else {
                continue; // cancelled
            };
            if route.duplicate {
                continue;
            }
            let reply = match delivery {
                Delivery::Response(r) => Net::Response(r),
                Delivery::Refused => Net::Refused("connection refused"),
                Delivery::Reset => Net::Reset("connection reset"),
            };
            self.reply(route, reply);
        }
        if let Some(t) = self.cluster.next_wakeup() {
            let at = t.saturating_duration_since(self.base).max(self.now);
            if self.wake_at.map_or(true, |w| at < w) {
                self.wake_at = Some(at);
                self.at(at, Ev::ClusterWake { at });
            }
        }
        let quorum = self.cluster.has_quorum();
        if quorum != self.had_quorum {
            self.had_quorum = quorum;
            self.trace(if quorum {
                "cluster: quorum back".into()
            } else {
                "cluster: no quorum".into()
            });
        }
        if self.cluster.elections() != self.elections {
            self.elections = self.cluster.elections();
            let leader = self
                .cluster
                .leader()
                .map_or("?".into(), |l| format!("m{l}"));
            self.trace(format!("cluster: {leader} elected leader"));
        }
    }

    /// Sends a reply back over the network (unless lost).
    fn reply(&mut self, route: Route, reply: Net) {
        let client = route.client;
        if route.reply_lost {
            self.trace(format!("net: reply to c{client} r{} lost", route.rid));
            let c = &mut self.clients[client];
            if c.incarnation == route.incarnation {
                c.hindered = c.hindered.max(self.now);
            }
            return;
        }
        let at = self.now + self.latency();
        self.at(
            at,
            Ev::AtClient {
                client,
                incarnation: route.incarnation,
                rid: route.rid,
                reply,
            },
        );
    }

    fn crash(&mut self, client: usize) {
        let incarnation = self.clients[client].incarnation + 1;
        self.trace(format!(
            "fault: c{client} crashes (incarnation {incarnation})"
        ));
        // Its connections close: the members see the clients go.
        let out: Vec<u64> = self.clients[client]
            .out
            .values()
            .map(|o| o.global)
            .collect();
        for global in out {
            self.cluster.cancel(global);
            self.routes.remove(&global);
        }
        self.after_cluster();
        let seed = self.rng.next_u64();
        let style = self.clients[client].style;
        let endpoints = self.clients[client].endpoints.clone();
        let lock = self.new_machine(client, seed, incarnation, style, &endpoints);
        let now = self.now;
        let c = &mut self.clients[client];
        c.lock = lock;
        c.incarnation = incarnation;
        c.doing = Doing::Idle;
        c.out.clear();
        c.timer_generation += 1;
        c.waiting_since = None;
        c.hindered = c.hindered.max(now);
        let later = self.now + Duration::from_millis(200);
        self.at(
            later,
            Ev::Act {
                client,
                incarnation,
            },
        );
    }

    /// A client's behaviour: acquire, write while held, release; think; again.
    fn act(&mut self, client: usize) {
        let now = self.local(client, self.now);
        let incarnation = self.clients[client].incarnation;
        match self.clients[client].doing {
            Doing::Idle if self.clients[client].style == Style::TryLocker => {
                self.clients[client].lock.lock(now);
                self.clients[client].doing = Doing::Acquiring;
                self.trace(format!("c{client} tries to lock"));
                if !self.faulty() {
                    self.wanted_after_heal = true;
                }
            }
            Doing::Idle => {
                // Mostly short waits (a few TTLs); one in four waits up to a minute, so that a
                // waiter that sleeps through a release is not rescued by its own deadline.
                let wait = if self.rng.next_u64() % 4 == 0 {
                    self.rand_dur(self.p.ttl * 4, Duration::from_secs(60))
                } else {
                    self.rand_dur(Duration::from_millis(200), self.p.ttl * 4)
                };
                self.clients[client].lock.acquire(Some(now + wait), now);
                self.clients[client].doing = Doing::Acquiring;
                self.clients[client].waiting_since = Some(self.now);
                self.clients[client].acquire_index = self.cluster.store().index();
                self.trace(format!("c{client} acquires (waits up to {})", offset(wait)));
                if !self.faulty() {
                    self.wanted_after_heal = true;
                }
            }
            Doing::Holding { token, writes_left } => {
                if self.clients[client].lock.is_held(now) {
                    self.fenced_write(client, token);
                }
                if writes_left == 0 {
                    self.clients[client].lock.unlock(now);
                    self.clients[client].doing = Doing::Releasing;
                    self.trace(format!("c{client} unlocks"));
                } else {
                    if self.clients[client].style == Style::TryLocker {
                        self.clients[client].lock.renew(now); // by hand, between writes
                    }
                    self.clients[client].doing = Doing::Holding {
                        token,
                        writes_left: writes_left - 1,
                    };
                    let next = self.now + self.rand_dur(Duration::from_millis(20), self.p.ttl / 2);
                    self.at(
                        next,
                        Ev::Act {
                            client,
                            incarnation,
                        },
                    );
                }
            }
            Doing::Acquiring | Doing::Releasing => {}
        }
        self.drain(client);
    }

    fn fenced_write(&mut self, client: usize, token: u64) {
        match self.highest_accepted {
            Some(h) if token < h => {
                self.writes.1 += 1;
                self.trace(format!("resource refuses c{client} token {token} (< {h})"));
            }
            _ => {
                self.writes.0 += 1;
                if self.highest_accepted.is_some_and(|h| token < h) {
                    self.violation(
                        'b',
                        format!("accepted token {token} below {:?}", self.highest_accepted),
                    );
                }
                self.highest_accepted = Some(token);
                self.trace(format!("resource accepts c{client} token {token}"));
            }
        }
    }

    /// Carries out what a client's machine asks, and reacts to its completions and events.
    fn drain(&mut self, client: usize) {
        // What the machine logged for the input just given (replay only; not hashed, so a
        // replay's checks are the same as a run's).
        if let (Some(logs), Some(full)) = (self.logs.as_ref(), self.full.as_mut()) {
            for line in logs.take() {
                full.push((self.now, format!("c{client} {line}")));
            }
        }
        let incarnation = self.clients[client].incarnation;
        while let Some(rid) = self.clients[client].lock.poll_cancel() {
            if let Some(out) = self.clients[client].out.remove(&rid.as_raw()) {
                self.cluster.cancel(out.global);
                self.routes.remove(&out.global);
            }
        }
        while let Some((rid, request)) = self.clients[client].lock.poll_request() {
            self.next_global += 1;
            let global = self.next_global;
            let member = request
                .uri()
                .authority()
                .and_then(|a| self.cluster.member_of(a.as_str()));
            let query = request.uri().query().unwrap_or("");
            let what = format!("{} ?{query}", request.method());
            let watch = request.method() == http::Method::GET
                && query.split('&').any(|p| p == "wait=true")
                && !query.split('&').any(|p| p == "quorum=true");
            if request.method() != http::Method::GET {
                self.clients[client].wrote = self.now;
            }
            let sent = self.now;
            self.clients[client].out.insert(
                rid.as_raw(),
                Out {
                    global,
                    member,
                    watch,
                    what,
                    sent,
                },
            );
            self.send(client, incarnation, rid.as_raw(), global, request);
        }
        while let Some(done) = self.clients[client].lock.poll_completion() {
            self.completed(client, done);
        }
        while let Some(event) = self.clients[client].lock.poll_event() {
            self.trace(format!("c{client} event {event:?}"));
            if let Event::Lost { .. } = event {
                if matches!(self.clients[client].doing, Doing::Holding { .. }) {
                    self.clients[client].doing = Doing::Idle;
                    let next = self.now
                        + self.rand_dur(Duration::from_millis(10), Duration::from_millis(500));
                    self.at(
                        next,
                        Ev::Act {
                            client,
                            incarnation,
                        },
                    );
                }
            }
        }
        // Re-arm the machine's timer.
        self.clients[client].timer_generation += 1;
        if let Some(at) = self.clients[client].lock.poll_timeout() {
            let t = self.true_time(client, at).max(self.now);
            let generation = self.clients[client].timer_generation;
            self.at(t, Ev::Timer { client, generation });
        }
    }

    fn send(
        &mut self,
        client: usize,
        incarnation: u32,
        rid: u64,
        global: u64,
        request: Request<Vec<u8>>,
    ) {
        let cut_off = self.clients[client]
            .cut_off_until
            .is_some_and(|u| u > self.now);
        if cut_off {
            // Half the time the connection is refused at once; otherwise it is a black hole.
            let refused = self.rng.next_u64() % 2 == 0;
            if refused {
                let at = self.now + self.latency();
                self.at(
                    at,
                    Ev::AtClient {
                        client,
                        incarnation,
                        rid,
                        reply: Net::Refused("network unreachable"),
                    },
                );
            }
            self.trace(format!(
                "net: c{client} r{rid} cut off ({})",
                if refused { "refused" } else { "black hole" }
            ));
            return;
        }
        let faulty = self.faulty();
        if faulty && self.chance(self.p.request_loss) {
            self.trace(format!("net: c{client} r{rid} request lost"));
            let c = &mut self.clients[client];
            c.hindered = c.hindered.max(self.now);
            return;
        }
        let reply_lost = faulty && self.chance(self.p.reply_loss);
        let duplicate = faulty && self.chance(self.p.duplication);
        let at = self.now + self.latency();
        if duplicate {
            self.next_global += 1;
            let dup_global = self.next_global;
            let copy = clone_request(&request);
            let later = at + self.latency();
            // The duplicate's reply goes nowhere (the client took the first).
            self.routes.insert(
                dup_global,
                Route {
                    client,
                    incarnation,
                    rid,
                    reply_lost: true,
                    duplicate: true,
                },
            );
            self.at(
                later,
                Ev::AtEtcd {
                    global: dup_global,
                    request: copy,
                },
            );
        }
        self.routes.insert(
            global,
            Route {
                client,
                incarnation,
                rid,
                reply_lost,
                duplicate: false,
            },
        );
        self.at(at, Ev::AtEtcd { global, request });
    }

    fn completed(&mut self, client: usize, done: Completion) {
        let incarnation = self.clients[client].incarnation;
        let result = self.clock.result(&done.result);
        self.trace(format!("c{client} completes {:?}: {result}", done.op));
        let next_act = |w: &mut World, lo: u64, hi: u64| {
            let t = w.now + w.rand_dur(Duration::from_millis(lo), Duration::from_millis(hi));
            w.at(
                t,
                Ev::Act {
                    client,
                    incarnation,
                },
            );
        };
        if self.clients[client].doing == Doing::Acquiring {
            self.clients[client].waiting_since = None;
        }
        match (self.clients[client].doing, done.result) {
            (Doing::Acquiring, Ok(Outcome::Acquired(fence) | Outcome::Locked(fence))) => {
                let token = fence.token();
                if self.last_token.is_some_and(|last| token <= last) {
                    self.violation(
                        'c',
                        format!(
                            "c{client} acquired token {token} after {:?}",
                            self.last_token
                        ),
                    );
                }
                self.last_token = Some(token);
                self.check_fair_acquisition(client, token);
                self.acquisitions += 1;
                if !self.faulty() {
                    self.acquisitions_after_heal += 1;
                }
                let writes = (self.rng.next_u64() % 5) as u32;
                self.clients[client].doing = Doing::Holding {
                    token,
                    writes_left: writes,
                };
                next_act(self, 0, 100);
            }
            (Doing::Acquiring, Err(_)) | (Doing::Releasing, _) => {
                self.clients[client].doing = Doing::Idle;
                next_act(self, 10, 1000);
            }
            _ => {}
        }
    }

    // ----- checkers ---------------------------------------------------------------------

    fn check(&mut self) {
        // (a) at most one believed holder at this instant.
        let holders: Vec<usize> = (0..self.clients.len())
            .filter(|&c| {
                let now = self.local(c, self.now);
                self.clients[c].lock.is_held(now)
            })
            .collect();
        if holders.len() > 1 {
            let tokens: Vec<_> = holders
                .iter()
                .map(|&c| self.clients[c].lock.fence().map(|f| f.token()))
                .collect();
            self.violation(
                'a',
                format!("clients {holders:?} all hold the lock (tokens {tokens:?})"),
            );
        }
        // (d) no silent stall.
        for c in 0..self.clients.len() {
            let lock = &self.clients[c].lock;
            let active = lock.is_busy() || lock.fence().is_some() || lock.is_watching();
            if active && !lock.has_pending_io() {
                self.violation(
                    'd',
                    format!("c{c} is busy or holding with no request out and no timer"),
                );
            }
        }
        // (g) the key free with quorum: since when.
        let index = self.cluster.store().index();
        if index != self.key_seen.0 {
            self.key_seen = (index, self.cluster.store().get(KEY).is_none());
            self.check_fairness();
        }
        let free = self.key_seen.1 && self.had_quorum;
        match (free, self.free_since) {
            (true, None) => self.free_since = Some(self.now),
            (false, Some(_)) => self.free_since = None,
            _ => {}
        }
        self.check_liveness();
    }

    /// The queue entries older than the oldest entry of `node_id` (all of them when it has
    /// none... but then nobody is "ahead": `None`).
    fn ahead_of(&self, node_id: &str) -> Option<Vec<(String, String, u64)>> {
        let entries = self.cluster.store().files_in(QUEUE);
        let own = entries
            .iter()
            .filter(|e| e.1 == node_id)
            .map(|e| e.2)
            .min()?;
        Some(
            entries
                .into_iter()
                .filter(|e| e.2 < own && e.1 != node_id)
                .collect(),
        )
    }

    /// Checker (h), when client `c`'s acquire completed with the lock: nobody may be left
    /// ahead of it in the queue. (Checked at completion, not when the key was created: a write
    /// of an earlier attempt that a hung member applies late can take a free key out of turn —
    /// no client decides that — and the machine then owns it only when its turn comes.)
    fn check_fair_acquisition(&mut self, c: usize, token: u64) {
        let id = self.clients[c].lock.config().node_id().as_str().to_owned();
        // Only a waiter still waiting on that very entry is wronged: an entry whose owner is
        // not waiting, or waits on another entry, is a leftover (a POST answered late, a
        // removal not through yet) that its owner skips too.
        let waiting = |v: &str, name: &str, created: u64| {
            self.clients.iter().any(|w| {
                w.doing == Doing::Acquiring
                    && w.lock.config().node_id().as_str() == v
                    && match w.lock.queue_entry() {
                        Some(ticket) => ticket == name,
                        None => created > w.acquire_index,
                    }
            })
        };
        let ahead = self.ahead_of(&id).map(|a| {
            a.into_iter()
                .filter(|e| waiting(&e.1, &e.0, e.2))
                .collect::<Vec<_>>()
        });
        if let Some(ahead) = ahead.filter(|a| !a.is_empty()) {
            self.violation(
                'h',
                format!("c{c} acquired token {token} with older queue entries left: {ahead:?}"),
            );
        }
    }

    /// Keeps checker (g)'s `turn` up to date when the store changed.
    fn check_fairness(&mut self) {
        for c in 0..self.clients.len() {
            let id = self.clients[c].lock.config().node_id().as_str().to_owned();
            let clear = self.ahead_of(&id).map_or(true, |a| a.is_empty());
            let client = &mut self.clients[c];
            match (clear, client.turn_since) {
                (true, None) => client.turn_since = Some(self.now),
                (false, Some(_)) => client.turn_since = None,
                _ => {}
            }
        }
    }

    /// Checker (g): see the module docs.
    fn check_liveness(&mut self) {
        let now = self.now;
        if self.free_since.is_none() {
            for client in &mut self.clients {
                client.g.start = None;
            }
            return;
        }
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            let waiting = client
                .waiting_since
                .filter(|_| client.style == Style::Waiter && client.doing == Doing::Acquiring);
            let start = match (self.free_since, waiting, client.turn_since) {
                (Some(free), Some(waiting), Some(turn)) => {
                    Some(free.max(waiting).max(client.hindered).max(turn))
                }
                _ => None,
            };
            let busy = client.out.values().any(|o| !o.watch);
            let g = &mut self.clients[c].g;
            if start != g.start {
                *g = Obligation {
                    start,
                    idle: Duration::ZERO,
                    last: start.map_or(now, |s| s.max(now)),
                    busy,
                    reported: false,
                };
                continue;
            }
            let Some(s) = start else {
                g.busy = busy;
                continue;
            };
            let from = g.last.max(s);
            if now > from && !g.busy {
                g.idle += now - from;
            }
            g.last = g.last.max(now);
            g.busy = busy;
            let client = &self.clients[c];
            if client.wrote >= s || client.g.idle <= self.bound || client.g.reported {
                continue;
            }
            self.clients[c].g.reported = true;
            let what = self.asleep(c, s);
            self.violation('g', what);
        }
    }

    /// What checker (g) says about client `c`, asleep since `s`.
    fn asleep(&self, c: usize, s: Duration) -> String {
        let client = &self.clients[c];
        let free = self.free_since.unwrap_or_default();
        let mut what = format!(
            "c{c} slept {} (only long polls out) since {} and sent no write, although the key \
             has been free with quorum since {} (bound {} = L {} + drift + jitter {} + slack {}; \
             waiting since {}, last write {}, last client-side fault {})",
            offset(client.g.idle),
            offset(s),
            offset(free),
            offset(self.bound),
            offset(self.p.liveness_checked.unwrap_or(self.p.watch_liveness)),
            offset(ACQUIRE_JITTER),
            offset(self.p.liveness_slack()),
            offset(client.waiting_since.unwrap_or_default()),
            offset(client.wrote),
            offset(client.hindered),
        );
        if client.out.is_empty() {
            what.push_str("; no request out");
        }
        for (rid, out) in &client.out {
            let member = match out.member {
                Some(m) => {
                    let state = self.cluster.state(m);
                    let lag = self
                        .cluster
                        .lag(m)
                        .map_or(String::new(), |d| format!(", lagging {}", offset(d)));
                    format!(
                        "m{m} ({state:?} since {}{lag})",
                        offset(self.member_since[m])
                    )
                }
                None => "?".into(),
            };
            let _ = write!(
                what,
                "; r{rid} {} sent {} to {member}",
                out.what,
                offset(out.sent)
            );
        }
        what
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
