//! Test support for microlock: real etcd processes ([`etcd`]), raw inspection of what is
//! stored ([`inspect`]), and the conformance suite every adapter must pass
//! ([`conformance_suite!`]).
#![forbid(unsafe_code)]
#![allow(missing_docs)]

pub mod auth;
pub mod chaos;
pub mod cli;
pub mod cut_proxy;
pub mod etcd;
pub mod etcdctl;
pub mod fenced;
pub mod inspect;
pub mod node;
pub mod proxy;
pub mod rt;
pub mod tls;
pub mod v3http;

mod conformance;
mod secured;
