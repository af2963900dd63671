//! What a world reports: its violations, its trace, and how times are shown.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::Params;
use crate::{Error, Outcome, Protocol};

/// A checker's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which checker: `a` … `h`.
    pub check: char,
    /// When (simulated time since the start).
    pub at: Duration,
    /// What.
    pub what: String,
}

/// The result of one world.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The world's parameters.
    pub params: Params,
    /// Every checker finding (empty: the run is clean), at most 20.
    pub violations: Vec<Violation>,
    /// A hash of the whole trace: the same seed gives the same hash.
    pub trace_hash: u64,
    /// The last lines of the trace.
    pub trace_tail: Vec<String>,
    /// The trace lines leading to the first violation.
    pub before_violation: Vec<String>,
    /// The whole trace (only from [`replay`]; empty from [`run`]).
    pub trace: Vec<String>,
    /// Successful acquisitions.
    pub acquisitions: usize,
    /// Writes the fenced resource accepted / refused.
    pub writes: (usize, usize),
    /// Simulation steps.
    pub steps: usize,
}

impl Report {
    /// A human-readable account: seed, parameters, violations, trace tail. The same for the
    /// same seed and parameters, whatever the epoch or the process.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let protocol = match self.params.protocol {
            Protocol::V3 => "v3",
            _ => "v2",
        };
        let _ = writeln!(
            s,
            "seed {} ({protocol} world; replay: MICROLOCK_SEED={} make dst)",
            self.seed, self.seed
        );
        let _ = writeln!(s, "params {:?}", self.params);
        let _ = writeln!(
            s,
            "acquisitions {}, writes accepted/refused {:?}, steps {}, trace hash {:016x}",
            self.acquisitions, self.writes, self.steps, self.trace_hash
        );
        for v in &self.violations {
            let _ = writeln!(s, "VIOLATION ({}) at {}: {}", v.check, offset(v.at), v.what);
        }
        if !self.before_violation.is_empty() {
            let _ = writeln!(s, "trace up to the first violation:");
            for line in &self.before_violation {
                let _ = writeln!(s, "  {line}");
            }
        }
        let _ = writeln!(s, "trace tail:");
        for line in &self.trace_tail {
            let _ = writeln!(s, "  {line}");
        }
        s
    }

    /// The violations of one checker.
    pub fn of(&self, check: char) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.check == check)
    }
}

/// A simulated time as shown in the trace: `+12.345678901s` after the world's start.
pub fn offset(d: Duration) -> String {
    format!("+{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

/// Renders trace values that hold [`Instant`]s (a [`Fence`](crate::Fence)'s validity
/// deadline) as offsets from the world's epoch, so that a trace is the same text in every
/// process.
#[derive(Debug, Clone, Copy)]
pub struct TraceClock {
    epoch: Instant,
}

impl TraceClock {
    /// Offsets from `epoch`.
    pub fn new(epoch: Instant) -> TraceClock {
        TraceClock { epoch }
    }

    /// `+1.500000000s`, or `-0.250000000s` before the epoch.
    pub fn instant(&self, t: Instant) -> String {
        match t.checked_duration_since(self.epoch) {
            Some(d) => offset(d),
            None => format!("-{}", &offset(self.epoch.duration_since(t))[1..]),
        }
    }

    /// A completion's result: fences with their deadline as an offset, errors as `Debug`
    /// (which holds no instant).
    pub fn result(&self, result: &Result<Outcome, Error>) -> String {
        match result {
            Ok(outcome) => format!("Ok({})", self.outcome(outcome)),
            Err(e) => format!("Err({e:?})"),
        }
    }

    /// An outcome, its fence's deadline as an offset.
    pub fn outcome(&self, outcome: &Outcome) -> String {
        let fence = |name: &str, f: &crate::Fence| {
            format!(
                "{name}(Fence {{ token: {}, valid_until: {} }})",
                f.token(),
                self.instant(f.valid_until())
            )
        };
        match outcome {
            Outcome::Locked(f) => fence("Locked", f),
            Outcome::Renewed(f) => fence("Renewed", f),
            Outcome::Acquired(f) => fence("Acquired", f),
            // Any other outcome holds no fence; a future one that holds an instant shows in
            // the epoch test of tests/tests/dst.rs.
            other => format!("{other:?}"),
        }
    }
}
