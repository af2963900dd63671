//! Secured etcd: TLS misconfigurations, keep-alive over TLS, failover past a TLS failure,
//! `build()` errors, v2 authentication and `Etcd::from_env`, written once and run against
//! every adapter (like [`crate::conformance_suite`]):
//! ```text
//! microlock_tests::secured_suite!(microlock_tokio, microlock_tests::rt::tokio, tokio::test);
//! ```
//! Certificates come from [`crate::tls::pki`] (generated at test time); TLS cases use the
//! process's TLS etcd ([`crate::tls::shared_tls`]), authentication cases an etcd of their own
//! (enabling authentication changes the whole etcd).

/// Expands to the secured-etcd cases for the given adapter.
#[macro_export]
macro_rules! secured_suite {
    ($ml:ident, $rt:path, $test:meta) => {
        #[allow(unused_imports)]
        mod secured {
            use std::time::{Duration, Instant};

            use $crate::etcd::{unique_key, EtcdServer};
            use $crate::tls::{pki, shared_tls};
            use $crate::{auth, proxy::CountingProxy};
            use $ml::{AuthFailure, Error, Etcd, Microlock, TlsFailure};
            use $rt as rt;

            const TTL: Duration = Duration::from_secs(5);
            /// Anything etcd answers at once; a TLS failure must come back well within the
            /// operation budget (a failure to connect is not retried on a single member).
            const PATIENCE: Duration = Duration::from_secs(15);

            fn tls_url() -> String {
                shared_tls().tls_client_url().expect("a TLS etcd")
            }

            /// The TLS etcd's https port, as `127.0.0.1:PORT`.
            fn tls_addr() -> String {
                tls_url().trim_start_matches("https://").to_owned()
            }

            /// A handle trusting the test CA and presenting the test client certificate.
            fn mtls(urls: &[String]) -> Etcd {
                let p = pki();
                Etcd::builder(urls)
                    .ca_pem(&p.ca.pem)
                    .client_cert_pem(&p.client.cert.pem, &p.client.key.pem)
                    .build()
                    .expect("valid TLS settings")
            }

            /// The error of one `lock()` through `etcd`, within the patience bound.
            async fn lock_error(etcd: &Etcd) -> Error {
                let lock = Microlock::new(etcd, &unique_key("tls-error"), "node", TTL).unwrap();
                rt::timeout(PATIENCE, lock.lock())
                    .await
                    .expect("a TLS failure is reported within the bound")
                    .expect_err("the lock must fail")
            }

            fn assert_tls(error: &Error, expected: TlsFailure) {
                match error {
                    Error::Tls { failure, .. } => assert_eq!(*failure, expected, "{error}"),
                    other => panic!("expected a TLS error {expected:?}, got {other:?}"),
                }
            }

            #[$test]
            async fn mutual_tls_locks_and_unlocks() {
                let etcd = mtls(&[tls_url()]);
                let key = unique_key("mtls");
                let lock = Microlock::new(&etcd, &key, "node-a", TTL).unwrap();
                let fence = lock.lock().await.expect("lock over mutual TLS");
                assert!(fence.token() > 0);
                // The key is really there (read on the plain side channel).
                let node = $crate::inspect::node(&shared_tls().client_url(), &key).unwrap();
                assert_eq!(node["value"], "node-a");
                lock.renew().await.expect("renew over TLS");
                lock.unlock().await.expect("unlock over TLS");
            }

            #[$test]
            async fn unknown_ca_is_a_tls_error() {
                let p = pki();
                let etcd = Etcd::builder([tls_url()])
                    .ca_pem(&p.other_ca.pem)
                    .client_cert_pem(&p.client.cert.pem, &p.client.key.pem)
                    .build()
                    .unwrap();
                let error = lock_error(&etcd).await;
                assert_tls(&error, TlsFailure::UnknownIssuer);
                assert!(error.to_string().contains("trusted CA"), "{error}");
            }

            #[$test]
            async fn hostname_mismatch_is_a_tls_error() {
                // The server certificate names IP 127.0.0.1 only.
                let url = format!("https://localhost:{}", shared_tls().tls_client_port().unwrap());
                let error = lock_error(&mtls(&[url])).await;
                assert_tls(&error, TlsFailure::HostnameMismatch);
            }

            #[$test]
            async fn missing_client_certificate_is_a_tls_error() {
                let etcd = Etcd::builder([tls_url()]).ca_pem(&pki().ca.pem).build().unwrap();
                let error = lock_error(&etcd).await;
                assert_tls(&error, TlsFailure::ClientCertificateRequired);
                assert!(error.to_string().contains("client certificate"), "{error}");
            }

            #[$test]
            async fn expired_or_foreign_client_certificates_are_refused() {
                let p = pki();
                for identity in [&p.expired_client, &p.foreign_client] {
                    let etcd = Etcd::builder([tls_url()])
                        .ca_pem(&p.ca.pem)
                        .client_cert_pem(&identity.cert.pem, &identity.key.pem)
                        .build()
                        .unwrap();
                    let error = lock_error(&etcd).await;
                    assert_tls(&error, TlsFailure::ClientCertificateRejected);
                }
            }

            #[$test]
            async fn plaintext_to_a_tls_port_is_a_tls_error() {
                let etcd = Etcd::new([format!("http://{}", tls_addr())]).unwrap();
                let error = lock_error(&etcd).await;
                assert_tls(&error, TlsFailure::PlaintextToTls);
                assert!(error.to_string().contains("https://"), "{error}");
            }

            #[$test]
            async fn tls_to_a_plain_port_is_a_tls_error() {
                let plain = shared_tls().client_url().replace("http://", "https://");
                let error = lock_error(&mtls(&[plain])).await;
                assert_tls(&error, TlsFailure::NotTls);
            }

            /// A TLS failure never reached etcd: the next member is tried at once.
            #[$test]
            async fn a_member_failing_tls_is_failed_over() {
                let bad = format!("https://localhost:{}", shared_tls().tls_client_port().unwrap());
                let etcd = mtls(&[bad.clone(), tls_url()]);
                for i in 0..3 {
                    let key = unique_key("tls-failover");
                    let lock = Microlock::new(&etcd, &key, "node", TTL).unwrap();
                    rt::timeout(PATIENCE, lock.lock())
                        .await
                        .expect("within the bound")
                        .unwrap_or_else(|e| panic!("lock {i} failed over TLS failover: {e}"));
                    lock.unlock().await.unwrap();
                }
                let members = etcd.members();
                assert!(format!("{members:?}").contains("localhost"), "{members:?}");
            }

            /// 20 lock/unlock cycles over TLS use one connection: no handshake per request.
            #[$test]
            async fn tls_connections_are_kept_alive() {
                let proxy = CountingProxy::start(&tls_addr());
                let url = proxy.url.replace("http://", "https://");
                let etcd = mtls(&[url]);
                let lock = Microlock::new(&etcd, &unique_key("tls-keepalive"), "n", TTL).unwrap();
                for _ in 0..20 {
                    lock.lock().await.expect("lock through the proxy");
                    lock.unlock().await.expect("unlock through the proxy");
                }
                assert_eq!(proxy.accepted(), 1, "one TLS connection for 40 requests");
            }

            #[$test]
            async fn bad_tls_options_fail_at_build_naming_the_file() {
                let p = pki();
                let https = [tls_url()];
                let missing = p.dir.join("does-not-exist.pem");
                let e = Etcd::builder(https.clone()).ca_file(&missing).build().unwrap_err();
                assert!(
                    matches!(&e, Error::InvalidOption { option, .. } if option.contains("does-not-exist.pem")),
                    "{e:?}"
                );
                let e = Etcd::builder(https.clone()).ca_pem("not PEM").build().unwrap_err();
                assert!(matches!(e, Error::InvalidOption { .. }), "{e:?}");
                // The key of another certificate.
                let e = Etcd::builder(https.clone())
                    .ca_file(&p.ca.path)
                    .client_cert_files(&p.client.cert.path, &p.server.key.path)
                    .build()
                    .unwrap_err();
                assert!(
                    matches!(&e, Error::InvalidOption { reason, option } if reason.contains("does not match") && option.contains(&*p.server.key.path.to_string_lossy())),
                    "{e:?}"
                );
                // A certificate where the key should be: no key in it.
                let e = Etcd::builder(https.clone())
                    .client_cert_files(&p.client.cert.path, &p.client.cert.path)
                    .ca_file(&p.ca.path)
                    .build()
                    .unwrap_err();
                assert!(matches!(e, Error::InvalidOption { .. }), "{e:?}");
                // TLS options, but no https:// endpoint.
                let e = Etcd::builder([shared_tls().client_url()])
                    .ca_file(&p.ca.path)
                    .build()
                    .unwrap_err();
                assert!(
                    matches!(&e, Error::InvalidOption { reason, .. } if reason.contains("http://")),
                    "{e:?}"
                );
                // The file variants work as the PEM ones do.
                Etcd::builder(https)
                    .ca_file(&p.ca.path)
                    .client_cert_files(&p.client.cert.path, &p.client.key.path)
                    .build()
                    .expect("the test PKI's files are valid");
            }

            /// `locks/job` through `etcd` (a user allowed `locks/`): lock, renew, contention, the
            /// first event of a watch (the holder), a waiting acquire served by an unlock.
            async fn whole_life_under_auth(etcd: &Etcd) {
                let a = Microlock::new(etcd, "locks/job", "a", TTL).unwrap();
                let b = Microlock::new(etcd, "locks/job", "b", TTL).unwrap();
                a.lock().await.expect("the user may lock inside locks/");
                a.renew().await.expect("and renew");
                assert!(matches!(b.lock().await, Err(Error::AlreadyLocked { .. })));
                let mut events = b.events();
                let first = rt::timeout(PATIENCE, events.next()).await.flatten();
                assert!(
                    matches!(&first, Some($ml::Event::Locked { holder, .. }) if holder == "a"),
                    "{first:?}"
                );
                let (acquired, released) = tokio::join!(b.acquire(PATIENCE), a.unlock());
                released.expect("the user may unlock");
                acquired.expect("a waiter gets the lock when it is released");
                b.unlock().await.unwrap();
            }

            /// v2 authentication on an etcd of its own: a user whose role covers `locks/*`.
            #[$test]
            async fn v2_authentication_and_key_prefix_permissions() {
                let server = rt::blocking(|| {
                    let server = EtcdServer::start();
                    auth::enable_v2_auth(&server.client_url(), "root-pw");
                    auth::add_prefix_user(&server.client_url(), "root-pw", "alice", "alice-pw", "/locks");
                    server
                })
                .await;
                let url = server.client_url();
                let alice = Etcd::builder([&url]).user("alice", "alice-pw").build().unwrap();

                // Inside the prefix: the whole life of a lock, a waiting acquire included.
                whole_life_under_auth(&alice).await;

                // Outside the prefix: a typed authentication error, not contention.
                let outside = Microlock::new(&alice, "elsewhere/job", "a", TTL).unwrap();
                match outside.lock().await {
                    Err(Error::Auth { failure, user, key, .. }) => {
                        assert_eq!(failure, AuthFailure::Unauthorized);
                        assert_eq!(user.as_deref(), Some("alice"));
                        assert_eq!(key, "elsewhere/job");
                    }
                    other => panic!("expected Error::Auth, got {other:?}"),
                }

                // A wrong password, and no credentials at all.
                let wrong = Etcd::builder([&url]).user("alice", "not-her-pw").build().unwrap();
                let lock = Microlock::new(&wrong, "locks/other", "a", TTL).unwrap();
                let error = lock.lock().await.expect_err("a wrong password is refused");
                assert!(matches!(error, Error::Auth { .. }), "{error:?}");
                let text = format!("{error} {error:?} {wrong:?}");
                assert!(!text.contains("not-her-pw"), "the password leaked: {text}");
                assert!(text.contains("password"), "the message names the cause: {text}");
                let nobody = Etcd::new([&url]).unwrap();
                let lock = Microlock::new(&nobody, "locks/other", "a", TTL).unwrap();
                match lock.lock().await {
                    Err(Error::Auth { user: None, .. }) => {}
                    other => panic!("expected Error::Auth without a user, got {other:?}"),
                }
                drop(server);
            }

            /// etcd v3 authentication on an etcd of its own (v3 only): a user whose role
            /// covers `locks/`; its token refreshed when etcd refuses it; every refusal typed.
            #[$test]
            async fn v3_authentication_token_refresh_and_permissions() {
                use $ml::Protocol;
                let server = rt::blocking(|| {
                    let server = EtcdServer::start_v3_only();
                    let url = server.client_url();
                    auth::add_v3_prefix_user(&url, None, "alice", "alice-pw", "locks/");
                    auth::enable_v3_auth(&url, "root-pw");
                    server
                })
                .await;
                let url = server.client_url();
                let v3 = |user: Option<(&str, &str)>| {
                    let builder = Etcd::builder([&url]).protocol(Protocol::V3);
                    match user {
                        Some((user, password)) => builder.user(user, password),
                        None => builder,
                    }
                    .build()
                    .unwrap()
                };
                let alice = v3(Some(("alice", "alice-pw")));

                // Inside the prefix: the whole life of a lock, a waiting acquire included.
                whole_life_under_auth(&alice).await;

                // Root sets alice's password again: every token alice got before is invalid
                // from now on ("invalid auth token")...
                let old = auth::v3_token(&url, auth::Creds::new("alice", "alice-pw"));
                let root = auth::v3_token(&url, auth::Creds::root("root-pw"));
                let changepw = serde_json::json!({ "name": "alice", "password": "alice-pw" });
                let r = auth::v3_call(&url, Some(&root), "/v3/auth/user/changepw", &changepw);
                assert_eq!(r.status, 200, "{}", r.text());
                let range = serde_json::json!({ "key": auth::base64(b"locks/") });
                let refused = auth::v3_call(&url, Some(&old), "/v3/kv/range", &range);
                assert!(refused.text().contains("invalid auth token"), "{}", refused.text());
                // ...and alice's locks (the handle's token is the old one) get a new one without
                // a word to their callers.
                let a = Microlock::new(&alice, "locks/job", "a", TTL).unwrap();
                a.lock().await.expect("a lock after alice's password was set again");
                a.unlock().await.expect("and its unlock");

                // Outside the prefix: permission denied, typed, naming the user and key.
                let outside = Microlock::new(&alice, "elsewhere/job", "a", TTL).unwrap();
                match outside.lock().await {
                    Err(Error::Auth { failure, user, key, .. }) => {
                        assert_eq!(failure, AuthFailure::PermissionDenied);
                        assert_eq!(user.as_deref(), Some("alice"));
                        assert_eq!(key, "elsewhere/job");
                    }
                    other => panic!("expected Error::Auth, got {other:?}"),
                }

                // A wrong password: authentication failed, the password in no output.
                let wrong = v3(Some(("alice", "not-her-pw")));
                let lock = Microlock::new(&wrong, "locks/other", "a", TTL).unwrap();
                let error = lock.lock().await.expect_err("a wrong password is refused");
                assert!(
                    matches!(error, Error::Auth { failure: AuthFailure::AuthenticationFailed, .. }),
                    "{error:?}"
                );
                let text = format!("{error} {error:?} {wrong:?}");
                assert!(!text.contains("not-her-pw"), "the password leaked: {text}");
                // No credentials: unauthorized, without a user.
                let nobody = v3(None);
                let lock = Microlock::new(&nobody, "locks/other", "a", TTL).unwrap();
                match lock.lock().await {
                    Err(Error::Auth { user: None, failure: AuthFailure::Unauthorized, .. }) => {}
                    other => panic!("expected Error::Auth without a user, got {other:?}"),
                }
                drop(server);

                // Credentials for an etcd whose authentication is off: they are not needed.
                let open = rt::blocking(EtcdServer::start_v3_only).await;
                let etcd = Etcd::builder([open.client_url()])
                    .protocol(Protocol::V3)
                    .user("alice", "alice-pw")
                    .build()
                    .unwrap();
                let lock = Microlock::new(&etcd, "locks/job", "a", TTL).unwrap();
                lock.lock().await.expect("a lock where authentication is off");
                lock.unlock().await.unwrap();
                lock.lock().await.unwrap();
                lock.unlock().await.unwrap();
            }

            /// `Etcd::from_env` reads each `ETCDCTL_*` variable. The only test of this binary
            /// that touches the environment.
            #[$test]
            async fn from_env_reads_each_etcdctl_variable() {
                let p = pki();
                let vars = ["ETCDCTL_ENDPOINTS", "ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY",
                            "ETCDCTL_USER", "ETCDCTL_PASSWORD"];
                let clear = || vars.iter().for_each(|v| std::env::remove_var(v));
                clear();
                // No variable: etcd's default endpoint.
                let etcd = Etcd::from_env().unwrap();
                assert_eq!(etcd.endpoints()[0].as_str(), "http://127.0.0.1:2379");
                // Endpoints, CA and client certificate: a working mutual-TLS handle.
                std::env::set_var("ETCDCTL_ENDPOINTS", tls_url());
                std::env::set_var("ETCDCTL_CACERT", &p.ca.path);
                std::env::set_var("ETCDCTL_CERT", &p.client.cert.path);
                std::env::set_var("ETCDCTL_KEY", &p.client.key.path);
                let etcd = Etcd::from_env().unwrap();
                let lock = Microlock::new(&etcd, &unique_key("from-env"), "n", TTL).unwrap();
                lock.lock().await.expect("lock with the environment's TLS settings");
                lock.unlock().await.unwrap();
                // A certificate without its key is refused.
                std::env::remove_var("ETCDCTL_KEY");
                assert!(matches!(Etcd::from_env(), Err(Error::InvalidOption { .. })));
                std::env::set_var("ETCDCTL_KEY", &p.client.key.path);
                // A missing CA file is named.
                std::env::set_var("ETCDCTL_CACERT", p.dir.join("nope.pem"));
                let e = Etcd::from_env().unwrap_err();
                assert!(e.to_string().contains("nope.pem"), "{e}");
                clear();
                // The user: `name:password`, or `name` with ETCDCTL_PASSWORD.
                std::env::set_var("ETCDCTL_ENDPOINTS", shared_tls().client_url());
                std::env::set_var("ETCDCTL_USER", "alice:s3cret");
                let etcd = Etcd::from_env().unwrap();
                assert!(!format!("{etcd:?}").contains("s3cret"));
                std::env::set_var("ETCDCTL_USER", "alice");
                assert!(matches!(Etcd::from_env(), Err(Error::InvalidOption { .. })));
                std::env::set_var("ETCDCTL_PASSWORD", "s3cret");
                Etcd::from_env().expect("name with ETCDCTL_PASSWORD");
                clear();
            }
        }
    };
}
