//! A lock driven by nothing but `std`: blocking `TcpStream`s, one thread per request in flight
//! (so a watch's long poll blocks only its own thread), a channel back to one driver loop, and
//! `Instant::now()` passed in. This is the reference for writing your own adapter (see the
//! README, "Your own runtime"): everything an adapter does is here, in one loop.
//!
//! `cargo run -p microlock-proto --example blocking -- http://127.0.0.1:2379`
//!
//! It locks, renews, watches, waits for a release (a second machine holds the lock, then lets
//! it go) and unlocks; it exits 0 when every step behaved as documented.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use microlock_proto::http::{Request, Response};
use microlock_proto::{
    Completion, Config, Endpoint, Event, Lock, OpId, Outcome, RequestId, MAX_RESPONSE_BYTES,
};

/// What a request thread reports: the response, or whether the failure happened before the
/// request could reach etcd (connect) and why.
type Done = (RequestId, Result<Response<Vec<u8>>, (bool, String)>);

/// One lock machine and the I/O it asks for.
struct Blocking {
    lock: Lock,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    /// A handle on each request's socket, to abort it (`shutdown` wakes its blocked thread).
    sockets: HashMap<RequestId, Option<TcpStream>>,
    completions: Vec<Completion>,
    events: Vec<Event>,
    /// How many long polls (watches) were sent.
    long_polls: usize,
}

impl Blocking {
    fn new(config: Config) -> Blocking {
        let (done_tx, done_rx) = mpsc::channel();
        Blocking {
            lock: Lock::new(config),
            done_tx,
            done_rx,
            sockets: HashMap::new(),
            completions: Vec::new(),
            events: Vec::new(),
            long_polls: 0,
        }
    }

    /// Carries out what the machine asked for: cancels, requests, completions, events.
    fn flush(&mut self) {
        while let Some(id) = self.lock.poll_cancel() {
            if let Some(Some(socket)) = self.sockets.remove(&id) {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        while let Some((id, request)) = self.lock.poll_request() {
            let query = request.uri().query().unwrap_or("");
            self.long_polls += usize::from(query.contains("wait=true"));
            let (tx, socket) = (self.done_tx.clone(), connect(&request));
            let handle = socket.as_ref().ok().and_then(|s| s.try_clone().ok());
            self.sockets.insert(id, handle);
            std::thread::spawn(move || {
                let outcome = match socket {
                    Ok(socket) => exchange(socket, &request).map_err(|e| (false, e)),
                    Err(e) => Err((true, e)),
                };
                let _ = tx.send((id, outcome));
            });
        }
        self.completions
            .extend(std::iter::from_fn(|| self.lock.poll_completion()));
        self.events
            .extend(std::iter::from_fn(|| self.lock.poll_event()));
    }

    /// One turn of the loop: wait for a finished request or the machine's next timer.
    fn step(&mut self) {
        let input = match self.lock.poll_timeout() {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                self.done_rx.recv_timeout(left)
            }
            None => self
                .done_rx
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        match input {
            Ok((id, outcome)) => {
                if self.sockets.remove(&id).is_some() {
                    match outcome {
                        Ok(response) => self.lock.handle_response(id, response, now),
                        Err((true, why)) => self.lock.handle_connect_error(id, &why, now),
                        Err((false, why)) => self.lock.handle_transport_error(id, &why, now),
                    }
                }
            }
            Err(_) => self.lock.handle_timeout(now),
        }
        self.flush();
    }

    /// Runs a command to its completion.
    fn run(&mut self, command: impl FnOnce(&mut Lock, Instant) -> OpId) -> Outcome {
        let op = command(&mut self.lock, Instant::now());
        self.flush();
        self.finish(op)
    }

    /// Steps until command `op` completes.
    fn finish(&mut self, op: OpId) -> Outcome {
        loop {
            if let Some(i) = self.completions.iter().position(|c| c.op == op) {
                let done = self.completions.remove(i);
                return done.result.unwrap_or_else(|e| panic!("{e}"));
            }
            self.step();
        }
    }

    /// Steps until an event matching `want` arrives.
    fn next_event(&mut self, want: impl Fn(&Event) -> bool) -> Event {
        loop {
            if let Some(i) = self.events.iter().position(&want) {
                return self.events.remove(i);
            }
            self.step();
        }
    }
}

/// Opens the connection (a failure here means the request never reached etcd).
fn connect(request: &Request<Vec<u8>>) -> Result<TcpStream, String> {
    let authority = request.uri().authority().ok_or("no host")?.as_str();
    let socket = TcpStream::connect(authority).map_err(|e| format!("connect: {e}"))?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Sends one HTTP/1.1 request and reads the whole response (`Content-Length` or chunked),
/// stopping one byte past the machine's bound (the machine rejects the oversized body).
fn exchange(socket: TcpStream, request: &Request<Vec<u8>>) -> Result<Response<Vec<u8>>, String> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method(),
        request.uri().authority().map_or("", |a| a.as_str()),
        request.body().len()
    );
    for (name, value) in request.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
    }
    head.push_str("\r\n");
    let mut writer = &socket;
    writer
        .write_all(&[head.as_bytes(), request.body()].concat())
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(&socket);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut response = Response::builder().status(status);
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break; // the empty line ending the head
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
        response = response.header(name, value);
    }
    let limit = MAX_RESPONSE_BYTES + 1;
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|e| e.to_string())?;
            if size == 0 || body.len() >= limit {
                break;
            }
            let mut chunk = vec![0; size.min(limit - body.len())];
            reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            body.extend_from_slice(&chunk);
            reader.read_line(&mut line).map_err(|e| e.to_string())?; // the chunk's CRLF
        }
    } else {
        let take = length.map_or(limit, |n| n.min(limit)) as u64;
        reader
            .take(take)
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())?;
    }
    response.body(body).map_err(|e| e.to_string())
}

fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let endpoints = Endpoint::parse_all([url.as_str()]).expect("an etcd URL");
    let key = format!("microlock-blocking/{}", std::process::id());
    let config = |node: &str| {
        Config::new(&key, node, Duration::from_secs(5))
            .and_then(|c| c.with_endpoints(endpoints.clone()))
            .expect("a valid config")
    };
    let mut a = Blocking::new(config("node-a"));
    let mut b = Blocking::new(config("node-b"));

    // a subscribes, then locks and renews.
    a.lock.set_watching(true, Instant::now());
    a.flush();
    let Outcome::Locked(fence) = a.run(|l, now| l.lock(now)) else {
        panic!("lock")
    };
    println!("a holds {key} (token {})", fence.token());
    let seen = a.next_event(|e| matches!(e, Event::Locked { .. }));
    println!("a's watch: {seen:?}");
    let Outcome::Renewed(renewed) = a.run(|l, now| l.renew(now)) else {
        panic!("renew")
    };
    assert_eq!(renewed.token(), fence.token(), "a renew keeps the token");
    assert!(
        renewed.valid_until() > fence.valid_until(),
        "and moves the deadline"
    );
    println!(
        "a renewed: valid for {:?} more",
        renewed.valid_until() - Instant::now()
    );

    // b waits for the lock on another thread, parked in its watch; then a lets go.
    let (parked_tx, parked) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let op = b
            .lock
            .acquire(Some(started + Duration::from_secs(30)), started);
        b.flush();
        while b.long_polls == 0 {
            b.step();
        }
        parked_tx.send(()).expect("main waits");
        let Outcome::Acquired(fence) = b.finish(op) else {
            panic!("acquire")
        };
        let waited = started.elapsed();
        assert!(matches!(b.run(|l, now| l.unlock(now)), Outcome::Unlocked));
        (fence.token(), waited)
    });
    parked.recv().expect("b parks in its watch");
    assert!(matches!(a.run(|l, now| l.unlock(now)), Outcome::Unlocked));
    println!("a released");
    let (token, waited) = waiter.join().expect("the waiter");
    assert!(token > fence.token(), "tokens grow");
    println!("b acquired after waiting {waited:?} (token {token}) and released");
    let seen = a.next_event(|e| matches!(e, Event::Locked { holder, .. } if holder == "node-b"));
    println!("a's watch: {seen:?}");
    println!("every step behaved");
}
