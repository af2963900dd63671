//! The floors of `make bench`: the least a client with nothing but hyper's pooled keep-alive
//! client can send to etcd for what a microlock operation does. `bench.rs` times the
//! uncontended cycle against them, `handoff.rs` a waiting lock; `report.rs` names them
//! "bare hyper".
//!
//! - [`v2`]: the keys API (`PUT ?prevExist=false`, a long poll, `DELETE ?prevValue`);
//! - [`v3`]: the JSON gateway, Go `concurrency.Mutex`'s recipe (a txn putting the key under a
//!   lease if absent, a watch on the key just ahead, a delete), with the bodies microlock sends.
//!
//! Not an example of its own (a directory without `main.rs`): `mod floor;` in each.

pub mod v2;
pub mod v3;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// hyper's pooled client over any connector (plain TCP, or rustls for mutual TLS).
pub type Http<C> = Client<C, Full<Bytes>>;

/// Sends a request, reads the whole body.
pub async fn exchange<C>(http: &Http<C>, request: Request<Full<Bytes>>) -> Result<(u16, Bytes)>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let response = http.request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}
