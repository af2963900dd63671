//! Watch liveness: a long poll cannot tell a quiet key from a member that stopped serving it
//! (hung, dead behind a kept-open connection, or cut off from its peers, so that nothing is
//! ever committed there). While a watch waits, its member is probed with a quorum read every
//! half of [`Config::watch_liveness`], each allowed half of it: a probe that fails or is not
//! answered in time moves the watch to another member, from the index it waits for (etcd
//! replays the events since from its history), so no event is lost and a release is seen
//! within about the liveness bound.
//!
//! Why a *quorum* read: it goes through raft, so a member cut off from its peers cannot answer
//! it (a plain read would be answered from its stale store). A member that answers it has
//! applied everything committed before it, so its watches have fired for every earlier event.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::lock::RequestId;

/// The probe of one watch's member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    /// The member the watch (and so the probe) is on.
    pub member: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The next probe is due then.
    Idle { next: Instant },
    /// A probe is out; the member is given up on at `deadline`.
    Out {
        request: RequestId,
        deadline: Instant,
    },
}

/// What the probe's timer means at `now`.
pub(crate) enum Due {
    /// Nothing to do yet.
    Nothing,
    /// Send a probe to the member.
    Send,
    /// The probe went unanswered: move the watch.
    Expired(RequestId),
}

impl Probe {
    /// A watch that just started on `member`.
    pub(crate) fn new(member: usize, config: &Config, now: Instant) -> Probe {
        Probe {
            member,
            state: State::Idle {
                next: now + half(config),
            },
        }
    }

    /// The probe request out, if any.
    pub(crate) fn request(&self) -> Option<RequestId> {
        match self.state {
            State::Out { request, .. } => Some(request),
            State::Idle { .. } => None,
        }
    }

    /// When the probe needs attention next.
    pub(crate) fn timer(&self) -> Instant {
        match self.state {
            State::Idle { next } => next,
            State::Out { deadline, .. } => deadline,
        }
    }

    pub(crate) fn due(&self, now: Instant) -> Due {
        match self.state {
            State::Idle { next } if next <= now => Due::Send,
            State::Out { request, deadline } if deadline <= now => Due::Expired(request),
            _ => Due::Nothing,
        }
    }

    /// A probe was sent.
    pub(crate) fn sent(&mut self, request: RequestId, config: &Config, now: Instant) {
        self.state = State::Out {
            request,
            deadline: now + half(config),
        };
    }

    /// The member answered the probe: the next one in half the bound.
    pub(crate) fn answered(&mut self, config: &Config, now: Instant) {
        self.state = State::Idle {
            next: now + half(config),
        };
    }
}

fn half(config: &Config) -> Duration {
    config.watch_liveness() / 2
}
