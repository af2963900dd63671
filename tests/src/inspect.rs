//! Reading etcd directly (raw HTTP, an encoder independent of the library's), to check what
//! the library really stored.

use crate::etcd::raw_request;
use serde_json::Value;

/// Percent-encodes every byte outside `A-Za-z0-9-._~` (written again here on purpose, so the
/// tests do not trust the library's encoder).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `/v2/keys/` + each segment of `key` encoded.
pub fn key_path(key: &str) -> String {
    let key = key.strip_prefix('/').unwrap_or(key);
    let segments: Vec<String> = key.split('/').map(encode).collect();
    format!("/v2/keys/{}", segments.join("/"))
}

/// The node stored at `key` (quorum read), or `None` when absent.
pub fn node(url: &str, key: &str) -> Option<Value> {
    let r = raw_request(url, "GET", &format!("{}?quorum=true", key_path(key)), None);
    match r.status {
        200 => {
            let v: Value = serde_json::from_slice(&r.body).expect("etcd sent JSON");
            Some(v["node"].clone())
        }
        404 => None,
        s => panic!("GET {key:?}: unexpected status {s}: {}", r.text()),
    }
}

/// The value stored at `key`, or `None`.
pub fn value(url: &str, key: &str) -> Option<String> {
    node(url, key).map(|n| n["value"].as_str().expect("a value").to_owned())
}

/// Every non-directory key below `dir` (recursive), as etcd names them (`/dir/...`), sorted.
pub fn keys_under(url: &str, dir: &str) -> Vec<String> {
    let r = raw_request(
        url,
        "GET",
        &format!("{}?recursive=true&quorum=true", key_path(dir)),
        None,
    );
    if r.status == 404 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "listing {dir:?}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("etcd sent JSON");
    let mut out = Vec::new();
    collect(&v["node"], &mut out);
    out.sort();
    out
}

fn collect(node: &Value, out: &mut Vec<String>) {
    if node["dir"].as_bool() == Some(true) {
        for child in node["nodes"].as_array().into_iter().flatten() {
            collect(child, out);
        }
    } else if let Some(k) = node["key"].as_str() {
        out.push(k.to_owned());
    }
}

/// Writes `key` = `value` with `ttl` seconds directly (as another client would).
pub fn put(url: &str, key: &str, value: &str, ttl: Option<u64>) {
    let mut body = format!("value={}", encode(value));
    if let Some(ttl) = ttl {
        body.push_str(&format!("&ttl={ttl}"));
    }
    let r = raw_request(url, "PUT", &key_path(key), Some(&body));
    assert!(
        r.status == 200 || r.status == 201,
        "PUT {key:?}: {}",
        r.text()
    );
}

/// Whether the member at `url` is the raft leader (`GET /v2/stats/self`).
pub fn is_leader(url: &str) -> bool {
    let r = raw_request(url, "GET", "/v2/stats/self", None);
    assert_eq!(r.status, 200, "stats of {url}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("etcd sent JSON");
    v["state"] == "StateLeader"
}

/// How many watches (long polls) the member at `url` is serving (`GET /v2/stats/store`).
pub fn watchers(url: &str) -> u64 {
    let r = raw_request(url, "GET", "/v2/stats/store", None);
    assert_eq!(r.status, 200, "store stats of {url}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("etcd sent JSON");
    v["watchers"].as_u64().expect("a watcher count")
}

/// The queue of fair acquires of `key` (`DIR/_microlock/queue/NAME/`), in order: each
/// entry's name and value (the waiting node id). Empty when nobody queues.
pub fn queue(url: &str, key: &str) -> Vec<(String, String)> {
    let key = key.strip_prefix('/').unwrap_or(key);
    let dir = match key.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/_microlock/queue/{name}"),
        None => format!("_microlock/queue/{key}"),
    };
    let r = raw_request(
        url,
        "GET",
        &format!("{}?sorted=true&quorum=true", key_path(&dir)),
        None,
    );
    match r.status {
        200 => {
            let v: Value = serde_json::from_slice(&r.body).expect("etcd sent JSON");
            v["node"]["nodes"]
                .as_array()
                .map(|nodes| {
                    nodes
                        .iter()
                        .map(|n| {
                            let name = n["key"].as_str().unwrap_or_default();
                            let name = name.rsplit('/').next().unwrap_or_default().to_owned();
                            (name, n["value"].as_str().unwrap_or_default().to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        404 => Vec::new(),
        s => panic!(
            "GET the queue of {key:?}: unexpected status {s}: {}",
            r.text()
        ),
    }
}
