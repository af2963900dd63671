//! Target `responses`: an arbitrary HTTP answer (status, `X-Etcd-Index`, body) to each kind of
//! request the machine can be waiting for.
//!
//! The machine is first brought into one of the [`Scenario`]s with well-formed etcd answers;
//! the fuzzed answer then goes to the pending request; the same answer again (now stale) and
//! to a never-sent id must change nothing; then every later request fails and every timer
//! fires until the machine is quiet.
//!
//! The same run is made a second time with every answer delivered in pieces (head, the body
//! cut at the points [`cuts`] draws from the input's bytes, end: a mutation of the input moves
//! them), and must put out exactly what the whole answer did, and end its command the same way;
//! a body passing `MAX_RESPONSE_BYTES` must be refused as soon as the piece that passes the
//! bound is fed (see [`Harness::respond_in_pieces`](crate::harness::Harness::respond_in_pieces)). Besides every [`harness`](crate::harness) invariant, the
//! outcome is judged against [`etcd::shape`](crate::etcd::shape), an oracle independent of the
//! machine's parser:
//!
//! - garbage (oversized, bad status, non-numeric `X-Etcd-Index`, not UTF-8, not JSON, JSON of
//!   the wrong shape) or an empty 2xx answering a write ends the command with `Protocol`;
//!   answering the quorum read that settles a lost write, with the write's own `Transport`
//!   failure; a waiting acquire keeps waiting (`WaitTimeout` at its deadline). Garbage to a
//!   GET starts no new request at once (a back-off timer instead: no hot loop against a broken
//!   proxy), and produces no event;
//! - every success, contention or ownership result is backed by the answer: `Locked` /
//!   `Acquired` / `Renewed` by a `create` / `compareAndSwap` / `get` naming this node id, with
//!   the fence's token its `createdIndex`; `AlreadyLocked` by errorCode 105 (index as sent);
//!   `LockNotOwned` by errorCode 100 or 101; `Etcd` by the same code and status.
//!
//! Input layout (also what [`encode`] writes, for seeds built from the recorded fixtures):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | scenario, modulo the number of [`SCENARIOS`] |
//! | 1 | flags: bit 0 the unicode key and node id; bit 1 an `X-Etcd-Index` header; bits 2–7: 1 = body padded with spaces to exactly `MAX_RESPONSE_BYTES`, 2 = to `MAX_RESPONSE_BYTES + 1` |
//! | 2–3 | HTTP status, big-endian (outside 100..=999: 100 + status % 900) |
//! | 4 | header length `n` (only with bit 1) |
//! | 5.. | `n` bytes of `X-Etcd-Index` value, then the body (the rest) |

use std::time::{Duration, Instant};

use microlock_proto::http::Response;
use microlock_proto::{
    Config, Error, Event, LostReason, OpId, Outcome, RequestId, MAX_RESPONSE_BYTES,
};
use serde_json::Value;

use crate::etcd::{self, shape, Shape};
use crate::harness::{ensure, Checked, Cmd, Harness, ReqKind, Step, TRANSPORT_REASON};

/// Which request the fuzzed answer goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `lock()`'s `PUT ?prevExist=false`.
    LockWrite,
    /// `acquire()`'s first `PUT ?prevExist=false`.
    AcquireWrite,
    /// `acquire()`'s long poll after a 412 "Key already exists".
    AcquireWait,
    /// `unlock()`'s `DELETE`, not holding.
    UnlockWrite,
    /// `unlock()`'s `DELETE`, holding (token 4).
    UnlockWriteHeld,
    /// `renew()`'s `PUT ?prevValue=`, holding.
    RenewWrite,
    /// `renew()` not holding: the quorum GET it sends first (it never sends an unpinned
    /// refresh).
    RenewWriteNotHeld,
    /// auto-renew's `PUT ?prevValue=` (no caller), holding.
    AutoRenewWrite,
    /// The quorum GET settling a `lock()` whose write failed in transport.
    ResolveLock,
    /// The quorum GET settling an `acquire()`'s lost write.
    ResolveAcquire,
    /// The `renew()` sent again (to the next member) after its first answer was lost, holding:
    /// a renew needs no read to settle it.
    ResolveRenew,
    /// The quorum GET settling an `unlock()`'s lost write, holding.
    ResolveUnlock,
    /// The watch's first quorum GET.
    WatchRead,
    /// The watch's long poll, key free.
    WatchPoll,
    /// The watch's long poll, this node holding the key (token 4).
    WatchPollHeld,
}

/// Every scenario, in input order.
pub const SCENARIOS: [Scenario; 15] = [
    Scenario::LockWrite,
    Scenario::AcquireWrite,
    Scenario::AcquireWait,
    Scenario::UnlockWrite,
    Scenario::UnlockWriteHeld,
    Scenario::RenewWrite,
    Scenario::RenewWriteNotHeld,
    Scenario::AutoRenewWrite,
    Scenario::ResolveLock,
    Scenario::ResolveAcquire,
    Scenario::ResolveRenew,
    Scenario::ResolveUnlock,
    Scenario::WatchRead,
    Scenario::WatchPoll,
    Scenario::WatchPollHeld,
];

/// The body padding of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    /// The body as given.
    None,
    /// Spaces up to exactly `MAX_RESPONSE_BYTES` (still accepted).
    ToMax,
    /// Spaces up to `MAX_RESPONSE_BYTES + 1` (refused).
    OverMax,
}

/// A decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Where the answer goes.
    pub scenario: Scenario,
    /// The key `locks/räksmörgås lock ✓` and node id `node-ä` (the recorded unicode fixtures')
    /// instead of `lock` and `node-a`.
    pub unicode: bool,
    /// The HTTP status.
    pub status: u16,
    /// The `X-Etcd-Index` value's bytes.
    pub etcd_index: Option<Vec<u8>>,
    /// Padding.
    pub pad: Pad,
    /// The body.
    pub body: Vec<u8>,
}

impl Input {
    /// Decodes `data` (never fails: missing bytes are zeros / empty).
    pub fn decode(data: &[u8]) -> Input {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let scenario = SCENARIOS[usize::from(byte(0)) % SCENARIOS.len()];
        let flags = byte(1);
        let status = u16::from_be_bytes([byte(2), byte(3)]);
        let mut at = 4;
        let etcd_index = if flags & 2 != 0 {
            let n = usize::from(byte(4));
            at = 5;
            let end = (at + n).min(data.len().max(at));
            let value = data.get(at..end).unwrap_or_default().to_vec();
            at = end;
            Some(value)
        } else {
            None
        };
        // Padding only on exact values: most inputs stay small and fast.
        let pad = match flags >> 2 {
            1 => Pad::ToMax,
            2 => Pad::OverMax,
            _ => Pad::None,
        };
        Input {
            scenario,
            unicode: flags & 1 != 0,
            status,
            etcd_index,
            pad,
            body: data.get(at..).unwrap_or_default().to_vec(),
        }
    }

    /// The answer this input describes.
    pub fn response(&self) -> Response<Vec<u8>> {
        let body = match self.pad {
            Pad::None => self.body.clone(),
            Pad::ToMax => etcd::padded(&self.body, MAX_RESPONSE_BYTES),
            Pad::OverMax => etcd::padded(&self.body, MAX_RESPONSE_BYTES + 1),
        };
        etcd::response(self.status, self.etcd_index.as_deref(), body)
    }
}

/// Where a body of `len` bytes is cut when `input`'s answer is delivered in pieces: up to 8 cuts
/// (empty pieces included), drawn from a hash of the input's bytes; for a body past the bound,
/// also one just before and one just past it, so that the piece passing the bound is small.
pub fn cuts(input: &Input, len: usize) -> Vec<usize> {
    // FNV-1a over the encoded input, then xorshift.
    let mut state = encode(input)
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
        | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let count = next() % 9;
    let mut cuts: Vec<usize> = (0..count)
        .map(|_| (next() % (len as u64 + 1)) as usize)
        .collect();
    if len > MAX_RESPONSE_BYTES {
        cuts.extend([MAX_RESPONSE_BYTES - 1, MAX_RESPONSE_BYTES]);
    }
    cuts.sort_unstable();
    cuts
}

/// Encodes an input (the inverse of [`Input::decode`] for statuses in 100..=999 and headers
/// up to 255 bytes).
pub fn encode(input: &Input) -> Vec<u8> {
    let index = SCENARIOS
        .iter()
        .position(|s| *s == input.scenario)
        .expect("a scenario") as u8;
    let mut flags = u8::from(input.unicode);
    if input.etcd_index.is_some() {
        flags |= 2;
    }
    flags |= match input.pad {
        Pad::None => 0,
        Pad::ToMax => 1 << 2,
        Pad::OverMax => 2 << 2,
    };
    let mut out = vec![index, flags];
    out.extend_from_slice(&input.status.to_be_bytes());
    if let Some(h) = &input.etcd_index {
        out.push(h.len() as u8);
        out.extend_from_slice(&h[..h.len().min(255)]);
    }
    out.extend_from_slice(&input.body);
    out
}

/// The key and node id of an input.
pub fn names(unicode: bool) -> (&'static str, &'static str) {
    if unicode {
        ("locks/räksmörgås lock ✓", "node-ä")
    } else {
        ("lock", "node-a")
    }
}

/// Runs one input; panics with a description on any violation.
pub fn run(data: &[u8]) {
    let input = Input::decode(data);
    if let Err(violation) = check(&input) {
        panic!(
            "responses: {violation}\ninput: {:?} unicode {} status {} X-Etcd-Index {:?} pad \
             {:?} body {:?}",
            input.scenario,
            input.unicode,
            input.status,
            input.etcd_index.as_deref().map(String::from_utf8_lossy),
            input.pad,
            String::from_utf8_lossy(&input.body[..input.body.len().min(2000)])
        );
    }
}

/// Brings a harness into the scenario; returns it, the command (if any) and the request the
/// fuzzed answer goes to.
fn setup(input: &Input, t0: Instant) -> Checked<(Harness, Option<OpId>, RequestId)> {
    let (key, node) = names(input.unicode);
    // The key's own protocol (the fair acquire's queue: `make dst` and tests/fair.rs).
    let mut config = Config::new(key, node, Duration::from_secs(5))
        .expect("valid config")
        .with_fair_acquire(false);
    if input.scenario == Scenario::AutoRenewWrite {
        config = config.with_auto_renew(true);
    }
    let mut h = Harness::new(config, t0);
    let deadline = Some(t0 + Duration::from_secs(2));
    let only = |step: &Step, kind: fn(ReqKind) -> bool| -> Checked<RequestId> {
        match step.requests.as_slice() {
            [(id, k)] if kind(*k) => Ok(*id),
            other => Err(format!("setup: expected one request, got {other:?}")),
        }
    };
    let hold = |h: &mut Harness| -> Checked {
        let (op, step) = h.command(Cmd::Lock)?;
        let id = only(&step, |k| k == ReqKind::Create)?;
        h.respond(id, etcd::created(key, node, 4))?;
        ensure!(
            matches!(h.ops()[&op].result, Some(Ok(Outcome::Locked(_)))),
            "setup: lock failed: {:?}",
            h.ops()[&op].result
        );
        Ok(())
    };
    let is_create = |k| k == ReqKind::Create;
    let is_refresh = |k| k == ReqKind::Refresh;
    let is_delete = |k| matches!(k, ReqKind::Delete(_));
    let is_read = |k| k == ReqKind::Read;
    let is_watch = |k| matches!(k, ReqKind::Watch(_));
    let (op, target) = match input.scenario {
        Scenario::LockWrite => {
            let (op, step) = h.command(Cmd::Lock)?;
            (Some(op), only(&step, is_create)?)
        }
        Scenario::AcquireWrite => {
            let (op, step) = h.command(Cmd::Acquire(deadline))?;
            (Some(op), only(&step, is_create)?)
        }
        Scenario::AcquireWait => {
            let (op, step) = h.command(Cmd::Acquire(deadline))?;
            let id = only(&step, is_create)?;
            let step = h.respond(id, etcd::exists(key, 4))?;
            (Some(op), only(&step, is_watch)?)
        }
        Scenario::UnlockWrite => {
            // Knowing no hold, an unlock may read the key first: it is ours (token 4).
            let (op, step) = h.command(Cmd::Unlock)?;
            let step = match step.requests.as_slice() {
                [(id, ReqKind::Read)] => h.respond(*id, etcd::got(key, Some(node), 4, 4, 4))?,
                _ => step,
            };
            (Some(op), only(&step, is_delete)?)
        }
        Scenario::UnlockWriteHeld => {
            hold(&mut h)?;
            let (op, step) = h.command(Cmd::Unlock)?;
            (Some(op), only(&step, is_delete)?)
        }
        Scenario::RenewWrite => {
            hold(&mut h)?;
            let (op, step) = h.command(Cmd::Renew)?;
            (Some(op), only(&step, is_refresh)?)
        }
        Scenario::RenewWriteNotHeld => {
            let (op, step) = h.command(Cmd::Renew)?;
            (Some(op), only(&step, is_read)?)
        }
        Scenario::AutoRenewWrite => {
            hold(&mut h)?;
            let step = h.fire_timer()?.ok_or("setup: no auto-renew timer")?;
            (None, only(&step, is_refresh)?)
        }
        Scenario::ResolveLock
        | Scenario::ResolveAcquire
        | Scenario::ResolveRenew
        | Scenario::ResolveUnlock => {
            let (cmd, kind): (Cmd, fn(ReqKind) -> bool) = match input.scenario {
                Scenario::ResolveLock => (Cmd::Lock, is_create),
                Scenario::ResolveAcquire => (Cmd::Acquire(deadline), is_create),
                Scenario::ResolveRenew => (Cmd::Renew, is_refresh),
                _ => (Cmd::Unlock, is_delete),
            };
            if matches!(cmd, Cmd::Renew | Cmd::Unlock) {
                hold(&mut h)?;
            }
            let (op, step) = h.command(cmd)?;
            let id = only(&step, kind)?;
            let mut step = h.fail(id)?;
            let settle: fn(ReqKind) -> bool = match cmd {
                Cmd::Renew => is_refresh,
                _ => is_read,
            };
            if step.requests.is_empty() {
                // The only member just failed: the next attempt waits a little.
                step = h.fire_timer()?.ok_or("setup: no retry timer")?;
            }
            (Some(op), only(&step, settle)?)
        }
        Scenario::WatchRead => {
            let step = h.set_watching(true)?;
            (None, only(&step, is_read)?)
        }
        Scenario::WatchPoll => {
            let step = h.set_watching(true)?;
            let id = only(&step, is_read)?;
            let step = h.respond(id, etcd::not_found(key, 3))?;
            (None, only(&step, is_watch)?)
        }
        Scenario::WatchPollHeld => {
            hold(&mut h)?;
            let step = h.set_watching(true)?;
            let id = only(&step, is_read)?;
            let step = h.respond(id, etcd::got(key, Some(node), 4, 4, 4))?;
            ensure!(
                matches!(step.events.as_slice(), [Event::Locked { token: 4, .. }]),
                "setup: the watch did not report the holder: {:?}",
                step.events
            );
            (None, only(&step, is_watch)?)
        }
    };
    Ok((h, op, target))
}

fn check(input: &Input) -> Checked {
    let t0 = crate::t0();
    let (mut h, op, target) = setup(input, t0)?;
    let (_, node) = names(input.unicode);
    let kind = h
        .outstanding()
        .into_iter()
        .find(|(id, _)| *id == target)
        .map(|(_, k)| k)
        .ok_or("setup: the target is not outstanding")?;
    let fence_before = h.lock().fence();
    let response = input.response();
    let s = shape(&response);
    let garbage = matches!(s, Shape::Garbage(_));
    let step = h.respond(target, response)?;

    // The same answer again, and to a request never sent: nothing happens.
    h.respond(target, input.response())?;
    h.respond(
        RequestId::from_raw(h.last_request() + 1000),
        input.response(),
    )?;

    // The same run with the answer in pieces: the same outputs.
    let (mut p, _, _) = setup(input, t0)?;
    let cuts = cuts(input, input.response().body().len());
    let pieces = p.respond_in_pieces(target, input.response(), &cuts)?;
    ensure!(
        format!("{pieces:?}") == format!("{step:?}"),
        "the answer in pieces (cut at {cuts:?}) did {pieces:?}, whole it did {step:?}"
    );
    p.respond_in_pieces(target, input.response(), &cuts)?;
    p.respond_in_pieces(
        RequestId::from_raw(p.last_request() + 1000),
        input.response(),
        &cuts,
    )?;

    let is_get = matches!(kind, ReqKind::Read | ReqKind::Watch(_));
    if garbage && is_get {
        ensure!(
            step.requests.is_empty(),
            "garbage ({s:?}) to a {kind:?} was retried at once: {:?}",
            step.requests
        );
        ensure!(
            step.events.is_empty(),
            "garbage ({s:?}) to a {kind:?} produced events {:?}",
            step.events
        );
    }
    for event in &step.events {
        match event {
            Event::Locked { holder, token } => {
                let backed = match &s {
                    Shape::Action(v) => {
                        v["node"]["value"].as_str() == Some(holder.as_str())
                            && v["node"]["createdIndex"].as_u64() == Some(*token)
                    }
                    Shape::Unclear => true,
                    _ => false,
                };
                ensure!(backed, "{event:?} not backed by the answer {s:?}");
            }
            Event::Unlocked { .. } => ensure!(
                matches!(s, Shape::Action(_) | Shape::Unclear),
                "{event:?} not backed by the answer {s:?}"
            ),
            Event::Lost { reason, .. } => match reason {
                LostReason::NotOwned => ensure!(
                    matches!(
                        s,
                        Shape::EtcdError {
                            code: 100 | 101,
                            ..
                        } | Shape::Action(_)
                            | Shape::Unclear
                    ),
                    "{event:?} not backed by the answer {s:?}"
                ),
                LostReason::Superseded => ensure!(
                    matches!(s, Shape::Action(_) | Shape::Unclear),
                    "{event:?} not backed by the answer {s:?}"
                ),
                _ => {}
            },
            _ => {}
        }
    }
    if input.scenario == Scenario::AutoRenewWrite && (garbage || s == Shape::Empty) {
        ensure!(
            h.lock().fence() == fence_before && step.events.is_empty(),
            "garbage to auto-renew changed the hold: {fence_before:?} -> {:?}, events {:?}",
            h.lock().fence(),
            step.events
        );
    }

    h.quiesce()?;
    p.quiesce()?;
    if let Some(op) = op {
        let (whole, pieces) = (&h.ops()[&op].result, &p.ops()[&op].result);
        ensure!(
            whole == pieces,
            "whole, the command ended {whole:?}; in pieces, {pieces:?}"
        );
    }

    let Some(op) = op else { return Ok(()) };
    let state = &h.ops()[&op];
    let result = state.result.clone().ok_or("quiesce left the op pending")?;
    let resolving = matches!(
        input.scenario,
        Scenario::ResolveLock
            | Scenario::ResolveAcquire
            | Scenario::ResolveRenew
            | Scenario::ResolveUnlock
    );
    let acquire = matches!(state.cmd, Cmd::Acquire(_));
    let unusable = garbage || s == Shape::Empty;
    if unusable && !matches!(input.scenario, Scenario::AcquireWait) {
        let ok = match (&result, acquire, resolving) {
            (Err(Error::WaitTimeout { .. }), true, _) => true,
            (Err(Error::Protocol { .. }), false, false) => true,
            (Err(Error::Transport { reason }), false, true) => reason == TRANSPORT_REASON,
            // A renew is sent again after an unusable answer; the attempts after it fail in
            // transport (the harness settles with transport failures): the last one's error.
            (Err(Error::Transport { reason }), false, false) if state.cmd == Cmd::Renew => {
                reason == TRANSPORT_REASON
            }
            _ => false,
        };
        ensure!(
            ok,
            "{:?}: the unusable answer {s:?} ended {:?} with {result:?}",
            input.scenario,
            state.cmd
        );
    }
    if resolving {
        ensure!(
            !matches!(result, Err(Error::Protocol { .. })),
            "a quorum read's answer turned a lost write into {result:?}"
        );
    }
    let node_backs = |v: &Value, token: u64, actions: &[&str]| {
        actions.contains(&v["action"].as_str().unwrap_or(""))
            && v["node"]["value"].as_str() == Some(node)
            && v["node"]["createdIndex"].as_u64() == Some(token)
    };
    match &result {
        Ok(Outcome::Locked(f) | Outcome::Acquired(f) | Outcome::Renewed(f)) => {
            let actions: &[&str] = match (resolving, state.cmd) {
                (_, Cmd::Renew) => &["compareAndSwap"],
                (true, _) => &["get"],
                _ => &["create"],
            };
            let backed = match &s {
                Shape::Action(v) => node_backs(v, f.token(), actions),
                Shape::Unclear => true,
                _ => false,
            };
            ensure!(
                backed,
                "{:?} succeeded ({result:?}) on the answer {s:?}",
                state.cmd
            );
            if resolving {
                ensure!(
                    etcd::etcd_index(&input.response()).ok().flatten().is_some(),
                    "a read without X-Etcd-Index settled a lost write as {result:?}"
                );
            }
        }
        Ok(Outcome::Unlocked) if !resolving => ensure!(
            matches!(&s, Shape::Action(v) if v["action"] == "compareAndDelete")
                || s == Shape::Unclear,
            "unlock succeeded on the answer {s:?}"
        ),
        Err(Error::AlreadyLocked { index, .. }) if !resolving && !acquire => ensure!(
            matches!(s, Shape::EtcdError { code: 105, index: i, .. } if i.unwrap_or(0) == *index)
                || s == Shape::Unclear,
            "{result:?} not backed by the answer {s:?}"
        ),
        Err(Error::LockNotOwned { .. }) if !resolving => ensure!(
            matches!(
                s,
                Shape::EtcdError {
                    code: 100 | 101,
                    ..
                }
            ) || s == Shape::Unclear,
            "{result:?} not backed by the answer {s:?}"
        ),
        Err(Error::Etcd { code, status, .. }) => ensure!(
            matches!(s, Shape::EtcdError { code: c, status: st, .. } if c == *code && st == *status)
                || s == Shape::Unclear,
            "{result:?} not backed by the answer {s:?}"
        ),
        _ => {}
    }
    Ok(())
}

/// Seeds: every recorded etcd 3.4 answer to the request kind it answers, and a catalogue of
/// hostile answers. Named `seed-fixture-<file>-<scenario>`, `seed-hostile-<what>`, and
/// `crash-<what>` for the hostile answers that crashed the machine or broke an invariant.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use Scenario as S;
    let mut out = Vec::new();
    let mut add = |name: String, input: Input| out.push((name, encode(&input)));
    let plain = |scenario, unicode, status, index: Option<&str>, body: &[u8]| Input {
        scenario,
        unicode,
        status,
        etcd_index: index.map(|i| i.as_bytes().to_vec()),
        pad: Pad::None,
        body: body.to_vec(),
    };
    for f in etcd::fixtures().iter().filter(|f| f.version == "etcd-3.4") {
        let scenarios: &[Scenario] = match f.name {
            "lock_ok" | "lock_ok_unicode" | "lock_conflict" | "bad_ttl" | "root_read_only" => {
                &[S::LockWrite, S::AcquireWrite]
            }
            "renew_ok"
            | "renew_other"
            | "renew_missing"
            | "refresh_with_value"
            | "refresh_without_ttl" => &[S::RenewWrite, S::AutoRenewWrite],
            "unlock_ok" | "unlock_ok_unicode" | "unlock_other" | "unlock_missing" => {
                &[S::UnlockWriteHeld]
            }
            "get_ok" | "get_ok_unicode" | "get_missing" => &[
                S::WatchRead,
                S::ResolveLock,
                S::ResolveRenew,
                S::ResolveUnlock,
            ],
            _ => &[S::WatchPoll, S::WatchPollHeld, S::AcquireWait],
        };
        // The first kind each answers (the others are a mutation away).
        for &scenario in &scenarios[..1] {
            let input = plain(
                scenario,
                f.name.ends_with("_unicode"),
                f.status,
                f.etcd_index.as_deref(),
                f.body.as_bytes(),
            );
            add(format!("seed-fixture-{}-{scenario:?}", f.name), input);
        }
    }
    let lock_ok = etcd::fixture("etcd-3.4", "lock_ok");
    let ok = lock_ok.body.as_bytes();
    let idx = Some("4");
    let hostile: Vec<(&str, Input)> = vec![
        ("truncated-json", plain(S::LockWrite, false, 201, idx, &ok[..ok.len() / 2])),
        ("non-utf8-value", {
            let body = lock_ok.body.replace("node-a", "node-\u{0}").into_bytes();
            let body: Vec<u8> = body.iter().map(|&b| if b == 0 { 0xff } else { b }).collect();
            plain(S::LockWrite, false, 201, idx, &body)
        }),
        ("non-utf8-ignored-field", {
            let body = (lock_ok.body)
                .replace("\"action\":\"create\",", "\"action\":\"create\",\"note\":\"\u{0}\",")
                .into_bytes();
            let body: Vec<u8> = body.iter().map(|&b| if b == 0 { 0xfe } else { b }).collect();
            plain(S::LockWrite, false, 201, idx, &body)
        }),
        ("action-not-string", plain(S::LockWrite, false, 201, idx, br#"{"action":7}"#)),
        (
            "created-index-string",
            plain(
                S::LockWrite,
                false,
                201,
                idx,
                br#"{"action":"create","node":{"key":"/lock","value":"node-a","modifiedIndex":4,"createdIndex":"4"}}"#,
            ),
        ),
        (
            "array-body",
            plain(
                S::LockWrite,
                false,
                201,
                idx,
                br#"["create",{"key":"/lock","value":"node-a","modifiedIndex":4,"createdIndex":4},null]"#,
            ),
        ),
        (
            "other-holder-create",
            plain(
                S::LockWrite,
                false,
                201,
                idx,
                br#"{"action":"create","node":{"key":"/lock","value":"node-b","modifiedIndex":4,"createdIndex":4}}"#,
            ),
        ),
        ("bad-gateway-html", plain(S::LockWrite, false, 502, None, b"<html>bad gateway</html>")),
        ("redirect", plain(S::LockWrite, false, 301, None, b"")),
        ("empty-200", plain(S::LockWrite, false, 200, None, b"")),
        ("empty-204-renew", plain(S::RenewWrite, false, 204, None, b"")),
        ("index-header-not-number", plain(S::LockWrite, false, 201, Some("abc"), ok)),
        ("index-header-negative", plain(S::WatchRead, false, 404, Some("-1"), etcd::fixture("etcd-3.4", "get_missing").body.as_bytes())),
        ("index-header-spaces", plain(S::WatchRead, false, 404, Some(" 7 "), etcd::fixture("etcd-3.4", "get_missing").body.as_bytes())),
        ("read-without-index-header", plain(S::ResolveLock, false, 200, None, etcd::fixture("etcd-3.4", "get_ok").body.as_bytes())),
        (
            "exists-index-u64-max",
            plain(
                S::AcquireWrite,
                false,
                412,
                Some("18446744073709551615"),
                br#"{"errorCode":105,"message":"Key already exists","cause":"/lock","index":18446744073709551615}"#,
            ),
        ),
        (
            "watch-modified-u64-max",
            plain(
                S::WatchPoll,
                false,
                200,
                Some("3"),
                br#"{"action":"create","node":{"key":"/lock","value":"node-b","modifiedIndex":18446744073709551615,"createdIndex":5}}"#,
            ),
        ),
        (
            "read-index-u64-max",
            plain(
                S::WatchRead,
                false,
                404,
                Some("18446744073709551615"),
                br#"{"errorCode":100,"message":"Key not found","cause":"/lock","index":18446744073709551615}"#,
            ),
        ),
        (
            "wait-event-u64-max",
            plain(
                S::AcquireWait,
                false,
                200,
                Some("4"),
                br#"{"action":"compareAndSwap","node":{"key":"/lock","value":"node-b","modifiedIndex":18446744073709551615,"createdIndex":4}}"#,
            ),
        ),
        (
            "etcd-error-wrong-types",
            plain(S::UnlockWriteHeld, false, 412, None, br#"{"errorCode":"101","message":7}"#),
        ),
        ("deep-nesting", plain(S::WatchPoll, false, 200, None, &[b'['; 4096])),
    ];
    // Those that crashed the machine or broke an invariant when written (see the report in
    // the corpus README): kept as `crash-*`.
    let crashes = [
        ("array-body", "crash-array-body-accepted-as-create"),
        (
            "non-utf8-ignored-field",
            "crash-non-utf8-body-accepted-as-create",
        ),
        (
            "exists-index-u64-max",
            "crash-overflow-acquire-exists-index-u64-max",
        ),
        (
            "watch-modified-u64-max",
            "crash-overflow-watch-event-modified-u64-max",
        ),
        (
            "read-index-u64-max",
            "crash-overflow-watch-read-index-u64-max",
        ),
        (
            "wait-event-u64-max",
            "crash-overflow-acquire-wait-event-u64-max",
        ),
    ];
    for (name, input) in hostile {
        match crashes.iter().find(|(n, _)| *n == name) {
            Some((_, crash)) => add(crash.to_string(), input),
            None => add(format!("seed-hostile-{name}"), input),
        }
    }
    let mut max = plain(S::LockWrite, false, 201, idx, ok);
    max.pad = Pad::ToMax;
    add("seed-hostile-body-exactly-max".into(), max.clone());
    max.pad = Pad::OverMax;
    add("seed-hostile-body-over-max".into(), max);
    out
}
