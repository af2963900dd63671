//! etcd on the wire, one module per protocol: `v2` (the keys API, the seed's protocol) and
//! `v3` (the JSON gateway). Everything about URLs, bodies, status codes and JSON lives here and
//! nowhere else; the machine speaks in typed replies.

mod v2;

pub(crate) use v2::*;
pub use v2::{LongPoll, MAX_RESPONSE_BYTES};
