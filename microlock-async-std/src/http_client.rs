//! Moves one `http::Request<Vec<u8>>` to etcd and one `http::Response<Vec<u8>>` back, over
//! plain TCP or TLS (rustls), on keep-alive connections: a pool of our own, with a bounded
//! number of connections per member. A request marked [`Streamed`] is [`HttpClient::stream`]ed
//! instead: its [`Pieces`] are the response's head as soon as it has come, then its body chunk
//! by chunk as it comes, then the end; nothing is read before the driver asks for the next.
//!
//! A request is written as it is, head and body in one write ([`encode`]); its response is read
//! by surf's HTTP/1.1 codec, async-h1, into surf's types, and only what the machine reads of it
//! is copied back ([`RESPONSE_HEADERS`]). (Through surf's `Client` and async-h1's encoder, each
//! request was converted twice and written in two pieces: a fifth more CPU per lock+unlock than
//! bare async-h1, and one more packet for etcd.)
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
//! it: the driver drops its future) leaves the queue; one dropped while it runs (a streamed
//! one included, until its body's end) closes its connection and frees its place. (The same
//! rules as microlock-tokio's pool.)

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_std::io::{BufRead, Read, ReadExt, Write, WriteExt};
use async_std::net::TcpStream;
use futures_core::Stream;
use futures_rustls::client::TlsStream;
use futures_rustls::rustls::pki_types::ServerName;
use futures_rustls::TlsConnector;
use microlock_proto::driver::{Failure, Origin};
use microlock_proto::http::header::{self, HOST};
use microlock_proto::http::response::Parts;
use microlock_proto::http::uri::Authority;
use microlock_proto::http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use microlock_proto::{
    tls, LongPoll, Settings, Streamed, TlsConfig, TlsFailure, MAX_RESPONSE_BYTES, RESPONSE_HEADERS,
};
use surf::http::headers::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};

/// A keep-alive pool of HTTP/1.1 connections, responses read by async-h1. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Our pool of connections, called directly: surf's `Client` layer (a middleware chain,
    /// three allocations and two conversions per request) has nothing to do here.
    pool: Pool,
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
            pool,
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
        let (response, body) = match self.0.pool.exchange(request).await {
            Ok(exchanged) => exchanged,
            Err(e) => return Err(Box::pin(self.failure(e, plain)).await),
        };
        Ok(Response::from_parts(
            head_of(&response)?,
            body.unwrap_or_default(),
        ))
    }

    /// Sends `request` and hands its response over in pieces as they come: the head, each
    /// body chunk, the end (or the failure). Each is read only when asked for: nothing piles up
    /// however slowly they are taken. Dropped before its end, it closes the connection.
    pub(crate) fn stream(&self, request: Request<Vec<u8>>) -> Pieces {
        let client = self.clone();
        Pieces(Phase::Head(Box::pin(
            async move { client.open(request).await },
        )))
    }

    /// Sends `request`; its response's head as soon as it has come, and its body to read.
    async fn open(&self, request: Request<Vec<u8>>) -> Result<(Parts, surf::Body), Failure> {
        let plain = (request.uri().scheme_str() == Some("http")).then(|| request.uri().clone());
        let mut response = match self.0.pool.exchange(request).await {
            Ok((response, _)) => response,
            Err(e) => return Err(Box::pin(self.failure(e, plain)).await),
        };
        Ok((head_of(&response)?, response.take_body()))
    }

    /// What a failed exchange failed of (`plain`: the URI of a plain `http://` request, whose
    /// port may be a TLS one).
    async fn failure(&self, e: surf::Error, plain: Option<Uri>) -> Failure {
        let tls = self.0.tls.as_ref().and_then(|tls| tls.classify(e.as_ref()));
        if let Some((failure, reason)) = tls {
            return Failure::Tls(failure, reason);
        }
        if e.downcast_ref::<ConnectFailed>().is_some() {
            return Failure::Connect(describe(e));
        }
        // A TLS port closes (or resets) plain HTTP without a word (async-h1:
        // "connection closed", no byte read): ask it.
        let unanswered =
            e.downcast_ref::<Unanswered>().is_some() || e.to_string() == "connection closed";
        if let Some(uri) = plain.filter(|_| unanswered) {
            if speaks_tls(&uri).await {
                return Failure::Tls(
                    TlsFailure::PlaintextToTls,
                    "it closed the connection on plain HTTP and answers TLS".to_owned(),
                );
            }
        }
        Failure::Lost(describe(e))
    }
}

/// `response`'s status, and the headers the machine reads ([`RESPONSE_HEADERS`]).
fn head_of(response: &surf::http::Response) -> Result<Parts, Failure> {
    let (mut head, ()) = Response::new(()).into_parts();
    head.status =
        StatusCode::from_u16(response.status().into()).map_err(|e| Failure::Lost(e.to_string()))?;
    for &name in RESPONSE_HEADERS {
        for value in response.header(name).into_iter().flatten() {
            // Skips only what `http` cannot hold.
            if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                head.headers.append(HeaderName::from_static(name), value);
            }
        }
    }
    Ok(head)
}

/// A piece of a streamed response.
pub(crate) enum Piece {
    /// Status and headers.
    Head(Parts),
    /// The next chunk of the body.
    Body(Vec<u8>),
    /// Complete (`Ok`), or failed; nothing follows.
    End(Result<(), Failure>),
}

/// How much of a streamed body one piece carries at most.
const CHUNK: usize = 16 * 1024;

/// The pieces of a streamed response, in order ([`HttpClient::stream`]).
pub(crate) struct Pieces(Phase);

type Opening = Pin<Box<dyn Future<Output = Result<(Parts, surf::Body), Failure>> + Send>>;

enum Phase {
    Head(Opening),
    Body(surf::Body, Vec<u8>),
    Done,
}

impl Stream for Pieces {
    type Item = Piece;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Piece>> {
        let phase = &mut self.get_mut().0;
        let (piece, next) = match phase {
            Phase::Head(opening) => match opening.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((head, body))) => {
                    (Piece::Head(head), Phase::Body(body, vec![0; CHUNK]))
                }
                Poll::Ready(Err(failure)) => (Piece::End(Err(failure)), Phase::Done),
            },
            Phase::Body(body, buf) => match Pin::new(body).poll_read(cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => (Piece::End(Ok(())), Phase::Done),
                Poll::Ready(Ok(n)) => return Poll::Ready(Some(Piece::Body(buf[..n].to_vec()))),
                Poll::Ready(Err(e)) => (Piece::End(Err(Failure::Lost(e.to_string()))), Phase::Done),
            },
            Phase::Done => return Poll::Ready(None),
        };
        *phase = next;
        Poll::Ready(Some(piece))
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

/// `request` as HTTP/1.1 bytes, head and body, for the member at `authority`: what async-h1's
/// encoder writes (the `Host` header first, a `Content-Length`), from the `http` request
/// itself. Every part is valid already: the machine builds the path and query from validated
/// and percent-encoded parts, and `http`'s header values hold no line break.
fn encode(request: &Request<Vec<u8>>, authority: &Authority) -> Vec<u8> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let headers = request.headers();
    let body = request.body();
    let mut out = Vec::with_capacity(128 + path.len() + body.len());
    for part in [request.method().as_str(), " ", path, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    if !headers.contains_key(HOST) {
        for part in ["host: ", authority.as_str(), "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    if !headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
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
    members: Mutex<Vec<(Key, Arc<Member>)>>,
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

/// A member's [`Origin`], kept: `(https, host, port)`.
type Key = (bool, String, u16);

/// An idle connection unused for this long is closed rather than reused (hyper's own pool's
/// default: under the idle timeouts of common servers and proxies, so a request rarely meets a
/// connection the other side is closing).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One member's budgets and idle connections.
#[derive(Debug)]
struct Member {
    requests: Arc<Budget>,
    watches: Arc<Budget>,
    /// Connections whose last response was read to its end, newest last.
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl Pool {
    /// One request and its whole response, body included (at most one byte past the machine's
    /// bound), on an idle connection or a new one.
    ///
    /// It holds a place in the member's budget (the watches' for a [`LongPoll`]) from before it
    /// takes a connection until that connection is back in the pool or closed. For a
    /// [`Streamed`] request it returns after the head: the body is read as it comes, through a
    /// [`Streaming`] reader that holds the place and the connection on; otherwise the body
    /// comes beside the response (whose own body is then empty).
    async fn exchange(
        &self,
        request: Request<Vec<u8>>,
    ) -> surf::Result<(surf::http::Response, Option<Vec<u8>>)> {
        let uri = request.uri();
        let (Some(origin), Some(authority)) = (Origin::of(uri), uri.authority()) else {
            let e = io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"));
            return Err(surf::Error::new(
                surf::StatusCode::BadRequest,
                ConnectFailed(e),
            ));
        };
        let member = self.member(origin);
        let budget = match request.extensions().get::<LongPoll>() {
            Some(_) => &member.watches,
            None => &member.requests,
        };
        let streamed = request.extensions().get::<Streamed>().is_some();
        let bytes = encode(&request, authority);
        let place = budget.acquire().await;
        let (mut stream, fresh) = match member.take_idle() {
            Some(stream) => (stream, false),
            None => {
                let stream = Box::pin(self.connect(origin)).await.map_err(|e| {
                    surf::Error::new(surf::StatusCode::ServiceUnavailable, ConnectFailed(e))
                })?;
                (stream, true)
            }
        };
        // The request in one write (async-h1's encoder writes the head and the body apart:
        // one more system call and packet per request with a body), then async-h1 reads the
        // response. Boxed: async-h1's decoder is large, and every request's future (which the
        // driver boxes) would carry and copy room for it.
        let sent = async {
            stream.write_all(&bytes).await?;
            stream.flush().await?;
            Box::pin(async_h1::client::decode(stream.clone())).await
        };
        let mut response = match sent.await {
            Ok(response) => response,
            Err(e) if fresh => return Err(Box::pin(unanswered(stream, e)).await),
            Err(e) => return Err(e),
        };
        // HTTP/1.1 keeps the connection unless told otherwise, when the body has a known end.
        let close = response.header(CONNECTION);
        let reusable = !close.is_some_and(|c| c.as_str().eq_ignore_ascii_case("close"))
            && (response.header(CONTENT_LENGTH).is_some()
                || response.header(TRANSFER_ENCODING).is_some());
        let body = response.take_body();
        if streamed {
            let streaming = Streaming {
                body,
                stream: Some(stream),
                reusable,
                place: Some(place),
                member: member.clone(),
            };
            response.set_body(surf::Body::from_reader(streaming, None));
            return Ok((response, None));
        }
        let mut bytes = Vec::with_capacity(body.len().unwrap_or(0).min(MAX_RESPONSE_BYTES + 1));
        body.take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .await?;
        if reusable && bytes.len() <= MAX_RESPONSE_BYTES {
            member.put_idle(stream);
        }
        drop(place);
        Ok((response, Some(bytes)))
    }

    /// The member at `origin`, met now or before.
    fn member(&self, origin: Origin<'_>) -> Arc<Member> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, member)) = (members.iter()).find(|((https, host, port), _)| {
            Origin {
                https: *https,
                host,
                port: *port,
            } == origin
        }) {
            return member.clone();
        }
        let member = Arc::new(Member {
            requests: Arc::new(Budget::new(self.max_requests)),
            watches: Arc::new(Budget::new(self.max_watches)),
            idle: Mutex::default(),
        });
        members.push((
            (origin.https, origin.host.to_owned(), origin.port),
            member.clone(),
        ));
        member
    }

    /// A new connection to `origin`: TCP, then a TLS handshake for `https://`. Any failure
    /// here means the request never left this process.
    async fn connect(&self, origin: Origin<'_>) -> io::Result<Conn> {
        let Origin { https, host, port } = origin;
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        if !https {
            return Ok(Conn::Plain(tcp));
        }
        let Some(tls) = &self.tls else {
            return Err(io::Error::other("https:// without TLS settings"));
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), microlock_proto::tls::HandshakeFailed(e)))?;
        Ok(Conn::Tls(Arc::new(Mutex::new(stream))))
    }
}

/// The body of a streamed response as async-h1 reads it, holding the connection and its place
/// in the member's budget: read to its end, a reusable connection goes back to the pool; dropped
/// before, the connection is closed and the place given back.
struct Streaming {
    body: surf::Body,
    /// Dropped before the place: a place is never free while its connection is open.
    stream: Option<Conn>,
    reusable: bool,
    place: Option<Place>,
    member: Arc<Member>,
}

impl Streaming {
    /// The body's end was read.
    fn finish(&mut self) {
        if let Some(stream) = self.stream.take().filter(|_| self.reusable) {
            self.member.put_idle(stream);
        }
        self.stream = None;
        self.place = None;
    }
}

impl Read for Streaming {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.body).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(0))) && !buf.is_empty() {
            this.finish();
        }
        read
    }
}

impl BufRead for Streaming {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        let end = match Pin::new(&mut this.body).poll_fill_buf(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(buf)) => buf.is_empty(),
        };
        if end {
            this.finish();
            return Poll::Ready(Ok(&[]));
        }
        // Buffered already: ready at once.
        Pin::new(&mut this.body).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.get_mut().body).consume(amt);
    }
}

impl Member {
    /// The newest idle connection that the server has not closed meanwhile; closes those idle
    /// for too long. A connection back for less than [`PROBE_AFTER`] is taken as it is; one
    /// idle for longer is first asked (a read that must find nothing to read) whether the
    /// server has closed it meanwhile.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Oldest first: those past the idle timeout are all at the front.
        let expired = idle.partition_point(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT);
        idle.drain(..expired);
        while let Some((mut conn, since)) = idle.pop() {
            if now.duration_since(since) < PROBE_AFTER || is_silent(&mut conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Back in the pool: a connection whose response was read to its end (it is at the next
    /// response's start).
    fn put_idle(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.push((conn, Instant::now()));
    }
}

/// How long a connection may sit in the pool and still be reused without asking whether the
/// server closed it (one more system call per request, which back-to-back requests need not
/// pay). A server that closes it within this time (a member killed right after answering) makes
/// the next request on it fail as sent and unanswered, which the machine settles like any lost
/// answer.
const PROBE_AFTER: Duration = Duration::from_millis(50);

/// Still open and silent: a read would wait.
fn is_silent(conn: &mut Conn) -> bool {
    let waker = Waker::from(Arc::new(NoWake));
    let mut cx = Context::from_waker(&waker);
    Pin::new(conn).poll_read(&mut cx, &mut [0]).is_pending()
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
    fn acquire(self: &Arc<Self>) -> Acquire<'_> {
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
    budget: &'a Arc<Budget>,
    /// Its place in the queue, once it waits.
    ticket: Option<u64>,
}

/// A place in a [`Budget`], given back on drop.
struct Place(Arc<Budget>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<'a> Future for Acquire<'a> {
    type Output = Place;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Place> {
        let budget = self.budget;
        let mut places = budget.places();
        match self.ticket {
            Some(ticket) if places.granted.remove(&ticket) => {
                drop(places);
                self.ticket = None;
                return Poll::Ready(Place(budget.clone()));
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
                return Poll::Ready(Place(budget.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use microlock_proto::Endpoint;
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// What the one-connection server saw.
    #[derive(Debug, PartialEq, Eq)]
    enum Saw {
        Request,
        Closed,
        Open,
    }

    /// A server for one connection: per request, a chunked 200 head at once, then one body
    /// chunk per `go`, then the last chunk. It reports each request and the connection's close.
    fn server(chunks: usize) -> (String, mpsc::Sender<()>, mpsc::Receiver<Saw>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (go, wait) = mpsc::channel::<()>();
        let (saw, seen) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            loop {
                let mut head = Vec::new();
                let mut byte = [0];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => {
                            let _ = saw.send(Saw::Closed);
                            return;
                        }
                    }
                }
                let _ = saw.send(Saw::Request);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nX-Etcd-Index: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                for _ in 0..chunks {
                    if wait.recv().is_err() {
                        // No more `go`: wait for the client to close the connection.
                        let timeout = Some(std::time::Duration::from_secs(10));
                        stream.set_read_timeout(timeout).unwrap();
                        let closed = loop {
                            match stream.read(&mut byte) {
                                Ok(0) => break true,
                                Ok(_) => {}
                                Err(_) => break false, // still open after 10 s
                            }
                        };
                        let _ = saw.send(if closed { Saw::Closed } else { Saw::Open });
                        return;
                    }
                    let _ = stream.write_all(b"5\r\nhello\r\n");
                }
                let _ = stream.write_all(b"0\r\n\r\n");
            }
        });
        (url, go, seen)
    }

    fn watch(url: &str) -> Request<Vec<u8>> {
        let mut request = Request::get(format!("{url}/v2/keys/k?wait=true&waitIndex=4"))
            .body(Vec::new())
            .unwrap();
        request.extensions_mut().insert(LongPoll);
        request.extensions_mut().insert(Streamed);
        request
    }

    /// The bytes `encode` writes for `request`.
    fn encoded(request: Request<Vec<u8>>) -> String {
        let authority = request.uri().authority().unwrap().clone();
        String::from_utf8(encode(&request, &authority)).unwrap()
    }

    #[test]
    fn a_request_is_written_whole_host_and_length_first() {
        let put = Request::put("http://127.0.0.1:2379/v2/keys/a%20b?prevExist=false")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", "Basic dTpw")
            .body(b"value=n&ttl=5".to_vec())
            .unwrap();
        assert_eq!(
            encoded(put),
            "PUT /v2/keys/a%20b?prevExist=false HTTP/1.1\r\nhost: 127.0.0.1:2379\r\n\
             content-length: 13\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             authorization: Basic dTpw\r\n\r\nvalue=n&ttl=5"
        );
        // No body: a zero length (what async-h1 writes); a given `Host` is kept, not doubled.
        let get = Request::get("https://[::1]/v3/kv/range")
            .header("host", "etcd.example")
            .body(Vec::new())
            .unwrap();
        assert_eq!(
            encoded(get),
            "GET /v3/kv/range HTTP/1.1\r\ncontent-length: 0\r\nhost: etcd.example\r\n\r\n"
        );
    }

    #[async_std::test]
    async fn an_idle_connection_is_asked_whether_it_was_closed_only_after_a_pause() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed, silent) = (
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        );
        let (closing, _) = listener.accept().unwrap();
        let (_open, _) = listener.accept().unwrap();
        // The server closes the first: wait until its end has come.
        drop(closing);
        assert_eq!(closed.peek(&mut [0]).await.unwrap(), 0);
        let member = Member {
            requests: Arc::new(Budget::new(1)),
            watches: Arc::new(Budget::new(1)),
            idle: Mutex::default(),
        };
        let back = |conn: &TcpStream, idle_for: Duration| {
            let since = Instant::now().checked_sub(idle_for).unwrap();
            member
                .idle
                .lock()
                .unwrap()
                .push((Conn::Plain(conn.clone()), since));
        };
        // Back just now: taken as it is, unasked.
        back(&closed, Duration::ZERO);
        assert!(member.take_idle().is_some());
        // Idle for longer: asked, and dropped, since it reads as closed.
        back(&closed, PROBE_AFTER);
        assert!(member.take_idle().is_none());
        // A silent one idle as long is taken, past one that is not.
        back(&silent, PROBE_AFTER);
        back(&closed, PROBE_AFTER);
        let port = |conn: &TcpStream| conn.local_addr().unwrap().port();
        let taken = member.take_idle();
        assert!(matches!(&taken, Some(Conn::Plain(c)) if port(c) == port(&silent)));
        assert!(member.idle.lock().unwrap().is_empty());
        // Past the idle timeout: closed, asked or not.
        back(&silent, IDLE_TIMEOUT);
        assert!(member.take_idle().is_none());
    }

    fn client(url: &str) -> HttpClient {
        HttpClient::new(&Settings::new(vec![Endpoint::parse(url).unwrap()]).unwrap())
    }

    async fn next(pieces: &mut Pieces) -> Option<Piece> {
        std::future::poll_fn(|cx| Pin::new(&mut *pieces).poll_next(cx)).await
    }

    /// The body's pieces up to its end, as one text.
    async fn rest(pieces: &mut Pieces) -> String {
        let mut text = String::new();
        loop {
            match next(pieces).await {
                Some(Piece::Body(chunk)) => text.push_str(std::str::from_utf8(&chunk).unwrap()),
                Some(Piece::End(end)) => {
                    assert!(end.is_ok(), "{end:?}");
                    return text;
                }
                _ => panic!("a body piece or the end"),
            }
        }
    }

    #[async_std::test]
    async fn the_head_comes_before_the_body_and_a_body_read_to_its_end_frees_the_connection() {
        let (url, go, seen) = server(2);
        let client = client(&url);
        let mut pieces = client.stream(watch(&url));
        let Some(Piece::Head(head)) = next(&mut pieces).await else {
            panic!("the head first");
        };
        assert_eq!(head.status, 200, "before any byte of the body was sent");
        assert_eq!(head.headers["x-etcd-index"], "3");
        go.send(()).unwrap();
        let Some(Piece::Body(chunk)) = next(&mut pieces).await else {
            panic!("a chunk");
        };
        assert_eq!(chunk, b"hello", "as it comes");
        go.send(()).unwrap();
        assert_eq!(rest(&mut pieces).await, "hello");
        assert!(next(&mut pieces).await.is_none(), "nothing after the end");
        drop(pieces);
        // The connection went back to the pool: the next request goes on it.
        let mut pieces = client.stream(watch(&url));
        assert!(matches!(next(&mut pieces).await, Some(Piece::Head(_))));
        go.send(()).unwrap();
        go.send(()).unwrap();
        assert_eq!(rest(&mut pieces).await, "hellohello");
        assert_eq!(seen.recv().unwrap(), Saw::Request);
        assert_eq!(seen.recv().unwrap(), Saw::Request, "on the same connection");
    }

    #[async_std::test]
    async fn pieces_dropped_before_the_end_close_the_connection() {
        let (url, go, seen) = server(2);
        let client = client(&url);
        let mut pieces = client.stream(watch(&url));
        assert!(matches!(next(&mut pieces).await, Some(Piece::Head(_))));
        go.send(()).unwrap();
        assert!(matches!(next(&mut pieces).await, Some(Piece::Body(_))));
        drop(pieces); // the machine gave up on it
        drop(go);
        assert_eq!(seen.recv().unwrap(), Saw::Request);
        let closed = async_std::task::spawn_blocking(move || seen.recv().unwrap());
        assert_eq!(closed.await, Saw::Closed);
    }
}
