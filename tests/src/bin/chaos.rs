//! `chaos`: a seeded nemesis against a real 3-member etcd cluster while lock clients on both
//! adapters contend for one lock (see `microlock_tests::chaos`). `make chaos SECONDS=N SEED=S`.
//!
//! ```text
//! chaos [--seconds N] [--seed S] [--no-quorum-loss] [--no-partitions] [--ttl SECS]
//!       [--tokio-clients N] [--async-std-clients N] [--short] [--verbose] [--schedule-only]
//!       [--plant-violation]
//! ```
//! `--short`: the bounded test's shorter faults and gaps. `--plant-violation`: client 0's first
//! hold ignores `is_held()` for 2 TTL without renewing (the checkers must catch it).
//! ```text
//! ```
//! etcd is `$ETCD_BIN` (else `etcd` on `PATH`). Exit status: 0 every checker passed, 1 a
//! violation, 2 bad usage, 3 the harness failed (the cluster did not recover).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use microlock_tests::chaos::{self, Options};

const USAGE: &str = "usage: chaos [--seconds N] [--seed S] [--no-quorum-loss] [--no-partitions] \
     [--ttl SECS] [--tokio-clients N] [--async-std-clients N] [--short] [--verbose] \
     [--schedule-only] [--plant-violation]";

fn main() {
    let mut args = std::env::args().skip(1);
    let mut seconds = 120;
    let mut seed = None;
    let mut short = false;
    let mut flags: Vec<String> = Vec::new();
    let mut values: Vec<(String, u64)> = Vec::new();
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u64 {
            match args.next().map(|v| v.trim().parse::<u64>()) {
                Some(Ok(v)) => v,
                _ => usage(&format!("{name} takes a number")),
            }
        };
        match arg.as_str() {
            "--seconds" => seconds = number("--seconds"),
            "--seed" => seed = Some(number("--seed")),
            "--ttl" | "--tokio-clients" | "--async-std-clients" => {
                let v = number(&arg);
                values.push((arg, v));
            }
            "--short" => short = true,
            "--no-quorum-loss" | "--no-partitions" | "--verbose" | "--schedule-only"
            | "--plant-violation" => flags.push(arg),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        // A fresh seed, printed (and replayable) like any other.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    let mut o = if short {
        Options::short(seconds, seed)
    } else {
        Options::new(seconds, seed)
    };
    for (name, v) in values {
        match name.as_str() {
            "--ttl" if v >= 1 => o.ttl = Duration::from_secs(v),
            "--tokio-clients" => o.tokio_clients = v as usize,
            "--async-std-clients" => o.async_std_clients = v as usize,
            _ => usage(&format!("bad value {v} for {name}")),
        }
    }
    if o.tokio_clients + o.async_std_clients < 2 {
        usage("at least 2 clients are needed for contention");
    }
    let has = |f: &str| flags.iter().any(|x| x == f);
    o.quorum_loss = !has("--no-quorum-loss");
    o.partitions = o.partitions && !has("--no-partitions");
    o.verbose = has("--verbose");
    o.plant_violation = has("--plant-violation");
    if has("--schedule-only") {
        print!("{}", chaos::schedule(&o));
        return;
    }
    let report = chaos::run(&o);
    println!();
    print!("{report}");
    std::process::exit(if report.harness_failure.is_some() {
        3
    } else if report.passed() {
        0
    } else {
        1
    });
}

fn usage(message: &str) -> ! {
    eprintln!("chaos: {message}\n{USAGE}");
    std::process::exit(2);
}
