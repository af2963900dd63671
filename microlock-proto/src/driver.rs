//! The bookkeeping every adapter needs, written once: which caller waits for which command,
//! who subscribed to events, which request task to abort.
//!
//! An adapter implements [`Runtime`] (start a request, abort it, answer a caller, deliver an
//! event) and runs one loop: wait for a command, a finished request (or a piece of a streamed
//! one), or the instant in the last [`Flow::Continue`]; feed it to the [`Driver`]; stop on
//! [`Flow::Stop`]. Still no I/O, clock or runtime here: the adapter's handle types stay opaque.
//!
//! A request is whole or streamed. Whole: the adapter reads its response (at most
//! [`MAX_RESPONSE_BYTES`](crate::MAX_RESPONSE_BYTES) + 1 body bytes) and feeds it to
//! [`Driver::response`]. Streamed (marked [`Streamed`](crate::Streamed)): it feeds the head to
//! [`Driver::response_head`] as soon as it has come, each body chunk to
//! [`Driver::response_body`] as it comes, reading the next only once the driver has taken the
//! last (so nothing piles up however slow the loop), and the end or the failure to
//! [`Driver::response_end`]; if the driver aborts the request meanwhile (its body passed the
//! bound, or it is no longer wanted), it stops reading and closes the connection.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use microlock_proto::driver::{Command, Driver, Failure, Flow, Runtime};
//! use microlock_proto::http::Request;
//! use microlock_proto::{Config, Error, Event, Lock, Outcome, RequestId};
//!
//! /// A toy runtime that records what it is asked to do.
//! #[derive(Default)]
//! struct Record {
//!     sent: Vec<RequestId>,
//!     answers: Vec<Result<Outcome, Error>>,
//! }
//! impl Runtime for Record {
//!     type Task = ();
//!     type Reply = ();
//!     type Subscriber = ();
//!     fn start(&mut self, id: RequestId, _: Request<Vec<u8>>) { self.sent.push(id) }
//!     fn abort(&mut self, _: ()) {}
//!     fn reply(&mut self, _: (), result: Result<Outcome, Error>) { self.answers.push(result) }
//!     fn deliver(&mut self, _: &(), _: &Event) -> bool { true }
//!     fn is_closed(&self, _: &()) -> bool { false }
//!     fn reply_closed(&self, _: &()) -> bool { false }
//!     fn publish(&mut self, _: Option<microlock_proto::Fence>) {}
//!     fn sync_members(&mut self, _: &mut Lock) {} // one lock: nothing to share
//! }
//!
//! fn run(now: Instant) {
//!     let mut rt = Record::default();
//!     let lock = Lock::new(Config::new("k", "n", Duration::from_secs(5)).unwrap());
//!     let mut driver = Driver::new(lock);
//!     let flow = driver.command(&mut rt, Command::Lock(()), now);
//!     assert!(matches!(flow, Flow::Continue(Some(_)))); // the request's deadline
//!     let id = rt.sent[0];
//!     // The only member refused the connection: nothing to fail over to.
//!     driver.response(&mut rt, id, Err(Failure::Connect("connection refused".into())), now);
//!     assert!(matches!(rt.answers[0], Err(Error::Transport { .. })));
//! }
//! ```

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use http::{Request, Response};

use crate::{Error, Event, Fence, Lock, LostReason, OpId, Outcome, RequestId};

/// Why a request got no complete response: what an adapter's HTTP client reports.
///
/// The difference matters for failover: a request that never reached etcd is simply sent to
/// the next member, while one that may have reached it is settled by a read first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It provably never reached etcd: the connection was refused or not made in time, the
    /// name did not resolve, the TLS handshake failed.
    Connect(String),
    /// It may have reached etcd: the connection failed after the request was (partly) sent,
    /// or the response was cut short.
    Lost(String),
    /// TLS failed (the handshake, or the server refused the client certificate): it never
    /// reached etcd. With the `tls` feature, `TlsConfig::classify` tells which.
    Tls(crate::TlsFailure, String),
}

/// Where a request goes, read from its URI: what a connection pool keys its connections by
/// and connects to. `host` is an IPv6 literal without its brackets (as a socket address and a
/// certificate name want it); `port` is the URI's, else the scheme's default.
///
/// ```
/// use microlock_proto::driver::Origin;
/// let uri = "https://[::1]/v3/kv/txn".parse().unwrap();
/// assert_eq!(Origin::of(&uri), Some(Origin { https: true, host: "::1", port: 443 }));
/// let uri = "http://etcd-1:2379/v2/keys/k".parse().unwrap();
/// assert_eq!(Origin::of(&uri), Some(Origin { https: false, host: "etcd-1", port: 2379 }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// `https://`: TLS, the server's certificate verified for `host`.
    pub https: bool,
    /// The name or address to connect to.
    pub host: &'a str,
    /// The port to connect to.
    pub port: u16,
}

impl<'a> Origin<'a> {
    /// `uri`'s origin; `None` if it has no host (the machine never builds such a request).
    pub fn of(uri: &'a http::Uri) -> Option<Origin<'a>> {
        let authority = uri.authority()?;
        let https = uri.scheme_str() == Some("https");
        Some(Origin {
            https,
            host: (authority.host())
                .trim_start_matches('[')
                .trim_end_matches(']'),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }
}

/// What an adapter's runtime does for the driver.
pub trait Runtime {
    /// A handle on a started request, to abort it.
    type Task;
    /// Where a command's result goes (typically a one-shot channel to the caller).
    type Reply;
    /// Where events go (typically a channel to an `Events` stream).
    type Subscriber;

    /// Starts sending `request`; the adapter later feeds the outcome to
    /// [`Driver::response`] with the same `id` (or, for a request marked
    /// [`Streamed`](crate::Streamed), its pieces to [`Driver::response_head`],
    /// [`Driver::response_body`] and [`Driver::response_end`]). The handle goes to
    /// [`abort`](Runtime::abort) if the machine gives up on the request.
    fn start(&mut self, id: RequestId, request: Request<Vec<u8>>) -> Self::Task;
    /// Stops a started request (its outcome is no longer wanted).
    fn abort(&mut self, task: Self::Task);
    /// Hands a command's result to its caller (who may have gone away).
    fn reply(&mut self, reply: Self::Reply, result: Result<Outcome, Error>);
    /// Gives `event` to `subscriber`; `false` when the subscriber is gone.
    fn deliver(&mut self, subscriber: &Self::Subscriber, event: &Event) -> bool;
    /// Whether `subscriber` is gone.
    fn is_closed(&self, subscriber: &Self::Subscriber) -> bool;
    /// Whether the caller behind `reply` is gone (its future dropped).
    fn reply_closed(&self, reply: &Self::Reply) -> bool;
    /// The current hold changed (for synchronous getters such as `is_held()`).
    fn publish(&mut self, fence: Option<Fence>);
    /// Merges the lock's view of the members' health with the one shared by the locks of the
    /// same cluster handle: `lock.sync_members(&mut shared)` (under the adapter's mutex). The
    /// driver calls it before and after every input.
    fn sync_members(&mut self, lock: &mut Lock);
}

/// A request from the public API to the driver.
#[derive(Debug)]
pub enum Command<R, S> {
    /// `lock()`; the result goes to the reply.
    Lock(R),
    /// `unlock()`.
    Unlock(R),
    /// `renew()`.
    Renew(R),
    /// `read()`: who holds the key.
    Read(R),
    /// `acquire(timeout)`: wait for the lock; a timeout too large to be a deadline
    /// (e.g. `Duration::MAX`) means no deadline.
    Acquire(Duration, R),
    /// A caller went away: its command is cancelled.
    Cancelled,
    /// The caller's auto-renew setting (`set_auto_renew`).
    AutoRenew(bool),
    /// A guard starts (`true`: before its acquire) or ends (`false`: released, dropped, or its
    /// acquire failed or was cancelled). Auto-renew runs while the caller's setting is on or
    /// any guard lives; a guard's end never switches off what the caller switched on.
    Guard(bool),
    /// `events()`: a new subscriber.
    Subscribe(S),
    /// A subscriber of [`Event::Lost`] only (starts no watch).
    SubscribeLost(S),
    /// A subscriber went away.
    Unsubscribed,
    /// `destroy()`, or every handle dropped.
    Destroy,
}

/// What the adapter's loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going; call [`Driver::timeout`] at this instant at the latest (`None`: no timer).
    Continue(Option<Instant>),
    /// The lock was destroyed and everything is settled: end the loop. Dropping the driver
    /// drops the subscribers, which ends their streams.
    Stop,
}

/// The machine plus the adapter's handles on callers, subscribers and requests.
#[derive(Debug)]
pub struct Driver<T: Runtime> {
    lock: Lock,
    in_flight: HashMap<RequestId, T::Task>,
    waiting: HashMap<OpId, T::Reply>,
    /// The waiting acquires: the only commands a caller's going away cancels (a lock, unlock
    /// or renew already asked for goes ahead, e.g. a guard's release on drop).
    cancellable: HashSet<OpId>,
    subscribers: Vec<T::Subscriber>,
    loss_subscribers: Vec<T::Subscriber>,
    published: Option<Fence>,
    /// The caller's auto-renew setting, and how many guards live.
    auto_renew: bool,
    guards: usize,
}

impl<T: Runtime> Driver<T> {
    /// Wraps a machine.
    pub fn new(lock: Lock) -> Driver<T> {
        Driver {
            auto_renew: lock.auto_renew(),
            lock,
            in_flight: HashMap::new(),
            waiting: HashMap::new(),
            cancellable: HashSet::new(),
            subscribers: Vec::new(),
            loss_subscribers: Vec::new(),
            published: None,
            guards: 0,
        }
    }

    /// The machine (for getters).
    pub fn machine(&self) -> &Lock {
        &self.lock
    }

    /// Feeds a command from the public API.
    pub fn command(
        &mut self,
        rt: &mut T,
        command: Command<T::Reply, T::Subscriber>,
        now: Instant,
    ) -> Flow {
        rt.sync_members(&mut self.lock);
        let (op, reply) = match command {
            Command::Lock(reply) => (self.lock.lock(now), reply),
            Command::Unlock(reply) => (self.lock.unlock(now), reply),
            Command::Renew(reply) => (self.lock.renew(now), reply),
            Command::Read(reply) => (self.lock.read(now), reply),
            Command::Acquire(timeout, reply) => {
                let deadline = now.checked_add(timeout);
                let op = self.lock.acquire(deadline, now);
                self.cancellable.insert(op);
                (op, reply)
            }
            Command::Cancelled => {
                let gone: Vec<OpId> = (self.waiting.iter())
                    .filter(|(op, reply)| self.cancellable.contains(op) && rt.reply_closed(reply))
                    .map(|(op, _)| *op)
                    .collect();
                for op in gone {
                    self.waiting.remove(&op);
                    self.cancellable.remove(&op);
                    self.lock.cancel(op, now);
                }
                return self.flush(rt);
            }
            Command::AutoRenew(on) => {
                self.auto_renew = on;
                self.lock
                    .set_auto_renew(self.auto_renew || self.guards > 0, now);
                return self.flush(rt);
            }
            Command::Guard(starts) => {
                self.guards = if starts {
                    self.guards + 1
                } else {
                    self.guards.saturating_sub(1)
                };
                self.lock
                    .set_auto_renew(self.auto_renew || self.guards > 0, now);
                return self.flush(rt);
            }
            Command::SubscribeLost(subscriber) => {
                self.loss_subscribers.push(subscriber);
                return self.flush(rt);
            }
            Command::Subscribe(subscriber) => {
                // Joining a watch already in sync: learn the current holder first.
                let joined = match self.lock.current_state_event() {
                    Some(event) => rt.deliver(&subscriber, &event),
                    None => true,
                };
                if joined {
                    self.subscribers.push(subscriber);
                }
                self.lock.set_watching(!self.subscribers.is_empty(), now);
                return self.flush(rt);
            }
            Command::Unsubscribed => {
                self.subscribers.retain(|s| !rt.is_closed(s));
                self.loss_subscribers.retain(|s| !rt.is_closed(s));
                self.lock.set_watching(!self.subscribers.is_empty(), now);
                return self.flush(rt);
            }
            Command::Destroy => {
                self.lock.destroy(now);
                return self.flush(rt);
            }
        };
        self.waiting.insert(op, reply);
        self.flush(rt)
    }

    /// Feeds the outcome of a request started by [`Runtime::start`]: the response with its
    /// whole body (at most [`MAX_RESPONSE_BYTES`](crate::MAX_RESPONSE_BYTES) + 1 bytes), or
    /// the transport failure.
    pub fn response(
        &mut self,
        rt: &mut T,
        id: RequestId,
        outcome: Result<Response<Vec<u8>>, Failure>,
        now: Instant,
    ) -> Flow {
        if self.in_flight.remove(&id).is_some() {
            rt.sync_members(&mut self.lock);
            match outcome {
                Ok(response) => self.lock.handle_response(id, response, now),
                Err(failure) => self.fail(id, failure, now),
            }
        }
        self.flush(rt)
    }

    /// Feeds the head of the response to a streamed request started by [`Runtime::start`], as
    /// soon as it has come. The request stays in flight (abortable) until
    /// [`response_end`](Driver::response_end). Pieces of requests no longer in flight (aborted
    /// meanwhile) are ignored.
    pub fn response_head(
        &mut self,
        rt: &mut T,
        id: RequestId,
        head: http::response::Parts,
        now: Instant,
    ) -> Flow {
        if self.in_flight.contains_key(&id) {
            rt.sync_members(&mut self.lock);
            self.lock.handle_response_head(id, head, now);
        }
        self.flush(rt)
    }

    /// Feeds the next chunk of a streamed response's body, as it comes (after
    /// [`response_head`](Driver::response_head)). A body that passes
    /// [`MAX_RESPONSE_BYTES`](crate::MAX_RESPONSE_BYTES) settles the request at once and aborts
    /// it ([`Runtime::abort`]).
    pub fn response_body(&mut self, rt: &mut T, id: RequestId, chunk: &[u8], now: Instant) -> Flow {
        if self.in_flight.contains_key(&id) {
            rt.sync_members(&mut self.lock);
            self.lock.handle_response_body(id, chunk, now);
        }
        self.flush(rt)
    }

    /// Ends a streamed request: its response is complete (`Ok`), or the transport failed
    /// (before the head or after it). The request leaves the requests in flight.
    pub fn response_end(
        &mut self,
        rt: &mut T,
        id: RequestId,
        outcome: Result<(), Failure>,
        now: Instant,
    ) -> Flow {
        if self.in_flight.remove(&id).is_some() {
            rt.sync_members(&mut self.lock);
            match outcome {
                Ok(()) => self.lock.handle_response_end(id, now),
                Err(failure) => self.fail(id, failure, now),
            }
        }
        self.flush(rt)
    }

    /// Feeds a transport failure of request `id`.
    fn fail(&mut self, id: RequestId, failure: Failure, now: Instant) {
        match failure {
            Failure::Lost(reason) => self.lock.handle_transport_error(id, &reason, now),
            Failure::Connect(reason) => self.lock.handle_connect_error(id, &reason, now),
            Failure::Tls(failure, reason) => self.lock.handle_tls_error(id, failure, &reason, now),
        }
    }

    /// The timer from the last [`Flow::Continue`] fired (extra calls are harmless).
    pub fn timeout(&mut self, rt: &mut T, now: Instant) -> Flow {
        rt.sync_members(&mut self.lock);
        self.lock.handle_timeout(now);
        self.flush(rt)
    }

    /// Carries out everything the machine asked for.
    fn flush(&mut self, rt: &mut T) -> Flow {
        rt.sync_members(&mut self.lock);
        while let Some(id) = self.lock.poll_cancel() {
            if let Some(task) = self.in_flight.remove(&id) {
                rt.abort(task);
            }
        }
        while let Some((id, request)) = self.lock.poll_request() {
            let task = rt.start(id, request);
            self.in_flight.insert(id, task);
        }
        // Publish the hold before answering callers: one that resumes at once sees it.
        let fence = self.lock.fence();
        if fence != self.published {
            self.published = fence;
            rt.publish(fence);
        }
        while let Some(completion) = self.lock.poll_completion() {
            self.cancellable.remove(&completion.op);
            if let Some(reply) = self.waiting.remove(&completion.op) {
                rt.reply(reply, completion.result);
            }
        }
        while let Some(event) = self.lock.poll_event() {
            self.subscribers.retain(|s| rt.deliver(s, &event));
            if matches!(event, Event::Lost { .. }) {
                self.loss_subscribers.retain(|s| rt.deliver(s, &event));
            }
        }
        if self.lock.is_destroyed() {
            for (_, task) in self.in_flight.drain() {
                rt.abort(task);
            }
            return Flow::Stop;
        }
        Flow::Continue(self.lock.poll_timeout())
    }
}

/// A guard's view of the one hold it owns: its token, and whether (and why) it was lost.
///
/// Both adapters' `LockGuard`s keep one, so which fence is the hold's, whether it is still
/// held, and what ends it (a `Lost` event for its token, or the end of the loss stream: the
/// client was destroyed) are decided here once.
///
/// ```
/// use std::time::Instant;
/// use microlock_proto::driver::Hold;
/// use microlock_proto::{Event, Lock, LostReason};
///
/// /// What a guard asks, for the hold it took with `lock`'s current fence.
/// fn guard_view(lock: &Lock, now: Instant) -> Option<LostReason> {
///     let mut hold = Hold::new(lock.fence()?);
///     assert!(hold.is_held(lock.fence(), now) || !lock.is_held(now));
///     // Another hold's loss is not this one's; the end of the loss stream is.
///     let other = Event::Lost { token: hold.token() + 1, reason: LostReason::Expired };
///     assert_eq!(hold.observe(Some(&other)), None);
///     hold.observe(None) // Some(LostReason::Destroyed)
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    fence: Fence,
    lost: Option<LostReason>,
}

impl Hold {
    /// The hold taken with `fence`.
    pub fn new(fence: Fence) -> Hold {
        Hold { fence, lost: None }
    }

    /// Its fencing token (renewals keep it).
    pub fn token(&self) -> u64 {
        self.fence.token()
    }

    /// Its current fence, given the lock's (`current`): that one while it is still this hold
    /// (renewals move its deadline), else the fence it was taken with.
    pub fn fence(&self, current: Option<Fence>) -> Fence {
        current
            .filter(|f| f.token() == self.token())
            .unwrap_or(self.fence)
    }

    /// Whether it is still held at `now`: not lost, and the lock's current fence is this
    /// hold's with its validity deadline ahead.
    pub fn is_held(&self, current: Option<Fence>, now: Instant) -> bool {
        self.lost.is_none() && current.is_some_and(|f| f.is_valid(self.token(), now))
    }

    /// Why it was lost, once it was.
    pub fn lost(&self) -> Option<LostReason> {
        self.lost
    }

    /// Feeds the next item of the guard's loss stream (`None`: the stream ended, because the
    /// client was destroyed). Returns why the hold was lost, once it is.
    pub fn observe(&mut self, event: Option<&Event>) -> Option<LostReason> {
        if self.lost.is_none() {
            self.lost = match event {
                Some(event) => event.ends_hold(self.token()),
                None => Some(LostReason::Destroyed),
            };
        }
        self.lost
    }
}
