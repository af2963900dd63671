//! Running the steps: each measurement as a program of its own, its output echoed, its JSON
//! result (or criterion's estimates, or its Markdown) gathered into `run.json`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use crate::machine::{etcd_version, git_state, machine, output_of, utc};
use crate::{examples_dir, root, target_dir, Args, Result, MACHINE_BENCHES};

/// Where a step's figures are.
enum Output {
    /// In the JSON file the step was asked to write (`--json FILE`).
    Json(String),
    /// In criterion's `target/criterion/<name>/new/estimates.json`.
    Criterion,
    /// On its standard output (Markdown).
    Stdout,
}

/// The name of the hand-off step of `protocol` (`"v2"` or `"v3"`).
pub fn handoff_step(protocol: &str) -> &'static str {
    if protocol == "v3" {
        "handoff-v3"
    } else {
        "handoff"
    }
}

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

pub fn measure(args: &Args) -> Result<Value> {
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
        ("400", "15")
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
    // The hand-off, v2 then v3 (their names and JSON files: `handoff`, `handoff-v3`).
    for protocol in ["v2", "v3"] {
        let name = handoff_step(protocol);
        let file = format!("{name}.json");
        let mut handoff = vec![url.clone(), "--protocol".into(), protocol.into()];
        handoff.extend(["--json".into(), json_arg(&file)]);
        handoff.extend(if args.quick {
            ["--handoffs", "50", "--rounds", "1"].map(String::from)
        } else {
            ["--handoffs", "200", "--rounds", "5"].map(String::from)
        });
        planned.push((
            name,
            bin.join("handoff"),
            handoff,
            Output::Json(json_arg(&file)),
        ));
    }
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
