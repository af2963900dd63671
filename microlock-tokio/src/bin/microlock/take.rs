//! Taking the lock for `run` and `lock`: one try, then (if `--wait` allows) a waiting acquire
//! with the status line, interruptible by SIGINT/SIGTERM/SIGHUP.

use std::time::{Duration, Instant};

use microlock_tokio::{Error, Event, Events, Fence, Microlock};
use nix::sys::signal::Signal;

use crate::exit::{Failure, TEMPFAIL};
use crate::progress::{describe_holder, Holder, StatusLine};
use crate::signals::Signals;
use crate::timing::show;

/// How long a failed try waits for the event naming the holder, for its message.
const HOLDER_GRACE: Duration = Duration::from_secs(1);

/// How taking the lock ended, when it did not fail.
#[derive(Debug)]
pub enum Taken {
    /// Held, with this fence.
    Held(Fence),
    /// A signal stopped the wait; the lock is not held.
    Interrupted(Signal),
}

/// Takes `lock`, waiting up to `wait` (zero: one try). `events` is a subscription made before,
/// which tells the status line who holds the lock.
pub async fn take(
    lock: &Microlock,
    events: &mut Events,
    wait: Duration,
    signals: &mut Signals,
    verbose: bool,
) -> Result<Taken, Failure> {
    let key = lock.config().key().as_str().to_owned();
    let started = Instant::now();
    // First one try-lock: a free key is taken at once, and an unreachable etcd is reported
    // within the operation budget (a waiting acquire would keep retrying until --wait ends).
    // It is short, so a signal is looked at after it.
    match lock.lock().await {
        Ok(fence) => return held_unless_signalled(lock, fence, signals).await,
        Err(Error::AlreadyLocked { .. }) => {}
        Err(e) => return Err(Failure::from_error(&format!("locking {key}"), &e)),
    }
    let mut line = StatusLine::new(&key, verbose);
    // The watch's first answer (the current holder) has usually arrived by now.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::ZERO, events.next()).await {
        on_event(&mut line, event);
    }
    if let Some(signal) = signals.pending().await {
        line.clear();
        return Ok(Taken::Interrupted(signal));
    }
    if wait.is_zero() {
        // Name the holder: the watch's first answer is due any moment (etcd just answered).
        if line.holder().is_none() {
            if let Ok(Some(event)) = tokio::time::timeout(HOLDER_GRACE, events.next()).await {
                on_event(&mut line, event);
            }
        }
        line.clear();
        return Err(not_acquired(&key, None, line.holder()));
    }
    // Then wait, through the library's watch (not polling), for what is left of --wait.
    let acquire = lock.acquire(wait.saturating_sub(started.elapsed()));
    tokio::pin!(acquire);
    line.draw();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            result = &mut acquire => break result,
            Some(event) = events.next() => on_event(&mut line, event),
            _ = tick.tick(), if line.ticks() => line.draw(),
            signal = signals.recv() => {
                line.clear();
                // Dropping the acquire cancels the wait (the library leaves nothing behind).
                return Ok(Taken::Interrupted(signal));
            }
        }
    };
    line.clear();
    match result {
        Ok(fence) => held_unless_signalled(lock, fence, signals).await,
        Err(Error::WaitTimeout { .. }) => Err(not_acquired(&key, Some(wait), line.holder())),
        Err(e) => Err(Failure::from_error(&format!("waiting for {key}"), &e)),
    }
}

/// The lock is ours; a signal that came meanwhile releases it again.
async fn held_unless_signalled(
    lock: &Microlock,
    fence: Fence,
    signals: &mut Signals,
) -> Result<Taken, Failure> {
    match signals.pending().await {
        None => Ok(Taken::Held(fence)),
        Some(signal) => {
            let _ = lock.unlock().await;
            Ok(Taken::Interrupted(signal))
        }
    }
}

/// An event while waiting: the holder changed.
fn on_event(line: &mut StatusLine, event: Event) {
    match event {
        Event::Locked { holder, token } => line.set_holder(Some((holder, token))),
        Event::Unlocked { .. } => line.set_holder(None),
        _ => {}
    }
}

/// The lock was not acquired (exit status 75).
fn not_acquired(key: &str, waited: Option<Duration>, holder: &Holder) -> Failure {
    let within = match waited {
        Some(wait) => format!("within {}", show(wait)),
        None => "(--wait 0: one try)".to_owned(),
    };
    let holder = describe_holder(holder, holder.is_some());
    Failure::new(TEMPFAIL, format!("{key} not acquired {within}: {holder}"))
}
