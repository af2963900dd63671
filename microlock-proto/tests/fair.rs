//! Fair waiting, request by request: the queue of `acquire` (see `src/op/fair.rs`), with
//! etcd's answers written out (shapes checked against real etcd by the conformance suite).

use std::time::{Duration, Instant};

use http::{Request, Response};
use microlock_proto::{Config, Error, Lock, Outcome, RequestId};

const QUEUE: &str = "/v2/keys/jobs/_microlock/queue/nightly";

fn lock() -> Lock {
    Lock::new(Config::new("jobs/nightly", "n", Duration::from_secs(6)).unwrap())
}

fn one(lock: &mut Lock) -> (RequestId, Request<Vec<u8>>) {
    let r = lock.poll_request().expect("a request");
    assert!(lock.poll_request().is_none(), "exactly one request");
    r
}

fn line(request: &Request<Vec<u8>>) -> String {
    let pq = request.uri().path_and_query().unwrap().as_str();
    format!("{} {pq}", request.method())
}

fn json(status: u16, index: u64, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("X-Etcd-Index", index.to_string())
        .body(body.as_bytes().to_vec())
        .unwrap()
}

fn entry(index: u64) -> String {
    format!("{index:020}")
}

/// etcd's answer to the POST: our entry, at `index`.
fn enqueued(index: u64) -> Response<Vec<u8>> {
    let key = format!("/jobs/_microlock/queue/nightly/{}", entry(index));
    json(
        201,
        index,
        &format!(
            r#"{{"action":"create","node":{{"key":"{key}","value":"n","ttl":6,"modifiedIndex":{index},"createdIndex":{index}}}}}"#
        ),
    )
}

/// The queue, as the sorted quorum read returns it: (index, node id) per entry.
fn listing(at: u64, entries: &[(u64, &str)]) -> Response<Vec<u8>> {
    let nodes: Vec<String> = entries
        .iter()
        .map(|(i, v)| {
            format!(
                r#"{{"key":"/jobs/_microlock/queue/nightly/{}","value":"{v}","expiration":"2020-01-01T00:00:06Z","ttl":6,"modifiedIndex":{i},"createdIndex":{i}}}"#,
                entry(*i)
            )
        })
        .collect();
    json(
        200,
        at,
        &format!(
            r#"{{"action":"get","node":{{"key":"/jobs/_microlock/queue/nightly","dir":true,"nodes":[{}],"modifiedIndex":3,"createdIndex":3}}}}"#,
            nodes.join(",")
        ),
    )
}

fn created(index: u64) -> Response<Vec<u8>> {
    json(
        201,
        index,
        &format!(
            r#"{{"action":"create","node":{{"key":"/jobs/nightly","value":"n","ttl":6,"modifiedIndex":{index},"createdIndex":{index}}}}}"#
        ),
    )
}

/// A watch event on entry `index` ahead of ours.
fn event(action: &str, index: u64, at: u64) -> Response<Vec<u8>> {
    let key = format!("/jobs/_microlock/queue/nightly/{}", entry(index));
    json(
        200,
        at,
        &format!(
            r#"{{"action":"{action}","node":{{"key":"{key}","modifiedIndex":{at},"createdIndex":{index}}},"prevNode":{{"key":"{key}","value":"x","modifiedIndex":{index},"createdIndex":{index}}}}}"#
        ),
    )
}

/// Takes the lock through the queue, first in line: POST, list, PUT.
fn acquire_first_in_line(lock: &mut Lock, t: Instant) {
    lock.acquire(None, t);
    let (id, post) = one(lock);
    assert_eq!(line(&post), format!("POST {QUEUE}"));
    assert_eq!(post.body(), b"value=n&ttl=6");
    lock.handle_response(id, enqueued(10), t);
    let (id, list) = one(lock);
    assert_eq!(line(&list), format!("GET {QUEUE}?sorted=true&quorum=true"));
    lock.handle_response(id, listing(10, &[(10, "n")]), t);
    let (id, put) = one(lock);
    assert_eq!(line(&put), "PUT /v2/keys/jobs/nightly?prevExist=false");
    lock.handle_response(id, created(11), t);
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Acquired(f)) if f.token() == 11
    ));
}

#[test]
fn first_in_line_contends_and_the_release_wakes_the_next_in_line() {
    let t = Instant::now();
    let mut lock = lock();
    acquire_first_in_line(&mut lock, t);
    // Releasing: the key's DELETE and the entry's compareAndDelete leave together.
    lock.unlock(t);
    let sent: Vec<(RequestId, String)> = std::iter::from_fn(|| lock.poll_request())
        .map(|(id, r)| (id, line(&r)))
        .collect();
    let lines: Vec<&str> = sent.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        lines,
        [
            "DELETE /v2/keys/jobs/nightly?prevValue=n&prevIndex=11".to_owned(),
            format!("DELETE {QUEUE}/{}?prevValue=n", entry(10)),
        ]
    );
    // The unlock completes once both are answered: a caller dropping the lock at once does
    // not cut the next in line's wake-up off.
    let deleted = |action: &str, index: u64| {
        json(
            200,
            index,
            &format!(
                r#"{{"action":"{action}","node":{{"key":"/x","modifiedIndex":{index},"createdIndex":10}}}}"#
            ),
        )
    };
    lock.handle_response(sent[0].0, deleted("compareAndDelete", 12), t);
    assert!(lock.poll_completion().is_none(), "waits for the hand-off");
    lock.handle_response(sent[1].0, deleted("compareAndDelete", 13), t);
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Unlocked)
    ));
}

#[test]
fn a_waiter_watches_only_the_entry_ahead_and_goes_when_it_is_served() {
    let t = Instant::now();
    let mut lock = lock();
    lock.acquire(None, t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, enqueued(12), t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, listing(14, &[(9, "a"), (10, "b"), (12, "n")]), t);
    let (id, watch) = one(&mut lock);
    assert_eq!(
        line(&watch),
        format!("GET {QUEUE}/{}?wait=true&waitIndex=15", entry(10))
    );
    // `b` was served and is done: our turn, at once (no second read of the queue).
    lock.handle_response(id, event("compareAndDelete", 10, 20), t);
    let (id, put) = one(&mut lock);
    assert_eq!(line(&put), "PUT /v2/keys/jobs/nightly?prevExist=false");
    lock.handle_response(id, created(21), t);
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Acquired(_))
    ));
}

#[test]
fn an_entry_ahead_that_expires_or_leaves_makes_the_waiter_read_the_queue_again() {
    for action in ["expire", "delete"] {
        let t = Instant::now();
        let mut lock = lock();
        lock.acquire(None, t);
        let (id, _) = one(&mut lock);
        lock.handle_response(id, enqueued(12), t);
        let (id, _) = one(&mut lock);
        lock.handle_response(id, listing(14, &[(9, "a"), (10, "b"), (12, "n")]), t);
        let (id, _) = one(&mut lock);
        lock.handle_response(id, event(action, 10, 20), t);
        let (id, list) = one(&mut lock);
        assert_eq!(
            line(&list),
            format!("GET {QUEUE}?sorted=true&quorum=true"),
            "{action}"
        );
        // `a` is still ahead: watch it.
        lock.handle_response(id, listing(20, &[(9, "a"), (12, "n")]), t);
        let (_, watch) = one(&mut lock);
        assert_eq!(
            line(&watch),
            format!("GET {QUEUE}/{}?wait=true&waitIndex=21", entry(9)),
            "{action}"
        );
    }
}

#[test]
fn a_lost_post_answer_is_settled_by_the_list() {
    let t = Instant::now();
    let mut lock = lock();
    lock.acquire(None, t);
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "connection reset", t);
    // The list shows an entry of ours: it is ours (no second POST), and first in line.
    let (id, list) = one(&mut lock);
    assert_eq!(line(&list), format!("GET {QUEUE}?sorted=true&quorum=true"));
    lock.handle_response(id, listing(13, &[(13, "n")]), t);
    let (_, put) = one(&mut lock);
    assert_eq!(line(&put), "PUT /v2/keys/jobs/nightly?prevExist=false");
}

#[test]
fn a_cancelled_waiter_leaves_the_queue_unserved() {
    let t = Instant::now();
    let mut lock = lock();
    let op = lock.acquire(None, t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, enqueued(12), t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, listing(14, &[(10, "b"), (12, "n")]), t);
    let (watch, _) = one(&mut lock);
    lock.cancel(op, t);
    assert_eq!(lock.poll_cancel(), Some(watch));
    // A plain DELETE (not compareAndDelete): the one behind reads the queue again.
    let (_, leave) = one(&mut lock);
    assert_eq!(line(&leave), format!("DELETE {QUEUE}/{}", entry(12)));
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Err(Error::Cancelled)
    ));
}

#[test]
fn a_queue_etcd_refuses_to_this_user_means_waiting_unqueued() {
    let t = Instant::now();
    let mut lock = lock();
    lock.acquire(None, t);
    let (id, _) = one(&mut lock);
    let refused = r#"{"errorCode":110,"message":"The request requires user authentication","cause":"Insufficient credentials","index":0}"#;
    lock.handle_response(id, json(401, 0, refused), t);
    let (_, put) = one(&mut lock);
    assert_eq!(line(&put), "PUT /v2/keys/jobs/nightly?prevExist=false");
}

#[test]
fn a_waiting_entry_is_kept_alive_by_refreshes() {
    let t = Instant::now();
    let mut lock = lock();
    lock.acquire(None, t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, enqueued(12), t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, listing(14, &[(10, "b"), (12, "n")]), t);
    let _watch = one(&mut lock);
    // A third of the TTL later, the entry is refreshed (not re-created: its place is kept).
    let at = t + Duration::from_secs(2);
    assert!(lock.poll_timeout().unwrap() <= at);
    lock.handle_timeout(at);
    let refresh = std::iter::from_fn(|| lock.poll_request())
        .map(|(_, r)| (line(&r), String::from_utf8(r.body().clone()).unwrap()))
        .find(|(l, _)| l.starts_with("PUT"))
        .expect("a refresh");
    assert_eq!(
        refresh,
        (
            format!("PUT {QUEUE}/{}?prevValue=n", entry(12)),
            "refresh=true&ttl=6".to_owned()
        )
    );
}
