//! `make bench`'s driver and report: runs every measurement against one etcd, then writes
//! `docs/performance.md` (tables, the machine, the etcd version, the date, the commands) and
//! `docs/performance.svg` (hand-off latency and etcd requests per acquisition against the number
//! of waiters, microlock against the bare-HTTP floor, etcd v2 above, v3 below).
//!
//! `make bench` builds the release examples and runs, on one throw-away etcd serving plain HTTP
//! and mutual TLS (`.ci/bench-etcd.sh`):
//!
//! ```text
//! target/release/examples/report                 # URLs from ETCD_URL / ETCD_TLS_URL
//! target/release/examples/report --render-only   # the documents again from the last results
//! ```
//!
//! Options: `--url URL`, `--tls-url URL` (no TLS bench without one), `--results DIR` (the JSON
//! results, default `target/bench/`), `--docs DIR` (default `docs/`), `--quick` (small runs,
//! to try the pipeline: its documents go to the results directory, never to `docs/`).
//!
//! The steps ([`steps`]), each a program of its own writing JSON (`--json FILE`):
//! 1. the uncontended lock+unlock cycle against the bare client (`bench`, v2 and v3, over HTTP
//!    and over mutual TLS; `async_std_bench`, v2);
//! 2. the hand-off benchmark (`handoff`: W = 1, 4, 16), for v2 then v3;
//! 3. 10,000 locks in one process (`many_locks`), when that example exists;
//! 4. the machine's CPU cost per operation (criterion, `cargo bench -p microlock-proto --bench
//!    machine`; `$CARGO` names cargo).
//!
//! The page is written by [`markdown`] (the hand-off sections by [`contended`]), the plot by
//! [`plot`]. A step that fails is reported as such; the run then exits non-zero and leaves
//! `docs/` as it was (the documents go to the results directory).

mod contended;
mod machine;
mod markdown;
mod plot;
mod steps;

use std::path::{Path, PathBuf};

use markdown::{markdown, step};
use plot::plot;
use steps::measure;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The criterion benchmarks of `microlock-proto/benches/machine.rs`, with what each one times.
const MACHINE_BENCHES: [(&str, &str); 4] = [
    (
        "lock_201",
        "`lock()` → its PUT → etcd's `201 Created` → the completion (a new machine each time)",
    ),
    (
        "lock_unlock_cycle",
        "the uncontended cycle on one machine: lock, 201, unlock, 200",
    ),
    (
        "watch_event",
        "a watch answer (another node's create or release) → the event → the next long poll",
    ),
    (
        "lock_unlock_cycle_v3",
        "the uncontended cycle on etcd v3 (the JSON gateway), the lease granted: lock, the \
         acquire txn's answer, unlock, the release txn's answer",
    ),
];

struct Args {
    url: Option<String>,
    tls_url: Option<String>,
    results: PathBuf,
    docs: PathBuf,
    render_only: bool,
    quick: bool,
}

/// The workspace's root (this file is in `<root>/microlock-tokio/examples/report/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Where the release examples are (this program is one of them).
fn examples_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| root().join("target/release/examples"))
}

fn target_dir() -> PathBuf {
    // <target>/release/examples/report
    examples_dir()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("target"))
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        url: std::env::var("ETCD_URL").ok(),
        tls_url: std::env::var("ETCD_TLS_URL").ok(),
        results: target_dir().join("bench"),
        docs: root().join("docs"),
        render_only: false,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => args.url = Some(value()?),
            "--tls-url" => args.tls_url = Some(value()?),
            "--results" => args.results = value()?.into(),
            "--docs" => args.docs = value()?.into(),
            "--render-only" => args.render_only = true,
            "--quick" => args.quick = true,
            other => return Err(format!("unknown option {other} (see the file's docs)").into()),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let run = if args.render_only {
        let text = std::fs::read_to_string(args.results.join("run.json")).map_err(|e| {
            format!(
                "{}: {e} (run without --render-only first)",
                args.results.join("run.json").display()
            )
        })?;
        serde_json::from_str(&text)?
    } else {
        measure(&args)?
    };
    let failed: Vec<&str> = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["ok"] != true && s["skipped"] != true && s["optional"] != true)
        .filter_map(|s| s["step"].as_str())
        .collect();
    // A trial or a failed run never replaces the published documents.
    let out = if failed.is_empty() && run["quick"] != true {
        args.docs.clone()
    } else {
        args.results.clone()
    };
    std::fs::create_dir_all(&out)?;
    let md_path = out.join("performance.md");
    let svg_path = out.join("performance.svg");
    plot(&run, &svg_path)?;
    std::fs::write(&md_path, markdown(&run, "performance.svg"))?;
    println!(
        "report: wrote {} and {}",
        md_path.display(),
        svg_path.display()
    );
    if let Some(s) = step(&run, "many_locks").filter(|s| s["skipped"] == true) {
        println!(
            "report: many_locks not measured ({})",
            s["why"].as_str().unwrap_or("")
        );
    }
    if !failed.is_empty() {
        return Err(format!(
            "failed: {} (documents written to {}, docs/ left as it was)",
            failed.join(", "),
            out.display()
        )
        .into());
    }
    Ok(())
}
