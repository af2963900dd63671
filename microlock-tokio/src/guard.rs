//! A hold of the lock as a value: auto-renewed while it lives, released when dropped.

use std::time::Instant;

use microlock_proto::driver::Hold;
use microlock_proto::{Error, Event, Fence, LostReason};
use tokio::sync::mpsc;

use crate::Microlock;

/// The lock, held: returned by [`Microlock::guard`]. While it lives the lease is renewed
/// automatically (every third of the TTL by default).
///
/// Check [`is_held`](LockGuard::is_held) (or await [`lost`](LockGuard::lost)) before acting on
/// the protected resource, and pass [`token`](LockGuard::token) to it as a fencing token.
///
/// Dropping the guard releases the lock best-effort: it asks the driver task to unlock and
/// returns at once. Without a running tokio runtime (e.g. dropped during runtime shutdown)
/// nothing is sent and the key expires with its TTL. Prefer [`release`](LockGuard::release),
/// which reports the outcome.
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a Microlock,
    hold: Hold,
    losses: mpsc::UnboundedReceiver<Event>,
    released: bool,
    _renewing: RenewClaim<'a>,
}

impl<'a> LockGuard<'a> {
    pub(crate) fn new(
        lock: &'a Microlock,
        fence: Fence,
        losses: mpsc::UnboundedReceiver<Event>,
        renewing: RenewClaim<'a>,
    ) -> LockGuard<'a> {
        LockGuard {
            lock,
            hold: Hold::new(fence),
            losses,
            released: false,
            _renewing: renewing,
        }
    }

    /// The fencing token of this hold (constant while it lasts; renewals keep it).
    pub fn token(&self) -> u64 {
        self.hold.token()
    }

    /// The current fence (its `valid_until` moves forward with each renewal).
    pub fn fence(&self) -> Fence {
        self.hold.fence(self.lock.fence())
    }

    /// Whether the lock is still held: not lost, and the local validity deadline is ahead.
    pub fn is_held(&self) -> bool {
        self.hold.is_held(self.lock.fence(), Instant::now())
    }

    /// Resolves when the hold is lost (renewal failed until the validity deadline, etcd said
    /// the key is not ours, the watch saw it taken, or the client was destroyed), with why.
    /// Resolves at once if it is already lost.
    pub async fn lost(&mut self) -> LostReason {
        loop {
            if let Some(reason) = self.hold.lost() {
                return reason;
            }
            let event = self.losses.recv().await;
            self.hold.observe(event.as_ref());
        }
    }

    /// Releases the lock and reports the outcome (`Err(LockNotOwned)` if it was lost).
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.lock.unlock().await
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.lock.unlock_in_background();
        }
    }
}

/// A guard's claim on auto-renew, taken before its acquire and given back when dropped: with
/// the guard, or with a failed or cancelled acquire. The driver renews while the caller's own
/// setting is on or any claim lives, so ending a guard never switches off what the caller
/// switched on.
#[derive(Debug)]
pub(crate) struct RenewClaim<'a>(&'a Microlock);

impl<'a> RenewClaim<'a> {
    pub(crate) fn new(lock: &'a Microlock) -> RenewClaim<'a> {
        lock.guard_renews(true);
        RenewClaim(lock)
    }
}

impl Drop for RenewClaim<'_> {
    fn drop(&mut self) {
        self.0.guard_renews(false);
    }
}
