//! Differential test: the simulated v3 gateway (`microlock_proto::sim::etcd_v3::SimEtcdV3`)
//! against a real etcd, on the same scripted request sequences.
//!
//! Each script runs on a fresh single-member etcd (`EtcdServer::start`, so `$ETCD_BIN` picks
//! 3.4 or 3.5) and on a fresh `SimEtcdV3` for the same version. The model's clock is the test's
//! real clock, so leases run out on both sides at about the same time (the model's expiry
//! checks have another phase than the real lessor's: a watch waiting for an expiry lets the
//! model's time run on to its next check, at most 500 ms ahead).
//!
//! Every step compares the status, `Content-Type` and the whole body byte for byte after
//! normalisation: `cluster_id`, `member_id` and `raft_term` masked; lease IDs (`"ID"`,
//! `"lease"`) replaced by their order of first appearance on each side (`L1`, `L2`...);
//! revisions (`revision`, `create_revision`, `mod_revision`, `compact_revision`) made relative
//! to the script's first header revision; the remaining `TTL` of `timetolive` compared with a
//! tolerance of 1 s. Watch streams are compared line by line. A mismatch prints the script,
//! the step, the request and both answers. Bodies may use placeholders evaluated on each side:
//! `{L1}` (that side's first lease ID), `{rev+N}` (the script's first revision + N).
//!
//! Waits: a watch line is awaited up to 10 s (lease expiry: a 2 s lease is gone within 2.5 s);
//! a quiet watch is watched for 300 ms. The five scripts run in parallel, each on its own etcd
//! (about 4 s); the second test (no quorum, a 3-member cluster) waits once for etcd's 7 s raft
//! timeout. About 10 s per etcd version.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use microlock_proto::sim::etcd_v3::{EtcdVersion, SimEtcdV3, WatchId};
use microlock_tests::etcd::{EtcdCluster, EtcdServer, RawResponse};
use microlock_tests::v3http::{self, Next, Stream};

/// How long a watch line may take to arrive on real etcd.
const LINE_WAIT: Duration = Duration::from_secs(10);
/// How long a watch must stay silent in a `Quiet` step.
const QUIET: Duration = Duration::from_millis(300);

enum Step {
    /// A unary request, compared at once.
    Req {
        method: &'static str,
        path: &'static str,
        body: &'static str,
    },
    /// Opens a watch stream in `slot`; the head (or the whole error answer) is compared.
    Watch { slot: usize, body: &'static str },
    /// The next `n` lines of the watch in `slot`, compared one by one.
    Lines { slot: usize, n: usize },
    /// The watch in `slot` writes nothing for [`QUIET`] (nor does the model's).
    Quiet { slot: usize },
    /// Closes the watch in `slot`.
    Close { slot: usize },
}

fn post(path: &'static str, body: &'static str) -> Step {
    Step::Req {
        method: "POST",
        path,
        body,
    }
}
fn watch(slot: usize, body: &'static str) -> Step {
    Step::Watch { slot, body }
}
fn lines(slot: usize, n: usize) -> Step {
    Step::Lines { slot, n }
}

/// One side's state for placeholders and normalisation.
#[derive(Default)]
struct Ctx {
    base: Option<i64>,
    leases: BTreeMap<String, usize>,
}

impl Ctx {
    fn lease_by_order(&self, n: usize) -> String {
        self.leases
            .iter()
            .find(|(_, &k)| k == n)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| "0".into())
    }

    fn expand(&self, template: &str) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').map(|c| open + c);
            let inner = close.map(|c| &rest[open + 1..c]).unwrap_or("");
            let lease = inner.strip_prefix('L').and_then(|n| n.parse().ok());
            let rev = inner
                .strip_prefix("rev+")
                .and_then(|n| n.parse::<i64>().ok());
            let value = match (lease, rev) {
                (Some(n), _) => Some(self.lease_by_order(n)),
                (None, Some(n)) => Some((self.base.unwrap_or(1) + n).to_string()),
                (None, None) => None,
            };
            match (value, close) {
                (Some(v), Some(c)) => {
                    out.push_str(&rest[..open]);
                    out.push_str(&v);
                    rest = &rest[c + 1..];
                }
                _ => {
                    out.push_str(&rest[..=open]);
                    rest = &rest[open + 1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The body normalised, and the `TTL`s found when `ttl_tolerant`.
    fn normalize(&mut self, body: &[u8], ttl_tolerant: bool) -> (String, Vec<i64>) {
        let s = String::from_utf8_lossy(body).into_owned();
        let mut out = String::new();
        let mut ttls = Vec::new();
        let mut i = 0;
        while i < s.len() {
            let rest = &s[i..];
            let field = [
                "cluster_id",
                "member_id",
                "raft_term",
                "revision",
                "create_revision",
                "mod_revision",
                "compact_revision",
                "ID",
                "lease",
                "TTL",
            ]
            .into_iter()
            .find(|f| rest.starts_with(&format!("\"{f}\":\"")));
            let Some(field) = field else {
                let c = rest.chars().next().unwrap_or('?');
                out.push(c);
                i += c.len_utf8();
                continue;
            };
            let from = i + field.len() + 4;
            let to = from + s[from..].find('"').unwrap_or(0);
            let value = &s[from..to];
            let shown = match field {
                "cluster_id" | "member_id" | "raft_term" => "<id>".to_string(),
                "ID" | "lease" => {
                    let next = self.leases.len() + 1;
                    format!("L{}", *self.leases.entry(value.to_string()).or_insert(next))
                }
                "TTL" if ttl_tolerant => {
                    ttls.push(value.parse().unwrap_or(i64::MIN));
                    "<ttl>".to_string()
                }
                "TTL" => value.to_string(),
                _ => {
                    let v: i64 = value.parse().unwrap_or(i64::MIN);
                    if field == "revision" && self.base.is_none() {
                        self.base = Some(v);
                    }
                    format!("#{}", v - self.base.unwrap_or(0))
                }
            };
            out.push_str(&format!("\"{field}\":\"{shown}\""));
            i = to + 1;
        }
        (sort_lease_keys(&out), ttls)
    }
}

/// The `"keys":[…]` list of a lease's time-to-live in sorted order: etcd
/// builds it by iterating a Go map (`lease.Keys()`), so its order is random
/// from one call to the next; only the set is etcd's answer.
fn sort_lease_keys(body: &str) -> String {
    const OPEN: &str = "\"keys\":[";
    let Some(start) = body.find(OPEN).map(|at| at + OPEN.len()) else {
        return body.to_string();
    };
    let Some(len) = body[start..].find(']') else {
        return body.to_string();
    };
    let mut keys: Vec<&str> = body[start..start + len].split(',').collect();
    keys.sort_unstable();
    format!(
        "{}{}{}",
        &body[..start],
        keys.join(","),
        &body[start + len..]
    )
}

struct Side {
    ctx: Ctx,
}

struct Runner {
    name: &'static str,
    url: String,
    model: SimEtcdV3,
    clock: Instant,
    real: Side,
    sim: Side,
    real_watches: BTreeMap<usize, Stream>,
    model_watches: BTreeMap<usize, WatchId>,
    mismatches: Vec<String>,
    steps: usize,
}

fn show(status: u16, ct: Option<&str>, body: &[u8]) -> String {
    format!(
        "    {status} {}\n    {:?}\n",
        ct.unwrap_or("-"),
        String::from_utf8_lossy(body)
    )
}

/// `Content-Type` and `Location` of a real answer.
fn real_meta(r: &RawResponse) -> String {
    format!("{:?} {:?}", r.header("Content-Type"), r.header("Location"))
}

/// `Content-Type` and `Location` of a model answer.
fn model_meta(r: &http::Response<Vec<u8>>) -> String {
    let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok());
    format!("{:?} {:?}", h("Content-Type"), h("Location"))
}

impl Runner {
    /// The model's clock: real time, never going back (it may have been pushed ahead).
    fn now(&mut self) -> Instant {
        self.clock = self.clock.max(Instant::now());
        self.clock
    }

    fn model_request(&self, method: &str, path: &str, body: &str) -> http::Request<Vec<u8>> {
        http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:2379{path}"))
            .header("Content-Type", "application/json")
            .body(body.as_bytes().to_vec())
            .expect("a valid request")
    }

    fn compare(
        &mut self,
        label: &str,
        real: (u16, Option<&str>, &[u8]),
        model: (u16, Option<&str>, &[u8]),
        ttl_tolerant: bool,
    ) {
        self.steps += 1;
        let mut diffs = Vec::new();
        if real.0 != model.0 {
            diffs.push(format!("status {} != {}", real.0, model.0));
        }
        if real.1 != model.1 {
            diffs.push(format!(
                "Content-Type, Location {:?} != {:?}",
                real.1, model.1
            ));
        }
        let (rb, rt) = self.real.ctx.normalize(real.2, ttl_tolerant);
        let (mb, mt) = self.sim.ctx.normalize(model.2, ttl_tolerant);
        if rb != mb {
            diffs.push(format!(
                "normalised body\n      real:  {rb}\n      model: {mb}"
            ));
        }
        if rt.len() != mt.len() || rt.iter().zip(&mt).any(|(a, b)| (a - b).abs() > 1) {
            diffs.push(format!("TTL {rt:?} != {mt:?}"));
        }
        if !diffs.is_empty() {
            self.mismatches.push(format!(
                "[{}] step {}: {label}\n  differences:\n    {}\n  real etcd:\n{}  model:\n{}",
                self.name,
                self.steps,
                diffs.join("\n    "),
                show(real.0, real.1, real.2),
                show(model.0, model.1, model.2),
            ));
        }
    }

    /// Sends the request to the model and compares its answer with etcd's `real` one.
    fn answer(&mut self, method: &str, path: &str, body: &str, real: &RawResponse) {
        let mb = self.sim.ctx.expand(body);
        let req = self.model_request(method, path, &mb);
        let now = self.now();
        let model = self.model.handle(&req, now);
        let label = format!("{method} {path} {body}");
        let (rm, mm) = (real_meta(real), model_meta(&model));
        self.compare(
            &label,
            (real.status, Some(&rm), &real.body),
            (model.status().as_u16(), Some(&mm), model.body()),
            path.ends_with("timetolive"),
        );
    }

    fn step(&mut self, step: &Step) {
        match *step {
            Step::Req { method, path, body } => {
                let rb = self.real.ctx.expand(body);
                let real = v3http::request(&self.url, method, path, &rb, Duration::from_secs(15));
                self.answer(method, path, body, &real);
            }
            Step::Watch { slot, body } => {
                let (rb, mb) = (self.real.ctx.expand(body), self.sim.ctx.expand(body));
                let label = format!("watch[{slot}] {body}");
                let real = Stream::open(&self.url, "/v3/watch", &rb, LINE_WAIT)
                    .unwrap_or_else(|| panic!("[{}] {label}: no head from etcd", self.name));
                let req = self.model_request("POST", "/v3/watch", &mb);
                let now = self.now();
                match self.model.open_watch(&req, now) {
                    Ok(id) => {
                        self.compare(
                            &label,
                            (real.status, real.header("Content-Type"), b""),
                            (200, Some("application/json"), b""),
                            false,
                        );
                        self.model_watches.insert(slot, id);
                        self.real_watches.insert(slot, real);
                    }
                    Err(model) => {
                        let mut real = real;
                        let mut body = Vec::new();
                        while let Next::Line(l) = real.next_line(LINE_WAIT) {
                            body.extend(l);
                        }
                        let rm = format!("{:?} {:?}", real.header("Content-Type"), None::<&str>);
                        let mm = model_meta(&model);
                        self.compare(
                            &label,
                            (real.status, Some(&rm), &body),
                            (model.status().as_u16(), Some(&mm), model.body()),
                            false,
                        );
                    }
                }
            }
            Step::Lines { slot, n } => {
                let id = self.model_watches[&slot];
                let mut model_lines: Vec<Vec<u8>> = Vec::new();
                for k in 0..n {
                    let label = format!("watch[{slot}] line {}", k + 1);
                    let real = self.real_watches.get_mut(&slot).expect("open watch");
                    let real = match real.next_line(LINE_WAIT) {
                        Next::Line(l) => l,
                        other => format!("<{other:?} after {LINE_WAIT:?}>").into_bytes(),
                    };
                    let now = self.now();
                    self.model.advance(now);
                    model_lines.extend(self.model.poll_watch(id));
                    if model_lines.is_empty() {
                        // The real lessor's check came first: run the model to its next one.
                        if let Some(t) = self.model.next_expiry() {
                            if t <= now + Duration::from_millis(600) {
                                self.clock = t;
                                self.model.advance(t);
                                model_lines.extend(self.model.poll_watch(id));
                            }
                        }
                    }
                    let model = if model_lines.is_empty() {
                        b"<no line>".to_vec()
                    } else {
                        model_lines.remove(0)
                    };
                    self.compare(&label, (200, None, &real), (200, None, &model), false);
                }
                if !model_lines.is_empty() {
                    self.steps += 1;
                    self.mismatches.push(format!(
                        "[{}] step {}: watch[{slot}]: the model wrote more lines: {:?}",
                        self.name,
                        self.steps,
                        model_lines
                            .iter()
                            .map(|l| String::from_utf8_lossy(l).into_owned())
                            .collect::<Vec<_>>()
                    ));
                }
            }
            Step::Quiet { slot } => {
                self.steps += 1;
                let real = self
                    .real_watches
                    .get_mut(&slot)
                    .expect("open watch")
                    .next_line(QUIET);
                let now = self.now();
                self.model.advance(now);
                let model = self.model.poll_watch(self.model_watches[&slot]);
                if real != Next::Timeout || !model.is_empty() {
                    self.mismatches.push(format!(
                        "[{}] step {}: watch[{slot}] should be quiet: real {real:?}, model {:?}",
                        self.name,
                        self.steps,
                        model
                            .iter()
                            .map(|l| String::from_utf8_lossy(l).into_owned())
                            .collect::<Vec<_>>()
                    ));
                }
            }
            Step::Close { slot } => {
                self.real_watches.remove(&slot);
                if let Some(id) = self.model_watches.remove(&slot) {
                    self.model.close_watch(id);
                }
            }
        }
    }
}

impl Runner {
    fn new(name: &'static str, url: String, version: &str) -> Runner {
        Runner {
            name,
            url,
            model: SimEtcdV3::new(EtcdVersion::from_version_string(version), Instant::now()),
            clock: Instant::now(),
            real: Side {
                ctx: Ctx::default(),
            },
            sim: Side {
                ctx: Ctx::default(),
            },
            real_watches: BTreeMap::new(),
            model_watches: BTreeMap::new(),
            mismatches: Vec::new(),
            steps: 0,
        }
    }
}

/// Runs `script` on a fresh etcd and a fresh model; returns the mismatches.
fn run(name: &'static str, script: &[Step]) -> Vec<String> {
    let server = EtcdServer::start();
    let mut runner = Runner::new(name, server.client_url(), &server.version());
    for step in script {
        runner.step(step);
    }
    assert!(runner.steps > 0);
    runner.mismatches
}

fn report(mismatches: &[String]) {
    assert!(
        mismatches.is_empty(),
        "{} mismatch(es) between etcd and the model:\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}

fn check(scripts: Vec<(&'static str, Vec<Step>)>) {
    let started = Instant::now();
    let count = scripts.len();
    // Each script on its own etcd, in parallel.
    let handles: Vec<_> = scripts
        .into_iter()
        .map(|(name, script)| std::thread::spawn(move || run(name, &script)))
        .collect();
    let mismatches: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("script thread"))
        .collect();
    eprintln!("{count} scripts in {:?}", started.elapsed());
    report(&mismatches);
}

// Keys: "lk/" = bGsv, "lk0" = bGsw (prefix end), "lk/a" = bGsvYQ==, "lk/b" = bGsvYg==,
// "a" = YQ==, "b" = Yg==, "p" = cA==, "q" = cQ==, "p1" = cDE=, "p2" = cDI=, "p3" = cDM=.

const ACQUIRE_A: &str = r#"{"compare":[{"key":"bGsvYQ==","target":"CREATE","result":"EQUAL","create_revision":"0"}],"success":[{"request_put":{"key":"bGsvYQ==","lease":"{L1}"}},{"request_range":{"key":"bGsv","range_end":"bGsw","sort_order":"ASCEND","sort_target":"CREATE","limit":"1"}}],"failure":[{"request_range":{"key":"bGsvYQ=="}}]}"#;
const ACQUIRE_B: &str = r#"{"compare":[{"key":"bGsvYg==","target":"CREATE","result":"EQUAL","create_revision":"0"}],"success":[{"request_put":{"key":"bGsvYg==","value":"Yg==","lease":"{L2}"}},{"request_range":{"key":"bGsv","range_end":"bGsw","sort_order":"ASCEND","sort_target":"CREATE","limit":"1"}}],"failure":[{"request_range":{"key":"bGsvYg=="}}]}"#;

fn lock_recipe() -> Vec<Step> {
    vec![
        post("/v3/kv/range", r#"{"key":"bGsv","range_end":"bGsw"}"#),
        post("/v3/lease/grant", r#"{"TTL":30}"#),
        post("/v3/lease/grant", r#"{"TTL":30}"#),
        watch(
            1,
            r#"{"create_request":{"key":"bGsv","range_end":"bGsw","prev_kv":true}}"#,
        ),
        lines(1, 1),
        post("/v3/kv/txn", ACQUIRE_A),
        post("/v3/kv/txn", ACQUIRE_A),
        post("/v3/kv/txn", ACQUIRE_B),
        lines(1, 2),
        // The owner: the lowest create revision under the prefix.
        post(
            "/v3/kv/range",
            r#"{"key":"bGsv","range_end":"bGsw","sort_order":"ASCEND","sort_target":"CREATE","limit":"1"}"#,
        ),
        // B's predecessor: the greatest create revision below B's.
        post(
            "/v3/kv/range",
            r#"{"key":"bGsv","range_end":"bGsw","sort_order":"DESCEND","sort_target":"CREATE","max_create_revision":"{rev+2}","limit":"1"}"#,
        ),
        post("/v3/lease/keepalive", r#"{"ID":"{L1}"}"#),
        post("/v3/lease/timetolive", r#"{"ID":"{L1}","keys":true}"#),
        // Release: delete my key only if it is still mine.
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"bGsvYQ==","target":"CREATE","result":"EQUAL","create_revision":"{rev+1}"}],"success":[{"request_delete_range":{"key":"bGsvYQ==","prev_kv":true}}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"bGsvYQ==","target":"CREATE","result":"EQUAL","create_revision":"{rev+1}"}],"success":[{"request_delete_range":{"key":"bGsvYQ=="}}]}"#,
        ),
        lines(1, 1),
        post("/v3/kv/deleterange", r#"{"key":"bGsvYg==","prev_kv":true}"#),
        post("/v3/kv/deleterange", r#"{"key":"bGsvYg=="}"#),
        lines(1, 1),
        // Revoke deletes every key of the lease in one revision.
        post("/v3/kv/put", r#"{"key":"bGsvYQ==","lease":"{L1}"}"#),
        post(
            "/v3/kv/put",
            r#"{"key":"bGsvYg==","value":"eA==","lease":"{L1}","prev_kv":true}"#,
        ),
        post(
            "/v3/kv/put",
            r#"{"key":"bGsvYg==","value":"eQ==","lease":"{L1}","prev_kv":true}"#,
        ),
        lines(1, 3),
        post("/v3/lease/revoke", r#"{"ID":"{L1}"}"#),
        lines(1, 1),
        post("/v3/lease/revoke", r#"{"ID":"{L1}"}"#),
        post("/v3/lease/keepalive", r#"{"ID":"{L1}"}"#),
        post("/v3/lease/timetolive", r#"{"ID":"{L1}"}"#),
        post("/v3/kv/put", r#"{"key":"bGsvYQ==","lease":"{L1}"}"#),
        post("/v3/kv/txn", ACQUIRE_A),
        post("/v3/lease/revoke", r#"{"ID":"{L2}"}"#),
        Step::Quiet { slot: 1 },
        post("/v3/lease/leases", "{}"),
        post(
            "/v3/kv/range",
            r#"{"key":"AA==","range_end":"AA==","count_only":true}"#,
        ),
    ]
}

fn expiry_and_history() -> Vec<Step> {
    vec![
        post("/v3/lease/grant", r#"{"TTL":1}"#),
        post(
            "/v3/kv/put",
            r#"{"key":"YQ==","value":"MQ==","lease":"{L1}"}"#,
        ),
        post("/v3/kv/put", r#"{"key":"Yg==","lease":"{L1}"}"#),
        post("/v3/lease/timetolive", r#"{"ID":"{L1}","keys":true}"#),
        watch(
            1,
            r#"{"create_request":{"key":"YQ==","range_end":"Yw==","prev_kv":true}}"#,
        ),
        lines(1, 1),
        // The expiry: both keys in one DELETE message.
        lines(1, 1),
        post("/v3/kv/range", r#"{"key":"YQ==","range_end":"Yw=="}"#),
        post("/v3/lease/keepalive", r#"{"ID":"{L1}"}"#),
        post("/v3/lease/timetolive", r#"{"ID":"{L1}"}"#),
        post("/v3/kv/put", r#"{"key":"YQ==","lease":"{L1}"}"#),
        // History from a past revision, with prev_kv, filters and a watch_id.
        watch(
            2,
            r#"{"create_request":{"key":"YQ==","range_end":"Yw==","start_revision":"{rev+1}","prev_kv":true}}"#,
        ),
        lines(2, 2),
        watch(
            3,
            r#"{"create_request":{"key":"YQ==","start_revision":"{rev+1}","filters":["NOPUT"],"watch_id":"7"}}"#,
        ),
        lines(3, 2),
        // A start revision in the future: only the last of the puts below.
        watch(
            4,
            r#"{"create_request":{"key":"Yg==","start_revision":"{rev+8}"}}"#,
        ),
        lines(4, 1),
        post("/v3/kv/put", r#"{"key":"Yg==","value":"Mg=="}"#),
        lines(2, 1),
        Step::Quiet { slot: 3 },
        Step::Quiet { slot: 4 },
        Step::Close { slot: 2 },
        post("/v3/kv/put", r#"{"key":"Yg==","value":"Mw=="}"#),
        post("/v3/kv/put", r#"{"key":"Yg==","value":"NA=="}"#),
        post("/v3/kv/put", r#"{"key":"Yg==","value":"NQ=="}"#),
        post("/v3/kv/put", r#"{"key":"Yg==","value":"Ng=="}"#),
        lines(4, 1),
        post("/v3/kv/range", r#"{"key":"Yg==","revision":"{rev+5}"}"#),
        // Compaction.
        post("/v3/kv/compaction", r#"{"revision":"{rev+6}"}"#),
        post("/v3/kv/compaction", r#"{"revision":"{rev+6}"}"#),
        post("/v3/kv/compaction", r#"{"revision":"{rev+99}"}"#),
        post("/v3/kv/range", r#"{"key":"Yg==","revision":"{rev+5}"}"#),
        post("/v3/kv/range", r#"{"key":"Yg==","revision":"{rev+6}"}"#),
        post("/v3/kv/range", r#"{"key":"Yg==","revision":"{rev+99}"}"#),
        watch(
            5,
            r#"{"create_request":{"key":"Yg==","start_revision":"{rev+2}"}}"#,
        ),
        lines(5, 2),
        Step::Quiet { slot: 5 },
        watch(
            6,
            r#"{"create_request":{"key":"Yg==","start_revision":"{rev+7}"}}"#,
        ),
        lines(6, 2),
        watch(7, r#"{"progress_request":{}}"#),
        lines(7, 1),
    ]
}

fn range_and_txn() -> Vec<Step> {
    vec![
        post("/v3/kv/put", r#"{"key":"cA==","value":"dw=="}"#),
        post("/v3/kv/put", r#"{"key":"cDM=","value":"dg=="}"#),
        post("/v3/kv/put", r#"{"key":"cDE=","value":"dg=="}"#),
        post("/v3/kv/put", r#"{"key":"cDI=","value":"dg=="}"#),
        post(
            "/v3/kv/put",
            r#"{"key":"cDM=","value":"dw==","prev_kv":true}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","limit":"2"}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","sort_order":"DESCEND"}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","sort_target":"MOD"}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","sort_target":"VALUE","sort_order":"ASCEND"}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","sort_target":"VERSION","sort_order":"DESCEND"}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","count_only":true,"limit":1}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","keys_only":true,"limit":"1"}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","min_create_revision":"{rev+9}"}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","min_mod_revision":"{rev+3}","max_mod_revision":"{rev+4}"}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"cQ==","revision":"{rev+3}"}"#,
        ),
        post("/v3/kv/range", r#"{"key":"cA==","range_end":"YQ=="}"#),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","range_end":"AA==","serializable":true,"limit":"-5"}"#,
        ),
        post(
            "/v3/kv/range",
            r#"{"key":"cA==","limit":"9223372036854775807"}"#,
        ),
        post("/v3/kv/range", r#"{"key":"cA==","sort_order":5}"#),
        // Compares.
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"cA==","target":"VERSION","result":"LESS","version":"1"}],"success":[{"request_range":{"key":"cA=="}}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"cA==","target":"MOD","result":"GREATER","mod_revision":"1"},{"key":"cA==","target":"LEASE","result":"EQUAL","lease":"0"}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"cA==","target":"VALUE","result":"NOT_EQUAL","value":"dg=="}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"cA==","target":"VALUE","result":"EQUAL","value":"dw=="}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"eg==","target":"VALUE","result":"EQUAL"}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"eg==","target":"VERSION","result":"EQUAL"}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"AA==","range_end":"AA==","target":"CREATE","result":"GREATER","create_revision":"{rev+0}"}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"cA==","range_end":"cQ==","target":"VERSION","result":"EQUAL","version":"1"}]}"#,
        ),
        // Writes and reads in one txn, nested txns, empty txn.
        post(
            "/v3/kv/txn",
            r#"{"success":[{"request_range":{"key":"eg=="}},{"request_put":{"key":"eg==","value":"MQ==","prev_kv":true}},{"request_range":{"key":"eg=="}},{"request_delete_range":{"key":"cA==","range_end":"cQ==","prev_kv":true}},{"request_txn":{"compare":[{"key":"eg==","target":"VERSION","result":"EQUAL","version":"0"}],"success":[{"request_range":{"key":"eg=="}}],"failure":[{"request_put":{"key":"eQ=="}}]}},{"request_txn":{}}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"failure":[{"request_delete_range":{"key":"bm9uZQ=="}}]}"#,
        ),
        post("/v3/kv/txn", "{}"),
        post(
            "/v3/kv/txn",
            r#"{"success":[{"request_delete_range":{"key":"bm9uZQ=="}},{"request_range":{"key":"eg==","revision":"{rev+1}"}}]}"#,
        ),
        // Put options.
        post(
            "/v3/kv/put",
            r#"{"key":"eg==","ignore_value":true,"prev_kv":true}"#,
        ),
        post("/v3/lease/grant", r#"{"TTL":60,"ID":"77"}"#),
        post(
            "/v3/kv/put",
            r#"{"key":"eg==","value":"Mg==","lease":"77"}"#,
        ),
        post(
            "/v3/kv/put",
            r#"{"key":"eg==","value":"Mw==","ignore_lease":true}"#,
        ),
        post("/v3/kv/range", r#"{"key":"eg=="}"#),
        post("/v3/kv/deleterange", r#"{"key":"AA==","range_end":"AA=="}"#),
        post("/v3/kv/deleterange", r#"{"key":"AA==","range_end":"AA=="}"#),
    ]
}

fn errors() -> Vec<Step> {
    vec![
        post("/v3/kv/put", "{}"),
        post("/v3/kv/put", ""),
        post("/v3/kv/range", "null"),
        post("/v3/kv/put", r#"{"key":"YQ==","lease":"123"}"#),
        post(
            "/v3/kv/put",
            r#"{"key":"YQ==","value":"MQ==","ignore_value":true}"#,
        ),
        post("/v3/kv/put", r#"{"key":"YQ==","ignore_lease":true}"#),
        post(
            "/v3/kv/put",
            r#"{"key":"YQ==","lease":"5","ignore_lease":true}"#,
        ),
        post("/v3/kv/deleterange", "{}"),
        post("/v3/kv/txn", r#"{"compare":[{"target":"CREATE"}]}"#),
        post("/v3/kv/txn", r#"{"success":[{}]}"#),
        post(
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"eg=="}},{"request_put":{"key":"eg=="}}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"eg=="}},{"request_delete_range":{"key":"eQ==","range_end":"eyA="}}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"eg==","lease":"9"}}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"success":[{"request_range":{"key":"eg==","revision":"99"}}]}"#,
        ),
        post("/v3/kv/txn", r#"{"success":[{"request_range":{}}]}"#),
        post("/v3/lease/grant", r#"{"TTL":9999999999}"#),
        post("/v3/lease/grant", r#"{"TTL":0}"#),
        post("/v3/lease/grant", r#"{"TTL":-5,"ID":"77"}"#),
        post("/v3/lease/grant", r#"{"TTL":"5","ID":"77"}"#),
        post("/v3/lease/revoke", r#"{"ID":"12345"}"#),
        post("/v3/lease/revoke", "{}"),
        post("/v3/lease/keepalive", r#"{"ID":"12345"}"#),
        post("/v3/lease/keepalive", "{}"),
        post("/v3/lease/keepalive", ""),
        post("/v3/lease/timetolive", r#"{"ID":"12345","keys":true}"#),
        post("/v3/kv/compaction", r#"{"revision":"99"}"#),
        // HTTP.
        post("/v3/kv/nothere", "{}"),
        post("/v3/kv", "{}"),
        post("/v3/kv/range/", r#"{"key":"YQ=="}"#),
        post("/v3alpha/kv/range", r#"{"key":"YQ=="}"#),
        post("/v4", "{}"),
        post("/v3", "{}"),
        post("/v3beta", "{}"),
        post("/v3beta/kv/range", r#"{"key":"YQ=="}"#),
        post("/v3//kv/range", r#"{"key":"YQ=="}"#),
        post("/v3/kv/%72ange", r#"{"key":"YQ=="}"#),
        post("/v3/kv/%zz", r#"{"key":"YQ=="}"#),
        post("/v3/kv/range?x=1", r#"{"key":"YQ=="}"#),
        Step::Req {
            method: "GET",
            path: "/v3/kv/range",
            body: "{}",
        },
        Step::Req {
            method: "PUT",
            path: "/v3/kv/put",
            body: "{}",
        },
        Step::Req {
            method: "DELETE",
            path: "/v3/kv/deleterange",
            body: "{}",
        },
        Step::Req {
            method: "OPTIONS",
            path: "/v3/kv/range",
            body: "{}",
        },
        Step::Req {
            method: "GET",
            path: "/v3/nothere",
            body: "{}",
        },
    ]
}

fn hostile() -> Vec<Step> {
    vec![
        post("/v3/kv/put", "notjson"),
        post("/v3/kv/put", "xx"),
        post("/v3/kv/range", "[]"),
        post("/v3/kv/range", r#""s""#),
        post("/v3/kv/range", "5"),
        post("/v3/kv/range", r#"{"key":"YQ=="} x"#),
        post("/v3/kv/range", r#"{"key":"YQ==""#),
        post("/v3/kv/range", r#"{"key":"YQ==",}"#),
        post("/v3/kv/range", r#"{"key" "YQ=="}"#),
        post("/v3/kv/range", r#"{"key":"YQ==" "x"}"#),
        post("/v3/kv/range", r#"{"key":["#),
        post("/v3/kv/range", r#"{"key":[1 2]}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":-}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":1.}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":1e}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","keys_only":tru}"#),
        post("/v3/kv/range", "{\"key\":\"\u{1}\"}"),
        post("/v3/kv/range", r#"{"key":"\x"}"#),
        post("/v3/kv/range", r#"{"key":"\u00zz"}"#),
        post("/v3/kv/range", "{'key':1}"),
        // Bad base64.
        post("/v3/kv/put", r#"{"key":"!!"}"#),
        post("/v3/kv/put", r#"{"key":"YQ"}"#),
        post("/v3/kv/put", r#"{"key":"YQ="}"#),
        post("/v3/kv/put", r#"{"key":"YQ==="}"#),
        post("/v3/kv/put", r#"{"key":"Y Q=="}"#),
        post("/v3/kv/put", r#"{"key":"-_8="}"#),
        post("/v3/kv/put", r#"{"key":"YQ==YQ=="}"#),
        post("/v3/kv/put", r#"{"key":"YQ==\u0000"}"#),
        post("/v3/kv/put", r#"{"key":"YR==","value":"YQ\r\n=="}"#),
        post("/v3/kv/range", r#"{"key":"YQ=="}"#),
        // Types and numbers.
        post("/v3/kv/range", r#"{"key":123}"#),
        post("/v3/kv/range", r#"{"key":{}}"#),
        post("/v3/kv/range", r#"{"key":[]}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":true}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":"abc"}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":1.5}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":"1e2"}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":"05"}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":""}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":"\"5\""}"#),
        post(
            "/v3/kv/range",
            r#"{"key":"YQ==","limit":"99999999999999999999"}"#,
        ),
        post("/v3/kv/range", r#"{"key":"YQ==","limit":" 5"}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","keys_only":"true"}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","keys_only":1}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","sort_order":"descend"}"#),
        post("/v3/kv/range", r#"{"key":"YQ==","sort_target":"<b>"}"#),
        post(
            "/v3/kv/range",
            r#"{"key":"YQ==","rangeEnd":"Yg==","keysOnly":true}"#,
        ),
        post("/v3/kv/range", r#"{"key":"YQ==","key":"Yg=="}"#),
        post("/v3/kv/range", r#"{"KEY":"YQ=="}"#),
        post(
            "/v3/kv/range",
            r#"{"key":"YQ==","unknown":{"deep":[1,{"x":null}]},"serializable":null}"#,
        ),
        post("/v3/kv/txn", r#"{"compare":{}}"#),
        post("/v3/kv/txn", r#"{"compare":"x"}"#),
        post("/v3/kv/txn", r#"{"compare":[1]}"#),
        post("/v3/kv/txn", r#"{"success":[{"request_put":"x"}]}"#),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"YQ==","target":"BOGUS"}]}"#,
        ),
        post(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"YQ==","create_revision":""}]}"#,
        ),
        post("/v3/lease/grant", r#"{"TTL":true}"#),
        post("/v3/lease/keepalive", "xx"),
        post("/v3/lease/keepalive", r#"{"ID":"abc"}"#),
        post("/v3/lease/keepalive", r#"{"ID":true}"#),
        watch(1, "xx"),
        watch(2, r#"{"create_request":{"key":"!"}}"#),
        watch(3, r#"{"create_request":{"key":"YQ==","filters":["BAD"]}}"#),
        watch(
            4,
            r#"{"create_request":{"key":"YQ==","start_revision":true}}"#,
        ),
        watch(5, r#"{"create_request":{}}"#),
        lines(5, 1),
    ]
}

fn scripts() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        ("lock_recipe", lock_recipe()),
        ("expiry_and_history", expiry_and_history()),
        ("range_and_txn", range_and_txn()),
        ("errors", errors()),
        ("hostile", hostile()),
    ]
}

#[test]
fn model_answers_as_etcd_v3() {
    check(scripts());
}

/// Quorum lost: a follower of a 3-member cluster whose two peers (the leader among them) are
/// SIGSTOPped, against the model with `set_paused(true)`. Linearizable calls time out after
/// etcd's ~7 s (sent in parallel, so the test waits once); serializable reads and watches are
/// served. About 12 s.
#[test]
fn no_quorum_answers_as_etcd_v3() {
    let started = Instant::now();
    let cluster = EtcdCluster::start(3);
    let leader = cluster.leader().expect("a 3-member cluster has a leader");
    let f = (leader + 1) % 3;
    let member = &cluster.members[f];
    let mut runner = Runner::new("no_quorum", member.client_url(), &member.version());
    for step in [
        post("/v3/lease/grant", r#"{"TTL":60}"#),
        post(
            "/v3/kv/put",
            r#"{"key":"YQ==","value":"MQ==","lease":"{L1}"}"#,
        ),
        watch(1, r#"{"create_request":{"key":"YQ=="}}"#),
        lines(1, 1),
    ] {
        runner.step(&step);
    }
    for (i, m) in cluster.members.iter().enumerate() {
        if i != f {
            m.pause();
        }
    }
    runner.model.set_paused(true);
    let calls: Vec<(&str, &str)> = vec![
        ("/v3/kv/put", r#"{"key":"YQ==","value":"Mg=="}"#),
        ("/v3/kv/range", r#"{"key":"YQ=="}"#),
        ("/v3/kv/range", r#"{"key":"YQ==","serializable":true}"#),
        ("/v3/kv/deleterange", r#"{"key":"YQ=="}"#),
        (
            "/v3/kv/txn",
            r#"{"success":[{"request_range":{"key":"YQ==","serializable":true}}]}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"Yg=="}}]}"#,
        ),
        ("/v3/lease/grant", r#"{"TTL":60}"#),
        ("/v3/lease/revoke", r#"{"ID":"{L1}"}"#),
        ("/v3/lease/keepalive", r#"{"ID":"{L1}"}"#),
        ("/v3/lease/timetolive", r#"{"ID":"{L1}"}"#),
        ("/v3/kv/compaction", r#"{"revision":"1"}"#),
    ];
    let threads: Vec<_> = calls
        .iter()
        .map(|(path, body)| {
            let (url, path, body) = (
                runner.url.clone(),
                path.to_string(),
                runner.real.ctx.expand(body),
            );
            std::thread::spawn(move || {
                v3http::request(&url, "POST", &path, &body, Duration::from_secs(20))
            })
        })
        .collect();
    let answers: Vec<RawResponse> = threads
        .into_iter()
        .map(|t| t.join().expect("request thread"))
        .collect();
    for ((path, body), real) in calls.iter().zip(&answers) {
        runner.answer("POST", path, body, real);
    }
    runner.step(&watch(2, r#"{"create_request":{"key":"YQ=="}}"#));
    runner.step(&lines(2, 1));
    runner.step(&Step::Quiet { slot: 1 });
    for (i, m) in cluster.members.iter().enumerate() {
        if i != f {
            m.resume();
        }
    }
    eprintln!(
        "no quorum: {} steps in {:?}",
        runner.steps,
        started.elapsed()
    );
    report(&runner.mismatches);
}

#[test]
fn lease_keys_compare_as_a_set() {
    let real = r#"{"ID":"L1","keys":["Yg==","YQ=="]}"#;
    let model = r#"{"ID":"L1","keys":["YQ==","Yg=="]}"#;
    assert_eq!(sort_lease_keys(real), sort_lease_keys(model));
    assert_eq!(sort_lease_keys(real), model);
    assert_ne!(sort_lease_keys(r#"{"keys":["YQ=="]}"#), model);
}
