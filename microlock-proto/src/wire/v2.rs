//! etcd v2 (the keys API) on the wire: the requests a lock sends and the shapes of etcd's answers.
//!
//! Everything about URLs, query parameters, form bodies, status codes and JSON lives here and
//! nowhere else; the machine speaks in [`Reply`] values.

use http::{header, Method, Request, Response};
use serde::Deserialize;

use super::Streamed;
use crate::config::{Config, Endpoint};
use crate::encode::percent_encode;
use crate::{AuthFailure, Error};

/// The largest response body accepted, in bytes. An adapter reads at most one byte more and
/// hands over what it read; anything larger is a [`Error::Protocol`] error.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The header of etcd's index at the answer (listed in [`RESPONSE_HEADERS`](super::RESPONSE_HEADERS)).
pub(crate) const ETCD_INDEX: &str = "x-etcd-index";

/// The media type etcd requires for form bodies (without it etcd ignores the body).
const FORM: &str = "application/x-www-form-urlencoded";

fn request(
    method: Method,
    endpoint: &Endpoint,
    config: &Config,
    query: &str,
    form: Option<String>,
) -> Request<Vec<u8>> {
    let uri = format!("{}{}?{}", endpoint.as_str(), config.key().path(), query);
    let builder = authorized(Request::builder().method(method).uri(uri), config);
    let built = match form {
        Some(body) => builder
            .header(header::CONTENT_TYPE, FORM)
            .body(body.into_bytes()),
        None => builder.body(Vec::new()),
    };
    // Every part was validated at construction (Endpoint, Key) or percent-encoded here.
    built.expect("validated parts always form a valid request")
}

/// With the `Authorization` header of `config`'s credentials, if any.
fn authorized(builder: http::request::Builder, config: &Config) -> http::request::Builder {
    match config.credentials() {
        Some(c) => builder.header(header::AUTHORIZATION, c.basic_auth_header().clone()),
        None => builder,
    }
}

/// `PUT /v2/keys/K?prevExist=false` with `value=ID&ttl=T`: create the key only if absent.
pub(crate) fn lock(endpoint: &Endpoint, config: &Config) -> Request<Vec<u8>> {
    let body = format!(
        "value={}&ttl={}",
        percent_encode(config.node_id().as_str()),
        config.ttl_secs()
    );
    request(Method::PUT, endpoint, config, "prevExist=false", Some(body))
}

/// `DELETE /v2/keys/K?prevValue=ID`: delete only if this node holds it (the condition must be
/// in the query string: etcd ignores a DELETE's body). With `prev_index` (the hold's last
/// `modifiedIndex`), `&prevIndex=M` also pins the very hold being released, so a delayed
/// DELETE can never remove a later hold of the same node id.
pub(crate) fn unlock(
    endpoint: &Endpoint,
    config: &Config,
    prev_index: Option<u64>,
) -> Request<Vec<u8>> {
    let mut query = format!("prevValue={}", percent_encode(config.node_id().as_str()));
    if let Some(index) = prev_index {
        query.push_str(&format!("&prevIndex={index}"));
    }
    request(Method::DELETE, endpoint, config, &query, None)
}

/// `PUT /v2/keys/K?prevValue=ID&prevIndex=M` with `refresh=true&ttl=T`: extend the lease only
/// if this node holds it, at the index it last saw (`M`, the hold's last `modifiedIndex`);
/// value and createdIndex are kept, watchers are not notified.
///
/// Why pinned: etcd computes a refresh's new expiry when the member *receives* it. A refresh
/// stalled without quorum and applied seconds later would set an expiry already past — and,
/// unpinned, it would do so to a later hold of the same node id that its client believes valid
/// (found by the simulator: two believed holders). Pinned, a late refresh can only meet the
/// very state it was sent for.
pub(crate) fn renew(endpoint: &Endpoint, config: &Config, prev_index: u64) -> Request<Vec<u8>> {
    let query = format!(
        "prevValue={}&prevIndex={prev_index}",
        percent_encode(config.node_id().as_str())
    );
    let body = format!("refresh=true&ttl={}", config.ttl_secs());
    request(Method::PUT, endpoint, config, &query, Some(body))
}

/// `GET /v2/keys/K?quorum=true`: a linearizable read.
pub(crate) fn read(endpoint: &Endpoint, config: &Config) -> Request<Vec<u8>> {
    request(Method::GET, endpoint, config, "quorum=true", None)
}

/// `GET /v2/keys/K?wait=true&waitIndex=N`: a long poll for the first event at index ≥ N.
/// Marked [`LongPoll`] and [`Streamed`] for the adapters.
pub(crate) fn watch(endpoint: &Endpoint, config: &Config, wait_index: u64) -> Request<Vec<u8>> {
    let query = format!("wait=true&waitIndex={wait_index}");
    let mut request = request(Method::GET, endpoint, config, &query, None);
    request.extensions_mut().insert(LongPoll);
    request.extensions_mut().insert(Streamed);
    request
}

/// Marks a request that may stay unanswered for as long as nothing happens (a watch), in
/// its [`http::Extensions`]: an adapter gives such requests their own connections, so they can
/// never hold up the short ones.
///
/// ```
/// # use microlock_proto::{http::Request, LongPoll};
/// fn is_long_poll(request: &Request<Vec<u8>>) -> bool {
///     request.extensions().get::<LongPoll>().is_some()
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPoll;

/// Where fair acquires queue: beside the key, in `_microlock/queue/NAME/` of the key's own
/// directory (`locks/job` queues in `locks/_microlock/queue/job/`): a hidden directory in v2
/// listings, inside whatever key-prefix permission covers the key, and under a segment
/// [`Key`](crate::Key) refuses, so it never meets a user's key.
pub(crate) const QUEUE_SEGMENT: &str = "_microlock";

/// `/v2/keys/DIR/_microlock/queue/NAME` for the key `DIR/NAME` (percent-encoded as in the
/// key's own path).
fn queue_dir(config: &Config) -> String {
    let path = config.key().path();
    let (dir, name) = path.rsplit_once('/').unwrap_or(("/v2/keys", path));
    format!("{dir}/{QUEUE_SEGMENT}/queue/{name}")
}

/// A queue request: `path` under the endpoint, with `query` and an optional form.
fn queue_request(
    method: Method,
    endpoint: &Endpoint,
    config: &Config,
    path: &str,
    query: &str,
    form: Option<String>,
) -> Request<Vec<u8>> {
    let mut uri = format!("{}{path}", endpoint.as_str());
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(query);
    }
    let builder = authorized(Request::builder().method(method).uri(uri), config);
    let built = match form {
        Some(body) => builder
            .header(header::CONTENT_TYPE, FORM)
            .body(body.into_bytes()),
        None => builder.body(Vec::new()),
    };
    built.expect("validated parts always form a valid request")
}

/// The path of queue entry `name` (its 20-digit in-order name).
fn entry_path(config: &Config, name: &str) -> String {
    format!("{}/{}", queue_dir(config), percent_encode(name))
}

/// `POST /v2/keys/DIR/_microlock/queue/NAME` with `value=ID&ttl=T`: a new entry at the queue's
/// tail (etcd names it after its createdIndex, zero-padded, so names sort in arrival order).
pub(crate) fn enqueue(endpoint: &Endpoint, config: &Config) -> Request<Vec<u8>> {
    let body = format!(
        "value={}&ttl={}",
        percent_encode(config.node_id().as_str()),
        config.ttl_secs()
    );
    queue_request(
        Method::POST,
        endpoint,
        config,
        &queue_dir(config),
        "",
        Some(body),
    )
}

/// `GET /v2/keys/DIR/_microlock/queue/NAME?sorted=true&quorum=true`: the queue, in order.
pub(crate) fn list_queue(endpoint: &Endpoint, config: &Config) -> Request<Vec<u8>> {
    let dir = queue_dir(config);
    queue_request(
        Method::GET,
        endpoint,
        config,
        &dir,
        "sorted=true&quorum=true",
        None,
    )
}

/// `PUT` entry `name` `?prevValue=ID` with `refresh=true&ttl=T`: keeps it queued.
pub(crate) fn refresh_entry(endpoint: &Endpoint, config: &Config, name: &str) -> Request<Vec<u8>> {
    let query = format!("prevValue={}", percent_encode(config.node_id().as_str()));
    let body = format!("refresh=true&ttl={}", config.ttl_secs());
    let path = entry_path(config, name);
    queue_request(Method::PUT, endpoint, config, &path, &query, Some(body))
}

/// Removes entry `name`. `served`: the entry's holder is done with the lock — a
/// `compareAndDelete` (`?prevValue=ID`), which tells its successor that its turn has come; else
/// a plain `delete` (left the queue unserved), which makes the successor read the queue again.
pub(crate) fn remove_entry(
    endpoint: &Endpoint,
    config: &Config,
    name: &str,
    served: bool,
) -> Request<Vec<u8>> {
    let query = if served {
        format!("prevValue={}", percent_encode(config.node_id().as_str()))
    } else {
        String::new()
    };
    let path = entry_path(config, name);
    queue_request(Method::DELETE, endpoint, config, &path, &query, None)
}

/// `GET` entry `name` `?wait=true&waitIndex=N`: waits for the entry ahead of ours to go.
/// Marked [`LongPoll`] and [`Streamed`] for the adapters.
pub(crate) fn watch_entry(
    endpoint: &Endpoint,
    config: &Config,
    name: &str,
    wait_index: u64,
) -> Request<Vec<u8>> {
    let query = format!("wait=true&waitIndex={wait_index}");
    let path = entry_path(config, name);
    let mut request = queue_request(Method::GET, endpoint, config, &path, &query, None);
    request.extensions_mut().insert(LongPoll);
    request.extensions_mut().insert(Streamed);
    request
}

/// `GET` entry `name` `?quorum=true`: is the entry ahead of ours still there?
pub(crate) fn read_entry(endpoint: &Endpoint, config: &Config, name: &str) -> Request<Vec<u8>> {
    let path = entry_path(config, name);
    queue_request(Method::GET, endpoint, config, &path, "quorum=true", None)
}

/// `GET /v2/members`: the cluster's members and their client URLs (member discovery).
pub(crate) fn members(endpoint: &Endpoint, config: &Config) -> Request<Vec<u8>> {
    authorized(Request::builder(), config)
        .method(Method::GET)
        .uri(format!("{}/v2/members", endpoint.as_str()))
        .body(Vec::new())
        .expect("a validated endpoint always forms a valid request")
}

/// The client URLs in an answer to [`members`]: `{"members":[{"clientURLs":[...]},...]}`, one
/// per member: the first `https://` one when `tls` (the configured endpoints are https), else
/// the first `http://` one, else the first usable one. `None` for anything else; URLs this
/// library cannot use are skipped.
pub(crate) fn parse_members(response: &Response<Vec<u8>>, tls: bool) -> Option<Vec<Endpoint>> {
    #[derive(Deserialize)]
    struct Member {
        #[serde(rename = "clientURLs", default)]
        client_urls: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Members {
        members: Vec<Member>,
    }
    let body = response.body();
    if response.status() != 200 || body.len() > MAX_RESPONSE_BYTES {
        return None;
    }
    let members: Members = serde_json::from_slice(body).ok()?;
    Some(
        members
            .members
            .iter()
            .filter_map(|m| {
                let usable: Vec<Endpoint> = m
                    .client_urls
                    .iter()
                    .filter_map(|url| Endpoint::parse(url).ok())
                    .collect();
                let preferred = usable.iter().position(|e| e.is_tls() == tls);
                let at = preferred.or((!usable.is_empty()).then_some(0))?;
                usable.into_iter().nth(at)
            })
            .collect(),
    )
}

/// A node as etcd describes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct Node {
    pub key: Option<String>,
    pub value: Option<String>,
    #[serde(rename = "createdIndex")]
    pub created_index: Option<u64>,
    #[serde(rename = "modifiedIndex")]
    pub modified_index: Option<u64>,
    #[serde(default)]
    pub dir: bool,
    /// Remaining whole seconds to live, rounded up by etcd. etcd omits it when 0.
    pub ttl: Option<i64>,
    /// When the key expires (present exactly when it has a TTL).
    pub expiration: Option<String>,
    /// A directory's children (the queue of fair acquires).
    #[serde(default)]
    pub nodes: Vec<Node>,
}

/// A successful answer or a watch event.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct Action {
    pub action: String,
    pub node: Option<Node>,
    #[serde(rename = "prevNode")]
    pub prev_node: Option<Node>,
}

/// etcd's error body.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct EtcdError {
    #[serde(rename = "errorCode")]
    pub code: u64,
    pub message: String,
    pub cause: Option<String>,
    pub index: Option<u64>,
}

/// etcd's error codes that a lock acts on (etcdserver/api/v2error).
pub(crate) mod code {
    pub const KEY_NOT_FOUND: u64 = 100;
    pub const TEST_FAILED: u64 = 101;
    pub const NODE_EXIST: u64 = 105;
    pub const EVENT_INDEX_CLEARED: u64 = 401;
    /// "The request requires user authentication" (HTTP 401): a wrong user or password, or a
    /// role without access to the key.
    pub const UNAUTHORIZED: u64 = 110;
}

/// A response, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A 2xx answer with an action body. `etcd_index` is the `X-Etcd-Index` header.
    Action {
        action: Box<Action>,
        etcd_index: Option<u64>,
    },
    /// A 200 with an empty body: how a watch ends when the member shuts it down.
    Empty,
    /// An etcd error body with its HTTP status.
    Error {
        status: u16,
        error: EtcdError,
        etcd_index: Option<u64>,
    },
}

impl Reply {
    /// The error for an etcd answer that no rule of the caller's maps to something better.
    pub(crate) fn into_error(self, what: &str, config: &Config) -> Error {
        match self {
            Reply::Error { status, error, .. }
                if error.code == code::UNAUTHORIZED || status == 401 =>
            {
                Error::Auth {
                    key: config.key().as_str().to_owned(),
                    user: config.credentials().map(|c| c.user().to_owned()),
                    failure: AuthFailure::Unauthorized,
                    message: error.message,
                }
            }
            Reply::Error { status, error, .. } => Error::Etcd {
                code: error.code,
                message: error.message,
                cause: error.cause,
                index: error.index,
                status,
            },
            Reply::Action { action, .. } => Error::Protocol {
                reason: format!("unexpected action {:?} in answer to {what}", action.action),
            },
            Reply::Empty => Error::Protocol {
                reason: format!("empty body in answer to {what}"),
            },
        }
    }
}

/// What the key holds, from the answer to a quorum GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// No such key; `index` is etcd's index at the read.
    Absent { index: u64 },
    /// The key with its value (empty for a directory) and indexes.
    Present {
        value: String,
        created: u64,
        modified: u64,
        index: u64,
        /// Remaining whole seconds to live, rounded up (`None`: permanent).
        ttl: Option<u64>,
    },
}

impl KeyState {
    /// Reads a GET's answer; `None` when it is not a clear answer (an error, garbage).
    pub(crate) fn from_read(reply: Result<Reply, Error>) -> Option<KeyState> {
        match reply.ok()? {
            Reply::Action {
                action,
                etcd_index: Some(index),
            } if action.action == "get" => {
                let node = action.node?;
                Some(KeyState::Present {
                    value: if node.dir { String::new() } else { node.value? },
                    created: node.created_index?,
                    modified: node.modified_index?,
                    index,
                    // `ttl` is omitted at 0; `expiration` tells a TTL key from a permanent one.
                    ttl: node
                        .expiration
                        .as_ref()
                        .map(|_| node.ttl.unwrap_or(0).max(0) as u64),
                })
            }
            Reply::Error {
                error, etcd_index, ..
            } if error.code == code::KEY_NOT_FOUND => Some(KeyState::Absent {
                index: error.index.or(etcd_index)?,
            }),
            _ => None,
        }
    }
}

impl Reply {
    /// Whether the member failed rather than answered about the key: a 5xx, such as etcd's
    /// `500 {"errorCode":300,"message":"Raft Internal Error"}` when it has no leader.
    pub(crate) fn is_server_failure(&self) -> bool {
        matches!(self, Reply::Error { status: 500.., .. })
    }

    /// The highest etcd index this answer shows (header, error, nodes); 0 if none.
    pub(crate) fn highest_index(&self) -> u64 {
        let nodes = |a: &Action| {
            [a.node.as_ref(), a.prev_node.as_ref()]
                .into_iter()
                .flatten()
                .flat_map(|n| [n.created_index, n.modified_index])
                .flatten()
                .max()
        };
        match self {
            Reply::Action { action, etcd_index } => etcd_index.max(&nodes(action)).unwrap_or(0),
            Reply::Error {
                error, etcd_index, ..
            } => etcd_index.max(&error.index).unwrap_or(0),
            Reply::Empty => 0,
        }
    }
}

/// Whether `response` is Go's plain `404 page not found`, which etcd answers for every
/// `/v2/...` path when it serves no v2 API (3.6 and later, or 3.4/3.5 without `--enable-v2`):
/// etcd's own 404s on `/v2/keys` are JSON (`errorCode` 100).
pub(crate) fn is_no_v2_api(response: &Response<Vec<u8>>) -> bool {
    response.status() == http::StatusCode::NOT_FOUND
        && response.body().trim_ascii() == b"404 page not found"
}

fn snippet(body: &[u8]) -> String {
    const SHOWN: usize = 120;
    let shown = &body[..body.len().min(SHOWN)];
    let mut s = String::from_utf8_lossy(shown).into_owned();
    if body.len() > SHOWN {
        s.push('…');
    }
    s
}

/// Reads a response into a [`Reply`]; anything etcd would not send is [`Error::Protocol`].
pub(crate) fn parse(response: &Response<Vec<u8>>) -> Result<Reply, Error> {
    let status = response.status().as_u16();
    let body = response.body();
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(Error::Protocol {
            reason: format!("response body larger than {MAX_RESPONSE_BYTES} bytes"),
        });
    }
    let etcd_index = match response.headers().get(ETCD_INDEX) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| Error::Protocol {
                    reason: format!("X-Etcd-Index header is not a number: {v:?}"),
                })?,
        ),
    };
    // etcd answers UTF-8 JSON objects; serde alone would skip invalid UTF-8 inside ignored
    // fields and read a JSON array as a struct, so check both first.
    let text = std::str::from_utf8(body).map_err(|_| Error::Protocol {
        reason: format!(
            "HTTP {status} with a body that is not UTF-8: {}",
            snippet(body)
        ),
    })?;
    let is_object = text.trim_start().starts_with('{');
    match status {
        200..=299 => {
            // Whitespace only (ASCII: `str::trim` would also take e.g. U+000B for blank).
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Reply::Empty);
            }
            if !is_object {
                return Err(Error::Protocol {
                    reason: format!(
                        "HTTP {status} with a body that is not a JSON object: {}",
                        snippet(body)
                    ),
                });
            }
            let action: Box<Action> =
                serde_json::from_slice(body).map_err(|e| Error::Protocol {
                    reason: format!(
                        "HTTP {status} with an unreadable body ({e}): {}",
                        snippet(body)
                    ),
                })?;
            Ok(Reply::Action { action, etcd_index })
        }
        400..=599 => {
            let parsed = if is_object {
                serde_json::from_slice(body).ok()
            } else {
                None
            };
            let error: EtcdError = parsed.ok_or_else(|| Error::Protocol {
                reason: format!(
                    "HTTP {status} without an etcd error body: {}",
                    snippet(body)
                ),
            })?;
            Ok(Reply::Error {
                status,
                error,
                etcd_index,
            })
        }
        _ => Err(Error::Protocol {
            reason: format!("unexpected HTTP status {status}: {}", snippet(body)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(key: &str, id: &str) -> Config {
        Config::new(key, id, Duration::from_millis(4500)).unwrap()
    }

    fn body(r: &Request<Vec<u8>>) -> &str {
        std::str::from_utf8(r.body()).unwrap()
    }

    #[test]
    fn lock_request() {
        let r = lock(&Endpoint::default(), &config("/a b/c", "n&ttl=1"));
        assert_eq!(r.method(), Method::PUT);
        assert_eq!(
            r.uri(),
            "http://127.0.0.1:2379/v2/keys/a%20b/c?prevExist=false"
        );
        assert_eq!(body(&r), "value=n%26ttl%3D1&ttl=5");
        assert_eq!(r.headers()[header::CONTENT_TYPE], FORM);
    }

    #[test]
    fn unlock_request_has_condition_in_query_and_no_body() {
        let r = unlock(&Endpoint::default(), &config("k", "a+b"), None);
        assert_eq!(r.method(), Method::DELETE);
        assert_eq!(r.uri().query(), Some("prevValue=a%2Bb"));
        assert!(r.body().is_empty());
        let r = unlock(&Endpoint::default(), &config("k", "a"), Some(9));
        assert_eq!(r.uri().query(), Some("prevValue=a&prevIndex=9"));
    }

    #[test]
    fn renew_request() {
        let r = renew(&Endpoint::default(), &config("k", "x"), 12);
        assert_eq!(r.method(), Method::PUT);
        assert_eq!(r.uri().query(), Some("prevValue=x&prevIndex=12"));
        assert_eq!(body(&r), "refresh=true&ttl=5");
    }

    #[test]
    fn read_and_watch_requests() {
        let c = config("k", "x");
        assert_eq!(
            read(&Endpoint::default(), &c).uri().query(),
            Some("quorum=true")
        );
        let w = watch(&Endpoint::default(), &c, 42);
        assert_eq!(w.uri().query(), Some("wait=true&waitIndex=42"));
        assert!(w.extensions().get::<LongPoll>().is_some());
        assert!(w.extensions().get::<Streamed>().is_some());
        let w = watch_entry(&Endpoint::default(), &c, "00000000000000000007", 8);
        assert!(w.extensions().get::<LongPoll>().is_some());
        assert!(w.extensions().get::<Streamed>().is_some());
        assert!(read(&Endpoint::default(), &c).extensions().is_empty());
    }

    fn response(status: u16, index: Option<&str>, body: &str) -> Response<Vec<u8>> {
        let mut b = Response::builder().status(status);
        if let Some(i) = index {
            b = b.header("X-Etcd-Index", i);
        }
        b.body(body.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn parse_shapes() {
        assert_eq!(parse(&response(200, None, "")).unwrap(), Reply::Empty);
        assert_eq!(
            parse(&response(200, None, " \r\n\t")).unwrap(),
            Reply::Empty
        );
        // Unicode blanks are not an empty answer: a vertical tab is garbage.
        assert!(matches!(
            parse(&response(200, None, "\u{b}\u{b} ")),
            Err(Error::Protocol { .. })
        ));
        match parse(&response(
            412,
            Some("9"),
            r#"{"errorCode":105,"message":"Key already exists","cause":"/k","index":9}"#,
        ))
        .unwrap()
        {
            Reply::Error {
                status: 412,
                error,
                etcd_index: Some(9),
            } => assert_eq!(error.code, 105),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&response(200, Some("x"), "{}")),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            parse(&response(200, None, "{\"action\":")),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            parse(&response(200, None, "{\"action\":7}")),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            parse(&response(502, None, "<html>bad gateway</html>")),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            parse(&response(301, None, "")),
            Err(Error::Protocol { .. })
        ));
        let huge = "x".repeat(MAX_RESPONSE_BYTES + 1);
        assert!(matches!(
            parse(&response(200, None, &huge)),
            Err(Error::Protocol { .. })
        ));
    }
}
