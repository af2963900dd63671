//! Reading etcd directly (raw HTTP, an encoder independent of the library's), to check what
//! the library really stored.

use crate::etcd::raw_request;
pub use serde_json::Value;

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

// ----- etcd v3, through its JSON gateway ---------------------------------------------------
// Every v3 call is `POST /v3/<service>/<method>` with a JSON body; keys and values are base64,
// int64 fields are JSON strings, and fields at their zero value are left out (an empty value,
// lease 0). The base64 codec is written again here, as `encode` is, so that the tests do not
// trust the library's.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (with padding) of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of standard base64 `text` (padding optional); panics on anything else.
pub fn unb64(text: &str) -> Vec<u8> {
    let digits: Vec<u32> = text
        .trim_end_matches('=')
        .bytes()
        .map(|c| {
            B64.iter()
                .position(|&d| d == c)
                .unwrap_or_else(|| panic!("not base64: {text:?}")) as u32
        })
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | d << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// An int64 of the gateway's JSON (a string; absent means 0).
fn int64(v: &Value) -> i64 {
    match v {
        Value::Null => 0,
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not an int64: {v}")),
        Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("not an int64: {v}")),
        other => panic!("not an int64: {other}"),
    }
}

/// `POST {url}/v3/{method}` with the JSON `body` (plain HTTP): the answer, which must be a 200.
pub fn v3_post(url: &str, method: &str, body: &Value) -> Value {
    let path = format!("/v3/{method}");
    let r = crate::etcd::try_raw_request_with_headers(
        url,
        "POST",
        &path,
        Some(&body.to_string()),
        &[("Content-Type", "application/json")],
        crate::etcd::READ_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("POST {url}{path} {body}: {e}"));
    assert_eq!(r.status, 200, "POST {url}{path} {body}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("POST {path}: {e}: {}", r.text()))
}

/// One key as the v3 store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Kv {
    /// The whole key, e.g. `NAME/694d7b3c1a2f0e05`.
    pub key: String,
    /// Its value (the node id, for a microlock key; empty for `etcdctl lock`'s).
    pub value: String,
    /// The revision that created it (a lock key's fencing token).
    pub create_revision: i64,
    /// The revision of its last write.
    pub mod_revision: i64,
    /// The lease it is put under (0: none).
    pub lease: i64,
}

impl V3Kv {
    fn from_json(kv: &Value) -> V3Kv {
        let text = |field: &str| {
            let raw = kv[field].as_str().map(unb64).unwrap_or_default();
            String::from_utf8(raw).unwrap_or_else(|e| panic!("{field} of {kv}: {e}"))
        };
        V3Kv {
            key: text("key"),
            value: text("value"),
            create_revision: int64(&kv["create_revision"]),
            mod_revision: int64(&kv["mod_revision"]),
            lease: int64(&kv["lease"]),
        }
    }
}

/// `prefix` with its last byte incremented: the end of the range of every key under it.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    let last = end.last_mut().expect("a non-empty prefix");
    *last += 1; // `/` + 1 = `0`
    end
}

/// Every key starting with `prefix` (linearizable read), sorted by create revision.
pub fn v3_keys_with_prefix(url: &str, prefix: &str) -> Vec<V3Kv> {
    let body = serde_json::json!({
        "key": b64(prefix.as_bytes()),
        "range_end": b64(&prefix_end(prefix)),
        "sort_order": "ASCEND",
        "sort_target": "CREATE",
    });
    let answer = v3_post(url, "kv/range", &body);
    let kvs = answer["kvs"].as_array().cloned().unwrap_or_default();
    let kvs: Vec<V3Kv> = kvs.iter().map(V3Kv::from_json).collect();
    assert!(
        kvs.windows(2)
            .all(|w| w[0].create_revision < w[1].create_revision),
        "sorted by create revision: {kvs:?}"
    );
    kvs
}

/// The keys of the v3 lock `name` (a leading `/` is ignored): every key under `name/`, in
/// create-revision order (the holder first, then the waiters, first come first).
pub fn v3_keys(url: &str, name: &str) -> Vec<V3Kv> {
    let name = name.strip_prefix('/').unwrap_or(name);
    v3_keys_with_prefix(url, &format!("{name}/"))
}

/// The holder of the v3 lock `name`: the value (node id) and create revision (fencing token)
/// of its key with the lowest create revision; `None` when it has no key.
pub fn v3_holder(url: &str, name: &str) -> Option<(String, u64)> {
    let first = v3_keys(url, name).into_iter().next()?;
    Some((first.value, first.create_revision as u64))
}

/// The lock key of lease `lease` under the lock `name`: `name/<lease id in lowercase hex>`
/// (Go's `concurrency.Mutex`).
pub fn v3_lease_key(name: &str, lease: i64) -> String {
    let name = name.strip_prefix('/').unwrap_or(name);
    format!("{name}/{lease:x}")
}

/// What is left of lease `lease` and the TTL it was granted, in seconds (`TimeToLive`);
/// `None` once it is gone (expired or revoked).
pub fn v3_lease_ttl(url: &str, lease: i64) -> Option<(i64, i64)> {
    let answer = v3_post(
        url,
        "lease/timetolive",
        &serde_json::json!({ "ID": lease.to_string() }),
    );
    let ttl = int64(&answer["TTL"]);
    (ttl >= 0).then(|| (ttl, int64(&answer["grantedTTL"])))
}

/// Grants a lease of `ttl` seconds (as another client would); its id.
pub fn v3_grant(url: &str, ttl: u64) -> i64 {
    let answer = v3_post(
        url,
        "lease/grant",
        &serde_json::json!({ "TTL": ttl.to_string() }),
    );
    let id = int64(&answer["ID"]);
    assert!(id != 0, "a lease id: {answer}");
    id
}

/// Revokes lease `lease` (its keys go with it).
pub fn v3_revoke(url: &str, lease: i64) {
    v3_post(
        url,
        "lease/revoke",
        &serde_json::json!({ "ID": lease.to_string() }),
    );
}

/// Writes `key` = `value`, under `lease` if given (as another client would); the revision of
/// the write (a new key's create revision).
pub fn v3_put(url: &str, key: &str, value: &str, lease: Option<i64>) -> i64 {
    let mut body =
        serde_json::json!({ "key": b64(key.as_bytes()), "value": b64(value.as_bytes()) });
    if let Some(lease) = lease {
        body["lease"] = Value::String(lease.to_string());
    }
    int64(&v3_post(url, "kv/put", &body)["header"]["revision"])
}

/// Deletes `key` (as another client would); how many keys went (0 or 1).
pub fn v3_delete(url: &str, key: &str) -> i64 {
    let body = serde_json::json!({ "key": b64(key.as_bytes()) });
    int64(&v3_post(url, "kv/deleterange", &body)["deleted"])
}

/// How many v3 watchers the member at `url` serves (its `etcd_debugging_mvcc_watcher_total`
/// gauge, `GET /metrics`; 3.4 and 3.5). A gateway watch is one from its request until etcd
/// notices that its HTTP stream was closed.
pub fn v3_watchers(url: &str) -> u64 {
    let r = raw_request(url, "GET", "/metrics", None);
    assert_eq!(r.status, 200, "metrics of {url}: {}", r.text());
    let text = r.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("etcd_debugging_mvcc_watcher_total "))
        .unwrap_or_else(|| panic!("no etcd_debugging_mvcc_watcher_total in {url}/metrics"));
    let value = line.rsplit(' ').next().unwrap_or_default();
    value
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("{line:?}: {e}")) as u64
}

#[cfg(test)]
mod tests {
    use super::{b64, unb64};

    #[test]
    fn base64_round_trips() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("lk/", "bGsv"),
            ("nœud🔒", "bsWTdWTwn5SS"),
        ] {
            assert_eq!(b64(plain.as_bytes()), encoded, "{plain:?}");
            assert_eq!(unb64(encoded), plain.as_bytes(), "{encoded:?}");
        }
    }
}
