//! A [`Lock`] under watch: every input goes through [`Harness`], which drains every output
//! after it and checks the machine's invariants. Every target drives the machine through it,
//! so each invariant is written once.
//!
//! Checked after every step:
//! - request ids are unique and increasing; every request is well formed: one of the five
//!   documented shapes, sent to a configured endpoint, with the key's path and the node id
//!   percent-encoded so that decoding gives them back byte for byte (nothing injected);
//! - every `poll_cancel` names a request that was emitted and is still outstanding (neither
//!   answered nor cancelled before); at most two requests are outstanding (one command, one
//!   watch): nothing is forgotten without a cancel;
//! - every command completes exactly once (never an unknown op, never twice), with a result
//!   its kind can have; `Cancelled` only after `cancel`, at once; `Destroyed` only after
//!   `destroy`, at once for every pending command; `AlreadyLocked` / `LockNotOwned` never
//!   before etcd answered anything; `Timeout` carries the configured request timeout;
//! - `is_held(now)` implies `fence()`, and every fence (held or returned) has
//!   `valid_until == s + TTL - margin` for the send time `s` of a PUT the machine emitted, so
//!   `valid_until <= last write send time + TTL`; a `DELETE` ends the fence when sent and is
//!   always pinned to a hold (`prevIndex`); after
//!   `handle_timeout(now)` no fence with `valid_until <= now` remains;
//! - `Lost { token }` only for the fence held before the step, at most once; `Locked` /
//!   `Unlocked` only while watching;
//! - busy, holding or watching implies `has_pending_io()`, and an outstanding request or a timer
//!   the harness can see (no silent stall);
//! - after `handle_timeout(now)` the next timer is after `now`, or becomes so within three
//!   more calls at `now` (no hot loop);
//! - a step emits at most two requests and a bounded number of events;
//! - after `destroy`: no fence, no timer, nothing outstanding, and never another request;
//! - an answer to a request that is not outstanding (stale, duplicate, never sent) changes
//!   nothing and outputs nothing.
//!
//! [`Harness::quiesce`] then ends a run: it drives every timer and fails every request until
//! nothing is pending, and checks that every command completed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use microlock_proto::http::{header, Method, Request, Response};
use microlock_proto::{
    Completion, Config, Error, Event, Fence, Lock, LostReason, OpId, Outcome, RequestId,
    MAX_RESPONSE_BYTES,
};

/// An invariant that did not hold, described.
pub type Violation = String;
/// The result of a checked step.
pub type Checked<T = ()> = Result<T, Violation>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}
pub(crate) use ensure;

/// The reason every simulated transport failure carries.
pub const TRANSPORT_REASON: &str = "fuzz: connection reset";

/// A command as the harness issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// `lock`.
    Lock,
    /// `acquire` with this deadline.
    Acquire(Option<Instant>),
    /// `unlock`.
    Unlock,
    /// `renew`.
    Renew,
}

/// What a request is, from its method, query and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqKind {
    /// `PUT ?prevExist=false` (lock, acquire).
    Create,
    /// `PUT ?prevValue=&prevIndex=` with `refresh=true` (renew, auto-renew).
    Refresh,
    /// `DELETE ?prevValue=`, with `&prevIndex=` when pinned to a hold (unlock).
    Delete(Option<u64>),
    /// `GET ?quorum=true` (watch start, settling a lost write).
    Read,
    /// `GET ?wait=true&waitIndex=N` (watch, waiting acquire).
    Watch(u64),
}

/// A request the machine emitted and still waits for.
#[derive(Debug)]
pub struct Sent {
    /// What it is.
    pub kind: ReqKind,
    /// When it was emitted.
    pub at: Instant,
}

/// A command and what became of it.
#[derive(Debug, Clone)]
pub struct OpState {
    /// The command.
    pub cmd: Cmd,
    /// Its completion, once there.
    pub result: Option<Result<Outcome, Error>>,
    /// Whether the harness cancelled it.
    pub cancelled: bool,
}

/// What one step put out.
#[derive(Debug, Default)]
pub struct Step {
    /// New requests.
    pub requests: Vec<(RequestId, ReqKind)>,
    /// Requests the machine gave up on.
    pub cancels: Vec<RequestId>,
    /// Finished commands.
    pub completions: Vec<Completion>,
    /// Events.
    pub events: Vec<Event>,
}

impl Step {
    fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.cancels.is_empty()
            && self.completions.is_empty()
            && self.events.is_empty()
    }
}

/// The input a step was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Command,
    Cancel(OpId),
    Destroy,
    Timer,
    Answer { stale: bool },
    Other,
}

/// What the harness knew before a step.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    fence: Option<Fence>,
    timeout: Option<Instant>,
    busy: bool,
    watching: bool,
    pending_io: bool,
    holder: Option<String>,
}

/// The machine and everything the harness has seen it do.
#[derive(Debug)]
pub struct Harness {
    lock: Lock,
    config: Config,
    t0: Instant,
    /// The time the next input is given (time steps move it without telling the machine).
    clock: Instant,
    /// The latest time given to the machine: its `now`.
    seen: Instant,
    outstanding: BTreeMap<RequestId, Sent>,
    last_request: u64,
    put_times: BTreeSet<Instant>,
    ops: BTreeMap<OpId, OpState>,
    destroyed: bool,
    etcd_spoke: bool,
    steps: u64,
}

/// The most events one step may emit (`Lost`, and a resync's `Unlocked` + `Locked`).
const MAX_EVENTS_PER_STEP: usize = 3;
/// The most requests one step may emit (a command's and the watch's).
const MAX_REQUESTS_PER_STEP: usize = 2;

impl Harness {
    /// A fresh machine for `config`, with time starting at `t0`.
    pub fn new(config: Config, t0: Instant) -> Harness {
        Harness {
            lock: Lock::new(config.clone()),
            config,
            t0,
            clock: t0,
            seen: t0,
            outstanding: BTreeMap::new(),
            last_request: 0,
            put_times: BTreeSet::new(),
            ops: BTreeMap::new(),
            destroyed: false,
            etcd_spoke: false,
            steps: 0,
        }
    }

    /// The machine (getters only: inputs go through the harness).
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current time (what the next input is given).
    pub fn now(&self) -> Instant {
        self.clock
    }

    /// When time started.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// The requests the machine waits for, oldest first.
    pub fn outstanding(&self) -> Vec<(RequestId, ReqKind)> {
        self.outstanding
            .iter()
            .map(|(id, s)| (*id, s.kind))
            .collect()
    }

    /// The id of the last request emitted (0: none yet).
    pub fn last_request(&self) -> u64 {
        self.last_request
    }

    /// Every command issued so far.
    pub fn ops(&self) -> &BTreeMap<OpId, OpState> {
        &self.ops
    }

    /// Whether `destroy` was called.
    pub fn destroyed(&self) -> bool {
        self.destroyed
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            fence: self.lock.fence(),
            timeout: self.lock.poll_timeout(),
            busy: self.lock.is_busy(),
            watching: self.lock.is_watching(),
            pending_io: self.lock.has_pending_io(),
            holder: self.lock.observed_holder().map(str::to_owned),
        }
    }

    /// The time for an input now; the machine's `now` becomes at least that.
    fn pass(&mut self) -> Instant {
        self.seen = self.seen.max(self.clock);
        self.clock
    }

    // ----- commands ---------------------------------------------------------------------------

    /// Issues `cmd` at the current time.
    pub fn command(&mut self, cmd: Cmd) -> Checked<(OpId, Step)> {
        let before = self.snapshot();
        let now = self.pass();
        let op = match cmd {
            Cmd::Lock => self.lock.lock(now),
            Cmd::Acquire(deadline) => self.lock.acquire(deadline, now),
            Cmd::Unlock => self.lock.unlock(now),
            Cmd::Renew => self.lock.renew(now),
        };
        ensure!(
            !self.ops.contains_key(&op),
            "command {cmd:?} got the id {op:?} of an earlier command"
        );
        self.ops.insert(
            op,
            OpState {
                cmd,
                result: None,
                cancelled: false,
            },
        );
        let step = self.after(Input::Command, before)?;
        if self.destroyed {
            ensure!(
                matches!(self.ops[&op].result, Some(Err(Error::Destroyed))),
                "{cmd:?} after destroy did not complete with Destroyed at once"
            );
        }
        Ok((op, step))
    }

    /// Cancels `op` (which may be unknown or finished).
    pub fn cancel(&mut self, op: OpId) -> Checked<Step> {
        let before = self.snapshot();
        if let Some(state) = self.ops.get_mut(&op) {
            if state.result.is_none() {
                state.cancelled = true;
            }
        }
        let now = self.pass();
        self.lock.cancel(op, now);
        self.after(Input::Cancel(op), before)
    }

    /// Switches the watch.
    pub fn set_watching(&mut self, on: bool) -> Checked<Step> {
        let before = self.snapshot();
        let now = self.pass();
        self.lock.set_watching(on, now);
        let step = self.after(Input::Other, before)?;
        ensure!(
            self.lock.is_watching() == (on && !self.destroyed),
            "set_watching({on}) left is_watching() = {}",
            self.lock.is_watching()
        );
        Ok(step)
    }

    /// Switches auto-renew.
    pub fn set_auto_renew(&mut self, on: bool) -> Checked<Step> {
        let before = self.snapshot();
        let now = self.pass();
        self.lock.set_auto_renew(on, now);
        self.after(Input::Other, before)
    }

    /// Destroys the machine.
    pub fn destroy(&mut self) -> Checked<Step> {
        let before = self.snapshot();
        let now = self.pass();
        self.lock.destroy(now);
        let was = self.destroyed;
        self.destroyed = true;
        let step = self.after(Input::Destroy, before.clone())?;
        if !was {
            let lost = step
                .events
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Event::Lost {
                            reason: LostReason::Destroyed,
                            ..
                        }
                    )
                })
                .count();
            ensure!(
                lost == usize::from(before.fence.is_some()),
                "destroy with fence {:?} emitted {lost} Lost(Destroyed) events",
                before.fence
            );
        }
        Ok(step)
    }

    // ----- inputs -----------------------------------------------------------------------------

    /// Lets time pass without calling the timer (a slow or paused adapter).
    pub fn advance(&mut self, by: Duration) {
        self.clock += by;
    }

    /// Calls `handle_timeout(at)`; `at` may be earlier than the latest time (the machine must
    /// treat it as the latest).
    ///
    /// No timer may still be due afterwards: `handle_timeout` settles chains (one phase's end
    /// making another's deadline due) itself, so a driver wakes once per instant. A timer that
    /// stays due would be a hot loop.
    pub fn timeout_at(&mut self, at: Instant) -> Checked<Step> {
        let step = self.timer_once(at)?;
        match self.lock.poll_timeout() {
            Some(due) if due <= self.seen => Err(format!(
                "after handle_timeout at {:?} a timer is still due ({:?}): a driver would \
                 have to wake again at once",
                self.seen - self.t0,
                due.saturating_duration_since(self.t0)
            )),
            _ => Ok(step),
        }
    }

    fn timer_once(&mut self, at: Instant) -> Checked<Step> {
        let before = self.snapshot();
        self.lock.handle_timeout(at);
        self.seen = self.seen.max(at);
        self.after(Input::Timer, before)
    }

    /// Jumps to the next timer (if any) and fires it.
    pub fn fire_timer(&mut self) -> Checked<Option<Step>> {
        match self.lock.poll_timeout() {
            Some(at) => {
                self.clock = self.clock.max(at);
                self.timeout_at(self.clock).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Feeds `response` as the answer to `id` at the current time.
    pub fn respond(&mut self, id: RequestId, response: Response<Vec<u8>>) -> Checked<Step> {
        let before = self.snapshot();
        let stale = self.outstanding.remove(&id).is_none();
        if !stale
            && !matches!(
                crate::etcd::shape(&response),
                crate::etcd::Shape::Garbage(_)
            )
        {
            self.etcd_spoke = true;
        }
        let now = self.pass();
        self.lock.handle_response(id, response, now);
        self.after(Input::Answer { stale }, before)
    }

    /// Feeds `response` as the answer to `id` at the current time in pieces: its head, its body
    /// cut at `cuts` (offsets into the body, in order; empty pieces allowed), its end.
    ///
    /// Checked besides: a body passing [`MAX_RESPONSE_BYTES`] is refused as soon as the piece
    /// that passes it has been fed (the machine names the request in `poll_cancel`, so the
    /// adapter stops reading), and the rest of it and its end change nothing; otherwise the
    /// request is never named for cancel. The returned step leaves that cancel out, so that it
    /// compares with [`respond`](Harness::respond)'s.
    pub fn respond_in_pieces(
        &mut self,
        id: RequestId,
        response: Response<Vec<u8>>,
        cuts: &[usize],
    ) -> Checked<Step> {
        let before = self.snapshot();
        let stale = !self.outstanding.contains_key(&id);
        if !stale
            && !matches!(
                crate::etcd::shape(&response),
                crate::etcd::Shape::Garbage(_)
            )
        {
            self.etcd_spoke = true;
        }
        let now = self.pass();
        let (head, body) = response.into_parts();
        let mut pieces = (cuts.iter().map(|&c| c.min(body.len())))
            .chain([body.len()])
            .scan(0, |from, cut| {
                let piece = (*from, cut.max(*from));
                *from = piece.1;
                Some(piece)
            });
        self.lock.handle_response_head(id, head, now);
        let mut fed = 0;
        for (from, to) in pieces.by_ref() {
            self.lock.handle_response_body(id, &body[from..to], now);
            fed = to;
            if fed > MAX_RESPONSE_BYTES {
                break;
            }
        }
        if fed > MAX_RESPONSE_BYTES && !stale {
            // Decided at once; `after` takes the request off the outstanding ones when the
            // machine names it for cancel.
            let mut step = self.after(Input::Answer { stale: false }, before)?;
            ensure!(
                step.cancels.contains(&id) && !self.outstanding.contains_key(&id),
                "a body passing the bound ({fed} bytes fed) was not refused at once: {step:?}"
            );
            step.cancels.retain(|c| *c != id);
            // The rest of it, and its end, are pieces of a request over: no effect.
            let before = self.snapshot();
            for (from, to) in pieces {
                self.lock.handle_response_body(id, &body[from..to], now);
            }
            self.lock.handle_response_end(id, now);
            self.after(Input::Answer { stale: true }, before)?;
            return Ok(step);
        }
        for (from, to) in pieces {
            self.lock.handle_response_body(id, &body[from..to], now);
        }
        self.lock.handle_response_end(id, now);
        // Over by its end: a cancel naming it now would name a request not outstanding.
        self.outstanding.remove(&id);
        self.after(Input::Answer { stale }, before)
    }

    /// Reports request `id` failed in transport at the current time.
    pub fn fail(&mut self, id: RequestId) -> Checked<Step> {
        let before = self.snapshot();
        let stale = self.outstanding.remove(&id).is_none();
        let now = self.pass();
        self.lock.handle_transport_error(id, TRANSPORT_REASON, now);
        self.after(Input::Answer { stale }, before)
    }

    // ----- the checks -------------------------------------------------------------------------

    fn after(&mut self, input: Input, before: Snapshot) -> Checked<Step> {
        self.steps += 1;
        let mut step = Step::default();
        let now = self.seen;
        let lease = self.config.ttl() - self.config.safety_margin();

        // Requests first (a request may be emitted and cancelled in one step).
        while let Some((id, request)) = self.lock.poll_request() {
            ensure!(
                !self.destroyed,
                "request {id} emitted after destroy: {request:?}"
            );
            ensure!(
                id.as_raw() > self.last_request,
                "request id {id} is not above the last one (r{})",
                self.last_request
            );
            self.last_request = id.as_raw();
            let kind = self.classify(&request)?;
            if matches!(kind, ReqKind::Create | ReqKind::Refresh) {
                self.put_times.insert(now);
            }
            self.outstanding.insert(id, Sent { kind, at: now });
            step.requests.push((id, kind));
        }
        while let Some(id) = self.lock.poll_cancel() {
            ensure!(
                self.outstanding.remove(&id).is_some(),
                "poll_cancel named {id}, which is not outstanding (emitted up to r{}, \
                 outstanding {:?})",
                self.last_request,
                self.outstanding.keys().collect::<Vec<_>>()
            );
            step.cancels.push(id);
        }
        while let Some(done) = self.lock.poll_completion() {
            step.completions.push(done);
        }
        while let Some(event) = self.lock.poll_event() {
            step.events.push(event);
        }
        ensure!(
            step.requests.len() <= MAX_REQUESTS_PER_STEP,
            "one step emitted {} requests: {:?}",
            step.requests.len(),
            step.requests
        );
        ensure!(
            step.events.len() <= MAX_EVENTS_PER_STEP,
            "one step emitted {} events: {:?}",
            step.events.len(),
            step.events
        );
        ensure!(
            self.outstanding.len() <= 4,
            "{} requests outstanding (at most a command's and a watch's, each with its \
             member's liveness probe): {:?}",
            self.outstanding.len(),
            self.outstanding
        );

        // Completions.
        let fence_after = self.lock.fence();
        let mut held_in_step = before.fence.is_some() || fence_after.is_some();
        for done in &step.completions {
            let Some(state) = self.ops.get_mut(&done.op) else {
                return Err(format!("completion of unknown op {:?}: {done:?}", done.op));
            };
            ensure!(
                state.result.is_none(),
                "op {:?} ({:?}) completed twice: first {:?}, then {:?}",
                done.op,
                state.cmd,
                state.result,
                done.result
            );
            state.result = Some(done.result.clone());
            let (cmd, cancelled) = (state.cmd, state.cancelled);
            check_result(cmd, &done.result, self.config.request_timeout())?;
            match &done.result {
                Err(Error::Cancelled) => ensure!(
                    cancelled,
                    "op {:?} ({cmd:?}) completed Cancelled but was never cancelled",
                    done.op
                ),
                Err(Error::Destroyed) => ensure!(
                    self.destroyed,
                    "op {:?} ({cmd:?}) completed Destroyed before destroy",
                    done.op
                ),
                Err(Error::AlreadyLocked { .. } | Error::LockNotOwned { .. }) => {
                    ensure!(
                        self.etcd_spoke || held_in_step,
                        "op {:?} ({cmd:?}) completed {:?} though etcd never answered",
                        done.op,
                        done.result
                    );
                }
                Err(Error::WaitTimeout { .. }) => {
                    let Cmd::Acquire(Some(deadline)) = cmd else {
                        return Err(format!("{cmd:?} completed WaitTimeout"));
                    };
                    ensure!(
                        deadline <= now,
                        "acquire completed WaitTimeout at {:?} before its deadline {:?}",
                        now - self.t0,
                        deadline - self.t0
                    );
                }
                Ok(Outcome::Locked(f) | Outcome::Acquired(f) | Outcome::Renewed(f)) => {
                    self.check_fence(f, lease)?;
                    held_in_step = true;
                }
                _ => {}
            }
        }
        match input {
            Input::Cancel(op) => {
                if let Some(state) = self.ops.get(&op) {
                    ensure!(
                        state.result.is_some(),
                        "cancel({op:?}) of a pending {:?} did not complete it at once",
                        state.cmd
                    );
                }
            }
            Input::Destroy => {
                if let Some((op, state)) = self.ops.iter().find(|(_, s)| s.result.is_none()) {
                    return Err(format!(
                        "destroy left op {op:?} ({:?}) without a completion",
                        state.cmd
                    ));
                }
            }
            _ => {}
        }

        // Events.
        let mut lost = 0;
        for event in &step.events {
            match event {
                Event::Lost { token, reason } => {
                    lost += 1;
                    ensure!(lost == 1, "two Lost events in one step: {:?}", step.events);
                    let held = before
                        .fence
                        .map(|f| f.token())
                        .or_else(|| held_token(&step.completions));
                    ensure!(
                        held == Some(*token),
                        "Lost {{ token: {token}, {reason:?} }} but the fence before was {:?}",
                        before.fence
                    );
                    match reason {
                        LostReason::Destroyed => {
                            ensure!(input == Input::Destroy, "Lost(Destroyed) without destroy")
                        }
                        LostReason::Expired => ensure!(
                            before.fence.is_some_and(|f| f.valid_until() <= now),
                            "Lost(Expired) at {:?} before the fence's deadline ({:?})",
                            now - self.t0,
                            before.fence.map(|f| f.valid_until() - self.t0)
                        ),
                        _ => {}
                    }
                }
                Event::Locked { .. } | Event::Unlocked { .. } => {
                    ensure!(self.lock.is_watching(), "{event:?} while not watching")
                }
                other => return Err(format!("unknown event {other:?}")),
            }
        }

        // State.
        let fence = self.lock.fence();
        ensure!(
            !self.lock.is_held(now) || fence.is_some(),
            "is_held(now) without a fence"
        );
        if let Some(f) = fence {
            self.check_fence(&f, lease)?;
            ensure!(
                self.lock.is_held(now) == (now < f.valid_until()),
                "is_held(now) disagrees with the fence's valid_until"
            );
            if input == Input::Timer {
                ensure!(
                    f.valid_until() > now,
                    "after handle_timeout at {:?} the fence (valid until {:?}) is still kept",
                    now - self.t0,
                    f.valid_until() - self.t0
                );
            }
        }
        if step
            .requests
            .iter()
            .any(|(_, k)| matches!(k, ReqKind::Delete(_)))
        {
            ensure!(
                fence.is_none(),
                "an unlock was sent but the fence {fence:?} is kept"
            );
            // Never an unpinned DELETE: a delayed copy of it could remove a later hold.
            ensure!(
                !step
                    .requests
                    .iter()
                    .any(|(_, k)| matches!(k, ReqKind::Delete(None))),
                "an unlock was sent without prevIndex (fence before: {:?}): {:?}",
                before.fence,
                step.requests
            );
        }
        let timeout = self.lock.poll_timeout();
        let active = self.lock.is_busy() || fence.is_some() || self.lock.is_watching();
        if active {
            ensure!(
                self.lock.has_pending_io(),
                "stalled: busy {} / fence {:?} / watching {} without pending I/O",
                self.lock.is_busy(),
                fence,
                self.lock.is_watching()
            );
            ensure!(
                !self.outstanding.is_empty() || timeout.is_some(),
                "stalled: busy {} / fence {:?} / watching {}, has_pending_io() {}, but no \
                 request is outstanding and no timer is armed",
                self.lock.is_busy(),
                fence,
                self.lock.is_watching(),
                self.lock.has_pending_io()
            );
        }
        if let Some(Event::Locked { holder, .. }) = self.lock.current_state_event() {
            ensure!(
                self.lock.is_watching(),
                "current_state_event() while not watching"
            );
            ensure!(
                self.lock.observed_holder() == Some(holder.as_str()),
                "current_state_event() names {holder:?}, observed_holder() {:?}",
                self.lock.observed_holder()
            );
        }
        ensure!(
            self.lock.is_destroyed() == self.destroyed,
            "is_destroyed() is {}",
            self.lock.is_destroyed()
        );
        if self.destroyed {
            ensure!(
                fence.is_none()
                    && timeout.is_none()
                    && !self.lock.is_busy()
                    && !self.lock.is_watching()
                    && !self.lock.has_pending_io()
                    && self.outstanding.is_empty(),
                "destroyed but fence {fence:?}, timer {timeout:?}, busy {}, watching {}, \
                 outstanding {:?}",
                self.lock.is_busy(),
                self.lock.is_watching(),
                self.outstanding
            );
        }
        if input == (Input::Answer { stale: true }) {
            ensure!(
                step.is_empty(),
                "an answer to a request not outstanding had effects: {step:?}"
            );
            let after = self.snapshot();
            ensure!(
                after == before,
                "an answer to a request not outstanding changed the state: {before:?} -> \
                 {after:?}"
            );
        }
        Ok(step)
    }

    fn check_fence(&self, f: &Fence, lease: Duration) -> Checked {
        let sent = f.valid_until().checked_sub(lease);
        ensure!(
            sent.is_some_and(|s| self.put_times.contains(&s)),
            "fence valid until {:?} (token {}) is not a PUT's send time + TTL - margin \
             ({lease:?}); PUTs sent at {:?}",
            f.valid_until().saturating_duration_since(self.t0),
            f.token(),
            self.put_times
                .iter()
                .map(|t| t.saturating_duration_since(self.t0))
                .collect::<Vec<_>>()
        );
        Ok(())
    }

    /// Reads a request back: the method, the endpoint, the key's path, the query and the form
    /// body must be one of the five shapes, with the key and node id exactly as configured.
    fn classify(&self, request: &Request<Vec<u8>>) -> Checked<ReqKind> {
        let uri = request.uri().to_string();
        let endpoint = self
            .config
            .endpoints()
            .iter()
            .find(|e| uri.starts_with(&format!("{}/", e.as_str())));
        let Some(endpoint) = endpoint else {
            return Err(format!("request to an unknown endpoint: {uri}"));
        };
        let rest = &uri[endpoint.as_str().len()..];
        let Some((path, query)) = rest.split_once('?') else {
            return Err(format!("request without a query: {uri}"));
        };
        let Some(key_path) = path.strip_prefix("/v2/keys/") else {
            return Err(format!("request outside /v2/keys/: {uri}"));
        };
        let segments: Checked<Vec<String>> = key_path.split('/').map(decode_strict).collect();
        let key = segments?.join("/");
        ensure!(
            key == self.config.key().as_str(),
            "request path decodes to the key {key:?}, not {:?}: {uri}",
            self.config.key().as_str()
        );
        let node = self.config.node_id().as_str();
        let ttl = self.config.ttl_secs().to_string();
        let body = std::str::from_utf8(request.body())
            .map_err(|_| format!("request body is not UTF-8: {request:?}"))?;
        let form = request.headers().get(header::CONTENT_TYPE);
        let params = |s: &str| -> Checked<Vec<(String, String)>> {
            s.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    Ok((decode_strict(k)?, decode_strict(v)?))
                })
                .collect()
        };
        let query = params(query)?;
        let form_params = params(body)?;
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let is_form = form.is_some_and(|v| v == "application/x-www-form-urlencoded");
        let kind = match *request.method() {
            Method::PUT if query == pairs(&[("prevExist", "false")]) => {
                ensure!(
                    is_form && form_params == pairs(&[("value", node), ("ttl", &ttl)]),
                    "lock PUT with body {body:?} (content type {form:?})"
                );
                ReqKind::Create
            }
            Method::PUT if query.first() == pairs(&[("prevValue", node)]).first() => {
                ensure!(
                    is_form && form_params == pairs(&[("refresh", "true"), ("ttl", &ttl)]),
                    "renew PUT with body {body:?} (content type {form:?})"
                );
                // Every refresh is pinned to the hold's index (a late one must never meet a
                // later hold of the same node id).
                ensure!(
                    matches!(&query[1..], [(k, v)] if k == "prevIndex" && v.parse::<u64>().is_ok()),
                    "renew PUT not pinned to an index: {uri}"
                );
                ReqKind::Refresh
            }
            Method::DELETE if query.first() == pairs(&[("prevValue", node)]).first() => {
                match &query[1..] {
                    [] => ReqKind::Delete(None),
                    [(k, v)] if k == "prevIndex" => ReqKind::Delete(Some(
                        v.parse::<u64>()
                            .map_err(|_| format!("prevIndex is not a number: {uri}"))?,
                    )),
                    _ => return Err(format!("unexpected unlock query: {uri}")),
                }
            }
            Method::GET if query == pairs(&[("quorum", "true")]) => ReqKind::Read,
            Method::GET
                if query.len() == 2
                    && query[0] == ("wait".to_owned(), "true".to_owned())
                    && query[1].0 == "waitIndex" =>
            {
                let index = query[1]
                    .1
                    .parse::<u64>()
                    .map_err(|_| format!("waitIndex is not a number: {uri}"))?;
                ReqKind::Watch(index)
            }
            _ => return Err(format!("unexpected request {} {uri}", request.method())),
        };
        if matches!(kind, ReqKind::Delete(_) | ReqKind::Read | ReqKind::Watch(_)) {
            ensure!(
                request.body().is_empty(),
                "{kind:?} request with a body: {body:?}"
            );
        }
        Ok(kind)
    }

    /// Ends a run: stops the watch and auto-renew, cancels acquires that wait without a
    /// deadline, then fails every request and fires every timer until nothing is pending, and
    /// checks that every command completed and the machine is quiet.
    pub fn quiesce(&mut self) -> Checked {
        if !self.destroyed {
            self.set_watching(false)?;
            self.set_auto_renew(false)?;
            let waiting: Vec<OpId> = (self.ops.iter())
                .filter(|(_, s)| s.result.is_none() && s.cmd == Cmd::Acquire(None))
                .map(|(op, _)| *op)
                .collect();
            for op in waiting {
                self.cancel(op)?;
            }
        }
        for _ in 0..10_000 {
            if let Some((&id, _)) = self.outstanding.iter().next() {
                self.fail(id)?;
            } else if self.fire_timer()?.is_none() {
                break;
            }
        }
        ensure!(
            self.outstanding.is_empty() && self.lock.poll_timeout().is_none(),
            "not quiet after 10000 steps of failures and timers: outstanding {:?}, timer {:?}",
            self.outstanding,
            self.lock.poll_timeout()
        );
        ensure!(
            !self.lock.is_busy() && !self.lock.has_pending_io() && self.lock.fence().is_none(),
            "quiet but busy {} / pending I/O {} / fence {:?}",
            self.lock.is_busy(),
            self.lock.has_pending_io(),
            self.lock.fence()
        );
        if let Some((op, state)) = self.ops.iter().find(|(_, s)| s.result.is_none()) {
            return Err(format!(
                "op {op:?} ({:?}) never completed (lost)",
                state.cmd
            ));
        }
        Ok(())
    }

    /// A one-line summary for failure messages.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "t+{:?} (machine at t+{:?}), {} steps, fence {:?}, busy {}, watching {}, \
             outstanding {:?}, ops {:?}",
            self.clock - self.t0,
            self.seen - self.t0,
            self.steps,
            self.lock
                .fence()
                .map(|f| (f.token(), f.valid_until() - self.t0)),
            self.lock.is_busy(),
            self.lock.is_watching(),
            self.outstanding(),
            self.ops
        );
        s
    }
}

/// The token of a fence won in this step (when the fence before was none).
fn held_token(completions: &[Completion]) -> Option<u64> {
    completions.iter().find_map(|c| match &c.result {
        Ok(Outcome::Locked(f) | Outcome::Acquired(f) | Outcome::Renewed(f)) => Some(f.token()),
        _ => None,
    })
}

/// The results each command can have (README, Lock's documentation).
fn check_result(cmd: Cmd, result: &Result<Outcome, Error>, timeout: Duration) -> Checked {
    use Error as E;
    let ok = match (cmd, result) {
        // etcd's own refusals, typed: authentication, a TLS port refusing plain HTTP.
        (_, Err(E::Cancelled | E::Destroyed | E::Etcd { .. } | E::Auth { .. } | E::Tls { .. })) => {
            true
        }
        (_, Err(E::Timeout { after })) => {
            // A renew's attempt may be shorter (it leaves time for another member before
            // its hold expires); no attempt is longer than the request timeout.
            ensure!(
                *after == timeout || (cmd == Cmd::Renew && *after <= timeout),
                "Timeout after {after:?}, but the request timeout is {timeout:?}"
            );
            !matches!(cmd, Cmd::Acquire(_))
        }
        (_, Err(E::Transport { reason })) => {
            ensure!(
                reason == TRANSPORT_REASON,
                "Transport error with a reason nobody gave: {reason:?}"
            );
            !matches!(cmd, Cmd::Acquire(_))
        }
        (Cmd::Lock, Ok(Outcome::Locked(_)) | Err(E::AlreadyLocked { .. } | E::Protocol { .. })) => {
            true
        }
        // A grant whose answer came after the validity deadline is void.
        (Cmd::Lock | Cmd::Renew, Err(E::LeaseExpired { .. })) => true,
        (Cmd::Acquire(_), Ok(Outcome::Acquired(_)) | Err(E::AlreadyLocked { .. })) => true,
        (Cmd::Acquire(Some(_)), Err(E::WaitTimeout { .. })) => true,
        (Cmd::Unlock, Ok(Outcome::Unlocked) | Err(E::LockNotOwned { .. } | E::Protocol { .. })) => {
            true
        }
        (
            Cmd::Renew,
            Ok(Outcome::Renewed(_)) | Err(E::LockNotOwned { .. } | E::Protocol { .. }),
        ) => true,
        _ => false,
    };
    ensure!(
        ok,
        "{cmd:?} completed with {result:?}, which it cannot have"
    );
    if let Err(E::Etcd { status, .. }) = result {
        ensure!(
            (400..=599).contains(status),
            "Etcd error with HTTP status {status}"
        );
    }
    Ok(())
}

/// Percent-decodes `s`, which must contain nothing but unreserved characters and `%XX`
/// escapes (what makes injection impossible), into UTF-8.
fn decode_strict(s: &str) -> Checked<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
            i += 1;
        } else if b == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
            let v =
                u8::from_str_radix(hex, 16).map_err(|_| format!("bad percent escape in {s:?}"))?;
            out.push(v);
            i += 3;
        } else {
            return Err(format!(
                "{:?} on the wire unescaped in {s:?}",
                char::from(b)
            ));
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}
