//! What the unit tests of the model share: requests as a client writes them, and a store
//! driven at times given in milliseconds since its start. Test code only: `mod.rs` declares it
//! under #[cfg(test)].

use std::time::{Duration, Instant};

use http::{Request, Response};

use super::{Reply, SimEtcd};

pub(super) const FORM: &str = "application/x-www-form-urlencoded";

pub(super) fn req(method: &str, path_and_query: &str, body: Option<&str>) -> Request<Vec<u8>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:2379{path_and_query}"));
    if body.is_some() {
        b = b.header("content-type", FORM);
    }
    b.body(body.unwrap_or("").as_bytes().to_vec()).unwrap()
}

pub(super) struct T {
    pub(super) etcd: SimEtcd,
    pub(super) t0: Instant,
    next_id: u64,
}

impl T {
    pub(super) fn new() -> T {
        let t0 = Instant::now();
        T {
            etcd: SimEtcd::new(t0),
            t0,
            next_id: 0,
        }
    }
    pub(super) fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    pub(super) fn send(&mut self, ms: u64, r: Request<Vec<u8>>) -> Reply {
        self.next_id += 1;
        let now = self.at(ms);
        self.etcd.handle(self.next_id, &r, now)
    }
    pub(super) fn now(
        &mut self,
        ms: u64,
        method: &str,
        pq: &str,
        body: Option<&str>,
    ) -> Response<Vec<u8>> {
        match self.send(ms, req(method, pq, body)) {
            Reply::Now(r) => r,
            Reply::Parked => panic!("{method} {pq} parked"),
        }
    }
    /// (status, X-Etcd-Index, body)
    pub(super) fn call(
        &mut self,
        ms: u64,
        method: &str,
        pq: &str,
        body: Option<&str>,
    ) -> (u16, String, String) {
        let r = self.now(ms, method, pq, body);
        text(&r)
    }
}

pub(super) fn text(r: &Response<Vec<u8>>) -> (u16, String, String) {
    (
        r.status().as_u16(),
        r.headers()
            .get("x-etcd-index")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        String::from_utf8(r.body().clone()).unwrap(),
    )
}
