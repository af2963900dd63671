//! Fair waiting: a waiting `acquire` takes a ticket in a queue kept in etcd, and only the
//! head of the queue contends for the lock key. Served first come, first served; the lock
//! key and its value stay exactly microlock's (try-lockers, microlock for Node.js included,
//! see and respect every hold, and may take a free key between two turns).
//!
//! ```text
//!  DIR/_microlock/queue/NAME/00000000000000000123 = NODE_ID   (for the key DIR/NAME;
//!                                                           TTL: the lock's, kept alive)
//!
//!  Enqueue (POST: an entry at the tail) ─► List (quorum GET, sorted)
//!     ├─ first in line ───────────────────────────────► head: the lock write (and, while the
//!     │                                                    key is held, its watch), as ever
//!     └─ behind `ahead` ─► Turn (watch `ahead`'s entry only)
//!           ├─ `ahead` served (compareAndDelete) ──────► head
//!           └─ `ahead` left or expired (delete, expire) ► List again
//! ```
//!
//! The holder keeps its entry until it is done with the lock; releasing sends the key's
//! DELETE and the entry's `compareAndDelete` together, so the next in line wakes as the key
//! goes (one watch event, one write: the same cost as a bare waiter's, with no herd). A ticket
//! outlives its holder's crash by the lock's TTL at most. A lost POST answer is settled by
//! the list: an entry of ours made after the POST was sent is ours.
//!
//! Every decision about the queue is in this file; the writes and the key's watch are the
//! command phases of [`op`](super).

use std::time::{Duration, Instant};

use super::{Kind, Phase, Then};
use crate::liveness::{Due, Probe};
use crate::lock::{Lock, RequestId};
use crate::observe;
use crate::wire::{self, code, Node, Reply};
use crate::Error;

/// This lock's place in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The entry's name in the queue directory (its zero-padded createdIndex).
    pub name: String,
    /// Its turn has come: first in line, or the entry ahead was served.
    pub head: bool,
    /// Until when the entry surely exists: its TTL counted from when the write that made or
    /// last refreshed it was sent (an entry that may have expired gives no right to a turn).
    alive_until: Instant,
    /// When it is next kept alive, or the refresh in flight, when it was sent and its deadline.
    refresh: Refresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    At(Instant),
    Out(RequestId, Instant, Instant),
}

/// An entry being removed in the background (a few attempts, then its TTL does it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Removal {
    name: String,
    served: bool,
    request: RequestId,
    deadline: Instant,
    attempts: u32,
}

/// At most this many attempts to remove an entry; after that its TTL removes it.
const REMOVAL_ATTEMPTS: u32 = 4;

/// A fair acquire's step before its turn.
#[derive(Debug)]
pub(crate) enum Step {
    /// The POST of a new entry is out. `seen`: the highest index seen before it was sent.
    Enqueue {
        request: RequestId,
        sent_at: Instant,
        deadline: Instant,
        seen: Option<u64>,
    },
    /// The quorum read of the queue is out. `adopt`: a POST of ours whose answer was lost,
    /// with the index seen before it — an entry of ours created after it is ours.
    List {
        request: RequestId,
        sent_at: Instant,
        deadline: Instant,
        adopt: Option<Option<u64>>,
    },
    /// Waiting for the entry `ahead` to go (a long poll from `index`, its member probed).
    Turn {
        request: RequestId,
        ahead: String,
        index: u64,
        probe: Probe,
    },
}

impl Step {
    pub(super) fn request(&self) -> RequestId {
        match *self {
            Step::Enqueue { request, .. }
            | Step::List { request, .. }
            | Step::Turn { request, .. } => request,
        }
    }

    pub(super) fn probe(&self) -> Option<RequestId> {
        match self {
            Step::Turn { probe, .. } => probe.request(),
            _ => None,
        }
    }

    pub(super) fn timer(&self) -> Instant {
        match self {
            Step::Enqueue { deadline, .. } | Step::List { deadline, .. } => *deadline,
            Step::Turn { probe, .. } => probe.timer(),
        }
    }

    /// Only waiting for a turn is interrupted by the acquire's deadline or cancellation; a
    /// POST or a read in flight finishes (so that an entry it made is known and removed).
    pub(super) fn is_waiting(&self) -> bool {
        matches!(self, Step::Turn { .. })
    }
}

/// How often an entry is kept alive: as the lease is renewed, a third of the TTL.
fn refresh_interval(lock: &Lock) -> Duration {
    lock.config.ttl() / 3
}

impl Lock {
    /// Whether the running acquire waits in the queue (and what it does next there), rather
    /// than contending for the key: when fair, until its turn has come.
    pub(super) fn queue_step(&mut self, now: Instant) -> bool {
        if !self.config.fair_acquire() || self.queue_refused {
            return false;
        }
        let margin = self.config.safety_margin();
        match self.ticket.as_mut() {
            Some(ticket) if ticket.head && now + margin < ticket.alive_until => false,
            Some(ticket) => {
                // Not our turn yet, or our entry may have expired (refreshes failing): only
                // the queue as it stands says.
                ticket.head = false;
                self.list(None, now);
                true
            }
            None => {
                self.enqueue(now);
                true
            }
        }
    }

    fn set_step(&mut self, step: Step) {
        if let Some(running) = self.running.as_mut() {
            running.phase = Phase::Queue(step);
        }
    }

    fn op_number(&self) -> u64 {
        self.running.as_ref().map_or(0, |r| r.op.0)
    }

    fn enqueue(&mut self, now: Instant) {
        let request = self.send(self.pick(now), wire::enqueue);
        let seen = (self.seen_index > 0).then_some(self.seen_index);
        let deadline = now + self.config.request_timeout();
        self.set_step(Step::Enqueue {
            request,
            sent_at: now,
            deadline,
            seen,
        });
    }

    fn list(&mut self, adopt: Option<Option<u64>>, now: Instant) {
        let request = self.send(self.pick(now), wire::list_queue);
        let deadline = now + self.config.request_timeout();
        self.set_step(Step::List {
            request,
            sent_at: now,
            deadline,
            adopt,
        });
    }

    fn turn(&mut self, ahead: String, index: u64, now: Instant) {
        let member = self.pick(now);
        let request = self.send(member, |e, c| wire::watch_entry(e, c, &ahead, index));
        let probe = Probe::new(member, &self.config, now);
        self.set_step(Step::Turn {
            request,
            ahead,
            index,
            probe,
        });
    }

    /// Our turn has come: contend for the key (the lock write, as a bare acquire would).
    fn our_turn(&mut self, now: Instant) {
        let op = self.op_number();
        if let Some(ticket) = self.ticket.as_mut() {
            ticket.head = true;
            observe::queue(op, "our turn", &ticket.name, None);
        }
        if let Some(running) = self.running.as_mut() {
            running.released_at = Some(now);
        }
        self.write(now);
    }

    /// The answer to the running acquire's queue request.
    pub(super) fn on_queue_reply(&mut self, step: Step, reply: Result<Reply, Error>, now: Instant) {
        match step {
            Step::Enqueue { seen, sent_at, .. } => self.on_enqueued(seen, sent_at, reply, now),
            Step::List { adopt, sent_at, .. } => self.on_list(adopt, sent_at, reply, now),
            Step::Turn {
                ahead,
                index,
                probe,
                ..
            } => {
                if let Some(probe) = probe.request() {
                    self.cancel_request(probe); // the watch answered: no need to ask
                }
                self.on_turn(ahead, index, reply, now)
            }
        }
    }

    fn on_enqueued(
        &mut self,
        seen: Option<u64>,
        sent_at: Instant,
        reply: Result<Reply, Error>,
        now: Instant,
    ) {
        match reply {
            Ok(Reply::Action { action, .. }) if action.action == "create" => {
                let name = action
                    .node
                    .as_ref()
                    .and_then(|n| n.key.as_deref())
                    .and_then(|k| k.rsplit('/').next())
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned);
                match name {
                    Some(name) => {
                        let alive_until = sent_at + self.config.ttl();
                        self.take_ticket(name, alive_until, now);
                        self.after_queue_step(now, |lock, now| lock.list(None, now));
                    }
                    None => {
                        // Made, but we cannot tell which: the list tells.
                        self.after_queue_step(now, |lock, now| lock.list(Some(seen), now));
                    }
                }
            }
            // Not allowed to queue (a role that covers the key but not its directory): wait
            // the unfair way rather than not at all.
            Ok(Reply::Error { status: 401, .. }) => {
                self.queue_refused = true;
                observe::queue(
                    self.op_number(),
                    "refused (permission): waiting unqueued",
                    "",
                    None,
                );
                self.write(now)
            }
            // etcd said no (a key in the way...): the acquire ends.
            Ok(reply @ Reply::Error { status: ..500, .. }) => {
                let error = reply.into_error("acquire", &self.config);
                self.finish(Err(error), now)
            }
            // The POST may or may not have made an entry: the list tells.
            _ => self.after_queue_step(now, |lock, now| lock.list(Some(seen), now)),
        }
    }

    /// Goes on with `next` unless the acquire must stop (its deadline passed, or it was
    /// cancelled while a request was out).
    fn after_queue_step(&mut self, now: Instant, next: impl FnOnce(&mut Lock, Instant)) {
        if let Some(stop) = self.acquire_over(now) {
            return self.finish(Err(stop), now);
        }
        next(self, now)
    }

    /// Our entry `name`, known to exist until `alive_until`.
    fn take_ticket(&mut self, name: String, alive_until: Instant, now: Instant) {
        let op = self.op_number();
        observe::queue(op, "queued", &name, None);
        self.ticket = Some(Ticket {
            name,
            head: false,
            alive_until,
            refresh: Refresh::At(now + refresh_interval(self)),
        });
    }

    fn on_list(
        &mut self,
        adopt: Option<Option<u64>>,
        sent_at: Instant,
        reply: Result<Reply, Error>,
        now: Instant,
    ) {
        let (entries, index) = match reply {
            Ok(Reply::Action {
                action, etcd_index, ..
            }) => {
                let entries = action.node.map(|n| n.nodes).unwrap_or_default();
                (entries, etcd_index.unwrap_or(self.seen_index))
            }
            // No queue directory yet: nobody waits (and no entry of ours exists).
            Ok(Reply::Error {
                error, etcd_index, ..
            }) if error.code == code::KEY_NOT_FOUND => {
                (Vec::new(), etcd_index.or(error.index).unwrap_or(0))
            }
            Ok(reply @ Reply::Error { status: ..500, .. }) => {
                let error = reply.into_error("acquire", &self.config);
                return self.finish(Err(error), now);
            }
            // The read failed: read again (elsewhere) while the acquire lasts.
            _ => {
                let delay = self.backoff();
                return self
                    .after_queue_step(now, |lock, now| lock.pause(delay, Then::List(adopt), now));
            }
        };
        let name = |n: &Node| {
            n.key
                .as_deref()
                .and_then(|k| k.rsplit('/').next())
                .map(str::to_owned)
        };
        if let Some(seen) = adopt.filter(|_| self.ticket.is_none()) {
            // A POST of ours whose answer was lost: an entry of ours made after it is ours.
            let me = self.config.node_id().as_str();
            let made = entries.iter().find(|n| {
                n.value.as_deref() == Some(me)
                    && n.created_index
                        .is_some_and(|c| seen.map_or(true, |seen| c > seen))
            });
            if let Some(entry) = made.and_then(name) {
                // Made by a POST whose time we do not know: how long it lives is read below,
                // from the list (its remaining TTL), and nothing is assumed before that.
                self.take_ticket(entry, sent_at, now);
                if let Some(ticket) = self.ticket.as_mut() {
                    ticket.refresh = Refresh::At(now); // and it is refreshed at once
                }
            }
        }
        let Some(ticket) = self.ticket.as_mut() else {
            // No entry of ours (none made, or it expired): queue again, at the tail.
            return self.after_queue_step(now, |lock, now| lock.enqueue(now));
        };
        // Our entry lives at least its remaining TTL (rounded up by etcd) minus a second,
        // counted from when the read was sent.
        let listed = entries
            .iter()
            .find(|n| name(n).as_deref() == Some(ticket.name.as_str()))
            .and_then(|n| n.ttl);
        if let Some(ttl) = listed {
            let left = Duration::from_secs((ttl.max(1) - 1) as u64);
            ticket.alive_until = ticket.alive_until.max(sent_at + left);
        }
        // Entries of ours that are not our ticket (a POST answered late, a removal that never
        // got through) would only hold up the queue behind them: remove them.
        let me = self.config.node_id().as_str();
        let strays: Vec<String> = entries
            .iter()
            .filter(|n| n.value.as_deref() == Some(me))
            .filter_map(name)
            .filter(|n| *n != ticket.name && !self.removals.iter().any(|r| r.name == *n))
            .collect();
        // Our entries other than our ticket (strays, and those being removed) are nobody's
        // turn: skipped.
        let names: Vec<String> = entries
            .iter()
            .filter(|n| n.value.as_deref() != Some(me) || name(n).as_deref() == Some(&*ticket.name))
            .filter_map(name)
            .collect();
        let ticket_name = ticket.name.clone();
        let _ = ticket;
        for stray in strays {
            self.remove(stray, false, 1, now);
        }
        match names.iter().position(|n| *n == ticket_name) {
            None => {
                // Our entry is gone (expired while we could not refresh it): queue again.
                self.ticket = None;
                self.after_queue_step(now, |lock, now| lock.enqueue(now))
            }
            Some(0) => {
                let alive = self.ticket.as_ref().map_or(now, |t| t.alive_until);
                if now + self.config.safety_margin() < alive {
                    self.after_queue_step(now, |lock, now| lock.our_turn(now))
                } else {
                    // First, but our entry is about to expire (its refreshes fail): look again
                    // after a pause — refreshed, or gone and queued again.
                    let delay = self.backoff();
                    self.after_queue_step(now, |lock, now| lock.pause(delay, Then::List(None), now))
                }
            }
            Some(at) => {
                let ahead = names[at - 1].clone();
                let op = self.op_number();
                observe::queue(
                    op,
                    "waiting for the entry ahead",
                    &ticket_name,
                    Some(&ahead),
                );
                self.after_queue_step(now, |lock, now| lock.turn(ahead, index + 1, now))
            }
        }
    }

    fn on_turn(&mut self, ahead: String, index: u64, reply: Result<Reply, Error>, now: Instant) {
        match reply {
            Ok(Reply::Action { action, .. }) => {
                let modified = action.node.as_ref().and_then(|n| n.modified_index);
                match action.action.as_str() {
                    // Served and done: the next turn is ours.
                    "compareAndDelete" => self.our_turn(now),
                    // It left or expired unserved: who is ahead now?
                    "delete" | "expire" => self.list(None, now),
                    _ => {
                        let next = modified.map_or(index, |m| m.max(index) + 1);
                        self.turn(ahead, next, now)
                    }
                }
            }
            // The member closed the poll without an event: ask again from the same index.
            Ok(Reply::Empty) => {
                let delay = self.config.watch_retry().0;
                self.pause(delay, Then::Turn(ahead, index), now);
            }
            // History cleared, or anything else: read the queue again.
            _ => {
                let delay = self.backoff();
                self.pause(delay, Then::List(None), now);
            }
        }
    }

    /// The answer to the probe of the member under a turn's watch: a quorum read of the
    /// entry ahead.
    pub(super) fn on_turn_probe(&mut self, reply: Result<Reply, Error>, now: Instant) {
        let Some(Phase::Queue(Step::Turn {
            ahead,
            index,
            mut probe,
            request,
        })) = self.running.as_ref().map(|r| &r.phase)
        else {
            return;
        };
        let (ahead, index, request) = (ahead.clone(), *index, *request);
        match reply {
            Ok(Reply::Action { .. }) => {
                probe.answered(&self.config, now);
                if let Some(Phase::Queue(Step::Turn { probe: p, .. })) =
                    self.running.as_mut().map(|r| &mut r.phase)
                {
                    *p = probe;
                }
            }
            // Gone, and the watch has not said so: read the queue.
            Ok(Reply::Error { error, .. }) if error.code == code::KEY_NOT_FOUND => {
                self.cancel_request(request);
                self.list(None, now)
            }
            // The member cannot serve a quorum read: wait elsewhere.
            _ => {
                self.cancel_request(request);
                self.turn(ahead, index, now)
            }
        }
    }

    /// The running acquire's queue step is due at `now`.
    pub(super) fn queue_timers(&mut self, now: Instant) {
        let Some(Phase::Queue(step)) = self.running.as_ref().map(|r| &r.phase) else {
            return;
        };
        match *step {
            Step::Enqueue {
                request,
                deadline,
                seen,
                ..
            } if deadline <= now => {
                self.request_timed_out(request, now);
                self.after_queue_step(now, |lock, now| lock.list(Some(seen), now));
            }
            Step::List {
                request,
                deadline,
                adopt,
                ..
            } if deadline <= now => {
                self.request_timed_out(request, now);
                self.after_queue_step(now, |lock, now| lock.list(adopt, now));
            }
            Step::Turn {
                ref ahead,
                index,
                probe,
                ..
            } => match probe.due(now) {
                Due::Nothing => {}
                Due::Send => {
                    let ahead = ahead.clone();
                    let read = self.send(probe.member, |e, c| wire::read_entry(e, c, &ahead));
                    if let Some(Phase::Queue(Step::Turn { probe, .. })) =
                        self.running.as_mut().map(|r| &mut r.phase)
                    {
                        probe.sent(read, &self.config, now);
                    }
                }
                Due::Expired(read) => {
                    let ahead = ahead.clone();
                    self.request_timed_out(read, now);
                    if let Some(request) = self.running.as_ref().and_then(|r| r.request()) {
                        self.cancel_request(request);
                    }
                    self.turn(ahead, index, now);
                }
            },
            _ => {}
        }
    }

    // ----- the ticket, kept alive and removed in the background ----------------------------

    /// Leaves the queue: `served` when this lock held the key on this ticket and is done with
    /// it (the next in line is then woken straight to its turn).
    pub(crate) fn drop_ticket(&mut self, served: bool, now: Instant) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if let Refresh::Out(request, ..) = ticket.refresh {
            self.cancel_request(request);
        }
        observe::queue(self.op_number(), "left", &ticket.name, None);
        self.remove(ticket.name, served, 1, now);
    }

    fn remove(&mut self, name: String, served: bool, attempts: u32, now: Instant) {
        let request = self.send(self.pick(now), |e, c| {
            wire::remove_entry(e, c, &name, served)
        });
        self.removals.push(Removal {
            name,
            served,
            request,
            deadline: now + self.config.request_timeout(),
            attempts,
        });
    }

    /// Whether request `id` is the ticket's refresh or a removal.
    pub(crate) fn is_ticket_request(&self, id: RequestId) -> bool {
        matches!(&self.ticket, Some(Ticket { refresh: Refresh::Out(r, ..), .. }) if *r == id)
            || self.removals.iter().any(|r| r.request == id)
    }

    pub(crate) fn on_ticket_reply(
        &mut self,
        id: RequestId,
        reply: Result<Reply, Error>,
        now: Instant,
    ) {
        if let Some(at) = self.removals.iter().position(|r| r.request == id) {
            let removal = self.removals.swap_remove(at);
            let failed = match &reply {
                Ok(Reply::Error { status, .. }) => *status >= 500,
                Ok(_) => false,
                Err(_) => true,
            };
            if failed && removal.attempts < REMOVAL_ATTEMPTS {
                self.remove(removal.name, removal.served, removal.attempts + 1, now);
            }
            return self.complete_deferred_unlock();
        }
        let (interval, ttl) = (refresh_interval(self), self.config.ttl());
        let Some(ticket) = self.ticket.as_mut() else {
            return;
        };
        match reply {
            Ok(Reply::Action { .. }) => {
                if let Refresh::Out(_, sent_at, _) = ticket.refresh {
                    ticket.alive_until = ticket.alive_until.max(sent_at + ttl);
                }
                ticket.refresh = Refresh::At(now + interval)
            }
            // The entry is gone (it expired): a waiter queues again; a holder needs none.
            Ok(Reply::Error { error, .. })
                if error.code == code::KEY_NOT_FOUND || error.code == code::TEST_FAILED =>
            {
                let head = ticket.head;
                self.ticket = None;
                let waiting = self
                    .running
                    .as_ref()
                    .is_some_and(|r| matches!(r.phase, Phase::Queue(_)));
                if waiting && !head {
                    if let Some(requests) = self
                        .running
                        .as_ref()
                        .map(|r| r.requests().collect::<Vec<_>>())
                    {
                        for request in requests {
                            self.cancel_request(request);
                        }
                    }
                    self.enqueue(now);
                }
            }
            // Failed: try again soon (the TTL leaves two more chances).
            _ => ticket.refresh = Refresh::At(now + interval / 4),
        }
    }

    /// The ticket's and the removals' timers.
    pub(crate) fn ticket_timer(&self) -> Option<Instant> {
        let refresh = self.ticket.as_ref().map(|t| match t.refresh {
            Refresh::At(at) | Refresh::Out(_, _, at) => at,
        });
        refresh
            .into_iter()
            .chain(self.removals.iter().map(|r| r.deadline))
            .min()
    }

    pub(crate) fn ticket_timers(&mut self, now: Instant) {
        let due: Vec<Removal> = self
            .removals
            .iter()
            .filter(|r| r.deadline <= now)
            .cloned()
            .collect();
        for removal in due {
            self.removals.retain(|r| r.request != removal.request);
            self.request_timed_out(removal.request, now);
            if removal.attempts < REMOVAL_ATTEMPTS {
                self.remove(removal.name, removal.served, removal.attempts + 1, now);
            }
        }
        self.complete_deferred_unlock();
        let Some(ticket) = self.ticket.as_ref() else {
            return;
        };
        match ticket.refresh {
            Refresh::At(at) if at <= now => {
                let name = ticket.name.clone();
                let request = self.send(self.pick(now), |e, c| wire::refresh_entry(e, c, &name));
                let deadline = now + self.config.request_timeout();
                if let Some(ticket) = self.ticket.as_mut() {
                    ticket.refresh = Refresh::Out(request, now, deadline);
                }
            }
            Refresh::Out(request, _, deadline) if deadline <= now => {
                self.request_timed_out(request, now);
                let interval = refresh_interval(self);
                if let Some(ticket) = self.ticket.as_mut() {
                    ticket.refresh = Refresh::At(now + interval / 4);
                }
            }
            _ => {}
        }
    }

    /// The name of this lock's queue entry, if it has one (for the simulator's checkers).
    #[cfg(feature = "sim")]
    pub fn queue_entry(&self) -> Option<&str> {
        self.ticket.as_ref().map(|t| t.name.as_str())
    }

    /// Whether the removal that tells the next in line its turn has come is still out (its
    /// first attempt): an unlock completes after it (bounded by its request timeout).
    pub(super) fn hand_off_pending(&self) -> bool {
        self.removals.iter().any(|r| r.served && r.attempts == 1)
    }

    /// Completes an unlock that waited for its hand-off, once that is no longer pending.
    fn complete_deferred_unlock(&mut self) {
        if !self.hand_off_pending() {
            if let Some((op, result)) = self.deferred_unlock.take() {
                self.complete(op, result);
            }
        }
    }

    /// A cancelled or finished acquire that did not keep the lock leaves the queue.
    pub(super) fn leave_queue_unserved(&mut self, now: Instant) {
        if self.held.is_none() {
            self.drop_ticket(false, now);
        }
    }

    /// [`Then::List`] after a pause.
    pub(super) fn list_again(&mut self, adopt: Option<Option<u64>>, now: Instant) {
        self.list(adopt, now)
    }

    /// [`Then::Turn`] after a pause.
    pub(super) fn turn_again(&mut self, ahead: String, index: u64, now: Instant) {
        self.turn(ahead, index, now)
    }

    /// Whether the acquire jitter applies: not when the queue already decides who goes.
    pub(super) fn jitter_applies(&self) -> bool {
        !self.config.fair_acquire() || self.queue_refused
    }
}

/// A kind check for [`Kind::Acquire`], for the callers in `op`.
pub(super) fn is_acquire(kind: Kind) -> bool {
    matches!(kind, Kind::Acquire { .. })
}
