//! The conformance suite against `microlock-async-std` on real etcd.
microlock_tests::conformance_suite!(
    microlock_async_std,
    microlock_tests::rt::async_std,
    async_std::test
);
