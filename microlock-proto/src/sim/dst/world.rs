//! The world's life: its setup from the seed, the event loop, faults, and what clients do.

use super::*;
use crate::sim::cluster::MemberState;
use crate::{Completion, Config, Error, Outcome, Protocol, RequestId};

impl World {
    pub(super) fn setup(&mut self, seed: u64) {
        let members = self.cluster.len();
        let all: Vec<Endpoint> = (0..members)
            .map(|m| Endpoint::parse(&self.cluster.endpoint(m)).expect("a valid member URL"))
            .collect();
        let protocol = match self.p.protocol {
            Protocol::V3 => "etcd v3",
            _ => "etcd v2",
        };
        self.trace(format!(
            "world: {protocol}, {} clients, {members} member(s), leader m{}, bound (g) {} (L {} + slack {})",
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
                valid_until: None,
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

    pub(super) fn new_machine(
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
            .with_protocol(self.p.protocol)
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
    pub(super) fn local(&self, client: usize, t: Duration) -> Instant {
        let ns = t.as_nanos() as i128;
        let scaled = ns + ns * i128::from(self.clients[client].drift_ppm) / 1_000_000;
        self.base + Duration::from_nanos(scaled.max(0) as u64)
    }

    /// The true time at which a client's clock shows `local` (rounded up).
    pub(super) fn true_time(&self, client: usize, local: Instant) -> Duration {
        let l = local.saturating_duration_since(self.base).as_nanos() as i128;
        let rate = 1_000_000 + i128::from(self.clients[client].drift_ppm);
        let t = (l * 1_000_000 + rate - 1) / rate;
        Duration::from_nanos(t.max(0) as u64)
    }

    pub(super) fn at(&mut self, t: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, ev);
    }

    pub(super) fn rand_dur(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + self.rng.duration_up_to(hi.saturating_sub(lo))
    }

    pub(super) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() % 1_000_000) < (p * 1_000_000.0) as u64
    }

    pub(super) fn rand_client(&mut self) -> usize {
        (self.rng.next_u64() % self.p.clients as u64) as usize
    }

    pub(super) fn rand_member(&mut self) -> usize {
        (self.rng.next_u64() % self.cluster.len() as u64) as usize
    }

    pub(super) fn faulty(&self) -> bool {
        self.now < self.p.heal_at
    }

    pub(super) fn latency(&mut self) -> Duration {
        let (lo, hi) = self.p.latency;
        self.rand_dur(lo, hi)
    }

    pub(super) fn trace(&mut self, line: String) {
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

    pub(super) fn violation(&mut self, check: char, what: String) {
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

    pub(super) fn run_loop(&mut self) {
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

    pub(super) fn step(&mut self, ev: Ev) {
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
                    let sent = dialect::sent(self.p.protocol, &request, true);
                    self.trace(format!(
                        "{who} <- c{}.{} r{} {}{dup}",
                        route.client, route.incarnation, route.rid, sent.trace
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
                // A stream's head and pieces leave the request out; anything else ends it.
                let out = match reply {
                    Net::Head(_) | Net::Chunk(_) => self.clients[client].out.get(&rid).cloned(),
                    _ => self.clients[client].out.remove(&rid),
                };
                let Some(out) = out else {
                    return; // cancelled meanwhile
                };
                let now = self.local(client, self.now);
                let id = RequestId::from_raw(rid);
                let from = out.member.map_or("?".to_owned(), |m| format!("m{m}"));
                match reply {
                    Net::Head(head) => {
                        self.trace(format!(
                            "c{client} <- r{rid} {} stream from {from}",
                            head.status
                        ));
                        self.clients[client]
                            .lock
                            .handle_response_head(id, head, now);
                    }
                    Net::Chunk(chunk) => {
                        let text = dialect::v3_message(&chunk);
                        self.trace(format!("c{client} <- r{rid} message {text}"));
                        self.clients[client]
                            .lock
                            .handle_response_body(id, &chunk, now);
                    }
                    Net::End => {
                        self.trace(format!("c{client} <- r{rid} stream ends"));
                        self.clients[client].lock.handle_response_end(id, now);
                    }
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

    pub(super) fn member_fault(&mut self, m: usize, fault: MemberFault) {
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

    pub(super) fn crash(&mut self, client: usize) {
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
        c.valid_until = None;
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
    pub(super) fn act(&mut self, client: usize) {
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
                self.clients[client].acquire_index = self.cluster.index();
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
                    let lock = &self.clients[client].lock;
                    let valid_until = lock.fence().map(|f| f.valid_until()).filter(|&v| now < v);
                    let op = self.clients[client].lock.unlock(now);
                    self.clients[client].doing = Doing::Releasing {
                        op,
                        valid_until,
                        copied: false,
                    };
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
            Doing::Acquiring | Doing::Releasing { .. } => {}
        }
        self.drain(client);
    }

    pub(super) fn fenced_write(&mut self, client: usize, token: u64) {
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

    pub(super) fn completed(&mut self, client: usize, done: Completion) {
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
        // (i) A hold still valid (the one an unlock released, else the one held) is ours.
        if matches!(done.result, Err(Error::LockNotOwned { .. })) {
            let held = match self.clients[client].doing {
                Doing::Releasing {
                    op,
                    valid_until,
                    copied,
                } if op == done.op => valid_until.filter(|_| !copied),
                _ => self.clients[client].valid_until,
            };
            let now = self.local(client, self.now);
            if held.is_some_and(|v| now < v) {
                self.violation(
                    'i',
                    format!(
                        "c{client}'s {:?} answered LockNotOwned while its hold was valid",
                        done.op
                    ),
                );
            }
        }
        match (self.clients[client].doing, done.result) {
            (Doing::Acquiring, Ok(Outcome::Acquired(fence) | Outcome::Locked(fence))) => {
                let token = fence.token();
                // The same token again only for the same client taking up a hold it never
                // released (v3: its key still there, e.g. after its validity ran out).
                let me = (client, self.clients[client].incarnation);
                let stale = self
                    .last_token
                    .is_some_and(|(last, by)| token < last || token == last && by != me);
                if stale {
                    let (last, (c, i)) = self.last_token.unwrap_or_default();
                    self.violation(
                        'c',
                        format!("c{client} acquired token {token} after c{c}.{i} acquired {last}"),
                    );
                }
                self.last_token = Some((token, me));
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
            // The unlock's answer (a renew's, before it, changes nothing).
            (Doing::Releasing { op, .. }, _) if op == done.op => {
                self.clients[client].doing = Doing::Idle;
                next_act(self, 10, 1000);
            }
            (Doing::Acquiring, Err(_)) => {
                self.clients[client].doing = Doing::Idle;
                next_act(self, 10, 1000);
            }
            _ => {}
        }
    }
}
