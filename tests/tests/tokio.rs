//! The conformance suite (plain and over mutual TLS) and the secured-etcd suite against `microlock-tokio` on real etcd.
microlock_tests::conformance_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test);
microlock_tests::conformance_suite!(
    microlock_tokio,
    microlock_tests::rt::tokio,
    tokio::test,
    tls
);
microlock_tests::secured_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test);
