//! The parameters of a world, derived from its seed.

use std::time::Duration;

use crate::rng::Rng;
use crate::sim::cluster::PlantedBug;
use crate::Protocol;

/// Everything a world is made of; [`Params::from_seed`] derives one from a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Number of clients (2–8).
    pub clients: usize,
    /// Number of etcd members (1, 3 or 5).
    pub members: usize,
    /// The lock TTL.
    pub ttl: Duration,
    /// The safety margin of the clients' validity deadline.
    pub margin: Duration,
    /// The clients' request timeout (`Config::with_request_timeout`).
    pub request_timeout: Duration,
    /// The clients' watch liveness bound (`Config::with_watch_liveness`), `L` of checker (g).
    pub watch_liveness: Duration,
    /// The `L` checker (g) holds the machines to, when not [`Params::watch_liveness`] (a test
    /// knob: machines configured with a long bound held to a short one must fail (g)).
    pub liveness_checked: Option<Duration>,
    /// Largest clock-rate error of a client, in parts per million (±).
    pub drift_ppm: u64,
    /// One-way network latency range.
    pub latency: (Duration, Duration),
    /// Probability that a request is lost before reaching etcd.
    pub request_loss: f64,
    /// Probability that a reply is lost after etcd applied the request.
    pub reply_loss: f64,
    /// Probability that a request is delivered twice.
    pub duplication: f64,
    /// Number of partitions (a client cut off for a while).
    pub partitions: usize,
    /// Number of process pauses (a client frozen for a while, its clock running).
    pub pauses: usize,
    /// Longest pause (of a client or a member).
    pub max_pause: Duration,
    /// Number of crashes (a client loses all state and restarts).
    pub crashes: usize,
    /// Number of times a member closes every watch it holds (empty 200 or cut).
    pub watch_closes: usize,
    /// Number of cluster-wide quorum-loss windows.
    pub quorum_losses: usize,
    /// Members killed (until the heal time, or for good when the others keep a quorum).
    pub member_kills: usize,
    /// Members killed and restarted 0.1–3 s later.
    pub member_restarts: usize,
    /// Members hung (`SIGSTOP`) for 0.1 s up to [`Params::max_pause`].
    pub member_hangs: usize,
    /// Members lagging for 1–10 s.
    pub member_lags: usize,
    /// Largest lag of a lagging member.
    pub max_lag: Duration,
    /// Members cut off from their peers for 0.5 s–3 TTL.
    pub member_isolations: usize,
    /// When faults stop.
    pub heal_at: Duration,
    /// When the world ends.
    pub end_at: Duration,
    /// What the clients speak and the cluster serves: etcd's v2 keys API or its v3 gateway
    /// (half the seeds each).
    pub protocol: Protocol,
    /// A deliberately wrong etcd (never from a seed: a test plants it to prove the checkers
    /// can fail).
    pub planted_bug: Option<PlantedBug>,
}

impl Params {
    /// A world derived from `seed`: the number of clients and members, faults and their
    /// intensity.
    pub fn from_seed(seed: u64) -> Params {
        let mut rng = Rng::new(seed ^ 0x5eed_5eed_5eed_5eed);
        let pick = |rng: &mut Rng, lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo + 1);
        let ttl = Duration::from_secs(pick(&mut rng, 1, 4));
        let heal_at = Duration::from_secs(pick(&mut rng, 10, 30));
        let clients = pick(&mut rng, 2, 8) as usize;
        let drift_ppm = pick(&mut rng, 0, 20_000); // up to 2 %: well inside a 10 % margin
        let latency = (
            Duration::from_micros(pick(&mut rng, 100, 2_000)),
            Duration::from_millis(pick(&mut rng, 3, 300)),
        );
        let request_loss = pick(&mut rng, 0, 10) as f64 / 100.0;
        let reply_loss = pick(&mut rng, 0, 10) as f64 / 100.0;
        let duplication = pick(&mut rng, 0, 5) as f64 / 100.0;
        let partitions = pick(&mut rng, 0, 3) as usize;
        let pauses = pick(&mut rng, 0, 3) as usize;
        let crashes = pick(&mut rng, 0, 2) as usize;
        let watch_closes = pick(&mut rng, 0, 3) as usize;
        let quorum_losses = pick(&mut rng, 0, 1) as usize;
        // Most worlds have 3 members; some keep the single member of old, some have 5.
        let members = match pick(&mut rng, 0, 19) {
            0..=4 => 1,
            5..=17 => 3,
            _ => 5,
        };
        let multi = members > 1;
        let request_timeout = match pick(&mut rng, 0, 9) {
            0..=5 => Duration::from_millis(1500),
            6..=8 => Duration::from_secs(2),
            _ => Duration::from_secs(5),
        };
        let watch_liveness = if pick(&mut rng, 0, 3) == 0 {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(4)
        };
        Params {
            clients,
            members,
            ttl,
            margin: ttl / 10,
            request_timeout,
            watch_liveness,
            liveness_checked: None,
            drift_ppm,
            latency,
            request_loss,
            reply_loss,
            duplication,
            partitions,
            pauses,
            max_pause: ttl * 3,
            crashes,
            watch_closes,
            quorum_losses,
            member_kills: pick(&mut rng, 0, 1) as usize,
            member_restarts: pick(&mut rng, 0, 2) as usize,
            member_hangs: pick(&mut rng, 0, if multi { 2 } else { 1 }) as usize,
            member_lags: if multi {
                pick(&mut rng, 0, 2) as usize
            } else {
                0
            },
            max_lag: Duration::from_millis(pick(&mut rng, 50, 1000)),
            member_isolations: if multi {
                pick(&mut rng, 0, 2) as usize
            } else {
                0
            },
            heal_at,
            end_at: heal_at + ttl * 3 + Duration::from_secs(10),
            // Drawn last: the other parameters of a seed are what they were before v3 worlds.
            protocol: if rng.next_u64() % 2 == 0 {
                Protocol::V2
            } else {
                Protocol::V3
            },
            planted_bug: None,
        }
    }

    /// The bound `B` of checker (g): see the module docs.
    pub fn liveness_bound(&self) -> Duration {
        let l = self.liveness_checked.unwrap_or(self.watch_liveness);
        let drift = Duration::from_nanos(
            (l.as_nanos() * u128::from(self.drift_ppm)).div_ceil(1_000_000) as u64,
        );
        l + drift + ACQUIRE_JITTER + self.liveness_slack()
    }

    /// The slack in `B` for what no client can shorten: 4 × the largest one-way latency, plus
    /// the largest member lag when members lag.
    pub fn liveness_slack(&self) -> Duration {
        let lag = if self.member_lags > 0 && self.members > 1 {
            self.max_lag
        } else {
            Duration::ZERO
        };
        self.latency.1 * 4 + lag
    }
}

/// The machines' acquire jitter (the `Config` default).
pub(super) const ACQUIRE_JITTER: Duration = Duration::from_millis(10);
