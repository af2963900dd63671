//! The lock state machine: its public surface, input dispatch and timers.
//!
//! What a command does lives in [`op`](crate::op); the event watch in
//! [`watch`](crate::watch).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use http::{Request, Response};

use crate::config::{Config, Endpoint};
use crate::event::{Completion, Event, Fence, LostReason, OpId, Outcome};
use crate::incoming::{Incoming, Pushed, MAX_BUFFERED};
use crate::members::Members;
use crate::observe::{self, Outcome as Seen};
use crate::op::{Kind, Lease, Queued, Removal, Running, Ticket};
use crate::rng::Rng;
use crate::watch::Watch;
use crate::wire::{self, Reply};
use crate::{Error, Protocol, TlsFailure};

/// Identifies one HTTP request from [`Lock::poll_request`] to the matching
/// `handle_response` (or `handle_response_head`, `_body`, `_end`) / `handle_transport_error`,
/// or to [`Lock::poll_cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl RequestId {
    /// The id's number (ids count up from 1 in each machine).
    pub fn as_raw(self) -> u64 {
        self.0
    }

    /// An id from its number, for simulators and tests that replay requests.
    pub fn from_raw(raw: u64) -> RequestId {
        RequestId(raw)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// At most this many rounds of timers in one [`Lock::handle_timeout`] (a chain of timers made
/// due by handling one another is at most a few long; a bound keeps a bug from looping).
const MAX_TIMER_ROUNDS: usize = 8;

/// This node's hold of the lock, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub fence: Fence,
    /// The key's `modifiedIndex` after our last successful write (tells a renew that went
    /// through from one that did not, when its answer is lost).
    pub modified: u64,
    /// When the write that earned `fence` was sent.
    pub sent_at: Instant,
}

/// One lock: a sans-IO state machine for one key and one node id.
///
/// It never performs I/O, never reads a clock and never spawns anything. The caller (an
/// adapter, a simulator, a test) feeds it time and responses and carries out what it asks:
///
/// - **commands**: [`lock`](Lock::lock), [`acquire`](Lock::acquire), [`unlock`](Lock::unlock),
///   [`renew`](Lock::renew), [`cancel`](Lock::cancel), [`set_auto_renew`](Lock::set_auto_renew),
///   [`set_watching`](Lock::set_watching), [`destroy`](Lock::destroy);
/// - **inputs**: [`handle_response`](Lock::handle_response) (or, for a response taken in
///   pieces as they arrive, [`handle_response_head`](Lock::handle_response_head),
///   [`handle_response_body`](Lock::handle_response_body) and
///   [`handle_response_end`](Lock::handle_response_end)),
///   [`handle_transport_error`](Lock::handle_transport_error),
///   [`handle_timeout`](Lock::handle_timeout);
/// - **outputs**, drained after every command or input: [`poll_request`](Lock::poll_request),
///   [`poll_cancel`](Lock::poll_cancel), [`poll_completion`](Lock::poll_completion),
///   [`poll_event`](Lock::poll_event), and [`poll_timeout`](Lock::poll_timeout) for when to call
///   `handle_timeout` next.
///
/// Commands run one at a time in the order issued (auto-renewals go first); each gets
/// exactly one [`Completion`]. Request deadlines, retries and the validity deadline are the
/// machine's own timers. Time must not go backwards (an earlier `now` is treated as the latest
/// seen); extra `handle_timeout` calls are harmless.
///
/// When a write's answer is lost (transport failure, timeout, HTTP 5xx, garbage), the machine
/// does not guess: it reads the key back (a quorum GET) and answers from what etcd holds.
///
/// ```
/// use std::time::{Duration, Instant};
/// use microlock_proto::{Config, Lock, Outcome};
///
/// // Time is always an argument: the caller owns the clock (an adapter passes its
/// // runtime's time, a simulator its virtual time).
/// fn drive(now: Instant) -> Result<(), Box<dyn std::error::Error>> {
/// let mut lock = Lock::new(Config::new("foo", "node-1", Duration::from_secs(5))?);
/// let op = lock.lock(now);
/// let (id, request) = lock.poll_request().expect("a PUT to send");
/// assert_eq!(request.uri(), "http://127.0.0.1:2379/v2/keys/foo?prevExist=false");
///
/// // etcd's answer, as an adapter would hand it over:
/// let body = br#"{"action":"create","node":{"key":"/foo","value":"node-1","ttl":5,"modifiedIndex":7,"createdIndex":7}}"#;
/// let response = http::Response::builder().status(201).header("X-Etcd-Index", "7").body(body.to_vec())?;
/// lock.handle_response(id, response, now);
///
/// let done = lock.poll_completion().expect("the lock completed");
/// assert_eq!(done.op, op);
/// let Ok(Outcome::Locked(fence)) = done.result else { panic!() };
/// assert_eq!(fence.token(), 7);
/// assert!(lock.is_held(now));
/// # Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Lock {
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    now: Option<Instant>,
    /// Which member each request goes to, and their health.
    pub(crate) members: Members,
    /// The member of each request in flight, and when it was sent.
    in_flight: BTreeMap<RequestId, (usize, Option<Instant>)>,
    /// The responses of requests in flight being received in pieces (head come, end not).
    incoming: Incoming,
    /// The span of this lock's events (key, node id).
    span: tracing::Span,
    /// Member discovery's request in flight, and its deadline.
    discovery: Option<(RequestId, Instant)>,
    next_request: u64,
    next_op: u64,
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) running: Option<Running>,
    pub(crate) held: Option<Held>,
    pub(crate) auto_renew: bool,
    /// When auto-renew next refreshes the lease (while held).
    pub(crate) renew_at: Option<Instant>,
    pub(crate) watch: Watch,
    /// This lock's place in the fair acquire queue, if it has one.
    pub(crate) ticket: Option<Ticket>,
    /// Queue entries of ours being removed in the background.
    pub(crate) removals: Vec<Removal>,
    /// etcd refused this lock's queue (a permission covering the key, not its directory):
    /// its acquires wait unqueued.
    pub(crate) queue_refused: bool,
    /// An unlock that released the key and waits for its queue hand-off to be answered.
    pub(crate) deferred_unlock: Option<(OpId, Result<Outcome, Error>)>,
    /// The highest etcd index any answer has shown (0: none yet).
    pub(crate) seen_index: u64,
    /// The earliest create (lock/acquire write) whose outcome was never settled — its send
    /// time and the highest index seen before it. A key of ours found later may be its doing.
    pub(crate) unsettled_create: Option<(Instant, Option<u64>)>,
    /// v3: the lease this lock's keys live under, and its keep-alive while an acquire waits.
    pub(crate) lease: Option<Lease>,
    pub(crate) v3_keepalive: Option<crate::op::KeepAlive>,
    /// v3: requests waiting for an authentication token, and those that may be sent again
    /// with a new one.
    pub(crate) tokens: crate::token::Tokens,
    /// v3: the revocations in flight, each until its deadline: a lease given up (an unlock
    /// that failed or was cancelled: its key may still hold the lock) and the lease's on
    /// `destroy()` (its keys go with it). One per lease; a few at most.
    pub(crate) v3_revoking: Vec<(RequestId, Instant)>,
    /// v3: the watches in flight (their responses are streams of messages), and the message
    /// stream of each whose head said 200.
    v3_watches: std::collections::BTreeSet<RequestId>,
    v3_streams: BTreeMap<RequestId, wire::v3::WatchStream>,
    destroyed: bool,
    requests: VecDeque<(RequestId, Request<Vec<u8>>)>,
    cancels: VecDeque<RequestId>,
    completions: VecDeque<Completion>,
    events: VecDeque<Event>,
}

impl Lock {
    /// A machine for the lock `config` describes. It does nothing until commanded.
    pub fn new(config: Config) -> Lock {
        Lock {
            rng: Rng::new(config.seed()),
            auto_renew: config.auto_renew(),
            watch: Watch::new(&config),
            ticket: None,
            removals: Vec::new(),
            queue_refused: false,
            deferred_unlock: None,
            members: Members::new(config.endpoints().to_vec()),
            in_flight: BTreeMap::new(),
            incoming: Incoming::default(),
            discovery: None,
            span: tracing::info_span!(
                "microlock",
                key = %config.key(),
                node_id = %config.node_id()
            ),
            config,
            now: None,
            next_request: 0,
            next_op: 0,
            queue: VecDeque::new(),
            running: None,
            held: None,
            renew_at: None,
            seen_index: 0,
            unsettled_create: None,
            lease: None,
            v3_keepalive: None,
            tokens: Default::default(),
            v3_revoking: Vec::new(),
            v3_watches: Default::default(),
            v3_streams: BTreeMap::new(),
            destroyed: false,
            requests: VecDeque::new(),
            cancels: VecDeque::new(),
            completions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ----- getters -------------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The proof of the current hold, while this node believes it holds the lock. It is
    /// cleared by unlock (when sent), by [`Event::Lost`], and never outlives its
    /// [`valid_until`](Fence::valid_until) past a `handle_timeout` at that instant.
    pub fn fence(&self) -> Option<Fence> {
        self.held.map(|h| h.fence)
    }

    /// Whether this node holds the lock at `now`: it has a fence whose local validity deadline
    /// is still ahead.
    pub fn is_held(&self, now: Instant) -> bool {
        self.held.is_some_and(|h| now < h.fence.valid_until)
    }

    /// The etcd members and what this machine knows of their health (see
    /// [`sync_members`](Lock::sync_members)).
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The `tracing` span of this lock's events (named `microlock`, with its `key` and
    /// `node_id`): an adapter enters it around its driver, so that a subscriber can filter one
    /// lock. See [`observe`](crate::observe).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Whether auto-renew is on.
    pub fn auto_renew(&self) -> bool {
        self.auto_renew
    }

    /// The holder the watch last saw (`None` when free or unknown). Only maintained while
    /// watching.
    pub fn observed_holder(&self) -> Option<&str> {
        self.watch.observed_holder()
    }

    /// What a new subscriber should be told first: `Locked` by the current holder when the
    /// watch is in sync and the key is held. (Subscribers present when the watch starts get
    /// the same event from [`poll_event`](Lock::poll_event).)
    pub fn current_state_event(&self) -> Option<Event> {
        self.watch.current_state_event()
    }

    /// Whether a watch is wanted ([`set_watching`](Lock::set_watching)).
    pub fn is_watching(&self) -> bool {
        self.watch.wanted
    }

    /// Whether [`destroy`](Lock::destroy) was called.
    pub fn is_destroyed(&self) -> bool {
        self.destroyed && self.v3_revoking.is_empty()
    }

    /// Whether a command is running or queued.
    pub fn is_busy(&self) -> bool {
        self.running.is_some() || !self.queue.is_empty()
    }

    /// Whether a request is in flight or a timer is armed: a machine with work to do that is
    /// neither is stalled (a simulator checks this).
    pub fn has_pending_io(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.request().is_some())
            || self.watch.request().is_some()
            || self.poll_timeout().is_some()
    }

    // ----- commands ------------------------------------------------------------------------

    /// Tries once to take the lock (etcd create-if-absent). Completes with
    /// [`Outcome::Locked`] or [`Error::AlreadyLocked`] (also when this node already holds
    /// it, as in microlock for Node.js).
    pub fn lock(&mut self, now: Instant) -> OpId {
        self.command(Kind::Lock, false, now)
    }

    /// Takes the lock, waiting for it to be released if it is held: it watches the key for
    /// its release (delete or expiry) and tries again after a small seeded jitter, without
    /// polling. Completes with [`Outcome::Acquired`], or [`Error::WaitTimeout`] once
    /// `deadline` (if any) has passed with no attempt in flight, or [`Error::AlreadyLocked`]
    /// at once if this machine already holds the lock. An attempt in flight at the deadline
    /// is allowed to finish.
    pub fn acquire(&mut self, deadline: Option<Instant>, now: Instant) -> OpId {
        let now = self.tick(now);
        self.command(
            Kind::Acquire {
                deadline,
                started: now,
            },
            false,
            now,
        )
    }

    /// Releases the lock if this node holds it. This node stops claiming the lock as soon as
    /// the request is sent. Completes with [`Outcome::Unlocked`] or [`Error::LockNotOwned`].
    pub fn unlock(&mut self, now: Instant) -> OpId {
        self.command(
            Kind::Unlock {
                token: None,
                modified: None,
            },
            false,
            now,
        )
    }

    /// Extends the lease by the TTL if this node holds it. Completes with
    /// [`Outcome::Renewed`] or [`Error::LockNotOwned`] (which also ends the hold:
    /// [`Event::Lost`]).
    pub fn renew(&mut self, now: Instant) -> OpId {
        self.command(Kind::Renew, false, now)
    }

    /// Reads who holds the key now (a quorum read, moving from member to member like the
    /// other commands, within the same budget): [`Outcome::Read`]. Changes nothing, and does
    /// not need this node to hold anything.
    pub fn read(&mut self, now: Instant) -> OpId {
        self.command(Kind::Read, false, now)
    }

    /// Abandons command `op`: it completes with [`Error::Cancelled`] now. A waiting acquire
    /// stops waiting (its watch is cancelled). A write already sent cannot be recalled: the
    /// machine waits for its outcome in the background and, if it took the lock, releases it.
    pub fn cancel(&mut self, op: OpId, now: Instant) {
        let now = self.tick(now);
        self.cancel_op(op, now);
    }

    /// Switches auto-renew on or off.
    pub fn set_auto_renew(&mut self, on: bool, now: Instant) {
        let now = self.tick(now);
        self.auto_renew = on;
        self.schedule_renew(now, false);
    }

    /// Starts or stops watching the key for [`Event::Locked`] / [`Event::Unlocked`]. While
    /// not watching, the machine holds no long poll. ([`Event::Lost`] needs no watch.)
    pub fn set_watching(&mut self, watching: bool, now: Instant) {
        let now = self.tick(now);
        if self.destroyed || watching == self.watch.wanted {
            return;
        }
        self.watch.wanted = watching;
        if watching {
            self.watch.reset_retry(&self.config);
            self.start_read(now);
        } else {
            self.stop_watch();
        }
    }

    /// Stops everything: in-flight requests are cancelled, every pending command completes
    /// with [`Error::Destroyed`], a hold ends with [`Event::Lost`] (nothing will renew it),
    /// the watch ends, and later commands complete with
    /// [`Error::Destroyed`] at once. The lock key itself is left as it is in etcd (it expires
    /// with its TTL); call [`unlock`](Lock::unlock) first to release it.
    pub fn destroy(&mut self, now: Instant) {
        self.tick(now);
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        // Nothing is sent after this: a queue entry of ours expires with its TTL.
        self.ticket = None;
        self.removals.clear();
        if let Some((op, result)) = self.deferred_unlock.take() {
            self.complete(op, result); // the key was released
        }
        self.lose(LostReason::Destroyed);
        self.stop_watch();
        if let Some((request, _)) = self.discovery.take() {
            self.cancel_request(request);
        }
        self.watch.wanted = false;
        self.renew_at = None;
        self.auto_renew = false;
        if let Some(running) = self.running.take() {
            for request in running.requests() {
                self.cancel_request(request);
            }
            if running.caller {
                self.complete(running.op, Err(Error::Destroyed));
            }
        }
        while let Some(queued) = self.queue.pop_front() {
            if queued.caller {
                self.complete(queued.op, Err(Error::Destroyed));
            }
        }
        self.v3_stop_keepalive();
        self.v3_revoke(now);
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Feeds the response to request `id`, with its whole body (an adapter reads at most
    /// [`MAX_RESPONSE_BYTES`](crate::MAX_RESPONSE_BYTES) + 1 bytes). Responses to requests the
    /// machine no longer waits for (cancelled, timed out) are ignored.
    ///
    /// The same as [`handle_response_head`](Lock::handle_response_head), one
    /// [`handle_response_body`](Lock::handle_response_body) with the whole body and
    /// [`handle_response_end`](Lock::handle_response_end), except that it never asks to cancel
    /// the request (the response is over already).
    pub fn handle_response(&mut self, id: RequestId, response: Response<Vec<u8>>, now: Instant) {
        let now = self.tick(now);
        if !self.in_flight.contains_key(&id) {
            return; // a stale answer (a partial one of it was dropped when the request ended)
        }
        // A whole response replaces whatever pieces of it came before; it is read as its end
        // would read it, past the buffering (what a partial response would have kept of it).
        self.incoming.remove(id);
        let mut response = response;
        response.body_mut().truncate(MAX_BUFFERED);
        self.on_response(id, response, now);
    }

    /// Feeds the head (status and headers) of the response to request `id`, as soon as it has
    /// come: its body follows in [`handle_response_body`](Lock::handle_response_body) chunks,
    /// then [`handle_response_end`](Lock::handle_response_end) (or
    /// [`handle_transport_error`](Lock::handle_transport_error) if the connection fails
    /// first). What the response means is decided at its end (an etcd v2 answer is one JSON
    /// body), or as soon as its body passes
    /// [`MAX_RESPONSE_BYTES`](crate::MAX_RESPONSE_BYTES). Pieces for requests the machine no
    /// longer waits for are ignored, as is a second head.
    ///
    /// An adapter delivers in pieces the responses of requests marked
    /// [`Streamed`](crate::Streamed) (watches, whose head comes at once and whose body comes
    /// when something happens); any response may be, with the same outcome as whole.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use microlock_proto::{Config, Error, Lock};
    ///
    /// fn pieces(now: Instant) -> Result<(), Box<dyn std::error::Error>> {
    ///     let mut lock = Lock::new(Config::new("foo", "node-1", Duration::from_secs(5))?);
    ///     lock.lock(now);
    ///     let (id, _request) = lock.poll_request().unwrap();
    ///     let (head, ()) = http::Response::builder().status(412).body(())?.into_parts();
    ///     lock.handle_response_head(id, head, now);
    ///     let body = br#"{"errorCode":105,"message":"Key already exists","cause":"/foo","index":12}"#;
    ///     for chunk in body.chunks(10) {
    ///         lock.handle_response_body(id, chunk, now);
    ///     }
    ///     assert!(lock.poll_completion().is_none(), "decided at the end");
    ///     lock.handle_response_end(id, now);
    ///     let done = lock.poll_completion().unwrap();
    ///     assert!(matches!(done.result, Err(Error::AlreadyLocked { index: 12, .. })));
    ///     Ok(())
    /// }
    /// ```
    pub fn handle_response_head(
        &mut self,
        id: RequestId,
        head: http::response::Parts,
        now: Instant,
    ) {
        self.tick(now);
        if !self.in_flight.contains_key(&id) {
            return;
        }
        if self.v3_watches.contains(&id) && head.status == http::StatusCode::OK {
            // A v3 watch: one message per line, as long as it lasts.
            self.v3_streams.entry(id).or_default();
        } else {
            self.incoming.begin(id, head);
        }
    }

    /// Feeds the next chunk of the body of the response to request `id` (after
    /// [`handle_response_head`](Lock::handle_response_head)). At most
    /// [`MAX_RESPONSE_BYTES`](crate::MAX_RESPONSE_BYTES) + 1 bytes are kept per response: one
    /// whose body passes the bound is settled at once, as a whole oversized body would be
    /// ([`Error::Protocol`]), and its request is named by [`poll_cancel`](Lock::poll_cancel)
    /// so that the adapter stops reading it. Chunks for requests without a head, unknown or
    /// finished are ignored.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use microlock_proto::{Config, Lock, MAX_RESPONSE_BYTES};
    ///
    /// fn endless(now: Instant) -> Result<(), Box<dyn std::error::Error>> {
    ///     let mut lock = Lock::new(Config::new("foo", "node-1", Duration::from_secs(5))?);
    ///     lock.lock(now);
    ///     let (id, _request) = lock.poll_request().unwrap();
    ///     let (head, ()) = http::Response::builder().status(201).body(())?.into_parts();
    ///     lock.handle_response_head(id, head, now);
    ///     let chunk = [b' '; 64 * 1024];
    ///     let mut fed = 0;
    ///     while lock.poll_cancel() != Some(id) {
    ///         lock.handle_response_body(id, &chunk, now); // an endless body
    ///         fed += chunk.len();
    ///     }
    ///     assert!(fed > MAX_RESPONSE_BYTES && fed <= MAX_RESPONSE_BYTES + chunk.len());
    ///     // The write's answer is unusable (`Error::Protocol`): a quorum read settles it.
    ///     let (_, read) = lock.poll_request().unwrap();
    ///     assert_eq!(read.uri().query(), Some("quorum=true"));
    ///     Ok(())
    /// }
    /// ```
    pub fn handle_response_body(&mut self, id: RequestId, chunk: &[u8], now: Instant) {
        let now = self.tick(now);
        if let Some(stream) = self.v3_streams.get_mut(&id) {
            stream.feed(chunk);
            return self.v3_messages(id, now);
        }
        match self.incoming.push(id, chunk) {
            Pushed::Unknown | Pushed::Buffered => {}
            Pushed::Overflow => {
                // Decided now, as the whole body would be; then the adapter stops reading.
                if let Some(response) = self.incoming.finish(id) {
                    self.on_response(id, response, now);
                }
                self.cancels.push_back(id);
            }
        }
    }

    /// Reports that the response to request `id` is complete: it is read now, as
    /// [`handle_response`](Lock::handle_response) reads a whole one. Ignored for a request
    /// without a head, unknown or finished (a second end, or one after an oversized body).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use microlock_proto::{Config, Lock, Outcome};
    ///
    /// fn whole_in_pieces(now: Instant) -> Result<(), Box<dyn std::error::Error>> {
    ///     let mut lock = Lock::new(Config::new("foo", "node-1", Duration::from_secs(5))?);
    ///     lock.lock(now);
    ///     let (id, _request) = lock.poll_request().unwrap();
    ///     let (head, ()) = http::Response::builder()
    ///         .status(201)
    ///         .header("X-Etcd-Index", "7")
    ///         .body(())?
    ///         .into_parts();
    ///     lock.handle_response_head(id, head, now);
    ///     lock.handle_response_body(id, br#"{"action":"create","node":{"key":"/foo","#, now);
    ///     lock.handle_response_body(id, br#""value":"node-1","ttl":5,"#, now);
    ///     lock.handle_response_body(id, br#""modifiedIndex":7,"createdIndex":7}}"#, now);
    ///     lock.handle_response_end(id, now);
    ///     let done = lock.poll_completion().unwrap();
    ///     assert!(matches!(done.result, Ok(Outcome::Locked(f)) if f.token() == 7));
    ///     lock.handle_response_end(id, now); // ignored: over already
    ///     assert!(lock.poll_completion().is_none());
    ///     Ok(())
    /// }
    /// ```
    pub fn handle_response_end(&mut self, id: RequestId, now: Instant) {
        let now = self.tick(now);
        if let Some(mut stream) = self.v3_streams.remove(&id) {
            // A last message without its line end, then the end of the stream.
            stream.finish();
            self.v3_streams.insert(id, stream);
            self.v3_messages(id, now);
            self.v3_streams.remove(&id);
            if self.in_flight.contains_key(&id) {
                let ended = Response::new(Vec::new());
                self.dispatch_v3(id, Ok(&ended), true, now);
            }
            return;
        }
        if let Some(response) = self.incoming.finish(id) {
            self.on_response(id, response, now);
        }
    }

    /// A complete response to request `id` (its body at most one byte past the bound).
    fn on_response(&mut self, id: RequestId, response: Response<Vec<u8>>, now: Instant) {
        if self.discovery.is_some_and(|(request, _)| request == id) {
            return self.on_discovery(id, &response, now);
        }
        if crate::tls::is_plaintext_to_tls(&response) {
            // A TLS port refused plain HTTP: the request was never read.
            let endpoint = self.endpoint_of(id);
            let error = Error::Tls {
                endpoint,
                failure: TlsFailure::PlaintextToTls,
                reason: String::from_utf8_lossy(response.body()).trim().to_owned(),
            };
            return self.failed(id, error, false, now);
        }
        if self.config.protocol() == Protocol::V3 {
            return self.dispatch_v3(id, Ok(&response), true, now);
        }
        if wire::is_no_v2_api(&response) {
            let endpoint = self.endpoint_of(id);
            return self.dispatch(id, Err(Error::V2Unavailable { endpoint }), true, now);
        }
        let reply = wire::parse(&response);
        self.dispatch(id, reply, true, now);
    }

    /// Reports that request `id` failed before a complete response arrived, after it may have
    /// reached etcd (connection reset or closed after sending, body cut short...): its outcome
    /// is unknown. `reason` is kept in [`Error::Transport`]. Also after its head and part of
    /// its body ([`handle_response_head`](Lock::handle_response_head)): what came is dropped.
    pub fn handle_transport_error(&mut self, id: RequestId, reason: &str, now: Instant) {
        let now = self.tick(now);
        let error = Error::Transport {
            reason: reason.to_owned(),
        };
        self.failed(id, error, true, now);
    }

    /// Reports that request `id` provably never reached etcd: the connection was refused or
    /// could not be made in time, the name did not resolve, the TLS handshake failed. The
    /// member is skipped for a while and the request goes to the next member at once.
    /// `reason` is kept in [`Error::Transport`] if every member fails.
    pub fn handle_connect_error(&mut self, id: RequestId, reason: &str, now: Instant) {
        let now = self.tick(now);
        let error = Error::Transport {
            reason: reason.to_owned(),
        };
        self.failed(id, error, false, now);
    }

    /// Reports that request `id` never reached etcd because TLS failed: the handshake with the
    /// member failed, or the member refused the client certificate (an adapter asks
    /// `TlsConfig::classify`, with the `tls` feature). Like
    /// [`handle_connect_error`](Lock::handle_connect_error), the request goes to the next
    /// member; when every member fails, the command fails with [`Error::Tls`].
    pub fn handle_tls_error(
        &mut self,
        id: RequestId,
        failure: TlsFailure,
        reason: &str,
        now: Instant,
    ) {
        let now = self.tick(now);
        let error = Error::Tls {
            endpoint: self.endpoint_of(id),
            failure,
            reason: reason.to_owned(),
        };
        self.failed(id, error, false, now);
    }

    /// The client URL request `id` went to (empty for an unknown request).
    fn endpoint_of(&self, id: RequestId) -> String {
        self.in_flight
            .get(&id)
            .map(|&(member, _)| self.members.endpoint(member).as_str().to_owned())
            .unwrap_or_default()
    }

    /// Merges this machine's view of the members' health with `shared` (both end up with the
    /// newest of each): an adapter calls it around every input with the view shared by the
    /// locks of one cluster handle, so that a member one lock found dead is skipped by all.
    pub fn sync_members(&mut self, shared: &mut Members) {
        self.members.sync(shared);
    }

    /// Runs the timers due at `now`: request deadlines, retries, acquire deadlines,
    /// auto-renew and the validity deadline. Handling one timer can make another one due (a
    /// request deadline passing settles a command whose acquire deadline has passed too), so
    /// it runs rounds until nothing is due at `now`: afterwards `poll_timeout()` is later than
    /// `now` or `None`, and a driver needs one wake-up per instant, never two.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        // Every round clears what was due; a few rounds settle any chain of timers.
        for _ in 0..MAX_TIMER_ROUNDS {
            self.timers_once(now);
            if self.poll_timeout().map_or(true, |due| due > now) {
                break;
            }
        }
    }

    fn timers_once(&mut self, now: Instant) {
        if let Some((request, deadline)) = self.discovery {
            if deadline <= now {
                self.discovery = None;
                self.request_timed_out(request, now);
            }
        }
        if self.held.is_some_and(|h| h.fence.valid_until <= now) {
            self.lose(LostReason::Expired);
        }
        if self.renew_at.is_some_and(|at| at <= now) {
            self.renew_at = None;
            self.queue_internal(Kind::Renew, now);
        }
        self.op_timers(now);
        self.watch_timers(now);
        self.ticket_timers(now);
        self.v3_lease_timers(now);
        self.token_timers(now);
        let (due, left) = (self.v3_revoking.iter()).partition(|(_, deadline)| *deadline <= now);
        self.v3_revoking = left;
        for (request, _) in due {
            self.request_timed_out(request, now);
        }
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next HTTP request to send. The adapter sends it to the URI's host as it is, reads
    /// the whole response (or, for one marked [`Streamed`](crate::Streamed), hands it over in
    /// pieces as they arrive), and reports back with the same id.
    pub fn poll_request(&mut self) -> Option<(RequestId, Request<Vec<u8>>)> {
        self.requests.pop_front()
    }

    /// The next request to abandon (its response is no longer wanted, or its body passed the
    /// bound while arriving in pieces: abort it to free the connection, and stop reading).
    pub fn poll_cancel(&mut self) -> Option<RequestId> {
        self.cancels.pop_front()
    }

    /// The next finished command.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Lock::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.running.as_ref().and_then(Running::timer),
            self.watch.timer(),
            self.held.map(|h| h.fence.valid_until),
            self.renew_at,
            self.discovery.map(|(_, deadline)| deadline),
            self.ticket_timer(),
            self.v3_lease_timer(),
            self.v3_revoking.iter().map(|(_, deadline)| *deadline).min(),
            self.tokens.timer(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- shared internals ----------------------------------------------------------------

    fn tick(&mut self, now: Instant) -> Instant {
        let now = match self.now {
            Some(last) if now < last => last,
            _ => now,
        };
        self.now = Some(now);
        now
    }

    /// Queues the request `build` makes for `member`'s endpoint (on v3 with credentials, with
    /// the authentication token, or after getting one: [`crate::token`]).
    pub(crate) fn send(
        &mut self,
        member: usize,
        build: impl FnOnce(&Endpoint, &Config) -> Request<Vec<u8>>,
    ) -> RequestId {
        let (id, request) = self.register(member, build);
        let request = match self.now {
            Some(now) => self.authorize(id, member, request, now),
            None => Some(request), // before any input: nothing is sent then
        };
        if let Some(request) = request {
            self.requests.push_back((id, request));
        }
        id
    }

    /// Queues a request to send as it is (the only one: v3's authenticate).
    pub(crate) fn send_unauthorized(
        &mut self,
        member: usize,
        build: impl FnOnce(&Endpoint, &Config) -> Request<Vec<u8>>,
    ) -> RequestId {
        let (id, request) = self.register(member, build);
        self.requests.push_back((id, request));
        id
    }

    /// A new request for `member`, in flight from now.
    fn register(
        &mut self,
        member: usize,
        build: impl FnOnce(&Endpoint, &Config) -> Request<Vec<u8>>,
    ) -> (RequestId, Request<Vec<u8>>) {
        let request = build(self.members.endpoint(member), &self.config);
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let path = request.uri().path_and_query().map_or("", |p| p.as_str());
        let endpoint = self.members.endpoint(member).as_str();
        observe::sent(id, endpoint, request.method().as_str(), path);
        if self.config.protocol() == Protocol::V3
            && request.extensions().get::<crate::Streamed>().is_some()
        {
            self.v3_watches.insert(id);
        }
        self.in_flight.insert(id, (member, self.now));
        (id, request)
    }

    /// Queues request `id`, made earlier (it waited for an authentication token).
    pub(crate) fn push_request(&mut self, id: RequestId, request: Request<Vec<u8>>) {
        self.requests.push_back((id, request));
    }

    /// The member request `id` went (or goes) to.
    pub(crate) fn member_of(&self, id: RequestId) -> usize {
        self.in_flight.get(&id).map_or(0, |&(member, _)| member)
    }

    /// `member` failed a request at `now`: skipped for a while.
    fn member_failed(&mut self, member: usize, now: Instant) {
        let was_up = !self.members.is_down(member, now);
        self.members.failed(member, now);
        if was_up {
            let until = self.members.down_until(member).unwrap_or(now);
            observe::member_unhealthy(
                self.members.endpoint(member).as_str(),
                self.members.failures(member),
                until.saturating_duration_since(now),
            );
        }
    }

    /// `member` answered at `now`.
    fn member_answered(&mut self, member: usize, now: Instant) {
        if self.members.failures(member) > 0 {
            observe::member_healthy(self.members.endpoint(member).as_str());
        }
        self.members.succeeded(member, now);
    }

    /// The member the next request goes to.
    pub(crate) fn pick(&self, now: Instant) -> usize {
        self.members.pick(now)
    }

    /// Asks the cluster for its members, when discovery is on and due.
    pub(crate) fn discover(&mut self, now: Instant) {
        // (v3: members are the configured ones; `/v2/members` is v2's.)
        if !self.config.member_discovery()
            || self.config.protocol() == Protocol::V3
            || self.discovery.is_some()
            || !self.members.discovery_due(now)
        {
            return;
        }
        self.members.discovery_asked(now);
        let request = self.send(self.pick(now), wire::members);
        self.discovery = Some((request, now + self.config.request_timeout()));
    }

    /// The answer to member discovery: new members are added (a failed answer is not retried
    /// before the next interval).
    fn on_discovery(&mut self, id: RequestId, response: &Response<Vec<u8>>, now: Instant) {
        self.discovery = None;
        self.incoming.remove(id);
        let Some((member, _)) = self.in_flight.remove(&id) else {
            return;
        };
        let tls = self.config.endpoints().iter().any(Endpoint::is_tls);
        match wire::parse_members(response, tls) {
            Some(endpoints) => {
                self.member_answered(member, now);
                self.members.learn(endpoints);
                tracing::debug!(members = ?self.members.endpoints(), "members discovered");
            }
            None if response.status().is_server_error() => self.member_failed(member, now),
            None => {}
        }
    }

    pub(crate) fn cancel_request(&mut self, id: RequestId) {
        self.incoming.remove(id);
        self.v3_watches.remove(&id);
        self.v3_streams.remove(&id);
        if self.forget_token_request(id) {
            // It waited for a token: the adapter never saw it.
            self.in_flight.remove(&id);
            return;
        }
        if self.in_flight.remove(&id).is_some() {
            self.cancels.push_back(id);
        }
    }

    /// Request `id` got no answer in time: the member is given up on for now.
    pub(crate) fn request_timed_out(&mut self, id: RequestId, now: Instant) {
        if let Some((member, sent)) = self.in_flight.get(&id).copied() {
            let endpoint = self.members.endpoint(member).as_str();
            let took = sent.map_or(Duration::ZERO, |sent| observe::since(sent, now));
            let error = Error::Timeout { after: took };
            observe::answered(id, endpoint, Seen::Timeout, None, None, took, Some(&error));
            self.member_failed(member, now);
        }
        self.cancel_request(id);
    }

    pub(crate) fn new_op(&mut self) -> OpId {
        self.next_op += 1;
        OpId(self.next_op)
    }

    fn command(&mut self, kind: Kind, internal: bool, now: Instant) -> OpId {
        let now = self.tick(now);
        let op = self.new_op();
        if self.destroyed {
            self.complete(op, Err(Error::Destroyed));
        } else {
            self.queue.push_back(Queued {
                op,
                kind,
                caller: !internal,
            });
            self.start_next_op(now);
        }
        op
    }

    pub(crate) fn complete(&mut self, op: OpId, result: Result<Outcome, Error>) {
        self.completions.push_back(Completion { op, result });
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Request `id` got no answer (`error`; `sent`: false when it provably never reached
    /// etcd), in whichever protocol the lock speaks.
    fn failed(&mut self, id: RequestId, error: Error, sent: bool, now: Instant) {
        match self.config.protocol() {
            Protocol::V3 => self.dispatch_v3(id, Err(error), sent, now),
            _ => self.dispatch(id, Err(error), sent, now),
        }
    }

    /// Takes request `id` out of the requests in flight and tells the operator how it ended.
    /// `None`: a stale answer, to a request given up on. Else its member.
    fn arrived(
        &mut self,
        id: RequestId,
        seen: Result<(Seen, Option<u16>, Option<u64>), &Error>,
        sent: bool,
        now: Instant,
    ) -> Option<usize> {
        self.incoming.remove(id); // what came of it, if it ended in transport
        self.v3_watches.remove(&id);
        self.v3_streams.remove(&id);
        self.forget_token_request(id);
        let (member, sent_at) = self.in_flight.remove(&id)?;
        let took = sent_at.map_or(Duration::ZERO, |sent| observe::since(sent, now));
        let endpoint = self.members.endpoint(member).as_str();
        match seen {
            Ok((seen, status, index)) => {
                observe::answered(id, endpoint, seen, status, index, took, None)
            }
            Err(error) => {
                let seen = match error {
                    Error::Transport { .. } | Error::Tls { .. } if !sent => Seen::Connect,
                    Error::Transport { .. } => Seen::Transport,
                    _ => Seen::Malformed,
                };
                observe::answered(id, endpoint, seen, None, None, took, Some(error));
            }
        }
        Some(member)
    }

    /// An answer on etcd v3: the member's health, then whoever waits for it (unless etcd
    /// refused its token and it goes again with a new one).
    pub(crate) fn dispatch_v3(
        &mut self,
        id: RequestId,
        response: Result<&Response<Vec<u8>>, Error>,
        sent: bool,
        now: Instant,
    ) {
        if let Ok(response) = &response {
            if self.token_refused(id, response, now) {
                return;
            }
        }
        let seen = match &response {
            Ok(r) if r.status().is_server_error() => {
                Ok((Seen::ServerError, Some(r.status().as_u16()), None))
            }
            Ok(r) if !r.status().is_success() => {
                Ok((Seen::EtcdError, Some(r.status().as_u16()), None))
            }
            Ok(_) => Ok((Seen::Ok, None, None)),
            Err(error) => Err(error),
        };
        let Some(member) = self.arrived(id, seen, sent, now) else {
            return;
        };
        match &response {
            Ok(r) if !r.status().is_server_error() => self.member_answered(member, now),
            _ => self.member_failed(member, now),
        }
        self.route_v3(id, response, sent, now);
    }

    /// `sent`: false when the request provably never reached etcd.
    fn dispatch(&mut self, id: RequestId, reply: Result<Reply, Error>, sent: bool, now: Instant) {
        let seen = match &reply {
            Ok(r) => {
                let (seen, status) = match r {
                    Reply::Error { status, .. } if r.is_server_failure() => {
                        (Seen::ServerError, Some(*status))
                    }
                    Reply::Error { status, .. } => (Seen::EtcdError, Some(*status)),
                    _ => (Seen::Ok, None),
                };
                Ok((seen, status, Some(r.highest_index()).filter(|&i| i > 0)))
            }
            Err(error) => Err(error),
        };
        let Some(member) = self.arrived(id, seen, sent, now) else {
            return; // a stale answer to a request given up on
        };
        if self.discovery.is_some_and(|(request, _)| request == id) {
            self.discovery = None; // member discovery failed in transport
            self.member_failed(member, now);
            return;
        }
        match &reply {
            Ok(reply) => {
                self.seen_index = self.seen_index.max(reply.highest_index());
                if reply.is_server_failure() {
                    self.member_failed(member, now);
                } else {
                    self.member_answered(member, now);
                }
            }
            // It answered, and every member of a cluster is configured alike: no failover.
            Err(Error::V2Unavailable { .. }) => self.member_answered(member, now),
            Err(_) => self.member_failed(member, now),
        }
        let running = self.running.as_ref();
        let ours = running.is_some_and(|r| r.requests().any(|r| r == id));
        if let (true, Err(error @ Error::V2Unavailable { .. })) = (ours, &reply) {
            // No command can work there: it ends now, with the fix in its message.
            let requests: Vec<RequestId> = running.iter().flat_map(|r| r.requests()).collect();
            for request in requests {
                self.cancel_request(request);
            }
            return self.finish(Err(error.clone()), now);
        }
        if running.and_then(Running::request) == Some(id) {
            self.on_op_reply(reply, sent, now);
        } else if running.and_then(Running::probe) == Some(id) {
            self.on_op_probe(reply, now);
        } else if self.watch.request() == Some(id) {
            self.on_watch_reply(id, reply, now);
        } else if self.watch.probe() == Some(id) {
            self.on_watch_probe(reply, now);
        } else if self.is_ticket_request(id) {
            self.on_ticket_reply(id, reply, now);
        }
    }

    /// Delivers the complete messages of v3 watch `id` to whoever waits on it.
    fn v3_messages(&mut self, id: RequestId, now: Instant) {
        loop {
            let Some(message) = self.v3_streams.get_mut(&id).and_then(|s| s.next()) else {
                return;
            };
            let bad = message.is_err();
            if let Some(failure) = message.as_ref().ok().and_then(|m| m.cancel_failure()) {
                self.watch_refused(&failure, now);
            }
            if self.running.as_ref().and_then(Running::request) == Some(id) {
                self.on_v3_wait_message(id, message, now);
            } else if self.watch.request() == Some(id) {
                self.on_v3_events_message(id, message, now);
            } else {
                return self.cancel_request(id);
            }
            if bad {
                // An oversized or unreadable message: that stream is over.
                return self.cancel_request(id);
            }
        }
    }

    /// Ends the hold for `reason` (no-op when not holding): [`Event::Lost`].
    pub(crate) fn lose(&mut self, reason: LostReason) {
        if let Some(held) = self.held.take() {
            let now = self.now.unwrap_or(held.fence.valid_until);
            // Done with the lock: the next in the queue's line goes.
            if self.ticket.as_ref().is_some_and(|t| t.head) {
                self.drop_ticket(true, now);
            }
            let left = held.fence.valid_until.saturating_duration_since(now);
            observe::lost(held.fence.token, reason, left);
            self.renew_at = None;
            self.emit(Event::Lost {
                token: held.fence.token,
                reason,
            });
        }
    }

    /// Arms (or disarms) the auto-renew timer from the current hold: an interval after the
    /// last successful write, or soon after a failed auto-renew.
    pub(crate) fn schedule_renew(&mut self, now: Instant, failed: bool) {
        let renewing = self
            .queue
            .iter()
            .any(|q| q.kind == Kind::Renew && !q.caller)
            || self
                .running
                .as_ref()
                .is_some_and(|r| r.kind == Kind::Renew && !r.caller);
        self.renew_at = match self.held {
            Some(held) if self.auto_renew && !self.destroyed && !renewing => {
                let due = held.sent_at + self.config.renew_interval();
                let retry = now + self.config.watch_retry().0 * 4;
                Some(if failed { due.max(retry) } else { due })
            }
            _ => None,
        };
    }
}
