//! When `microlock run` renews, and when it stops CMD if renewals fail: computed once from
//! the lock's [`Config`] and `--kill-after`, validated before anything is sent.
//!
//! The library's fence is valid until `send time of the last successful lock/renew + TTL −
//! safety margin` (TTL/10). etcd cannot have expired the key before then, so nobody else can
//! hold it. `Event::Lost` comes at that deadline at the latest: too late to stop CMD in time.
//! So the command acts earlier, from the fence's `valid_until` (which each successful renewal
//! moves forward):
//!
//! - SIGTERM to CMD's process group at `valid_until − kill_after − KILL_MARGIN`;
//! - SIGKILL at `valid_until − KILL_MARGIN` if any process of the group is still there.
//!
//! Renewals go out often enough that a few of them fit before the SIGTERM point.

use std::time::{Duration, Instant};

use microlock_tokio::Config;

/// How long before the hold's validity deadline CMD's process group gets SIGKILL: room for
/// the signal to be delivered and the processes to die, and for this process's timer to be
/// late on a busy machine (both sides of the deadline use the same monotonic clock).
pub const KILL_MARGIN: Duration = Duration::from_millis(500);

/// The least time between a successful renewal's send and the SIGTERM point: renewals need a
/// round trip to etcd, and a few attempts should fit.
pub const MIN_RENEW_WINDOW: Duration = Duration::from_secs(1);

/// How many renewals fit between a successful renewal and the SIGTERM point, at least.
const RENEWALS_PER_WINDOW: u32 = 3;

/// The loss timing, for `microlock run --help` (the README tells the same).
pub const LOSS_TIMING: &str = "\
Loss timing:
  Each successful renewal makes the hold valid until its send time + TTL - TTL/10 (the
  library's safety margin); etcd cannot expire the key before then. Renewals go out every
  W/3, where W = TTL - TTL/10 - kill-after - 0.5s is the time from a renewal to the SIGTERM
  point. If none succeeds, CMD's process group gets SIGTERM W after the last
  successful renewal was sent, and SIGKILL kill-after later (0.5s before the validity
  deadline) if any process of the group is still there. With the defaults (--ttl 10s,
  --kill-after 2s): renewals every 2.17s; SIGTERM 6.5s after the last successful renewal,
  SIGKILL at 8.5s, validity ends at 9s, etcd expires the key 10s after it received that
  renewal. So a CMD that exits on SIGTERM within --kill-after, and a CMD that ignores it, is
  gone before another node can get the lock. A loss seen earlier (etcd says the key is not
  ours, or the watch saw it taken) gets SIGTERM at once and SIGKILL kill-after later (0.5s
  before the validity deadline at the latest). Then microlock exits with status 124, without
  releasing the key. Only CMD's process group is signalled: a process that left it (setsid,
  a daemon) is not stopped. --kill-after + 0.5s must leave at least 1s of the validity
  (TTL - TTL/10) for renewals.";

/// The renewal period and signal deadlines of one `microlock run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// TTL − the library's safety margin: how long a successful renewal keeps the hold valid.
    pub validity: Duration,
    /// SIGTERM to SIGKILL.
    pub kill_after: Duration,
    /// How often auto-renew renews (counted from the last successful renewal's send time).
    pub renew_every: Duration,
}

impl Timing {
    /// The timing for a lock configured by `config`, or a usage error explaining why
    /// `kill_after` does not fit in its TTL.
    pub fn new(config: &Config, kill_after: Duration) -> Result<Timing, String> {
        let ttl = config.ttl();
        let validity = ttl.saturating_sub(config.safety_margin());
        let reserved = kill_after + KILL_MARGIN;
        if reserved + MIN_RENEW_WINDOW > validity {
            let most = validity.saturating_sub(KILL_MARGIN + MIN_RENEW_WINDOW);
            return Err(format!(
                "--kill-after {} does not fit in --ttl {}: after each renewal the hold is valid \
                 for {} (the TTL minus the library's {} safety margin); CMD gets SIGTERM \
                 kill-after + {} before that, and at least {} must remain for renewals. Use \
                 --kill-after {} or less, or a longer --ttl",
                show(kill_after),
                show(ttl),
                show(validity),
                show(config.safety_margin()),
                show(KILL_MARGIN),
                show(MIN_RENEW_WINDOW),
                show(most),
            ));
        }
        let window = validity - reserved;
        Ok(Timing {
            validity,
            kill_after,
            // Always more often than the library's default (TTL/3), as W < TTL.
            renew_every: window / RENEWALS_PER_WINDOW,
        })
    }

    /// When CMD gets SIGTERM if the hold valid until `valid_until` is not renewed.
    pub fn term_at(&self, valid_until: Instant) -> Instant {
        earlier(valid_until, self.kill_after + KILL_MARGIN)
    }

    /// When CMD's process group gets SIGKILL at the latest, for a hold valid until
    /// `valid_until`.
    pub fn kill_at(&self, valid_until: Instant) -> Instant {
        earlier(valid_until, KILL_MARGIN)
    }

    /// The schedule, for `--verbose`.
    pub fn describe(&self) -> String {
        let term = self.validity - self.kill_after - KILL_MARGIN;
        format!(
            "renewing every {}; if renewals fail, SIGTERM to CMD {} after the last successful \
             renewal, SIGKILL at {}, validity ends at {}",
            show(self.renew_every),
            show(term),
            show(self.validity - KILL_MARGIN),
            show(self.validity),
        )
    }
}

/// `at − by`, or `at` itself if that is before the clock's origin.
fn earlier(at: Instant, by: Duration) -> Instant {
    at.checked_sub(by).unwrap_or(at)
}

/// A duration for people, to the millisecond: `2s 170ms`.
pub fn show(d: Duration) -> String {
    let ms = Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    humantime::format_duration(ms).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ttl_secs: u64) -> Config {
        Config::new("k", "n", Duration::from_secs(ttl_secs)).expect("valid")
    }

    #[test]
    fn defaults_fit_with_room_for_three_renewals() {
        let t = Timing::new(&config(10), Duration::from_secs(2)).expect("fits");
        assert_eq!(t.validity, Duration::from_secs(9));
        // W = 9 - 2 - 0.5 = 6.5 s: renewals every 2.1666 s (under TTL/3 = 3.33 s).
        assert_eq!(t.renew_every, Duration::from_nanos(6_500_000_000 / 3));
        let now = Instant::now();
        let valid_until = now + Duration::from_secs(9);
        assert_eq!(t.term_at(valid_until), now + Duration::from_millis(6500));
        assert_eq!(t.kill_at(valid_until), now + Duration::from_millis(8500));
    }

    #[test]
    fn three_renewals_fit_before_sigterm() {
        // TTL 60 s: validity 54 s, W = 51.5 s, renewals every 17.17 s (TTL/3 would be 20 s).
        let t = Timing::new(&config(60), Duration::from_secs(2)).expect("fits");
        assert_eq!(t.renew_every, Duration::from_nanos(51_500_000_000 / 3));
        // The loss test's timing: TTL 4 s, kill-after 1 s: W = 3.6 - 1.5 = 2.1 s.
        let t = Timing::new(&config(4), Duration::from_secs(1)).expect("fits");
        assert_eq!(t.renew_every, Duration::from_millis(700));
    }

    #[test]
    fn kill_after_must_fit_in_the_ttl() {
        // 9 s of validity: 5 s + 0.5 s + 1 s fits, 7.6 s does not.
        assert!(Timing::new(&config(10), Duration::from_secs(5)).is_ok());
        assert!(Timing::new(&config(10), Duration::from_millis(7500)).is_ok());
        let e = Timing::new(&config(10), Duration::from_millis(7600)).expect_err("too long");
        assert!(e.contains("--kill-after 7s 600ms does not fit"), "{e}");
        assert!(e.contains("--kill-after 7s 500ms or less"), "{e}");
        assert!(Timing::new(&config(1), Duration::ZERO).is_err());
    }
}
