//! The store behind a [`SimCluster`](super::SimCluster), per protocol: the v2 keys API
//! ([`SimEtcd`]) or the v3 JSON gateway ([`SimEtcdV3`](crate::sim::etcd_v3::SimEtcdV3), with
//! its watch streams). Everything the cluster asks of a store is here, so that the faults,
//! quorum, proposals and network of the cluster are one piece of code for both:
//!
//! - what a request is ([`Class`](crate::sim::etcd::Class)): a raft proposal (writes,
//!   linearizable reads, v3 lease calls), a plain read, a watch, or something the HTTP layer
//!   answers;
//! - serving it now, or saying it needs raft while there is no quorum;
//! - watches: v2 long polls answered whole when an event comes, v3 streams that answer a head
//!   at once and one piece per message, as long as they last;
//! - etcd's error answers in each dialect: a proposal's timeout, a member without a leader
//!   (v3's `hasleader`), a member ending its watches;
//! - time: expiry (v2 TTLs, v3 leases), the pause without quorum, a new leader's lessor.

use std::time::{Duration, Instant};

use http::{Request, Response};

use super::v3::V3Store;
use super::Delivery;
use crate::sim::etcd::{raft_timeout_response, Class, EventStamp, ServeOpts, Served, SimEtcd};

/// The shared store of a cluster.
#[derive(Debug)]
pub(super) enum Backend {
    V2(SimEtcd),
    V3(V3Store),
}

/// What serving a request did.
#[derive(Debug)]
pub(super) enum Answer {
    /// Answered whole (through raft: `Some`, the entry the answer waits for).
    Now(Response<Vec<u8>>, Option<EventStamp>),
    /// A v2 watch parked until an event.
    Parked,
    /// A v3 stream opened: its head now, its pieces from `poll_watch_event`.
    Opened(http::response::Parts),
    /// Needs raft, which has no quorum now ([`ServeOpts::defer_raft`]).
    Raft,
}

impl Backend {
    /// What `req` asks for.
    pub(super) fn classify(&self, req: &Request<Vec<u8>>) -> Class {
        match self {
            Backend::V2(store) => store.classify(req),
            Backend::V3(_) => super::v3::classify(req),
        }
    }

    pub(super) fn serve(
        &mut self,
        id: u64,
        req: &Request<Vec<u8>>,
        at: Instant,
        opts: ServeOpts,
    ) -> Answer {
        match self {
            Backend::V2(store) => match store.serve_with(id, req, at, opts) {
                Served::Now(response, stamp) => Answer::Now(response, stamp),
                Served::Parked => Answer::Parked,
                Served::Raft => Answer::Raft,
            },
            Backend::V3(store) => store.serve(id, req, at, opts.defer_raft),
        }
    }

    /// Whether the last request served was a v2 watch answered at once from the history.
    pub(super) fn answered_watch(&self) -> bool {
        match self {
            Backend::V2(store) => store.answered_watch(),
            Backend::V3(_) => false,
        }
    }

    /// The next completed v2 watch or v3 stream piece, with the entry it depends on.
    pub(super) fn poll_watch_event(&mut self) -> Option<(u64, Delivery, EventStamp)> {
        match self {
            Backend::V2(store) => store
                .poll_watch_event()
                .map(|(id, r, stamp)| (id, Delivery::Response(r), stamp)),
            Backend::V3(store) => store.poll(),
        }
    }

    /// The client gave up on request `id`.
    pub(super) fn cancel(&mut self, id: u64) {
        match self {
            Backend::V2(store) => store.cancel(id),
            Backend::V3(store) => store.close(id),
        }
    }

    /// A member shutting down ends watch `id`: what its client then receives (`None`: no such
    /// watch).
    pub(super) fn close_watch(&mut self, id: u64) -> Option<Vec<Delivery>> {
        match self {
            Backend::V2(store) => store.close_watch(id).map(|r| vec![Delivery::Response(r)]),
            Backend::V3(store) => store.shut_down(id),
        }
    }

    /// A member without a leader ends stream `id` (v3; `None` for anything else).
    pub(super) fn end_stream_no_leader(&mut self, id: u64) -> Option<Vec<Delivery>> {
        match self {
            Backend::V2(_) => None,
            Backend::V3(store) => store.no_leader_end(id),
        }
    }

    /// The answer of a member that knows no leader, if `req` asks for one (v3: it carries
    /// `hasleader`).
    pub(super) fn no_leader_response(&self, req: &Request<Vec<u8>>) -> Option<Response<Vec<u8>>> {
        match self {
            Backend::V2(_) => None,
            Backend::V3(store) => store.no_leader_response(req),
        }
    }

    /// etcd's answer to proposal `req` not applied within the raft timeout, with `cause`.
    pub(super) fn timeout_response(
        &self,
        req: &Request<Vec<u8>>,
        cause: &str,
    ) -> Response<Vec<u8>> {
        match self {
            Backend::V2(_) => raft_timeout_response(cause),
            Backend::V3(store) => store.timeout_response(req, cause),
        }
    }

    /// The v2 index or the v3 revision.
    pub(super) fn index(&self) -> u64 {
        match self {
            Backend::V2(store) => store.index(),
            Backend::V3(store) => store.etcd().revision().max(0) as u64,
        }
    }

    /// The v2 index at time `at` (v3: the current revision; unused).
    pub(super) fn index_at(&self, at: Instant) -> u64 {
        match self {
            Backend::V2(store) => store.index_at(at),
            Backend::V3(_) => self.index(),
        }
    }

    pub(super) fn advance(&mut self, at: Instant) {
        match self {
            Backend::V2(store) => store.advance(at),
            Backend::V3(store) => store.advance(at),
        }
    }

    pub(super) fn next_expiry(&self) -> Option<Instant> {
        match self {
            Backend::V2(store) => store.next_expiry(),
            Backend::V3(store) => store.next_expiry(),
        }
    }

    pub(super) fn set_paused(&mut self, no_quorum: bool) {
        match self {
            Backend::V2(store) => store.set_paused(no_quorum),
            Backend::V3(store) => store.set_paused(no_quorum),
        }
    }

    /// A restarted member publishes its attributes (v2: a hidden event; v3: nothing seen).
    pub(super) fn hidden_event(&mut self, at: Instant) {
        if let Backend::V2(store) = self {
            store.hidden_event(at);
        }
    }

    /// A new term's leader has applied its first entry (v3: its lessor promotes every lease,
    /// `election` being the extension).
    pub(super) fn leader_changed(&mut self, at: Instant, election: Duration) {
        if let Backend::V3(store) = self {
            store.promote(at, election);
        }
    }
}
