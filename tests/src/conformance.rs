//! The conformance suite: every integration case, written once, run against every adapter.
//!
//! An adapter's test file instantiates it:
//! ```text
//! microlock_tests::conformance_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test);
//! microlock_tests::conformance_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test, tls);
//! microlock_tests::conformance_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test, v3);
//! ```
//! `$ml` is the adapter crate (it must export `Etcd`, `Microlock`, `Config`, `Error`, `Event`,
//! `Protocol` with the same API), `$rt` a module of [`crate::rt`], `$test` the runtime's test
//! attribute.
//!
//! # Flavours
//! - plain (module `conformance`): the client under test talks HTTP to
//!   [`crate::etcd::shared`] (and to its own servers and clusters where a case needs them).
//! - `tls` (module `conformance_tls`): the **whole** v2 suite again, the client under test
//!   talking mutual TLS to a TLS etcd ([`crate::tls::shared_tls`], `EtcdServer::start_tls`,
//!   `EtcdCluster::start_tls`, certificates from [`crate::tls::pki`]), built with
//!   `Etcd::builder(endpoints).ca_pem(..).client_cert_pem(..)`; plus a few cases of its own
//!   (refused certificates, wrong schemes: failures, never contention).
//! - `v3` (module `conformance_v3`): the client under test speaks etcd v3 through its JSON
//!   gateway (`Etcd::builder(endpoints).protocol(Protocol::V3)`), plain HTTP, on the same
//!   servers as plain.
//!
//! # What each case runs on
//! Most cases are the same for both protocols: where they read what is stored, they go through
//! the protocol's helpers — `holder(key)` / `holder_at(url, key)` (the node id holding),
//! `hold(key)` (node id and fencing token as stored), `stored(key)` (anything stored, `None`
//! when free), `watchers(url)`, `assert_no_watch_left(url)`, `bounded_waiting(url, keys)`,
//! `EXPIRY_IS_TOLD`, `PROTOCOL`, `HOLDER_EXE` — defined by `@v2` (flavours plain and tls: v2
//! nodes through [`crate::inspect::node`]) and by `@v3` (the `KEY/<lease hex>` keys through
//! [`crate::inspect::v3_keys`]). `@v2` and `@v3` also hold the cases that only hold on their
//! protocol (see their headers); the v3 ones are named `v3_*`.
//!
//! Every case builds the client under test through the flavour's helpers: `client()` (the
//! shared etcd), `client_for(endpoints)`, `discovering_client(endpoint)`, with endpoints from
//! `client_url()`, `client_url_of(&server)`, `client_urls_of(&cluster)` or `SCHEME`; servers
//! from `own_etcd()` and `own_cluster(n)`. What the test itself reads or writes directly
//! (`inspect::...`, watcher counts) goes to `url()` / `server.client_url()`: plain HTTP in
//! every flavour (a TLS etcd keeps a plain side channel). Only the `holder` process of
//! `paused_holder_loses_the_lock...` (a separate binary taking a URL and the protocol: `holder`)
//! stays on plain HTTP.

/// Expands to one `#[test]` per conformance case for the given adapter (add `, tls` for the
/// mutual-TLS flavour, `, v3` for etcd v3: see the module docs).
#[macro_export]
macro_rules! conformance_suite {
    ($ml:ident, $rt:path, $test:meta) => {
        $crate::conformance_suite!(@suite conformance, plain, $ml, $rt, $test);
    };
    ($ml:ident, $rt:path, $test:meta, tls) => {
        $crate::conformance_suite!(@suite conformance_tls, tls, $ml, $rt, $test);
    };
    ($ml:ident, $rt:path, $test:meta, v3) => {
        $crate::conformance_suite!(@suite conformance_v3, v3, $ml, $rt, $test);
    };

    // ----- the plain flavour: HTTP ---------------------------------------------------------
    (@flavour plain, $ml:ident, $test:meta) => {
        /// The scheme of the client under test's endpoints.
        const SCHEME: &str = "http";

        /// The shared etcd's URL for the test's own reads and writes (plain HTTP).
        fn url() -> String {
            etcd::shared().client_url()
        }

        /// The shared etcd's URL for the client under test.
        fn client_url() -> String {
            url()
        }

        /// The client under test, on these endpoints.
        fn client_for(endpoints: Vec<String>) -> Etcd {
            Etcd::new(endpoints).expect("valid endpoints")
        }

        /// The client under test, on one endpoint, discovering the other members.
        fn discovering_client(endpoint: String) -> Etcd {
            Etcd::new([endpoint])
                .expect("valid endpoint")
                .with_member_discovery(true)
        }

        /// A fresh single-member etcd, so that its watcher count is this test's alone.
        async fn own_etcd() -> etcd::EtcdServer {
            rt::blocking(etcd::EtcdServer::start).await
        }

        /// A fresh `n`-member cluster.
        async fn own_cluster(n: usize) -> etcd::EtcdCluster {
            rt::blocking(move || etcd::EtcdCluster::start(n)).await
        }

        /// `server`'s URL for the client under test.
        fn client_url_of(server: &etcd::EtcdServer) -> String {
            server.client_url()
        }

        /// The cluster's URLs for the client under test, in member order.
        fn client_urls_of(cluster: &etcd::EtcdCluster) -> Vec<String> {
            cluster.client_urls()
        }

        /// What a TCP proxy in front of the shared etcd forwards to.
        fn proxy_target() -> String {
            url()
        }

        /// The client under test's endpoint through a TCP proxy whose URL is `proxy_url`.
        fn through_proxy(proxy_url: &str) -> String {
            proxy_url.to_owned()
        }
    };

    // ----- the tls flavour: mutual TLS -----------------------------------------------------
    (@flavour tls, $ml:ident, $test:meta) => {
        /// The scheme of the client under test's endpoints.
        const SCHEME: &str = "https";

        /// The shared TLS etcd's plain side channel, for the test's own reads and writes.
        fn url() -> String {
            $crate::tls::shared_tls().client_url()
        }

        /// The shared TLS etcd's https URL, for the client under test.
        fn client_url() -> String {
            client_url_of($crate::tls::shared_tls())
        }

        /// The client under test, on these endpoints: it trusts the test CA and presents the
        /// test client certificate.
        fn client_for(endpoints: Vec<String>) -> Etcd {
            let pki = $crate::tls::pki();
            Etcd::builder(endpoints)
                .ca_pem(pki.ca_pem())
                .client_cert_pem(pki.client_cert_pem(), pki.client_key_pem())
                .build()
                .expect("a valid TLS client")
        }

        /// The client under test, on one endpoint, discovering the other members (a TLS
        /// member advertises only its https URL).
        fn discovering_client(endpoint: String) -> Etcd {
            let pki = $crate::tls::pki();
            Etcd::builder([endpoint])
                .ca_pem(pki.ca_pem())
                .client_cert_pem(pki.client_cert_pem(), pki.client_key_pem())
                .member_discovery(true)
                .build()
                .expect("a valid TLS client")
        }

        /// A fresh single-member TLS etcd, so that its watcher count is this test's alone.
        async fn own_etcd() -> etcd::EtcdServer {
            rt::blocking(|| etcd::EtcdServer::start_tls($crate::tls::pki())).await
        }

        /// A fresh `n`-member TLS cluster (client and peer TLS).
        async fn own_cluster(n: usize) -> etcd::EtcdCluster {
            rt::blocking(move || etcd::EtcdCluster::start_tls(n, $crate::tls::pki())).await
        }

        /// `server`'s https URL, for the client under test.
        fn client_url_of(server: &etcd::EtcdServer) -> String {
            server.tls_client_url().expect("a TLS etcd")
        }

        /// The cluster's https URLs, for the client under test, in member order.
        fn client_urls_of(cluster: &etcd::EtcdCluster) -> Vec<String> {
            cluster.tls_client_urls()
        }

        /// What a TCP proxy in front of the shared TLS etcd forwards to: its https port (the
        /// proxy forwards bytes; TLS is end to end).
        fn proxy_target() -> String {
            client_url().replacen("https://", "", 1)
        }

        /// The client under test's endpoint through a TCP proxy whose URL is `proxy_url`: the
        /// same port, spoken to in TLS (the server certificate names 127.0.0.1, as does the
        /// proxy URL).
        fn through_proxy(proxy_url: &str) -> String {
            proxy_url.replacen("http://", "https://", 1)
        }

        /// Locks with `etcd` must fail, and never as contention (nor succeed).
        async fn assert_refused(etcd: &Etcd, what: &str) {
            let key = unique_key("tls-refused");
            let a = Microlock::with_config(
                etcd,
                Config::new(&key, "node-a", TTL)
                    .unwrap()
                    .with_request_timeout(Duration::from_secs(5)),
            )
            .unwrap();
            let outcome = rt::timeout(PATIENCE, a.lock())
                .await
                .unwrap_or_else(|| panic!("{what}: lock() did not finish within {PATIENCE:?}"));
            match outcome {
                Err(Error::AlreadyLocked { .. }) | Err(Error::LockNotOwned { .. }) | Ok(_) => {
                    panic!("{what}: expected a failure, not contention or success: {outcome:?}")
                }
                Err(_) => {}
            }
            assert_eq!(inspect::node(&url(), &key), None, "{what}: nothing written");
        }

        // ----- TLS only: what must be refused ----------------------------------------------

        #[$test]
        async fn tls_without_a_client_certificate_is_refused_never_contention() {
            let pki = $crate::tls::pki();
            let etcd = Etcd::builder([client_url()])
                .ca_pem(pki.ca_pem())
                .build()
                .expect("a valid TLS client");
            assert_refused(&etcd, "no client certificate").await;
        }

        #[$test]
        async fn tls_with_an_expired_or_foreign_client_certificate_is_refused() {
            let pki = $crate::tls::pki();
            for (what, id) in [
                ("expired client certificate", &pki.expired_client),
                ("client certificate of another CA", &pki.foreign_client),
            ] {
                let etcd = Etcd::builder([client_url()])
                    .ca_pem(pki.ca_pem())
                    .client_cert_pem(&id.cert.pem[..], &id.key.pem[..])
                    .build()
                    .expect("a valid TLS client");
                assert_refused(&etcd, what).await;
            }
        }

        #[$test]
        async fn tls_with_an_untrusted_or_misnamed_server_is_refused() {
            let pki = $crate::tls::pki();
            // The server's certificate is not signed by the CA the client trusts.
            let etcd = Etcd::builder([client_url()])
                .ca_pem(&pki.other_ca.pem[..])
                .client_cert_pem(pki.client_cert_pem(), pki.client_key_pem())
                .build()
                .expect("a valid TLS client");
            assert_refused(&etcd, "untrusted server certificate").await;
            // The server's certificate names 127.0.0.1 only, not localhost.
            let port = $crate::tls::shared_tls().tls_client_port().expect("TLS");
            let etcd = client_for(vec![format!("https://localhost:{port}")]);
            assert_refused(&etcd, "server certificate for another name").await;
        }

        #[$test]
        async fn tls_and_plain_http_on_the_wrong_port_are_refused() {
            let server = $crate::tls::shared_tls();
            // TLS to the plain port: etcd answers the ClientHello with an HTTP 400.
            let etcd = client_for(vec![format!("https://127.0.0.1:{}", server.client_port())]);
            assert_refused(&etcd, "TLS to the plain port").await;
            // Plain HTTP to the TLS port: etcd answers `400 Client sent an HTTP request to an
            // HTTPS server.`
            let port = server.tls_client_port().expect("TLS");
            let etcd = Etcd::new([format!("http://127.0.0.1:{port}")]).expect("valid endpoint");
            assert_refused(&etcd, "plain HTTP to the TLS port").await;
        }
    };

    // ----- the v3 flavour: etcd v3 through its JSON gateway, plain HTTP ---------------------
    (@flavour v3, $ml:ident, $test:meta) => {
        use $ml::Protocol;

        /// The scheme of the client under test's endpoints.
        const SCHEME: &str = "http";

        /// The shared etcd's URL for the test's own reads and writes (plain HTTP).
        fn url() -> String {
            etcd::shared().client_url()
        }

        /// The shared etcd's URL for the client under test.
        fn client_url() -> String {
            url()
        }

        /// The client under test, on these endpoints: it speaks etcd v3 (`Protocol::V3`).
        fn client_for(endpoints: Vec<String>) -> Etcd {
            Etcd::builder(endpoints)
                .protocol(Protocol::V3)
                .build()
                .expect("a valid v3 client")
        }

        /// The client under test, on one endpoint, asked to discover the other members (v3
        /// has no member discovery: it keeps to the endpoints it was given).
        fn discovering_client(endpoint: String) -> Etcd {
            Etcd::builder([endpoint])
                .protocol(Protocol::V3)
                .member_discovery(true)
                .build()
                .expect("a valid v3 client")
        }

        /// A fresh single-member etcd, so that its watcher count is this test's alone.
        async fn own_etcd() -> etcd::EtcdServer {
            rt::blocking(etcd::EtcdServer::start).await
        }

        /// A fresh `n`-member cluster.
        async fn own_cluster(n: usize) -> etcd::EtcdCluster {
            rt::blocking(move || etcd::EtcdCluster::start(n)).await
        }

        /// `server`'s URL for the client under test.
        fn client_url_of(server: &etcd::EtcdServer) -> String {
            server.client_url()
        }

        /// The cluster's URLs for the client under test, in member order.
        fn client_urls_of(cluster: &etcd::EtcdCluster) -> Vec<String> {
            cluster.client_urls()
        }

        /// What a TCP proxy in front of the shared etcd forwards to.
        fn proxy_target() -> String {
            url()
        }

        /// The client under test's endpoint through a TCP proxy whose URL is `proxy_url`.
        fn through_proxy(proxy_url: &str) -> String {
            proxy_url.to_owned()
        }
    };

    // ----- each protocol's layout helpers and its own cases ---------------------------------
    (@only plain, $ml:ident, $test:meta) => {
        $crate::conformance_suite!(@v2 $ml, $test);
    };
    (@only tls, $ml:ident, $test:meta) => {
        $crate::conformance_suite!(@v2 $ml, $test);
    };
    (@only v3, $ml:ident, $test:meta) => {
        $crate::conformance_suite!(@v3 $ml, $test);
    };

    // ----- v2 (flavours plain and tls): what the cases read of v2's layout, and the cases
    // only v2 can pass: its node layout (`/KEY` = node id with a TTL field), a node id that
    // owns its hold across processes, `destroy()` leaving the key to its TTL, member discovery
    // (`/v2/members`), the fair queue directory (`_microlock/queue`), a renew asking etcd
    // without a known hold.
    (@v2 $ml:ident, $test:meta) => {
        // v3: an events stream or a waiting acquire holds its watch connection for as long
        // as it waits (a gateway watch is one endless response), so past the watch budget a
        // stream waits for a place that only a stream's end frees: these two cases are v2
        // only (see the README's v2/v3 table).
        /// More watches than their budget (8 `events()` streams, 2 watch connections) never
        /// hold up short requests, which have 2 connections of their own: 20 keys × 3
        /// lock/unlock cycles all complete (bound: PATIENCE; uncontended, well under a
        /// second), and no more than 2 + 2 connections are ever opened. The waiting watches
        /// are not lost: once the watched keys are released, every stream reports it (a
        /// watch that ends hands its connection to the oldest waiting one).
        #[$test]
        async fn bounded_watches_past_their_budget_never_hold_up_short_requests() {
            let proxy = $crate::proxy::CountingProxy::start(&proxy_target());
            let etcd = bounded_client(vec![through_proxy(&proxy.url)], 2, 2);
            let keys: Vec<String> = (0..8).map(|_| unique_key("bounded-watched")).collect();
            let holders: Vec<Microlock> = (keys.iter())
                .map(|key| Microlock::new(&etcd, key, "holder", LONG).unwrap())
                .collect();
            for holder in &holders {
                holder.lock().await.unwrap();
            }
            let watchers: Vec<Microlock> = (keys.iter())
                .map(|key| Microlock::new(&etcd, key, "watcher", LONG).unwrap())
                .collect();
            let mut streams: Vec<_> = watchers.iter().map(Microlock::events).collect();
            for stream in &mut streams {
                // From the read that starts each watch (a short request).
                assert_locked(&next_event(stream).await, "holder");
            }
            // 8 long polls for 2 watch connections: 2 out, 6 waiting.
            let locks: Vec<Microlock> = (0..20)
                .map(|_| {
                    Microlock::new(&etcd, &unique_key("bounded-short"), "node-a", TTL)
                        .unwrap()
                })
                .collect();
            let started = std::time::Instant::now();
            let cycles = locks.iter().map(|lock| async move {
                for _ in 0..3 {
                    lock.lock().await?;
                    lock.unlock().await?;
                }
                Ok::<(), Error>(())
            });
            let results = rt::timeout(PATIENCE, bounded_all(cycles.collect()))
                .await
                .unwrap_or_else(|| panic!("short requests held up for {PATIENCE:?}"));
            for result in &results {
                assert!(result.is_ok(), "{result:?}");
            }
            println!(
                "{}: 60 lock/unlock cycles beside 8 watches (budget 2): {:?}",
                stringify!($ml),
                started.elapsed()
            );
            for holder in &holders {
                holder.unlock().await.unwrap();
            }
            for stream in &mut streams {
                assert_unlocked(&next_event(stream).await, "holder", false);
            }
            assert!(
                proxy.accepted() <= 4,
                "{} connections opened with caps of 2 + 2",
                proxy.accepted()
            );
        }

        /// An `events()` stream whose watch waits for a slot (budget 1, held by another
        /// stream's watch on a quiet key) hears nothing while it waits, then, once the slot
        /// is free, every change it missed, in order: its watch asks from the index it
        /// waited for, and etcd replays from there. Bound: PATIENCE per event.
        #[$test]
        async fn bounded_an_events_stream_past_the_watch_budget_is_late_but_complete() {
            let server = own_etcd().await;
            let url = server.client_url();
            let etcd = bounded_client(vec![client_url_of(&server)], 4, 1);
            let a = Microlock::new(&etcd, "bounded-quiet", "watcher-a", LONG).unwrap();
            let a_events = a.events();
            watchers_become(&url, 1).await; // a's watch has the only slot
            let c = Microlock::new(&etcd, "bounded-busy", "node-c", LONG).unwrap();
            c.lock().await.unwrap();
            let b = Microlock::new(&etcd, "bounded-busy", "watcher-b", LONG).unwrap();
            let mut b_events = b.events();
            // From the read that starts b's watch (a short request).
            assert_locked(&next_event(&mut b_events).await, "node-c");
            // b's watch waits for the slot: etcd does not see it, b hears nothing yet.
            c.unlock().await.unwrap();
            c.lock().await.unwrap();
            c.unlock().await.unwrap();
            assert_eq!(watchers(&url), 1, "b's watch waits for the slot");
            drop(a_events); // a stops watching: its slot goes to b's watch
            assert_unlocked(&next_event(&mut b_events).await, "node-c", false);
            assert_locked(&next_event(&mut b_events).await, "node-c");
            assert_unlocked(&next_event(&mut b_events).await, "node-c", false);
        }

        /// The protocol of the client under test.
        const PROTOCOL: $ml::Protocol = $ml::Protocol::V2;

        /// v2 tells an expiry from a release (etcd's `expire` action): `Unlocked { expired }`.
        const EXPIRY_IS_TOLD: bool = true;

        /// The lock holder process of `paused_holder_loses_the_lock...`.
        const HOLDER_EXE: &str = env!("CARGO_BIN_EXE_holder");

        /// The node id holding `key` at the member at `url` (v2: the value of `/KEY`).
        fn holder_at(url: &str, key: &str) -> Option<String> {
            inspect::value(url, key)
        }

        /// The node id holding `key` on the shared etcd.
        fn holder(key: &str) -> Option<String> {
            holder_at(&url(), key)
        }

        /// The hold of `key` as stored on the shared etcd: node id and fencing token (v2: the
        /// value and `createdIndex` of `/KEY`).
        fn hold(key: &str) -> Option<(String, u64)> {
            let node = inspect::node(&url(), key)?;
            let value = node["value"].as_str().expect("a value").to_owned();
            Some((value, node["createdIndex"].as_u64().expect("a createdIndex")))
        }

        /// What is stored for the lock `key` on the shared etcd, `None` when nothing (v2: the
        /// node `/KEY`).
        fn stored(key: &str) -> Option<inspect::Value> {
            inspect::node(&url(), key)
        }

        /// How many watches the member at `url` serves (v2: long polls, `/v2/stats/store`).
        fn watchers(url: &str) -> u64 {
            inspect::watchers(url)
        }

        /// A waiter took its lock: none of its watches is left at the member at `url` (v2: the
        /// release itself answered its long poll).
        async fn assert_no_watch_left(url: &str) {
            assert_eq!(inspect::watchers(url), 0, "no watch left behind");
        }

        /// How many lockers found one of `keys` held at the member at `url` (v2: the member's
        /// `createFail` count, which every lock attempt on a held key grows by one, whichever
        /// the key).
        fn bounded_waiting(url: &str, _keys: &[&str]) -> u64 {
            bounded_create_fails(url)
        }

        // ----- v2 only: the node layout --------------------------------------------------

        #[$test]
        async fn lock_free_key_succeeds_with_node_layout() {
            let key = unique_key("lock-free");
            let foo = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
            let fence = foo.lock().await.expect("free key locks");
            // The same layout as microlock for Node.js: /KEY = node id, with the TTL.
            let node = inspect::node(&url(), &key).expect("key written");
            assert_eq!(node["key"], format!("/{key}"));
            assert_eq!(node["value"], "node-a");
            assert_eq!(node["ttl"], 5);
            assert_eq!(node["createdIndex"].as_u64(), Some(fence.token()));
        }

        #[$test]
        async fn renew_own_lock_refreshes_ttl_and_keeps_token() {
            let key = unique_key("renew-own");
            let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
            let fence = a.lock().await.unwrap();
            let before = inspect::node(&url(), &key).unwrap();
            let renewed = a.renew().await.expect("own lock renews");
            assert_eq!(renewed.token(), fence.token());
            assert!(renewed.valid_until() >= fence.valid_until());
            let after = inspect::node(&url(), &key).unwrap();
            assert_eq!(after["value"], "node-a");
            assert_eq!(after["createdIndex"], before["createdIndex"]);
            assert!(after["modifiedIndex"].as_u64() > before["modifiedIndex"].as_u64());
            assert_eq!(after["ttl"], 5);
        }

        // ----- v2 only: the node id owns the hold; destroy() leaves the key to its TTL ------

        #[$test]
        async fn a_restarted_node_with_the_same_id_can_renew_and_release() {
            // As in microlock, the node id is the owner: a new client (a restarted process)
            // with the same id may renew and release what the old one took.
            let key = unique_key("same-id");
            let etcd = client();
            let old = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
            let fence = old.lock().await.unwrap();
            old.destroy();
            let new = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
            assert!(!new.is_held(), "nothing is known before etcd is asked");
            assert!(matches!(new.lock().await, Err(Error::AlreadyLocked { .. })));
            let renewed = new.renew().await.expect("renewable by the same node id");
            assert_eq!(renewed.token(), fence.token());
            assert!(new.is_held());
            new.unlock().await.expect("releasable by the same node id");
            assert_eq!(inspect::value(&url(), &key), None);
            assert!(matches!(
                new.unlock().await,
                Err(Error::LockNotOwned { .. })
            ));
            let other = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
            other.lock().await.unwrap();
            // The same id never releases or renews another node's hold.
            assert!(matches!(
                new.unlock().await,
                Err(Error::LockNotOwned { .. })
            ));
            assert!(matches!(new.renew().await, Err(Error::LockNotOwned { .. })));
            assert_eq!(inspect::value(&url(), &key).as_deref(), Some("node-b"));
        }

        #[$test]
        async fn dropping_the_last_subscription_and_destroy_end_streams() {
            let key = unique_key("destroy");
            let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
            let mut events = a.events();
            a.lock().await.unwrap();
            assert_locked(&next_event(&mut events).await, "node-a");
            let token = a.fence().expect("held").token();
            a.destroy();
            // Nothing renews the hold any more: it is reported lost, then the stream ends.
            assert_eq!(
                next_event(&mut events).await,
                Event::Lost {
                    token,
                    reason: $ml::LostReason::Destroyed
                }
            );
            let end = rt::timeout(PATIENCE, events.next())
                .await
                .expect("stream ends");
            assert_eq!(end, None);
            assert!(matches!(a.lock().await, Err(Error::Destroyed)));
            // destroy does not release the key: it stays until its TTL.
            assert_eq!(inspect::value(&url(), &key).as_deref(), Some("node-a"));
        }

        // ----- v2 only: a renew without a known hold asks etcd (by node id) --------------

        #[$test]
        async fn unreachable_etcd_is_a_transport_error() {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let etcd = client_for(vec![format!("{SCHEME}://127.0.0.1:{port}")]);
            let a = Microlock::new(&etcd, "unreachable", "node-a", TTL).unwrap();
            assert!(
                matches!(a.lock().await, Err(Error::Transport { .. })),
                "lock"
            );
            assert!(
                matches!(a.unlock().await, Err(Error::Transport { .. })),
                "unlock"
            );
            assert!(
                matches!(a.renew().await, Err(Error::Transport { .. })),
                "renew"
            );
        }

        // ----- v2 only: hostile keys and node ids, read as v2 nodes ----------------------

        #[$test]
        async fn special_keys_and_ids_round_trip_and_touch_nothing_else() {
            let dir = unique_key("special");
            let cases = [
                ("a b", "node a"),
                ("q?x=1", "n&ttl=0"),
                ("amp&prevExist=true", "n=1"),
                ("eq=1", "100%"),
                ("pct%41%2F", "#frag"),
                ("hash#frag", "a+b"),
                ("plus+sign", "plus+"),
                ("unicodé/🔒", "nœud🔒"),
                ("a/b/c", "prevValue=x&y"),
            ];
            let etcd = client();
            let mut expected = Vec::new();
            for (k, id) in cases {
                let key = format!("{dir}/{k}");
                let lock = Microlock::new(&etcd, &key, id, TTL).unwrap();
                let fence = lock
                    .lock()
                    .await
                    .unwrap_or_else(|e| panic!("lock {key:?}: {e}"));
                let node =
                    inspect::node(&url(), &key).unwrap_or_else(|| panic!("{key:?} stored"));
                assert_eq!(node["key"].as_str(), Some(format!("/{key}").as_str()));
                assert_eq!(node["value"].as_str(), Some(id), "value of {key:?}");
                assert_eq!(node["createdIndex"].as_u64(), Some(fence.token()));
                let other = Microlock::new(&etcd, &key, &format!("{id}x"), TTL).unwrap();
                assert!(matches!(
                    other.unlock().await,
                    Err(Error::LockNotOwned { .. })
                ));
                lock.renew()
                    .await
                    .unwrap_or_else(|e| panic!("renew {key:?}: {e}"));
                expected.push(format!("/{key}"));
            }
            expected.sort();
            assert_eq!(
                inspect::keys_under(&url(), &dir),
                expected,
                "exactly these keys"
            );
            for (k, id) in cases {
                let lock = Microlock::new(&etcd, &format!("{dir}/{k}"), id, TTL).unwrap();
                lock.unlock()
                    .await
                    .unwrap_or_else(|e| panic!("unlock {k:?}: {e}"));
            }
            assert_eq!(inspect::keys_under(&url(), &dir), Vec::<String>::new());
        }

        // ----- v2 only: a real cluster, with member discovery (`/v2/members`) ------------

        #[$test]
        async fn three_member_cluster_agrees_and_survives_a_member_loss() {
            let mut cluster = own_cluster(3).await;
            // `urls` for the test's own reads, `curls` for the clients under test.
            let urls = cluster.client_urls();
            let curls = client_urls_of(&cluster);
            let via = |i: usize| client_for(vec![curls[i].clone()]);
            let key = unique_key("cluster");
            let a = Microlock::new(&via(0), &key, "node-a", TTL).unwrap();
            let b = Microlock::new(&via(2), &key, "node-b", TTL).unwrap();
            let mut events = b.events();
            let fence = a.lock().await.unwrap();
            assert!(matches!(b.lock().await, Err(Error::AlreadyLocked { .. })));
            assert_eq!(
                assert_locked(&next_event(&mut events).await, "node-a"),
                fence.token()
            );
            a.unlock().await.unwrap();
            assert_unlocked(&next_event(&mut events).await, "node-a", false);

            // Lose a follower listed first: the client fails over to the next member, and
            // the caller never hears of it.
            let victim = (0..3)
                .find(|&i| !inspect::is_leader(&urls[i]))
                .expect("a follower");
            let mut order: Vec<String> = vec![curls[victim].clone()];
            order.extend((0..3).filter(|&i| i != victim).map(|i| curls[i].clone()));
            let etcd_c = client_for(order);
            let c = Microlock::new(&etcd_c, &key, "node-c", TTL).unwrap();
            // Given only the victim, with member discovery: the cluster names the others.
            let only_victim = discovering_client(curls[victim].clone());
            let key_e = unique_key("cluster-discovery");
            let e = Microlock::new(&only_victim, &key_e, "node-e", TTL).unwrap();
            e.lock().await.expect("locked through the given member");
            // Discovery runs beside the first command (over TLS, on its own connection):
            // wait for its answer, bound stated.
            let asked = std::time::Instant::now();
            while only_victim.members().len() < 3 && asked.elapsed() < PATIENCE {
                rt::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(only_victim.members().len(), 3, "discovered within {PATIENCE:?}");
            cluster.members[victim].stop();
            e.unlock()
                .await
                .expect("released through a discovered member");
            assert_eq!(inspect::value(&urls[(victim + 1) % 3], &key_e), None);
            let fence_c = c
                .lock()
                .await
                .expect("a dead member is skipped: the lock goes to a live one");
            assert!(fence_c.token() > fence.token());
            let survivor = urls[(victim + 1) % 3].clone();
            assert_eq!(inspect::value(&survivor, &key).as_deref(), Some("node-c"));
            // The dead member is remembered: every lock of the handle skips it.
            let members = etcd_c.members();
            assert!(members.failures(0) > 0, "{members:?}");
            let d = Microlock::new(&etcd_c, &key, "node-d", TTL).unwrap();
            assert!(matches!(d.lock().await, Err(Error::AlreadyLocked { .. })));
            c.unlock().await.expect("released through a live member");
            assert_eq!(inspect::value(&survivor, &key), None);
        }

        // ----- v2 only: the store statistics the bounded cases count ---------------------

        /// How many creates failed at the member at `url` (`GET /v2/stats/store`): every
        /// lock attempt on a held key counts one, so a waiting acquire has asked for its
        /// watch once this has grown.
        fn bounded_create_fails(url: &str) -> u64 {
            let r = $crate::etcd::raw_request(url, "GET", "/v2/stats/store", None);
            assert_eq!(r.status, 200, "store stats of {url}: {}", r.text());
            let text = r.text();
            let at = text.find("\"createFail\":").expect("a createFail count") + 13;
            let digits: String = text[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().expect("a createFail count")
        }

        // ----- v2 only: fair waiting through the queue directory (`_microlock/queue`) -----

        /// Waits (polling etcd, bound stated) until `key`'s queue has `n` entries; returns
        /// them.
        async fn queued(key: &str, n: usize) -> Vec<(String, String)> {
            let (url, key) = (url(), key.to_owned());
            rt::blocking(move || {
                let deadline = std::time::Instant::now() + PATIENCE;
                loop {
                    let q = inspect::queue(&url, &key);
                    if q.len() == n {
                        return q;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the queue of {key} never had {n} entries within {PATIENCE:?}: {q:?}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
            .await
        }

        #[$test]
        async fn fair_acquire_serves_waiters_in_arrival_order() {
            let key = unique_key("fair-order");
            let etcd = client();
            let holder = Microlock::new(&etcd, &key, "holder", LONG).unwrap();
            holder.lock().await.unwrap();
            // Three waiters, each queued before the next arrives.
            let mut waiters = Vec::new();
            for (i, id) in ["w1", "w2", "w3"].into_iter().enumerate() {
                let lock = Microlock::new(&client(), &key, id, LONG).unwrap();
                let order = rt::spawn_handle(async move {
                    let fence = lock.acquire(PATIENCE).await.expect("served in turn");
                    let at = std::time::Instant::now();
                    lock.unlock().await.expect("release");
                    (fence.token(), at)
                });
                waiters.push(order);
                let q = queued(&key, i + 1).await;
                assert_eq!(q[i].1, id, "queued in arrival order: {q:?}");
            }
            holder.unlock().await.unwrap();
            let mut served = Vec::new();
            for w in waiters {
                served.push(w.await);
            }
            // Tokens (creation order) and times both follow the arrival order.
            assert!(served.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{served:?}");
            assert!(queued(&key, 0).await.is_empty(), "served waiters leave the queue");
        }

        #[$test]
        async fn a_releaser_that_wants_the_lock_again_queues_behind_a_waiter() {
            let key = unique_key("fair-retake");
            let a = Microlock::new(&client(), &key, "a", LONG).unwrap();
            let b = Microlock::new(&client(), &key, "b", LONG).unwrap();
            a.acquire(PATIENCE).await.unwrap();
            let (b_done, a_again) = {
                let b_wait = b.acquire(PATIENCE);
                let a_cycle = async {
                    queued(&key, 2).await; // a's own entry, then b's
                    a.unlock().await.unwrap();
                    // a wants it again at once: b, queued first, goes first.
                    let fence = a.acquire(PATIENCE).await.unwrap();
                    (fence.token(), std::time::Instant::now())
                };
                let b_cycle = async {
                    let fence = b_wait.await.unwrap();
                    let at = std::time::Instant::now();
                    b.unlock().await.unwrap();
                    (fence.token(), at)
                };
                tokio::join!(b_cycle, a_cycle)
            };
            assert!(b_done.0 < a_again.0, "b was served before a's second turn");
            a.unlock().await.unwrap();
        }

        #[$test]
        async fn a_cancelled_waiter_leaves_the_queue_and_the_next_one_goes() {
            let key = unique_key("fair-cancel");
            let holder = Microlock::new(&client(), &key, "holder", LONG).unwrap();
            holder.lock().await.unwrap();
            let quitter = Microlock::new(&client(), &key, "quitter", LONG).unwrap();
            let patient = Microlock::new(&client(), &key, "patient", LONG).unwrap();
            let quit = quitter.acquire(Duration::from_millis(1500));
            let wait = async {
                queued(&key, 1).await;
                patient.acquire(PATIENCE).await
            };
            let leave = async {
                let r = quit.await;
                assert!(matches!(r, Err(Error::WaitTimeout { .. })), "{r:?}");
                // Its entry goes; only the patient waiter is left.
                let q = queued(&key, 1).await;
                assert_eq!(q[0].1, "patient", "{q:?}");
                holder.unlock().await.unwrap();
            };
            let (got, ()) = tokio::join!(wait, leave);
            got.expect("the next waiter goes when the key is released");
            patient.unlock().await.unwrap();
        }

        /// A waiter that dies in the queue holds it up for its TTL at most.
        #[$test]
        async fn a_crashed_waiters_entry_expires_and_the_queue_moves_on() {
            let key = unique_key("fair-crash");
            let holder = Microlock::new(&client(), &key, "holder", LONG).unwrap();
            holder.lock().await.unwrap();
            let short = Duration::from_secs(2);
            let doomed = Microlock::new(&client(), &key, "doomed", short).unwrap();
            let next = Microlock::new(&client(), &key, "next", LONG).unwrap();
            let doomed_wait = doomed.acquire(PATIENCE);
            let run = async {
                queued(&key, 1).await;
                // It "crashes": its driver stops, nothing removes its entry.
                doomed.destroy();
                let next_wait = next.acquire(PATIENCE);
                let release = async {
                    queued(&key, 2).await;
                    holder.unlock().await.unwrap();
                    std::time::Instant::now()
                };
                let (got, released) = tokio::join!(next_wait, release);
                got.expect("served once the dead entry expired");
                // Bound: the dead entry's TTL (2 s) plus etcd's expiry tick and slack.
                assert!(released.elapsed() < short + Duration::from_secs(5));
            };
            let (destroyed, ()) = tokio::join!(doomed_wait, run);
            assert!(matches!(destroyed, Err(Error::Destroyed)), "{destroyed:?}");
            next.unlock().await.unwrap();
        }
    };

    // ----- v3 (flavour v3): what the cases read of v3's layout, and the cases of v3 alone:
    // Go's `concurrency.Mutex` layout (`KEY/<lease id in hex>` = node id, under a lease; the
    // lowest create revision holds), ownership by lease, `destroy()` revoking the lease, fair
    // waiting by create revision, no member discovery. Bounds are stated per case; every wait
    // on etcd's state polls it (bounded), every wait on the client awaits it.
    (@v3 $ml:ident, $test:meta) => {
        /// The protocol of the client under test.
        const PROTOCOL: Protocol = Protocol::V3;

        /// v3 cannot tell an expiry from a release: a lease that runs out deletes its keys,
        /// and the watch reports a plain `DELETE`. `Unlocked { expired }` is always false.
        const EXPIRY_IS_TOLD: bool = false;

        /// The lock holder process of `paused_holder_loses_the_lock...` (told to speak v3).
        const HOLDER_EXE: &str = env!("CARGO_BIN_EXE_holder");

        /// The node id holding `key` at the member at `url` (v3: the value of the key with the
        /// lowest create revision under `KEY/`).
        fn holder_at(url: &str, key: &str) -> Option<String> {
            inspect::v3_holder(url, key).map(|(node_id, _)| node_id)
        }

        /// The node id holding `key` on the shared etcd.
        fn holder(key: &str) -> Option<String> {
            holder_at(&url(), key)
        }

        /// The hold of `key` as stored on the shared etcd: node id and fencing token (v3: the
        /// value and create revision of the key with the lowest create revision under `KEY/`).
        fn hold(key: &str) -> Option<(String, u64)> {
            inspect::v3_holder(&url(), key)
        }

        /// What is stored for the lock `key` on the shared etcd, `None` when nothing (v3: every
        /// key under `KEY/`, holder's and waiters').
        fn stored(key: &str) -> Option<Vec<inspect::V3Kv>> {
            let keys = inspect::v3_keys(&url(), key);
            (!keys.is_empty()).then_some(keys)
        }

        /// How many watches the member at `url` serves (v3: its watcher gauge, `/metrics`).
        fn watchers(url: &str) -> u64 {
            inspect::v3_watchers(url)
        }

        /// A waiter took its lock: none of its watches is left at the member at `url`. v3: the
        /// client closes its watch's stream; etcd's gateway cancels the watch once it notices
        /// (bounded: PATIENCE).
        async fn assert_no_watch_left(url: &str) {
            watchers_become(url, 0).await;
        }

        /// How many lockers found one of `keys` held at the member at `url` (v3: the keys
        /// under each `KEY/` other than its holder's: every attempt on a held key that still
        /// waits has one).
        fn bounded_waiting(url: &str, keys: &[&str]) -> u64 {
            (keys.iter())
                .map(|key| inspect::v3_keys(url, key).len().saturating_sub(1) as u64)
                .sum()
        }

        /// Polls `check` until it holds, at most for `bound` (for etcd's state, which sends no
        /// notification); how long it took.
        async fn eventually(
            bound: Duration,
            what: &str,
            mut check: impl FnMut() -> bool,
        ) -> Duration {
            let started = std::time::Instant::now();
            while !check() {
                assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
                rt::sleep(Duration::from_millis(10)).await;
            }
            started.elapsed()
        }

        /// Waits (polling etcd, bound PATIENCE) until the keys under `KEY/` hold exactly the
        /// node ids `queue`, in create-revision order (the holder first); returns them.
        async fn v3_queue_becomes(key: &str, queue: &[&str]) -> Vec<inspect::V3Kv> {
            let mut keys = Vec::new();
            let what = format!("the queue of {key} becoming {queue:?}");
            eventually(PATIENCE, &what, || {
                keys = inspect::v3_keys(&url(), key);
                keys.iter().map(|kv| kv.value.as_str()).eq(queue.iter().copied())
            })
            .await;
            keys
        }

        // ----- v3 only: the layout -------------------------------------------------------

        /// The layout of Go's `concurrency.Mutex` (`etcdctl lock KEY`): `KEY/<lease id in
        /// lowercase hex>` = node id, under a lease granted with the lock's TTL; the fencing
        /// token is that key's create revision; `read()` names it from any handle.
        #[$test]
        async fn v3_lock_free_key_succeeds_with_lease_layout() {
            let key = unique_key("v3-layout");
            let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
            let fence = a.lock().await.expect("free key locks");
            let keys = inspect::v3_keys(&url(), &key);
            assert_eq!(keys.len(), 1, "one key: {keys:?}");
            let kv = &keys[0];
            assert_ne!(kv.lease, 0, "put under a lease: {kv:?}");
            assert_eq!(kv.key, inspect::v3_lease_key(&key, kv.lease));
            assert_eq!(kv.value, "node-a");
            assert_eq!(kv.create_revision as u64, fence.token());
            let (left, granted) = inspect::v3_lease_ttl(&url(), kv.lease).expect("the lease lives");
            assert_eq!(granted, 5, "granted with the lock's TTL");
            assert!((1..=5).contains(&left), "{left} s left");
            let b = Microlock::new(&client(), &key, "node-b", TTL).unwrap();
            let holder = b.read().await.unwrap().expect("held");
            assert_eq!(holder.node_id, "node-a");
            assert_eq!(holder.token, fence.token());
            a.unlock().await.unwrap();
            assert_eq!(stored(&key), None, "unlock deletes the key");
            assert!(b.read().await.unwrap().is_none());
        }

        /// Each hold's token is its key's create revision, and tokens strictly increase across
        /// holders — also for one handle locking again under the same lease (the same key name,
        /// put again: a new create revision).
        #[$test]
        async fn v3_tokens_are_create_revisions_and_strictly_increase_across_holders() {
            let key = unique_key("v3-tokens");
            let etcd = client();
            let nodes: Vec<_> = (0..3)
                .map(|i| Microlock::new(&etcd, &key, &format!("node-{i}"), TTL).unwrap())
                .collect();
            let mut last = 0;
            for round in [0, 1, 2, 0, 0, 2, 1] {
                let fence = nodes[round].lock().await.unwrap();
                assert_eq!(
                    hold(&key),
                    Some((format!("node-{round}"), fence.token())),
                    "the token is the holder key's create revision"
                );
                assert!(fence.token() > last, "{} after {last}", fence.token());
                last = fence.token();
                nodes[round].unlock().await.unwrap();
            }
        }

        /// A try-lock that finds the lock held put its key first: it removes it again before
        /// its handle's next command runs, and leaves the holder's alone.
        #[$test]
        async fn v3_a_try_lock_that_finds_it_held_leaves_no_key() {
            let key = unique_key("v3-try");
            let etcd = client();
            let a = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
            let b = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
            let fence = a.lock().await.unwrap();
            for _ in 0..3 {
                match b.lock().await {
                    Err(Error::AlreadyLocked { key: k, index }) => {
                        assert_eq!(k, key);
                        assert!(index > 0);
                    }
                    other => panic!("expected AlreadyLocked, got {other:?}"),
                }
                let read = b.read().await.unwrap().expect("held");
                assert_eq!((read.node_id.as_str(), read.token), ("node-a", fence.token()));
                let keys = inspect::v3_keys(&url(), &key);
                let ids: Vec<&str> = keys.iter().map(|kv| kv.value.as_str()).collect();
                assert_eq!(ids, ["node-a"], "b's key is gone: {keys:?}");
            }
        }

        /// `renew()` is the lease's keep-alive: the same key, neither re-created nor even
        /// written (its mod revision stays), and the lease's time left back to its TTL. Lets
        /// 2 s of a 5 s lease pass first (the passing of time is what this case is about).
        #[$test]
        async fn v3_renew_keeps_the_key_and_refreshes_the_lease() {
            let key = unique_key("v3-renew");
            let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
            let fence = a.lock().await.unwrap();
            let before = inspect::v3_keys(&url(), &key);
            assert_eq!(before.len(), 1, "{before:?}");
            let lease = before[0].lease;
            rt::sleep(Duration::from_secs(2)).await;
            let (left, _) = inspect::v3_lease_ttl(&url(), lease).expect("the lease lives");
            assert!(left <= 3, "{left} s left after 2 s of 5");
            let renewed = a.renew().await.expect("own lock renews");
            assert_eq!(renewed.token(), fence.token());
            assert!(renewed.valid_until() > fence.valid_until());
            let (left, granted) = inspect::v3_lease_ttl(&url(), lease).expect("the lease lives");
            assert_eq!(granted, 5);
            assert!(left >= 4, "{left} s left after the keep-alive");
            assert_eq!(inspect::v3_keys(&url(), &key), before, "the same key, untouched");
        }

        // ----- v3 only: ownership is the lease's ------------------------------------------

        /// A second handle with the same node id (a restarted process) has no lease: it does
        /// not own the first handle's hold. It cannot take it (`lock()` puts its own key, finds
        /// the first one ahead, and takes its key back) nor renew it (`renew()` keeps a lease
        /// alive; it has none for this hold). What `unlock()` does, asserted as the machine
        /// does it: a handle that knows no hold asks who holds and releases the holder's key
        /// (pinned to its create revision) when its value is this node id — as on v2 — so the
        /// same node id CAN release the first handle's hold. The first handle must then learn
        /// that its hold is gone: once another node holds, its renew fails (a keep-alive of
        /// its still living lease must not pass for a hold).
        #[$test]
        async fn v3_a_second_client_with_the_same_node_id_does_not_own_the_hold() {
            let key = unique_key("v3-same-id");
            let old = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
            let fence = old.lock().await.unwrap();
            let new = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
            assert!(!new.is_held(), "nothing is known before etcd is asked");
            assert!(matches!(new.lock().await, Err(Error::AlreadyLocked { .. })));
            let renewed = new.renew().await;
            assert!(
                matches!(renewed, Err(Error::LockNotOwned { .. })),
                "the same node id does not renew another lease's hold: {renewed:?}"
            );
            assert!(!new.is_held());
            assert_eq!(hold(&key), Some(("node-a".to_owned(), fence.token())), "untouched");
            assert_eq!(old.renew().await.expect("still the first handle's").token(), fence.token());
            new.unlock().await.expect("the holder's key has this node id: released");
            assert_eq!(stored(&key), None);
            let other = Microlock::new(&client(), &key, "node-b", TTL).unwrap();
            other.lock().await.expect("free again");
            let stale = old.renew().await;
            assert!(
                matches!(stale, Err(Error::LockNotOwned { .. })),
                "node-b holds: the first handle's renew must fail, got {stale:?}"
            );
            assert!(!old.is_held());
            // The same id never releases or renews another node's hold.
            assert!(matches!(new.unlock().await, Err(Error::LockNotOwned { .. })));
            assert!(matches!(new.renew().await, Err(Error::LockNotOwned { .. })));
            assert_eq!(holder(&key).as_deref(), Some("node-b"));
        }

        /// `destroy()` ends the streams (after reporting the hold lost) and revokes the lease:
        /// the key goes at once, not after its TTL. Bound: gone within 5 s of a 30 s lease.
        #[$test]
        async fn v3_destroy_revokes_the_lease_and_ends_streams() {
            let key = unique_key("v3-destroy");
            let a = Microlock::new(&client(), &key, "node-a", LONG).unwrap();
            let mut events = a.events();
            a.lock().await.unwrap();
            assert_locked(&next_event(&mut events).await, "node-a");
            let lease = inspect::v3_keys(&url(), &key)[0].lease;
            let token = a.fence().expect("held").token();
            a.destroy();
            assert_eq!(
                next_event(&mut events).await,
                Event::Lost {
                    token,
                    reason: $ml::LostReason::Destroyed
                }
            );
            let end = rt::timeout(PATIENCE, events.next())
                .await
                .expect("stream ends");
            assert_eq!(end, None);
            assert!(matches!(a.lock().await, Err(Error::Destroyed)));
            let took = eventually(Duration::from_secs(5), "the key goes with the lease", || {
                stored(&key).is_none()
            })
            .await;
            assert_eq!(inspect::v3_lease_ttl(&url(), lease), None, "revoked");
            println!("{}: key gone {took:?} after destroy()", stringify!($ml));
        }

        /// Dropping a holding lock's only handle (no `destroy()`, no events stream: its
        /// driver's channel closes) ends it the same way: the lease is revoked, so the key goes
        /// at once, not after its TTL. Four at once, more than the executor threads of a 2-core
        /// machine: a driver that, its handles gone, spun on its closed channel while the
        /// revoke was in flight held a thread each and froze the runtime. Bound: each drop
        /// seen by another client's events stream within PATIENCE (15 s) of a 30 s lease.
        #[$test]
        async fn v3_dropping_a_holding_lock_revokes_its_lease() {
            let etcd = client();
            let mut held = Vec::new();
            for _ in 0..4 {
                let key = unique_key("v3-drop");
                let holder = Microlock::new(&etcd, &key, "node-a", LONG).unwrap();
                let observer = Microlock::new(&etcd, &key, "observer", LONG).unwrap();
                let mut events = observer.events();
                holder.lock().await.unwrap();
                assert_locked(&next_event(&mut events).await, "node-a");
                let lease = inspect::v3_keys(&url(), &key)[0].lease;
                held.push((holder, observer, events, key, lease));
            }
            let dropped = std::time::Instant::now();
            let watching: Vec<_> = (held.into_iter())
                .map(|(holder, observer, events, key, lease)| {
                    drop(holder);
                    (observer, events, key, lease)
                })
                .collect();
            for (_observer, mut events, key, lease) in watching {
                assert_unlocked(&next_event(&mut events).await, "node-a", false);
                assert_eq!(stored(&key), None, "the key went with its lease");
                assert_eq!(inspect::v3_lease_ttl(&url(), lease), None, "revoked");
            }
            let took = dropped.elapsed();
            assert!(took < LONG, "revoked, not expired: {took:?}");
            let ml = stringify!($ml);
            println!("{ml}: four keys gone {took:?} after their locks were dropped");
        }

        /// A hold whose lease ran out (no auto-renew) is lost; the next `lock()` grants a new
        /// lease (a new key name) and holds. So does one after the lease the handle keeps
        /// between holds ran out while idle. Bound: each lease gone within its TTL (2 s) plus
        /// 5 s.
        #[$test]
        async fn v3_lock_after_the_lease_expired_gets_a_new_lease() {
            let key = unique_key("v3-new-lease");
            let short = Duration::from_secs(2);
            let a = Microlock::new(&client(), &key, "node-a", short).unwrap();
            let first = a.lock().await.unwrap();
            let lease = inspect::v3_keys(&url(), &key)[0].lease;
            eventually(short + Duration::from_secs(5), "the lease expires", || {
                inspect::v3_lease_ttl(&url(), lease).is_none()
            })
            .await;
            assert_eq!(stored(&key), None, "its key went with it");
            assert!(!a.is_held());
            let second = a.lock().await.expect("locks under a new lease");
            assert!(second.token() > first.token());
            let keys = inspect::v3_keys(&url(), &key);
            assert_eq!(keys.len(), 1, "{keys:?}");
            assert_ne!(keys[0].lease, lease, "a new lease");
            assert_eq!(keys[0].key, inspect::v3_lease_key(&key, keys[0].lease));
            assert_eq!(keys[0].create_revision as u64, second.token());
            a.unlock().await.unwrap();
            // Idle, the lease kept for the next hold runs out too.
            let idle = keys[0].lease;
            eventually(short + Duration::from_secs(5), "the idle lease expires", || {
                inspect::v3_lease_ttl(&url(), idle).is_none()
            })
            .await;
            let third = a.lock().await.expect("locks under another new lease");
            assert!(third.token() > second.token());
            let keys = inspect::v3_keys(&url(), &key);
            assert_eq!(keys.len(), 1, "{keys:?}");
            assert_ne!(keys[0].lease, idle, "a new lease");
            a.unlock().await.unwrap();
        }

        /// `etcdctl lock KEY` (Go's `concurrency.Mutex`) writes `KEY/<lease id in hex>` with an
        /// empty value: a key planted so excludes this library's locks, `read()` names it, and
        /// an acquire queues behind it and is served when its session ends (its lease is
        /// revoked). Bound: PATIENCE.
        #[$test]
        async fn v3_a_hold_planted_like_etcdctl_lock_excludes_and_queues() {
            let key = unique_key("v3-planted");
            let lease = inspect::v3_grant(&url(), LONG.as_secs());
            let planted_key = inspect::v3_lease_key(&key, lease);
            let planted = inspect::v3_put(&url(), &planted_key, "", Some(lease));
            let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
            assert!(matches!(a.lock().await, Err(Error::AlreadyLocked { .. })));
            let read = a.read().await.unwrap().expect("held by the planted key");
            assert_eq!((read.node_id.as_str(), read.token), ("", planted as u64));
            let session_ends = async {
                v3_queue_becomes(&key, &["", "node-a"]).await;
                inspect::v3_revoke(&url(), lease);
            };
            let (got, ()) = join(a.acquire(PATIENCE), session_ends).await;
            let fence = got.expect("served once the planted session ends");
            assert!(fence.token() > planted as u64);
            assert_eq!(holder(&key).as_deref(), Some("node-a"));
            a.unlock().await.unwrap();
        }

        // ----- v3 only: a renew without a hold does not ask etcd ------------------------

        /// As `unreachable_etcd_is_a_transport_error` on v2, but a handle that never held has
        /// no lease to keep alive: its `renew()` is `LockNotOwned` without asking etcd.
        #[$test]
        async fn v3_unreachable_etcd_is_a_transport_error() {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let etcd = client_for(vec![format!("{SCHEME}://127.0.0.1:{port}")]);
            let a = Microlock::new(&etcd, "unreachable", "node-a", TTL).unwrap();
            let locked = a.lock().await;
            assert!(matches!(locked, Err(Error::Transport { .. })), "lock: {locked:?}");
            let unlocked = a.unlock().await;
            assert!(matches!(unlocked, Err(Error::Transport { .. })), "unlock: {unlocked:?}");
            let renewed = a.renew().await;
            assert!(matches!(renewed, Err(Error::LockNotOwned { .. })), "renew: {renewed:?}");
        }

        // ----- v3 only: events follow the head of the queue ------------------------------

        /// A waiter's key changes no holder: no event. When the holder releases, the next key
        /// in create order holds: `Unlocked` then `Locked` with its token.
        #[$test]
        async fn v3_events_follow_the_head_of_the_queue() {
            let key = unique_key("v3-events-queue");
            let etcd = client();
            let observer = Microlock::new(&etcd, &key, "observer", TTL).unwrap();
            let a = Microlock::new(&etcd, &key, "node-a", LONG).unwrap();
            let b = Microlock::new(&etcd, &key, "node-b", LONG).unwrap();
            let mut events = observer.events();
            let first = a.lock().await.unwrap();
            assert_eq!(assert_locked(&next_event(&mut events).await, "node-a"), first.token());
            let release = async {
                v3_queue_becomes(&key, &["node-a", "node-b"]).await;
                a.unlock().await.unwrap();
            };
            let (got, ()) = join(b.acquire(PATIENCE), release).await;
            let second = got.expect("b is next");
            assert_unlocked(&next_event(&mut events).await, "node-a", false);
            assert_eq!(assert_locked(&next_event(&mut events).await, "node-b"), second.token());
            b.unlock().await.unwrap();
            assert_unlocked(&next_event(&mut events).await, "node-b", false);
        }

        /// An events stream whose watch starts late gets the changes it missed replayed by
        /// etcd, several events in one watch message: it reports every change of holder in
        /// them, in order, not only the net one. The watch is made late with a watch budget of
        /// 1 held by another stream, whose end frees it (as in
        /// `bounded_an_events_stream_past_the_watch_budget_is_late_but_complete`, which is
        /// v2's). Bound: PATIENCE per event.
        #[$test]
        async fn v3_an_events_stream_that_starts_late_reports_every_change_it_missed() {
            let server = own_etcd().await;
            let url = server.client_url();
            let etcd = bounded_client(vec![client_url_of(&server)], 4, 1);
            let a = Microlock::new(&etcd, "late-quiet", "watcher-a", LONG).unwrap();
            let a_events = a.events();
            watchers_become(&url, 1).await; // a's watch has the only slot
            let c = Microlock::new(&etcd, "late-busy", "node-c", LONG).unwrap();
            let first = c.lock().await.unwrap();
            let b = Microlock::new(&etcd, "late-busy", "watcher-b", LONG).unwrap();
            let mut b_events = b.events();
            // From the read that starts b's watch (a short request).
            assert_eq!(assert_locked(&next_event(&mut b_events).await, "node-c"), first.token());
            // b's watch waits for the slot; meanwhile the lock changes hands three times.
            c.unlock().await.unwrap();
            let second = c.lock().await.unwrap();
            c.unlock().await.unwrap();
            assert_eq!(watchers(&url), 1, "b's watch waits for the slot");
            drop(a_events); // a stops watching: its slot goes to b's watch, which replays
            assert_unlocked(&next_event(&mut b_events).await, "node-c", false);
            let token = assert_locked(&next_event(&mut b_events).await, "node-c");
            assert_eq!(token, second.token());
            assert_unlocked(&next_event(&mut b_events).await, "node-c", false);
        }

        // ----- v3 only: hostile keys and node ids, read as v3 keys -----------------------

        /// Keys and node ids with every character a URL or a form would mangle round-trip
        /// through base64 (v3: `KEY/<lease hex>` = node id), and nothing else is written.
        #[$test]
        async fn v3_special_keys_and_ids_round_trip_and_touch_nothing_else() {
            let dir = unique_key("v3-special");
            let cases = [
                ("a b", "node a"),
                ("q?x=1", "n&ttl=0"),
                ("amp&prevExist=true", "n=1"),
                ("eq=1", "100%"),
                ("pct%41%2F", "#frag"),
                ("hash#frag", "a+b"),
                ("plus+sign", "plus+"),
                ("unicodé/🔒", "nœud🔒"),
                ("a/b/c", "prevValue=x&y"),
            ];
            let etcd = client();
            let mut locks = Vec::new();
            let mut expected = Vec::new();
            for (k, id) in cases {
                let key = format!("{dir}/{k}");
                let lock = Microlock::new(&etcd, &key, id, TTL).unwrap();
                let fence = lock
                    .lock()
                    .await
                    .unwrap_or_else(|e| panic!("lock {key:?}: {e}"));
                let keys = inspect::v3_keys(&url(), &key);
                assert_eq!(keys.len(), 1, "{key:?}: {keys:?}");
                assert_eq!(keys[0].key, inspect::v3_lease_key(&key, keys[0].lease));
                assert_eq!(keys[0].value, id, "value of {key:?}");
                assert_eq!(keys[0].create_revision as u64, fence.token());
                let other = Microlock::new(&etcd, &key, &format!("{id}x"), TTL).unwrap();
                assert!(matches!(
                    other.unlock().await,
                    Err(Error::LockNotOwned { .. })
                ));
                lock.renew()
                    .await
                    .unwrap_or_else(|e| panic!("renew {key:?}: {e}"));
                expected.push(keys[0].key.clone());
                locks.push(lock);
            }
            let under = || {
                let mut keys: Vec<String> = inspect::v3_keys_with_prefix(&url(), &format!("{dir}/"))
                    .into_iter()
                    .map(|kv| kv.key)
                    .collect();
                keys.sort();
                keys
            };
            expected.sort();
            assert_eq!(under(), expected, "exactly these keys");
            for (lock, (k, _)) in locks.iter().zip(cases) {
                lock.unlock()
                    .await
                    .unwrap_or_else(|e| panic!("unlock {k:?}: {e}"));
            }
            assert_eq!(under(), Vec::<String>::new());
        }

        // ----- v3 only: a real cluster, without member discovery -------------------------

        /// Three members agree (each reads the same holder); a client listing a dead follower
        /// first fails over to the others, and remembers it. v3 has no member discovery: a
        /// client asked to discover keeps to the endpoint it was given.
        #[$test]
        async fn v3_three_member_cluster_agrees_and_survives_a_member_loss() {
            let mut cluster = own_cluster(3).await;
            // `urls` for the test's own reads, `curls` for the clients under test.
            let urls = cluster.client_urls();
            let curls = client_urls_of(&cluster);
            let via = |i: usize| client_for(vec![curls[i].clone()]);
            let key = unique_key("v3-cluster");
            let a = Microlock::new(&via(0), &key, "node-a", TTL).unwrap();
            let b = Microlock::new(&via(2), &key, "node-b", TTL).unwrap();
            let mut events = b.events();
            let fence = a.lock().await.unwrap();
            assert!(matches!(b.lock().await, Err(Error::AlreadyLocked { .. })));
            assert_eq!(
                assert_locked(&next_event(&mut events).await, "node-a"),
                fence.token()
            );
            for url in &urls {
                let held = inspect::v3_holder(url, &key);
                assert_eq!(held, Some(("node-a".to_owned(), fence.token())), "at {url}");
            }
            a.unlock().await.unwrap();
            assert_unlocked(&next_event(&mut events).await, "node-a", false);

            let victim = (0..3)
                .find(|&i| !inspect::is_leader(&urls[i]))
                .expect("a follower");
            let only_victim = discovering_client(curls[victim].clone());
            let key_e = unique_key("v3-cluster-no-discovery");
            let e = Microlock::new(&only_victim, &key_e, "node-e", TTL).unwrap();
            e.lock().await.expect("locked through the given member");
            e.unlock().await.unwrap();
            assert_eq!(only_victim.members().len(), 1, "v3 keeps to the given endpoint");

            let mut order: Vec<String> = vec![curls[victim].clone()];
            order.extend((0..3).filter(|&i| i != victim).map(|i| curls[i].clone()));
            let etcd_c = client_for(order);
            let c = Microlock::new(&etcd_c, &key, "node-c", TTL).unwrap();
            cluster.members[victim].stop();
            let fence_c = c
                .lock()
                .await
                .expect("a dead member is skipped: the lock goes to a live one");
            assert!(fence_c.token() > fence.token());
            let survivor = urls[(victim + 1) % 3].clone();
            assert_eq!(holder_at(&survivor, &key).as_deref(), Some("node-c"));
            // The dead member is remembered: every lock of the handle skips it.
            let members = etcd_c.members();
            assert!(members.failures(0) > 0, "{members:?}");
            let d = Microlock::new(&etcd_c, &key, "node-d", TTL).unwrap();
            assert!(matches!(d.lock().await, Err(Error::AlreadyLocked { .. })));
            // d's try-lock put a key too: it is removed before d's next command runs (see
            // `v3_a_try_lock_that_finds_it_held_leaves_no_key`), not before d's answer. Read
            // through d, so that it is gone before c's release.
            let read = d.read().await.unwrap().expect("held");
            assert_eq!(read.node_id, "node-c");
            c.unlock().await.expect("released through a live member");
            assert_eq!(holder_at(&survivor, &key), None);
        }

        // ----- v3 only: fair waiting, native (keys ordered by create revision) -----------

        /// Three waiters, each queued (its key under `KEY/`) before the next arrives, are
        /// served in arrival order, each with the key it queued with (its token is that key's
        /// create revision), one after another; served, they leave nothing behind. Bound:
        /// PATIENCE per wait.
        #[$test]
        async fn v3_fair_acquire_serves_waiters_in_arrival_order() {
            let key = unique_key("v3-fair-order");
            let holder = Microlock::new(&client(), &key, "holder", LONG).unwrap();
            holder.lock().await.unwrap();
            let mut waiters = Vec::new();
            let mut queue = vec!["holder"];
            for id in ["w1", "w2", "w3"] {
                let lock = Microlock::new(&client(), &key, id, LONG).unwrap();
                let order = rt::spawn_handle(async move {
                    let fence = lock.acquire(PATIENCE).await.expect("served in turn");
                    let at = std::time::Instant::now();
                    lock.unlock().await.expect("release");
                    (fence.token(), at)
                });
                waiters.push(order);
                queue.push(id);
                v3_queue_becomes(&key, &queue).await;
            }
            let arrival: Vec<u64> = (inspect::v3_keys(&url(), &key).iter().skip(1))
                .map(|kv| kv.create_revision as u64)
                .collect();
            holder.unlock().await.unwrap();
            let mut served = Vec::new();
            for w in waiters {
                served.push(w.await);
            }
            let tokens: Vec<u64> = served.iter().map(|s| s.0).collect();
            assert_eq!(tokens, arrival, "served with their queued keys, in arrival order");
            assert!(served.windows(2).all(|w| w[0].1 <= w[1].1), "{served:?}");
            assert_eq!(stored(&key), None, "served waiters leave nothing behind");
        }

        /// A releaser that wants the lock again at once puts its key again: behind the waiter,
        /// which goes first. Bound: PATIENCE per wait.
        #[$test]
        async fn v3_a_releaser_that_wants_the_lock_again_queues_behind_a_waiter() {
            let key = unique_key("v3-fair-retake");
            let a = Microlock::new(&client(), &key, "a", LONG).unwrap();
            let b = Microlock::new(&client(), &key, "b", LONG).unwrap();
            a.acquire(PATIENCE).await.unwrap();
            let a_cycle = async {
                v3_queue_becomes(&key, &["a", "b"]).await;
                a.unlock().await.unwrap();
                let fence = a.acquire(PATIENCE).await.unwrap();
                (fence.token(), std::time::Instant::now())
            };
            let b_cycle = async {
                let fence = b.acquire(PATIENCE).await.unwrap();
                let at = std::time::Instant::now();
                b.unlock().await.unwrap();
                (fence.token(), at)
            };
            let (b_done, a_again) = join(b_cycle, a_cycle).await;
            assert!(b_done.0 < a_again.0, "b was served before a's second turn");
            assert!(b_done.1 <= a_again.1, "b was served before a's second turn");
            a.unlock().await.unwrap();
        }

        /// A waiter whose acquire times out removes its key; the next one goes when the key is
        /// released. Bounds: the quitter waits 1.5 s; PATIENCE for the rest.
        #[$test]
        async fn v3_a_cancelled_waiters_key_is_removed_and_the_next_one_goes() {
            let key = unique_key("v3-fair-cancel");
            let holder = Microlock::new(&client(), &key, "holder", LONG).unwrap();
            holder.lock().await.unwrap();
            let quitter = Microlock::new(&client(), &key, "quitter", LONG).unwrap();
            let patient = Microlock::new(&client(), &key, "patient", LONG).unwrap();
            let quit = quitter.acquire(Duration::from_millis(1500));
            let wait = async {
                v3_queue_becomes(&key, &["holder", "quitter"]).await;
                patient.acquire(PATIENCE).await
            };
            let leave = async {
                let r = quit.await;
                assert!(matches!(r, Err(Error::WaitTimeout { .. })), "{r:?}");
                // Its key goes; only the patient waiter's is left behind the holder's.
                v3_queue_becomes(&key, &["holder", "patient"]).await;
                holder.unlock().await.unwrap();
            };
            let (got, ()) = join(wait, leave).await;
            got.expect("the next waiter goes when the key is released");
            assert_eq!(holder_at(&url(), &key).as_deref(), Some("patient"));
            patient.unlock().await.unwrap();
        }

        /// A waiter that crashed leaves its key under a lease nobody keeps alive (planted here
        /// as it would be left, with a 4 s lease): the waiter behind it waits for that key
        /// only, and is served once the lease runs out. Bound: the dead key's TTL plus 5 s
        /// after the holder's release.
        #[$test]
        async fn v3_a_crashed_waiters_key_goes_with_its_lease_and_the_queue_moves_on() {
            let key = unique_key("v3-fair-crash");
            let holder = Microlock::new(&client(), &key, "holder", LONG).unwrap();
            holder.lock().await.unwrap();
            let dead_ttl = Duration::from_secs(4);
            let lease = inspect::v3_grant(&url(), dead_ttl.as_secs());
            inspect::v3_put(&url(), &inspect::v3_lease_key(&key, lease), "doomed", Some(lease));
            let next = Microlock::new(&client(), &key, "next", LONG).unwrap();
            let release = async {
                v3_queue_becomes(&key, &["holder", "doomed", "next"]).await;
                holder.unlock().await.unwrap();
                std::time::Instant::now()
            };
            let (got, released) = join(next.acquire(PATIENCE), release).await;
            got.expect("served once the dead key's lease ran out");
            assert!(released.elapsed() < dead_ttl + Duration::from_secs(5));
            assert_eq!(inspect::v3_lease_ttl(&url(), lease), None, "it ran out first");
            assert_eq!(holder_at(&url(), &key).as_deref(), Some("next"));
            next.unlock().await.unwrap();
        }
    };

    // ----- the cases, for every flavour ----------------------------------------------------
    (@suite $module:ident, $flavour:ident, $ml:ident, $rt:path, $test:meta) => {
        #[allow(unused_imports)]
        mod $module {
            use std::time::Duration;

            use $crate::etcd::{self, unique_key};
            use $crate::inspect;
            use $ml::{Config, Error, Etcd, Event, Microlock};
            use $rt as rt;

            const TTL: Duration = Duration::from_secs(5);
            /// For holders in tests that wait on external events: long enough that a slow
            /// machine never lets the lease run out by accident.
            const LONG: Duration = Duration::from_secs(30);
            /// Generous bound for anything etcd should answer quickly.
            const PATIENCE: Duration = Duration::from_secs(15);

            $crate::conformance_suite!(@flavour $flavour, $ml, $test);
            // The protocol's layout helpers (`holder`, `hold`, `stored`, `watchers`, ...) and
            // the cases of that protocol alone.
            $crate::conformance_suite!(@only $flavour, $ml, $test);

            /// The client under test, on the shared etcd of the flavour.
            fn client() -> Etcd {
                client_for(vec![client_url()])
            }

            async fn next_event(events: &mut $ml::Events) -> Event {
                rt::timeout(PATIENCE, events.next())
                    .await
                    .expect("no event within the patience bound")
                    .expect("the event stream ended")
            }

            fn assert_locked(event: &Event, who: &str) -> u64 {
                match event {
                    Event::Locked { holder, token, .. } => {
                        assert_eq!(holder, who);
                        *token
                    }
                    other => panic!("expected Locked by {who:?}, got {other:?}"),
                }
            }

            fn assert_unlocked(event: &Event, who: &str, expired: bool) {
                match event {
                    Event::Unlocked {
                        previous_holder,
                        expired: e,
                        ..
                    } => {
                        assert_eq!(previous_holder.as_deref(), Some(who));
                        assert_eq!(*e, expired, "expired flag");
                    }
                    other => panic!("expected Unlocked from {who:?}, got {other:?}"),
                }
            }

            // ----- the seed's integration spec: lock ----------------------------------------

            #[$test]
            async fn lock_held_by_other_is_already_locked() {
                let key = unique_key("lock-held");
                let etcd = client();
                let a = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
                let b = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
                a.lock().await.unwrap();
                match b.lock().await {
                    Err(Error::AlreadyLocked { key: k, index }) => {
                        assert_eq!(k, key);
                        assert!(index > 0);
                    }
                    other => panic!("expected AlreadyLocked, got {other:?}"),
                }
                assert_eq!(holder(&key).as_deref(), Some("node-a"));
            }

            #[$test]
            async fn lock_twice_by_same_node_is_already_locked() {
                let key = unique_key("lock-twice");
                let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
                a.lock().await.unwrap();
                assert!(matches!(a.lock().await, Err(Error::AlreadyLocked { .. })));
            }

            #[$test]
            async fn handles_are_send_and_sync_and_work_from_spawned_tasks() {
                fn send_sync<T: Send + Sync + 'static>() {}
                fn send<T: Send>(_: &T) {}
                send_sync::<Etcd>();
                send_sync::<Microlock>();
                send_sync::<Error>();
                send_sync::<$ml::Events>();
                let key = unique_key("spawned");
                let lock =
                    std::sync::Arc::new(Microlock::new(&client(), &key, "node-a", TTL).unwrap());
                // Every future the API returns can move to another thread.
                send(&lock.lock());
                send(&lock.unlock());
                send(&lock.renew());
                send(&lock.acquire(TTL));
                send(&lock.guard(TTL));
                let mut events = lock.events();
                send(&events.next());
                // One lock shared by tasks: locked in one, renewed and released in others.
                let l = lock.clone();
                let fence = rt::spawn(async move { l.lock().await }).await.unwrap();
                let l = lock.clone();
                let renewed = rt::spawn(async move { l.renew().await }).await.unwrap();
                assert_eq!(renewed.token(), fence.token());
                let l = lock.clone();
                rt::spawn(async move {
                    let guard_attempt = l.lock().await;
                    assert!(matches!(guard_attempt, Err(Error::AlreadyLocked { .. })));
                    l.unlock().await
                })
                .await
                .unwrap();
                assert_eq!(stored(&key), None);
                let l = lock.clone();
                rt::spawn(async move {
                    let guard = l.guard(TTL).await.unwrap();
                    assert!(guard.is_held());
                    guard.release().await
                })
                .await
                .unwrap();
                assert!(!lock.is_held());
                let _ = events;
            }

            #[$test]
            async fn leading_slash_names_the_same_key() {
                let key = unique_key("slash");
                let etcd = client();
                let a = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
                let b = Microlock::new(&etcd, &format!("/{key}"), "node-b", TTL).unwrap();
                a.lock().await.unwrap();
                assert!(matches!(b.lock().await, Err(Error::AlreadyLocked { .. })));
            }

            #[$test]
            async fn concurrent_lockers_exactly_one_wins() {
                let key = unique_key("race");
                let etcd = client();
                let locks: Vec<_> = (0..8)
                    .map(|i| Microlock::new(&etcd, &key, &format!("node-{i}"), TTL).unwrap())
                    .collect();
                let mut wins = 0;
                let mut futures = Vec::new();
                for l in &locks {
                    futures.push(l.lock());
                }
                for f in futures {
                    match f.await {
                        Ok(_) => wins += 1,
                        Err(Error::AlreadyLocked { .. }) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                assert_eq!(wins, 1);
            }

            // ----- unlock -------------------------------------------------------------------

            #[$test]
            async fn unlock_own_lock_releases_it() {
                let key = unique_key("unlock-own");
                let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
                a.lock().await.unwrap();
                a.unlock().await.expect("own lock unlocks");
                assert_eq!(stored(&key), None);
                a.lock().await.expect("can lock again after unlock");
            }

            #[$test]
            async fn unlock_others_lock_is_not_owned() {
                let key = unique_key("unlock-other");
                let etcd = client();
                let a = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
                let b = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
                a.lock().await.unwrap();
                match b.unlock().await {
                    Err(Error::LockNotOwned { key: k }) => assert_eq!(k, key),
                    other => panic!("expected LockNotOwned, got {other:?}"),
                }
                assert_eq!(holder(&key).as_deref(), Some("node-a"));
            }

            #[$test]
            async fn unlock_free_key_is_not_owned() {
                let key = unique_key("unlock-none");
                let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
                assert!(matches!(a.unlock().await, Err(Error::LockNotOwned { .. })));
            }

            // ----- renew --------------------------------------------------------------------

            #[$test]
            async fn renew_others_lock_is_not_owned() {
                let key = unique_key("renew-other");
                let etcd = client();
                let a = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
                let b = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
                a.lock().await.unwrap();
                assert!(matches!(b.renew().await, Err(Error::LockNotOwned { .. })));
                assert_eq!(holder(&key).as_deref(), Some("node-a"));
            }

            #[$test]
            async fn renew_free_key_is_not_owned() {
                let key = unique_key("renew-none");
                let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
                assert!(matches!(a.renew().await, Err(Error::LockNotOwned { .. })));
                assert_eq!(
                    stored(&key),
                    None,
                    "renew must not create the key"
                );
            }

            // ----- events -------------------------------------------------------------------

            #[$test]
            async fn events_report_locked_and_unlocked_for_any_node() {
                let key = unique_key("events");
                let etcd = client();
                let observer = Microlock::new(&etcd, &key, "observer", TTL).unwrap();
                let a = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
                let mut events = observer.events();
                let mut own = a.events();
                let fence = a.lock().await.unwrap();
                let token = assert_locked(&next_event(&mut events).await, "node-a");
                assert_eq!(token, fence.token());
                assert_locked(&next_event(&mut own).await, "node-a");
                a.unlock().await.unwrap();
                assert_unlocked(&next_event(&mut events).await, "node-a", false);
                assert_unlocked(&next_event(&mut own).await, "node-a", false);
            }

            #[$test]
            async fn events_report_unlocked_when_ttl_expires() {
                let key = unique_key("expire-event");
                let etcd = client();
                let observer = Microlock::new(&etcd, &key, "observer", TTL).unwrap();
                let a = Microlock::new(&etcd, &key, "node-a", Duration::from_secs(1)).unwrap();
                let mut events = observer.events();
                a.lock().await.unwrap();
                assert_locked(&next_event(&mut events).await, "node-a");
                assert_unlocked(&next_event(&mut events).await, "node-a", EXPIRY_IS_TOLD);
                assert_eq!(stored(&key), None);
            }

            #[$test]
            async fn renew_produces_no_event() {
                let key = unique_key("renew-quiet");
                let a = Microlock::new(&client(), &key, "node-a", TTL).unwrap();
                let mut events = a.events();
                a.lock().await.unwrap();
                assert_locked(&next_event(&mut events).await, "node-a");
                a.renew().await.unwrap();
                a.renew().await.unwrap();
                a.unlock().await.unwrap();
                // Had a renew produced an event, it would come before this one.
                assert_unlocked(&next_event(&mut events).await, "node-a", false);
            }

            #[$test]
            async fn ttl_expiry_frees_the_lock_for_another_node() {
                let key = unique_key("expire-free");
                let etcd = client();
                let a = Microlock::new(&etcd, &key, "node-a", Duration::from_secs(1)).unwrap();
                let b = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
                let mut events = b.events();
                let first = a.lock().await.unwrap();
                assert!(matches!(b.lock().await, Err(Error::AlreadyLocked { .. })));
                assert_locked(&next_event(&mut events).await, "node-a");
                assert_unlocked(&next_event(&mut events).await, "node-a", EXPIRY_IS_TOLD);
                let second = b.lock().await.expect("free after expiry");
                assert!(second.token() > first.token(), "fencing tokens increase");
                assert!(matches!(a.renew().await, Err(Error::LockNotOwned { .. })));
                assert!(matches!(a.unlock().await, Err(Error::LockNotOwned { .. })));
                assert!(!a.is_held() && b.is_held());
                assert_eq!(holder(&key).as_deref(), Some("node-b"));
            }

            // ----- connections ---------------------------------------------------------------

            #[$test]
            async fn lock_unlock_cycles_keep_one_connection_alive() {
                let proxy = $crate::proxy::CountingProxy::start(&proxy_target());
                let etcd = client_for(vec![through_proxy(&proxy.url)]);
                let key = unique_key("keepalive");
                let a = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
                for _ in 0..50 {
                    a.lock().await.unwrap();
                    a.unlock().await.unwrap();
                }
                assert_eq!(proxy.accepted(), 1, "50 lock/unlock cycles, one connection");
            }

            // ----- failures are never contention --------------------------------------------

            #[$test]
            async fn silent_etcd_is_a_timeout_and_destroy_fails_pending() {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let port = listener.local_addr().unwrap().port();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for s in listener.incoming() {
                        held.push(s); // accept, never answer
                    }
                });
                let etcd = client_for(vec![format!("{SCHEME}://127.0.0.1:{port}")]);
                let config = Config::new("silent", "node-a", TTL)
                    .unwrap()
                    .with_request_timeout(Duration::from_millis(300));
                let a = Microlock::with_config(&etcd, config.clone()).unwrap();
                let started = std::time::Instant::now();
                match a.lock().await {
                    Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(300)),
                    other => panic!("expected Timeout, got {other:?}"),
                }
                assert!(started.elapsed() < Duration::from_secs(5));
                assert!(matches!(a.unlock().await, Err(Error::Timeout { .. })));

                let b =
                    Microlock::with_config(&etcd, config.with_request_timeout(PATIENCE)).unwrap();
                let pending = b.lock();
                let destroy = async {
                    b.destroy();
                };
                let (result, ()) = join(pending, destroy).await;
                assert_eq!(result, Err(Error::Destroyed));
            }

            async fn join<A: std::future::Future, B: std::future::Future>(
                a: A,
                b: B,
            ) -> (A::Output, B::Output) {
                // A minimal two-future join, runtime-agnostic.
                use std::pin::pin;
                use std::task::Poll;
                let (mut a, mut b) = (pin!(a), pin!(b));
                let (mut ra, mut rb) = (None, None);
                std::future::poll_fn(|cx| {
                    if ra.is_none() {
                        if let Poll::Ready(v) = a.as_mut().poll(cx) {
                            ra = Some(v);
                        }
                    }
                    if rb.is_none() {
                        if let Poll::Ready(v) = b.as_mut().poll(cx) {
                            rb = Some(v);
                        }
                    }
                    if ra.is_some() && rb.is_some() {
                        Poll::Ready((ra.take().unwrap(), rb.take().unwrap()))
                    } else {
                        Poll::Pending
                    }
                })
                .await
            }

            /// Runs both futures; returns the first to finish (the other is dropped).
            async fn race<A: std::future::Future, B: std::future::Future>(
                a: A,
                b: B,
            ) -> Result<A::Output, B::Output> {
                use std::pin::pin;
                use std::task::Poll;
                let (mut a, mut b) = (pin!(a), pin!(b));
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(v) = a.as_mut().poll(cx) {
                        return Poll::Ready(Ok(v));
                    }
                    if let Poll::Ready(v) = b.as_mut().poll(cx) {
                        return Poll::Ready(Err(v));
                    }
                    Poll::Pending
                })
                .await
            }

            /// Waits until the member at `url` serves exactly `n` watches. etcd offers no
            /// notification for that, so this polls its statistics (bounded).
            async fn watchers_become(url: &str, n: u64) {
                let until = std::time::Instant::now() + PATIENCE;
                while watchers(url) != n {
                    assert!(
                        std::time::Instant::now() < until,
                        "watchers never became {n}"
                    );
                    rt::sleep(Duration::from_millis(2)).await;
                }
            }

            // ----- waiting acquire, auto-renew, fencing, guards ----------------------------

            #[$test]
            async fn waiter_wakes_on_the_release_itself() {
                let server = own_etcd().await;
                let url = server.client_url();
                let etcd = client_for(vec![client_url_of(&server)]);
                let a = Microlock::new(&etcd, "wake", "node-a", LONG).unwrap();
                let b = Microlock::new(&etcd, "wake", "node-b", TTL).unwrap();
                let first = a.lock().await.unwrap();
                let release = async {
                    watchers_become(&url, 1).await; // b is parked in its watch
                    let at = std::time::Instant::now();
                    a.unlock().await.unwrap();
                    at
                };
                let (got, released_at) = join(b.acquire(PATIENCE), release).await;
                let fence = got.expect("acquired after the release");
                let latency = released_at.elapsed();
                assert!(fence.token() > first.token());
                assert!(b.is_held());
                assert!(
                    latency < Duration::from_millis(500),
                    "woke after {latency:?}"
                );
                assert_no_watch_left(&url).await;
            }

            #[$test]
            async fn wake_up_latency_over_fifty_handovers() {
                let server = own_etcd().await;
                let url = server.client_url();
                let etcd = client_for(vec![client_url_of(&server)]);
                let a = Microlock::new(&etcd, "latency", "node-a", LONG).unwrap();
                let b = Microlock::new(&etcd, "latency", "node-b", TTL).unwrap();
                let mut latencies = Vec::new();
                let mut last = 0;
                for _ in 0..50 {
                    let held = a.lock().await.unwrap();
                    assert!(held.token() > last);
                    let release = async {
                        watchers_become(&url, 1).await;
                        let at = std::time::Instant::now();
                        a.unlock().await.unwrap();
                        at
                    };
                    let (got, released_at) = join(b.acquire(PATIENCE), release).await;
                    let fence = got.unwrap();
                    latencies.push(released_at.elapsed());
                    assert!(fence.token() > held.token());
                    last = fence.token();
                    b.unlock().await.unwrap();
                }
                latencies.sort();
                let p50 = latencies[latencies.len() / 2];
                let p90 = latencies[latencies.len() * 9 / 10];
                println!(
                    "{}: waiter wake-up after release over {} runs: p50 {:?}, p90 {:?}, max {:?}",
                    stringify!($ml),
                    latencies.len(),
                    p50,
                    p90,
                    latencies[latencies.len() - 1]
                );
                assert!(p50 < Duration::from_millis(100), "p50 {p50:?}");
            }

            #[$test]
            async fn waiter_acquires_when_the_holders_ttl_expires() {
                let key = unique_key("wait-expiry");
                let etcd = client();
                let a = Microlock::new(&etcd, &key, "node-a", Duration::from_secs(1)).unwrap();
                let b = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
                let first = a.lock().await.unwrap();
                let started = std::time::Instant::now();
                let second = b.acquire(PATIENCE).await.expect("acquired after expiry");
                assert!(second.token() > first.token());
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{:?}",
                    started.elapsed()
                );
                assert_eq!(holder(&key).as_deref(), Some("node-b"));
            }

            #[$test]
            async fn acquire_deadline_is_a_wait_timeout() {
                let key = unique_key("wait-timeout");
                let etcd = client();
                let a = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
                let b = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
                a.lock().await.unwrap();
                let started = std::time::Instant::now();
                match b.acquire(Duration::from_millis(300)).await {
                    Err(Error::WaitTimeout { waited }) => {
                        assert!(waited >= Duration::from_millis(300), "{waited:?}")
                    }
                    other => panic!("expected WaitTimeout, got {other:?}"),
                }
                assert!(started.elapsed() < Duration::from_secs(3));
                assert!(!b.is_held());
                assert_eq!(holder(&key).as_deref(), Some("node-a"));
            }

            #[$test]
            async fn cancelled_waiter_leaves_nothing_behind() {
                let server = own_etcd().await;
                let url = server.client_url();
                let etcd = client_for(vec![client_url_of(&server)]);
                let a = Microlock::new(&etcd, "cancel", "node-a", LONG).unwrap();
                let b = Microlock::new(&etcd, "cancel", "node-b", TTL).unwrap();
                a.lock().await.unwrap();
                // Drop b's acquire once it is parked in its watch.
                let outcome = race(b.acquire(Duration::MAX), watchers_become(&url, 1)).await;
                assert!(
                    outcome.is_err(),
                    "the acquire cannot finish while a holds the lock"
                );
                watchers_become(&url, 0).await; // its long poll is gone
                a.unlock().await.unwrap();
                let c = Microlock::new(&etcd, "cancel", "node-c", TTL).unwrap();
                c.lock().await.expect("nobody else took it");
                assert!(!b.is_held());
                assert_eq!(holder_at(&url, "cancel").as_deref(), Some("node-c"));
            }

            #[$test]
            async fn auto_renew_keeps_the_lock_across_three_ttls() {
                let key = unique_key("auto-renew");
                let etcd = client();
                let a = Microlock::new(&etcd, &key, "node-a", Duration::from_secs(1)).unwrap();
                let b = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
                let guard = a.guard(PATIENCE).await.unwrap();
                let token = guard.token();
                rt::sleep(Duration::from_millis(3500)).await; // 3.5 TTLs pass
                assert!(guard.is_held(), "still held after 3.5 TTLs");
                assert_eq!(
                    hold(&key),
                    Some(("node-a".to_owned(), token)),
                    "renewed, not re-created"
                );
                assert!(matches!(b.lock().await, Err(Error::AlreadyLocked { .. })));
                guard.release().await.unwrap();
                assert_eq!(stored(&key), None);
                assert!(!a.is_held());
            }

            #[$test]
            async fn a_guard_gives_auto_renew_back_as_the_caller_set_it() {
                let key = unique_key("guard-renew");
                let etcd = client();
                let short = Duration::from_secs(1);
                // The caller's own auto-renew survives a guard's release: a later plain hold
                // of a 1 s lease still lives after 2.5 s.
                let a = Microlock::new(&etcd, &key, "node-a", short).unwrap();
                a.set_auto_renew(true);
                a.guard(PATIENCE).await.unwrap().release().await.unwrap();
                let fence = a.lock().await.unwrap();
                rt::sleep(Duration::from_millis(2500)).await;
                assert!(a.is_held(), "renewed by the caller's setting");
                assert_eq!(
                    hold(&key),
                    Some(("node-a".to_owned(), fence.token())),
                    "still there"
                );
                a.unlock().await.unwrap();
                // A cancelled guard() does not leave auto-renew on: a later plain hold of a
                // 1 s lease expires.
                let holder = Microlock::new(&etcd, &key, "node-h", LONG).unwrap();
                holder.lock().await.unwrap();
                let b = Microlock::new(&etcd, &key, "node-b", short).unwrap();
                let attempt = rt::timeout(Duration::from_millis(300), b.guard(PATIENCE)).await;
                assert!(attempt.is_none(), "the key is held: the guard waits");
                holder.unlock().await.unwrap();
                b.lock().await.unwrap();
                let mut events = b.events();
                let token = assert_locked(&next_event(&mut events).await, "node-b");
                // Not renewed: the hold ends locally first, then etcd expires the key.
                match next_event(&mut events).await {
                    Event::Lost { token: t, reason } => {
                        assert_eq!(t, token);
                        assert_eq!(reason, $ml::LostReason::Expired);
                    }
                    other => panic!("expected Lost, got {other:?}"),
                }
                assert_unlocked(&next_event(&mut events).await, "node-b", EXPIRY_IS_TOLD);
                assert!(!b.is_held());
            }

            #[$test]
            async fn dropping_a_guard_releases_the_lock() {
                let key = unique_key("guard-drop");
                let etcd = client();
                let a = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
                let b = Microlock::new(&etcd, &key, "node-b", TTL).unwrap();
                let token = {
                    let guard = a.guard(PATIENCE).await.unwrap();
                    assert!(guard.is_held() && a.is_held());
                    assert_eq!(a.fence().map(|f| f.token()), Some(guard.token()));
                    guard.token()
                };
                // Released in the background: b gets it long before the 5 s TTL.
                let started = std::time::Instant::now();
                let fence = b.acquire(PATIENCE).await.unwrap();
                assert!(
                    started.elapsed() < TTL - Duration::from_millis(500),
                    "{:?}",
                    started.elapsed()
                );
                assert!(fence.token() > token);
            }

            #[$test]
            async fn tokens_strictly_increase_and_fence_every_holder() {
                let key = unique_key("fencing");
                let etcd = client();
                let nodes: Vec<_> = (0..3)
                    .map(|i| Microlock::new(&etcd, &key, &format!("node-{i}"), TTL).unwrap())
                    .collect();
                let mut store = $crate::fenced::FencedStore::default();
                for round in 0..9 {
                    let lock = &nodes[round % 3];
                    let fence = lock.acquire(PATIENCE).await.unwrap();
                    store
                        .write(fence.token())
                        .expect("a current holder's token is accepted");
                    lock.unlock().await.unwrap();
                }
                assert!(
                    store.accepted.windows(2).all(|w| w[0] < w[1]),
                    "{:?}",
                    store.accepted
                );
                let first = store.accepted[0];
                assert!(store.write(first).is_err(), "a stale token is refused");
            }

            #[$test]
            async fn paused_holder_loses_the_lock_and_its_stale_token_is_fenced() {
                use std::io::BufRead;
                let key = unique_key("paused");
                let mut child = std::process::Command::new(HOLDER_EXE)
                    .args([stringify!($ml), &url(), &key, "paused-holder", "2"])
                    .arg(format!("{PROTOCOL:?}"))
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("holder process");
                struct Kill(std::process::Child);
                impl Drop for Kill {
                    fn drop(&mut self) {
                        let _ = self.0.kill();
                        let _ = self.0.wait();
                    }
                }
                let stdout = child.stdout.take().unwrap();
                let pid = child.id();
                let _child = Kill(child);
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    for line in std::io::BufReader::new(stdout).lines() {
                        if tx.send(line.unwrap()).is_err() {
                            break;
                        }
                    }
                });
                let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
                let next_line = || {
                    let rx = rx.clone();
                    rt::blocking(move || rx.lock().unwrap().recv_timeout(PATIENCE).expect("a line"))
                };
                let line = next_line().await;
                let stale: u64 = line.strip_prefix("token ").unwrap().parse().unwrap();
                let mut store = $crate::fenced::FencedStore::default();
                store.write(stale).unwrap(); // it really held the lock

                etcd::pause(pid); // SIGSTOP: no renewals, no timers
                let b = Microlock::new(&client(), &key, "node-b", TTL).unwrap();
                let fence = b
                    .acquire(PATIENCE)
                    .await
                    .expect("the paused holder's lease expires");
                assert!(fence.token() > stale);
                store
                    .write(fence.token())
                    .expect("the new holder's token is accepted");

                etcd::resume(pid); // SIGCONT: it finds out
                let lost = next_line().await;
                assert!(lost == "lost Expired" || lost == "lost NotOwned", "{lost}");
                let line = next_line().await;
                let write: u64 = line.strip_prefix("write ").unwrap().parse().unwrap();
                assert_eq!(write, stale);
                let refused = store.write(write).expect_err("the stale token is refused");
                assert_eq!(refused.highest, fence.token());
                assert!(b.is_held());
            }

            // ----- hostile keys and node ids ------------------------------------------------

            #[test]
            fn invalid_input_is_rejected_at_construction() {
                let etcd = Etcd::default();
                for key in ["", "/", "a//b", "a/", ".", "a/../b", "nul\0"] {
                    assert!(
                        matches!(Config::new(key, "n", TTL), Err(Error::InvalidKey { .. })),
                        "key {key:?}"
                    );
                }
                assert!(matches!(
                    Config::new("k", "", TTL),
                    Err(Error::InvalidNodeId { .. })
                ));
                assert!(matches!(
                    Config::new("k", "n", Duration::from_millis(999)),
                    Err(Error::InvalidTtl { .. })
                ));
                assert_eq!(
                    Config::new("k", "n", Duration::from_millis(1001))
                        .unwrap()
                        .ttl_secs(),
                    2
                );
                assert!(matches!(
                    Etcd::new(["ftp://x"]),
                    Err(Error::InvalidEndpoint { .. })
                ));
                assert!(matches!(
                    Etcd::new(Vec::<String>::new()),
                    Err(Error::InvalidEndpoint { .. })
                ));
                // node-etcd's scheme-less `host:port`, and etcdctl's comma-separated lists.
                let bare = Etcd::new(["127.0.0.1:2379", "http://localhost:22379,127.0.0.1:1/"]);
                let urls: Vec<String> = bare
                    .unwrap()
                    .endpoints()
                    .iter()
                    .map(|e| e.to_string())
                    .collect();
                assert_eq!(
                    urls,
                    [
                        "http://127.0.0.1:2379",
                        "http://localhost:22379",
                        "http://127.0.0.1:1"
                    ]
                );
                assert!(matches!(
                    Etcd::new(["127.0.0.1:2379,"]),
                    Err(Error::InvalidEndpoint { .. })
                ));
                let _ = etcd;
            }

            // ===== bounded connections =====================================================
            // Per-member connection caps (`max_connections_per_member`) and the separate
            // budget of long polls (`max_watches_per_member`). One block, added as a whole;
            // its helpers and cases are all named `bounded_*`.

            /// The client under test on `endpoints`, with at most `connections` connections per
            /// member for short requests and `watches` for long polls (TLS flavour: the test
            /// PKI, as `client_for`).
            fn bounded_client(endpoints: Vec<String>, connections: usize, watches: usize) -> Etcd {
                let mut builder = Etcd::builder(endpoints)
                    .protocol(PROTOCOL)
                    .max_connections_per_member(connections)
                    .max_watches_per_member(watches);
                if SCHEME == "https" {
                    let pki = $crate::tls::pki();
                    builder = builder
                        .ca_pem(pki.ca_pem())
                        .client_cert_pem(pki.client_cert_pem(), pki.client_key_pem());
                }
                builder.build().expect("a valid client")
            }

            /// Runs `futures` together on this task; their outputs, in order.
            async fn bounded_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
                use std::task::Poll;
                let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
                let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
                std::future::poll_fn(|cx| {
                    let mut pending = false;
                    for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
                        if output.is_none() {
                            match future.as_mut().poll(cx) {
                                Poll::Ready(v) => *output = Some(v),
                                Poll::Pending => pending = true,
                            }
                        }
                    }
                    if pending {
                        Poll::Pending
                    } else {
                        Poll::Ready(())
                    }
                })
                .await;
                outputs
                    .into_iter()
                    .map(|o| o.expect("finished"))
                    .collect()
            }

            /// Waits until [`bounded_waiting`] counts `n` lockers that found one of `keys` held
            /// at the member at `url` (polls etcd, as `watchers_become` does; bounded).
            async fn bounded_waiting_reach(url: &str, keys: &[&str], n: u64) {
                let until = std::time::Instant::now() + PATIENCE;
                while bounded_waiting(url, keys) < n {
                    assert!(std::time::Instant::now() < until, "never {n} lockers waiting");
                    rt::sleep(Duration::from_millis(2)).await;
                }
            }

            /// A TCP proxy to `target` (`host:port`, or `http://host:port`) that, while `stall`
            /// is set, accepts connections and never answers them (a member that hangs); its
            /// `http://` URL.
            fn bounded_stalling_proxy(
                target: &str,
                stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
            ) -> String {
                use std::io::{Read, Write};
                use std::net::{Shutdown, TcpListener, TcpStream};
                fn pipe(mut from: TcpStream, mut to: TcpStream) {
                    let mut buf = [0; 16 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                }
                let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
                let url = format!("http://{}", listener.local_addr().expect("bound"));
                let target = target.trim_start_matches("http://").to_owned();
                std::thread::spawn(move || {
                    let mut stalled = Vec::new();
                    for client in listener.incoming().flatten() {
                        if stall.load(std::sync::atomic::Ordering::SeqCst) {
                            stalled.push(client); // held open, never read, never answered
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(&target) else {
                            continue;
                        };
                        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                            std::thread::spawn(move || pipe(c, s));
                            std::thread::spawn(move || pipe(server, client));
                        }
                    }
                });
                url
            }

            /// With a cap of 2, 50 lock/unlock cycles on 50 keys at once queue for the two
            /// connections: all succeed, and no third connection is ever opened (the proxy
            /// counts every connection accepted). Bound: PATIENCE for the 100 requests
            /// (uncontended, well under a second).
            #[$test]
            async fn bounded_fifty_concurrent_cycles_share_two_connections() {
                let proxy = $crate::proxy::CountingProxy::start(&proxy_target());
                let etcd = bounded_client(vec![through_proxy(&proxy.url)], 2, 1);
                let locks: Vec<Microlock> = (0..50)
                    .map(|_| {
                        Microlock::new(&etcd, &unique_key("bounded-cycles"), "node-a", TTL)
                            .unwrap()
                    })
                    .collect();
                let cycles = locks.iter().map(|lock| async move {
                    let fence = lock.lock().await?;
                    lock.unlock().await.map(|()| fence)
                });
                let results = rt::timeout(PATIENCE, bounded_all(cycles.collect()))
                    .await
                    .expect("50 cycles within the patience bound");
                for result in &results {
                    assert!(result.is_ok(), "{result:?}");
                }
                assert!(
                    proxy.accepted() <= 2,
                    "{} connections opened with a cap of 2",
                    proxy.accepted()
                );
            }

            /// Waiting acquires past the watch budget (1 here) still take their lock once it is
            /// released: their watches wait behind the first waiter's (on a key that stays
            /// held), and their liveness probes (a quorum read every half watch liveness, 0.5 s
            /// here) find the key free. Bound: taken within 5 s of the release (expected about
            /// 0.5 s); etcd never serves more than the one watch.
            #[$test]
            async fn bounded_waiters_past_the_watch_budget_take_released_locks_through_probes() {
                let server = own_etcd().await;
                let url = server.client_url();
                let etcd = bounded_client(vec![client_url_of(&server)], 4, 1);
                let keys = ["bounded-0", "bounded-1", "bounded-2"];
                let holders: Vec<Microlock> = (keys.iter())
                    .map(|key| Microlock::new(&etcd, key, "holder", LONG).unwrap())
                    .collect();
                for holder in &holders {
                    holder.lock().await.unwrap();
                }
                let waiters: Vec<Microlock> = (keys.iter())
                    .map(|key| {
                        let config = Config::new(key, "waiter", LONG)
                            .unwrap()
                            .with_watch_liveness(Duration::from_secs(1));
                        Microlock::with_config(&etcd, config).unwrap()
                    })
                    .collect();
                let later = async {
                    watchers_become(&url, 1).await; // the first waiter's watch has the slot
                    let waiting = bounded_waiting(&url, &keys);
                    let waits = vec![waiters[1].acquire(PATIENCE), waiters[2].acquire(PATIENCE)];
                    let release = async {
                        // Both found their key held: their watches wait for the slot.
                        bounded_waiting_reach(&url, &keys, waiting + 2).await;
                        holders[1].unlock().await.unwrap();
                        holders[2].unlock().await.unwrap();
                        std::time::Instant::now()
                    };
                    let (results, released) = join(bounded_all(waits), release).await;
                    let took = released.elapsed();
                    for result in &results {
                        assert!(result.is_ok(), "{result:?}");
                    }
                    assert_eq!(
                        watchers(&url),
                        1,
                        "the later waiters' watches never reached etcd"
                    );
                    holders[0].unlock().await.unwrap();
                    took
                };
                let (first, took) = join(waiters[0].acquire(PATIENCE), later).await;
                first.expect("the first waiter takes its lock on its release");
                println!(
                    "{}: waiters past the watch budget took their locks {took:?} after the release",
                    stringify!($ml)
                );
                assert!(took < Duration::from_secs(5), "took {took:?}");
                assert_eq!(holder_at(&url, "bounded-1").as_deref(), Some("waiter"));
                assert_eq!(holder_at(&url, "bounded-2").as_deref(), Some("waiter"));
            }

            /// Watches dropped while they wait for a slot (cancelled acquires) leave the queue,
            /// and the one holding the slot gives it back when cancelled: with a budget of 1, a
            /// later waiter's watch still reaches etcd, and wakes it on the release. Bound:
            /// PATIENCE per wait.
            #[$test]
            async fn bounded_cancelled_waiters_give_their_watch_places_back() {
                let server = own_etcd().await;
                let url = server.client_url();
                let etcd = bounded_client(vec![client_url_of(&server)], 4, 1);
                // Five keys held, one waiter each (each the only one waiting for its key).
                let keys: Vec<String> = (0..5).map(|i| format!("bounded-held-{i}")).collect();
                let holders: Vec<Microlock> = (keys.iter())
                    .map(|key| Microlock::new(&etcd, key, "holder", LONG).unwrap())
                    .collect();
                for holder in &holders {
                    holder.lock().await.unwrap();
                }
                let waiters: Vec<Microlock> = (keys.iter())
                    .map(|key| Microlock::new(&etcd, key, "waiter", TTL).unwrap())
                    .collect();
                let names: Vec<&str> = keys.iter().map(String::as_str).collect();
                let waiting = bounded_waiting(&url, &names);
                // Five waits: one watch out, four waiting for its slot; then all cancelled.
                let waits = bounded_all(waiters.iter().map(|w| w.acquire(Duration::MAX)).collect());
                let all_waiting = async {
                    // All found their key held.
                    bounded_waiting_reach(&url, &names, waiting + 5).await;
                    watchers_become(&url, 1).await;
                };
                let outcome = race(waits, all_waiting).await;
                assert!(outcome.is_err(), "nobody acquires while the holders hold");
                watchers_become(&url, 0).await; // the watch that was out is gone
                // Had a place been kept by a cancelled watch, this one would never be sent.
                let late = Microlock::new(&etcd, &keys[0], "late", TTL).unwrap();
                let release = async {
                    watchers_become(&url, 1).await;
                    holders[0].unlock().await.unwrap();
                };
                let (got, ()) = join(late.acquire(PATIENCE), release).await;
                got.expect("the late waiter takes the lock on its release");
                assert_eq!(holder_at(&url, &keys[0]).as_deref(), Some("late"));
            }

            /// A request still waiting for a connection when the machine gives up on it leaves
            /// the queue, and one given up on while on its connection closes it: neither keeps
            /// its place. With a cap of 1 and a member that hangs (a proxy holding connections
            /// unanswered), ten locks at once all fail — never as contention — within their
            /// budget (4 request timeouts of 300 ms, plus one: bound PATIENCE); once the member
            /// answers again, the same handle, whose one place would be lost otherwise, locks at
            /// once.
            #[$test]
            async fn bounded_requests_given_up_on_in_the_queue_give_their_places_back() {
                let stall = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
                let proxy = bounded_stalling_proxy(&proxy_target(), stall.clone());
                let etcd = bounded_client(vec![through_proxy(&proxy)], 1, 1);
                let locks: Vec<Microlock> = (0..10)
                    .map(|_| {
                        let config = Config::new(&unique_key("bounded-hung"), "node-a", TTL)
                            .unwrap()
                            .with_request_timeout(Duration::from_millis(300));
                        Microlock::with_config(&etcd, config).unwrap()
                    })
                    .collect();
                let all = bounded_all(locks.iter().map(|l| l.lock()).collect());
                let results = rt::timeout(PATIENCE, all)
                    .await
                    .expect("every lock answers within its budget");
                for result in &results {
                    match result {
                        Err(Error::AlreadyLocked { .. })
                        | Err(Error::LockNotOwned { .. })
                        | Ok(_) => {
                            panic!("expected a failure, not contention or success: {result:?}")
                        }
                        Err(_) => {}
                    }
                }
                stall.store(false, std::sync::atomic::Ordering::SeqCst);
                let lock =
                    Microlock::new(&etcd, &unique_key("bounded-after"), "node-a", TTL).unwrap();
                rt::timeout(PATIENCE, lock.lock())
                    .await
                    .expect("the one place is free again")
                    .expect("locked once the member answers");
                lock.unlock().await.unwrap();
            }

            // ===== end of bounded connections ==============================================

            // ----- fair waiting (the queues themselves: each protocol's own block) ----------

            #[test]
            fn queue_directories_are_reserved() {
                let e = Microlock::new(&client(), "jobs/_microlock/queue/x", "n", TTL);
                assert!(matches!(e, Err(Error::InvalidKey { .. })), "{e:?}");
            }
        }
    };
}
