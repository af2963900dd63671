//! `docs/performance.md`: the page, from a run's results (`run.json`). The contended sections
//! are [`crate::contended`]'s.

use std::fmt::Write as _;

use serde_json::Value;

use crate::contended;
use crate::MACHINE_BENCHES;

pub fn step<'a>(run: &'a Value, name: &str) -> Option<&'a Value> {
    run["steps"].as_array()?.iter().find(|s| s["step"] == name)
}

pub fn result<'a>(run: &'a Value, name: &str) -> Option<&'a Value> {
    step(run, name)
        .filter(|s| s["ok"] == true)
        .map(|s| &s["result"])
}

pub fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// A duration in nanoseconds, in the unit that reads best.
pub fn ns(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} ms", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.2} µs", value / 1e3)
    } else {
        format!("{value:.0} ns")
    }
}

pub fn not_measured(run: &Value, name: &str) -> String {
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

pub fn markdown(run: &Value, svg_name: &str) -> String {
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
        "| etcd | {} (single member, v2 API on, v3 through its JSON gateway, one process serving plain HTTP and mutual TLS) |",
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
    let _ = writeln!(md, "![hand-off latency and etcd requests per acquisition against the number of waiters, microlock-tokio against bare hyper, etcd v2 above and v3 below]({svg_name})\n");

    uncontended(&mut md, run);
    contended::section(&mut md, run, "v2");
    contended::section(&mut md, run, "v3");

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
            // The machine's share of the cycle over HTTP, and of the client's CPU.
            let http = result(run, "uncontended-tokio-http");
            for (bench, protocol) in [("lock_unlock_cycle", "v2"), ("lock_unlock_cycle_v3", "v3")] {
                let row = http.map(|r| if protocol == "v3" { &r["v3"] } else { r });
                let (Some(cycle), Some(row)) = (estimates.get(bench), row) else {
                    continue;
                };
                let machine_us = f(&cycle["ns"]) / 1e3;
                let _ = write!(
                    md,
                    "\nThe machine's share of an uncontended {protocol} cycle over HTTP: {} of \
                     {:.1} µs ({:.2} %)",
                    ns(f(&cycle["ns"])),
                    f(&row["microlock_us"]),
                    machine_us / f(&row["microlock_us"]) * 100.0
                );
                if row["microlock_cpu_us"].is_number() {
                    let _ = write!(
                        md,
                        "; of microlock-tokio's {:.1} µs of CPU per cycle ({:.1} µs more than \
                         bare hyper's), {:.0} %",
                        f(&row["microlock_cpu_us"]),
                        f(&row["microlock_cpu_us"]) - f(&row["floor_cpu_us"]),
                        machine_us / f(&row["microlock_cpu_us"]) * 100.0
                    );
                }
                md.push_str(".\n");
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

/// The uncontended cycle: every adapter and protocol against its floor, then v3 ÷ v2.
fn uncontended(md: &mut String, run: &Value) {
    let _ = writeln!(
        md,
        "## Uncontended lock + unlock: the adapters against their bare clients\n"
    );
    let _ = writeln!(
        md,
        "One node takes and releases a free lock; the floor sends the same requests from a \
         bare keep-alive client. **v2**: `PUT ?prevExist=false`, `DELETE ?prevValue`. **v3** \
         (`Protocol::V3`, through etcd's JSON gateway): the txn that puts the node's key \
         `NAME/<lease hex>` under its lease if absent and reads the owner, then the txn that \
         deletes that key if its create revision is the hold's; the lease is granted once and \
         kept alive when a third of its TTL has passed, by both (the floor sends microlock's \
         bodies and headers, `microlock-tokio/examples/floor/v3.rs`). The clients alternate, \
         round by round (tokio: microlock and bare hyper, v2 and v3, each protocol's pair back \
         to back, the order changing every round) or cycle by cycle (async-std); each figure \
         is the median of the rounds' mean cycle time. **client CPU**: the CPU time the \
         client spent per cycle, median of the rounds: what the client costs the application, \
         without etcd's time and much less noisy than the cycle time. tokio: the benchmark's \
         one thread (`/proc/thread-self/schedstat`; the runtime is single-threaded, so the \
         client's work, hyper's connection tasks and microlock's driver are all in it); \
         async-std: the process's CPU clock, every thread, read around each cycle. \
         Alternating cycle by cycle leaves each client's code and data colder in the CPU's \
         caches than a run of its own would: both pay for it, the one with more code more.\n"
    );
    let _ = writeln!(
        md,
        "| adapter | protocol | transport | microlock | floor | floor's time | ratio | client CPU: microlock, floor | rounds × cycles |\n|---|---|---|---:|---|---:|---:|---:|---:|"
    );
    let names = [
        "uncontended-tokio-http",
        "uncontended-tokio-tls",
        "uncontended-async-std-http",
    ];
    for name in names {
        let Some(r) = result(run, name) else {
            let _ = writeln!(md, "| `{name}` | | not measured | | | | | | |");
            continue;
        };
        // v2 at the top level (every bench writes it so), v3 under `v3` (tokio's).
        for (protocol, row) in [("v2", r), ("v3", &r["v3"])] {
            if row.is_null() {
                continue;
            }
            let cpu = if row["microlock_cpu_us"].is_number() {
                format!(
                    "{:.1} µs, {:.1} µs",
                    f(&row["microlock_cpu_us"]),
                    f(&row["floor_cpu_us"])
                )
            } else {
                "–".to_owned()
            };
            let _ = writeln!(
                md,
                "| {} | {protocol} | {} | {:.1} µs | {} | {:.1} µs | **{:.3}** | {cpu} | {} × {} |",
                r["adapter"].as_str().unwrap_or("?"),
                r["transport"].as_str().unwrap_or("?"),
                f(&row["microlock_us"]),
                row["floor"].as_str().unwrap_or("?"),
                f(&row["floor_us"]),
                f(&row["ratio"]),
                r["rounds"],
                r["cycles"]
            );
        }
    }
    let compared: Vec<&Value> = (names.iter())
        .filter_map(|name| result(run, name))
        .filter(|r| !r["v3_over_v2"].is_null())
        .collect();
    if !compared.is_empty() {
        let _ = writeln!(
            md,
            "\nWhat v3 costs against v2, in the same run (each protocol's cycle time above, \
             divided):\n\n| adapter | transport | v3 ÷ v2, microlock | v3 ÷ v2, floor |\n|---|---|---:|---:|"
        );
        for r in compared {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.2} |",
                r["adapter"].as_str().unwrap_or("?"),
                r["transport"].as_str().unwrap_or("?"),
                f(&r["v3_over_v2"]["microlock"]),
                f(&r["v3_over_v2"]["floor"]),
            );
        }
    }
    md.push('\n');
}
