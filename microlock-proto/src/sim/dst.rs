//! Deterministic simulation of microlock clients contending for one lock on a simulated etcd,
//! through a faulty network, with drifting clocks, pauses and crashes — the test is the
//! scheduler, and a seed reproduces everything.
//!
//! [`run`] plays one world for a seed: 2–8 [`Lock`] machines doing waiting acquires with
//! auto-renew and fenced writes to a simulated resource, a [`SimEtcd`], a network that delays,
//! reorders, loses and duplicates requests, loses replies *after* etcd applied them, cuts
//! clients off (partitions) and closes watches; per-client clocks drift within a bound; clients
//! pause (like `SIGSTOP`) and crash. Faults stop at a heal time. Checkers run after every step:
//!
//! - (a) at every instant at most one client has `is_held(its local now)`;
//! - (b) the fenced resource never accepts a token lower than one it accepted;
//! - (c) tokens strictly increase across successive acquisitions;
//! - (d) no silent stall: a busy, holding or watching machine has a request out or a timer;
//! - (f) liveness: after the faults heal, some waiter acquires within the TTL + a bound.
//!
//! (e) — same seed, same trace — is checked by running twice and comparing
//! [`Report::trace_hash`].
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
use crate::sim::etcd::{Reply, SimEtcd};
use crate::{Completion, Config, Event, Lock, Outcome, RequestId};

/// Everything a world is made of; [`Params::from_seed`] derives one from a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Number of clients (2–8).
    pub clients: usize,
    /// The lock TTL.
    pub ttl: Duration,
    /// The safety margin of the clients' validity deadline.
    pub margin: Duration,
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
    /// Longest pause.
    pub max_pause: Duration,
    /// Number of crashes (a client loses all state and restarts).
    pub crashes: usize,
    /// Number of times etcd closes every watch (empty 200).
    pub watch_closes: usize,
    /// Number of quorum-loss windows.
    pub quorum_losses: usize,
    /// When faults stop.
    pub heal_at: Duration,
    /// When the world ends.
    pub end_at: Duration,
}

impl Params {
    /// A world derived from `seed`: the number of clients, faults and their intensity.
    pub fn from_seed(seed: u64) -> Params {
        let mut rng = Rng::new(seed ^ 0x5eed_5eed_5eed_5eed);
        let pick = |rng: &mut Rng, lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo + 1);
        let ttl = Duration::from_secs(pick(&mut rng, 1, 4));
        let heal_at = Duration::from_secs(pick(&mut rng, 10, 30));
        Params {
            clients: pick(&mut rng, 2, 8) as usize,
            ttl,
            margin: ttl / 10,
            drift_ppm: pick(&mut rng, 0, 20_000), // up to 2 %: well inside a 10 % margin
            latency: (
                Duration::from_micros(pick(&mut rng, 100, 2_000)),
                Duration::from_millis(pick(&mut rng, 3, 300)),
            ),
            request_loss: pick(&mut rng, 0, 10) as f64 / 100.0,
            reply_loss: pick(&mut rng, 0, 10) as f64 / 100.0,
            duplication: pick(&mut rng, 0, 5) as f64 / 100.0,
            partitions: pick(&mut rng, 0, 3) as usize,
            pauses: pick(&mut rng, 0, 3) as usize,
            max_pause: ttl * 3,
            crashes: pick(&mut rng, 0, 2) as usize,
            watch_closes: pick(&mut rng, 0, 3) as usize,
            quorum_losses: pick(&mut rng, 0, 1) as usize,
            heal_at,
            end_at: heal_at + ttl * 3 + Duration::from_secs(10),
        }
    }
}

/// A checker's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which checker: `a` … `f`.
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
    /// Every checker finding (empty: the run is clean).
    pub violations: Vec<Violation>,
    /// A hash of the whole trace: the same seed gives the same hash.
    pub trace_hash: u64,
    /// The last lines of the trace.
    pub trace_tail: Vec<String>,
    /// The trace lines leading to the first violation.
    pub before_violation: Vec<String>,
    /// Successful acquisitions.
    pub acquisitions: usize,
    /// Writes the fenced resource accepted / refused.
    pub writes: (usize, usize),
    /// Simulation steps.
    pub steps: usize,
}

impl Report {
    /// A human-readable account: seed, parameters, violations, trace tail.
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
            let _ = writeln!(s, "VIOLATION ({}) at {:?}: {}", v.check, v.at, v.what);
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
}

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

struct Client {
    lock: Lock,
    style: Style,
    /// Bumped on crash: replies and timers of an earlier incarnation are dropped.
    incarnation: u32,
    /// Clock rate error in ppm (signed).
    drift_ppm: i64,
    doing: Doing,
    paused_until: Option<Duration>,
    cut_off_until: Option<Duration>,
    timer_generation: u64,
    /// Requests out (request id → global id), for stall checks and cancels.
    out: BTreeMap<u64, u64>,
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
    /// A request reaches etcd.
    AtEtcd {
        global: u64,
        client: usize,
        incarnation: u32,
        rid: u64,
        request: Request<Vec<u8>>,
        reply_lost: bool,
    },
    /// A reply reaches a client.
    AtClient {
        client: usize,
        incarnation: u32,
        rid: u64,
        reply: Result<Response<Vec<u8>>, String>,
    },
    /// etcd's expiry ticks.
    EtcdTick,
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
    CloseWatches,
    QuorumLoss {
        until: Duration,
    },
    QuorumBack,
}

struct World {
    p: Params,
    rng: Rng,
    base: Instant,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: BTreeMap<u64, Ev>,
    etcd: SimEtcd,
    clients: Vec<Client>,
    next_global: u64,
    /// Parked watches: global id → (client, incarnation, rid, reply lost).
    parked: BTreeMap<u64, (usize, u32, u64, bool)>,
    highest_accepted: Option<u64>,
    last_token: Option<u64>,
    violations: Vec<Violation>,
    trace_hash: u64,
    tail: VecDeque<String>,
    before_violation: Vec<String>,
    acquisitions: usize,
    acquisitions_after_heal: usize,
    wanted_after_heal: bool,
    writes: (usize, usize),
    steps: usize,
}

const TAIL: usize = 400;

/// Plays the world `params` describes with randomness from `seed`. `epoch` is the simulated
/// time zero; only offsets from it are used, so the result does not depend on its value.
pub fn run(seed: u64, params: &Params, epoch: Instant) -> Report {
    let base = epoch;
    let mut w = World {
        p: params.clone(),
        rng: Rng::new(seed),
        base,
        now: Duration::ZERO,
        seq: 0,
        queue: BinaryHeap::new(),
        events: BTreeMap::new(),
        etcd: SimEtcd::new(base),
        clients: Vec::new(),
        next_global: 0,
        parked: BTreeMap::new(),
        highest_accepted: None,
        last_token: None,
        violations: Vec::new(),
        trace_hash: 0xcbf2_9ce4_8422_2325,
        tail: VecDeque::new(),
        before_violation: Vec::new(),
        acquisitions: 0,
        acquisitions_after_heal: 0,
        wanted_after_heal: false,
        writes: (0, 0),
        steps: 0,
    };
    w.setup(seed);
    w.run_loop();
    Report {
        seed,
        params: w.p.clone(),
        violations: w.violations,
        trace_hash: w.trace_hash,
        trace_tail: w.tail.into_iter().collect(),
        before_violation: w.before_violation,
        acquisitions: w.acquisitions,
        writes: w.writes,
        steps: w.steps,
    }
}

impl World {
    fn setup(&mut self, seed: u64) {
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
            let mut lock = self.new_machine(i, seed, 0, style);
            if self.rng.next_u64() % 2 == 0 {
                lock.set_watching(true, self.base); // follows the key's events too
            }
            self.clients.push(Client {
                lock,
                style,
                incarnation: 0,
                drift_ppm,
                doing: Doing::Idle,
                paused_until: None,
                cut_off_until: None,
                timer_generation: 0,
                out: BTreeMap::new(),
            });
            let start = self.rand_dur(Duration::ZERO, Duration::from_millis(500));
            self.at(
                start,
                Ev::Act {
                    client: i,
                    incarnation: 0,
                },
            );
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
            self.at(at, Ev::CloseWatches);
        }
        for _ in 0..self.p.quorum_losses {
            let from = self.rand_dur(Duration::ZERO, heal);
            let until =
                (from + self.rand_dur(Duration::from_millis(100), self.p.ttl * 2)).min(heal);
            self.at(from, Ev::QuorumLoss { until });
        }
        self.at(Duration::ZERO, Ev::EtcdTick);
    }

    fn new_machine(&mut self, client: usize, seed: u64, incarnation: u32, style: Style) -> Lock {
        let config = Config::new(
            "sim/lock",
            &format!("client-{client}.{incarnation}"),
            self.p.ttl,
        )
        .expect("valid")
        .with_safety_margin(self.p.margin)
        .with_auto_renew(style == Style::Waiter)
        .with_request_timeout(Duration::from_millis(1500))
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

    fn faulty(&self) -> bool {
        self.now < self.p.heal_at
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.p.latency;
        self.rand_dur(lo, hi)
    }

    fn trace(&mut self, line: String) {
        for b in line.bytes().chain([b'\n']) {
            self.trace_hash = (self.trace_hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(format!("{:>12?} {line}", self.now));
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
            Ev::AtEtcd {
                global,
                client,
                incarnation,
                rid,
                request,
                reply_lost,
            } => {
                let reply = self.etcd.handle(global, &request, self.base + self.now);
                self.trace(format!(
                    "etcd <- c{client}.{incarnation} r{rid} {} {}",
                    request.method(),
                    request.uri().path_and_query().map_or("", |p| p.as_str())
                ));
                match reply {
                    Reply::Now(response) => {
                        self.reply(client, incarnation, rid, Ok(response), reply_lost)
                    }
                    Reply::Parked => {
                        self.parked
                            .insert(global, (client, incarnation, rid, reply_lost));
                    }
                }
                self.flush_watches();
                self.schedule_tick();
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
                let Some(_global) = self.clients[client].out.remove(&rid) else {
                    return; // cancelled meanwhile
                };
                let now = self.local(client, self.now);
                let id = RequestId::from_raw(rid);
                match reply {
                    Ok(response) => {
                        self.trace(format!("c{client} <- r{rid} {}", response.status()));
                        self.clients[client].lock.handle_response(id, response, now);
                    }
                    Err(reason) => {
                        self.trace(format!("c{client} <- r{rid} transport error"));
                        self.clients[client]
                            .lock
                            .handle_transport_error(id, &reason, now);
                    }
                }
                self.drain(client);
            }
            Ev::EtcdTick => {
                self.etcd.advance(self.base + self.now);
                self.flush_watches();
                self.schedule_tick();
            }
            Ev::Pause { client, until } => {
                self.trace(format!("fault: c{client} paused until {until:?}"));
                let until = self.clients[client]
                    .paused_until
                    .map_or(until, |u| u.max(until));
                self.clients[client].paused_until = Some(until);
            }
            Ev::Crash { client } => {
                let incarnation = self.clients[client].incarnation + 1;
                self.trace(format!(
                    "fault: c{client} crashes (incarnation {incarnation})"
                ));
                let seed = self.rng.next_u64();
                let style = self.clients[client].style;
                let lock = self.new_machine(client, seed, incarnation, style);
                let c = &mut self.clients[client];
                c.lock = lock;
                c.incarnation = incarnation;
                c.doing = Doing::Idle;
                c.out.clear();
                c.timer_generation += 1;
                let later = self.now + Duration::from_millis(200);
                self.at(
                    later,
                    Ev::Act {
                        client,
                        incarnation,
                    },
                );
            }
            Ev::CutOff { client, until } => {
                self.trace(format!("fault: c{client} cut off until {until:?}"));
                self.clients[client].cut_off_until = Some(until);
            }
            Ev::CloseWatches => {
                // A member shutting down ends its long polls: a clean empty 200, or (as a
                // real etcd does when stopped) a body cut short, which is a transport error.
                let cut = self.rng.next_u64() % 2 == 0;
                self.trace(format!("fault: etcd closes every watch (cut: {cut})"));
                for (global, response) in self.etcd.close_watches() {
                    if let Some((client, incarnation, rid, lost)) = self.parked.remove(&global) {
                        let reply = if cut {
                            Err("body cut short".to_owned())
                        } else {
                            Ok(response)
                        };
                        self.reply(client, incarnation, rid, reply, lost);
                    }
                }
            }
            Ev::QuorumLoss { until } => {
                self.trace(format!("fault: quorum lost until {until:?}"));
                self.etcd.advance(self.base + self.now);
                self.etcd.set_paused(true);
                self.at(until, Ev::QuorumBack);
            }
            Ev::QuorumBack => {
                self.trace("quorum back".into());
                self.etcd.advance(self.base + self.now);
                self.etcd.set_paused(false);
                self.schedule_tick();
            }
        }
    }

    fn schedule_tick(&mut self) {
        if let Some(at) = self.etcd.next_expiry() {
            let t = at.saturating_duration_since(self.base).max(self.now);
            self.at(t, Ev::EtcdTick);
        }
    }

    fn flush_watches(&mut self) {
        while let Some((global, response)) = self.etcd.poll_watch() {
            if let Some((client, incarnation, rid, lost)) = self.parked.remove(&global) {
                self.reply(client, incarnation, rid, Ok(response), lost);
            }
        }
    }

    /// Sends a reply back over the network (unless lost).
    fn reply(
        &mut self,
        client: usize,
        incarnation: u32,
        rid: u64,
        reply: Result<Response<Vec<u8>>, String>,
        lost: bool,
    ) {
        if lost {
            self.trace(format!("net: reply to c{client} r{rid} lost"));
            return;
        }
        let at = self.now + self.latency();
        self.at(
            at,
            Ev::AtClient {
                client,
                incarnation,
                rid,
                reply,
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
                let wait = self.rand_dur(Duration::from_millis(200), self.p.ttl * 4);
                self.clients[client].lock.acquire(Some(now + wait), now);
                self.clients[client].doing = Doing::Acquiring;
                self.trace(format!("c{client} acquires (waits up to {wait:?})"));
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
        let incarnation = self.clients[client].incarnation;
        while let Some(rid) = self.clients[client].lock.poll_cancel() {
            if let Some(global) = self.clients[client].out.remove(&rid.as_raw()) {
                self.etcd.cancel(global);
                self.parked.remove(&global);
            }
        }
        while let Some((rid, request)) = self.clients[client].lock.poll_request() {
            self.next_global += 1;
            let global = self.next_global;
            self.clients[client].out.insert(rid.as_raw(), global);
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
            if self.rng.next_u64() % 2 == 0 {
                let at = self.now + self.latency();
                self.at(
                    at,
                    Ev::AtClient {
                        client,
                        incarnation,
                        rid,
                        reply: Err("connection refused".into()),
                    },
                );
            }
            self.trace(format!("net: c{client} r{rid} cut off"));
            return;
        }
        let faulty = self.faulty();
        if faulty && self.chance(self.p.request_loss) {
            self.trace(format!("net: c{client} r{rid} request lost"));
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
            self.at(
                later,
                Ev::AtEtcd {
                    global: dup_global,
                    client,
                    incarnation: u32::MAX,
                    rid,
                    request: copy,
                    reply_lost: true,
                },
            );
        }
        self.at(
            at,
            Ev::AtEtcd {
                global,
                client,
                incarnation,
                rid,
                request,
                reply_lost,
            },
        );
    }

    fn completed(&mut self, client: usize, done: Completion) {
        let incarnation = self.clients[client].incarnation;
        self.trace(format!(
            "c{client} completes {:?}: {:?}",
            done.op, done.result
        ));
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
