//! Time in the model: nanoseconds since `start` (the time zero given to [`SimEtcd::new`]), the
//! arithmetic of SYNC ticks, and the fake wall clock on which `expiration` is written
//! ([`WALL_CLOCK_EPOCH_UNIX_SECS`], Go's `time.RFC3339Nano`).

use std::time::{Duration, Instant};

use super::{SimEtcd, WALL_CLOCK_EPOCH_UNIX_SECS};

/// etcd's `minExpireTime` (2000-01-01T00:00:00Z): earlier expiry times make a node permanent.
const MIN_EXPIRE_UNIX_SECS: i64 = 946_684_800;
const NANOS_PER_SEC: i128 = 1_000_000_000;

impl SimEtcd {
    pub(super) fn ns(&self, t: Instant) -> i128 {
        t.saturating_duration_since(self.start).as_nanos() as i128
    }
}

pub(super) fn before_min_expire(expire: i128) -> bool {
    i128::from(WALL_CLOCK_EPOCH_UNIX_SECS) * NANOS_PER_SEC + expire
        < i128::from(MIN_EXPIRE_UNIX_SECS) * NANOS_PER_SEC
}

pub(super) fn ceil_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b) + i128::from(a.rem_euclid(b) != 0)
}

pub(super) fn duration_from_nanos(ns: i128) -> Duration {
    let ns = ns.max(0);
    let secs = u64::try_from(ns / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (ns % NANOS_PER_SEC) as u32)
}

/// etcd's `expirationAndTTL`: the remaining time rounded up to whole seconds (toward zero when
/// negative).
pub(super) fn ttl_secs(expire: i128, now: i128) -> i64 {
    let left = expire - now;
    let mut ttl = left / NANOS_PER_SEC;
    if left % NANOS_PER_SEC > 0 {
        ttl += 1;
    }
    i64::try_from(ttl).unwrap_or(if ttl < 0 { i64::MIN } else { i64::MAX })
}

/// `t` (ns since start) on the fake wall clock, as Go's `time.RFC3339Nano` in UTC.
pub(super) fn rfc3339_nano(t: i128) -> String {
    let unix_ns = i128::from(WALL_CLOCK_EPOCH_UNIX_SECS) * NANOS_PER_SEC + t;
    let secs = unix_ns.div_euclid(NANOS_PER_SEC);
    let nanos = unix_ns.rem_euclid(NANOS_PER_SEC);
    let days = i64::try_from(secs.div_euclid(86_400)).unwrap_or_default();
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formatting() {
        assert_eq!(rfc3339_nano(0), "2020-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(1_500_000_000), "2020-01-01T00:00:01.5Z");
        assert_eq!(rfc3339_nano(123), "2020-01-01T00:00:00.000000123Z");
        assert_eq!(
            rfc3339_nano(60 * 86_400 * NANOS_PER_SEC),
            "2020-03-01T00:00:00Z"
        );
        assert_eq!(rfc3339_nano(-NANOS_PER_SEC), "2019-12-31T23:59:59Z");
        assert_eq!(ttl_secs(NANOS_PER_SEC, 1), 1);
        assert_eq!(ttl_secs(NANOS_PER_SEC + 1, 0), 2);
        assert_eq!(ttl_secs(0, NANOS_PER_SEC / 2), 0);
        assert_eq!(ttl_secs(0, 3 * NANOS_PER_SEC / 2), -1);
    }
}
