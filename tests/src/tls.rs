//! Test certificates, made at test time, and a raw HTTPS client for etcd.
//!
//! # Certificates
//! [`pki`] generates, once per test process, a small public-key infrastructure with `rcgen`
//! (ECDSA P-256 keys, PKCS#8 `PRIVATE KEY` PEM, which etcd 3.4 and 3.5 load) into a fresh
//! directory under [`std::env::temp_dir`]. Nothing is committed: every run has new keys. A
//! [`Pki`] gives each file's path and PEM bytes:
//!
//! | field | what | signed by |
//! |---|---|---|
//! | `ca` | the CA etcd trusts (clients and peers) and clients trust | itself |
//! | `server` | etcd's https client URL: IP `127.0.0.1` only (`https://localhost:P` is a name mismatch); server and client auth (\*) | `ca` |
//! | `peer` | peer TLS between members: IP `127.0.0.1`, server and client auth | `ca` |
//! | `client` | the client under test: CN `client`, client auth | `ca` |
//! | `expired_client` | as `client`, CN `expired-client`, valid 2000-2001 only | `ca` |
//! | `other_ca` | an unrelated CA | itself |
//! | `foreign_client` | CN `foreign-client`, client auth | `other_ca` |
//!
//! (\*) etcd's v3 JSON gateway dials etcd's own https URL with the server certificate: without
//! client auth in it, every `/v3/...` request over https fails (503, gRPC code 14, `tls: bad
//! certificate`), on 3.4 and 3.5.
//!
//! Every other certificate is valid from 2000 to 2100 (fixed dates: no clock, no skew). The
//! directory of a test process that is gone is removed by the next [`pki`] of any test process.
//!
//! # etcd with TLS
//! `EtcdTls::from(pki)` (or just `pki` where `impl Into<EtcdTls>` is asked) gives
//! [`EtcdServer::start_tls`] and [`crate::etcd::EtcdCluster::start_tls`] their files;
//! [`shared_tls`] is one TLS etcd per test process, like [`crate::etcd::shared`].
//!
//! # Raw HTTPS
//! [`raw_tls_request`] / [`try_raw_tls_request`] speak HTTP/1.1 over TLS (rustls, `ring`
//! provider, blocking, one connection per request) with a [`ClientIdentity`] (trusted CAs, an
//! optional client certificate, the TLS versions offered). A failure tells where it happened
//! ([`TlsStage`]: connect, handshake, or the exchange after it) and which TLS error (e.g. the
//! alert etcd sent): see [`tls_failure`].
//!
//! # What etcd does (pinned by `tests/tests/harness_tls.rs`)
//! - etcd 3.4.23 (Go 1.19) negotiates TLS 1.3; etcd 3.5.1 speaks TLS 1.2 at most and answers a
//!   1.3-only client with a `protocol_version` alert.
//! - A missing, expired or foreign client certificate: a `bad_certificate` alert. In TLS 1.2
//!   the client's handshake fails with it; in TLS 1.3 the client's handshake completes, and
//!   the alert comes at the first read, after the request was written (etcd never reads it;
//!   etcd has closed the connection by then, so a client that writes again before reading
//!   gets a broken pipe or a reset instead of the alert).
//! - Plain HTTP to the https port, and TLS to the plain port: the connection is closed without
//!   a byte (no `400 Client sent an HTTP request to an HTTPS server.`).

use std::io::{Error as IoError, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::etcd::{self, EtcdServer, EtcdTls, RawResponse, READ_TIMEOUT};

/// A PEM file written by [`Pki`]: its path and its bytes.
#[derive(Debug, Clone)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// A certificate and its private key (PKCS#8), as files and PEM bytes.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PemFile,
    pub key: PemFile,
}

/// The certificates of a test process: see the module docs.
#[derive(Debug)]
pub struct Pki {
    /// The directory holding every file.
    pub dir: PathBuf,
    pub ca: PemFile,
    pub server: Identity,
    pub peer: Identity,
    pub client: Identity,
    pub expired_client: Identity,
    pub other_ca: PemFile,
    pub foreign_client: Identity,
}

/// The process's [`Pki`], generated on first use.
///
/// # Panics
/// When the certificates cannot be generated or written.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        sweep_stale_pki_dirs();
        let start = etcd::process_start_time("self").unwrap_or(0);
        let dir = etcd::fresh_dir(&format!("{PKI_DIR_PREFIX}{}-{start}", std::process::id()));
        Pki::generate(&dir)
    })
}

/// One TLS etcd per test process ([`EtcdServer::start_tls`] with [`pki`]), started on first
/// use; like [`crate::etcd::shared`], it dies with the test process. Isolate tests on it with
/// [`crate::etcd::unique_key`].
pub fn shared_tls() -> &'static EtcdServer {
    static SHARED: OnceLock<EtcdServer> = OnceLock::new();
    SHARED.get_or_init(|| EtcdServer::start_tls(pki()))
}

/// `microlock-pki-<pid>-<start time>-...`: the names of the PKI directories.
const PKI_DIR_PREFIX: &str = "microlock-pki-";

/// Removes the PKI directories of test processes that are gone.
fn sweep_stale_pki_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PKI_DIR_PREFIX)) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(Ok(pid)), Some(Ok(start))) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        if etcd::process_start_time(&pid.to_string()) != Some(start) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A CA, while certificates are being signed.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Pki {
    /// Generates every certificate and key into `dir` (which must exist).
    ///
    /// # Panics
    /// When generating or writing fails.
    pub fn generate(dir: &Path) -> Pki {
        let (ca, ca_file) = new_ca(dir, "ca", "microlock test CA");
        let (other_ca, other_ca_file) = new_ca(dir, "other-ca", "microlock unrelated test CA");
        let localhost_ip = SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]));
        let server = leaf(
            dir,
            "server",
            &ca,
            LeafSpec {
                common_name: "etcd server",
                sans: vec![localhost_ip.clone()],
                // Client auth too: etcd's own v3 JSON gateway dials its https client URL with
                // this certificate; without it, every `/v3/...` request over https fails
                // (503, gRPC code 14, "tls: bad certificate"), on 3.4 and 3.5.
                usages: vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
                validity: (2000, 2100),
            },
        );
        let peer = leaf(
            dir,
            "peer",
            &ca,
            LeafSpec {
                common_name: "etcd peer",
                sans: vec![localhost_ip],
                usages: vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
                validity: (2000, 2100),
            },
        );
        let client_spec = |common_name, validity| LeafSpec {
            common_name,
            sans: Vec::new(),
            usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        };
        let client = leaf(dir, "client", &ca, client_spec("client", (2000, 2100)));
        let expired_client = leaf(
            dir,
            "expired-client",
            &ca,
            client_spec("expired-client", (2000, 2001)),
        );
        let foreign_client = leaf(
            dir,
            "foreign-client",
            &other_ca,
            client_spec("foreign-client", (2000, 2100)),
        );
        Pki {
            dir: dir.to_path_buf(),
            ca: ca_file,
            server,
            peer,
            client,
            expired_client,
            other_ca: other_ca_file,
            foreign_client,
        }
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca.pem
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> &Path {
        &self.ca.path
    }

    /// The client certificate (PEM), CN `client`, signed by the CA.
    pub fn client_cert_pem(&self) -> &[u8] {
        &self.client.cert.pem
    }

    /// The client's private key (PKCS#8 PEM).
    pub fn client_key_pem(&self) -> &[u8] {
        &self.client.key.pem
    }

    /// The client certificate file.
    pub fn client_cert_file(&self) -> &Path {
        &self.client.cert.path
    }

    /// The client's private key file.
    pub fn client_key_file(&self) -> &Path {
        &self.client.key.path
    }

    /// Trusts the CA, presents the good client certificate: what etcd lets in.
    pub fn client_identity(&self) -> ClientIdentity {
        ClientIdentity::new(self.ca_pem(), Some(&self.client))
    }

    /// Trusts the CA, presents no certificate.
    pub fn anonymous_identity(&self) -> ClientIdentity {
        ClientIdentity::new(self.ca_pem(), None)
    }
}

impl From<&Pki> for EtcdTls {
    fn from(pki: &Pki) -> EtcdTls {
        EtcdTls {
            ca_file: pki.ca.path.clone(),
            cert_file: pki.server.cert.path.clone(),
            key_file: pki.server.key.path.clone(),
            peer_cert_file: pki.peer.cert.path.clone(),
            peer_key_file: pki.peer.key.path.clone(),
        }
    }
}

fn write_pem(dir: &Path, name: &str, pem: String) -> PemFile {
    let path = dir.join(name);
    std::fs::write(&path, pem.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    PemFile {
        path,
        pem: pem.into_bytes(),
    }
}

fn new_ca(dir: &Path, file: &str, common_name: &str) -> (Ca, PemFile) {
    let key = KeyPair::generate().expect("generate a P-256 key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "microlock tests");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2100, 1, 1);
    let cert = params.self_signed(&key).expect("self-sign the CA");
    let file = write_pem(dir, &format!("{file}.pem"), cert.pem());
    (Ca { cert, key }, file)
}

struct LeafSpec {
    common_name: &'static str,
    sans: Vec<SanType>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    /// `(from, to)`: valid from January 1st of `from` to January 1st of `to`.
    validity: (i32, i32),
}

fn leaf(dir: &Path, file: &str, ca: &Ca, spec: LeafSpec) -> Identity {
    let key = KeyPair::generate().expect("generate a P-256 key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, spec.common_name);
    params.subject_alt_names = spec.sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = spec.usages;
    params.use_authority_key_identifier_extension = true;
    params.not_before = date_time_ymd(spec.validity.0, 1, 1);
    params.not_after = date_time_ymd(spec.validity.1, 1, 1);
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap_or_else(|e| panic!("sign {file}: {e}"));
    Identity {
        cert: write_pem(dir, &format!("{file}.pem"), cert.pem()),
        key: write_pem(dir, &format!("{file}-key.pem"), key.serialize_pem()),
    }
}

/// Which TLS versions a [`ClientIdentity`] offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersions {
    /// TLS 1.3 and 1.2 (etcd 3.4.23 picks 1.3; 3.5.1 speaks 1.2 at most).
    Any,
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// What a raw TLS client trusts and presents.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// PEM of the CA certificate(s) trusted for the server's certificate.
    pub roots_pem: Vec<u8>,
    /// PEM certificate (chain) and private key presented to the server, or none.
    pub cert: Option<(Vec<u8>, Vec<u8>)>,
    /// The TLS versions offered.
    pub versions: TlsVersions,
}

impl ClientIdentity {
    /// Trusts `roots_pem`, presents `cert` (or no certificate), offers TLS 1.3 and 1.2.
    pub fn new(roots_pem: &[u8], cert: Option<&Identity>) -> ClientIdentity {
        ClientIdentity {
            roots_pem: roots_pem.to_vec(),
            cert: cert.map(|id| (id.cert.pem.clone(), id.key.pem.clone())),
            versions: TlsVersions::Any,
        }
    }

    /// The same, offering only `versions`.
    pub fn with_versions(mut self, versions: TlsVersions) -> ClientIdentity {
        self.versions = versions;
        self
    }

    fn config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.versions {
            TlsVersions::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersions::Tls12 => &[&rustls::version::TLS12],
            TlsVersions::Tls13 => &[&rustls::version::TLS13],
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.roots_pem) {
            let cert = cert.map_err(|e| format!("roots PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("root certificate: {e}"))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("protocol versions: {e}"))?
            .with_root_certificates(roots);
        match &self.cert {
            None => Ok(builder.with_no_client_auth()),
            Some((cert_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("client certificate PEM: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| format!("client key PEM: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))
            }
        }
    }
}

/// Where a TLS request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsStage {
    /// The TCP connection.
    Connect,
    /// The TLS handshake, as the client sees it: until the client has sent its `Finished`.
    /// (In TLS 1.3 the server checks the client certificate after that, so a refused
    /// certificate shows in [`TlsStage::Exchange`].)
    Handshake,
    /// Writing the request or reading the response, after the client's handshake completed.
    Exchange,
}

/// A failed TLS request, inside the [`std::io::Error`] that [`try_raw_tls_request`] returns.
#[derive(Debug)]
pub struct TlsFailure {
    pub stage: TlsStage,
    /// The version negotiated, when the handshake got that far.
    pub protocol: Option<rustls::ProtocolVersion>,
    /// What went wrong: an I/O error, possibly wrapping a [`rustls::Error`].
    pub error: IoError,
}

impl TlsFailure {
    /// The TLS error (e.g. `AlertReceived(BadCertificate)`), when it was one.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        self.error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
    }

    /// The alert the server sent, when it sent one.
    pub fn alert_received(&self) -> Option<rustls::AlertDescription> {
        match self.rustls_error() {
            Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
            _ => None,
        }
    }
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TLS {:?} failed ({:?}): {}",
            self.stage, self.protocol, self.error
        )
    }
}

impl std::error::Error for TlsFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The [`TlsFailure`] inside an error of [`try_raw_tls_request`], if it is one.
pub fn tls_failure(e: &IoError) -> Option<&TlsFailure> {
    e.get_ref().and_then(|e| e.downcast_ref::<TlsFailure>())
}

/// Sends one HTTP/1.1 request over TLS and reads the whole response; panics on any error.
///
/// `url` is `https://HOST:PORT` (a trailing `/` is ignored; HOST is checked against the
/// server's certificate: an IP address, or a DNS name); the rest is as for
/// [`crate::etcd::raw_request`].
pub fn raw_tls_request(
    url: &str,
    method: &str,
    path_and_query: &str,
    form_body: Option<&str>,
    identity: &ClientIdentity,
) -> RawResponse {
    try_raw_tls_request(url, method, path_and_query, form_body, identity).unwrap_or_else(|e| {
        panic!("raw_tls_request {method} {url}{path_and_query} (body {form_body:?}) failed: {e}")
    })
}

/// Like [`raw_tls_request`] but returns errors: a bad `url` or `identity` is
/// [`ErrorKind::InvalidInput`]; anything else carries a [`TlsFailure`] (see [`tls_failure`]).
pub fn try_raw_tls_request(
    url: &str,
    method: &str,
    path_and_query: &str,
    form_body: Option<&str>,
    identity: &ClientIdentity,
) -> std::io::Result<RawResponse> {
    try_raw_tls_request_with_headers(url, method, path_and_query, form_body, &[], identity)
}

/// Like [`try_raw_tls_request`], with extra request headers (e.g. `Authorization`).
pub fn try_raw_tls_request_with_headers(
    url: &str,
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    identity: &ClientIdentity,
) -> std::io::Result<RawResponse> {
    let invalid = |m: String| IoError::new(ErrorKind::InvalidInput, m);
    let host_port = url
        .strip_prefix("https://")
        .ok_or_else(|| invalid(format!("{url} does not start with https://")))?
        .trim_end_matches('/');
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => host_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|e| invalid(format!("server name {host:?}: {e}")))?;
    let config = identity.config().map_err(invalid)?;
    let failed = |stage, protocol, error| {
        IoError::other(TlsFailure {
            stage,
            protocol,
            error,
        })
    };

    let mut tcp =
        etcd::connect(host_port, READ_TIMEOUT).map_err(|e| failed(TlsStage::Connect, None, e))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name)
        .map_err(|e| invalid(format!("TLS client: {e}")))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return Err(failed(TlsStage::Handshake, conn.protocol_version(), e));
        }
    }
    let protocol = conn.protocol_version();
    let stream = rustls::StreamOwned::new(conn, tcp);
    etcd::http_exchange(stream, host_port, method, path_and_query, body, headers)
        .map_err(|e| failed(TlsStage::Exchange, protocol, e))
}
