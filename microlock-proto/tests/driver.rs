//! The shared adapter bookkeeping, driven by a recording runtime.

use std::time::{Duration, Instant};

use microlock_proto::driver::{Command, Driver, Flow, Runtime};
use microlock_proto::http::Request;
use microlock_proto::{Config, Error, Event, Fence, Lock, Outcome, RequestId};

/// Replies are numbered; `gone` lists the callers that went away.
#[derive(Default)]
struct Record {
    started: Vec<(RequestId, String)>,
    aborted: usize,
    answers: Vec<(u32, Result<Outcome, Error>)>,
    gone: Vec<u32>,
    published: Vec<Option<Fence>>,
}

impl Runtime for Record {
    type Task = RequestId;
    type Reply = u32;
    type Subscriber = ();
    fn start(&mut self, id: RequestId, request: Request<Vec<u8>>) -> RequestId {
        self.started
            .push((id, format!("{} {}", request.method(), request.uri())));
        id
    }
    fn abort(&mut self, _: RequestId) {
        self.aborted += 1;
    }
    fn reply(&mut self, reply: u32, result: Result<Outcome, Error>) {
        self.answers.push((reply, result));
    }
    fn deliver(&mut self, _: &(), _: &Event) -> bool {
        true
    }
    fn is_closed(&self, _: &()) -> bool {
        false
    }
    fn reply_closed(&self, reply: &u32) -> bool {
        self.gone.contains(reply)
    }
    fn publish(&mut self, fence: Option<Fence>) {
        self.published.push(fence);
    }
    fn sync_members(&mut self, _: &mut Lock) {}
}

fn driver() -> Driver<Record> {
    Driver::new(Lock::new(
        Config::new("k", "n", Duration::from_secs(5)).unwrap(),
    ))
}

/// Found in review: a guard's release on drop (a fire-and-forget unlock) was cancelled by an
/// unrelated dropped acquire. Only acquires are cancelled when their caller goes away.
#[test]
fn a_caller_going_away_cancels_only_its_waiting_acquire() {
    let mut rt = Record::default();
    let mut d = driver();
    let now = Instant::now();
    d.command(&mut rt, Command::Unlock(1), now); // its caller is gone from the start
    d.command(&mut rt, Command::Acquire(Duration::MAX, 2), now); // queued behind the unlock
    rt.gone = vec![1, 2];
    d.command(&mut rt, Command::Cancelled, now);
    assert_eq!(
        rt.started.len(),
        1,
        "the unlock still goes on (its look-up read)"
    );
    assert!(rt.started[0].1.starts_with("GET"), "{:?}", rt.started);
    // The key is gone: the unlock completes; the cancelled acquire behind it never starts.
    let missing = br#"{"errorCode":100,"message":"Key not found","cause":"/k","index":9}"#;
    let response = microlock_proto::http::Response::builder()
        .status(404)
        .header("X-Etcd-Index", "9")
        .body(missing.to_vec())
        .unwrap();
    let id = rt.started[0].0;
    let flow = d.response(&mut rt, id, Ok(response), now);
    assert_eq!(rt.started.len(), 1, "no PUT from the cancelled acquire");
    assert_eq!(flow, Flow::Continue(None), "nothing left to do");
    // The unlock is answered (delivery to a departed caller just fails); the acquire is not.
    assert!(
        matches!(
            rt.answers.as_slice(),
            [(1, Err(Error::LockNotOwned { .. }))]
        ),
        "{:?}",
        rt.answers
    );
    assert!(!d.machine().is_busy());
}

#[test]
fn destroy_answers_everyone_and_stops() {
    let mut rt = Record::default();
    let mut d = driver();
    let now = Instant::now();
    d.command(&mut rt, Command::Lock(1), now);
    d.command(&mut rt, Command::Renew(2), now);
    let flow = d.command(&mut rt, Command::Destroy, now);
    assert_eq!(flow, Flow::Stop);
    assert_eq!(rt.aborted, 1, "the lock request in flight is aborted");
    assert_eq!(
        rt.answers,
        vec![(1, Err(Error::Destroyed)), (2, Err(Error::Destroyed))]
    );
}

/// Found in review: a guard switched auto-renew on and, when it ended, back to the config's
/// default, so a caller's own `set_auto_renew(true)` was silently undone, and a cancelled
/// `guard()` left it on for good. Auto-renew now runs while the caller's setting is on or any
/// guard lives.
#[test]
fn guards_never_undo_the_callers_auto_renew_setting() {
    let mut rt = Record::default();
    let mut d = driver();
    let now = Instant::now();
    let auto = |d: &Driver<Record>| d.machine().auto_renew();
    assert!(!auto(&d), "the config's default");
    // The caller's setting survives a guard.
    d.command(&mut rt, Command::AutoRenew(true), now);
    d.command(&mut rt, Command::Guard(true), now);
    d.command(&mut rt, Command::Guard(false), now);
    assert!(auto(&d), "the caller switched it on");
    // Guards keep it on while any lives, whatever the caller sets meanwhile.
    d.command(&mut rt, Command::AutoRenew(false), now);
    assert!(!auto(&d));
    d.command(&mut rt, Command::Guard(true), now);
    d.command(&mut rt, Command::Guard(true), now);
    d.command(&mut rt, Command::AutoRenew(false), now);
    assert!(auto(&d), "two guards live");
    d.command(&mut rt, Command::Guard(false), now);
    assert!(auto(&d), "one guard lives");
    d.command(&mut rt, Command::Guard(false), now);
    assert!(!auto(&d), "no guard, caller off");
    // An unmatched end is harmless.
    d.command(&mut rt, Command::Guard(false), now);
    assert!(!auto(&d));
}

#[test]
fn a_hold_is_ended_by_its_own_loss_or_the_end_of_the_stream() {
    use microlock_proto::driver::Hold;
    use microlock_proto::LostReason;
    let now = Instant::now();
    let mut lock = Lock::new(Config::new("k", "n", Duration::from_secs(5)).unwrap());
    lock.lock(now);
    let (id, _) = lock.poll_request().unwrap();
    let body = br#"{"action":"create","node":{"key":"/k","value":"n","ttl":5,"modifiedIndex":7,"createdIndex":7}}"#;
    let created = microlock_proto::http::Response::builder()
        .status(201)
        .header("X-Etcd-Index", "7")
        .body(body.to_vec())
        .unwrap();
    lock.handle_response(id, created, now);
    let fence = lock.fence().expect("held");
    let mut hold = Hold::new(fence);
    assert_eq!(hold.token(), 7);
    assert!(hold.is_held(lock.fence(), now));
    assert!(
        !hold.is_held(lock.fence(), fence.valid_until()),
        "the deadline"
    );
    assert!(!hold.is_held(None, now), "the lock no longer has a fence");
    assert_eq!(hold.fence(None), fence, "the fence it was taken with");
    // Another hold's loss is not this one's; this one's is, once.
    let other = Event::Lost {
        token: 8,
        reason: LostReason::NotOwned,
    };
    assert_eq!(hold.observe(Some(&other)), None);
    assert!(hold.is_held(lock.fence(), now));
    let own = Event::Lost {
        token: 7,
        reason: LostReason::Superseded,
    };
    assert_eq!(hold.observe(Some(&own)), Some(LostReason::Superseded));
    assert_eq!(
        hold.observe(None),
        Some(LostReason::Superseded),
        "the first reason stays"
    );
    assert!(!hold.is_held(lock.fence(), now));
    // The end of the loss stream: the client was destroyed.
    let mut hold = Hold::new(fence);
    assert_eq!(hold.observe(None), Some(LostReason::Destroyed));
    assert_eq!(hold.lost(), Some(LostReason::Destroyed));
}

fn head(status: u16) -> microlock_proto::http::response::Parts {
    microlock_proto::http::Response::builder()
        .status(status)
        .header("X-Etcd-Index", "7")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// A streamed request is in flight from its start to its end: abortable after its head and
/// its body's first chunks, answered at its end, and forgotten after it.
#[test]
fn a_streamed_request_stays_in_flight_until_its_end() {
    let now = Instant::now();
    let body = br#"{"action":"create","node":{"key":"/k","value":"n","ttl":5,"modifiedIndex":7,"createdIndex":7}}"#;

    // Head and part of the body, then destroy: still in flight, so aborted.
    let mut rt = Record::default();
    let mut d = driver();
    d.command(&mut rt, Command::Lock(1), now);
    let id = rt.started[0].0;
    d.response_head(&mut rt, id, head(201), now);
    d.response_body(&mut rt, id, &body[..10], now);
    assert!(rt.answers.is_empty(), "decided at the end");
    assert_eq!(d.command(&mut rt, Command::Destroy, now), Flow::Stop);
    assert_eq!(rt.aborted, 1, "in flight until its end");

    // Head, body in pieces, end: answered, and no longer in flight.
    let mut rt = Record::default();
    let mut d = driver();
    d.command(&mut rt, Command::Lock(1), now);
    let id = rt.started[0].0;
    d.response_head(&mut rt, id, head(201), now);
    for chunk in body.chunks(7) {
        d.response_body(&mut rt, id, chunk, now);
    }
    assert!(rt.answers.is_empty());
    d.response_end(&mut rt, id, Ok(()), now);
    assert!(
        matches!(rt.answers.as_slice(), [(1, Ok(Outcome::Locked(f)))] if f.token() == 7),
        "{:?}",
        rt.answers
    );
    // Late pieces are ignored; nothing is left to abort.
    d.response_body(&mut rt, id, b"garbage", now);
    d.response_end(&mut rt, id, Ok(()), now);
    assert_eq!(rt.answers.len(), 1);
    assert_eq!(d.command(&mut rt, Command::Destroy, now), Flow::Stop);
    assert_eq!(rt.aborted, 0, "nothing in flight after its end");

    // A body past the bound: aborted at once, and the write's answer is settled by a read.
    let mut rt = Record::default();
    let mut d = driver();
    d.command(&mut rt, Command::Lock(1), now);
    let id = rt.started[0].0;
    d.response_head(&mut rt, id, head(201), now);
    let chunk = vec![b' '; 256 * 1024];
    for _ in 0..4 {
        d.response_body(&mut rt, id, &chunk, now);
        assert_eq!(rt.aborted, 0);
    }
    d.response_body(&mut rt, id, b" ", now);
    assert_eq!(
        rt.aborted, 1,
        "its body passed the bound: the adapter stops reading"
    );
    assert_eq!(rt.started.len(), 2, "{:?}", rt.started);
    assert!(
        rt.started[1].1.ends_with("?quorum=true"),
        "{:?}",
        rt.started
    );
    d.response_end(&mut rt, id, Ok(()), now);
    assert_eq!(rt.started.len(), 2, "its end changes nothing");

    // A transport failure after the head: lost, settled by a read.
    let mut rt = Record::default();
    let mut d = driver();
    d.command(&mut rt, Command::Lock(1), now);
    let id = rt.started[0].0;
    d.response_head(&mut rt, id, head(201), now);
    d.response_body(&mut rt, id, &body[..10], now);
    let lost = Err(microlock_proto::driver::Failure::Lost("reset".into()));
    d.response_end(&mut rt, id, lost, now);
    assert_eq!(rt.started.len(), 2, "{:?}", rt.started);
    assert!(
        rt.started[1].1.ends_with("?quorum=true"),
        "{:?}",
        rt.started
    );
    assert_eq!(d.command(&mut rt, Command::Destroy, now), Flow::Stop);
    assert_eq!(rt.aborted, 1, "only the read was still in flight");
}
