//! A lock holder in its own process, for tests that pause it (SIGSTOP) past its TTL.
//!
//! `holder ADAPTER URL KEY NODE_ID TTL_SECS [V2|V3]` takes the lock with a guard (auto-renewed),
//! prints `token N`, then waits for the hold to be lost and prints `lost REASON`, and then,
//! like a buggy client that ignores the loss, `write N` (a write attempt with its stale token,
//! which the test's fenced store must refuse). ADAPTER: `microlock_tokio` or
//! `microlock_async_std`; the protocol (default V2) is `Protocol`'s `Debug` name.

use std::io::Write;
use std::time::Duration;

macro_rules! hold {
    ($ml:ident, $url:expr, $key:expr, $node:expr, $ttl:expr, $v3:expr) => {{
        let protocol = if $v3 {
            $ml::Protocol::V3
        } else {
            $ml::Protocol::V2
        };
        let etcd = $ml::Etcd::builder([$url])
            .protocol(protocol)
            .build()
            .expect("endpoint");
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
    let (adapter, url, key, node, ttl, v3) = match args.as_slice() {
        [adapter, url, key, node, ttl] => (adapter, url, key, node, ttl, false),
        [adapter, url, key, node, ttl, protocol] if protocol == "V2" || protocol == "V3" => {
            (adapter, url, key, node, ttl, protocol == "V3")
        }
        _ => {
            eprintln!("usage: holder ADAPTER URL KEY NODE_ID TTL_SECS [V2|V3]");
            std::process::exit(2);
        }
    };
    let ttl: u64 = ttl.parse().expect("TTL_SECS");
    match adapter.as_str() {
        "microlock_tokio" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async { hold!(microlock_tokio, url.as_str(), key, node, ttl, v3) }),
        "microlock_async_std" => async_std::task::block_on(async {
            hold!(microlock_async_std, url.as_str(), key, node, ttl, v3)
        }),
        other => {
            eprintln!("unknown adapter {other}");
            std::process::exit(2);
        }
    }
}
