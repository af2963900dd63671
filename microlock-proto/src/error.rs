//! The one error type of every microlock crate.

use std::time::Duration;

use crate::{AuthFailure, TlsFailure};

/// Everything that can go wrong, each cause its own variant.
///
/// Contention ([`AlreadyLocked`](Error::AlreadyLocked)) and ownership
/// ([`LockNotOwned`](Error::LockNotOwned)) are answers *from etcd*; they are never produced by a
/// failure to reach it, which is [`Transport`](Error::Transport) or
/// [`Timeout`](Error::Timeout).
///
/// ```
/// use microlock_proto::Error;
/// fn retryable(e: &Error) -> bool {
///     matches!(e, Error::Transport { .. } | Error::Timeout { .. })
/// }
/// assert!(!retryable(&Error::AlreadyLocked { key: "foo".into(), index: 7 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd refused the lock because the key exists: another node (or this one, earlier)
    /// holds it. `index` is etcd's index when it refused.
    #[error("lock {key:?} is already held")]
    AlreadyLocked {
        /// The lock key.
        key: String,
        /// etcd's index at the time of the refusal.
        index: u64,
    },
    /// The key is not held by this node id (held by another, or by nobody).
    #[error("lock {key:?} is not held by this node")]
    LockNotOwned {
        /// The lock key.
        key: String,
    },
    /// Any other error answered by etcd, with etcd's own error code.
    #[error("etcd error {code}: {message} (HTTP {status})")]
    Etcd {
        /// etcd's `errorCode` (e.g. 300 "Raft Internal Error").
        code: u64,
        /// etcd's `message`.
        message: String,
        /// etcd's `cause`, when given.
        cause: Option<String>,
        /// etcd's `index`, when given.
        index: Option<u64>,
        /// The HTTP status etcd answered with.
        status: u16,
    },
    /// etcd could not be reached or the connection failed before a full response arrived.
    #[error("transport failure talking to etcd: {reason}")]
    Transport {
        /// What the HTTP client reported.
        reason: String,
    },
    /// etcd refused the request's authentication or authorization: see [`AuthFailure`] for
    /// what to check. Never retried: another member would answer the same.
    #[error("etcd refused access to lock {key:?}{}: {failure} ({})", user.as_deref().map(|u| format!(" for user {u:?}")).unwrap_or_default(), failure.advice(user.is_some()))]
    Auth {
        /// The lock key.
        key: String,
        /// The user the request authenticated as, if any (never the password).
        user: Option<String>,
        /// Which refusal.
        failure: AuthFailure,
        /// etcd's own message.
        message: String,
    },
    /// A TLS connection to a member could not be made, or a member and this client disagree
    /// on TLS: see [`TlsFailure`] for which. The request never reached etcd (other members are
    /// tried).
    #[error("TLS failure with {endpoint}: {failure}: {reason}")]
    Tls {
        /// The member's client URL.
        endpoint: String,
        /// What went wrong.
        failure: TlsFailure,
        /// The TLS library's own words.
        reason: String,
    },
    /// The member serves no v2 keys API: it answered a `/v2/keys` request with Go's plain
    /// `404 page not found` (etcd 3.6 and later, or 3.4/3.5 started without `--enable-v2`).
    /// The command fails at once, never retried elsewhere and never sent through another
    /// protocol instead: v2 and v3 are separate keyspaces, so two clients speaking different
    /// protocols would both "hold" one lock.
    #[error("etcd at {endpoint} serves no v2 keys API (etcd 3.6 and later, or 3.4/3.5 started without --enable-v2=true): use its v3 API (Protocol::V3), or start etcd with --enable-v2=true")]
    V2Unavailable {
        /// The member's client URL.
        endpoint: String,
    },
    /// etcd (or something in between) answered something this library cannot interpret:
    /// a non-JSON or truncated body, wrong field types, an oversized body, an unexpected status.
    #[error("malformed or unexpected response from etcd: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// No complete response arrived within the request timeout.
    #[error("no response from etcd within {after:?}")]
    Timeout {
        /// The request timeout that elapsed.
        after: Duration,
    },
    /// The lock key is not acceptable; see [`Key`](crate::Key).
    #[error("invalid lock key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The node id is not acceptable; see [`NodeId`](crate::NodeId).
    #[error("invalid node id {node_id:?}: {reason}")]
    InvalidNodeId {
        /// The node id as given.
        node_id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The TTL is not acceptable; see [`ttl_seconds`](crate::ttl_seconds).
    #[error("invalid TTL {ttl:?}: {reason}")]
    InvalidTtl {
        /// The TTL as given.
        ttl: Duration,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An etcd endpoint URL is not acceptable; see [`Endpoint`](crate::Endpoint).
    #[error("invalid etcd endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The URL as given.
        endpoint: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A client option is not acceptable: an unreadable or malformed certificate or key file,
    /// a key that does not match its certificate, TLS options with only `http://` endpoints,
    /// a malformed environment variable...
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option (with the file it names) or the environment variable.
        option: String,
        /// Why it was rejected.
        reason: String,
    },
    /// etcd granted the lock (or the renewal), but the answer arrived after the lease's local
    /// validity deadline (e.g. this process was paused): it cannot be relied on. The key expires
    /// by itself.
    #[error("the answer came after the lease's validity deadline (token {token})")]
    LeaseExpired {
        /// The fencing token of the void hold.
        token: u64,
    },
    /// A waiting acquire did not get the lock before its deadline.
    #[error("lock not acquired within {waited:?}")]
    WaitTimeout {
        /// The time waited.
        waited: Duration,
    },
    /// The operation was cancelled (its future dropped) before it completed.
    #[error("the operation was cancelled")]
    Cancelled,
    /// The lock was destroyed before the operation completed.
    #[error("the lock client was destroyed")]
    Destroyed,
}
