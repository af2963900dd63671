//! The cluster serving etcd's v3 gateway: streams through member faults, `hasleader`, the
//! lessor across leader changes.
//! Test code only: `mod.rs` declares it under #[cfg(test)].

use super::*;

struct T {
    c: SimCluster,
    t0: Instant,
    next: u64,
    got: BTreeMap<u64, Vec<Delivery>>,
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl T {
    fn new(members: usize, seed: u64) -> T {
        let t0 = Instant::now();
        let config = ClusterConfig::new(members, seed).with_protocol(Protocol::V3);
        T {
            c: SimCluster::new(t0, config),
            t0,
            next: 0,
            got: BTreeMap::new(),
        }
    }
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    fn send(&mut self, ms: u64, m: usize, path: &str, body: &str) -> u64 {
        self.next += 1;
        let r = Request::post(format!("http://m{m}:2379{path}"))
            .header("content-type", "application/json")
            .header("Grpc-Metadata-hasleader", "true")
            .body(body.as_bytes().to_vec())
            .unwrap();
        let now = self.at(ms);
        self.c.handle(self.next, &r, now);
        self.collect();
        self.next
    }
    fn advance(&mut self, ms: u64) {
        let now = self.at(ms);
        self.c.advance(now);
        self.collect();
    }
    fn collect(&mut self) {
        while let Some((id, d)) = self.c.poll() {
            self.got.entry(id).or_default().push(d);
        }
    }
    /// (status, body) of a whole response; panics on anything else.
    fn take(&mut self, id: u64) -> (u16, String) {
        let got = self.got.remove(&id).unwrap_or_default();
        match <[Delivery; 1]>::try_from(got) {
            Ok([Delivery::Response(r)]) => (
                r.status().as_u16(),
                String::from_utf8(r.body().clone()).unwrap(),
            ),
            other => panic!("request {id}: {other:?}"),
        }
    }
    /// What a stream delivered since the last look: its lines (text), and whether it ended
    /// (`Some(true)`: End, `Some(false)`: Reset).
    fn stream(&mut self, id: u64) -> (Vec<String>, Option<bool>) {
        let mut lines = Vec::new();
        let mut end = None;
        for d in self.got.remove(&id).unwrap_or_default() {
            match d {
                Delivery::Head(h) => assert_eq!(h.status, 200),
                Delivery::Chunk(c) => lines.push(String::from_utf8(c).unwrap()),
                Delivery::End => end = Some(true),
                Delivery::Reset => end = Some(false),
                other => panic!("stream {id}: {other:?}"),
            }
        }
        (lines, end)
    }
    fn put(&mut self, ms: u64, m: usize, key: &str, lease: Option<i64>) -> u64 {
        let lease = lease.map_or(String::new(), |l| format!(",\"lease\":\"{l}\""));
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"{lease}}}",
            b64(key),
            b64("v")
        );
        self.send(ms, m, "/v3/kv/put", &body)
    }
    fn watch(&mut self, ms: u64, m: usize, key: &str) -> u64 {
        let body = format!("{{\"create_request\":{{\"key\":\"{}\"}}}}", b64(key));
        self.send(ms, m, "/v3/watch", &body)
    }
    fn grant(&mut self, ms: u64, m: usize, ttl: u64) -> i64 {
        let id = self.send(ms, m, "/v3/lease/grant", &format!("{{\"TTL\":{ttl}}}"));
        let (status, body) = self.take(id);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["ID"].as_str().unwrap().parse().unwrap()
    }
}

#[test]
fn a_stream_delivers_through_its_member_late_when_it_lags_and_is_reset_when_it_dies() {
    let mut t = T::new(3, 1);
    let leader = t.c.leader().unwrap();
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    let w = t.watch(0, a, "k");
    let (lines, end) = t.stream(w);
    assert_eq!((lines.len(), end), (1, None));
    assert!(lines[0].contains("\"created\":true"));
    let p = t.put(10, b, "k", None);
    assert_eq!(t.take(p).0, 200);
    let (lines, _) = t.stream(w);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with("}}\n") && lines[0].contains(&b64("k")));
    // Lagging: the next message waits for the member's apply.
    t.c.set_lag(a, Some(Duration::from_millis(500)), t.at(100));
    t.put(200, b, "k", None);
    t.advance(650);
    assert!(t.stream(w).0.is_empty());
    t.advance(700);
    assert_eq!(t.stream(w).0.len(), 1);
    t.c.kill(a, t.at(800));
    t.collect();
    assert_eq!(t.stream(w), (vec![], Some(false)));
    assert_eq!(t.c.held_by(a), 0);
}

#[test]
fn a_member_without_a_leader_refuses_hasleader_requests_and_ends_its_streams() {
    let mut t = T::new(3, 2);
    let leader = t.c.leader().unwrap();
    let cut = (leader + 1) % 3;
    let w = t.watch(0, cut, "k");
    t.stream(w);
    t.c.isolate(cut, t.at(1_000));
    // For one election timeout it still believes in its leader: a write waits.
    let p = t.put(1_500, cut, "k", None);
    assert!(!t.got.contains_key(&p));
    // Then it knows none: refused at once, the request not applied.
    let q = t.put(2_100, cut, "k", None);
    let (status, body) = t.take(q);
    assert_eq!(status, 503);
    assert!(body.contains("etcdserver: no leader"), "{body}");
    // Its stream ends 4–5 election timeouts after the cut, with the stream error.
    t.advance(4_999);
    assert_eq!(t.stream(w), (vec![], None));
    t.advance(6_000);
    let (lines, end) = t.stream(w);
    assert_eq!(end, Some(true));
    assert_eq!(
        lines,
        vec!["{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\",\"http_status\":\"Service Unavailable\"}}"]
    );
    // The pending write times out after the raft timeout (a txn would say "request timed
    // out"; a put says what the gateway says).
    t.advance(8_501);
    let (status, body) = t.take(p);
    assert_eq!(status, 500);
    assert!(body.contains("context deadline exceeded"), "{body}");
    t.c.rejoin(cut, t.at(9_000));
    let r = t.put(9_000, cut, "j", None);
    assert_eq!(t.take(r).0, 200);
}

#[test]
fn a_clean_shutdown_ends_streams_with_etcds_error_and_a_cut_resets_them() {
    let mut t = T::new(1, 3);
    let w = t.watch(0, 0, "k");
    let x = t.watch(0, 0, "k");
    t.stream(w);
    t.stream(x);
    t.c.close_watches(0, false, t.at(10));
    t.collect();
    let (lines, end) = t.stream(w);
    assert_eq!(end, Some(true));
    assert!(lines[0].contains("\"grpc_code\":14"), "{lines:?}");
    let y = t.watch(20, 0, "k");
    t.stream(y);
    t.c.close_watches(0, true, t.at(30));
    t.collect();
    assert_eq!(t.stream(y), (vec![], Some(false)));
}

#[test]
fn leases_expire_only_with_quorum_and_are_promoted_by_a_new_term() {
    let mut t = T::new(3, 4);
    let leader = t.c.leader().unwrap();
    let lease = t.grant(0, leader, 2);
    let p = t.put(0, leader, "k", Some(lease));
    assert_eq!(t.take(p).0, 200);
    // The leader hangs before the lease's deadline: no expiry until a new leader, which
    // promotes the lease to a whole TTL + an election timeout from its election.
    t.c.hang(leader, t.at(1_000));
    t.advance(2_600);
    assert!(t.c.store_v3().unwrap().get(b"k").is_some());
    let elected = t.c.next_wakeup().unwrap();
    t.c.advance(elected);
    assert!(t.c.has_quorum());
    let e = elected.duration_since(t.t0).as_millis() as u64;
    t.advance(e + 2_900);
    assert!(t.c.store_v3().unwrap().get(b"k").is_some());
    t.advance(e + 3_600);
    assert!(t.c.store_v3().unwrap().get(b"k").is_none());
}
