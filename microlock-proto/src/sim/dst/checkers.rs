//! The checkers (a)–(h), after every step.

use super::*;
use crate::Protocol;

impl World {
    pub(super) fn check(&mut self) {
        // (a) at most one believed holder at this instant.
        let holders: Vec<usize> = (0..self.clients.len())
            .filter(|&c| {
                let now = self.local(c, self.now);
                self.clients[c].lock.is_held(now)
            })
            .collect();
        if holders.len() > 1 {
            let tokens: Vec<_> = holders
                .iter()
                .map(|&c| self.clients[c].lock.fence().map(|f| f.token()))
                .collect();
            self.violation(
                'a',
                format!("clients {holders:?} all hold the lock (tokens {tokens:?})"),
            );
        }
        // (d) no silent stall.
        for c in 0..self.clients.len() {
            let lock = &self.clients[c].lock;
            let active = lock.is_busy() || lock.fence().is_some() || lock.is_watching();
            if active && !lock.has_pending_io() {
                self.violation(
                    'd',
                    format!("c{c} is busy or holding with no request out and no timer"),
                );
            }
        }
        // (g) the key free with quorum: since when.
        let index = self.cluster.index();
        if index != self.key_seen.0 {
            self.refresh_queue();
            self.key_seen = (index, self.owner_in_store());
            self.check_fairness();
        }
        let free = self.had_quorum && self.lock_free(self.key_seen.1.as_ref());
        match (free, self.free_since) {
            (true, None) => self.free_since = Some(self.now),
            (false, Some(_)) => self.free_since = None,
            _ => {}
        }
        self.check_liveness();
    }

    /// Checker (h), when client `c`'s acquire completed with the lock: nobody may be left
    /// ahead of it in the queue. (Checked at completion, not when the key was created: a write
    /// of an earlier attempt that a hung member applies late can take a free key out of turn —
    /// no client decides that — and the machine then owns it only when its turn comes.)
    pub(super) fn check_fair_acquisition(&mut self, c: usize, token: u64) {
        self.refresh_queue();
        let id = self.clients[c].lock.config().node_id().as_str().to_owned();
        // Only a waiter still waiting on that very entry is wronged: an entry whose owner is
        // not waiting, or waits on another entry, is a leftover (a POST answered late, a
        // removal not through yet) that its owner skips too.
        let waiting = |v: &str, name: &str, created: u64| {
            self.clients.iter().any(|w| {
                w.doing == Doing::Acquiring
                    && w.lock.config().node_id().as_str() == v
                    && match w.lock.queue_entry() {
                        Some(ticket) => ticket == name,
                        None => created > w.acquire_index,
                    }
            })
        };
        // Ahead of it: on v2 the entries older than its own; on v3 the keys older than the one
        // it acquired with (its token), of other nodes.
        let ahead = if self.cluster.protocol() == Protocol::V3 {
            let older = self
                .queue_seen
                .1
                .iter()
                .filter(|e| e.2 < token && e.1 != id);
            Some(older.cloned().collect::<Vec<_>>())
        } else {
            self.ahead_of(&id)
        };
        let ahead = ahead.map(|a| {
            a.into_iter()
                .filter(|e| waiting(&e.1, &e.0, e.2))
                .collect::<Vec<_>>()
        });
        if let Some(ahead) = ahead.filter(|a| !a.is_empty()) {
            self.violation(
                'h',
                format!("c{c} acquired token {token} with older queue entries left: {ahead:?}"),
            );
        }
    }

    /// Keeps checker (g)'s `turn` up to date when the store changed.
    pub(super) fn check_fairness(&mut self) {
        for c in 0..self.clients.len() {
            let id = self.clients[c].lock.config().node_id().as_str().to_owned();
            let clear = self.ahead_of(&id).map_or(true, |a| a.is_empty());
            let client = &mut self.clients[c];
            match (clear, client.turn_since) {
                (true, None) => client.turn_since = Some(self.now),
                (false, Some(_)) => client.turn_since = None,
                _ => {}
            }
        }
    }

    /// Checker (g): see the module docs.
    pub(super) fn check_liveness(&mut self) {
        let now = self.now;
        if self.free_since.is_none() {
            for client in &mut self.clients {
                client.g.start = None;
            }
            return;
        }
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            let waiting = client
                .waiting_since
                .filter(|_| client.style == Style::Waiter && client.doing == Doing::Acquiring);
            let start = match (self.free_since, waiting, client.turn_since) {
                (Some(free), Some(waiting), Some(turn)) => {
                    Some(free.max(waiting).max(client.hindered).max(turn))
                }
                _ => None,
            };
            let busy = client.out.values().any(|o| !o.watch);
            let g = &mut self.clients[c].g;
            if start != g.start {
                *g = Obligation {
                    start,
                    idle: Duration::ZERO,
                    last: start.map_or(now, |s| s.max(now)),
                    busy,
                    reported: false,
                };
                continue;
            }
            let Some(s) = start else {
                g.busy = busy;
                continue;
            };
            let from = g.last.max(s);
            if now > from && !g.busy {
                g.idle += now - from;
            }
            g.last = g.last.max(now);
            g.busy = busy;
            let client = &self.clients[c];
            if client.wrote >= s || client.g.idle <= self.bound || client.g.reported {
                continue;
            }
            self.clients[c].g.reported = true;
            let what = self.asleep(c, s);
            self.violation('g', what);
        }
    }

    /// What checker (g) says about client `c`, asleep since `s`.
    pub(super) fn asleep(&self, c: usize, s: Duration) -> String {
        let client = &self.clients[c];
        let free = self.free_since.unwrap_or_default();
        let mut what = format!(
            "c{c} slept {} (only long polls out) since {} and sent no write, although the key \
             has been free with quorum since {} (bound {} = L {} + drift + jitter {} + slack {}; \
             waiting since {}, last write {}, last client-side fault {})",
            offset(client.g.idle),
            offset(s),
            offset(free),
            offset(self.bound),
            offset(self.p.liveness_checked.unwrap_or(self.p.watch_liveness)),
            offset(ACQUIRE_JITTER),
            offset(self.p.liveness_slack()),
            offset(client.waiting_since.unwrap_or_default()),
            offset(client.wrote),
            offset(client.hindered),
        );
        if client.out.is_empty() {
            what.push_str("; no request out");
        }
        for (rid, out) in &client.out {
            let member = match out.member {
                Some(m) => {
                    let state = self.cluster.state(m);
                    let lag = self
                        .cluster
                        .lag(m)
                        .map_or(String::new(), |d| format!(", lagging {}", offset(d)));
                    format!(
                        "m{m} ({state:?} since {}{lag})",
                        offset(self.member_since[m])
                    )
                }
                None => "?".into(),
            };
            let _ = write!(
                what,
                "; r{rid} {} sent {} to {member}",
                out.what,
                offset(out.sent)
            );
        }
        what
    }
}
