//! The contended sections of the page: hand-off latency, fairness and etcd requests, one
//! section per protocol (the `handoff` and `handoff-v3` steps, `examples/handoff.rs`).

use std::fmt::Write as _;

use serde_json::Value;

use crate::markdown::{f, not_measured, result};
use crate::steps::handoff_step;

/// The rows of a hand-off step's results (one per W and client).
pub fn handoff_rows<'a>(run: &'a Value, protocol: &str) -> Vec<&'a Value> {
    result(run, handoff_step(protocol))
        .and_then(|r| r["results"].as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// What the floor of `protocol` does, as the page says it.
fn floor_text(protocol: &str, ttl: &Value) -> String {
    if protocol == "v3" {
        format!(
            "The floor is bare hyper doing the least a waiting lock on etcd v3 can do, Go \
             `concurrency.Mutex`'s recipe under a lease (TTL {ttl} s) granted once per node: the \
             txn that puts its key `NAME/<lease hex>` if absent and reads the owner (the \
             request microlock sends); if another node owns the lock, a range of the key created \
             last before its own and a watch on that key until its `DELETE`, then the range \
             again; `/v3/kv/deleterange` of its key to release. microlock-tokio \
             (`Protocol::V3`) reads the key ahead and checks its own key in one txn, and \
             releases with a txn pinned to its key's create revision."
        )
    } else {
        format!(
            "The floor is bare hyper doing the least a waiting lock on etcd v2 can do: `PUT \
             ?prevExist=false` (value=id, ttl={ttl}); on `412`, a long poll `GET \
             ?wait=true&waitIndex=<the error's index + 1>` until a `delete`, \
             `compareAndDelete` or `expire`, then the PUT again; `DELETE ?prevValue=id` to \
             release."
        )
    }
}

/// How the requests are counted for `protocol`.
fn requests_text(protocol: &str) -> &'static str {
    if protocol == "v3" {
        "- **requests / acquisition**: from etcd's `/metrics`, read when the hold opening the \
           window and the one closing it are taken: `grpc_server_started_total` (every \
           `grpc_method`; the JSON gateway turns each HTTP request into one gRPC call on etcd's \
           own gRPC server, a watch into one `Watch` stream, a keep-alive into one \
           `LeaseKeepAlive` stream), over the acquisitions in the window. **raft writes** is \
           `etcd_server_proposals_committed_total` (a txn with a put or delete in either \
           branch, a delete, a lease grant; not a read-only txn, a range, a watch or a \
           keep-alive).\n"
    } else {
        "- **requests / acquisition**: from etcd's `/metrics`, read when the hold opening \
           the window and the one closing it are taken: `etcd_http_received_total` (every \
           method) + `etcd_debugging_store_watch_requests_total` (long polls are not in \
           the former), over the acquisitions in the window. **store ops / acquisition** is \
           `etcd_debugging_store_reads_total` + `etcd_debugging_store_writes_total` (all \
           `action` labels; failed writes count too) + \
           `etcd_debugging_store_watch_requests_total`: on etcd 3.4 it is twice the \
           requests, because every v2 keys request also reads `/2/enabled` (the v2 auth \
           check) from the store. **raft writes** is `etcd_server_proposals_committed_total` \
           (a PUT, a DELETE, a quorum GET).\n"
    }
}

/// The section for `protocol` (`"v2"` or `"v3"`).
pub fn section(md: &mut String, run: &Value, protocol: &str) {
    let _ = writeln!(
        md,
        "## Contended, etcd {protocol}: hand-off latency, fairness, etcd requests\n"
    );
    let Some(h) = result(run, handoff_step(protocol)) else {
        md.push_str(&not_measured(run, handoff_step(protocol)));
        md.push('\n');
        return;
    };
    let rows = handoff_rows(run, protocol);
    let _ = writeln!(
        md,
        "W+1 tasks in one process, each with its own client (own connections) and node id, \
         loop on one lock: acquire (timeout {} s), hold {} ms, unlock; after {} warm-up holds, \
         {} hand-offs are measured; microlock-tokio and the floor alternate run by run, {} \
         round(s), and each figure is the median of the rounds. {}\n",
        h["acquire_timeout_s"],
        h["hold_ms"],
        h["warmup"],
        h["handoffs"],
        h["rounds"],
        floor_text(protocol, &h["ttl_s"]),
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
           counted as 0 ms.\n{}",
        requests_text(protocol)
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
    ratios(md, &rows);
    by_kind(md, &rows, protocol);
    md.push('\n');
}

/// microlock against the floor, per W.
fn ratios(md: &mut String, rows: &[&Value]) {
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
}

/// What the requests are: per acquisition, by kind, the median over the rounds.
fn by_kind(md: &mut String, rows: &[&Value], protocol: &str) {
    let mut kinds: Vec<String> = Vec::new();
    for r in rows {
        for round in r["rounds"].as_array().into_iter().flatten() {
            if let Some(map) = round["requests_by_kind_per_acquisition"].as_object() {
                for (kind, n) in map {
                    if f(n) > 0.0 && !kinds.contains(kind) {
                        kinds.push(kind.clone());
                    }
                }
            }
        }
    }
    kinds.sort();
    let v2 = protocol != "v3";
    let _ = write!(
        md,
        "\netcd requests per acquisition, by kind (medians; {}):\n\n| W | client | requests |{} raft writes |",
        if v2 {
            "`QGET` is a quorum read, `watch` a long poll"
        } else {
            "gRPC methods: `Txn`, `Range`, `DeleteRange` and `LeaseGrant` are unary calls, \
             `Watch` a watch stream, `LeaseKeepAlive` a keep-alive"
        },
        if v2 { " store ops |" } else { "" }
    );
    for kind in &kinds {
        let _ = write!(md, " {kind} |");
    }
    let _ = write!(
        md,
        "\n|---:|---|---:|{}---:|",
        if v2 { "---:|" } else { "" }
    );
    for _ in &kinds {
        md.push_str("---:|");
    }
    md.push('\n');
    for r in rows {
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
            "| {} | {} | {:.2} |",
            r["waiters"],
            r["client"].as_str().unwrap_or("?"),
            f(&r["median"]["requests_per_acquisition"]),
        );
        if v2 {
            let _ = write!(md, " {:.2} |", f(&r["median"]["store_ops_per_acquisition"]));
        }
        let _ = write!(md, " {:.2} |", f(&r["median"]["proposals_per_acquisition"]));
        for kind in &kinds {
            let n =
                median_of(&|round| f(&round["requests_by_kind_per_acquisition"][kind.as_str()]));
            let _ = write!(md, " {n:.2} |");
        }
        md.push('\n');
    }
}
