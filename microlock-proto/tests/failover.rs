//! Failover between etcd members, decided by the machine: which member each request goes to,
//! what a member's failure costs a command, and how a watch leaves a member that stopped
//! serving it. No network: requests are answered by hand, time is jumped.

use std::time::{Duration, Instant};

use http::{Request, Response};
use microlock_proto::{Config, Endpoint, Error, Event, Lock, Members, Outcome, RequestId};

const M: [&str; 3] = ["m0:2379", "m1:2379", "m2:2379"];

/// Three members; a waiting acquire watches the key itself (these tests script the key's
/// watch; the queue of fair acquires has its own tests in `fair.rs`).
fn config() -> Config {
    Config::new("k", "n", Duration::from_secs(5))
        .unwrap()
        .with_endpoints(Endpoint::parse_all(M).unwrap())
        .unwrap()
        .with_fair_acquire(false)
}

/// The member (0, 1, 2) a request goes to.
fn member(request: &Request<Vec<u8>>) -> usize {
    let host = request.uri().authority().unwrap().as_str();
    M.iter()
        .position(|m| *m == host)
        .expect("a configured member")
}

fn one(lock: &mut Lock) -> (RequestId, Request<Vec<u8>>) {
    let r = lock.poll_request().expect("a request");
    assert!(lock.poll_request().is_none(), "exactly one request");
    r
}

fn query(request: &Request<Vec<u8>>) -> &str {
    request.uri().query().unwrap_or("")
}

fn json(status: u16, index: u64, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("X-Etcd-Index", index.to_string())
        .body(body.as_bytes().to_vec())
        .unwrap()
}

fn created(index: u64) -> Response<Vec<u8>> {
    json(
        201,
        index,
        &format!(
            r#"{{"action":"create","node":{{"key":"/k","value":"n","ttl":5,"modifiedIndex":{index},"createdIndex":{index}}}}}"#
        ),
    )
}

fn absent(index: u64) -> Response<Vec<u8>> {
    json(
        404,
        index,
        &format!(r#"{{"errorCode":100,"message":"Key not found","cause":"/k","index":{index}}}"#),
    )
}

fn present(value: &str, created: u64, modified: u64) -> Response<Vec<u8>> {
    json(
        200,
        modified,
        &format!(
            r#"{{"action":"get","node":{{"key":"/k","value":"{value}","expiration":"2020-01-01T00:00:05Z","ttl":5,"modifiedIndex":{modified},"createdIndex":{created}}}}}"#
        ),
    )
}

fn no_leader() -> Response<Vec<u8>> {
    json(
        500,
        0,
        r#"{"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request timed out","index":0}"#,
    )
}

/// A held lock (token 7) on member 0.
fn locked(now: Instant) -> Lock {
    let mut lock = Lock::new(config());
    lock.lock(now);
    let (id, request) = one(&mut lock);
    assert_eq!(member(&request), 0, "requests start at the first member");
    lock.handle_response(id, created(7), now);
    assert!(lock.poll_completion().unwrap().result.is_ok());
    lock
}

#[test]
fn a_refused_connection_sends_the_same_request_to_the_next_member_at_once() {
    let now = Instant::now();
    let mut lock = Lock::new(config());
    lock.lock(now);
    let (id, first) = one(&mut lock);
    assert_eq!(member(&first), 0);
    lock.handle_connect_error(id, "connection refused", now);
    let (id, again) = one(&mut lock);
    assert_eq!(member(&again), 1);
    assert_eq!(
        (again.method(), query(&again)),
        (first.method(), query(&first))
    );
    assert_eq!(again.body(), first.body());
    lock.handle_response(id, created(9), now);
    let done = lock.poll_completion().unwrap();
    assert!(matches!(done.result, Ok(Outcome::Locked(f)) if f.token() == 9));
    // The refusing member is skipped for a while: the next command starts on member 1.
    assert!(lock.members().is_down(0, now));
    lock.unlock(now);
    assert_eq!(member(&one(&mut lock).1), 1);
}

#[test]
fn every_member_refusing_is_a_transport_error_at_once() {
    let now = Instant::now();
    let mut lock = Lock::new(config());
    lock.lock(now);
    for expected in 0..3 {
        let (id, request) = one(&mut lock);
        assert_eq!(member(&request), expected);
        lock.handle_connect_error(id, "connection refused", now);
    }
    let done = lock.poll_completion().expect("answered at once");
    assert_eq!(
        done.result,
        Err(Error::Transport {
            reason: "connection refused".into()
        })
    );
    assert!(lock.poll_request().is_none());
}

#[test]
fn a_hung_member_costs_one_request_timeout_then_the_outcome_is_settled_elsewhere() {
    let t = Instant::now();
    let mut lock = Lock::new(config());
    lock.lock(t);
    let (_, write) = one(&mut lock);
    assert_eq!(member(&write), 0);
    // Member 0 never answers (SIGSTOP): at the request timeout a quorum read on member 1
    // tells whether the create happened.
    let now = lock.poll_timeout().unwrap();
    assert_eq!(now, t + config().request_timeout());
    lock.handle_timeout(now);
    let cancelled = lock.poll_cancel().expect("the hung request is abandoned");
    let (id, read) = one(&mut lock);
    assert_ne!(id, cancelled);
    assert_eq!((member(&read), query(&read)), (1, "quorum=true"));
    // It did not: the create goes again, to member 1.
    lock.handle_response(id, absent(20), now);
    let (id, again) = one(&mut lock);
    assert_eq!((member(&again), query(&again)), (1, "prevExist=false"));
    lock.handle_response(id, created(21), now);
    let done = lock.poll_completion().unwrap();
    assert!(matches!(done.result, Ok(Outcome::Locked(f)) if f.token() == 21));
    // The second create made the key (the first one could not have: the second would have
    // found it): valid from the second's send time.
    assert_eq!(
        lock.fence().unwrap().valid_until(),
        now + Duration::from_millis(4500)
    );
}

#[test]
fn a_lost_create_that_landed_late_is_ours_not_contention() {
    let t = Instant::now();
    let mut lock = Lock::new(config());
    // The machine has seen etcd at index 5 (a refused attempt): a key of ours created later
    // is its own doing.
    lock.lock(t);
    let (id, _) = one(&mut lock);
    lock.handle_response(
        id,
        json(
            412,
            5,
            r#"{"errorCode":105,"message":"Key already exists","cause":"/k","index":5}"#,
        ),
        t,
    );
    assert!(lock.poll_completion().unwrap().result.is_err());
    lock.lock(t);
    let (_, write) = one(&mut lock);
    assert_eq!(member(&write), 0);
    let now = lock.poll_timeout().unwrap();
    lock.handle_timeout(now);
    let (id, _read) = one(&mut lock);
    lock.handle_response(id, absent(20), now);
    // Member 0 resumes and forwards the first create; the second then finds the key.
    let (id, again) = one(&mut lock);
    assert_eq!(member(&again), 1);
    lock.handle_response(
        id,
        json(
            412,
            21,
            r#"{"errorCode":105,"message":"Key already exists","cause":"/k","index":21}"#,
        ),
        now,
    );
    // Not AlreadyLocked at once: a read shows whose key it is.
    let (id, read) = one(&mut lock);
    assert_eq!(query(&read), "quorum=true");
    lock.handle_response(id, present("n", 21, 21), now);
    let done = lock.poll_completion().unwrap();
    assert!(
        matches!(done.result, Ok(Outcome::Locked(f)) if f.token() == 21),
        "{done:?}"
    );
    // Valid only from the first create's send time (it is the one that made the key).
    assert_eq!(
        lock.fence().unwrap().valid_until(),
        t + Duration::from_millis(4500)
    );
}

#[test]
fn an_unlock_on_a_hung_member_is_sent_again_pinned_to_the_hold() {
    let t = Instant::now();
    let mut lock = locked(t);
    lock.unlock(t);
    let (_, delete) = one(&mut lock);
    assert_eq!(member(&delete), 0);
    let now = lock.poll_timeout().unwrap();
    lock.handle_timeout(now);
    let (id, read) = one(&mut lock);
    assert_eq!(member(&read), 1);
    lock.handle_response(id, present("n", 7, 7), now);
    let (id, again) = one(&mut lock);
    assert_eq!(again.method(), "DELETE");
    assert_eq!(
        (member(&again), query(&again)),
        (1, "prevValue=n&prevIndex=7")
    );
    lock.handle_response(
        id,
        json(
            200,
            8,
            r#"{"action":"compareAndDelete","node":{"key":"/k","modifiedIndex":8,"createdIndex":7},"prevNode":{"key":"/k","value":"n","modifiedIndex":7,"createdIndex":7}}"#,
        ),
        now,
    );
    assert_eq!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Unlocked)
    );
}

#[test]
fn a_renew_whose_member_fails_goes_to_the_next_one_before_the_hold_expires() {
    let t = Instant::now();
    let mut lock = locked(t);
    let valid_until = lock.fence().unwrap().valid_until();
    // Renewed late in the lease: the attempt may take at most half of what is left, so a
    // second member can still be tried in time.
    let now = t + Duration::from_secs(4);
    lock.renew(now);
    let (_, renew) = one(&mut lock);
    assert_eq!(member(&renew), 0);
    let deadline = lock.poll_timeout().unwrap();
    assert_eq!(deadline, now + (valid_until - now) / 2);
    lock.handle_timeout(deadline);
    let (id, again) = one(&mut lock);
    assert_eq!((member(&again), again.method().as_str()), (1, "PUT"));
    lock.handle_response(
        id,
        json(
            200,
            9,
            r#"{"action":"compareAndSwap","node":{"key":"/k","value":"n","ttl":5,"modifiedIndex":9,"createdIndex":7}}"#,
        ),
        deadline,
    );
    let done = lock.poll_completion().unwrap();
    assert!(matches!(done.result, Ok(Outcome::Renewed(_))), "{done:?}");
    assert_eq!(
        lock.fence().unwrap().valid_until(),
        deadline + Duration::from_millis(4500)
    );
    assert_eq!(lock.poll_event(), None, "never lost");
}

#[test]
fn no_leader_answers_fail_over_and_quorum_loss_is_a_typed_error_within_the_budget() {
    let t = Instant::now();
    let config = config().with_request_timeout(Duration::from_millis(500));
    let budget = config.operation_timeout();
    let mut lock = Lock::new(config.clone());
    lock.lock(t);
    let mut now = t;
    let mut members = Vec::new();
    let done = loop {
        if let Some(done) = lock.poll_completion() {
            break done;
        }
        if let Some((id, request)) = lock.poll_request() {
            members.push(member(&request));
            lock.handle_response(id, no_leader(), now);
        } else {
            now = lock.poll_timeout().expect("no stall");
            lock.handle_timeout(now);
        }
    };
    // Every member was tried, and the caller hears etcd's own error, never contention.
    assert!(
        matches!(done.result, Err(Error::Etcd { code: 300, .. })),
        "{done:?}"
    );
    assert!((0..3).all(|m| members.contains(&m)), "{members:?}");
    assert!(
        now - t <= budget + config.request_timeout(),
        "{:?}",
        now - t
    );
    assert_eq!(lock.fence(), None);
}

#[test]
fn member_health_is_shared_between_the_locks_of_one_cluster() {
    let now = Instant::now();
    let mut shared = Members::new(Endpoint::parse_all(M).unwrap());
    let mut a = Lock::new(config());
    a.sync_members(&mut shared);
    a.lock(now);
    let (id, _) = one(&mut a);
    a.handle_connect_error(id, "connection refused", now);
    a.sync_members(&mut shared);
    // A new lock of the same cluster does not start on the dead member.
    let mut b = Lock::new(config());
    b.sync_members(&mut shared);
    b.lock(now);
    assert_eq!(member(&one(&mut b).1), 1);
    // After the back-off, the member is used again when its turn comes.
    assert!(!shared.is_down(0, now + Duration::from_secs(1)));
}

/// Subscribes and answers the first read on member 0: returns the machine, the long poll
/// and when it started.
fn watching(t: Instant) -> (Lock, RequestId) {
    let mut lock = Lock::new(config());
    lock.set_watching(true, t);
    let (id, read) = one(&mut lock);
    assert_eq!(member(&read), 0);
    lock.handle_response(id, present("other", 5, 5), t);
    assert!(matches!(lock.poll_event(), Some(Event::Locked { .. })));
    let (poll, request) = one(&mut lock);
    assert_eq!(
        (member(&request), query(&request)),
        (0, "wait=true&waitIndex=6")
    );
    (lock, poll)
}

#[test]
fn a_watch_on_a_member_that_stops_answering_moves_and_resumes_from_its_index() {
    let t = Instant::now();
    let (mut lock, poll) = watching(t);
    let half = config().watch_liveness() / 2;
    // Probed every half bound with a quorum read on the watch's member.
    let now = lock.poll_timeout().unwrap();
    assert_eq!(now, t + half);
    lock.handle_timeout(now);
    let (probe, request) = one(&mut lock);
    assert_eq!((member(&request), query(&request)), (0, "quorum=true"));
    lock.handle_response(probe, present("other", 5, 5), now);
    // Next probe: member 0 hangs. Half a bound later the watch is on member 1, same index.
    let now = lock.poll_timeout().unwrap();
    assert_eq!(now, t + half * 2);
    lock.handle_timeout(now);
    let (_probe, _) = one(&mut lock);
    let now = lock.poll_timeout().unwrap();
    assert_eq!(now, t + half * 3);
    lock.handle_timeout(now);
    let mut cancelled = [lock.poll_cancel().unwrap(), lock.poll_cancel().unwrap()];
    cancelled.sort();
    assert!(cancelled.contains(&poll), "the old long poll is abandoned");
    let (id, moved) = one(&mut lock);
    assert_eq!(
        (member(&moved), query(&moved)),
        (1, "wait=true&waitIndex=6")
    );
    // The release that member 0 never reported arrives from member 1's history.
    lock.handle_response(
        id,
        json(
            200,
            9,
            r#"{"action":"delete","node":{"key":"/k","modifiedIndex":8,"createdIndex":5},"prevNode":{"key":"/k","value":"other","modifiedIndex":5,"createdIndex":5}}"#,
        ),
        now,
    );
    assert!(matches!(
        lock.poll_event(),
        Some(Event::Unlocked { expired: false, .. })
    ));
    // The release was seen within the liveness bound of the hang (plus the probe interval
    // during which member 0 still answered).
    assert!(now - (t + half) <= config().watch_liveness());
}

#[test]
fn a_probe_answered_with_an_error_moves_the_watch_too() {
    let t = Instant::now();
    let (mut lock, _) = watching(t);
    let now = lock.poll_timeout().unwrap();
    lock.handle_timeout(now);
    let (probe, _) = one(&mut lock);
    // A member cut off from its peers cannot serve a quorum read.
    lock.handle_response(probe, no_leader(), now);
    assert!(lock.poll_cancel().is_some());
    let (_, moved) = one(&mut lock);
    assert_eq!(
        (member(&moved), query(&moved)),
        (1, "wait=true&waitIndex=6")
    );
}

#[test]
fn a_waiting_acquire_moves_its_watch_and_goes_for_a_release_its_probe_sees() {
    let t = Instant::now();
    let mut lock = Lock::new(config());
    lock.acquire(None, t);
    let (id, _) = one(&mut lock);
    lock.handle_response(
        id,
        json(
            412,
            10,
            r#"{"errorCode":105,"message":"Key already exists","cause":"/k","index":10}"#,
        ),
        t,
    );
    let (_, wait) = one(&mut lock);
    assert_eq!((member(&wait), query(&wait)), (0, "wait=true&waitIndex=11"));
    // The probe goes unanswered: the wait moves to member 1 from the same index.
    let now = lock.poll_timeout().unwrap();
    lock.handle_timeout(now);
    let _ = one(&mut lock);
    let now = lock.poll_timeout().unwrap();
    lock.handle_timeout(now);
    let (_, moved) = one(&mut lock);
    assert_eq!(
        (member(&moved), query(&moved)),
        (1, "wait=true&waitIndex=11")
    );
    // Its probe finds the key gone: the attempt follows (after the jitter).
    let now = lock.poll_timeout().unwrap();
    lock.handle_timeout(now);
    let (probe, request) = one(&mut lock);
    assert_eq!(member(&request), 1);
    lock.handle_response(probe, absent(12), now);
    let at = lock.poll_timeout().unwrap();
    assert!(at - now <= config().acquire_jitter());
    lock.handle_timeout(at);
    let (id, write) = one(&mut lock);
    assert_eq!((member(&write), query(&write)), (1, "prevExist=false"));
    lock.handle_response(id, created(13), at);
    assert!(matches!(
        lock.poll_completion().unwrap().result,
        Ok(Outcome::Acquired(f)) if f.token() == 13
    ));
}

#[test]
fn member_discovery_finds_the_other_members_of_one_given_endpoint() {
    let t = Instant::now();
    let config = Config::new("k", "n", Duration::from_secs(5))
        .unwrap()
        .with_endpoints(Endpoint::parse_all(["m0:2379"]).unwrap())
        .unwrap()
        .with_member_discovery(true);
    let mut lock = Lock::new(config);
    lock.lock(t);
    let mut sent: Vec<(RequestId, Request<Vec<u8>>)> =
        std::iter::from_fn(|| lock.poll_request()).collect();
    sent.sort_by_key(|(_, r)| r.uri().path().to_owned());
    let [(write, _), (discovery, ask)] = <[_; 2]>::try_from(sent).unwrap();
    assert_eq!(ask.uri(), "http://m0:2379/v2/members");
    let body = r#"{"members":[{"id":"a","name":"m0","peerURLs":["http://m0:2380"],"clientURLs":["http://m0:2379"]},{"id":"b","name":"m1","peerURLs":["http://m1:2380"],"clientURLs":["http://m1:2379"]},{"id":"c","name":"m2","peerURLs":["http://m2:2380"],"clientURLs":["http://m2:2379","https://m2:2379"]},{"id":"d","name":"joining","peerURLs":["http://m3:2380"],"clientURLs":[]}]}"#;
    lock.handle_response(discovery, json(200, 0, body), t);
    assert_eq!(lock.members().len(), 3, "{:?}", lock.members());
    // m0 dies: the request goes to a discovered member.
    lock.handle_connect_error(write, "connection refused", t);
    let (id, again) = one(&mut lock);
    assert_eq!(again.uri().authority().unwrap().as_str(), "m1:2379");
    lock.handle_response(id, created(9), t);
    assert!(lock.poll_completion().unwrap().result.is_ok());
    // Not asked again before the interval.
    lock.unlock(t + Duration::from_secs(1));
    assert_eq!(one(&mut lock).1.method(), "DELETE");
}

#[test]
fn a_garbled_member_list_changes_nothing() {
    let t = Instant::now();
    let config = config().with_member_discovery(true);
    let mut lock = Lock::new(config);
    lock.set_watching(true, t);
    let sent: Vec<(RequestId, Request<Vec<u8>>)> =
        std::iter::from_fn(|| lock.poll_request()).collect();
    let (discovery, _) = sent
        .iter()
        .find(|(_, r)| r.uri().path() == "/v2/members")
        .expect("discovery");
    for body in [
        r#"{"members":"x"}"#,
        "[]",
        "",
        r#"{"members":[{"clientURLs":["ftp://x"]}]}"#,
    ] {
        lock.handle_response(*discovery, json(200, 0, body), t);
    }
    assert_eq!(lock.members().len(), 3);
}

/// A held lock's unlock whose DELETE hangs on its member (which may apply it later): settled by
/// a read elsewhere that still finds the key ours, so the DELETE goes again, pinned to the
/// hold. Returns the lock, the second DELETE's id, and the time.
fn unlock_sent_again() -> (Lock, RequestId, Instant) {
    let t = Instant::now();
    let mut lock = locked(t);
    lock.unlock(t);
    let (_, delete) = one(&mut lock);
    assert_eq!(delete.method(), "DELETE");
    let now = lock.poll_timeout().unwrap();
    lock.handle_timeout(now);
    let (read, r) = one(&mut lock);
    assert_eq!(query(&r), "quorum=true");
    lock.handle_response(read, present("n", 7, 7), now);
    let (again, r) = one(&mut lock);
    assert_eq!(
        (r.method().as_str(), query(&r)),
        ("DELETE", "prevValue=n&prevIndex=7")
    );
    (lock, again, now)
}

/// The first DELETE was applied meanwhile: the second finds the key gone. Released, not "not
/// owned" (found by the chaos run).
#[test]
fn an_unlock_whose_lost_delete_went_through_is_a_release() {
    let (mut lock, again, now) = unlock_sent_again();
    lock.handle_response(again, absent(9), now);
    let done = lock.poll_completion().unwrap();
    assert_eq!(done.result, Ok(Outcome::Unlocked), "{done:?}");
}

/// The same, but another node took the key between the late DELETE and ours: the second
/// DELETE fails its comparison and the read finds the other node's hold. Our first DELETE is
/// what released the key (our hold was valid until then): released, not "not owned" (found
/// by the chaos run: a paused leader applied the first DELETE, and a waiter took the key at
/// once).
#[test]
fn an_unlock_whose_lost_delete_went_through_before_a_new_holder_is_a_release() {
    let (mut lock, again, now) = unlock_sent_again();
    lock.handle_response(again, compare_failed(10), now);
    let (read, r) = one(&mut lock);
    assert_eq!(query(&r), "quorum=true");
    lock.handle_response(read, present("other", 10, 10), now);
    let done = lock.poll_completion().unwrap();
    assert_eq!(done.result, Ok(Outcome::Unlocked), "{done:?}");
}

/// Without a lost DELETE, a DELETE that fails its comparison because another node holds the
/// key is the truth: the key was taken away (it expired, or someone deleted it).
#[test]
fn an_unlock_that_finds_another_holder_without_a_lost_delete_is_not_owned() {
    let t = Instant::now();
    let mut lock = locked(t);
    lock.unlock(t);
    let (id, delete) = one(&mut lock);
    assert_eq!(delete.method(), "DELETE");
    lock.handle_response(id, compare_failed(10), t);
    let (read, r) = one(&mut lock);
    assert_eq!(query(&r), "quorum=true");
    lock.handle_response(read, present("other", 10, 10), t);
    let done = lock.poll_completion().unwrap();
    assert!(
        matches!(done.result, Err(Error::LockNotOwned { .. })),
        "{done:?}"
    );
}

fn compare_failed(index: u64) -> Response<Vec<u8>> {
    json(
        412,
        index,
        &format!(
            r#"{{"errorCode":101,"message":"Compare failed","cause":"[n != other]","index":{index}}}"#
        ),
    )
}

/// A renew whose refreshes keep losing their answers (each applied, moving the key's index, so
/// the next attempt's comparison fails and a read finds the key still ours at a newer index)
/// runs out of attempts on a one-member cluster. It must not say "not owned": the key is ours,
/// the renew could not be completed (found by the `races` fuzz target with checker (i)).
#[test]
fn a_renew_out_of_attempts_with_the_key_still_ours_is_not_lock_not_owned() {
    let t = Instant::now();
    let mut lock = Lock::new(Config::new("k", "n", Duration::from_secs(30)).unwrap());
    lock.lock(t);
    let (id, _) = one(&mut lock);
    lock.handle_response(id, created(7), t);
    assert!(lock.poll_completion().unwrap().result.is_ok());
    lock.renew(t);
    let (mut now, mut modified, mut puts, mut gets) = (t, 7, 0, 0);
    let done = loop {
        if let Some(done) = lock.poll_completion() {
            break done;
        }
        match lock.poll_request() {
            Some((id, r)) if r.method() == "GET" => {
                gets += 1;
                // The second settling read's answer is lost too (as in the fuzzer's world).
                if gets != 2 {
                    lock.handle_response(id, present("n", 7, modified), now);
                }
            }
            Some((id, r)) => {
                assert_eq!(r.method(), "PUT");
                puts += 1;
                modified += 2;
                // Every other refresh is applied but its answer is lost; the next one finds
                // the index it moved.
                if puts % 2 == 0 {
                    lock.handle_response(id, compare_failed(modified), now);
                }
            }
            None => {
                now = lock.poll_timeout().expect("a timer while the renew runs");
                lock.handle_timeout(now);
            }
        }
        assert!(puts < 100, "the renew never ends");
    };
    assert!(
        now < lock.fence().unwrap().valid_until(),
        "still within the hold"
    );
    assert!(
        matches!(done.result, Err(Error::Timeout { .. })),
        "{puts} refreshes: {done:?}"
    );
}
