//! The conformance suite (plain and over mutual TLS) and the secured-etcd suite against `microlock-async-std` on real etcd; v3 is refused on this adapter for now.
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

/// v3 is not offered on this adapter yet (see `refuse_v3` in its lib.rs): a typed refusal at
/// construction, never a half-working lock.
#[test]
fn protocol_v3_is_refused_with_a_typed_error() {
    use microlock_async_std::{Config, Error, Etcd, Microlock, Protocol};
    let refused = |result: Result<(), Error>| match result {
        Err(Error::InvalidOption { option, .. }) => assert_eq!(option, "protocol"),
        other => panic!("expected InvalidOption(protocol), got {other:?}"),
    };
    refused(
        Etcd::builder(["http://127.0.0.1:2379"])
            .protocol(Protocol::V3)
            .build()
            .map(drop),
    );
    let config = Config::new("k", "n", std::time::Duration::from_secs(5))
        .unwrap()
        .with_protocol(Protocol::V3);
    refused(Microlock::with_config(&Etcd::default(), config).map(drop));
}
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
