//! etcd's own count of the requests it served (`GET /metrics`), for `handoff.rs`'s etcd
//! requests per acquisition. Checked on etcd 3.4.23:
//!
//! - **v2**: the store counters `etcd_debugging_store_reads_total`, `..._writes_total` (all
//!   `action` labels) and `..._watch_requests_total` count store operations, not requests:
//!   every v2 keys request also reads `/2/enabled` (the v2 auth check, one `get`), so their sum
//!   is twice the requests. Requests are `etcd_http_received_total` (every method: PUT, DELETE,
//!   GET, QGET) plus the watch requests (a long poll is not in `etcd_http_received_total`).
//! - **v3**: the JSON gateway turns each HTTP request into one gRPC call on etcd's own gRPC
//!   server, so requests are `grpc_server_started_total`, by `grpc_method` (`Txn`, `Range`,
//!   `DeleteRange`, `LeaseGrant`; a watch is one `Watch` stream, a keep-alive one
//!   `LeaseKeepAlive` stream). v3 requests are in none of the v2 counters, nor v2 requests in
//!   the gRPC ones.
//! - both: `etcd_server_proposals_committed_total`, the raft proposals (writes: a v2 PUT,
//!   DELETE or quorum GET; a v3 put, delete, or txn with a write in either branch, a lease
//!   grant or revoke — not a read-only txn, a range or a keep-alive).

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::client::legacy::connect::Connect;

use crate::floor::{exchange, Http, Result};

/// What etcd's `/metrics` counts, summed over labels where a counter has some.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// `etcd_debugging_store_reads_total`, all `action`s.
    pub reads: f64,
    /// `etcd_debugging_store_writes_total`, all `action`s (failed writes too).
    pub writes: f64,
    /// `etcd_debugging_store_watch_requests_total`.
    pub watches: f64,
    /// `etcd_http_received_total` by `method` (PUT, DELETE, GET, QGET).
    pub received: BTreeMap<String, f64>,
    /// `grpc_server_started_total` by `grpc_method`.
    pub started: BTreeMap<String, f64>,
    /// `etcd_server_proposals_committed_total`.
    pub proposals: f64,
}

/// The value of label `name` in `labels` (`a="x",b="y"`).
fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    labels
        .split(&format!("{name}=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("?")
}

fn minus(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

impl Counters {
    pub async fn read<C>(http: &Http<C>, url: &str) -> Result<Counters>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let request = Request::get(format!("{url}/metrics")).body(Full::new(Bytes::new()))?;
        let (status, body) = exchange(http, request).await?;
        if status != 200 {
            return Err(format!("GET {url}/metrics: HTTP {status}").into());
        }
        let mut counters = Counters::default();
        for line in std::str::from_utf8(&body)?.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let by = |map: &mut BTreeMap<String, f64>, key: &str| {
                *map.entry(label(labels, key).to_owned()).or_default() += value;
            };
            match name {
                "etcd_debugging_store_reads_total" => counters.reads += value,
                "etcd_debugging_store_writes_total" => counters.writes += value,
                "etcd_debugging_store_watch_requests_total" => counters.watches += value,
                "etcd_http_received_total" => by(&mut counters.received, "method"),
                "grpc_server_started_total" => by(&mut counters.started, "grpc_method"),
                "etcd_server_proposals_committed_total" => counters.proposals += value,
                _ => {}
            }
        }
        Ok(counters)
    }

    pub fn minus(&self, before: &Counters) -> Counters {
        Counters {
            reads: self.reads - before.reads,
            writes: self.writes - before.writes,
            watches: self.watches - before.watches,
            received: minus(&self.received, &before.received),
            started: minus(&self.started, &before.started),
            proposals: self.proposals - before.proposals,
        }
    }

    /// Requests of `protocol` (`"v2"` or `"v3"`), by kind: v2, the HTTP methods and `watch`
    /// (long polls); v3, the gRPC methods. Kinds with none are left out.
    pub fn by_kind(&self, protocol: &str) -> BTreeMap<String, f64> {
        let mut kinds = if protocol == "v3" {
            self.started.clone()
        } else {
            let mut kinds = self.received.clone();
            kinds.insert("watch".into(), self.watches);
            kinds
        };
        kinds.retain(|_, n| *n > 0.0);
        kinds
    }

    /// Requests of `protocol`.
    pub fn requests(&self, protocol: &str) -> f64 {
        self.by_kind(protocol).values().sum()
    }

    /// The three v2 store counters' sum.
    pub fn store_ops(&self) -> f64 {
        self.reads + self.writes + self.watches
    }
}
