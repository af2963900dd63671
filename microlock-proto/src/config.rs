//! What a lock is configured with, validated once at construction.
//!
//! Every value that reaches the wire ([`Key`], [`NodeId`], [`Endpoint`]) is checked here, so
//! the machine never has to guess what a caller meant and never builds a request etcd would
//! misread.

use std::fmt;
use std::time::Duration;

use crate::encode::percent_encode;
use crate::{Credentials, Error};

/// Longest key accepted, in bytes *once percent-encoded* (segments encoded, joined by `/`;
/// plain `A-Z a-z 0-9 - . _ ~` count one byte each, any other byte three).
///
/// etcd resets the connection of a request whose request line reaches 4096 bytes (verified on
/// 3.4.23 and 3.5.1). A release sends `DELETE /v2/keys/KEY?prevValue=NODE&prevIndex=N`, so the
/// key and the node id share that line: this limit and [`MAX_NODE_ID_BYTES`] keep the longest
/// request under 4000 bytes, so that every lock, renew, unlock and watch is deliverable.
pub const MAX_KEY_BYTES: usize = 2000;
/// Longest node id accepted, in bytes once percent-encoded (see [`MAX_KEY_BYTES`]).
pub const MAX_NODE_ID_BYTES: usize = 1900;
/// Longest TTL accepted: `u32::MAX` seconds (about 136 years); etcd multiplies the TTL by
/// `time.Second` in a signed 64-bit nanosecond count, so far larger values would overflow there.
pub const MAX_TTL: Duration = Duration::from_secs(u32::MAX as u64);

/// A validated lock key: the etcd v2 key the lock lives at.
///
/// `/foo` and `foo` are the same key (as in node-etcd, which microlock for Node.js uses); `/`
/// separates directories. Rejected: the empty key, `/` alone, empty segments (`a//b`, `a/`),
/// `.` and `..` segments (etcd's HTTP mux redirects such paths instead of serving them), ASCII
/// control characters (NUL included), `_microlock` segments (reserved for the queue of fair
/// acquires), and keys longer than [`MAX_KEY_BYTES`] once percent-encoded.
///
/// ```
/// use microlock_proto::Key;
/// let key = Key::new("/locks/a b")?;
/// assert_eq!(key.as_str(), "locks/a b");
/// assert_eq!(key, Key::new("locks/a b")?);
/// assert!(Key::new("a//b").is_err());
/// # Ok::<(), microlock_proto::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    key: String,
    /// `/v2/keys/` followed by each segment percent-encoded and joined with `/`.
    path: String,
}

impl Key {
    /// Validates `key`; see the type's documentation for the rules.
    pub fn new(key: &str) -> Result<Key, Error> {
        let invalid = |reason: &'static str| Error::InvalidKey {
            key: key.to_owned(),
            reason,
        };
        let trimmed = key.strip_prefix('/').unwrap_or(key);
        if key.is_empty() {
            return Err(invalid("the key is empty"));
        }
        if trimmed.is_empty() {
            return Err(invalid(
                "the key is the root directory `/`, which etcd keeps read-only",
            ));
        }
        if trimmed.chars().any(|c| c.is_ascii_control()) {
            return Err(invalid("the key contains an ASCII control character"));
        }
        if trimmed.split('/').any(|s| s == crate::wire::QUEUE_SEGMENT) {
            return Err(invalid(
                "a `_microlock` segment is reserved (fair acquires queue there)",
            ));
        }
        let mut path = String::from("/v2/keys");
        for segment in trimmed.split('/') {
            match segment {
                "" => {
                    return Err(invalid(
                        "the key has an empty segment (`//` or a trailing `/`)",
                    ))
                }
                "." | ".." => return Err(invalid("the key has a `.` or `..` segment")),
                _ => {
                    path.push('/');
                    path.push_str(&percent_encode(segment));
                }
            }
        }
        // `path` is "/v2/keys/" followed by the encoded key.
        if path.len() - "/v2/keys/".len() > MAX_KEY_BYTES {
            return Err(invalid(
                "the key is longer than 2000 bytes percent-encoded (etcd refuses request lines of 4 KiB)",
            ));
        }
        Ok(Key {
            key: trimmed.to_owned(),
            path,
        })
    }

    /// The key without a leading `/`, exactly as the caller wrote it otherwise.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The key as etcd names it in responses: with a leading `/`.
    pub fn etcd_key(&self) -> String {
        format!("/{}", self.key)
    }

    /// The request path for this key: `/v2/keys/` + percent-encoded segments.
    ///
    /// ```
    /// # use microlock_proto::Key;
    /// assert_eq!(Key::new("a b/é?")?.path(), "/v2/keys/a%20b/%C3%A9%3F");
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.key, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// A validated node id: the value this node writes into the lock key.
///
/// Any non-empty UTF-8 text without ASCII control characters, up to [`MAX_NODE_ID_BYTES`] once
/// percent-encoded; it is always percent-encoded on the wire, so `&`, `=`, `+`, `%` and spaces
/// are stored verbatim.
///
/// ```
/// use microlock_proto::NodeId;
/// assert_eq!(NodeId::new("worker 1&x=y")?.as_str(), "worker 1&x=y");
/// assert!(NodeId::new("").is_err());
/// # Ok::<(), microlock_proto::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Validates `node_id`.
    pub fn new(node_id: &str) -> Result<NodeId, Error> {
        let invalid = |reason: &'static str| Error::InvalidNodeId {
            node_id: node_id.to_owned(),
            reason,
        };
        if node_id.is_empty() {
            return Err(invalid("the node id is empty"));
        }
        if node_id.chars().any(|c| c.is_ascii_control()) {
            return Err(invalid("the node id contains an ASCII control character"));
        }
        if percent_encode(node_id).len() > MAX_NODE_ID_BYTES {
            return Err(invalid(
                "the node id is longer than 1900 bytes percent-encoded (etcd refuses request lines of 4 KiB)",
            ));
        }
        Ok(NodeId(node_id.to_owned()))
    }

    /// The node id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Converts a lease duration into etcd's whole seconds, rounding a fraction **up**
/// (1.2 s → 2 s), so the lock is never shorter than asked.
///
/// ```
/// use std::time::Duration;
/// use microlock_proto::ttl_seconds;
/// assert_eq!(ttl_seconds(Duration::from_millis(1200))?, 2);
/// assert!(ttl_seconds(Duration::from_millis(999)).is_err());
/// # Ok::<(), microlock_proto::Error>(())
/// ```
pub fn ttl_seconds(ttl: Duration) -> Result<u64, Error> {
    if ttl < Duration::from_secs(1) {
        return Err(Error::InvalidTtl {
            ttl,
            reason: "the TTL is shorter than etcd's one-second resolution",
        });
    }
    if ttl > MAX_TTL {
        return Err(Error::InvalidTtl {
            ttl,
            reason: "the TTL is longer than u32::MAX seconds",
        });
    }
    Ok(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
}

/// One etcd client URL: `http://host:port` or `https://host:port` (an optional trailing `/`
/// is allowed), or `host:port` without a scheme, which means `http` (node-etcd's and etcdctl's
/// form: `127.0.0.1:2379`). Credentials, paths and queries in the URL are rejected.
///
/// ```
/// use microlock_proto::Endpoint;
/// let e = Endpoint::parse("http://127.0.0.1:2379/")?;
/// assert_eq!(e.as_str(), "http://127.0.0.1:2379");
/// assert_eq!(Endpoint::parse("localhost:2379")?.as_str(), "http://localhost:2379");
/// assert!(Endpoint::parse("https://etcd:2379")?.is_tls());
/// assert!(Endpoint::parse("ftp://etcd:2379").is_err());
/// # Ok::<(), microlock_proto::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    base: String,
}

impl Endpoint {
    /// Parses and validates a client URL.
    pub fn parse(url: &str) -> Result<Endpoint, Error> {
        let invalid = |reason: &'static str| Error::InvalidEndpoint {
            endpoint: url.to_owned(),
            reason,
        };
        let trimmed = url.trim();
        if trimmed.contains(',') {
            return Err(invalid(
                "one URL expected (a comma-separated list goes to parse_all)",
            ));
        }
        let uri: http::Uri = if trimmed.contains("://") {
            trimmed.parse()
        } else {
            // `host:port` (no scheme) is plain http, as in node-etcd and etcdctl.
            format!("http://{trimmed}").parse()
        }
        .map_err(|_| invalid("not a valid URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            _ => return Err(invalid("the URL must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("the URL must not have a path or query"));
        }
        Ok(Endpoint {
            base: format!("{scheme}://{authority}"),
        })
    }

    /// Parses a list of client URLs; at least one is required. Each item may itself be a
    /// comma-separated list (as in `ETCDCTL_ENDPOINTS`), so a configuration string can be
    /// passed as it is.
    ///
    /// ```
    /// use microlock_proto::Endpoint;
    /// assert_eq!(Endpoint::parse_all(["http://127.0.0.1:2379", "http://127.0.0.1:22379"])?.len(), 2);
    /// assert_eq!(Endpoint::parse_all(["http://127.0.0.1:2379,127.0.0.1:22379"])?.len(), 2);
    /// assert!(Endpoint::parse_all(Vec::<String>::new()).is_err());
    /// assert!(Endpoint::parse_all(["http://127.0.0.1:2379,"]).is_err());
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn parse_all<I, S>(urls: I) -> Result<Vec<Endpoint>, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut endpoints = Vec::new();
        for item in urls {
            for url in item.as_ref().split(',') {
                endpoints.push(Endpoint::parse(url)?);
            }
        }
        if endpoints.is_empty() {
            return Err(Error::InvalidEndpoint {
                endpoint: String::new(),
                reason: "at least one endpoint is required",
            });
        }
        Ok(endpoints)
    }

    /// `http://host:port` or `https://host:port`, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// Whether the URL is `https://`.
    ///
    /// ```
    /// use microlock_proto::Endpoint;
    /// assert!(Endpoint::parse("https://10.0.0.1:2379")?.is_tls());
    /// assert!(!Endpoint::parse("10.0.0.1:2379")?.is_tls());
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn is_tls(&self) -> bool {
        self.base.starts_with("https://")
    }
}

impl Default for Endpoint {
    /// `http://127.0.0.1:2379`, etcd's default client URL.
    fn default() -> Endpoint {
        Endpoint {
            base: "http://127.0.0.1:2379".to_owned(),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.base, f)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// Which of etcd's APIs a lock speaks. Both give the same [`Lock`](crate::Lock) API; they are
/// separate keyspaces, so every client of one lock must speak the same protocol (a client is
/// never switched silently: a v2 client on an etcd without v2 gets
/// [`Error::V2Unavailable`](crate::Error::V2Unavailable)).
///
/// ```
/// use std::time::Duration;
/// use microlock_proto::{Config, Protocol};
/// let config = Config::new("jobs/nightly", "worker-7", Duration::from_secs(10))?
///     .with_protocol(Protocol::V3);
/// assert_eq!(config.protocol(), Protocol::V3);
/// assert_eq!(Protocol::default(), Protocol::V2);
/// # Ok::<(), microlock_proto::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// etcd's v2 keys API, the protocol of microlock for Node.js (shared locks with it):
    /// the key `K` holds the node id with a TTL. Served by etcd 3.4 and 3.5 when started with
    /// `--enable-v2=true`; removed in etcd 3.6.
    #[default]
    V2,
    /// etcd's v3 API through its JSON gateway (`/v3/...`), the layout of Go's
    /// `concurrency.Mutex` (shared locks with `etcdctl lock K`): `K/<lease id in hex>` under a
    /// lease, the lowest create revision holds. Served by every etcd from 3.4 on.
    V3,
}

/// The configuration of one lock.
///
/// ```
/// use std::time::Duration;
/// use microlock_proto::{Config, Endpoint};
/// let config = Config::new("foo", "node-1", Duration::from_secs(5))?
///     .with_endpoints(vec![Endpoint::parse("http://127.0.0.1:2379")?])?
///     .with_request_timeout(Duration::from_secs(2));
/// assert_eq!(config.ttl_secs(), 5);
/// assert_eq!(config.safety_margin(), Duration::from_millis(500));
/// # Ok::<(), microlock_proto::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    key: Key,
    node_id: NodeId,
    ttl_secs: u64,
    endpoints: Vec<Endpoint>,
    request_timeout: Duration,
    operation_timeout: Option<Duration>,
    watch_liveness: Duration,
    safety_margin: Option<Duration>,
    watch_retry_min: Duration,
    watch_retry_max: Duration,
    auto_renew: bool,
    member_discovery: bool,
    credentials: Option<Credentials>,
    fair_acquire: bool,
    protocol: Protocol,
    renew_interval: Option<Duration>,
    acquire_jitter: Duration,
    seed: Option<u64>,
}

impl Config {
    /// A lock on `key` for `node_id` with a lease of `ttl` (rounded up to whole seconds), at
    /// etcd's default endpoint `http://127.0.0.1:2379`, with a 2 s timeout per request, an
    /// operation budget of four request timeouts, and a watch liveness bound of 4 s.
    pub fn new(key: &str, node_id: &str, ttl: Duration) -> Result<Config, Error> {
        Ok(Config {
            key: Key::new(key)?,
            node_id: NodeId::new(node_id)?,
            ttl_secs: ttl_seconds(ttl)?,
            endpoints: vec![Endpoint::default()],
            request_timeout: Duration::from_secs(2),
            operation_timeout: None,
            watch_liveness: Duration::from_secs(4),
            safety_margin: None,
            watch_retry_min: Duration::from_millis(50),
            watch_retry_max: Duration::from_secs(2),
            auto_renew: false,
            member_discovery: false,
            credentials: None,
            fair_acquire: true,
            protocol: Protocol::V2,
            renew_interval: None,
            acquire_jitter: Duration::from_millis(10),
            seed: None,
        })
    }

    /// The etcd members to talk to. Requests go to the first while it works; a member that
    /// fails is skipped for a back-off and the request goes to the next one (see
    /// [`Members`](crate::Members)). At least one is required.
    pub fn with_endpoints(mut self, endpoints: Vec<Endpoint>) -> Result<Config, Error> {
        if endpoints.is_empty() {
            return Err(Error::InvalidEndpoint {
                endpoint: String::new(),
                reason: "at least one endpoint is required",
            });
        }
        self.endpoints = endpoints;
        Ok(self)
    }

    /// How long one request (a lock, unlock or renew write, or a read) may go unanswered before
    /// the member is given up on for it: its outcome is then settled by a read on another
    /// member, and the operation goes on there (a watch has no deadline: see
    /// [`with_watch_liveness`](Config::with_watch_liveness)). Default 2 s. Zero is raised to
    /// 1 ms.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Config {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The time budget of one `lock`, `unlock` or `renew`: its attempts move from member to
    /// member (a failed member is skipped) until one gives a clear answer; no new attempt starts
    /// after the budget, nor after four attempts per member. So a caller hears back within `operation_timeout` plus one
    /// [`request_timeout`](Config::with_request_timeout) (a read that settles a last lost
    /// answer), or at once when every member refused the connection. The error is then the
    /// last attempt's ([`Error::Timeout`], [`Error::Transport`], or etcd's own). Default: four
    /// request timeouts (8 s). A waiting acquire is bounded by its own deadline instead.
    pub fn with_operation_timeout(mut self, budget: Duration) -> Config {
        self.operation_timeout = Some(budget);
        self
    }

    /// How soon a watch (a waiting acquire's, or the one behind `events()`) notices that the
    /// member it sits on stopped serving it — hung, dead, or cut off from its peers — and
    /// moves to another member, resuming from the last index it delivered: while a watch
    /// waits, the member is probed with a quorum read every half of this, each allowed half
    /// of it. So a release is seen within about this bound of happening (plus a round trip),
    /// whichever single member fails. Default 4 s; raised to at least 20 ms.
    pub fn with_watch_liveness(mut self, bound: Duration) -> Config {
        self.watch_liveness = bound.max(Duration::from_millis(20));
        self
    }

    /// How much earlier than `send time + TTL` this node stops believing it holds the lock
    /// (see [`Fence::valid_until`](crate::Fence::valid_until)). Covers clock-rate drift between
    /// this process and etcd's leader. Default: a tenth of the TTL. Capped at the TTL.
    pub fn with_safety_margin(mut self, margin: Duration) -> Config {
        self.safety_margin = Some(margin.min(self.ttl()));
        self
    }

    /// Renew the lease automatically while the lock is held (see
    /// [`with_renew_interval`](Config::with_renew_interval)). Off by default, as in
    /// microlock; [`Lock::set_auto_renew`](crate::Lock::set_auto_renew) switches it at run time.
    pub fn with_auto_renew(mut self, on: bool) -> Config {
        self.auto_renew = on;
        self
    }

    /// Member discovery: also use every member the cluster names (`GET /v2/members`, asked
    /// when the lock is first used and then every minute), not only the endpoints given —
    /// so that one given endpoint of many is enough for failover. Off by default.
    pub fn with_member_discovery(mut self, on: bool) -> Config {
        self.member_discovery = on;
        self
    }

    /// Whether member discovery is on.
    pub fn member_discovery(&self) -> bool {
        self.member_discovery
    }

    /// Fair waiting (the default): a waiting [`acquire`](crate::Lock::acquire) queues in etcd
    /// (in `_microlock/queue/NAME/` beside the key `DIR/NAME`, see the README) and is served first come, first served:
    /// only the head of the queue contends for the key, each waiter watches only the one ahead
    /// of it, and a node that releases and wants the lock again queues at the tail. `false`:
    /// every waiter watches the key and races for it after a seeded jitter (microlock for
    /// Node.js's behaviour, without fairness). [`lock`](crate::Lock::lock) never queues.
    pub fn with_fair_acquire(mut self, fair: bool) -> Config {
        self.fair_acquire = fair;
        self
    }

    /// Speak `protocol` to etcd (default [`Protocol::V2`]).
    pub fn with_protocol(mut self, protocol: Protocol) -> Config {
        self.protocol = protocol;
        self
    }

    /// The protocol spoken to etcd (see [`with_protocol`](Config::with_protocol)).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether waiting acquires queue (see [`with_fair_acquire`](Config::with_fair_acquire)).
    pub fn fair_acquire(&self) -> bool {
        self.fair_acquire
    }

    /// Authenticate as this user (etcd's authentication; on the v2 API, HTTP basic
    /// authentication on every request). `None` (the default): no credentials.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use microlock_proto::{Config, Credentials};
    /// let config = Config::new("locks/a", "node-1", Duration::from_secs(5))?
    ///     .with_credentials(Some(Credentials::new("alice", "secret")?));
    /// assert!(!format!("{config:?}").contains("secret"));
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Config {
        self.credentials = credentials;
        self
    }

    /// The credentials, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// How often auto-renew refreshes the lease, counted from the send time of the last
    /// successful lock or renew. Default: a third of the TTL. Raised to at least 10 ms.
    pub fn with_renew_interval(mut self, interval: Duration) -> Config {
        self.renew_interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// The largest random delay a waiting acquire adds after seeing the key released, so
    /// that many waiters do not all write at the same instant. Default: 10 ms.
    pub fn with_acquire_jitter(mut self, jitter: Duration) -> Config {
        self.acquire_jitter = jitter;
        self
    }

    /// The seed of the machine's only randomness (the acquire jitter). Default: derived from
    /// the node id, so that nodes differ and a run is reproducible.
    pub fn with_seed(mut self, seed: u64) -> Config {
        self.seed = Some(seed);
        self
    }

    /// Whether auto-renew starts on.
    pub fn auto_renew(&self) -> bool {
        self.auto_renew
    }

    /// The auto-renew interval.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval.unwrap_or(self.ttl() / 3)
    }

    /// The largest acquire jitter.
    pub fn acquire_jitter(&self) -> Duration {
        self.acquire_jitter
    }

    /// The randomness seed.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            // FNV-1a of the node id: stable across runs and platforms.
            self.node_id
                .as_str()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                })
        })
    }

    /// The lock key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The lease in whole seconds, as sent to etcd.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The lease as a [`Duration`].
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }

    /// The etcd members.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The per-request deadline.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The time budget of one operation (see
    /// [`with_operation_timeout`](Config::with_operation_timeout)).
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
            .unwrap_or_else(|| self.request_timeout.saturating_mul(4))
    }

    /// The watch liveness bound (see [`with_watch_liveness`](Config::with_watch_liveness)).
    pub fn watch_liveness(&self) -> Duration {
        self.watch_liveness
    }

    /// The safety margin subtracted from the lease for the local validity deadline.
    pub fn safety_margin(&self) -> Duration {
        self.safety_margin.unwrap_or(self.ttl() / 10)
    }

    /// The first and the largest delay before a failed watch (or a waiting acquire's failed
    /// request) is retried, doubling between. The largest is never above the
    /// [watch liveness bound](Config::with_watch_liveness): a waiter that backs off after
    /// failures (e.g. etcd's `no leader` while quorum is lost) still looks again within it.
    pub fn watch_retry(&self) -> (Duration, Duration) {
        let max = self.watch_retry_max.min(self.watch_liveness);
        (self.watch_retry_min.min(max), max)
    }
}
