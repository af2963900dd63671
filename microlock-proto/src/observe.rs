//! What the machine tells an operator: `tracing` events for its decisions and, with the
//! `metrics` feature, counters and histograms through the `metrics` facade.
//!
//! Both are facades: nothing is written, counted or allocated for them unless the application
//! installs a subscriber (a recorder). Events carry structured fields — `key`, `node_id`,
//! `token`, `member`, `request`, `op` — and sit inside the lock's span
//! ([`Lock::span`](crate::Lock::span), named `microlock`, with the key and node id), which
//! adapters enter around their driver. Never a credential, never a body at `info`.
//!
//! | level | event |
//! |---|---|
//! | `info` | acquired (token, waited), released, lost (reason, time left before the deadline), member marked unhealthy / healthy again |
//! | `debug` | each request sent and answered (method, path, member, status, etcd index, duration), what a resolution read settled, renewals, watch (re)starts and why |
//! | `warn` | a renewal failing (time left), an answer that is not etcd's (malformed, oversized) |
//!
//! Metrics (feature `metrics`), all prefixed `microlock_`: counters `acquisitions_total`,
//! `releases_total`, `losses_total{reason}`, `requests_total{outcome}` (`ok`, `etcd_error`,
//! `server_error`, `transport`, `connect`, `timeout`, `malformed`), `failovers_total` (a member
//! marked unhealthy); histograms (seconds) `acquire_wait_seconds`, `handoff_seconds` (a release
//! seen by a waiter to its acquisition), `request_seconds`.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::event::LostReason;
use crate::lock::RequestId;
use crate::Error;

/// A request was sent.
pub(crate) fn sent(id: RequestId, member: &str, method: &str, path: &str) {
    debug!(request = %id, member, method, path, "request sent");
}

/// How a request ended, for the request counter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Ok,
    EtcdError,
    ServerError,
    Transport,
    Connect,
    Timeout,
    Malformed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::EtcdError => "etcd_error",
            Outcome::ServerError => "server_error",
            Outcome::Transport => "transport",
            Outcome::Connect => "connect",
            Outcome::Timeout => "timeout",
            Outcome::Malformed => "malformed",
        }
    }
}

/// A request was answered (or failed, or timed out) after `took`.
pub(crate) fn answered(
    id: RequestId,
    member: &str,
    outcome: Outcome,
    status: Option<u16>,
    etcd_index: Option<u64>,
    took: Duration,
    error: Option<&Error>,
) {
    match (outcome, error) {
        (Outcome::Malformed, Some(error)) => {
            warn!(request = %id, member, status, took = ?took, %error, "etcd answered something unexpected")
        }
        (_, Some(error)) => {
            debug!(request = %id, member, outcome = outcome.as_str(), status, took = ?took, %error, "request failed")
        }
        (_, None) => {
            debug!(request = %id, member, outcome = outcome.as_str(), status, etcd_index, took = ?took, "request answered")
        }
    }
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("microlock_requests_total", "outcome" => outcome.as_str()).increment(1);
        metrics::histogram!("microlock_request_seconds").record(took.as_secs_f64());
    }
}

/// A member failed a request and is skipped for a while (it was healthy before).
pub(crate) fn member_unhealthy(member: &str, failures: u32, skipped_for: Duration) {
    info!(member, failures, skipped_for = ?skipped_for, "etcd member marked unhealthy: requests fail over to the next one");
    #[cfg(feature = "metrics")]
    metrics::counter!("microlock_failovers_total").increment(1);
}

/// A member that had failed answered again.
pub(crate) fn member_healthy(member: &str) {
    info!(member, "etcd member healthy again");
}

/// The lock was taken.
pub(crate) fn acquired(op: u64, token: u64, waited: Duration, handoff: Option<Duration>) {
    info!(op, token, waited = ?waited, "lock acquired");
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("microlock_acquisitions_total").increment(1);
        metrics::histogram!("microlock_acquire_wait_seconds").record(waited.as_secs_f64());
        if let Some(handoff) = handoff {
            metrics::histogram!("microlock_handoff_seconds").record(handoff.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = handoff;
}

/// The lock was released by an unlock.
pub(crate) fn released(op: u64, token: Option<u64>) {
    info!(op, token, "lock released");
    #[cfg(feature = "metrics")]
    metrics::counter!("microlock_releases_total").increment(1);
}

/// The lease was extended.
pub(crate) fn renewed(op: u64, token: u64, valid_for: Duration) {
    debug!(op, token, valid_for = ?valid_for, "lease renewed");
}

/// A renewal failed; the hold ends at its deadline unless a later one succeeds.
pub(crate) fn renew_failed(op: u64, token: Option<u64>, left: Option<Duration>, error: &Error) {
    warn!(op, token, time_left = ?left, %error, "renewal failed");
}

/// The hold ended without an unlock.
pub(crate) fn lost(token: u64, reason: LostReason, left: Duration) {
    info!(token, reason = ?reason, time_left = ?left, "lock lost");
    #[cfg(feature = "metrics")]
    metrics::counter!("microlock_losses_total", "reason" => reason_label(reason)).increment(1);
}

#[cfg(feature = "metrics")]
fn reason_label(reason: LostReason) -> &'static str {
    match reason {
        LostReason::Expired => "expired",
        LostReason::NotOwned => "not_owned",
        LostReason::Superseded => "superseded",
        LostReason::Destroyed => "destroyed",
    }
}

/// A command finished with an error (not a loss, not a success).
pub(crate) fn failed(op: u64, command: &str, error: &Error) {
    debug!(op, command, %error, "command failed");
}

/// A quorum read settled a lost answer.
pub(crate) fn settled(op: u64, command: &str, what: &str) {
    debug!(
        op,
        command,
        settled = what,
        "lost answer settled by a quorum read"
    );
}

/// A watch (re)starts: `why`.
pub(crate) fn watch(why: &str, member: &str, index: Option<u64>) {
    debug!(member, wait_index = index, why, "watch (re)started");
}

/// A fair acquire's place in the queue changed: `what` (queued, its turn came, left...).
pub(crate) fn queue(op: u64, what: &str, entry: &str, ahead: Option<&str>) {
    debug!(op, entry, ahead, what, "acquire queue");
}

/// The time from `then` to `now`, zero if `now` is earlier.
pub(crate) fn since(then: Instant, now: Instant) -> Duration {
    now.saturating_duration_since(then)
}
