//! Moves one `http::Request<Vec<u8>>` to etcd and one `http::Response<Vec<u8>>` back, over
//! plain TCP or TLS (rustls), on keep-alive connections: a pool of hyper's HTTP/1.1
//! connections with a bounded number per member. For a request marked
//! [`Streamed`](microlock_proto::Streamed), [`HttpClient::open`] hands the response's head back
//! as soon as it has come, and a [`Body`] to read the body chunk by chunk as it comes.
//!
//! Each member has two budgets of connections (from the handle's
//! [`Settings`](microlock_proto::Settings)): one for short requests (lock, unlock, renew,
//! reads, probes: `max_connections_per_member`) and one for long polls (requests marked
//! [`LongPoll`]: `max_watches_per_member`), so that watches, which hold their connection for as
//! long as their key is quiet, can never starve the short requests. A request takes a place in
//! its budget before it takes a connection (an idle one, else a new one), and gives it back once
//! the connection is back in the pool or closed; a request that finds its budget full waits for
//! a place, first come first served. So a handle never has more than the sum of both budgets
//! open to one member. A request dropped while it waits (the machine gave up on it: the driver
//! aborts its task) leaves the queue; one dropped while it runs (its [`Body`] dropped before its
//! end) closes its connection and frees its place.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use microlock_proto::driver::{Failure, Origin};
use microlock_proto::http::header::{CONNECTION, HOST};
use microlock_proto::http::response::Parts;
use microlock_proto::http::uri::PathAndQuery;
use microlock_proto::http::{HeaderValue, Request, Response, Uri};
use microlock_proto::{tls, LongPoll, Settings, TlsConfig, TlsFailure, MAX_RESPONSE_BYTES};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// An idle connection unused for this long is closed rather than reused (hyper's own pool's
/// default: under the idle timeouts of common servers and proxies, so a request rarely meets a
/// connection the other side is closing).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The pool: per member, two budgets and the idle connections. Cheap to clone (one `Arc`: each
/// lock's driver keeps a clone).
#[derive(Clone, Debug)]
pub(crate) struct HttpClient(Arc<Inner>);

struct Inner {
    /// Places per member for short requests and for long polls.
    max_requests: usize,
    max_watches: usize,
    /// rustls on microlock-proto's configuration, for `https://` members.
    tls: Option<(TlsConnector, TlsConfig)>,
    /// The members met so far (a handful: a linear search costs less than hashing).
    members: Mutex<Vec<Arc<Member>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("max_requests", &self.max_requests)
            .field("max_watches", &self.max_watches)
            .field("tls", &self.tls.is_some())
            .field("members", &self.members)
            .finish()
    }
}

/// One member's budgets and idle connections.
struct Member {
    https: bool,
    host: String,
    port: u16,
    requests: Arc<Semaphore>,
    watches: Arc<Semaphore>,
    /// Connections whose last response was read to its end, newest last.
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map_or(0, |idle| idle.len());
        f.debug_struct("Member")
            .field("https", &self.https)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("idle", &idle)
            .finish_non_exhaustive()
    }
}

type Conn = SendRequest<Full<Bytes>>;

/// Why an exchange failed.
enum Failed {
    /// Classified.
    Failure(Failure),
    /// The server closed a new connection without answering a byte (a TLS port does that to
    /// plain HTTP): worth asking it whether it speaks TLS.
    Unanswered(String),
}

impl HttpClient {
    /// A pool with the caps and TLS settings of `settings`.
    pub(crate) fn new(settings: &Settings) -> HttpClient {
        let tls = settings
            .tls()
            .map(|tls| (TlsConnector::from(tls.rustls()), tls.clone()));
        HttpClient(Arc::new(Inner {
            max_requests: settings
                .max_connections_per_member()
                .min(Semaphore::MAX_PERMITS),
            max_watches: settings
                .max_watches_per_member()
                .min(Semaphore::MAX_PERMITS),
            tls,
            members: Mutex::default(),
        }))
    }

    /// Sends `request` and reads the body, stopping one byte past the machine's bound (the
    /// machine rejects the oversized body). `Err` says whether the request could have reached
    /// etcd (a failure to connect, or of TLS, could not).
    pub(crate) async fn send(
        &self,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, Failure> {
        let (parts, mut body) = self.open(request).await?;
        let mut bytes = Vec::new();
        while let Some(data) = body.chunk().await? {
            bytes.extend_from_slice(&data);
            if bytes.len() > MAX_RESPONSE_BYTES {
                bytes.truncate(MAX_RESPONSE_BYTES + 1);
                break; // dropping the body unread closes the connection
            }
        }
        Ok(Response::from_parts(parts, bytes))
    }

    /// Sends `request` and returns the response's head as soon as it has come, with its body
    /// still to read. `Err` as for [`send`](HttpClient::send).
    pub(crate) async fn open(&self, request: Request<Vec<u8>>) -> Result<(Parts, Body), Failure> {
        let plain = (request.uri().scheme_str() == Some("http")).then(|| request.uri().clone());
        match self.exchange(request).await {
            Ok(opened) => Ok(opened),
            Err(Failed::Failure(failure)) => Err(failure),
            // Asked once the exchange's place is given back: the probe's connection is not
            // counted against the cap.
            Err(Failed::Unanswered(reason)) => match plain {
                Some(uri) if speaks_tls(&uri).await => Err(Failure::Tls(
                    TlsFailure::PlaintextToTls,
                    "it closed the connection on plain HTTP and answers TLS".to_owned(),
                )),
                _ => Err(Failure::Lost(reason)),
            },
        }
    }

    /// One request up to its response's head, holding a place in the member's budget from
    /// before a connection is taken; the [`Body`] holds it on until the connection is back in
    /// the pool or closed.
    async fn exchange(&self, request: Request<Vec<u8>>) -> Result<(Parts, Body), Failed> {
        let long = request.extensions().get::<LongPoll>().is_some();
        let (mut parts, body) = request.into_parts();
        let uri = parts.uri.clone();
        let (Some(origin), Some(authority)) = (Origin::of(&uri), uri.authority()) else {
            let reason = format!("no host in {uri}");
            return Err(Failed::Failure(Failure::Connect(reason)));
        };
        let member = self.member(origin);
        let budget = if long {
            &member.watches
        } else {
            &member.requests
        };
        let place = budget.clone().acquire_owned().await.expect("never closed");
        // What hyper's pooled client did: origin-form, and the Host header.
        parts.uri = Uri::from(
            (parts.uri.path_and_query().cloned()).unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        if !parts.headers.contains_key(HOST) {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(HOST, host);
            }
        }
        let mut request = Request::from_parts(parts, Full::new(Bytes::from(body)));
        let (response, conn) = loop {
            let (mut conn, reused) = match member.take_idle() {
                Some(conn) => (conn, true),
                // Boxed: a TLS handshake's state is large, and every request waiting in the
                // queue would carry room for it.
                None => (Box::pin(self.connect(origin)).await?, false),
            };
            // The server may have closed it meanwhile.
            if reused && conn.ready().await.is_err() {
                continue;
            }
            match conn.try_send_request(request).await {
                Ok(response) => break (response, conn),
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed under it. Again, on another.
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        let error = e.into_error();
                        if let Some(failure) = self.tls_failure(&error) {
                            return Err(Failed::Failure(failure));
                        }
                        if !reused && closed_unanswered(&error) {
                            return Err(Failed::Unanswered(describe(&error)));
                        }
                        return Err(Failed::Failure(Failure::Lost(describe(&error))));
                    }
                },
            }
        };
        let (parts, body) = response.into_parts();
        let close = (parts.headers.get_all(CONNECTION).iter())
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = Body {
            body,
            conn: Some(conn),
            close,
            place: Some(place),
            member,
            client: self.clone(),
        };
        Ok((parts, body))
    }

    /// The member at `origin`, met now or before.
    fn member(&self, origin: Origin<'_>) -> Arc<Member> {
        let mut members = (self.0.members.lock()).unwrap_or_else(PoisonError::into_inner);
        if let Some(member) = (members.iter()).find(|m| m.origin() == origin) {
            return member.clone();
        }
        let member = Arc::new(Member {
            https: origin.https,
            host: origin.host.to_owned(),
            port: origin.port,
            requests: Arc::new(Semaphore::new(self.0.max_requests)),
            watches: Arc::new(Semaphore::new(self.0.max_watches)),
            idle: Mutex::default(),
        });
        members.push(member.clone());
        member
    }

    /// A new connection: TCP, then a TLS handshake for `https://`. Any failure here means the
    /// request never left this process.
    async fn connect(&self, origin: Origin<'_>) -> Result<Conn, Failed> {
        let connect = |e: &dyn std::error::Error| Failed::Failure(Failure::Connect(describe(e)));
        let Origin { https, host, port } = origin;
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| connect(&e))?;
        tcp.set_nodelay(true).map_err(|e| connect(&e))?;
        if !https {
            return handshake(tcp).await;
        }
        let Some((connector, config)) = &self.0.tls else {
            let reason = "https:// without TLS settings".to_owned();
            return Err(Failed::Failure(Failure::Connect(reason)));
        };
        let name = ServerName::try_from(host.to_owned()).map_err(|e| connect(&e))?;
        match connector.connect(name, tcp).await {
            Ok(stream) => handshake(stream).await,
            Err(e) => {
                let e = microlock_proto::tls::HandshakeFailed(e);
                Err(Failed::Failure(match config.classify(&e) {
                    Some((failure, reason)) => Failure::Tls(failure, reason),
                    None => Failure::Connect(describe(&e)),
                }))
            }
        }
    }

    /// The TLS failure behind `error`, if that is what it is.
    fn tls_failure(&self, error: &(dyn std::error::Error + 'static)) -> Option<Failure> {
        let (_, tls) = self.0.tls.as_ref()?;
        tls.classify(error)
            .map(|(failure, reason)| Failure::Tls(failure, reason))
    }
}

/// A response's body, read chunk by chunk as it comes. It holds the connection and its place in
/// the member's budget: read to its end, the connection goes back to the pool (unless the
/// server said `Connection: close`); dropped before, the connection is closed (a late answer
/// can never be read as the next request's) and the place given back.
pub(crate) struct Body {
    body: Incoming,
    /// Dropped before the place: a place is never free while its connection is open.
    conn: Option<Conn>,
    close: bool,
    place: Option<OwnedSemaphorePermit>,
    member: Arc<Member>,
    client: HttpClient,
}

impl Body {
    /// The next chunk of the body, as it comes; `None` at its end (the connection is then back
    /// in the pool, its place given back).
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// [`chunk`](Body::chunk), polled: what the driver's loop calls for a streamed response.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, Failure>> {
        loop {
            let Some(frame) = ready!(Pin::new(&mut self.body).poll_frame(cx)) else {
                if let Some(conn) = self.conn.take().filter(|_| !self.close) {
                    // Read to its end: the connection is at the next response's start.
                    self.member.put_idle(conn);
                }
                self.conn = None;
                self.place = None;
                return Poll::Ready(Ok(None));
            };
            let frame = frame.map_err(|e| {
                (self.client.tls_failure(&e)).unwrap_or_else(|| Failure::Lost(describe(&e)))
            })?;
            if let Ok(data) = frame.into_data() {
                return Poll::Ready(Ok(Some(data)));
            }
        }
    }
}

impl Member {
    /// Where its connections go.
    fn origin(&self) -> Origin<'_> {
        Origin {
            https: self.https,
            host: &self.host,
            port: self.port,
        }
    }

    /// The newest idle connection still open; closes those open too long.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        idle.retain(|(conn, since)| !conn.is_closed() && now.duration_since(*since) < IDLE_TIMEOUT);
        idle.pop().map(|(conn, _)| conn)
    }

    fn put_idle(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.push((conn, Instant::now()));
    }
}

/// hyper's HTTP/1.1 handshake on `io` (no I/O: it sets up the connection), whose task runs
/// until the connection is closed or its `SendRequest` dropped.
async fn handshake<T>(io: T) -> Result<Conn, Failed>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (conn, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failed::Failure(Failure::Connect(describe(&e))))?;
    tokio::spawn(async move {
        // Its errors reach the request that was using it.
        let _ = connection.await;
    });
    Ok(conn)
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
async fn speaks_tls(uri: &Uri) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(authority) = uri.authority() else {
        return false;
    };
    let probe = async {
        let mut stream = TcpStream::connect(authority.as_str()).await?;
        stream.write_all(&tls::probe_hello()).await?;
        let mut answer = [0; 2];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(tls::is_tls_record(&answer))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use microlock_proto::{Endpoint, Streamed};
    use std::io::{Read, Write};
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

    fn client(url: &str) -> HttpClient {
        HttpClient::new(&Settings::new(vec![Endpoint::parse(url).unwrap()]).unwrap())
    }

    #[tokio::test]
    async fn the_head_comes_before_the_body_and_a_body_read_to_its_end_frees_the_connection() {
        let (url, go, seen) = server(2);
        let client = client(&url);
        let (head, mut body) = client.open(watch(&url)).await.expect("the head");
        assert_eq!(head.status, 200, "before any byte of the body was sent");
        assert_eq!(head.headers["x-etcd-index"], "3");
        for _ in 0..2 {
            go.send(()).unwrap();
            let chunk = body.chunk().await.unwrap().expect("a chunk");
            assert_eq!(&chunk[..], b"hello");
        }
        assert_eq!(body.chunk().await.unwrap(), None, "the end");
        drop(body);
        // The connection went back to the pool: the next request goes on it.
        let (_, mut body) = client.open(watch(&url)).await.expect("again");
        go.send(()).unwrap();
        go.send(()).unwrap();
        while body.chunk().await.unwrap().is_some() {}
        assert_eq!(seen.recv().unwrap(), Saw::Request);
        assert_eq!(seen.recv().unwrap(), Saw::Request, "on the same connection");
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_the_connection() {
        let (url, go, seen) = server(2);
        let client = client(&url);
        let (_, mut body) = client.open(watch(&url)).await.expect("the head");
        go.send(()).unwrap();
        assert!(body.chunk().await.unwrap().is_some());
        drop(body); // the machine gave up on it
        drop(go);
        assert_eq!(seen.recv().unwrap(), Saw::Request);
        let closed = tokio::task::spawn_blocking(move || seen.recv().unwrap());
        assert_eq!(closed.await.unwrap(), Saw::Closed);
    }
}
