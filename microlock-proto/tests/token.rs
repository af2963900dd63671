//! etcd v3 authentication, decided by the machine: the token got before the first request and
//! carried by every one, refreshed once when etcd refuses it, shared by the locks of a handle,
//! and every refusal typed. No network: requests are answered by hand (etcd 3.4.23's bodies),
//! time is jumped.

use std::time::{Duration, Instant};

use http::{header, Request, Response};
use microlock_proto::{
    AuthFailure, Config, Credentials, Endpoint, Error, Lock, Members, Protocol, RequestId,
};

const M: [&str; 2] = ["m0:2379", "m1:2379"];
const PASSWORD: &str = "pw-s3cret";

fn config() -> Config {
    Config::new("locks/job", "node-1", Duration::from_secs(5))
        .unwrap()
        .with_endpoints(Endpoint::parse_all(M).unwrap())
        .unwrap()
        .with_protocol(Protocol::V3)
        .with_credentials(Some(Credentials::new("alice", PASSWORD).unwrap()))
}

fn one(lock: &mut Lock) -> (RequestId, Request<Vec<u8>>) {
    let r = lock.poll_request().expect("a request");
    assert!(lock.poll_request().is_none(), "exactly one request");
    r
}

/// The next request, running the timers (retries, back-offs) until one is sent.
fn after_timers(lock: &mut Lock) -> (RequestId, Request<Vec<u8>>) {
    for _ in 0..10 {
        if let Some(r) = lock.poll_request() {
            return r;
        }
        let at = lock.poll_timeout().expect("a retry is scheduled");
        lock.handle_timeout(at);
    }
    panic!("no request after 10 timers");
}

fn path(request: &Request<Vec<u8>>) -> &str {
    request.uri().path()
}

fn host(request: &Request<Vec<u8>>) -> &str {
    request.uri().authority().unwrap().as_str()
}

fn token_of(request: &Request<Vec<u8>>) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?;
    assert!(value.is_sensitive(), "a token is a sensitive header");
    Some(value.to_str().unwrap())
}

fn answer(status: u16, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(body.as_bytes().to_vec())
        .unwrap()
}

const HEADER: &str =
    r#""header":{"cluster_id":"1","member_id":"2","revision":"1","raft_term":"2"}"#;

fn token(t: &str) -> Response<Vec<u8>> {
    answer(200, &format!(r#"{{{HEADER},"token":"{t}"}}"#))
}

fn granted() -> Response<Vec<u8>> {
    answer(200, &format!(r#"{{{HEADER},"ID":"7587","TTL":"5"}}"#))
}

fn error(status: u16, code: u32, message: &str) -> Response<Vec<u8>> {
    answer(
        status,
        &format!(r#"{{"error":"{message}","message":"{message}","code":{code}}}"#),
    )
}

fn invalid_token() -> Response<Vec<u8>> {
    error(401, 16, "etcdserver: invalid auth token")
}

/// A lock that asked for a token and got `t`: its grant is out, carrying it.
fn authenticated(now: Instant, t: &str) -> (Lock, RequestId) {
    let mut lock = Lock::new(config());
    lock.lock(now);
    let (auth, request) = one(&mut lock);
    assert_eq!(path(&request), "/v3/auth/authenticate");
    lock.handle_response(auth, token(t), now);
    let (grant, request) = one(&mut lock);
    assert_eq!(path(&request), "/v3/lease/grant");
    assert_eq!(token_of(&request), Some(t));
    (lock, grant)
}

#[test]
fn a_token_is_got_first_and_carried_by_every_request() {
    let now = Instant::now();
    let mut lock = Lock::new(config());
    lock.lock(now);
    let (auth, request) = one(&mut lock);
    assert_eq!(path(&request), "/v3/auth/authenticate");
    assert_eq!(token_of(&request), None, "never a token on an authenticate");
    let body: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
    assert_eq!(body["name"], "alice");
    lock.handle_response(auth, token("AAAAAAAAAAAAAAAA.1"), now);
    let (grant, request) = one(&mut lock);
    assert_eq!(path(&request), "/v3/lease/grant");
    assert_eq!(token_of(&request), Some("AAAAAAAAAAAAAAAA.1"));
    lock.handle_response(grant, granted(), now);
    let (_, request) = one(&mut lock);
    assert_eq!(path(&request), "/v3/kv/txn");
    assert_eq!(token_of(&request), Some("AAAAAAAAAAAAAAAA.1"));
}

#[test]
fn a_refused_token_is_replaced_once_and_the_request_sent_again() {
    let now = Instant::now();
    let (mut lock, grant) = authenticated(now, "AAAAAAAAAAAAAAAA.1");
    lock.handle_response(grant, invalid_token(), now);
    assert!(
        lock.poll_completion().is_none(),
        "the caller never hears of it"
    );
    let (auth, request) = one(&mut lock);
    assert_eq!(path(&request), "/v3/auth/authenticate");
    assert_eq!(host(&request), M[0], "where the refusal came from");
    lock.handle_response(auth, token("BBBBBBBBBBBBBBBB.2"), now);
    let (again, request) = one(&mut lock);
    assert_eq!(again, grant, "the same request, sent again");
    assert_eq!(path(&request), "/v3/lease/grant");
    assert_eq!(token_of(&request), Some("BBBBBBBBBBBBBBBB.2"));
    // A second refusal is the request's answer: an etcd error, not a loop.
    lock.handle_response(again, invalid_token(), now);
    let done = lock.poll_completion().expect("the command ends");
    assert!(
        matches!(
            &done.result,
            Err(Error::Etcd {
                code: 16,
                status: 401,
                ..
            })
        ),
        "{:?}",
        done.result
    );
    assert!(lock.poll_request().is_none(), "no authenticate loop");
}

#[test]
fn a_wrong_password_is_authentication_failed_and_never_shown() {
    let now = Instant::now();
    let mut lock = Lock::new(config());
    lock.lock(now);
    let (auth, _) = one(&mut lock);
    let failed = error(
        400,
        3,
        "etcdserver: authentication failed, invalid user ID or password",
    );
    lock.handle_response(auth, failed, now);
    let done = lock.poll_completion().expect("the command ends");
    match &done.result {
        Err(e @ Error::Auth { failure, user, .. }) => {
            assert_eq!(*failure, AuthFailure::AuthenticationFailed);
            assert_eq!(user.as_deref(), Some("alice"));
            let text = format!("{e} {e:?} {:?} {:?}", lock.config(), lock.members());
            assert!(!text.contains(PASSWORD), "the password leaked: {text}");
        }
        other => panic!("expected Error::Auth, got {other:?}"),
    }
    assert!(lock.poll_request().is_none());
}

#[test]
fn the_locks_of_a_handle_share_the_token() {
    let now = Instant::now();
    let mut shared = Members::new(Endpoint::parse_all(M).unwrap());
    let (mut a, _) = authenticated(now, "AAAAAAAAAAAAAAAA.1");
    a.sync_members(&mut shared);
    let text = format!("{shared:?}");
    assert!(
        !text.contains("AAAAAAAAAAAAAAAA"),
        "a token in Debug: {text}"
    );
    let mut b = Lock::new(config());
    b.sync_members(&mut shared);
    b.lock(now);
    let (_, request) = one(&mut b);
    assert_eq!(path(&request), "/v3/lease/grant", "no second authenticate");
    assert_eq!(token_of(&request), Some("AAAAAAAAAAAAAAAA.1"));
}

#[test]
fn authentication_off_sends_no_token() {
    let now = Instant::now();
    let mut shared = Members::new(Endpoint::parse_all(M).unwrap());
    let mut a = Lock::new(config());
    a.lock(now);
    let (auth, _) = one(&mut a);
    a.handle_response(
        auth,
        error(412, 9, "etcdserver: authentication is not enabled"),
        now,
    );
    let (_, request) = one(&mut a);
    assert_eq!(path(&request), "/v3/lease/grant");
    assert_eq!(token_of(&request), None);
    a.sync_members(&mut shared);
    // Known to the handle's other locks: they ask no more.
    let mut b = Lock::new(config());
    b.sync_members(&mut shared);
    b.lock(now);
    let (grant, request) = one(&mut b);
    assert_eq!(path(&request), "/v3/lease/grant");
    assert_eq!(token_of(&request), None);
    // Turned on since: etcd says a token is required; one is got, the request sent again.
    b.handle_response(grant, error(400, 3, "etcdserver: user name is empty"), now);
    let (auth, request) = one(&mut b);
    assert_eq!(path(&request), "/v3/auth/authenticate");
    b.handle_response(auth, token("CCCCCCCCCCCCCCCC.3"), now);
    let (again, request) = one(&mut b);
    assert_eq!(again, grant);
    assert_eq!(token_of(&request), Some("CCCCCCCCCCCCCCCC.3"));
}

#[test]
fn an_authenticate_that_times_out_fails_over() {
    let now = Instant::now();
    let mut lock = Lock::new(config());
    lock.lock(now);
    let (auth, request) = one(&mut lock);
    assert_eq!(host(&request), M[0]);
    let due = lock
        .poll_timeout()
        .expect("the authenticate has a deadline");
    assert!(due <= now + Duration::from_secs(10), "{:?}", due - now);
    lock.handle_timeout(due);
    assert_eq!(lock.poll_cancel(), Some(auth), "given up on");
    // The next attempt goes to the other member, authenticating there first.
    let (_, request) = after_timers(&mut lock);
    assert_eq!(path(&request), "/v3/auth/authenticate");
    assert_eq!(host(&request), M[1]);
    assert!(lock.poll_completion().is_none(), "still within its budget");
}

#[test]
fn without_credentials_a_required_token_is_unauthorized() {
    let now = Instant::now();
    let mut lock = Lock::new(config().with_credentials(None));
    lock.lock(now);
    let (grant, request) = one(&mut lock);
    assert_eq!(path(&request), "/v3/lease/grant");
    assert_eq!(token_of(&request), None);
    lock.handle_response(grant, error(400, 3, "etcdserver: user name is empty"), now);
    let done = lock.poll_completion().expect("the command ends");
    assert!(
        matches!(
            &done.result,
            Err(Error::Auth {
                failure: AuthFailure::Unauthorized,
                user: None,
                ..
            })
        ),
        "{:?}",
        done.result
    );
}

/// etcd 3.5 cancels a watch whose token expired with "permission denied" (3.4: "invalid auth
/// token"): the token is dropped, so that the watch's next read authenticates first.
#[test]
fn a_watch_cancelled_for_its_token_gets_a_new_one() {
    let now = Instant::now();
    let (mut lock, _grant) = authenticated(now, "AAAAAAAAAAAAAAAA.1");
    lock.set_watching(true, now);
    let (read, request) = one(&mut lock);
    assert_eq!(path(&request), "/v3/kv/range");
    assert_eq!(token_of(&request), Some("AAAAAAAAAAAAAAAA.1"));
    lock.handle_response(read, answer(200, &format!("{{{HEADER}}}")), now);
    let (watch, request) = one(&mut lock);
    assert_eq!(path(&request), "/v3/watch");
    assert_eq!(token_of(&request), Some("AAAAAAAAAAAAAAAA.1"));
    let (head, ()) = Response::builder()
        .status(200)
        .body(())
        .unwrap()
        .into_parts();
    lock.handle_response_head(watch, head, now);
    let cancelled = format!(
        r#"{{"result":{{{HEADER},"created":true,"canceled":true,"cancel_reason":"rpc error: code = PermissionDenied desc = etcdserver: permission denied"}}}}"#
    );
    lock.handle_response_body(watch, format!("{cancelled}\n").as_bytes(), now);
    // The watch reads again (after its back-off), authenticating first.
    let (auth, request) = after_timers(&mut lock);
    assert_eq!(path(&request), "/v3/auth/authenticate");
    lock.handle_response(auth, token("BBBBBBBBBBBBBBBB.2"), now);
    let requests: Vec<_> = std::iter::from_fn(|| lock.poll_request()).collect();
    assert!(
        requests
            .iter()
            .any(|(_, r)| path(r) == "/v3/kv/range" && token_of(r) == Some("BBBBBBBBBBBBBBBB.2")),
        "{requests:?}"
    );
}
