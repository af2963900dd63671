//! The faults of single members (kill, restart, hang, resume, isolate, rejoin, lag), the
//! cluster-wide quorum loss, and members closing their watches.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::{Delivery, MemberState, NoteKind, SimCluster};
use crate::sim::etcd::Class;

impl SimCluster {
    /// Kills member `m` (see the module docs). Does nothing to a dead member.
    pub fn kill(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state == MemberState::Dead {
            return;
        }
        self.members[m].state = MemberState::Dead;
        let mut cut = BTreeSet::new();
        for id in self.owned_watches(m) {
            self.store.cancel(id);
            self.watch_owner.remove(&id);
            cut.insert(id);
            self.ready.push_back((id, Delivery::Reset));
        }
        let member = &mut self.members[m];
        for held in std::mem::take(&mut member.held) {
            // One reset per request (a stream may have several pieces held).
            if cut.insert(held.id) {
                self.ready.push_back((held.id, Delivery::Reset));
            }
        }
        for kept in std::mem::take(&mut member.kept) {
            if !kept.cancelled {
                self.ready.push_back((kept.id, Delivery::Reset));
            }
        }
        member.replica = None;
        member.lag = None;
        for p in self.proposals.iter_mut().filter(|p| p.member == m) {
            if std::mem::replace(&mut p.waiting, false) {
                self.ready.push_back((p.id, Delivery::Reset));
            }
        }
        if self.leader == Some(m) {
            self.leader = None;
        }
        self.refresh_quorum();
        self.trim_log();
    }

    /// Restarts a dead member: up, up to date, no watches. Does nothing to a live member.
    pub fn restart(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Dead {
            return;
        }
        let member = &mut self.members[m];
        member.state = MemberState::Up;
        member.applied = self.now;
        member.publish = true;
        self.refresh_quorum();
    }

    /// Stops member `m` (`SIGSTOP`). Only an up member hangs.
    pub fn hang(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Up {
            return;
        }
        self.members[m].state = MemberState::Hung;
        self.refresh_quorum();
    }

    /// Resumes a hung member (`SIGCONT`): it catches up, its watches fire, and the requests
    /// it kept are served.
    pub fn resume(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Hung {
            return;
        }
        self.members[m].state = MemberState::Up;
        self.refresh_quorum();
        self.catch_up(m);
        let t = self.now;
        for kept in std::mem::take(&mut self.members[m].kept) {
            if kept.cancelled {
                let class = self.store.classify(&kept.request);
                if class == Class::Watch || self.rng.next_u64() % 2 == 0 {
                    continue;
                }
                // Served for nothing: the answer has nowhere to go.
                self.note(kept.id, m, NoteKind::ServedForNobody, &kept.request);
                self.serve(m, kept.id, &kept.request, t, t);
                self.cancel(kept.id);
            } else {
                self.serve(m, kept.id, &kept.request, t, t);
            }
            self.collect_watches();
        }
    }

    /// Cuts member `m` off from its peers (clients still reach it). Only an up member.
    pub fn isolate(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Up {
            return;
        }
        self.ensure_replica(m);
        self.members[m].state = MemberState::Isolated;
        self.refresh_quorum();
    }

    /// Reconnects a member cut off from its peers: it catches up at once.
    pub fn rejoin(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Isolated {
            return;
        }
        self.members[m].state = MemberState::Up;
        self.refresh_quorum();
        self.catch_up(m);
    }

    /// Member `m` applies entries `lag` late from now on (`None`: catches up at once and stops
    /// lagging). Ignored for a dead member.
    pub fn set_lag(&mut self, m: usize, lag: Option<Duration>, now: Instant) {
        self.advance(now);
        if self.members[m].state == MemberState::Dead {
            return;
        }
        match lag {
            Some(d) => {
                self.ensure_replica(m);
                let t = self.now;
                self.members[m].lag = Some((t, d.as_nanos() as i128));
            }
            None => {
                self.members[m].lag = None;
                if self.members[m].state == MemberState::Up {
                    self.catch_up(m);
                }
            }
        }
    }

    /// Cluster-wide quorum loss (e.g. every peer link down) on or off: every member behaves as
    /// one without quorum.
    pub fn set_quorum_lost(&mut self, lost: bool, now: Instant) {
        self.advance(now);
        self.quorum_lost = lost;
        self.refresh_quorum();
    }

    /// Member `m` ends every watch it holds: cleanly (a v2 long poll with an empty `200`, a v3
    /// stream with etcd's shutdown error and the end of its body), or by cutting the
    /// connection (`cut`: a reset).
    pub fn close_watches(&mut self, m: usize, cut: bool, now: Instant) {
        self.advance(now);
        for id in self.owned_watches(m) {
            self.watch_owner.remove(&id);
            // Pieces of the stream the member had not sent yet go with it.
            self.members[m].held.retain(|h| h.id != id);
            if let Some(ending) = self.store.close_watch(id) {
                if cut {
                    self.ready.push_back((id, Delivery::Reset));
                } else {
                    self.ready.extend(ending.into_iter().map(|d| (id, d)));
                }
            }
        }
        let member = &mut self.members[m];
        let mut rest = VecDeque::new();
        for held in std::mem::take(&mut member.held) {
            if !held.watch {
                rest.push_back(held);
                continue;
            }
            // A v2 watch answered, not sent yet (a v3 stream's pieces went with it above).
            let delivery = match held.delivery {
                _ if cut => Delivery::Reset,
                Delivery::Response(response) => Delivery::Response(empty_watch_answer(&response)),
                _ => continue,
            };
            self.ready.push_back((held.id, delivery));
        }
        member.held = rest;
    }

    /// The parked watches and open streams of member `m`.
    pub(super) fn owned_watches(&self, m: usize) -> Vec<u64> {
        self.watch_owner
            .iter()
            .filter(|&(_, &o)| o == m)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// What a closing v2 member answers to a long poll whose event it had not sent yet: an empty
/// `200` with the `X-Etcd-Index` the answer had.
fn empty_watch_answer(held: &http::Response<Vec<u8>>) -> http::Response<Vec<u8>> {
    let index = held
        .headers()
        .get("X-Etcd-Index")
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static("0"));
    let mut r = http::Response::new(Vec::new());
    *r.status_mut() = http::StatusCode::OK;
    r.headers_mut().insert(
        "Content-Type",
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert("X-Etcd-Index", index);
    r
}
