//! Answers that never complete or never end, from a fake etcd (a std `TcpListener`), through
//! the tokio adapter: a body that stalls is a `Timeout`, an oversized body a `Protocol` error,
//! and the adapter stops reading one byte past `MAX_RESPONSE_BYTES`.
//!
//! Watches (streamed: their head comes at once, their body when something happens), through
//! both adapters: a watch answered with a head and then an endless body is refused once the
//! body passes the bound, its connection closed, and the waiting acquire goes on watching; a
//! watch whose body comes seconds after its head works.
//!
//! A lock whose write answer is lost is settled by a quorum GET before the caller hears back;
//! here those GETs stall or are refused too, so the outcome cannot be settled and the caller
//! gets the write's own failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use microlock_proto::MAX_RESPONSE_BYTES;
use microlock_tokio::{Config, Error, Etcd, Microlock};

/// What the fake etcd does with a request.
#[derive(Clone)]
enum Reply {
    /// Sends `head` and the first bytes of the body, then holds the connection open.
    Stall { head: String, first: Vec<u8> },
    /// Reads the request and closes the connection without answering.
    Close,
    /// Sends `head`, then `body_len` bytes of `body` padded with spaces, as fast as the client
    /// takes them.
    Body {
        head: String,
        body: Vec<u8>,
        body_len: u64,
    },
    /// Sends `head` (chunked), then chunks of spaces for ever, as fast as the client takes
    /// them (until a write fails: the client closed the connection).
    Endless { head: String },
    /// Sends `head` (chunked), waits `after`, then sends `body` as one chunk and the last
    /// chunk (etcd's watch: head at once, the event when it happens).
    Late {
        head: String,
        after: Duration,
        body: Vec<u8>,
    },
    /// A complete answer at once, kept alive.
    Now { head: String, body: Vec<u8> },
}

/// A fake etcd on a loopback port.
struct Fake {
    url: String,
    /// Request lines received, in order.
    requests: Arc<Mutex<Vec<String>>>,
    /// The most body bytes written on one connection before it ended.
    most_written: Arc<AtomicU64>,
    /// Whether every `Body` answer was cut short by the client (a write failed).
    all_cut: Arc<AtomicBool>,
    /// How many `Body` answers have ended (cut short or complete).
    bodies_done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn fake(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = Fake {
        url,
        requests: Arc::default(),
        most_written: Arc::default(),
        all_cut: Arc::new(AtomicBool::new(true)),
        bodies_done: Arc::default(),
        stop: Arc::default(),
    };
    let (requests, most, cut, done, stop) = (
        fake.requests.clone(),
        fake.most_written.clone(),
        fake.all_cut.clone(),
        fake.bodies_done.clone(),
        fake.stop.clone(),
    );
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (requests, most, cut, done, stop, reply) = (
                requests.clone(),
                most.clone(),
                cut.clone(),
                done.clone(),
                stop.clone(),
                reply.clone(),
            );
            std::thread::spawn(move || {
                serve(stream, &*reply, &requests, &most, &cut, &done, &stop);
            });
        }
    });
    fake
}

/// Serves one connection (several requests if the client keeps it alive).
fn serve(
    mut stream: TcpStream,
    reply: &dyn Fn(&str) -> Reply,
    requests: &Mutex<Vec<String>>,
    most: &AtomicU64,
    cut: &AtomicBool,
    done: &AtomicU64,
    stop: &AtomicBool,
) {
    loop {
        let Some(line) = read_request(&mut stream) else {
            return;
        };
        requests.lock().unwrap().push(line.clone());
        match reply(&line) {
            Reply::Stall { head, first } => {
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&first);
                let _ = stream.flush();
                let until = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
            Reply::Close => return,
            Reply::Now { head, body } => {
                let head = format!("{head}Content-Length: {}\r\n\r\n", body.len());
                if stream.write_all(head.as_bytes()).is_err() || stream.write_all(&body).is_err() {
                    return;
                }
            }
            Reply::Late { head, after, body } => {
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let _ = stream.flush();
                std::thread::sleep(after);
                let chunk = format!("{:x}\r\n", body.len());
                let sent = stream.write_all(chunk.as_bytes()).is_ok()
                    && stream.write_all(&body).is_ok()
                    && stream.write_all(b"\r\n0\r\n\r\n").is_ok();
                if !sent {
                    return;
                }
            }
            Reply::Endless { head } => {
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = [b"4000\r\n".as_slice(), &[b' '; 0x4000], b"\r\n"].concat();
                let mut written: u64 = 0;
                while stream.write_all(&chunk).is_ok() {
                    written += 0x4000;
                }
                most.fetch_max(written, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Reply::Body {
                head,
                body,
                body_len,
            } => {
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk_len = 64 * 1024;
                let mut written: u64 = 0;
                let mut failed = false;
                while written < body_len {
                    let n = (body_len - written).min(chunk_len as u64) as usize;
                    let start = written as usize;
                    let chunk: Vec<u8> = (start..start + n)
                        .map(|i| body.get(i).copied().unwrap_or(b' '))
                        .collect();
                    if stream.write_all(&chunk).is_err() {
                        failed = true;
                        break;
                    }
                    written += n as u64;
                }
                most.fetch_max(written, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                if !failed {
                    cut.store(false, Ordering::SeqCst);
                }
                if failed {
                    return;
                }
            }
        }
    }
}

/// Reads one request (head and `Content-Length` body); returns its request line.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some(head.lines().next().unwrap_or_default().to_owned())
}

const TIMEOUT: Duration = Duration::from_millis(200);

fn client(url: &str, timeout: Duration) -> Microlock {
    let etcd = Etcd::new([url]).expect("endpoint");
    let config = Config::new("slow", "node-a", Duration::from_secs(5))
        .expect("config")
        .with_request_timeout(timeout);
    Microlock::with_config(&etcd, config).expect("a lock client")
}

/// 201 headers announcing 1000 bytes, then 10 of them, then nothing.
fn stalled_create() -> Reply {
    Reply::Stall {
        head: "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Etcd-Index: 4\r\n\
               Content-Length: 1000\r\n\r\n"
            .into(),
        first: br#"{"action":"#.to_vec(),
    }
}

fn is_lock_put(line: &str) -> bool {
    line == "PUT /v2/keys/slow?prevExist=false HTTP/1.1"
}

fn is_quorum_get(line: &str) -> bool {
    line == "GET /v2/keys/slow?quorum=true HTTP/1.1"
}

/// Runs `lock()` with a generous outer bound; returns its result and how long it took.
async fn timed_lock(lock: &Microlock) -> (Result<microlock_tokio::Fence, Error>, Duration) {
    let start = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), lock.lock())
        .await
        .expect("lock() must end: the machine's request timeout bounds every step");
    (result, start.elapsed())
}

fn check_requests(fake: &Fake) -> Vec<String> {
    let requests = fake.requests.lock().unwrap().clone();
    assert!(
        requests.first().is_some_and(|l| is_lock_put(l)),
        "first the lock PUT: {requests:?}"
    );
    assert!(
        requests.len() >= 2 && requests[1..].iter().all(|l| is_quorum_get(l)),
        "then quorum reads settling the lost answer: {requests:?}"
    );
    eprintln!("requests seen: {requests:?}");
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_is_a_timeout_when_the_reads_stall_too() {
    let fake = fake(|_| stalled_create());
    let lock = client(&fake.url, TIMEOUT);
    let (result, took) = timed_lock(&lock).await;
    eprintln!("lock() -> {result:?} after {took:?}");
    // The write's answer never completed; the reads that would settle it never answered
    // either: the caller gets the write's failure, exactly.
    assert_eq!(result, Err(Error::Timeout { after: TIMEOUT }));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    check_requests(&fake);
    assert!(!lock.is_held());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_is_a_timeout_when_the_reads_are_refused() {
    let fake = fake(|line| {
        if is_lock_put(line) {
            stalled_create()
        } else {
            Reply::Close
        }
    });
    let lock = client(&fake.url, TIMEOUT);
    let (result, took) = timed_lock(&lock).await;
    eprintln!("lock() -> {result:?} after {took:?}");
    // The reads failed in transport, which settles nothing: still the write's own Timeout.
    assert_eq!(result, Err(Error::Timeout { after: TIMEOUT }));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    check_requests(&fake);
}

/// A valid `create` answer for `node-a`, so only the size bound can reject it.
fn create_body() -> Vec<u8> {
    br#"{"action":"create","node":{"key":"/slow","value":"node-a","ttl":5,"modifiedIndex":4,"createdIndex":4}}"#
        .to_vec()
}

fn sized(len: u64) -> Reply {
    Reply::Body {
        head: format!(
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Etcd-Index: 4\r\n\
             Content-Length: {len}\r\n\r\n"
        ),
        body: create_body(),
        body_len: len,
    }
}

fn assert_too_large(result: &Result<microlock_tokio::Fence, Error>) {
    match result {
        Err(Error::Protocol { reason }) => assert!(
            reason.contains("larger than") && reason.contains(&MAX_RESPONSE_BYTES.to_string()),
            "{reason}"
        ),
        other => panic!("expected a Protocol error for the oversized body, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mib_body_is_a_protocol_error() {
    let fake = fake(|_| sized(2 * 1024 * 1024));
    let lock = client(&fake.url, Duration::from_secs(2));
    let (result, took) = timed_lock(&lock).await;
    eprintln!("lock() -> {result:?} after {took:?}");
    assert_too_large(&result);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(!lock.is_held(), "an oversized create is never a hold");
    check_requests(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_stops_reading_one_byte_past_the_bound() {
    // A 1 GiB body: had the adapter read it all, every write of it would succeed.
    const GIB: u64 = 1024 * 1024 * 1024;
    let fake = fake(|_| sized(GIB));
    let lock = client(&fake.url, Duration::from_secs(2));
    let (result, took) = timed_lock(&lock).await;
    eprintln!("lock() -> {result:?} after {took:?}");
    assert_too_large(&result);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let requests = check_requests(&fake).len() as u64;
    // Wait until the server has seen every connection end (the adapter let go of each).
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.bodies_done.load(Ordering::SeqCst) < requests && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.bodies_done.load(Ordering::SeqCst),
        requests,
        "every oversized answer ended"
    );
    let most = fake.most_written.load(Ordering::SeqCst);
    eprintln!("at most {most} body bytes written on one connection");
    assert!(
        fake.all_cut.load(Ordering::SeqCst),
        "a 1 GiB body was read to its end"
    );
    // What the server got out: the bound, plus what loopback socket buffers absorb.
    assert!(
        most < 64 * 1024 * 1024,
        "{most} bytes of the 1 GiB body were taken before the adapter let go"
    );
    assert!(most > MAX_RESPONSE_BYTES as u64, "{most}");
}

// ----- streamed watches, both adapters -------------------------------------------------------

/// The key's state in the fake etcd of the watch tests: held by `node-b` (created at index 10)
/// until the watch says it expired; `node-a` then takes it at index 12.
fn held_by_b(index: u64) -> Reply {
    Reply::Now {
        head: format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Etcd-Index: {index}\r\n"
        ),
        body: br#"{"action":"get","node":{"key":"/slow","value":"node-b","ttl":5,"expiration":"2030-01-01T00:00:00Z","modifiedIndex":10,"createdIndex":10}}"#.to_vec(),
    }
}

fn exists() -> Reply {
    Reply::Now {
        head: "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n\
               X-Etcd-Index: 10\r\n"
            .into(),
        body: br#"{"errorCode":105,"message":"Key already exists","cause":"/slow","index":10}"#
            .to_vec(),
    }
}

fn created_12() -> Reply {
    Reply::Now {
        head: "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Etcd-Index: 12\r\n"
            .into(),
        body: br#"{"action":"create","node":{"key":"/slow","value":"node-a","ttl":5,"modifiedIndex":12,"createdIndex":12}}"#.to_vec(),
    }
}

/// A watch's head: 200, chunked, the index at the time of the request.
fn watch_head() -> String {
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Etcd-Index: 10\r\n\
     Transfer-Encoding: chunked\r\n\r\n"
        .into()
}

fn is_watch(line: &str) -> bool {
    line.starts_with("GET /v2/keys/slow?wait=true&waitIndex=")
}

fn watch_config() -> Config {
    Config::new("slow", "node-a", Duration::from_secs(5))
        .expect("config")
        .with_fair_acquire(false)
        .with_request_timeout(Duration::from_secs(2))
}

/// A fake etcd where `node-b` holds the key and every watch gets an endless body.
fn endless_watches() -> Fake {
    fake(|line| {
        if is_lock_put(line) {
            exists()
        } else if is_watch(line) {
            Reply::Endless { head: watch_head() }
        } else {
            held_by_b(10)
        }
    })
}

/// A fake etcd where `node-b` holds the key until the first watch reports, 2 s after its
/// head, that it expired; later watches wait for ever.
fn late_release() -> Fake {
    let puts = AtomicU64::new(0);
    let watches = AtomicU64::new(0);
    fake(move |line| {
        if is_lock_put(line) {
            if puts.fetch_add(1, Ordering::SeqCst) == 0 {
                exists()
            } else {
                created_12()
            }
        } else if is_watch(line) {
            if watches.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::Late {
                    head: watch_head(),
                    after: LATE,
                    body: br#"{"action":"expire","node":{"key":"/slow","modifiedIndex":11,"createdIndex":10},"prevNode":{"key":"/slow","value":"node-b","modifiedIndex":10,"createdIndex":10}}"#.to_vec(),
                }
            } else {
                Reply::Stall {
                    head: watch_head(),
                    first: Vec::new(),
                }
            }
        } else if puts.load(Ordering::SeqCst) >= 2 {
            held_by_b(12)
        } else {
            held_by_b(10)
        }
    })
}

/// How long after its head the late watch's event comes.
const LATE: Duration = Duration::from_secs(2);
/// How long an acquire against endless watch bodies waits.
const WAIT: Duration = Duration::from_secs(6);

/// After an acquire against [`endless_watches`]: it waited its whole time (refusing each
/// endless body, then watching again), and every endless body's connection was closed, with a
/// bounded number of bytes taken.
async fn check_endless(
    fake: &Fake,
    result: Result<u64, Error>,
    took: Duration,
    sleep: impl Fn(Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
) {
    eprintln!("acquire() -> {result:?} after {took:?}");
    assert!(
        matches!(result, Err(Error::WaitTimeout { .. })),
        "the acquire waits out its time: {result:?}"
    );
    assert!(took < WAIT + Duration::from_secs(10), "took {took:?}");
    let requests = fake.requests.lock().unwrap().clone();
    let watches = requests.iter().filter(|l| is_watch(l)).count() as u64;
    eprintln!("{watches} watches in {} requests", requests.len());
    assert!(
        watches >= 2,
        "an endless body was refused and the key watched again: {requests:?}"
    );
    // Every endless body's connection was closed by the client (its write failed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.bodies_done.load(Ordering::SeqCst) < watches && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.bodies_done.load(Ordering::SeqCst),
        watches,
        "every endless body was cut short by the client"
    );
    let most = fake.most_written.load(Ordering::SeqCst);
    eprintln!("at most {most} body bytes written on one watch");
    assert!(most > MAX_RESPONSE_BYTES as u64, "{most}");
    // The bound, plus what loopback socket buffers and one chunk in the adapter absorb.
    assert!(
        most < 64 * 1024 * 1024,
        "{most} bytes of an endless body were taken before the adapter let go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_a_watch_with_an_endless_body_is_refused_and_watched_again() {
    let fake = endless_watches();
    let etcd = Etcd::new([fake.url.as_str()]).expect("endpoint");
    let lock = Microlock::with_config(&etcd, watch_config()).expect("a lock client");
    let start = Instant::now();
    let result = tokio::time::timeout(WAIT + Duration::from_secs(20), lock.acquire(WAIT))
        .await
        .expect("acquire() must end");
    let took = start.elapsed();
    let sleep = |d| {
        Box::pin(tokio::time::sleep(d)) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
    };
    check_endless(&fake, result.map(|f| f.token()), took, sleep).await;
    assert!(!lock.is_held());
}

#[async_std::test]
async fn async_std_a_watch_with_an_endless_body_is_refused_and_watched_again() {
    let fake = endless_watches();
    let etcd = microlock_async_std::Etcd::new([fake.url.as_str()]).expect("endpoint");
    let lock =
        microlock_async_std::Microlock::with_config(&etcd, watch_config()).expect("a lock client");
    let start = Instant::now();
    let result = async_std::future::timeout(WAIT + Duration::from_secs(20), lock.acquire(WAIT))
        .await
        .expect("acquire() must end");
    let took = start.elapsed();
    let sleep = |d| {
        Box::pin(async_std::task::sleep(d))
            as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
    };
    check_endless(&fake, result.map(|f| f.token()), took, sleep).await;
    assert!(!lock.is_held());
}

/// After an acquire against [`late_release`]: taken once the late event came.
fn check_late(fake: &Fake, result: Result<u64, Error>, took: Duration) {
    eprintln!("acquire() -> {result:?} after {took:?}");
    assert_eq!(result, Ok(12), "acquired after the late release");
    assert!(took >= LATE, "before the event came: {took:?}");
    assert!(took < LATE + Duration::from_secs(10), "took {took:?}");
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(
        requests.iter().filter(|l| is_watch(l)).count(),
        1,
        "one watch, answered late: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_a_watch_whose_body_comes_seconds_after_its_head_works() {
    let fake = late_release();
    let etcd = Etcd::new([fake.url.as_str()]).expect("endpoint");
    let lock = Microlock::with_config(&etcd, watch_config()).expect("a lock client");
    let start = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        lock.acquire(Duration::from_secs(20)),
    )
    .await
    .expect("acquire() must end");
    check_late(&fake, result.map(|f| f.token()), start.elapsed());
    lock.destroy();
}

#[async_std::test]
async fn async_std_a_watch_whose_body_comes_seconds_after_its_head_works() {
    let fake = late_release();
    let etcd = microlock_async_std::Etcd::new([fake.url.as_str()]).expect("endpoint");
    let lock =
        microlock_async_std::Microlock::with_config(&etcd, watch_config()).expect("a lock client");
    let start = Instant::now();
    let result = async_std::future::timeout(
        Duration::from_secs(30),
        lock.acquire(Duration::from_secs(20)),
    )
    .await
    .expect("acquire() must end");
    check_late(&fake, result.map(|f| f.token()), start.elapsed());
    lock.destroy();
}
