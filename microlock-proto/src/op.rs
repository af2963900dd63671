//! Commands: lock, acquire, unlock, renew — one at a time, each through these phases:
//!
//! ```text
//!            ┌──────────── answer known ───────────────► done
//!  Write ────┼─ never sent (connection refused) ─► Write again, on the next member
//!            └─ lost (transport, timeout, 5xx, garbage) ─► Resolve (quorum GET, another member)
//!                  ├─ it happened, or it is moot ─► done
//!                  └─ it did not happen ─► Write again, on a working member
//!  acquire only:  key held ─► Wait (watch for release, its member probed) ─► Pause (jitter) ─► Write
//!  acquire, fair: Queue (enqueue, list, wait for our turn: see [`fair`]) ─► Write ─► …
//! ```
//!
//! **Failover.** Every attempt goes to the member [`Members`](crate::Members) picks; a member
//! that fails one is skipped for a back-off. A lock, unlock or renew keeps going from member to
//! member until an answer is clear, within its budget ([`Config::operation_timeout`]): it fails
//! only when every member refused the connection, or when the budget is spent (then with the
//! last failure). A waiting acquire keeps trying until its own deadline.
//!
//! Every decision about what an etcd answer means for a command is in this file.

mod fair;
mod v3;

pub(crate) use self::fair::{Removal, Ticket};
pub(crate) use self::v3::{KeepAlive, Lease};
use crate::liveness::{Due, Probe};

use std::time::{Duration, Instant};

use crate::event::{Fence, LostReason, OpId, Outcome};
use crate::lock::{Held, Lock, RequestId};
use crate::observe;
use crate::wire::{self, code, KeyState, Reply};
use crate::{Error, Protocol};

/// A command gives up after this many attempts per member (or its budget, whichever ends
/// first): a member that fails fast (a reset, a 5xx) is not hammered for a long budget.
const ATTEMPTS_PER_MEMBER: u32 = 4;

/// The shortest time a renew's attempt is given, however close its hold is to expiring.
const MIN_RENEW_ATTEMPT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Lock,
    Acquire {
        deadline: Option<Instant>,
        started: Instant,
    },
    /// `token`, `modified`: the hold being released, if any (remembered when the request is
    /// sent), and its last `modifiedIndex`, which pins the DELETE to that hold.
    Unlock {
        token: Option<u64>,
        modified: Option<u64>,
    },
    Renew,
    /// Who holds the key (a quorum read; nothing is written).
    Read,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Acquire { .. } => "acquire",
            Kind::Unlock { .. } => "unlock",
            Kind::Renew => "renew",
            Kind::Read => "read",
        }
    }
}

/// An unlock that knows no hold: it reads the key first.
const LOOKUP: Kind = Kind::Unlock {
    token: None,
    modified: None,
};

/// A command waiting for its turn.
#[derive(Debug)]
pub(crate) struct Queued {
    pub op: OpId,
    pub kind: Kind,
    /// Someone waits for the completion (false: auto-renew, clean-up, or cancelled).
    pub caller: bool,
}

/// The command in progress.
#[derive(Debug)]
pub(crate) struct Running {
    pub op: OpId,
    pub kind: Kind,
    pub caller: bool,
    phase: Phase,
    /// The hold a successful write earned, applied when the command finishes.
    earned: Option<Held>,
    /// Failed attempts so far (acquire backs off exponentially).
    failures: u32,
    /// When this command's first write was sent, and the highest etcd index seen before it
    /// (`None`: none seen). A key of ours found by a resolution read is credited to this
    /// command only if it was created after that index, and then only from that first send
    /// time: an earlier attempt of the command may have been the one that took effect.
    first_write: Option<(Instant, Option<u64>)>,
    /// The highest index seen before the current write attempt was sent.
    attempt_seen: Option<u64>,
    /// No new attempt starts after this (see [`Config::operation_timeout`]).
    budget_end: Instant,
    /// Attempts in a row that never reached etcd (connection refused): when every member
    /// refused, nothing is running there and the command fails at once.
    refused: usize,
    /// Attempts made again after a failure: the first goes at once (to another member), later
    /// ones after a doubling pause, so that failing members are never hammered.
    retries: u32,
    /// Whether a write of this command may have happened unseen, with the latest failure that
    /// left one unsettled (an answer lost, a 5xx): then "the key exists" may be our own write's
    /// doing, and a read tells; and that failure is what the command reports if it gives up
    /// with the key still ours (see [`Lock::unfinished`]).
    lost_write: Option<Error>,
    /// When the command started, and (acquire) when it last saw the key released.
    started: Instant,
    released_at: Option<Instant>,
    /// renew: the index the next refresh is pinned to, when a read found the key at a newer
    /// index than the hold knows (else the hold's own).
    pin: Option<u64>,
}

#[derive(Debug)]
enum Phase {
    /// The lock/unlock/renew write is in flight.
    Write {
        request: RequestId,
        sent_at: Instant,
        deadline: Instant,
    },
    /// The write's answer was lost; a quorum GET settles what happened.
    Resolve {
        request: RequestId,
        /// When the read was sent.
        sent_at: Instant,
        deadline: Instant,
        write_sent_at: Instant,
        failure: Error,
    },
    /// acquire: the key is held; a long poll waits for the first event at `index`, and its
    /// member is probed (see [`liveness`](crate::liveness)).
    Wait {
        request: RequestId,
        index: u64,
        probe: Probe,
    },
    /// A pause before the next step.
    Pause { until: Instant, then: Then },
    /// acquire, fair: in the queue, before its turn (see [`fair`]).
    Queue(fair::Step),
    /// Any command on etcd v3 (see [`v3`]).
    V3(v3::Step),
}

#[derive(Debug)]
enum Then {
    Write,
    Wait(u64),
    /// Read the queue again (see [`fair::Step::List`]).
    List(Option<Option<u64>>),
    /// Watch the queue entry ahead again, from the index.
    Turn(String, u64),
    Resolve {
        write_sent_at: Instant,
        failure: Error,
    },
    /// A v3 step (see [`v3::Next`]).
    V3(v3::Next),
}

impl Running {
    pub(crate) fn request(&self) -> Option<RequestId> {
        match self.phase {
            Phase::Write { request, .. }
            | Phase::Resolve { request, .. }
            | Phase::Wait { request, .. } => Some(request),
            Phase::Queue(ref step) => Some(step.request()),
            Phase::V3(ref step) => Some(step.request()),
            Phase::Pause { .. } => None,
        }
    }

    /// The liveness probe out while waiting, if any.
    pub(crate) fn probe(&self) -> Option<RequestId> {
        match self.phase {
            Phase::Wait { probe, .. } => probe.request(),
            Phase::Queue(ref step) => step.probe(),
            Phase::V3(ref step) => step.probe(),
            _ => None,
        }
    }

    /// Every request out.
    pub(crate) fn requests(&self) -> impl Iterator<Item = RequestId> {
        [self.request(), self.probe()].into_iter().flatten()
    }

    pub(crate) fn timer(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Write { deadline, .. } | Phase::Resolve { deadline, .. } => Some(deadline),
            Phase::Pause { until, .. } => Some(until),
            Phase::Wait { probe, .. } => Some(probe.timer()),
            Phase::Queue(ref step) => Some(step.timer()),
            Phase::V3(ref step) => Some(step.timer()),
        };
        // The acquire deadline only interrupts waiting; a write in flight is allowed to finish
        // (its own deadline bounds it), so it must not be a timer then, or it would stay due.
        let idle = self.is_idle();
        let acquire = match self.kind {
            Kind::Acquire { deadline, .. } if self.caller && idle => deadline,
            _ => None,
        };
        phase.into_iter().chain(acquire).min()
    }
}

impl Running {
    /// Waiting (for the key, or for its turn) or pausing: what an acquire's deadline and a
    /// cancellation interrupt.
    fn is_idle(&self) -> bool {
        match &self.phase {
            Phase::Wait { .. } | Phase::Pause { .. } => true,
            Phase::Queue(step) => step.is_waiting(),
            Phase::V3(step) => step.is_waiting(),
            _ => false,
        }
    }
}

impl Verdict {
    /// What the verdict means, for the operator.
    fn describe(&self) -> &'static str {
        match self {
            Verdict::Done(Ok(_)) => "it happened",
            Verdict::Done(Err(_)) => "it did not happen, or cannot: the command ends",
            Verdict::Unknown(_) => "still unknown",
            Verdict::Held(_) => "the key is held by another node: wait",
            Verdict::Retry => "it did not happen: try again",
            Verdict::Rewrite(_) => "ours at a newer index: send it again there",
            Verdict::Again(..) => "it did not happen: send it again on a working member",
        }
    }
}

/// A write's result, before it becomes a completion.
enum Verdict {
    Done(Result<Outcome, Error>),
    /// The outcome is unknown: resolve it.
    Unknown(Error),
    /// acquire: the key is held by someone else; watch from this index.
    Held(u64),
    /// acquire: not taken, try again after a pause.
    Retry,
    /// Send the write again, as this (e.g. an unlock pinned to a newer index).
    Rewrite(Kind),
    /// The write did not happen (its member failed): send it again, as this, on a working
    /// member, if the budget allows; else fail with the original failure.
    Again(Kind, Error),
}

impl Lock {
    pub(crate) fn start_next_op(&mut self, now: Instant) {
        while self.running.is_none() {
            let Some(queued) = self.queue.pop_front() else {
                return;
            };
            self.discover(now);
            self.running = Some(Running {
                op: queued.op,
                kind: queued.kind,
                caller: queued.caller,
                phase: Phase::Pause {
                    until: now,
                    then: Then::Write,
                },
                earned: None,
                failures: 0,
                first_write: None,
                attempt_seen: None,
                budget_end: now + self.config.operation_timeout(),
                refused: 0,
                retries: 0,
                lost_write: None,
                started: now,
                released_at: None,
                pin: None,
            });
            self.write(now);
        }
    }

    /// Queues an internal command (auto-renew, clean-up) ahead of callers' commands.
    pub(crate) fn queue_internal(&mut self, kind: Kind, now: Instant) {
        let op = self.new_op();
        self.queue.push_front(Queued {
            op,
            kind,
            caller: false,
        });
        self.start_next_op(now);
    }

    /// Sends the running command's write, or finishes it at once when no write is needed.
    fn write(&mut self, now: Instant) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if matches!(running.kind, Kind::Acquire { .. }) {
            // Each attempt of a waiting acquire has a full budget to settle its outcome.
            running.budget_end = now + self.config.operation_timeout();
        }
        if self.config.protocol() == Protocol::V3 {
            return self.v3_write(now);
        }
        let (kind, caller, pin) = (running.kind, running.caller, running.pin);
        if fair::is_acquire(kind) && self.held.is_none() && self.queue_step(now) {
            return;
        }
        let member = self.pick(now);
        let request = match kind {
            Kind::Lock => self.send(member, wire::lock),
            Kind::Read => self.send(member, wire::read),
            Kind::Acquire { .. } if self.held.is_some() => {
                let index = self.held.map_or(0, |h| h.modified);
                let key = self.config.key().as_str().to_owned();
                return self.finish(Err(Error::AlreadyLocked { key, index }), now);
            }
            Kind::Acquire { .. } => self.send(member, wire::lock),
            Kind::Renew if !caller && self.held.is_none() => {
                return self.finish(Err(Error::Cancelled), now); // auto-renew after a loss
            }
            Kind::Renew => match pin.or(self.held.map(|h| h.modified)) {
                Some(index) => {
                    // Later attempts stay pinned there, even if the hold runs out meanwhile.
                    if let Some(running) = self.running.as_mut() {
                        running.pin = Some(index);
                    }
                    self.send(member, |e, c| wire::renew(e, c, index))
                }
                // No hold known (e.g. a restarted process renewing its node id's hold): never
                // an unpinned refresh. Read the key, then refresh it pinned if it is ours.
                None => {
                    let key = self.config.key().as_str().to_owned();
                    return self.resolve(now, Error::LockNotOwned { key }, now);
                }
            },
            Kind::Unlock { token, modified } => {
                // Stop claiming the lock before the release can take effect anywhere.
                let (token, modified) = match self.held.take() {
                    Some(h) => (Some(h.fence.token), Some(h.modified)),
                    None => (token, modified),
                };
                self.renew_at = None;
                if let Some(running) = self.running.as_mut() {
                    running.kind = Kind::Unlock { token, modified };
                }
                let Some(modified) = modified else {
                    // No hold known: never send an unpinned DELETE (a delayed copy of it could
                    // remove a later hold of ours). Read the key, then delete what is ours.
                    let key = self.config.key().as_str().to_owned();
                    return self.resolve(now, Error::LockNotOwned { key }, now);
                };
                let request = self.send(member, |e, c| wire::unlock(e, c, Some(modified)));
                // The queue's next in line wakes as the key goes: both writes leave together.
                if self.ticket.as_ref().is_some_and(|t| t.head) {
                    self.drop_ticket(true, now);
                }
                request
            }
        };
        let deadline = now + self.attempt_timeout(now);
        let seen = (self.seen_index > 0).then_some(self.seen_index);
        if let Some(running) = self.running.as_mut() {
            running.first_write.get_or_insert((now, seen));
            running.attempt_seen = seen;
            running.phase = Phase::Write {
                request,
                sent_at: now,
                deadline,
            };
        }
    }

    /// How long the next attempt may take: the request timeout, except that a renew of a
    /// hold leaves time for a second attempt on another member before the hold expires.
    fn attempt_timeout(&self, now: Instant) -> Duration {
        let timeout = self.config.request_timeout();
        match (self.running.as_ref().map(|r| r.kind), self.held) {
            (Some(Kind::Renew), Some(held)) => {
                let half = held.fence.valid_until.saturating_duration_since(now) / 2;
                timeout.min(half.max(MIN_RENEW_ATTEMPT))
            }
            _ => timeout,
        }
    }

    /// Sends a quorum GET to settle what the write sent at `write_sent_at` did (its answer was
    /// lost with `failure`), on a member other than the one that failed if any is up.
    fn resolve(&mut self, write_sent_at: Instant, failure: Error, now: Instant) {
        let request = self.send(self.pick(now), wire::read);
        let deadline = now + self.attempt_timeout(now);
        if let Some(running) = self.running.as_mut() {
            running.phase = Phase::Resolve {
                request,
                sent_at: now,
                deadline,
                write_sent_at,
                failure,
            };
        }
    }

    /// acquire: a long poll for the first event at `index` on a working member.
    fn wait(&mut self, index: u64, now: Instant) {
        let member = self.pick(now);
        let request = self.send(member, |e, c| wire::watch(e, c, index));
        let probe = Probe::new(member, &self.config, now);
        if let Some(running) = self.running.as_mut() {
            running.phase = Phase::Wait {
                request,
                index,
                probe,
            };
        }
    }

    /// The waiting acquire's member stopped serving its watch: wait on another member from
    /// the same index (etcd replays what happened since from its history).
    fn move_wait(&mut self, index: u64, now: Instant) {
        let requests: Vec<RequestId> = self.running.iter().flat_map(Running::requests).collect();
        for request in requests {
            self.cancel_request(request);
        }
        let member = self.members.endpoint(self.pick(now)).as_str();
        observe::watch(
            "the member under a waiting acquire failed its liveness probe: moved",
            member,
            Some(index),
        );
        self.wait(index, now);
    }

    /// Goes on after a failed attempt with `then`, on the member [`Members`](crate::Members)
    /// picks: the first time at once if a member is up, then after a pause doubling from the
    /// first watch retry delay to the largest. Returns `false` (doing nothing) when that would
    /// start an attempt after the budget, or past [`ATTEMPTS_PER_MEMBER`] per member.
    fn go_on(&mut self, then: Then, now: Instant) -> bool {
        let (min, max) = self.config.watch_retry();
        // With every member failing, even the first retry waits (no member to move to).
        let all_down = self.members.all_down_until(now).is_some();
        let most = ATTEMPTS_PER_MEMBER.saturating_mul(self.members.len() as u32);
        let Some(running) = self.running.as_mut() else {
            return false;
        };
        let pause = match (running.retries, all_down) {
            (0, false) => Duration::ZERO,
            (k, _) => min
                .saturating_mul(1 << k.saturating_sub(1).min(16))
                .min(max),
        };
        let at = now + pause;
        if now >= running.budget_end || at > running.budget_end || running.retries >= most {
            return false;
        }
        running.retries += 1;
        if at > now {
            self.pause(at - now, then, now);
        } else {
            self.then(then, now);
        }
        true
    }

    fn then(&mut self, then: Then, now: Instant) {
        match then {
            Then::Write => self.write(now),
            Then::Wait(index) => self.wait(index, now),
            Then::List(adopt) => self.list_again(adopt, now),
            Then::Turn(ahead, index) => self.turn_again(ahead, index, now),
            Then::Resolve {
                write_sent_at,
                failure,
            } => self.resolve(write_sent_at, failure, now),
            Then::V3(next) => self.v3_then(next, now),
        }
    }

    fn pause(&mut self, delay: Duration, then: Then, now: Instant) {
        if let Some(running) = self.running.as_mut() {
            running.phase = Phase::Pause {
                until: now + delay,
                then,
            };
        }
    }

    // ----- inputs ---------------------------------------------------------------------------

    /// An answer (or failure: `sent` is false when the request never reached etcd) to the
    /// running command's request.
    pub(crate) fn on_op_reply(&mut self, reply: Result<Reply, Error>, sent: bool, now: Instant) {
        let members = self.members.len();
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let kind = running.kind;
        running.refused = if sent { 0 } else { running.refused + 1 };
        // Every member refused the connection in a row: nothing to fail over to.
        let all_refused = running.refused >= members;
        let phase = std::mem::replace(
            &mut running.phase,
            Phase::Pause {
                until: now,
                then: Then::Write,
            },
        );
        match phase {
            Phase::Write { .. } if !sent && matches!(kind, Kind::Acquire { .. }) => {
                self.retry_acquire(now)
            }
            // Never reached etcd: the same write, at once, on the next member (refusals end
            // by themselves: when every member refused, the command fails).
            Phase::Write { .. } if !sent => {
                let budget_left = self.running.as_ref().is_some_and(|r| now < r.budget_end);
                if all_refused || !budget_left {
                    let error = self.read_error(&reply);
                    self.finish(Err(error), now);
                } else {
                    self.write(now);
                }
            }
            Phase::Write { .. } if kind == Kind::Read => {
                self.on_read_command(reply, all_refused, now)
            }
            Phase::Write { sent_at, .. } => match self.judge_write(kind, sent_at, reply) {
                Verdict::Done(result) => self.done(result, now),
                // A renew needs no read to settle it: sent again, its own answer says whether
                // the key is still ours (and only that answer extends the hold).
                Verdict::Unknown(failure)
                    if kind == Kind::Renew && !matches!(failure, Error::LockNotOwned { .. }) =>
                {
                    if let Some(running) = self.running.as_mut() {
                        running.lost_write = Some(failure.clone());
                    }
                    self.again(Kind::Renew, failure, now)
                }
                Verdict::Unknown(failure) => {
                    // A failed comparison is an answer: that write did not happen. Anything
                    // else may have happened, unseen, and may still be applied later.
                    let refused = matches!(
                        failure,
                        Error::LockNotOwned { .. } | Error::AlreadyLocked { .. }
                    );
                    if !refused {
                        if let Some(running) = self.running.as_mut() {
                            running.lost_write = Some(failure.clone());
                        }
                    }
                    if matches!(kind, Kind::Lock | Kind::Acquire { .. }) {
                        // This create may have happened: remember it until something settles it.
                        let attempt = (sent_at, self.running.as_ref().and_then(|r| r.attempt_seen));
                        let earliest = match self.unsettled_create {
                            Some(known) if known.0 <= attempt.0 => known,
                            _ => attempt,
                        };
                        self.unsettled_create = Some(earliest);
                    }
                    // Settled on another member, always at least once.
                    self.resolve(sent_at, failure, now)
                }
                Verdict::Held(index) => self.after_contention(index, now),
                Verdict::Retry => self.retry_acquire(now),
                Verdict::Rewrite(kind) => self.rewrite(kind, now),
                Verdict::Again(kind, failure) => self.again(kind, failure, now),
            },
            Phase::Resolve {
                sent_at: read_sent_at,
                write_sent_at,
                failure,
                ..
            } => match KeyState::from_read(reply.clone()) {
                Some(state) => {
                    let op = self.running.as_ref().map_or(0, |r| r.op.0);
                    let verdict =
                        self.judge_resolution(kind, write_sent_at, read_sent_at, failure, state);
                    observe::settled(op, kind.name(), verdict.describe());
                    match verdict {
                        Verdict::Done(result) => self.done(result, now),
                        Verdict::Held(index) => self.after_contention(index, now),
                        Verdict::Rewrite(kind) => self.rewrite(kind, now),
                        Verdict::Again(kind, failure) => self.again(kind, failure, now),
                        Verdict::Retry | Verdict::Unknown(_) => self.retry_acquire(now),
                    }
                }
                // An acquire past its deadline (or cancelled) stops here: what its write did is
                // remembered as unsettled.
                None if matches!(kind, Kind::Acquire { .. })
                    && self.acquire_over(now).is_some() =>
                {
                    self.retry_acquire(now)
                }
                // The read failed too: read again elsewhere while the budget lasts.
                None => {
                    let then = Then::Resolve {
                        write_sent_at,
                        failure: failure.clone(),
                    };
                    if !all_refused && self.go_on(then, now) {
                        return;
                    }
                    match kind {
                        Kind::Acquire { .. } => self.retry_acquire(now),
                        // An unlock's look-up read, or a renew's, failed, or the read that was
                        // to tell whose key failed a comparison: that failure is the answer
                        // (never "not owned" for want of an answer).
                        _ if kind == LOOKUP
                            || kind == Kind::Renew
                            || matches!(failure, Error::LockNotOwned { .. }) =>
                        {
                            let error = self.read_error(&reply);
                            self.finish(Err(error), now)
                        }
                        _ => self.finish(Err(failure), now),
                    }
                }
            },
            Phase::Wait { index, probe, .. } => {
                if let Some(probe) = probe.request() {
                    self.cancel_request(probe); // the watch answered: no need to ask
                }
                self.on_wait(index, reply, now)
            }
            Phase::Queue(step) => self.on_queue_reply(step, reply, now),
            // v3 answers come through `on_v3_op_reply`.
            phase @ (Phase::Pause { .. } | Phase::V3(_)) => {
                if let Some(running) = self.running.as_mut() {
                    running.phase = phase;
                }
            }
        }
    }

    /// The answer to a waiting acquire's liveness probe (a quorum read on its watch's member).
    pub(crate) fn on_op_probe(&mut self, reply: Result<Reply, Error>, now: Instant) {
        if let Some(Phase::Queue(_)) = self.running.as_ref().map(|r| &r.phase) {
            return self.on_turn_probe(reply, now);
        }
        let Some(Phase::Wait {
            index, mut probe, ..
        }) = self.running.as_ref().map(|r| &r.phase)
        else {
            return;
        };
        let index = *index;
        match KeyState::from_read(reply) {
            // Released, and the watch has not said so yet: go for it.
            Some(KeyState::Absent { .. }) => {
                let requests: Vec<RequestId> =
                    self.running.iter().flat_map(Running::requests).collect();
                for request in requests {
                    self.cancel_request(request);
                }
                self.released(now);
            }
            Some(KeyState::Present { .. }) => {
                probe.answered(&self.config, now);
                if let Some(Phase::Wait { probe: p, .. }) =
                    self.running.as_mut().map(|r| &mut r.phase)
                {
                    *p = probe;
                }
            }
            // The member cannot serve a quorum read: wait elsewhere.
            None => self.move_wait(index, now),
        }
    }

    /// Sends the write again as `kind` on a working member, or fails with `failure` when the
    /// budget is spent.
    fn again(&mut self, kind: Kind, failure: Error, now: Instant) {
        if let Some(running) = self.running.as_mut() {
            running.kind = kind;
        }
        if !self.go_on(Then::Write, now) {
            let error = self.unfinished(failure);
            self.finish(Err(error), now);
        }
    }

    /// An unlock that finds the key gone, or another node's: whether a DELETE of ours may be
    /// what removed it (one whose answer was lost, applied late by a member that hung with
    /// it). Else the key was taken away (it expired, or someone deleted it): not owned.
    fn removed_by_us(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.lost_write.is_some())
    }

    /// What a command that runs out of attempts or budget reports. A `LockNotOwned` or
    /// `AlreadyLocked` carried this far only said that a comparison failed, and the read after
    /// it found otherwise (the key still ours, at an index that a write of ours whose answer was
    /// lost had moved; or no key at all): the truth is that the command could not be completed,
    /// for the failure that left that write unsettled, which it reports. (With no such failure,
    /// nothing of ours moved the key: the comparison's answer stands.)
    fn unfinished(&self, failure: Error) -> Error {
        match (failure, self.running.as_ref()) {
            (
                failure @ (Error::LockNotOwned { .. } | Error::AlreadyLocked { .. }),
                Some(running),
            ) => running.lost_write.clone().unwrap_or(failure),
            (failure, _) => failure,
        }
    }

    pub(crate) fn op_timers(&mut self, now: Instant) {
        let Some(running) = self.running.as_ref() else {
            return;
        };
        // An acquire past its deadline stops waiting (an attempt in flight may finish).
        if let Kind::Acquire {
            deadline: Some(deadline),
            started,
        } = running.kind
        {
            if running.caller && deadline <= now && running.is_idle() {
                let requests: Vec<RequestId> = running.requests().collect();
                for request in requests {
                    self.cancel_request(request);
                }
                if let Some(own) = self.v3_waiting_key() {
                    self.queue_v3_release(own); // its place in the queue goes first
                }
                let waited = now.saturating_duration_since(started);
                return self.finish(Err(Error::WaitTimeout { waited }), now);
            }
        }
        match running.phase {
            Phase::Write {
                deadline,
                request,
                sent_at,
            }
            | Phase::Resolve {
                deadline,
                request,
                sent_at,
                ..
            } if deadline <= now => {
                self.request_timed_out(request, now);
                let after = deadline.saturating_duration_since(sent_at);
                self.on_op_reply(Err(Error::Timeout { after }), true, now);
            }
            Phase::Wait { index, probe, .. } => match probe.due(now) {
                Due::Nothing => {}
                Due::Send => {
                    let request = self.send(probe.member, wire::read);
                    if let Some(Phase::Wait { probe, .. }) =
                        self.running.as_mut().map(|r| &mut r.phase)
                    {
                        probe.sent(request, &self.config, now);
                    }
                }
                Due::Expired(request) => {
                    self.request_timed_out(request, now);
                    self.move_wait(index, now);
                }
            },
            Phase::Queue(_) => self.queue_timers(now),
            Phase::V3(_) => self.v3_timers(now),
            Phase::Pause { until, .. } if until <= now => {
                let Some(Phase::Pause { then, .. }) = self.running.as_mut().map(|r| {
                    std::mem::replace(
                        &mut r.phase,
                        Phase::Pause {
                            until: now,
                            then: Then::Write,
                        },
                    )
                }) else {
                    return;
                };
                self.then(then, now);
            }
            _ => {}
        }
    }
    pub(crate) fn cancel_op(&mut self, op: OpId, now: Instant) {
        if let Some(i) = self.queue.iter().position(|q| q.op == op && q.caller) {
            self.queue.remove(i);
            return self.complete(op, Err(Error::Cancelled));
        }
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if running.op != op || !running.caller {
            return;
        }
        match running.phase {
            Phase::Wait { .. }
            | Phase::Queue(fair::Step::Turn { .. })
            | Phase::V3(v3::Step::Wait { .. }) => {
                let requests: Vec<RequestId> = running.requests().collect();
                for request in requests {
                    self.cancel_request(request);
                }
                if let Some(own) = self.v3_waiting_key() {
                    self.queue_v3_release(own); // its place in the queue goes first
                }
                self.v3_stop_keepalive();
                self.running = None;
                self.leave_queue_unserved(now);
                self.complete(op, Err(Error::Cancelled));
                self.start_next_op(now);
            }
            Phase::Pause {
                then: Then::Write | Then::Wait(_) | Then::List(_) | Then::Turn(..) | Then::V3(_),
                ..
            } => {
                // A v3 unlock pauses only after a release whose outcome is unknown: etcd may
                // still apply it, pinned to the key's create revision, so that key must never
                // be resumed by a later lock (which its late release would delete under the
                // new hold: the responses_v3 fuzz target). Its lease goes, as after an unlock
                // that failed (the key with it: what the unlock was for).
                let release_abandoned = self.config.protocol() == Protocol::V3
                    && matches!(running.kind, Kind::Unlock { .. });
                if let Some(own) = self.v3_waiting_key() {
                    self.queue_v3_release(own);
                }
                self.v3_stop_keepalive();
                self.running = None;
                if release_abandoned {
                    self.v3_revoke(now);
                }
                self.leave_queue_unserved(now);
                self.complete(op, Err(Error::Cancelled));
                self.start_next_op(now);
            }
            // A write (or its resolution) is out: let it finish in the background.
            _ => {
                running.caller = false;
                self.complete(op, Err(Error::Cancelled));
            }
        }
    }

    // ----- decisions ------------------------------------------------------------------------

    /// What a write's answer means.
    fn judge_write(
        &mut self,
        kind: Kind,
        sent_at: Instant,
        reply: Result<Reply, Error>,
    ) -> Verdict {
        let reply = match reply {
            Ok(reply) => reply,
            Err(failure) => return Verdict::Unknown(failure),
        };
        match (kind, reply) {
            (Kind::Lock | Kind::Acquire { .. }, Reply::Action { action, .. })
                if action.action == "create" =>
            {
                self.unsettled_create = None; // our create took effect now: none earlier did
                match self.hold_from(kind, sent_at, action.node.as_ref()) {
                    Ok(fence) if matches!(kind, Kind::Lock) => {
                        Verdict::Done(Ok(Outcome::Locked(fence)))
                    }
                    Ok(fence) => Verdict::Done(Ok(Outcome::Acquired(fence))),
                    Err(e) => Verdict::Unknown(e),
                }
            }
            (
                Kind::Lock | Kind::Acquire { .. },
                Reply::Error {
                    error, etcd_index, ..
                },
            ) if error.code == code::NODE_EXIST => {
                let index = error.index.or(etcd_index).unwrap_or(0);
                if self
                    .running
                    .as_ref()
                    .is_some_and(|r| r.lost_write.is_some())
                {
                    // An earlier attempt of ours whose answer was lost may have made this key.
                    return Verdict::Unknown(Error::AlreadyLocked {
                        key: self.owned_key(),
                        index,
                    });
                }
                match kind {
                    Kind::Lock => Verdict::Done(Err(Error::AlreadyLocked {
                        key: self.owned_key(),
                        index,
                    })),
                    _ => Verdict::Held(index),
                }
            }
            (Kind::Renew, Reply::Action { action, .. }) if action.action == "compareAndSwap" => {
                match self.hold_from(kind, sent_at, action.node.as_ref()) {
                    Ok(fence) => Verdict::Done(Ok(Outcome::Renewed(fence))),
                    Err(e) => Verdict::Unknown(e),
                }
            }
            (Kind::Unlock { .. }, Reply::Action { action, .. })
                if action.action == "compareAndDelete" =>
            {
                Verdict::Done(Ok(Outcome::Unlocked))
            }
            // A DELETE pinned to our hold's index failed its comparison: another holder, or a
            // renewal of ours whose answer was lost moved the index. A read tells which.
            (
                Kind::Unlock {
                    modified: Some(_), ..
                },
                Reply::Error { error, .. },
            ) if error.code == code::TEST_FAILED => Verdict::Unknown(Error::LockNotOwned {
                key: self.owned_key(),
            }),
            // A refresh pinned to our hold's index failed its comparison: another holder, or a
            // refresh of ours whose answer was lost moved the index. A read tells which.
            (Kind::Renew, Reply::Error { error, .. }) if error.code == code::TEST_FAILED => {
                Verdict::Unknown(Error::LockNotOwned {
                    key: self.owned_key(),
                })
            }
            // The key is gone, and a DELETE of ours whose answer was lost (a member that hung
            // with it, then applied it) may be what removed it: released (found by the chaos
            // run: an unlock straddling a paused leader answered "not owned").
            (Kind::Unlock { .. }, Reply::Error { error, .. })
                if error.code == code::KEY_NOT_FOUND && self.removed_by_us() =>
            {
                Verdict::Done(Ok(Outcome::Unlocked))
            }
            (Kind::Unlock { .. } | Kind::Renew, Reply::Error { error, .. })
                if error.code == code::TEST_FAILED || error.code == code::KEY_NOT_FOUND =>
            {
                if kind == Kind::Renew
                    && self
                        .running
                        .as_ref()
                        .is_some_and(|r| r.caller || self.held.is_some())
                {
                    self.lose(LostReason::NotOwned);
                }
                Verdict::Done(Err(Error::LockNotOwned {
                    key: self.owned_key(),
                }))
            }
            // etcd failed (e.g. 500 "Raft Internal Error"): the write may still commit.
            (_, reply @ Reply::Error { status: 500.., .. }) => {
                Verdict::Unknown(reply.into_error(kind.name(), &self.config))
            }
            (_, reply @ Reply::Error { .. }) => {
                Verdict::Done(Err(reply.into_error(kind.name(), &self.config)))
            }
            (_, reply) => Verdict::Unknown(reply.into_error(kind.name(), &self.config)),
        }
    }

    /// What a lost write did, from the key as a quorum GET found it.
    fn judge_resolution(
        &mut self,
        kind: Kind,
        sent_at: Instant,
        read_sent_at: Instant,
        failure: Error,
        state: KeyState,
    ) -> Verdict {
        let me = self.config.node_id().as_str();
        let key = self.config.key().as_str().to_owned();
        let ours = |value: &str| value == me;
        // The earliest create that may have made a key of ours: this command's first write,
        // or an earlier command's write whose outcome was never settled.
        let first_write = match (
            self.running.as_ref().and_then(|r| r.first_write),
            self.unsettled_create,
        ) {
            (Some(mine), Some(older)) if older.0 < mine.0 => Some(older),
            (mine, older) => mine.or(older),
        };
        // Anything but a key of ours settles every create of ours still in doubt.
        if !matches!(&state, KeyState::Present { value, .. } if ours(value)) {
            self.unsettled_create = None;
        }
        // A key of ours is this command's doing only if created after every index seen
        // before its first write; else it may be an older hold of ours (lost track of).
        let created_by_us =
            |created: u64| matches!(first_write, Some((_, Some(seen))) if created > seen);
        match (kind, state) {
            (
                Kind::Lock | Kind::Acquire { .. },
                KeyState::Present {
                    value,
                    created,
                    modified,
                    ttl,
                    ..
                },
            ) if ours(&value) && created_by_us(created) => {
                // A create of ours went through: valid from the earliest candidate's send, and
                // never past what the key's remaining TTL guarantees: it lives at least
                // `ttl - 1` s (etcd rounds up) after the read was sent. That bound holds even
                // if the key came from an earlier, duplicated request of ours.
                self.unsettled_create = None;
                let since = first_write.map_or(sent_at, |(at, _)| at);
                let margin = self.config.safety_margin();
                let cap = ttl.map(|t| {
                    (read_sent_at + Duration::from_secs(t.saturating_sub(1)))
                        .checked_sub(margin)
                        .unwrap_or(read_sent_at)
                });
                let fence = self.hold(since, created, modified);
                let fence = match cap {
                    Some(cap) if cap < fence.valid_until => self.cap_hold(fence, cap),
                    _ => fence,
                };
                Verdict::Done(Ok(match kind {
                    Kind::Lock => Outcome::Locked(fence),
                    _ => Outcome::Acquired(fence),
                }))
            }
            (Kind::Lock, KeyState::Present { modified, .. }) => {
                Verdict::Done(Err(Error::AlreadyLocked {
                    key,
                    index: modified,
                }))
            }
            (Kind::Acquire { .. }, KeyState::Present { index, .. }) => Verdict::Held(index),
            // The create did not happen (its member failed): again, on a working member.
            (Kind::Lock, KeyState::Absent { .. }) => Verdict::Again(Kind::Lock, failure),
            (Kind::Acquire { .. }, KeyState::Absent { .. }) => Verdict::Retry,
            // An unlock's look-up: delete our key, pinned to its current index.
            (
                LOOKUP,
                KeyState::Present {
                    value,
                    created,
                    modified,
                    ..
                },
            ) if ours(&value) => Verdict::Rewrite(Kind::Unlock {
                token: Some(created),
                modified: Some(modified),
            }),
            (LOOKUP, _) => Verdict::Done(Err(failure)),
            // Still our hold, at a newer index (a lost renewal): release it at that index.
            (
                Kind::Unlock { token: Some(t), .. },
                KeyState::Present {
                    value,
                    created,
                    modified,
                    ..
                },
            ) if ours(&value) && t == created && matches!(failure, Error::LockNotOwned { .. }) => {
                Verdict::Rewrite(Kind::Unlock {
                    token: Some(t),
                    modified: Some(modified),
                })
            }
            // Still ours: the delete did not happen (its member failed). Again, pinned to the
            // index the key has now, on a working member.
            (
                Kind::Unlock { token, .. },
                KeyState::Present {
                    value,
                    created,
                    modified,
                    ..
                },
            ) if ours(&value) && token.map_or(true, |t| t == created) => Verdict::Again(
                Kind::Unlock {
                    token: Some(created),
                    modified: Some(modified),
                },
                failure,
            ),
            // Not ours, and no DELETE of ours can have removed it: the key was taken away.
            (Kind::Unlock { .. }, _)
                if matches!(failure, Error::LockNotOwned { .. }) && !self.removed_by_us() =>
            {
                Verdict::Done(Err(failure))
            }
            // Gone or another node's, after a DELETE of ours whose answer was lost: that DELETE
            // (applied late, e.g. by a member that hung with it) released the key, perhaps to
            // a node that took it at once (found by the chaos run). Released.
            (Kind::Unlock { .. }, _) => Verdict::Done(Ok(Outcome::Unlocked)),
            // Still our hold, at the index the read saw. Whether a refresh of ours moved it
            // cannot be told, so no lease is credited from the read: the refresh is sent again,
            // pinned to that index, and only its own answer extends the hold.
            (
                Kind::Renew,
                KeyState::Present {
                    value,
                    created,
                    modified,
                    ..
                },
            ) if ours(&value) && self.held.map_or(true, |h| h.fence.token == created) => {
                if let Some(running) = self.running.as_mut() {
                    running.pin = Some(modified);
                }
                Verdict::Again(Kind::Renew, failure)
            }
            (Kind::Renew, _) => {
                self.lose(LostReason::NotOwned);
                Verdict::Done(Err(Error::LockNotOwned { key }))
            }
            // A read writes nothing: it never needs settling.
            (Kind::Read, _) => Verdict::Done(Err(failure)),
        }
    }

    /// The hold a successful lock, acquire or renew answer earns; the node must be ours.
    fn hold_from(
        &mut self,
        kind: Kind,
        sent_at: Instant,
        node: Option<&wire::Node>,
    ) -> Result<Fence, Error> {
        let protocol = |what: &str| Error::Protocol {
            reason: format!("{} answer {what}", kind.name()),
        };
        let node = node.ok_or_else(|| protocol("has no node"))?;
        if node.value.as_deref() != Some(self.config.node_id().as_str()) {
            return Err(protocol("holds another node's value"));
        }
        let created = node
            .created_index
            .ok_or_else(|| protocol("has no createdIndex"))?;
        let modified = node
            .modified_index
            .ok_or_else(|| protocol("has no modifiedIndex"))?;
        Ok(self.hold(sent_at, created, modified))
    }

    /// Records the hold a write earned: valid from the write's send time for the TTL minus
    /// the safety margin. Applied by [`finish`](Lock::finish).
    fn hold(&mut self, sent_at: Instant, token: u64, modified: u64) -> Fence {
        let lease = self.config.ttl() - self.config.safety_margin();
        let fence = Fence {
            token,
            valid_until: sent_at + lease,
        };
        if let Some(running) = self.running.as_mut() {
            running.earned = Some(Held {
                fence,
                modified,
                sent_at,
            });
        }
        fence
    }

    /// Lowers the validity of the hold just earned (`fence`) to `until`.
    fn cap_hold(&mut self, fence: Fence, until: Instant) -> Fence {
        let capped = Fence {
            token: fence.token,
            valid_until: until,
        };
        if let Some(held) = self.running.as_mut().and_then(|r| r.earned.as_mut()) {
            held.fence = capped;
        }
        capped
    }

    /// A verdict is in. A hold whose validity deadline has already passed (the answer came
    /// late, e.g. after a pause) is void: an acquire keeps trying, others fail.
    fn done(&mut self, result: Result<Outcome, Error>, now: Instant) {
        let fence = match &result {
            Ok(Outcome::Locked(f) | Outcome::Acquired(f) | Outcome::Renewed(f)) => *f,
            _ => return self.finish(result, now),
        };
        if fence.valid_until > now {
            return self.finish(result, now);
        }
        if let Some(running) = self.running.as_mut() {
            running.earned = None;
        }
        match result {
            Ok(Outcome::Acquired(_)) => self.retry_acquire(now),
            _ => {
                let token = fence.token;
                self.finish(Err(Error::LeaseExpired { token }), now)
            }
        }
    }

    /// Ends the running command with `result`: applies the hold it earned, answers the
    /// caller, re-arms auto-renew, starts the next command.
    pub(crate) fn finish(&mut self, result: Result<Outcome, Error>, now: Instant) {
        let Some(running) = self.running.take() else {
            return;
        };
        self.log_finish(&running, &result, now);
        let mut renew_failed = false;
        match (&result, running.earned) {
            (Ok(Outcome::Locked(_) | Outcome::Acquired(_)), Some(held)) => {
                self.held = Some(held);
                if !running.caller {
                    // Cancelled while the write was out, and it won: give the lock back.
                    let op = self.new_op();
                    self.queue.push_front(Queued {
                        op,
                        kind: Kind::Unlock {
                            token: None,
                            modified: None,
                        },
                        caller: false,
                    });
                }
            }
            (Ok(Outcome::Renewed(_)), Some(held)) => {
                // A caller's renew re-establishes a hold; auto-renew never resurrects one.
                let same = self.held.is_some_and(|h| h.fence.token == held.fence.token);
                if running.caller || same {
                    self.held = Some(held);
                }
            }
            (Err(_), _) if running.kind == Kind::Renew && !running.caller => renew_failed = true,
            (Err(_), _) if fair::is_acquire(running.kind) => self.leave_queue_unserved(now),
            _ => {}
        }
        let affects_hold = matches!(
            running.kind,
            Kind::Lock | Kind::Acquire { .. } | Kind::Renew
        );
        if affects_hold {
            self.schedule_renew(now, renew_failed);
        }
        if running.caller {
            if matches!(running.kind, Kind::Unlock { .. })
                && result.is_ok()
                && self.hand_off_pending()
            {
                // Released: it completes once the queue's next in line has been told too, so
                // that a caller that drops the lock at once does not cut that message off.
                self.deferred_unlock = Some((running.op, result));
            } else {
                self.complete(running.op, result);
            }
        }
        self.start_next_op(now);
    }

    /// Tells the operator how a command ended.
    fn log_finish(&self, running: &Running, result: &Result<Outcome, Error>, now: Instant) {
        let op = running.op.0;
        match result {
            Ok(Outcome::Locked(f) | Outcome::Acquired(f)) => {
                let handoff = running.released_at.map(|at| observe::since(at, now));
                observe::acquired(op, f.token, observe::since(running.started, now), handoff)
            }
            Ok(Outcome::Unlocked) => {
                let token = match running.kind {
                    Kind::Unlock { token, .. } => token,
                    _ => None,
                };
                observe::released(op, token)
            }
            Ok(Outcome::Renewed(f)) => {
                observe::renewed(op, f.token, observe::since(now, f.valid_until))
            }
            Ok(Outcome::Read(holder)) => {
                tracing::debug!(op, holder = ?holder.as_ref().map(|h| &h.node_id), "read")
            }
            Err(error) if running.kind == Kind::Renew => {
                let held = self.held.map(|h| h.fence);
                let left = held.map(|f| observe::since(now, f.valid_until));
                observe::renew_failed(op, held.map(|f| f.token), left, error)
            }
            Err(error) => observe::failed(op, running.kind.name(), error),
        }
    }

    /// Sends the running command's write again as `kind` (a few times at most).
    fn rewrite(&mut self, kind: Kind, now: Instant) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        running.failures += 1;
        if running.failures > 3 {
            // Ours each time, at an index that kept moving: not completed.
            let key = self.config.key().as_str().to_owned();
            let error = self.unfinished(Error::LockNotOwned { key });
            return self.finish(Err(error), now);
        }
        running.kind = kind;
        self.write(now);
    }

    /// The lock's key, for an error.
    fn owned_key(&self) -> String {
        self.config.key().as_str().to_owned()
    }

    /// What a failed read reports (when an unlock's look-up read, or a `read()`, cannot be
    /// done). Made only when needed: it copies the answer.
    fn read_error(&self, reply: &Result<Reply, Error>) -> Error {
        match reply {
            Err(e) => e.clone(),
            Ok(r) => r.clone().into_error("read", &self.config),
        }
    }

    /// The answer to a `read`: who holds the key, or a failure to retry elsewhere.
    fn on_read_command(&mut self, reply: Result<Reply, Error>, all_refused: bool, now: Instant) {
        let error = self.read_error(&reply);
        let refused = matches!(&reply, Ok(Reply::Error { status, error, .. })
            if *status < 500 && error.code != code::KEY_NOT_FOUND);
        match KeyState::from_read(reply) {
            Some(KeyState::Present {
                value,
                created,
                modified,
                ttl,
                ..
            }) => {
                let holder = crate::Holder {
                    node_id: value,
                    token: created,
                    modified_index: modified,
                    ttl_left: ttl.map(Duration::from_secs),
                };
                self.finish(Ok(Outcome::Read(Some(holder))), now)
            }
            Some(KeyState::Absent { .. }) => self.finish(Ok(Outcome::Read(None)), now),
            // etcd's own refusal (authentication...): another member would say the same.
            None if refused => self.finish(Err(error), now),
            None => {
                if all_refused || !self.go_on(Then::Write, now) {
                    self.finish(Err(error), now)
                }
            }
        }
    }

    /// The key is held by someone else (at etcd index `index`): watch for its release.
    fn after_contention(&mut self, index: u64, now: Instant) {
        if let Some(stop) = self.acquire_over(now) {
            return self.finish(Err(stop), now);
        }
        self.wait(index.saturating_add(1), now);
    }

    /// Not taken and not known to be held: try again after a backoff.
    fn retry_acquire(&mut self, now: Instant) {
        if let Some(stop) = self.acquire_over(now) {
            return self.finish(Err(stop), now);
        }
        let delay = self.backoff();
        self.pause(delay, Then::Write, now);
    }

    /// Why the running acquire must stop now, if it must.
    fn acquire_over(&self, now: Instant) -> Option<Error> {
        let running = self.running.as_ref()?;
        if !running.caller {
            return Some(Error::Cancelled);
        }
        match running.kind {
            Kind::Acquire {
                deadline: Some(deadline),
                started,
            } if deadline <= now => Some(Error::WaitTimeout {
                waited: now.saturating_duration_since(started),
            }),
            Kind::Acquire { .. } => None,
            // A lock or renew that ended up here has nothing to wait for.
            _ => Some(Error::Cancelled),
        }
    }

    /// The next retry delay: doubling from the configured minimum to the maximum.
    fn backoff(&mut self) -> Duration {
        let (min, max) = self.config.watch_retry();
        let Some(running) = self.running.as_mut() else {
            return min;
        };
        let delay = min.saturating_mul(1 << running.failures.min(16)).min(max);
        running.failures += 1;
        delay
    }

    /// The key a waiting acquire waits for was released: everyone waiting sees it now, so the
    /// attempt comes after a seeded jitter that spreads them.
    fn released(&mut self, now: Instant) {
        let jitter = if self.jitter_applies() {
            self.rng.duration_up_to(self.config.acquire_jitter())
        } else {
            Duration::ZERO
        };
        if let Some(running) = self.running.as_mut() {
            running.failures = 0;
            running.released_at = Some(now);
        }
        self.pause(jitter, Then::Write, now);
    }

    /// The answer to an acquire's long poll.
    fn on_wait(&mut self, index: u64, reply: Result<Reply, Error>, now: Instant) {
        match reply {
            Ok(Reply::Action { action, .. }) => {
                let modified = action.node.as_ref().and_then(|n| n.modified_index);
                match (action.action.as_str(), modified) {
                    ("delete" | "compareAndDelete" | "expire", _) => self.released(now),
                    (_, Some(modified)) => self.after_contention(modified.max(index), now),
                    (_, None) => self.retry_acquire(now),
                }
            }
            // The member closed the poll without an event: ask again from the same index.
            Ok(Reply::Empty) => {
                let delay = self.config.watch_retry().0;
                self.pause(delay, Then::Wait(index), now);
            }
            // History cleared: the state may have changed; just try again.
            Ok(Reply::Error { error, .. }) if error.code == code::EVENT_INDEX_CLEARED => {
                self.write(now)
            }
            Err(Error::Transport { .. }) => {
                let delay = self.backoff();
                self.pause(delay, Then::Wait(index), now);
            }
            Ok(Reply::Error { .. }) | Err(_) => self.retry_acquire(now),
        }
    }
}
