//! A TCP proxy on loopback that a test can cut, as a network partition would: after
//! [`CutProxy::cut`], every connection through it is shut down and new ones are accepted but
//! never answered (a black hole: requests time out rather than being refused).
//!
//! It also counts the lease renewals (`refresh=true` in a request) that went through it, so a
//! test can wait for the holder's renewals to work before cutting.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A running proxy to one target.
#[derive(Debug, Clone)]
pub struct CutProxy {
    /// `http://127.0.0.1:PORT`, forwarding to the target until cut.
    pub url: String,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    cut: AtomicBool,
    renewals: AtomicUsize,
    /// Both ends of every forwarded connection, to shut down on cut.
    streams: Mutex<Vec<TcpStream>>,
    /// The connections of the black hole, kept open and never read.
    held: Mutex<Vec<TcpStream>>,
}

impl CutProxy {
    /// A proxy to `target` (`http://host:port`), for the life of the test process.
    pub fn start(target: &str) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let state = Arc::new(State::default());
        let target = target.trim_start_matches("http://").to_owned();
        let accepting = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accepting.cut.load(Ordering::SeqCst) {
                    // The black hole: keep the connection open, never read or answer.
                    accepting
                        .held
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue; // the client sees its connection closed
                };
                accepting.keep(&client);
                accepting.keep(&server);
                let (c, s) = (client.try_clone(), server.try_clone());
                if let (Ok(c), Ok(s)) = (c, s) {
                    let counting = accepting.clone();
                    std::thread::spawn(move || pipe(c, s, Some(&counting.renewals)));
                    std::thread::spawn(move || pipe(server, client, None));
                }
            }
        });
        CutProxy { url, state }
    }

    /// Cuts every connection now and black-holes the next ones. Idempotent.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for stream in self
            .state
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// How many requests with `refresh=true` (lease renewals) went through so far.
    pub fn renewals(&self) -> usize {
        self.state.renewals.load(Ordering::SeqCst)
    }
}

impl State {
    fn keep(&self, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            if self.cut.load(Ordering::SeqCst) {
                let _ = clone.shutdown(Shutdown::Both);
            }
            streams.push(clone);
        }
    }
}

/// Copies `from` to `to` until either side closes, then closes both ways; counts
/// `refresh=true` in what it copies when asked to.
fn pipe(mut from: TcpStream, mut to: TcpStream, renewals: Option<&AtomicUsize>) {
    let mut buf = [0; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if let Some(renewals) = renewals {
            let found = buf[..n]
                .windows(b"refresh=true".len())
                .filter(|w| *w == b"refresh=true")
                .count();
            renewals.fetch_add(found, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
