//! Deterministic simulation support (feature `sim`): an in-memory etcd v2 model that answers
//! the machine's requests as real etcd does ([`etcd`]), and a seeded world of clients,
//! network faults, clock drift, pauses and crashes with safety checkers ([`dst`]).

pub mod dst;
pub mod etcd;
