//! The commands on etcd v3 (the JSON gateway): the same commands, phases, budgets, failover
//! and validity as on v2 ([`op`](super)), with v3's steps. The layout is Go
//! `concurrency.Mutex`'s, what `etcdctl lock NAME` uses, so both exclude each other and wait
//! in one queue:
//!
//! ```text
//!  NAME/<lease id, lowercase hex> = NODE_ID     (put under this lock's lease; the key with
//!                                                the lowest create revision holds the lock)
//!
//!  lease: Grant (none, or it may have expired) │ KeepAlive (less than 2/3 of its TTL left)
//!  lock, acquire:  Take (txn: put my key if absent; read it and the owner)
//!     ├─ mine is the owner ──────────────────────► held; fencing token = its create revision
//!     ├─ lock: someone else owns ─► my key is released first ─► AlreadyLocked
//!     └─ acquire ─► Ahead (txn: my key still there? the key created last before mine)
//!           ├─ none ahead ──────────────────────► held
//!           └─ Wait (watch that key only, from the read's revision) ─ deleted ─► Ahead
//!  unlock: Release (txn: delete my key if its create revision is the hold's)
//!  renew: KeepAlive;  read: Owner
//! ```
//!
//! Every step is idempotent: a request whose answer was lost is simply sent again (on another
//! member), and its own answer says what holds now (a `Take` sent twice finds its own key;
//! a `Release` that finds its key gone after a lost attempt was that attempt's doing). While
//! an acquire waits, its lease is kept alive (its key is its place in the queue); a waiting
//! acquire that ends without the lock releases its key first.
//!
//! Every decision about what a v3 answer means for a command is in this file.

use std::time::{Duration, Instant};

use super::{Kind, Phase, Running, Then};
use crate::event::{Fence, LostReason, Outcome};
use crate::liveness::{Due, Probe};
use crate::lock::{Held, Lock, RequestId};
use crate::wire::v3::{self as wire, Kv, WatchMessage};
use crate::{Error, Holder};

/// The lease every command of this lock puts its key under: granted when needed, kept across
/// lock/unlock cycles while it lives, replaced once it may have expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub id: i64,
    /// Until when it surely lives: its TTL counted from when the grant or the last
    /// keep-alive that answered was sent.
    pub alive_until: Instant,
    /// When it was last granted or kept alive (that request's send time).
    pub since: Instant,
}

/// The lease's keep-alive while an acquire waits (its key is its place in the queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepAlive {
    /// Next one at this instant (after a failed one).
    At(Instant),
    /// Out: the request, when it was sent, its deadline.
    Out(RequestId, Instant, Instant),
}

/// A v3 command's step.
#[derive(Debug)]
pub(crate) enum Step {
    Grant(Out),
    KeepAlive(Out),
    Take(Out),
    Ahead {
        out: Out,
        own: i64,
    },
    Wait {
        request: RequestId,
        key: Vec<u8>,
        /// The create revision of the key ahead (a key of that name made again later is
        /// another one).
        ahead: i64,
        own: i64,
        probe: Probe,
    },
    Release {
        out: Out,
        key: Vec<u8>,
        token: i64,
    },
    Owner(Out),
    /// read: the holder's lease's time to live.
    HolderTtl {
        out: Out,
        holder: Kv,
    },
    /// renew: the lease was kept alive; is my key still the hold's (create revision `token`)?
    Check {
        out: Out,
        token: i64,
    },
}

/// A request out, when it was sent and until when it may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    request: RequestId,
    sent_at: Instant,
    deadline: Instant,
}

/// A step to take (again), e.g. after a pause.
#[derive(Debug, Clone)]
pub(crate) enum Next {
    /// The command from its start (the lease first).
    Start,
    Take,
    Ahead(i64),
    Release(Vec<u8>, i64),
    Owner,
}

impl Step {
    /// The request in flight and its deadline: every step but the wait for the key ahead.
    fn out(&self) -> Option<Out> {
        match self {
            Step::Grant(out)
            | Step::KeepAlive(out)
            | Step::Take(out)
            | Step::Ahead { out, .. }
            | Step::Release { out, .. }
            | Step::Check { out, .. }
            | Step::HolderTtl { out, .. }
            | Step::Owner(out) => Some(*out),
            Step::Wait { .. } => None,
        }
    }

    pub(super) fn request(&self) -> RequestId {
        match self {
            Step::Wait { request, .. } => *request,
            step => {
                step.out()
                    .expect("every other step has a request out")
                    .request
            }
        }
    }

    pub(super) fn probe(&self) -> Option<RequestId> {
        match self {
            Step::Wait { probe, .. } => probe.request(),
            _ => None,
        }
    }

    pub(super) fn timer(&self) -> Instant {
        match self {
            Step::Wait { probe, .. } => probe.timer(),
            step => {
                step.out()
                    .expect("every other step has a request out")
                    .deadline
            }
        }
    }

    /// Only waiting for the key ahead is interrupted by the acquire's deadline or a
    /// cancellation; a request in flight finishes (so that what it did is known).
    pub(super) fn is_waiting(&self) -> bool {
        matches!(self, Step::Wait { .. })
    }

    /// This step again, as a [`Next`].
    fn again(&self) -> Next {
        match self {
            Step::Grant(_) | Step::KeepAlive(_) | Step::Check { .. } => Next::Start,
            Step::Take(_) => Next::Take,
            Step::Ahead { own, .. } => Next::Ahead(*own),
            Step::Wait { own, .. } => Next::Ahead(*own),
            Step::Release { key, token, .. } => Next::Release(key.clone(), *token),
            Step::Owner(_) | Step::HolderTtl { .. } => Next::Owner,
        }
    }
}

/// What a failed v3 answer means for the step that got it.
enum Failed {
    /// etcd refused for good (authentication, permission, a request it calls invalid):
    /// another member would say the same.
    Refused(Error),
    /// The lease is gone (expired or revoked).
    LeaseGone,
    /// Unknown outcome: transport, timeout, a server failure, garbage. Sent again elsewhere.
    Retry(Error),
}

impl Lock {
    /// What a failed answer means for a command.
    fn failed_from(&self, failure: wire::Failure) -> Failed {
        use wire::Failure as F;
        match failure {
            F::LeaseNotFound(_) => Failed::LeaseGone,
            // Another member, or the same later, may answer: a server failure, garbage, a
            // watch start compacted away (the step reads again).
            failure @ (F::Unavailable(_) | F::Protocol(_) | F::Compacted(_)) => {
                Failed::Retry(failure.into_error(&self.config))
            }
            failure => Failed::Refused(failure.into_error(&self.config)),
        }
    }

    /// Whether an answer's key may be named in a request of ours: one of this lock's keys
    /// (under `NAME/`), with a create revision (an answer that says otherwise is not etcd's).
    fn is_ours_to_name(&self, kv: &Kv) -> bool {
        kv.key.starts_with(&self.prefix()) && kv.create_revision > 0
    }

    fn lease_id(&self) -> Option<i64> {
        self.lease.map(|l| l.id)
    }

    /// This lock's key under the lease.
    fn own_key(&self, lease: i64) -> Vec<u8> {
        wire::lease_key(&self.prefix(), lease)
    }

    /// `NAME/`: where the lock's keys live.
    pub(crate) fn prefix(&self) -> Vec<u8> {
        let mut prefix = self.config.key().as_str().as_bytes().to_vec();
        prefix.push(b'/');
        prefix
    }

    fn set_v3(&mut self, step: Step) {
        if let Some(running) = self.running.as_mut() {
            running.phase = Phase::V3(step);
        }
    }

    fn out(&self, request: RequestId, now: Instant) -> Out {
        Out {
            request,
            sent_at: now,
            deadline: now + self.attempt_timeout(now),
        }
    }

    /// Sends the running command's first step (from [`write`](Lock::write)).
    pub(super) fn v3_write(&mut self, now: Instant) {
        let Some(kind) = self.running.as_ref().map(|r| r.kind) else {
            return;
        };
        let key = || self.config.key().as_str().to_owned();
        match kind {
            Kind::Lock | Kind::Acquire { .. } if self.held.is_some() => {
                let index = self.held.map_or(0, |h| h.modified);
                let key = key();
                self.finish(Err(Error::AlreadyLocked { key, index }), now)
            }
            Kind::Lock | Kind::Acquire { .. } => self.v3_lease_then_take(now),
            Kind::Renew if self.held.is_none() || self.lease.is_none() => {
                if self.running.as_ref().is_some_and(|r| !r.caller) {
                    return self.finish(Err(Error::Cancelled), now); // auto-renew after a loss
                }
                let key = key();
                self.finish(Err(Error::LockNotOwned { key }), now)
            }
            Kind::Renew => self.v3_keep_alive(now),
            Kind::Unlock { token, .. } => {
                // Stop claiming the lock before the release can take effect anywhere.
                let token = self.held.take().map(|h| h.fence.token).or(token);
                self.renew_at = None;
                if let Some(running) = self.running.as_mut() {
                    running.kind = Kind::Unlock {
                        token,
                        modified: token,
                    };
                }
                match (token, self.lease_id()) {
                    (Some(token), Some(lease)) => {
                        let key = self.own_key(lease);
                        self.v3_release(key, token as i64, now)
                    }
                    // No hold known (e.g. a restarted process unlocking its node id's hold):
                    // who holds it? A key of this node id is released, pinned to it.
                    _ => self.v3_owner(now),
                }
            }
            Kind::Read => self.v3_owner(now),
        }
    }

    /// A lock or acquire: a lease that surely lives long enough first, then the take.
    fn v3_lease_then_take(&mut self, now: Instant) {
        let margin = self.config.safety_margin();
        let ttl = self.config.ttl();
        match self.lease {
            Some(lease) if now + margin >= lease.alive_until => {
                self.lease = None;
                self.v3_grant(now)
            }
            None => self.v3_grant(now),
            // Less than two thirds of its TTL left: a hold would be short. Kept alive first.
            Some(lease) if lease.alive_until < now + ttl * 2 / 3 => self.v3_keep_alive(now),
            Some(_) => self.v3_take(now),
        }
    }

    fn v3_grant(&mut self, now: Instant) {
        let ttl = self.config.ttl_secs();
        let request = self.send(self.pick(now), |e, _| wire::grant(e, ttl));
        let out = self.out(request, now);
        self.set_v3(Step::Grant(out));
    }

    fn v3_keep_alive(&mut self, now: Instant) {
        let Some(lease) = self.lease_id() else {
            return self.v3_grant(now);
        };
        let request = self.send(self.pick(now), |e, _| wire::keep_alive(e, lease));
        let out = self.out(request, now);
        self.set_v3(Step::KeepAlive(out));
    }

    fn v3_take(&mut self, now: Instant) {
        let Some(lease) = self.lease_id() else {
            return self.v3_grant(now);
        };
        let (prefix, own) = (self.prefix(), self.own_key(lease));
        let value = self.config.node_id().as_str().as_bytes().to_vec();
        let request = self.send(self.pick(now), |e, _| {
            wire::acquire_txn(e, &prefix, &own, &value, lease)
        });
        let out = self.out(request, now);
        if let Some(running) = self.running.as_mut() {
            running.first_write.get_or_insert((now, None));
        }
        self.set_v3(Step::Take(out));
    }

    fn v3_ahead(&mut self, own: i64, now: Instant) {
        let Some(lease) = self.lease_id() else {
            return self.v3_grant(now);
        };
        let (prefix, key) = (self.prefix(), self.own_key(lease));
        let request = self.send(self.pick(now), |e, _| {
            wire::ahead_txn(e, &prefix, &key, own)
        });
        let out = self.out(request, now);
        self.set_v3(Step::Ahead { out, own });
    }

    fn v3_wait(&mut self, key: Vec<u8>, ahead: i64, own: i64, from: i64, now: Instant) {
        let member = self.pick(now);
        let request = self.send(member, |e, _| wire::watch(e, &key, None, from, false));
        let probe = Probe::new(member, &self.config, now);
        self.set_v3(Step::Wait {
            request,
            key,
            ahead,
            own,
            probe,
        });
    }

    fn v3_release(&mut self, key: Vec<u8>, token: i64, now: Instant) {
        let request = self.send(self.pick(now), |e, _| wire::release_txn(e, &key, token));
        let out = self.out(request, now);
        self.set_v3(Step::Release { out, key, token });
    }

    fn v3_owner(&mut self, now: Instant) {
        let prefix = self.prefix();
        let request = self.send(self.pick(now), |e, _| wire::owner(e, &prefix));
        let out = self.out(request, now);
        self.set_v3(Step::Owner(out));
    }

    /// Takes `next` (from [`Then::V3`]).
    pub(super) fn v3_then(&mut self, next: Next, now: Instant) {
        match next {
            Next::Start => self.v3_write(now),
            Next::Take => self.v3_lease_then_take(now),
            Next::Ahead(own) => self.v3_ahead(own, now),
            Next::Release(key, token) => self.v3_release(key, token, now),
            Next::Owner => self.v3_owner(now),
        }
    }

    // ----- answers ----------------------------------------------------------------------------

    /// The answer to the running command's v3 request (`sent`: false when it never reached
    /// etcd).
    pub(super) fn on_v3_reply(
        &mut self,
        step: Step,
        response: Result<&http::Response<Vec<u8>>, Error>,
        sent: bool,
        now: Instant,
    ) {
        let next = step.again();
        if let Step::Wait { probe, .. } = &step {
            if let Some(probe) = probe.request() {
                self.cancel_request(probe); // the wait is over, one way or another
            }
        }
        let response = match response {
            Ok(response) => response,
            Err(error) => return self.v3_failed(next, Failed::Retry(error), sent, now),
        };
        match step {
            Step::Grant(out) => match wire::parse_grant(response) {
                Ok(granted) if granted.ttl > 0 => {
                    self.v3_answered();
                    let ttl = self.own_lease_ttl(granted.ttl);
                    self.lease = Some(Lease {
                        id: granted.id,
                        alive_until: out.sent_at + ttl,
                        since: out.sent_at,
                    });
                    self.v3_take(now)
                }
                Ok(_) => self.v3_failed(
                    next.clone(),
                    Failed::Retry(protocol("grant", "TTL 0")),
                    sent,
                    now,
                ),
                Err(failure) => self.v3_failed(next.clone(), self.failed_from(failure), sent, now),
            },
            Step::KeepAlive(out) => match wire::parse_keep_alive(response) {
                Ok(kept) if kept.ttl > 0 => {
                    self.v3_answered();
                    let ttl = self.own_lease_ttl(kept.ttl);
                    if let Some(lease) = self.lease.as_mut().filter(|l| l.id == kept.id) {
                        lease.alive_until = lease.alive_until.max(out.sent_at + ttl);
                        lease.since = lease.since.max(out.sent_at);
                    }
                    self.v3_kept_alive(now)
                }
                // TTL 0: the lease is gone.
                Ok(_) => self.v3_failed(next.clone(), Failed::LeaseGone, sent, now),
                Err(failure) => self.v3_failed(next.clone(), self.failed_from(failure), sent, now),
            },
            Step::Take(_) => match wire::parse_txn(response) {
                Ok(txn) => {
                    self.v3_answered();
                    self.on_take(txn, now)
                }
                Err(failure) => self.v3_failed(next.clone(), self.failed_from(failure), sent, now),
            },
            Step::Ahead { own, .. } => match wire::parse_txn(response) {
                Ok(txn) => {
                    self.v3_answered();
                    self.on_ahead(own, txn, now)
                }
                Err(failure) => self.v3_failed(next.clone(), self.failed_from(failure), sent, now),
            },
            Step::Release { token, .. } => match wire::parse_txn(response) {
                Ok(txn) if txn.succeeded => self.done(Ok(Outcome::Unlocked), now),
                Ok(_) => {
                    // Not there with the hold's revision: released by an attempt of ours whose
                    // answer was lost, or gone with the lease.
                    let lost = self
                        .running
                        .as_ref()
                        .is_some_and(|r| r.lost_write.is_some());
                    let key = self.config.key().as_str().to_owned();
                    let _ = token;
                    let result = if lost {
                        Ok(Outcome::Unlocked)
                    } else {
                        Err(Error::LockNotOwned { key })
                    };
                    self.finish(result, now)
                }
                Err(failure) => self.v3_failed(next.clone(), self.failed_from(failure), sent, now),
            },
            Step::Check { token, .. } => match wire::parse_range(response) {
                Ok(range) if range.kvs.first().map(|kv| kv.create_revision) == Some(token) => {
                    match self.lease {
                        Some(lease) => {
                            let fence = self.v3_hold(token, lease);
                            self.done(Ok(Outcome::Renewed(fence)), now)
                        }
                        None => self.v3_failed(next.clone(), Failed::LeaseGone, sent, now),
                    }
                }
                Ok(_) => {
                    self.lose(LostReason::NotOwned);
                    let key = self.config.key().as_str().to_owned();
                    self.finish(Err(Error::LockNotOwned { key }), now)
                }
                Err(failure) => self.v3_failed(next.clone(), self.failed_from(failure), sent, now),
            },
            Step::Owner(_) => match wire::parse_range(response) {
                Ok(range) => self.on_owner(range.kvs.into_iter().next(), now),
                Err(failure) => self.v3_failed(next.clone(), self.failed_from(failure), sent, now),
            },
            Step::HolderTtl { holder, .. } => match wire::parse_time_to_live(response) {
                // -1: the lease is gone (the key with it, since the read).
                Ok(lease) => self.read_done(holder, Some(lease_ttl(lease.ttl)), now),
                Err(failure) => self.v3_failed(next.clone(), self.failed_from(failure), sent, now),
            },
            // A watch answered as a whole: it ended (the member closed it). Look again.
            Step::Wait { own, .. } => {
                let delay = self.config.watch_retry().0;
                self.pause(delay, Then::V3(Next::Ahead(own)), now)
            }
        }
    }

    /// etcd answered a step of the running command: the failures before are over. The next
    /// failure is retried at once on another member again, and a waiting acquire's back-off
    /// starts again from its minimum (without this, an acquire that waited through an outage —
    /// where a member without a leader refuses at once, so failures pile up fast — went on
    /// pausing the longest back-off after each failure once etcd was back, and no longer moved
    /// to another member at once: DST v3 seeds 2288, 79828).
    fn v3_answered(&mut self) {
        if let Some(running) = self.running.as_mut() {
            running.failures = 0;
            running.retries = 0;
        }
    }

    /// The lease was kept alive: a renew is done; a lock or acquire goes on to its take.
    fn v3_kept_alive(&mut self, now: Instant) {
        let Some(kind) = self.running.as_ref().map(|r| r.kind) else {
            return;
        };
        if kind != Kind::Renew {
            return self.v3_take(now);
        }
        match (self.held, self.lease) {
            (Some(held), Some(lease)) => {
                // The lease lives; the hold is renewed only if my key is still the one it
                // holds (a key deleted by hand, or released by another client of this node id,
                // is not brought back by a keep-alive).
                let (key, token) = (self.own_key(lease.id), held.fence.token as i64);
                let request = self.send(self.pick(now), |e, _| wire::get(e, &key));
                let out = self.out(request, now);
                self.set_v3(Step::Check { out, token });
            }
            _ => {
                let key = self.config.key().as_str().to_owned();
                self.finish(Err(Error::LockNotOwned { key }), now)
            }
        }
    }

    /// The hold `token` earns under `lease`: valid until the lease may expire, less the safety
    /// margin. Applied by [`finish`](Lock::finish).
    fn v3_hold(&mut self, token: i64, lease: Lease) -> Fence {
        let margin = self.config.safety_margin();
        let fence = Fence {
            token: token as u64,
            valid_until: lease.alive_until.checked_sub(margin).unwrap_or(lease.since),
        };
        if let Some(running) = self.running.as_mut() {
            running.earned = Some(Held {
                fence,
                modified: token as u64,
                sent_at: lease.since,
            });
        }
        fence
    }

    fn on_take(&mut self, txn: wire::TxnReply, now: Instant) {
        let revision = txn.header.revision;
        let (own, owner) = match txn.acquire() {
            Ok(found) => (found.own_revision, found.owner),
            Err(failure) => {
                let failed = self.failed_from(failure);
                return self.v3_failed(Next::Take, failed, true, now);
            }
        };
        let Some(lease) = self.lease else {
            return self.v3_grant(now);
        };
        if owner.as_ref().is_some_and(|o| o.create_revision == own) {
            let fence = self.v3_hold(own, lease);
            return self.v3_taken(fence, now);
        }
        let kind = self.running.as_ref().map(|r| r.kind);
        match kind {
            Some(Kind::Acquire { .. }) => self.v3_ahead(own, now),
            _ => {
                // Someone else holds it: my key leaves the queue before the answer (so that
                // the next command of this lock never meets it).
                self.queue_v3_release(own);
                let key = self.config.key().as_str().to_owned();
                self.finish(
                    Err(Error::AlreadyLocked {
                        key,
                        index: revision.max(0) as u64,
                    }),
                    now,
                )
            }
        }
    }

    fn v3_taken(&mut self, fence: Fence, now: Instant) {
        let outcome = match self.running.as_ref().map(|r| r.kind) {
            Some(Kind::Lock) => Outcome::Locked(fence),
            _ => Outcome::Acquired(fence),
        };
        self.done(Ok(outcome), now)
    }

    fn on_ahead(&mut self, own: i64, txn: wire::TxnReply, now: Instant) {
        if !txn.succeeded {
            // My key is gone (the lease expired while waiting): from the start.
            self.lease = None;
            return self.retry_acquire(now);
        }
        let revision = txn.header.revision;
        match txn.ahead() {
            Ok(None) => {
                let Some(lease) = self.lease else {
                    return self.retry_acquire(now);
                };
                if let Some(running) = self.running.as_mut() {
                    running.released_at.get_or_insert(now);
                }
                let fence = self.v3_hold(own, lease);
                self.v3_taken(fence, now)
            }
            Ok(Some(ahead)) if !self.is_ours_to_name(&ahead) => {
                let error = protocol("ahead", "a key outside the lock, or without a revision");
                self.v3_failed(Next::Ahead(own), Failed::Retry(error), true, now)
            }
            Ok(Some(ahead)) => {
                if let Some(stop) = self.acquire_over(now) {
                    self.queue_v3_release(own);
                    return self.finish(Err(stop), now);
                }
                self.v3_wait(
                    ahead.key,
                    ahead.create_revision,
                    own,
                    revision.saturating_add(1),
                    now,
                )
            }
            Err(failure) => {
                let failed = self.failed_from(failure);
                self.v3_failed(Next::Ahead(own), failed, true, now)
            }
        }
    }

    fn on_owner(&mut self, owner: Option<Kv>, now: Instant) {
        let kind = self.running.as_ref().map(|r| r.kind);
        if kind == Some(Kind::Read) {
            return match owner {
                // Its lease's time to live is the hold's.
                Some(kv) if kv.lease != 0 => {
                    let lease = kv.lease;
                    let request = self.send(self.pick(now), |e, _| wire::time_to_live(e, lease));
                    let out = self.out(request, now);
                    self.set_v3(Step::HolderTtl { out, holder: kv });
                }
                Some(kv) => self.read_done(kv, None, now),
                None => self.finish(Ok(Outcome::Read(None)), now),
            };
        }
        // An unlock that knew no hold: the owner's key is released if it is this node id's.
        let me = self.config.node_id().as_str().as_bytes();
        match owner {
            Some(kv) if kv.value == me && self.is_ours_to_name(&kv) => {
                self.v3_release(kv.key, kv.create_revision, now)
            }
            _ => {
                let key = self.config.key().as_str().to_owned();
                self.finish(Err(Error::LockNotOwned { key }), now)
            }
        }
    }

    /// A read is done: `holder` holds, with `ttl_left` (none for a key without a lease).
    fn read_done(&mut self, holder: Kv, ttl_left: Option<Duration>, now: Instant) {
        let holder = Holder {
            node_id: String::from_utf8_lossy(&holder.value).into_owned(),
            token: holder.create_revision.max(0) as u64,
            modified_index: holder.mod_revision.max(0) as u64,
            ttl_left,
        };
        self.finish(Ok(Outcome::Read(Some(holder))), now)
    }

    /// A message of the waiting acquire's watch.
    pub(crate) fn on_v3_wait_message(
        &mut self,
        id: RequestId,
        message: Result<WatchMessage, wire::Failure>,
        now: Instant,
    ) {
        let Some(Phase::V3(Step::Wait { request, own, .. })) =
            self.running.as_ref().map(|r| &r.phase)
        else {
            return;
        };
        if *request != id {
            return;
        }
        let own = *own;
        let ahead_gone = match &message {
            Ok(m) if m.canceled || m.compact_revision > 0 => true,
            Ok(m) => m.events.iter().any(|e| e.kind == wire::EventKind::Delete),
            Err(_) => true,
        };
        if let Ok(m) = &message {
            if m.created {
                return; // the watch is in place
            }
        }
        if ahead_gone {
            let requests: Vec<RequestId> = self.running.iter().flat_map(|r| r.requests()).collect();
            for request in requests {
                self.cancel_request(request);
            }
            self.v3_ahead(own, now);
        }
    }

    /// A failed answer to `step`.
    fn v3_failed(&mut self, next: Next, failed: Failed, sent: bool, now: Instant) {
        let kind = self.running.as_ref().map(|r| r.kind);
        match failed {
            Failed::Refused(error) => self.finish(Err(error), now),
            // A read uses no lease: such an answer is not etcd's.
            Failed::LeaseGone if kind == Some(Kind::Read) => {
                let error = protocol("read", "lease not found");
                self.v3_failed(next, Failed::Retry(error), sent, now)
            }
            Failed::LeaseGone => {
                self.lease = None;
                match kind {
                    Some(Kind::Renew) => {
                        // Revoked (or expired on etcd's side): the hold is not ours any more.
                        self.lose(LostReason::NotOwned);
                        let key = self.config.key().as_str().to_owned();
                        self.finish(Err(Error::LockNotOwned { key }), now)
                    }
                    Some(Kind::Lock | Kind::Acquire { .. }) => self.v3_grant(now),
                    _ => {
                        let key = self.config.key().as_str().to_owned();
                        self.finish(Err(Error::LockNotOwned { key }), now)
                    }
                }
            }
            Failed::Retry(error) => {
                if sent {
                    if let Some(running) = self.running.as_mut() {
                        running.lost_write = Some(error.clone());
                    }
                }
                if self.go_on(Then::V3(next), now) {
                    return;
                }
                match kind {
                    Some(Kind::Acquire { .. }) => self.retry_acquire(now),
                    Some(Kind::Unlock { .. }) => {
                        // The release may still be applied later, pinned to this key's create
                        // revision: the lease (and the key) must never be taken again. It is
                        // revoked in the background and forgotten; the next lock gets another.
                        self.v3_revoke(now);
                        self.finish(Err(error), now)
                    }
                    _ => self.finish(Err(error), now),
                }
            }
        }
    }

    /// Queues, ahead of everything, the release of my key `own` (a try-lock that found the
    /// lock held, an acquire that stopped waiting): the next command runs after it.
    pub(super) fn queue_v3_release(&mut self, own: i64) {
        let op = self.new_op();
        self.queue.push_front(super::Queued {
            op,
            kind: Kind::Unlock {
                token: Some(own as u64),
                modified: Some(own as u64),
            },
            caller: false,
        });
    }

    /// Routes an answer (or failure) on v3 to whoever waits for it.
    pub(crate) fn route_v3(
        &mut self,
        id: RequestId,
        response: Result<&http::Response<Vec<u8>>, Error>,
        sent: bool,
        now: Instant,
    ) {
        if self.is_token_request(id) {
            return self.on_token(response, now);
        }
        let running = self.running.as_ref();
        if running.and_then(Running::request) == Some(id) {
            let phase = self.running.as_mut().map(|r| {
                std::mem::replace(
                    &mut r.phase,
                    Phase::Pause {
                        until: now,
                        then: Then::Write,
                    },
                )
            });
            match phase {
                Some(Phase::V3(step)) => self.on_v3_reply(step, response, sent, now),
                Some(phase) => {
                    if let Some(running) = self.running.as_mut() {
                        running.phase = phase;
                    }
                }
                None => {}
            }
        } else if running.and_then(Running::probe) == Some(id) {
            self.on_v3_probe(response, now);
        } else if matches!(self.v3_keepalive, Some(KeepAlive::Out(r, ..)) if r == id) {
            self.on_v3_lease_kept(response, now);
        } else if self.watch.request() == Some(id) || self.watch.probe() == Some(id) {
            self.on_v3_events_reply(id, response, now);
        } else if self.v3_revoking.iter().any(|(r, _)| *r == id) {
            self.v3_revoking.retain(|(r, _)| *r != id); // revoked, or it expires by itself
        }
    }

    /// `destroy()`: the lease is revoked, and every key of this lock with it (waiting or
    /// holding); the machine stops once that is answered or its request timed out.
    /// Stops keeping a waiting acquire's lease alive: a keep-alive still out is cancelled (on
    /// `destroy()`, whose revoke must be the only request left; the `responses_v3` fuzz target
    /// found the keep-alive left in flight).
    pub(crate) fn v3_stop_keepalive(&mut self) {
        if let Some(KeepAlive::Out(request, ..)) = self.v3_keepalive.take() {
            self.cancel_request(request);
        }
    }

    pub(crate) fn v3_revoke(&mut self, now: Instant) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let request = self.send(self.pick(now), |e, _| wire::revoke(e, lease.id));
        self.v3_revoking
            .push((request, now + self.config.request_timeout()));
    }

    /// When the waiting acquire's lease is next kept alive (or its keep-alive times out).
    /// Not waiting any more, a keep-alive still out is due at its deadline at the latest (then
    /// cancelled), so it is never left outstanding without a timer (the `responses_v3` fuzz
    /// target: after a cancelled acquire).
    pub(crate) fn v3_lease_timer(&self) -> Option<Instant> {
        let Some(lease) = self.kept_alive_lease() else {
            return match self.v3_keepalive {
                Some(KeepAlive::Out(_, _, deadline)) => Some(deadline),
                _ => None,
            };
        };
        Some(match self.v3_keepalive {
            Some(KeepAlive::At(at)) => at,
            Some(KeepAlive::Out(_, _, deadline)) => deadline,
            None => lease.since + self.config.ttl() / 3,
        })
    }

    /// The lease a waiting acquire keeps alive: only while it waits, and has one.
    fn kept_alive_lease(&self) -> Option<Lease> {
        self.v3_waiting_key().and(self.lease)
    }

    pub(crate) fn v3_lease_timers(&mut self, now: Instant) {
        if self.kept_alive_lease().is_none() {
            // Not waiting any more: a keep-alive still out is not wanted.
            self.v3_stop_keepalive();
            return;
        }
        let Some(due) = self.v3_lease_timer() else {
            return;
        };
        if due > now {
            return;
        }
        if let Some(KeepAlive::Out(request, ..)) = self.v3_keepalive {
            self.request_timed_out(request, now);
            self.v3_keepalive = Some(KeepAlive::At(now + self.config.ttl() / 12));
            return;
        }
        let Some(lease) = self.lease_id() else {
            return;
        };
        let request = self.send(self.pick(now), |e, _| wire::keep_alive(e, lease));
        let deadline = now + self.config.request_timeout();
        self.v3_keepalive = Some(KeepAlive::Out(request, now, deadline));
    }

    /// The answer to the waiting acquire's keep-alive.
    fn on_v3_lease_kept(
        &mut self,
        response: Result<&http::Response<Vec<u8>>, Error>,
        now: Instant,
    ) {
        let Some(KeepAlive::Out(_, sent_at, _)) = self.v3_keepalive.take() else {
            return;
        };
        let kept = match response {
            Ok(response) => wire::parse_keep_alive(response).map_err(|f| self.failed_from(f)),
            Err(error) => Err(Failed::Retry(error)),
        };
        match kept {
            Ok(kept) if kept.ttl > 0 => {
                let ttl = self.own_lease_ttl(kept.ttl);
                if let Some(lease) = self.lease.as_mut().filter(|l| l.id == kept.id) {
                    lease.alive_until = lease.alive_until.max(sent_at + ttl);
                    lease.since = lease.since.max(sent_at);
                }
            }
            Ok(_) | Err(Failed::LeaseGone) => {
                // The lease, and my key with it, are gone: the acquire starts over.
                self.lease = None;
                if self.v3_waiting_key().is_some() {
                    let requests: Vec<RequestId> =
                        self.running.iter().flat_map(|r| r.requests()).collect();
                    for request in requests {
                        self.cancel_request(request);
                    }
                    self.retry_acquire(now);
                }
            }
            Err(_) => self.v3_keepalive = Some(KeepAlive::At(now + self.config.ttl() / 12)),
        }
    }

    /// The revision of my key while an acquire waits with it (or pauses between two looks).
    pub(super) fn v3_waiting_key(&self) -> Option<i64> {
        match &self.running.as_ref()?.phase {
            Phase::V3(Step::Wait { own, .. } | Step::Ahead { own, .. }) => Some(*own),
            Phase::Pause {
                then: Then::V3(Next::Ahead(own)),
                ..
            } => Some(*own),
            _ => None,
        }
    }

    /// The running v3 step's timers.
    pub(super) fn v3_timers(&mut self, now: Instant) {
        let Some(Phase::V3(step)) = self.running.as_ref().map(|r| &r.phase) else {
            return;
        };
        match step {
            Step::Wait {
                key, own, probe, ..
            } => {
                let (key, own, probe) = (key.clone(), *own, *probe);
                match probe.due(now) {
                    Due::Nothing => {}
                    Due::Send => {
                        let read = self.send(probe.member, |e, _| wire::get(e, &key));
                        if let Some(Phase::V3(Step::Wait { probe, .. })) =
                            self.running.as_mut().map(|r| &mut r.phase)
                        {
                            probe.sent(read, &self.config, now);
                        }
                    }
                    Due::Expired(read) => {
                        self.request_timed_out(read, now);
                        if let Some(request) = self.running.as_ref().and_then(|r| r.request()) {
                            self.cancel_request(request);
                        }
                        let _ = key;
                        self.v3_ahead(own, now);
                    }
                }
            }
            step if step.timer() <= now => {
                let out = step.out().expect("not a wait");
                self.request_timed_out(out.request, now);
                // The attempt's own bound (as on v2), not how late the timer ran.
                let after = out.deadline.saturating_duration_since(out.sent_at);
                let Some(Phase::V3(step)) = self.running.as_mut().map(|r| {
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
                self.v3_failed(
                    step.again(),
                    Failed::Retry(Error::Timeout { after }),
                    true,
                    now,
                );
            }
            _ => {}
        }
    }

    /// The answer to the waiting acquire's liveness probe (a read of the key ahead on the
    /// watch's member).
    pub(super) fn on_v3_probe(
        &mut self,
        response: Result<&http::Response<Vec<u8>>, Error>,
        now: Instant,
    ) {
        let Some(Phase::V3(Step::Wait {
            own,
            ahead,
            mut probe,
            request,
            ..
        })) = self.running.as_ref().map(|r| &r.phase)
        else {
            return;
        };
        let (own, ahead, request) = (*own, *ahead, *request);
        let read = response.ok().map(wire::parse_range);
        match read {
            // Still there: the same key (its create revision), not one made again since.
            Some(Ok(range)) if range.kvs.first().map(|kv| kv.create_revision) == Some(ahead) => {
                probe.answered(&self.config, now);
                if let Some(Phase::V3(Step::Wait { probe: p, .. })) =
                    self.running.as_mut().map(|r| &mut r.phase)
                {
                    *p = probe;
                }
            }
            // Gone (the watch has not said so), or the member cannot answer: look again.
            _ => {
                self.cancel_request(request);
                self.v3_ahead(own, now);
            }
        }
    }
}

impl Lock {
    /// What this lock counts on from its own lease's TTL as etcd answered it: never more than
    /// the TTL it asked for, or etcd's default minimum when it asked for less. etcd grants the
    /// TTL asked for, raised to its minimum (`⌈1.5 × election timeout⌉`, 2 s by default): a
    /// larger answer is not believed, so a hold is never assumed much longer than configured
    /// (the `responses_v3` fuzz target: a grant of `"TTL":"9000000000"` made a fence valid for
    /// the longest TTL), while a 1 s lock on a default etcd still counts on the 2 s its lease
    /// really has (capped at 1 s, its keep-alives had too little time on a slow network: the
    /// `races` fuzz target's v3 worlds then never handed the lock over).
    fn own_lease_ttl(&self, secs: i64) -> Duration {
        lease_ttl(secs).min(self.config.ttl().max(ETCD_MIN_LEASE_TTL))
    }
}

/// etcd's minimum lease TTL with its default election timeout (1 s): `⌈1.5 × 1 s⌉`.
const ETCD_MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// A lease TTL etcd answered, as a duration: never more than the longest TTL a lock asks for
/// (a larger answer could only shorten what a hold assumes), so that no instant overflows.
fn lease_ttl(secs: i64) -> Duration {
    Duration::from_secs(secs.max(0) as u64).min(crate::MAX_TTL)
}

fn protocol(what: &str, why: &str) -> Error {
    Error::Protocol {
        reason: format!("v3 {what} answer: {why}"),
    }
}
