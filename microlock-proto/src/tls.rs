//! TLS: what can go wrong ([`TlsFailure`]), and — with the `tls` feature — the rustls client
//! configuration both adapters use ([`TlsConfig`]), the one place where a TLS library's
//! error becomes a [`TlsFailure`], and the probe that tells a TLS port refusing plain HTTP
//! from a lost connection ([`is_tls_record`]).
//!
//! The machine itself never does TLS: an adapter connects, and reports a failed handshake with
//! [`Failure::Tls`](crate::driver::Failure::Tls). Certificates are verified, host names
//! included, always; there is no option to turn verification off.

use std::fmt;

/// Which TLS problem kept a request from reaching etcd ([`Error::Tls`](crate::Error::Tls)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The member's certificate is not signed by a trusted CA (give its CA with `ca_file`).
    UnknownIssuer,
    /// The member's certificate is not valid for the host name (or IP address) in its URL.
    HostnameMismatch,
    /// The member's certificate is expired, not yet valid, revoked or otherwise unusable.
    BadServerCertificate,
    /// The member demands a client certificate and none is configured (`client_cert_files`).
    ClientCertificateRequired,
    /// The member refused the client certificate: expired, or not signed by a CA it trusts.
    ClientCertificateRejected,
    /// The URL says `https://`, but the member does not speak TLS there.
    NotTls,
    /// The URL says `http://`, but the member serves TLS there: use `https://`.
    PlaintextToTls,
    /// Any other handshake failure (no common protocol version or cipher suite...).
    Handshake,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFailure::UnknownIssuer => {
                "the server's certificate is not signed by a trusted CA (set the CA file)"
            }
            TlsFailure::HostnameMismatch => {
                "the server's certificate is not valid for the host name in the endpoint URL"
            }
            TlsFailure::BadServerCertificate => {
                "the server's certificate is expired, not yet valid or unusable"
            }
            TlsFailure::ClientCertificateRequired => {
                "the server requires a client certificate and none is configured"
            }
            TlsFailure::ClientCertificateRejected => {
                "the server refused the client certificate (expired, or from a CA it does not \
                 trust)"
            }
            TlsFailure::NotTls => {
                "the endpoint is https:// but the server does not speak TLS there (it closed the \
                 connection or answered plain text to the handshake)"
            }
            TlsFailure::PlaintextToTls => {
                "the endpoint is http:// but the server expects TLS (use https://)"
            }
            TlsFailure::Handshake => "the TLS handshake failed",
        })
    }
}

/// What Go's HTTP server answers to plain HTTP on a TLS port (`net/http`: a `400` whose body
/// is this line), and nothing else does.
const GO_PLAINTEXT_TO_TLS: &[u8] = b"Client sent an HTTP request to an HTTPS server.";

/// Whether `response` is a TLS server's refusal of a plain-HTTP request: Go's exact answer,
/// not a body that merely starts like it (the `responses` fuzz target: such a body with an
/// etcd error after it was taken for a TLS refusal).
pub(crate) fn is_plaintext_to_tls(response: &http::Response<Vec<u8>>) -> bool {
    response.status() == 400 && response.body().trim_ascii_end() == GO_PLAINTEXT_TO_TLS
}

/// Whether `answer`, the first bytes a server sent back on a connection, is TLS (a handshake or
/// alert record) rather than HTTP.
///
/// What it is for: a TLS port that receives plain HTTP closes the connection without a word
/// (etcd's does), which looks like any lost connection. An adapter that sees an `http://`
/// request closed unanswered sends [`probe_hello`] on a new connection to the same address and
/// asks this of the first two bytes of the answer: `true` means the member serves TLS there,
/// [`TlsFailure::PlaintextToTls`].
///
/// ```
/// use microlock_proto::tls::is_tls_record;
/// assert!(is_tls_record(&[0x16, 0x03]));          // a ServerHello
/// assert!(is_tls_record(&[0x15, 0x03]));          // an alert
/// assert!(!is_tls_record(b"HTTP/1.1 400 Bad Request"));
/// ```
pub fn is_tls_record(answer: &[u8]) -> bool {
    matches!(answer, [0x15 | 0x16, 0x03, ..])
}

/// A TLS ClientHello, to ask a port whether it serves TLS (see [`is_tls_record`]).
#[cfg(feature = "tls")]
pub fn probe_hello() -> Vec<u8> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("probe.invalid").expect("a valid name");
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), name).expect("a valid client config");
    let mut hello = Vec::new();
    while connection.wants_write() {
        if connection.write_tls(&mut hello).is_err() {
            break;
        }
    }
    hello
}

#[cfg(feature = "tls")]
pub use self::config::{HandshakeFailed, TlsConfig};

#[cfg(feature = "tls")]
mod config {
    use std::error::Error as StdError;
    use std::fmt;
    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

    use super::TlsFailure;
    use crate::Error;

    /// Where PEM comes from, to name it in errors.
    #[derive(Clone, PartialEq, Eq)]
    pub(crate) enum Pem {
        File(std::path::PathBuf),
        Bytes(Vec<u8>),
    }

    impl Pem {
        /// `option(path)`, or `option(<N bytes of PEM>)`: never the contents (a key is secret).
        pub(crate) fn describe(&self, option: &str) -> String {
            match self {
                Pem::File(path) => format!("{option}({})", path.display()),
                Pem::Bytes(bytes) => format!("{option}(<{} bytes of PEM>)", bytes.len()),
            }
        }

        fn read(&self, option: &str) -> Result<Vec<u8>, Error> {
            match self {
                Pem::Bytes(bytes) => Ok(bytes.clone()),
                Pem::File(path) => std::fs::read(path).map_err(|e| invalid(self, option, e)),
            }
        }
    }

    impl fmt::Debug for Pem {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Pem::File(path) => fmt::Debug::fmt(path, f),
                Pem::Bytes(bytes) => write!(f, "<{} bytes of PEM>", bytes.len()),
            }
        }
    }

    fn invalid(pem: &Pem, option: &str, reason: impl fmt::Display) -> Error {
        Error::InvalidOption {
            option: pem.describe(option),
            reason: reason.to_string(),
        }
    }

    /// The certificates in a PEM source; at least one.
    fn certificates(pem: &Pem, option: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
        let bytes = pem.read(option)?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(pem, option, format!("malformed PEM: {e}")))?;
        if certs.is_empty() {
            return Err(invalid(pem, option, "no CERTIFICATE in it"));
        }
        Ok(certs)
    }

    /// The TLS settings of one cluster handle: a rustls client configuration (trust roots,
    /// optional client certificate, host name verification), shared by its connections.
    #[derive(Clone)]
    pub struct TlsConfig {
        config: Arc<ClientConfig>,
        client_cert: bool,
    }

    impl TlsConfig {
        /// Trust `ca` (or the platform's roots when `None`), and present `client` (a
        /// certificate chain and its key) when the server asks.
        pub(crate) fn new(ca: Option<&Pem>, client: Option<(&Pem, &Pem)>) -> Result<Self, Error> {
            let mut roots = RootCertStore::empty();
            match ca {
                Some(pem) => {
                    for cert in certificates(pem, "ca")? {
                        roots.add(cert).map_err(|e| {
                            invalid(pem, "ca", format!("not a usable CA certificate: {e}"))
                        })?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                    if roots.is_empty() {
                        return Err(Error::InvalidOption {
                            option: "the platform's trust roots".to_owned(),
                            reason: "none found; give the CA with ca_file or ca_pem".to_owned(),
                        });
                    }
                }
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots);
            let config = match client {
                None => builder.with_no_client_auth(),
                Some((cert, key)) => {
                    let chain = certificates(cert, "client certificate")?;
                    let key_bytes = key.read("client key")?;
                    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
                        invalid(key, "client key", format!("no usable PRIVATE KEY: {e}"))
                    })?;
                    builder
                        .with_client_auth_cert(chain, key_der)
                        .map_err(|e| match e {
                            rustls::Error::InconsistentKeys(_) => Error::InvalidOption {
                                option: format!(
                                    "{} with {}",
                                    key.describe("client key"),
                                    cert.describe("client certificate")
                                ),
                                reason: "the key does not match the certificate".to_owned(),
                            },
                            e => invalid(key, "client key", e),
                        })?
                }
            };
            Ok(TlsConfig {
                config: Arc::new(config),
                client_cert: client.is_some(),
            })
        }

        /// The rustls client configuration, for an adapter's connector.
        pub fn rustls(&self) -> Arc<ClientConfig> {
            self.config.clone()
        }

        /// Whether a client certificate is configured.
        pub fn has_client_certificate(&self) -> bool {
            self.client_cert
        }

        /// Whether `error` (or any error in its chain of causes, `std::io::Error` payloads
        /// included) is a TLS failure, and which. An adapter calls it on every failed request
        /// over TLS: `Some` means the request never reached etcd.
        ///
        /// ```
        /// # fn demo(tls: &microlock_proto::TlsConfig) {
        /// let error = std::io::Error::new(
        ///     std::io::ErrorKind::InvalidData,
        ///     rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        /// );
        /// let (failure, _) = tls.classify(&error).unwrap();
        /// assert_eq!(failure, microlock_proto::TlsFailure::ClientCertificateRequired);
        /// # }
        /// ```
        pub fn classify(&self, error: &(dyn StdError + 'static)) -> Option<(TlsFailure, String)> {
            let mut next = Some(error);
            let mut handshake: Option<&std::io::Error> = None;
            while let Some(e) = next {
                if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                    return Some((self.failure(tls), tls.to_string()));
                }
                if let Some(HandshakeFailed(io)) = e.downcast_ref::<HandshakeFailed>() {
                    handshake = handshake.or(Some(io));
                    next = Some(io);
                    continue;
                }
                // An io::Error's `source()` skips its payload (it returns the payload's
                // source): look at the payload itself, however deeply wrapped.
                let io = e.downcast_ref::<std::io::Error>();
                if let Some(io) = io.filter(|io| is_handshake_eof(io)) {
                    return Some((TlsFailure::NotTls, io.to_string()));
                }
                next = match io {
                    Some(io) => io.get_ref().map(|p| p as &(dyn StdError + 'static)),
                    None => e.source(),
                };
            }
            // Failed in the handshake with no word of TLS: a server that does not speak TLS
            // there closes (or resets) the connection on our ClientHello.
            handshake.map(|io| {
                use std::io::ErrorKind as K;
                let closed = matches!(
                    io.kind(),
                    K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
                );
                let failure = if closed {
                    TlsFailure::NotTls
                } else {
                    TlsFailure::Handshake
                };
                (failure, format!("during the TLS handshake: {io}"))
            })
        }

        fn failure(&self, error: &rustls::Error) -> TlsFailure {
            use rustls::Error as E;
            match error {
                E::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => TlsFailure::UnknownIssuer,
                E::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => TlsFailure::HostnameMismatch,
                E::InvalidCertificate(_) => TlsFailure::BadServerCertificate,
                E::AlertReceived(alert) => match alert {
                    AlertDescription::CertificateRequired => TlsFailure::ClientCertificateRequired,
                    AlertDescription::BadCertificate
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::AccessDenied
                    | AlertDescription::HandshakeFailure
                        if !self.client_cert =>
                    {
                        // TLS 1.2 servers (Go's among them) answer a missing certificate with
                        // a generic alert.
                        TlsFailure::ClientCertificateRequired
                    }
                    AlertDescription::BadCertificate
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::AccessDenied => TlsFailure::ClientCertificateRejected,
                    _ => TlsFailure::Handshake,
                },
                // Not a TLS record at all: a plain-HTTP server answered the ClientHello.
                E::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType
                    | rustls::InvalidMessage::UnknownProtocolVersion,
                ) => TlsFailure::NotTls,
                _ => TlsFailure::Handshake,
            }
        }
    }

    /// The connection ended in the middle of the TLS handshake (tokio-rustls and futures-rustls
    /// say "tls handshake eof"): a server that does not speak TLS there closed it on our
    /// ClientHello (etcd's plain port does).
    fn is_handshake_eof(io: &std::io::Error) -> bool {
        io.kind() == std::io::ErrorKind::UnexpectedEof && io.to_string().contains("handshake")
    }

    /// An adapter's TLS handshake failed with this I/O error: wrapping it tells
    /// [`TlsConfig::classify`] that the connection was still in its handshake (so a connection
    /// closed or reset there is a server that does not speak TLS, [`TlsFailure::NotTls`]).
    #[derive(Debug)]
    pub struct HandshakeFailed(pub std::io::Error);

    impl fmt::Display for HandshakeFailed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "TLS handshake: {}", self.0)
        }
    }

    impl StdError for HandshakeFailed {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    impl fmt::Debug for TlsConfig {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TlsConfig")
                .field("client_certificate", &self.client_cert)
                .finish_non_exhaustive()
        }
    }

    /// A path, for [`Pem::File`].
    pub(crate) fn file(path: impl AsRef<Path>) -> Pem {
        Pem::File(path.as_ref().to_owned())
    }
}

#[cfg(feature = "tls")]
pub(crate) use self::config::{file, Pem};

#[cfg(test)]
mod plaintext_tests {
    use super::*;

    fn answer(status: u16, body: &str) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(status)
            .body(body.as_bytes().to_vec())
            .unwrap()
    }

    #[test]
    fn only_gos_exact_refusal_is_plaintext_to_tls() {
        let go = "Client sent an HTTP request to an HTTPS server.\n";
        assert!(is_plaintext_to_tls(&answer(400, go)));
        assert!(!is_plaintext_to_tls(&answer(200, go)));
        let longer = "Client sent an HTTP request to an HTTPS server{\"errorCode\":107}\n";
        assert!(!is_plaintext_to_tls(&answer(400, longer)));
        assert!(!is_plaintext_to_tls(&answer(
            400,
            "Client sent an HTTP request"
        )));
    }
}
