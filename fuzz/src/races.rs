//! Target `races`: an arbitrary fault schedule for the deterministic simulator
//! (`microlock_proto::sim::dst`), with all of its checkers on.
//!
//! The input chooses the world — number of clients, TTL, clock drift (within the safety
//! margin), latency, loss of requests and of replies, duplication, partitions, pauses, crashes,
//! closed watches, quorum losses, when faults heal; the number of etcd members and their
//! faults (deaths, restarts, hangs, lags, isolations), the request timeout and the watch
//! liveness bound — and the seed of everything random in it. Any checker finding (two
//! believed holders, a stale token accepted, tokens going back, a silent stall, no progress
//! after healing, a waiter asleep past the liveness bound) is a crash, printed with its
//! replayable seed. The member fields come last, so inputs written before them still parse
//! (as single-member worlds without member faults); the protocol (etcd v2 or v3) after them,
//! so that those inputs stay v2 worlds.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use microlock_proto::sim::dst::{self, Params};
use microlock_proto::Protocol;

/// The fault schedule, as the fuzzer mutates it (every field is clamped to a sane range).
#[derive(Debug, Arbitrary)]
struct Schedule {
    seed: u64,
    clients: u8,
    ttl_secs: u8,
    drift_ppm: u16,
    latency_min_us: u16,
    latency_max_ms: u16,
    request_loss: u8,
    reply_loss: u8,
    duplication: u8,
    partitions: u8,
    pauses: u8,
    crashes: u8,
    watch_closes: u8,
    quorum_losses: u8,
    heal_secs: u8,
    members: u8,
    member_kills: u8,
    member_restarts: u8,
    member_hangs: u8,
    member_lags: u8,
    max_lag_ms: u16,
    member_isolations: u8,
    request_timeout: u8,
    watch_liveness: u8,
    /// Odd: an etcd v3 world (after the others, so that older inputs stay v2 worlds).
    protocol: u8,
}

impl Schedule {
    fn params(&self) -> Params {
        let ttl = Duration::from_secs(1 + u64::from(self.ttl_secs % 4));
        let heal_at = Duration::from_secs(5 + u64::from(self.heal_secs % 26));
        let request_timeout =
            Duration::from_millis([1500, 2000, 5000, 500][usize::from(self.request_timeout % 4)]);
        let min = Duration::from_micros(u64::from(self.latency_min_us % 5_000));
        // A round trip fits in half the request timeout: a network whose every other answer
        // comes after the client gave up on it is a misconfigured one, not a fault that heals
        // (latency stays after `heal_at`), and no client can keep a lock there (checker (f)
        // would fail however right the machine; found with a 500 ms timeout and 382 ms).
        let max = Duration::from_millis(1 + u64::from(self.latency_max_ms % 400))
            .min(request_timeout / 4)
            .max(min);
        let percent = |x: u8| f64::from(x % 26) / 100.0; // up to 25 %
        let members = [1, 3, 5][usize::from(self.members % 3)];
        let multi = members > 1;
        Params {
            clients: 2 + usize::from(self.clients % 7),
            members,
            ttl,
            margin: ttl / 10,
            request_timeout,
            watch_liveness: Duration::from_secs([4, 2, 1, 8][usize::from(self.watch_liveness % 4)]),
            liveness_checked: None,
            // Within what the margin covers (10 % of the TTL): safety must hold.
            drift_ppm: u64::from(self.drift_ppm) % 50_001,
            latency: (min, max),
            request_loss: percent(self.request_loss),
            reply_loss: percent(self.reply_loss),
            duplication: percent(self.duplication),
            partitions: usize::from(self.partitions % 5),
            pauses: usize::from(self.pauses % 5),
            max_pause: ttl * 3,
            crashes: usize::from(self.crashes % 4),
            watch_closes: usize::from(self.watch_closes % 5),
            quorum_losses: usize::from(self.quorum_losses % 3),
            member_kills: usize::from(self.member_kills % 3),
            member_restarts: usize::from(self.member_restarts % 4),
            member_hangs: usize::from(self.member_hangs % 4),
            member_lags: if multi {
                usize::from(self.member_lags % 4)
            } else {
                0
            },
            max_lag: Duration::from_millis(50 + u64::from(self.max_lag_ms % 1951)),
            member_isolations: if multi {
                usize::from(self.member_isolations % 4)
            } else {
                0
            },
            heal_at,
            end_at: heal_at + ttl * 3 + Duration::from_secs(10),
            protocol: if self.protocol % 2 == 1 {
                Protocol::V3
            } else {
                Protocol::V2
            },
            planted_bug: None,
        }
    }
}

/// Runs one world from `data`; panics with the report if any checker finds a violation.
pub fn run(data: &[u8]) {
    let Ok(schedule) = Schedule::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let params = schedule.params();
    let report = dst::run(schedule.seed, &params, crate::t0());
    assert!(report.violations.is_empty(), "races: {}", report.describe());
}
