//! The machine driven by responses recorded from real etcd 3.4.23 and 3.5.1
//! (`tests/fixtures/`), and by hand-made hostile ones. No network.

use std::time::{Duration, Instant};

use http::Response;
use microlock_proto::{
    Completion, Config, Endpoint, Error, Event, Lock, LostReason, Outcome, RequestId,
};
use serde_json::Value;

const VERSIONS: [&str; 2] = ["etcd-3.4", "etcd-3.5"];

struct Fixture {
    method: String,
    path_and_query: String,
    body: String,
    response: Response<Vec<u8>>,
}

fn fixture(version: &str, name: &str) -> Fixture {
    let path = format!(
        "{}/tests/fixtures/{version}/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut response = Response::builder().status(v["response"]["status"].as_u64().unwrap() as u16);
    for (name, value) in v["response"]["headers"].as_object().unwrap() {
        response = response.header(name.as_str(), value.as_str().unwrap());
    }
    Fixture {
        method: v["request"]["method"].as_str().unwrap().to_owned(),
        path_and_query: v["request"]["path_and_query"].as_str().unwrap().to_owned(),
        body: v["request"]["body"].as_str().unwrap().to_owned(),
        response: response
            .body(v["response"]["body"].as_str().unwrap().as_bytes().to_vec())
            .unwrap(),
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The key and node id a recorded request was made for.
fn key_and_node(f: &Fixture) -> (String, String) {
    let (path, query) = f
        .path_and_query
        .split_once('?')
        .unwrap_or((&f.path_and_query, ""));
    let key = decode(path.strip_prefix("/v2/keys/").unwrap());
    let params = format!("{query}&{}", f.body);
    let node = params
        .split('&')
        .find_map(|p| {
            p.strip_prefix("value=")
                .or_else(|| p.strip_prefix("prevValue="))
        })
        .map(decode)
        .unwrap_or_else(|| "node-x".to_owned());
    (key, node)
}

fn machine_for(f: &Fixture) -> Lock {
    let (key, node) = key_and_node(f);
    Lock::new(Config::new(&key, &node, Duration::from_secs(5)).unwrap())
}

fn t0() -> Instant {
    Instant::now()
}

/// How a test answers a write the machine sends again (failover: a read showed that the first
/// did not happen, or it was a renew).
enum Again {
    /// Never answered: the member hangs, the request times out.
    Hang,
    /// A transport failure after sending, with this reason.
    Fail(&'static str),
    /// This answer.
    Answer(Response<Vec<u8>>),
}

/// Runs `lock` until the command completes, answering each quorum read (the resolution of a
/// lost answer) with `read()` — a response, or `None` for a transport failure — leaving every
/// write sent again unanswered (a hung member: it times out), and jumping time to every timer.
/// Panics on a stall.
fn settle(
    lock: &mut Lock,
    now: &mut Instant,
    read: impl Fn() -> Option<Response<Vec<u8>>>,
) -> Completion {
    settle_with(lock, now, read, || Again::Hang)
}

/// [`settle`], answering writes sent again with `write()`.
fn settle_with(
    lock: &mut Lock,
    now: &mut Instant,
    read: impl Fn() -> Option<Response<Vec<u8>>>,
    write: impl Fn() -> Again,
) -> Completion {
    for _ in 0..500 {
        if let Some(done) = lock.poll_completion() {
            return done;
        }
        if let Some((id, request)) = lock.poll_request() {
            if request.method() != "GET" {
                match write() {
                    Again::Hang => {}
                    Again::Fail(reason) => lock.handle_transport_error(id, reason, *now),
                    Again::Answer(response) => lock.handle_response(id, response, *now),
                }
                continue;
            }
            assert_eq!(request.uri().query(), Some("quorum=true"));
            match read() {
                Some(response) => lock.handle_response(id, response, *now),
                None => lock.handle_transport_error(id, "connection refused", *now),
            }
        } else if let Some(at) = lock.poll_timeout() {
            *now = at;
            lock.handle_timeout(at);
        } else {
            panic!("stalled: no request, no timer, no completion");
        }
    }
    panic!("no completion after 500 steps")
}

fn absent() -> Option<Response<Vec<u8>>> {
    Some(
        Response::builder()
            .status(404)
            .header("X-Etcd-Index", "50")
            .body(
                br#"{"errorCode":100,"message":"Key not found","cause":"/k","index":50}"#.to_vec(),
            )
            .unwrap(),
    )
}

fn present(key: &str, value: &str, created: u64, modified: u64) -> Option<Response<Vec<u8>>> {
    let body = format!(
        r#"{{"action":"get","node":{{"key":"/{key}","value":"{value}","ttl":5,"modifiedIndex":{modified},"createdIndex":{created}}}}}"#
    );
    Some(
        Response::builder()
            .status(200)
            .header("X-Etcd-Index", "60")
            .body(body.into_bytes())
            .unwrap(),
    )
}

/// Issues `command`, checks the request is byte-for-byte the recorded one, feeds the recorded
/// answer, returns the completion.
fn replay(version: &str, name: &str, command: fn(&mut Lock, Instant)) -> (Lock, Completion) {
    let f = fixture(version, name);
    let mut lock = machine_for(&f);
    let now = t0();
    command(&mut lock, now);
    let (id, request) = lock.poll_request().expect("a request");
    assert_eq!(request.method().as_str(), f.method, "{version}/{name}");
    let pq = request.uri().path_and_query().unwrap().as_str();
    assert_eq!(pq, f.path_and_query, "{version}/{name}");
    assert_eq!(
        std::str::from_utf8(request.body()).unwrap(),
        f.body,
        "{version}/{name}"
    );
    lock.handle_response(id, f.response, now);
    let done = lock.poll_completion().expect("completed");
    assert!(lock.poll_completion().is_none());
    (lock, done)
}

fn lock_cmd(l: &mut Lock, now: Instant) {
    l.lock(now);
}
fn unlock_cmd(l: &mut Lock, now: Instant) {
    l.unlock(now);
}
fn renew_cmd(l: &mut Lock, now: Instant) {
    l.renew(now);
}

#[test]
fn lock_ok_gives_a_fence_with_the_created_index() {
    for v in VERSIONS {
        for name in ["lock_ok", "lock_ok_unicode"] {
            let (lock, done) = replay(v, name, lock_cmd);
            let Ok(Outcome::Locked(fence)) = done.result else {
                panic!("{v}/{name}: {:?}", done.result)
            };
            let body: Value = serde_json::from_slice(fixture(v, name).response.body()).unwrap();
            assert_eq!(
                fence.token(),
                body["node"]["createdIndex"].as_u64().unwrap()
            );
            assert_eq!(lock.fence(), Some(fence));
        }
    }
}

#[test]
fn lock_conflict_is_already_locked() {
    for v in VERSIONS {
        let (lock, done) = replay(v, "lock_conflict", lock_cmd);
        match done.result {
            Err(Error::AlreadyLocked { key, index }) => {
                assert_eq!(key, "lock");
                assert!(index > 0);
            }
            other => panic!("{v}: {other:?}"),
        }
        assert_eq!(lock.fence(), None);
    }
}

#[test]
fn unlock_answers() {
    // Found by the simulator (seed 28512): an unpinned DELETE (an unlock after a lost hold) was
    // duplicated and removed a later hold. A machine that knows no hold reads the key, then
    // deletes it pinned to its index,
    // so that a delayed copy of the DELETE can never remove a later hold.
    for v in VERSIONS {
        for (node, read, expected) in [
            ("node-a", "get_ok", Some("prevValue=node-a&prevIndex=5")),
            ("node-b", "get_ok", None), // held by node-a: not ours, nothing deleted
            ("node-a", "get_missing", None),
        ] {
            let mut lock = Lock::new(Config::new("lock", node, Duration::from_secs(5)).unwrap());
            let now = t0();
            lock.unlock(now);
            let (id, get) = one(&mut lock);
            assert_eq!(get.uri().query(), Some("quorum=true"), "{v}/{read}");
            lock.handle_response(id, fixture(v, read).response, now);
            match expected {
                Some(query) => {
                    let (id, delete) = one(&mut lock);
                    assert_eq!(delete.method(), "DELETE");
                    assert_eq!(delete.uri().query(), Some(query), "{v}/{read}");
                    lock.handle_response(id, fixture(v, "unlock_ok").response, now);
                    assert_eq!(
                        lock.poll_completion().unwrap().result,
                        Ok(Outcome::Unlocked)
                    );
                }
                None => {
                    assert!(
                        lock.poll_request().is_none(),
                        "{v}/{node}/{read}: no DELETE"
                    );
                    let done = lock.poll_completion().unwrap();
                    assert!(
                        matches!(done.result, Err(Error::LockNotOwned { .. })),
                        "{v}/{node}/{read}"
                    );
                }
            }
        }
        // A held lock's unlock answered 412/404 by etcd (recorded): not owned.
        for name in ["unlock_other", "unlock_missing"] {
            let mut lock = Lock::new(config_lock_a());
            let now = t0();
            locked_fixture(&mut lock, v, now);
            lock.unlock(now);
            let (id, _) = one(&mut lock);
            lock.handle_response(id, fixture(v, name).response, now);
            let mut now = now;
            let done = settle(&mut lock, &mut now, || {
                Some(fixture(v, "get_missing").response)
            });
            assert!(
                matches!(done.result, Err(Error::LockNotOwned { .. })),
                "{v}/{name}: {:?}",
                done.result
            );
        }
    }
}

/// A waiting acquire watches the key itself here (these tests script the key's watch; the
/// queue of fair acquires has its own tests in `fair.rs`).
fn config_lock_a() -> Config {
    Config::new("lock", "node-a", Duration::from_secs(5))
        .unwrap()
        .with_fair_acquire(false)
}

fn locked_fixture(lock: &mut Lock, v: &str, now: Instant) {
    lock.lock(now);
    let (id, _) = lock.poll_request().unwrap();
    lock.handle_response(id, fixture(v, "lock_ok").response, now);
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Locked(_))
    ));
}

/// Renews the hold `lock` has, checking the request is byte-for-byte the recorded one, and
/// feeds the recorded answer.
fn renew_replay(lock: &mut Lock, v: &str, name: &str, now: Instant) {
    let f = fixture(v, name);
    lock.renew(now);
    let (id, request) = one(lock);
    assert_eq!(request.method().as_str(), f.method, "{v}/{name}");
    let pq = request.uri().path_and_query().unwrap().as_str();
    assert_eq!(
        pq, f.path_and_query,
        "{v}/{name}: pinned to the hold's index"
    );
    assert_eq!(std::str::from_utf8(request.body()).unwrap(), f.body);
    lock.handle_response(id, f.response, now);
}

#[test]
fn renew_answers() {
    for v in VERSIONS {
        // Held at index 4 (recorded): the renewal is pinned there.
        let mut lock = Lock::new(config_lock_a());
        let now = t0();
        locked_fixture(&mut lock, v, now);
        renew_replay(&mut lock, v, "renew_ok", now);
        let Ok(Outcome::Renewed(fence)) = lock.poll_completion().unwrap().result else {
            panic!("{v}")
        };
        assert_eq!(fence.token(), 4);
        // Its next renewal is pinned to the index the last one moved the key to (5): the key
        // gone by then is not ours.
        renew_replay(&mut lock, v, "renew_missing", now);
        assert!(matches!(
            lock.poll_completion().unwrap().result,
            Err(Error::LockNotOwned { .. })
        ));
        assert!(matches!(
            lock.poll_event(),
            Some(Event::Lost {
                reason: LostReason::NotOwned,
                ..
            })
        ));

        // node-b believes it holds at index 5, but the key is node-a's: etcd says the
        // comparison failed; a read tells whose the key is, and it is not ours.
        let mut lock = Lock::new(Config::new("lock", "node-b", Duration::from_secs(5)).unwrap());
        lock.lock(now);
        let (id, _) = one(&mut lock);
        let body = r#"{"action":"create","node":{"key":"/lock","value":"node-b","ttl":5,"modifiedIndex":5,"createdIndex":5}}"#;
        let created = Response::builder()
            .status(201)
            .body(body.as_bytes().to_vec());
        lock.handle_response(id, created.unwrap(), now);
        assert!(lock.poll_completion().unwrap().result.is_ok());
        renew_replay(&mut lock, v, "renew_other", now);
        assert!(lock.poll_completion().is_none(), "settled by a read first");
        let mut now = now;
        let done = settle(&mut lock, &mut now, || Some(fixture(v, "get_ok").response));
        assert!(
            matches!(done.result, Err(Error::LockNotOwned { .. })),
            "{v}: {:?}",
            done.result
        );
    }
}

#[test]
fn a_renew_that_knows_no_hold_reads_first_and_is_pinned() {
    // A restarted process renews its node id's hold: never an unpinned refresh.
    let mut lock = Lock::new(config_lock_a());
    let now = t0();
    lock.renew(now);
    let (id, read) = one(&mut lock);
    assert_eq!(read.uri().query(), Some("quorum=true"));
    lock.handle_response(id, fixture("etcd-3.4", "get_ok").response, now);
    let (id, renew) = one(&mut lock);
    assert_eq!(renew.method(), "PUT");
    assert_eq!(renew.uri().query(), Some("prevValue=node-a&prevIndex=5"));
    lock.handle_response(id, fixture("etcd-3.4", "renew_ok").response, now);
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Renewed(f)) if f.token() == 4
    ));
    // Its read failing is that failure, never "not owned".
    let mut lock = Lock::new(config_lock_a());
    lock.renew(now);
    let (id, _) = one(&mut lock);
    lock.handle_connect_error(id, "connection refused", now);
    assert_eq!(
        lock.poll_completion().unwrap().result,
        Err(Error::Transport {
            reason: "connection refused".into()
        })
    );
}

#[test]
fn other_etcd_errors_keep_their_code() {
    for v in VERSIONS {
        for (name, code) in [
            ("root_read_only", 107),
            ("bad_ttl", 202),
            ("refresh_with_value", 211),
            ("refresh_without_ttl", 212),
        ] {
            let f = fixture(v, name);
            let mut lock = Lock::new(Config::new("k", "n", Duration::from_secs(5)).unwrap());
            let now = t0();
            lock.lock(now);
            let (id, _) = lock.poll_request().unwrap();
            let status = f.response.status().as_u16();
            lock.handle_response(id, f.response, now);
            match lock.poll_completion().unwrap().result {
                Err(Error::Etcd {
                    code: c, status: s, ..
                }) => {
                    assert_eq!((c, s), (code, status), "{v}/{name}");
                }
                other => panic!("{v}/{name}: {other:?}"),
            }
        }
    }
}

/// Starts a watch, answers its read with `read`, returns the machine and the watch request.
fn watching(read: Fixture) -> (Lock, RequestId, String) {
    let mut lock = machine_for(&read);
    let now = t0();
    lock.set_watching(true, now);
    let (id, request) = lock.poll_request().unwrap();
    assert_eq!(request.uri().query(), Some("quorum=true"));
    assert!(lock.poll_timeout().is_some(), "the read has a deadline");
    lock.handle_response(id, read.response, now);
    let (watch, request) = lock.poll_request().expect("a watch");
    assert_eq!(
        lock.poll_timeout(),
        Some(now + lock.config().watch_liveness() / 2),
        "a watch has no deadline, only its member's liveness probe"
    );
    (lock, watch, request.uri().query().unwrap().to_owned())
}

#[test]
fn watch_starts_after_the_read_index() {
    for v in VERSIONS {
        let read = fixture(v, "get_missing");
        let index: u64 = read.response.headers()["x-etcd-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let (mut lock, _, query) = watching(read);
        assert_eq!(query, format!("wait=true&waitIndex={}", index + 1));
        assert_eq!(lock.poll_event(), None, "a free key is no event");

        let read = fixture(v, "get_ok");
        let index: u64 = read.response.headers()["x-etcd-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let (mut lock, _, query) = watching(read);
        assert_eq!(query, format!("wait=true&waitIndex={}", index + 1));
        assert!(
            matches!(lock.poll_event(), Some(Event::Locked { ref holder, .. }) if holder == "node-a"),
            "a held key is reported first"
        );
        assert!(lock.current_state_event().is_some());
    }
}

#[test]
fn every_recorded_watch_event_maps_to_the_right_event() {
    for v in VERSIONS {
        for (name, locked, expired) in [
            ("watch_create", true, false),
            ("watch_set", true, false),
            ("watch_update", true, false),
            ("watch_compare_and_swap", true, false),
            ("watch_delete", false, false),
            ("watch_compare_and_delete", false, false),
            ("watch_expire", false, true),
        ] {
            let f = fixture(v, name);
            let body: Value = serde_json::from_slice(f.response.body()).unwrap();
            let key = body["node"]["key"].as_str().unwrap().to_owned();
            let mut lock =
                Lock::new(Config::new(&key, "observer", Duration::from_secs(5)).unwrap());
            let now = t0();
            lock.set_watching(true, now);
            let (read, _) = lock.poll_request().unwrap();
            let missing = Response::builder()
                .status(404)
                .header("X-Etcd-Index", "1")
                .body(
                    format!(
                        r#"{{"errorCode":100,"message":"Key not found","cause":"{key}","index":1}}"#
                    )
                    .into_bytes(),
                )
                .unwrap();
            lock.handle_response(read, missing, now);
            let (watch, _) = lock.poll_request().unwrap();
            lock.handle_response(watch, f.response, now);
            let event = lock
                .poll_event()
                .unwrap_or_else(|| panic!("{v}/{name}: no event"));
            if locked {
                let Event::Locked { holder, token } = event else {
                    panic!("{v}/{name}: {event:?}")
                };
                assert_eq!(holder, body["node"]["value"].as_str().unwrap());
                assert_eq!(token, body["node"]["createdIndex"].as_u64().unwrap());
            } else {
                let Event::Unlocked {
                    previous_holder,
                    expired: e,
                } = event
                else {
                    panic!("{v}/{name}: {event:?}")
                };
                assert_eq!(
                    previous_holder.as_deref(),
                    body["prevNode"]["value"].as_str()
                );
                assert_eq!(e, expired, "{v}/{name}");
            }
            let (_, next) = lock.poll_request().expect("watching on");
            let next_index = body["node"]["modifiedIndex"].as_u64().unwrap() + 1;
            assert_eq!(
                next.uri().query().unwrap(),
                format!("wait=true&waitIndex={next_index}")
            );
        }
    }
}

#[test]
fn cleared_history_is_recovered_with_a_quorum_read() {
    for v in VERSIONS {
        let (mut lock, watch, _) = watching(fixture(v, "get_ok"));
        let _ = lock.poll_event();
        lock.handle_response(watch, fixture(v, "watch_cleared").response, t0());
        let (_, request) = lock.poll_request().expect("a read");
        assert_eq!(request.uri().query(), Some("quorum=true"));
        assert!(lock.poll_completion().is_none());
    }
}

#[test]
fn resync_reports_what_changed_while_not_looking() {
    let v = "etcd-3.4";
    let (mut lock, watch, _) = watching(fixture(v, "get_ok"));
    assert!(matches!(lock.poll_event(), Some(Event::Locked { .. })));
    lock.handle_response(watch, fixture(v, "watch_cleared").response, t0());
    let (read, _) = lock.poll_request().unwrap();
    lock.handle_response(read, fixture(v, "get_missing").response, t0());
    assert!(
        matches!(lock.poll_event(), Some(Event::Unlocked { previous_holder: Some(ref h), .. }) if h == "node-a")
    );
    assert!(lock.poll_request().is_some(), "watching again");
}

fn empty_200() -> Response<Vec<u8>> {
    Response::builder().status(200).body(Vec::new()).unwrap()
}

#[test]
fn empty_watch_close_rewatches_the_same_index_after_a_pause() {
    let (mut lock, watch, query) = watching(fixture("etcd-3.4", "get_missing"));
    let now = t0();
    lock.handle_response(watch, empty_200(), now);
    assert!(lock.poll_request().is_none(), "not in a hot loop");
    let at = lock.poll_timeout().expect("a retry timer");
    assert!(at > now);
    lock.handle_timeout(at);
    let (_, request) = lock.poll_request().unwrap();
    assert_eq!(request.uri().query().unwrap(), query);
}

#[test]
fn watch_retries_back_off_and_rotate_endpoints() {
    let endpoints = vec![
        Endpoint::parse("http://127.0.0.1:1").unwrap(),
        Endpoint::parse("http://127.0.0.1:2").unwrap(),
    ];
    let config = Config::new("k", "n", Duration::from_secs(5))
        .unwrap()
        .with_endpoints(endpoints)
        .unwrap();
    let mut lock = Lock::new(config);
    let mut now = t0();
    lock.set_watching(true, now);
    let mut delays = Vec::new();
    let mut hosts = Vec::new();
    for _ in 0..8 {
        let (id, request) = lock.poll_request().unwrap();
        hosts.push(request.uri().port_u16().unwrap());
        lock.handle_transport_error(id, "connection refused", now);
        let at = lock.poll_timeout().unwrap();
        delays.push(at - now);
        now = at;
        lock.handle_timeout(now);
    }
    assert_eq!(hosts, [1, 2, 1, 2, 1, 2, 1, 2]);
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
    assert_eq!(*delays.last().unwrap(), Duration::from_secs(2), "capped");
    assert!(lock.poll_completion().is_none() && lock.poll_event().is_none());
}

#[test]
fn transport_errors_are_never_contention() {
    for cmd in [lock_cmd, unlock_cmd, renew_cmd] {
        let mut lock = Lock::new(Config::new("k", "n", Duration::from_secs(5)).unwrap());
        let mut now = t0();
        cmd(&mut lock, now);
        let (id, _) = lock.poll_request().unwrap();
        lock.handle_transport_error(id, "connection refused", now);
        // etcd stays unreachable: the outcome cannot be settled, the failure is reported.
        let done = settle_with(
            &mut lock,
            &mut now,
            || None,
            || Again::Fail("connection refused"),
        );
        assert_eq!(
            done.result,
            Err(Error::Transport {
                reason: "connection refused".into()
            })
        );
    }
}

#[test]
fn request_deadline_times_out_cancels_and_ignores_the_late_answer() {
    let mut lock = Lock::new(
        Config::new("lock", "node-a", Duration::from_secs(5))
            .unwrap()
            .with_request_timeout(Duration::from_millis(300)),
    );
    let now = t0();
    lock.lock(now);
    let (id, _) = lock.poll_request().unwrap();
    assert_eq!(lock.poll_timeout(), Some(now + Duration::from_millis(300)));
    lock.handle_timeout(now + Duration::from_millis(299));
    assert!(lock.poll_completion().is_none(), "not yet");
    let mut now = now + Duration::from_millis(300);
    lock.handle_timeout(now);
    assert_eq!(lock.poll_cancel(), Some(id));
    assert!(lock.poll_completion().is_none(), "settled first");
    // The late answer to the abandoned request is ignored.
    lock.handle_response(id, fixture("etcd-3.4", "lock_ok").response, now);
    assert!(lock.poll_completion().is_none());
    // The key is absent: the lock did not happen.
    let done = settle(&mut lock, &mut now, absent);
    assert_eq!(
        done.result,
        Err(Error::Timeout {
            after: Duration::from_millis(300)
        })
    );
    assert_eq!(lock.fence(), None);
    assert_eq!(lock.poll_timeout(), None);
}

#[test]
fn commands_run_one_at_a_time_in_order() {
    let f = fixture("etcd-3.4", "lock_ok");
    let mut lock = machine_for(&f);
    let now = t0();
    let a = lock.lock(now);
    let b = lock.renew(now);
    let c = lock.unlock(now);
    let (id, _) = lock.poll_request().unwrap();
    assert!(lock.poll_request().is_none(), "one request at a time");
    lock.handle_response(id, f.response, now);
    let (id, r) = lock.poll_request().unwrap();
    assert_eq!(r.method(), "PUT");
    lock.handle_response(id, fixture("etcd-3.4", "renew_ok").response, now);
    let (id, r) = lock.poll_request().unwrap();
    assert_eq!(r.method(), "DELETE");
    lock.handle_response(id, fixture("etcd-3.4", "unlock_ok").response, now);
    let ops: Vec<_> = std::iter::from_fn(|| lock.poll_completion())
        .map(|c| c.op)
        .collect();
    assert_eq!(ops, [a, b, c]);
    assert!(!lock.is_busy());
    assert_eq!(lock.fence(), None, "unlocked");
}

#[test]
fn destroy_fails_everything_pending_and_cancels() {
    let mut lock = Lock::new(Config::new("k", "n", Duration::from_secs(5)).unwrap());
    let now = t0();
    lock.set_watching(true, now);
    let (read, _) = lock.poll_request().unwrap();
    let a = lock.lock(now);
    let (req, _) = lock.poll_request().unwrap();
    let b = lock.unlock(now);
    lock.destroy(now);
    let cancels: Vec<_> = std::iter::from_fn(|| lock.poll_cancel()).collect();
    assert!(cancels.contains(&read) && cancels.contains(&req));
    let done: Vec<_> = std::iter::from_fn(|| lock.poll_completion()).collect();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|c| c.result == Err(Error::Destroyed)));
    assert_eq!((done[0].op, done[1].op), (a, b));
    let c = lock.lock(now);
    assert_eq!(
        lock.poll_completion().unwrap(),
        Completion {
            op: c,
            result: Err(Error::Destroyed)
        }
    );
    assert!(lock.poll_request().is_none());
    assert_eq!(lock.poll_timeout(), None);
}

#[test]
fn validity_deadline_is_send_time_plus_ttl_minus_margin() {
    let f = fixture("etcd-3.4", "lock_ok");
    let (key, node) = key_and_node(&f);
    let mut lock = Lock::new(
        Config::new(&key, &node, Duration::from_secs(5))
            .unwrap()
            .with_safety_margin(Duration::from_millis(700)),
    );
    let sent = t0();
    lock.lock(sent);
    let (id, _) = lock.poll_request().unwrap();
    lock.handle_response(id, f.response, sent + Duration::from_secs(1));
    let fence = lock.fence().unwrap();
    assert_eq!(fence.valid_until(), sent + Duration::from_millis(4300));
    assert!(lock.is_held(sent + Duration::from_millis(4299)));
    assert!(!lock.is_held(sent + Duration::from_millis(4300)));
}

#[test]
fn watch_seeing_a_newer_holder_drops_our_claim_but_stale_events_do_not() {
    let v = "etcd-3.4";
    let f = fixture(v, "lock_ok"); // token 4 on /lock
    let mut lock = machine_for(&f);
    let now = t0();
    lock.lock(now);
    let (id, _) = lock.poll_request().unwrap();
    lock.handle_response(id, f.response, now);
    assert!(lock.fence().is_some());
    lock.set_watching(true, now);
    let (read, _) = lock.poll_request().unwrap();
    lock.handle_response(read, fixture(v, "get_ok").response, now); // held by node-a, token 4
    let (watch, _) = lock.poll_request().unwrap();
    // An expire at a later index than our token: we lost it.
    let expire = r#"{"action":"expire","node":{"key":"/lock","modifiedIndex":9,"createdIndex":4},"prevNode":{"key":"/lock","value":"node-a","modifiedIndex":5,"createdIndex":4}}"#.to_owned();
    lock.handle_response(
        watch,
        Response::builder()
            .status(200)
            .body(expire.into_bytes())
            .unwrap(),
        now,
    );
    assert_eq!(lock.fence(), None);

    // A release of an older generation (index below our token) changes nothing.
    let f = fixture(v, "lock_ok");
    let mut lock = machine_for(&f);
    lock.set_watching(true, now);
    let (read, _) = lock.poll_request().unwrap();
    let missing = Response::builder()
        .status(404)
        .header("X-Etcd-Index", "2")
        .body(br#"{"errorCode":100,"message":"Key not found","cause":"/lock","index":2}"#.to_vec())
        .unwrap();
    lock.handle_response(read, missing, now);
    let (watch, _) = lock.poll_request().unwrap();
    lock.lock(now);
    let (id, _) = lock.poll_request().unwrap();
    lock.handle_response(id, f.response, now); // token 4
    let old = r#"{"action":"delete","node":{"key":"/lock","modifiedIndex":3,"createdIndex":2},"prevNode":{"key":"/lock","value":"old","modifiedIndex":2,"createdIndex":2}}"#;
    lock.handle_response(
        watch,
        Response::builder()
            .status(200)
            .body(old.as_bytes().to_vec())
            .unwrap(),
        now,
    );
    assert_eq!(lock.fence().map(|f| f.token()), Some(4));
}

/// Hostile answers: every one is a typed error, none panics or claims the lock.
#[test]
fn malformed_answers_are_protocol_errors() {
    let huge = vec![b' '; microlock_proto::MAX_RESPONSE_BYTES + 1];
    type Case = (u16, Vec<(&'static str, &'static str)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            201,
            vec![],
            b"{\"action\":\"create\",\"node\":{\"key\":\"/k\",\"value\":\"n\",\"createdIndex\""
                .to_vec(),
        ),
        (201, vec![], b"not json".to_vec()),
        (201, vec![], vec![0xff, 0xfe, 0x00]),
        (
            201,
            vec![],
            br#"{"action":"create","node":{"key":"/k","value":"n","createdIndex":"7"}}"#.to_vec(),
        ),
        (
            201,
            vec![],
            br#"{"action":"create","node":{"key":"/k","value":"other","createdIndex":7}}"#.to_vec(),
        ),
        (201, vec![], br#"{"action":"create"}"#.to_vec()),
        (
            201,
            vec![],
            br#"{"action":"create","node":{"key":"/k","value":"n","createdIndex":-1}}"#.to_vec(),
        ),
        (
            200,
            vec![],
            br#"{"action":"delete","node":{"key":"/k"}}"#.to_vec(),
        ),
        (
            201,
            vec![("X-Etcd-Index", "banana")],
            br#"{"action":"create","node":{"key":"/k","value":"n","createdIndex":7}}"#.to_vec(),
        ),
        (201, vec![], huge),
        (412, vec![], b"<html>proxy error</html>".to_vec()),
        (502, vec![], Vec::new()),
        (302, vec![("Location", "http://elsewhere/")], Vec::new()),
        (101, vec![], Vec::new()),
        (201, vec![], Vec::new()),
    ];
    for (status, headers, body) in cases {
        let mut lock = Lock::new(Config::new("k", "n", Duration::from_secs(5)).unwrap());
        let now = t0();
        lock.lock(now);
        let (id, _) = lock.poll_request().unwrap();
        let mut r = Response::builder().status(status);
        for (h, v) in &headers {
            r = r.header(*h, *v);
        }
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let garbled = || {
            let mut r = Response::builder().status(status);
            for (h, v) in &headers {
                r = r.header(*h, *v);
            }
            r.body(body.clone()).unwrap()
        };
        lock.handle_response(id, garbled(), now);
        let mut now = now;
        // A garbled answer leaves the outcome unknown: settled by a read (the key is absent), the
        // lock is sent again (to the next member: here the same one, garbling again) until the
        // budget is spent.
        let result = settle_with(&mut lock, &mut now, absent, || Again::Answer(garbled())).result;
        assert!(
            matches!(result, Err(Error::Protocol { .. })),
            "{status} {shown:?}: {result:?}"
        );
        assert_eq!(lock.fence(), None);
    }
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut lock = Lock::new(
        Config::new("k", "n", Duration::from_secs(5))
            .unwrap()
            .with_request_timeout(Duration::from_secs(1)),
    );
    let now = t0() + Duration::from_secs(10);
    lock.lock(now);
    let _ = lock.poll_request().unwrap();
    lock.handle_timeout(now - Duration::from_secs(5));
    assert!(lock.poll_completion().is_none());
    let mut now = now + Duration::from_secs(1);
    lock.handle_timeout(now);
    let done = settle(&mut lock, &mut now, absent);
    assert!(matches!(done.result, Err(Error::Timeout { .. })));
}

#[test]
fn unsubscribing_cancels_the_long_poll() {
    let (mut lock, watch, _) = watching(fixture("etcd-3.4", "get_missing"));
    lock.set_watching(false, t0());
    assert_eq!(lock.poll_cancel(), Some(watch));
    assert!(lock.poll_request().is_none());
    assert_eq!(lock.poll_timeout(), None);
    assert_eq!(lock.current_state_event(), None);
}

// ----- lost answers are settled by a read, not guessed ----------------------------------------

fn one(lock: &mut Lock) -> (RequestId, http::Request<Vec<u8>>) {
    let r = lock.poll_request().expect("a request");
    assert!(lock.poll_request().is_none(), "exactly one request");
    r
}

/// As [`config_lock_a`]: the key's own watch.
fn config_k() -> Config {
    Config::new("k", "n", Duration::from_secs(5))
        .unwrap()
        .with_fair_acquire(false)
}

fn created(created: u64, value: &str) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"action":"create","node":{{"key":"/k","value":"{value}","ttl":5,"modifiedIndex":{created},"createdIndex":{created}}}}}"#
    );
    Response::builder()
        .status(201)
        .header("X-Etcd-Index", created.to_string())
        .body(body.into_bytes())
        .unwrap()
}

fn raft_timeout() -> Response<Vec<u8>> {
    Response::builder()
        .status(500)
        .body(br#"{"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request timed out","index":0}"#.to_vec())
        .unwrap()
}

#[test]
fn lost_lock_answer_that_took_the_key_is_a_lock() {
    let mut lock = Lock::new(config_k());
    let t = t0();
    // The machine has seen etcd at index 5 (a refused attempt)...
    lock.lock(t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, conflict(5), t);
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Err(Error::AlreadyLocked { .. })
    ));
    // ... so a key of ours created at 9 is this lock's doing.
    let sent = t + Duration::from_secs(1);
    lock.lock(sent);
    let (id, _) = one(&mut lock);
    let mut now = sent + Duration::from_secs(1);
    lock.handle_response(id, raft_timeout(), now);
    let done = settle(&mut lock, &mut now, || present("k", "n", 9, 9));
    let Ok(Outcome::Locked(fence)) = done.result else {
        panic!("{:?}", done.result)
    };
    assert_eq!(fence.token(), 9);
    // Valid from the send time, not the time it was learned.
    assert_eq!(fence.valid_until(), sent + Duration::from_millis(4500));
}

/// Found by the simulator (seeds 38 and 57): a hold lost during a quorum outage left our key
/// in etcd; a later lock whose answer was lost found it and took it for its own, with a
/// deadline later than the key's real expiry, and the same token as the lost hold.
#[test]
fn a_key_of_ours_older_than_the_command_is_not_its_doing() {
    // Created at or before an index seen before the write: an older hold of ours.
    let mut lock = Lock::new(config_k());
    let t = t0();
    lock.lock(t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, conflict(23), t);
    let _ = lock.poll_completion();
    let mut now = t + Duration::from_secs(1);
    lock.lock(now);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, raft_timeout(), now);
    let done = settle(&mut lock, &mut now, || present("k", "n", 23, 30));
    assert!(
        matches!(done.result, Err(Error::AlreadyLocked { .. })),
        "{:?}",
        done.result
    );
    assert_eq!(lock.fence(), None);

    // Nothing seen before the write: it cannot be told apart, so it is not claimed.
    let mut lock = Lock::new(config_k());
    let mut now = t0();
    lock.lock(now);
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "reset", now);
    let done = settle(&mut lock, &mut now, || present("k", "n", 9, 9));
    assert!(
        matches!(done.result, Err(Error::AlreadyLocked { .. })),
        "{:?}",
        done.result
    );
}

#[test]
fn lost_lock_answer_with_another_holder_is_already_locked() {
    let mut lock = Lock::new(config_k());
    let mut now = t0();
    lock.lock(now);
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "reset", now);
    let done = settle(&mut lock, &mut now, || present("k", "other", 5, 5));
    assert!(
        matches!(done.result, Err(Error::AlreadyLocked { .. })),
        "{:?}",
        done.result
    );
}

fn locked(lock: &mut Lock, now: Instant, token: u64) {
    lock.lock(now);
    let (id, _) = one(lock);
    lock.handle_response(id, created(token, lock.config().node_id().as_str()), now);
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Locked(_))
    ));
}

#[test]
fn lost_unlock_answers_are_settled() {
    // Gone: the unlock worked (or the lease ran out): either way, released.
    let mut lock = Lock::new(config_k());
    let mut now = t0();
    locked(&mut lock, now, 7);
    lock.unlock(now);
    assert!(!lock.is_held(now), "no claim once the unlock is sent");
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "reset", now);
    assert_eq!(
        settle(&mut lock, &mut now, absent).result,
        Ok(Outcome::Unlocked)
    );

    // Still ours: the unlock did not happen. It is sent again, pinned to the hold's index,
    // and its own answer ends it.
    let mut lock = Lock::new(config_k());
    locked(&mut lock, now, 7);
    lock.unlock(now);
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "reset", now);
    lock.handle_timeout(now);
    let (read, request) = one(&mut lock);
    assert_eq!(request.uri().query(), Some("quorum=true"));
    lock.handle_response(read, present("k", "n", 7, 8).unwrap(), now);
    let (id, request) = one(&mut lock);
    assert_eq!(request.method(), "DELETE");
    assert_eq!(request.uri().query(), Some("prevValue=n&prevIndex=8"));
    lock.handle_response(id, fixture("etcd-3.4", "unlock_ok").response, now);
    assert_eq!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Unlocked)
    );

    // Still ours, and every attempt fails: the last failure, once the budget is spent.
    let mut lock = Lock::new(config_k());
    let t = now;
    locked(&mut lock, now, 7);
    lock.unlock(now);
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "reset", now);
    let done = settle_with(
        &mut lock,
        &mut now,
        || present("k", "n", 7, 7),
        || Again::Fail("reset"),
    );
    assert!(matches!(done.result, Err(Error::Transport { .. })));
    // The only member failed fast, four times: given up well within the budget.
    let budget = config_k().operation_timeout();
    assert!(now <= t + budget, "{:?}", now - t);
}

#[test]
fn lost_renew_answers_are_settled() {
    // A renew whose answer was lost is simply sent again (to the next member): whether the lost
    // one went through cannot be told, so only the new answer counts, from its own send time.
    let mut lock = Lock::new(config_k());
    let t = t0();
    locked(&mut lock, t, 7);
    let before = lock.fence().unwrap();
    let now = t + Duration::from_secs(2);
    lock.renew(now);
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "reset", now);
    assert_eq!(lock.fence(), Some(before), "not extended by a lost answer");
    // The only member just failed: a short pause (the first retry delay) first.
    let later = lock.poll_timeout().unwrap();
    assert_eq!(later, now + lock.config().watch_retry().0);
    lock.handle_timeout(later);
    let (id, request) = one(&mut lock);
    assert_eq!(request.method(), "PUT", "the renew again, no read first");
    lock.handle_response(id, renewed(9), later);
    let fence = lock.fence().unwrap();
    assert_eq!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Renewed(fence))
    );
    assert_eq!(fence.valid_until(), later + Duration::from_millis(4500));

    // Every attempt lost: the old lease stands (it runs out), the last failure is reported
    // once the budget is spent.
    let mut lock = Lock::new(config_k());
    locked(&mut lock, t, 7);
    let mut now = t + Duration::from_secs(2);
    lock.renew(now);
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "reset", now);
    let done = settle_with(&mut lock, &mut now, absent, || Again::Fail("reset"));
    assert!(
        matches!(done.result, Err(Error::Transport { .. })),
        "{:?}",
        done.result
    );
    assert!(lock.fence().map_or(true, |f| f == before), "never extended");

    // Gone: the renew sent again says not ours any more, and the hold is lost.
    let mut lock = Lock::new(config_k());
    let t = t0();
    locked(&mut lock, t, 7);
    let mut now = t + Duration::from_secs(2);
    lock.renew(now);
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "reset", now);
    let done = settle_with(&mut lock, &mut now, absent, || {
        Again::Answer(fixture("etcd-3.4", "renew_missing").response)
    });
    assert!(matches!(done.result, Err(Error::LockNotOwned { .. })));
    assert_eq!(
        lock.poll_event(),
        Some(Event::Lost {
            token: 7,
            reason: LostReason::NotOwned
        })
    );
    assert_eq!(lock.fence(), None);
}

// ----- waiting acquire ---------------------------------------------------------------------------

fn conflict(index: u64) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"errorCode":105,"message":"Key already exists","cause":"/k","index":{index}}}"#
    );
    Response::builder()
        .status(412)
        .header("X-Etcd-Index", index.to_string())
        .body(body.into_bytes())
        .unwrap()
}

fn event(action: &str, modified: u64, created: u64) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"action":"{action}","node":{{"key":"/k","modifiedIndex":{modified},"createdIndex":{created}}},"prevNode":{{"key":"/k","value":"other","modifiedIndex":{created},"createdIndex":{created}}}}}"#
    );
    Response::builder()
        .status(200)
        .body(body.into_bytes())
        .unwrap()
}

#[test]
fn acquire_waits_for_the_release_then_takes_the_lock() {
    for release in ["delete", "compareAndDelete", "expire"] {
        let mut lock = Lock::new(config_k().with_acquire_jitter(Duration::from_millis(10)));
        let t = t0();
        let op = lock.acquire(None, t);
        let (id, put) = one(&mut lock);
        assert_eq!(put.uri().query(), Some("prevExist=false"));
        lock.handle_response(id, conflict(10), t);
        let (id, watch) = one(&mut lock);
        assert_eq!(watch.uri().query(), Some("wait=true&waitIndex=11"));
        assert_eq!(
            lock.poll_timeout(),
            Some(t + lock.config().watch_liveness() / 2),
            "waiting is not polling: only the liveness probe of the watch's member"
        );
        // Someone else's renewal-free rewrite: keep waiting after it.
        lock.handle_response(id, event("compareAndSwap", 12, 5), t);
        let (id, watch) = one(&mut lock);
        assert_eq!(watch.uri().query(), Some("wait=true&waitIndex=13"));
        lock.handle_response(id, event(release, 14, 5), t);
        // A seeded jitter of at most 10 ms, then the attempt.
        let at = lock.poll_timeout().expect("jitter timer");
        assert!(at - t <= Duration::from_millis(10));
        assert!(lock.poll_request().is_none());
        lock.handle_timeout(at);
        let (id, put) = one(&mut lock);
        assert_eq!(put.uri().query(), Some("prevExist=false"));
        lock.handle_response(id, created(15, "n"), at);
        let done = lock.poll_completion().unwrap();
        assert_eq!(done.op, op);
        let Ok(Outcome::Acquired(fence)) = done.result else {
            panic!("{:?}", done.result)
        };
        assert_eq!(fence.token(), 15);
        assert!(lock.is_held(at));
    }
}

#[test]
fn acquire_deadline_is_a_wait_timeout_and_cancels_the_watch() {
    let mut lock = Lock::new(config_k());
    let t = t0();
    lock.acquire(Some(t + Duration::from_secs(2)), t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, conflict(10), t);
    let (watch, _) = one(&mut lock);
    assert_eq!(lock.poll_timeout(), Some(t + Duration::from_secs(2)));
    lock.handle_timeout(t + Duration::from_secs(2));
    assert_eq!(lock.poll_cancel(), Some(watch));
    assert_eq!(
        lock.poll_completion().unwrap().result,
        Err(Error::WaitTimeout {
            waited: Duration::from_secs(2)
        })
    );
    assert!(lock.poll_request().is_none() && lock.poll_timeout().is_none() && !lock.is_busy());
}

#[test]
fn cancelled_waiting_acquire_leaves_nothing_behind() {
    let mut lock = Lock::new(config_k());
    let t = t0();
    let op = lock.acquire(None, t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, conflict(10), t);
    let (watch, _) = one(&mut lock);
    lock.cancel(op, t);
    assert_eq!(lock.poll_cancel(), Some(watch));
    assert_eq!(
        lock.poll_completion().unwrap(),
        Completion {
            op,
            result: Err(Error::Cancelled)
        }
    );
    assert!(lock.poll_request().is_none() && lock.poll_timeout().is_none() && !lock.is_busy());
    assert!(!lock.has_pending_io());
}

#[test]
fn acquire_cancelled_while_its_write_is_out_releases_what_it_won() {
    let mut lock = Lock::new(config_k());
    let t = t0();
    let op = lock.acquire(None, t);
    let (id, _) = one(&mut lock);
    lock.cancel(op, t);
    assert_eq!(
        lock.poll_completion().unwrap().result,
        Err(Error::Cancelled)
    );
    assert_eq!(lock.poll_cancel(), None, "a write cannot be recalled");
    lock.handle_response(id, created(15, "n"), t);
    assert!(lock.poll_completion().is_none(), "nobody waits for it");
    let (id, delete) = one(&mut lock);
    assert_eq!(delete.method(), "DELETE");
    assert!(!lock.is_held(t));
    let body = br#"{"action":"compareAndDelete","node":{"key":"/k","modifiedIndex":16,"createdIndex":15}}"#;
    lock.handle_response(
        id,
        Response::builder().status(200).body(body.to_vec()).unwrap(),
        t,
    );
    assert!(lock.poll_completion().is_none() && lock.poll_request().is_none());
    assert!(!lock.is_busy() && lock.poll_timeout().is_none());
}

#[test]
fn acquire_while_holding_is_already_locked_at_once() {
    let mut lock = Lock::new(config_k());
    let t = t0();
    locked(&mut lock, t, 7);
    lock.acquire(None, t);
    assert!(lock.poll_request().is_none());
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Err(Error::AlreadyLocked { .. })
    ));
}

#[test]
fn acquire_jitter_is_reproducible_from_the_seed() {
    let delays = |seed: u64| -> Vec<Duration> {
        let mut lock = Lock::new(
            config_k()
                .with_seed(seed)
                .with_acquire_jitter(Duration::from_millis(100)),
        );
        let t = t0();
        lock.acquire(None, t);
        let mut out = Vec::new();
        for i in 0..5u64 {
            let (id, _) = one(&mut lock);
            lock.handle_response(id, conflict(10 + 2 * i), t);
            let (id, _) = one(&mut lock);
            lock.handle_response(id, event("delete", 11 + 2 * i, 5), t);
            let at = lock.poll_timeout().unwrap();
            out.push(at - t);
            lock.handle_timeout(at);
        }
        out
    };
    assert_eq!(delays(42), delays(42));
    assert_ne!(delays(42), delays(43));
}

// ----- auto-renew and the validity deadline -------------------------------------------------------

fn renewed(modified: u64) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"action":"compareAndSwap","node":{{"key":"/k","value":"n","ttl":5,"modifiedIndex":{modified},"createdIndex":7}}}}"#
    );
    Response::builder()
        .status(200)
        .body(body.into_bytes())
        .unwrap()
}

#[test]
fn auto_renew_refreshes_every_third_of_the_ttl() {
    let mut lock = Lock::new(config_k().with_auto_renew(true));
    let t = t0();
    locked(&mut lock, t, 7);
    let mut now = t;
    for i in 0..6u64 {
        let at = lock.poll_timeout().unwrap();
        assert_eq!(at, now + Duration::from_secs(5) / 3, "round {i}");
        now = at;
        lock.handle_timeout(now);
        let (id, put) = one(&mut lock);
        assert_eq!(
            std::str::from_utf8(put.body()).unwrap(),
            "refresh=true&ttl=5"
        );
        lock.handle_response(id, renewed(8 + i), now);
        assert!(lock.poll_completion().is_none(), "internal: no completion");
        assert!(lock.is_held(now));
        assert_eq!(
            lock.fence().unwrap().valid_until(),
            now + Duration::from_millis(4500)
        );
    }
    assert_eq!(lock.poll_event(), None);
}

#[test]
fn failing_auto_renew_loses_the_lock_at_the_validity_deadline() {
    let mut lock = Lock::new(config_k().with_auto_renew(true));
    let t = t0();
    locked(&mut lock, t, 7);
    let deadline = lock.fence().unwrap().valid_until();
    let mut now = t;
    let mut attempts = 0;
    while lock.fence().is_some() {
        let at = lock.poll_timeout().unwrap();
        assert!(
            at <= deadline,
            "no timer past the validity deadline while holding"
        );
        now = at;
        lock.handle_timeout(now);
        while let Some((id, _)) = lock.poll_request() {
            attempts += 1;
            lock.handle_transport_error(id, "unreachable", now);
        }
    }
    assert_eq!(now, deadline);
    assert!(!lock.is_held(now));
    assert!(attempts > 3, "it kept trying: {attempts}");
    assert_eq!(
        lock.poll_event(),
        Some(Event::Lost {
            token: 7,
            reason: LostReason::Expired
        })
    );
    // Nothing more happens for the lost hold.
    while let Some(at) = lock.poll_timeout() {
        lock.handle_timeout(at);
        while let Some((id, _)) = lock.poll_request() {
            lock.handle_transport_error(id, "unreachable", at);
        }
    }
    assert_eq!(lock.poll_event(), None);
}

#[test]
fn renew_answered_not_owned_loses_the_lock() {
    let mut lock = Lock::new(config_k().with_auto_renew(true));
    let t = t0();
    locked(&mut lock, t, 7);
    let at = lock.poll_timeout().unwrap();
    lock.handle_timeout(at);
    let (id, _) = one(&mut lock);
    let body = br#"{"errorCode":101,"message":"Compare failed","cause":"[n != other]","index":9}"#;
    lock.handle_response(
        id,
        Response::builder().status(412).body(body.to_vec()).unwrap(),
        at,
    );
    // The comparison failed: a read tells whether another node holds the key now (it does).
    assert_eq!(lock.poll_event(), None);
    let (id, read) = one(&mut lock);
    assert_eq!(read.uri().query(), Some("quorum=true"));
    lock.handle_response(id, present("k", "other", 9, 9).unwrap(), at);
    assert_eq!(
        lock.poll_event(),
        Some(Event::Lost {
            token: 7,
            reason: LostReason::NotOwned
        })
    );
    assert!(!lock.is_held(at) && lock.poll_timeout().is_none());
}

#[test]
fn without_auto_renew_the_hold_still_ends_at_its_deadline() {
    let mut lock = Lock::new(config_k());
    let t = t0();
    locked(&mut lock, t, 7);
    let deadline = lock.fence().unwrap().valid_until();
    assert_eq!(lock.poll_timeout(), Some(deadline));
    lock.handle_timeout(deadline);
    assert_eq!(
        lock.poll_event(),
        Some(Event::Lost {
            token: 7,
            reason: LostReason::Expired
        })
    );
}

/// Found by the simulator (seeds 0 and 1): an acquire whose deadline passed while its write was
/// in flight kept reporting that past deadline as its timer, so a driver spun on it.
#[test]
fn acquire_deadline_during_a_write_is_not_a_timer_that_stays_due() {
    let mut lock = Lock::new(config_k());
    let t = t0();
    lock.acquire(Some(t + Duration::from_millis(100)), t);
    let (id, _) = one(&mut lock);
    let later = t + Duration::from_millis(200);
    lock.handle_timeout(later);
    assert!(
        lock.poll_completion().is_none(),
        "the attempt in flight may finish"
    );
    let next = lock.poll_timeout().expect("the write's own deadline");
    assert!(
        next > later,
        "a timer at {next:?} is already due at {later:?}: a driver would spin"
    );
    // The attempt fails on contention: now the deadline ends the acquire.
    lock.handle_response(id, conflict(10), later);
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Err(Error::WaitTimeout { .. })
    ));
}

/// Found by fuzzing (`operations/edge-acquire-deadline-due-after-resolve-timeout`): when the
/// settling read of an acquire's lost write timed out after the acquire's deadline, the read's
/// deadline ended one phase and left the acquire deadline due: a driver had to wake twice.
/// `handle_timeout` now runs every timer due at its instant.
#[test]
fn one_handle_timeout_runs_every_timer_due_at_its_instant() {
    let mut lock = Lock::new(config_k());
    let t = t0();
    lock.acquire(Some(t + Duration::from_millis(100)), t);
    let (_write, _) = one(&mut lock);
    // The write's answer never comes: at its deadline the outcome is settled by a read.
    let mut now = lock.poll_timeout().expect("the write's deadline");
    lock.handle_timeout(now);
    let (_read, read) = one(&mut lock);
    assert!(read.uri().query().unwrap_or("").contains("quorum=true"));
    assert!(lock.poll_completion().is_none());
    // The read's answer never comes either; its deadline is long after the acquire's.
    now = lock.poll_timeout().expect("the read's deadline");
    lock.handle_timeout(now);
    let done = lock
        .poll_completion()
        .expect("the acquire ends at this one wake-up");
    assert!(
        matches!(done.result, Err(Error::WaitTimeout { .. })),
        "{:?}",
        done.result
    );
    assert!(
        lock.poll_timeout().map_or(true, |at| at > now),
        "a timer is still due at {now:?}"
    );
    assert!(lock.poll_request().is_none() && !lock.is_busy());
}

/// Found by the simulator (seed 472): a grant that arrives after the lease's validity deadline
/// (the process was paused) was reported as a success with a dead fence.
#[test]
fn a_grant_arriving_after_its_validity_deadline_is_void() {
    // acquire: keeps trying.
    let mut lock = Lock::new(config_k());
    let t = t0();
    lock.acquire(None, t);
    let (id, _) = one(&mut lock);
    let late = t + Duration::from_secs(5); // TTL 5 s − margin 0.5 s has passed
    lock.handle_response(id, created(11, "n"), late);
    assert!(lock.poll_completion().is_none());
    assert!(!lock.is_held(late) && lock.fence().is_none());
    let at = lock.poll_timeout().expect("a retry");
    lock.handle_timeout(at);
    let (_, put) = one(&mut lock);
    assert_eq!(put.uri().query(), Some("prevExist=false"));

    // lock: fails, saying so.
    let mut lock = Lock::new(config_k());
    lock.lock(t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, created(11, "n"), late);
    assert_eq!(
        lock.poll_completion().unwrap().result,
        Err(Error::LeaseExpired { token: 11 })
    );
    assert!(lock.fence().is_none());
}

/// Found by the simulator (seed 2029): a delayed duplicate of an earlier hold's DELETE
/// (`prevValue` only) removed a later hold of the same node id. A known hold's unlock is now
/// pinned with `prevIndex`; a stale index is settled by a read and retried at the right one.
#[test]
fn unlock_is_pinned_to_the_hold_it_releases() {
    let mut lock = Lock::new(config_k());
    let mut now = t0();
    locked(&mut lock, now, 7); // created and modified at 7
    lock.unlock(now);
    let (id, delete) = one(&mut lock);
    assert_eq!(delete.uri().query(), Some("prevValue=n&prevIndex=7"));
    // A renewal whose answer was lost had moved the key to index 8.
    let body = br#"{"errorCode":101,"message":"Compare failed","cause":"[7 != 8]","index":9}"#;
    lock.handle_response(
        id,
        Response::builder().status(412).body(body.to_vec()).unwrap(),
        now,
    );
    let (id, read) = one(&mut lock);
    assert_eq!(read.uri().query(), Some("quorum=true"));
    lock.handle_response(id, present("k", "n", 7, 8).unwrap(), now);
    let (id, delete) = one(&mut lock);
    assert_eq!(delete.uri().query(), Some("prevValue=n&prevIndex=8"));
    let ok =
        br#"{"action":"compareAndDelete","node":{"key":"/k","modifiedIndex":10,"createdIndex":7}}"#;
    lock.handle_response(
        id,
        Response::builder().status(200).body(ok.to_vec()).unwrap(),
        now,
    );
    assert_eq!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Unlocked)
    );

    // Someone else holds it now: not ours.
    let mut lock = Lock::new(config_k());
    locked(&mut lock, now, 7);
    lock.unlock(now);
    let (id, _) = one(&mut lock);
    lock.handle_response(
        id,
        Response::builder().status(412).body(body.to_vec()).unwrap(),
        now,
    );
    let done = settle(&mut lock, &mut now, || present("k", "other", 9, 9));
    assert!(
        matches!(done.result, Err(Error::LockNotOwned { .. })),
        "{:?}",
        done.result
    );
}

/// Found by the simulator (seeds 37192 and 99329): a delayed duplicate of an earlier create
/// (answered 412) made a key of ours; a later lock whose answer was lost took it for its own,
/// valid for a full TTL from its own send. The read's remaining TTL now caps the hold (etcd
/// omits `ttl` at 0; `expiration` tells such a key from a permanent one).
#[test]
fn a_resolved_hold_never_outlives_the_keys_remaining_ttl() {
    let mut lock = Lock::new(config_k());
    let t = t0();
    lock.lock(t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, conflict(12), t);
    let _ = lock.poll_completion();
    let mut now = t + Duration::from_secs(1);
    lock.lock(now);
    let (id, _) = one(&mut lock);
    lock.handle_transport_error(id, "reset", now);
    let expiring = || {
        let body = br#"{"action":"get","node":{"key":"/k","value":"n","expiration":"2026-11-26T08:00:00Z","modifiedIndex":15,"createdIndex":15}}"#;
        Some(
            Response::builder()
                .status(200)
                .header("X-Etcd-Index", "15")
                .body(body.to_vec())
                .unwrap(),
        )
    };
    let done = settle(&mut lock, &mut now, expiring);
    assert!(
        matches!(done.result, Err(Error::LeaseExpired { token: 15 })),
        "{:?}",
        done.result
    );
    assert_eq!(lock.fence(), None);
}

/// etcd without the v2 API (3.6+, or 3.4/3.5 without `--enable-v2`) answers Go's plain
/// `404 page not found` (checked on 3.4.23 and 3.5.1): every command fails at once with the
/// typed error naming the member, never retried on another member, never "already locked".
#[test]
fn an_etcd_without_v2_is_a_typed_error_at_once() {
    let no_v2 = || {
        Response::builder()
            .status(404)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(b"404 page not found\n".to_vec())
            .unwrap()
    };
    let endpoints = vec![
        Endpoint::parse("http://127.0.0.1:23790").unwrap(),
        Endpoint::parse("http://127.0.0.1:23791").unwrap(),
    ];
    type Command = fn(&mut Lock, Instant);
    let commands: [(&str, Command); 4] = [
        ("lock", |l, now| {
            l.lock(now);
        }),
        ("acquire", |l, now| {
            l.acquire(None, now);
        }),
        ("renew", |l, now| {
            l.renew(now);
        }),
        ("unlock", |l, now| {
            l.unlock(now);
        }),
    ];
    for (name, command) in commands {
        let now = t0();
        let config = Config::new("k", "n", Duration::from_secs(5))
            .unwrap()
            .with_endpoints(endpoints.clone())
            .unwrap();
        let mut lock = Lock::new(config);
        command(&mut lock, now);
        let (id, request) = lock.poll_request().expect(name);
        assert!(request.uri().path().starts_with("/v2/keys/"), "{name}");
        lock.handle_response(id, no_v2(), now);
        let done = lock
            .poll_completion()
            .unwrap_or_else(|| panic!("{name}: no completion"));
        match done.result {
            Err(Error::V2Unavailable { endpoint }) => {
                assert_eq!(
                    endpoint,
                    request.uri().to_string().split("/v2").next().unwrap()
                )
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(lock.poll_request().is_none(), "{name}: sent again");
        let message = Error::V2Unavailable {
            endpoint: "http://e:1".into(),
        }
        .to_string();
        assert!(message.contains("--enable-v2=true"), "{message}");
    }
}
