//! The event watch: a quorum read to learn the state and the index, then one long poll after
//! another, turning etcd's actions into [`Event`]s. On v3 ([`v3`]): a read of the lock's keys,
//! then one prefix watch whose messages arrive as a stream.

mod v3;

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::event::{Event, LostReason};
use crate::liveness::{Due, Probe};
use crate::lock::{Lock, RequestId};
use crate::observe;
use crate::wire::{self, code, KeyState, Reply};
use crate::{Error, Protocol};

/// What the watch last learned about the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Unknown,
    Free,
    Held { holder: String, token: u64 },
}

#[derive(Debug)]
pub(crate) enum Phase {
    /// Not watching.
    Idle,
    /// A quorum GET to learn the key's state and the index to watch from.
    Reading {
        request: RequestId,
        deadline: Instant,
    },
    /// A long poll for the first event at `index` or later; its member is probed.
    Waiting {
        request: RequestId,
        index: u64,
        probe: Probe,
    },
    /// Waiting `until` before trying again after a failure.
    Backoff { until: Instant, resume: Resume },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Resume {
    Read,
    Watch(u64),
}

/// The watch's state.
#[derive(Debug)]
pub(crate) struct Watch {
    pub wanted: bool,
    pub(crate) phase: Phase,
    pub(crate) seen: Seen,
    retry_delay: Duration,
    /// v3: the lock's keys, by create revision (the lowest holds): its key and value.
    pub(crate) keys: std::collections::BTreeMap<i64, (Vec<u8>, String)>,
}

impl Watch {
    pub(crate) fn new(config: &Config) -> Watch {
        Watch {
            wanted: false,
            phase: Phase::Idle,
            seen: Seen::Unknown,
            retry_delay: config.watch_retry().0,
            keys: std::collections::BTreeMap::new(),
        }
    }

    pub(crate) fn reset_retry(&mut self, config: &Config) {
        self.retry_delay = config.watch_retry().0;
    }

    pub(crate) fn request(&self) -> Option<RequestId> {
        match self.phase {
            Phase::Reading { request, .. } | Phase::Waiting { request, .. } => Some(request),
            Phase::Idle | Phase::Backoff { .. } => None,
        }
    }

    /// The liveness probe out, if any.
    pub(crate) fn probe(&self) -> Option<RequestId> {
        match self.phase {
            Phase::Waiting { probe, .. } => probe.request(),
            _ => None,
        }
    }

    pub(crate) fn timer(&self) -> Option<Instant> {
        match self.phase {
            Phase::Reading { deadline, .. } => Some(deadline),
            Phase::Backoff { until, .. } => Some(until),
            Phase::Waiting { probe, .. } => Some(probe.timer()),
            Phase::Idle => None,
        }
    }

    pub(crate) fn observed_holder(&self) -> Option<&str> {
        match &self.seen {
            Seen::Held { holder, .. } => Some(holder),
            _ => None,
        }
    }

    pub(crate) fn current_state_event(&self) -> Option<Event> {
        match &self.seen {
            Seen::Held { holder, token } if self.wanted => Some(Event::Locked {
                holder: holder.clone(),
                token: *token,
            }),
            _ => None,
        }
    }
}

impl Lock {
    pub(crate) fn stop_watch(&mut self) {
        for request in [self.watch.request(), self.watch.probe()]
            .into_iter()
            .flatten()
        {
            self.cancel_request(request);
        }
        self.watch.phase = Phase::Idle;
        self.watch.seen = Seen::Unknown;
        self.watch.keys.clear();
    }

    pub(crate) fn start_read(&mut self, now: Instant) {
        self.discover(now);
        let request = match self.config.protocol() {
            Protocol::V3 => self.v3_events_read(now),
            _ => self.send(self.pick(now), wire::read),
        };
        self.watch.phase = Phase::Reading {
            request,
            deadline: now + self.config.request_timeout(),
        };
    }

    fn start_watch(&mut self, index: u64, now: Instant) {
        let member = self.pick(now);
        let request = match self.config.protocol() {
            Protocol::V3 => self.v3_events_watch(member, index),
            _ => self.send(member, |e, c| wire::watch(e, c, index)),
        };
        self.watch.phase = Phase::Waiting {
            request,
            index,
            probe: Probe::new(member, &self.config, now),
        };
    }

    /// The watch's member stopped serving it: the same long poll on another member.
    pub(crate) fn move_watch(&mut self, index: u64, now: Instant) {
        for request in [self.watch.request(), self.watch.probe()]
            .into_iter()
            .flatten()
        {
            self.cancel_request(request);
        }
        let member = self.members.endpoint(self.pick(now)).as_str();
        observe::watch(
            "the member under the watch failed its liveness probe: moved",
            member,
            Some(index),
        );
        self.start_watch(index, now);
    }

    /// The answer to a liveness probe: a clear read keeps the watch where it is; anything
    /// else moves it.
    pub(crate) fn on_watch_probe(&mut self, reply: Result<Reply, Error>, now: Instant) {
        let Phase::Waiting {
            index, mut probe, ..
        } = self.watch.phase
        else {
            return;
        };
        if KeyState::from_read(reply).is_some() {
            probe.answered(&self.config, now);
            if let Phase::Waiting { probe: p, .. } = &mut self.watch.phase {
                *p = probe;
            }
        } else {
            self.move_watch(index, now);
        }
    }

    pub(crate) fn watch_backoff(&mut self, resume: Resume, now: Instant) {
        let (_, max) = self.config.watch_retry();
        let delay = self.watch.retry_delay;
        let (why, index) = match resume {
            Resume::Read => ("the watch failed: read the key again after a pause", None),
            Resume::Watch(index) => ("the long poll ended: again after a pause", Some(index)),
        };
        observe::watch(why, self.members.endpoint(self.pick(now)).as_str(), index);
        self.watch.retry_delay = (delay * 2).min(max);
        self.watch.phase = Phase::Backoff {
            until: now + delay,
            resume,
        };
    }

    pub(crate) fn watch_timers(&mut self, now: Instant) {
        match self.watch.phase {
            Phase::Reading { request, deadline } if deadline <= now => {
                self.request_timed_out(request, now);
                self.watch_backoff(Resume::Read, now);
            }
            Phase::Backoff { until, resume } if until <= now => match resume {
                Resume::Read => self.start_read(now),
                Resume::Watch(index) => self.start_watch(index, now),
            },
            Phase::Waiting {
                index, mut probe, ..
            } => match probe.due(now) {
                Due::Nothing => {}
                Due::Send => {
                    let request = match self.config.protocol() {
                        Protocol::V3 => self.v3_events_probe(probe.member),
                        _ => self.send(probe.member, wire::read),
                    };
                    probe.sent(request, &self.config, now);
                    if let Phase::Waiting { probe: p, .. } = &mut self.watch.phase {
                        *p = probe;
                    }
                }
                Due::Expired(request) => {
                    self.request_timed_out(request, now);
                    self.move_watch(index, now);
                }
            },
            _ => {}
        }
    }

    pub(crate) fn on_watch_reply(
        &mut self,
        id: RequestId,
        reply: Result<Reply, Error>,
        now: Instant,
    ) {
        match self.watch.phase {
            Phase::Reading { request, .. } if request == id => self.on_read(reply, now),
            Phase::Waiting {
                request,
                index,
                probe,
            } if request == id => {
                if let Some(probe) = probe.request() {
                    self.cancel_request(probe); // the member answered: no need to ask
                }
                self.on_poll(index, reply, now)
            }
            _ => {}
        }
    }

    /// The quorum GET that (re)starts a watch: learn the state and where to watch from.
    fn on_read(&mut self, reply: Result<Reply, Error>, now: Instant) {
        let (seen, index) = match KeyState::from_read(reply) {
            Some(KeyState::Absent { index }) => (Seen::Free, index),
            // A directory at the lock key: nobody holds the lock.
            Some(KeyState::Present { value, .. }) if value.is_empty() => {
                return self.watch_backoff(Resume::Read, now)
            }
            Some(KeyState::Present {
                value,
                created,
                index,
                ..
            }) => (
                Seen::Held {
                    holder: value,
                    token: created,
                },
                index,
            ),
            None => return self.watch_backoff(Resume::Read, now),
        };
        self.watch.reset_retry(&self.config);
        let before = std::mem::replace(&mut self.watch.seen, seen.clone());
        match (before, seen) {
            // A new watch: subscribers learn the current holder first.
            (Seen::Unknown, Seen::Held { holder, token }) => {
                self.observe(Event::Locked { holder, token }, token)
            }
            (Seen::Unknown, _) => {}
            (a, b) if a == b => {}
            // After a resync, report what changed while we were not looking.
            (before, after) => {
                if let Seen::Held { holder, .. } = before {
                    let event = Event::Unlocked {
                        previous_holder: Some(holder),
                        expired: false,
                    };
                    self.observe(event, index);
                }
                if let Seen::Held { holder, token } = after {
                    self.observe(Event::Locked { holder, token }, token);
                }
            }
        }
        self.start_watch(index.saturating_add(1), now);
    }

    /// The answer to a long poll: one event, an empty close, or an error.
    fn on_poll(&mut self, index: u64, reply: Result<Reply, Error>, now: Instant) {
        match reply {
            Ok(Reply::Action { action, .. }) => {
                let Some(node) = action.node else {
                    return self.watch_backoff(Resume::Read, now);
                };
                let Some(modified) = node.modified_index else {
                    return self.watch_backoff(Resume::Read, now);
                };
                match action.action.as_str() {
                    "create" | "set" | "update" | "compareAndSwap" => {
                        let (Some(holder), Some(token)) = (node.value, node.created_index) else {
                            return self.watch_backoff(Resume::Read, now);
                        };
                        self.watch.seen = Seen::Held {
                            holder: holder.clone(),
                            token,
                        };
                        self.observe(Event::Locked { holder, token }, modified);
                    }
                    "delete" | "compareAndDelete" | "expire" => {
                        self.watch.seen = Seen::Free;
                        let previous_holder = action.prev_node.and_then(|n| n.value);
                        let expired = action.action == "expire";
                        let event = Event::Unlocked {
                            previous_holder,
                            expired,
                        };
                        self.observe(event, modified);
                    }
                    // Anything else (e.g. a directory operation) says nothing about the lock.
                    _ => {}
                }
                self.watch.reset_retry(&self.config);
                self.start_watch(modified.max(index).saturating_add(1), now);
            }
            // The member ended the long poll without an event: ask again from the same index.
            Ok(Reply::Empty) => self.watch_backoff(Resume::Watch(index), now),
            Ok(Reply::Error { error, .. }) if error.code == code::EVENT_INDEX_CLEARED => {
                self.start_read(now)
            }
            Err(Error::Transport { .. }) => self.watch_backoff(Resume::Watch(index), now),
            Ok(Reply::Error { .. }) | Err(_) => self.watch_backoff(Resume::Read, now),
        }
    }

    /// Emits `event` (which happened at etcd index `at`) after ending our hold if it shows
    /// the key taken by a later holder, or released after we took it.
    pub(crate) fn observe(&mut self, event: Event, at: u64) {
        if let Some(held) = self.held {
            let superseded = match &event {
                Event::Locked { token, .. } => *token > held.fence.token,
                Event::Unlocked { .. } => at > held.fence.token,
                _ => false,
            };
            if superseded {
                self.lose(LostReason::Superseded);
            }
        }
        self.emit(event);
    }
}
