//! A chaos run: a seeded nemesis against a real 3-member etcd cluster while lock clients on
//! both adapters contend for one lock, and checkers on everything the clients saw.
//!
//! `make chaos SECONDS=N SEED=S` (the `chaos` binary, `tests/src/bin/chaos.rs`) runs one;
//! `tests/tests/chaos.rs` runs a bounded one in `make test`.
//!
//! # The nemesis
//! [`schedule`] turns a seed (and the [`Options`]) into a list of [`Step`]s, each a fault at a
//! virtual offset from the run's start, held for a seeded time and then healed: SIGKILL a member
//! (restarted with its data at the heal), SIGKILL the leader, SIGSTOP a member or the leader
//! (SIGCONT at the heal), cut a member or the leader off from its peers (nftables rules of the
//! harness; its client port stays reachable), restart a member at once. The main schedule has
//! at most one member faulted at a time, so quorum holds; after each heal the nemesis waits
//! until every member serves quorum reads again before the next step. Steps marked
//! `QUORUM LOSS` fault two members at once (the leader and a follower) for a short while.
//!
//! The schedule is a pure function of the seed, the duration and the options, and is printed
//! at the start: a run is replayable from its seed. Real timing differs from run to run (etcd
//! elections, the wait for recovery after each heal, the scheduling of 2 cores), so a replay
//! injects the same faults in the same order with the same hold times, at about the same
//! offsets, against clients doing the same seeded workload, but not at the same instants.
//!
//! # The clients
//! `tokio_clients` + `async_std_clients` clients (2 + 2 by default), each in its own thread
//! and runtime, each with its own `Etcd` handle given the 3 members in a seeded order, each its
//! own node id, contend for one key. A client loops: think (seeded), want the lock, take it
//! with a waiting `guard(..)` or `acquire(..)` + auto-renew (seeded per round), hold it for a
//! seeded time while writing to a fenced store every 20 ms (only when `is_held()` says so),
//! release it (`release()` / `unlock()`). Client 0 of each adapter also subscribes to the
//! lock's events for its whole life (so both watch paths, a waiting acquire's own watch and
//! the events watch, face the faults).
//!
//! # The checkers
//! Quorum-loss windows run from the first fault of a `QUORUM LOSS` step to the moment every
//! member serves quorum reads again; all other time is *quorum-held* time.
//!
//! 1. **Fencing.** The fenced store ([`crate::fenced::FencedStore`]) never accepts a stale
//!    token: its accepted tokens never decrease, no write is accepted with a token lower than
//!    the highest granted so far (a grant: an acquire that returned), no write is refused, and
//!    tokens of successive grants strictly increase.
//! 2. **Mutual exclusion.** No two clients believe they hold the lock at once. Every
//!    `is_held()` sample and every grant is recorded under one mutex, in one order, on one
//!    clock: a client's sample that says held, taken after a higher token was granted to
//!    someone, is an overlap. Allowed overlap: **0 ms**. The library's documented clock-drift
//!    allowance is the safety margin (TTL/10) it already subtracts from a hold's validity
//!    (`valid_until` = send time + TTL - margin, while etcd expires the key no earlier than
//!    receive time + TTL); clients and etcd members share this host's clock (etcd's wall clock
//!    and this process's monotonic clock tick at one rate, short of an NTP step), so the drift
//!    it covers is nil here and the margin is all slack: a belief that outlives etcd's lease
//!    is a bug, however short. (A sample is taken every 20 ms while holding and right before
//!    each fenced write, so an overlap shorter than that between two samples can go unseen.)
//! 3. **Progress while quorum holds.** A client *wants* the lock from before its first acquire
//!    call until an acquire returns the lock (across retries). (a) In each want, the
//!    quorum-held time during which no *other* client believed it held the lock must stay
//!    under `max(3 TTL, 20 s)`: the lock is not left idle (a lost wake-up, a stuck watch, a
//!    key left behind) while someone waits. (b) In each want, the quorum-held time must stay
//!    under `max(12 TTL, 60 s)`: no client starves. microlock has no queue (whoever's write
//!    lands first after a release wins), so (b) is loose on purpose: the per-client waits are
//!    printed.
//! 4. **Errors.** (a) While quorum holds, callers see no error: no failed acquire (a
//!    `WaitTimeout` is counted by 3, not here), no failed release, no lost hold. (b) During
//!    quorum loss, errors are allowed but typed (`Timeout`, `Transport`, `Etcd {..}`,
//!    `WaitTimeout`, `LeaseExpired`, a hold lost as `Expired`), and never a wrong answer:
//!    `AlreadyLocked` from a waiting acquire, `LockNotOwned` from a release, or a hold lost
//!    (`NotOwned`, `Superseded`, or `is_held()` turning false) before its validity deadline;
//!    nor `Protocol`, `Cancelled`, `Destroyed` or a hung call. (c) Every call returns in
//!    its documented bound: a release within the operation timeout + one request timeout, an
//!    acquire within its own timeout + the same, plus 1.5 s of scheduling slack.
//! 5. **Events** (the event subscribers). The `Locked` tokens a subscriber sees strictly
//!    increase (no replay when the watch moves to another member), no token granted after it
//!    subscribed and below the highest it saw is missing, and it sees the last grant within
//!    10 s after the run.
//!
//! The run exits (or the test fails) on any violation. Processes and packet-filter rules are
//! the harness's: dropping the cluster (also while unwinding from a panic) heals the partitions
//! and kills the members, and a process that dies without unwinding has its members killed by
//! their wrappers and its tables swept by the next partitionable cluster.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use microlock_proto::{Error, Event, LostReason};

use crate::etcd::EtcdCluster;
use crate::fenced::FencedStore;

/// Number of etcd members.
pub const MEMBERS: usize = 3;

/// How often a holder samples `is_held()` and writes to the fenced store.
const TICK: Duration = Duration::from_millis(20);

/// A client does not start wanting the lock with less than this left in the run.
const MIN_WANT: Duration = Duration::from_secs(1);

/// Pause after an acquire failed with an error (not a `WaitTimeout`) before the next attempt.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Scheduling slack on top of a call's documented bound (2 busy cores).
const BOUND_SLACK: Duration = Duration::from_millis(1500);

/// A call still running this long after its documented bound is abandoned as hung.
const HANG_SLACK: Duration = Duration::from_secs(15);

/// What the schedule assumes a heal and the recovery after it take (the real run waits for
/// the cluster to serve again, however long that takes, up to [`RECOVERY_BOUND`]).
const RECOVERY_ESTIMATE: Duration = Duration::from_secs(2);

/// The cluster must serve quorum reads on every member within this after a heal.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

/// How long a subscriber waits after the run to see the last grant.
const EVENTS_CATCH_UP: Duration = Duration::from_secs(10);

/// Errors printed as they happen (all are counted).
const LIVE_ERROR_LINES: usize = 40;

// ------------------------------------------------------------------------------------------
// Randomness

/// SplitMix64: the runner's only randomness (schedule, endpoint orders, workloads).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent generator for one purpose (`tag`) of the same seed.
    pub fn fork(&self, tag: u64) -> Rng {
        let mut r = Rng(self.0 ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[lo, hi]`, at millisecond resolution.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo_ms, hi_ms) = (lo.as_millis() as u64, hi.as_millis() as u64);
        if hi_ms <= lo_ms {
            return lo;
        }
        Duration::from_millis(lo_ms + self.below(hi_ms - lo_ms + 1))
    }

    /// `true` with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Options

/// What a chaos run does. [`Options::new`] gives the defaults of `make chaos`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Length of the run (clients run that long; faults stop `cooldown` before its end).
    pub seconds: u64,
    /// The seed of everything random.
    pub seed: u64,
    /// Clients on microlock-tokio.
    pub tokio_clients: usize,
    /// Clients on microlock-async-std.
    pub async_std_clients: usize,
    /// The lock's TTL.
    pub ttl: Duration,
    /// Whether the schedule has quorum-loss steps.
    pub quorum_loss: bool,
    /// Whether partitions can be injected (root and `nft`); see [`partitions_supported`].
    pub partitions: bool,
    /// No fault before this offset.
    pub warmup: Duration,
    /// No fault in this last part of the run.
    pub cooldown: Duration,
    /// How long a single-member fault is held (uniform).
    pub fault_hold: (Duration, Duration),
    /// How long a quorum loss is held (uniform).
    pub quorum_loss_hold: (Duration, Duration),
    /// Quiet time between a step's (estimated) recovery and the next step (uniform).
    pub gap: (Duration, Duration),
    /// A client's pause between a release and wanting the lock again (uniform).
    pub think: (Duration, Duration),
    /// A short hold (uniform); most holds.
    pub short_hold: (Duration, Duration),
    /// A long hold (uniform; several renewals), in `long_hold_percent` % of the holds.
    pub long_hold: (Duration, Duration),
    /// See `long_hold`.
    pub long_hold_percent: u64,
    /// Print every nemesis action and every error (else the first 40 errors).
    pub verbose: bool,
    /// Whether these are [`Options::short`]'s timings (for the replay line).
    pub short: bool,
    /// Plant a violation, to see the checkers fire: client 0's first hold ignores `is_held()`
    /// and keeps writing for 2 TTL without renewing, like a client that ignores a loss.
    pub plant_violation: bool,
}

impl Options {
    /// The defaults: 2 + 2 clients, TTL 5 s, quorum-loss steps on, partitions when supported,
    /// faults held 2-8 s, quorum losses 3-12 s (the longer ones outlast an operation's time
    /// budget, 8 s by default, so calls fail with typed errors).
    pub fn new(seconds: u64, seed: u64) -> Options {
        Options {
            seconds,
            seed,
            tokio_clients: 2,
            async_std_clients: 2,
            ttl: Duration::from_secs(5),
            quorum_loss: true,
            partitions: partitions_supported(),
            warmup: Duration::from_secs(4),
            cooldown: Duration::from_secs(8),
            fault_hold: (Duration::from_secs(2), Duration::from_secs(8)),
            quorum_loss_hold: (Duration::from_secs(3), Duration::from_secs(12)),
            gap: (Duration::from_secs(1), Duration::from_secs(4)),
            think: (Duration::from_millis(500), Duration::from_secs(4)),
            short_hold: (Duration::from_millis(100), Duration::from_millis(1500)),
            long_hold: (Duration::from_secs(2), Duration::from_secs(5)),
            long_hold_percent: 20,
            verbose: false,
            short: false,
            plant_violation: false,
        }
    }

    /// A short run's options (the bounded test): shorter faults and gaps, so that about 55 s
    /// hold one fault of each kind, with a quorum loss of 9-11 s (longer than an operation's
    /// time budget).
    pub fn short(seconds: u64, seed: u64) -> Options {
        Options {
            warmup: Duration::from_secs(3),
            cooldown: Duration::from_secs(7),
            fault_hold: (Duration::from_millis(1500), Duration::from_secs(4)),
            quorum_loss_hold: (Duration::from_secs(9), Duration::from_secs(11)),
            gap: (Duration::from_millis(500), Duration::from_millis(1500)),
            short: true,
            ..Options::new(seconds, seed)
        }
    }

    /// The command that replays a run with these options.
    pub fn replay_command(&self) -> String {
        let defaults = Options::new(self.seconds, self.seed);
        let mut args = Vec::new();
        if self.short {
            args.push("--short".to_string());
        }
        if !self.quorum_loss {
            args.push("--no-quorum-loss".to_string());
        }
        if !self.partitions {
            args.push("--no-partitions".to_string());
        }
        if self.ttl != defaults.ttl {
            args.push(format!("--ttl {}", self.ttl.as_secs()));
        }
        if self.tokio_clients != defaults.tokio_clients {
            args.push(format!("--tokio-clients {}", self.tokio_clients));
        }
        if self.async_std_clients != defaults.async_std_clients {
            args.push(format!("--async-std-clients {}", self.async_std_clients));
        }
        if self.plant_violation {
            args.push("--plant-violation".to_string());
        }
        let mut cmd = format!("make chaos SECONDS={} SEED={}", self.seconds, self.seed);
        if !args.is_empty() {
            let _ = write!(cmd, " CHAOS_ARGS='{}'", args.join(" "));
        }
        cmd
    }

    /// The per-want bound on quorum-held time with the lock free (checker 3a).
    pub fn free_wait_bound(&self) -> Duration {
        (self.ttl * 3).max(Duration::from_secs(20))
    }

    /// The per-want bound on quorum-held waiting time (checker 3b).
    pub fn starvation_bound(&self) -> Duration {
        (self.ttl * 12).max(Duration::from_secs(60))
    }
}

/// Whether this process can partition members: root, and `nft` runs.
pub fn partitions_supported() -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let nft = ["/usr/sbin/nft", "nft"].iter().any(|bin| {
        std::process::Command::new(bin)
            .args(["list", "tables"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    root && nft
}

// ------------------------------------------------------------------------------------------
// Schedule

/// What a fault does to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// SIGKILL; restarted (same name, ports, data) at the heal.
    Kill,
    /// SIGSTOP; SIGCONT at the heal.
    Pause,
    /// Cut off from its peers (its client port stays reachable); healed at the heal.
    Partition,
    /// SIGKILL and start again at once (no hold).
    Restart,
}

/// Which member a fault hits, resolved when the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Member `i`, whatever its role.
    Member(usize),
    /// The member that says it is the raft leader (`GET /v2/stats/self`).
    Leader,
    /// The `k % 2`-th of the other members, by index.
    Follower(usize),
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Virtual offset from the run's start.
    pub at: Duration,
    /// What is done to the targets.
    pub action: Action,
    /// One target; two for a quorum loss.
    pub targets: Vec<Target>,
    /// How long the fault is held before the heal (zero for a restart).
    pub hold: Duration,
}

impl Step {
    /// Whether this step takes two members down at once.
    pub fn quorum_loss(&self) -> bool {
        self.targets.len() > 1
    }

    /// The kind, for the summary's counts.
    pub fn kind(&self) -> String {
        let base = match self.action {
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Partition => "partition",
            Action::Restart => "restart",
        };
        if self.quorum_loss() {
            format!("quorum-loss ({base})")
        } else if self.targets == [Target::Leader] {
            format!("leader-{base}")
        } else {
            base.to_string()
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = |t: &Target| match t {
            Target::Member(i) => format!("m{i}"),
            Target::Leader => "the leader".to_string(),
            Target::Follower(k) => format!("follower #{}", k % 2),
        };
        let targets = self.targets.iter().map(who).collect::<Vec<_>>().join(" + ");
        let hold = format!("{:.1} s", self.hold.as_secs_f64());
        if self.quorum_loss() {
            f.write_str("*** QUORUM LOSS *** ")?;
        }
        match self.action {
            Action::Kill => write!(f, "kill {targets} (SIGKILL), restart after {hold}"),
            Action::Pause => write!(f, "pause {targets} (SIGSTOP), resume after {hold}"),
            Action::Partition => write!(f, "partition {targets} from the peers, heal after {hold}"),
            Action::Restart => write!(f, "restart {targets} (SIGKILL, start at once)"),
        }
    }
}

/// The nemesis's plan: a pure function of the seed, the duration and the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The seed.
    pub seed: u64,
    /// The run's length.
    pub seconds: u64,
    /// The faults, in order.
    pub steps: Vec<Step>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule (seed {}, {} s): {} steps, a pure function of the seed, the duration and \
             the options;",
            self.seed,
            self.seconds,
            self.steps.len()
        )?;
        writeln!(
            f,
            "  offsets are virtual: each step also waits for the cluster to serve again after \
             the previous one, so real offsets drift later"
        )?;
        for (n, step) in self.steps.iter().enumerate() {
            writeln!(
                f,
                "  step {:>2}  +{:>6.1} s  {step}",
                n + 1,
                step.at.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// The kinds of step; each deck holds one of each, shuffled, so that a run long enough for a
/// deck injects every kind.
#[derive(Debug, Clone, Copy)]
enum Card {
    Kill,
    LeaderKill,
    Pause,
    Partition,
    Restart,
    QuorumLoss,
}

/// The schedule of a run.
pub fn schedule(o: &Options) -> Schedule {
    let mut rng = Rng::new(o.seed).fork(0x4e45_4d45_5349_5321); // "NEMESIS!"
    let end = Duration::from_secs(o.seconds).saturating_sub(o.cooldown);
    let mut at = o.warmup;
    let mut steps = Vec::new();
    let mut deck: Vec<Card> = Vec::new();
    let member = |rng: &mut Rng| Target::Member(rng.below(MEMBERS as u64) as usize);
    loop {
        if deck.is_empty() {
            deck = vec![Card::Kill, Card::LeaderKill, Card::Pause, Card::Restart];
            if o.partitions {
                deck.push(Card::Partition);
            }
            if o.quorum_loss {
                deck.push(Card::QuorumLoss);
            }
            rng.shuffle(&mut deck);
        }
        let card = deck.pop().expect("refilled above");
        let hold = rng.between(o.fault_hold.0, o.fault_hold.1);
        let gap = rng.between(o.gap.0, o.gap.1);
        let leader_or_member = |rng: &mut Rng| {
            if rng.percent(50) {
                Target::Leader
            } else {
                member(rng)
            }
        };
        let step = match card {
            Card::Kill => Step {
                at,
                action: Action::Kill,
                targets: vec![member(&mut rng)],
                hold,
            },
            Card::LeaderKill => Step {
                at,
                action: Action::Kill,
                targets: vec![Target::Leader],
                hold,
            },
            Card::Pause => Step {
                at,
                action: Action::Pause,
                targets: vec![leader_or_member(&mut rng)],
                hold,
            },
            Card::Partition => Step {
                at,
                action: Action::Partition,
                targets: vec![leader_or_member(&mut rng)],
                hold,
            },
            Card::Restart => Step {
                at,
                action: Action::Restart,
                targets: vec![leader_or_member(&mut rng)],
                hold: Duration::ZERO,
            },
            Card::QuorumLoss => {
                let mut actions = vec![Action::Kill, Action::Pause];
                if o.partitions {
                    actions.push(Action::Partition);
                }
                let action = actions[rng.below(actions.len() as u64) as usize];
                Step {
                    at,
                    action,
                    targets: vec![Target::Leader, Target::Follower(rng.below(2) as usize)],
                    hold: rng.between(o.quorum_loss_hold.0, o.quorum_loss_hold.1),
                }
            }
        };
        if step.at + step.hold + RECOVERY_ESTIMATE > end {
            break;
        }
        at = step.at + step.hold + RECOVERY_ESTIMATE + gap;
        steps.push(step);
    }
    Schedule {
        seed: o.seed,
        seconds: o.seconds,
        steps,
    }
}

// ------------------------------------------------------------------------------------------
// What the clients and the nemesis record

/// How a client took the lock this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `guard(timeout)`, `guard.is_held()`, `guard.release()`.
    Guard,
    /// `set_auto_renew(true)`, `acquire(timeout)`, `is_held()`, `unlock()`.
    Acquire,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Guard => "guard",
            Mode::Acquire => "acquire",
        }
    }
}

/// A caller-visible operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Acquire(Mode),
    Release(Mode),
    /// A hold that ended without a release.
    Lost(Mode),
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpKind::Acquire(Mode::Guard) => f.write_str("guard()"),
            OpKind::Acquire(Mode::Acquire) => f.write_str("acquire()"),
            OpKind::Release(Mode::Guard) => f.write_str("guard.release()"),
            OpKind::Release(Mode::Acquire) => f.write_str("unlock()"),
            OpKind::Lost(m) => write!(f, "hold ({}) lost", m.name()),
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Ok,
    Err(Error),
    /// A hold lost, with why when known.
    Lost(Option<LostReason>),
    /// Still running after its bound + [`HANG_SLACK`]: abandoned (dropped).
    Hung,
}

#[derive(Debug, Clone)]
struct OpRec {
    client: usize,
    kind: OpKind,
    start: Instant,
    end: Instant,
    outcome: Outcome,
    /// The documented bound on its duration (none for a loss).
    bound: Option<Duration>,
    /// For a release or a loss: the hold's validity deadline at its last held sample.
    valid_until: Option<Instant>,
    /// For a loss: the hold's token (to find the reason in the client's events).
    token: Option<u64>,
    /// For a loss: what the client's `Etcd` handle knew of the members then.
    note: Option<String>,
}

#[derive(Debug, Clone)]
struct HoldRec {
    client: usize,
    token: u64,
    granted: Instant,
    last_held: Instant,
    valid_until: Option<Instant>,
    /// When the client stopped believing (release decided, or loss observed), and whether it
    /// was a release.
    ended: Option<(Instant, bool)>,
}

#[derive(Debug, Clone)]
struct WantRec {
    client: usize,
    start: Instant,
    end: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Overlap {
    client: usize,
    token: u64,
    first: Instant,
    last: Instant,
    samples: u64,
    newer_token: u64,
    newer_client: usize,
    newer_granted: Instant,
}

/// Consecutive writes of one client with one token that a checker objects to.
#[derive(Debug, Clone)]
struct WriteRun {
    client: usize,
    token: u64,
    other: u64,
    first: Instant,
    last: Instant,
    count: u64,
}

fn note_write(runs: &mut Vec<WriteRun>, client: usize, token: u64, other: u64, now: Instant) {
    match runs.last_mut() {
        Some(r) if r.client == client && r.token == token => {
            r.other = r.other.max(other);
            r.last = now;
            r.count += 1;
        }
        _ => runs.push(WriteRun {
            client,
            token,
            other,
            first: now,
            last: now,
            count: 1,
        }),
    }
}

#[derive(Debug, Clone)]
struct FaultRec {
    label: String,
    kind: String,
    quorum_loss: bool,
    injected: Instant,
    healed: Option<Instant>,
    recovered: Option<Instant>,
}

#[derive(Debug, Default)]
struct Ledger {
    store: FencedStore,
    /// The highest token granted so far: (token, client, when).
    newest: Option<(u64, usize, Instant)>,
    holds: Vec<HoldRec>,
    ops: Vec<OpRec>,
    wants: Vec<WantRec>,
    overlaps: Vec<Overlap>,
    token_order: Vec<String>,
    writes_accepted: u64,
    /// Writes refused by the store (`other`: the highest token it had accepted).
    writes_refused: Vec<WriteRun>,
    /// Writes accepted with a token below the highest granted (`other`: that one).
    stale_accepted: Vec<WriteRun>,
    /// Per subscribing client: when it subscribed, what it saw, whether it caught up at the end.
    subscribers: BTreeMap<usize, Subscriber>,
    faults: Vec<FaultRec>,
    /// The step under way (for messages).
    current_fault: Option<String>,
}

#[derive(Debug, Clone)]
struct Subscriber {
    since: Instant,
    events: Vec<(Instant, Event)>,
    caught_up: Option<bool>,
}

/// Everything shared by the clients and the nemesis.
pub(crate) struct Shared {
    start: Instant,
    stop_at: Instant,
    stop: AtomicBool,
    verbose: bool,
    names: Vec<String>,
    ledger: Mutex<Ledger>,
    errors_printed: AtomicUsize,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offset(&self, t: Instant) -> String {
        format!(
            "+{:.3}s",
            t.saturating_duration_since(self.start).as_secs_f64()
        )
    }

    fn say(&self, line: &str) {
        println!("[{:>9}] {line}", self.offset(Instant::now()));
    }

    /// Whether clients should wind down: the run's end, or a stop (e.g. the nemesis panicked).
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.stop_at
    }

    /// Time left in the run.
    pub(crate) fn remaining(&self) -> Duration {
        if self.stop.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        self.stop_at.saturating_duration_since(Instant::now())
    }

    pub(crate) fn want_start(&self, client: usize) -> usize {
        let mut l = self.ledger();
        l.wants.push(WantRec {
            client,
            start: Instant::now(),
            end: None,
        });
        l.wants.len() - 1
    }

    pub(crate) fn want_gave_up(&self, want: usize) {
        self.ledger().wants[want].end = Some(Instant::now());
    }

    /// An acquire returned the lock: ends the want, records the grant and the operation, and
    /// returns the hold's number.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn granted(
        &self,
        client: usize,
        want: usize,
        mode: Mode,
        token: u64,
        start: Instant,
        bound: Duration,
    ) -> usize {
        let mut l = self.ledger();
        let now = Instant::now();
        l.wants[want].end = Some(now);
        if let Some((newest, by, at)) = l.newest {
            if token <= newest {
                let line = format!(
                    "{} was granted token {token} at {}, not above token {newest} granted to {} at {}",
                    self.names[client],
                    self.offset(now),
                    self.names[by],
                    self.offset(at)
                );
                self.say(&format!("VIOLATION (fencing): {line}"));
                l.token_order.push(line);
            }
        }
        if !matches!(l.newest, Some((newest, _, _)) if newest >= token) {
            l.newest = Some((token, client, now));
        }
        l.ops.push(OpRec {
            client,
            kind: OpKind::Acquire(mode),
            start,
            end: now,
            outcome: Outcome::Ok,
            bound: Some(bound),
            valid_until: None,
            token: Some(token),
            note: None,
        });
        l.holds.push(HoldRec {
            client,
            token,
            granted: now,
            last_held: now,
            valid_until: None,
            ended: None,
        });
        if self.verbose {
            self.say(&format!(
                "{} holds the lock, token {token} ({})",
                self.names[client],
                mode.name()
            ));
        }
        l.holds.len() - 1
    }

    /// One sample of a hold, atomic with respect to every grant: `probe` says whether the
    /// client holds the lock (and the fence's deadline). Held: checks that no higher token
    /// was granted, and writes to the fenced store. Not held: the hold ends here (a loss).
    pub(crate) fn sample(
        &self,
        hold: usize,
        probe: impl FnOnce() -> (bool, Option<Instant>),
    ) -> bool {
        let mut l = self.ledger();
        let now = Instant::now();
        let (held, valid_until) = probe();
        let (client, token) = (l.holds[hold].client, l.holds[hold].token);
        if !held {
            l.holds[hold].ended = Some((now, false));
            return false;
        }
        let newer = l.newest.filter(|(newest, _, _)| *newest > token);
        if let Some((newer_token, newer_client, newer_granted)) = newer {
            match l.overlaps.last_mut() {
                Some(o) if o.client == client && o.token == token => {
                    o.last = now;
                    o.samples += 1;
                }
                _ => {
                    self.say(&format!(
                        "VIOLATION (mutual exclusion): {} believes it holds token {token} while \
                         token {newer_token} was granted to {} at {}",
                        self.names[client],
                        self.names[newer_client],
                        self.offset(newer_granted)
                    ));
                    l.overlaps.push(Overlap {
                        client,
                        token,
                        first: now,
                        last: now,
                        samples: 1,
                        newer_token,
                        newer_client,
                        newer_granted,
                    });
                }
            }
        }
        l.holds[hold].last_held = now;
        l.holds[hold].valid_until = valid_until;
        match l.store.write(token) {
            Ok(()) => {
                l.writes_accepted += 1;
                if let Some((newer_token, _, _)) = newer {
                    note_write(&mut l.stale_accepted, client, token, newer_token, now);
                }
            }
            Err(stale) => note_write(&mut l.writes_refused, client, token, stale.highest, now),
        }
        true
    }

    /// The client decided to release (before sending anything); returns the hold's deadline.
    pub(crate) fn releasing(&self, hold: usize) -> Option<Instant> {
        let mut l = self.ledger();
        l.holds[hold].ended = Some((Instant::now(), true));
        l.holds[hold].valid_until
    }

    /// A hold ended without a release (its loss was recorded by [`Shared::sample`]); `health`:
    /// what the client's `Etcd` handle knew of the members.
    pub(crate) fn lost(
        &self,
        hold: usize,
        mode: Mode,
        reason: Option<LostReason>,
        ttl: Duration,
        health: String,
    ) {
        let mut l = self.ledger();
        let h = l.holds[hold].clone();
        let end = h.ended.map_or_else(Instant::now, |(at, _)| at);
        // Without the loss event (an `acquire()` hold of a client with no subscription): the
        // fence turned invalid at its deadline (expired), or was withdrawn before it.
        let inferred = match (reason, h.valid_until) {
            (Some(_), _) | (None, None) => None,
            (None, Some(vu)) if end >= vu => Some("the deadline passed: expired"),
            (None, Some(_)) => Some("the fence was withdrawn before its deadline"),
        };
        let note = match inferred {
            Some(why) => format!("{why}; members: {health}"),
            None => format!("members: {health}"),
        };
        let op = OpRec {
            client: h.client,
            kind: OpKind::Lost(mode),
            // The renewals that failed: the lease before the loss.
            start: end.checked_sub(ttl).unwrap_or(h.granted).max(h.granted),
            end,
            outcome: Outcome::Lost(reason),
            bound: None,
            valid_until: h.valid_until,
            token: Some(h.token),
            note: Some(note),
        };
        self.print_error(&l, &op);
        l.ops.push(op);
    }

    pub(crate) fn op(
        &self,
        client: usize,
        kind: OpKind,
        start: Instant,
        outcome: Outcome,
        bound: Duration,
        valid_until: Option<Instant>,
    ) {
        let mut l = self.ledger();
        let end = Instant::now();
        let note = match (kind, &outcome, valid_until) {
            (OpKind::Release(_), Outcome::Err(_) | Outcome::Hung, Some(vu)) => Some(format!(
                "the hold was valid until {}{}",
                self.offset(vu),
                if end < vu {
                    ": the key was still ours"
                } else {
                    ""
                }
            )),
            _ => None,
        };
        let op = OpRec {
            client,
            kind,
            start,
            end,
            outcome,
            bound: Some(bound),
            valid_until,
            token: None,
            note,
        };
        if !matches!(op.outcome, Outcome::Ok) {
            self.print_error(&l, &op);
        } else if self.verbose {
            self.say(&format!("{} {kind}: ok", self.names[client]));
        }
        l.ops.push(op);
    }

    fn print_error(&self, l: &Ledger, op: &OpRec) {
        let waited = matches!(op.outcome, Outcome::Err(Error::WaitTimeout { .. }));
        if !self.verbose
            && (waited || self.errors_printed.fetch_add(1, Ordering::Relaxed) >= LIVE_ERROR_LINES)
        {
            if !waited && self.errors_printed.load(Ordering::Relaxed) == LIVE_ERROR_LINES + 1 {
                self.say("(more errors are counted, not printed; --verbose prints them all)");
            }
            return;
        }
        let during = match &l.current_fault {
            Some(f) => format!(" [during step {f}]"),
            None => String::new(),
        };
        self.say(&format!(
            "{} {}: {} after {:.2} s{during}{}",
            self.names[op.client],
            op.kind,
            outcome_text(&op.outcome),
            op.end.saturating_duration_since(op.start).as_secs_f64(),
            op.note
                .as_ref()
                .map_or_else(String::new, |n| format!(" ({n})"))
        ));
    }

    pub(crate) fn subscribed(&self, client: usize) {
        self.ledger().subscribers.insert(
            client,
            Subscriber {
                since: Instant::now(),
                events: Vec::new(),
                caught_up: None,
            },
        );
    }

    pub(crate) fn event(&self, client: usize, event: Event) {
        if let Some(s) = self.ledger().subscribers.get_mut(&client) {
            s.events.push((Instant::now(), event));
        }
    }

    /// Whether this subscriber has seen a `Locked` event with the newest granted token.
    pub(crate) fn caught_up(&self, client: usize) -> bool {
        let l = self.ledger();
        let Some((newest, _, _)) = l.newest else {
            return true;
        };
        l.subscribers.get(&client).is_some_and(|s| {
            s.events
                .iter()
                .any(|(_, e)| matches!(e, Event::Locked { token, .. } if *token >= newest))
        })
    }

    pub(crate) fn set_caught_up(&self, client: usize, caught_up: bool) {
        if let Some(s) = self.ledger().subscribers.get_mut(&client) {
            s.caught_up = Some(caught_up);
        }
    }
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Err(e) => format!("{} ({e})", error_type(e)),
        Outcome::Lost(Some(r)) => format!("Lost({r:?})"),
        Outcome::Lost(None) => "Lost(reason not observed)".into(),
        Outcome::Hung => "HUNG (abandoned)".into(),
    }
}

/// The error's type, for counts: `Timeout`, `Etcd 300`, ...
fn error_type(e: &Error) -> String {
    match e {
        Error::AlreadyLocked { .. } => "AlreadyLocked".into(),
        Error::LockNotOwned { .. } => "LockNotOwned".into(),
        Error::Etcd { code, .. } => format!("Etcd {code}"),
        Error::Transport { .. } => "Transport".into(),
        Error::Protocol { .. } => "Protocol".into(),
        Error::Timeout { .. } => "Timeout".into(),
        Error::LeaseExpired { .. } => "LeaseExpired".into(),
        Error::WaitTimeout { .. } => "WaitTimeout".into(),
        Error::Cancelled => "Cancelled".into(),
        Error::Destroyed => "Destroyed".into(),
        other => format!("other: {other:?}"),
    }
}

/// What a client's `Etcd` handle knows of the members, in its order: `m2 ok, m0 down (3
/// failures), m1 ok`.
pub(crate) fn health_text(
    members: &microlock_proto::Members,
    names: &[(String, String)],
) -> String {
    let now = Instant::now();
    (0..members.len())
        .map(|i| {
            let url = members.endpoint(i).as_str().trim_end_matches('/');
            let name = names
                .iter()
                .find(|(u, _)| u.trim_end_matches('/') == url)
                .map_or(url, |(_, n)| n.as_str());
            match (members.is_down(i, now), members.failures(i)) {
                (_, 0) => format!("{name} ok"),
                (true, f) => format!("{name} down ({f} failures)"),
                (false, f) => format!("{name} usable ({f} failures)"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stops the clients when dropped (also while unwinding from a panic of the nemesis).
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------------------------------
// The clients (written once, expanded per adapter)

/// What one client needs.
pub(crate) struct ClientCtx {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) endpoints: Vec<String>,
    /// `(client URL, "m0")` of every member, for messages.
    pub(crate) members: Vec<(String, String)>,
    pub(crate) key: String,
    pub(crate) seed: u64,
    pub(crate) rng: Rng,
    pub(crate) ttl: Duration,
    pub(crate) think: (Duration, Duration),
    pub(crate) short_hold: (Duration, Duration),
    pub(crate) long_hold: (Duration, Duration),
    pub(crate) long_hold_percent: u64,
    /// An acquire waits at most this long (then it is retried).
    pub(crate) acquire_timeout: Duration,
    pub(crate) subscribe: bool,
    /// See [`Options::plant_violation`].
    pub(crate) plant: bool,
    pub(crate) shared: Arc<Shared>,
}

macro_rules! chaos_client {
    ($ml:ident, $rt:path, $spawn:path) => {
        use std::time::{Duration, Instant};

        use $ml::{Config, Error, Etcd, LostReason, Microlock};
        use $rt as rt;

        use super::{
            ClientCtx, Mode, OpKind, Outcome, BOUND_SLACK, HANG_SLACK, MIN_WANT, RETRY_BACKOFF,
            TICK,
        };

        pub(crate) async fn run(ctx: ClientCtx) {
            let shared = ctx.shared.clone();
            let etcd = Etcd::new(&ctx.endpoints).expect("valid endpoints");
            let config = Config::new(&ctx.key, &ctx.name, ctx.ttl)
                .expect("valid config")
                .with_seed(ctx.seed);
            let lock = Microlock::with_config(&etcd, config).expect("valid config");
            let op_bound = lock.config().operation_timeout() + lock.config().request_timeout();
            if ctx.subscribe {
                let mut events = lock.events();
                let shared = shared.clone();
                let me = ctx.index;
                shared.subscribed(me);
                let _detached = $spawn(async move {
                    while let Some(event) = events.next().await {
                        shared.event(me, event);
                    }
                });
            }
            let mut rng = ctx.rng.clone();
            let mut plant = ctx.plant;
            loop {
                let think = rng.between(ctx.think.0, ctx.think.1);
                let mut mode = if rng.percent(50) {
                    Mode::Guard
                } else {
                    Mode::Acquire
                };
                let mut hold_for = if rng.percent(ctx.long_hold_percent) {
                    rng.between(ctx.long_hold.0, ctx.long_hold.1)
                } else {
                    rng.between(ctx.short_hold.0, ctx.short_hold.1)
                };
                let planted = std::mem::take(&mut plant);
                if planted {
                    // A client that ignores losses: no renewals, "held" for 2 TTL regardless.
                    mode = Mode::Acquire;
                    hold_for = ctx.ttl * 2;
                    shared.say(&format!("{}: PLANTED VIOLATION this round", ctx.name));
                }
                rt::sleep(think.min(shared.remaining())).await;
                if shared.remaining() < MIN_WANT {
                    break;
                }

                // Want the lock until an acquire returns it (retrying after errors).
                let want = shared.want_start(ctx.index);
                if mode == Mode::Acquire && !planted {
                    lock.set_auto_renew(true);
                }
                let mut guard = None;
                let mut token = None;
                while token.is_none() {
                    let remaining = shared.remaining();
                    if remaining < MIN_WANT {
                        break;
                    }
                    let wait = ctx.acquire_timeout.min(remaining - MIN_WANT / 2);
                    let bound = wait + op_bound + BOUND_SLACK;
                    let start = Instant::now();
                    let result =
                        match mode {
                            Mode::Guard => rt::timeout(bound + HANG_SLACK, lock.guard(wait))
                                .await
                                .map(|r| {
                                    r.map(|g| {
                                        let t = g.token();
                                        guard = Some(g);
                                        t
                                    })
                                }),
                            Mode::Acquire => rt::timeout(bound + HANG_SLACK, lock.acquire(wait))
                                .await
                                .map(|r| r.map(|fence| fence.token())),
                        };
                    match result {
                        Some(Ok(t)) => token = Some(t),
                        Some(Err(e)) => {
                            let waited = matches!(e, Error::WaitTimeout { .. });
                            shared.op(
                                ctx.index,
                                OpKind::Acquire(mode),
                                start,
                                Outcome::Err(e),
                                bound,
                                None,
                            );
                            if !waited {
                                rt::sleep(RETRY_BACKOFF).await;
                            }
                        }
                        None => shared.op(
                            ctx.index,
                            OpKind::Acquire(mode),
                            start,
                            Outcome::Hung,
                            bound,
                            None,
                        ),
                    }
                    if token.is_some() {
                        // Recorded at once: no await between the acquire's return and here.
                        let t = token.expect("set");
                        let hold = shared.granted(ctx.index, want, mode, t, start, bound);
                        hold_and_release(
                            &ctx,
                            &etcd,
                            &lock,
                            guard.take(),
                            mode,
                            hold,
                            hold_for,
                            op_bound,
                            planted,
                        )
                        .await;
                    }
                }
                if token.is_none() {
                    shared.want_gave_up(want);
                }
                if mode == Mode::Acquire {
                    lock.set_auto_renew(false);
                }
            }

            if ctx.subscribe {
                let deadline = Instant::now() + super::EVENTS_CATCH_UP;
                let mut caught_up = shared.caught_up(ctx.index);
                while !caught_up && Instant::now() < deadline {
                    rt::sleep(Duration::from_millis(100)).await;
                    caught_up = shared.caught_up(ctx.index);
                }
                shared.set_caught_up(ctx.index, caught_up);
            }
            lock.destroy();
        }

        #[allow(clippy::too_many_arguments)]
        async fn hold_and_release(
            ctx: &ClientCtx,
            etcd: &Etcd,
            lock: &Microlock,
            mut guard: Option<$ml::LockGuard<'_>>,
            mode: Mode,
            hold: usize,
            hold_for: Duration,
            op_bound: Duration,
            planted: bool,
        ) {
            let shared = &ctx.shared;
            let hold_until = Instant::now() + hold_for.min(shared.remaining());
            let mut reason: Option<LostReason> = None;
            let released = loop {
                let held = shared.sample(hold, || match &guard {
                    _ if planted => (true, None),
                    Some(g) => (g.is_held(), Some(g.fence().valid_until())),
                    None => (lock.is_held(), lock.fence().map(|f| f.valid_until())),
                });
                if !held {
                    break false;
                }
                if Instant::now() >= hold_until || shared.stopping() {
                    break true;
                }
                match guard.as_mut() {
                    Some(g) => {
                        if let Some(r) = rt::timeout(TICK, g.lost()).await {
                            reason = Some(r);
                        }
                    }
                    None => rt::sleep(TICK).await,
                }
            };
            if released {
                let valid_until = shared.releasing(hold);
                let bound = op_bound + BOUND_SLACK;
                let start = Instant::now();
                let result = match guard.take() {
                    Some(g) => rt::timeout(bound + HANG_SLACK, g.release()).await,
                    None => rt::timeout(bound + HANG_SLACK, lock.unlock()).await,
                };
                let outcome = match result {
                    Some(Ok(())) => Outcome::Ok,
                    Some(Err(e)) => Outcome::Err(e),
                    None => Outcome::Hung,
                };
                shared.op(
                    ctx.index,
                    OpKind::Release(mode),
                    start,
                    outcome,
                    bound,
                    valid_until,
                );
            } else {
                if let (Some(g), None) = (guard.as_mut(), reason) {
                    // is_held() turned false at the deadline; the loss event is due by then.
                    reason = rt::timeout(Duration::from_secs(1), g.lost()).await;
                }
                let health = super::health_text(&etcd.members(), &ctx.members);
                shared.lost(hold, mode, reason, ctx.ttl, health);
                // Dropping the guard releases best-effort in the background.
                drop(guard);
            }
        }
    };
}

mod tokio_client {
    chaos_client!(microlock_tokio, crate::rt::tokio, tokio::spawn);
}

mod async_std_client {
    chaos_client!(
        microlock_async_std,
        crate::rt::async_std,
        async_std::task::spawn
    );
}

// ------------------------------------------------------------------------------------------
// The run

/// Runs the schedule of `o` against a fresh 3-member cluster (`$ETCD_BIN`) and the clients,
/// prints the schedule, the nemesis's actions and the errors as they happen, and returns the
/// report (print it with `{}`; [`Report::passed`] says whether every checker passed).
///
/// # Panics
/// When the harness fails (etcd does not start, a restart fails): that is no lock violation.
pub fn run(o: &Options) -> Report {
    let schedule = schedule(o);
    println!(
        "chaos: seed {} for {} s; {} tokio + {} async-std clients on one lock, TTL {} s; \
         partitions {}; quorum-loss steps {}",
        o.seed,
        o.seconds,
        o.tokio_clients,
        o.async_std_clients,
        o.ttl.as_secs(),
        if o.partitions {
            "on"
        } else {
            "OFF (needs root and nft)"
        },
        if o.quorum_loss { "on" } else { "off" }
    );
    print!("{schedule}");

    let mut cluster = if o.partitions {
        EtcdCluster::start_partitionable(MEMBERS)
    } else {
        EtcdCluster::start(MEMBERS)
    };
    let version = cluster.members[0].version();
    let urls = cluster.client_urls();
    println!(
        "cluster: etcd {version} ({}), members {}",
        crate::etcd::etcd_binary().display(),
        urls.iter()
            .enumerate()
            .map(|(i, u)| format!("m{i} {u}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut names = Vec::new();
    for i in 0..o.tokio_clients {
        names.push(format!("tokio-{i}"));
    }
    for i in 0..o.async_std_clients {
        names.push(format!("async-std-{i}"));
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        stop_at: start + Duration::from_secs(o.seconds),
        stop: AtomicBool::new(false),
        verbose: o.verbose,
        names: names.clone(),
        ledger: Mutex::new(Ledger::default()),
        errors_printed: AtomicUsize::new(0),
    });
    let stopper = StopOnDrop(shared.clone());
    let key = format!("microlock-chaos/{}-{}", std::process::id(), o.seed);
    let root = Rng::new(o.seed);
    let mut threads = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let mut rng = root.fork(0x00c1_1e47 + index as u64);
        let mut endpoints = urls.clone();
        rng.shuffle(&mut endpoints);
        let tokio_side = index < o.tokio_clients;
        let ctx = ClientCtx {
            index,
            name: format!("chaos-{name}"),
            endpoints,
            members: urls
                .iter()
                .enumerate()
                .map(|(i, u)| (u.clone(), format!("m{i}")))
                .collect(),
            key: key.clone(),
            seed: rng.next_u64(),
            rng,
            ttl: o.ttl,
            think: o.think,
            short_hold: o.short_hold,
            long_hold: o.long_hold,
            long_hold_percent: o.long_hold_percent,
            acquire_timeout: o.free_wait_bound(),
            subscribe: index == 0 || index == o.tokio_clients,
            plant: o.plant_violation && index == 0,
            shared: shared.clone(),
        };
        if o.verbose {
            println!("client {name}: endpoints {:?}", ctx.endpoints);
        }
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if tokio_side {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime")
                        .block_on(tokio_client::run(ctx));
                } else {
                    async_std::task::block_on(async_std_client::run(ctx));
                }
            })
            .expect("spawn a client thread");
        threads.push((name.clone(), thread));
    }

    let (skipped, harness_failure) = nemesis(&mut cluster, &schedule, &shared, o);
    if harness_failure.is_some() {
        shared.stop.store(true, Ordering::Relaxed);
    }
    while !shared.stopping() {
        std::thread::sleep(Duration::from_millis(50));
    }
    shared.say("run over: clients wind down");

    // Clients end within their last call's bound and the subscribers' catch-up.
    let join_deadline = Instant::now() + Duration::from_secs(60);
    let mut stuck = Vec::new();
    for (name, thread) in threads {
        while !thread.is_finished() && Instant::now() < join_deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if thread.is_finished() {
            if thread.join().is_err() {
                stuck.push(format!("client {name} panicked"));
            }
        } else {
            stuck.push(format!(
                "client {name} did not finish within 60 s of the run's end"
            ));
        }
    }
    drop(stopper);
    let end = Instant::now();
    let report = {
        let l = shared.ledger();
        analyse(
            o,
            &shared,
            &l,
            end,
            &version,
            skipped,
            harness_failure,
            stuck,
        )
    };
    drop(cluster);
    report
}

/// Runs the schedule; returns how many steps were skipped (out of time) and a harness failure
/// (the cluster did not recover), if any.
fn nemesis(
    cluster: &mut EtcdCluster,
    schedule: &Schedule,
    shared: &Shared,
    o: &Options,
) -> (usize, Option<String>) {
    // Steps run late (each waits for the recovery from the previous one): one may still start
    // if it ends (by the schedule's estimate) before the second half of the cool-down.
    let faults_end_hard =
        shared.start + Duration::from_secs(o.seconds).saturating_sub(o.cooldown / 2);
    let mut skipped = 0;
    let total = schedule.steps.len();
    for (n, step) in schedule.steps.iter().enumerate() {
        let due = shared.start + step.at;
        while Instant::now() < due && !shared.stopping() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if shared.stopping() {
            skipped += total - n;
            break;
        }
        if Instant::now() + step.hold + RECOVERY_ESTIMATE > faults_end_hard {
            shared.say(&format!(
                "step {}/{total} skipped: out of time (real offsets drifted): {step}",
                n + 1
            ));
            skipped += 1;
            continue;
        }
        let members = resolve(cluster, &step.targets, shared);
        let roles: Vec<String> = members
            .iter()
            .map(|&(i, leader)| format!("m{i}{}", if leader { " (leader)" } else { "" }))
            .collect();
        let label = format!(
            "{}/{total} [{}] on {}",
            n + 1,
            step.kind(),
            roles.join(" + ")
        );
        let injected = Instant::now();
        {
            let mut l = shared.ledger();
            l.current_fault = Some(label.clone());
            l.faults.push(FaultRec {
                label: label.clone(),
                kind: step.kind(),
                quorum_loss: step.quorum_loss(),
                injected,
                healed: None,
                recovered: None,
            });
        }
        shared.say(&format!(
            "step {label}: {step} (virtual +{:.1} s)",
            step.at.as_secs_f64()
        ));
        for &(i, _) in &members {
            match step.action {
                Action::Kill => cluster.members[i].kill(),
                Action::Pause => cluster.members[i].pause(),
                Action::Partition => cluster.partition(i),
                Action::Restart => cluster.members[i].restart(),
            }
        }
        let hold_until = Instant::now() + step.hold;
        while Instant::now() < hold_until {
            std::thread::sleep(Duration::from_millis(20));
        }
        if step.action != Action::Restart {
            for &(i, _) in &members {
                match step.action {
                    Action::Kill => cluster.members[i].restart(),
                    Action::Pause => cluster.members[i].resume(),
                    Action::Partition => cluster.heal(i),
                    Action::Restart => {}
                }
            }
        }
        let healed = Instant::now();
        let recovered = wait_recovered(cluster);
        let mut l = shared.ledger();
        l.current_fault = None;
        let rec = l.faults.last_mut().expect("pushed above");
        rec.healed = Some(healed);
        match recovered {
            Ok(at) => {
                rec.recovered = Some(at);
                drop(l);
                shared.say(&format!(
                    "step {}/{total}: healed after {:.1} s; every member serves quorum reads \
                     again {:.1} s later",
                    n + 1,
                    healed.duration_since(injected).as_secs_f64(),
                    at.duration_since(healed).as_secs_f64()
                ));
            }
            Err(e) => {
                drop(l);
                shared.say(&format!("HARNESS FAILURE: {e}"));
                return (skipped + total - n - 1, Some(e));
            }
        }
    }
    (skipped, None)
}

/// The members a step hits, and whether each was the leader when resolved.
fn resolve(cluster: &EtcdCluster, targets: &[Target], shared: &Shared) -> Vec<(usize, bool)> {
    let needs_leader = targets.iter().any(|t| !matches!(t, Target::Member(_)));
    let leader = if needs_leader {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = cluster.leader() {
                break Some(l);
            }
            if Instant::now() >= deadline {
                shared.say("no member says it leads after 10 s; faulting m0 instead");
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    } else {
        None
    };
    let mut out: Vec<usize> = Vec::new();
    for t in targets {
        let i = match *t {
            Target::Member(i) => i,
            Target::Leader => leader.unwrap_or(0),
            Target::Follower(k) => {
                let others: Vec<usize> = (0..MEMBERS)
                    .filter(|&j| Some(j) != leader.or(Some(0)) && !out.contains(&j))
                    .collect();
                others[k % others.len()]
            }
        };
        if !out.contains(&i) {
            out.push(i);
        }
    }
    let leader_now = if needs_leader {
        leader
    } else {
        cluster.leader()
    };
    out.into_iter()
        .map(|i| (i, Some(i) == leader_now))
        .collect()
}

/// Waits until every member serves a quorum read; returns when, or why not.
fn wait_recovered(cluster: &EtcdCluster) -> Result<Instant, String> {
    let started = Instant::now();
    loop {
        let serving = cluster
            .members
            .iter()
            .all(|m| matches!(m.quorum_read(Duration::from_secs(1)), Ok(r) if r.status == 200));
        if serving {
            return Ok(Instant::now());
        }
        if started.elapsed() > RECOVERY_BOUND {
            let states: Vec<String> = cluster
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    format!(
                        "m{i}: {}",
                        match m.quorum_read(Duration::from_secs(1)) {
                            Ok(r) => format!("HTTP {}", r.status),
                            Err(e) => e.to_string(),
                        }
                    )
                })
                .collect();
            return Err(format!(
                "the cluster does not serve quorum reads on every member {RECOVERY_BOUND:?} \
                 after a heal ({})",
                states.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------------------------------
// Analysis

/// One checker's verdict.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// `(1) fencing`, ...
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// A one-line summary.
    pub summary: String,
    /// The violations (the first 20).
    pub violations: Vec<String>,
}

/// What a run saw, and the checkers' verdicts.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The run's length.
    pub seconds: u64,
    /// etcd's version.
    pub etcd_version: String,
    /// Faults injected, by kind.
    pub faults_by_kind: BTreeMap<String, usize>,
    /// Steps of the schedule not run (out of time).
    pub skipped_steps: usize,
    /// The quorum-loss windows, as offsets from the start.
    pub quorum_loss_windows: Vec<(Duration, Duration)>,
    /// Acquisitions per client.
    pub acquisitions: Vec<(String, usize)>,
    /// Writes the fenced store accepted.
    pub fenced_writes: u64,
    /// Release-to-next-acquire delays where someone waited: (delay, quorum held throughout).
    pub wake_ups: Vec<(Duration, bool)>,
    /// Per client: the longest quorum-held wait, and the longest quorum-held wait with the
    /// lock free.
    pub waits: Vec<(String, Duration, Duration)>,
    /// Errors seen by callers while quorum held (lines).
    pub errors_quorum_held: Vec<String>,
    /// Errors seen by callers during quorum loss, by type.
    pub errors_quorum_loss: BTreeMap<String, usize>,
    /// Timeouts of waiting acquires: while quorum held, during quorum loss, cut short by the
    /// run's end.
    pub wait_timeouts: (usize, usize, usize),
    /// The checkers.
    pub verdicts: Vec<Verdict>,
    /// The harness failed (the cluster did not recover): not a lock verdict, but a failure.
    pub harness_failure: Option<String>,
    /// The command that replays the run.
    pub replay: String,
}

impl Report {
    /// Whether every checker passed and the harness did not fail.
    pub fn passed(&self) -> bool {
        self.harness_failure.is_none() && self.verdicts.iter().all(|v| v.passed)
    }
}

/// `[a, b]` minus the union of `cuts`: the parts left, in order.
fn subtract(a: Instant, b: Instant, cuts: &[(Instant, Instant)]) -> Vec<(Instant, Instant)> {
    let mut cuts: Vec<(Instant, Instant)> = cuts
        .iter()
        .copied()
        .filter(|&(s, e)| s < b && e > a)
        .collect();
    cuts.sort();
    let mut out = Vec::new();
    let mut at = a;
    for (s, e) in cuts {
        if s > at {
            out.push((at, s.min(b)));
        }
        at = at.max(e);
        if at >= b {
            break;
        }
    }
    if at < b {
        out.push((at, b));
    }
    out
}

fn total(parts: &[(Instant, Instant)]) -> Duration {
    parts
        .iter()
        .map(|&(s, e)| e.saturating_duration_since(s))
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn analyse(
    o: &Options,
    shared: &Shared,
    l: &Ledger,
    end: Instant,
    version: &str,
    skipped: usize,
    harness_failure: Option<String>,
    stuck: Vec<String>,
) -> Report {
    let names = &shared.names;
    let off = |t: Instant| shared.offset(t);
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let ql: Vec<(Instant, Instant)> = l
        .faults
        .iter()
        .filter(|f| f.quorum_loss)
        .map(|f| (f.injected, f.recovered.unwrap_or(end)))
        .collect();
    let in_ql = |a: Instant, b: Instant| ql.iter().any(|&(s, e)| a <= e && b >= s);
    let fault_at = |a: Instant, b: Instant| {
        l.faults
            .iter()
            .filter(|f| a <= f.recovered.unwrap_or(end) && b >= f.injected)
            .map(|f| format!("step {}", f.label))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut verdicts = Vec::new();
    let verdict = |name: &str, summary: String, violations: Vec<String>| Verdict {
        name: name.to_string(),
        passed: violations.is_empty(),
        summary,
        violations: violations.into_iter().take(20).collect(),
    };

    // (1) fencing
    let mut v1 = Vec::new();
    if let Some(w) = l.store.accepted.windows(2).find(|w| w[1] < w[0]) {
        v1.push(format!(
            "the store's accepted tokens decrease: {} then {}",
            w[0], w[1]
        ));
    }
    let count = |runs: &[WriteRun]| runs.iter().map(|r| r.count).sum::<u64>();
    v1.extend(l.stale_accepted.iter().map(|r| {
        format!(
            "the store accepted {} write(s) of {} with token {} from {} to {}, after token {} \
             was granted",
            r.count,
            names[r.client],
            r.token,
            off(r.first),
            off(r.last),
            r.other
        )
    }));
    v1.extend(l.writes_refused.iter().map(|r| {
        format!(
            "the store refused {} write(s) of {} with token {} from {} to {} (highest accepted \
             {}): it wrote while believing it held the lock with a superseded token",
            r.count,
            names[r.client],
            r.token,
            off(r.first),
            off(r.last),
            r.other
        )
    }));
    v1.extend(l.token_order.iter().cloned());
    verdicts.push(verdict(
        "(1) fencing",
        format!(
            "{} writes accepted, {} refused, {} accepted with a superseded token; grant tokens \
             {}",
            l.writes_accepted,
            count(&l.writes_refused),
            count(&l.stale_accepted),
            if l.token_order.is_empty() {
                "strictly increase"
            } else {
                "DO NOT strictly increase"
            }
        ),
        v1,
    ));

    // (2) mutual exclusion
    let v2: Vec<String> = l
        .overlaps
        .iter()
        .map(|ov| {
            format!(
                "{} believed it held token {} from {} to {} ({} samples) while token {} had \
                 been granted to {} at {}{}",
                names[ov.client],
                ov.token,
                off(ov.first),
                off(ov.last),
                ov.samples,
                ov.newer_token,
                names[ov.newer_client],
                off(ov.newer_granted),
                match fault_at(ov.newer_granted, ov.last) {
                    f if f.is_empty() => String::new(),
                    f => format!(" [{f}]"),
                }
            )
        })
        .collect();
    let mut holds = l.holds.clone();
    holds.sort_by_key(|h| h.granted);
    let closest = holds
        .windows(2)
        .map(|w| {
            let prev_end = w[0].last_held;
            (
                w[1].granted.saturating_duration_since(prev_end),
                prev_end > w[1].granted,
                w[1].granted,
            )
        })
        .min_by_key(|&(gap, overlapping, _)| (!overlapping, gap));
    verdicts.push(verdict(
        "(2) mutual exclusion",
        format!(
            "{} overlaps (allowed: 0 ms); closest hand-over {}",
            l.overlaps.len(),
            match closest {
                Some((gap, false, at)) => format!(
                    "{:.1} ms (last held sample to the next grant, at {})",
                    gap.as_secs_f64() * 1e3,
                    off(at)
                ),
                Some((_, true, at)) => format!("OVERLAPPING at {}", off(at)),
                None => "n/a".into(),
            }
        ),
        v2,
    ));

    // (3) progress
    let belief = |h: &HoldRec| (h.granted, h.ended.map_or(end, |(at, _)| at));
    let mut waits: Vec<(String, Duration, Duration)> = names
        .iter()
        .map(|n| (n.clone(), Duration::ZERO, Duration::ZERO))
        .collect();
    let mut v3 = Vec::new();
    // The want with the longest free wait: (free wait, client, start, end).
    let mut longest_free: Option<(Duration, usize, Instant, Instant)> = None;
    for w in &l.wants {
        let w_end = w.end.unwrap_or(end);
        let qh = subtract(w.start, w_end, &ql);
        let mut cuts = ql.clone();
        cuts.extend(l.holds.iter().filter(|h| h.client != w.client).map(belief));
        let free = subtract(w.start, w_end, &cuts);
        let (qh, free) = (total(&qh), total(&free));
        let entry = &mut waits[w.client];
        entry.1 = entry.1.max(qh);
        entry.2 = entry.2.max(free);
        if !matches!(longest_free, Some((d, ..)) if d >= free) {
            longest_free = Some((free, w.client, w.start, w_end));
        }
        if free > o.free_wait_bound() {
            v3.push(format!(
                "{} wanted the lock from {} to {}: {} of quorum-held time with no other holder \
                 (bound {}){}",
                names[w.client],
                off(w.start),
                off(w_end),
                secs(free),
                secs(o.free_wait_bound()),
                match fault_at(w.start, w_end) {
                    f if f.is_empty() => String::new(),
                    f => format!(" [{f}]"),
                }
            ));
        }
        if qh > o.starvation_bound() {
            v3.push(format!(
                "{} wanted the lock from {} to {}: {} of quorum-held time (bound {})",
                names[w.client],
                off(w.start),
                off(w_end),
                secs(qh),
                secs(o.starvation_bound())
            ));
        }
    }
    verdicts.push(verdict(
        "(3) progress",
        format!(
            "longest quorum-held wait with the lock free {} (bound {}{}), longest quorum-held \
             wait {} (bound {})",
            secs(waits.iter().map(|w| w.2).max().unwrap_or_default()),
            secs(o.free_wait_bound()),
            match longest_free {
                Some((_, client, a, b)) => format!(
                    "; {} wanted it {}..{}{}",
                    names[client],
                    off(a),
                    off(b),
                    match fault_at(a, b) {
                        f if f.is_empty() => String::new(),
                        f => format!(" [{f}]"),
                    }
                ),
                None => String::new(),
            },
            secs(waits.iter().map(|w| w.1).max().unwrap_or_default()),
            secs(o.starvation_bound())
        ),
        v3,
    ));

    // (4) errors
    let lost_reason = |op: &OpRec| -> Option<LostReason> {
        if let Outcome::Lost(Some(r)) = op.outcome {
            return Some(r);
        }
        let token = op.token?;
        l.subscribers
            .get(&op.client)?
            .events
            .iter()
            .find_map(|(_, e)| match e {
                Event::Lost { token: t, reason } if *t == token => Some(*reason),
                _ => None,
            })
    };
    let mut errors_qh = Vec::new();
    let mut errors_ql: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    let mut slow = Vec::new();
    let mut wait_timeouts = (0, 0, 0);
    for op in &l.ops {
        let took = op.end.saturating_duration_since(op.start);
        if let Some(bound) = op.bound {
            if took > bound {
                slow.push(format!(
                    "{} {} took {} at {} (bound {}): {}",
                    names[op.client],
                    op.kind,
                    secs(took),
                    off(op.start),
                    secs(bound),
                    outcome_text(&op.outcome)
                ));
            }
        }
        if matches!(op.outcome, Outcome::Ok) {
            continue;
        }
        let during_ql = in_ql(op.start, op.end);
        let before_deadline = op.valid_until.is_some_and(|vu| op.end < vu);
        let (label, is_wrong) = match &op.outcome {
            Outcome::Ok => unreachable!("skipped above"),
            Outcome::Err(e) => {
                let wrong = match e {
                    Error::AlreadyLocked { .. } => true,
                    Error::LockNotOwned { .. } => before_deadline,
                    Error::Timeout { .. }
                    | Error::Transport { .. }
                    | Error::Etcd { .. }
                    | Error::WaitTimeout { .. }
                    | Error::LeaseExpired { .. } => false,
                    _ => true,
                };
                (error_type(e), wrong)
            }
            Outcome::Lost(_) => match lost_reason(op) {
                Some(LostReason::Expired) => ("Lost(Expired)".to_string(), false),
                Some(r) => (format!("Lost({r:?})"), before_deadline),
                // No event seen: `is_held()` turned false at the deadline, or before it.
                None if before_deadline => ("Lost(before its deadline)".to_string(), true),
                None => ("Lost(Expired, inferred)".to_string(), false),
            },
            Outcome::Hung => ("Hung".to_string(), true),
        };
        let line = format!(
            "{} {} at {}..{}: {}{}{}{}",
            names[op.client],
            op.kind,
            off(op.start),
            off(op.end),
            match &op.outcome {
                Outcome::Lost(_) => label.clone(),
                other => outcome_text(other),
            },
            if before_deadline {
                " (before the hold's validity deadline)"
            } else {
                ""
            },
            match fault_at(op.start, op.end) {
                f if f.is_empty() => String::new(),
                f => format!(" [{f}]"),
            },
            op.note
                .as_ref()
                .map_or_else(String::new, |n| format!(" ({n})"))
        );
        if is_wrong {
            wrong.push(line.clone());
        }
        if label == "WaitTimeout" {
            // A wait shortened to end with the run is no finding.
            if op.end + MIN_WANT >= shared.stop_at {
                wait_timeouts.2 += 1;
            } else if during_ql {
                wait_timeouts.1 += 1;
            } else {
                wait_timeouts.0 += 1;
            }
            continue;
        }
        if during_ql {
            *errors_ql.entry(label).or_default() += 1;
        } else {
            errors_qh.push(line);
        }
    }
    let mut v4 = Vec::new();
    v4.extend(errors_qh.iter().map(|e| format!("while quorum held: {e}")));
    v4.extend(
        wrong
            .iter()
            .map(|e| format!("wrong answer or untyped: {e}")),
    );
    v4.extend(slow.iter().map(|e| format!("over its bound: {e}")));
    v4.extend(stuck);
    verdicts.push(verdict(
        "(4) errors",
        format!(
            "{} while quorum held, {} during quorum loss ({} wrong or untyped), {} calls over \
             their bound",
            errors_qh.len(),
            errors_ql.values().sum::<usize>(),
            wrong.len(),
            slow.len()
        ),
        v4,
    ));

    // (5) events
    let mut v5 = Vec::new();
    let mut seen_total = 0;
    for (client, s) in &l.subscribers {
        let locked: Vec<u64> = s
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Locked { token, .. } => Some(*token),
                _ => None,
            })
            .collect();
        seen_total += locked.len();
        if let Some(w) = locked.windows(2).find(|w| w[1] <= w[0]) {
            v5.push(format!(
                "{} saw Locked token {} after token {} (replayed or reordered)",
                names[*client], w[1], w[0]
            ));
        }
        let max_seen = locked.iter().copied().max().unwrap_or(0);
        let missed: Vec<u64> = l
            .holds
            .iter()
            .filter(|h| h.granted > s.since && h.token < max_seen && !locked.contains(&h.token))
            .map(|h| h.token)
            .collect();
        if !missed.is_empty() {
            v5.push(format!(
                "{} never saw Locked for granted tokens {missed:?} (it saw later ones)",
                names[*client]
            ));
        }
        if s.caught_up == Some(false) {
            v5.push(format!(
                "{} did not see the last grant (token {}) within {} after the run (its last \
                 Locked: {max_seen})",
                names[*client],
                l.newest.map_or(0, |n| n.0),
                secs(EVENTS_CATCH_UP)
            ));
        }
    }
    verdicts.push(verdict(
        "(5) events",
        format!(
            "{} subscribers saw {seen_total} Locked events",
            l.subscribers.len()
        ),
        v5,
    ));

    // Statistics.
    let mut faults_by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for f in &l.faults {
        *faults_by_kind.entry(f.kind.clone()).or_default() += 1;
    }
    let acquisitions = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), l.holds.iter().filter(|h| h.client == i).count()))
        .collect();
    let mut wake_ups = Vec::new();
    for h in &l.holds {
        let Some((released_at, true)) = h.ended else {
            continue;
        };
        let someone_waits = l.wants.iter().any(|w| {
            w.client != h.client
                && w.start < released_at
                && !matches!(w.end, Some(e) if e <= released_at)
        });
        if !someone_waits {
            continue;
        }
        if let Some(next) = holds.iter().find(|n| n.granted > released_at) {
            wake_ups.push((
                next.granted.duration_since(released_at),
                !in_ql(released_at, next.granted),
            ));
        }
    }
    Report {
        seed: o.seed,
        seconds: o.seconds,
        etcd_version: version.to_string(),
        faults_by_kind,
        skipped_steps: skipped,
        quorum_loss_windows: ql
            .iter()
            .map(|&(s, e)| (s - shared.start, e - shared.start))
            .collect(),
        acquisitions,
        fenced_writes: l.writes_accepted,
        wake_ups,
        waits,
        errors_quorum_held: errors_qh,
        errors_quorum_loss: errors_ql,
        wait_timeouts,
        verdicts,
        harness_failure,
        replay: o.replay_command(),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        writeln!(
            f,
            "== chaos summary: seed {}, {} s, etcd {}, {MEMBERS} members ==",
            self.seed, self.seconds, self.etcd_version
        )?;
        let faults: Vec<String> = self
            .faults_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "faults injected: {} ({} total{})",
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(", ")
            },
            self.faults_by_kind.values().sum::<usize>(),
            if self.skipped_steps > 0 {
                format!(", {} steps skipped: out of time", self.skipped_steps)
            } else {
                String::new()
            }
        )?;
        let mut windows = String::new();
        for (s, e) in &self.quorum_loss_windows {
            let _ = write!(
                windows,
                " +{:.1}..+{:.1} s",
                s.as_secs_f64(),
                e.as_secs_f64()
            );
        }
        writeln!(
            f,
            "quorum-loss windows (first fault to every member serving again): {}{windows}",
            self.quorum_loss_windows.len()
        )?;
        let acq: Vec<String> = self
            .acquisitions
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        writeln!(
            f,
            "acquisitions per client: {} (total {})",
            acq.join(", "),
            self.acquisitions.iter().map(|a| a.1).sum::<usize>()
        )?;
        let waits: Vec<String> = self
            .waits
            .iter()
            .map(|(n, qh, free)| format!("{n} {} ({} free)", secs(*qh), secs(*free)))
            .collect();
        writeln!(
            f,
            "longest quorum-held wait per client (of which the lock was free): {}",
            waits.join(", ")
        )?;
        writeln!(f, "fenced writes accepted: {}", self.fenced_writes)?;
        let mut all: Vec<Duration> = self.wake_ups.iter().map(|w| w.0).collect();
        all.sort();
        let qh_max = self
            .wake_ups
            .iter()
            .filter(|w| w.1)
            .map(|w| w.0)
            .max()
            .unwrap_or_default();
        writeln!(
            f,
            "wake-ups (a release to the next acquire, someone waiting): {}, median {}, max {} \
             (max while quorum held {})",
            all.len(),
            secs(all.get(all.len() / 2).copied().unwrap_or_default()),
            secs(all.last().copied().unwrap_or_default()),
            secs(qh_max)
        )?;
        writeln!(
            f,
            "errors seen by callers while quorum held: {}",
            self.errors_quorum_held.len()
        )?;
        for e in self.errors_quorum_held.iter().take(10) {
            writeln!(f, "    {e}")?;
        }
        if self.errors_quorum_held.len() > 10 {
            writeln!(f, "    ... {} more", self.errors_quorum_held.len() - 10)?;
        }
        let ql: Vec<String> = self
            .errors_quorum_loss
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "errors seen by callers during quorum loss: {}{}",
            self.errors_quorum_loss.values().sum::<usize>(),
            if ql.is_empty() {
                String::new()
            } else {
                format!(" ({})", ql.join(", "))
            }
        )?;
        writeln!(
            f,
            "waiting acquires that timed out (WaitTimeout, judged by checker 3): {} while quorum \
             held, {} during quorum loss, {} cut short by the run's end",
            self.wait_timeouts.0, self.wait_timeouts.1, self.wait_timeouts.2
        )?;
        writeln!(f, "checkers:")?;
        for v in &self.verdicts {
            writeln!(
                f,
                "  {:<22} {}  {}",
                v.name,
                if v.passed { "PASS" } else { "FAIL" },
                v.summary
            )?;
            for line in &v.violations {
                writeln!(f, "      {line}")?;
            }
        }
        if let Some(h) = &self.harness_failure {
            writeln!(f, "HARNESS FAILURE: {h}")?;
        }
        writeln!(
            f,
            "verdict: {}   (replay: {}: the same schedule and workload; real timing differs)",
            if self.passed() { "PASS" } else { "FAIL" },
            self.replay
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_a_pure_function_of_the_seed() {
        let o = Options {
            partitions: true,
            ..Options::new(600, 7)
        };
        assert_eq!(schedule(&o), schedule(&o));
        let other = Options {
            partitions: true,
            ..Options::new(600, 8)
        };
        assert_ne!(schedule(&o), schedule(&other));
        let s = schedule(&o);
        // Long enough for several decks: every kind is there, steps do not overlap, and the
        // last one ends before the cool-down.
        let kinds: std::collections::BTreeSet<String> = s
            .steps
            .iter()
            .map(|st| st.kind().split(' ').next().unwrap().to_string())
            .collect();
        for k in ["kill", "leader-kill", "restart", "quorum-loss"] {
            assert!(kinds.contains(k), "{k} missing from {kinds:?}");
        }
        assert!(kinds.iter().any(|k| k.contains("pause")), "{kinds:?}");
        assert!(kinds.iter().any(|k| k.contains("partition")), "{kinds:?}");
        for w in s.steps.windows(2) {
            assert!(w[0].at + w[0].hold + RECOVERY_ESTIMATE <= w[1].at, "{s}");
        }
        let last = s.steps.last().unwrap();
        assert!(last.at + last.hold + RECOVERY_ESTIMATE <= Duration::from_secs(600) - o.cooldown);
        // Without partitions or quorum loss, none are scheduled.
        let plain = schedule(&Options {
            partitions: false,
            quorum_loss: false,
            ..Options::new(600, 7)
        });
        assert!(plain
            .steps
            .iter()
            .all(|st| st.action != Action::Partition && !st.quorum_loss()));
    }

    #[test]
    fn subtract_leaves_the_uncovered_parts() {
        let t0 = Instant::now();
        let t = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(subtract(t(0), t(10), &[]), vec![(t(0), t(10))]);
        assert_eq!(
            subtract(t(0), t(10), &[(t(2), t(3)), (t(2), t(4)), (t(8), t(12))]),
            vec![(t(0), t(2)), (t(4), t(8))]
        );
        assert_eq!(subtract(t(5), t(6), &[(t(0), t(10))]), vec![]);
        assert_eq!(
            total(&subtract(t(0), t(10), &[(t(1), t(2))])),
            Duration::from_secs(9)
        );
    }
}
