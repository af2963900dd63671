//! The conformance suite against `microlock-tokio` on real etcd.
microlock_tests::conformance_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test);
