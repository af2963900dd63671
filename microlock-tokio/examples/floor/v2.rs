//! The v2 floor: etcd's keys API from bare hyper.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::Connect;
use serde_json::Value;

use super::{exchange, Http, Result};

/// One request: `form` as `application/x-www-form-urlencoded` when not empty.
async fn send<C>(http: &Http<C>, method: Method, uri: &str, form: &str) -> Result<(u16, Bytes)>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let mut request = Request::builder().method(method).uri(uri);
    if !form.is_empty() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(form.as_bytes())))?;
    exchange(http, request).await
}

/// The uncontended cycle: `PUT {key_url}?prevExist=false` (value=`id`, ttl=`ttl`), which must
/// answer `201`, then `DELETE ?prevValue=id`, which must answer `200`.
pub async fn cycle<C>(http: &Http<C>, key_url: &str, id: &str, ttl: u64) -> Result<()>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let uri = format!("{key_url}?prevExist=false");
    let (status, body) = send(http, Method::PUT, &uri, &format!("value={id}&ttl={ttl}")).await?;
    if status != 201 {
        return Err(format!("PUT: HTTP {status}: {body:?}").into());
    }
    let uri = format!("{key_url}?prevValue={id}");
    let (status, body) = send(http, Method::DELETE, &uri, "").await?;
    if status != 200 {
        return Err(format!("DELETE: HTTP {status}: {body:?}").into());
    }
    Ok(())
}

/// The fewest requests a waiting lock on etcd v2 can make: `PUT ?prevExist=false`
/// (value=`id`, ttl=`ttl`); on `412`, a long poll `GET ?wait=true&waitIndex=<the error's
/// index + 1>` until a release (`delete`, `compareAndDelete` or `expire`), then the `PUT`
/// again; `DELETE ?prevValue=id` releases.
pub struct WaitingLock<C> {
    pub http: Http<C>,
    /// `{url}/v2/keys/{key}`.
    pub key_url: String,
    pub id: String,
    pub ttl: u64,
}

impl<C: Connect + Clone + Send + Sync + 'static> WaitingLock<C> {
    pub async fn acquire(&self) -> Result<()> {
        let form = format!("value={}&ttl={}", self.id, self.ttl);
        let create = format!("{}?prevExist=false", self.key_url);
        loop {
            let (status, body) = send(&self.http, Method::PUT, &create, &form).await?;
            match status {
                201 => return Ok(()),
                412 => {}
                _ => return Err(format!("PUT: HTTP {status}: {body:?}").into()),
            }
            let error: Value = serde_json::from_slice(&body)?;
            let mut wait = error["index"].as_u64().ok_or("412 without an index")? + 1;
            loop {
                let uri = format!("{}?wait=true&waitIndex={wait}", self.key_url);
                let (status, body) = send(&self.http, Method::GET, &uri, "").await?;
                if status != 200 {
                    break; // e.g. 400 "event index cleared": try the create again
                }
                let event: Value = serde_json::from_slice(&body)?;
                match event["action"].as_str() {
                    Some("delete" | "compareAndDelete" | "expire") => break,
                    _ => {
                        let index = event["node"]["modifiedIndex"].as_u64();
                        wait = index.ok_or("an event without an index")? + 1;
                    }
                }
            }
        }
    }

    pub async fn release(&self) -> Result<()> {
        let uri = format!("{}?prevValue={}", self.key_url, self.id);
        let (status, body) = send(&self.http, Method::DELETE, &uri, "").await?;
        if status != 200 {
            return Err(format!("DELETE: HTTP {status}: {body:?}").into());
        }
        Ok(())
    }
}
