//! The CPU cost of the machine itself, with no I/O: what `microlock-proto` adds to each request
//! an adapter sends. `make bench` runs it and puts the figures in `docs/performance.md`.
//!
//! `cargo bench -p microlock-proto --bench machine` (criterion's options after `--`, e.g.
//! `-- --measurement-time 10`). Every `Instant` the machine sees is made here from one reading
//! taken before the clock starts; the machine never reads a clock. The responses are canned
//! copies of etcd 3.4.23's answers (headers and bodies as `curl -i` shows them).
//!
//! - `lock_201`: `lock()` on a new machine, its PUT taken with `poll_request`, etcd's
//!   `201 Created` fed back, the completion polled (the machine's construction is not timed);
//! - `lock_unlock_cycle`: the uncontended cycle on one machine: lock, 201, unlock, 200;
//! - `watch_event`: one answer to the watch's long poll (alternately a `create` by another
//!   node and its `compareAndDelete`), the event polled, the next long poll taken.
//! - `lock_unlock_cycle_v3`: the uncontended cycle on etcd v3 (`Protocol::V3`, the JSON
//!   gateway) on one machine whose lease is already granted: lock, the acquire txn's answer
//!   (my key put, and it is the owner), unlock, the release txn's answer (canned copies of
//!   etcd 3.4.23's gateway answers).

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use criterion::{BatchSize, Criterion};
use microlock_proto::http::Response;
use microlock_proto::{Config, Event, Lock, Outcome, Protocol, RequestId};

const KEY: &str = "bench/machine";
const NODE: &str = "node-1";
const OTHER: &str = "node-2";
const EXPIRATION: &str = "2026-11-30T13:55:24.027376042Z";

/// An etcd 3.4 v2 answer: the headers etcd sends with every keys response, then the body.
fn etcd_response(status: u16, etcd_index: u64, raft_index: u64, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(
            "Access-Control-Allow-Headers",
            "accept, content-type, authorization",
        )
        .header(
            "Access-Control-Allow-Methods",
            "POST, GET, OPTIONS, PUT, DELETE",
        )
        .header("Access-Control-Allow-Origin", "*")
        .header("Content-Type", "application/json")
        .header("X-Etcd-Cluster-Id", "534a021c215e0774")
        .header("X-Etcd-Index", etcd_index.to_string())
        .header("X-Raft-Index", raft_index.to_string())
        .header("X-Raft-Term", "2")
        .header("Date", "Mon, 30 Nov 2026 13:54:54 GMT")
        .header("Content-Length", body.len().to_string())
        .body(body.into_bytes())
        .expect("a valid response")
}

/// `201 Created` for `PUT /v2/keys/KEY?prevExist=false` (value=NODE, ttl=30) at `index`.
fn created(index: u64) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"action":"create","node":{{"key":"/{KEY}","value":"{NODE}","expiration":"{EXPIRATION}","ttl":30,"modifiedIndex":{index},"createdIndex":{index}}}}}"#
    );
    etcd_response(201, index, index + 1, body + "\n")
}

/// `200 OK` for the unlock's compare-and-delete of the hold created at `created`.
fn deleted(holder: &str, created: u64, index: u64) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"action":"compareAndDelete","node":{{"key":"/{KEY}","modifiedIndex":{index},"createdIndex":{created}}},"prevNode":{{"key":"/{KEY}","value":"{holder}","expiration":"{EXPIRATION}","ttl":30,"modifiedIndex":{created},"createdIndex":{created}}}}}"#
    );
    etcd_response(200, index, index + 1, body + "\n")
}

/// The long poll's answer: `create` by OTHER at `index`, or (`release`) its compare-and-delete
/// at `index` (created at `index - 1`).
fn watch_answer(index: u64, release: bool) -> Response<Vec<u8>> {
    if release {
        return deleted(OTHER, index - 1, index);
    }
    let body = format!(
        r#"{{"action":"create","node":{{"key":"/{KEY}","value":"{OTHER}","expiration":"{EXPIRATION}","ttl":30,"modifiedIndex":{index},"createdIndex":{index}}}}}"#
    );
    // A watch answer carries the index the watch started at, like etcd's.
    etcd_response(200, index - 1, index + 1, body + "\n")
}

/// The quorum read's `404 Key not found` at `index` (what starts a watch on a free key).
fn not_found(index: u64) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"errorCode":100,"message":"Key not found","cause":"/{KEY}","index":{index}}}"#
    );
    let mut response = etcd_response(404, index, index, body + "\n");
    response.headers_mut().remove("X-Raft-Index");
    response.headers_mut().remove("X-Raft-Term");
    response
}

/// An etcd 3.4 JSON gateway answer: `200 OK` with the headers the gateway sends, then `body`.
fn gateway_response(body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(200)
        .header(
            "Access-Control-Allow-Headers",
            "accept, content-type, authorization",
        )
        .header(
            "Access-Control-Allow-Methods",
            "POST, GET, OPTIONS, PUT, DELETE",
        )
        .header("Access-Control-Allow-Origin", "*")
        .header("Content-Type", "application/json")
        .header("Grpc-Metadata-Content-Type", "application/grpc")
        .header("Date", "Mon, 30 Nov 2026 20:39:09 GMT")
        .header("Content-Length", body.len().to_string())
        .body(body.into_bytes())
        .expect("a valid response")
}

/// Every v3 answer's header, at `revision`.
fn v3_header(revision: u64) -> String {
    format!(
        r#"{{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"{revision}","raft_term":"2"}}"#
    )
}

/// The lease the v3 machine is granted.
const LEASE: i64 = 4111120354096006919;

/// `/v3/lease/grant`'s answer.
fn granted() -> Response<Vec<u8>> {
    let header = v3_header(1);
    gateway_response(format!(
        r#"{{"header":{header},"ID":"{LEASE}","TTL":"30"}}"#
    ))
}

/// The acquire txn's answer at `revision`: my key put, and it is the owner.
fn taken(revision: u64) -> Response<Vec<u8>> {
    let (header, key) = (
        v3_header(revision),
        BASE64.encode(format!("{KEY}/{LEASE:x}")),
    );
    let value = BASE64.encode(NODE);
    gateway_response(format!(
        r#"{{"header":{header},"succeeded":true,"responses":[{{"response_put":{{"header":{{"revision":"{revision}"}}}}}},{{"response_range":{{"header":{{"revision":"{revision}"}},"kvs":[{{"key":"{key}","create_revision":"{revision}","mod_revision":"{revision}","version":"1","value":"{value}","lease":"{LEASE}"}}],"count":"1"}}}}]}}"#
    ))
}

/// The release txn's answer at `revision`: my key deleted.
fn released(revision: u64) -> Response<Vec<u8>> {
    let header = v3_header(revision);
    gateway_response(format!(
        r#"{{"header":{header},"succeeded":true,"responses":[{{"response_delete_range":{{"header":{{"revision":"{revision}"}},"deleted":"1"}}}}]}}"#
    ))
}

fn config() -> Config {
    Config::new(KEY, NODE, Duration::from_secs(30)).expect("a valid config")
}

/// The only request the machine has to send now.
fn only_request(lock: &mut Lock) -> RequestId {
    let (id, _request) = lock.poll_request().expect("a request to send");
    assert!(lock.poll_request().is_none(), "one request at a time");
    id
}

fn lock_201(c: &mut Criterion, now: Instant) {
    let config = config();
    c.bench_function("lock_201", |b| {
        b.iter_batched(
            || (Lock::new(config.clone()), created(7)),
            |(mut lock, response)| {
                let op = lock.lock(now);
                let (id, request) = lock.poll_request().expect("the PUT");
                black_box(&request);
                lock.handle_response(id, response, now);
                let done = lock.poll_completion().expect("completed");
                assert_eq!(done.op, op);
                black_box(done);
                lock // dropped after the clock stops
            },
            BatchSize::SmallInput,
        )
    });
}

fn lock_unlock_cycle(c: &mut Criterion, t0: Instant) {
    let mut lock = Lock::new(config());
    let mut index = 10;
    let mut now = t0;
    c.bench_function("lock_unlock_cycle", |b| {
        b.iter_batched(
            || {
                index += 2;
                (created(index), deleted(NODE, index, index + 1))
            },
            |(created, deleted)| {
                now += Duration::from_micros(1);
                lock.lock(now);
                let id = only_request(&mut lock);
                lock.handle_response(id, created, now);
                let done = lock.poll_completion().expect("locked");
                assert!(matches!(done.result, Ok(Outcome::Locked(_))));
                lock.unlock(now);
                let id = only_request(&mut lock);
                lock.handle_response(id, deleted, now);
                let done = lock.poll_completion().expect("unlocked");
                assert!(matches!(done.result, Ok(Outcome::Unlocked)));
            },
            BatchSize::SmallInput,
        )
    });
}

fn lock_unlock_cycle_v3(c: &mut Criterion, t0: Instant) {
    let mut lock = Lock::new(config().with_protocol(Protocol::V3));
    // The instant never moves: the lease, granted at t0 with a 30 s TTL, never needs a
    // keep-alive, so every cycle is the same two requests.
    let now = t0;
    let mut revision = 2;
    let cycle = |lock: &mut Lock, (taken, released)| {
        lock.lock(now);
        let id = only_request(lock);
        lock.handle_response(id, taken, now);
        let done = lock.poll_completion().expect("locked");
        assert!(matches!(done.result, Ok(Outcome::Locked(_))));
        lock.unlock(now);
        let id = only_request(lock);
        lock.handle_response(id, released, now);
        let done = lock.poll_completion().expect("unlocked");
        assert!(matches!(done.result, Ok(Outcome::Unlocked)));
    };
    // The first lock grants the lease.
    lock.lock(now);
    let id = only_request(&mut lock);
    lock.handle_response(id, granted(), now);
    let id = only_request(&mut lock);
    lock.handle_response(id, taken(revision), now);
    assert!(matches!(
        lock.poll_completion().expect("locked").result,
        Ok(Outcome::Locked(_))
    ));
    lock.unlock(now);
    let id = only_request(&mut lock);
    lock.handle_response(id, released(revision + 1), now);
    lock.poll_completion().expect("unlocked");
    c.bench_function("lock_unlock_cycle_v3", |b| {
        b.iter_batched(
            || {
                revision += 2;
                (taken(revision), released(revision + 1))
            },
            |answers| cycle(&mut lock, answers),
            BatchSize::SmallInput,
        )
    });
}

fn watch_event(c: &mut Criterion, t0: Instant) {
    let mut lock = Lock::new(config());
    lock.set_watching(true, t0);
    let read = only_request(&mut lock);
    lock.handle_response(read, not_found(10), t0);
    while lock.poll_event().is_some() {}
    let mut long_poll = only_request(&mut lock);
    let mut index = 10;
    let now = t0 + Duration::from_millis(1);
    c.bench_function("watch_event", |b| {
        b.iter_batched(
            || {
                index += 1;
                watch_answer(index, index % 2 == 0)
            },
            |answer| {
                lock.handle_response(long_poll, answer, now);
                let event = lock.poll_event().expect("an event");
                debug_assert!(matches!(
                    event,
                    Event::Locked { .. } | Event::Unlocked { .. }
                ));
                long_poll = only_request(&mut lock);
                event // dropped after the clock stops
            },
            BatchSize::SmallInput,
        )
    });
}

fn main() {
    // Short by default (`make bench` runs it with everything else); flags after `--` override.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // The one clock reading: every instant the machines see is derived from it.
    let t0 = Instant::now();
    lock_201(&mut c, t0);
    lock_unlock_cycle(&mut c, t0);
    watch_event(&mut c, t0);
    lock_unlock_cycle_v3(&mut c, t0);
    c.final_summary();
}
