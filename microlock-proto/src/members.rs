//! Which etcd member a request goes to: what this client knows of each member's health.
//!
//! A member that fails a request (refuses the connection, does not answer in time, answers
//! 5xx such as etcd's "Raft Internal Error") is skipped for a back-off that doubles with each
//! consecutive failure; when the back-off is over it is used again when its turn comes, and
//! the first answer from it clears its record. Requests stick to one member while it works,
//! so a healthy cluster sees one connection per client.
//!
//! The value is plain data with time as an argument, so the locks of one `Etcd` share it
//! without sharing anything else: each lock keeps its own copy and the adapter merges it with
//! the shared one ([`Members::sync`]) around every input, newest observation winning.

use std::time::{Duration, Instant};

use crate::config::Endpoint;
use crate::wire::v3::Token;

/// How often member discovery (when on) asks the cluster for its members again.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(60);
/// The most members a cluster may name in discovery (more are ignored: a hostile or broken
/// answer cannot make a client track unbounded endpoints).
pub const MAX_DISCOVERED: usize = 32;

/// The first back-off of a member that failed.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What is known of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Health {
    /// Consecutive failures (0: healthy or never used).
    failures: u32,
    /// Skipped until then, after a failure.
    down_until: Option<Instant>,
    /// When this record last changed (for merging two views).
    updated: Option<Instant>,
}

/// The etcd members of a cluster and what this client knows of their health.
///
/// ```
/// use std::time::{Duration, Instant};
/// use microlock_proto::{Endpoint, Members};
///
/// fn failover(now: Instant) -> Result<(), microlock_proto::Error> {
///     let mut members = Members::new(Endpoint::parse_all(["http://m0:2379,http://m1:2379"])?);
///     assert_eq!(members.pick(now), 0);
///     members.failed(0, now); // m0 refused a connection: the next request goes to m1
///     assert_eq!(members.pick(now), 1);
///     assert!(members.is_down(0, now));
///     assert!(!members.is_down(0, now + Duration::from_secs(1))); // back-off over: usable again
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    endpoints: Vec<Endpoint>,
    health: Vec<Health>,
    /// The member requests go to while it works.
    preferred: usize,
    preferred_updated: Option<Instant>,
    /// When member discovery last asked (see [`discovery_due`](Members::discovery_due)).
    discovery_sent: Option<Instant>,
    /// etcd v3 authentication, shared by the locks of one handle like the members' health
    /// (see [`crate::token`]).
    auth: Auth,
}

/// What the locks of one handle know of etcd v3 authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Auth {
    /// The token to send (its `Debug` is redacted).
    token: Option<Token>,
    /// etcd said its authentication is off: no token is sent.
    off: bool,
    /// When this record last changed (for merging two views).
    updated: Option<Instant>,
}

impl Members {
    /// The members at these client URLs (at least one; [`Endpoint::parse_all`] guarantees it).
    /// Requests start at the first.
    pub fn new(endpoints: Vec<Endpoint>) -> Members {
        let endpoints = if endpoints.is_empty() {
            vec![Endpoint::default()]
        } else {
            endpoints
        };
        Members {
            health: vec![Health::default(); endpoints.len()],
            endpoints,
            preferred: 0,
            preferred_updated: None,
            discovery_sent: None,
            auth: Auth::default(),
        }
    }

    // ----- getters -------------------------------------------------------------------------

    /// The client URLs, in the order given.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Always false: there is at least one member.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Member `member`'s client URL (`member` is taken modulo [`len`](Members::len)).
    pub fn endpoint(&self, member: usize) -> &Endpoint {
        &self.endpoints[member % self.endpoints.len()]
    }

    /// Whether `member` is being skipped at `now` after failing.
    pub fn is_down(&self, member: usize, now: Instant) -> bool {
        self.health
            .get(member)
            .and_then(|h| h.down_until)
            .is_some_and(|until| now < until)
    }

    /// Until when `member` is skipped after its last failure, if it failed.
    pub fn down_until(&self, member: usize) -> Option<Instant> {
        self.health.get(member).and_then(|h| h.down_until)
    }

    /// Consecutive failures of `member` (0: healthy, or never used).
    pub fn failures(&self, member: usize) -> u32 {
        self.health.get(member).map_or(0, |h| h.failures)
    }

    /// The member the next request should go to: the preferred one if it is not down, else
    /// the next one that is not, else (every member down) the one whose back-off ends first.
    pub fn pick(&self, now: Instant) -> usize {
        self.pick_avoiding(None, now)
    }

    /// Like [`pick`](Members::pick), but not `avoid` if any other member is up (a read that
    /// settles what a member did goes to another one).
    pub fn pick_avoiding(&self, avoid: Option<usize>, now: Instant) -> usize {
        let n = self.endpoints.len();
        let order = (0..n).map(|i| (self.preferred + i) % n);
        if let Some(up) = order
            .clone()
            .find(|&m| Some(m) != avoid && !self.is_down(m, now))
        {
            return up;
        }
        if avoid.is_some_and(|a| !self.is_down(a, now)) {
            return avoid.unwrap_or(0);
        }
        // Every member is down: the one back soonest (then the preferred order).
        order
            .min_by_key(|&m| (self.health[m].down_until, Some(m) == avoid))
            .unwrap_or(0)
    }

    /// When the first member's back-off ends, if every member is down at `now`.
    pub fn all_down_until(&self, now: Instant) -> Option<Instant> {
        if (0..self.len()).any(|m| !self.is_down(m, now)) {
            return None;
        }
        self.health.iter().filter_map(|h| h.down_until).min()
    }

    /// Whether member discovery should ask the cluster for its members at `now`: never asked,
    /// or last asked [`DISCOVERY_INTERVAL`] ago.
    pub fn discovery_due(&self, now: Instant) -> bool {
        self.discovery_sent
            .map_or(true, |at| now >= at + DISCOVERY_INTERVAL)
    }

    // ----- observations --------------------------------------------------------------------

    /// Member discovery asked at `now` (whatever the answer, not again for an interval).
    pub fn discovery_asked(&mut self, now: Instant) {
        self.discovery_sent = Some(now);
    }

    /// The cluster named these client URLs: the ones not known yet are added (healthy, after
    /// the known ones), up to [`MAX_DISCOVERED`] members in all. Members are never removed:
    /// one that left the cluster fails and is skipped.
    pub fn learn(&mut self, endpoints: impl IntoIterator<Item = Endpoint>) {
        for endpoint in endpoints {
            if self.endpoints.len() >= MAX_DISCOVERED {
                return;
            }
            if !self.endpoints.contains(&endpoint) {
                self.endpoints.push(endpoint);
                self.health.push(Health::default());
            }
        }
    }

    /// `member` failed a request at `now`: skip it for a back-off (doubling with each
    /// consecutive failure, from 0.5 s to 10 s), and prefer the next member.
    pub fn failed(&mut self, member: usize, now: Instant) {
        let Some(health) = self.health.get_mut(member) else {
            return;
        };
        health.failures = health.failures.saturating_add(1);
        let backoff = BACKOFF_MIN
            .saturating_mul(1 << (health.failures - 1).min(8))
            .min(BACKOFF_MAX);
        health.down_until = Some(now + backoff);
        health.updated = Some(now);
        if self.preferred == member {
            self.preferred = (member + 1) % self.endpoints.len();
            self.preferred_updated = Some(now);
        }
    }

    /// `member` answered at `now` (any answer from etcd itself, even an error about the key):
    /// it is healthy.
    pub fn succeeded(&mut self, member: usize, now: Instant) {
        let Some(health) = self.health.get_mut(member) else {
            return;
        };
        if health.failures != 0 || health.down_until.is_some() {
            *health = Health {
                failures: 0,
                down_until: None,
                updated: Some(now),
            };
        }
    }

    /// The etcd v3 token the locks of this handle use, if one is known.
    pub(crate) fn v3_token(&self) -> Option<&Token> {
        self.auth.token.as_ref()
    }

    /// Whether etcd said its authentication is off (requests go without a token).
    pub(crate) fn v3_auth_off(&self) -> bool {
        self.auth.off
    }

    /// Records a new token (`None`: the last one was refused), or that authentication is off.
    pub(crate) fn set_v3_token(&mut self, token: Option<Token>, off: bool, now: Instant) {
        self.auth = Auth {
            token,
            off,
            updated: Some(now),
        };
    }

    /// Merges two views of the same cluster (e.g. a lock's and the one its `Etcd` shares):
    /// members either knows are kept (this view's order first), for each member the newer
    /// record wins, and so does the newer preferred member. Both end up equal.
    ///
    /// Called around every input of every lock: once the member lists agree, it allocates
    /// nothing (the records are copied into the other view's storage).
    pub fn sync(&mut self, other: &mut Members) {
        if self == other {
            return;
        }
        if self.endpoints != other.endpoints {
            self.learn(other.endpoints.iter().cloned());
        }
        for (endpoint, theirs) in other.endpoints.iter().zip(&other.health) {
            if let Some(i) = self.endpoints.iter().position(|e| e == endpoint) {
                if theirs.updated > self.health[i].updated {
                    self.health[i] = *theirs;
                }
            }
        }
        if other.preferred_updated > self.preferred_updated {
            let preferred = other.endpoint(other.preferred);
            if let Some(i) = self.endpoints.iter().position(|e| e == preferred) {
                self.preferred = i;
                self.preferred_updated = other.preferred_updated;
            }
        }
        self.discovery_sent = self.discovery_sent.max(other.discovery_sent);
        if other.auth.updated > self.auth.updated {
            self.auth = other.auth.clone();
        }
        if other.endpoints != self.endpoints {
            other.endpoints.clone_from(&self.endpoints);
        }
        other.health.clone_from(&self.health);
        other.preferred = self.preferred;
        other.preferred_updated = self.preferred_updated;
        other.discovery_sent = self.discovery_sent;
        if other.auth != self.auth {
            other.auth = self.auth.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Members {
        Members::new(Endpoint::parse_all(["m0:1,m1:1,m2:1"]).unwrap())
    }

    #[test]
    fn sticks_to_a_working_member_and_moves_on_failure() {
        let now = Instant::now();
        let mut m = three();
        assert_eq!(m.pick(now), 0);
        m.succeeded(0, now);
        assert_eq!(m.pick(now), 0);
        m.failed(0, now);
        assert_eq!(m.pick(now), 1);
        assert_eq!(m.pick_avoiding(Some(1), now), 2);
        m.failed(1, now);
        m.failed(2, now);
        // All down: the one back soonest.
        assert_eq!(m.pick(now), 0);
        assert_eq!(m.all_down_until(now), Some(now + BACKOFF_MIN));
        m.succeeded(1, now);
        assert_eq!(m.pick(now), 1);
        assert_eq!(m.all_down_until(now), None);
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let now = Instant::now();
        let mut m = three();
        for _ in 0..3 {
            m.failed(0, now);
        }
        assert!(m.is_down(0, now + BACKOFF_MIN * 3));
        assert!(!m.is_down(0, now + BACKOFF_MIN * 4));
        for _ in 0..40 {
            m.failed(0, now);
        }
        assert!(!m.is_down(0, now + BACKOFF_MAX));
    }

    #[test]
    fn discovered_members_are_added_and_shared() {
        let t = Instant::now();
        let mut a = Members::new(Endpoint::parse_all(["m0:1"]).unwrap());
        let mut b = a.clone();
        assert!(a.discovery_due(t));
        a.discovery_asked(t);
        a.learn(Endpoint::parse_all(["m0:1,m1:1,m2:1"]).unwrap());
        assert_eq!(a.len(), 3);
        a.failed(0, t);
        b.sync(&mut a);
        assert_eq!(a, b);
        assert_eq!(b.pick(t), 1);
        assert!(!b.discovery_due(t + Duration::from_secs(1)));
        assert!(b.discovery_due(t + DISCOVERY_INTERVAL));
        // Bounded, whatever the cluster says.
        let many: Vec<Endpoint> = (0..100)
            .map(|i| Endpoint::parse(&format!("h{i}:1")).unwrap())
            .collect();
        b.learn(many);
        assert_eq!(b.len(), MAX_DISCOVERED);
    }

    #[test]
    fn sync_keeps_the_newest_record() {
        let t = Instant::now();
        let mut a = three();
        let mut b = three();
        a.failed(0, t);
        b.failed(1, t + Duration::from_millis(1));
        a.sync(&mut b);
        assert_eq!(a, b);
        assert!(a.is_down(0, t) && a.is_down(1, t + Duration::from_millis(1)));
        assert_eq!(a.pick(t + Duration::from_millis(1)), 2);
        b.succeeded(0, t + Duration::from_millis(2));
        b.sync(&mut a);
        assert!(!a.is_down(0, t + Duration::from_millis(2)));
    }
}
