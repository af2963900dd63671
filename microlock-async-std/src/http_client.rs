//! Moves one `http::Request<Vec<u8>>` to etcd and one `http::Response<Vec<u8>>` back, over
//! plain TCP or TLS (rustls), on keep-alive connections: a pool of our own, with a bounded
//! number of connections per member.
//!
//! Each member has two budgets of connections (from the handle's
//! [`Settings`](microlock_proto::Settings)): one for short requests (lock, unlock, renew,
//! reads, probes: `max_connections_per_member`) and one for long polls (requests marked
//! [`LongPoll`]: `max_watches_per_member`), so that watches, which hold their connection for as
//! long as their key is quiet, can never starve the short requests. A request takes a place in
//! its budget before it takes a connection (an idle one, else a new one), and gives it back once
//! the connection is back in the pool or closed; a request that finds its budget full waits for
//! a place, first come first served ([`Budget`]). So a handle never has more than the sum of
//! both budgets open to one member. A request dropped while it waits (the machine gave up on
//! it: the driver drops its future) leaves the queue; one dropped while it runs closes its
//! connection and frees its place. (The same rules as microlock-tokio's pool.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_std::io::{Read, ReadExt, Write};
use async_std::net::TcpStream;
use futures_rustls::client::TlsStream;
use futures_rustls::rustls::pki_types::ServerName;
use futures_rustls::TlsConnector;
use microlock_proto::driver::Failure;
use microlock_proto::http::header::CONTENT_TYPE;
use microlock_proto::http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use microlock_proto::{tls, LongPoll, Settings, TlsConfig, TlsFailure, MAX_RESPONSE_BYTES};
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
    /// A pool with the caps and TLS settings of `settings`.
    pub(crate) fn new(settings: &Settings) -> HttpClient {
        let tls = settings.tls();
        let pool = Pool {
            members: Mutex::default(),
            max_requests: settings.max_connections_per_member(),
            max_watches: settings.max_watches_per_member(),
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
                // A TLS port closes (or resets) plain HTTP without a word (async-h1:
                // "connection closed", no byte read): ask it.
                let unanswered = e.downcast_ref::<Unanswered>().is_some()
                    || e.to_string() == "connection closed";
                if let Some(uri) = plain.filter(|_| unanswered) {
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

/// A request on a new plain connection got no answer at all (closed or reset): `send` asks
/// the port whether it speaks TLS.
#[derive(Debug)]
struct Unanswered(String);

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unanswered {}

/// What a request that got no answer on the new connection `stream` failed of. Over TLS, the
/// member may have refused the client certificate with an alert after the handshake (TLS 1.3)
/// and closed: writing the request then fails ("broken pipe") before the alert is read, so read
/// it (for at most half a second) and report the alert when that is what it was. Over plain
/// TCP, [`Unanswered`].
async fn unanswered(mut stream: Conn, error: surf::Error) -> surf::Error {
    if !matches!(stream, Conn::Tls(_)) {
        let reason = format!("{error:#}");
        return surf::Error::new(error.status(), Unanswered(reason));
    }
    let mut buf = [0; 256];
    let read = async_std::future::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    match read {
        Ok(Err(e))
            if e.get_ref()
                .is_some_and(|e| e.is::<futures_rustls::rustls::Error>()) =>
        {
            surf::Error::new(error.status(), e)
        }
        _ => error,
    }
}

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
        if parts.extensions.get::<LongPoll>().is_some() {
            out.ext_mut().insert(LongPoll); // for the pool: a watch, on the watches' budget
        }
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

/// The members' budgets and idle connections, by scheme, host and port. A connection goes
/// back only once its response was read to the end; a request dropped earlier (aborted, timed
/// out) or a body past the bound closes it, so a late answer can never be read as the next
/// request's. (surf's own `h1-client` pool puts such a connection back.)
struct Pool {
    members: Mutex<HashMap<Origin, Arc<Member>>>,
    /// Places per member for short requests and for long polls.
    max_requests: usize,
    max_watches: usize,
    /// rustls on microlock-proto's configuration, for `https://` members.
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("members", &self.members)
            .field("max_requests", &self.max_requests)
            .field("max_watches", &self.max_watches)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// `(is https, host, port)`.
type Origin = (bool, String, u16);

/// An idle connection unused for this long is closed rather than reused (hyper's own pool's
/// default: under the idle timeouts of common servers and proxies, so a request rarely meets a
/// connection the other side is closing).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One member's budgets and idle connections.
#[derive(Debug)]
struct Member {
    requests: Budget,
    watches: Budget,
    /// Connections whose last response was read to its end, newest last.
    idle: Mutex<Vec<(Conn, Instant)>>,
}

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
    ///
    /// It holds a place in the member's budget (the watches' for a [`LongPoll`]) from before it
    /// takes a connection until that connection is back in the pool or closed.
    async fn exchange(&self, request: surf::http::Request) -> surf::Result<surf::http::Response> {
        let url = request.url();
        let key = (
            url.scheme() == "https",
            url.host_str().unwrap_or_default().to_owned(),
            url.port_or_known_default().unwrap_or(80),
        );
        let member = self.member(&key);
        let budget = match request.ext().get::<LongPoll>() {
            Some(_) => &member.watches,
            None => &member.requests,
        };
        let place = budget.acquire().await;
        let (stream, fresh) = match member.take_idle() {
            Some(stream) => (stream, false),
            None => {
                let stream = self.connect(url).await.map_err(|e| {
                    surf::Error::new(surf::StatusCode::ServiceUnavailable, ConnectFailed(e))
                })?;
                (stream, true)
            }
        };
        let mut response = match async_h1::client::connect(stream.clone(), request).await {
            Ok(response) => response,
            Err(e) if fresh => return Err(unanswered(stream, e).await),
            Err(e) => return Err(e),
        };
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
            let mut idle = (member.idle.lock()).unwrap_or_else(PoisonError::into_inner);
            idle.push((stream, Instant::now()));
        }
        drop(place);
        response.set_body(bytes);
        Ok(response)
    }

    /// The member at `key`, met now or before.
    fn member(&self, key: &Origin) -> Arc<Member> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(member) = members.get(key) {
            return member.clone();
        }
        let member = Arc::new(Member {
            requests: Budget::new(self.max_requests),
            watches: Budget::new(self.max_watches),
            idle: Mutex::default(),
        });
        members.insert(key.clone(), member.clone());
        member
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
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), microlock_proto::tls::HandshakeFailed(e)))?;
        Ok(Conn::Tls(Arc::new(Mutex::new(stream))))
    }
}

impl Member {
    /// The newest idle connection that the server has not closed meanwhile; closes those idle
    /// for too long.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let waker = Waker::from(Arc::new(NoWake));
        let mut cx = Context::from_waker(&waker);
        let now = Instant::now();
        // Still open and silent: a read would wait.
        idle.retain_mut(|(s, since)| {
            now.duration_since(*since) < IDLE_TIMEOUT
                && Pin::new(s).poll_read(&mut cx, &mut [0]).is_pending()
        });
        idle.pop().map(|(s, _)| s)
    }
}

/// A fair counting semaphore, runtime-agnostic: `n` places, handed out first come, first
/// served. A place freed while requests wait goes straight to the oldest waiter (a newcomer
/// cannot take it first, so no waiter is passed over however busy the member is). Dropping an
/// [`acquire`](Budget::acquire) future leaves the queue, or, if a place was handed to it
/// meanwhile, hands that place on: no place is ever lost.
struct Budget(Mutex<Places>);

#[derive(Default)]
struct Places {
    free: usize,
    /// Tickets waiting, oldest first, with the waker of their last poll.
    waiting: BTreeMap<u64, Option<Waker>>,
    /// Tickets handed a place, not yet polled.
    granted: HashSet<u64>,
    next_ticket: u64,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let places = self.places();
        f.debug_struct("Budget")
            .field("free", &places.free)
            .field("waiting", &places.waiting.len())
            .finish()
    }
}

impl Budget {
    fn new(places: usize) -> Budget {
        Budget(Mutex::new(Places {
            free: places,
            ..Places::default()
        }))
    }

    fn places(&self) -> std::sync::MutexGuard<'_, Places> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place, once one is free for this caller.
    fn acquire(&self) -> Acquire<'_> {
        Acquire {
            budget: self,
            ticket: None,
        }
    }

    /// Gives a place back: to the oldest waiter, else to the free ones.
    fn release(&self) {
        let waker = {
            let mut places = self.places();
            match places.waiting.pop_first() {
                Some((ticket, waker)) => {
                    places.granted.insert(ticket);
                    waker
                }
                None => {
                    places.free += 1;
                    None
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Waits for a place in a [`Budget`].
struct Acquire<'a> {
    budget: &'a Budget,
    /// Its place in the queue, once it waits.
    ticket: Option<u64>,
}

/// A place in a [`Budget`], given back on drop.
struct Place<'a>(&'a Budget);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<'a> Future for Acquire<'a> {
    type Output = Place<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Place<'a>> {
        let budget = self.budget;
        let mut places = budget.places();
        match self.ticket {
            Some(ticket) if places.granted.remove(&ticket) => {
                drop(places);
                self.ticket = None;
                return Poll::Ready(Place(budget));
            }
            Some(ticket) => {
                if let Some(waker) = places.waiting.get_mut(&ticket) {
                    match waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                }
            }
            // Nobody ahead: take a free place.
            None if places.free > 0 && places.waiting.is_empty() => {
                places.free -= 1;
                return Poll::Ready(Place(budget));
            }
            None => {
                let ticket = places.next_ticket;
                places.next_ticket += 1;
                places.waiting.insert(ticket, Some(cx.waker().clone()));
                drop(places);
                self.ticket = Some(ticket);
            }
        }
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else {
            return;
        };
        let mut places = self.budget.places();
        if places.waiting.remove(&ticket).is_none() && places.granted.remove(&ticket) {
            // Handed a place it will never use: hand it on.
            drop(places);
            self.budget.release();
        }
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
