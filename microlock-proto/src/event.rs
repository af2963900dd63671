//! What the machine tells its user: lock-state events and operation completions.

use std::time::{Duration, Instant};

use crate::Error;

/// A change of the lock key seen by the watch (node agnostic, like microlock's `locked` /
/// `unlocked` events). Only delivered while the lock is being watched
/// ([`Lock::set_watching`](crate::Lock::set_watching)).
///
/// When a watch starts while the key is held, the first event is `Locked` by the current
/// holder, so "subscribe, then act" never misses a holder. After that, one event per change,
/// in etcd's order. A renew (a TTL refresh) changes nothing anyone else can observe and
/// produces no event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The key was taken (`create`, `set`, `update` or `compareAndSwap` in etcd's words).
    Locked {
        /// The node id now stored in the key.
        holder: String,
        /// The holder's fencing token (the key's `createdIndex`).
        token: u64,
    },
    /// The key was released: deleted (`delete`, `compareAndDelete`) or its TTL ran out
    /// (`expire`).
    Unlocked {
        /// The node id that held it, when etcd said.
        previous_holder: Option<String>,
        /// `true` when the lease ran out rather than being released.
        expired: bool,
    },
    /// This node stopped holding the lock without unlocking it. From now on
    /// [`Lock::is_held`](crate::Lock::is_held) is false and the fence with `token` is stale:
    /// stop using the protected resource. Emitted at the latest at the fence's
    /// [`valid_until`](Fence::valid_until).
    Lost {
        /// The fencing token of the lost hold.
        token: u64,
        /// Why.
        reason: LostReason,
    },
}

impl Event {
    /// Whether this event ends the hold with fencing token `token`, and why.
    ///
    /// ```
    /// use microlock_proto::{Event, LostReason};
    /// let lost = Event::Lost { token: 7, reason: LostReason::Expired };
    /// assert_eq!(lost.ends_hold(7), Some(LostReason::Expired));
    /// assert_eq!(lost.ends_hold(8), None);
    /// ```
    pub fn ends_hold(&self, token: u64) -> Option<LostReason> {
        match self {
            Event::Lost { token: t, reason } if *t == token => Some(*reason),
            _ => None,
        }
    }
}

/// Why a hold was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The local validity deadline passed without a successful renew.
    Expired,
    /// etcd answered that the key is not (or no longer) held by this node.
    NotOwned,
    /// The watch saw the key released or taken by another holder.
    Superseded,
    /// The lock client was destroyed: nothing renews the lease any more.
    Destroyed,
}

/// Proof of holding the lock, returned by a successful lock or renew.
///
/// ```
/// # use microlock_proto::Fence;
/// fn write_fenced(fence: &Fence, highest_seen: &mut u64) -> bool {
///     // A protected resource accepts a write only with a token at least the highest seen.
///     if fence.token() < *highest_seen { return false; }
///     *highest_seen = fence.token();
///     true
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub(crate) token: u64,
    pub(crate) valid_until: Instant,
}

impl Fence {
    /// The fencing token: the lock key's etcd `createdIndex`. etcd's index is one
    /// cluster-wide counter that only grows, so every later holder of the key gets a larger
    /// token; a protected resource that remembers the largest token it accepted can refuse a
    /// stale holder's writes.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether this is the hold with fencing token `token` and its validity deadline is
    /// still ahead at `now`.
    pub fn is_valid(&self, token: u64, now: Instant) -> bool {
        self.token == token && self.is_valid_at(now)
    }

    /// Whether the validity deadline is still ahead at `now` (whichever hold this is).
    pub fn is_valid_at(&self, now: Instant) -> bool {
        now < self.valid_until
    }

    /// The local validity deadline: when the request that took or renewed the lock was sent,
    /// plus the TTL, minus the configured safety margin. Past it, etcd may have expired the
    /// key and another node may hold it.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }
}

/// Identifies one command (lock, unlock, renew) from issue to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub(crate) u64);

/// Who holds a lock key, as a quorum read found it ([`Lock::read`](crate::Lock::read)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The node id stored in the key.
    pub node_id: String,
    /// The hold's fencing token (the key's `createdIndex`).
    pub token: u64,
    /// The key's `modifiedIndex` (it moves with every renewal).
    pub modified_index: u64,
    /// What is left of the lease, in whole seconds rounded up as etcd reports it (`None`: the
    /// key has no TTL, e.g. written by hand).
    pub ttl_left: Option<Duration>,
}

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// `lock` took the key.
    Locked(Fence),
    /// `renew` refreshed the lease.
    Renewed(Fence),
    /// `acquire` took the key (after waiting, if it was held).
    Acquired(Fence),
    /// `unlock` released the key.
    Unlocked,
    /// `read` found the key held by this holder, or free (`None`).
    Read(Option<Holder>),
}

impl Outcome {
    /// The fence of a `Locked`, `Renewed` or `Acquired` outcome: what an adapter's `lock`,
    /// `renew` and `acquire` return. An `Unlocked` here would be a driver bug, reported as
    /// [`Error::Protocol`] rather than a panic.
    ///
    /// ```
    /// # use microlock_proto::{Error, Outcome};
    /// assert!(matches!(Outcome::Unlocked.into_fence(), Err(Error::Protocol { .. })));
    /// ```
    pub fn into_fence(self) -> Result<Fence, Error> {
        match self {
            Outcome::Locked(fence) | Outcome::Renewed(fence) | Outcome::Acquired(fence) => {
                Ok(fence)
            }
            other => Err(other.unexpected()),
        }
    }

    /// `Ok(())` for `Unlocked`: what an adapter's `unlock` returns.
    ///
    /// ```
    /// # use microlock_proto::Outcome;
    /// assert_eq!(Outcome::Unlocked.into_unlocked(), Ok(()));
    /// ```
    pub fn into_unlocked(self) -> Result<(), Error> {
        match self {
            Outcome::Unlocked => Ok(()),
            other => Err(other.unexpected()),
        }
    }

    /// The holder of a `Read` outcome: what an adapter's `read` returns.
    ///
    /// ```
    /// # use microlock_proto::Outcome;
    /// assert_eq!(Outcome::Read(None).into_holder(), Ok(None));
    /// assert!(Outcome::Unlocked.into_holder().is_err());
    /// ```
    pub fn into_holder(self) -> Result<Option<Holder>, Error> {
        match self {
            Outcome::Read(holder) => Ok(holder),
            other => Err(other.unexpected()),
        }
    }

    fn unexpected(self) -> Error {
        Error::Protocol {
            reason: format!("internal: unexpected outcome {self:?}"),
        }
    }
}

/// The end of a command: which one, and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The command's id, as returned when it was issued.
    pub op: OpId,
    /// Its result.
    pub result: Result<Outcome, Error>,
}
