//! The lock state machine.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use http::{Request, Response};

use crate::config::Config;
use crate::event::{Completion, Event, Fence, OpId, Outcome};
use crate::wire::{self, code, Reply};
use crate::Error;

/// Identifies one HTTP request from [`Lock::poll_request`] to the matching
/// `handle_response` / `handle_transport_error`, or to [`Lock::poll_cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Lock,
    Unlock,
    Renew,
}

impl OpKind {
    fn name(self) -> &'static str {
        match self {
            OpKind::Lock => "lock",
            OpKind::Unlock => "unlock",
            OpKind::Renew => "renew",
        }
    }
}

/// The command whose request is in flight.
#[derive(Debug)]
struct Running {
    op: OpId,
    kind: OpKind,
    request: RequestId,
    sent_at: Instant,
    deadline: Instant,
}

/// What the watch last learned about the key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Unknown,
    Free,
    Held { holder: String, token: u64 },
}

#[derive(Debug)]
enum WatchPhase {
    /// Not watching.
    Idle,
    /// A quorum GET to learn the key's state and the index to watch from.
    Reading {
        request: RequestId,
        deadline: Instant,
    },
    /// A long poll for the first event at `index` or later.
    Waiting { request: RequestId, index: u64 },
    /// Waiting `until` before trying again after a failure.
    Backoff { until: Instant, resume: Resume },
}

#[derive(Debug, Clone, Copy)]
enum Resume {
    Read,
    Watch(u64),
}

#[derive(Debug)]
struct Watch {
    wanted: bool,
    phase: WatchPhase,
    seen: Seen,
    retry_delay: Duration,
}

/// One lock: a sans-IO state machine for one key and one node id.
///
/// It never performs I/O, never reads a clock and never spawns anything. The caller (an
/// adapter, a simulator, a test) feeds it time and responses and carries out what it asks:
///
/// - **commands**: [`lock`](Lock::lock), [`unlock`](Lock::unlock), [`renew`](Lock::renew),
///   [`set_watching`](Lock::set_watching), [`destroy`](Lock::destroy);
/// - **inputs**: [`handle_response`](Lock::handle_response),
///   [`handle_transport_error`](Lock::handle_transport_error),
///   [`handle_timeout`](Lock::handle_timeout);
/// - **outputs**, drained after every command or input: [`poll_request`](Lock::poll_request),
///   [`poll_cancel`](Lock::poll_cancel), [`poll_completion`](Lock::poll_completion),
///   [`poll_event`](Lock::poll_event), and [`poll_timeout`](Lock::poll_timeout) for when to call
///   `handle_timeout` next.
///
/// Commands run one at a time in the order issued; each gets exactly one [`Completion`].
/// Request deadlines are the machine's own timers. Time must not go backwards (an earlier
/// `now` is treated as the latest seen); extra `handle_timeout` calls are harmless.
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
    config: Config,
    now: Option<Instant>,
    endpoint: usize,
    next_request: u64,
    next_op: u64,
    queue: VecDeque<(OpId, OpKind)>,
    running: Option<Running>,
    held: Option<Fence>,
    watch: Watch,
    destroyed: bool,
    requests: VecDeque<(RequestId, Request<Vec<u8>>)>,
    cancels: VecDeque<RequestId>,
    completions: VecDeque<Completion>,
    events: VecDeque<Event>,
}

impl Lock {
    /// A machine for the lock `config` describes. It does nothing until commanded.
    pub fn new(config: Config) -> Lock {
        let (retry_min, _) = config.watch_retry();
        Lock {
            config,
            now: None,
            endpoint: 0,
            next_request: 0,
            next_op: 0,
            queue: VecDeque::new(),
            running: None,
            held: None,
            watch: Watch {
                wanted: false,
                phase: WatchPhase::Idle,
                seen: Seen::Unknown,
                retry_delay: retry_min,
            },
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

    /// The proof of the last successful lock or renew, while this node believes it holds the
    /// lock (cleared by unlock, by etcd saying the lock is not ours, or by the watch seeing the
    /// key released or taken by someone else). Check [`Fence::valid_until`] or
    /// [`is_held`](Lock::is_held) before trusting it.
    pub fn fence(&self) -> Option<Fence> {
        self.held
    }

    /// Whether this node holds the lock at `now`: it has a fence whose local validity deadline
    /// is still ahead.
    pub fn is_held(&self, now: Instant) -> bool {
        self.held.is_some_and(|f| now < f.valid_until)
    }

    /// The holder the watch last saw (`None` when free or unknown). Only maintained while
    /// watching.
    pub fn observed_holder(&self) -> Option<&str> {
        match &self.watch.seen {
            Seen::Held { holder, .. } => Some(holder),
            _ => None,
        }
    }

    /// What a new subscriber should be told first: `Locked` by the current holder when the
    /// watch is in sync and the key is held. (Subscribers present when the watch starts get
    /// the same event from [`poll_event`](Lock::poll_event).)
    pub fn current_state_event(&self) -> Option<Event> {
        match &self.watch.seen {
            Seen::Held { holder, token } if self.watch.wanted => Some(Event::Locked {
                holder: holder.clone(),
                token: *token,
            }),
            _ => None,
        }
    }

    /// Whether a watch is wanted ([`set_watching`](Lock::set_watching)).
    pub fn is_watching(&self) -> bool {
        self.watch.wanted
    }

    /// Whether [`destroy`](Lock::destroy) was called.
    pub fn is_destroyed(&self) -> bool {
        self.destroyed
    }

    /// Whether a command is running or queued.
    pub fn is_busy(&self) -> bool {
        self.running.is_some() || !self.queue.is_empty()
    }

    // ----- commands ------------------------------------------------------------------------

    /// Tries to take the lock (etcd create-if-absent). Completes with
    /// [`Outcome::Locked`] or [`Error::AlreadyLocked`] (also when this node already holds
    /// it, as in microlock for Node.js).
    pub fn lock(&mut self, now: Instant) -> OpId {
        self.command(OpKind::Lock, now)
    }

    /// Releases the lock if this node holds it. Completes with [`Outcome::Unlocked`] or
    /// [`Error::LockNotOwned`].
    pub fn unlock(&mut self, now: Instant) -> OpId {
        self.command(OpKind::Unlock, now)
    }

    /// Extends the lease by the TTL if this node holds it. Completes with
    /// [`Outcome::Renewed`] or [`Error::LockNotOwned`].
    pub fn renew(&mut self, now: Instant) -> OpId {
        self.command(OpKind::Renew, now)
    }

    /// Starts or stops watching the key for [`Event`]s. While not watching, the machine holds
    /// no long poll.
    pub fn set_watching(&mut self, watching: bool, now: Instant) {
        let now = self.tick(now);
        if self.destroyed || watching == self.watch.wanted {
            return;
        }
        self.watch.wanted = watching;
        if watching {
            self.watch.retry_delay = self.config.watch_retry().0;
            self.start_read(now);
        } else {
            self.stop_watch();
        }
    }

    /// Stops everything: in-flight requests are cancelled, every pending command completes
    /// with [`Error::Destroyed`], the watch ends, and later commands complete with
    /// [`Error::Destroyed`] at once. The lock key itself is left as it is in etcd (it expires
    /// with its TTL); call [`unlock`](Lock::unlock) first to release it.
    pub fn destroy(&mut self, now: Instant) {
        self.tick(now);
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        self.stop_watch();
        self.watch.wanted = false;
        if let Some(running) = self.running.take() {
            self.cancels.push_back(running.request);
            self.complete(running.op, Err(Error::Destroyed));
        }
        while let Some((op, _)) = self.queue.pop_front() {
            self.complete(op, Err(Error::Destroyed));
        }
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Feeds the response to request `id`, with its whole body (an adapter reads at most
    /// [`MAX_RESPONSE_BYTES`](crate::MAX_RESPONSE_BYTES) + 1 bytes). Responses to requests the
    /// machine no longer waits for (cancelled, timed out) are ignored.
    pub fn handle_response(&mut self, id: RequestId, response: Response<Vec<u8>>, now: Instant) {
        let now = self.tick(now);
        let reply = wire::parse(&response);
        self.handle_reply(id, reply, now);
    }

    /// Reports that request `id` failed before a complete response arrived (connection
    /// refused or reset, body cut short...). `reason` is kept in [`Error::Transport`].
    pub fn handle_transport_error(&mut self, id: RequestId, reason: &str, now: Instant) {
        let now = self.tick(now);
        if self.is_current(id) {
            // The member may be down: the next request goes to the next endpoint.
            self.endpoint = (self.endpoint + 1) % self.config.endpoints().len();
        }
        self.handle_reply(
            id,
            Err(Error::Transport {
                reason: reason.to_owned(),
            }),
            now,
        );
    }

    /// Runs the timers due at `now`: request deadlines and watch retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        if let Some(running) = &self.running {
            if running.deadline <= now {
                let request = running.request;
                self.cancels.push_back(request);
                self.endpoint = (self.endpoint + 1) % self.config.endpoints().len();
                let after = self.config.request_timeout();
                self.finish_op(Err(Error::Timeout { after }), now);
            }
        }
        match self.watch.phase {
            WatchPhase::Reading { request, deadline } if deadline <= now => {
                self.cancels.push_back(request);
                self.endpoint = (self.endpoint + 1) % self.config.endpoints().len();
                self.watch_backoff(Resume::Read, now);
            }
            WatchPhase::Backoff { until, resume } if until <= now => match resume {
                Resume::Read => self.start_read(now),
                Resume::Watch(index) => self.start_watch(index),
            },
            _ => {}
        }
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next HTTP request to send. The adapter sends it to the URI's host as it is, reads
    /// the whole response, and reports back with the same id.
    pub fn poll_request(&mut self) -> Option<(RequestId, Request<Vec<u8>>)> {
        self.requests.pop_front()
    }

    /// The next request to abandon (its response is no longer wanted: abort it to free the
    /// connection).
    pub fn poll_cancel(&mut self) -> Option<RequestId> {
        self.cancels.pop_front()
    }

    /// The next finished command.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// The next lock-state event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Lock::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let op = self.running.as_ref().map(|r| r.deadline);
        let watch = match self.watch.phase {
            WatchPhase::Reading { deadline, .. } => Some(deadline),
            WatchPhase::Backoff { until, .. } => Some(until),
            WatchPhase::Idle | WatchPhase::Waiting { .. } => None,
        };
        match (op, watch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- internals -----------------------------------------------------------------------

    fn tick(&mut self, now: Instant) -> Instant {
        let now = match self.now {
            Some(last) if now < last => last,
            _ => now,
        };
        self.now = Some(now);
        now
    }

    fn new_request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn is_current(&self, id: RequestId) -> bool {
        self.running.as_ref().is_some_and(|r| r.request == id)
            || matches!(self.watch.phase,
                WatchPhase::Reading { request, .. } | WatchPhase::Waiting { request, .. } if request == id)
    }

    fn command(&mut self, kind: OpKind, now: Instant) -> OpId {
        let now = self.tick(now);
        self.next_op += 1;
        let op = OpId(self.next_op);
        if self.destroyed {
            self.complete(op, Err(Error::Destroyed));
        } else {
            self.queue.push_back((op, kind));
            self.start_next_op(now);
        }
        op
    }

    fn start_next_op(&mut self, now: Instant) {
        if self.running.is_some() {
            return;
        }
        let Some((op, kind)) = self.queue.pop_front() else {
            return;
        };
        let endpoint = &self.config.endpoints()[self.endpoint];
        let request = match kind {
            OpKind::Lock => wire::lock(endpoint, &self.config),
            OpKind::Unlock => wire::unlock(endpoint, &self.config),
            OpKind::Renew => wire::renew(endpoint, &self.config),
        };
        let id = self.new_request();
        self.requests.push_back((id, request));
        self.running = Some(Running {
            op,
            kind,
            request: id,
            sent_at: now,
            deadline: now + self.config.request_timeout(),
        });
    }

    fn complete(&mut self, op: OpId, result: Result<Outcome, Error>) {
        self.completions.push_back(Completion { op, result });
    }

    fn finish_op(&mut self, result: Result<Outcome, Error>, now: Instant) {
        if let Some(running) = self.running.take() {
            self.complete(running.op, result);
        }
        self.start_next_op(now);
    }

    fn handle_reply(&mut self, id: RequestId, reply: Result<Reply, Error>, now: Instant) {
        if let Some(running) = &self.running {
            if running.request == id {
                let (kind, sent_at) = (running.kind, running.sent_at);
                let result = self.op_result(kind, sent_at, reply);
                self.finish_op(result, now);
                return;
            }
        }
        match self.watch.phase {
            WatchPhase::Reading { request, .. } if request == id => self.on_read(reply, now),
            WatchPhase::Waiting { request, index } if request == id => {
                self.on_watch(index, reply, now)
            }
            _ => {} // a stale answer to a request given up on
        }
    }

    /// What a command's answer means. The single place where etcd answers become results.
    fn op_result(
        &mut self,
        kind: OpKind,
        sent_at: Instant,
        reply: Result<Reply, Error>,
    ) -> Result<Outcome, Error> {
        let key = || self.config.key().as_str().to_owned();
        let reply = reply?;
        match (kind, reply) {
            (OpKind::Lock, Reply::Action { action, .. }) if action.action == "create" => {
                let fence = self.fence_from(kind, sent_at, action.node.as_ref())?;
                self.held = Some(fence);
                Ok(Outcome::Locked(fence))
            }
            (
                OpKind::Lock,
                Reply::Error {
                    error, etcd_index, ..
                },
            ) if error.code == code::NODE_EXIST => Err(Error::AlreadyLocked {
                key: key(),
                index: error.index.or(etcd_index).unwrap_or(0),
            }),
            (OpKind::Renew, Reply::Action { action, .. }) if action.action == "compareAndSwap" => {
                let fence = self.fence_from(kind, sent_at, action.node.as_ref())?;
                self.held = Some(fence);
                Ok(Outcome::Renewed(fence))
            }
            (OpKind::Unlock, Reply::Action { action, .. })
                if action.action == "compareAndDelete" =>
            {
                self.held = None;
                Ok(Outcome::Unlocked)
            }
            (OpKind::Unlock | OpKind::Renew, Reply::Error { error, .. })
                if error.code == code::TEST_FAILED || error.code == code::KEY_NOT_FOUND =>
            {
                self.held = None;
                Err(Error::LockNotOwned { key: key() })
            }
            (kind, reply) => Err(reply.into_error(kind.name())),
        }
    }

    /// The fence a successful lock or renew earns: the node must be ours.
    fn fence_from(
        &self,
        kind: OpKind,
        sent_at: Instant,
        node: Option<&wire::Node>,
    ) -> Result<Fence, Error> {
        let protocol = |what: &str| Error::Protocol {
            reason: format!("{} answer {what}", kind.name()),
        };
        let node = node.ok_or_else(|| protocol("has no node"))?;
        if node.value.as_deref() != Some(self.config.node_id().as_str()) {
            return Err(protocol("holds another node's value"));
        }
        let token = node
            .created_index
            .ok_or_else(|| protocol("has no createdIndex"))?;
        let lease = self.config.ttl() - self.config.safety_margin();
        Ok(Fence {
            token,
            valid_until: sent_at + lease,
        })
    }

    // ----- the watch -----------------------------------------------------------------------

    fn stop_watch(&mut self) {
        match std::mem::replace(&mut self.watch.phase, WatchPhase::Idle) {
            WatchPhase::Reading { request, .. } | WatchPhase::Waiting { request, .. } => {
                self.cancels.push_back(request)
            }
            WatchPhase::Idle | WatchPhase::Backoff { .. } => {}
        }
        self.watch.seen = Seen::Unknown;
    }

    fn start_read(&mut self, now: Instant) {
        let id = self.new_request();
        let request = wire::read(&self.config.endpoints()[self.endpoint], &self.config);
        self.requests.push_back((id, request));
        self.watch.phase = WatchPhase::Reading {
            request: id,
            deadline: now + self.config.request_timeout(),
        };
    }

    fn start_watch(&mut self, index: u64) {
        let id = self.new_request();
        let request = wire::watch(&self.config.endpoints()[self.endpoint], &self.config, index);
        self.requests.push_back((id, request));
        self.watch.phase = WatchPhase::Waiting { request: id, index };
    }

    fn watch_backoff(&mut self, resume: Resume, now: Instant) {
        let (_, max) = self.config.watch_retry();
        let delay = self.watch.retry_delay;
        self.watch.retry_delay = (delay * 2).min(max);
        self.watch.phase = WatchPhase::Backoff {
            until: now + delay,
            resume,
        };
    }

    /// The quorum GET that (re)starts a watch: learn the state and where to watch from.
    fn on_read(&mut self, reply: Result<Reply, Error>, now: Instant) {
        let learned = match reply {
            Ok(Reply::Action {
                action,
                etcd_index: Some(index),
            }) if action.action == "get" => match action.node {
                Some(node) if !node.dir => match (node.value, node.created_index) {
                    (Some(holder), Some(token)) => Some((Seen::Held { holder, token }, index)),
                    _ => None,
                },
                // A directory at the lock key: nobody holds the lock.
                Some(_) => Some((Seen::Free, index)),
                None => None,
            },
            Ok(Reply::Error {
                error, etcd_index, ..
            }) if error.code == code::KEY_NOT_FOUND => {
                error.index.or(etcd_index).map(|index| (Seen::Free, index))
            }
            _ => None,
        };
        let Some((seen, index)) = learned else {
            self.watch_backoff(Resume::Read, now);
            return;
        };
        self.watch.retry_delay = self.config.watch_retry().0;
        // After a resync, report what changed while we were not looking.
        let before = std::mem::replace(&mut self.watch.seen, seen.clone());
        match (before, seen) {
            // A new watch: a subscriber learns the current holder first.
            (Seen::Unknown, Seen::Held { holder, token }) => {
                self.observe(Event::Locked { holder, token }, token)
            }
            (Seen::Unknown, _) => {}
            (a, b) if a == b => {}
            (before, after) => {
                if let Seen::Held { holder, token } = before {
                    self.observe(
                        Event::Unlocked {
                            previous_holder: Some(holder),
                            expired: false,
                        },
                        token,
                    );
                }
                if let Seen::Held { holder, token } = after {
                    self.observe(Event::Locked { holder, token }, token);
                }
            }
        }
        self.start_watch(index + 1);
    }

    /// The answer to a long poll: one event, an empty close, or an error.
    fn on_watch(&mut self, index: u64, reply: Result<Reply, Error>, now: Instant) {
        match reply {
            Ok(Reply::Action { action, .. }) => {
                let Some(node) = action.node else {
                    return self.watch_backoff(Resume::Read, now);
                };
                let Some(modified) = node.modified_index else {
                    return self.watch_backoff(Resume::Read, now);
                };
                match action.action.as_str() {
                    "create" | "set" | "update" | "compareAndSwap" => {
                        let (Some(holder), Some(token)) = (node.value, node.created_index) else {
                            return self.watch_backoff(Resume::Read, now);
                        };
                        self.watch.seen = Seen::Held {
                            holder: holder.clone(),
                            token,
                        };
                        self.observe(Event::Locked { holder, token }, modified);
                    }
                    "delete" | "compareAndDelete" | "expire" => {
                        self.watch.seen = Seen::Free;
                        let previous_holder = action.prev_node.and_then(|n| n.value);
                        let expired = action.action == "expire";
                        self.observe(
                            Event::Unlocked {
                                previous_holder,
                                expired,
                            },
                            modified,
                        );
                    }
                    // Anything else (e.g. a directory operation) says nothing about the lock.
                    _ => {}
                }
                self.watch.retry_delay = self.config.watch_retry().0;
                self.start_watch(modified.max(index) + 1);
            }
            // The member ended the long poll without an event: ask again from the same index.
            Ok(Reply::Empty) => self.watch_backoff(Resume::Watch(index), now),
            Ok(Reply::Error { error, .. }) if error.code == code::EVENT_INDEX_CLEARED => {
                self.start_read(now)
            }
            Err(Error::Transport { .. }) => self.watch_backoff(Resume::Watch(index), now),
            Ok(Reply::Error { .. }) | Err(_) => self.watch_backoff(Resume::Read, now),
        }
    }

    /// Emits `event` (which happened at etcd index `at`) and drops our claim when it shows
    /// that someone else took the key, or that it was released, after we acquired it.
    fn observe(&mut self, event: Event, at: u64) {
        if let Some(fence) = self.held {
            let lost = match &event {
                Event::Locked { token, .. } => *token != fence.token && *token > fence.token,
                Event::Unlocked { .. } => at > fence.token,
            };
            if lost {
                self.held = None;
            }
        }
        self.events.push_back(event);
    }
}
