//! Target `operations`: an [`Arbitrary`] configuration and sequence of commands, answers
//! (well-formed ones made to measure, recorded ones, truncated ones, arbitrary bytes,
//! oversized bodies), transport failures, timers, time steps and stale answers, with every
//! [`harness`](crate::harness) invariant checked after each step, and
//! [`Harness::quiesce`] at the end (every command completes exactly once).
//!
//! Keys, node ids, TTLs and endpoint URLs are arbitrary too: `Config::new` /
//! `Endpoint::parse` must refuse with the right error variant or accept, never panic, and
//! what they accept must reach the wire exactly (the harness decodes every request).

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use microlock_proto::http::Response;
use microlock_proto::{Config, Endpoint, Error, OpId, RequestId, MAX_RESPONSE_BYTES};

use crate::etcd;
use crate::harness::{Checked, Cmd, Harness, ReqKind};

/// The most steps one input runs (more would only slow the fuzzer down).
pub const MAX_STEPS: usize = 256;

/// Keys and node ids worth trying (the hostile-input catalogue's, and ordinary ones).
pub const NAMES: &[&str] = &[
    "lock",
    "node-a",
    "/lock",
    "jobs/nightly",
    "a b",
    "%2F",
    "?x=1",
    "#",
    "&prevExist=true",
    "+",
    "räksmörgås ✓",
    "🔒",
    "a=b&c",
    ".hidden",
    "a..b",
    "~",
    "",
    "/",
    "a//b",
    ".",
    "..",
    "a\u{0}b",
];

/// A key or node id.
#[derive(Debug, Arbitrary)]
pub enum Text {
    /// One of [`NAMES`] (index modulo its length).
    Listed(u8),
    /// Anything.
    Raw(String),
    /// `n` times `k` (long names).
    Long(u16),
}

impl Text {
    fn get(&self) -> String {
        match self {
            Text::Listed(i) => NAMES[usize::from(*i) % NAMES.len()].to_owned(),
            Text::Raw(s) => s.clone(),
            Text::Long(n) => "k".repeat(usize::from(*n) % 20_000 + 1),
        }
    }
}

/// A TTL.
#[derive(Debug, Arbitrary)]
pub enum Ttl {
    /// 1 to 256 s.
    Secs(u8),
    /// Milliseconds (sub-second ones are refused, fractions round up).
    Millis(u32),
    /// `MAX_TTL`.
    Max,
    /// Anything.
    Raw(u64, u32),
}

impl Ttl {
    fn get(&self) -> Duration {
        match self {
            Ttl::Secs(s) => Duration::from_secs(u64::from(*s) + 1),
            Ttl::Millis(ms) => Duration::from_millis(u64::from(*ms)),
            Ttl::Max => microlock_proto::MAX_TTL,
            Ttl::Raw(s, n) => Duration::new(*s, n % 1_000_000_000),
        }
    }
}

/// An endpoint URL.
#[derive(Debug, Arbitrary)]
pub enum Url {
    /// `http://127.0.0.1:2379 + i`.
    Port(u8),
    /// Anything.
    Raw(String),
}

/// The lock's configuration.
#[derive(Debug, Arbitrary)]
pub struct ConfigSpec {
    key: Text,
    node: Text,
    ttl: Ttl,
    request_timeout_ms: u16,
    margin_ms: Option<u32>,
    auto_renew: bool,
    renew_interval_ms: Option<u16>,
    jitter_ms: u8,
    seed: Option<u64>,
    endpoints: Vec<Url>,
}

/// An index an answer carries.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Index {
    /// etcd's next index (its counter moves on).
    Next,
    /// etcd's current index.
    Same,
    /// A small number.
    Small(u8),
    /// Anything.
    Raw(u64),
}

/// Whose value a node holds.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Holder {
    /// This node id.
    Me,
    /// Another node id.
    Other,
    /// None: a directory / no value.
    Nobody,
}

/// A watch event's action.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Action {
    #[allow(missing_docs)]
    Create,
    #[allow(missing_docs)]
    Set,
    #[allow(missing_docs)]
    Update,
    #[allow(missing_docs)]
    CompareAndSwap,
    #[allow(missing_docs)]
    Delete,
    #[allow(missing_docs)]
    CompareAndDelete,
    #[allow(missing_docs)]
    Expire,
    #[allow(missing_docs)]
    Get,
    /// Something etcd does not send.
    Other,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Set => "set",
            Action::Update => "update",
            Action::CompareAndSwap => "compareAndSwap",
            Action::Delete => "delete",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
            Action::Get => "get",
            Action::Other => "mkdir",
        }
    }
}

/// A well-formed etcd answer, whatever the request was.
#[derive(Debug, Arbitrary)]
pub enum Template {
    #[allow(missing_docs)]
    Created(Holder, Index),
    #[allow(missing_docs)]
    Refreshed(Holder, Index, Index),
    #[allow(missing_docs)]
    Deleted(Index, Index),
    #[allow(missing_docs)]
    Got(Holder, Index, Index, Index),
    #[allow(missing_docs)]
    Exists(Index),
    #[allow(missing_docs)]
    CompareFailed(Index),
    #[allow(missing_docs)]
    NotFound(Index),
    #[allow(missing_docs)]
    Cleared(Index),
    #[allow(missing_docs)]
    Raft,
    #[allow(missing_docs)]
    EmptyClose,
    #[allow(missing_docs)]
    Event(Action, Holder, Holder, Index, Index),
    /// Another etcd error code and status.
    Error(u16, u16),
}

/// An answer.
#[derive(Debug, Arbitrary)]
pub enum Answer {
    /// The kind of answer etcd gives this kind of request (`pick` chooses among them).
    Natural(u8, Holder, Index),
    /// A well-formed answer of any kind.
    Template(Template),
    /// A recorded answer, optionally cut after `n` bytes.
    Fixture(u8, Option<u16>),
    /// Arbitrary status, `X-Etcd-Index` and body.
    Raw(u16, Option<Vec<u8>>, Vec<u8>),
    /// A recorded answer padded past `MAX_RESPONSE_BYTES`.
    Oversized(u8),
}

/// One step.
#[derive(Debug, Arbitrary)]
pub enum Step {
    #[allow(missing_docs)]
    Lock,
    #[allow(missing_docs)]
    Unlock,
    #[allow(missing_docs)]
    Renew,
    /// `acquire` with a deadline this many ms ahead (none: wait without limit).
    Acquire(Option<u16>),
    /// Cancels the `n`th command issued (modulo), or an unknown one.
    Cancel(u8),
    #[allow(missing_docs)]
    AutoRenew(bool),
    #[allow(missing_docs)]
    Watch(bool),
    #[allow(missing_docs)]
    Destroy,
    /// Time passes without the timer being called.
    Advance(u16),
    /// The timer fires when due.
    FireTimer,
    /// `handle_timeout` with a time this many ms before the latest (time must not go back).
    TimerEarlier(u16),
    /// Answers the `n`th outstanding request (modulo).
    Answer(u8, Answer),
    /// Fails the `n`th outstanding request in transport.
    Fail(u8),
    /// Answers a request that is not outstanding: an answered one (`n` back) or one never
    /// sent.
    Stale(u16, bool, Answer),
}

/// A whole input.
#[derive(Debug, Arbitrary)]
pub struct Scenario {
    /// The configuration.
    pub config: ConfigSpec,
    /// The steps.
    pub steps: Vec<Step>,
}

/// Runs one input; panics with a description on any violation.
pub fn run(data: &[u8]) {
    let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    if let Err(violation) = execute(&scenario) {
        panic!("operations: {violation}\n{scenario:#?}");
    }
}

/// Builds the config, or checks the refusal.
fn config(spec: &ConfigSpec) -> Checked<Option<Config>> {
    let (key, node, ttl) = (spec.key.get(), spec.node.get(), spec.ttl.get());
    // The key's own protocol (the fair acquire's queue is covered by the simulator, `make dst`,
    // and by microlock-proto's tests/fair.rs): waiters watch the key.
    let mut config = match Config::new(&key, &node, ttl) {
        Ok(config) => config.with_fair_acquire(false),
        Err(e) => {
            let right = match &e {
                Error::InvalidKey { key: k, reason } => *k == key && !reason.is_empty(),
                Error::InvalidNodeId { node_id, reason } => *node_id == node && !reason.is_empty(),
                Error::InvalidTtl { ttl: t, reason } => *t == ttl && !reason.is_empty(),
                _ => false,
            };
            crate::harness::ensure!(right, "Config::new({key:?}, {node:?}, {ttl:?}) -> {e:?}");
            return Ok(None);
        }
    };
    crate::harness::ensure!(
        config.ttl_secs() >= 1 && Duration::from_secs(config.ttl_secs()) >= ttl,
        "TTL {ttl:?} became {} s",
        config.ttl_secs()
    );
    let mut endpoints = Vec::new();
    for url in spec.endpoints.iter().take(3) {
        let text = match url {
            Url::Port(p) => format!("http://127.0.0.1:{}", 2379 + u16::from(*p)),
            Url::Raw(s) => s.clone(),
        };
        match Endpoint::parse(&text) {
            Ok(e) => endpoints.push(e),
            Err(Error::InvalidEndpoint { .. }) => {}
            Err(e) => return Err(format!("Endpoint::parse({text:?}) -> {e:?}")),
        }
    }
    if !endpoints.is_empty() {
        config = config
            .with_endpoints(endpoints)
            .map_err(|e| e.to_string())?;
    }
    config = config
        .with_request_timeout(Duration::from_millis(u64::from(spec.request_timeout_ms)))
        .with_auto_renew(spec.auto_renew)
        .with_acquire_jitter(Duration::from_millis(u64::from(spec.jitter_ms)));
    if let Some(ms) = spec.margin_ms {
        config = config.with_safety_margin(Duration::from_millis(u64::from(ms)));
    }
    if let Some(ms) = spec.renew_interval_ms {
        config = config.with_renew_interval(Duration::from_millis(u64::from(ms)));
    }
    if let Some(seed) = spec.seed {
        config = config.with_seed(seed);
    }
    Ok(Some(config))
}

/// etcd's side: a counter for indexes.
struct FakeEtcd {
    index: u64,
    key: String,
    me: String,
}

impl FakeEtcd {
    fn index(&mut self, i: Index) -> u64 {
        match i {
            Index::Next => {
                self.index = self.index.saturating_add(1);
                self.index
            }
            Index::Same => self.index,
            Index::Small(n) => u64::from(n),
            Index::Raw(n) => n,
        }
    }

    fn value(&self, who: Holder) -> Option<&str> {
        match who {
            Holder::Me => Some(&self.me),
            Holder::Other => Some("other node"),
            Holder::Nobody => None,
        }
    }

    fn template(&mut self, t: &Template) -> Response<Vec<u8>> {
        let key = self.key.clone();
        match *t {
            Template::Created(who, i) => {
                let i = self.index(i);
                etcd::created(&key, self.value(who).unwrap_or(""), i)
            }
            Template::Refreshed(who, c, m) => {
                let (c, m) = (self.index(c), self.index(m));
                etcd::refreshed(&key, self.value(who).unwrap_or(""), c, m)
            }
            Template::Deleted(c, m) => {
                let (c, m) = (self.index(c), self.index(m));
                let me = self.me.clone();
                etcd::deleted(&key, &me, c, m)
            }
            Template::Got(who, c, m, i) => {
                let (c, m, i) = (self.index(c), self.index(m), self.index(i));
                etcd::got(&key, self.value(who), c, m, i)
            }
            Template::Exists(i) => etcd::exists(&key, self.index(i)),
            Template::CompareFailed(i) => etcd::compare_failed(self.index(i)),
            Template::NotFound(i) => etcd::not_found(&key, self.index(i)),
            Template::Cleared(i) => etcd::cleared(self.index(i)),
            Template::Raft => etcd::raft_error(),
            Template::EmptyClose => etcd::empty_close(),
            Template::Event(action, who, prev, c, m) => {
                let (c, m) = (self.index(c), self.index(m));
                let w = self.index;
                etcd::watch_event(
                    &key,
                    action.name(),
                    self.value(who),
                    self.value(prev),
                    c,
                    m,
                    w,
                )
            }
            Template::Error(status, code) => etcd::error(
                400 + status % 200,
                u64::from(code),
                "fuzzed error",
                "",
                self.index,
            ),
        }
    }

    /// The kind of answer etcd gives a request of this kind.
    fn natural(
        &mut self,
        kind: ReqKind,
        pick: u8,
        who: Holder,
        i: Index,
        token: Option<u64>,
    ) -> Response<Vec<u8>> {
        let token = token.unwrap_or(self.index);
        let t = match (kind, pick % 4) {
            (ReqKind::Create, 0 | 3) => Template::Created(Holder::Me, i),
            (ReqKind::Create, 1) => Template::Exists(i),
            (ReqKind::Create, _) => Template::Raft,
            (ReqKind::Refresh, 0 | 3) => {
                let m = self.index(Index::Next);
                return etcd::refreshed(&self.key.clone(), &self.me.clone(), token, m);
            }
            (ReqKind::Refresh, 1) => Template::CompareFailed(i),
            (ReqKind::Refresh, _) => Template::NotFound(i),
            (ReqKind::Delete(_), 0 | 3) => {
                let m = self.index(Index::Next);
                return etcd::deleted(&self.key.clone(), &self.me.clone(), token, m);
            }
            (ReqKind::Delete(_), 1) => Template::CompareFailed(i),
            (ReqKind::Delete(_), _) => Template::NotFound(i),
            (ReqKind::Read, 0) => {
                let (m, idx) = (self.index(Index::Same), self.index);
                let key = self.key.clone();
                return etcd::got(&key, self.value(who), token, m, idx);
            }
            (ReqKind::Read, 1) => Template::Got(who, i, Index::Same, Index::Same),
            (ReqKind::Read, _) => Template::NotFound(Index::Same),
            (ReqKind::Watch(wait), _) => {
                self.index = self.index.max(wait.saturating_sub(1));
                let action = match pick % 8 {
                    0 => Action::Create,
                    1 => Action::Delete,
                    2 => Action::Expire,
                    3 => Action::CompareAndSwap,
                    4 => Action::Set,
                    5 => Action::CompareAndDelete,
                    6 => return etcd::cleared(self.index(Index::Same)),
                    _ => return etcd::empty_close(),
                };
                Template::Event(action, who, Holder::Other, i, Index::Next)
            }
        };
        self.template(&t)
    }

    fn answer(
        &mut self,
        a: &Answer,
        kind: Option<ReqKind>,
        token: Option<u64>,
    ) -> Response<Vec<u8>> {
        match a {
            Answer::Natural(pick, who, i) => match kind {
                Some(kind) => self.natural(kind, *pick, *who, *i, token),
                None => self.template(&Template::Raft),
            },
            Answer::Template(t) => self.template(t),
            Answer::Fixture(n, cut) => {
                let all = etcd::fixtures();
                let f = &all[usize::from(*n) % all.len()];
                let mut r = f.response();
                if let Some(cut) = cut {
                    r.body_mut().truncate(usize::from(*cut));
                }
                r
            }
            Answer::Raw(status, index, body) => {
                etcd::response(*status, index.as_deref(), body.clone())
            }
            Answer::Oversized(n) => {
                let all = etcd::fixtures();
                let f = &all[usize::from(*n) % all.len()];
                let mut r = f.response();
                *r.body_mut() = etcd::padded(r.body(), MAX_RESPONSE_BYTES + 1);
                r
            }
        }
    }
}

/// Runs a scenario through the harness; `Err` names the first violated invariant.
pub fn execute(scenario: &Scenario) -> Checked {
    let Some(config) = config(&scenario.config)? else {
        return Ok(());
    };
    let mut etcd = FakeEtcd {
        index: 3,
        key: config.key().as_str().to_owned(),
        me: config.node_id().as_str().to_owned(),
    };
    let mut h = Harness::new(config, crate::t0());
    let mut issued: Vec<OpId> = Vec::new();
    for (i, step) in scenario.steps.iter().take(MAX_STEPS).enumerate() {
        run_step(&mut h, &mut etcd, &mut issued, step)
            .map_err(|v| format!("{v}\n  at step {i}: {step:?}\n  state: {}", h.summary()))?;
    }
    h.quiesce()
        .map_err(|v| format!("{v}\n  while quiescing\n  state: {}", h.summary()))
}

fn run_step(h: &mut Harness, etcd: &mut FakeEtcd, issued: &mut Vec<OpId>, step: &Step) -> Checked {
    let pick = |h: &Harness, n: u8| -> Option<(RequestId, ReqKind)> {
        let out = h.outstanding();
        (!out.is_empty()).then(|| out[usize::from(n) % out.len()])
    };
    let mut command = |h: &mut Harness, cmd| -> Checked {
        let (op, _) = h.command(cmd)?;
        issued.push(op);
        Ok(())
    };
    match step {
        Step::Lock => command(h, Cmd::Lock)?,
        Step::Unlock => command(h, Cmd::Unlock)?,
        Step::Renew => command(h, Cmd::Renew)?,
        Step::Acquire(ms) => {
            let deadline = ms.map(|ms| h.now() + Duration::from_millis(u64::from(ms)));
            command(h, Cmd::Acquire(deadline))?
        }
        Step::Cancel(n) => {
            let op = match issued.len() {
                0 => None,
                len => Some(issued[usize::from(*n) % len]),
            };
            if let Some(op) = op {
                h.cancel(op)?;
            }
        }
        Step::AutoRenew(on) => {
            h.set_auto_renew(*on)?;
        }
        Step::Watch(on) => {
            h.set_watching(*on)?;
        }
        Step::Destroy => {
            h.destroy()?;
        }
        Step::Advance(ms) => h.advance(Duration::from_millis(u64::from(*ms))),
        Step::FireTimer => {
            h.fire_timer()?;
        }
        Step::TimerEarlier(ms) => {
            let at = h
                .now()
                .checked_sub(Duration::from_millis(u64::from(*ms)))
                .unwrap_or(h.now());
            h.timeout_at(at)?;
        }
        Step::Answer(n, answer) => {
            if let Some((id, kind)) = pick(h, *n) {
                let token = h.lock().fence().map(|f| f.token());
                let response = etcd.answer(answer, Some(kind), token);
                h.respond(id, response)?;
            }
        }
        Step::Fail(n) => {
            if let Some((id, _)) = pick(h, *n) {
                h.fail(id)?;
            }
        }
        Step::Stale(back, sent, answer) => {
            let last = h.last_request();
            let id = if *sent {
                // An earlier request that is no longer outstanding, if any.
                let candidate = last.saturating_sub(u64::from(*back));
                let outstanding = h.outstanding();
                if candidate == 0 || outstanding.iter().any(|(id, _)| id.as_raw() == candidate) {
                    return Ok(());
                }
                candidate
            } else {
                last + 1 + u64::from(*back)
            };
            let response = etcd.answer(answer, None, None);
            h.respond(RequestId::from_raw(id), response)?;
        }
    }
    Ok(())
}
