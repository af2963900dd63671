//! `make bench`'s driver and report: runs every measurement against one etcd, then writes
//! `docs/performance.md` (tables, the machine, the etcd version, the date, the commands) and
//! `docs/performance.svg` (hand-off latency and etcd requests per acquisition against the number
//! of waiters, microlock against the bare-HTTP floor).
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
//! The steps, each a program of its own writing JSON (`--json FILE`):
//! 1. the uncontended lock+unlock cycle against the bare client (`bench` over HTTP and over
//!    mutual TLS, `async_std_bench`);
//! 2. the hand-off benchmark (`handoff`: W = 1, 4, 16);
//! 3. 10,000 locks in one process (`many_locks`), when that example exists;
//! 4. the machine's CPU cost per operation (criterion, `cargo bench -p microlock-proto --bench
//!    machine`; `$CARGO` names cargo).
//!
//! A step that fails is reported as such; the run then exits non-zero and leaves `docs/` as it
//! was (the documents go to the results directory).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The criterion benchmarks of `microlock-proto/benches/machine.rs`, with what each one times.
const MACHINE_BENCHES: [(&str, &str); 3] = [
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
];

/// Where a step's figures are.
enum Output {
    /// In the JSON file the step was asked to write (`--json FILE`).
    Json(String),
    /// In criterion's `target/criterion/<name>/new/estimates.json`.
    Criterion,
    /// On its standard output (Markdown).
    Stdout,
}

struct Args {
    url: Option<String>,
    tls_url: Option<String>,
    results: PathBuf,
    docs: PathBuf,
    render_only: bool,
    quick: bool,
}

/// The workspace's root (this file is in `<root>/microlock-tokio/examples/`).
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

// ----- running the steps -------------------------------------------------------------------

/// Runs a program, echoing its output; returns whether it succeeded, its stdout, the time.
fn run(program: &Path, args: &[String], cwd: &Path) -> (bool, String, f64) {
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            return (
                false,
                format!("cannot start {}: {e}", program.display()),
                0.0,
            )
        }
    };
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            println!("    {line}");
            out.push_str(&line);
            out.push('\n');
        }
    }
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    (ok, out, started.elapsed().as_secs_f64())
}

/// A command line as the report shows it: paths relative to the root, URLs as placeholders.
fn shown(program: &Path, args: &[String], urls: &[(&str, &Option<String>)]) -> String {
    let root = root();
    let rel = |s: &str| {
        let p = Path::new(s);
        p.strip_prefix(&root)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| s.to_owned())
    };
    let mut words = vec![rel(&program.display().to_string())];
    for arg in args {
        let mut word = rel(arg);
        for (name, url) in urls {
            if let Some(url) = url {
                if word == *url {
                    word = name.to_string();
                }
            }
        }
        words.push(word);
    }
    words.join(" ")
}

fn measure(args: &Args) -> Result<Value> {
    let url = args
        .url
        .clone()
        .ok_or("no etcd: give --url (or run under .ci/bench-etcd.sh, which sets ETCD_URL)")?;
    std::fs::create_dir_all(&args.results)?;
    let bin = examples_dir();
    let root = root();
    let urls = [("{URL}", &args.url), ("{TLS_URL}", &args.tls_url)];
    let json_arg = |name: &str| args.results.join(name).display().to_string();
    let (cycles, rounds) = if args.quick {
        ("50", "3")
    } else {
        ("400", "9")
    };
    let mut steps = Vec::new();
    let started = SystemTime::now();
    let machine_before = machine();

    // 4 first: CPU only, with etcd idle.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut criterion_args: Vec<String> = ["bench", "-q", "-p", "microlock-proto"]
        .into_iter()
        .chain(["--bench", "machine"])
        .map(String::from)
        .collect();
    if args.quick {
        criterion_args
            .extend(["--", "--warm-up-time", "0.5", "--measurement-time", "1"].map(String::from));
    }
    let mut planned: Vec<(&str, PathBuf, Vec<String>, Output)> = vec![(
        "machine",
        PathBuf::from(&cargo),
        criterion_args,
        Output::Criterion,
    )];
    let uncontended = |url: &str, file: &str| {
        vec![
            url.to_owned(),
            cycles.to_owned(),
            rounds.to_owned(),
            "--json".to_owned(),
            json_arg(file),
        ]
    };
    planned.push((
        "uncontended-tokio-http",
        bin.join("bench"),
        uncontended(&url, "uncontended-tokio-http.json"),
        Output::Json(json_arg("uncontended-tokio-http.json")),
    ));
    if let Some(tls_url) = &args.tls_url {
        planned.push((
            "uncontended-tokio-tls",
            bin.join("bench"),
            uncontended(tls_url, "uncontended-tokio-tls.json"),
            Output::Json(json_arg("uncontended-tokio-tls.json")),
        ));
    }
    planned.push((
        "uncontended-async-std-http",
        bin.join("async_std_bench"),
        uncontended(&url, "uncontended-async-std-http.json"),
        Output::Json(json_arg("uncontended-async-std-http.json")),
    ));
    let mut handoff = vec![url.clone(), "--json".into(), json_arg("handoff.json")];
    handoff.extend(if args.quick {
        ["--handoffs", "50", "--rounds", "1"].map(String::from)
    } else {
        ["--handoffs", "200", "--rounds", "5"].map(String::from)
    });
    planned.push((
        "handoff",
        bin.join("handoff"),
        handoff,
        Output::Json(json_arg("handoff.json")),
    ));
    // Another example, written separately: run when it exists (built by `make bench`). It
    // prints its figures as a Markdown table, which the report takes as it is.
    let many_locks_source = root.join("microlock-tokio/examples/many_locks.rs");
    let many_locks_bin = bin.join("many_locks");
    let many_locks_args = vec![url.clone()];
    if many_locks_source.exists() && many_locks_bin.exists() {
        planned.push((
            "many_locks",
            many_locks_bin,
            many_locks_args,
            Output::Stdout,
        ));
    } else {
        steps.push(json!({
            "step": "many_locks",
            "ok": false,
            "skipped": true,
            "command": shown(&many_locks_bin, &many_locks_args, &urls),
            "why": if many_locks_source.exists() {
                "microlock-tokio/examples/many_locks.rs exists but was not built"
            } else {
                "microlock-tokio/examples/many_locks.rs does not exist yet"
            },
        }));
    }

    for (name, program, step_args, output) in planned {
        println!("report: {name}: {}", shown(&program, &step_args, &urls));
        if let Output::Json(file) = &output {
            let _ = std::fs::remove_file(file);
        }
        let step_started = SystemTime::now();
        let (ok, stdout, seconds) = run(&program, &step_args, &root);
        let mut step = json!({
            "step": name,
            "ok": ok,
            "command": shown(&program, &step_args, &urls),
            "seconds": seconds,
        });
        let result = match &output {
            Output::Json(file) => std::fs::read_to_string(file)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok()),
            Output::Criterion => {
                Some(criterion_estimates(step_started)).filter(|e| e != &json!({}))
            }
            Output::Stdout => {
                let mut text = stdout.clone();
                for (name, url) in urls {
                    if let Some(url) = url {
                        text = text.replace(url.as_str(), name);
                    }
                }
                Some(json!({ "stdout": text }))
            }
        };
        if name == "many_locks" {
            // Another engineer's example: its failure is reported, not fatal.
            step["optional"] = json!(true);
        }
        match result {
            Some(result) => step["result"] = result,
            None => {
                step["ok"] = json!(false);
                step["stdout"] = json!(stdout);
            }
        }
        if !step["ok"].as_bool().unwrap_or(false) {
            eprintln!("report: step {name} failed");
        }
        steps.push(step);
    }

    let run = json!({
        "date_utc": utc(started),
        "seconds": started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "quick": args.quick,
        "machine": machine_before,
        "load_average_after": machine()["load_average"],
        "etcd_version": etcd_version(&url).unwrap_or_else(|e| format!("unknown ({e})")),
        "tls": args.tls_url.is_some(),
        "git": git_state(),
        "rustc": output_of("rustc", &["--version"]).unwrap_or_default(),
        "steps": steps,
    });
    std::fs::write(
        args.results.join("run.json"),
        serde_json::to_string_pretty(&run)? + "\n",
    )?;
    Ok(run)
}

/// criterion's estimates (nanoseconds) for the machine benchmarks, written since `since`.
fn criterion_estimates(since: SystemTime) -> Value {
    let mut out = serde_json::Map::new();
    for (name, _) in MACHINE_BENCHES {
        let path = target_dir()
            .join("criterion")
            .join(name)
            .join("new/estimates.json");
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        let estimates = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok());
        if let (true, Some(e)) = (fresh, estimates) {
            // criterion's headline figure: the slope of time against iterations when it has
            // one (linear sampling), else the mean.
            let (kind, headline) = match e.get("slope") {
                Some(slope) if !slope.is_null() => ("slope", slope.clone()),
                _ => ("mean", e["mean"].clone()),
            };
            out.insert(
                name.to_owned(),
                json!({
                    "estimate": kind,
                    "ns": headline["point_estimate"],
                    "ci_low_ns": headline["confidence_interval"]["lower_bound"],
                    "ci_high_ns": headline["confidence_interval"]["upper_bound"],
                    "median_ns": e["median"]["point_estimate"],
                }),
            );
        }
    }
    Value::Object(out)
}

// ----- the machine, the date, etcd ---------------------------------------------------------

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let processors = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let usable = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpu": model,
        "cores": processors,
        "usable_cores": usable,
        "memory_gib": memory_gib,
        "kernel": kernel.trim(),
        // Other work on the machine skews the figures: the 1, 5 and 15-minute load averages.
        "load_average": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "os": std::env::consts::OS,
    })
}

fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_state() -> Value {
    let commit = output_of("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty =
        output_of("git", &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    json!({ "commit": commit, "uncommitted_changes": dirty })
}

/// `GET /version` over plain HTTP (`{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}`).
fn etcd_version(url: &str) -> Result<String> {
    let authority = url
        .strip_prefix("http://")
        .ok_or("the plain-HTTP URL is needed")?
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /version HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split("\r\n\r\n").nth(1).ok_or("no body")?;
    let version: Value = serde_json::from_str(body.trim())?;
    Ok(version["etcdserver"]
        .as_str()
        .ok_or("no etcdserver field")?
        .to_owned())
}

/// `YYYY-MM-DD HH:MM UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

// ----- the documents -----------------------------------------------------------------------

fn step<'a>(run: &'a Value, name: &str) -> Option<&'a Value> {
    run["steps"].as_array()?.iter().find(|s| s["step"] == name)
}

fn result<'a>(run: &'a Value, name: &str) -> Option<&'a Value> {
    step(run, name)
        .filter(|s| s["ok"] == true)
        .map(|s| &s["result"])
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// A duration in nanoseconds, in the unit that reads best.
fn ns(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} ms", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.2} µs", value / 1e3)
    } else {
        format!("{value:.0} ns")
    }
}

fn not_measured(run: &Value, name: &str) -> String {
    match step(run, name) {
        None => "not measured.\n".into(),
        Some(s) if s["skipped"] == true => format!(
            "not measured: {}. The command would be `{}` (under `.ci/bench-etcd.sh`).\n",
            s["why"].as_str().unwrap_or("skipped"),
            s["command"].as_str().unwrap_or("")
        ),
        Some(s) => {
            let mut text = format!(
                "not measured: `{}` failed.\n",
                s["command"].as_str().unwrap_or("")
            );
            if let Some(out) = s["stdout"].as_str().filter(|o| !o.trim().is_empty()) {
                let _ = write!(text, "\nIts output:\n\n```text\n{}\n```\n", out.trim_end());
            }
            text
        }
    }
}

/// A JSON value flattened into `key | value` rows (for results whose shape this report does
/// not know).
fn flatten(prefix: &str, value: &Value, rows: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, rows);
            }
        }
        Value::Number(n) => rows.push((
            prefix.to_owned(),
            match n.as_f64() {
                Some(x) if n.is_f64() => format!("{x:.4}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_owned(),
                _ => n.to_string(),
            },
        )),
        Value::String(s) => rows.push((prefix.to_owned(), s.clone())),
        other => rows.push((prefix.to_owned(), other.to_string())),
    }
}

fn handoff_rows(run: &Value) -> Vec<&Value> {
    result(run, "handoff")
        .and_then(|r| r["results"].as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn markdown(run: &Value, svg_name: &str) -> String {
    let mut md = String::new();
    let m = &run["machine"];
    let git = &run["git"];
    let commit = git["commit"].as_str().unwrap_or("unknown");
    let dirty = if git["uncommitted_changes"] == true {
        " (with uncommitted changes)"
    } else {
        ""
    };
    let _ = writeln!(md, "# Performance\n");
    let _ = writeln!(
        md,
        "Written by `make bench` ({}); do not edit: run it again. All figures come from one \
         run against one throw-away etcd on this machine, the clients in the same machine's \
         loopback.\n",
        if run["quick"] == true {
            "a `--quick` trial run: small samples"
        } else {
            "the full run"
        }
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| date | {} |", run["date_utc"].as_str().unwrap_or("?"));
    let _ = writeln!(
        md,
        "| machine | {}, {} cores ({} usable), {:.0} GiB, Linux {} |",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["usable_cores"],
        f(&m["memory_gib"]),
        m["kernel"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "| load average (1, 5, 15 min) | {} before, {} after: other work on the machine shows \
         here, and in the figures |",
        m["load_average"].as_str().unwrap_or("?"),
        run["load_average_after"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "| etcd | {} (single member, v2 API, one process serving plain HTTP and mutual TLS) |",
        run["etcd_version"].as_str().unwrap_or("?")
    );
    let _ = writeln!(md, "| code | commit `{commit}`{dirty} |");
    let _ = writeln!(
        md,
        "| compiler | {} |",
        run["rustc"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "| command | `make bench` ({:.0} s for the measurements) |\n",
        f(&run["seconds"])
    );
    let _ = writeln!(md, "![hand-off latency and etcd requests per acquisition against the number of waiters, microlock-tokio against bare hyper]({svg_name})\n");

    // 1. Uncontended.
    let _ = writeln!(
        md,
        "## Uncontended lock + unlock: the adapters against their bare clients\n"
    );
    let _ = writeln!(
        md,
        "One node takes and releases a free lock (PUT `prevExist=false`, DELETE `prevValue`); \
         the floor sends the same two requests from a bare keep-alive client. The two \
         alternate, round by round (tokio) or cycle by cycle (async-std); each figure is the \
         median of the rounds' mean cycle time.\n"
    );
    let _ = writeln!(
        md,
        "| adapter | transport | microlock | floor | floor's time | ratio | rounds × cycles |\n|---|---|---:|---|---:|---:|---:|"
    );
    for name in [
        "uncontended-tokio-http",
        "uncontended-tokio-tls",
        "uncontended-async-std-http",
    ] {
        match result(run, name) {
            Some(r) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.1} µs | {} | {:.1} µs | **{:.3}** | {} × {} |",
                    r["adapter"].as_str().unwrap_or("?"),
                    r["transport"].as_str().unwrap_or("?"),
                    f(&r["microlock_us"]),
                    r["floor"].as_str().unwrap_or("?"),
                    f(&r["floor_us"]),
                    f(&r["ratio"]),
                    r["rounds"],
                    r["cycles"]
                );
            }
            None => {
                let _ = writeln!(md, "| `{name}` | not measured | | | | | |");
            }
        }
    }
    md.push('\n');

    // 2. Hand-off.
    let _ = writeln!(
        md,
        "## Contended: hand-off latency, fairness, etcd requests\n"
    );
    let rows = handoff_rows(run);
    if let Some(h) = result(run, "handoff") {
        let _ = writeln!(
            md,
            "W+1 tasks in one process, each with its own client (own connections) and node id, \
             loop on one key: acquire (timeout {} s), hold {} ms, unlock; after {} warm-up holds, \
             {} hand-offs are measured; microlock-tokio and the floor alternate run by run, {} \
             round(s), and each figure is the median of the rounds. The floor is bare hyper doing \
             the least a waiting lock on etcd v2 can do: `PUT ?prevExist=false` (value=id, \
             ttl={}); on `412`, a long poll `GET ?wait=true&waitIndex=<the error's index + 1>` \
             until a `delete`, `compareAndDelete` or `expire`, then the PUT again; \
             `DELETE ?prevValue=id` to release.\n",
            h["acquire_timeout_s"],
            h["hold_ms"],
            h["warmup"],
            h["handoffs"],
            h["rounds"],
            h["ttl_s"]
        );
        let _ = writeln!(
            md,
            "- **hand-off to another node**: from the releaser's unlock completing to the next \
               holder's acquire completing, over the hand-offs where the next holder is another \
               node (p50, p99; both instants read in the one process). The next column \
               counts those hand-offs in a round: the p99 of a hundred is close to their \
               maximum.\n\
             - **re-take share**: among the hand-offs where another node was waiting when the \
               holder released, the fraction where the releaser took the lock again.\n\
             - **acquire wait**: from `acquire` called to its completion, per acquisition \
               (p50, p99, max): what the nodes that lose the races pay.\n\
             - **early**: hand-offs where the next holder's acquire completed before the \
               releaser saw its own unlock complete (both answers race back from etcd): \
               counted as 0 ms.\n\
             - **requests / acquisition**: from etcd's `/metrics`, read when the hold opening \
               the window and the one closing it are taken: `etcd_http_received_total` (every \
               method) + `etcd_debugging_store_watch_requests_total` (long polls are not in \
               the former), over the acquisitions in the window. **store ops / acquisition** is \
               `etcd_debugging_store_reads_total` + `etcd_debugging_store_writes_total` (all \
               `action` labels; failed writes count too) + \
               `etcd_debugging_store_watch_requests_total`: on etcd 3.4 it is twice the \
               requests, because every v2 keys request also reads `/2/enabled` (the v2 auth \
               check) from the store.\n"
        );
        let _ = writeln!(
            md,
            "| W | client | hand-off p50 | p99 | to another node (early) | re-take share | acquire wait p50 | p99 | max | acquisitions / s |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &rows {
            let s = &r["median"];
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} ms | {:.2} ms | {:.0} ({:.0}) | {:.1} % | {:.2} ms | {:.2} ms | {:.1} ms | {:.0} |",
                r["waiters"],
                r["client"].as_str().unwrap_or("?"),
                f(&s["handoff_p50_ms"]),
                f(&s["handoff_p99_ms"]),
                f(&s["handoffs_to_other"]),
                f(&s["handoffs_early"]),
                f(&s["retake_share"]) * 100.0,
                f(&s["wait_p50_ms"]),
                f(&s["wait_p99_ms"]),
                f(&s["wait_max_ms"]),
                f(&s["acquisitions_per_s"]),
            );
        }
        // microlock against the floor, per W.
        let _ = writeln!(
            md,
            "\nmicrolock-tokio ÷ floor (medians):\n\n| W | hand-off p50 | p99 | acquire wait p99 | requests / acquisition |\n|---:|---:|---:|---:|---:|"
        );
        let by = |w: &Value, client: &str| {
            rows.iter()
                .find(|r| &r["waiters"] == w && r["client"] == client)
                .map(|r| &r["median"])
        };
        for r in rows.iter().filter(|r| r["client"] == "microlock-tokio") {
            if let (Some(a), Some(b)) = (
                by(&r["waiters"], "microlock-tokio"),
                by(&r["waiters"], "bare hyper"),
            ) {
                let ratio = |k: &str| f(&a[k]) / f(&b[k]);
                let _ = writeln!(
                    md,
                    "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    r["waiters"],
                    ratio("handoff_p50_ms"),
                    ratio("handoff_p99_ms"),
                    ratio("wait_p99_ms"),
                    ratio("requests_per_acquisition")
                );
            }
        }
        // What the requests are: per acquisition, by kind, the median over the rounds.
        let mut methods: Vec<String> = Vec::new();
        for r in &rows {
            for round in r["rounds"].as_array().into_iter().flatten() {
                if let Some(map) = round["received_per_acquisition"].as_object() {
                    for (method, n) in map {
                        if f(n) > 0.0 && !methods.contains(method) {
                            methods.push(method.clone());
                        }
                    }
                }
            }
        }
        methods.sort();
        let _ = write!(
            md,
            "\netcd requests per acquisition, by kind (medians; `QGET` is a quorum read, `watch` \
             a long poll):\n\n| W | client | requests | store ops |"
        );
        for method in &methods {
            let _ = write!(md, " {method} |");
        }
        let _ = write!(md, " watch |\n|---:|---|---:|---:|");
        for _ in 0..=methods.len() {
            md.push_str("---:|");
        }
        md.push('\n');
        for r in &rows {
            let rounds: Vec<&Value> = r["rounds"].as_array().into_iter().flatten().collect();
            let median_of = |get: &dyn Fn(&Value) -> f64| {
                let mut v: Vec<f64> = rounds
                    .iter()
                    .map(|round| get(round))
                    .map(|x| if x.is_nan() { 0.0 } else { x })
                    .collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
            };
            let _ = write!(
                md,
                "| {} | {} | {:.2} | {:.2} |",
                r["waiters"],
                r["client"].as_str().unwrap_or("?"),
                f(&r["median"]["requests_per_acquisition"]),
                f(&r["median"]["store_ops_per_acquisition"]),
            );
            for method in &methods {
                let n = median_of(&|round| f(&round["received_per_acquisition"][method.as_str()]));
                let _ = write!(md, " {n:.2} |");
            }
            let _ = writeln!(
                md,
                " {:.2} |",
                median_of(&|round| f(&round["watches_per_acquisition"]))
            );
        }
        md.push('\n');
    } else {
        md.push_str(&not_measured(run, "handoff"));
        md.push('\n');
    }

    // 3. Many locks.
    let _ = writeln!(md, "## 10,000 locks in one process\n");
    match result(run, "many_locks") {
        Some(r) => {
            let _ =
                writeln!(
                md,
                "What `microlock-tokio/examples/many_locks.rs` printed (`{}`; how it measures is \
                 in that file's documentation):\n",
                step(run, "many_locks").and_then(|s| s["command"].as_str()).unwrap_or("")
            );
            match r["stdout"].as_str() {
                Some(text) => md.push_str(text.trim_end()),
                None => {
                    // A JSON result: one row per value.
                    let mut rows = Vec::new();
                    flatten("", r, &mut rows);
                    md.push_str("| measure | value |\n|---|---:|");
                    for (k, v) in rows {
                        let _ = write!(md, "\n| {k} | {v} |");
                    }
                }
            }
            md.push('\n');
        }
        None => md.push_str(&not_measured(run, "many_locks")),
    }
    md.push('\n');

    // 4. The machine.
    let _ = writeln!(md, "## CPU per machine operation (no I/O)\n");
    match result(run, "machine")
        .and_then(Value::as_object)
        .filter(|o| !o.is_empty())
    {
        Some(estimates) => {
            let _ = writeln!(
                md,
                "criterion (`microlock-proto/benches/machine.rs`): the `microlock-proto` machine \
                 alone, fed canned etcd 3.4 answers (headers and body as etcd sends them) and \
                 instants made by the benchmark; the figure is criterion's estimate of the time \
                 per operation, with its 95 % confidence interval.\n\n| operation | what is timed | time | 95 % CI |\n|---|---|---:|---|"
            );
            for (name, what) in MACHINE_BENCHES {
                if let Some(e) = estimates.get(name) {
                    let _ = writeln!(
                        md,
                        "| `{name}` | {what} | {} | {} – {} |",
                        ns(f(&e["ns"])),
                        ns(f(&e["ci_low_ns"])),
                        ns(f(&e["ci_high_ns"]))
                    );
                }
            }
            if let Some(cycle) = estimates.get("lock_unlock_cycle") {
                if let Some(r) = result(run, "uncontended-tokio-http") {
                    let share = f(&cycle["ns"]) / 1e3 / f(&r["microlock_us"]) * 100.0;
                    let _ = writeln!(
                        md,
                        "\nThe machine's share of an uncontended cycle over HTTP: {} of {:.1} µs \
                         ({share:.2} %).",
                        ns(f(&cycle["ns"])),
                        f(&r["microlock_us"])
                    );
                }
            }
        }
        None => md.push_str(&not_measured(run, "machine")),
    }
    md.push('\n');

    // The commands.
    let _ = writeln!(
        md,
        "## How this was made\n\n`make bench` builds the release examples and the criterion \
         benchmark, then runs `target/release/examples/report` under `.ci/bench-etcd.sh`, which \
         starts one etcd serving `{{URL}}` (plain HTTP) and `{{TLS_URL}}` (mutual TLS, \
         certificates made for the run). The report ran, in this order:\n\n| step | command | time |\n|---|---|---:|"
    );
    for s in run["steps"].as_array().into_iter().flatten() {
        let status = if s["skipped"] == true {
            "skipped".to_owned()
        } else if s["ok"] == true {
            format!("{:.0} s", f(&s["seconds"]))
        } else {
            "**failed**".to_owned()
        };
        let _ = writeln!(
            md,
            "| {} | `{}` | {} |",
            s["step"].as_str().unwrap_or("?"),
            s["command"].as_str().unwrap_or("?"),
            status
        );
    }
    let _ = writeln!(
        md,
        "\n`target/release/examples/report --render-only` writes this page and the plot again \
         from the JSON results in `target/bench/`."
    );
    md
}

/// The plot: hand-off latency (p50 solid, p99 dashed) and requests per acquisition, against W.
fn plot(run: &Value, path: &Path) -> Result<()> {
    let rows = handoff_rows(run);
    let series = |client: &str, key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r["client"] == client)
            .map(|r| (f(&r["waiters"]), f(&r["median"][key])))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let mut ws: Vec<f64> = rows.iter().map(|r| f(&r["waiters"])).collect();
    ws.sort_by(f64::total_cmp);
    ws.dedup();
    if ws.is_empty() {
        ws = vec![1.0, 4.0, 16.0];
    }
    let (w_min, w_max) = (ws[0], ws[ws.len() - 1]);
    let x_range = || {
        (w_min / 1.5..w_max * 1.5)
            .log_scale()
            .with_key_points(ws.clone())
    };
    let clients = [("microlock-tokio", BLUE), ("bare hyper", RED)];

    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(36);
    title.draw(&Text::new(
        format!(
            "microlock-tokio vs. bare hyper, etcd {} ({} hand-offs per run, median of {} round(s))",
            run["etcd_version"].as_str().unwrap_or("?"),
            result(run, "handoff").map_or(Value::Null, |h| h["handoffs"].clone()),
            result(run, "handoff").map_or(Value::Null, |h| h["rounds"].clone()),
        ),
        (20, 12),
        ("sans-serif", 17),
    ))?;
    let panels = body.split_evenly((1, 2));

    // Left: latency, on a log scale (p99 is often ten times p50); room above for the legend.
    let latencies = || {
        rows.iter()
            .flat_map(|r| {
                [
                    &r["median"]["handoff_p50_ms"],
                    &r["median"]["handoff_p99_ms"],
                ]
            })
            .map(f)
            .filter(|y| y.is_finite() && *y > 0.0)
    };
    let low = latencies().fold(1.0, f64::min) / 1.5;
    let high = latencies().fold(1.0, f64::max) * 6.0;
    let ticks: Vec<f64> = [
        0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0,
    ]
    .into_iter()
    .chain([100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0])
    .filter(|t| (low..=high).contains(t))
    .collect();
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("hand-off latency to another node", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d(x_range(), (low..high).log_scale().with_key_points(ticks))?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("W (waiting nodes)")
        .y_desc("ms (log scale)")
        .x_label_formatter(&|w| format!("{w:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for (client, color) in clients {
        let p50 = series(client, "handoff_p50_ms");
        let p99 = series(client, "handoff_p99_ms");
        chart
            .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))?
            .label(format!("{client} p50"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(p50.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        chart
            .draw_series(DashedLineSeries::new(
                p99.clone(),
                6,
                4,
                color.stroke_width(1),
            ))?
            .label(format!("{client} p99"))
            .legend(move |(x, y)| {
                DashedPathElement::new([(x, y), (x + 20, y)], 5, 3, color.stroke_width(1))
            });
        chart.draw_series(
            p99.iter()
                .map(|&p| Circle::new(p, 3, color.stroke_width(1))),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;

    // Right: requests per acquisition.
    let top = rows
        .iter()
        .map(|r| f(&r["median"]["requests_per_acquisition"]))
        .filter(|y| y.is_finite())
        .fold(1.0, f64::max)
        * 1.3;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("etcd requests per acquisition", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d(x_range(), 0.0..top)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("W (waiting nodes)")
        .y_desc("requests")
        .x_label_formatter(&|w| format!("{w:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (client, color) in clients {
        let points = series(client, "requests_per_acquisition");
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(client)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
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
