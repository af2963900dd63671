//! The conformance suite (plain, over mutual TLS, and on etcd v3) and the secured-etcd suite against `microlock-async-std` on real etcd, and what is this adapter's own: its loop, run by the callers waiting for an answer, never stalls nor spins.
microlock_tests::conformance_suite!(
    microlock_async_std,
    microlock_tests::rt::async_std,
    async_std::test
);
microlock_tests::conformance_suite!(
    microlock_async_std,
    microlock_tests::rt::async_std,
    async_std::test,
    tls
);
microlock_tests::conformance_suite!(
    microlock_async_std,
    microlock_tests::rt::async_std,
    async_std::test,
    v3
);
microlock_tests::secured_suite!(
    microlock_async_std,
    microlock_tests::rt::async_std,
    async_std::test
);

/// The async-std adapter runs its loop on the task of a caller waiting for an answer: a caller
/// that polls its future once and then keeps it without polling must not stall the lock (its
/// watch, its acquire). Bound: taken within 5 s of the release (the adapter's watchdog polls
/// the loop within 50 ms; 5 s covers a busy machine).
#[async_std::test]
async fn a_caller_that_stops_polling_does_not_stall_the_lock() {
    use microlock_async_std::{Etcd, Event, Microlock};
    use std::future::Future;
    use std::sync::Arc;
    use std::task::Poll;
    use std::time::{Duration, Instant};

    let etcd = Etcd::new([microlock_tests::etcd::shared().client_url()]).unwrap();
    let key = microlock_tests::etcd::unique_key("stuck-caller");
    let holder = Microlock::new(&etcd, &key, "holder", Duration::from_secs(30)).unwrap();
    let waiter = Arc::new(Microlock::new(&etcd, &key, "waiter", Duration::from_secs(30)).unwrap());
    holder.lock().await.unwrap();
    let mut events = waiter.events();
    let first = async_std::future::timeout(Duration::from_secs(15), events.next()).await;
    assert!(matches!(first, Ok(Some(Event::Locked { .. }))), "{first:?}");

    // Another task polls an acquire once, then holds it unpolled until told to let go.
    let (polled_tx, polled) = async_std::channel::bounded::<()>(1);
    let (release_tx, release) = async_std::channel::bounded::<()>(1);
    let w = waiter.clone();
    let stuck = async_std::task::spawn(async move {
        let mut acquire = Box::pin(w.acquire(Duration::from_secs(60)));
        let once = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx).is_ready()));
        assert!(!once.await, "the lock is held: the acquire waits");
        polled_tx.send(()).await.unwrap();
        let _ = release.recv().await; // `acquire` is kept, never polled again, until then
        drop(acquire);
    });
    polled.recv().await.unwrap();
    let released = Instant::now();
    holder.unlock().await.unwrap();
    // The waiter's loop goes on: its watch reports the release.
    let next = async_std::future::timeout(Duration::from_secs(5), events.next()).await;
    assert!(
        matches!(next, Ok(Some(Event::Unlocked { .. }))),
        "stalled: {next:?} after {:?}",
        released.elapsed()
    );
    release_tx.send(()).await.unwrap();
    stuck.await;
}

/// A waiting client costs nothing while it waits: its loop is polled only when something
/// happens (a request's progress, a timer), not in a loop. Counted: how often the waiter's loop
/// is polled (its lock's `tracing` span, `microlock`, is entered on every poll of the loop)
/// while its acquire waits 2 s on a lock held by another node, watch set up included. Measured:
/// about 10 on v2 and v3 (a handful per request; nothing while the watch is quiet). Bound: 200,
/// generous for a busy 2-core machine (a loop that spins, or wakes itself on a timer every
/// 10 ms, is polled thousands of times).
mod idle {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, Once};
    use std::time::Duration;

    use microlock_async_std::{Etcd, Microlock, Protocol};
    use microlock_tests::etcd::{shared, unique_key};
    use microlock_tests::inspect;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::subscriber::Interest;
    use tracing::{Event, Metadata, Subscriber};

    const WAIT: Duration = Duration::from_secs(2);
    const MAX_POLLS: u64 = 200;
    /// For anything etcd and the client should do quickly, on a busy 2-core machine.
    const PATIENCE: Duration = Duration::from_secs(15);
    const TTL: Duration = Duration::from_secs(30);

    /// Polls of the loops of locks whose node id starts with [`COUNTED`], by node id.
    static POLLS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    /// Which span is which counted node id.
    static SPANS: Mutex<BTreeMap<u64, String>> = Mutex::new(BTreeMap::new());
    static NEXT_SPAN: AtomicU64 = AtomicU64::new(1);
    const COUNTED: &str = "idle-";

    /// A `tracing` subscriber that only counts the entries into the `microlock` spans of
    /// counted locks (every other span and event is disabled).
    struct CountPolls;

    struct NodeId(Option<String>);

    impl Visit for NodeId {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "node_id" {
                self.0 = Some(format!("{value:?}"));
            }
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    impl Subscriber for CountPolls {
        fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
            match self.enabled(metadata) {
                true => Interest::always(),
                false => Interest::never(),
            }
        }

        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.is_span() && metadata.name() == "microlock"
        }

        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = NEXT_SPAN.fetch_add(1, Ordering::Relaxed);
            let mut node_id = NodeId(None);
            span.record(&mut node_id);
            if let Some(node_id) = node_id.0.filter(|n| n.starts_with(COUNTED)) {
                lock(&SPANS).insert(id, node_id);
            }
            Id::from_u64(id)
        }

        fn record(&self, _: &Id, _: &Record<'_>) {}

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, _: &Event<'_>) {}

        fn enter(&self, span: &Id) {
            if let Some(node_id) = lock(&SPANS).get(&span.into_u64()) {
                *lock(&POLLS).entry(node_id.clone()).or_default() += 1;
            }
        }

        fn exit(&self, _: &Id) {}
    }

    /// How often the loop of the lock of `node_id` was polled so far.
    fn polls(node_id: &str) -> u64 {
        lock(&POLLS).get(node_id).copied().unwrap_or(0)
    }

    /// Installs the counting subscriber (once per process; the other tests' locks are not
    /// counted).
    fn count_polls() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(CountPolls)
                .expect("no other global subscriber in this test binary");
        });
    }

    async fn an_idle_waiter_is_not_polled(protocol: Protocol) {
        count_polls();
        let url = shared().client_url();
        let etcd = Etcd::builder([url.as_str()])
            .protocol(protocol)
            .build()
            .unwrap();
        let key = unique_key("idle-waiter");
        let waiter_id = format!("{COUNTED}{key}");
        let holder = Microlock::new(&etcd, &key, "holder", TTL).unwrap();
        let waiter = Microlock::new(&etcd, &key, &waiter_id, TTL).unwrap();
        holder.lock().await.unwrap();
        let before = polls(&waiter_id);
        let waiting = async_std::task::spawn(async move {
            let fence = waiter.acquire(PATIENCE * 2).await;
            (waiter, fence)
        });
        // The passing of time is what this test is about: the waiter waits 2 s.
        async_std::task::sleep(WAIT).await;
        let polled = polls(&waiter_id) - before;
        println!("{protocol:?}: the waiter's loop was polled {polled} times in {WAIT:?}");
        if protocol == Protocol::V3 {
            // It did get to wait: its key is queued behind the holder's.
            assert_eq!(inspect::v3_keys(&url, &key).len(), 2, "queued");
        }
        // And it still waits, then takes the lock once it is released.
        holder.unlock().await.unwrap();
        let (waiter, fence) = async_std::future::timeout(PATIENCE, waiting)
            .await
            .expect("the waiter takes the released lock");
        fence.expect("acquired");
        waiter.unlock().await.unwrap();
        assert!(
            polled <= MAX_POLLS,
            "{protocol:?}: an idle waiter's loop was polled {polled} times in {WAIT:?}"
        );
    }

    #[async_std::test]
    async fn an_idle_v2_waiter_is_not_polled() {
        an_idle_waiter_is_not_polled(Protocol::V2).await;
    }

    #[async_std::test]
    async fn an_idle_v3_waiter_is_not_polled() {
        an_idle_waiter_is_not_polled(Protocol::V3).await;
    }
}
