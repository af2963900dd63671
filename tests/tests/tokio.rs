//! The conformance suite (plain, over mutual TLS, and on etcd v3) and the secured-etcd suite against `microlock-tokio` on real etcd.
microlock_tests::conformance_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test);
microlock_tests::conformance_suite!(
    microlock_tokio,
    microlock_tests::rt::tokio,
    tokio::test,
    tls
);
microlock_tests::conformance_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test, v3);
microlock_tests::secured_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test);
