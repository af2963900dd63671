//! The v3 floor: etcd's JSON gateway from bare hyper, Go `concurrency.Mutex`'s layout (the
//! lock `NAME` is the key under `NAME/` with the lowest create revision; my key is
//! `NAME/<lease id in hex>`, put under my lease).
//!
//! Every request is what microlock sends (`microlock-proto/src/wire/v3.rs`): `POST /v3/...`,
//! `Content-Type: application/json`, `Grpc-Metadata-hasleader: true`, the same JSON bodies
//! built the same way (int64 fields as strings, keys and values in base64).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::Connect;
use serde_json::{json, Map, Value};

use super::{exchange, Http, Result};

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// An int64 field as the gateway writes it (a string), 0 when omitted.
fn int(value: &Value) -> i64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_i64().unwrap_or(0),
    }
}

/// `POST {url}{path}` with `body`, as microlock sends it.
fn post(url: &str, path: &str, body: &Value) -> Result<Request<Full<Bytes>>> {
    Ok(Request::builder()
        .method(Method::POST)
        .uri(format!("{url}{path}"))
        .header("content-type", "application/json")
        .header("grpc-metadata-hasleader", "true")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?)
}

/// A unary call: its answer, which must be `200` and JSON.
async fn call<C>(http: &Http<C>, url: &str, path: &str, body: &Value) -> Result<Value>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let (status, answer) = exchange(http, post(url, path, body)?).await?;
    if status != 200 {
        return Err(format!("{path}: HTTP {status}: {answer:?}").into());
    }
    Ok(serde_json::from_slice(&answer)?)
}

/// `prefix` with its last byte incremented (every key under it; prefixes here are ASCII).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The range of the key under `prefix` first (`ASCEND`) or last (`DESCEND`) created.
fn prefix_range(prefix: &[u8], order: &str) -> Map<String, Value> {
    let mut range = Map::new();
    range.insert("key".into(), b64(prefix).into());
    range.insert("range_end".into(), b64(&range_end(prefix)).into());
    range.insert("sort_order".into(), order.into());
    range.insert("sort_target".into(), "CREATE".into());
    range.insert("limit".into(), "1".into());
    range
}

/// Go's `Mutex.Lock` txn (microlock's `Take`): if `own_key` does not exist, put it under
/// `lease`, else read it; then read the owner (the lowest create revision under `prefix`).
fn acquire_txn(prefix: &[u8], own_key: &[u8], value: &[u8], lease: i64) -> Value {
    let owner = Value::Object(prefix_range(prefix, "ASCEND"));
    json!({
        "compare": [{
            "key": b64(own_key),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": "0",
        }],
        "success": [
            { "request_put": { "key": b64(own_key), "value": b64(value), "lease": lease.to_string() } },
            { "request_range": owner },
        ],
        "failure": [
            { "request_range": { "key": b64(own_key) } },
            { "request_range": owner },
        ],
    })
}

/// microlock's `Release`: delete `own_key` if its create revision is still `create_revision`.
fn release_txn(own_key: &[u8], create_revision: i64) -> Value {
    json!({
        "compare": [{
            "key": b64(own_key),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": create_revision.to_string(),
        }],
        "success": [{ "request_delete_range": { "key": b64(own_key) } }],
        "failure": [{ "request_range": { "key": b64(own_key) } }],
    })
}

/// The answer to [`acquire_txn`]: my key's create revision, and the owner's.
fn acquired(answer: &Value) -> Result<(i64, Option<i64>)> {
    let responses = &answer["responses"];
    let own = if answer["succeeded"] == true {
        int(&answer["header"]["revision"])
    } else {
        int(&responses[0]["response_range"]["kvs"][0]["create_revision"])
    };
    let owner = responses[1]["response_range"]["kvs"]
        .get(0)
        .map(|kv| int(&kv["create_revision"]));
    if own <= 0 {
        return Err(format!("an acquire txn without my key: {answer}").into());
    }
    Ok((own, owner))
}

/// A lease, granted once and kept alive when less than two thirds of its TTL are left (what
/// microlock does before a lock).
pub struct Lease {
    pub id: i64,
    ttl: Duration,
    /// When the grant or the last keep-alive was sent.
    since: Instant,
}

impl Lease {
    pub async fn grant<C>(http: &Http<C>, url: &str, ttl_secs: u64) -> Result<Lease>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let since = Instant::now();
        let body = json!({ "TTL": ttl_secs.to_string() });
        let granted = call(http, url, "/v3/lease/grant", &body).await?;
        let id = int(&granted["ID"]);
        if id == 0 || int(&granted["TTL"]) <= 0 {
            return Err(format!("a grant without a lease: {granted}").into());
        }
        let ttl = Duration::from_secs(ttl_secs);
        Ok(Lease { id, ttl, since })
    }

    /// A keep-alive first when a third of the TTL has passed.
    pub async fn keep<C>(&mut self, http: &Http<C>, url: &str) -> Result<()>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        if self.since.elapsed() < self.ttl / 3 {
            return Ok(());
        }
        let since = Instant::now();
        let body = json!({ "ID": self.id.to_string() });
        let kept = call(http, url, "/v3/lease/keepalive", &body).await?;
        if int(&kept["result"]["TTL"]) <= 0 {
            return Err(format!("the lease is gone: {kept}").into());
        }
        self.since = since;
        Ok(())
    }
}

/// A lock's keys: `NAME/`, and mine, `NAME/<lease hex>`.
struct Keys {
    prefix: Vec<u8>,
    own: Vec<u8>,
}

impl Keys {
    fn new(name: &str, lease: &Lease) -> Keys {
        let prefix = format!("{name}/").into_bytes();
        let own = [&prefix[..], format!("{:x}", lease.id).as_bytes()].concat();
        Keys { prefix, own }
    }
}

/// The uncontended cycle: microlock v3's `lock()` then `unlock()` on a free lock, the same
/// two requests: the acquire txn (my key must be the owner), then the release txn pinned to
/// its create revision; the lease granted once ([`Lease`]).
pub struct Cycle<C> {
    http: Http<C>,
    url: String,
    keys: Keys,
    value: Vec<u8>,
    lease: Lease,
}

impl<C: Connect + Clone + Send + Sync + 'static> Cycle<C> {
    pub async fn new(http: Http<C>, url: &str, name: &str, id: &str, ttl: u64) -> Result<Self> {
        let lease = Lease::grant(&http, url, ttl).await?;
        Ok(Cycle {
            keys: Keys::new(name, &lease),
            http,
            url: url.to_owned(),
            value: id.as_bytes().to_vec(),
            lease,
        })
    }

    pub async fn cycle(&mut self) -> Result<()> {
        let (http, url, keys) = (&self.http, self.url.as_str(), &self.keys);
        self.lease.keep(http, url).await?;
        let body = acquire_txn(&keys.prefix, &keys.own, &self.value, self.lease.id);
        let (own, owner) = acquired(&call(http, url, "/v3/kv/txn", &body).await?)?;
        if owner != Some(own) {
            return Err(format!("the lock is not free: owner {owner:?}, mine {own}").into());
        }
        let released = call(http, url, "/v3/kv/txn", &release_txn(&keys.own, own)).await?;
        if released["succeeded"] != true {
            return Err(format!("the release found no key: {released}").into());
        }
        Ok(())
    }
}

/// The fewest requests a waiting lock on etcd v3 can make, Go `concurrency.Mutex.Lock`'s
/// recipe: the acquire txn (put my key under my lease if absent, read the owner); if I am not
/// the owner, the key created last before mine (`/v3/kv/range`, `DESCEND` by create revision,
/// `max_create_revision` mine - 1, limit 1): none, the lock is mine; else a watch on that key
/// from the range's revision + 1 until its `DELETE`, then the range again. `/v3/kv/deleterange`
/// of my key releases (Go's `Unlock`). (Go's `Lock` also reads its own key after waiting; the
/// floor does not.) The lease is granted once and kept alive before an acquire when a third
/// of its TTL has passed.
pub struct WaitingLock<C> {
    http: Http<C>,
    url: String,
    keys: Keys,
    value: Vec<u8>,
    lease: Lease,
}

impl<C: Connect + Clone + Send + Sync + 'static> WaitingLock<C> {
    pub async fn new(http: Http<C>, url: &str, name: &str, id: &str, ttl: u64) -> Result<Self> {
        let lease = Lease::grant(&http, url, ttl).await?;
        Ok(WaitingLock {
            keys: Keys::new(name, &lease),
            http,
            url: url.to_owned(),
            value: id.as_bytes().to_vec(),
            lease,
        })
    }

    pub async fn acquire(&mut self) -> Result<()> {
        self.lease.keep(&self.http, &self.url).await?;
        let (http, url, keys) = (&self.http, self.url.as_str(), &self.keys);
        let body = acquire_txn(&keys.prefix, &keys.own, &self.value, self.lease.id);
        let (own, owner) = acquired(&call(http, url, "/v3/kv/txn", &body).await?)?;
        if owner.is_none() || owner == Some(own) {
            return Ok(());
        }
        let mut before = prefix_range(&keys.prefix, "DESCEND");
        before.insert("max_create_revision".into(), (own - 1).to_string().into());
        let before = Value::Object(before);
        loop {
            let range = call(http, url, "/v3/kv/range", &before).await?;
            let Some(ahead) = range["kvs"].get(0) else {
                return Ok(());
            };
            let key = BASE64.decode(ahead["key"].as_str().ok_or("a key without a name")?)?;
            let from = int(&range["header"]["revision"]) + 1;
            self.wait_delete(&key, from).await?;
        }
    }

    /// Watches `key` from revision `from` until it is deleted (or the watch ends).
    async fn wait_delete(&self, key: &[u8], from: i64) -> Result<()> {
        let body =
            json!({ "create_request": { "key": b64(key), "start_revision": from.to_string() } });
        let response = self
            .http
            .request(post(&self.url, "/v3/watch", &body)?)
            .await?;
        if response.status() != 200 {
            return Err(format!("/v3/watch: HTTP {}", response.status()).into());
        }
        let mut body = response.into_body();
        let mut buffer = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line = buffer.split_to(end + 1);
                let message: Value = serde_json::from_slice(&line)?;
                if !message["error"].is_null() {
                    return Err(format!("/v3/watch: {message}").into());
                }
                let result = &message["result"];
                let deleted = result["events"]
                    .as_array()
                    .is_some_and(|events| events.iter().any(|e| e["type"] == "DELETE"));
                if deleted || result["canceled"] == true {
                    return Ok(()); // dropping the body closes the watch
                }
            }
        }
        Ok(())
    }

    pub async fn release(&mut self) -> Result<()> {
        let body = json!({ "key": b64(&self.keys.own) });
        call(&self.http, &self.url, "/v3/kv/deleterange", &body).await?;
        Ok(())
    }
}
