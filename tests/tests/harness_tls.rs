//! Self-tests of the TLS and authentication harness (`tests/src/tls.rs`, `tests/src/auth.rs`,
//! the TLS side of `tests/src/etcd.rs`) on the etcd that `ETCD_BIN` names (3.4.23 and 3.5.1 in
//! `make test`). They also pin what etcd answers: which TLS alert, at which step, per version;
//! what v2 authentication refuses and allows.

use std::time::{Duration, Instant};

use microlock_tests::auth::{self, Creds};
use microlock_tests::etcd::{self, unique_key, EtcdCluster, EtcdServer, RawResponse};
use microlock_tests::inspect;
use microlock_tests::tls::{self, ClientIdentity, TlsStage, TlsVersions};
use rustls::{AlertDescription, ProtocolVersion};
use serde_json::Value;

/// Generous bound for anything etcd should do quickly.
const PATIENCE: Duration = Duration::from_secs(15);

fn json(r: &RawResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// The failure of a request that must fail, with its details.
fn tls_fails(url: &str, identity: &ClientIdentity) -> (TlsStage, Option<ProtocolVersion>, String) {
    let e = match tls::try_raw_tls_request(url, "GET", "/version", None, identity) {
        Ok(r) => panic!(
            "{url}: expected a TLS failure, got HTTP {} {}",
            r.status,
            r.text()
        ),
        Err(e) => e,
    };
    let f = tls::tls_failure(&e).unwrap_or_else(|| panic!("{url}: not a TLS failure: {e}"));
    let what = match f.rustls_error() {
        Some(rustls::Error::AlertReceived(alert)) => format!("alert {alert:?}"),
        Some(rustls::Error::InvalidCertificate(c)) => format!("invalid certificate {c:?}"),
        Some(other) => format!("rustls {other:?}"),
        None => format!("io {:?}", f.error.kind()),
    };
    (f.stage, f.protocol, what)
}

#[test]
fn pki_files_hold_their_pem_and_keys_are_pkcs8() {
    let pki = tls::pki();
    assert!(std::ptr::eq(pki, tls::pki()), "one PKI per process");
    let certs = [
        &pki.ca,
        &pki.other_ca,
        &pki.server.cert,
        &pki.peer.cert,
        &pki.client.cert,
        &pki.expired_client.cert,
        &pki.foreign_client.cert,
    ];
    for file in certs {
        assert_eq!(std::fs::read(&file.path).unwrap(), file.pem);
        assert!(file.pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(file.path.starts_with(&pki.dir));
    }
    for id in [
        &pki.server,
        &pki.peer,
        &pki.client,
        &pki.expired_client,
        &pki.foreign_client,
    ] {
        assert_eq!(std::fs::read(&id.key.path).unwrap(), id.key.pem);
        assert!(id.key.pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    }
    assert_eq!(pki.ca_pem(), &pki.ca.pem[..]);
    assert_eq!(pki.client_cert_file(), pki.client.cert.path);
    assert_eq!(pki.client_key_pem(), &pki.client.key.pem[..]);
    assert_ne!(pki.ca.pem, pki.other_ca.pem);
}

#[test]
fn tls_etcd_serves_mutual_tls_and_a_plain_side_channel() {
    let server = tls::shared_tls();
    let tls_url = server.tls_client_url().expect("a TLS etcd");
    assert_eq!(
        tls_url,
        format!("https://127.0.0.1:{}", server.tls_client_port().unwrap())
    );
    assert_ne!(server.tls_client_port(), Some(server.client_port()));
    assert!(server.peer_url().starts_with("https://"), "peer TLS");
    let id = tls::pki().client_identity();

    let version = tls::raw_tls_request(&tls_url, "GET", "/version", None, &id);
    assert_eq!(version.status, 200, "{}", version.text());
    assert_eq!(json(&version)["etcdserver"], server.version());

    // Written over mutual TLS, read over the plain side channel (and the other way round).
    let key = unique_key("harness-tls");
    let path = inspect::key_path(&key);
    let put = tls::raw_tls_request(
        &tls_url,
        "PUT",
        &format!("{path}?prevExist=false"),
        Some("value=over-tls&ttl=30"),
        &id,
    );
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(
        inspect::value(&server.client_url(), &key).as_deref(),
        Some("over-tls")
    );
    inspect::put(&server.client_url(), &key, "over-http", None);
    let get = tls::raw_tls_request(&tls_url, "GET", &format!("{path}?quorum=true"), None, &id);
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(json(&get)["node"]["value"], "over-http");

    // The plain URL needs no certificate; only the https one is advertised.
    let members = etcd::raw_request(&server.client_url(), "GET", "/v2/members", None);
    assert_eq!(members.status, 200, "{}", members.text());
    let member = &json(&members)["members"][0];
    assert_eq!(member["clientURLs"], serde_json::json!([tls_url]));
    assert_eq!(member["peerURLs"], serde_json::json!([server.peer_url()]));
}

#[test]
fn https_refuses_missing_expired_and_foreign_client_certificates() {
    let server = tls::shared_tls();
    let url = server.tls_client_url().unwrap();
    let pki = tls::pki();
    let v35 = server.version().starts_with("3.5.");
    let v34 = server.version().starts_with("3.4.");
    for (what, cert) in [
        ("no certificate", None),
        ("expired", Some(&pki.expired_client)),
        ("foreign CA", Some(&pki.foreign_client)),
    ] {
        // TLS 1.2: the server checks the certificate before its Finished: the client's
        // handshake fails with the server's bad_certificate alert.
        let id = ClientIdentity::new(pki.ca_pem(), cert).with_versions(TlsVersions::Tls12);
        let (stage, protocol, error) = tls_fails(&url, &id);
        assert_eq!(
            (stage, protocol, error.as_str()),
            (
                TlsStage::Handshake,
                Some(ProtocolVersion::TLSv1_2),
                "alert BadCertificate"
            ),
            "{what}, TLS 1.2"
        );

        // Offering 1.3 and 1.2: etcd 3.4.23 (Go 1.19) picks 1.3, where the client's handshake
        // completes and the bad_certificate alert comes at the first read; etcd 3.5.1 never
        // speaks 1.3 and picks 1.2.
        let id = ClientIdentity::new(pki.ca_pem(), cert);
        let (stage, protocol, error) = tls_fails(&url, &id);
        assert_eq!(error, "alert BadCertificate", "{what}");
        match protocol {
            Some(ProtocolVersion::TLSv1_3) => assert_eq!(stage, TlsStage::Exchange, "{what}"),
            Some(ProtocolVersion::TLSv1_2) => assert_eq!(stage, TlsStage::Handshake, "{what}"),
            other => panic!("{what}: protocol {other:?}"),
        }
        if v34 {
            assert_eq!(protocol, Some(ProtocolVersion::TLSv1_3), "{what}");
        }
        if v35 {
            assert_eq!(protocol, Some(ProtocolVersion::TLSv1_2), "{what}");
        }
    }
    // TLS 1.3 only: etcd 3.5.1 refuses it (protocol_version alert), even with a good certificate.
    let id = pki.client_identity().with_versions(TlsVersions::Tls13);
    let result = tls::try_raw_tls_request(&url, "GET", "/version", None, &id);
    if v35 {
        let e = result.expect_err("etcd 3.5.1 speaks TLS 1.2 at most");
        let f = tls::tls_failure(&e).expect("a TLS failure");
        assert_eq!(f.stage, TlsStage::Handshake);
        assert_eq!(f.alert_received(), Some(AlertDescription::ProtocolVersion));
    } else if v34 {
        assert_eq!(result.expect("etcd 3.4.23 speaks TLS 1.3").status, 200);
    }
}

#[test]
fn wrong_names_roots_and_schemes_fail_without_an_answer() {
    let server = tls::shared_tls();
    let pki = tls::pki();
    let port = server.tls_client_port().unwrap();
    let url = server.tls_client_url().unwrap();

    // The server certificate names IP 127.0.0.1 only.
    let (stage, _, error) = tls_fails(&format!("https://localhost:{port}"), &pki.client_identity());
    assert_eq!(stage, TlsStage::Handshake);
    assert!(error.contains("NotValidForName"), "{error}");
    // A client that trusts another CA.
    let id = ClientIdentity::new(&pki.other_ca.pem, Some(&pki.client));
    let (stage, _, error) = tls_fails(&url, &id);
    assert_eq!(stage, TlsStage::Handshake);
    assert!(error.contains("UnknownIssuer"), "{error}");

    // TLS to the plain port: etcd closes the connection without a byte (no HTTP 400). The
    // client sees the end of the stream, or a reset when etcd closed with part of the
    // ClientHello still unread (the kernel then answers with RST): which one is timing (seen
    // on CI: `io ConnectionReset`).
    let plain_port = format!("https://127.0.0.1:{}", server.client_port());
    let (stage, protocol, error) = tls_fails(&plain_port, &pki.client_identity());
    assert_eq!((stage, protocol), (TlsStage::Handshake, None), "{error}");
    assert!(
        ["io UnexpectedEof", "io ConnectionReset"].contains(&error.as_str()),
        "{error}"
    );
    // Plain HTTP to the https port: closed without a byte too (no "Client sent an HTTP request
    // to an HTTPS server." answer); the same timing decides between the end and a reset.
    let e = etcd::try_raw_request(&format!("http://127.0.0.1:{port}"), "GET", "/version", None)
        .expect_err("no HTTP answer on the https port");
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            assert_eq!(e.to_string(), "connection closed before status")
        }
        kind => assert_eq!(kind, std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn tls_cluster_replicates_over_peer_tls_and_a_member_restarts_with_tls() {
    let mut cluster = EtcdCluster::start_tls(3, tls::pki());
    let urls = cluster.tls_client_urls();
    let id = tls::pki().client_identity();
    let key = unique_key("harness-tls-cluster");
    let path = inspect::key_path(&key);
    let put = tls::raw_tls_request(&urls[0], "PUT", &path, Some("value=replicated"), &id);
    assert_eq!(put.status, 201, "{}", put.text());
    let get = tls::raw_tls_request(&urls[2], "GET", &format!("{path}?quorum=true"), None, &id);
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(json(&get)["node"]["value"], "replicated");
    let members = json(&tls::raw_tls_request(
        &urls[1],
        "GET",
        "/v2/members",
        None,
        &id,
    ));
    let members = members["members"].as_array().expect("members").clone();
    assert_eq!(members.len(), 3);
    for m in &members {
        assert!(
            m["peerURLs"][0].as_str().unwrap().starts_with("https://"),
            "{m}"
        );
        assert!(
            m["clientURLs"][0].as_str().unwrap().starts_with("https://"),
            "{m}"
        );
    }

    // Crashed and back: same ports, same TLS flags.
    cluster.members[1].kill();
    assert!(tls::try_raw_tls_request(&urls[1], "GET", "/version", None, &id).is_err());
    cluster.members[1].restart();
    cluster.members[1].wait_serving(PATIENCE);
    let get = tls::raw_tls_request(&urls[1], "GET", &format!("{path}?quorum=true"), None, &id);
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(json(&get)["node"]["value"], "replicated");
    assert_eq!(
        cluster.members[1].tls_client_url().as_deref(),
        Some(urls[1].as_str())
    );
}

/// Waits until etcd serves `n` watches (etcd notifies nothing of the kind: bounded polling).
fn watchers_become(url: &str, n: u64) {
    let until = Instant::now() + PATIENCE;
    while inspect::watchers(url) != n {
        assert!(Instant::now() < until, "watchers never became {n}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn v2_auth_lets_a_prefix_user_do_what_microlock_does_and_refuses_the_rest() {
    let server = EtcdServer::start(); // its own: auth changes the whole etcd
    let url = server.client_url();
    auth::enable_v2_auth(&url, "root-pw");
    auth::add_prefix_user(&url, "root-pw", "alice", "alice-pw", "locks");
    assert!(auth::v2_auth_enabled(&url));
    let alice = Creds::new("alice", "alice-pw");
    let key = "/v2/keys/locks/k";

    // Refused alike: wrong password, unknown user, no credentials, a key outside the prefix,
    // the prefix directory itself without its trailing slash.
    let refused = [
        (
            Some(Creds::new("alice", "wrong")),
            "PUT",
            format!("{key}?prevExist=false"),
        ),
        (
            Some(Creds::new("bob", "alice-pw")),
            "GET",
            format!("{key}?quorum=true"),
        ),
        (None, "PUT", format!("{key}?prevExist=false")),
        (None, "GET", format!("{key}?quorum=true")),
        (
            Some(alice),
            "PUT",
            "/v2/keys/other/k?prevExist=false".to_owned(),
        ),
        (Some(alice), "GET", "/v2/keys/other/k?wait=true".to_owned()),
        (Some(alice), "GET", "/v2/keys/locks?quorum=true".to_owned()),
    ];
    for (creds, method, path) in refused {
        let body = (method == "PUT").then_some("value=n1&ttl=5");
        let r = auth::request(&url, creds, method, &path, body);
        assert!(
            auth::is_unauthorized(&r),
            "{method} {path}: {} {}",
            r.status,
            r.text()
        );
        assert_eq!(r.text(), auth::UNAUTHORIZED_BODY);
        assert_eq!(r.header("X-Etcd-Index"), Some("0"));
        assert_eq!(r.header("WWW-Authenticate"), None);
    }

    // Everything microlock sends, inside the prefix.
    let create = format!("{key}?prevExist=false");
    let r = auth::request(&url, Some(alice), "PUT", &create, Some("value=n1&ttl=5"));
    assert_eq!(r.status, 201, "{}", r.text());
    let index = json(&r)["node"]["modifiedIndex"].as_u64().unwrap();
    let r = auth::request(&url, Some(alice), "PUT", &create, Some("value=n2&ttl=5"));
    assert_eq!((r.status, json(&r)["errorCode"].as_u64()), (412, Some(105)));
    let r = auth::request(
        &url,
        Some(alice),
        "GET",
        &format!("{key}?quorum=true"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let renew = format!("{key}?prevValue=n1&prevIndex={index}&refresh=true&ttl=5");
    let r = auth::request(&url, Some(alice), "PUT", &renew, Some("ttl=5&refresh=true"));
    assert_eq!(r.status, 200, "{}", r.text());
    let index = json(&r)["node"]["modifiedIndex"].as_u64().unwrap();
    let r = auth::request(
        &url,
        Some(alice),
        "DELETE",
        &format!("{key}?prevValue=zz"),
        None,
    );
    assert_eq!((r.status, json(&r)["errorCode"].as_u64()), (412, Some(101)));
    let watch = {
        let url = url.clone();
        let path = format!("{key}?wait=true&waitIndex={}", index + 1);
        std::thread::spawn(move || auth::request(&url, Some(alice), "GET", &path, None))
    };
    watchers_become(&url, 1);
    let r = auth::request(
        &url,
        Some(alice),
        "DELETE",
        &format!("{key}?prevValue=n1"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let event = watch.join().expect("watch thread");
    assert_eq!(event.status, 200, "{}", event.text());
    assert_eq!(json(&event)["action"], "compareAndDelete");
    let r = auth::request(
        &url,
        Some(alice),
        "GET",
        "/v2/keys/locks/?quorum=true",
        None,
    );
    assert_eq!(
        r.status,
        200,
        "the prefix directory with its slash: {}",
        r.text()
    );

    // No credentials needed for the member list and the version.
    let r = auth::request(&url, None, "GET", "/v2/members", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        auth::request(&url, None, "GET", "/version", None).status,
        200
    );
    // root still reads everything.
    assert_eq!(
        auth::node_as(&url, Creds::root("root-pw"), "locks/k").ok(),
        Some(None)
    );
    assert!(auth::node_as(&url, alice, "other/k").is_err());
}

#[test]
fn v2_auth_over_tls_takes_a_client_certificate_named_after_a_user() {
    let server = EtcdServer::start_tls(tls::pki()); // its own: auth changes the whole etcd
    let url = server.client_url(); // setup over the plain side channel
    auth::enable_v2_auth(&url, "root-pw");
    // The client certificate's CN is `client`: a v2 user of that name is who it is, with no
    // password (and no bcrypt cost).
    auth::add_prefix_user(&url, "root-pw", "client", "client-pw", "locks");
    let tls_url = server.tls_client_url().unwrap();
    let id = tls::pki().client_identity();
    let inside = tls::raw_tls_request(
        &tls_url,
        "PUT",
        "/v2/keys/locks/k?prevExist=false",
        Some("value=v&ttl=5"),
        &id,
    );
    assert_eq!(inside.status, 201, "{}", inside.text());
    let outside = tls::raw_tls_request(
        &tls_url,
        "PUT",
        "/v2/keys/other/k?prevExist=false",
        Some("value=v&ttl=5"),
        &id,
    );
    assert!(auth::is_unauthorized(&outside), "{}", outside.text());
    // Basic credentials, when sent, are checked too: a wrong password is refused.
    let wrong = Creds::new("client", "wrong").basic_header();
    let r = tls::try_raw_tls_request_with_headers(
        &tls_url,
        "GET",
        "/v2/keys/locks/k?quorum=true",
        None,
        &[("Authorization", &wrong)],
        &id,
    )
    .expect("an answer");
    assert!(auth::is_unauthorized(&r), "{}", r.text());
}
