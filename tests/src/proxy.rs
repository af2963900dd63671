//! A TCP proxy on loopback that counts the connections it accepts: tests check keep-alive with
//! it (N lock/unlock cycles must use one connection).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A running proxy: its URL and how many connections it accepted so far.
#[derive(Debug, Clone)]
pub struct CountingProxy {
    /// `http://127.0.0.1:PORT`, forwarding to the target.
    pub url: String,
    accepted: Arc<AtomicUsize>,
}

impl CountingProxy {
    /// A proxy to `target` (`http://host:port`), for the life of the test process.
    pub fn start(target: &str) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (count, target) = (
            accepted.clone(),
            target.trim_start_matches("http://").to_owned(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&target) else {
                    continue; // the client sees its connection closed
                };
                let (c, s) = (client.try_clone(), server.try_clone());
                if let (Ok(c), Ok(s)) = (c, s) {
                    std::thread::spawn(move || pipe(c, s));
                    std::thread::spawn(move || pipe(server, client));
                }
            }
        });
        CountingProxy { url, accepted }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either side closes, then closes both ways.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
