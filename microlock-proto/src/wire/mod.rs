//! etcd on the wire, one module per protocol: `v2` (the keys API, the seed's protocol) and
//! `v3` (the JSON gateway). Everything about URLs, bodies, status codes and JSON lives here and
//! nowhere else; the machine speaks in typed replies.

mod v2;
// The v3 gateway's requests and answers. A few (`time_to_live`, `predecessor`, `delete`) are
// checked against real etcd and not used by the machine.
#[allow(dead_code)]
pub(crate) mod v3;

pub(crate) use v2::*;
pub use v2::{LongPoll, MAX_RESPONSE_BYTES};

/// The response headers the machine reads, in lower case: of an answer, only these, its status
/// and its body matter. An adapter whose HTTP library has header types of its own may copy just
/// these into the [`http::Response`] it hands over (microlock-async-std does); the machine
/// ignores every other.
///
/// ```
/// # use microlock_proto::RESPONSE_HEADERS;
/// // etcd v2's index of the store at the answer (the v3 gateway's answers carry it in JSON).
/// assert_eq!(RESPONSE_HEADERS, ["x-etcd-index"]);
/// ```
pub const RESPONSE_HEADERS: &[&str] = &[v2::ETCD_INDEX];

/// Marks a request whose response should be delivered in pieces as they arrive, in its
/// [`http::Extensions`]: the head as soon as it has come, then each body chunk as it comes,
/// then the end, through [`Lock::handle_response_head`](crate::Lock::handle_response_head),
/// [`handle_response_body`](crate::Lock::handle_response_body) and
/// [`handle_response_end`](crate::Lock::handle_response_end) (or the
/// [`Driver`](crate::driver::Driver)'s matching methods). Watches carry it: etcd sends a v2
/// watch's head at once and its body when the event happens, and a v3 watch is one endless
/// response, one message per line.
///
/// A response that ends (a v2 watch's) has the same outcome handed over whole; one that never
/// ends (a v3 watch's) needs the pieces. An adapter that honours it must not read ahead of the
/// machine: it hands over each chunk before reading the next (the machine bounds what it
/// buffers, and cancels a request whose body passes [`MAX_RESPONSE_BYTES`], which is the
/// adapter's cue to stop reading).
///
/// ```
/// # use microlock_proto::{http::Request, Streamed};
/// fn deliver_in_pieces(request: &Request<Vec<u8>>) -> bool {
///     request.extensions().get::<Streamed>().is_some()
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streamed;
