//! The contended case: how fast, how fair and how cheap a hand-off is, microlock-tokio against
//! the bare-HTTP floor, on one etcd, for one protocol (`--protocol v2`, the default, or `v3`).
//!
//! `cargo run --release -p microlock-tokio --example handoff -- [ETCD_URL] [--protocol v2|v3]
//! [--waiters 1,4,16] [--handoffs 200] [--warmup 20] [--rounds 3] [--hold-ms 1] [--json FILE]`
//! (`make bench` runs it for both protocols on a throw-away etcd and puts the figures in
//! `docs/performance.md`).
//!
//! For each W, W+1 tasks (each with its own [`Etcd`] handle, so its own connections, and its
//! own node id) loop on one lock: `acquire` (60 s timeout), hold 1 ms, `unlock`. The floor does
//! the same with bare hyper (one client per task), the least a waiting lock can do
//! (`examples/floor/`):
//! - v2: `PUT ?prevExist=false` (value=ID, ttl=30); on `412`, a long poll
//!   `GET ?wait=true&waitIndex=<the error's index + 1>` until a release (`delete`,
//!   `compareAndDelete` or `expire`), then the `PUT` again; `DELETE ?prevValue=ID` releases;
//! - v3: Go `concurrency.Mutex`'s recipe under a lease (TTL 30 s) granted once per task: the
//!   txn putting my key if absent and reading the owner; if another owns, the range of the key
//!   created last before mine and a watch on it until its deletion, then that range again;
//!   `/v3/kv/deleterange` of my key releases.
//!
//! A run records `--warmup` holds, then `--handoffs` hand-offs; microlock and the floor
//! alternate run by run, the rounds repeat, and each figure is the median of its rounds.
//!
//! Per run:
//! - **hand-off latency to another node**: from the releaser's `unlock` completing to the next
//!   holder's `acquire` completing, over the hand-offs where the next holder is another node
//!   (p50, p99); both instants are read in this process. When the next holder's `acquire`
//!   completes before the releaser's `unlock` is seen to (both answers race back from etcd),
//!   the latency counts as 0 and the hand-off as "early";
//! - **acquire wait**: from `acquire` called to its completion, for each acquisition (p50, p99,
//!   max): what an unfair hand-off costs the nodes that lose;
//! - **re-take share**: the fraction of hand-offs, among those where another node was waiting
//!   when the holder released, in which the releaser itself took the lock again;
//! - **etcd requests per acquisition**, from etcd's `/metrics` (`examples/etcd_metrics/`: v2,
//!   `etcd_http_received_total` + the store's watch requests; v3, `grpc_server_started_total`),
//!   read when the hold that opens the window and the one that closes it are taken (the window
//!   holds `--handoffs` acquisitions). On v2 the store operations are reported beside them, and
//!   the run checks that they are twice the requests; on both, etcd's raft proposals (writes).

mod etcd_metrics;
#[allow(dead_code)] // shared with bench.rs, which uses the uncontended cycles
mod floor;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use microlock_tokio::{Etcd, Microlock, Protocol};
use serde_json::{json, Value};
use tokio::sync::watch;

use etcd_metrics::Counters;
use floor::Result;

type Http = floor::Http<HttpConnector>;

const TTL_SECONDS: u64 = 30;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

struct Args {
    url: String,
    /// `"v2"` or `"v3"`.
    protocol: &'static str,
    waiters: Vec<usize>,
    handoffs: usize,
    warmup: usize,
    rounds: usize,
    hold: Duration,
    json: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        url: "http://127.0.0.1:2379".into(),
        protocol: "v2",
        waiters: vec![1, 4, 16],
        handoffs: 200,
        warmup: 20,
        rounds: 3,
        hold: Duration::from_millis(1),
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--waiters" => {
                args.waiters = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?
            }
            "--protocol" => {
                args.protocol = match value()?.as_str() {
                    "v2" => "v2",
                    "v3" => "v3",
                    other => return Err(format!("--protocol {other}: v2 or v3").into()),
                }
            }
            "--handoffs" => args.handoffs = value()?.parse()?,
            "--warmup" => args.warmup = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--hold-ms" => args.hold = Duration::from_secs_f64(value()?.parse::<f64>()? / 1e3),
            "--json" => args.json = Some(value()?),
            url if !url.starts_with("--") => args.url = url.trim_end_matches('/').to_owned(),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if args.handoffs == 0 || args.rounds == 0 || args.waiters.contains(&0) {
        return Err("--handoffs, --rounds and every W must be at least 1".into());
    }
    Ok(args)
}

fn http_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

// ----- the two clients ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Microlock,
    Floor,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Microlock => "microlock-tokio",
            Kind::Floor => "bare hyper",
        }
    }
}

/// One task's client: microlock (`--protocol`'s), or that protocol's floor.
enum Node {
    Microlock(Microlock),
    FloorV2(floor::v2::WaitingLock<HttpConnector>),
    FloorV3(floor::v3::WaitingLock<HttpConnector>),
}

impl Node {
    async fn new(kind: Kind, protocol: &str, url: &str, key: &str, id: &str) -> Result<Node> {
        Ok(match (kind, protocol) {
            (Kind::Microlock, _) => {
                let protocol = if protocol == "v3" {
                    Protocol::V3
                } else {
                    Protocol::V2
                };
                let etcd = Etcd::builder([url]).protocol(protocol).build()?;
                let ttl = Duration::from_secs(TTL_SECONDS);
                Node::Microlock(Microlock::new(&etcd, key, id, ttl)?)
            }
            (Kind::Floor, "v3") => Node::FloorV3(
                floor::v3::WaitingLock::new(http_client(), url, key, id, TTL_SECONDS).await?,
            ),
            (Kind::Floor, _) => Node::FloorV2(floor::v2::WaitingLock {
                http: http_client(),
                key_url: format!("{url}/v2/keys/{key}"),
                id: id.to_owned(),
                ttl: TTL_SECONDS,
            }),
        })
    }

    async fn acquire(&mut self) -> Result<()> {
        match self {
            Node::Microlock(lock) => lock.acquire(ACQUIRE_TIMEOUT).await.map(drop)?,
            Node::FloorV2(floor) => floor.acquire().await?,
            Node::FloorV3(floor) => floor.acquire().await?,
        }
        Ok(())
    }

    async fn release(&mut self) -> Result<()> {
        match self {
            Node::Microlock(lock) => lock.unlock().await?,
            Node::FloorV2(floor) => floor.release().await?,
            Node::FloorV3(floor) => floor.release().await?,
        }
        Ok(())
    }
}

// ----- one run -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Hold {
    node: usize,
    /// When its `acquire` was called.
    asked: Instant,
    acquired: Instant,
    released: Instant,
    /// How many other nodes were in `acquire` when this hold's holder began to release.
    others_waiting: usize,
}

struct Run {
    warmup: usize,
    /// The sequence number of the last hold recorded (`warmup + handoffs`).
    last: usize,
    hold: Duration,
    url: String,
    metrics: Http,
    next: AtomicUsize,
    waiting: AtomicUsize,
    holds: Mutex<Vec<Option<Hold>>>,
    /// etcd's counters when hold `warmup` and hold `last` were taken.
    window: Mutex<[Option<(Counters, Instant)>; 2]>,
    stop: watch::Sender<bool>,
}

impl Run {
    /// One node's loop; a failure stops the whole run.
    async fn worker(self: Arc<Run>, node_index: usize, mut node: Node) -> Result<()> {
        let result = self.turns(node_index, &mut node).await;
        if result.is_err() {
            let _ = self.stop.send(true);
        }
        result
    }

    async fn turns(&self, node_index: usize, node: &mut Node) -> Result<()> {
        let mut stop = self.stop.subscribe();
        loop {
            let asked = Instant::now();
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let acquired = tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => None,
                result = node.acquire() => Some(result),
            };
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            match acquired {
                None => return Ok(()),
                Some(result) => result?,
            }
            let acquired = Instant::now();
            let seq = self.next.fetch_add(1, Ordering::SeqCst);
            if seq > self.last {
                // Taken after the run's end (a straggler): let it go.
                return node.release().await;
            }
            if seq == self.warmup || seq == self.last {
                let counters = Counters::read(&self.metrics, &self.url).await?;
                let slot = usize::from(seq == self.last);
                self.window.lock().expect("window")[slot] = Some((counters, acquired));
            }
            tokio::time::sleep(self.hold).await;
            let others_waiting = self.waiting.load(Ordering::SeqCst);
            node.release().await?;
            let released = Instant::now();
            self.holds.lock().expect("holds")[seq] = Some(Hold {
                node: node_index,
                asked,
                acquired,
                released,
                others_waiting,
            });
            if seq == self.last {
                let _ = self.stop.send(true);
                return Ok(());
            }
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Measured {
    /// `"v2"` or `"v3"`: which of etcd's counters are its requests.
    protocol: &'static str,
    /// Hand-off latencies to another node, sorted.
    latencies: Vec<Duration>,
    /// How long each acquisition of the window waited (from `acquire` called), sorted.
    waits: Vec<Duration>,
    /// Hand-offs where the next holder started before this process saw the release complete.
    early: usize,
    contested: usize,
    retakes: usize,
    acquisitions: usize,
    seconds: f64,
    counters: Counters,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Measured {
    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    fn p50_ms(&self) -> f64 {
        Self::ms(percentile(&self.latencies, 0.50))
    }

    fn p99_ms(&self) -> f64 {
        Self::ms(percentile(&self.latencies, 0.99))
    }

    fn wait_ms(&self, q: f64) -> f64 {
        Self::ms(percentile(&self.waits, q))
    }

    fn retake_share(&self) -> f64 {
        self.retakes as f64 / self.contested.max(1) as f64
    }

    fn per_acquisition(&self, n: f64) -> f64 {
        n / self.acquisitions as f64
    }

    fn requests(&self) -> f64 {
        self.per_acquisition(self.counters.requests(self.protocol))
    }

    fn to_json(&self) -> Value {
        let per = |n| self.per_acquisition(n);
        let per_kind = |kinds: &BTreeMap<String, f64>| -> serde_json::Map<String, Value> {
            (kinds.iter())
                .map(|(kind, n)| (kind.clone(), json!(per(*n))))
                .collect()
        };
        json!({
            "handoff_p50_ms": self.p50_ms(),
            "handoff_p99_ms": self.p99_ms(),
            "handoffs_to_other": self.latencies.len(),
            "wait_p50_ms": self.wait_ms(0.50),
            "wait_p99_ms": self.wait_ms(0.99),
            "wait_max_ms": self.wait_ms(1.0),
            "handoffs_early": self.early,
            "contested_handoffs": self.contested,
            "retakes": self.retakes,
            "retake_share": self.retake_share(),
            "acquisitions": self.acquisitions,
            "acquisitions_per_s": self.acquisitions as f64 / self.seconds,
            "requests_per_acquisition": self.requests(),
            "requests_by_kind_per_acquisition": per_kind(&self.counters.by_kind(self.protocol)),
            "proposals_per_acquisition": per(self.counters.proposals),
            "store_ops_per_acquisition": per(self.counters.store_ops()),
            "writes_per_acquisition": per(self.counters.writes),
            "watches_per_acquisition": per(self.counters.watches),
            "received_per_acquisition": per_kind(&self.counters.received),
        })
    }
}

async fn run_once(args: &Args, kind: Kind, waiters: usize, round: usize) -> Result<Measured> {
    let key = format!(
        "bench/handoff/{}-{}-{}-w{waiters}-r{round}",
        std::process::id(),
        args.protocol,
        if kind == Kind::Microlock {
            "microlock"
        } else {
            "floor"
        }
    );
    let (stop, _) = watch::channel(false);
    let last = args.warmup + args.handoffs;
    let run = Arc::new(Run {
        warmup: args.warmup,
        last,
        hold: args.hold,
        url: args.url.clone(),
        metrics: http_client(),
        next: AtomicUsize::new(0),
        waiting: AtomicUsize::new(0),
        holds: Mutex::new(vec![None; last + 1]),
        window: Mutex::new([None, None]),
        stop,
    });
    let mut tasks = Vec::new();
    for node_index in 0..=waiters {
        let id = format!("node-{node_index}");
        let node = Node::new(kind, args.protocol, &args.url, &key, &id).await?;
        tasks.push(tokio::spawn(run.clone().worker(node_index, node)));
    }
    for task in tasks {
        task.await??;
    }
    let holds: Vec<Hold> = run
        .holds
        .lock()
        .expect("holds")
        .iter()
        .map(|hold| hold.expect("every hold recorded"))
        .collect();
    let window = run.window.lock().expect("window").clone();
    let [Some((before, start)), Some((after, end))] = window else {
        return Err("the metrics window was not recorded".into());
    };
    let mut measured = Measured {
        protocol: args.protocol,
        latencies: Vec::new(),
        waits: Vec::new(),
        early: 0,
        contested: 0,
        retakes: 0,
        acquisitions: args.handoffs,
        seconds: (end - start).as_secs_f64(),
        counters: after.minus(&before),
    };
    for pair in holds[args.warmup..].windows(2) {
        let (from, to) = (pair[0], pair[1]);
        measured.waits.push(to.acquired - to.asked);
        let contested = from.others_waiting > 0;
        measured.contested += usize::from(contested);
        if to.node == from.node {
            measured.retakes += usize::from(contested);
        } else {
            let released = from.released;
            measured.early += usize::from(to.acquired < released);
            measured
                .latencies
                .push(to.acquired.saturating_duration_since(released));
        }
    }
    measured.latencies.sort();
    measured.waits.sort();
    Ok(measured)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    println!(
        "hand-off ({}): W+1 tasks (W = {:?}) loop acquire / hold {:?} / unlock; {} warm-up \
         holds, then {} hand-offs; {} rounds, microlock and the floor alternating",
        args.protocol, args.waiters, args.hold, args.warmup, args.handoffs, args.rounds
    );
    let kinds = [Kind::Microlock, Kind::Floor];
    let mut runs: BTreeMap<(usize, usize), Vec<Measured>> = BTreeMap::new();
    for round in 0..args.rounds {
        for (wi, &waiters) in args.waiters.iter().enumerate() {
            let first = (round + wi) % 2;
            for k in [first, 1 - first] {
                let kind = kinds[k];
                let m = run_once(&args, kind, waiters, round).await?;
                println!(
                    "  round {round} W={waiters:<2} {:<15}: hand-off p50 {:6.2} ms p99 {:6.2} ms, \
                     re-take {:5.1} %, {:5.2} requests/acquisition, {:6.0} acquisitions/s",
                    kind.name(),
                    m.p50_ms(),
                    m.p99_ms(),
                    m.retake_share() * 100.0,
                    m.requests(),
                    m.acquisitions as f64 / m.seconds,
                );
                let requests = m.counters.requests(args.protocol);
                let twice = requests * 2.0;
                if args.protocol == "v2"
                    && (m.counters.store_ops() - twice).abs() > 0.5 + twice * 0.01
                {
                    println!(
                        "    note: store operations {} != 2 x requests {requests}",
                        m.counters.store_ops(),
                    );
                }
                runs.entry((waiters, k)).or_default().push(m);
            }
        }
    }

    let mut results = Vec::new();
    println!(
        "median of {} rounds        hand-off p50    p99   re-take  requests/acq  acq/s",
        args.rounds
    );
    for ((waiters, k), measured) in &runs {
        let med = |f: &dyn Fn(&Measured) -> f64| median(measured.iter().map(f).collect());
        let summary = json!({
            "handoff_p50_ms": med(&Measured::p50_ms),
            "handoff_p99_ms": med(&Measured::p99_ms),
            "retake_share": med(&Measured::retake_share),
            "requests_per_acquisition": med(&Measured::requests),
            "proposals_per_acquisition": med(&|m| m.per_acquisition(m.counters.proposals)),
            "store_ops_per_acquisition": med(&|m| m.per_acquisition(m.counters.store_ops())),
            "writes_per_acquisition": med(&|m| m.per_acquisition(m.counters.writes)),
            "watches_per_acquisition": med(&|m| m.per_acquisition(m.counters.watches)),
            "acquisitions_per_s": med(&|m| m.acquisitions as f64 / m.seconds),
            "handoffs_to_other": med(&|m| m.latencies.len() as f64),
            "handoffs_early": med(&|m| m.early as f64),
            "wait_p50_ms": med(&|m| m.wait_ms(0.50)),
            "wait_p99_ms": med(&|m| m.wait_ms(0.99)),
            "wait_max_ms": med(&|m| m.wait_ms(1.0)),
        });
        println!(
            "  W={waiters:<2} {:<18}: {:7.2} ms {:6.2} ms {:6.1} % {:10.2} {:8.0}",
            kinds[*k].name(),
            summary["handoff_p50_ms"].as_f64().unwrap_or(f64::NAN),
            summary["handoff_p99_ms"].as_f64().unwrap_or(f64::NAN),
            summary["retake_share"].as_f64().unwrap_or(f64::NAN) * 100.0,
            summary["requests_per_acquisition"]
                .as_f64()
                .unwrap_or(f64::NAN),
            summary["acquisitions_per_s"].as_f64().unwrap_or(f64::NAN),
        );
        results.push(json!({
            "waiters": waiters,
            "client": kinds[*k].name(),
            "median": summary,
            "rounds": measured.iter().map(Measured::to_json).collect::<Vec<_>>(),
        }));
    }
    if let Some(path) = &args.json {
        let report = json!({
            "bench": "handoff",
            "protocol": args.protocol,
            "url": args.url,
            "waiters": args.waiters,
            "handoffs": args.handoffs,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "hold_ms": args.hold.as_secs_f64() * 1e3,
            "ttl_s": TTL_SECONDS,
            "acquire_timeout_s": ACQUIRE_TIMEOUT.as_secs(),
            "requests_metric": if args.protocol == "v3" {
                "grpc_server_started_total (all grpc_method)"
            } else {
                "etcd_http_received_total (all methods) + etcd_debugging_store_watch_requests_total"
            },
            "proposals_metric": "etcd_server_proposals_committed_total",
            "store_ops_metric": "etcd_debugging_store_reads_total + etcd_debugging_store_writes_total (all actions) + etcd_debugging_store_watch_requests_total",
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}
