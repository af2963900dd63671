//! Real faults on real 3-member etcd clusters: a member SIGKILLed, SIGSTOPped, killed and
//! restarted, or partitioned from its peers (see `EtcdCluster` in tests/src/etcd.rs).
//!
//! `cluster_faults_harness`: proves each fault is real (what etcd itself does under it).
//! `cluster_faults_tokio` / `cluster_faults_async_std`: the lock adapters under each fault, the
//! fault hitting the member the client uses (the first URL it was given).
//!
//! Every test here is named `cluster_faults_*::…`, so that `make test` can run this file beside
//! the rest of a pass (`--skip cluster_faults_`): its cases mostly wait on etcd's elections.
//!
//! Every wait is bounded; the bounds are generous (CI runs on 2 busy cores) and stated where
//! they are set. Each case prints its timings (`--nocapture` shows them).
//! `MICROLOCK_FAULT_TARGET=follower` faults a follower instead of the leader.

use std::time::{Duration, Instant};

use microlock_tests::etcd::{self, EtcdCluster, EtcdServer, RawResponse};

/// A raw request with its own read timeout: `Ok` with etcd's answer, or the I/O error.
fn request(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    etcd::try_raw_request_with_timeout(url, method, path, body, timeout)
}

/// `"HTTP 200 {...}"` or `"error: ..."`, shortened, for messages.
fn show(r: &std::io::Result<RawResponse>) -> String {
    match r {
        Ok(r) => {
            let text = r.text();
            let text = text.trim();
            format!("HTTP {} {}", r.status, &text[..text.len().min(200)])
        }
        Err(e) => format!("error: {e} ({:?})", e.kind()),
    }
}

/// Polls `f` (every 50 ms) until it gives `Some`, for at most `bound`; returns the value and
/// the time it took. Panics with `what` after `bound`.
fn poll<T>(what: &str, bound: Duration, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, started.elapsed());
        }
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The member to fault: the leader by default, a follower with `MICROLOCK_FAULT_TARGET=follower`.
fn pick_target(cluster: &EtcdCluster) -> usize {
    // A leader exists once the cluster started; 10 s covers a re-election on a busy machine.
    let (leader, _) = poll("a leader", Duration::from_secs(10), || cluster.leader());
    match std::env::var("MICROLOCK_FAULT_TARGET").as_deref() {
        Ok("follower") => (leader + 1) % cluster.members.len(),
        _ => leader,
    }
}

fn describe(cluster: &EtcdCluster) -> String {
    cluster
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                "m{i}: client {} peer {} uid {:?} pid {}",
                m.client_url(),
                m.peer_url(),
                m.uid(),
                m.pid()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

mod cluster_faults_harness {
    use super::*;

    /// A write through member `via` (retried until it succeeds: an election may be under way),
    /// then a quorum read of it through every member of `readers`. Bound: 20 s for the write
    /// (an election takes about a second; 20 s covers a busy machine), 10 s per read.
    fn write_and_read(cluster: &EtcdCluster, via: usize, readers: &[usize], key: &str) -> Duration {
        let url = cluster.members[via].client_url();
        let (_, took) = poll(
            &format!("PUT {key} through m{via}"),
            Duration::from_secs(20),
            || {
                let r = request(
                    &url,
                    "PUT",
                    &format!("/v2/keys/{key}"),
                    Some("value=v"),
                    Duration::from_secs(3),
                );
                matches!(&r, Ok(r) if r.status == 200 || r.status == 201).then_some(())
            },
        );
        for &j in readers {
            let r = request(
                &cluster.members[j].client_url(),
                "GET",
                &format!("/v2/keys/{key}?quorum=true"),
                None,
                Duration::from_secs(10),
            );
            assert!(
                matches!(&r, Ok(r) if r.status == 200 && r.text().contains(r#""value":"v""#)),
                "quorum GET {key} on m{j}: {}",
                show(&r)
            );
        }
        took
    }

    /// A local (not quorum) read of `key` on member `i`: what that member itself has applied.
    fn local_has(cluster: &EtcdCluster, i: usize, key: &str) -> bool {
        let r = request(
            &cluster.members[i].client_url(),
            "GET",
            &format!("/v2/keys/{key}"),
            None,
            Duration::from_secs(5),
        );
        matches!(&r, Ok(r) if r.status == 200)
    }

    /// A partitioned member answers no quorum read (and applies nothing the others write),
    /// while the others write and read; healed, it serves and catches up. Done for the leader,
    /// then for a follower. Also shows what a write on the partitioned member answers.
    #[test]
    fn partition_cuts_a_member_off_its_peers_and_heal_undoes_it() {
        let mut cluster = EtcdCluster::start_partitionable(3);
        println!("cluster: {}", describe(&cluster));
        let (leader, _) = poll("a leader", Duration::from_secs(10), || cluster.leader());
        for (round, x) in [leader, (leader + 1) % 3].into_iter().enumerate() {
            let others: Vec<usize> = (0..3).filter(|&j| j != x).collect();
            let role = if x == leader { "leader" } else { "follower" };
            cluster.partition(x);
            assert!(cluster.is_partitioned(x));
            let url_x = cluster.members[x].client_url();

            // A quorum read on X does not succeed. etcd gives up on it by itself after its
            // request timeout (5 s + 2 election timeouts = 7 s by default); 15 s is the bound.
            let started = Instant::now();
            let r = cluster.members[x].quorum_read(Duration::from_secs(15));
            let took = started.elapsed();
            println!(
                "round {round}: partitioned m{x} ({role}): quorum GET took {took:?}: {}",
                show(&r)
            );
            assert!(
                !matches!(&r, Ok(r) if r.status == 200),
                "a partitioned member served a quorum read: {}",
                show(&r)
            );

            // The others write and read (after electing a leader among them if X led).
            let key = format!("harness-partition-{round}");
            let took = write_and_read(&cluster, others[0], &others, &key);
            println!("round {round}: write through m{} took {took:?}", others[0]);
            // X did not apply it: it is cut off from replication.
            assert!(
                !local_has(&cluster, x, &key),
                "partitioned m{x} applied {key}"
            );

            // What a write on X answers (bound 15 s, as above).
            let started = Instant::now();
            let w = request(
                &url_x,
                "PUT",
                &format!("/v2/keys/harness-partition-write-{round}?prevExist=false"),
                Some("value=w&ttl=60"),
                Duration::from_secs(15),
            );
            println!(
                "round {round}: PUT on partitioned m{x} took {:?}: {}",
                started.elapsed(),
                show(&w)
            );
            assert!(
                !matches!(&w, Ok(r) if r.status == 200 || r.status == 201),
                "a partitioned member committed a write: {}",
                show(&w)
            );
            println!(
                "round {round}: rules:\n{}",
                cluster.partition_rules(x).expect("partitioned")
            );

            cluster.heal(x);
            assert!(!cluster.is_partitioned(x));
            // Healed, X serves quorum reads again and catches up. Bound 30 s: the peers'
            // stalled connections resume at TCP's next retransmission, or are redialled.
            let took = cluster.members[x].wait_serving(Duration::from_secs(30));
            let (_, caught_up) = poll(
                &format!("healed m{x} applies {key}"),
                Duration::from_secs(30),
                || local_has(&cluster, x, &key).then_some(()),
            );
            println!("round {round}: healed m{x} serves after {took:?}, caught up after {caught_up:?} more");
        }

        // Dropping a cluster heals its partitions: no table of this cluster is left.
        cluster.partition(1);
        let rules = cluster.partition_rules(1).expect("partitioned");
        let table = rules
            .lines()
            .find_map(|l| l.trim().strip_prefix("table inet "))
            .map(|t| t.trim_end_matches(" {").to_string())
            .expect("a table name");
        drop(cluster);
        let listing = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .expect("nft runs");
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(
            !listing.contains(&table),
            "{table} left after drop:\n{listing}"
        );
    }

    /// A SIGSTOPped member accepts connections but answers nothing; the others go on;
    /// resumed, it serves again.
    #[test]
    fn paused_member_is_silent_and_resume_brings_it_back() {
        let cluster = EtcdCluster::start(3);
        println!("cluster: {}", describe(&cluster));
        let x = pick_target(&cluster);
        let others: Vec<usize> = (0..3).filter(|&j| j != x).collect();
        // A connection opened before the pause.
        let mut before = std::net::TcpStream::connect(
            cluster.members[x]
                .client_url()
                .trim_start_matches("http://"),
        )
        .expect("connect");
        cluster.members[x].pause();
        // Connects (the kernel accepts into the backlog) but no answer within 3 s.
        let started = Instant::now();
        let r = cluster.members[x].quorum_read(Duration::from_secs(3));
        println!(
            "paused m{x}: quorum GET after {:?}: {}",
            started.elapsed(),
            show(&r)
        );
        assert!(r.is_err(), "a paused member answered: {}", show(&r));
        {
            use std::io::{Read, Write};
            before
                .set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            before
                .write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("a paused member's open connection takes bytes");
            let mut buf = [0u8; 16];
            let read = before.read(&mut buf);
            println!("paused m{x}: request on a connection opened before the pause: {read:?}");
            assert!(read.is_err(), "answered while paused: {read:?}");
        }
        let key = "harness-pause";
        let took = write_and_read(&cluster, others[0], &others, key);
        println!(
            "write through m{} during the pause took {took:?}",
            others[0]
        );
        cluster.members[x].resume();
        // Bound 30 s: it has to hear from the (possibly new) leader and catch up.
        let took = cluster.members[x].wait_serving(Duration::from_secs(30));
        println!("resumed m{x} serves after {took:?}");
    }

    /// A SIGKILLed member refuses connections; the others go on; restarted (same name, ports
    /// and data), it rejoins as the same member, serves and catches up. Twice.
    #[test]
    fn killed_member_restarts_with_its_data_and_rejoins() {
        let mut cluster = EtcdCluster::start(3);
        println!("cluster: {}", describe(&cluster));
        let x = pick_target(&cluster);
        let others: Vec<usize> = (0..3).filter(|&j| j != x).collect();
        let id_of = |m: &EtcdServer| {
            let r = request(
                &m.client_url(),
                "GET",
                "/v2/stats/self",
                None,
                Duration::from_secs(5),
            )
            .expect("stats");
            let t = r.text();
            let start = t.find(r#""id":""#).expect("an id") + 6;
            t[start..start + t[start..].find('"').expect("end")].to_string()
        };
        let id = id_of(&cluster.members[x]);
        for round in 0..2 {
            let old_pid = cluster.members[x].pid();
            cluster.members[x].kill();
            assert!(!cluster.members[x].is_running());
            cluster.members[x].kill(); // idempotent
            let r = cluster.members[x].quorum_read(Duration::from_secs(3));
            println!("round {round}: killed m{x}: quorum GET: {}", show(&r));
            assert_eq!(
                r.as_ref().map_err(|e| e.kind()).err(),
                Some(std::io::ErrorKind::ConnectionRefused),
                "{}",
                show(&r)
            );
            let key = format!("harness-kill-{round}");
            let took = write_and_read(&cluster, others[0], &others, &key);
            println!("round {round}: write through m{} took {took:?}", others[0]);

            let started = Instant::now();
            cluster.members[x].restart();
            let listening = started.elapsed();
            assert!(cluster.members[x].is_running());
            assert_ne!(cluster.members[x].pid(), old_pid);
            // Bound 30 s: replay its WAL, hear from the leader, catch up.
            let took = cluster.members[x].wait_serving(Duration::from_secs(30));
            assert_eq!(id_of(&cluster.members[x]), id, "the same member came back");
            let (_, caught_up) = poll(
                &format!("restarted m{x} applies {key}"),
                Duration::from_secs(30),
                || local_has(&cluster, x, &key).then_some(()),
            );
            println!(
                "round {round}: restarted m{x} listens after {listening:?}, serves after {took:?} \
                 more, caught up after {caught_up:?} more"
            );
        }
    }

    /// Partition tables of dead processes are swept; a live process's are not.
    #[test]
    fn stale_partition_tables_are_swept() {
        // Makes sure we may use nft (and sweeps once).
        drop(EtcdCluster::start_partitionable(1));
        let nft = |script: &str| {
            use std::io::Write;
            let mut child = std::process::Command::new("nft")
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("nft");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())
                .expect("write");
            assert!(child.wait().expect("nft").success(), "{script}");
        };
        let mut dead = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let dead_pid = dead.id();
        dead.wait().expect("reaped");
        let stale = format!("microlock_{dead_pid}_1_c0_m0");
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let start = stat[stat.rfind(')').expect(")") + 1..]
            .split_whitespace()
            .nth(19)
            .expect("start time")
            .to_string();
        let live = format!("microlock_{}_{start}_c999999_m0", std::process::id());
        for t in [&stale, &live] {
            nft(&format!(
                "table inet {t} {{\n chain output {{\n  type filter hook output priority 0; policy accept;\n }}\n}}\n"
            ));
        }
        let swept = etcd::sweep_stale_partitions();
        assert!(swept.contains(&stale), "{stale} not swept: {swept:?}");
        assert!(!swept.contains(&live), "{live} swept: {swept:?}");
        nft(&format!("delete table inet {live}\n"));
    }
}

// ----- the lock adapters under faults ----------------------------------------------------------

/// One fault on one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL; the member stays down while the cases run.
    Kill,
    /// SIGSTOP; frozen while the cases run.
    Stop,
    /// SIGKILL, then a restart (same name, ports, data); the cases run once it serves again,
    /// so what they meet is the client's connections and watches that the crash cut.
    KillRestart,
    /// Cut off from its peers (its client port stays reachable) while the cases run.
    Partition,
}

impl Fault {
    fn needs_partitionable(self) -> bool {
        self == Fault::Partition
    }

    fn inject(self, cluster: &mut EtcdCluster, x: usize) {
        match self {
            Fault::Kill => cluster.members[x].kill(),
            Fault::Stop => cluster.members[x].pause(),
            Fault::KillRestart => {
                cluster.members[x].kill();
                cluster.members[x].restart();
                // Bound 30 s: replay the WAL, hear from the leader (the others may have to
                // elect one first), catch up.
                cluster.members[x].wait_serving(Duration::from_secs(30));
            }
            Fault::Partition => cluster.partition(x),
        }
    }

    fn restore(self, cluster: &mut EtcdCluster, x: usize) {
        match self {
            Fault::Kill => cluster.members[x].restart(),
            Fault::Stop => cluster.members[x].resume(),
            Fault::KillRestart => {}
            Fault::Partition => cluster.heal(x),
        }
    }
}

/// The outcome of one case: `Ok(timings)` or `Err(what went wrong, with timings)`.
struct Report {
    case: &'static str,
    outcome: Result<String, String>,
}

fn report(case: &'static str, outcome: Result<String, String>) -> Report {
    Report { case, outcome }
}

/// Prints every report and fails (listing the failed cases) unless all passed.
fn conclude(title: &str, reports: &[Report]) {
    println!("==== {title}");
    for r in reports {
        match &r.outcome {
            Ok(s) => println!("  PASS {}: {s}", r.case),
            Err(s) => println!("  FAIL {}: {s}", r.case),
        }
    }
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|r| r.outcome.as_ref().err().map(|e| format!("{}: {e}", r.case)))
        .collect();
    assert!(
        failed.is_empty(),
        "{title}: {} of {} case(s) failed:\n  {}",
        failed.len(),
        reports.len(),
        failed.join("\n  ")
    );
}

/// The value and `createdIndex` at `key` by a quorum read on `url` (bound 10 s): `Ok(None)`
/// when absent, `Err` when the member does not answer it.
fn quorum_value(url: &str, key: &str) -> Result<Option<(String, u64)>, String> {
    let path = format!("{}?quorum=true", microlock_tests::inspect::key_path(key));
    let r = request(url, "GET", &path, None, Duration::from_secs(10));
    match &r {
        Ok(resp) if resp.status == 404 => Ok(None),
        Ok(resp) if resp.status == 200 => {
            let v: serde_json::Value =
                serde_json::from_slice(&resp.body).map_err(|e| format!("{e}: {}", show(&r)))?;
            Ok(Some((
                v["node"]["value"].as_str().unwrap_or_default().to_string(),
                v["node"]["createdIndex"].as_u64().unwrap_or(0),
            )))
        }
        _ => Err(format!("quorum GET {key} on {url}: {}", show(&r))),
    }
}

/// Runs every future to completion, concurrently, on the current task; outputs in order.
async fn join_all<'a, T>(
    futures: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>>,
) -> Vec<T> {
    let mut futures: Vec<_> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = f {
                if let std::task::Poll::Ready(v) = fut.as_mut().poll(cx) {
                    *out = Some(v);
                    *f = None;
                }
            }
        }
        if futures.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("ready")).collect()
}

/// Both futures to completion, concurrently.
async fn join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.expect("ready"), rb.expect("ready"))
}

/// A lock, unlock or renew through a cluster with one member down succeeds within this. The
/// adapters' default budget per operation is a few request timeouts; 15 s is slack for CI.
const OP_BOUND: Duration = Duration::from_secs(15);
/// The per-request timeout of every client here (also the adapters' default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The lease of the locks here (not the auto-renewed one).
const TTL: Duration = Duration::from_secs(5);
/// A lease that cannot run out during a test.
const LONG: Duration = Duration::from_secs(60);
/// Case 4: the waiter's acquire timeout.
const WAIT: Duration = Duration::from_secs(35);
/// Case 4: the waiter must get the lock within 5 s of the release (the liveness bound); 3 s
/// more of slack for 2 busy cores.
const WAKE_BOUND: Duration = Duration::from_secs(8);
/// Case 5: every event arrives within this after the last release (liveness 5 s; 15 s slack).
const EVENTS_BOUND: Duration = Duration::from_secs(20);
/// Case 6: the auto-renewed lease, its request timeout, and the hold's span: 3 leases.
const HOLD_TTL: Duration = Duration::from_secs(5);
const HOLD_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Case 7: with quorum lost, an operation fails (with a typed error) within this.
const QUORUM_BOUND: Duration = Duration::from_secs(30);
/// Case 7's request timeout.
const QUORUM_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Pre-fault set-up (a watch parks on a member) and cluster recovery after a fault.
const SETUP_BOUND: Duration = Duration::from_secs(15);
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// Is `e` a failure to reach a quorum (fine under quorum loss), not contention or ownership?
fn typed_failure(e: &microlock_proto::Error) -> bool {
    !matches!(
        e,
        microlock_proto::Error::AlreadyLocked { .. } | microlock_proto::Error::LockNotOwned { .. }
    )
}

macro_rules! fault_suite {
    ($name:ident, $ml:ident, $rt:path, $test:meta) => {
        mod $name {
            use std::sync::{Arc, Mutex};
            use std::time::{Duration, Instant};

            use microlock_tests::etcd::{unique_key, EtcdCluster};
            use microlock_tests::inspect;
            use $ml::{Config, Error, Etcd, Event, Microlock};
            use $rt as rt;

            use super::*;

            type Cluster = Arc<Mutex<EtcdCluster>>;

            /// Runs `f` on the cluster on a blocking thread (harness calls block).
            async fn on_cluster<T: Send + 'static>(
                cluster: &Cluster,
                f: impl FnOnce(&mut EtcdCluster) -> T + Send + 'static,
            ) -> T {
                let cluster = cluster.clone();
                rt::blocking(move || f(&mut cluster.lock().unwrap_or_else(|e| e.into_inner()))).await
            }

            async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
                rt::blocking(f).await
            }

            fn config(key: &str, id: &str, ttl: Duration) -> Config {
                Config::new(key, id, ttl)
                    .expect("valid config")
                    .with_request_timeout(REQUEST_TIMEOUT)
            }

            fn client(urls: &[String]) -> Etcd {
                Etcd::new(urls.iter().cloned()).expect("valid endpoints")
            }

            /// Starts a 3-member cluster and picks the member to fault; prints the set-up.
            async fn set_up(fault: &str, partitionable: bool) -> (Cluster, usize, Vec<String>) {
                let cluster = blocking(move || {
                    if partitionable {
                        EtcdCluster::start_partitionable(3)
                    } else {
                        EtcdCluster::start(3)
                    }
                })
                .await;
                let (x, leader, desc, cluster) = blocking(move || {
                    let x = pick_target(&cluster);
                    (x, cluster.leader(), describe(&cluster), cluster)
                })
                .await;
                let urls = cluster.client_urls();
                println!(
                    "{} / etcd {} / {fault}: faulting m{x} ({}); {desc}",
                    stringify!($ml),
                    cluster.members[0].version(),
                    if leader == Some(x) {
                        "leader"
                    } else {
                        "follower"
                    },
                );
                (Arc::new(Mutex::new(cluster)), x, urls)
            }

            /// Waits until the member at `url` serves `n` watches (bounded by SETUP_BOUND).
            async fn watchers_become(url: &str, n: u64) -> Result<(), String> {
                let until = Instant::now() + SETUP_BOUND;
                loop {
                    let u = url.to_string();
                    let now = blocking(move || inspect::watchers(&u)).await;
                    if now == n {
                        return Ok(());
                    }
                    if Instant::now() >= until {
                        return Err(format!(
                            "{url} serves {now} watches, not {n}, after {SETUP_BOUND:?}"
                        ));
                    }
                    rt::sleep(Duration::from_millis(20)).await;
                }
            }

            async fn value_on(url: &str, key: &str) -> Result<Option<(String, u64)>, String> {
                let (u, k) = (url.to_string(), key.to_string());
                blocking(move || quorum_value(&u, &k)).await
            }

            /// Retries `op` (a healthy-path step, not what a case tests) on errors other than
            /// contention and ownership, for at most OP_BOUND; returns the value, the time,
            /// and the errors retried.
            macro_rules! retrying {
                ($op:expr) => {{
                    let started = Instant::now();
                    let mut errors: Vec<String> = Vec::new();
                    loop {
                        let left = OP_BOUND.saturating_sub(started.elapsed());
                        match rt::timeout(left, $op).await {
                            Some(Ok(v)) => break Ok((v, started.elapsed(), errors)),
                            Some(Err(e)) if typed_failure(&e) && started.elapsed() < OP_BOUND => {
                                errors.push(format!("{e:?} at {:?}", started.elapsed()));
                            }
                            Some(Err(e)) => {
                                break Err(format!(
                                    "{e:?} after {:?} (retried: {errors:?})",
                                    started.elapsed()
                                ))
                            }
                            None => {
                                break Err(format!(
                                    "not done within {OP_BOUND:?} (retried: {errors:?})"
                                ))
                            }
                        }
                    }
                }};
            }

            /// Cases 1-6 under one fault of the member every case's client uses first.
            async fn cases_under(fault: Fault) {
                let title = format!("{} {fault:?}", stringify!($ml));
                let (cluster, x, urls) = set_up(&title, fault.needs_partitionable()).await;
                let h = (x + 1) % 3; // a healthy member
                let x_first: Vec<String> = [x, (x + 1) % 3, (x + 2) % 3]
                    .iter()
                    .map(|&i| urls[i].clone())
                    .collect();
                let h_first: Vec<String> = [(x + 1) % 3, (x + 2) % 3, x]
                    .iter()
                    .map(|&i| urls[i].clone())
                    .collect();
                let (url_x, url_h) = (urls[x].clone(), urls[h].clone());
                // Healthy-path helpers (holders whose steps are not under test).
                let via_h = client(&h_first);

                // Case 1: a lock to renew; case 3: a lock to release. Taken through X.
                let k1 = unique_key("fault-renew");
                let renewer =
                    Microlock::with_config(&client(&x_first), config(&k1, "renewer", LONG)).unwrap();
                let renewer_fence = renewer.lock().await.expect("set-up: lock through m_x");
                let k3 = unique_key("fault-unlock");
                let unlocker =
                    Microlock::with_config(&client(&x_first), config(&k3, "unlocker", LONG)).unwrap();
                unlocker.lock().await.expect("set-up: lock through m_x");
                // Case 4: a holder (through a healthy member) and a waiter (watching on X).
                let k4 = unique_key("fault-wait");
                let holder4 = Microlock::with_config(&via_h, config(&k4, "holder4", LONG)).unwrap();
                let held4 = holder4.lock().await.expect("set-up: holder4");
                let waiter = Microlock::with_config(&client(&x_first), config(&k4, "waiter", TTL)).unwrap();
                // Case 5: a subscriber (watching on X).
                let k5 = unique_key("fault-events");
                let subscriber =
                    Microlock::with_config(&client(&x_first), config(&k5, "subscriber", TTL)).unwrap();
                // Case 6: a hold with auto-renew, taken through X.
                let k6 = unique_key("fault-hold");
                let holder6 = Microlock::with_config(
                    &client(&x_first),
                    config(&k6, "holder6", HOLD_TTL).with_request_timeout(HOLD_REQUEST_TIMEOUT),
                )
                .unwrap();

                let waiting = async {
                    let r = rt::timeout(WAIT + Duration::from_secs(5), waiter.acquire(WAIT)).await;
                    (r, Instant::now())
                };
                let main = async {
                    let base = watchers_before(&url_x).await;
                    watchers_become(&url_x, base + 1)
                        .await
                        .expect("set-up: the waiter's watch on m_x");
                    let mut events = subscriber.events();
                    watchers_become(&url_x, base + 2)
                        .await
                        .expect("set-up: the subscriber's watch on m_x");
                    holder6.set_auto_renew(true);
                    let fence6 = holder6.lock().await.expect("set-up: holder6");
                    let mut events6 = holder6.events();

                    // ---- the fault ----
                    let t0 = Instant::now();
                    on_cluster(&cluster, move |c| fault.inject(c, x)).await;
                    println!("{title}: fault injected in {:?}", t0.elapsed());
                    let released_at: std::cell::Cell<Option<Instant>> = Default::default();

                    let case1 = async {
                        let started = Instant::now();
                        let outcome = match rt::timeout(OP_BOUND, renewer.renew()).await {
                            None => Err(format!("renew not done within {OP_BOUND:?}")),
                            Some(Err(e)) => {
                                Err(format!("renew failed after {:?}: {e:?}", started.elapsed()))
                            }
                            Some(Ok(f)) => {
                                let took = started.elapsed();
                                match value_on(&url_h, &k1).await {
                                    Ok(Some((v, c)))
                                        if v == "renewer"
                                            && c == renewer_fence.token()
                                            && f.token() == c =>
                                    {
                                        Ok(format!("renewed in {took:?}"))
                                    }
                                    other => Err(format!("renewed in {took:?}, but etcd has {other:?}")),
                                }
                            }
                        };
                        report("1 renew after the member in use fails", outcome)
                    };
                    let case2 = async {
                        let k2 = unique_key("fault-first-lock");
                        let fresh = client(&x_first);
                        let newcomer =
                            Microlock::with_config(&fresh, config(&k2, "newcomer", LONG)).unwrap();
                        let started = Instant::now();
                        let outcome = match rt::timeout(OP_BOUND, newcomer.lock()).await {
                            None => Err(format!("lock not done within {OP_BOUND:?}")),
                            Some(Err(e)) => {
                                Err(format!("lock failed after {:?}: {e:?}", started.elapsed()))
                            }
                            Some(Ok(f)) => {
                                let took = started.elapsed();
                                match value_on(&url_h, &k2).await {
                                    Ok(Some((v, c))) if v == "newcomer" && c == f.token() => {
                                        Ok(format!("locked in {took:?}"))
                                    }
                                    other => Err(format!("locked in {took:?}, but etcd has {other:?}")),
                                }
                            }
                        };
                        report("2 a new lock's first lock() on a fresh client", outcome)
                    };
                    let case3 = async {
                        let started = Instant::now();
                        let outcome = match rt::timeout(OP_BOUND, unlocker.unlock()).await {
                            None => Err(format!("unlock not done within {OP_BOUND:?}")),
                            Some(Err(e)) => Err(format!(
                                "unlock failed after {:?}: {e:?}",
                                started.elapsed()
                            )),
                            Some(Ok(())) => {
                                let took = started.elapsed();
                                match value_on(&url_h, &k3).await {
                                    Ok(None) => Ok(format!("unlocked in {took:?}; key gone")),
                                    other => Err(format!("unlocked in {took:?}, but etcd has {other:?}")),
                                }
                            }
                        };
                        report("3 unlock while the member in use is faulted", outcome)
                    };
                    let case4_release = async {
                        let started = Instant::now();
                        // Retried on errors (an election may be under way): the release is the
                        // trigger here, not under test. A retry that finds the key gone means
                        // an earlier attempt released it: measure from the first attempt then.
                        let mut errors = Vec::new();
                        loop {
                            let attempt = Instant::now();
                            match rt::timeout(OP_BOUND, holder4.unlock()).await {
                                Some(Ok(())) => {
                                    released_at.set(Some(Instant::now()));
                                    break;
                                }
                                Some(Err(Error::LockNotOwned { .. })) if !errors.is_empty() => {
                                    released_at.set(Some(started));
                                    break;
                                }
                                Some(Err(e)) if started.elapsed() < OP_BOUND => {
                                    errors.push(format!("{e:?} after {:?}", attempt.elapsed()));
                                }
                                other => {
                                    errors.push(format!("{other:?}"));
                                    println!("{title}: case 4: the holder could not release: {errors:?}");
                                    break;
                                }
                            }
                        }
                        if !errors.is_empty() {
                            println!("{title}: case 4: the holder's release retried: {errors:?}");
                        }
                        println!(
                            "{title}: case 4: released {:?} after the fault",
                            started.elapsed()
                        );
                    };
                    let case5 = async {
                        let mut expected: Vec<Event> = Vec::new();
                        let mut notes = Vec::new();
                        let mut last_release = Instant::now();
                        for i in 0..3 {
                            let id = format!("hold-{i}");
                            let holder = Microlock::with_config(&via_h, config(&k5, &id, LONG)).unwrap();
                            match retrying!(holder.lock()) {
                                Ok((f, took, errs)) => {
                                    notes.push(format!(
                                        "{id} locked in {took:?}{}",
                                        if errs.is_empty() {
                                            String::new()
                                        } else {
                                            format!(" (retried {errs:?})")
                                        }
                                    ));
                                    expected.push(Event::Locked {
                                        holder: id.clone(),
                                        token: f.token(),
                                    });
                                }
                                Err(e) => {
                                    return report(
                                        "5 events in order, none lost",
                                        Err(format!("set-up: {id} could not lock: {e}")),
                                    )
                                }
                            }
                            match retrying!(holder.unlock()) {
                                Ok((_, took, _)) => {
                                    last_release = Instant::now();
                                    notes.push(format!("released in {took:?}"));
                                    expected.push(Event::Unlocked {
                                        previous_holder: Some(id.clone()),
                                        expired: false,
                                    });
                                }
                                Err(e) => {
                                    return report(
                                        "5 events in order, none lost",
                                        Err(format!("set-up: {id} could not unlock: {e}")),
                                    )
                                }
                            }
                        }
                        let mut got: Vec<Event> = Vec::new();
                        let deadline = last_release + EVENTS_BOUND;
                        while got.len() < expected.len() {
                            let left = deadline.saturating_duration_since(Instant::now());
                            match rt::timeout(left, events.next()).await {
                                Some(Some(e)) => got.push(e),
                                Some(None) => break,
                                None => break,
                            }
                        }
                        let lag = last_release.elapsed();
                        let outcome = if got == expected {
                            Ok(format!(
                                "all {} events, the last {lag:?} after the last release ({})",
                                got.len(),
                                notes.join(", ")
                            ))
                        } else {
                            Err(format!(
                                "expected {expected:?}, got {got:?} within {EVENTS_BOUND:?} of the last release ({})",
                                notes.join(", ")
                            ))
                        };
                        drop(events);
                        report("5 events in order, none lost", outcome)
                    };
                    let case6 = async {
                        // Over 3 leases from the fault: no Lost, still held, still ours.
                        let until = t0 + 3 * HOLD_TTL;
                        let mut seen = Vec::new();
                        let mut failure = None;
                        loop {
                            let left = until.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            match rt::timeout(left, events6.next()).await {
                                None => break,
                                Some(Some(e @ Event::Lost { .. })) => {
                                    failure = Some(format!("{e:?} {:?} after the fault", t0.elapsed()));
                                    break;
                                }
                                Some(Some(e)) => seen.push(e),
                                Some(None) => {
                                    failure = Some("the event stream ended".to_string());
                                    break;
                                }
                            }
                        }
                        let outcome = match failure {
                            Some(f) => Err(f),
                            None if !holder6.is_held() => Err("not held after 3 leases".to_string()),
                            None => match value_on(&url_h, &k6).await {
                                Ok(Some((v, c))) if v == "holder6" && c == fence6.token() => Ok(format!(
                                    "held {:?} through the fault, no Lost",
                                    t0.elapsed()
                                )),
                                other => Err(format!("is_held, but etcd has {other:?}")),
                            },
                        };
                        report("6 auto-renewed hold survives 3 leases", outcome)
                    };
                    let reports = join_all(vec![
                        Box::pin(case1),
                        Box::pin(case2),
                        Box::pin(case3),
                        Box::pin(async {
                            case4_release.await;
                            report("4 (release)", Ok(String::new()))
                        }),
                        Box::pin(case5),
                        Box::pin(case6),
                    ])
                    .await;
                    println!("{title}: cases done {:?} after the fault", t0.elapsed());
                    on_cluster(&cluster, move |c| {
                        fault.restore(c, x);
                        c.wait_all_serving(RECOVERY_BOUND)
                    })
                    .await;
                    (reports, released_at.get())
                };
                let ((acquired, acquired_at), (mut reports, released_at)) = join(waiting, main).await;
                reports.retain(|r| r.case != "4 (release)");
                let outcome = match (acquired, released_at) {
                    (_, None) => Err("the holder never released (see above)".to_string()),
                    (None, Some(_)) => Err(format!(
                        "acquire did not return within {:?}",
                        WAIT + Duration::from_secs(5)
                    )),
                    (Some(Err(e)), Some(r)) => Err(format!(
                        "acquire failed {:?} after the release: {e:?}",
                        acquired_at.saturating_duration_since(r)
                    )),
                    (Some(Ok(f)), Some(r)) => {
                        let delay = acquired_at.saturating_duration_since(r);
                        if f.token() <= held4.token() {
                            Err(format!(
                                "token {} not above the released hold's {}",
                                f.token(),
                                held4.token()
                            ))
                        } else if delay >= WAKE_BOUND {
                            Err(format!(
                                "acquired {delay:?} after the release (bound {WAKE_BOUND:?})"
                            ))
                        } else {
                            Ok(format!("acquired {delay:?} after the release"))
                        }
                    }
                };
                reports.insert(
                    3,
                    report("4 waiter watching on the faulted member wakes", outcome),
                );
                conclude(&title, &reports);
            }

            async fn watchers_before(url: &str) -> u64 {
                let u = url.to_string();
                blocking(move || inspect::watchers(&u)).await
            }

            /// Case 7: two of three members killed or stopped: operations fail with a typed error
            /// (not contention or ownership) within QUORUM_BOUND; once the quorum is back, a lock
            /// and its release succeed.
            async fn quorum_loss(fault: Fault) {
                let title = format!("{} quorum loss by {fault:?}", stringify!($ml));
                let (cluster, x, urls) = set_up(&title, false).await;
                let y = (x + 1) % 3;
                let order: Vec<String> = [x, y, (x + 2) % 3]
                    .iter()
                    .map(|&i| urls[i].clone())
                    .collect();
                let etcd = client(&order);
                let cfg = |key: &str, id: &str, ttl| {
                    config(key, id, ttl).with_request_timeout(QUORUM_REQUEST_TIMEOUT)
                };
                let ka = unique_key("quorum-held");
                let holder = Microlock::with_config(&etcd, cfg(&ka, "q-holder", LONG)).unwrap();
                holder.lock().await.expect("set-up: lock");
                let kb = unique_key("quorum-lock");
                let locker = Microlock::with_config(&etcd, cfg(&kb, "q-locker", TTL)).unwrap();

                on_cluster(&cluster, move |c| {
                    for i in [x, y] {
                        match fault {
                            Fault::Kill => c.members[i].kill(),
                            Fault::Stop => c.members[i].pause(),
                            _ => unreachable!(),
                        }
                    }
                })
                .await;
                let mut reports = Vec::new();
                macro_rules! must_fail {
                    ($case:expr, $op:expr) => {{
                        let started = Instant::now();
                        let outcome = match rt::timeout(QUORUM_BOUND, $op).await {
                            None => Err(format!("not done within {QUORUM_BOUND:?}")),
                            Some(Ok(v)) => Err(format!(
                                "succeeded without a quorum after {:?}: {v:?}",
                                started.elapsed()
                            )),
                            Some(Err(e)) if typed_failure(&e) => {
                                Ok(format!("failed after {:?}: {e:?}", started.elapsed()))
                            }
                            Some(Err(e)) => Err(format!(
                                "a contention/ownership error after {:?}: {e:?}",
                                started.elapsed()
                            )),
                        };
                        reports.push(report($case, outcome));
                    }};
                }
                must_fail!("7 lock() without a quorum", locker.lock());
                must_fail!("7 renew() without a quorum", holder.renew());
                must_fail!("7 unlock() without a quorum", holder.unlock());

                let restored = Instant::now();
                let serving = on_cluster(&cluster, move |c| {
                    for i in [x, y] {
                        match fault {
                            Fault::Kill => c.members[i].restart(),
                            Fault::Stop => c.members[i].resume(),
                            _ => unreachable!(),
                        }
                    }
                    c.wait_all_serving(RECOVERY_BOUND)
                })
                .await;
                println!("{title}: quorum back, all members serve after {serving:?}");
                // What the failed writes left behind (a write that timed out may still land).
                println!(
                    "{title}: after the outage: {ka} = {:?}, {kb} = {:?}",
                    value_on(&urls[x], &ka).await,
                    value_on(&urls[x], &kb).await
                );
                let kc = unique_key("quorum-after");
                let after = Microlock::with_config(&etcd, cfg(&kc, "q-after", TTL)).unwrap();
                let started = Instant::now();
                let outcome = match rt::timeout(OP_BOUND, after.lock()).await {
                    Some(Ok(_)) => {
                        let locked = started.elapsed();
                        match rt::timeout(OP_BOUND, after.unlock()).await {
                            Some(Ok(())) => Ok(format!(
                                "lock in {locked:?}, unlock in {:?} ({:?} after the restore began)",
                                started.elapsed() - locked,
                                restored.elapsed()
                            )),
                            other => Err(format!("locked in {locked:?}, then unlock: {other:?}")),
                        }
                    }
                    other => Err(format!("lock after {:?}: {other:?}", started.elapsed())),
                };
                reports.push(report(
                    "7 lock then unlock once the quorum is back",
                    outcome,
                ));
                conclude(&title, &reports);
                drop(cluster);
            }

            #[$test]
            async fn sigkill_of_the_member_in_use() {
                cases_under(Fault::Kill).await;
            }

            #[$test]
            async fn sigstop_of_the_member_in_use() {
                cases_under(Fault::Stop).await;
            }

            #[$test]
            async fn kill_and_restart_of_the_member_in_use() {
                cases_under(Fault::KillRestart).await;
            }

            #[$test]
            async fn partition_of_the_member_in_use_from_its_peers() {
                cases_under(Fault::Partition).await;
            }

            #[$test]
            async fn quorum_loss_by_sigkill() {
                quorum_loss(Fault::Kill).await;
            }

            #[$test]
            async fn quorum_loss_by_sigstop() {
                quorum_loss(Fault::Stop).await;
            }
        }
    };
}

fault_suite!(
    cluster_faults_tokio,
    microlock_tokio,
    microlock_tests::rt::tokio,
    tokio::test
);
fault_suite!(
    cluster_faults_async_std,
    microlock_async_std,
    microlock_tests::rt::async_std,
    async_std::test
);
