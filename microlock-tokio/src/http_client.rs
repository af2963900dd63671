//! Moves one `http::Request<Vec<u8>>` to etcd and one `http::Response<Vec<u8>>` back, over
//! plain TCP or TLS (rustls), on keep-alive connections.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use microlock_proto::driver::Failure;
use microlock_proto::http::{Request, Response};
use microlock_proto::{tls, TlsConfig, TlsFailure, MAX_RESPONSE_BYTES};

/// hyper's pooled keep-alive HTTP/1.1 client; with TLS settings, `https://` URLs go through
/// rustls (and `http://` ones stay plain).
#[derive(Clone, Debug)]
pub(crate) enum HttpClient {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(
        Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
        TlsConfig,
    ),
}

impl HttpClient {
    pub(crate) fn new(tls: Option<&TlsConfig>) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let builder = Client::builder(TokioExecutor::new());
        match tls {
            None => HttpClient::Plain(builder.build(connector)),
            Some(tls) => {
                connector.enforce_http(false);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*tls.rustls()).clone())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector);
                HttpClient::Tls(builder.build(https), tls.clone())
            }
        }
    }

    /// Sends `request` and reads the body, stopping one byte past the machine's bound (the
    /// machine rejects the oversized body). `Err` says whether the request could have reached
    /// etcd (a failure to connect, or of TLS, could not).
    pub(crate) async fn send(
        &self,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, Failure> {
        let (parts, body) = request.into_parts();
        let plain = (parts.uri.scheme_str() == Some("http")).then(|| parts.uri.clone());
        let request = Request::from_parts(parts, Full::new(Bytes::from(body)));
        let response = match self {
            HttpClient::Plain(client) => client.request(request).await,
            HttpClient::Tls(client, _) => client.request(request).await,
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                if let Some(failure) = self.tls_failure(&e) {
                    return Err(failure);
                }
                if e.is_connect() {
                    return Err(Failure::Connect(describe(&e)));
                }
                // A TLS port closes on plain HTTP without a word: ask it.
                if let Some(uri) = plain.filter(|_| closed_unanswered(&e)) {
                    if speaks_tls(&uri).await {
                        return Err(Failure::Tls(
                            TlsFailure::PlaintextToTls,
                            "it closed the connection on plain HTTP and answers TLS".to_owned(),
                        ));
                    }
                }
                return Err(Failure::Lost(describe(&e)));
            }
        };
        let (parts, mut body) = response.into_parts();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                self.tls_failure(&e)
                    .unwrap_or_else(|| Failure::Lost(describe(&e)))
            })?;
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() > MAX_RESPONSE_BYTES {
                    bytes.truncate(MAX_RESPONSE_BYTES + 1);
                    break;
                }
            }
        }
        Ok(Response::from_parts(parts, bytes))
    }

    /// The TLS failure behind `error`, if that is what it is.
    fn tls_failure(&self, error: &(dyn std::error::Error + 'static)) -> Option<Failure> {
        match self {
            HttpClient::Tls(_, tls) => tls
                .classify(error)
                .map(|(failure, reason)| Failure::Tls(failure, reason)),
            HttpClient::Plain(_) => None,
        }
    }
}

/// Whether the server closed the connection before any byte of a response.
fn closed_unanswered(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether the server at `uri`'s address answers a TLS ClientHello (within a second).
async fn speaks_tls(uri: &microlock_proto::http::Uri) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(authority) = uri.authority() else {
        return false;
    };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
        stream.write_all(&tls::probe_hello()).await?;
        let mut answer = [0; 2];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(tls::is_tls_record(&answer))
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(1), probe).await,
        Ok(Ok(true))
    )
}

/// An error and its chain of causes, on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
