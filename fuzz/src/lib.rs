//! The fuzz targets of microlock, as a library that builds on stable Rust.
//!
//! Each target is a function from bytes to nothing that panics when an invariant does not
//! hold. cargo-fuzz runs them under libFuzzer (`fuzz_targets/*.rs` are one-line wrappers);
//! `tests/corpus.rs` replays every file in `corpus/<target>/` through the same functions on
//! stable, so `make test` exercises the corpus on every change.
//!
//! - [`responses`]: an arbitrary HTTP answer to each kind of pending request;
//! - [`operations`]: an arbitrary sequence of commands, answers, failures, timers and time
//!   steps;
//! - [`races`]: an arbitrary fault schedule for the deterministic simulator, checkers on;
//! - [`responses_v3`]: a script of commands, answers (etcd v3's own, mutated, made up, watch
//!   streams in pieces, endless), failures and time for a lock speaking etcd v3.
//!
//! Both drive the machine through [`harness::Harness`], which checks the machine's invariants
//! after every step. A new target (e.g. `races`, over the simulator) is a module with a
//! `run(&[u8])`, one line in [`TARGETS`], a `fuzz_targets/<name>.rs` wrapper, a `[[bin]]` in
//! `Cargo.toml` and a `corpus/<name>/` directory; `make fuzz` and the replay pick it up.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::OnceLock;
use std::time::Instant;

pub mod alloc;
pub mod etcd;
pub mod harness;
pub mod harness_v3;
pub mod operations;
pub mod races;
pub mod responses;
pub mod responses_v3;

/// A target's entry point: panics when an invariant does not hold.
pub type Target = fn(&[u8]);

/// Every target: its name (= its corpus directory and cargo-fuzz binary) and entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("responses", responses::run),
    ("operations", operations::run),
    ("races", races::run),
    ("responses_v3", responses_v3::run),
];

/// The entry point of target `name`.
pub fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target {name:?}"))
}

/// The instant every run's time starts at (the machine only sees offsets from it).
pub fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// `main` of a target binary built without libFuzzer (plain `cargo run --bin <target> --
/// FILE|DIR...`): runs each input file once, naming it first. For debugging a crash on
/// stable.
pub fn replay_main(name: &str) {
    let run = target(name);
    let mut files = Vec::new();
    for arg in std::env::args_os().skip(1) {
        let path = std::path::PathBuf::from(arg);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .expect("readable directory")
                .map(|e| e.expect("directory entry").path())
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path);
        }
    }
    if files.is_empty() {
        eprintln!("usage: {name} FILE|DIR... (runs each input once)");
        std::process::exit(2);
    }
    // MICROLOCK_FUZZ_REPEAT=N runs each input N times and prints the time per run.
    let repeat: u32 = std::env::var("MICROLOCK_FUZZ_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for file in files {
        eprintln!("{name}: {}", file.display());
        let data = std::fs::read(&file).expect("readable input");
        let start = Instant::now();
        for _ in 0..repeat {
            run(&data);
        }
        if repeat > 1 {
            eprintln!("  {:?} per run", start.elapsed() / repeat);
        }
    }
}
