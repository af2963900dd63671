//! `holder` on etcd v3: a lock holder in its own process, for tests that pause it (SIGSTOP)
//! past its lease's TTL.
//!
//! `holder_v3 ADAPTER URL KEY NODE_ID TTL_SECS` does what `holder` does (takes the lock with an
//! auto-renewed guard, prints `token N`, waits for the hold to be lost and prints
//! `lost REASON`, then `write N`), with a client speaking etcd v3 (`Protocol::V3`).

use std::io::Write;
use std::time::Duration;

macro_rules! hold {
    ($ml:ident, $url:expr, $key:expr, $node:expr, $ttl:expr) => {{
        let etcd = $ml::Etcd::builder([$url])
            .protocol($ml::Protocol::V3)
            .build()
            .expect("a v3 client");
        let lock =
            $ml::Microlock::new(&etcd, $key, $node, Duration::from_secs($ttl)).expect("config");
        let mut guard = lock.guard(Duration::from_secs(30)).await.expect("acquired");
        let token = guard.token();
        say(&format!("token {token}"));
        let reason = guard.lost().await;
        say(&format!("lost {reason:?}"));
        say(&format!("write {token}"));
    }};
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [adapter, url, key, node, ttl] = args.as_slice() else {
        eprintln!("usage: holder_v3 ADAPTER URL KEY NODE_ID TTL_SECS");
        std::process::exit(2);
    };
    let ttl: u64 = ttl.parse().expect("TTL_SECS");
    match adapter.as_str() {
        "microlock_tokio" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async { hold!(microlock_tokio, url.as_str(), key, node, ttl) }),
        "microlock_async_std" => async_std::task::block_on(async {
            hold!(microlock_async_std, url.as_str(), key, node, ttl)
        }),
        other => {
            eprintln!("unknown adapter {other}");
            std::process::exit(2);
        }
    }
}
