//! Target `responses_v3`: a [`Lock`](microlock_proto::Lock) speaking etcd v3 (the JSON gateway)
//! driven by a script of commands, answers, failures and time, against a world whose answers
//! are built from the input.
//!
//! The world is [`SimEtcdV3`], the byte-exact model of etcd's v3 gateway (3.4 or 3.5): a
//! *genuine* answer is what etcd would answer, so the fuzzer reaches deep states with few
//! bytes (grant → take → held → renew → watch read → watch stream → release), and other
//! clients of the same lock (their own leases and keys, releases, revokes, compactions) make
//! contention and watch events real. Besides, the script can answer with a genuine answer
//! *mutated* (bytes set, cut, numbers replaced by huge, negative or overflowing ones, base64
//! broken, fields deleted or retyped, statuses changed, lines doubled), with a *made-up* one
//! (every error etcd 3.4 and 3.5 were seen to send, shapes etcd never sends, raw bytes), pad
//! it to exactly `MAX_RESPONSE_BYTES` or one byte more, fail a request in transport (after
//! etcd applied it, before, or at connect), deliver a request etcd applies only after the
//! machine gave up on it, answer requests that are not outstanding, let time pass, fire
//! timers, and deliver watch streams message by message: etcd's lines and injected ones
//! (created, cancelled, compacted, stream errors, events, garbage), several per chunk, cut at
//! chosen points, left open, ended or cut, and endless bodies.
//!
//! Once the script is over, the world stops answering: every request fails (in transport, at
//! connect, or by its timeout, as the input's policy says) and time jumps to the machine's
//! next timer. Every pending command must then complete within a bound derived from its
//! budgets (`operation_timeout` + request timeouts per queued command, an acquire's
//! deadline); the watch and auto-renew are switched off and the machine must go quiet
//! (nothing outstanding, no timer, no fence); `destroy` must revoke and stop.
//!
//! Checked besides every [`harness_v3`](crate::harness_v3) invariant:
//! - while the world has answered only as etcd would (no mutated, made-up or injected answer),
//!   a node that believes it holds the lock (`is_held(now)`) really does in etcd: the oldest key
//!   under `NAME/` has the fence's token as its create revision and the node id as its value;
//!   fencing tokens never go down;
//! - endless watch bodies: a body without line ends is refused (the request named for cancel)
//!   once it passes the bound; any endless body leaves at most [`MAX_RETAINED`] more bytes held
//!   (measured by the counting allocator when the binary installs it);
//! - the same script run twice, unary answers delivered whole and then in pieces (head, body
//!   cut at points drawn from a hash of the answer, end), puts out exactly the same steps.
//!
//! The input is a [`Script`]: two header bytes (configuration, silent-world policy), then
//! [`Action`]s, each an opcode byte and its arguments (see [`Action::decode`]); missing bytes
//! read as zeros. [`seeds`] writes scripts for the checked-in corpus.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use microlock_proto::http::{header, Method, Request, Response};
use microlock_proto::sim::etcd_v3::{EtcdVersion, SimEtcdV3, WatchId};
use microlock_proto::{Config, Endpoint, OpId, Protocol, RequestId, MAX_RESPONSE_BYTES};
use serde_json::{json, Value};

use crate::harness::{ensure, Checked};
use crate::harness_v3::{b64, lease_hex, range_end, skipping, unb64, Cmd, Harness3, Kind, Step};

/// The most actions a script has.
pub const MAX_ACTIONS: usize = 256;
/// The most bytes an endless watch body may leave held (the machine keeps at most one message
/// of `MAX_RESPONSE_BYTES` and a chunk per stream, with the allocator's slack).
pub const MAX_RETAINED: isize = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The script
// ---------------------------------------------------------------------------------------------

/// A command in a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdSpec {
    /// `lock`.
    Lock,
    /// `acquire`, with a deadline this many 200 ms from now (`None`: without).
    Acquire(Option<u8>),
    /// `unlock`.
    Unlock,
    /// `renew`.
    Renew,
    /// `read`.
    Read,
}

/// How a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// etcd applied it, then the connection broke (the answer is lost).
    Lost,
    /// The connection broke before etcd applied it (etcd may still apply it: [`Action::Delayed`]).
    Reset,
    /// It never reached etcd (connection refused).
    Refused,
}

/// A mutation of an answer's body or status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mutation {
    /// What (see [`mutate`]).
    pub what: u8,
    /// Where.
    pub at: u16,
    /// With what.
    pub with: u8,
}

/// A line injected into a watch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inject {
    /// What (see [`injected`]); bit 7: after etcd's lines instead of before.
    pub what: u8,
    /// A parameter.
    pub a: u16,
    /// Another.
    pub b: u8,
}

/// What another client of the same lock does (through etcd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherOp {
    /// Takes a place: a lease of `2 + arg % 28` s and its key under the prefix (value
    /// `node-b`, or this node's id when `arg` ≥ 128: a restarted process of this node).
    Take(u8),
    /// Deletes the key of its `arg`-th place.
    Release(u8),
    /// Revokes the lease of its `arg`-th place.
    Revoke(u8),
    /// Keeps the lease of its `arg`-th place alive.
    KeepAlive(u8),
    /// Compacts etcd's history up to `arg % 4` revisions before the current one.
    Compact(u8),
    /// Puts a key without a lease under the prefix (an `etcdctl put` of a stranger).
    Stray(u8),
}

/// What the endless body of [`Action::Endless`] repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// A progress message (header only, the current revision), as etcd sends.
    Progress,
    /// A put and a delete of a stranger's key: the holder comes and goes.
    Churn,
    /// Raw bytes.
    Raw(Vec<u8>),
    /// Spaces, never a line end.
    Spaces,
    /// Line ends only.
    Newlines,
    /// `created` messages.
    Created,
}

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answers an outstanding request as etcd would (`pick`: 0 = the newest). A watch: its
    /// stream opens (head, then etcd's lines so far); an open stream: etcd's new lines.
    Answer {
        /// Which request.
        pick: u8,
    },
    /// Applies a request in etcd and answers it with the answer mutated.
    Mutated {
        /// Which request.
        pick: u8,
        /// The mutations, in order.
        mutations: Vec<Mutation>,
    },
    /// Answers a request with a made-up answer.
    Made {
        /// Which request.
        pick: u8,
        /// Whether etcd applies the request first.
        apply: bool,
        /// Which answer (see [`made`]).
        template: u8,
        /// A parameter.
        param: u16,
        /// Raw bytes (for the raw template).
        raw: Vec<u8>,
    },
    /// Fails a request.
    Fail {
        /// Which request.
        pick: u8,
        /// How.
        how: Fail,
    },
    /// Jumps to the machine's next timer and fires it.
    Timer,
    /// Lets time pass without telling the machine: below 128, that many 10 ms; else
    /// (n - 128) × 500 ms.
    Advance(u8),
    /// Issues a command.
    Command(CmdSpec),
    /// Switches the watch.
    Watch(bool),
    /// Switches auto-renew.
    AutoRenew(bool),
    /// Cancels a pending command (0 = the newest).
    Cancel(u8),
    /// Delivers an open watch stream's new lines with injected ones, cut into chunks.
    Pump {
        /// Which open stream (0 = the newest).
        pick: u8,
        /// Lines injected.
        inject: Vec<Inject>,
        /// Where the bytes are cut into chunks.
        cuts: Vec<u16>,
        /// 0, 1: the stream stays open; 2: it ends; 3: it is cut (transport failure).
        end: u8,
    },
    /// Feeds an open watch stream an endless body (until the machine cancels it or
    /// 1.25 × `MAX_RESPONSE_BYTES` passed), in chunks of `1 KiB << (size % 7)`.
    Endless {
        /// Which open stream.
        pick: u8,
        /// What repeats.
        pattern: Pattern,
        /// The chunk size.
        size: u8,
    },
    /// Another client acts.
    Other(OtherOp),
    /// etcd applies, late, a request the machine gave up on (cancelled, timed out, reset).
    Delayed(u8),
    /// Answers a request that is not outstanding (given up on, or never sent).
    Stale(u8),
    /// Answers a request as etcd would, its body padded with spaces to exactly
    /// `MAX_RESPONSE_BYTES` (`over`: one byte more).
    Oversize {
        /// Which request.
        pick: u8,
        /// One byte past the bound.
        over: bool,
    },
    /// Destroys the machine (only when the confirmation byte is below 32).
    Destroy(u8),
}

/// Opcode byte (mod 32) → action kind.
const OPCODES: [u8; 32] = [
    0, 0, 0, 0, 0, 0, // Answer
    1, 1, // Mutated
    2, // Made
    3, 3, // Fail
    4, 4, 4, // Timer
    5, // Advance
    6, 6, 6, // Command
    7, // Watch
    8, // AutoRenew
    9, // Cancel
    10, 10, // Pump
    11, // Endless
    12, 12, // Other
    13, // Delayed
    14, // Stale
    15, // Oversize
    16, // Destroy
    0, 0, // Answer
];

/// Reads bytes; past the end, zeros.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let from = self.at.min(self.data.len());
        let to = (self.at + n).min(self.data.len());
        self.at += n;
        self.data[from..to].to_vec()
    }

    fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }
}

impl Action {
    fn decode(b: &mut Bytes) -> Action {
        let pick = |b: &mut Bytes| b.u8();
        match OPCODES[usize::from(b.u8() % 32)] {
            0 => Action::Answer { pick: pick(b) },
            1 => {
                let pick = pick(b);
                let n = 1 + b.u8() % 3;
                let mutations = (0..n)
                    .map(|_| Mutation {
                        what: b.u8(),
                        at: b.u16(),
                        with: b.u8(),
                    })
                    .collect();
                Action::Mutated { pick, mutations }
            }
            2 => {
                let pick = pick(b);
                let flags = b.u8();
                let param = b.u16();
                let template = flags >> 1;
                let raw = if usize::from(template) % MADE_TEMPLATES == 0 {
                    let n = usize::from(b.u8());
                    b.take(n)
                } else {
                    Vec::new()
                };
                Action::Made {
                    pick,
                    apply: flags & 1 != 0,
                    template,
                    param,
                    raw,
                }
            }
            3 => {
                let pick = pick(b);
                let how = [Fail::Lost, Fail::Reset, Fail::Refused][usize::from(b.u8() % 3)];
                Action::Fail { pick, how }
            }
            4 => Action::Timer,
            5 => Action::Advance(b.u8()),
            6 => Action::Command(match b.u8() % 5 {
                0 => CmdSpec::Lock,
                1 => {
                    let d = b.u8();
                    CmdSpec::Acquire((d != 255).then_some(d))
                }
                2 => CmdSpec::Unlock,
                3 => CmdSpec::Renew,
                _ => CmdSpec::Read,
            }),
            7 => Action::Watch(b.u8() & 1 == 0),
            8 => Action::AutoRenew(b.u8() & 1 == 0),
            9 => Action::Cancel(b.u8()),
            10 => {
                let pick = pick(b);
                let n = b.u8() % 4;
                let inject = (0..n)
                    .map(|_| Inject {
                        what: b.u8(),
                        a: b.u16(),
                        b: b.u8(),
                    })
                    .collect();
                let n = b.u8() % 8;
                let cuts = (0..n).map(|_| b.u16()).collect();
                let end = b.u8() % 4;
                Action::Pump {
                    pick,
                    inject,
                    cuts,
                    end,
                }
            }
            11 => {
                let pick = pick(b);
                let pattern = match b.u8() % 6 {
                    0 => Pattern::Progress,
                    1 => Pattern::Churn,
                    2 => {
                        let n = usize::from(b.u8());
                        Pattern::Raw(b.take(n))
                    }
                    3 => Pattern::Spaces,
                    4 => Pattern::Newlines,
                    _ => Pattern::Created,
                };
                let size = b.u8();
                Action::Endless {
                    pick,
                    pattern,
                    size,
                }
            }
            12 => {
                let op = b.u8();
                let arg = b.u8();
                Action::Other(match op % 6 {
                    0 => OtherOp::Take(arg),
                    1 => OtherOp::Release(arg),
                    2 => OtherOp::Revoke(arg),
                    3 => OtherOp::KeepAlive(arg),
                    4 => OtherOp::Compact(arg),
                    _ => OtherOp::Stray(arg),
                })
            }
            13 => Action::Delayed(b.u8()),
            14 => Action::Stale(b.u8()),
            15 => {
                let pick = pick(b);
                Action::Oversize {
                    pick,
                    over: b.u8() & 1 != 0,
                }
            }
            _ => Action::Destroy(b.u8()),
        }
    }

    /// Writes the action as [`Action::decode`] reads it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let op = |kind: u8| OPCODES.iter().position(|&k| k == kind).expect("an opcode") as u8;
        match self {
            Action::Answer { pick } => out.extend([op(0), *pick]),
            Action::Mutated { pick, mutations } => {
                out.extend([op(1), *pick, (mutations.len() as u8).saturating_sub(1)]);
                for m in mutations {
                    out.push(m.what);
                    out.extend(m.at.to_be_bytes());
                    out.push(m.with);
                }
            }
            Action::Made {
                pick,
                apply,
                template,
                param,
                raw,
            } => {
                out.extend([op(2), *pick, template << 1 | u8::from(*apply)]);
                out.extend(param.to_be_bytes());
                if usize::from(*template) % MADE_TEMPLATES == 0 {
                    out.push(raw.len() as u8);
                    out.extend(raw);
                }
            }
            Action::Fail { pick, how } => {
                let how = match how {
                    Fail::Lost => 0,
                    Fail::Reset => 1,
                    Fail::Refused => 2,
                };
                out.extend([op(3), *pick, how]);
            }
            Action::Timer => out.push(op(4)),
            Action::Advance(n) => out.extend([op(5), *n]),
            Action::Command(c) => {
                out.push(op(6));
                match c {
                    CmdSpec::Lock => out.push(0),
                    CmdSpec::Acquire(d) => out.extend([1, d.unwrap_or(255)]),
                    CmdSpec::Unlock => out.push(2),
                    CmdSpec::Renew => out.push(3),
                    CmdSpec::Read => out.push(4),
                }
            }
            Action::Watch(on) => out.extend([op(7), u8::from(!on)]),
            Action::AutoRenew(on) => out.extend([op(8), u8::from(!on)]),
            Action::Cancel(pick) => out.extend([op(9), *pick]),
            Action::Pump {
                pick,
                inject,
                cuts,
                end,
            } => {
                out.extend([op(10), *pick, inject.len() as u8]);
                for i in inject {
                    out.push(i.what);
                    out.extend(i.a.to_be_bytes());
                    out.push(i.b);
                }
                out.push(cuts.len() as u8);
                for c in cuts {
                    out.extend(c.to_be_bytes());
                }
                out.push(*end);
            }
            Action::Endless {
                pick,
                pattern,
                size,
            } => {
                out.extend([op(11), *pick]);
                match pattern {
                    Pattern::Progress => out.push(0),
                    Pattern::Churn => out.push(1),
                    Pattern::Raw(raw) => {
                        out.extend([2, raw.len() as u8]);
                        out.extend(raw);
                    }
                    Pattern::Spaces => out.push(3),
                    Pattern::Newlines => out.push(4),
                    Pattern::Created => out.push(5),
                }
                out.push(*size);
            }
            Action::Other(o) => {
                let (k, arg) = match o {
                    OtherOp::Take(a) => (0, a),
                    OtherOp::Release(a) => (1, a),
                    OtherOp::Revoke(a) => (2, a),
                    OtherOp::KeepAlive(a) => (3, a),
                    OtherOp::Compact(a) => (4, a),
                    OtherOp::Stray(a) => (5, a),
                };
                out.extend([op(12), k, *arg]);
            }
            Action::Delayed(pick) => out.extend([op(13), *pick]),
            Action::Stale(pick) => out.extend([op(14), *pick]),
            Action::Oversize { pick, over } => out.extend([op(15), *pick, u8::from(*over)]),
            Action::Destroy(confirm) => out.extend([op(16), *confirm]),
        }
    }
}

/// A decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// bit 0: the unicode key and node id; bit 1: two endpoints; bit 2: auto-renew; bits 3–4:
    /// the TTL (5, 2, 10, 1 s); bit 5: etcd 3.5 (else 3.4); bit 6: 500 ms request timeout
    /// (else 2 s); bit 7: unfair acquires.
    pub flags: u8,
    /// How the silent world fails requests once the script is over (mod 4): by their
    /// timeouts only, in transport, at connect, or in turn.
    pub policy: u8,
    /// The steps.
    pub actions: Vec<Action>,
}

impl Script {
    /// Decodes `data` (never fails).
    pub fn decode(data: &[u8]) -> Script {
        let mut b = Bytes { data, at: 0 };
        let flags = b.u8();
        let policy = b.u8();
        let mut actions = Vec::new();
        while !b.is_empty() && actions.len() < MAX_ACTIONS {
            actions.push(Action::decode(&mut b));
        }
        Script {
            flags,
            policy,
            actions,
        }
    }

    /// Encodes the script.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.flags, self.policy];
        for a in &self.actions {
            a.encode(&mut out);
        }
        out
    }

    /// The configuration the flags describe.
    pub fn config(&self) -> Config {
        let (key, node) = names(self.flags & 1 != 0);
        let ttl = [5, 2, 10, 1][usize::from(self.flags >> 3 & 3)];
        let mut config = Config::new(key, node, Duration::from_secs(ttl))
            .expect("a valid configuration")
            .with_protocol(Protocol::V3)
            .with_auto_renew(self.flags & 4 != 0)
            .with_fair_acquire(self.flags & 0x80 == 0);
        if self.flags & 2 != 0 {
            let endpoints = Endpoint::parse_all(["http://127.0.0.1:2379", "http://127.0.0.2:2379"]);
            config = config
                .with_endpoints(endpoints.expect("valid endpoints"))
                .expect("endpoints");
        }
        if self.flags & 0x40 != 0 {
            config = config.with_request_timeout(Duration::from_millis(500));
        }
        config
    }
}

/// The key and node id.
pub fn names(unicode: bool) -> (&'static str, &'static str) {
    if unicode {
        ("locks/räksmörgås lock ✓", "node-ä")
    } else {
        ("lock", "node-a")
    }
}

/// Runs one input; panics with a description on any violation.
pub fn run(data: &[u8]) {
    let script = Script::decode(data);
    let whole = World::new(&script, Delivery::Whole).play(&script);
    let whole = whole.unwrap_or_else(|v| fail(&script, Delivery::Whole, v));
    let pieces = World::new(&script, Delivery::Pieces).play(&script);
    let pieces = pieces.unwrap_or_else(|v| fail(&script, Delivery::Pieces, v));
    if let Some(i) = (0..whole.len().max(pieces.len())).find(|&i| whole.get(i) != pieces.get(i)) {
        fail(
            &script,
            Delivery::Pieces,
            format!(
                "answers whole and in pieces differ at step {i}:\n  whole:  {:?}\n  pieces: {:?}",
                whole.get(i),
                pieces.get(i)
            ),
        );
    }
}

fn fail(script: &Script, delivery: Delivery, violation: String) -> ! {
    let mut actions = format!("{:?}", script.actions);
    if actions.len() > 4000 {
        actions.truncate(4000);
        actions.push('…');
    }
    panic!(
        "responses_v3 ({delivery:?}): {violation}\nflags {:#04x} policy {} actions {actions}",
        script.flags, script.policy
    )
}

// ---------------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------------

/// How unary answers are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Whole,
    Pieces,
}

/// A place another client holds in the lock's queue.
#[derive(Debug, Clone)]
struct Place {
    lease: i64,
    key: Vec<u8>,
}

/// etcd (the model), the machine under the harness, and what the world knows of both.
struct World {
    sim: SimEtcdV3,
    h: Harness3,
    delivery: Delivery,
    /// Requests etcd applied (their answers are genuine, lost or mutated).
    applied: BTreeSet<RequestId>,
    /// Open watch streams: etcd's watch behind each (none for a made-up stream).
    streams: BTreeMap<RequestId, Option<WatchId>>,
    /// Requests the machine gave up on that etcd never saw (yet).
    limbo: Vec<(RequestId, Request<Vec<u8>>, Kind)>,
    others: Vec<Place>,
    /// Some answer was not etcd's.
    tampered: bool,
    /// Some request was applied after the machine gave up on it.
    delayed: bool,
    /// The last own key the machine wrote (for injected events).
    own_key: Option<Vec<u8>>,
}

/// Numbers for mutations: small, zero, negative, at and past the int64 and uint64 bounds.
const NUMBERS: [&str; 16] = [
    "0",
    "1",
    "2",
    "3",
    "-1",
    "-5",
    "100",
    "9223372036854775807",
    "9223372036854775806",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "4294967296",
    "1e400",
];

/// HTTP statuses for mutations and made-up answers.
const STATUSES: [u16; 24] = [
    200, 201, 204, 206, 301, 302, 400, 401, 403, 404, 405, 408, 412, 429, 500, 502, 503, 504, 100,
    199, 299, 600, 999, 418,
];

/// Strings that are not what a base64 field should hold.
const BAD_BASE64: [&str; 7] = ["", "eA", "!!", "eA===", "====", "4pyT\n", "bG9jaw"];

/// Every error etcd 3.4.23 and 3.5.1 were seen to answer (`microlock-proto/src/wire/v3.rs`'s
/// captures), and answers it never gives.
const CAPTURED: [(u16, &str); 24] = [
    (
        401,
        r#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#,
    ),
    (
        400,
        r#"{"error":"etcdserver: user name is empty","message":"etcdserver: user name is empty","code":3}"#,
    ),
    (
        403,
        r#"{"error":"etcdserver: permission denied","code":7,"message":"etcdserver: permission denied"}"#,
    ),
    (
        404,
        r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
    ),
    (
        400,
        r#"{"error":"etcdserver: mvcc: required revision has been compacted","code":11,"message":"etcdserver: mvcc: required revision has been compacted"}"#,
    ),
    (
        400,
        r#"{"error":"etcdserver: mvcc: required revision is a future revision","message":"etcdserver: mvcc: required revision is a future revision","code":11}"#,
    ),
    (
        400,
        r#"{"error":"etcdserver: request is too large","message":"etcdserver: request is too large","code":3}"#,
    ),
    (
        429,
        r#"{"error":"grpc: received message larger than max (2200010 vs. 2097152)","code":8,"message":"grpc: received message larger than max (2200010 vs. 2097152)"}"#,
    ),
    (
        503,
        r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#,
    ),
    (
        503,
        r#"{"error":"etcdserver: request timed out","code":14,"message":"etcdserver: request timed out"}"#,
    ),
    (
        500,
        r#"{"error":"context deadline exceeded","message":"context deadline exceeded","code":2}"#,
    ),
    (
        503,
        r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
    ),
    (
        400,
        r#"{"error":"etcdserver: key is not provided","code":3,"message":"etcdserver: key is not provided"}"#,
    ),
    (
        500,
        r#"{"error":"illegal base64 data at input byte 0","message":"illegal base64 data at input byte 0","code":2}"#,
    ),
    (
        412,
        r#"{"error":"etcdserver: lease already exists","message":"etcdserver: lease already exists","code":9}"#,
    ),
    (404, "Not Found\n"),
    (405, "Method Not Allowed\n"),
    (
        401,
        r#"{"code":16,"message":"etcdserver: invalid auth token","details":[]}"#,
    ),
    (
        503,
        r#"{"error":"x","code":"14","message":"etcdserver: leader changed"}"#,
    ),
    (
        200,
        "{\"result\":{\"header\":{\"cluster_id\":\"5195618842960940655\",\"member_id\":\"172715650900849554\",\"revision\":\"1\",\"raft_term\":\"2\"},\"ID\":\"12345\"}}\n",
    ),
    (200, "{}"),
    (200, ""),
    (200, "null"),
    (502, "<html>bad gateway</html>"),
];

/// Made-up answers: 0 raw bytes, then the captured ones.
const MADE_TEMPLATES: usize = CAPTURED.len() + 1;

/// Watch stream lines etcd sends to end or refuse a stream.
const STREAM_ENDS: [&str; 6] = [
    r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
    r#"{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing","http_status":"Service Unavailable"}}"#,
    r#"{"error":{"grpc_code":14,"http_code":503,"message":"error reading from server: EOF","http_status":"Service Unavailable"}}"#,
    r#"{"result":{"header":{"revision":"2"},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = PermissionDenied desc = etcdserver: permission denied"}}"#,
    r#"{"result":{"header":{"revision":"2"},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}"#,
    r#"{"result":{"header":{},"canceled":true,"cancel_reason":"gone"}}"#,
];

/// Lines that are no watch message.
const GARBAGE: [&str; 8] = [
    "not json",
    "{",
    "[1]",
    "{}",
    "{\"result\":7}",
    "\u{fffd}\u{fffe}",
    r#"{"result":{"header":{},"events":[{"type":"BOOM","kv":{"key":"eA=="}}]}}"#,
    r#"{"result":{"header":{"revision":"99999999999999999999"}}}"#,
];

fn response(status: u16, body: Vec<u8>) -> Response<Vec<u8>> {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        100 + status % 900
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a status in 100..=999")
}

fn post(path: &str, body: &Value) -> Request<Vec<u8>> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://127.0.0.1:2379{path}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("JSON"))
        .expect("a request")
}

/// An int64 field of a gateway answer (a string or a number).
fn int_field(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Where a body of `len` bytes is cut when delivered in pieces: up to 8 cuts drawn from a hash
/// of the request id and body; for a body past the bound, also just before and at it.
fn hash_cuts(id: RequestId, body: &[u8]) -> Vec<usize> {
    let mut state =
        (id.as_raw().to_be_bytes().iter().chain(body)).fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let len = body.len();
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

impl World {
    fn new(script: &Script, delivery: Delivery) -> World {
        let t0 = crate::t0();
        let version = if script.flags & 0x20 != 0 {
            EtcdVersion::V3_5
        } else {
            EtcdVersion::V3_4
        };
        World {
            sim: SimEtcdV3::new(version, t0),
            h: Harness3::new(script.config(), t0).lenient_leaks(skipping("leaked-probe")),
            delivery,
            applied: BTreeSet::new(),
            streams: BTreeMap::new(),
            limbo: Vec::new(),
            others: Vec::new(),
            tampered: false,
            delayed: false,
            own_key: None,
        }
    }

    /// Plays the script, then the silent world; returns the trace.
    fn play(mut self, script: &Script) -> Checked<Vec<String>> {
        let traced = std::env::var_os("MICROLOCK_FUZZ_TRACE").is_some();
        let mut result = Ok(());
        for (i, action) in script.actions.iter().enumerate() {
            let steps = self.h.trace().len();
            result = (self.act(action))
                .and_then(|()| self.check_world())
                .map_err(|v| format!("action {i} {action:?}: {v}\n{}", self.h.summary()));
            if traced {
                eprintln!("{i}: {action:?}");
                for line in &self.h.trace()[steps.min(self.h.trace().len())..] {
                    eprintln!("    {line}");
                }
            }
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            let steps = self.h.trace().len();
            result = (self.quiesce(script.policy))
                .map_err(|v| format!("after the script: {v}\n{}", self.h.summary()));
            if traced {
                eprintln!("silent world:");
                for line in &self.h.trace()[steps..] {
                    eprintln!("    {line}");
                }
            }
        }
        result.map(|()| self.h.trace().to_vec())
    }

    fn taint(&mut self) {
        self.tampered = true;
        self.h.set_tampered();
    }

    /// Takes what a step did into account: cancelled requests leave (to limbo if etcd has not
    /// seen them), their streams close; remembers own keys.
    fn absorb(&mut self, step: Step) {
        for (_, kind) in &step.requests {
            if let Kind::Take { lease } = kind {
                self.own_key = Some([self.h.prefix(), lease_hex(*lease).as_bytes()].concat());
            }
        }
        for (id, out) in step.cancels {
            self.forget(id);
            if !self.applied.contains(&id) && !out.kind.is_watch() {
                self.park(id, out.request, out.kind);
            }
        }
        // Requests that left without a cancel (answered, failed): their streams close.
        let gone: Vec<RequestId> = (self.streams.keys())
            .filter(|id| !self.h.outstanding().contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: RequestId) {
        if let Some(Some(w)) = self.streams.remove(&id) {
            self.sim.close_watch(w);
        }
    }

    fn park(&mut self, id: RequestId, request: Request<Vec<u8>>, kind: Kind) {
        if matches!(kind, Kind::Release { .. }) && skipping("late-release") {
            return;
        }
        if self.limbo.len() >= 16 {
            self.limbo.remove(0);
        }
        self.limbo.push((id, request, kind));
    }

    /// The outstanding request `pick` names (0 = the newest).
    fn pick(&self, pick: u8) -> Option<RequestId> {
        let ids: Vec<RequestId> = self.h.outstanding().keys().copied().collect();
        (!ids.is_empty()).then(|| ids[ids.len() - 1 - usize::from(pick) % ids.len()])
    }

    /// The open stream `pick` names (0 = the newest).
    fn pick_stream(&self, pick: u8) -> Option<RequestId> {
        let ids: Vec<RequestId> = (self.h.outstanding().iter())
            .filter(|(_, o)| o.streaming)
            .map(|(id, _)| *id)
            .collect();
        (!ids.is_empty()).then(|| ids[ids.len() - 1 - usize::from(pick) % ids.len()])
    }

    fn request(&self, id: RequestId) -> (Request<Vec<u8>>, Kind, bool) {
        let out = &self.h.outstanding()[&id];
        (clone(&out.request), out.kind.clone(), out.streaming)
    }

    /// etcd's answer to request `id` (applied now).
    fn apply(&mut self, id: RequestId, request: &Request<Vec<u8>>) -> Response<Vec<u8>> {
        self.applied.insert(id);
        let now = self.h.now();
        self.sim.handle(request, now)
    }

    /// Delivers a unary answer, whole or in pieces.
    fn deliver(&mut self, id: RequestId, response: Response<Vec<u8>>) -> Checked {
        let response = self.dodge_known_bugs(id, response);
        if std::env::var_os("MICROLOCK_FUZZ_TRACE").is_some() {
            let body = String::from_utf8_lossy(response.body());
            let shown = body.char_indices().nth(400).map_or(body.len(), |(i, _)| i);
            eprintln!("    -> {id} {} {}", response.status(), &body[..shown]);
        }
        let step = match self.delivery {
            Delivery::Whole => self.h.respond(id, response)?,
            Delivery::Pieces => {
                let cuts = hash_cuts(id, response.body());
                self.h.respond_in_pieces(id, response, &cuts)?
            }
        };
        self.absorb(step);
        Ok(())
    }

    /// With `MICROLOCK_FUZZ_SKIP` naming a known machine bug (see [`KNOWN_BUGS`]), an answer
    /// that would trigger it is replaced by etcd's `no leader` (so that a fuzz run goes on
    /// past it). Never set in the corpus replay.
    fn dodge_known_bugs(&self, id: RequestId, r: Response<Vec<u8>>) -> Response<Vec<u8>> {
        let kind = self.h.outstanding().get(&id).map(|o| &o.kind);
        let huge_ttl = matches!(kind, Some(Kind::Grant | Kind::KeepAlive(_)))
            && skipping("huge-ttl")
            && huge_ttl(r.body());
        let ahead_overflow = matches!(kind, Some(Kind::Ahead { .. }))
            && skipping("ahead-revision-overflow")
            && r.body().windows(19).any(|w| w == b"9223372036854775807");
        let foreign = matches!(kind, Some(Kind::Ahead { .. } | Kind::Owner))
            && skipping("foreign-key")
            && self.names_foreign_key(r.body());
        if huge_ttl || ahead_overflow || foreign {
            return made(9, 0, &[]);
        }
        r
    }

    /// Whether an answer names (in a `kvs` item) a key outside the lock's prefix, or one
    /// without a create revision above 0.
    fn names_foreign_key(&self, body: &[u8]) -> bool {
        fn walk(v: &Value, prefix: &[u8]) -> bool {
            match v {
                Value::Object(m) => m.iter().any(|(k, c)| {
                    (k == "kvs"
                        && c.as_array().is_some_and(|kvs| {
                            kvs.iter().any(|kv| {
                                let foreign = (kv["key"].as_str().and_then(unb64))
                                    .is_some_and(|key| !key.starts_with(prefix));
                                let unborn = int_field(&kv["create_revision"]).unwrap_or(0) <= 0;
                                foreign || unborn
                            })
                        }))
                        || walk(c, prefix)
                }),
                Value::Array(a) => a.iter().any(|c| walk(c, prefix)),
                _ => false,
            }
        }
        serde_json::from_slice::<Value>(body).is_ok_and(|v| walk(&v, self.h.prefix()))
    }

    /// Delivers an answer to a watch: a 200 opens a stream (head, then the body as one chunk);
    /// anything else is a unary answer.
    fn deliver_watch(
        &mut self,
        id: RequestId,
        response: Response<Vec<u8>>,
        watch: Option<WatchId>,
    ) -> Checked {
        if response.status() != 200 {
            if let Some(w) = watch {
                self.sim.close_watch(w);
            }
            return self.deliver(id, response);
        }
        self.streams.insert(id, watch);
        let step = self.h.head(id, 200)?;
        self.absorb(step);
        if !response.body().is_empty() && self.h.outstanding().contains_key(&id) {
            let step = self.h.chunk(id, response.body())?;
            self.absorb(step);
        }
        Ok(())
    }

    /// etcd's answer to a request: a watch's opened stream with its first lines, or a whole
    /// answer. `Err`: the stream is open in etcd (`WatchId`) and these are its lines.
    fn genuine(
        &mut self,
        id: RequestId,
        request: &Request<Vec<u8>>,
        kind: &Kind,
    ) -> (Response<Vec<u8>>, Option<WatchId>) {
        if kind.is_watch() {
            self.applied.insert(id);
            let now = self.h.now();
            match self.sim.open_watch(request, now) {
                Ok(w) => {
                    let lines = self.sim.poll_watch(w).concat();
                    (response(200, lines), Some(w))
                }
                Err(r) => (r, None),
            }
        } else {
            (self.apply(id, request), None)
        }
    }

    fn act(&mut self, action: &Action) -> Checked {
        match action {
            Action::Answer { pick } => {
                let Some(id) = self.pick(*pick) else {
                    return Ok(());
                };
                let (request, kind, streaming) = self.request(id);
                if streaming {
                    return self.pump(id, &[], &[], 0);
                }
                let (r, watch) = self.genuine(id, &request, &kind);
                if kind.is_watch() {
                    self.deliver_watch(id, r, watch)
                } else {
                    self.deliver(id, r)
                }
            }
            Action::Mutated { pick, mutations } => {
                let Some(id) = self.pick(*pick) else {
                    return Ok(());
                };
                self.taint();
                let (request, kind, streaming) = self.request(id);
                let (mut r, watch) = if streaming {
                    let lines = match self.streams.get(&id) {
                        Some(Some(w)) => self.sim.poll_watch(*w).concat(),
                        _ => Vec::new(),
                    };
                    (response(200, lines), None)
                } else {
                    self.genuine(id, &request, &kind)
                };
                for m in mutations {
                    mutate(&mut r, *m);
                }
                if streaming {
                    let step = self.h.chunk(id, r.body())?;
                    self.absorb(step);
                    Ok(())
                } else if kind.is_watch() {
                    self.deliver_watch(id, r, watch)
                } else {
                    self.deliver(id, r)
                }
            }
            Action::Made {
                pick,
                apply,
                template,
                param,
                raw,
            } => {
                let Some(id) = self.pick(*pick) else {
                    return Ok(());
                };
                self.taint();
                let (request, kind, streaming) = self.request(id);
                if *apply && !kind.is_watch() && !streaming {
                    self.apply(id, &request);
                }
                let r = made(*template, *param, raw);
                if streaming {
                    let step = self.h.chunk(id, r.body())?;
                    self.absorb(step);
                    Ok(())
                } else if kind.is_watch() {
                    self.deliver_watch(id, r, None)
                } else {
                    self.deliver(id, r)
                }
            }
            Action::Fail { pick, how } => {
                let Some(id) = self.pick(*pick) else {
                    return Ok(());
                };
                let (request, kind, streaming) = self.request(id);
                if *how == Fail::Lost && !kind.is_watch() && !streaming {
                    self.apply(id, &request);
                }
                let step = self.h.fail(id, *how == Fail::Refused)?;
                self.absorb(step);
                if *how == Fail::Reset && !kind.is_watch() && !self.applied.contains(&id) {
                    self.park(id, request, kind);
                }
                Ok(())
            }
            Action::Timer => {
                if let Some(step) = self.h.fire_timer()? {
                    self.absorb(step);
                }
                Ok(())
            }
            Action::Advance(n) => {
                let by = if *n < 128 {
                    Duration::from_millis(u64::from(*n) * 10)
                } else {
                    Duration::from_millis(u64::from(*n - 128) * 500)
                };
                self.h.advance(by);
                Ok(())
            }
            Action::Command(c) => {
                let cmd = match c {
                    CmdSpec::Lock => Cmd::Lock,
                    CmdSpec::Acquire(d) => Cmd::Acquire(
                        d.map(|d| self.h.now() + Duration::from_millis(u64::from(d) * 200)),
                    ),
                    CmdSpec::Unlock => Cmd::Unlock,
                    CmdSpec::Renew => Cmd::Renew,
                    CmdSpec::Read => Cmd::Read,
                };
                let (_, step) = self.h.command(cmd)?;
                self.absorb(step);
                Ok(())
            }
            Action::Watch(on) => {
                let step = self.h.set_watching(*on)?;
                self.absorb(step);
                Ok(())
            }
            Action::AutoRenew(on) => {
                let step = self.h.set_auto_renew(*on)?;
                self.absorb(step);
                Ok(())
            }
            Action::Cancel(pick) => {
                let pending: Vec<OpId> = (self.h.ops().iter())
                    .filter(|(_, s)| s.result.is_none())
                    .map(|(op, _)| *op)
                    .collect();
                if pending.is_empty() {
                    return Ok(());
                }
                let op = pending[pending.len() - 1 - usize::from(*pick) % pending.len()];
                let step = self.h.cancel(op)?;
                self.absorb(step);
                Ok(())
            }
            Action::Pump {
                pick,
                inject,
                cuts,
                end,
            } => {
                let Some(id) = self.pick_stream(*pick) else {
                    return Ok(());
                };
                self.pump(id, inject, cuts, *end)
            }
            Action::Endless {
                pick,
                pattern,
                size,
            } => {
                let Some(id) = self.pick_stream(*pick) else {
                    return Ok(());
                };
                self.endless(id, pattern, *size)
            }
            Action::Other(op) => self.other(*op),
            Action::Delayed(pick) => {
                if self.limbo.is_empty() {
                    return Ok(());
                }
                let i = usize::from(*pick) % self.limbo.len();
                let (id, request, _) = self.limbo.remove(i);
                self.delayed = true;
                self.apply(id, &request);
                Ok(())
            }
            Action::Stale(pick) => {
                let id = match self.limbo.get(usize::from(*pick) % self.limbo.len().max(1)) {
                    Some((id, ..)) if pick & 0x80 == 0 => *id,
                    _ => RequestId::from_raw(self.h.last_request() + 1 + u64::from(*pick)),
                };
                let r = made(u8::from(*pick % 3 != 0) + 19, 0, &[]);
                self.deliver(id, r)?;
                let step = self.h.chunk(id, b"{\"result\":{\"header\":{}}}\n")?;
                self.absorb(step);
                let step = self.h.end(id)?;
                self.absorb(step);
                let step = self.h.fail(id, pick & 1 != 0)?;
                self.absorb(step);
                Ok(())
            }
            Action::Oversize { pick, over } => {
                let Some(id) = self.pick(*pick) else {
                    return Ok(());
                };
                let (request, kind, streaming) = self.request(id);
                if kind.is_watch() || streaming {
                    return Ok(());
                }
                let r = self.apply(id, &request);
                let (head, body) = r.into_parts();
                let len = MAX_RESPONSE_BYTES + usize::from(*over);
                let mut body = body;
                if body.len() < len {
                    body.resize(len, b' ');
                }
                self.deliver(id, Response::from_parts(head, body))
            }
            Action::Destroy(confirm) => {
                if *confirm >= 32 {
                    return Ok(());
                }
                let step = self.h.destroy()?;
                self.absorb(step);
                Ok(())
            }
        }
    }

    /// Delivers an open stream's new lines from etcd, with `inject`ed ones, cut at `cuts`;
    /// then `end` (2: the body ends; 3: it is cut).
    fn pump(&mut self, id: RequestId, inject: &[Inject], cuts: &[u16], end: u8) -> Checked {
        let lines = match self.streams.get(&id) {
            Some(Some(w)) => self.sim.poll_watch(*w),
            _ => Vec::new(),
        };
        let (before, after): (Vec<&Inject>, Vec<&Inject>) =
            inject.iter().partition(|i| i.what & 0x80 == 0);
        let mut body = Vec::new();
        for i in &before {
            let line = self.injected(i, &lines);
            body.extend(line);
        }
        for line in &lines {
            body.extend(line);
        }
        for i in &after {
            let line = self.injected(i, &lines);
            body.extend(line);
        }
        if !inject.is_empty() {
            self.taint();
        }
        let mut cuts: Vec<usize> = cuts
            .iter()
            .map(|&c| usize::from(c) % (body.len() + 1))
            .collect();
        cuts.sort_unstable();
        let mut from = 0;
        for to in cuts.into_iter().chain([body.len()]) {
            if !self.h.outstanding().contains_key(&id) {
                break;
            }
            let step = self.h.chunk(id, &body[from..to])?;
            self.absorb(step);
            from = to;
        }
        if self.h.outstanding().contains_key(&id) {
            let step = match end {
                2 => Some(self.h.end(id)?),
                3 => Some(self.h.fail(id, false)?),
                _ => None,
            };
            if let Some(step) = step {
                self.absorb(step);
            }
        }
        Ok(())
    }

    /// A line injected into a stream (with its line end, except a stream error's).
    fn injected(&self, i: &Inject, lines: &[Vec<u8>]) -> Vec<u8> {
        let num = |n: u8| NUMBERS[usize::from(n) % NUMBERS.len()];
        let key = |a: u16| -> Vec<u8> {
            let mut keys: Vec<Vec<u8>> = self.others.iter().map(|p| p.key.clone()).collect();
            keys.extend(self.own_key.clone());
            keys.push([self.h.prefix(), format!("{a:x}").as_bytes()].concat());
            keys[usize::from(a) % keys.len()].clone()
        };
        let revision = self.sim.revision();
        let mut line = match (i.what & 0x7f) % 10 {
            0 => format!(r#"{{"result":{{"header":{{"revision":"{revision}"}},"created":true}}}}"#),
            1 => format!(
                r#"{{"result":{{"header":{{}},"canceled":true,"compact_revision":"{}"}}}}"#,
                i.a
            ),
            2 | 3 => STREAM_ENDS[usize::from(i.b) % STREAM_ENDS.len()].to_owned(),
            4 => {
                let value = if i.b & 1 == 0 {
                    b64(b"node-b")
                } else {
                    b64(self.h.config().node_id().as_str().as_bytes())
                };
                let rev = num(i.b >> 1);
                format!(
                    r#"{{"result":{{"header":{{"revision":"{rev}"}},"events":[{{"kv":{{"key":"{}","create_revision":"{rev}","mod_revision":"{rev}","version":"1","value":"{value}"}}}}]}}}}"#,
                    b64(&key(i.a))
                )
            }
            5 => format!(
                r#"{{"result":{{"header":{{"revision":"{}"}},"events":[{{"type":"DELETE","kv":{{"key":"{}","mod_revision":"{}"}}}}]}}}}"#,
                num(i.b),
                b64(&key(i.a)),
                num(i.b)
            ),
            6 => format!(r#"{{"result":{{"header":{{"revision":"{}"}}}}}}"#, num(i.b)),
            7 => GARBAGE[usize::from(i.b) % GARBAGE.len()].to_owned(),
            8 => {
                let Some(line) = lines.get(usize::from(i.b) % lines.len().max(1)) else {
                    return Vec::new();
                };
                let mut r = response(200, line.clone());
                mutate(
                    &mut r,
                    Mutation {
                        what: 5,
                        at: i.a,
                        with: i.b,
                    },
                );
                return r.into_body();
            }
            _ => format!(
                r#"{{"result":{{"header":{{"revision":"{}"}},"events":[{{"kv":{{"key":"{k}","create_revision":"{}","mod_revision":"{}","value":"{}"}}}},{{"type":"DELETE","kv":{{"key":"{k}"}}}}]}}}}"#,
                revision + 1,
                i.a,
                revision + 1,
                b64(b"node-b"),
                k = b64(&key(i.a))
            ),
        };
        // A stream error is the last thing in a body: no line end.
        if !line.starts_with("{\"error\"") {
            line.push('\n');
        }
        line.into_bytes()
    }

    /// Feeds an open stream an endless body; checks that the machine refuses a body without
    /// line ends once it passes the bound, and that what it holds stays bounded.
    fn endless(&mut self, id: RequestId, pattern: &Pattern, size: u8) -> Checked {
        let revision = self.sim.revision();
        let stranger = b64(&[self.h.prefix(), b"zz"].concat());
        let unit: Vec<u8> = match pattern {
            Pattern::Progress => {
                format!("{{\"result\":{{\"header\":{{\"revision\":\"{revision}\"}}}}}}\n").into()
            }
            Pattern::Churn => format!(
                "{{\"result\":{{\"header\":{{\"revision\":\"{r}\"}},\"events\":[{{\"kv\":{{\"key\":\"{stranger}\",\"create_revision\":\"{r}\",\"mod_revision\":\"{r}\",\"value\":\"bm9kZS1i\"}}}}]}}}}\n{{\"result\":{{\"header\":{{\"revision\":\"{r}\"}},\"events\":[{{\"type\":\"DELETE\",\"kv\":{{\"key\":\"{stranger}\",\"mod_revision\":\"{r}\"}}}}]}}}}\n",
                r = revision + 1
            )
            .into(),
            Pattern::Raw(raw) if !raw.is_empty() => raw.clone(),
            Pattern::Raw(_) => b"x".to_vec(),
            Pattern::Spaces => b" ".to_vec(),
            Pattern::Newlines => b"\n".to_vec(),
            Pattern::Created => {
                format!("{{\"result\":{{\"header\":{{\"revision\":\"{revision}\"}},\"created\":true}}}}\n").into()
            }
        };
        if !matches!(pattern, Pattern::Progress | Pattern::Newlines) {
            self.taint();
        }
        let target = 1024usize << (size % 7);
        let chunk = unit.repeat((target / unit.len()).max(1));
        let total = MAX_RESPONSE_BYTES + MAX_RESPONSE_BYTES / 4 + 2 * chunk.len();
        self.h.set_hash_only(true);
        let base = crate::alloc::live_bytes();
        let mut fed = 0;
        let mut result = Ok(());
        while fed < total && self.h.outstanding().contains_key(&id) {
            match self.h.chunk(id, &chunk) {
                Ok(step) => self.absorb(step),
                Err(v) => {
                    result = Err(v);
                    break;
                }
            }
            fed += chunk.len();
        }
        let grown = crate::alloc::live_bytes()
            .zip(base)
            .map(|(now, base)| now - base);
        self.h.set_hash_only(false);
        result?;
        let cancelled = !self.h.outstanding().contains_key(&id);
        if std::env::var_os("MICROLOCK_FUZZ_TRACE").is_some() {
            eprintln!(
                "endless {pattern:?}: {fed} bytes fed, cancelled {cancelled}, grown {grown:?}"
            );
        }
        if !unit.contains(&b'\n') {
            ensure!(
                cancelled && fed <= MAX_RESPONSE_BYTES + 2 + 2 * chunk.len(),
                "an endless body without line ends was not refused once past the bound: {fed} \
                 bytes fed in chunks of {}, cancelled {cancelled}",
                chunk.len()
            );
        }
        if let Some(grown) = grown {
            ensure!(
                grown <= MAX_RETAINED,
                "an endless body ({fed} bytes in chunks of {}, {pattern:?}, cancelled \
                 {cancelled}) left {grown} more bytes held",
                chunk.len()
            );
        }
        Ok(())
    }

    /// Another client acts, through etcd.
    fn other(&mut self, op: OtherOp) -> Checked {
        let now = self.h.now();
        let prefix = self.h.prefix().to_vec();
        let place = |w: &World, arg: u8| -> Option<Place> {
            (!w.others.is_empty()).then(|| w.others[usize::from(arg) % w.others.len()].clone())
        };
        match op {
            OtherOp::Take(arg) => {
                let ttl = 2 + arg % 28;
                let r = self.sim.handle(
                    &post("/v3/lease/grant", &json!({ "TTL": ttl.to_string() })),
                    now,
                );
                let granted: Value = serde_json::from_slice(r.body()).unwrap_or(Value::Null);
                let Some(lease) = int_field(&granted["ID"]) else {
                    return Ok(());
                };
                let key = [&prefix[..], lease_hex(lease).as_bytes()].concat();
                let value = if arg >= 128 {
                    self.h.config().node_id().as_str().as_bytes().to_vec()
                } else {
                    b"node-b".to_vec()
                };
                let put =
                    json!({ "key": b64(&key), "value": b64(&value), "lease": lease.to_string() });
                self.sim.handle(&post("/v3/kv/put", &put), now);
                self.others.push(Place { lease, key });
            }
            OtherOp::Release(arg) => {
                if let Some(p) = place(self, arg) {
                    self.sim.handle(
                        &post("/v3/kv/deleterange", &json!({ "key": b64(&p.key) })),
                        now,
                    );
                }
            }
            OtherOp::Revoke(arg) => {
                if let Some(p) = place(self, arg) {
                    let body = json!({ "ID": p.lease.to_string() });
                    self.sim.handle(&post("/v3/lease/revoke", &body), now);
                    self.others.retain(|q| q.lease != p.lease);
                }
            }
            OtherOp::KeepAlive(arg) => {
                if let Some(p) = place(self, arg) {
                    let body = json!({ "ID": p.lease.to_string() });
                    self.sim.handle(&post("/v3/lease/keepalive", &body), now);
                }
            }
            OtherOp::Compact(arg) => {
                let revision = (self.sim.revision() - i64::from(arg % 4)).max(1);
                let body = json!({ "revision": revision.to_string() });
                self.sim.handle(&post("/v3/kv/compaction", &body), now);
            }
            OtherOp::Stray(arg) => {
                let key = [&prefix[..], format!("stray-{}", arg % 4).as_bytes()].concat();
                let put = json!({ "key": b64(&key), "value": b64(b"stray") });
                self.sim.handle(&post("/v3/kv/put", &put), now);
            }
        }
        Ok(())
    }

    /// While the world has been honest: a node that believes it holds the lock does.
    fn check_world(&mut self) -> Checked {
        if self.tampered {
            return Ok(());
        }
        let now = self.h.now();
        let Some(fence) = self.h.lock().fence().filter(|f| f.is_valid_at(now)) else {
            return Ok(());
        };
        let prefix = self.h.prefix().to_vec();
        let owner = json!({
            "key": b64(&prefix),
            "range_end": b64(&range_end(&prefix)),
            "sort_order": "ASCEND",
            "sort_target": "CREATE",
            "limit": "1",
        });
        let r = self.sim.handle(&post("/v3/kv/range", &owner), now);
        let body: Value = serde_json::from_slice(r.body()).unwrap_or(Value::Null);
        let kv = &body["kvs"][0];
        let revision = int_field(&kv["create_revision"]);
        let value = kv["value"].as_str().and_then(unb64);
        let node = self.h.config().node_id().as_str().as_bytes();
        ensure!(
            revision == Some(fence.token() as i64) && value.as_deref() == Some(node),
            "SAFETY: the machine holds the lock (token {}, valid {:?} more) but etcd's oldest \
             key under the prefix is {}{}",
            fence.token(),
            fence.valid_until() - now,
            String::from_utf8_lossy(&serde_json::to_vec(kv).unwrap_or_default()),
            if self.delayed {
                " (after a request the machine gave up on was applied late)"
            } else {
                ""
            }
        );
        Ok(())
    }

    /// The world stops answering: every pending command must complete within its budgets,
    /// then (watch and auto-renew off) the machine must go quiet, then destroy must stop it.
    fn quiesce(&mut self, policy: u8) -> Checked {
        if !self.h.destroyed() {
            let waiting: Vec<OpId> = (self.h.ops().iter())
                .filter(|(_, s)| s.result.is_none() && s.cmd == Cmd::Acquire(None))
                .map(|(op, _)| *op)
                .collect();
            for op in waiting {
                let step = self.h.cancel(op)?;
                self.absorb(step);
            }
        }
        let config = self.h.config().clone();
        let per_command = config.operation_timeout()
            + config.request_timeout() * 2
            + config.watch_retry().1
            + config.ttl();
        let start = self.h.now();
        let pending: Vec<OpId> = (self.h.ops().iter())
            .filter(|(_, s)| s.result.is_none())
            .map(|(op, _)| *op)
            .collect();
        let slack = (self.h.ops().values())
            .filter_map(|s| match (s.cmd, &s.result) {
                (Cmd::Acquire(Some(deadline)), None) => {
                    Some(deadline.saturating_duration_since(start))
                }
                _ => None,
            })
            .max()
            .unwrap_or_default();
        let bound = start + per_command * (pending.len() as u32 + 3) + slack;
        let mut i = 0u32;
        while let Some(op) = pending.iter().find(|op| !self.h.is_done(**op)) {
            i += 1;
            ensure!(
                i <= 5_000 && self.h.now() <= bound,
                "the world stopped answering at t+{:?}; {op:?} ({:?}) is still pending at t+{:?} \
                 after {i} steps (bound t+{:?}: {} pending commands)",
                start - self.h.t0(),
                self.h.ops()[op].cmd,
                self.h.now() - self.h.t0(),
                bound - self.h.t0(),
                pending.len()
            );
            if !self.silent_step(policy, i)? {
                return Err(format!(
                    "{op:?} is pending, but nothing is outstanding and no timer is armed"
                ));
            }
        }

        if !self.h.destroyed() {
            let step = self.h.set_watching(false)?;
            self.absorb(step);
            let step = self.h.set_auto_renew(false)?;
            self.absorb(step);
        }
        let start = self.h.now();
        let bound = start + per_command * 3;
        while self.silent_step(policy, i)? {
            i += 1;
            ensure!(
                i <= 10_000 && self.h.now() <= bound,
                "not quiet by t+{:?} (from t+{:?}, {i} steps)",
                self.h.now() - self.h.t0(),
                start - self.h.t0()
            );
        }
        let lock = self.h.lock();
        ensure!(
            !lock.is_busy() && !lock.has_pending_io() && lock.fence().is_none(),
            "quiet but busy {} / pending I/O {} / fence {:?}",
            lock.is_busy(),
            lock.has_pending_io(),
            lock.fence()
        );
        if let Some((op, state)) = self.h.ops().iter().find(|(_, s)| s.result.is_none()) {
            return Err(format!("{op:?} ({:?}) never completed", state.cmd));
        }

        if !self.h.destroyed() {
            let step = self.h.destroy()?;
            self.absorb(step);
            while self.silent_step(policy, i)? {
                i += 1;
                ensure!(i <= 10_100, "destroy never stopped the machine");
            }
            ensure!(
                self.h.lock().is_destroyed(),
                "destroyed and quiet, but is_destroyed() is false"
            );
        }
        Ok(())
    }

    /// One step of the silent world: fails the oldest outstanding request (unless the policy
    /// leaves them to their timeouts), else fires the next timer. `false`: nothing to do.
    fn silent_step(&mut self, policy: u8, i: u32) -> Checked<bool> {
        let how = match policy % 4 {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            _ => [None, Some(false), Some(true)][(i % 3) as usize],
        };
        let oldest = self.h.outstanding().keys().next().copied();
        if let (Some(connect), Some(id)) = (how, oldest) {
            let step = self.h.fail(id, connect)?;
            self.absorb(step);
            return Ok(true);
        }
        match self.h.fire_timer()? {
            Some(step) => {
                self.absorb(step);
                Ok(true)
            }
            None if oldest.is_some() && policy.is_multiple_of(4) && !skipping("leaked-probe") => {
                Err(format!(
                    "requests {:?} are outstanding with no timer: the machine waits forever for a \
                 world that does not answer",
                    self.h
                        .outstanding()
                        .values()
                        .map(|o| &o.kind)
                        .collect::<Vec<_>>()
                ))
            }
            None => match oldest {
                Some(id) => {
                    let step = self.h.fail(id, false)?;
                    self.absorb(step);
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }
}

/// The machine bugs this target found (see `corpus/responses_v3/regression-*`), by the names
/// `MICROLOCK_FUZZ_SKIP` (comma-separated) takes to avoid triggering them in a fuzz run:
/// - `huge-ttl`: a lease grant or keep-alive answering a TTL near `i64::MAX` seconds panics
///   the machine (`Instant + Duration` overflows in `op/v3.rs`).
/// - `leaked-probe`: a watch that ends (the events' on a bad line; a waiting acquire's when its
///   stream ends or fails) leaves its liveness probe outstanding, untracked (never named by
///   `poll_cancel`) and without a timer. Skipping it lets leftover requests be (checks of
///   requests left outstanding are relaxed, the silent world fails them).
/// - `read-not-owned`: a `read` answered "requested lease not found" (which etcd never
///   answers to a range) completes with `LockNotOwned`.
/// - `ahead-revision-overflow`: a look-ahead txn answered with the header revision `i64::MAX`
///   and a key ahead overflows `revision + 1` (`op/v3.rs`, `on_ahead`).
/// - `late-release`: after an unlock whose releases all failed in transport, a lock resumes
///   the same key (same create revision), so a release etcd applies late deletes the new
///   hold's key (safety). Skipping it: releases are never applied late.
/// - `renew-lost-reason`: a renew told the lease is gone ends the hold with `Lost(Expired)`
///   before the local deadline (etcd said so: `NotOwned`).
/// - `foreign-key`: keys named by answers (the key ahead of a waiting acquire, the owner an
///   unlock without a hold releases) are used without checking they lie under `NAME/` with a
///   create revision above 0: the machine watches, reads and even deletes (pinned) keys
///   outside its lock, or "releases" pinned to revision 0 (which only matches an absent key)
///   and reports `Unlocked`. Skipping it: such answers are replaced.
pub const KNOWN_BUGS: &[&str] = &[
    "huge-ttl",
    "leaked-probe",
    "read-not-owned",
    "ahead-revision-overflow",
    "late-release",
    "renew-lost-reason",
    "foreign-key",
];

fn clone(request: &Request<Vec<u8>>) -> Request<Vec<u8>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// A made-up answer: `template` 0 is `raw` with the status `param` picks; the others are
/// [`CAPTURED`], with their own status (or, when `param`'s high bit is set, the one it picks).
fn made(template: u8, param: u16, raw: &[u8]) -> Response<Vec<u8>> {
    match usize::from(template) % MADE_TEMPLATES {
        0 => response(STATUSES[usize::from(param) % STATUSES.len()], raw.to_vec()),
        t => {
            let (status, body) = CAPTURED[t - 1];
            let status = if param & 0x8000 != 0 {
                STATUSES[usize::from(param) % STATUSES.len()]
            } else {
                status
            };
            response(status, body.as_bytes().to_vec())
        }
    }
}

/// Applies one mutation to an answer (`what` mod 8):
/// 0 sets the byte at `at` to `with`; 1 cuts the body at `at`; 2 replaces the `at`-th run of
/// digits with [`NUMBERS`]`[with]`; 3 replaces the `at`-th JSON string with
/// [`BAD_BASE64`]`[with]`; 4 sets the status to [`STATUSES`]`[with]`; 5 changes the `at`-th
/// node of the JSON (of the `with % lines`-th line) — deleted, retyped, a huge or negative
/// number, duplicated; 6 appends (a second copy, a line end, garbage, an error); 7 inserts the
/// byte `with` at `at`.
pub fn mutate(r: &mut Response<Vec<u8>>, m: Mutation) {
    let body = r.body_mut();
    let at = usize::from(m.at);
    match m.what % 8 {
        0 => {
            if !body.is_empty() {
                let i = at % body.len();
                body[i] = m.with;
            }
        }
        1 => {
            let len = body.len();
            body.truncate(at % (len + 1));
        }
        2 => {
            let runs = spans(body, |b| b.is_ascii_digit() || b == b'-');
            if !runs.is_empty() {
                let (from, to) = runs[at % runs.len()];
                let with = NUMBERS[usize::from(m.with) % NUMBERS.len()].as_bytes();
                body.splice(from..to, with.iter().copied());
            }
        }
        3 => {
            let strings = string_spans(body);
            if !strings.is_empty() {
                let (from, to) = strings[at % strings.len()];
                let with = BAD_BASE64[usize::from(m.with) % BAD_BASE64.len()].as_bytes();
                body.splice(from..to, with.iter().copied());
            }
        }
        4 => {
            *r.status_mut() =
                response(STATUSES[usize::from(m.with) % STATUSES.len()], vec![]).status()
        }
        5 => {
            let text = std::mem::take(body);
            let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let n = lines.len();
            let line = &mut lines[usize::from(m.with) % n];
            if let Ok(mut v) = serde_json::from_slice::<Value>(line) {
                let count = count_nodes(&v);
                if count > 0 {
                    let mut target = at % count;
                    mutate_node(&mut v, &mut target, m.with);
                    *line = serde_json::to_vec(&v).expect("JSON");
                }
            }
            *body = lines.join(&b'\n');
        }
        6 => {
            let extra: Vec<u8> = match m.with % 4 {
                0 => body.clone(),
                1 => b"\n".to_vec(),
                2 => b"garbage".to_vec(),
                _ => CAPTURED[8].1.as_bytes().to_vec(),
            };
            body.extend(extra);
        }
        _ => {
            let i = at % (body.len() + 1);
            body.insert(i, m.with);
        }
    }
}

/// Whether a `"TTL"` field of `body` holds a number of 12 digits or more.
fn huge_ttl(body: &[u8]) -> bool {
    (0..body.len()).any(|i| {
        body[i..].starts_with(b"\"TTL\"") && {
            let rest = &body[i + 5..];
            let skip = (rest.iter())
                .take_while(|b| b.is_ascii_whitespace() || matches!(b, b':' | b'"' | b'-'))
                .count();
            rest[skip..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
                >= 12
        }
    })
}

/// The runs of bytes matching `f`.
fn spans(body: &[u8], f: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if f(body[i]) {
            let from = i;
            while i < body.len() && f(body[i]) {
                i += 1;
            }
            out.push((from, i));
        } else {
            i += 1;
        }
    }
    out
}

/// The contents of JSON strings (between quotes, no escapes handled) that are values.
fn string_spans(body: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(q) = body[i..].iter().position(|&b| b == b'"') {
        let from = i + q + 1;
        let Some(len) = body[from..].iter().position(|&b| b == b'"') else {
            break;
        };
        let to = from + len;
        let value = body[..from - 1]
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b':');
        if value {
            out.push((from, to));
        }
        i = to + 1;
    }
    out
}

fn count_nodes(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.values().map(|c| 1 + count_nodes(c)).sum(),
        Value::Array(a) => a.iter().map(|c| 1 + count_nodes(c)).sum(),
        _ => 0,
    }
}

/// Changes the `target`-th node under `v` (depth first) by `op`.
fn mutate_node(v: &mut Value, target: &mut usize, op: u8) -> bool {
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if *target == 0 {
                    if op.is_multiple_of(16) {
                        map.remove(&k);
                    } else if let Some(child) = map.get_mut(&k) {
                        replace(child, op);
                    }
                    return true;
                }
                *target -= 1;
                if map.get_mut(&k).is_some_and(|c| mutate_node(c, target, op)) {
                    return true;
                }
            }
            false
        }
        Value::Array(items) => {
            for i in 0..items.len() {
                if *target == 0 {
                    match op % 16 {
                        0 => {
                            items.remove(i);
                        }
                        1 => {
                            let copy = items[i].clone();
                            items.insert(i, copy);
                        }
                        _ => replace(&mut items[i], op),
                    }
                    return true;
                }
                *target -= 1;
                if mutate_node(&mut items[i], target, op) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

fn replace(v: &mut Value, op: u8) {
    let new = match op % 16 {
        1 => match &*v {
            Value::Array(a) => Value::Array(a.iter().chain(a.iter()).cloned().collect()),
            _ => Value::Null,
        },
        2 => Value::Bool(true),
        3 => json!(0),
        4 => json!(-1),
        5 => json!(u64::MAX),
        6 => json!(i64::MIN),
        7 => json!(1e300),
        8 => json!("x"),
        9 => json!({}),
        10 => json!([]),
        // A string of digits turned into the number (or a number into its string).
        11 => match &*v {
            Value::String(s) => s.parse::<i64>().map(Value::from).unwrap_or(Value::Null),
            Value::Number(n) => Value::String(n.to_string()),
            other => other.clone(),
        },
        // A neighbouring number (revisions and IDs off by one).
        12 => match int_field(v) {
            Some(n) => Value::String(n.wrapping_add(1).to_string()),
            None => Value::Bool(false),
        },
        13 => match int_field(v) {
            Some(n) => Value::String(n.wrapping_sub(1).to_string()),
            None => Value::Null,
        },
        14 => json!("9223372036854775807"),
        _ => json!("-9223372036854775808"),
    };
    *v = new;
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

/// Seeds for `corpus/responses_v3/`: scripts through the deep states, with etcd's real
/// answers (the model's, checked against etcd 3.4.23 and 3.5.1), and the hostile ones.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use Action as A;
    let answer = |pick| A::Answer { pick };
    let lock = A::Command(CmdSpec::Lock);
    let pump = |inject: Vec<Inject>, cuts: Vec<u16>, end| A::Pump {
        pick: 0,
        inject,
        cuts,
        end,
    };
    let mut out = Vec::new();
    let mut add = |name: &str, flags: u8, policy: u8, actions: Vec<Action>| {
        let script = Script {
            flags,
            policy,
            actions,
        };
        let name = match name.strip_prefix("regression-") {
            Some(_) => name.to_owned(),
            None => format!("seed-{name}"),
        };
        out.push((name, script.encode()));
    };
    // lock: grant, take (held), renew (keep-alive), unlock (release).
    add(
        "lock-renew-unlock",
        0,
        0,
        vec![
            lock.clone(),
            answer(0),
            answer(0),
            A::Command(CmdSpec::Renew),
            answer(0),
            A::Command(CmdSpec::Read),
            answer(0),
            A::Command(CmdSpec::Unlock),
            answer(0),
        ],
    );
    // The same on etcd 3.5, unicode names, two members, auto-renew, timers.
    add(
        "lock-auto-renew-35-unicode",
        0x20 | 1 | 2 | 4,
        3,
        vec![
            lock.clone(),
            answer(0),
            answer(0),
            A::Timer,
            answer(0),
            A::Timer,
            answer(0),
            A::Timer,
        ],
    );
    // Events: the keys' read, the watch stream, another client comes and goes.
    add(
        "watch-events",
        0,
        1,
        vec![
            A::Watch(true),
            answer(0),
            answer(0),
            A::Other(OtherOp::Take(3)),
            pump(vec![], vec![10, 40], 0),
            lock.clone(),
            answer(0),
            answer(0),
            A::Other(OtherOp::Release(0)),
            pump(vec![], vec![], 0),
            A::Command(CmdSpec::Unlock),
            answer(0),
            pump(vec![], vec![3], 2),
        ],
    );
    // Contention: another holds; a waiting acquire looks ahead, watches, the other releases.
    add(
        "acquire-waits",
        0,
        0,
        vec![
            A::Other(OtherOp::Take(10)),
            A::Command(CmdSpec::Acquire(Some(100))),
            answer(0),
            answer(0),
            answer(0),
            answer(0),
            A::Timer,
            answer(0),
            A::Other(OtherOp::Release(0)),
            pump(vec![], vec![], 0),
            answer(0),
        ],
    );
    // lock while another holds: AlreadyLocked, the own key released first.
    add(
        "lock-conflict",
        0,
        2,
        vec![
            A::Other(OtherOp::Take(5)),
            lock.clone(),
            answer(0),
            answer(0),
            answer(0),
            lock.clone(),
            answer(0),
        ],
    );
    // Unlock without a hold: a key of this node id (a restarted process) is released.
    add(
        "unlock-restarted",
        0,
        0,
        vec![
            A::Other(OtherOp::Take(200)),
            A::Command(CmdSpec::Unlock),
            answer(0),
            answer(0),
        ],
    );
    // A watch from a compacted revision: cancelled, read again.
    add(
        "watch-compacted",
        0,
        0,
        vec![
            A::Other(OtherOp::Stray(0)),
            A::Watch(true),
            answer(0),
            A::Other(OtherOp::Stray(1)),
            A::Other(OtherOp::Compact(0)),
            answer(0),
            A::Timer,
            answer(0),
        ],
    );
    // Failures: lost answers, resets applied late, refused connections, timeouts.
    add(
        "failures",
        2 | 0x40,
        3,
        vec![
            lock.clone(),
            A::Fail {
                pick: 0,
                how: Fail::Refused,
            },
            answer(0),
            A::Fail {
                pick: 0,
                how: Fail::Lost,
            },
            answer(0),
            A::Command(CmdSpec::Unlock),
            A::Fail {
                pick: 0,
                how: Fail::Reset,
            },
            A::Timer,
            A::Delayed(0),
            answer(0),
            A::Timer,
        ],
    );
    // Bug: a grant whose TTL is i64::MAX seconds (the 6th number of etcd's answer replaced)
    // panics the machine: `out.sent_at + ttl` overflows `Instant` (op/v3.rs, on_v3_reply).
    add(
        "regression-grant-huge-ttl-overflows-instant",
        0,
        0,
        vec![
            lock.clone(),
            A::Mutated {
                pick: 0,
                mutations: vec![Mutation {
                    what: 2,
                    at: 5,
                    with: 7,
                }],
            },
        ],
    );
    // Made-up answers: etcd's errors to each step.
    add(
        "made-errors",
        0,
        1,
        vec![
            lock.clone(),
            A::Made {
                pick: 0,
                apply: false,
                template: 9,
                param: 0,
                raw: vec![],
            },
            answer(0),
            A::Made {
                pick: 0,
                apply: true,
                template: 4,
                param: 0,
                raw: vec![],
            },
            answer(0),
            A::Command(CmdSpec::Renew),
            A::Made {
                pick: 0,
                apply: false,
                template: 20,
                param: 0,
                raw: vec![],
            },
            A::Command(CmdSpec::Read),
            A::Made {
                pick: 0,
                apply: false,
                template: 0,
                param: 0,
                raw: b"{\"header\":{\"revision\":\"-3\"},\"kvs\":[{\"key\":\"!!\"}]}".to_vec(),
            },
        ],
    );
    // Streams: injected lines, several per chunk, cut anywhere, errors, then endless bodies.
    let inject = |what, a, b| Inject { what, a, b };
    add(
        "stream-injected",
        0,
        0,
        vec![
            A::Watch(true),
            answer(0),
            answer(0),
            pump(
                vec![inject(4, 1, 2), inject(0x85, 0, 3), inject(0x89, 7, 0)],
                vec![1, 30, 31, 200],
                0,
            ),
            pump(vec![inject(1, 9, 0)], vec![], 0),
            A::Timer,
            answer(0),
            answer(0),
            pump(vec![inject(3, 0, 1)], vec![5], 0),
        ],
    );
    for (name, pattern) in [
        ("spaces", Pattern::Spaces),
        ("progress", Pattern::Progress),
        ("churn", Pattern::Churn),
        (
            "raw",
            Pattern::Raw(b"{\"result\":{\"header\":{}}}\n".to_vec()),
        ),
    ] {
        add(
            &format!("stream-endless-{name}"),
            0,
            0,
            vec![
                A::Watch(true),
                answer(0),
                answer(0),
                A::Endless {
                    pick: 0,
                    pattern,
                    size: 6,
                },
            ],
        );
    }
    // Oversized answers, and stale ones.
    add(
        "oversize-and-stale",
        0,
        0,
        vec![
            lock.clone(),
            A::Oversize {
                pick: 0,
                over: false,
            },
            A::Oversize {
                pick: 0,
                over: true,
            },
            A::Stale(0),
            A::Timer,
            answer(0),
            A::Stale(0x80),
            A::Destroy(0),
            answer(0),
        ],
    );
    // Bug: a bad line in the events' watch stream (here garbage: `not json`) ends the watch,
    // but its liveness probe (the owner read sent at +2 s) is never cancelled nor tracked
    // again: once the watch is off, it is outstanding forever with no timer
    // (watch/v3.rs, on_v3_events_message).
    add(
        "regression-events-watch-bad-line-leaks-probe",
        0,
        0,
        vec![
            A::Watch(true),
            answer(0),
            answer(0),
            A::Timer,
            pump(vec![inject(7, 0, 0)], vec![], 0),
        ],
    );
    // Bug: the same for a waiting acquire: its watch of the key ahead ends (the member closed
    // the stream) while its liveness probe (the read of that key, sent at +2 s) is out; the
    // acquire looks ahead again and never cancels the probe (op/v3.rs, route_v3 →
    // on_v3_reply's `Step::Wait` arm).
    add(
        "regression-wait-watch-end-leaks-probe",
        0,
        0,
        vec![
            A::Other(OtherOp::Take(20)),
            A::Command(CmdSpec::Acquire(Some(30))),
            answer(0),
            answer(0),
            answer(0),
            answer(0),
            A::Timer,
            A::Timer,
            pump(vec![], vec![], 2),
        ],
    );
    // Bug (minor): a `read` answered `404 requested lease not found` completes with
    // `LockNotOwned` (op/v3.rs, v3_failed: `Failed::LeaseGone` for any kind but lock, acquire
    // and renew), a result a read cannot have.
    add(
        "regression-read-lease-not-found-is-lock-not-owned",
        0,
        0,
        vec![
            A::Command(CmdSpec::Read),
            A::Made {
                pick: 0,
                apply: false,
                template: 4,
                param: 0,
                raw: vec![],
            },
        ],
    );
    // Bug: a look-ahead txn answered with the header revision i64::MAX (the 3rd number of
    // etcd's answer replaced) and a key ahead: `revision + 1` overflows (op/v3.rs, on_ahead;
    // a panic with debug assertions, a negative watch start revision without).
    add(
        "regression-ahead-revision-max-overflows",
        0,
        0,
        vec![
            A::Other(OtherOp::Take(10)),
            A::Command(CmdSpec::Acquire(Some(100))),
            answer(0),
            answer(0),
            A::Mutated {
                pick: 0,
                mutations: vec![Mutation {
                    what: 2,
                    at: 2,
                    with: 7,
                }],
            },
        ],
    );
    // Bug (safety, with a request etcd applies late): an unlock whose releases (pinned to the
    // hold's create revision 2) all fail in transport ends with `Transport`; the next lock
    // reuses the live lease, its take finds the same own key (create revision 2) and reports
    // `Locked` with token 2; etcd then applies the first release late: the key of the new hold
    // is deleted while the machine holds the lock for 4.1 s more (op/v3.rs: on_take adopts an
    // existing own key after an unsettled release; the release is pinned to a revision the
    // new hold shares).
    let reset = A::Fail {
        pick: 0,
        how: Fail::Reset,
    };
    add(
        "regression-late-release-deletes-resumed-hold",
        0,
        0,
        vec![
            lock.clone(),
            answer(0),
            answer(0),
            A::Command(CmdSpec::Unlock),
            reset.clone(),
            A::Timer,
            reset.clone(),
            A::Timer,
            reset.clone(),
            A::Timer,
            reset.clone(),
            A::Timer,
            reset,
            lock.clone(),
            answer(0),
            A::Delayed(0),
        ],
    );
    // Bug (minor): a renew whose keep-alive answers without a TTL (the lease is gone: revoked
    // by someone else) ends the hold with `Lost { reason: Expired }` 4.5 s before its local
    // deadline; `Expired` is documented as the local deadline passing, etcd's answer is
    // `NotOwned` (op/v3.rs, v3_failed, `Failed::LeaseGone` for a renew).
    add(
        "regression-renew-lease-gone-lost-expired-early",
        0,
        0,
        vec![
            lock.clone(),
            answer(0),
            answer(0),
            A::Command(CmdSpec::Renew),
            A::Made {
                pick: 0,
                apply: false,
                template: 20,
                param: 0,
                raw: vec![],
            },
        ],
    );
    // Bug (hardening): a look-ahead answer naming a key outside `NAME/` as the key ahead (the
    // first base64 character of etcd's `lock/...` turned into `pock/...`): the waiting acquire
    // watches that foreign key (op/v3.rs, on_ahead → v3_wait with the answer's key).
    add(
        "regression-ahead-foreign-key-watched",
        0,
        0,
        vec![
            A::Other(OtherOp::Take(10)),
            A::Command(CmdSpec::Acquire(Some(100))),
            answer(0),
            answer(0),
            A::Mutated {
                pick: 0,
                mutations: vec![Mutation {
                    what: 0,
                    at: 204,
                    with: b'c',
                }],
            },
        ],
    );
    // Bug (hardening, a write): an unlock without a known hold reads the owner; the answer
    // names a key outside `NAME/` (`pock/...`) with this node's id as its value: the machine
    // sends a release (a pinned delete) of that foreign key (op/v3.rs, on_owner →
    // v3_release with the answer's key).
    add(
        "regression-unlock-releases-foreign-key",
        0,
        0,
        vec![
            A::Other(OtherOp::Take(200)),
            A::Command(CmdSpec::Unlock),
            A::Mutated {
                pick: 0,
                mutations: vec![Mutation {
                    what: 0,
                    at: 129,
                    with: b'c',
                }],
            },
        ],
    );
    // Bug (hardening): the same owner answer with the key's create revision replaced by 0 (a
    // key etcd would never return): the unlock sends a release pinned to revision 0, which
    // only matches an absent key, so it "succeeds" and reports `Unlocked` while the key stays
    // (op/v3.rs, on_owner → v3_release with the answer's create revision).
    add(
        "regression-unlock-release-pinned-to-revision-0",
        0,
        0,
        vec![
            A::Other(OtherOp::Take(200)),
            A::Command(CmdSpec::Unlock),
            A::Mutated {
                pick: 0,
                mutations: vec![Mutation {
                    what: 5,
                    at: 8,
                    with: 3,
                }],
            },
            answer(0),
        ],
    );
    out
}
