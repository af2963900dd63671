//! Plain reads of a member that is behind (lagging or cut off), on v2: a replica of the store
//! taken when the member fell behind, replaying the store's logged writes up to what the
//! member has applied. (v3 plain reads — serializable ranges, which the machine never sends —
//! are served from the quorum store: no replica, no log.)

use http::{Request, Response};

use super::backend::Backend;
use super::{clone_request, dur, SimCluster};
use crate::sim::etcd::{ServeOpts, Served, SimEtcd};

#[derive(Debug)]
pub(super) struct Replica {
    store: SimEtcd,
    /// The next log entry to replay (absolute position).
    pub(super) next: u64,
}

#[derive(Debug)]
pub(super) enum LogEntry {
    /// A write applied to the store at `time`, parsed at `received`.
    Write {
        time: i128,
        received: i128,
        request: Box<Request<Vec<u8>>>,
    },
    /// The store paused or resumed at `time`.
    Pause { time: i128, on: bool },
    /// A hidden event (a member's attributes) at `time`.
    Hidden { time: i128 },
}

impl LogEntry {
    fn time(&self) -> i128 {
        match *self {
            LogEntry::Write { time, .. }
            | LogEntry::Pause { time, .. }
            | LogEntry::Hidden { time } => time,
        }
    }
}

impl SimCluster {
    pub(super) fn log_is_off(&self) -> bool {
        self.members.iter().all(|m| m.replica.is_none())
    }

    pub(super) fn log_write(&mut self, time: i128, received: i128, request: &Request<Vec<u8>>) {
        if !self.log_is_off() {
            self.log.push_back(LogEntry::Write {
                time,
                received,
                request: Box::new(clone_request(request)),
            });
        }
    }

    /// Drops the log entries every replica has replayed.
    pub(super) fn trim_log(&mut self) {
        let end = self.log_base + self.log.len() as u64;
        let keep_from = self
            .members
            .iter()
            .filter_map(|m| m.replica.as_ref().map(|r| r.next))
            .min()
            .unwrap_or(end);
        while self.log_base < keep_from && self.log.pop_front().is_some() {
            self.log_base += 1;
        }
        self.log_base = self.log_base.max(keep_from.min(end));
    }

    /// Member `m` is falling behind now: a copy of the store serves its plain reads (v2).
    pub(super) fn ensure_replica(&mut self, m: usize) {
        let Backend::V2(store) = &self.store else {
            return;
        };
        if self.members[m].replica.is_some() {
            return;
        }
        let next = self.log_base + self.log.len() as u64;
        self.members[m].replica = Some(Replica {
            store: store.replica(),
            next,
        });
    }

    /// A plain read at member `m`, which is behind: its replica replays the store's writes up
    /// to what the member has applied and answers at time `t`. `None` on v3 (served by the
    /// quorum store).
    pub(super) fn stale_read(
        &mut self,
        m: usize,
        id: u64,
        req: &Request<Vec<u8>>,
        t: i128,
    ) -> Option<Response<Vec<u8>>> {
        let applied = self.members[m].applied;
        let (start, log, log_base) = (self.start, &self.log, self.log_base);
        let at = |ns: i128| start + dur(ns);
        let Backend::V2(store) = &mut self.store else {
            return None;
        };
        let Some(replica) = self.members[m].replica.as_mut() else {
            return Some(
                match store.serve_with(id, req, at(t), ServeOpts::default()) {
                    Served::Now(r, _) => r,
                    Served::Parked | Served::Raft => Response::new(Vec::new()),
                },
            );
        };
        while let Some(entry) = log.get((replica.next - log_base) as usize) {
            if entry.time() > applied {
                break;
            }
            match entry {
                LogEntry::Write {
                    time,
                    received,
                    request,
                } => {
                    let opts = ServeOpts {
                        received: Some(at(*received)),
                        ..ServeOpts::default()
                    };
                    let _ = replica.store.serve_with(0, request, at(*time), opts);
                }
                LogEntry::Pause { time, on } => {
                    replica.store.advance(at(*time));
                    replica.store.set_paused(*on);
                }
                LogEntry::Hidden { time } => replica.store.hidden_event(at(*time)),
            }
            replica.next += 1;
        }
        replica.store.advance(at(applied));
        let opts = ServeOpts {
            no_advance: true,
            ..ServeOpts::default()
        };
        let response = match replica.store.serve_with(id, req, at(t), opts) {
            Served::Now(r, _) => r,
            Served::Parked | Served::Raft => Response::new(Vec::new()),
        };
        self.trim_log();
        Some(response)
    }
}
