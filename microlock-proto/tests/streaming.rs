//! Responses taken in pieces (`handle_response_head`, `_body`, `_end`): the same answers split
//! anywhere give the same completions, events and requests as whole ones; a body passing the
//! bound is refused at once and its request cancelled; a transport failure after the head ends
//! the request as before; pieces of finished or unknown requests change nothing.

use std::time::{Duration, Instant};

use http::Response;
use microlock_proto::{Config, Lock, Outcome, RequestId, MAX_RESPONSE_BYTES};

/// The node id: two bytes of UTF-8 in `ä`, so some splits cut a character in two.
const NODE: &str = "node-ä";

/// How responses are handed to the machine.
#[derive(Debug, Clone)]
enum Delivery {
    /// `handle_response`.
    Whole,
    /// Head, the body cut once at this offset (or at its end, if shorter), end.
    SplitAt(usize),
    /// Head, the body in random pieces (some empty), end; xorshift state.
    Random(u64),
}

impl Delivery {
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// The cut points of a body of `len` bytes.
    fn cuts(&mut self, len: usize) -> Vec<usize> {
        match self {
            Delivery::Whole => unreachable!(),
            Delivery::SplitAt(at) => vec![(*at).min(len)],
            Delivery::Random(state) => {
                let pieces = Delivery::next(state) % 8;
                let mut cuts: Vec<usize> = (0..pieces)
                    .map(|_| (Delivery::next(state) % (len as u64 + 1)) as usize)
                    .collect();
                cuts.sort_unstable();
                cuts
            }
        }
    }

    fn deliver(&mut self, lock: &mut Lock, id: RequestId, response: Response<Vec<u8>>, t: Instant) {
        if let Delivery::Whole = self {
            return lock.handle_response(id, response, t);
        }
        let (head, body) = response.into_parts();
        let cuts = self.cuts(body.len());
        lock.handle_response_head(id, head, t);
        let mut from = 0;
        for cut in cuts.into_iter().chain([body.len()]) {
            lock.handle_response_body(id, &body[from..cut], t);
            from = cut;
        }
        lock.handle_response_end(id, t);
    }
}

/// A machine under a script, recording everything it puts out.
struct World {
    lock: Lock,
    now: Instant,
    delivery: Delivery,
    /// Requests sent and not answered yet: id and `METHOD path?query`.
    pending: Vec<(RequestId, String)>,
    trace: Vec<String>,
}

impl World {
    fn new(t0: Instant, delivery: Delivery) -> World {
        let config = Config::new("k", NODE, Duration::from_secs(5))
            .unwrap()
            .with_fair_acquire(false)
            .with_acquire_jitter(Duration::from_millis(10));
        World {
            lock: Lock::new(config),
            now: t0,
            delivery,
            pending: Vec::new(),
            trace: Vec::new(),
        }
    }

    /// Drains every output into the trace.
    fn drain(&mut self) {
        while let Some((id, request)) = self.lock.poll_request() {
            let what = format!(
                "{} {}",
                request.method(),
                request.uri().path_and_query().unwrap()
            );
            self.trace.push(format!("send {id} {what}"));
            self.pending.push((id, what));
        }
        while let Some(id) = self.lock.poll_cancel() {
            self.trace.push(format!("cancel {id}"));
            self.pending.retain(|(p, _)| *p != id);
        }
        while let Some(done) = self.lock.poll_completion() {
            self.trace.push(format!("done {done:?}"));
        }
        while let Some(event) = self.lock.poll_event() {
            self.trace.push(format!("event {event:?}"));
        }
        self.trace
            .push(format!("timer {:?}", self.lock.poll_timeout()));
    }

    /// The pending request whose `METHOD path?query` contains `pattern`.
    fn take(&mut self, pattern: &str) -> RequestId {
        let at = (self
            .pending
            .iter()
            .position(|(_, what)| what.contains(pattern)))
        .unwrap_or_else(|| panic!("no pending {pattern:?} in {:?}", self.pending));
        self.pending.remove(at).0
    }

    fn answer(&mut self, pattern: &str, response: Response<Vec<u8>>) {
        let id = self.take(pattern);
        self.delivery
            .deliver(&mut self.lock, id, response, self.now);
        self.drain();
    }

    fn command(&mut self, command: impl FnOnce(&mut Lock, Instant)) {
        command(&mut self.lock, self.now);
        self.drain();
    }

    fn fire(&mut self) {
        self.now = self.lock.poll_timeout().expect("a timer");
        self.lock.handle_timeout(self.now);
        self.drain();
    }
}

fn response(status: u16, index: Option<u64>, body: String) -> Response<Vec<u8>> {
    let mut builder = Response::builder()
        .status(status)
        .header("Content-Type", "application/json");
    if let Some(index) = index {
        builder = builder.header("X-Etcd-Index", index.to_string());
    }
    builder.body(body.into_bytes()).unwrap()
}

fn absent(index: u64) -> Response<Vec<u8>> {
    let body =
        format!(r#"{{"errorCode":100,"message":"Key not found","cause":"/k","index":{index}}}"#);
    response(404, Some(index), body)
}

fn conflict(index: u64) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"errorCode":105,"message":"Key already exists","cause":"/k","index":{index}}}"#
    );
    response(412, Some(index), body)
}

fn node(value: &str, created: u64, modified: u64) -> String {
    format!(
        r#"{{"key":"/k","value":"{value}","ttl":5,"modifiedIndex":{modified},"createdIndex":{created}}}"#
    )
}

fn created(value: &str, index: u64) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"action":"create","node":{}}}"#,
        node(value, index, index)
    );
    response(201, Some(index), body)
}

/// A watch event (etcd sends the watch's `X-Etcd-Index` with the head, before the event).
fn event(action: &str, value: &str, created: u64, modified: u64) -> Response<Vec<u8>> {
    let body = match action {
        "create" => format!(
            r#"{{"action":"create","node":{}}}"#,
            node(value, created, modified)
        ),
        _ => format!(
            r#"{{"action":"{action}","node":{{"key":"/k","modifiedIndex":{modified},"createdIndex":{created}}},"prevNode":{}}}"#,
            node(value, created, created)
        ),
    };
    response(200, Some(created.saturating_sub(1)), body)
}

fn deleted(value: &str, created: u64, modified: u64) -> Response<Vec<u8>> {
    let body = format!(
        r#"{{"action":"compareAndDelete","node":{{"key":"/k","modifiedIndex":{modified},"createdIndex":{created}}},"prevNode":{}}}"#,
        node(value, created, created)
    );
    response(200, Some(modified), body)
}

/// Watch, lock, unlock, then a waiting acquire: every response through `delivery`.
fn script(t0: Instant, delivery: Delivery) -> Vec<String> {
    let mut w = World::new(t0, delivery);
    w.command(|l, t| l.set_watching(true, t));
    w.answer("?quorum=true", absent(10));
    w.command(|l, t| {
        l.lock(t);
    });
    w.answer("?prevExist=false", created(NODE, 11));
    w.answer("waitIndex=11", event("create", NODE, 11, 11));
    w.command(|l, t| {
        l.unlock(t);
    });
    w.answer("DELETE", deleted(NODE, 11, 12));
    w.answer("waitIndex=12", event("compareAndDelete", NODE, 11, 12));
    // Someone else takes it; a waiting acquire watches for its release.
    w.answer("waitIndex=13", event("create", "other", 13, 13));
    w.command(|l, t| {
        l.acquire(None, t);
    });
    w.answer("?prevExist=false", conflict(13));
    w.answer("waitIndex=14", event("expire", "other", 13, 14));
    w.answer("waitIndex=14", event("expire", "other", 13, 14));
    w.fire(); // the acquire's jitter
    w.answer("?prevExist=false", created(NODE, 15));
    w.trace
}

#[test]
fn the_script_does_what_it_says_whole() {
    let trace = script(Instant::now(), Delivery::Whole).join("\n");
    for expected in [
        "Ok(Locked(Fence { token: 11",
        "Ok(Unlocked)",
        "event Locked { holder: \"node-ä\", token: 11 }",
        "event Unlocked { previous_holder: Some(\"node-ä\"), expired: false }",
        "event Locked { holder: \"other\", token: 13 }",
        "expired: true",
        "Ok(Acquired(Fence { token: 15",
    ] {
        assert!(trace.contains(expected), "{expected:?} not in\n{trace}");
    }
    assert!(!trace.contains("Err("), "{trace}");
    assert!(!trace.contains("cancel"), "{trace}");
}

#[test]
fn answers_split_at_every_offset_do_what_whole_ones_do() {
    let t0 = Instant::now();
    let whole = script(t0, Delivery::Whole);
    let longest = 400; // above every body of the script
    for at in 0..=longest {
        assert_eq!(
            script(t0, Delivery::SplitAt(at)),
            whole,
            "bodies split at byte {at}"
        );
    }
}

#[test]
fn answers_in_random_pieces_do_what_whole_ones_do() {
    let t0 = Instant::now();
    let whole = script(t0, Delivery::Whole);
    for seed in 1..=500u64 {
        let state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        assert_eq!(
            script(t0, Delivery::Random(state)),
            whole,
            "random pieces, seed {seed}"
        );
    }
}

fn head(status: u16) -> http::response::Parts {
    Response::builder()
        .status(status)
        .header("X-Etcd-Index", "4")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn locking(t: Instant) -> (Lock, RequestId) {
    let mut lock = Lock::new(
        Config::new("k", NODE, Duration::from_secs(5))
            .unwrap()
            .with_fair_acquire(false),
    );
    lock.lock(t);
    let (id, _) = lock.poll_request().unwrap();
    (lock, id)
}

/// What a machine puts out from now on, answering each read with `absent(3)` and each write
/// with a whole body one byte past the bound.
fn settle(lock: &mut Lock, t: Instant) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..20 {
        while let Some(id) = lock.poll_cancel() {
            out.push(format!("cancel {id}"));
        }
        while let Some(done) = lock.poll_completion() {
            out.push(format!("done {:?}", done.result));
        }
        match lock.poll_request() {
            Some((id, request)) => {
                out.push(format!("send {id} {} {}", request.method(), request.uri()));
                let answer = match request.method().as_str() {
                    "GET" => absent(3),
                    _ => Response::from_parts(head(201), vec![b' '; MAX_RESPONSE_BYTES + 1]),
                };
                lock.handle_response(id, answer, t);
            }
            None if lock.is_busy() => {
                let at = lock.poll_timeout().expect("a timer");
                lock.handle_timeout(at);
            }
            None => break,
        }
    }
    out
}

#[test]
fn a_body_passing_the_bound_is_refused_at_once_and_its_request_cancelled() {
    let t = Instant::now();
    let (mut lock, id) = locking(t);
    lock.handle_response_head(id, head(201), t);
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..MAX_RESPONSE_BYTES / chunk.len() {
        lock.handle_response_body(id, &chunk, t);
    }
    // Exactly at the bound: still waiting for the end.
    assert!(lock.poll_request().is_none());
    assert!(lock.poll_cancel().is_none());
    lock.handle_response_body(id, b" ", t);
    // Decided at once: the write's answer is unusable, so a read settles it; and the adapter
    // is told to stop reading.
    assert_eq!(lock.poll_cancel(), Some(id));
    assert!(lock.poll_cancel().is_none());
    let (read, request) = lock.poll_request().expect("a read settles the write");
    assert_eq!(request.uri().query(), Some("quorum=true"));
    // The rest of it, and its end, change nothing.
    for _ in 0..100 {
        lock.handle_response_body(id, &chunk, t);
    }
    lock.handle_response_end(id, t);
    lock.handle_transport_error(id, "late", t);
    assert!(lock.poll_completion().is_none() && lock.poll_cancel().is_none());
    assert!(lock.poll_request().is_none() && lock.poll_event().is_none());
    lock.handle_response(read, absent(3), t);
    let rest = settle(&mut lock, t);
    assert!(rest.last().unwrap().contains("larger than"), "{rest:?}");
    assert!(!lock.is_busy());

    // The same whole body (one byte past the bound): the same, without the cancel.
    let streamed = {
        let (mut lock, id) = locking(t);
        lock.handle_response_head(id, head(201), t);
        lock.handle_response_body(id, &vec![b' '; MAX_RESPONSE_BYTES + 1], t);
        settle(&mut lock, t)
    };
    let whole = {
        let (mut lock, id) = locking(t);
        let body = vec![b' '; MAX_RESPONSE_BYTES + 1];
        lock.handle_response(id, Response::from_parts(head(201), body), t);
        settle(&mut lock, t)
    };
    assert_eq!(streamed[0], "cancel r1");
    assert_eq!(streamed[1..], whole[..]);
    assert!(whole.last().unwrap().contains("larger than"), "{whole:?}");
}

#[test]
fn an_endless_watch_body_is_refused_and_the_watch_backs_off() {
    let t = Instant::now();
    let mut lock = Lock::new(Config::new("k", NODE, Duration::from_secs(5)).unwrap());
    lock.set_watching(true, t);
    let (read, _) = lock.poll_request().unwrap();
    lock.handle_response(read, absent(10), t);
    let (watch, request) = lock.poll_request().unwrap();
    assert!(request
        .extensions()
        .get::<microlock_proto::Streamed>()
        .is_some());
    lock.handle_response_head(watch, head(200), t);
    // A never-ending event: one chunk after another, each taken as it comes.
    let chunk = br#"{"action":"set","node":{"key":"/k","value":"                            "#;
    let mut fed = 0;
    while lock.poll_cancel().is_none() {
        lock.handle_response_body(watch, chunk, t);
        fed += chunk.len();
        assert!(fed <= MAX_RESPONSE_BYTES + chunk.len(), "never refused");
    }
    assert!(fed > MAX_RESPONSE_BYTES);
    assert!(lock.poll_event().is_none(), "garbage is no event");
    assert!(
        lock.poll_request().is_none(),
        "no new watch at once: it backs off"
    );
    let retry = lock.poll_timeout().expect("a retry timer");
    lock.handle_timeout(retry);
    let (_, next) = lock.poll_request().expect("watching again after the pause");
    assert_eq!(
        next.uri().query(),
        Some("quorum=true"),
        "it reads again first"
    );
}

#[test]
fn a_transport_failure_after_the_head_ends_the_request_as_before() {
    let t = Instant::now();
    let settle = |pieces: bool| {
        let (mut lock, id) = locking(t);
        if pieces {
            lock.handle_response_head(id, head(201), t);
            lock.handle_response_body(id, br#"{"action":"create","#, t);
        }
        lock.handle_transport_error(id, "connection reset", t);
        let (read, request) = lock.poll_request().expect("a read settles the lost write");
        assert_eq!(request.uri().query(), Some("quorum=true"));
        // What came before the failure is gone: the read's answer is read on its own.
        lock.handle_response_end(id, t);
        lock.handle_response(read, absent(3), t);
        let mut out = Vec::new();
        while let Some(done) = lock.poll_completion() {
            out.push(format!("{done:?}"));
        }
        while let Some((id, r)) = lock.poll_request() {
            out.push(format!("{id} {} {}", r.method(), r.uri()));
        }
        out.push(format!("{:?}", lock.poll_timeout()));
        out
    };
    assert_eq!(settle(true), settle(false));
}

#[test]
fn pieces_after_the_end_or_for_unknown_requests_change_nothing() {
    let t = Instant::now();
    let (mut lock, id) = locking(t);
    // Before the head: body and end are ignored (no head, no response).
    lock.handle_response_body(id, b"{}", t);
    lock.handle_response_end(id, t);
    assert!(lock.poll_completion().is_none());
    let (head, body) = created(NODE, 4).into_parts();
    lock.handle_response_head(id, head, t);
    lock.handle_response_body(id, &body, t);
    lock.handle_response_end(id, t);
    let done = lock.poll_completion().expect("locked");
    assert!(matches!(done.result, Ok(Outcome::Locked(_))), "{done:?}");
    let fence = lock.fence();
    let timer = lock.poll_timeout();
    // After the end, and for a request never sent: nothing.
    for id in [id, RequestId::from_raw(999)] {
        let (head, body) = conflict(9).into_parts();
        lock.handle_response_head(id, head, t);
        lock.handle_response_body(id, &body, t);
        lock.handle_response_body(id, &vec![b' '; MAX_RESPONSE_BYTES + 1], t);
        lock.handle_response_end(id, t);
        lock.handle_response_end(id, t);
        assert!(lock.poll_completion().is_none());
        assert!(lock.poll_cancel().is_none());
        assert!(lock.poll_request().is_none());
        assert!(lock.poll_event().is_none());
        assert_eq!(lock.fence(), fence);
        assert_eq!(lock.poll_timeout(), timer);
    }
}

#[test]
fn a_request_given_up_on_drops_what_it_received() {
    let t = Instant::now();
    let (mut lock, id) = locking(t);
    lock.handle_response_head(id, head(201), t);
    lock.handle_response_body(id, br#"{"action":"create","#, t);
    // Its deadline passes: the machine gives up on it (and reads to settle it).
    let deadline = lock.poll_timeout().unwrap();
    lock.handle_timeout(deadline);
    assert_eq!(lock.poll_cancel(), Some(id));
    // The rest of the late answer is ignored.
    let (_, body) = created(NODE, 4).into_parts();
    lock.handle_response_body(id, &body[18..], deadline);
    lock.handle_response_end(id, deadline);
    assert!(lock.fence().is_none());
    assert!(lock.poll_completion().is_none());
}
