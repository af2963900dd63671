//! Responses arriving in pieces: the head, body chunks as they come, then the end
//! ([`Lock::handle_response_head`](crate::Lock::handle_response_head) and the two after it).
//!
//! [`Incoming`] keeps one [`Partial`] per request whose head has come and whose end has not.
//! A partial never buffers more than [`MAX_RESPONSE_BYTES`] + 1 body bytes: a push that would
//! pass that stops there and reports the overflow, and the machine settles the request at once
//! (the same `Error::Protocol` as a whole oversized body) and cancels it, so the adapter stops
//! reading. v2 answers are read whole at their end ([`Partial::into_response`]); an answer made
//! of lines (the v3 gateway's watch: one JSON message per line, forever) is consumed line by
//! line as it arrives ([`Partial::take_line`]), which frees room for the next: the bound is
//! then per message, not per response.

use std::collections::BTreeMap;

use http::response::Parts;
use http::Response;

use crate::lock::RequestId;
use crate::wire::MAX_RESPONSE_BYTES;

/// The most body bytes a partial response holds: one past the bound, so that "too large" is
/// told from "exactly at the bound".
pub(crate) const MAX_BUFFERED: usize = MAX_RESPONSE_BYTES + 1;

/// The partial responses of the requests in flight.
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    partial: BTreeMap<RequestId, Partial>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// No partial response for that request (no head yet, unknown, or finished): ignored.
    Unknown,
    /// Buffered whole.
    Buffered,
    /// The buffer holds more than [`MAX_RESPONSE_BYTES`]: the response is too large (the rest
    /// of the chunk was not taken).
    Overflow,
}

impl Incoming {
    /// The head of request `id`'s response: a partial response starts (a second head for the
    /// same request is ignored).
    pub(crate) fn begin(&mut self, id: RequestId, head: Parts) {
        self.partial.entry(id).or_insert_with(|| Partial {
            head,
            body: Vec::new(),
            start: 0,
            scanned: 0,
        });
    }

    /// Appends `chunk` to request `id`'s body, up to the bound.
    pub(crate) fn push(&mut self, id: RequestId, chunk: &[u8]) -> Pushed {
        let Some(partial) = self.partial.get_mut(&id) else {
            return Pushed::Unknown;
        };
        partial.push(chunk);
        if partial.is_over() {
            Pushed::Overflow
        } else {
            Pushed::Buffered
        }
    }

    /// Like [`push`](Incoming::push), taking a body by value (no copy when nothing is
    /// buffered yet).
    #[cfg(test)]
    pub(crate) fn push_owned(&mut self, id: RequestId, mut body: Vec<u8>) -> Pushed {
        let Some(partial) = self.partial.get_mut(&id) else {
            return Pushed::Unknown;
        };
        if partial.buffered().is_empty() {
            body.truncate(MAX_BUFFERED);
            partial.body = body;
            partial.start = 0;
            partial.scanned = 0;
        } else {
            partial.push(&body);
        }
        if partial.is_over() {
            Pushed::Overflow
        } else {
            Pushed::Buffered
        }
    }

    /// The partial response of request `id`, to consume lines from as they arrive.
    #[cfg_attr(not(test), allow(dead_code))] // for the v3 gateway's watch
    pub(crate) fn get_mut(&mut self, id: RequestId) -> Option<&mut Partial> {
        self.partial.get_mut(&id)
    }

    /// Ends request `id`'s partial response: what was received, if it had begun.
    pub(crate) fn finish(&mut self, id: RequestId) -> Option<Response<Vec<u8>>> {
        self.partial.remove(&id).map(Partial::into_response)
    }

    /// Forgets request `id`'s partial response (the request ended otherwise).
    pub(crate) fn remove(&mut self, id: RequestId) {
        self.partial.remove(&id);
    }

    /// How many body bytes are buffered in all (for tests).
    #[cfg(test)]
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.partial.values().map(|p| p.buffered().len()).sum()
    }
}

/// One response being received: its head and the body bytes not consumed yet.
#[derive(Debug)]
pub(crate) struct Partial {
    head: Parts,
    body: Vec<u8>,
    /// Bytes before it were consumed ([`take_line`](Partial::take_line)).
    start: usize,
    /// Bytes before it hold no line end (from `start`).
    scanned: usize,
}

impl Partial {
    /// The bytes received and not consumed.
    fn buffered(&self) -> &[u8] {
        &self.body[self.start..]
    }

    /// Whether more than [`MAX_RESPONSE_BYTES`] are buffered.
    fn is_over(&self) -> bool {
        self.buffered().len() > MAX_RESPONSE_BYTES
    }

    /// Appends as much of `chunk` as fits under [`MAX_BUFFERED`]; returns how much it took.
    /// (A consumer of lines pushes the rest after taking lines.)
    fn push(&mut self, chunk: &[u8]) -> usize {
        if self.start > 0 {
            // Consumed bytes go before new ones come: the buffer never grows past the bound.
            self.body.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        let take = chunk
            .len()
            .min(MAX_BUFFERED.saturating_sub(self.body.len()));
        self.body.extend_from_slice(&chunk[..take]);
        take
    }

    /// The next complete line (without its `\n`, nor a `\r` before it), consumed; `None` until
    /// one has arrived whole.
    #[cfg_attr(not(test), allow(dead_code))] // for the v3 gateway's watch
    pub(crate) fn take_line(&mut self) -> Option<Vec<u8>> {
        let from = self.start.max(self.scanned);
        let Some(at) = self.body[from..].iter().position(|&b| b == b'\n') else {
            self.scanned = self.body.len();
            return None;
        };
        let end = from + at;
        let mut line = &self.body[self.start..end];
        if let Some(trimmed) = line.strip_suffix(b"\r") {
            line = trimmed;
        }
        let line = line.to_vec();
        self.start = end + 1;
        self.scanned = self.start;
        Some(line)
    }

    /// The response as received: its head and the bytes not consumed.
    fn into_response(mut self) -> Response<Vec<u8>> {
        if self.start > 0 {
            self.body.drain(..self.start);
        }
        Response::from_parts(self.head, self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Parts {
        Response::builder()
            .status(200)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn pieces_make_the_whole_body() {
        let mut incoming = Incoming::default();
        let id = RequestId::from_raw(1);
        assert_eq!(incoming.push(id, b"x"), Pushed::Unknown, "no head yet");
        incoming.begin(id, head());
        for piece in [&b"{\"a\""[..], b"", b":1}"] {
            assert_eq!(incoming.push(id, piece), Pushed::Buffered);
        }
        let response = incoming.finish(id).unwrap();
        assert_eq!(response.body(), b"{\"a\":1}");
        assert_eq!(incoming.push(id, b"late"), Pushed::Unknown, "finished");
        assert!(incoming.finish(id).is_none());
    }

    #[test]
    fn never_more_than_one_byte_past_the_bound() {
        let mut incoming = Incoming::default();
        let id = RequestId::from_raw(1);
        incoming.begin(id, head());
        let chunk = vec![b' '; 64 * 1024];
        let mut pushes = 0;
        while incoming.push(id, &chunk) == Pushed::Buffered {
            pushes += 1;
            assert!(pushes <= MAX_RESPONSE_BYTES / chunk.len());
        }
        assert_eq!(incoming.buffered_bytes(), MAX_BUFFERED);
        assert_eq!(incoming.push(id, &chunk), Pushed::Overflow);
        assert_eq!(incoming.buffered_bytes(), MAX_BUFFERED);
        // Exactly at the bound is not over it.
        let other = RequestId::from_raw(2);
        incoming.begin(other, head());
        let exact = vec![b' '; MAX_RESPONSE_BYTES];
        assert_eq!(incoming.push_owned(other, exact), Pushed::Buffered);
        assert_eq!(incoming.push(other, b" "), Pushed::Overflow);
        let owned = RequestId::from_raw(3);
        incoming.begin(owned, head());
        let large = vec![b' '; 3 * MAX_RESPONSE_BYTES];
        assert_eq!(incoming.push_owned(owned, large), Pushed::Overflow);
        assert_eq!(incoming.finish(owned).unwrap().body().len(), MAX_BUFFERED);
    }

    #[test]
    fn lines_are_taken_as_they_complete_and_free_room() {
        let mut incoming = Incoming::default();
        let id = RequestId::from_raw(7);
        incoming.begin(id, head());
        let mut lines = Vec::new();
        for piece in [&b"{\"a\":"[..], b"1}\r\n{\"b\"", b":2}\n", b"\n{\"c\":3"] {
            assert_eq!(incoming.push(id, piece), Pushed::Buffered);
            while let Some(line) = incoming.get_mut(id).unwrap().take_line() {
                lines.push(String::from_utf8(line).unwrap());
            }
        }
        assert_eq!(lines, ["{\"a\":1}", "{\"b\":2}", ""]);
        assert_eq!(incoming.finish(id).unwrap().body(), b"{\"c\":3");
        // Many messages, each under the bound, more than the bound in all.
        incoming.begin(id, head());
        let line = [vec![b'x'; 1000], vec![b'\n']].concat();
        let mut taken = 0;
        for _ in 0..(3 * MAX_RESPONSE_BYTES / line.len()) {
            assert_eq!(incoming.push(id, &line), Pushed::Buffered);
            while incoming.get_mut(id).unwrap().take_line().is_some() {
                taken += 1;
            }
            assert!(incoming.buffered_bytes() <= MAX_BUFFERED);
        }
        assert_eq!(taken, 3 * MAX_RESPONSE_BYTES / line.len());
    }
}
