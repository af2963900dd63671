//! Deterministic simulation support (feature `sim`):
//!
//! - [`etcd`]: an in-memory etcd v2 store that answers the machine's requests as real etcd does,
//!   byte for byte ([`etcd::SimEtcd`]);
//! - [`etcd_v3`]: the same for etcd's v3 JSON gateway (`/v3/kv/...`, leases, watch streams)
//!   ([`etcd_v3::SimEtcdV3`]);
//! - [`cluster`]: a cluster of N members sharing either store, with the faults of single
//!   members — death, hangs, restarts, lag, members cut off from their peers — and the loss of
//!   quorum that follows from a majority failing ([`cluster::SimCluster`]);
//! - [`dst`]: a seeded world of lock clients on such a cluster (v2 or v3, by the seed), with
//!   network faults, clock drift, pauses and crashes, and safety and liveness checkers
//!   ([`dst::run`]); a replayed world's trace also holds the machines' `tracing` events at
//!   their virtual time.
//!
//! All three are pure: time is an argument, randomness comes from a seed, and the same calls
//! give the same answers (and the same trace) in every process.

pub mod cluster;
pub mod dst;
pub mod etcd;
pub mod etcd_v3;
mod logs;
