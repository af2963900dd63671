//! Responses arriving in pieces: the head, body chunks as they come, then the end
//! ([`Lock::handle_response_head`](crate::Lock::handle_response_head) and the two after it).
//!
//! [`Incoming`] keeps one [`Partial`] per request whose head has come and whose end has not.
//! A partial never buffers more than [`MAX_RESPONSE_BYTES`] + 1 body bytes: a push that would
//! pass that stops there and reports the overflow, and the machine settles the request at once
//! (the same `Error::Protocol` as a whole oversized body) and cancels it, so the adapter stops
//! reading. Such answers are read whole at their end ([`Partial::into_response`]). An answer
//! made of lines that may never end (the v3 gateway's watch: one JSON message per line) is not
//! kept here but in a [`WatchStream`](crate::wire::v3::WatchStream), which hands over each line
//! as it completes: the bound is then per message.

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
        if partial.body.is_empty() {
            body.truncate(MAX_BUFFERED);
            partial.body = body;
        } else {
            partial.push(&body);
        }
        if partial.is_over() {
            Pushed::Overflow
        } else {
            Pushed::Buffered
        }
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
        self.partial.values().map(|p| p.body.len()).sum()
    }
}

/// One response being received: its head and the body bytes so far.
#[derive(Debug)]
pub(crate) struct Partial {
    head: Parts,
    body: Vec<u8>,
}

impl Partial {
    /// Whether more than [`MAX_RESPONSE_BYTES`] are buffered.
    fn is_over(&self) -> bool {
        self.body.len() > MAX_RESPONSE_BYTES
    }

    /// Appends as much of `chunk` as fits under [`MAX_BUFFERED`].
    fn push(&mut self, chunk: &[u8]) {
        let take = chunk
            .len()
            .min(MAX_BUFFERED.saturating_sub(self.body.len()));
        self.body.extend_from_slice(&chunk[..take]);
    }

    /// The response as received.
    fn into_response(self) -> Response<Vec<u8>> {
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
}
