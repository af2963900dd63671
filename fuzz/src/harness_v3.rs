//! A [`Lock`] speaking etcd v3 under watch: the v3 counterpart of [`crate::harness`]. Every
//! input goes through [`Harness3`], which drains every output after it and checks the
//! machine's invariants; it knows nothing of etcd's state (the world that answers is
//! [`crate::responses_v3`]'s), only of what the machine sent, was told and put out.
//!
//! Checked after every step:
//! - request ids are unique and increasing; every request is one of the v3 gateway calls the
//!   machine makes (`POST /v3/lease/grant|keepalive|revoke`, `/v3/kv/txn` as a take, a look
//!   ahead or a release, `/v3/kv/range` of the owner, the keys or one key, `/v3/watch`), to a
//!   configured endpoint, JSON, `Grpc-Metadata-hasleader: true`, every key under the lock's
//!   prefix `NAME/`: a take puts `NAME/<its lease in hex>` = the node id under that lease, only
//!   if absent; a release deletes one key, pinned to a create revision (> 0); watches are
//!   marked `Streamed`;
//! - every `poll_cancel` names an outstanding request; at most [`MAX_OUTSTANDING`] requests are
//!   outstanding at once (a command's, its probe, the lease's keep-alive, the watch and its
//!   probe, the revoke);
//! - every command completes exactly once, with a result its kind can have; `Cancelled` only
//!   after `cancel`; `Destroyed` only after `destroy`; `WaitTimeout` only for an acquire past
//!   its deadline; `Transport` only with a reason the harness gave; `AlreadyLocked` /
//!   `LockNotOwned` never for a command that etcd never answered while it was pending, unless
//!   the machine's own state says so (a lock or acquire while a fence was held, a renew while
//!   none was);
//! - `is_held(now)` implies `fence()`, and agrees with its `valid_until`; after
//!   `handle_timeout(now)` no fence with `valid_until <= now` is kept, and no timer is due at
//!   `now` (no hot loop);
//! - `Lost { token }` only for the fence held before the step (or won in it), at most once per
//!   step, `Expired` only past its deadline, `Destroyed` only on `destroy`; afterwards no fence
//!   with that token is kept (`is_held()` is false) unless a later command wins it again;
//!   `Locked` / `Unlocked` only while watching;
//! - fencing tokens of successive holds never decrease (checked while the world answers as
//!   etcd would: see [`Harness3::set_tampered`]);
//! - busy, holding or watching implies pending I/O the harness can see (an outstanding request
//!   or a timer);
//! - after `destroy`: every command completes `Destroyed` at once, no request but the lease's
//!   revoke (in that step), then nothing; what stays outstanding is revokes only, each of its
//!   own lease (an older lease's, sent when an unlock failed, may still be on its way);
//! - an answer (whole, a head, a chunk, an end, a failure) to a request that is not
//!   outstanding changes nothing and outputs nothing.
//!
//! Every step's outputs are also written to a trace ([`Harness3::trace`]), so that two runs of
//! one script (answers whole, answers in pieces) can be compared.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use microlock_proto::http::{header, Method, Request, Response};
use microlock_proto::{
    Completion, Config, Error, Event, Fence, Lock, LostReason, OpId, Outcome, RequestId, Streamed,
    MAX_RESPONSE_BYTES,
};
use serde_json::Value;

use crate::harness::{ensure, Checked};

/// The reason every simulated transport failure (after the request may have reached etcd)
/// carries.
pub const TRANSPORT_REASON: &str = crate::harness::TRANSPORT_REASON;
/// The reason every simulated connection failure (the request never reached etcd) carries.
pub const CONNECT_REASON: &str = "fuzz: connection refused";
/// The most requests outstanding at once.
pub const MAX_OUTSTANDING: usize = 8;

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
    /// `read`.
    Read,
}

/// What a v3 request is, read back from its path and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `/v3/lease/grant`.
    Grant,
    /// `/v3/lease/keepalive` of this lease.
    KeepAlive(i64),
    /// `/v3/lease/revoke` of this lease.
    Revoke(i64),
    /// `/v3/lease/timetolive` of a lease (a read's: the holder's).
    TimeToLive(i64),
    /// The take: `/v3/kv/txn` putting `NAME/<lease hex>` if absent, reading the owner.
    Take {
        /// The lease the key goes under.
        lease: i64,
    },
    /// The look ahead: `/v3/kv/txn` checking my key's create revision, reading the key ahead.
    Ahead {
        /// My key's create revision.
        own: i64,
    },
    /// The release: `/v3/kv/txn` deleting a key if its create revision is `revision`.
    Release {
        /// The key.
        key: Vec<u8>,
        /// The create revision it is pinned to.
        revision: i64,
    },
    /// `/v3/kv/range` of the oldest key under the prefix.
    Owner,
    /// `/v3/kv/range` of every key under the prefix (the events' read).
    Keys,
    /// `/v3/kv/range` of one key (a waiting acquire's liveness probe).
    Get(Vec<u8>),
    /// `/v3/watch` of one key (the key ahead of a waiting acquire), from a revision.
    WaitWatch {
        /// The key.
        key: Vec<u8>,
        /// The start revision (0: from now).
        start: i64,
    },
    /// `/v3/watch` of the prefix, from a revision (the events).
    EventsWatch {
        /// The start revision (0: from now).
        start: i64,
    },
}

impl Kind {
    /// Whether its answer is a stream (a watch).
    pub fn is_watch(&self) -> bool {
        matches!(self, Kind::WaitWatch { .. } | Kind::EventsWatch { .. })
    }
}

/// A request the machine emitted and still waits for.
#[derive(Debug)]
pub struct Out {
    /// The request as sent.
    pub request: Request<Vec<u8>>,
    /// What it is.
    pub kind: Kind,
    /// When it was emitted.
    pub sent: Instant,
    /// Its answer's head was given: its body is arriving.
    pub streaming: bool,
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
    /// When it was issued.
    pub issued: Instant,
    /// Whether any answer other than a transport failure or timeout reached the machine while
    /// it was pending.
    pub answered: bool,
    /// Whether the machine held a fence at some point while it was pending.
    pub held_seen: bool,
    /// Whether the machine held no fence at some point while it was pending.
    pub free_seen: bool,
}

/// What one step put out.
#[derive(Debug, Default)]
pub struct Step {
    /// New requests.
    pub requests: Vec<(RequestId, Kind)>,
    /// Requests the machine gave up on (with what they were).
    pub cancels: Vec<(RequestId, Out)>,
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
    /// An answer or a piece of one; `stale`: to a request not outstanding.
    Answer {
        stale: bool,
    },
    Other,
}

#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    fence: Option<Fence>,
    timeout: Option<Instant>,
    busy: bool,
    watching: bool,
    pending_io: bool,
    holder: Option<String>,
    destroyed: bool,
}

/// The machine and everything the harness has seen it do.
#[derive(Debug)]
pub struct Harness3 {
    lock: Lock,
    config: Config,
    t0: Instant,
    prefix: Vec<u8>,
    clock: Instant,
    seen: Instant,
    outstanding: BTreeMap<RequestId, Out>,
    last_request: u64,
    ops: BTreeMap<OpId, OpState>,
    destroyed: bool,
    /// Tokens of fences lost (`Lost`), not won again since.
    lost: BTreeSet<u64>,
    /// The last hold's token (while the world is genuine).
    last_token: Option<u64>,
    tampered: bool,
    steps: u64,
    trace: Vec<String>,
    /// While set, steps are folded into `trace_hash` instead of `trace` (endless bodies).
    hash_only: bool,
    trace_hash: u64,
    /// The answer being delivered in pieces passed the bound: its cancel is left out of the
    /// trace (delivered whole, it has none).
    hide_cancel: Option<RequestId>,
    max_outstanding: usize,
    lenient: bool,
}

impl Harness3 {
    /// A fresh machine for `config` (which must speak v3), time starting at `t0`.
    pub fn new(config: Config, t0: Instant) -> Harness3 {
        let mut prefix = config.key().as_str().as_bytes().to_vec();
        prefix.push(b'/');
        Harness3 {
            lock: Lock::new(config.clone()),
            config,
            t0,
            prefix,
            clock: t0,
            seen: t0,
            outstanding: BTreeMap::new(),
            last_request: 0,
            ops: BTreeMap::new(),
            destroyed: false,
            lost: BTreeSet::new(),
            last_token: None,
            tampered: false,
            steps: 0,
            trace: Vec::new(),
            hash_only: false,
            trace_hash: 0xcbf2_9ce4_8422_2325,
            hide_cancel: None,
            max_outstanding: MAX_OUTSTANDING,
            lenient: false,
        }
    }

    /// With `on`, requests the machine forgot without a cancel (a known bug) are tolerated:
    /// up to 64 outstanding, and left outstanding after `destroy`.
    pub fn lenient_leaks(mut self, on: bool) -> Harness3 {
        self.lenient = on;
        self.max_outstanding = if on { 64 } else { MAX_OUTSTANDING };
        self
    }

    /// The machine (getters only).
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The lock's prefix `NAME/`.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.clock
    }

    /// When time started.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// The requests the machine waits for, oldest first.
    pub fn outstanding(&self) -> &BTreeMap<RequestId, Out> {
        &self.outstanding
    }

    /// The id of the last request emitted.
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

    /// The world stopped answering as etcd would (a mutated, made-up or injected answer):
    /// checks that need etcd's honesty (monotonic tokens) stop.
    pub fn set_tampered(&mut self) {
        self.tampered = true;
    }

    /// Every step's outputs, for comparing two runs.
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    /// Folds steps into a hash instead of the trace while `on` (bounded memory).
    pub fn set_hash_only(&mut self, on: bool) {
        if !on && self.hash_only {
            self.trace.push(format!("hash {:016x}", self.trace_hash));
        }
        self.hash_only = on;
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            fence: self.lock.fence(),
            timeout: self.lock.poll_timeout(),
            busy: self.lock.is_busy(),
            watching: self.lock.is_watching(),
            pending_io: self.lock.has_pending_io(),
            holder: self.lock.observed_holder().map(str::to_owned),
            destroyed: self.lock.is_destroyed(),
        }
    }

    fn pass(&mut self) -> Instant {
        self.seen = self.seen.max(self.clock);
        self.clock
    }

    fn etcd_spoke(&mut self) {
        for state in self.ops.values_mut() {
            if state.result.is_none() {
                state.answered = true;
            }
        }
    }

    // ----- commands ---------------------------------------------------------------------------

    /// Issues `cmd` now.
    pub fn command(&mut self, cmd: Cmd) -> Checked<(OpId, Step)> {
        let before = self.snapshot();
        let now = self.pass();
        let op = match cmd {
            Cmd::Lock => self.lock.lock(now),
            Cmd::Acquire(deadline) => self.lock.acquire(deadline, now),
            Cmd::Unlock => self.lock.unlock(now),
            Cmd::Renew => self.lock.renew(now),
            Cmd::Read => self.lock.read(now),
        };
        ensure!(
            !self.ops.contains_key(&op),
            "command {cmd:?} got the id {op:?} of an earlier command"
        );
        let fence = self.lock.fence().is_some() || before.fence.is_some();
        self.ops.insert(
            op,
            OpState {
                cmd,
                result: None,
                cancelled: false,
                issued: now,
                answered: false,
                held_seen: fence,
                free_seen: before.fence.is_none(),
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

    /// Cancels `op`.
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
        if was {
            ensure!(step.is_empty(), "a second destroy had effects: {step:?}");
            return Ok(step);
        }
        let lost = (step.events.iter())
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
            "destroy with fence {:?} emitted {:?}",
            before.fence,
            step.events
        );
        ensure!(
            step.requests.len() <= 1
                && step
                    .requests
                    .iter()
                    .all(|(_, k)| matches!(k, Kind::Revoke(_))),
            "destroy sent {:?} (only the lease's revoke may go)",
            step.requests
        );
        Ok(step)
    }

    // ----- time ------------------------------------------------------------------------------

    /// Lets time pass without telling the machine.
    pub fn advance(&mut self, by: Duration) {
        self.clock += by;
    }

    /// Jumps to the next timer, if any, and fires it (`None`: no timer).
    pub fn fire_timer(&mut self) -> Checked<Option<Step>> {
        let Some(at) = self.lock.poll_timeout() else {
            return Ok(None);
        };
        self.clock = self.clock.max(at);
        let before = self.snapshot();
        let now = self.pass();
        self.lock.handle_timeout(now);
        let step = self.after(Input::Timer, before)?;
        if let Some(due) = self.lock.poll_timeout() {
            ensure!(
                due > now,
                "after handle_timeout at t+{:?} a timer is still due (t+{:?}): a hot loop",
                now - self.t0,
                due.saturating_duration_since(self.t0)
            );
        }
        Ok(Some(step))
    }

    // ----- answers -----------------------------------------------------------------------------

    /// Answers `id` with `response`, whole.
    pub fn respond(&mut self, id: RequestId, response: Response<Vec<u8>>) -> Checked<Step> {
        let before = self.snapshot();
        let stale = self.outstanding.remove(&id).is_none();
        if !stale {
            self.etcd_spoke();
        }
        let now = self.pass();
        self.lock.handle_response(id, response, now);
        self.after(Input::Answer { stale }, before)
    }

    /// Answers `id` with `response` in pieces: its head, its body cut at `cuts`, its end. A body
    /// passing [`MAX_RESPONSE_BYTES`] must be refused (named for cancel) as soon as the piece
    /// that passes the bound is fed; what follows changes nothing. The returned step leaves
    /// that cancel out (so that it compares with [`respond`](Harness3::respond)'s).
    pub fn respond_in_pieces(
        &mut self,
        id: RequestId,
        response: Response<Vec<u8>>,
        cuts: &[usize],
    ) -> Checked<Step> {
        let before = self.snapshot();
        let stale = !self.outstanding.contains_key(&id);
        if !stale {
            self.etcd_spoke();
        }
        let now = self.pass();
        let (head, body) = response.into_parts();
        let pieces = pieces(body.len(), cuts);
        self.lock.handle_response_head(id, head, now);
        let mut fed = 0;
        let mut rest = pieces.iter();
        for &(from, to) in rest.by_ref() {
            self.lock.handle_response_body(id, &body[from..to], now);
            fed = to;
            if fed > MAX_RESPONSE_BYTES {
                break;
            }
        }
        if fed > MAX_RESPONSE_BYTES && !stale {
            self.hide_cancel = Some(id);
            let result = self.after(Input::Answer { stale: false }, before);
            self.hide_cancel = None;
            let mut step = result?;
            let cancelled = step.cancels.iter().any(|(c, _)| *c == id);
            ensure!(
                cancelled && !self.outstanding.contains_key(&id),
                "a body passing the bound ({fed} bytes fed) was not refused at once: {step:?}"
            );
            step.cancels.retain(|(c, _)| *c != id);
            let before = self.snapshot();
            for &(from, to) in rest {
                self.lock.handle_response_body(id, &body[from..to], now);
            }
            self.lock.handle_response_end(id, now);
            // Not a step of its own in the trace: delivered whole, there is none.
            let steps = self.trace.len();
            self.after(Input::Answer { stale: true }, before)?;
            self.trace.truncate(steps);
            return Ok(step);
        }
        for &(from, to) in rest {
            self.lock.handle_response_body(id, &body[from..to], now);
        }
        self.lock.handle_response_end(id, now);
        self.outstanding.remove(&id);
        self.after(Input::Answer { stale }, before)
    }

    /// Gives the head of a streamed answer (status `status`) to `id`: its body follows in
    /// [`chunk`](Harness3::chunk)s.
    pub fn head(&mut self, id: RequestId, status: u16) -> Checked<Step> {
        let before = self.snapshot();
        let stale = match self.outstanding.get_mut(&id) {
            Some(out) if !out.streaming => {
                out.streaming = true;
                false
            }
            _ => true,
        };
        if !stale {
            self.etcd_spoke();
        }
        let now = self.pass();
        let (head, ()) = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .expect("a status in 100..=999")
            .into_parts();
        self.lock.handle_response_head(id, head, now);
        self.after(Input::Answer { stale }, before)
    }

    /// Feeds one chunk of a streamed answer's body.
    pub fn chunk(&mut self, id: RequestId, chunk: &[u8]) -> Checked<Step> {
        let before = self.snapshot();
        let stale = !self.outstanding.get(&id).is_some_and(|o| o.streaming);
        if !stale {
            self.etcd_spoke();
        }
        let now = self.pass();
        self.lock.handle_response_body(id, chunk, now);
        self.after(Input::Answer { stale }, before)
    }

    /// Ends a streamed answer.
    pub fn end(&mut self, id: RequestId) -> Checked<Step> {
        let before = self.snapshot();
        let stale = !self.outstanding.get(&id).is_some_and(|o| o.streaming);
        let now = self.pass();
        self.lock.handle_response_end(id, now);
        // Its last line (etcd ends a stream with an error line without a line end) is read at
        // the end: the machine may name the request for cancel then, as for any bad line. An
        // adapter ignores a cancel of a response already over; the request counts as
        // outstanding until this step is checked.
        let step = self.after(Input::Answer { stale }, before)?;
        self.outstanding.remove(&id);
        Ok(step)
    }

    /// Fails `id` in transport (`connect`: it never reached etcd).
    pub fn fail(&mut self, id: RequestId, connect: bool) -> Checked<Step> {
        let before = self.snapshot();
        let stale = self.outstanding.remove(&id).is_none();
        let now = self.pass();
        if connect {
            self.lock.handle_connect_error(id, CONNECT_REASON, now);
        } else {
            self.lock.handle_transport_error(id, TRANSPORT_REASON, now);
        }
        self.after(Input::Answer { stale }, before)
    }

    // ----- the checks -------------------------------------------------------------------------

    fn record(&mut self, line: String) {
        if self.hash_only {
            self.trace_hash = line.bytes().fold(self.trace_hash, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        } else {
            self.trace.push(line);
        }
    }

    fn after(&mut self, input: Input, before: Snapshot) -> Checked<Step> {
        self.steps += 1;
        let mut step = Step::default();
        let now = self.seen;

        while let Some((id, request)) = self.lock.poll_request() {
            ensure!(
                !self.destroyed || input == Input::Destroy,
                "request {id} emitted after destroy: {request:?}"
            );
            ensure!(
                id.as_raw() > self.last_request,
                "request id {id} is not above the last one (r{})",
                self.last_request
            );
            self.last_request = id.as_raw();
            let kind = self.classify(&request)?;
            step.requests.push((id, kind.clone()));
            self.outstanding.insert(
                id,
                Out {
                    request,
                    kind,
                    sent: now,
                    streaming: false,
                },
            );
        }
        while let Some(id) = self.lock.poll_cancel() {
            let Some(out) = self.outstanding.remove(&id) else {
                return Err(format!(
                    "poll_cancel named {id}, which is not outstanding (emitted up to r{}, \
                     outstanding {:?})",
                    self.last_request,
                    self.outstanding.keys().collect::<Vec<_>>()
                ));
            };
            step.cancels.push((id, out));
        }
        while let Some(done) = self.lock.poll_completion() {
            step.completions.push(done);
        }
        while let Some(event) = self.lock.poll_event() {
            step.events.push(event);
        }
        ensure!(
            self.outstanding.len() <= self.max_outstanding,
            "{} requests outstanding: {:?}",
            self.outstanding.len(),
            self.outstanding
                .values()
                .map(|o| &o.kind)
                .collect::<Vec<_>>()
        );

        // Completions.
        let fence = self.lock.fence();
        let mut won = BTreeSet::new();
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
            let state = state.clone();
            check_result(&state, &done.result, now)?;
            match &done.result {
                Err(Error::Cancelled) => ensure!(
                    state.cancelled,
                    "op {:?} ({:?}) completed Cancelled but was never cancelled",
                    done.op,
                    state.cmd
                ),
                Err(Error::Destroyed) => ensure!(
                    self.destroyed,
                    "op {:?} ({:?}) completed Destroyed before destroy",
                    done.op,
                    state.cmd
                ),
                Err(e @ Error::AlreadyLocked { .. }) => ensure!(
                    state.answered || state.held_seen || fence.is_some(),
                    "op {:?} ({:?}) completed {e:?}, but etcd never answered while it was \
                     pending and no fence was held",
                    done.op,
                    state.cmd
                ),
                Err(e @ Error::LockNotOwned { .. }) => ensure!(
                    state.answered
                        || (state.cmd == Cmd::Renew && (state.free_seen || fence.is_none())),
                    "op {:?} ({:?}) completed {e:?}, but etcd never answered while it was \
                     pending (transport failures and timeouts only)",
                    done.op,
                    state.cmd
                ),
                Ok(Outcome::Locked(f) | Outcome::Acquired(f)) => {
                    won.insert(f.token());
                    if !self.tampered {
                        if let Some(last) = self.last_token {
                            ensure!(
                                f.token() >= last,
                                "the fencing token went down: a hold with {last}, then one \
                                 with {}",
                                f.token()
                            );
                        }
                        self.last_token = Some(f.token());
                    }
                }
                Ok(Outcome::Renewed(f)) => {
                    won.insert(f.token());
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
        // A fence won in an earlier step than its loss may come back only by a new win.
        for token in &won {
            self.lost.remove(token);
        }

        // Events.
        let mut lost = 0;
        for event in &step.events {
            match event {
                Event::Lost { token, reason } => {
                    lost += 1;
                    ensure!(lost == 1, "two Lost events in one step: {:?}", step.events);
                    let held = before.fence.map(|f| f.token());
                    ensure!(
                        held == Some(*token) || won.contains(token),
                        "Lost {{ token: {token}, {reason:?} }} but the fence before was {:?}",
                        before.fence
                    );
                    match reason {
                        LostReason::Destroyed => {
                            ensure!(input == Input::Destroy, "Lost(Destroyed) without destroy")
                        }
                        LostReason::Expired => ensure!(
                            before.fence.is_some_and(|f| f.valid_until() <= now)
                                || skipping("renew-lost-reason"),
                            "Lost(Expired) at t+{:?} before the fence's deadline ({:?})",
                            now - self.t0,
                            before.fence.map(|f| f.valid_until() - self.t0)
                        ),
                        _ => {}
                    }
                    self.lost.insert(*token);
                }
                Event::Locked { .. } | Event::Unlocked { .. } => {
                    ensure!(self.lock.is_watching(), "{event:?} while not watching")
                }
                other => return Err(format!("unknown event {other:?}")),
            }
        }

        // State.
        ensure!(
            !self.lock.is_held(now) || fence.is_some(),
            "is_held(now) without a fence"
        );
        if let Some(f) = fence {
            ensure!(
                self.lock.is_held(now) == (now < f.valid_until()),
                "is_held(now) disagrees with the fence's valid_until"
            );
            ensure!(
                !self.lost.contains(&f.token()),
                "the fence {} was lost (Lost event), yet it is kept (is_held: {}); events \
                 {:?}, completions {:?}",
                f.token(),
                self.lock.is_held(now),
                step.events,
                step.completions
            );
            if input == Input::Timer {
                ensure!(
                    f.valid_until() > now,
                    "after handle_timeout at t+{:?} the fence (valid until t+{:?}) is kept",
                    now - self.t0,
                    f.valid_until() - self.t0
                );
            }
        }
        for state in self.ops.values_mut() {
            if state.result.is_none() {
                state.held_seen |= fence.is_some();
                state.free_seen |= fence.is_none();
            }
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
                "stalled: busy {} / fence {:?} / watching {}, but no request is outstanding \
                 and no timer is armed",
                self.lock.is_busy(),
                fence,
                self.lock.is_watching()
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
        let revoking = (self.outstanding.values()).any(|o| matches!(o.kind, Kind::Revoke(_)));
        ensure!(
            self.lock.is_destroyed() == (self.destroyed && !revoking),
            "is_destroyed() is {} (destroyed {}, revoke outstanding {revoking})",
            self.lock.is_destroyed(),
            self.destroyed
        );
        if self.destroyed {
            // Revokes only, each of its own lease: destroy's, and one a failed unlock sent
            // earlier for an older lease (its key may still hold the lock), still on its way.
            let mut revoked: Vec<i64> = (self.outstanding.values())
                .filter_map(|o| match o.kind {
                    Kind::Revoke(lease) => Some(lease),
                    _ => None,
                })
                .collect();
            revoked.sort_unstable();
            revoked.dedup();
            ensure!(
                fence.is_none()
                    && !self.lock.is_busy()
                    && !self.lock.is_watching()
                    && (revoked.len() == self.outstanding.len() || self.lenient),
                "destroyed but fence {fence:?}, busy {}, watching {}, outstanding {:?}",
                self.lock.is_busy(),
                self.lock.is_watching(),
                self.outstanding
                    .values()
                    .map(|o| &o.kind)
                    .collect::<Vec<_>>()
            );
            if !revoking && !self.lenient {
                ensure!(
                    timeout.is_none() && !self.lock.has_pending_io(),
                    "destroyed and revoked, but timer {timeout:?}"
                );
            }
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

        let cancels: Vec<RequestId> = (step.cancels.iter())
            .map(|(id, _)| *id)
            .filter(|id| Some(*id) != self.hide_cancel)
            .collect();
        let line = format!(
            "{input:?} at +{:?}: requests {:?} cancels {cancels:?} done {:?} events {:?} fence \
             {:?} timer {:?}",
            now - self.t0,
            step.requests,
            step.completions,
            step.events,
            fence.map(|f| (f.token(), f.valid_until() - self.t0)),
            timeout.map(|t| t.saturating_duration_since(self.t0)),
        );
        self.record(line);
        Ok(step)
    }

    /// Reads a request back: one of the v3 calls the machine makes, every key under the prefix.
    fn classify(&self, request: &Request<Vec<u8>>) -> Checked<Kind> {
        let uri = request.uri().to_string();
        let endpoint =
            (self.config.endpoints().iter()).find(|e| uri.starts_with(&format!("{}/", e.as_str())));
        let Some(endpoint) = endpoint else {
            return Err(format!("request to an unknown endpoint: {uri}"));
        };
        let path = &uri[endpoint.as_str().len()..];
        ensure!(
            request.method() == Method::POST,
            "{} {uri}",
            request.method()
        );
        ensure!(
            request
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v == "application/json"),
            "{uri} without Content-Type: application/json"
        );
        ensure!(
            request
                .headers()
                .get("grpc-metadata-hasleader")
                .is_some_and(|v| v == "true"),
            "{uri} without Grpc-Metadata-hasleader: true"
        );
        let body: Value = serde_json::from_slice(request.body())
            .map_err(|e| format!("{uri}: body not JSON ({e})"))?;
        let text = String::from_utf8_lossy(request.body()).into_owned();
        let str_at = |v: &Value, p: &[&str]| -> Option<String> {
            let mut v = v;
            for k in p {
                v = v.get(k)?;
            }
            v.as_str().map(str::to_owned)
        };
        let int_at = |v: &Value, p: &[&str]| -> Checked<i64> {
            str_at(v, p)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{uri}: no int64 string at {p:?}: {text}"))
        };
        let key_at = |v: &Value, p: &[&str]| -> Checked<Vec<u8>> {
            let key = str_at(v, p)
                .and_then(|s| unb64(&s))
                .ok_or_else(|| format!("{uri}: no base64 key at {p:?}: {text}"))?;
            ensure!(
                key.starts_with(&self.prefix),
                "{uri}: the key {:?} at {p:?} is outside the lock's prefix {:?}",
                String::from_utf8_lossy(&key),
                String::from_utf8_lossy(&self.prefix)
            );
            Ok(key)
        };
        let is_owner_range = |r: &Value, limit: &str| -> bool {
            str_at(r, &["key"]).and_then(|s| unb64(&s)).as_deref() == Some(&self.prefix[..])
                && str_at(r, &["range_end"]).and_then(|s| unb64(&s))
                    == Some(range_end(&self.prefix))
                && str_at(r, &["sort_target"]).as_deref() == Some("CREATE")
                && str_at(r, &["limit"]).as_deref() == Some(limit)
        };
        let watch = request.extensions().get::<Streamed>().is_some();
        ensure!(
            watch == (path == "/v3/watch"),
            "{uri}: Streamed marker {watch} on the wrong request"
        );
        let kind = match path {
            "/v3/lease/grant" => {
                let ttl = self.config.ttl_secs().to_string();
                ensure!(
                    str_at(&body, &["TTL"]) == Some(ttl),
                    "grant without the configured TTL: {text}"
                );
                Kind::Grant
            }
            "/v3/lease/keepalive" => Kind::KeepAlive(int_at(&body, &["ID"])?),
            "/v3/lease/revoke" => Kind::Revoke(int_at(&body, &["ID"])?),
            "/v3/lease/timetolive" => Kind::TimeToLive(int_at(&body, &["ID"])?),
            "/v3/kv/txn" => {
                let compare = &body["compare"][0];
                ensure!(
                    body["compare"].as_array().map(Vec::len) == Some(1)
                        && str_at(compare, &["target"]).as_deref() == Some("CREATE")
                        && str_at(compare, &["result"]).as_deref() == Some("EQUAL"),
                    "txn without one CREATE EQUAL compare: {text}"
                );
                let own = key_at(compare, &["key"])?;
                let revision = int_at(compare, &["create_revision"])?;
                let success = &body["success"];
                if let Some(put) = success[0].get("request_put") {
                    ensure!(revision == 0, "a put not guarded by absence: {text}");
                    let lease = int_at(put, &["lease"])?;
                    ensure!(
                        key_at(put, &["key"])? == own
                            && own == [&self.prefix[..], lease_hex(lease).as_bytes()].concat(),
                        "a take whose key is not NAME/<its lease in hex>: {text}"
                    );
                    ensure!(
                        str_at(put, &["value"]).and_then(|s| unb64(&s)).as_deref()
                            == Some(self.config.node_id().as_str().as_bytes()),
                        "a take whose value is not the node id: {text}"
                    );
                    ensure!(
                        is_owner_range(&success[1]["request_range"], "1")
                            && key_at(&body["failure"][0]["request_range"], &["key"])? == own
                            && is_owner_range(&body["failure"][1]["request_range"], "1"),
                        "a take that does not read the owner: {text}"
                    );
                    Kind::Take { lease }
                } else if let Some(delete) = success[0].get("request_delete_range") {
                    ensure!(
                        key_at(delete, &["key"])? == own && delete.get("range_end").is_none(),
                        "a release of another key than the compared one: {text}"
                    );
                    ensure!(
                        revision > 0,
                        "a release not pinned to a hold (create revision {revision}): {text}"
                    );
                    Kind::Release { key: own, revision }
                } else if let Some(range) = success[0].get("request_range") {
                    ensure!(
                        str_at(range, &["sort_order"]).as_deref() == Some("DESCEND")
                            && str_at(range, &["max_create_revision"]).is_some(),
                        "a look ahead without a bound: {text}"
                    );
                    key_at(range, &["key"])?;
                    Kind::Ahead { own: revision }
                } else {
                    return Err(format!("an unexpected txn: {text}"));
                }
            }
            "/v3/kv/range" => {
                if is_owner_range(&body, "1") {
                    Kind::Owner
                } else if is_owner_range(&body, "1000") {
                    Kind::Keys
                } else {
                    ensure!(
                        body.as_object().map(|o| o.len()) == Some(1),
                        "an unexpected range: {text}"
                    );
                    Kind::Get(key_at(&body, &["key"])?)
                }
            }
            "/v3/watch" => {
                let create = &body["create_request"];
                let key = key_at(create, &["key"])?;
                let start = match str_at(create, &["start_revision"]) {
                    Some(s) => s.parse().map_err(|_| format!("bad start: {text}"))?,
                    None => 0,
                };
                match create.get("range_end") {
                    Some(_) => {
                        ensure!(
                            key == self.prefix
                                && str_at(create, &["range_end"]).and_then(|s| unb64(&s))
                                    == Some(range_end(&self.prefix)),
                            "an events watch not over the prefix: {text}"
                        );
                        Kind::EventsWatch { start }
                    }
                    None => Kind::WaitWatch { key, start },
                }
            }
            _ => return Err(format!("an unexpected request: POST {uri} {text}")),
        };
        Ok(kind)
    }

    /// Whether the caller's command `op` has completed.
    pub fn is_done(&self, op: OpId) -> bool {
        self.ops.get(&op).is_some_and(|s| s.result.is_some())
    }

    /// A one-line summary for failure messages.
    pub fn summary(&self) -> String {
        format!(
            "t+{:?} (machine at t+{:?}), {} steps, fence {:?}, busy {}, watching {}, timer \
             {:?}, outstanding {:?}, ops {:?}",
            self.clock - self.t0,
            self.seen - self.t0,
            self.steps,
            (self.lock.fence()).map(|f| (f.token(), f.valid_until() - self.t0)),
            self.lock.is_busy(),
            self.lock.is_watching(),
            (self.lock.poll_timeout()).map(|t| t.saturating_duration_since(self.t0)),
            (self.outstanding.iter())
                .map(|(id, o)| (id.as_raw(), &o.kind))
                .collect::<Vec<_>>(),
            (self.ops.iter())
                .map(|(op, s)| (op, s.cmd, &s.result))
                .collect::<Vec<_>>()
        )
    }
}

/// The pieces `[from, to)` of a body of `len` bytes cut at `cuts` (clamped, in order).
fn pieces(len: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut from = 0;
    let mut out = Vec::new();
    for cut in cuts.iter().map(|&c| c.min(len)).chain([len]) {
        let to = cut.max(from);
        out.push((from, to));
        from = to;
    }
    out
}

/// The results each command can have on v3.
fn check_result(state: &OpState, result: &Result<Outcome, Error>, now: Instant) -> Checked {
    use Error as E;
    let cmd = state.cmd;
    let ok = match (cmd, result) {
        (_, Err(E::Cancelled | E::Destroyed | E::Etcd { .. } | E::Auth { .. })) => true,
        (_, Err(E::Protocol { .. })) => true,
        (_, Err(E::Transport { reason })) => {
            ensure!(
                reason == TRANSPORT_REASON || reason == CONNECT_REASON,
                "Transport error with a reason nobody gave: {reason:?}"
            );
            !matches!(cmd, Cmd::Acquire(_))
        }
        (_, Err(E::Timeout { .. })) => !matches!(cmd, Cmd::Acquire(_)),
        (Cmd::Lock, Ok(Outcome::Locked(_)) | Err(E::AlreadyLocked { .. })) => true,
        (Cmd::Lock | Cmd::Renew, Err(E::LeaseExpired { .. })) => true,
        (Cmd::Acquire(_), Ok(Outcome::Acquired(_)) | Err(E::AlreadyLocked { .. })) => true,
        (Cmd::Acquire(Some(deadline)), Err(E::WaitTimeout { .. })) => {
            ensure!(
                deadline <= now,
                "acquire completed WaitTimeout before its deadline"
            );
            true
        }
        (Cmd::Unlock, Ok(Outcome::Unlocked) | Err(E::LockNotOwned { .. })) => true,
        (Cmd::Renew, Ok(Outcome::Renewed(_)) | Err(E::LockNotOwned { .. })) => true,
        (Cmd::Read, Ok(Outcome::Read(_))) => true,
        (Cmd::Read, Err(E::LockNotOwned { .. })) => skipping("read-not-owned"),
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

/// Go's `clientv3.GetPrefixRangeEnd`.
pub fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// A lease ID as Go's `%x` writes it.
pub fn lease_hex(lease: i64) -> String {
    if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding (canonical text only).
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for (j, &b) in chunk.iter().enumerate() {
            let v = if j >= 4 - pad {
                0
            } else {
                B64.iter().position(|&c| c == b)? as u32
            };
            n |= v << (18 - 6 * j);
        }
        let got = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&got[..3 - pad]);
    }
    Some(out)
}

/// Whether `MICROLOCK_FUZZ_SKIP` (comma-separated) names the known machine bug `bug` (see
/// `responses_v3::KNOWN_BUGS`): a fuzz run then avoids or tolerates it, to go on past it.
pub fn skipping(bug: &str) -> bool {
    static SKIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("MICROLOCK_FUZZ_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect()
    })
    .iter()
    .any(|s| s == bug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            "wk/é".as_bytes(),
        ] {
            assert_eq!(unb64(&b64(s)).as_deref(), Some(s));
        }
        assert_eq!(b64(b"locks/job/"), "bG9ja3Mvam9iLw==");
        assert_eq!(unb64("eA"), None);
        assert_eq!(unb64("!!!!"), None);
        assert_eq!(lease_hex(0x2040a22bf4348f0d), "2040a22bf4348f0d");
        assert_eq!(range_end(b"lk/"), b"lk0");
    }
}
