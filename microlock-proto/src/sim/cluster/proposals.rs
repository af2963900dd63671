//! Raft proposals that could not commit when they arrived (no quorum, or through a member cut
//! off from its peers): their timeouts, their fates (commit when quorum is back, later, or
//! never) and their late commits. The same for both protocols; the store says what a timeout
//! answers ([`Backend::timeout_response`](super::backend::Backend::timeout_response)).

use http::Request;

use super::{
    clone_request, dur, Delivery, MemberState, NoteKind, SimCluster, LATE_COMMIT_MAX, LIMBO_MAX,
};
use crate::sim::etcd::{EventStamp, ServeOpts};

use super::backend::Answer;

#[derive(Debug)]
pub(super) struct Proposal {
    pub(super) id: u64,
    pub(super) member: usize,
    request: Request<Vec<u8>>,
    received: i128,
    deadline: i128,
    /// The client still waits for the answer.
    pub(super) waiting: bool,
    /// Arrived through a member cut off from its peers.
    isolated: bool,
    /// Why it could not commit when it arrived.
    stall: Stall,
    fate: Fate,
}

/// Why a proposal did not commit at once: what its fate can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// The leader is up but has no majority: the entry is in its log and commits when a
    /// majority is back (or is lost if the leader is deposed meanwhile).
    Appended,
    /// Forwarded to a hung leader (or through a cut link): it may commit when that
    /// member comes back, at once or seconds later, or never.
    Kept,
    /// No leader, or a dead one: raft drops the proposal (etcd's v2 handler ignores the error
    /// and answers the timeout).
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Waits for quorum (and for its member to reach the leader).
    Undecided,
    /// Commits then (if quorum holds then; else it is dropped).
    CommitAt(i128),
    /// Never commits; kept only to answer its timeout.
    Dropped,
}

impl SimCluster {
    /// Request `id` needs raft at member `m` and cannot commit now: it waits.
    pub(super) fn propose(
        &mut self,
        m: usize,
        id: u64,
        req: &Request<Vec<u8>>,
        received: i128,
        isolated: bool,
    ) {
        let stall = if isolated {
            Stall::Kept
        } else if self.quorum_lost {
            Stall::Appended
        } else {
            match self.leader.map(|l| self.members[l].state) {
                Some(MemberState::Up) => Stall::Appended,
                Some(MemberState::Hung | MemberState::Isolated) => Stall::Kept,
                Some(MemberState::Dead) | None => Stall::Lost,
            }
        };
        let fate = if stall == Stall::Lost {
            self.note(id, m, NoteKind::Dropped, req);
            Fate::Dropped
        } else {
            Fate::Undecided
        };
        self.proposals.push(Proposal {
            id,
            member: m,
            request: clone_request(req),
            received,
            deadline: received + self.config.raft_timeout.as_nanos() as i128,
            waiting: true,
            isolated,
            stall,
            fate,
        });
    }

    /// The times at which a proposal has something due.
    pub(super) fn proposals_due(&self, consider: &mut impl FnMut(i128)) {
        for p in &self.proposals {
            if p.waiting {
                consider(p.deadline);
            }
            match p.fate {
                Fate::CommitAt(t) => consider(t),
                Fate::Undecided => consider(p.received + LIMBO_MAX.as_nanos() as i128),
                Fate::Dropped => {}
            }
        }
    }

    pub(super) fn step_proposals(&mut self, t: i128) {
        let limbo = LIMBO_MAX.as_nanos() as i128;
        let mut i = 0;
        while i < self.proposals.len() {
            if self.proposals[i].waiting && self.proposals[i].deadline <= t {
                self.proposals[i].waiting = false;
                let cause = self.timeout_cause(i);
                let id = self.proposals[i].id;
                let response = self
                    .store
                    .timeout_response(&self.proposals[i].request, cause);
                self.ready.push_back((id, Delivery::Response(response)));
            }
            let p = &mut self.proposals[i];
            match p.fate {
                Fate::CommitAt(c) if c <= t => {
                    if self.quorum {
                        let p = self.proposals.remove(i);
                        self.commit_proposal(p, t);
                        continue;
                    }
                    p.fate = Fate::Dropped;
                    let (id, m) = (p.id, p.member);
                    let request = clone_request(&p.request);
                    self.note(id, m, NoteKind::Dropped, &request);
                }
                Fate::Undecided if p.received + limbo <= t => {
                    p.fate = Fate::Dropped;
                    let (id, m) = (p.id, p.member);
                    let request = clone_request(&p.request);
                    self.note(id, m, NoteKind::Dropped, &request);
                }
                _ => {}
            }
            if self.proposals[i].fate == Fate::Dropped && !self.proposals[i].waiting {
                self.proposals.remove(i);
                continue;
            }
            i += 1;
        }
    }

    /// Quorum is back: pending proposals learn their fate once their member can reach the
    /// leader (seeded, see the module docs).
    pub(super) fn decide_fates(&mut self, t: i128) {
        let late = LATE_COMMIT_MAX.as_nanos() as u64;
        for i in 0..self.proposals.len() {
            let m = self.proposals[i].member;
            let reachable = matches!(self.members[m].state, MemberState::Up | MemberState::Dead);
            if self.proposals[i].fate != Fate::Undecided || !reachable {
                continue;
            }
            let roll = self.rng.next_u64() % 3;
            self.proposals[i].fate = match (self.proposals[i].stall, roll) {
                (Stall::Appended, 0 | 1) | (Stall::Kept, 0) => Fate::CommitAt(t),
                (Stall::Kept, 1) => Fate::CommitAt(t + (self.rng.next_u64() % (late + 1)) as i128),
                _ => {
                    let (id, request) = (
                        self.proposals[i].id,
                        clone_request(&self.proposals[i].request),
                    );
                    self.note(id, m, NoteKind::Dropped, &request);
                    Fate::Dropped
                }
            };
        }
        self.step_proposals(t);
    }

    fn timeout_cause(&self, i: usize) -> &'static str {
        let p = &self.proposals[i];
        let window = 2 * self.config.election_timeout.as_nanos() as i128;
        match self.last_elected {
            Some(e) if p.received > e - window && p.received < e => {
                "etcdserver: request timed out, possibly due to previous leader failure"
            }
            _ if p.isolated => "etcdserver: request timed out, possibly due to connection lost",
            _ => "etcdserver: request timed out",
        }
    }

    fn commit_proposal(&mut self, p: Proposal, t: i128) {
        let kind = NoteKind::Committed {
            answered: p.waiting,
            received: dur(p.received),
        };
        self.note(p.id, p.member, kind, &p.request);
        let opts = ServeOpts {
            received: Some(self.at(p.received)),
            member_index: None,
            defer_raft: false,
            no_advance: false,
        };
        let before = self.store.index();
        let served = self.store.serve(p.id, &p.request, self.at(t), opts);
        if self.store.index() != before {
            self.log_write(t, p.received, &p.request);
        }
        if let Answer::Now(response, stamp) = served {
            if p.waiting {
                let stamp = stamp.unwrap_or(EventStamp {
                    index: self.store.index(),
                    committed: self.at(t),
                });
                self.deliver(p.member, p.id, Delivery::Response(response), stamp, false);
            }
        }
        self.collect_watches();
    }
}
