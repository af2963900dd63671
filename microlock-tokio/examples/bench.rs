//! No hidden cost: the uncontended lock+unlock cycle of `microlock-tokio` against the same
//! HTTP requests sent by a bare keep-alive hyper client, on the same etcd, in one run, for
//! both protocols:
//!
//! - **v2** (the keys API): `PUT ?prevExist=false` then `DELETE ?prevValue`;
//! - **v3** (the JSON gateway, `Protocol::V3`): the acquire txn (put my key under my lease if
//!   absent, read the owner) then the release txn (delete my key if its create revision is the
//!   hold's), with a lease granted once and kept alive when a third of its TTL has passed —
//!   what microlock does; the floor sends the same bodies and headers (`examples/floor/v3.rs`).
//!
//! `cargo run --release -p microlock-tokio --example bench -- [ETCD_URL] [CYCLES] [ROUNDS]`
//! (`make bench` starts a throw-away etcd). The four clients (microlock and bare hyper, v2 and
//! v3, each with its own connections) take turns round by round, each protocol's pair next to
//! each other and the order changing every round, so that etcd's own drift (compaction, fsync
//! latency) and the machine's load hit all alike; the figure per client is the median of its
//! rounds' mean cycle time. v3 ÷ v2 compares the protocols in the same run. Beside it, the
//! CPU time this process spent per cycle (the median of the rounds): the runtime is
//! single-threaded, so it is each client's own cost, without etcd's time.
//!
//! With an `https://` URL every client speaks mutual TLS (rustls, one rustls configuration for
//! all) with the CA, certificate and key named by `ETCD_CA`, `ETCD_CERT` and `ETCD_KEY`
//! (`WITH_ETCD_TLS=1 .ci/with-etcd.sh` sets them): bare hyper over hyper-rustls is the floor.
//!
//! `--json FILE` (anywhere in the arguments) also writes the figures there, for `make bench`'s
//! report (`examples/report/`): the v2 figures at the top level (as `async_std_bench` writes
//! them), the v3 ones under `v3`.

#[allow(dead_code)] // shared with handoff.rs, which uses the waiting locks
mod floor;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use microlock_tokio::{Etcd, Microlock, Protocol};
use serde_json::json;

use floor::Result;

const TTL_SECONDS: u64 = 30;
const NODE_ID: &str = "bench-node";

type Http = floor::Http<HttpsConnector<HttpConnector>>;

/// A client: microlock (v2 or v3, as its handle says), or a floor.
enum Cycler {
    Microlock(Microlock),
    BareV2 { http: Http, key_url: String },
    BareV3(floor::v3::Cycle<HttpsConnector<HttpConnector>>),
}

impl Cycler {
    async fn cycle(&mut self) -> Result<()> {
        match self {
            Cycler::Microlock(lock) => {
                lock.lock().await?;
                lock.unlock().await?;
            }
            Cycler::BareV2 { http, key_url } => {
                floor::v2::cycle(http, key_url, NODE_ID, TTL_SECONDS).await?
            }
            Cycler::BareV3(bare) => bare.cycle().await?,
        }
        Ok(())
    }

    /// The mean time of `cycles` cycles, and the mean CPU time this thread spent on them.
    async fn run(&mut self, cycles: u32) -> Result<(Duration, Duration)> {
        let (t, cpu) = (Instant::now(), thread_cpu());
        for _ in 0..cycles {
            self.cycle().await?;
        }
        Ok((
            t.elapsed() / cycles,
            thread_cpu().saturating_sub(cpu) / cycles,
        ))
    }
}

/// The CPU time this thread has run (Linux's `/proc/thread-self/schedstat`, nanoseconds; zero
/// elsewhere). The runtime is single-threaded: the clients' own work, hyper's and microlock's
/// tasks included, all runs on this thread.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let (mut args, json) = split_json_flag(std::env::args().skip(1))?;
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let url = url.trim_end_matches('/').to_owned();
    let cycles: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(9);

    let tls = url.starts_with("https://");
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let etcd = |protocol: Protocol| -> Result<Etcd> {
        let mut builder = Etcd::builder([url.as_str()]).protocol(protocol);
        if tls {
            builder = builder
                .ca_file(var("ETCD_CA")?)
                .client_cert_files(var("ETCD_CERT")?, var("ETCD_KEY")?);
        }
        Ok(builder.build()?)
    };
    let ttl = Duration::from_secs(TTL_SECONDS);
    // Each client its own handle or pool, so its own connections.
    let microlock_v2 = Microlock::new(&etcd(Protocol::V2)?, "bench/microlock", NODE_ID, ttl)?;
    let microlock_v3 = Microlock::new(&etcd(Protocol::V3)?, "bench/microlock3", NODE_ID, ttl)?;
    // The floor: hyper's pooled client, over the same rustls configuration when TLS.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let rustls_config = if tls {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        let settings = microlock_proto::Builder::<microlock_proto::Settings>::new([url.as_str()])
            .ca_file(var("ETCD_CA"))
            .client_cert_files(var("ETCD_CERT"), var("ETCD_KEY"))
            .build()?;
        (*settings.tls().expect("https").rustls()).clone()
    } else {
        // Unused for http:// (https_or_http), but the connector wants one.
        let ring = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(ring)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls_config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let bare = || Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector.clone());
    let bare_v2 = Cycler::BareV2 {
        http: bare(),
        key_url: format!("{url}/v2/keys/bench/bare"),
    };
    // A prefix as long as microlock's, so that the bodies are as long.
    let bare_v3 = floor::v3::Cycle::new(bare(), &url, "bench/bare-hyper", NODE_ID, TTL_SECONDS);
    // [microlock v2, bare v2, microlock v3, bare v3]
    let mut clients = [
        Cycler::Microlock(microlock_v2),
        bare_v2,
        Cycler::Microlock(microlock_v3),
        Cycler::BareV3(bare_v3.await?),
    ];

    // Warm up all (connections, etcd caches, microlock's lease).
    for _ in 0..20 {
        for client in &mut clients {
            client.cycle().await?;
        }
    }
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut cpu: [Vec<Duration>; 4] = Default::default();
    for round in 0..rounds {
        // Each protocol's pair back to back; which protocol first, and which of a pair
        // first, changes every round (all four orders in four rounds).
        let protocols = if round % 2 == 0 { [0, 2] } else { [2, 0] };
        let microlock_first = (round / 2) % 2 == 0;
        for pair in protocols {
            let order = if microlock_first {
                [pair, pair + 1]
            } else {
                [pair + 1, pair]
            };
            for i in order {
                let (time, cpu_time) = clients[i].run(cycles).await?;
                times[i].push(time);
                cpu[i].push(cpu_time);
            }
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let median_of = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let seconds = |rounds: &[Duration]| rounds.iter().map(Duration::as_secs_f64).collect();
    let median = |i: usize| Duration::from_secs_f64(median_of(seconds(&times[i])));
    let cpu_median = |i: usize| Duration::from_secs_f64(median_of(seconds(&cpu[i])));
    let over = if tls { " over mutual TLS" } else { "" };
    let floor_name = if tls {
        "bare hyper+rustls"
    } else {
        "bare hyper"
    };
    println!("lock+unlock cycle{over}, median of {rounds} rounds x {cycles} cycles:");
    let mut rows = Vec::new();
    for (protocol, i) in [("v2", 0), ("v3", 2)] {
        let (ours, theirs) = (median(i), median(i + 1));
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        println!(
            "  {protocol}: microlock-tokio {:>8.1} µs, {floor_name} {:>8.1} µs, ratio {ratio:.3} \
             (CPU in this process: {:.1} µs, {:.1} µs)",
            us(ours),
            us(theirs),
            us(cpu_median(i)),
            us(cpu_median(i + 1)),
        );
        rows.push(json!({
            "floor": floor_name,
            "microlock_us": us(ours),
            "floor_us": us(theirs),
            "ratio": ratio,
            // In the order they ran (round by round, each protocol's pair back to back).
            "rounds_microlock_us": times[i].iter().map(|d| us(*d)).collect::<Vec<_>>(),
            "rounds_floor_us": times[i + 1].iter().map(|d| us(*d)).collect::<Vec<_>>(),
            "microlock_cpu_us": us(cpu_median(i)),
            "floor_cpu_us": us(cpu_median(i + 1)),
        }));
    }
    let v3_over_v2 = |i: usize| median(i + 2).as_secs_f64() / median(i).as_secs_f64();
    println!(
        "  v3 ÷ v2: microlock-tokio {:.3}, {floor_name} {:.3}",
        v3_over_v2(0),
        v3_over_v2(1)
    );
    if let Some(path) = json {
        let mut report = json!({
            "bench": "uncontended",
            "adapter": "microlock-tokio",
            "transport": if tls { "mutual TLS" } else { "http" },
            "cycles": cycles,
            "rounds": rounds,
            "ttl_s": TTL_SECONDS,
            "v3": rows[1],
            "v3_over_v2": { "microlock": v3_over_v2(0), "floor": v3_over_v2(1) },
        });
        for (k, v) in rows[0].as_object().expect("an object") {
            report[k] = v.clone();
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}

/// The arguments without `--json FILE`, and FILE.
fn split_json_flag(
    mut args: impl Iterator<Item = String>,
) -> std::result::Result<(std::vec::IntoIter<String>, Option<String>), String> {
    let (mut rest, mut json) = (Vec::new(), None);
    while let Some(arg) = args.next() {
        if arg == "--json" {
            json = Some(args.next().ok_or("--json needs a file name")?);
        } else {
            rest.push(arg);
        }
    }
    Ok((rest.into_iter(), json))
}
