//! Moves one `http::Request<Vec<u8>>` to etcd and one `http::Response<Vec<u8>>` back.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll, Wake, Waker};

use async_std::io::{BufReader, Read, ReadExt};
use async_std::net::TcpStream;
use microlock_proto::driver::Failure;
use microlock_proto::http::header::CONTENT_TYPE;
use microlock_proto::http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use microlock_proto::MAX_RESPONSE_BYTES;
use surf::http::headers::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use surf::http::{Body, Method, Url};

/// surf over a keep-alive pool of HTTP/1.1 connections.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient(surf::Client);

impl HttpClient {
    pub(crate) fn new() -> HttpClient {
        HttpClient(surf::Client::with_http_client(Pool::default()))
    }

    /// Sends `request` and reads the body, stopping one byte past the machine's bound (the
    /// machine rejects the oversized body). `Err` says whether the request could have reached
    /// etcd (a failure to connect could not).
    pub(crate) async fn send(
        &self,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, Failure> {
        let request = to_surf(request).map_err(Failure::Connect)?;
        let mut response = self.0.send(request).await.map_err(|e| {
            if e.downcast_ref::<ConnectFailed>().is_some() {
                Failure::Connect(describe(e))
            } else {
                Failure::Lost(describe(e))
            }
        })?;
        let lost = |e: &dyn std::fmt::Display| Failure::Lost(e.to_string());
        let mut bytes = Vec::new();
        response
            .take_body()
            .take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| lost(&e))?;
        let status = StatusCode::from_u16(response.status().into()).map_err(|e| lost(&e))?;
        let mut out = Response::builder().status(status);
        for (name, values) in response.iter() {
            for value in values {
                // Skips only what `http` cannot hold, e.g. async-h1's stand-in `Date` (it ends in
                // CRLF) for a response without one.
                let name = HeaderName::from_bytes(name.as_str().as_bytes());
                let value = HeaderValue::from_str(value.as_str());
                if let (Ok(name), Ok(value)) = (name, value) {
                    out = out.header(name, value);
                }
            }
        }
        out.body(bytes).map_err(|e| lost(&e))
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

/// The same request for surf: method, URI, headers, body (and no header surf would add).
fn to_surf(request: Request<Vec<u8>>) -> Result<surf::Request, String> {
    let (parts, body) = request.into_parts();
    let method: Method = parts.method.as_str().parse().map_err(describe)?;
    let url = Url::parse(&parts.uri.to_string()).map_err(|e| e.to_string())?;
    let mut out = surf::http::Request::new(method, url);
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

/// An error and its chain of causes, on one line.
fn describe(error: surf::Error) -> String {
    format!("{error:#}")
}

type Idle = Arc<Mutex<HashMap<(String, u16), Vec<TcpStream>>>>;

/// Idle connections by host and port. A connection goes back only once its response was read to
/// the end; a request dropped earlier (aborted, timed out, a body past the bound) closes it, so
/// a late answer can never be read as the next request's. (surf's own `h1-client` pool puts such
/// a connection back.)
#[derive(Debug, Default)]
struct Pool(Idle);

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
    async fn exchange(&self, request: surf::http::Request) -> surf::Result<surf::http::Response> {
        let url = request.url();
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let stream = match self.take_idle(&host, port) {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| {
                        surf::Error::new(surf::StatusCode::ServiceUnavailable, ConnectFailed(e))
                    })?;
                stream.set_nodelay(true)?;
                stream
            }
        };
        let mut response = async_h1::client::connect(stream.clone(), request).await?;
        // HTTP/1.1 keeps the connection unless told otherwise, when the body has a known end.
        let close = response.header(CONNECTION);
        let reusable = !close.is_some_and(|c| c.as_str().eq_ignore_ascii_case("close"))
            && (response.header(CONTENT_LENGTH).is_some()
                || response.header(TRANSFER_ENCODING).is_some());
        let body = response.take_body();
        let len = body.len();
        let recycle = Recycle {
            body,
            back: reusable.then(|| (self.0.clone(), (host, port), stream)),
        };
        response.set_body(Body::from_reader(BufReader::new(recycle), len));
        Ok(response)
    }

    /// An idle connection to `host:port` that the server has not closed meanwhile.
    fn take_idle(&self, host: &str, port: u16) -> Option<TcpStream> {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let streams = idle.get_mut(&(host.to_owned(), port))?;
        let waker = Waker::from(Arc::new(NoWake));
        let mut cx = Context::from_waker(&waker);
        // Still open and silent: a read would wait.
        streams.retain_mut(|s| Pin::new(s).poll_read(&mut cx, &mut [0]).is_pending());
        streams.pop()
    }
}

/// A response body that gives its connection back to the pool when read to the end.
struct Recycle {
    body: Body,
    back: Option<(Idle, (String, u16), TcpStream)>,
}

impl Read for Recycle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.body).poll_read(cx, buf))?;
        if n == 0 && !buf.is_empty() {
            if let Some((idle, key, stream)) = self.back.take() {
                let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.entry(key).or_default().push(stream);
            }
        }
        Poll::Ready(Ok(n))
    }
}

struct NoWake;

impl Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}
