//! No hidden cost: the uncontended lock+unlock cycle of `microlock-async-std` against the same
//! two HTTP requests sent by bare async-h1 over one kept-alive `TcpStream`, on the same etcd,
//! in one run.
//!
//! `make bench` runs it on a throw-away etcd; by hand: `cargo run --release -p
//! microlock-async-std --example async_std_bench -- [ETCD_URL] [CYCLES] [ROUNDS]`. The caller
//! is in `async_std::task::block_on`, as a program's `main` would be. The two clients take turns
//! cycle by cycle, so that etcd's own drift (compaction, fsync latency) and the machine's load
//! hit both alike; the figure per client is the median of its rounds' mean cycle time. Beside
//! it, the client's CPU per cycle: the process's CPU time (every thread: the caller's and the
//! runtime's) over that client's cycles, median of the rounds — what the client costs the
//! application, without etcd's time, and much less noisy than the cycle time.
//!
//! `--json FILE` (anywhere in the arguments) also writes the figures there, for `make bench`'s
//! report (`microlock-tokio/examples/report.rs`).

use std::time::{Duration, Instant};

use async_std::io::ReadExt;
use async_std::net::TcpStream;
use microlock_async_std::{Etcd, Microlock};
use surf::http::{Method, Request, Url};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    async_std::task::block_on(bench())
}

/// The CPU time this process has run, all its threads.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The median of `rounds`.
fn median(rounds: &[Duration]) -> Duration {
    let mut sorted = rounds.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// One request on the kept-alive stream, its body read to the end.
async fn exchange(stream: &TcpStream, request: Request) -> Result<u16> {
    let mut response = async_h1::client::connect(stream.clone(), request).await?;
    let mut body = Vec::new();
    response.take_body().read_to_end(&mut body).await?;
    Ok(response.status().into())
}

async fn bench() -> Result<()> {
    let (mut args, json) = split_json_flag(std::env::args().skip(1))?;
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let cycles: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(9);

    let etcd = Etcd::new([url.as_str()])?;
    let lock = Microlock::new(
        &etcd,
        "bench/microlock",
        "bench-node",
        Duration::from_secs(30),
    )?;
    let base = Url::parse(&url)?;
    let stream = TcpStream::connect((
        base.host_str().unwrap_or("127.0.0.1"),
        base.port_or_known_default().unwrap_or(2379),
    ))
    .await?;
    stream.set_nodelay(true)?;
    let put_url = base.join("/v2/keys/bench/bare?prevExist=false")?;
    let delete_url = base.join("/v2/keys/bench/bare?prevValue=bench-node")?;

    let bare_cycle = || async {
        let mut put = Request::new(Method::Put, put_url.clone());
        put.set_body("value=bench-node&ttl=30");
        put.set_content_type("application/x-www-form-urlencoded".into());
        assert_eq!(exchange(&stream, put).await?, 201);
        let delete = Request::new(Method::Delete, delete_url.clone());
        assert_eq!(exchange(&stream, delete).await?, 200);
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    };

    // Warm up both (connections, etcd caches).
    for _ in 0..20 {
        lock.lock().await?;
        lock.unlock().await?;
        bare_cycle().await?;
    }
    // Per round: [ours, bare] cycle time and CPU.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut cpu_ours, mut cpu_theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (mut t_ours, mut t_bare) = (Duration::ZERO, Duration::ZERO);
        let (mut c_ours, mut c_bare) = (Duration::ZERO, Duration::ZERO);
        for cycle in 0..cycles {
            let order = (round + cycle as usize) % 2 == 0;
            for ours_now in [order, !order] {
                let (t, cpu) = (Instant::now(), process_cpu());
                if ours_now {
                    lock.lock().await?;
                    lock.unlock().await?;
                    t_ours += t.elapsed();
                    c_ours += process_cpu().saturating_sub(cpu);
                } else {
                    bare_cycle().await?;
                    t_bare += t.elapsed();
                    c_bare += process_cpu().saturating_sub(cpu);
                }
            }
        }
        ours.push(t_ours / cycles);
        theirs.push(t_bare / cycles);
        cpu_ours.push(c_ours / cycles);
        cpu_theirs.push(c_bare / cycles);
    }
    let (m_ours, m_bare) = (median(&ours), median(&theirs));
    let (cpu_ours, cpu_bare) = (median(&cpu_ours), median(&cpu_theirs));
    let ratio = m_ours.as_secs_f64() / m_bare.as_secs_f64();
    println!("lock+unlock cycle, median of {rounds} rounds x {cycles} cycles:");
    println!(
        "  microlock-async-std : {:>9.1} µs",
        m_ours.as_secs_f64() * 1e6
    );
    println!(
        "  bare async-h1       : {:>9.1} µs",
        m_bare.as_secs_f64() * 1e6
    );
    println!("  ratio               : {ratio:.3}");
    println!(
        "  client CPU per cycle: microlock-async-std {:.1} µs, bare async-h1 {:.1} µs",
        cpu_ours.as_secs_f64() * 1e6,
        cpu_bare.as_secs_f64() * 1e6
    );
    if let Some(path) = json {
        // Written by hand: this crate has no JSON library, and these are plain numbers.
        let us = |rounds: &[Duration]| {
            let all: Vec<String> = rounds
                .iter()
                .map(|d| format!("{:.3}", d.as_secs_f64() * 1e6))
                .collect();
            format!("[{}]", all.join(", "))
        };
        let report = format!(
            "{{\n  \"bench\": \"uncontended\",\n  \"adapter\": \"microlock-async-std\",\n  \
             \"transport\": \"http\",\n  \"floor\": \"bare async-h1\",\n  \
             \"cycles\": {cycles},\n  \"rounds\": {rounds},\n  \
             \"microlock_us\": {:.3},\n  \"floor_us\": {:.3},\n  \"ratio\": {ratio:.5},\n  \
             \"microlock_cpu_us\": {:.3},\n  \"floor_cpu_us\": {:.3},\n  \
             \"rounds_microlock_us\": {},\n  \"rounds_floor_us\": {}\n}}\n",
            m_ours.as_secs_f64() * 1e6,
            m_bare.as_secs_f64() * 1e6,
            cpu_ours.as_secs_f64() * 1e6,
            cpu_bare.as_secs_f64() * 1e6,
            us(&ours),
            us(&theirs),
        );
        std::fs::write(path, report)?;
    }
    Ok(())
}

/// The arguments without `--json FILE`, and FILE.
fn split_json_flag(
    mut args: impl Iterator<Item = String>,
) -> Result<(std::vec::IntoIter<String>, Option<String>)> {
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
