//! The lessor: leases, their TTLs and deadlines, the IDs etcd would choose, and the expiry
//! checks that revoke them.
//!
//! etcd's leader checks for expired leases every 500 ms (`revokeExpiredLeases` in the lessor's
//! run loop) and revokes each through raft; a lease is therefore gone at the first check at or
//! after its deadline, 0 to 500 ms late (measured on 3.4.23 and 3.5.1: a 2 s lease with a key
//! was deleted 2.0 to 2.5 s after the grant). The model's checks happen at
//! `start + k × `[`EXPIRY_CHECK_INTERVAL`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The period of the lessor's expiry checks (etcd's 500 ms `revokeExpiredLeases` loop).
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The smallest TTL etcd grants: `ceil(1.5 × election timeout)` with the default 1 s election
/// timeout. A smaller (or zero, or negative) TTL is raised to it (checked: `{"TTL":1}`,
/// `{"TTL":0}` and `{"TTL":-5}` all answer `"TTL":"2"`).
pub const MIN_LEASE_TTL: i64 = 2;

/// The largest TTL etcd accepts (`MaxLeaseTTL`); above it the grant fails with
/// `etcdserver: too large lease TTL`.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The TTL granted (after the minimum), in seconds.
    pub(crate) ttl: i64,
    /// When it expires unless kept alive.
    pub(crate) deadline: Instant,
}

/// The leases and the ID generator.
#[derive(Debug, Clone)]
pub(crate) struct Lessor {
    leases: BTreeMap<i64, Lease>,
    id_prefix: i64,
    id_counter: i64,
    start: Instant,
    /// How many expiry checks have run (check `k` is at `start + k × interval`).
    checks_done: u64,
    /// A lease lives `TTL / lifetime_divisor`: 1 as in etcd; more only for a planted bug
    /// ([`SimEtcdV3::plant_short_lived_leases`](super::SimEtcdV3::plant_short_lived_leases)).
    lifetime_divisor: u32,
}

impl Lessor {
    /// `id_prefix`: the high bits of generated IDs (etcd: the member ID's low 16 bits and the
    /// start time in milliseconds); the low bits count up.
    pub(crate) fn new(start: Instant, id_prefix: i64) -> Lessor {
        Lessor {
            leases: BTreeMap::new(),
            id_prefix,
            id_counter: 0,
            start,
            checks_done: 0,
            lifetime_divisor: 1,
        }
    }

    /// From now on every lease lives only `1 / divisor` of its TTL (a deliberately broken
    /// lessor; the answers still give the full TTL).
    pub(crate) fn shorten_lifetimes(&mut self, divisor: u32) {
        self.lifetime_divisor = divisor.max(1);
    }

    /// How long a lease of `ttl` seconds lives from a grant, renewal or promotion.
    fn lifetime(&self, ttl: i64) -> Duration {
        Duration::from_secs(ttl as u64) / self.lifetime_divisor
    }

    pub(crate) fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub(crate) fn ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// The next generated ID that no lease has (etcd's request ID generator, masked positive).
    pub(crate) fn next_id(&mut self) -> i64 {
        loop {
            self.id_counter += 1;
            let id = (self.id_prefix.wrapping_add(self.id_counter)) & i64::MAX;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// Grants lease `id` (which must be free) with `ttl` seconds, raised to the minimum.
    pub(crate) fn grant(&mut self, id: i64, ttl: i64, now: Instant) -> &Lease {
        let ttl = ttl.max(MIN_LEASE_TTL);
        let deadline = now + self.lifetime(ttl);
        self.leases.insert(id, Lease { ttl, deadline });
        &self.leases[&id]
    }

    pub(crate) fn remove(&mut self, id: i64) -> Option<Lease> {
        self.leases.remove(&id)
    }

    /// Renews a live lease: its deadline becomes `now + TTL`. Returns the TTL.
    pub(crate) fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let lifetime = self.lifetime(self.leases.get(&id)?.ttl);
        let l = self.leases.get_mut(&id)?;
        if l.deadline <= now {
            return None;
        }
        l.deadline = now + lifetime;
        Some(l.ttl)
    }

    /// A new leader's promotion: every deadline becomes `now + extend + TTL`.
    pub(crate) fn promote(&mut self, now: Instant, extend: Duration) {
        let divisor = self.lifetime_divisor;
        for lease in self.leases.values_mut() {
            lease.deadline = now + extend + Duration::from_secs(lease.ttl as u64) / divisor;
        }
    }

    /// Runs the expiry checks due at or before `now`: each check that finds expired leases
    /// removes them and is returned with its time and their IDs (by deadline, then ID). The
    /// caller deletes their keys.
    pub(crate) fn expire_due(&mut self, now: Instant) -> Vec<(Instant, Vec<i64>)> {
        let mut out = Vec::new();
        while let Some(at) = self.next_expiry().filter(|at| *at <= now) {
            self.checks_done = self.check_index(at);
            let mut expired: Vec<(Instant, i64)> = self
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= at)
                .map(|(id, l)| (l.deadline, *id))
                .collect();
            expired.sort();
            for (_, id) in &expired {
                self.leases.remove(id);
            }
            out.push((at, expired.into_iter().map(|(_, id)| id).collect()));
        }
        self.skip_checks(now);
        out
    }

    fn check_index(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.start).as_nanos() / EXPIRY_CHECK_INTERVAL.as_nanos())
            as u64
    }

    /// When the next lease expires (at an expiry check), if any lease exists.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        let deadline = self.leases.values().map(|l| l.deadline).min()?;
        let since = deadline.saturating_duration_since(self.start).as_nanos();
        let step = EXPIRY_CHECK_INTERVAL.as_nanos();
        let k = since.div_ceil(step).max(self.checks_done as u128 + 1);
        Some(self.start + Duration::from_nanos((k * step) as u64))
    }

    /// Skips the checks up to `now` without revoking anything (no leader: nobody checks).
    pub(crate) fn skip_checks(&mut self, now: Instant) {
        self.checks_done = self.checks_done.max(self.check_index(now));
    }
}

/// Seconds left before `deadline`, truncated toward zero as Go's `int64(d.Seconds())`.
pub(crate) fn remaining_secs(deadline: Instant, now: Instant) -> i64 {
    if deadline >= now {
        (deadline - now).as_secs() as i64
    } else {
        -((now - deadline).as_secs() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_happens_at_the_first_check_after_the_deadline() {
        let t0 = Instant::now();
        let mut l = Lessor::new(t0, 0);
        let id = l.next_id();
        l.grant(id, 1, t0 + Duration::from_millis(200));
        assert_eq!(l.get(id).unwrap().ttl, MIN_LEASE_TTL);
        assert_eq!(l.next_expiry(), Some(t0 + Duration::from_millis(2500)));
        assert!(l.expire_due(t0 + Duration::from_millis(2400)).is_empty());
        let due = l.expire_due(t0 + Duration::from_secs(10));
        assert_eq!(due, vec![(t0 + Duration::from_millis(2500), vec![id])]);
        assert!(l.get(id).is_none());
    }

    #[test]
    fn renew_resets_the_deadline_and_refuses_an_expired_lease() {
        let t0 = Instant::now();
        let mut l = Lessor::new(t0, 0);
        l.grant(7, 5, t0);
        assert_eq!(l.renew(7, t0 + Duration::from_secs(4)), Some(5));
        assert_eq!(l.get(7).unwrap().deadline, t0 + Duration::from_secs(9));
        assert_eq!(l.renew(7, t0 + Duration::from_secs(9)), None);
        assert_eq!(remaining_secs(t0 + Duration::from_millis(2900), t0), 2);
        assert_eq!(remaining_secs(t0, t0 + Duration::from_millis(300)), 0);
    }

    #[test]
    fn a_planted_short_lifetime_shortens_every_deadline_but_not_the_ttl() {
        let t0 = Instant::now();
        let mut l = Lessor::new(t0, 0);
        l.shorten_lifetimes(3);
        assert_eq!(l.grant(7, 6, t0).ttl, 6);
        assert_eq!(l.get(7).unwrap().deadline, t0 + Duration::from_secs(2));
        assert_eq!(l.renew(7, t0 + Duration::from_secs(1)), Some(6));
        assert_eq!(l.get(7).unwrap().deadline, t0 + Duration::from_secs(3));
        l.promote(t0 + Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(l.get(7).unwrap().deadline, t0 + Duration::from_secs(5));
    }
}
