//! No hidden cost: the uncontended lock+unlock cycle of `microlock-tokio` against the same two
//! HTTP requests sent by a bare keep-alive hyper client, on the same etcd, in one run.
//!
//! `cargo run --release -p microlock-tokio --example bench -- [ETCD_URL] [CYCLES] [ROUNDS]`
//! (`make bench` starts a throw-away etcd). The two clients alternate round by round so that
//! etcd's own drift (compaction, fsync latency) hits both alike; the figure per client is the
//! median of its rounds' mean cycle time.
//!
//! With an `https://` URL both clients speak mutual TLS (rustls, one rustls configuration for
//! both) with the CA, certificate and key named by `ETCD_CA`, `ETCD_CERT` and `ETCD_KEY`
//! (`WITH_ETCD_TLS=1 .ci/with-etcd.sh` sets them): bare hyper over hyper-rustls is the floor.
//!
//! `--json FILE` (anywhere in the arguments) also writes the figures there, for `make bench`'s
//! report (`examples/report.rs`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use microlock_tokio::{Etcd, Microlock};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut args, json) = split_json_flag(std::env::args().skip(1))?;
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let cycles: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(9);

    let tls = url.starts_with("https://");
    let mut builder = Etcd::builder([url.as_str()]);
    if tls {
        let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        builder = builder
            .ca_file(var("ETCD_CA")?)
            .client_cert_files(var("ETCD_CERT")?, var("ETCD_KEY")?);
    }
    let etcd = builder.build()?;
    let lock = Microlock::new(
        &etcd,
        "bench/microlock",
        "bench-node",
        Duration::from_secs(30),
    )?;
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
    let bare = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let bare_key = format!("{url}/v2/keys/bench/bare");

    let bare_cycle = || async {
        let put = Request::builder()
            .method(Method::PUT)
            .uri(format!("{bare_key}?prevExist=false"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(b"value=bench-node&ttl=30")))?;
        let r = bare.request(put).await?;
        assert_eq!(r.status(), 201);
        r.into_body().collect().await?;
        let delete = Request::builder()
            .method(Method::DELETE)
            .uri(format!("{bare_key}?prevValue=bench-node"))
            .body(Full::new(Bytes::new()))?;
        let r = bare.request(delete).await?;
        assert_eq!(r.status(), 200);
        r.into_body().collect().await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    };

    // Warm up both (connections, etcd caches).
    for _ in 0..20 {
        lock.lock().await?;
        lock.unlock().await?;
        bare_cycle().await?;
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let run_ours = || async {
            let t = Instant::now();
            for _ in 0..cycles {
                lock.lock().await?;
                lock.unlock().await?;
            }
            Ok::<_, Box<dyn std::error::Error>>(t.elapsed() / cycles)
        };
        let run_bare = || async {
            let t = Instant::now();
            for _ in 0..cycles {
                bare_cycle().await?;
            }
            Ok::<_, Box<dyn std::error::Error>>(t.elapsed() / cycles)
        };
        if round % 2 == 0 {
            ours.push(run_ours().await?);
            theirs.push(run_bare().await?);
        } else {
            theirs.push(run_bare().await?);
            ours.push(run_ours().await?);
        }
    }
    ours.sort();
    theirs.sort();
    let (m_ours, m_bare) = (ours[rounds / 2], theirs[rounds / 2]);
    let ratio = m_ours.as_secs_f64() / m_bare.as_secs_f64();
    let over = if tls { " over mutual TLS" } else { "" };
    println!("lock+unlock cycle{over}, median of {rounds} rounds x {cycles} cycles:");
    println!(
        "  microlock-tokio   : {:>9.1} µs",
        m_ours.as_secs_f64() * 1e6
    );
    let floor = if tls {
        "bare hyper+rustls"
    } else {
        "bare hyper"
    };
    println!("  {floor:<18}: {:>9.1} µs", m_bare.as_secs_f64() * 1e6);
    println!("  ratio             : {ratio:.3}");
    if let Some(path) = json {
        let us = |rounds: &[Duration]| {
            rounds
                .iter()
                .map(|d| d.as_secs_f64() * 1e6)
                .collect::<Vec<_>>()
        };
        let report = serde_json::json!({
            "bench": "uncontended",
            "adapter": "microlock-tokio",
            "transport": if tls { "mutual TLS" } else { "http" },
            "floor": floor,
            "cycles": cycles,
            "rounds": rounds,
            "microlock_us": m_ours.as_secs_f64() * 1e6,
            "floor_us": m_bare.as_secs_f64() * 1e6,
            "ratio": ratio,
            "rounds_microlock_us": us(&ours),
            "rounds_floor_us": us(&theirs),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}

/// The arguments without `--json FILE`, and FILE.
fn split_json_flag(
    mut args: impl Iterator<Item = String>,
) -> Result<(std::vec::IntoIter<String>, Option<String>), String> {
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
