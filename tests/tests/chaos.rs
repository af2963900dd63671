//! The bounded chaos run of `make test`: about 55 s of seeded faults (one of each kind:
//! member kill, leader kill, pause, partition from the peers, restart, a short quorum loss) on
//! a real 3-member etcd cluster while 2 tokio + 2 async-std clients contend for one lock; every
//! checker of `microlock_tests::chaos` must pass. `make chaos` runs longer ones.
//!
//! `MICROLOCK_CHAOS_SEED` (default 1, whose 55 s schedule has every kind of fault) and
//! `MICROLOCK_CHAOS_SECONDS` (default 55) override the run. `make test` runs it once, on
//! etcd 3.4 (its etcd 3.5 pass skips it).

use microlock_tests::chaos::{self, Options};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn chaos_bounded() {
    let seed = env_u64("MICROLOCK_CHAOS_SEED", 1);
    let seconds = env_u64("MICROLOCK_CHAOS_SECONDS", 55);
    let report = chaos::run(&Options::short(seconds, seed));
    println!("\n{report}");
    assert!(
        report.passed(),
        "the chaos run failed (replay: {}):\n{report}",
        report.replay
    );
}
