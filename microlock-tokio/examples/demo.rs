//! Several workers contend for one lock; each takes it, works a little, hands it over — in
//! turn: `acquire` serves waiters first come, first served.
//!
//! `cargo run -p microlock-tokio --example demo -- [ETCD_URL] [WORKERS] [ROUNDS]`
//! (defaults: `http://127.0.0.1:2379`, 4 workers, 3 rounds each); `MICROLOCK_PROTOCOL=v3`
//! speaks etcd's v3 API. `make demo` (or `make demo-v3`) starts etcd for you.

use std::time::Duration;

use microlock_tokio::{Error, Etcd, Microlock, Protocol};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // `RUST_LOG=microlock=debug` shows the story of every hand-off (see the README).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let protocol = match std::env::var("MICROLOCK_PROTOCOL").as_deref() {
        Ok("v3") => Protocol::V3,
        _ => Protocol::V2,
    };
    let etcd = Etcd::builder([url.as_str()]).protocol(protocol).build()?;
    let key = format!("microlock-demo/{}", std::process::id());
    println!(
        "{workers} workers contend for lock {key:?} on {url} ({protocol:?}), {rounds} turns each"
    );

    let mut tasks = Vec::new();
    for w in 0..workers {
        let (etcd, key) = (etcd.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let me = format!("worker-{w}");
            let lock = Microlock::new(&etcd, &key, &me, Duration::from_secs(5))?;
            for _ in 0..rounds {
                // Waits its turn: waiters are served in arrival order, and a worker that
                // wants the lock again queues behind the others.
                let fence = lock.acquire(Duration::from_secs(60)).await?;
                println!("{me} holds the lock (fencing token {})", fence.token());
                tokio::time::sleep(Duration::from_millis(100)).await;
                println!("{me} releases it");
                lock.unlock().await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await.expect("worker panicked")?;
    }
    println!("all {} turns done", workers * rounds);
    Ok(())
}
