//! Raw HTTP for etcd's v3 JSON gateway: a unary `POST` with a JSON body, and a streamed
//! response (a watch) read line by line as etcd writes it, with a timeout per line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::etcd::{connect, http_exchange, RawResponse};

fn host(base_url: &str) -> &str {
    base_url
        .strip_prefix("http://")
        .expect("base_url must start with http://")
        .trim_end_matches('/')
}

/// Sends `method path` with `body` as `Content-Type: application/json` and reads the whole
/// response (de-chunked, trailers dropped); panics on I/O errors. `timeout` bounds each read.
pub fn request(
    base_url: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> RawResponse {
    let host = host(base_url);
    let stream = connect(host, timeout).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    http_exchange(
        stream,
        host,
        method,
        path,
        Some(body),
        &[("Content-Type", "application/json")],
    )
    .unwrap_or_else(|e| panic!("{method} {base_url}{path} {body}: {e}"))
}

/// A `POST` with a JSON body (see [`request`]), 10 s per read.
pub fn post(base_url: &str, path: &str, body: &str) -> RawResponse {
    request(base_url, "POST", path, body, Duration::from_secs(10))
}

/// An open streamed response: its status and headers, then its body's lines as they come.
pub struct Stream {
    reader: BufReader<TcpStream>,
    /// The status, e.g. 200.
    pub status: u16,
    /// The headers as received.
    pub headers: Vec<(String, String)>,
    chunked: bool,
    /// Body bytes received and not yet returned as lines.
    pending: Vec<u8>,
    /// Bytes left in the current chunk.
    chunk_left: usize,
    ended: bool,
}

/// What [`Stream::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// One line, with its `\n`.
    Line(Vec<u8>),
    /// The body ended (what remained without a `\n` is returned first as a `Line`).
    End,
    /// Nothing within the timeout.
    Timeout,
}

impl Stream {
    /// Sends `POST path` with a JSON body and reads the status line and headers (etcd sends
    /// them with the first message of a stream). `None` if no head came within `timeout`.
    pub fn open(base_url: &str, path: &str, body: &str, timeout: Duration) -> Option<Stream> {
        let host = host(base_url);
        let mut stream = connect(host, timeout).unwrap_or_else(|e| panic!("connect {host}: {e}"));
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: microlock-tests\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).expect("send the request");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            Ok(_) => panic!("connection closed before the status line"),
            Err(e) if is_timeout(&e) => return None,
            Err(e) => panic!("reading the status line: {e}"),
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).expect("read a header line");
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let chunked =
            header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let chunk_left = if chunked {
            0
        } else {
            header("Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX)
        };
        Some(Stream {
            reader,
            status,
            headers,
            chunked,
            pending: Vec::new(),
            chunk_left,
            ended: false,
        })
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next line of the body, waiting at most `timeout` for it.
    pub fn next_line(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                return Next::Line(self.pending.drain(..=i).collect());
            }
            if self.ended {
                if self.pending.is_empty() {
                    return Next::End;
                }
                return Next::Line(std::mem::take(&mut self.pending));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Timeout;
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            match self.read_some() {
                Ok(()) => {}
                Err(e) if is_timeout(&e) => return Next::Timeout,
                Err(e) => panic!("reading a streamed body: {e}"),
            }
        }
    }

    /// Reads what the body has next into `pending` (or marks its end).
    fn read_some(&mut self) -> std::io::Result<()> {
        if self.chunked && self.chunk_left == 0 {
            let mut size = String::new();
            if self.reader.read_line(&mut size)? == 0 {
                self.ended = true;
                return Ok(());
            }
            let size = size.trim();
            if size.is_empty() {
                // The CRLF after a chunk's data.
                return Ok(());
            }
            let n = usize::from_str_radix(size.split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
            if n == 0 {
                self.ended = true;
                return Ok(());
            }
            self.chunk_left = n;
        }
        if !self.chunked && self.chunk_left == 0 {
            self.ended = true;
            return Ok(());
        }
        let mut buf = vec![0u8; self.chunk_left.min(64 * 1024)];
        let n = self.reader.read(&mut buf)?;
        if n == 0 {
            self.ended = true;
            return Ok(());
        }
        self.pending.extend_from_slice(&buf[..n]);
        self.chunk_left -= n;
        Ok(())
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
