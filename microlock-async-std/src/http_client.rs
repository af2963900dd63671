//! Moves one `http::Request<Vec<u8>>` to etcd and one `http::Response<Vec<u8>>` back, over
//! plain TCP or TLS (rustls), on keep-alive connections.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

use async_std::io::{Read, ReadExt, Write};
use async_std::net::TcpStream;
use futures_rustls::client::TlsStream;
use futures_rustls::rustls::pki_types::ServerName;
use futures_rustls::TlsConnector;
use microlock_proto::driver::Failure;
use microlock_proto::http::header::CONTENT_TYPE;
use microlock_proto::http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use microlock_proto::{tls, TlsConfig, TlsFailure, MAX_RESPONSE_BYTES};
use surf::http::headers::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use surf::http::{Method, Url};

/// surf over a keep-alive pool of HTTP/1.1 connections. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    surf: surf::Client,
    /// Each member's origin (`scheme`, `host:port`), parsed once: a request's URL is a copy of
    /// it with the request's path and query.
    origins: Mutex<Vec<(String, String, Url)>>,
    /// For `https://` members.
    tls: Option<TlsConfig>,
}

impl HttpClient {
    pub(crate) fn new(tls: Option<&TlsConfig>) -> HttpClient {
        let pool = Pool {
            idle: Mutex::default(),
            tls: tls.map(|tls| TlsConnector::from(tls.rustls())),
        };
        HttpClient(Arc::new(Inner {
            surf: surf::Client::with_http_client(pool),
            origins: Mutex::default(),
            tls: tls.cloned(),
        }))
    }

    /// Sends `request` and reads the body, stopping one byte past the machine's bound (the
    /// machine rejects the oversized body). `Err` says whether the request could have reached
    /// etcd (a failure to connect could not).
    pub(crate) async fn send(
        &self,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, Failure> {
        let plain = (request.uri().scheme_str() == Some("http")).then(|| request.uri().clone());
        let request = self.to_surf(request).map_err(Failure::Connect)?;
        let mut response = match self.0.surf.send(request).await {
            Ok(response) => response,
            Err(e) => {
                let tls = self.0.tls.as_ref().and_then(|tls| tls.classify(e.as_ref()));
                if let Some((failure, reason)) = tls {
                    return Err(Failure::Tls(failure, reason));
                }
                if e.downcast_ref::<ConnectFailed>().is_some() {
                    return Err(Failure::Connect(describe(e)));
                }
                // A TLS port closes on plain HTTP without a word (async-h1: "connection
                // closed", no byte read): ask it.
                if let Some(uri) = plain.filter(|_| e.to_string() == "connection closed") {
                    if speaks_tls(&uri).await {
                        return Err(Failure::Tls(
                            TlsFailure::PlaintextToTls,
                            "it closed the connection on plain HTTP and answers TLS".to_owned(),
                        ));
                    }
                }
                return Err(Failure::Lost(describe(e)));
            }
        };
        let lost = |e: &dyn std::fmt::Display| Failure::Lost(e.to_string());
        // The pool has read the body already.
        let bytes = response.body_bytes().await.map_err(|e| lost(&e))?;
        let mut out = Response::new(bytes);
        *out.status_mut() = StatusCode::from_u16(response.status().into()).map_err(|e| lost(&e))?;
        for (name, values) in response.iter() {
            for value in values {
                // Skips only what `http` cannot hold, e.g. async-h1's stand-in `Date` (it ends in
                // CRLF) for a response without one.
                let name = HeaderName::from_bytes(name.as_str().as_bytes());
                let value = HeaderValue::from_str(value.as_str());
                if let (Ok(name), Ok(value)) = (name, value) {
                    out.headers_mut().append(name, value);
                }
            }
        }
        Ok(out)
    }
}

/// The connection could not be made: the request never left this process.
#[derive(Debug)]
struct ConnectFailed(io::Error);

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connect: {}", self.0)
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl HttpClient {
    /// The same request for surf: method, URI, headers, body (and no header surf would add).
    fn to_surf(&self, request: Request<Vec<u8>>) -> Result<surf::Request, String> {
        let (parts, body) = request.into_parts();
        let method: Method = parts.method.as_str().parse().map_err(describe)?;
        let mut out = surf::http::Request::new(method, self.url(&parts.uri)?);
        for (name, value) in &parts.headers {
            let value = value.to_str().map_err(|e| format!("header {name}: {e}"))?;
            out.append_header(name.as_str(), value);
        }
        if !body.is_empty() {
            out.set_body(body);
            if !parts.headers.contains_key(CONTENT_TYPE) {
                out.remove_header(CONTENT_TYPE.as_str()); // set_body's application/octet-stream
            }
        }
        Ok(out.into())
    }

    /// `uri` as a `Url`. Parsing a whole URL was the largest cost of a request in this crate
    /// (some 8,000 instructions): only the origin is parsed, once per member.
    fn url(&self, uri: &Uri) -> Result<Url, String> {
        let scheme = uri.scheme_str().unwrap_or_default();
        let authority = uri.authority().map_or("", |a| a.as_str());
        let mut origins = self
            .0
            .origins
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut url = match origins.iter().find(|o| o.0 == scheme && o.1 == authority) {
            Some(origin) => origin.2.clone(),
            None => {
                let url =
                    Url::parse(&format!("{scheme}://{authority}")).map_err(|e| e.to_string())?;
                origins.push((scheme.to_owned(), authority.to_owned(), url.clone()));
                url
            }
        };
        drop(origins);
        url.set_path(uri.path());
        url.set_query(uri.query());
        Ok(url)
    }
}

/// Whether the server at `uri`'s address answers a TLS ClientHello (within a second).
async fn speaks_tls(uri: &Uri) -> bool {
    let Some(authority) = uri.authority() else {
        return false;
    };
    let probe = async {
        let mut stream = TcpStream::connect(authority.as_str()).await?;
        async_std::io::WriteExt::write_all(&mut stream, &tls::probe_hello()).await?;
        let mut answer = [0; 2];
        stream.read_exact(&mut answer).await?;
        Ok::<_, io::Error>(tls::is_tls_record(&answer))
    };
    matches!(
        async_std::future::timeout(std::time::Duration::from_secs(1), probe).await,
        Ok(Ok(true))
    )
}

/// An error and its chain of causes, on one line.
fn describe(error: surf::Error) -> String {
    format!("{error:#}")
}

/// Idle connections by scheme, host and port. A connection goes back only once its response
/// was read to the end; a request dropped earlier (aborted, timed out) or a body past the bound
/// closes it, so a late answer can never be read as the next request's. (surf's own
/// `h1-client` pool puts such a connection back.)
struct Pool {
    idle: Mutex<HashMap<Origin, Vec<Conn>>>,
    /// rustls on microlock-proto's configuration, for `https://` members.
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// `(is https, host, port)`.
type Origin = (bool, String, u16);

impl surf::HttpClient for Pool {
    fn send<'a, 'b>(
        &'a self,
        request: surf::http::Request,
    ) -> Pin<Box<dyn Future<Output = surf::Result<surf::http::Response>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(self.exchange(request))
    }
}

impl Pool {
    /// One request and its whole response, body included (at most one byte past the machine's
    /// bound), on an idle connection or a new one.
    async fn exchange(&self, request: surf::http::Request) -> surf::Result<surf::http::Response> {
        let url = request.url();
        let key = (
            url.scheme() == "https",
            url.host_str().unwrap_or_default().to_owned(),
            url.port_or_known_default().unwrap_or(80),
        );
        let stream = match self.take_idle(&key) {
            Some(stream) => stream,
            None => self.connect(url).await.map_err(|e| {
                surf::Error::new(surf::StatusCode::ServiceUnavailable, ConnectFailed(e))
            })?,
        };
        let mut response = async_h1::client::connect(stream.clone(), request).await?;
        // HTTP/1.1 keeps the connection unless told otherwise, when the body has a known end.
        let close = response.header(CONNECTION);
        let reusable = !close.is_some_and(|c| c.as_str().eq_ignore_ascii_case("close"))
            && (response.header(CONTENT_LENGTH).is_some()
                || response.header(TRANSFER_ENCODING).is_some());
        let body = response.take_body();
        let mut bytes = Vec::with_capacity(body.len().unwrap_or(0).min(MAX_RESPONSE_BYTES + 1));
        body.take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .await?;
        if reusable && bytes.len() <= MAX_RESPONSE_BYTES {
            // Read to its end: the connection is at the next response's start.
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.entry(key).or_default().push(stream);
        }
        response.set_body(bytes);
        Ok(response)
    }

    /// A new connection to `url`'s origin: TCP, then a TLS handshake for `https://`. Any
    /// failure here means the request never left this process.
    async fn connect(&self, url: &Url) -> io::Result<Conn> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        if url.scheme() != "https" {
            return Ok(Conn::Plain(tcp));
        }
        let Some(tls) = &self.tls else {
            return Err(io::Error::other("https:// without TLS settings"));
        };
        // An IPv6 literal comes bracketed in the URL, not in a certificate.
        let name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = ServerName::try_from(name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = tls.connect(name, tcp).await?;
        Ok(Conn::Tls(Arc::new(Mutex::new(stream))))
    }

    /// An idle connection to `host:port` that the server has not closed meanwhile.
    fn take_idle(&self, key: &Origin) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let streams = idle.get_mut(key)?;
        let waker = Waker::from(Arc::new(NoWake));
        let mut cx = Context::from_waker(&waker);
        // Still open and silent: a read would wait.
        streams.retain_mut(|s| Pin::new(s).poll_read(&mut cx, &mut [0]).is_pending());
        streams.pop()
    }
}

struct NoWake;

impl Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// A pooled connection. async-h1 reads a response's body after handing it back, so the pool
/// keeps a second handle on the same connection: TCP streams clone; a TLS stream is shared
/// behind a mutex (only one request uses a connection at a time, so it is never contended).
#[derive(Clone, Debug)]
enum Conn {
    Plain(TcpStream),
    Tls(Arc<Mutex<TlsStream<TcpStream>>>),
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => {
                Pin::new(&mut *s.lock().unwrap_or_else(PoisonError::into_inner)).poll_read(cx, buf)
            }
        }
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => {
                Pin::new(&mut *s.lock().unwrap_or_else(PoisonError::into_inner)).poll_write(cx, buf)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => {
                Pin::new(&mut *s.lock().unwrap_or_else(PoisonError::into_inner)).poll_flush(cx)
            }
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_close(cx),
            Conn::Tls(s) => {
                Pin::new(&mut *s.lock().unwrap_or_else(PoisonError::into_inner)).poll_close(cx)
            }
        }
    }
}
