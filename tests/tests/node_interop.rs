//! A Node.js process running the original microlock (1.2.1, on node-etcd 7.0.0) and a Rust
//! process running microlock-tokio share one lock on a real etcd: each sees the other's hold,
//! errors and events, because both write exactly the same key, value and TTL. Also over
//! mutual TLS (node-etcd's `ca`, `cert` and `key` options).
//!
//! One adapter is enough here: both adapters send what the same proto machine decides (the
//! conformance suite checks they behave identically).

use std::time::{Duration, Instant};

use microlock_tests::etcd::{unique_key, EtcdServer};
use microlock_tests::inspect;
use microlock_tests::node::{Answer, NodePeer, PeerOptions};
use microlock_tests::tls;
use microlock_tokio::{Error, Etcd, Event, Microlock};

const TTL: Duration = Duration::from_secs(5);
const PATIENCE: Duration = Duration::from_secs(20);

async fn next_event(events: &mut microlock_tokio::Events) -> Event {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
}

/// Waits until etcd counts `n` watchers (a Node.js watcher is parked before anything changes).
async fn watchers_become(url: &str, n: u64) {
    let until = Instant::now() + PATIENCE;
    loop {
        let u = url.to_owned();
        let now = tokio::task::spawn_blocking(move || inspect::watchers(&u))
            .await
            .unwrap();
        if now == n {
            return;
        }
        assert!(Instant::now() < until, "watchers stayed {now}, never {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs a blocking call to the Node.js peer off the runtime's threads.
async fn node<T: Send + 'static>(
    peer: &mut Option<NodePeer>,
    f: impl FnOnce(&mut NodePeer) -> T + Send + 'static,
) -> T {
    let mut p = peer.take().expect("peer");
    let (p, out) = tokio::task::spawn_blocking(move || {
        let out = f(&mut p);
        (p, out)
    })
    .await
    .expect("node call panicked");
    *peer = Some(p);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_rust_share_one_lock_both_ways() {
    let server = EtcdServer::start();
    let url = server.client_url();
    let key = unique_key("node-interop");
    let mut js = Some(NodePeer::start(&url, &key, "node-js", TTL.as_secs()));
    watchers_become(&url, 1).await; // microlock's watcher is parked
    let etcd = Etcd::new([url.as_str()]).unwrap();
    let rust = Microlock::new(&etcd, &key, "node-rust", TTL).unwrap();
    let mut events = rust.events();
    watchers_become(&url, 2).await;

    // Node.js holds it: Rust sees the hold, is refused, and cannot release or renew it.
    assert_eq!(node(&mut js, |p| p.lock()).await, Answer::Ok);
    assert_eq!(node(&mut js, |p| p.event()).await, "locked");
    match next_event(&mut events).await {
        Event::Locked { holder, .. } => assert_eq!(holder, "node-js"),
        other => panic!("expected Locked by node-js, got {other:?}"),
    }
    let stored = inspect::node(&url, &key).expect("Node.js wrote the key");
    assert_eq!(stored["value"], "node-js");
    assert_eq!(stored["ttl"], 5);
    assert!(matches!(
        rust.lock().await,
        Err(Error::AlreadyLocked { .. })
    ));
    assert!(matches!(
        rust.unlock().await,
        Err(Error::LockNotOwned { .. })
    ));
    assert!(matches!(
        rust.renew().await,
        Err(Error::LockNotOwned { .. })
    ));
    assert_eq!(inspect::value(&url, &key).as_deref(), Some("node-js"));

    // A Rust waiter takes it the moment Node.js releases it.
    let waiter = {
        let etcd = etcd.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let lock = Microlock::new(&etcd, &key, "node-rust", TTL).unwrap();
            let fence = lock.acquire(PATIENCE).await;
            (lock, fence)
        })
    };
    watchers_become(&url, 3).await; // the waiter is parked in its watch
    assert_eq!(node(&mut js, |p| p.unlock()).await, Answer::Ok);
    let (waiter, fence) = waiter.await.unwrap();
    let fence = fence.expect("the Rust waiter acquires after the Node.js release");
    match next_event(&mut events).await {
        Event::Unlocked {
            previous_holder,
            expired,
        } => {
            assert_eq!(previous_holder.as_deref(), Some("node-js"));
            assert!(!expired);
        }
        other => panic!("expected Unlocked, got {other:?}"),
    }
    assert_eq!(node(&mut js, |p| p.event()).await, "unlocked");
    // microlock (Node.js) reports the Rust hold as `locked`.
    assert_eq!(node(&mut js, |p| p.event()).await, "locked");

    // Rust holds it: Node.js is refused and cannot release or renew it.
    let stored = inspect::node(&url, &key).expect("Rust wrote the key");
    assert_eq!(stored["value"], "node-rust");
    assert_eq!(stored["ttl"], 5);
    assert_eq!(stored["createdIndex"].as_u64(), Some(fence.token()));
    assert_eq!(node(&mut js, |p| p.lock()).await, Answer::AlreadyLocked);
    assert_eq!(node(&mut js, |p| p.unlock()).await, Answer::LockNotOwned);
    assert_eq!(node(&mut js, |p| p.renew()).await, Answer::LockNotOwned);
    assert_eq!(inspect::value(&url, &key).as_deref(), Some("node-rust"));

    // The Rust release is a compare-and-delete, which microlock (Node.js) reports as `unlocked`.
    waiter.unlock().await.unwrap();
    assert_eq!(node(&mut js, |p| p.event()).await, "unlocked");
    assert_eq!(inspect::value(&url, &key), None);
    assert_eq!(node(&mut js, |p| p.lock()).await, Answer::Ok);
    drop(js);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_is_one_owner_across_languages_and_expiry_is_seen() {
    let server = EtcdServer::start();
    let url = server.client_url();
    let key = unique_key("node-interop-id");
    let etcd = Etcd::new([url.as_str()]).unwrap();

    // The same node id in both languages is one owner, as in microlock: Node.js renews and
    // releases what Rust took.
    let mut js = Some(NodePeer::start(&url, &key, "shared-id", 1));
    let rust = Microlock::new(&etcd, &key, "shared-id", TTL).unwrap();
    rust.lock().await.unwrap();
    assert_eq!(node(&mut js, |p| p.lock()).await, Answer::AlreadyLocked);
    assert_eq!(node(&mut js, |p| p.renew()).await, Answer::Ok);
    assert_eq!(node(&mut js, |p| p.unlock()).await, Answer::Ok);
    assert_eq!(inspect::value(&url, &key), None);
    assert!(matches!(
        rust.unlock().await,
        Err(Error::LockNotOwned { .. })
    ));

    // A Node.js hold that runs out (TTL 1 s, never renewed) is an expiry to Rust, which can
    // then take the lock.
    let watcher = Microlock::new(&etcd, &key, "node-rust", TTL).unwrap();
    let mut events = watcher.events();
    assert_eq!(node(&mut js, |p| p.lock()).await, Answer::Ok);
    match next_event(&mut events).await {
        Event::Locked { holder, .. } => assert_eq!(holder, "shared-id"),
        other => panic!("expected Locked, got {other:?}"),
    }
    match next_event(&mut events).await {
        Event::Unlocked {
            previous_holder,
            expired,
        } => {
            assert_eq!(previous_holder.as_deref(), Some("shared-id"));
            assert!(expired, "the Node.js hold expired");
        }
        other => panic!("expected Unlocked, got {other:?}"),
    }
    watcher
        .lock()
        .await
        .expect("free after the Node.js hold expired");
    assert_eq!(node(&mut js, |p| p.lock()).await, Answer::AlreadyLocked);
}

/// The same lock over mutual TLS: node-etcd with `{ ca, cert, key }` and microlock-tokio with
/// `Etcd::builder(..).ca_pem(..).client_cert_pem(..)` talk https to one etcd that demands a
/// client certificate; the test watches over its plain side channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_rust_share_a_lock_over_mutual_tls() {
    let pki = tls::pki();
    let server = tokio::task::spawn_blocking(|| EtcdServer::start_tls(tls::pki()))
        .await
        .unwrap();
    let url = server.client_url(); // plain: the test's own reads and watcher counts
    let tls_url = server.tls_client_url().expect("a TLS etcd");
    let key = unique_key("node-interop-tls");
    let mut js = Some(
        tokio::task::spawn_blocking({
            let (tls_url, key) = (tls_url.clone(), key.clone());
            move || {
                NodePeer::start_with(
                    &tls_url,
                    &key,
                    "node-js",
                    TTL.as_secs(),
                    &PeerOptions::mutual_tls(tls::pki()),
                )
            }
        })
        .await
        .unwrap(),
    );
    watchers_become(&url, 1).await; // microlock's watcher is parked, over TLS
    let etcd = Etcd::builder([tls_url.as_str()])
        .ca_pem(pki.ca_pem())
        .client_cert_pem(pki.client_cert_pem(), pki.client_key_pem())
        .build()
        .expect("valid TLS settings");
    let rust = Microlock::new(&etcd, &key, "node-rust", TTL).unwrap();
    let mut events = rust.events();
    watchers_become(&url, 2).await;

    // Node.js holds it: Rust sees the hold and is refused.
    assert_eq!(node(&mut js, |p| p.lock()).await, Answer::Ok);
    assert_eq!(node(&mut js, |p| p.event()).await, "locked");
    match next_event(&mut events).await {
        Event::Locked { holder, .. } => assert_eq!(holder, "node-js"),
        other => panic!("expected Locked by node-js, got {other:?}"),
    }
    let stored = inspect::node(&url, &key).expect("Node.js wrote the key over TLS");
    assert_eq!(stored["value"], "node-js");
    assert_eq!(stored["ttl"], 5);
    assert!(matches!(
        rust.lock().await,
        Err(Error::AlreadyLocked { .. })
    ));
    assert!(matches!(
        rust.unlock().await,
        Err(Error::LockNotOwned { .. })
    ));

    // A Rust waiter takes it the moment Node.js releases it.
    let waiter = {
        let etcd = etcd.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let lock = Microlock::new(&etcd, &key, "node-rust", TTL).unwrap();
            let fence = lock.acquire(PATIENCE).await;
            (lock, fence)
        })
    };
    watchers_become(&url, 3).await; // the waiter is parked in its watch
    assert_eq!(node(&mut js, |p| p.unlock()).await, Answer::Ok);
    let (waiter, fence) = waiter.await.unwrap();
    let fence = fence.expect("the Rust waiter acquires after the Node.js release");
    match next_event(&mut events).await {
        Event::Unlocked {
            previous_holder,
            expired,
        } => {
            assert_eq!(previous_holder.as_deref(), Some("node-js"));
            assert!(!expired);
        }
        other => panic!("expected Unlocked, got {other:?}"),
    }
    assert_eq!(node(&mut js, |p| p.event()).await, "unlocked");
    assert_eq!(node(&mut js, |p| p.event()).await, "locked");

    // Rust holds it: Node.js is refused and cannot release or renew it.
    let stored = inspect::node(&url, &key).expect("Rust wrote the key over TLS");
    assert_eq!(stored["value"], "node-rust");
    assert_eq!(stored["createdIndex"].as_u64(), Some(fence.token()));
    assert_eq!(node(&mut js, |p| p.lock()).await, Answer::AlreadyLocked);
    assert_eq!(node(&mut js, |p| p.unlock()).await, Answer::LockNotOwned);
    assert_eq!(node(&mut js, |p| p.renew()).await, Answer::LockNotOwned);

    // The Rust release reaches Node.js as `unlocked`; then Node.js takes it again.
    waiter.unlock().await.unwrap();
    assert_eq!(node(&mut js, |p| p.event()).await, "unlocked");
    assert_eq!(inspect::value(&url, &key), None);
    assert_eq!(node(&mut js, |p| p.lock()).await, Answer::Ok);
    drop(js);

    // The https URL really demands a certificate: a Node.js client without one fails (an
    // error, not contention) and writes nothing.
    let other_key = unique_key("node-interop-tls-nocert");
    let mut anonymous = Some(
        tokio::task::spawn_blocking({
            let (tls_url, other_key) = (tls_url.clone(), other_key.clone());
            move || {
                let options = PeerOptions {
                    ca_file: Some(tls::pki().ca.path.clone()),
                    ..PeerOptions::default()
                };
                NodePeer::start_with(&tls_url, &other_key, "node-anon", 5, &options)
            }
        })
        .await
        .unwrap(),
    );
    let answer = node(&mut anonymous, |p| p.lock()).await;
    assert!(matches!(answer, Answer::Error(_)), "{answer:?}");
    assert_eq!(inspect::node(&url, &other_key), None);
}
