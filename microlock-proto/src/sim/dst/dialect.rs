//! What differs between a v2 world and a v3 world, for the checkers and the trace: where the
//! lock's queue is in the store, who owns the lock there, and what a request is.
//!
//! | | v2 (keys API, fair queue) | v3 (Go `concurrency.Mutex` layout) |
//! |---|---|---|
//! | fencing token | the lock key's `createdIndex` | the holder's key's create revision |
//! | queue | the files in `sim/_microlock/queue/lock` (value: node id) | the keys under `sim/lock/` (value: node id) |
//! | owner in the store | the value of `sim/lock`, if it exists | the node id of the oldest key under `sim/lock/` (nobody, if it is a leftover: a node's key older than its newest) |
//! | a waiter's own entry | its oldest | its newest key (its older ones are leftovers ahead of it) |
//! | lock free (checker (g)) | `sim/lock` absent | no key under `sim/lock/`, or the oldest is a waiter's still acquiring (owed the lock, not yet told) |
//! | long poll | `GET ?wait=true` without `quorum` | `POST /v3/watch` (a stream) |
//! | acting on the lock (checker (g)) | any request but a `GET` | a lease grant (an attempt's first write) or a `/v3/kv/txn` (take, look ahead, release) |

use base64::Engine as _;
use http::{Method, Request};

use super::{World, KEY, QUEUE};
use crate::Protocol;

/// What a request of a client's machine is, for the trace and checker (g).
pub(super) struct Sent {
    /// Its line in the trace (method, path, and the query or a summary of the body).
    pub(super) trace: String,
    /// Short, for a diagnostic.
    pub(super) what: String,
    /// A long poll or stream: the machine sleeps on it.
    pub(super) watch: bool,
    /// It acts on the lock (a write of its key, or a v3 transaction on its keys).
    pub(super) acts: bool,
}

/// Describes `request` as spoken in `protocol` (`trace`: with its trace line, which costs a
/// pass over a v3 body).
pub(super) fn sent(protocol: Protocol, request: &Request<Vec<u8>>, trace: bool) -> Sent {
    let path = request.uri().path();
    if protocol == Protocol::V3 {
        let trace = if trace {
            let body = v3_text(request.body(), false);
            format!("{} {path} {body}", request.method())
        } else {
            String::new()
        };
        return Sent {
            trace,
            what: format!("{} {path}", request.method()),
            watch: path == "/v3/watch",
            acts: path == "/v3/kv/txn" || path == "/v3/lease/grant",
        };
    }
    let query = request.uri().query().unwrap_or("");
    Sent {
        trace: format!(
            "{} {}",
            request.method(),
            request.uri().path_and_query().map_or("", |p| p.as_str())
        ),
        what: format!("{} ?{query}", request.method()),
        watch: request.method() == Method::GET
            && query.split('&').any(|p| p == "wait=true")
            && !query.split('&').any(|p| p == "quorum=true"),
        acts: request.method() != Method::GET,
    }
}

/// One message of a v3 watch stream, for the trace: the JSON line, its `header` replaced by
/// its revision (`@8`), keys in clear (see [`v3_text`]).
pub(super) fn v3_message(line: &[u8]) -> String {
    v3_text(line.strip_suffix(b"\n").unwrap_or(line), true)
}

/// A v3 JSON body or message as text, with the values of `key`, `range_end` and `value`
/// decoded from base64 when they are printable text (`"key":'sim/lock/6b8b4567'`), and
/// (`headers`) each `"header":{…}` replaced by `@` and its revision. A single pass, no parse:
/// bytes that are not JSON are shown as they are.
fn v3_text(json: &[u8], headers: bool) -> String {
    let mut out = String::with_capacity(json.len());
    let mut i = 0;
    // The field name just read (a string followed by `:`).
    let mut field: &[u8] = b"";
    while i < json.len() {
        let c = json[i];
        if c != b'"' {
            out.push(c as char);
            i += 1;
            continue;
        }
        // A string: up to its closing quote.
        let mut j = i + 1;
        while j < json.len() && json[j] != b'"' {
            j += if json[j] == b'\\' { 2 } else { 1 };
        }
        let end = j.min(json.len());
        let text = &json[i + 1..end];
        let next = end + 1;
        if json.get(next) == Some(&b':') {
            if headers && text == b"header" && json.get(next + 1) == Some(&b'{') {
                // Skip the header object; keep its revision.
                let close = json[next..]
                    .iter()
                    .position(|&b| b == b'}')
                    .map_or(json.len(), |p| next + p + 1);
                let header = &json[next..close];
                let revision = find_string(header, b"\"revision\":\"").unwrap_or(b"0");
                out.push('@');
                out.push_str(&String::from_utf8_lossy(revision));
                out.push(' ');
                i = close;
                if json.get(i) == Some(&b',') {
                    i += 1;
                }
                continue;
            }
            field = text;
            out.push_str(&String::from_utf8_lossy(text));
            out.push(':');
            i = next + 1;
            continue;
        }
        let decoded = matches!(field, b"key" | b"range_end" | b"value")
            .then(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .flatten()
            .filter(|b| b.iter().all(|&c| c.is_ascii_graphic() || c == b' '));
        match decoded {
            Some(clear) => {
                out.push('\'');
                out.push_str(&String::from_utf8_lossy(&clear));
                out.push('\'');
            }
            None => {
                out.push('"');
                out.push_str(&String::from_utf8_lossy(text));
                out.push('"');
            }
        }
        field = b"";
        i = next;
    }
    out
}

/// The string that follows `prefix` in `json`, up to its closing quote.
fn find_string<'a>(json: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let at = json.windows(prefix.len()).position(|w| w == prefix)? + prefix.len();
    let len = json[at..].iter().position(|&b| b == b'"')?;
    Some(&json[at..at + len])
}

/// `sim/lock/`: where a v3 lock's keys live.
fn v3_prefix() -> Vec<u8> {
    format!("{KEY}/").into_bytes()
}

impl World {
    /// Reads the lock's queue in the store again if the store changed since it was last read
    /// ([`World::queue_seen`]).
    pub(super) fn refresh_queue(&mut self) {
        let index = self.cluster.index();
        if self.queue_seen.0 != Some(index) {
            self.queue_seen = (Some(index), self.queue_entries());
        }
    }

    /// The lock's queue in the store: (name, node id, created index or revision).
    fn queue_entries(&self) -> Vec<(String, String, u64)> {
        if let Some(store) = self.cluster.store_v3() {
            let prefix = v3_prefix();
            let mut end = prefix.clone();
            *end.last_mut().expect("a prefix") += 1;
            return store
                .keys_in(&prefix, &end)
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned(),
                        String::from_utf8_lossy(&kv.value).into_owned(),
                        kv.create_revision.max(0) as u64,
                    )
                })
                .collect();
        }
        self.cluster
            .store_v2()
            .map(|s| s.files_in(QUEUE))
            .unwrap_or_default()
    }

    /// Who owns the lock in the store, by node id: v2 the lock key's value; v3 the oldest
    /// key's (from the queue last read), unless that key is a leftover of its node — an older
    /// key than the node's newest, from a lease it gave up (`None` inside: owned, by nobody
    /// who can know).
    pub(super) fn owner_in_store(&self) -> Option<Option<String>> {
        if self.cluster.protocol() == Protocol::V3 {
            let entries = &self.queue_seen.1;
            let oldest = entries.iter().min_by_key(|e| e.2)?;
            let leftover = entries.iter().any(|e| e.1 == oldest.1 && e.2 > oldest.2);
            return Some((!leftover).then(|| oldest.1.clone()));
        }
        let (value, _, _) = self.cluster.store_v2()?.get(KEY)?;
        Some(Some(value))
    }

    /// Whether the lock is free in the store (quorum aside) for checker (g), given its owner
    /// there: v2 no owner; v3 no owner, or an owner still acquiring (a waiter owed the lock).
    pub(super) fn lock_free(&self, owner: Option<&Option<String>>) -> bool {
        match owner {
            None => true,
            Some(_) if self.cluster.protocol() != Protocol::V3 => false,
            Some(None) => false,
            Some(Some(node)) => self.clients.iter().any(|c| {
                c.doing == super::Doing::Acquiring && c.lock.config().node_id().as_str() == node
            }),
        }
    }

    /// The queue entries ahead of `node_id`'s own (`None` when it has none): v2 those older
    /// than its oldest entry (the one the machine waits with), of other nodes; v3 those older
    /// than its newest key (the one the machine waits with), its own leftovers included
    /// (a key of a lease it gave up blocks it as any other until it goes).
    pub(super) fn ahead_of(&self, node_id: &str) -> Option<Vec<(String, String, u64)>> {
        let entries = &self.queue_seen.1;
        let mine = entries.iter().filter(|e| e.1 == node_id).map(|e| e.2);
        let v3 = self.cluster.protocol() == Protocol::V3;
        let own = if v3 { mine.max()? } else { mine.min()? };
        Some(
            entries
                .iter()
                .filter(|e| e.2 < own && (v3 || e.1 != node_id))
                .cloned()
                .collect(),
        )
    }
}
