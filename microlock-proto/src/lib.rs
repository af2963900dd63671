//! # microlock-proto
//!
//! The sans-IO core of microlock, a dead simple distributed lock on etcd's v2 keys API,
//! compatible with [microlock for Node.js](https://www.npmjs.com/package/microlock): same key,
//! same value (the node id), same TTL semantics, so processes in both languages can share one
//! lock.
//!
//! This crate is a pure state machine ([`Lock`]). It produces [`http::Request`] values,
//! consumes [`http::Response`] values, and takes time as an argument: no sockets, no async
//! runtime, no clock, no threads, no randomness. Runtime adapters (`microlock-tokio`,
//! `microlock-async-std`) are thin drivers around it; so can your own runtime, simulator or
//! fuzzer be.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use microlock_proto::{Config, Error, Lock};
//!
//! fn try_lock(t0: Instant) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut lock = Lock::new(Config::new("foo", "node-1", Duration::from_secs(5))?);
//!     lock.lock(t0);
//!     let (id, _request) = lock.poll_request().unwrap();
//!     // ... etcd says the key exists:
//!     let body = br#"{"errorCode":105,"message":"Key already exists","cause":"/foo","index":12}"#;
//!     let response = http::Response::builder().status(412).body(body.to_vec())?;
//!     lock.handle_response(id, response, t0);
//!     let done = lock.poll_completion().unwrap();
//!     assert!(matches!(done.result, Err(Error::AlreadyLocked { index: 12, .. })));
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod config;
pub mod driver;
mod encode;
mod error;
mod event;
mod incoming;
mod liveness;
mod lock;
mod members;
pub mod observe;
mod op;
mod rng;
mod settings;
pub mod tls;
mod token;
mod watch;
mod wire;

#[cfg(feature = "sim")]
pub mod sim;

pub use auth::{AuthFailure, Credentials};
pub use config::{
    ttl_seconds, Config, Endpoint, Key, NodeId, Protocol, MAX_KEY_BYTES, MAX_NODE_ID_BYTES, MAX_TTL,
};
pub use error::Error;
pub use event::{Completion, Event, Fence, Holder, LostReason, OpId, Outcome};
pub use lock::{Lock, RequestId};
pub use members::Members;
pub use settings::{Builder, FromSettings, Settings};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
pub use tls::TlsFailure;
pub use wire::{LongPoll, Streamed, MAX_RESPONSE_BYTES, RESPONSE_HEADERS};

/// Re-exported so users build and read requests with the same `http` version.
pub use http;
