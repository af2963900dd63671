//! Differential test: the simulated etcd (`microlock_proto::sim::etcd::SimEtcd`) against a real
//! etcd, on the same scripted request sequences.
//!
//! Each script runs on a fresh single-member etcd (`EtcdServer::start`, so `$ETCD_BIN` picks
//! 3.4 or 3.5) and on a fresh `SimEtcd` configured for the same version. The model's clock is
//! the test's real clock, so TTLs run out on both sides at about the same time (the model's
//! sync ticks have another phase than the real leader's: a watch waiting for an expiry lets the
//! model's time run on to its next tick).
//!
//! Every step compares: the status; `Content-Type`, `Location`, `Allow`; the `X-Etcd-Index`
//! relative to the script's first index; and the whole body, byte for byte, after three
//! normalisations: `expiration` timestamps are blanked (the model has a fake wall clock, but
//! their format is checked), `ttl` values are compared with a tolerance of 1 s, and every index
//! (`modifiedIndex`, `createdIndex`, `index`, the numbers in a `cause`, in-order key names) is
//! made relative to the script's first index. A mismatch prints the script, the step, the
//! request and both responses.
//!
//! The second part (at the end of the file) checks the member faults of the simulated cluster
//! (`microlock_proto::sim::cluster::SimCluster`) against a real 3-member cluster
//! (`EtcdCluster::start(3)`): a write through one member seen by quorum reads and watches on
//! the others; a killed member refusing connections and cutting its watches, then restarted
//! with the same store (and its hidden attribute event); a `SIGSTOP`ped member answering
//! nothing, then serving what it kept (a late write) and firing its watch; a stopped leader
//! stalling a follower's write until etcd's 7 s raft timeout while a new leader serves new
//! writes; a member partitioned from its peers (nftables, root) reading stale, timing writes
//! out with `500` and keeping its watch silent until it rejoins. About 15 s per etcd version
//! (the two 7 s raft timeouts run in parallel).

use std::collections::BTreeMap;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use microlock_proto::sim::etcd::{EtcdVersion, Reply, SimEtcd, INITIAL_INDEX};
use microlock_tests::etcd::{raw_request, EtcdServer, RawResponse};

/// One step of a script. Paths and bodies may use placeholders, evaluated on each side with
/// that side's own indexes: `{base+N}` (the script's first `X-Etcd-Index` + N), `{last+N}` /
/// `{last-N}` (the `X-Etcd-Index` of the previous compared response ± N), `{mod+N}` (the
/// `node.modifiedIndex` of the previous compared response + N).
enum Step {
    /// One request, compared at once.
    Req {
        method: &'static str,
        path: &'static str,
        body: Option<&'static str>,
    },
    /// A watch (or any request that may block) started in the background; compared at `End`.
    Start { slot: usize, path: &'static str },
    /// Waits for the request started in `slot` and compares its response.
    End { slot: usize },
    /// Lets real time pass (the model's clock follows).
    Sleep(Duration),
    /// `n` requests sent on both sides; only the last response is compared.
    Repeat {
        n: usize,
        method: &'static str,
        path: &'static str,
        body: Option<&'static str>,
    },
}

fn get(path: &'static str) -> Step {
    Step::Req {
        method: "GET",
        path,
        body: None,
    }
}
fn put(path: &'static str, body: &'static str) -> Step {
    Step::Req {
        method: "PUT",
        path,
        body: Some(body),
    }
}
fn post(path: &'static str, body: &'static str) -> Step {
    Step::Req {
        method: "POST",
        path,
        body: Some(body),
    }
}
fn del(path: &'static str) -> Step {
    Step::Req {
        method: "DELETE",
        path,
        body: None,
    }
}
fn req(method: &'static str, path: &'static str, body: Option<&'static str>) -> Step {
    Step::Req { method, path, body }
}
fn start(slot: usize, path: &'static str) -> Step {
    Step::Start { slot, path }
}
fn end(slot: usize) -> Step {
    Step::End { slot }
}
fn sleep_ms(ms: u64) -> Step {
    Step::Sleep(Duration::from_millis(ms))
}

/// One side's indexes, for placeholders and normalisation.
#[derive(Default, Clone, Copy)]
struct Ctx {
    base: u64,
    last: u64,
    last_mod: u64,
}

impl Ctx {
    fn expand(&self, template: &str) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let inner = &rest[open + 1..open + close];
            let (name, delta) = match inner.find(['+', '-']) {
                Some(i) => {
                    let n: i64 = inner[i + 1..].parse().expect("placeholder offset");
                    (&inner[..i], if &inner[i..=i] == "-" { -n } else { n })
                }
                None => (inner, 0),
            };
            let value = match name {
                "base" => self.base,
                "last" => self.last,
                "mod" => self.last_mod,
                _ => panic!("unknown placeholder {{{inner}}}"),
            };
            out.push_str(&rest[..open]);
            out.push_str(&(value as i64 + delta).to_string());
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Learns the indexes of a compared response.
    fn learn(&mut self, r: &RawResponse) {
        if let Some(i) = r.header("X-Etcd-Index").and_then(|v| v.parse().ok()) {
            if i != 0 {
                self.last = i;
            }
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) {
            if let Some(m) = v["node"]["modifiedIndex"].as_u64() {
                self.last_mod = m;
            }
        }
    }

    fn rel(&self, n: u64) -> String {
        if n >= self.base && n != 0 {
            format!("#{}", n - self.base)
        } else {
            n.to_string()
        }
    }

    /// The body with expirations blanked, ttls taken out, indexes made relative.
    fn normalize(&self, body: &[u8]) -> (String, Vec<i64>) {
        let s = String::from_utf8_lossy(body).into_owned();
        let b = s.as_bytes();
        let mut out = String::new();
        let mut ttls = Vec::new();
        let mut i = 0;
        let digits = |from: usize| {
            let mut j = from;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            j
        };
        while i < b.len() {
            let rest = &s[i..];
            if let Some(tail) = rest.strip_prefix("\"expiration\":\"") {
                let close = tail.find('"').unwrap_or(tail.len());
                let ts = &tail[..close];
                let ok = ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T';
                out.push_str(if ok {
                    "\"expiration\":\"<time>\""
                } else {
                    "\"expiration\":\"<BAD TIME>\""
                });
                i += "\"expiration\":\"".len() + close + 1;
            } else if let Some(tail) = rest.strip_prefix("\"ttl\":") {
                let neg = tail.starts_with('-');
                let from = i + "\"ttl\":".len() + usize::from(neg);
                let to = digits(from);
                let v: i64 = s[from..to].parse().unwrap_or(i64::MIN);
                ttls.push(if neg { -v } else { v });
                out.push_str("\"ttl\":<ttl>");
                i = to;
            } else if let Some(key) = ["\"modifiedIndex\":", "\"createdIndex\":", "\"index\":"]
                .into_iter()
                .find(|k| rest.starts_with(k))
            {
                let from = i + key.len();
                let to = digits(from);
                out.push_str(key);
                out.push_str(&self.rel(s[from..to].parse().unwrap_or(0)));
                i = to;
            } else if let Some(tail) = rest.strip_prefix("\"cause\":\"") {
                // Indexes inside a cause ("[5 != 9]", "[104/5]"), not inside \uXXXX escapes.
                out.push_str("\"cause\":\"");
                let mut j = i + "\"cause\":\"".len();
                let end = j + tail.find("\",\"index\"").unwrap_or(tail.len());
                while j < end {
                    if b[j] == b'\\' && b.get(j + 1) == Some(&b'u') {
                        out.push_str(&s[j..(j + 6).min(end)]);
                        j += 6;
                    } else if b[j].is_ascii_digit() {
                        let to = digits(j).min(end);
                        out.push_str(&self.rel(s[j..to].parse().unwrap_or(0)));
                        j = to;
                    } else {
                        let c = s[j..].chars().next().unwrap_or('?');
                        out.push(c);
                        j += c.len_utf8();
                    }
                }
                i = end;
            } else if b[i].is_ascii_digit() && digits(i) - i == 20 {
                // An in-order key name: the zero-padded index.
                let to = digits(i);
                out.push_str(&format!(
                    "<key {}>",
                    self.rel(s[i..to].parse().unwrap_or(0))
                ));
                i = to;
            } else {
                let c = rest.chars().next().unwrap_or('?');
                out.push(c);
                i += c.len_utf8();
            }
        }
        (out, ttls)
    }
}

fn show(r: &RawResponse) -> String {
    let mut s = format!("    {}\n", r.status);
    for (n, v) in &r.headers {
        let n = n.to_ascii_lowercase();
        if matches!(
            n.as_str(),
            "content-type" | "x-etcd-index" | "location" | "allow" | "x-content-type-options"
        ) {
            s.push_str(&format!("    {n}: {v}\n"));
        }
    }
    s.push_str(&format!("    {:?}\n", String::from_utf8_lossy(&r.body)));
    s
}

/// The differences between the real and the model response, after normalisation.
fn compare(real: &RawResponse, rc: &Ctx, model: &RawResponse, mc: &Ctx) -> Vec<String> {
    let mut diffs = Vec::new();
    if real.status != model.status {
        diffs.push(format!("status {} != {}", real.status, model.status));
    }
    for h in ["Content-Type", "Location", "Allow"] {
        if real.header(h) != model.header(h) {
            diffs.push(format!(
                "{h}: {:?} != {:?}",
                real.header(h),
                model.header(h)
            ));
        }
    }
    let idx = |r: &RawResponse, c: &Ctx| {
        r.header("X-Etcd-Index")
            .map(|v| c.rel(v.parse().unwrap_or(u64::MAX)))
    };
    if idx(real, rc) != idx(model, mc) {
        diffs.push(format!(
            "X-Etcd-Index (relative) {:?} != {:?}",
            idx(real, rc),
            idx(model, mc)
        ));
    }
    let (rb, rt) = rc.normalize(&real.body);
    let (mb, mt) = mc.normalize(&model.body);
    if rb != mb {
        diffs.push(format!(
            "normalised body\n      real:  {rb}\n      model: {mb}"
        ));
    }
    if rt.len() != mt.len() || rt.iter().zip(&mt).any(|(a, b)| (a - b).abs() > 1) {
        diffs.push(format!("ttl {rt:?} != {mt:?}"));
    }
    diffs
}

fn to_raw(r: http::Response<Vec<u8>>) -> RawResponse {
    RawResponse {
        status: r.status().as_u16(),
        headers: r
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: r.into_body(),
    }
}

fn model_request(method: &str, path: &str, body: Option<&str>) -> Option<http::Request<Vec<u8>>> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:2379{path}"));
    if body.is_some() {
        b = b.header("Content-Type", "application/x-www-form-urlencoded");
    }
    b.body(body.unwrap_or("").as_bytes().to_vec()).ok()
}

struct Runner {
    name: &'static str,
    url: String,
    model: SimEtcd,
    clock: Instant,
    next_id: u64,
    real_ctx: Ctx,
    model_ctx: Ctx,
    /// Started requests: real thread, model id, label.
    slots: BTreeMap<usize, (JoinHandle<RawResponse>, u64, String)>,
    /// Model responses of completed parked requests, by id.
    model_done: BTreeMap<u64, RawResponse>,
    mismatches: Vec<String>,
    steps: usize,
}

impl Runner {
    /// How many watches the real etcd has parked (`/v2/stats/store`).
    fn real_watchers(&self) -> u64 {
        let stats = raw_request(&self.url, "GET", "/v2/stats/store", None);
        serde_json::from_slice::<serde_json::Value>(&stats.body)
            .ok()
            .and_then(|v| v["watchers"].as_u64())
            .expect("watchers in /v2/stats/store")
    }

    /// The model's clock: real time, never going back (it may have been pushed ahead).
    fn now(&mut self) -> Instant {
        self.clock = self.clock.max(Instant::now());
        self.clock
    }

    fn collect_model_watches(&mut self) {
        while let Some((id, r)) = self.model.poll_watch() {
            self.model_done.insert(id, to_raw(r));
        }
    }

    fn model_send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u64, Option<RawResponse>) {
        self.next_id += 1;
        let id = self.next_id;
        let Some(request) = model_request(method, path, body) else {
            let r = RawResponse {
                status: 0,
                headers: Vec::new(),
                body: b"(http crate refused to build this request)".to_vec(),
            };
            return (id, Some(r));
        };
        let now = self.now();
        let reply = self.model.handle(id, &request, now);
        self.collect_model_watches();
        match reply {
            Reply::Now(r) => (id, Some(to_raw(r))),
            Reply::Parked => (id, None),
        }
    }

    fn check(&mut self, label: &str, real: RawResponse, model: Option<RawResponse>) {
        self.steps += 1;
        let model = model.unwrap_or_else(|| RawResponse {
            status: 0,
            headers: Vec::new(),
            body: b"(the model's watch never completed)".to_vec(),
        });
        let diffs = compare(&real, &self.real_ctx, &model, &self.model_ctx);
        if !diffs.is_empty() {
            self.mismatches.push(format!(
                "[{}] step {}: {label}\n  differences:\n    {}\n  real etcd:\n{}  model:\n{}",
                self.name,
                self.steps,
                diffs.join("\n    "),
                show(&real),
                show(&model)
            ));
        }
        self.real_ctx.learn(&real);
        self.model_ctx.learn(&model);
    }

    fn step(&mut self, step: &Step) {
        match *step {
            Step::Req { method, path, body } => {
                let (rp, mp) = (self.real_ctx.expand(path), self.model_ctx.expand(path));
                let (rb, mb) = (
                    body.map(|b| self.real_ctx.expand(b)),
                    body.map(|b| self.model_ctx.expand(b)),
                );
                let real = raw_request(&self.url, method, &rp, rb.as_deref());
                let (_, model) = self.model_send(method, &mp, mb.as_deref());
                let label = format!("{method} {path} {}", body.unwrap_or(""));
                self.check(&label, real, model);
            }
            Step::Repeat {
                n,
                method,
                path,
                body,
            } => {
                let mut last = None;
                for _ in 0..n {
                    let real = raw_request(&self.url, method, path, body);
                    let (_, model) = self.model_send(method, path, body);
                    last = Some((real, model));
                }
                if let Some((real, model)) = last {
                    self.check(
                        &format!("{n} x {method} {path} {}", body.unwrap_or("")),
                        real,
                        model,
                    );
                }
            }
            Step::Start { slot, path } => {
                let (rp, mp) = (self.real_ctx.expand(path), self.model_ctx.expand(path));
                let url = self.url.clone();
                let before = self.real_watchers();
                let handle = thread::spawn(move || raw_request(&url, "GET", &rp, None));
                // Go on once etcd has answered or parked the watch (its watcher count grew).
                let deadline = Instant::now() + Duration::from_secs(5);
                while !handle.is_finished()
                    && self.real_watchers() <= before
                    && Instant::now() < deadline
                {
                    thread::sleep(Duration::from_millis(5));
                }
                let (id, model) = self.model_send("GET", &mp, None);
                if let Some(r) = model {
                    self.model_done.insert(id, r);
                }
                self.slots
                    .insert(slot, (handle, id, format!("GET {path} (started)")));
            }
            Step::End { slot } => {
                let (handle, id, label) = self.slots.remove(&slot).expect("no such slot");
                let real = handle.join().expect("real watch thread panicked");
                // The real watch is done; let the model's time run to the same point, then on
                // through its own sync ticks (another phase than the real leader's), 2 s at most.
                let now = self.now();
                self.model.advance(now);
                self.collect_model_watches();
                let limit = now + Duration::from_secs(2);
                while !self.model_done.contains_key(&id) {
                    match self.model.next_expiry() {
                        Some(t) if t <= limit => {
                            self.clock = self.clock.max(t);
                            self.model.advance(t);
                            self.collect_model_watches();
                        }
                        _ => break,
                    }
                }
                let model = self.model_done.remove(&id);
                self.check(&label, real, model);
            }
            Step::Sleep(d) => {
                thread::sleep(d);
                let now = self.now();
                self.model.advance(now);
                self.collect_model_watches();
            }
        }
    }
}

/// Runs one script on a fresh etcd and a fresh model; panics with every mismatch.
fn run(name: &'static str, script: Vec<Step>) {
    let server = EtcdServer::start();
    let version = EtcdVersion::from_version_string(&server.version());
    let t0 = Instant::now();
    let mut runner = Runner {
        name,
        url: server.client_url(),
        model: SimEtcd::new(t0).with_version(version),
        clock: t0,
        next_id: 0,
        real_ctx: Ctx::default(),
        model_ctx: Ctx::default(),
        slots: BTreeMap::new(),
        model_done: BTreeMap::new(),
        mismatches: Vec::new(),
        steps: 0,
    };
    // The base index of each side: a quorum read of the root (compared too), once the fresh
    // member has written its bootstrap events (membership, cluster version).
    let deadline = Instant::now() + Duration::from_secs(10);
    let real = loop {
        let r = raw_request(&runner.url, "GET", "/v2/keys/?quorum=true", None);
        let index: u64 = r
            .header("X-Etcd-Index")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if index >= INITIAL_INDEX || Instant::now() > deadline {
            break r;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (_, model) = runner.model_send("GET", "/v2/keys/?quorum=true", None);
    for (ctx, r) in [
        (&mut runner.real_ctx, Some(&real)),
        (&mut runner.model_ctx, model.as_ref()),
    ] {
        let base = r
            .and_then(|r| r.header("X-Etcd-Index"))
            .and_then(|v| v.parse().ok())
            .expect("X-Etcd-Index of the first read");
        *ctx = Ctx {
            base,
            last: base,
            last_mod: 0,
        };
    }
    runner.check("GET /v2/keys/?quorum=true (base index)", real, model);
    for step in &script {
        runner.step(step);
    }
    assert!(
        runner.slots.is_empty(),
        "[{name}] script left started requests"
    );
    eprintln!(
        "[{name}] etcd {} vs model: {} steps, {} mismatches",
        server.version(),
        runner.steps,
        runner.mismatches.len()
    );
    if !runner.mismatches.is_empty() {
        panic!(
            "\n{} mismatch(es) between etcd {} and the model:\n\n{}\n",
            runner.mismatches.len(),
            server.version(),
            runner.mismatches.join("\n")
        );
    }
}

#[test]
fn lock_unlock_renew_cycle() {
    run(
        "lock_unlock_renew_cycle",
        vec![
            put("/v2/keys/lock?prevExist=false", "value=node-a&ttl=30"),
            put("/v2/keys/lock?prevExist=false", "value=node-b&ttl=30"),
            get("/v2/keys/lock?quorum=true"),
            get("/v2/keys/lock"),
            put("/v2/keys/lock?prevValue=node-a", "refresh=true&ttl=30"),
            put("/v2/keys/lock?prevValue=node-a", "refresh=true&ttl=20"),
            get("/v2/keys/lock?quorum=true"),
            put("/v2/keys/lock?prevValue=node-b", "refresh=true&ttl=30"),
            del("/v2/keys/lock?prevValue=node-b"),
            del("/v2/keys/lock?prevValue=node-a"),
            del("/v2/keys/lock?prevValue=node-a"),
            put("/v2/keys/lock?prevValue=node-a", "refresh=true&ttl=30"),
            get("/v2/keys/lock?quorum=true"),
            put("/v2/keys/lock?prevExist=false", "value=node-b&ttl=30"),
            get("/v2/keys/lock?wait=true&waitIndex={base+1}"),
            get("/v2/keys/lock?wait=true&waitIndex={base+2}"),
        ],
    );
}

#[test]
fn contention_watch_then_release() {
    run(
        "contention_watch_then_release",
        vec![
            put("/v2/keys/mutex?prevExist=false", "value=node-a&ttl=30"),
            // node-b fails, then watches from the error's index + 1.
            put("/v2/keys/mutex?prevExist=false", "value=node-b&ttl=30"),
            start(1, "/v2/keys/mutex?wait=true&waitIndex={last+1}"),
            // a renewal does not wake the watcher
            put("/v2/keys/mutex?prevValue=node-a", "refresh=true&ttl=30"),
            put("/v2/keys/other", "value=x"),
            del("/v2/keys/mutex?prevValue=node-a"),
            end(1),
            put("/v2/keys/mutex?prevExist=false", "value=node-b&ttl=30"),
            // a watch without waitIndex, woken by a write
            start(2, "/v2/keys/mutex?wait=true"),
            put("/v2/keys/mutex?prevExist=true", "value=node-c"),
            end(2),
        ],
    );
}

#[test]
fn conditions_and_compare_causes() {
    run(
        "conditions_and_compare_causes",
        vec![
            put("/v2/keys/cas", "value=a"),
            put("/v2/keys/cas?prevValue=b", "value=c"),
            put("/v2/keys/cas?prevIndex=99", "value=c"),
            put("/v2/keys/cas?prevIndex=99&prevValue=b", "value=c"),
            put("/v2/keys/cas?prevIndex={last}&prevValue=b", "value=c"),
            put("/v2/keys/cas?prevIndex={mod}", "value=c"),
            put("/v2/keys/cas?prevExist=true&prevValue=c", "value=d"),
            put("/v2/keys/cas?prevExist=true", "value=e"),
            put("/v2/keys/missing?prevExist=true", "value=e"),
            put("/v2/keys/missing?prevValue=x", "value=e"),
            put("/v2/keys/missing?prevIndex=3", "value=e"),
            put("/v2/keys/cas?prevExist=false", "value=e"),
            put("/v2/keys/cas?prevValue=", "value=e"),
            del("/v2/keys/cas?prevIndex=1"),
            del("/v2/keys/cas?prevValue=zz&prevIndex=1"),
            del("/v2/keys/cas?prevIndex={mod}"),
            del("/v2/keys/cas"),
            del("/v2/keys/missing?prevValue=x"),
            put("/v2/keys/plain", "value=1"),
            put("/v2/keys/plain", "value=2"),
            del("/v2/keys/plain"),
        ],
    );
}

#[test]
fn refresh_semantics() {
    run(
        "refresh_semantics",
        vec![
            put("/v2/keys/r?prevExist=false", "value=a&ttl=30"),
            put("/v2/keys/r?prevValue=a", "refresh=true&ttl=30"),
            put("/v2/keys/r?prevExist=true", "refresh=true&ttl=30"),
            put("/v2/keys/r?prevIndex={mod}", "refresh=true&ttl=30"),
            put("/v2/keys/r?prevValue=a", "refresh=true&ttl=30&value=x"),
            put("/v2/keys/r?prevValue=a", "refresh=true"),
            put("/v2/keys/r?prevValue=a", "refresh=true&ttl=5&value="),
            put("/v2/keys/r?prevValue=a", "refresh=maybe&ttl=5"),
            put("/v2/keys/nope?prevValue=a", "refresh=true&ttl=30"),
            put("/v2/keys/nope", "refresh=true&ttl=30"),
            // a watch from the first refresh index skips every refresh
            start(1, "/v2/keys/r?wait=true&waitIndex={base+2}"),
            // refresh without a condition replaces the node (a `set`, new createdIndex), and
            // notifies no watcher either
            put("/v2/keys/r", "refresh=true&ttl=30"),
            get("/v2/keys/r?wait=true&waitIndex={base+2}&quorum=true"),
            put("/v2/keys/r?prevExist=true", "value=changed"),
            end(1),
            get("/v2/keys/r?quorum=true"),
        ],
    );
}

#[test]
fn ttl_expiry() {
    run(
        "ttl_expiry",
        vec![
            put("/v2/keys/t?prevExist=false", "value=a&ttl=1"),
            get("/v2/keys/t"),
            put("/v2/keys/zero", "value=z&ttl=0"),
            put("/v2/keys/keep", "value=k&ttl=1"),
            // a write without ttl makes the key permanent again
            put("/v2/keys/keep?prevValue=k", "value=k2"),
            sleep_ms(2200),
            get("/v2/keys/t?quorum=true"),
            get("/v2/keys/zero"),
            get("/v2/keys/keep"),
            // both expire events are in the history
            get("/v2/keys/t?wait=true&waitIndex={base+2}"),
            get("/v2/keys/zero?wait=true&waitIndex={base+3}"),
            del("/v2/keys/t?prevValue=a"),
        ],
    );
}

#[test]
fn watch_sees_expire() {
    run(
        "watch_sees_expire",
        vec![
            put("/v2/keys/lease?prevExist=false", "value=node-a&ttl=1"),
            start(1, "/v2/keys/lease?wait=true&waitIndex={last+1}"),
            end(1),
            get("/v2/keys/lease"),
            put("/v2/keys/lease?prevExist=false", "value=node-b&ttl=30"),
        ],
    );
}

#[test]
fn watch_from_past_index() {
    run(
        "watch_from_past_index",
        vec![
            put("/v2/keys/w", "value=one"),
            put("/v2/keys/x", "value=other"),
            put("/v2/keys/w", "value=two"),
            put("/v2/keys/d/child", "value=c"),
            get("/v2/keys/w?wait=true&waitIndex={base+1}"),
            get("/v2/keys/w?wait=true&waitIndex={base+2}"),
            get("/v2/keys/w?wait=true&waitIndex={base+3}"),
            get("/v2/keys/d?wait=true&recursive=true&waitIndex={base+1}"),
            get("/v2/keys/?wait=true&recursive=true&waitIndex=1"),
            get("/v2/keys/w?wait=true&quorum=true"),
            del("/v2/keys/d?recursive=true"),
            // a deleted directory matches watches of keys under it
            get("/v2/keys/d/child/deeper?wait=true&waitIndex={last}"),
            start(1, "/v2/keys/w?wait=true&waitIndex={last+2}"),
            put("/v2/keys/w", "value=three"),
            put("/v2/keys/w", "value=four"),
            end(1),
        ],
    );
}

#[test]
fn history_cleared_after_1100_writes() {
    run(
        "history_cleared_after_1100_writes",
        vec![
            put("/v2/keys/first", "value=a"),
            Step::Repeat {
                n: 1100,
                method: "PUT",
                path: "/v2/keys/busy",
                body: Some("value=x"),
            },
            get("/v2/keys/first?wait=true&waitIndex={base+1}"),
            get("/v2/keys/busy?wait=true&waitIndex={last-999}"),
            get("/v2/keys/busy?wait=true&waitIndex={last-1000}"),
            get("/v2/keys/busy?wait=true&waitIndex=1"),
        ],
    );
}

#[test]
fn root_is_read_only() {
    run(
        "root_is_read_only",
        vec![
            put("/v2/keys/", "value=x"),
            put("/v2/keys", "value=x"),
            put("/v2/keys?prevExist=true", "value=x"),
            put("/v2/keys?prevExist=false", "value=x"),
            put("/v2/keys?prevValue=x", "value=x"),
            del("/v2/keys"),
            del("/v2/keys/?recursive=true"),
            del("/v2/keys?prevValue=x"),
            get("/v2/keys"),
            post("/v2/keys", "value=rooted"),
            get("/v2/keys/?sorted=true"),
        ],
    );
}

#[test]
fn request_validation_errors() {
    run(
        "request_validation_errors",
        vec![
            put("/v2/keys/v", "value=x&ttl=abc"),
            put("/v2/keys/v", "value=x&ttl=-1"),
            put("/v2/keys/v", "value=x&ttl=1.5"),
            put("/v2/keys/v", "value=x&ttl="),
            put("/v2/keys/v?prevIndex=x", "value=x"),
            get("/v2/keys/v?wait=true&waitIndex=-1"),
            get("/v2/keys/v?wait=maybe"),
            get("/v2/keys/v?recursive=2"),
            get("/v2/keys/v?quorum="),
            put("/v2/keys/v?prevExist=maybe", "value=x"),
            put("/v2/keys/v?wait=true", "value=x"),
            put("/v2/keys/v?prevValue=", "value=x"),
            put("/v2/keys/v?noValueOnSuccess=true", "value=quiet"),
            get("/v2/keys/v?x=%zz"),
            put("/v2/keys/v", "value=%zz"),
            get("/v2/keys/v?x=1;y=2"),
            put("/v2/keys/v?prevExist=false;x=1", "value=semi"),
            get("/v2/keys/v"),
        ],
    );
}

#[test]
fn special_character_keys() {
    run(
        "special_character_keys",
        vec![
            put("/v2/keys/with%20space", "value=a+b"),
            put("/v2/keys/what%3F", "value=q%3Fx%26y%3Dz"),
            put("/v2/keys/100%25", "value=percent%25"),
            put("/v2/keys/plus%2Bsign", "value=1%2B1"),
            put("/v2/keys/raw+plus", "value=raw"),
            put("/v2/keys/caf%C3%A9", "value=%F0%9F%94%92"),
            put(
                "/v2/keys/%3Ctag%3E%26%22",
                "value=%3Cb%3E%26%22%5C%0A%09%01%E2%80%A8",
            ),
            put("/v2/keys/bad%FFutf8", "value=%FE%41"),
            put("/v2/keys/a%2Fb%2Fc", "value=nested"),
            get("/v2/keys/with%20space"),
            get("/v2/keys/what%3F?quorum=true"),
            get("/v2/keys/100%25"),
            get("/v2/keys/plus+sign"),
            get("/v2/keys/raw%2Bplus"),
            get("/v2/keys/caf%C3%A9"),
            get("/v2/keys/a/b/c"),
            get("/v2/keys/a/b/"),
            get("/v2/keys/?recursive=true&sorted=true"),
            del("/v2/keys/what%3F?prevValue=q%3Fx%26y%3Dz"),
            get("/v2/keys/nope%20here"),
        ],
    );
}

#[test]
fn nested_keys_and_directories() {
    run(
        "nested_keys_and_directories",
        vec![
            put("/v2/keys/a/b/c", "value=leaf"),
            get("/v2/keys/a?sorted=true"),
            get("/v2/keys/a?recursive=true&sorted=true"),
            get("/v2/keys/a/b/c/d"),
            put("/v2/keys/a/b/c/d", "value=x"),
            put("/v2/keys/a/b/c/d?prevExist=false", "value=x"),
            get("/v2/keys/x/y/z"),
            put("/v2/keys/a/b", "value=x"),
            put("/v2/keys/a/b?prevExist=true", "value=x"),
            put("/v2/keys/a/b?prevValue=x", "value=x"),
            del("/v2/keys/a/b?prevValue=x"),
            del("/v2/keys/a"),
            del("/v2/keys/a?dir=true"),
            put("/v2/keys/a/_hidden", "value=h"),
            get("/v2/keys/a/_hidden"),
            get("/v2/keys/a?sorted=true"),
            put("/v2/keys/dir?dir=true", "ttl=30"),
            put("/v2/keys/dir?dir=true", ""),
            put("/v2/keys/dir?prevExist=false&dir=true", ""),
            put("/v2/keys/empty?dir=true", ""),
            del("/v2/keys/empty?dir=true"),
            del("/v2/keys/a?recursive=true"),
            get("/v2/keys/?sorted=true"),
        ],
    );
}

#[test]
fn paths_redirects_and_http_errors() {
    run(
        "paths_redirects_and_http_errors",
        vec![
            put("/v2/keys/p", "value=x"),
            get("/v2/keys//p"),
            put("/v2/keys/a//b?x=1&y=a%20b", "value=x"),
            del("/v2/keys/./p"),
            get("/v2/keys/q/../p"),
            get("/v2/keys/a%2F%2Fb"),
            get("/v2/keys/a/%2E%2E/b%20c%3Fd?q=1"),
            get("/v2/keys/p%2E%2E"),
            get("/v2/keys/.."),
            get("/v2//keys/p"),
            get("/v2/keys/p/"),
            get("/v2/keysfoo"),
            get("/v2/key"),
            req("PATCH", "/v2/keys/p", None),
            req("OPTIONS", "/v2/keys/p", None),
            get("/v2/keys/p%zz"),
        ],
    );
}

#[test]
fn in_order_keys() {
    run(
        "in_order_keys",
        vec![
            post("/v2/keys/queue", "value=first&ttl=30"),
            post("/v2/keys/queue", "value=second"),
            post("/v2/keys/queue?prevExist=true", "value=third"),
            get("/v2/keys/queue?sorted=true"),
            get("/v2/keys/queue?recursive=true&sorted=true&quorum=true"),
            start(
                1,
                "/v2/keys/queue?wait=true&recursive=true&waitIndex={last+1}",
            ),
            post("/v2/keys/queue", "value=fourth"),
            end(1),
            put("/v2/keys/file", "value=f"),
            post("/v2/keys/file", "value=under-a-file"),
        ],
    );
}

#[test]
fn form_and_query_precedence() {
    run(
        "form_and_query_precedence",
        vec![
            put("/v2/keys/f?value=query", "value=body&value=body2"),
            put("/v2/keys/f?value=query", "ttl=30"),
            put("/v2/keys/f?ttl=abc", "value=x&ttl=30"),
            put("/v2/keys/f?prevValue=query", "value=cas"),
            put("/v2/keys/f?prevValue=nope", "prevValue=cas&value=cas2"),
            // a DELETE body is ignored: this deletes unconditionally
            req("DELETE", "/v2/keys/f", Some("prevValue=nope")),
            get("/v2/keys/f"),
            put("/v2/keys/g", "value=%2B+space+%26more"),
            get("/v2/keys/g"),
        ],
    );
}

#[test]
fn expiring_directory_and_recursive_watch() {
    run(
        "expiring_directory_and_recursive_watch",
        vec![
            put("/v2/keys/tmp?dir=true", "ttl=1"),
            put("/v2/keys/tmp/a", "value=1"),
            put("/v2/keys/tmp/b/c", "value=2"),
            start(1, "/v2/keys/tmp/b/c?wait=true&waitIndex={last+1}"),
            start(
                2,
                "/v2/keys/tmp?wait=true&recursive=true&waitIndex={last+1}",
            ),
            end(1),
            end(2),
            get("/v2/keys/tmp"),
            get("/v2/keys/tmp/b/c?wait=true&waitIndex={base+2}"),
        ],
    );
}

// ------------------------------------------------------------------------------------------
// Member faults: the simulated cluster (`microlock_proto::sim::cluster::SimCluster`) against a
// real 3-member cluster (`EtcdCluster::start(3)`), member i of one mirroring member i of the
// other (the model's first leader is the real one's). Faults are real: `kill -9`, `SIGSTOP` /
// `SIGCONT`, restart with the same data, and (when root with `nft`) a packet-filter partition.
// Both sides run on the test's real clock. Answers are compared as above (status, headers,
// normalised body, relative index) when both sides answer; otherwise the *kind* of outcome is
// compared: refused connection, connection broken after sending, or no answer yet.

use microlock_proto::sim::cluster::{ClusterConfig, Delivery, SimCluster};
use microlock_tests::etcd::{try_raw_request_with_timeout, EtcdCluster};

/// What one side did with a request.
#[derive(Debug)]
enum Outcome {
    Answer(RawResponse),
    /// Connection refused: never reached etcd.
    Refused,
    /// Broke after sending (reset, closed mid-body): outcome unknown.
    Broken(String),
    /// No answer (yet).
    Silent,
}

impl Outcome {
    fn kind(&self) -> &'static str {
        match self {
            Outcome::Answer(_) => "answer",
            Outcome::Refused => "refused",
            Outcome::Broken(_) => "broken",
            Outcome::Silent => "no answer",
        }
    }

    fn answer(&self) -> Option<&RawResponse> {
        match self {
            Outcome::Answer(r) => Some(r),
            _ => None,
        }
    }

    fn detail(&self) -> String {
        match self {
            Outcome::Answer(r) => format!("\n{}", show(r)),
            Outcome::Broken(e) => format!("({e})"),
            Outcome::Refused | Outcome::Silent => String::new(),
        }
    }
}

fn real_outcome(r: std::io::Result<RawResponse>) -> Outcome {
    use std::io::ErrorKind;
    match r {
        Ok(r) => Outcome::Answer(r),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Outcome::Silent
        }
        Err(e) => Outcome::Broken(e.to_string()),
    }
}

/// A real 3-member cluster and its model, side by side.
struct Pair {
    name: &'static str,
    real: EtcdCluster,
    model: SimCluster,
    clock: Instant,
    next_id: u64,
    real_ctx: Ctx,
    model_ctx: Ctx,
    /// Model answers that came out of the cluster, by id.
    model_done: BTreeMap<u64, Outcome>,
    mismatches: Vec<String>,
    steps: usize,
}

impl Pair {
    fn start(name: &'static str, partitionable: bool) -> Pair {
        let real = if partitionable {
            EtcdCluster::start_partitionable(3)
        } else {
            EtcdCluster::start(3)
        };
        let leader = real.leader().expect("a fresh cluster has a leader");
        let version = EtcdVersion::from_version_string(&real.members[0].version());
        let t0 = Instant::now();
        let mut config = ClusterConfig::new(3, 1);
        config.version = version;
        config.leader = Some(leader);
        let mut pair = Pair {
            name,
            real,
            model: SimCluster::new(t0, config),
            clock: t0,
            next_id: 0,
            real_ctx: Ctx::default(),
            model_ctx: Ctx::default(),
            model_done: BTreeMap::new(),
            mismatches: Vec::new(),
            steps: 0,
        };
        // The base index of each side: a quorum read of the root on the leader.
        let real = pair.real_req(leader, "GET", "/v2/keys/?quorum=true", None, 5_000);
        let model = pair.model_req(leader, "GET", "/v2/keys/?quorum=true", None);
        for (ctx, r) in [(&mut pair.real_ctx, &real), (&mut pair.model_ctx, &model)] {
            let base = r
                .answer()
                .and_then(|r| r.header("X-Etcd-Index"))
                .and_then(|v| v.parse().ok())
                .expect("X-Etcd-Index of the first read");
            *ctx = Ctx {
                base,
                last: base,
                last_mod: 0,
            };
        }
        pair.check("GET /v2/keys/?quorum=true (base index)", real, model);
        pair
    }

    fn leader(&self) -> usize {
        self.model.leader().expect("the model has a leader")
    }

    /// A follower other than `not`.
    fn follower(&self, not: Option<usize>) -> usize {
        let leader = self.leader();
        (0..3)
            .find(|&m| m != leader && Some(m) != not)
            .expect("a follower")
    }

    fn now(&mut self) -> Instant {
        self.clock = self.clock.max(Instant::now());
        self.clock
    }

    /// Runs the model up to now and collects its answers.
    fn model_advance(&mut self) {
        let now = self.now();
        self.model.advance(now);
        while let Some((id, d)) = self.model.poll() {
            let outcome = match d {
                Delivery::Response(r) => Outcome::Answer(to_raw(r)),
                Delivery::Refused => Outcome::Refused,
                Delivery::Reset => Outcome::Broken("reset".into()),
                // Streams are v3's; this cluster serves v2.
                other => panic!("a v2 cluster delivered {other:?}"),
            };
            self.model_done.insert(id, outcome);
        }
    }

    /// Sends to model member `m`; returns the request id (its answer, if any, is collected).
    fn model_send(&mut self, m: usize, method: &str, path: &str, body: Option<&str>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.model.authority(m)));
        if body.is_some() {
            b = b.header("Content-Type", "application/x-www-form-urlencoded");
        }
        let request = b
            .body(body.unwrap_or("").as_bytes().to_vec())
            .expect("a request");
        let now = self.now();
        self.model.handle(id, &request, now);
        self.model_advance();
        id
    }

    fn model_take(&mut self, id: u64) -> Outcome {
        self.model_advance();
        self.model_done.remove(&id).unwrap_or(Outcome::Silent)
    }

    fn model_req(&mut self, m: usize, method: &str, path: &str, body: Option<&str>) -> Outcome {
        let id = self.model_send(m, method, path, body);
        self.model_take(id)
    }

    fn real_req(
        &self,
        m: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout_ms: u64,
    ) -> Outcome {
        real_outcome(try_raw_request_with_timeout(
            &self.real.members[m].client_url(),
            method,
            path,
            body,
            Duration::from_millis(timeout_ms),
        ))
    }

    /// Starts a request on the real side in the background (a watch, or a request to a member
    /// that may not answer for a while).
    fn real_start(
        &self,
        m: usize,
        method: &'static str,
        path: String,
        body: Option<&'static str>,
        timeout_ms: u64,
    ) -> JoinHandle<Outcome> {
        let url = self.real.members[m].client_url();
        thread::spawn(move || {
            real_outcome(try_raw_request_with_timeout(
                &url,
                method,
                &path,
                body,
                Duration::from_millis(timeout_ms),
            ))
        })
    }

    /// Compares two outcomes: their kinds, and both answers when both answered.
    fn check(&mut self, label: &str, real: Outcome, model: Outcome) {
        self.steps += 1;
        match (&real, &model) {
            (Outcome::Answer(r), Outcome::Answer(m)) => {
                let diffs = compare(r, &self.real_ctx, m, &self.model_ctx);
                if !diffs.is_empty() {
                    self.mismatches.push(format!(
                        "[{}] step {}: {label}\n  differences:\n    {}\n  real etcd:\n{}  model:\n{}",
                        self.name,
                        self.steps,
                        diffs.join("\n    "),
                        show(r),
                        show(m)
                    ));
                }
                self.real_ctx.learn(r);
                self.model_ctx.learn(m);
            }
            (r, m) if r.kind() == m.kind() => {}
            (r, m) => self.mismatches.push(format!(
                "[{}] step {}: {label}\n  real etcd: {} {}\n  model: {} {}",
                self.name,
                self.steps,
                r.kind(),
                r.detail(),
                m.kind(),
                m.detail()
            )),
        }
    }

    /// One request on both sides, compared at once. A plain read waits 100 ms first: a real
    /// follower applies a committed entry a little after the leader answered (the model's
    /// up-to-date members apply at once).
    fn both(&mut self, label: &str, m: usize, method: &str, path: &str, body: Option<&str>) {
        if method == "GET" && !path.contains("quorum=true") {
            thread::sleep(Duration::from_millis(100));
        }
        let (rp, mp) = (self.real_ctx.expand(path), self.model_ctx.expand(path));
        let real = self.real_req(m, method, &rp, body, 3_000);
        let model = self.model_req(m, method, &mp, body);
        self.check(&format!("{label}: {method} m{m} {path}"), real, model);
    }

    /// Expects a request on member `m` to be refused, or to get no answer within `ms`.
    fn expect(&mut self, label: &str, m: usize, path: &str, ms: u64, kind: &str) {
        let real = self.real_req(m, "GET", path, None, ms);
        let model = self.model_req(m, "GET", path, None);
        assert_eq!(model.kind(), kind, "[{}] {label}: the model", self.name);
        self.check(&format!("{label}: GET m{m} {path}"), real, model);
    }

    /// A watch (or any request that may block) started on both sides.
    ///
    /// A real follower applies a committed entry a little after the leader answered the write
    /// (the model's followers apply at once): wait for that first, so that the watch reports
    /// the same `X-Etcd-Index` on both sides.
    fn start_both(&mut self, m: usize, path: &str) -> (JoinHandle<Outcome>, u64) {
        thread::sleep(Duration::from_millis(100));
        let (rp, mp) = (self.real_ctx.expand(path), self.model_ctx.expand(path));
        let handle = self.real_start(m, "GET", rp, None, 20_000);
        // Let the real member park it before anything else happens.
        thread::sleep(Duration::from_millis(100));
        let id = self.model_send(m, "GET", &mp, None);
        (handle, id)
    }

    fn end_both(&mut self, label: &str, (handle, id): (JoinHandle<Outcome>, u64)) {
        let real = handle.join().expect("real request thread");
        let model = self.model_take(id);
        self.check(label, real, model);
    }

    fn finish(self) {
        eprintln!(
            "[{}] etcd {} cluster vs model: {} steps, {} mismatches",
            self.name,
            self.real.members[0].version(),
            self.steps,
            self.mismatches.len()
        );
        assert!(
            self.mismatches.is_empty(),
            "\n{} mismatch(es) between a real 3-member etcd {} and the model:\n\n{}\n",
            self.mismatches.len(),
            self.real.members[0].version(),
            self.mismatches.join("\n")
        );
    }
}

/// Every member serves the one store: a write through one member is seen by quorum reads on
/// the others, and a watch parked on one member fires for a write through another.
#[test]
fn cluster_members_share_one_store() {
    let mut p = Pair::start("cluster_members_share_one_store", false);
    p.both(
        "create",
        0,
        "PUT",
        "/v2/keys/c?prevExist=false",
        Some("value=a&ttl=30"),
    );
    p.both(
        "quorum read elsewhere",
        1,
        "GET",
        "/v2/keys/c?quorum=true",
        None,
    );
    p.both(
        "quorum read elsewhere",
        2,
        "GET",
        "/v2/keys/c?quorum=true",
        None,
    );
    let watch = p.start_both(1, "/v2/keys/c?wait=true&waitIndex={last+1}");
    p.both(
        "write through another member",
        2,
        "PUT",
        "/v2/keys/c?prevValue=a",
        Some("value=b"),
    );
    p.end_both("watch on m1 sees m2's write", watch);
    let watch = p.start_both(2, "/v2/keys/c?wait=true");
    p.both(
        "delete through a third",
        0,
        "DELETE",
        "/v2/keys/c?prevValue=b",
        None,
    );
    p.end_both("watch on m2 sees m0's delete", watch);
    p.both("plain read", 1, "GET", "/v2/keys/c", None);
    p.finish();
}

/// A killed member refuses connections and cuts the watches it held; the two others keep a
/// quorum; restarted with its data it serves the same store (its attributes, published again
/// through raft, move the index by one on both sides).
#[test]
fn killed_member_refuses_then_restarts_with_the_same_store() {
    let mut p = Pair::start(
        "killed_member_refuses_then_restarts_with_the_same_store",
        false,
    );
    let f = p.follower(None);
    let other = p.follower(Some(f));
    p.both(
        "create",
        p.leader(),
        "PUT",
        "/v2/keys/k?prevExist=false",
        Some("value=a"),
    );
    let watch = p.start_both(f, "/v2/keys/k?wait=true&waitIndex={last+1}");
    p.real.members[f].kill();
    let now = p.now();
    p.model.kill(f, now);
    p.end_both("the dead member's watch is cut", watch);
    p.expect(
        "a dead member refuses",
        f,
        "/v2/keys/k?quorum=true",
        2_000,
        "refused",
    );
    p.both(
        "quorum without it",
        other,
        "PUT",
        "/v2/keys/k?prevValue=a",
        Some("value=b"),
    );
    p.real.members[f].restart();
    p.real.members[f].wait_serving(Duration::from_secs(15));
    let now = p.now();
    p.model.restart(f, now);
    p.both(
        "the restarted member serves the store",
        f,
        "GET",
        "/v2/keys/k?quorum=true",
        None,
    );
    p.both(
        "and writes",
        f,
        "PUT",
        "/v2/keys/k?prevValue=b",
        Some("value=c"),
    );
    p.finish();
}

/// A stopped (`SIGSTOP`) member answers nothing; what it was sent meanwhile is served when it
/// resumes — a late write included — and its parked watch then fires for what was committed
/// while it was stopped.
#[test]
fn stopped_member_answers_nothing_then_serves_what_it_kept() {
    let mut p = Pair::start(
        "stopped_member_answers_nothing_then_serves_what_it_kept",
        false,
    );
    let f = p.follower(None);
    let leader = p.leader();
    p.both(
        "create",
        leader,
        "PUT",
        "/v2/keys/w?prevExist=false",
        Some("value=a"),
    );
    let watch = p.start_both(f, "/v2/keys/w?wait=true&waitIndex={last+1}");
    p.real.members[f].pause();
    let now = p.now();
    p.model.hang(f, now);
    p.expect(
        "a stopped member is silent",
        f,
        "/v2/keys/w?quorum=true",
        1_000,
        "no answer",
    );
    // A write sent to the stopped member waits in its socket.
    let late_real = p.real_start(
        f,
        "PUT",
        "/v2/keys/late?prevExist=false".into(),
        Some("value=l"),
        20_000,
    );
    thread::sleep(Duration::from_millis(100));
    let late_model = p.model_send(f, "PUT", "/v2/keys/late?prevExist=false", Some("value=l"));
    p.both(
        "quorum without it",
        leader,
        "PUT",
        "/v2/keys/w?prevValue=a",
        Some("value=b"),
    );
    p.both(
        "the late write is not applied",
        leader,
        "GET",
        "/v2/keys/late?quorum=true",
        None,
    );
    p.real.members[f].resume();
    let now = p.now();
    p.model.resume(f, now);
    p.end_both("the stopped member's watch fires on resume", watch);
    p.end_both(
        "the kept write is served on resume",
        (late_real, late_model),
    );
    p.both(
        "the late write is applied",
        leader,
        "GET",
        "/v2/keys/late?quorum=true",
        None,
    );
    p.finish();
}

/// With its leader stopped, a 3-member cluster answers a write through a follower with
/// etcd's `500` "Raft Internal Error" after its 7 s request timeout (whatever became of the
/// write); meanwhile the others elect a new leader and serve new writes.
#[test]
fn stopped_leader_stalls_a_write_until_the_raft_timeout() {
    let mut p = Pair::start(
        "stopped_leader_stalls_a_write_until_the_raft_timeout",
        false,
    );
    let leader = p.leader();
    let f = p.follower(None);
    p.real.members[leader].pause();
    let now = p.now();
    p.model.hang(leader, now);
    let stalled_real = p.real_start(f, "PUT", "/v2/keys/s".into(), Some("value=x"), 20_000);
    let stalled_model = p.model_send(f, "PUT", "/v2/keys/s", Some("value=x"));
    let sent = Instant::now();
    // Both elect a new leader within a few election timeouts.
    thread::sleep(Duration::from_secs(3));
    p.model_advance();
    p.both(
        "a new leader serves writes",
        f,
        "PUT",
        "/v2/keys/t",
        Some("value=y"),
    );
    let real = stalled_real.join().expect("real request thread");
    let waited = sent.elapsed();
    let model = p.model_take(stalled_model);
    p.real.members[leader].resume();
    for (side, outcome) in [("real etcd", &real), ("model", &model)] {
        let Some(r) = outcome.answer() else {
            panic!(
                "[{}] {side}: no answer to the stalled write: {outcome:?}",
                p.name
            );
        };
        // Either committed after all (an answer as for any write), or the raft timeout.
        if r.status == 500 {
            let body = r.text();
            assert!(
                body.starts_with(
                    "{\"errorCode\":300,\"message\":\"Raft Internal Error\",\"cause\":\"etcdserver: request timed out"
                ),
                "[{}] {side}: {body}",
                p.name
            );
        } else {
            assert!(
                r.status == 201 || r.status == 200,
                "[{}] {side}: {r:?}",
                p.name
            );
        }
    }
    if real.answer().is_some_and(|r| r.status == 500) {
        assert!(
            waited >= Duration::from_millis(6_500),
            "[{}] the real 500 came after {waited:?}, not after etcd's 7 s raft timeout",
            p.name
        );
    }
    p.finish();
}

/// A member cut off from its peers (a packet-filter partition; needs root and `nft`, which
/// `make etcd` installs) still answers plain reads, from its frozen store; its writes end with
/// etcd's `500` after the raft timeout; its watch stays silent until it rejoins, then fires.
#[test]
fn partitioned_member_reads_stale_and_times_out_writes() {
    let mut p = Pair::start("partitioned_member_reads_stale_and_times_out_writes", true);
    let leader = p.leader();
    let f = p.follower(None);
    p.both(
        "create",
        leader,
        "PUT",
        "/v2/keys/p?prevExist=false",
        Some("value=a"),
    );
    // The follower has applied it before the cut.
    thread::sleep(Duration::from_millis(200));
    let watch = p.start_both(f, "/v2/keys/p?wait=true&waitIndex={last+1}");
    p.real.partition(f);
    let now = p.now();
    p.model.isolate(f, now);
    // What the leader had already sent on a connection the follower opened may still arrive
    // until TCP stalls (about one retransmission timeout): let the cut take hold.
    thread::sleep(Duration::from_millis(1_500));
    p.both(
        "the majority writes",
        leader,
        "PUT",
        "/v2/keys/p?prevValue=a",
        Some("value=b"),
    );
    p.both(
        "the cut-off member reads stale",
        f,
        "GET",
        "/v2/keys/p",
        None,
    );
    let stalled_real = p.real_start(f, "PUT", "/v2/keys/q".into(), Some("value=x"), 20_000);
    let stalled_model = p.model_send(f, "PUT", "/v2/keys/q", Some("value=x"));
    let real = stalled_real.join().expect("real request thread");
    let model = p.model_take(stalled_model);
    for (side, outcome) in [("real etcd", &real), ("model", &model)] {
        let r = outcome.answer().unwrap_or_else(|| {
            panic!(
                "[{}] {side}: no answer to the cut-off write: {outcome:?}",
                p.name
            )
        });
        assert_eq!(r.status, 500, "[{}] {side}: {r:?}", p.name);
        assert!(
            r.text().starts_with(
                "{\"errorCode\":300,\"message\":\"Raft Internal Error\",\"cause\":\"etcdserver: request timed out"
            ),
            "[{}] {side}: {}",
            p.name,
            r.text()
        );
    }
    p.model_advance();
    assert!(
        !p.model_done.contains_key(&watch.1),
        "[{}] the model's watch fired while cut off",
        p.name
    );
    if watch.0.is_finished() {
        let real = watch.0.join().expect("real watch thread");
        panic!(
            "[{}] the real watch ended while cut off: {} {}",
            p.name,
            real.kind(),
            real.detail()
        );
    }
    p.real.heal(f);
    let now = p.now();
    p.model.rejoin(f, now);
    p.end_both("the watch fires once the member rejoins", watch);
    p.finish();
}
