//! Many locks on one `Etcd` handle, with async-std: how many sockets to etcd, how much memory
//! per lock, how many locks a second. N locks (default 10,000) are made on one handle, then all
//! locked at once (each `lock()` its own task), then all unlocked at once. The same program as
//! microlock-tokio's `many_locks`.
//!
//! ```text
//! bash .ci/with-etcd.sh cargo run --release -p microlock-async-std \
//!     --example async_std_many_locks -- {URL} \
//!     [--locks N] [--max-connections C] [--max-watches W] [--events]
//! ```
//!
//! `--max-connections` and `--max-watches` set the handle's caps (`EtcdBuilder::
//! max_connections_per_member`, `max_watches_per_member`; default: the library's defaults);
//! `--events` subscribes every lock to its events before locking (one watch each, so the watch
//! budget fills). With an `https://` URL, `ETCD_CA`, `ETCD_CERT` and `ETCD_KEY` name the CA and
//! client certificate (`WITH_ETCD_TLS=1 .ci/with-etcd.sh` sets them).
//!
//! How it measures (Linux only):
//! - **sockets**: this process's TCP connections to etcd's port on loopback: the socket inodes
//!   behind `/proc/self/fd`, looked up in `/proc/self/net/tcp` and `tcp6` (any state). A
//!   thread samples it every 10 ms while the locks are taken; the peak is the largest sample.
//! - **memory**: the resident set size (`/proc/self/statm`, resident pages × page size), read
//!   once the process is quiet (two equal readings 100 ms apart). The baseline is taken after
//!   one lock/unlock cycle on the handle (runtime, pool and allocator warmed up); "per idle
//!   lock" is the growth from the baseline once the N locks exist (driver tasks started, nothing
//!   sent) divided by N; "per held lock" the growth from the baseline once all N are held,
//!   divided by N. RSS includes what the allocator keeps for reuse, so these are upper bounds.
//! - **locks/s**: N divided by the time from the first `lock()` to the last answer.

use std::collections::HashSet;
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use microlock_async_std::{Etcd, Microlock};

struct Args {
    url: String,
    locks: usize,
    max_connections: Option<usize>,
    max_watches: Option<usize>,
    events: bool,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        url: "http://127.0.0.1:2379".to_owned(),
        locks: 10_000,
        max_connections: None,
        max_watches: None,
        events: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<usize, Box<dyn Error>> {
            let value = it.next().ok_or(format!("{name} needs a number"))?;
            Ok(value.replace('_', "").parse()?)
        };
        match arg.as_str() {
            "--locks" => args.locks = number("--locks")?,
            "--max-connections" => args.max_connections = Some(number("--max-connections")?),
            "--max-watches" => args.max_watches = Some(number("--max-watches")?),
            "--events" => args.events = true,
            url if !url.starts_with("--") => args.url = url.to_owned(),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(args)
}

#[async_std::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let mut builder = Etcd::builder([args.url.as_str()]);
    if args.url.starts_with("https://") {
        let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        builder = builder
            .ca_file(var("ETCD_CA")?)
            .client_cert_files(var("ETCD_CERT")?, var("ETCD_KEY")?);
    }
    if let Some(n) = args.max_connections {
        builder = builder.max_connections_per_member(n);
    }
    if let Some(n) = args.max_watches {
        builder = builder.max_watches_per_member(n);
    }
    let etcd = builder.build()?;
    let port = etcd.endpoints()[0]
        .as_str()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .ok_or("the URL needs a port")?;
    let run = format!("many_locks/{}-{}", std::process::id(), unix_millis());
    let ttl = Duration::from_secs(120);

    // Warm-up: the runtime, the pool's first connection, the allocator.
    let warm = Microlock::new(&etcd, &format!("{run}/warm-up"), "many-locks", ttl)?;
    warm.lock().await?;
    warm.unlock().await?;
    drop(warm);
    let base = quiet_rss().await;

    let locks: Vec<Arc<Microlock>> = (0..args.locks)
        .map(|i| Microlock::new(&etcd, &format!("{run}/{i}"), "many-locks", ttl).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let idle = quiet_rss().await;
    let mut streams = Vec::new();
    if args.events {
        streams = locks.iter().map(|l| l.events()).collect();
    }

    let sampler = Sampler::start(port);
    let started = Instant::now();
    let tasks: Vec<_> = (locks.iter().cloned())
        .map(|lock| {
            async_std::task::spawn(async move {
                let t = Instant::now();
                (lock.lock().await, t.elapsed())
            })
        })
        .collect();
    let (mut locked, mut failures, mut slowest) = (0, Vec::new(), Duration::ZERO);
    for task in tasks {
        let (result, took) = task.await;
        slowest = slowest.max(took);
        match result {
            Ok(_) => locked += 1,
            Err(e) => failures.push(e.to_string()),
        }
    }
    let lock_time = started.elapsed();
    let peak = sampler.stop();
    let sockets_held = sockets_to(port);
    let held = quiet_rss().await;

    let started = Instant::now();
    let unlocks: Vec<_> = (locks.iter().cloned())
        .map(|lock| async_std::task::spawn(async move { lock.unlock().await.is_ok() }))
        .collect();
    let mut unlocked = 0;
    for task in unlocks {
        unlocked += usize::from(task.await);
    }
    let unlock_time = started.elapsed();
    drop(streams);

    let n = args.locks;
    let per = |delta: u64| format!("{:.1} KiB", delta as f64 / n as f64 / 1024.0);
    let caps = format!(
        "{} short + {} watches{}",
        args.max_connections
            .unwrap_or(microlock_proto::Settings::DEFAULT_MAX_CONNECTIONS_PER_MEMBER),
        args.max_watches
            .unwrap_or(microlock_proto::Settings::DEFAULT_MAX_WATCHES_PER_MEMBER),
        if args.max_connections.is_none() && args.max_watches.is_none() {
            " (defaults)"
        } else {
            ""
        },
    );
    println!(
        "async_std_many_locks (microlock-async-std): {n} locks on one Etcd, one member at {}",
        args.url
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| connection cap per member | {caps} |");
    println!("| events() subscription per lock | {} |", args.events);
    println!("| sockets to etcd, peak while locking | {peak} |");
    println!("| sockets to etcd, all held | {sockets_held} |");
    println!("| locked / failed | {locked} / {} |", failures.len());
    println!(
        "| locks/s (all {n} at once) | {:.0} ({:.2} s; slowest lock {:.0} ms) |",
        n as f64 / lock_time.as_secs_f64(),
        lock_time.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
    println!(
        "| unlocks/s (all at once) | {:.0} ({unlocked} unlocked) |",
        n as f64 / unlock_time.as_secs_f64()
    );
    println!("| RSS, baseline | {:.1} MiB |", base as f64 / 1048576.0);
    println!("| RSS per idle lock | {} |", per(idle.saturating_sub(base)));
    println!(
        "| RSS per held lock | {} ({} over idle) |",
        per(held.saturating_sub(base)),
        per(held.saturating_sub(idle))
    );
    if let Some(first) = failures.first() {
        println!();
        println!("first failure: {first}");
    }
    Ok(())
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The resident set size in bytes (`statm` counts pages: 4 KiB on x86-64 Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = (statm.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The resident set size once it stops moving (two equal readings 100 ms apart; at most 3 s).
async fn quiet_rss() -> u64 {
    let mut last = rss();
    for _ in 0..30 {
        async_std::task::sleep(Duration::from_millis(100)).await;
        let now = rss();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// This process's TCP connections to `port` on loopback, in any state.
fn sockets_to(port: u16) -> usize {
    let mut ours = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let inode = (target.to_str())
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok());
        ours.extend(inode);
    }
    let mut count = 0;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(inode)) = (fields.get(2), fields.get(9)) else {
                continue;
            };
            let Some((address, remote_port)) = remote.split_once(':') else {
                continue;
            };
            // 127.x.x.x (little-endian hex), ::1, or ::ffff:127.x.x.x.
            let loopback = (address.len() == 8 && address.ends_with("7F"))
                || address == "00000000000000000000000001000000"
                || (address.starts_with("0000000000000000FFFF0000") && address.ends_with("7F"));
            if loopback
                && u16::from_str_radix(remote_port, 16) == Ok(port)
                && inode.parse().is_ok_and(|i: u64| ours.contains(&i))
            {
                count += 1;
            }
        }
    }
    count
}

/// Samples [`sockets_to`] every 10 ms on a thread of its own, keeping the largest.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(port: u16) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(sockets_to(port)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(sockets_to(port), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler { stop, peak, thread }
    }

    /// Stops sampling; the peak.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}
