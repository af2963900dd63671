//! microlock on etcd v3 and etcd's own `etcdctl lock` (Go's `concurrency.Mutex`) share one lock:
//! they exclude each other in both directions and wait in one FIFO queue. Also: a v2 client on
//! an etcd without the v2 API gets the typed error that names the fix.
//!
//! Real etcd (`$ETCD_BIN`: 3.4 or 3.5) and the matching real `etcdctl` (see
//! `microlock_tests::etcdctl`), through both adapters: the same cases (`interop_suite!`) for
//! microlock-tokio and microlock-async-std. Every wait is on an event (a lock granted, a key
//! appearing in the queue, a process exiting) with a generous stated bound.

use std::sync::Arc;
use std::time::Duration;

use microlock_tests::etcd::{unique_key, EtcdServer};
use microlock_tests::etcdctl::{wait_watchers, watchers, Etcdctl};

/// Anything etcd or etcdctl should do quickly, on a busy 2-core machine.
const BOUND: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(10);

macro_rules! interop_suite {
    ($module:ident, $ml:ident, $rt:path, $test:meta) => {
        mod $module {
            use super::*;
            use $ml::{Error, Etcd, Microlock, Protocol};
            use $rt as rt;

            fn v3(server: &EtcdServer) -> Etcd {
                Etcd::builder([server.client_url()])
                    .protocol(Protocol::V3)
                    .build()
                    .expect("a valid v3 client")
            }

            /// `etcdctl lock NAME` holding: our try-lock is refused with `AlreadyLocked`, and
            /// our waiting acquire gets the lock when etcdctl lets go (not before).
            #[$test]
            async fn etcdctl_holds_we_wait() {
                let server = own_etcd().await;
                let ctl = Etcdctl::for_server(&server);
                let name = unique_key("ctl-holds");
                let mut held = ctl.lock(&name);
                let h = rt::blocking(move || {
                    let h = held.wait_held(BOUND);
                    (held, h)
                })
                .await;
                let (mut holder, h) = h;
                assert_eq!(h.key.rsplit_once('/').map(|(n, _)| n), Some(name.as_str()));
                let etcd = v3(&server);
                let ours = Microlock::new(&etcd, &name, "rust-node", TTL).unwrap();
                match ours.lock().await {
                    Err(Error::AlreadyLocked { .. }) => {}
                    other => panic!("try-lock while etcdctl holds: {other:?}"),
                }
                // The try-lock left no key behind: only etcdctl's is there.
                let queue = rt::blocking({
                    let (ctl, name) = (ctl.clone(), name.clone());
                    move || ctl.lock_queue(&name)
                })
                .await;
                assert_eq!(queue.len(), 1, "{queue:?}");
                let before = rt::blocking({
                    let s = server.clone();
                    move || watchers(&s)
                })
                .await;
                let waiter = rt::spawn_handle(async move {
                    let fence = ours.acquire(BOUND).await;
                    (ours, fence)
                });
                // Our waiter is in the queue, watching etcdctl's key.
                let (c, n) = (ctl.clone(), name.clone());
                rt::blocking(move || c.wait_queue_len(&n, 2, BOUND)).await;
                wait_for_watchers(&server, before + 1).await;
                let status = rt::blocking(move || holder.release_and_wait(BOUND)).await;
                assert!(status.success(), "etcdctl exit: {status:?}");
                let (ours, fence) = rt::timeout(BOUND, waiter)
                    .await
                    .expect("our acquire ends within the bound");
                let fence = fence.expect("we get the lock once etcdctl lets go");
                assert!(fence.token() as i64 > h.revision, "fencing tokens increase");
                let holder = ours.read().await.unwrap().expect("held");
                assert_eq!(holder.node_id, "rust-node");
                ours.unlock().await.unwrap();
            }

            /// We hold: `etcdctl lock NAME` waits (its key queued behind ours) until we unlock.
            #[$test]
            async fn we_hold_etcdctl_waits() {
                let server = own_etcd().await;
                let ctl = Etcdctl::for_server(&server);
                let name = unique_key("we-hold");
                let etcd = v3(&server);
                let ours = Microlock::new(&etcd, &name, "rust-node", TTL).unwrap();
                let fence = ours.lock().await.expect("free lock");
                let before = rt::blocking({
                    let s = server.clone();
                    move || watchers(&s)
                })
                .await;
                let mut theirs = ctl.lock(&name);
                // etcdctl waits: its key is second and it watches ours.
                let (c, n) = (ctl.clone(), name.clone());
                let queue = rt::blocking(move || c.wait_queue_len(&n, 2, BOUND)).await;
                assert_eq!(queue[0].create_revision as u64, fence.token());
                assert_eq!(queue[0].value, b"rust-node");
                wait_for_watchers(&server, before + 1).await;
                assert!(theirs.held().is_none(), "etcdctl got a held lock");
                ours.unlock().await.expect("unlock");
                let h = rt::blocking(move || {
                    let h = theirs.wait_held(BOUND);
                    theirs.release_and_wait(BOUND);
                    h
                })
                .await;
                assert!(h.revision as u64 > fence.token());
            }

            /// One FIFO queue: we hold; etcdctl E1 queues; our W2 queues; etcdctl E3 queues.
            /// They are served E1, W2, E3.
            #[$test]
            async fn a_mixed_queue_is_served_in_arrival_order() {
                let server = own_etcd().await;
                let ctl = Etcdctl::for_server(&server);
                let name = unique_key("mixed");
                let etcd = v3(&server);
                let first = Microlock::new(&etcd, &name, "rust-1", TTL).unwrap();
                first.lock().await.expect("free lock");
                let queued = |n: usize| {
                    let (c, name) = (ctl.clone(), name.clone());
                    rt::blocking(move || c.wait_queue_len(&name, n, BOUND))
                };
                let mut e1 = ctl.lock(&name);
                queued(2).await;
                let w2 = Microlock::new(&etcd, &name, "rust-2", TTL).unwrap();
                let w2 = rt::spawn_handle(async move {
                    let fence = w2.acquire(BOUND * 2).await;
                    (w2, fence)
                });
                queued(3).await;
                let mut e3 = ctl.lock(&name);
                let queue = queued(4).await;
                assert_eq!(queue[2].value, b"rust-2", "{queue:?}");
                // Served in order.
                first.unlock().await.unwrap();
                let e1 = rt::blocking(move || {
                    e1.wait_held(BOUND);
                    e1.release_and_wait(BOUND)
                })
                .await;
                assert!(e1.success());
                let (w2, fence) = rt::timeout(BOUND, w2).await.expect("w2 served");
                fence.expect("w2 gets the lock second");
                assert!(e3.held().is_none(), "e3 was served before w2 let go");
                w2.unlock().await.unwrap();
                rt::blocking(move || {
                    e3.wait_held(BOUND);
                    e3.release_and_wait(BOUND)
                })
                .await;
            }

            /// A default (v2) client on an etcd without the v2 API: the typed error, at once,
            /// naming the member and the fix; never contention.
            #[$test]
            async fn a_v2_client_on_an_etcd_without_v2_gets_the_typed_error() {
                let server = rt::blocking(EtcdServer::start_v3_only).await;
                let etcd = Etcd::new([server.client_url()]).unwrap();
                let lock = Microlock::new(&etcd, &unique_key("no-v2"), "n", TTL).unwrap();
                match rt::timeout(BOUND, lock.lock())
                    .await
                    .expect("answers at once")
                {
                    Err(Error::V2Unavailable { endpoint }) => {
                        assert_eq!(endpoint, server.client_url());
                        let message = Error::V2Unavailable { endpoint }.to_string();
                        assert!(message.contains("Protocol::V3"), "{message}");
                    }
                    other => panic!("expected V2Unavailable, got {other:?}"),
                }
                // The same etcd through v3 works.
                let v3 = v3(&server);
                let lock = Microlock::new(&v3, &unique_key("no-v2"), "n", TTL).unwrap();
                lock.lock().await.expect("v3 locks");
                lock.unlock().await.unwrap();
            }

            /// Until etcd counts `n` watchers (a waiter of either kind watches its
            /// predecessor's key: this is when it waits).
            async fn wait_for_watchers(server: &Arc<EtcdServer>, n: u64) {
                let server = server.clone();
                rt::blocking(move || wait_watchers(&server, n, BOUND)).await;
            }

            async fn own_etcd() -> Arc<EtcdServer> {
                Arc::new(rt::blocking(EtcdServer::start).await)
            }
        }
    };
}

interop_suite!(
    tokio_interop,
    microlock_tokio,
    microlock_tests::rt::tokio,
    tokio::test
);
interop_suite!(
    async_std_interop,
    microlock_async_std,
    microlock_tests::rt::async_std,
    async_std::test
);
