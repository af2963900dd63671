//! Exit statuses, and the one error type of the command: a message for stderr and a status.

use std::fmt;
use std::process::ExitStatus;

use microlock_tokio::Error;

/// Success (`run`: CMD's own status instead).
pub const OK: u8 = 0;
/// A usage error: a bad flag or value (sysexits `EX_USAGE`; clap's own errors too).
pub const USAGE: u8 = 64;
/// etcd could not be reached, or refused us (sysexits `EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// An internal error (sysexits `EX_SOFTWARE`): a bug in microlock.
pub const SOFTWARE: u8 = 70;
/// The lock was not acquired within `--wait` (sysexits `EX_TEMPFAIL`: try again later).
pub const TEMPFAIL: u8 = 75;
/// `unlock`: the lock is not held by `--id` (sysexits `EX_NOPERM`).
pub const NOT_OWNED: u8 = 77;
/// `run`: the lock was lost while CMD ran, and CMD was stopped (as GNU `timeout`'s 124).
pub const LOST: u8 = 124;
/// `run`: CMD exists but could not be executed (as shells do).
pub const CANNOT_EXECUTE: u8 = 126;
/// `run`: CMD was not found (as shells do).
pub const NOT_FOUND: u8 = 127;

/// The exit statuses, for `--help` (the README has the same table).
pub const EXIT_STATUSES: &str = "\
Exit status:
  0      success; `run`: CMD's own exit status (128+N when CMD was killed by signal N)
  64     usage error: a bad flag or value, or --kill-after that does not fit in --ttl
  69     etcd unreachable or refused us (connection refused, timeout, TLS or authentication \
failure, an error answer)
  75     the lock was not acquired within --wait: another node holds it
  77     unlock: the lock is not held by --id (it is free, or another node holds it)
  124    run: the lock was lost while CMD ran (renewals failed, or etcd said it is not ours \
any more) and CMD was stopped
  126    run: CMD could not be executed (permission denied)
  127    run: CMD not found
  128+N  microlock itself got signal N before CMD started (130: SIGINT, 143: SIGTERM)";

/// Why the command stops: a message for stderr (may be empty) and the exit status.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub code: u8,
    /// What to tell the user, without the `microlock: ` prefix.
    pub message: String,
}

impl Failure {
    /// A failure with this status and message.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A usage error (64).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(USAGE, message)
    }

    /// A library error, with what was being done (`"locking jobs/nightly"`).
    pub fn from_error(doing: &str, error: &Error) -> Failure {
        let code = match error {
            Error::AlreadyLocked { .. } | Error::WaitTimeout { .. } => TEMPFAIL,
            Error::LockNotOwned { .. } => NOT_OWNED,
            Error::InvalidKey { .. }
            | Error::InvalidNodeId { .. }
            | Error::InvalidTtl { .. }
            | Error::InvalidEndpoint { .. }
            | Error::InvalidOption { .. } => USAGE,
            Error::Cancelled | Error::Destroyed => SOFTWARE,
            // Transport, Timeout, Etcd, Protocol, Auth, Tls, LeaseExpired (an answer too late
            // to count), and whatever a later library version adds: etcd did not serve us.
            _ => UNAVAILABLE,
        };
        let message = match error {
            Error::LeaseExpired { .. } => format!(
                "{doing}: etcd answered too late to count (after the lease's validity \
                 deadline): {error}"
            ),
            Error::V2Unavailable { .. } => {
                format!("{doing}: {error} (here: --protocol v3, or MICROLOCK_PROTOCOL=v3)")
            }
            _ => format!("{doing}: {error}"),
        };
        Failure::new(code, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (exit status {})", self.message, self.code)
    }
}

/// The exit status a shell gives for a command that ended with `status`: its code, or 128+N
/// when killed by signal N.
pub fn of_status(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => SOFTWARE,
    }
}

/// The exit status of a process that got signal `signal` (128+N, as shells report).
pub fn of_signal(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn statuses_are_shell_like() {
        assert_eq!(of_status(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(of_status(ExitStatus::from_raw(9)), 137); // killed by SIGKILL
        assert_eq!(of_signal(2), 130);
    }

    #[test]
    fn errors_map_to_documented_statuses() {
        let timeout = Error::Timeout {
            after: std::time::Duration::from_secs(2),
        };
        assert_eq!(Failure::from_error("x", &timeout).code, UNAVAILABLE);
        let held = Error::AlreadyLocked {
            key: "k".into(),
            index: 3,
        };
        assert_eq!(Failure::from_error("x", &held).code, TEMPFAIL);
        let not_owned = Error::LockNotOwned { key: "k".into() };
        assert_eq!(Failure::from_error("x", &not_owned).code, NOT_OWNED);
        for code in [
            USAGE,
            UNAVAILABLE,
            TEMPFAIL,
            NOT_OWNED,
            LOST,
            CANNOT_EXECUTE,
            NOT_FOUND,
        ] {
            assert!(
                EXIT_STATUSES.contains(&format!("\n  {code} ")),
                "{code} is not documented"
            );
        }
    }
}
