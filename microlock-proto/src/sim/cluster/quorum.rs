//! Leader and quorum: elections, the store's pause without quorum, what each member knows of
//! the leader (etcd's `hasleader` check, v3), and the streams a member without a leader ends.

use super::{MemberState, NoteKind, SimCluster};
use crate::sim::cluster::replica::LogEntry;

/// A member that knows no leader ends its streams this many election timeouts after it lost
/// the leader (it notices after one; etcd's `monitorLeader` cancels after three more checks,
/// one per election timeout), plus up to one more (the checks' phase).
const STREAM_CUT_TIMEOUTS: i128 = 4;

impl SimCluster {
    /// Whether member `m` believes it has a leader at `t` (see the module docs).
    pub(super) fn knows_leader_at(&self, m: usize, t: i128) -> bool {
        let e = self.config.election_timeout.as_nanos() as i128;
        self.members[m]
            .lost_leader
            .map_or(true, |lost| t < lost + e)
    }

    /// An election due at `t`: a leader among the up members, if a majority is up.
    pub(super) fn step_election(&mut self, t: i128) {
        if !self.election_at.is_some_and(|e| e <= t) {
            return;
        }
        self.election_at = None;
        if self.leader().is_none() && self.up_count() >= self.majority() {
            let up: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].state == MemberState::Up)
                .collect();
            let pick = up[(self.rng.next_u64() % up.len() as u64) as usize];
            self.leader = Some(pick);
            self.last_elected = Some(t);
            self.elections += 1;
        }
        self.refresh_quorum();
    }

    /// Re-evaluates quorum: elections, the store's pause, the lessor's promotion, the members'
    /// view of the leader, pending proposals.
    pub(super) fn refresh_quorum(&mut self) {
        let t = self.now;
        let ok = self.has_quorum();
        if !ok && !self.quorum_lost && self.leader().is_none() {
            if self.up_count() >= self.majority() {
                if self.election_at.is_none() {
                    let e = self.config.election_timeout.as_nanos() as i128;
                    let jitter = (self.rng.next_u64() % (e.max(1) as u64 + 1)) as i128;
                    self.election_at = Some(t + e + jitter);
                }
            } else {
                self.election_at = None;
            }
        }
        if ok {
            self.election_at = None;
        }
        if ok != self.quorum {
            self.store.advance(self.at(t));
            self.collect_watches();
            let election = self.config.election_timeout;
            if ok {
                // Quorum back after an election timeout or more: a new term (an election, or
                // the old leader stepping down and winning again). Its leader's lessor
                // promotes every lease.
                let since = self.quorum_lost_since.take().unwrap_or(t);
                if t - since >= election.as_nanos() as i128 {
                    self.store.leader_changed(self.at(t), election);
                }
            } else {
                self.quorum_lost_since = Some(t);
            }
            self.store.set_paused(!ok);
            self.quorum = ok;
            if !self.log_is_off() {
                self.log.push_back(LogEntry::Pause { time: t, on: !ok });
            }
        }
        self.refresh_leader_views(ok);
        if ok {
            // Restarted members publish their attributes.
            for m in 0..self.members.len() {
                if self.members[m].publish && self.members[m].state == MemberState::Up {
                    self.members[m].publish = false;
                    self.store.hidden_event(self.at(t));
                    if !self.log_is_off() {
                        self.log.push_back(LogEntry::Hidden { time: t });
                    }
                }
            }
            self.decide_fates(t);
        }
    }

    /// A member up and part of a quorum knows the leader; one that is not has lost it now (if
    /// it had not already), and ends its streams some election timeouts later.
    fn refresh_leader_views(&mut self, quorum: bool) {
        let t = self.now;
        let e = self.config.election_timeout.as_nanos() as i128;
        let seed = self.config.seed;
        for (m, member) in self.members.iter_mut().enumerate() {
            if quorum && member.state == MemberState::Up {
                member.lost_leader = None;
                member.cut_streams_at = None;
            } else if member.lost_leader.is_none() && member.state != MemberState::Dead {
                member.lost_leader = Some(t);
                // The phase of its leader checks: seeded, without drawing from the cluster's
                // generator (what a v2 world draws stays the same).
                let phase =
                    (mix(seed ^ ((m as u64) << 48) ^ (t as u64)) % (e.max(1) as u64)) as i128;
                member.cut_streams_at = Some(t + STREAM_CUT_TIMEOUTS * e + phase);
            }
        }
    }

    /// Members that have known no leader long enough end their streams with etcd's `no
    /// leader` error.
    pub(super) fn step_stream_cuts(&mut self, t: i128) {
        for m in 0..self.members.len() {
            let member = &self.members[m];
            let due = member.cut_streams_at.is_some_and(|c| c <= t)
                && matches!(member.state, MemberState::Up | MemberState::Isolated);
            if !due {
                continue;
            }
            self.members[m].cut_streams_at = None;
            if self.knows_leader_at(m, t) {
                continue;
            }
            let mut cut = 0;
            for id in self.owned_watches(m) {
                let Some(ending) = self.store.end_stream_no_leader(id) else {
                    continue;
                };
                self.watch_owner.remove(&id);
                self.members[m].held.retain(|h| h.id != id);
                self.ready.extend(ending.into_iter().map(|d| (id, d)));
                cut += 1;
            }
            if cut > 0 {
                self.notes.push_back(super::Note {
                    id: 0,
                    member: m,
                    kind: NoteKind::StreamsCut { streams: cut },
                    request: String::new(),
                });
            }
        }
    }
}

/// splitmix64's finalizer: a well-mixed function of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
