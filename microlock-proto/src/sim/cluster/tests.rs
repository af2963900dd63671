//! Scenario tests of the cluster serving etcd's v2 keys API.
//! Test code only: `mod.rs` declares it under #[cfg(test)].

use super::*;
use crate::sim::etcd::initial_index;

const FORM: &str = "application/x-www-form-urlencoded";

struct T {
    c: SimCluster,
    t0: Instant,
    next: u64,
    done: BTreeMap<u64, Delivery>,
}

impl T {
    fn new(members: usize, seed: u64) -> T {
        let t0 = Instant::now();
        T {
            c: SimCluster::new(t0, ClusterConfig::new(members, seed)),
            t0,
            next: 0,
            done: BTreeMap::new(),
        }
    }
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    fn send(&mut self, ms: u64, m: usize, method: &str, pq: &str, body: Option<&str>) -> u64 {
        self.next += 1;
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://m{m}:2379{pq}"));
        if body.is_some() {
            b = b.header("content-type", FORM);
        }
        let r = b.body(body.unwrap_or("").as_bytes().to_vec()).unwrap();
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
            assert!(self.done.insert(id, d).is_none(), "two answers to {id}");
        }
    }
    /// (status, X-Etcd-Index, body) of a response; panics on anything else.
    fn take(&mut self, id: u64) -> (u16, u64, String) {
        match self.done.remove(&id) {
            Some(Delivery::Response(r)) => (
                r.status().as_u16(),
                r.headers()
                    .get("x-etcd-index")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
                String::from_utf8(r.body().clone()).unwrap(),
            ),
            other => panic!("request {id}: {other:?}"),
        }
    }
    fn pending(&self, id: u64) -> bool {
        !self.done.contains_key(&id)
    }
}

#[test]
fn routes_by_authority_and_refuses_dead_or_unknown_members() {
    let mut t = T::new(3, 1);
    assert_eq!(t.c.store_v2().unwrap().index(), initial_index(3));
    let a = t.send(0, 1, "PUT", "/v2/keys/k?prevExist=false", Some("value=a"));
    assert_eq!(t.take(a).0, 201);
    // Every member serves the same store: a quorum read on another member sees the write.
    let r = t.send(1, 2, "GET", "/v2/keys/k?quorum=true", None);
    assert!(t.take(r).2.contains("\"value\":\"a\""));
    t.c.kill(0, t.at(2));
    let r = t.send(3, 0, "GET", "/v2/keys/k?quorum=true", None);
    assert!(matches!(t.done.remove(&r), Some(Delivery::Refused)));
    let r = t.send(3, 7, "GET", "/v2/keys/k?quorum=true", None);
    assert!(matches!(t.done.remove(&r), Some(Delivery::Refused)));
    // A restarted member serves the same store.
    t.c.restart(0, t.at(4));
    let r = t.send(5, 0, "GET", "/v2/keys/k?quorum=true", None);
    assert!(t.take(r).2.contains("\"value\":\"a\""));
}

#[test]
fn a_dead_member_cuts_its_watches_and_a_watch_sees_writes_through_others() {
    let mut t = T::new(3, 2);
    let i = t.c.store_v2().unwrap().index();
    let leader = t.c.leader().unwrap();
    let (dies, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let w0 = t.send(
        0,
        dies,
        "GET",
        &format!("/v2/keys/k?wait=true&waitIndex={}", i + 1),
        None,
    );
    let w1 = t.send(
        0,
        other,
        "GET",
        &format!("/v2/keys/k?wait=true&waitIndex={}", i + 1),
        None,
    );
    assert!(t.pending(w0) && t.pending(w1));
    t.c.kill(dies, t.at(10));
    t.collect();
    assert!(matches!(t.done.remove(&w0), Some(Delivery::Reset)));
    let p = t.send(20, leader, "PUT", "/v2/keys/k", Some("value=b"));
    assert_eq!(t.take(p).0, 201);
    let (status, _, body) = t.take(w1);
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"action\":\"set\""));
}

#[test]
fn a_hung_member_answers_nothing_then_serves_what_it_kept() {
    let mut t = T::new(3, 3);
    // Hang a follower (the leader's hang would stall writes for an election).
    let follower = (0..3).find(|&m| Some(m) != t.c.leader()).unwrap();
    t.c.hang(follower, t.at(0));
    assert!(t.c.has_quorum());
    let w = t.send(
        10,
        follower,
        "PUT",
        "/v2/keys/k?prevExist=false",
        Some("value=late&ttl=5"),
    );
    let r = t.send(10, follower, "GET", "/v2/keys/k?quorum=true", None);
    t.advance(5_000);
    assert!(t.pending(w) && t.pending(r));
    assert_eq!(t.c.store_v2().unwrap().get("k"), None);
    // Meanwhile another member's client takes the key; the late write then fails.
    let other = (0..3).find(|&m| m != follower).unwrap();
    let a = t.send(
        6_000,
        other,
        "PUT",
        "/v2/keys/k?prevExist=false",
        Some("value=a&ttl=5"),
    );
    assert_eq!(t.take(a).0, 201);
    t.c.resume(follower, t.at(7_000));
    t.collect();
    assert_eq!(t.take(w).0, 412);
    assert!(t.take(r).2.contains("\"value\":\"a\""));

    // A late write applies when the member resumes, its ttl counting from then.
    let mut t = T::new(3, 3);
    t.c.hang(follower, t.at(0));
    let w = t.send(
        10,
        follower,
        "PUT",
        "/v2/keys/k?prevExist=false",
        Some("value=late&ttl=5"),
    );
    t.c.cancel(w); // the client gives up: a write is still applied (or not: seeded)
    t.c.resume(follower, t.at(9_000));
    t.collect();
    assert!(t.done.is_empty());
}

#[test]
fn a_lagging_member_delivers_late_in_order_and_reads_stale() {
    let mut t = T::new(3, 4);
    let lagging = 1;
    let before = t.c.store_v2().unwrap().index();
    t.c.set_lag(lagging, Some(Duration::from_millis(800)), t.at(0));
    let w = t.send(
        0,
        lagging,
        "GET",
        &format!("/v2/keys/k?wait=true&waitIndex={}", before + 1),
        None,
    );
    let p = t.send(100, 0, "PUT", "/v2/keys/k", Some("value=1"));
    assert_eq!(t.take(p).0, 201);
    // The event is in the store, the lagging member has not applied it yet.
    let stale = t.send(200, lagging, "GET", "/v2/keys/k", None);
    assert_eq!(t.take(stale).0, 404);
    t.advance(850);
    assert!(t.pending(w));
    assert_eq!(t.c.next_wakeup(), Some(t.at(900)));
    t.advance(900);
    let (status, index, body) = t.take(w);
    assert_eq!((status, index), (200, before));
    assert!(body.contains("\"value\":\"1\""));
    // A write through the lagging member is applied now, answered once it applied it.
    let q = t.send(1_000, lagging, "PUT", "/v2/keys/k", Some("value=2"));
    assert!(t.pending(q));
    assert_eq!(t.c.store_v2().unwrap().get("k").unwrap().0, "2");
    t.advance(1_800);
    assert_eq!(t.take(q).0, 200);
    // Catching up releases everything at once.
    let r = t.send(2_000, lagging, "PUT", "/v2/keys/k", Some("value=3"));
    t.c.set_lag(lagging, None, t.at(2_100));
    t.collect();
    assert_eq!(t.take(r).0, 200);
    let fresh = t.send(2_200, lagging, "GET", "/v2/keys/k", None);
    assert!(t.take(fresh).2.contains("\"value\":\"3\""));
}

#[test]
fn an_isolated_member_times_out_proposals_and_goes_silent() {
    let mut t = T::new(3, 5);
    let isolated = (0..3).find(|&m| Some(m) != t.c.leader()).unwrap();
    let i = t.c.store_v2().unwrap().index();
    let w = t.send(
        0,
        isolated,
        "GET",
        &format!("/v2/keys/k?wait=true&waitIndex={}", i + 1),
        None,
    );
    t.c.isolate(isolated, t.at(0));
    assert!(t.c.has_quorum());
    let p = t.send(10, isolated, "PUT", "/v2/keys/k", Some("value=x"));
    let q = t.send(10, isolated, "GET", "/v2/keys/k?quorum=true", None);
    let other = (0..3).find(|&m| m != isolated).unwrap();
    let a = t.send(20, other, "PUT", "/v2/keys/k", Some("value=a"));
    assert_eq!(t.take(a).0, 201);
    let stale = t.send(30, isolated, "GET", "/v2/keys/k", None);
    assert_eq!(t.take(stale).0, 404);
    t.advance(7_009);
    assert!(t.pending(p) && t.pending(w));
    t.advance(7_010);
    for id in [p, q] {
        let (status, _, body) = t.take(id);
        assert_eq!(status, 500);
        assert_eq!(body, "{\"errorCode\":300,\"message\":\"Raft Internal Error\",\"cause\":\"etcdserver: request timed out, possibly due to connection lost\",\"index\":0}\n");
    }
    assert!(t.pending(w), "the watch is silent while cut off");
    t.c.rejoin(isolated, t.at(8_000));
    t.collect();
    assert!(t.take(w).2.contains("\"value\":\"a\""));
}

#[test]
fn leader_failure_stalls_writes_until_an_election() {
    let mut t = T::new(3, 6);
    let leader = t.c.leader().unwrap();
    let follower = (0..3).find(|&m| m != leader).unwrap();
    t.c.hang(leader, t.at(0));
    assert!(!t.c.has_quorum());
    let p = t.send(10, follower, "PUT", "/v2/keys/k", Some("value=x"));
    assert!(t.pending(p));
    let election = t.c.next_wakeup().unwrap();
    assert!(
        election >= t.at(1_000) && election <= t.at(2_000),
        "{election:?}"
    );
    t.c.advance(election);
    t.collect();
    assert!(t.c.has_quorum());
    assert_ne!(t.c.leader(), Some(leader));
    assert_eq!(t.c.elections(), 1);
    let q = t.send(2_100, follower, "PUT", "/v2/keys/j", Some("value=y"));
    assert_eq!(t.take(q).0, 201);
    // The proposal made without a leader: committed then, later, or never (seeded); its
    // client hears within the raft timeout either way.
    t.advance(7_010);
    let (status, _, body) = t.take(p);
    assert!(status == 201 || (status == 500 && body.contains("previous leader failure")));
}

#[test]
fn a_majority_down_loses_quorum_and_stops_expiry() {
    let mut t = T::new(3, 7);
    let a = t.send(
        0,
        0,
        "PUT",
        "/v2/keys/k?prevExist=false",
        Some("value=a&ttl=1"),
    );
    assert_eq!(t.take(a).0, 201);
    let leader = t.c.leader().unwrap();
    let followers: Vec<usize> = (0..3).filter(|&m| m != leader).collect();
    t.c.kill(followers[0], t.at(100));
    assert!(t.c.has_quorum());
    t.c.kill(followers[1], t.at(200));
    assert!(!t.c.has_quorum());
    t.advance(5_000);
    assert!(
        t.c.store_v2().unwrap().get("k").is_some(),
        "no expiry without quorum"
    );
    let r = t.send(5_000, leader, "GET", "/v2/keys/k", None);
    assert_eq!(t.take(r).0, 200, "plain reads are served");
    t.c.restart(followers[0], t.at(6_000));
    t.collect();
    assert!(
        t.c.has_quorum(),
        "the leader is still up: no election needed"
    );
    t.advance(6_500);
    assert!(t.c.store_v2().unwrap().get("k").is_none());
}

#[test]
fn a_single_member_cluster_elects_itself_after_a_restart() {
    let mut t = T::new(1, 8);
    assert_eq!(t.c.store_v2().unwrap().index(), 3);
    t.c.kill(0, t.at(0));
    assert!(!t.c.has_quorum());
    t.c.restart(0, t.at(100));
    assert!(!t.c.has_quorum());
    let p = t.send(100, 0, "PUT", "/v2/keys/k", Some("value=x"));
    assert!(t.pending(p));
    let elected = t.c.next_wakeup().unwrap();
    t.c.advance(elected);
    t.collect();
    assert!(t.c.has_quorum());
}

#[test]
fn late_commit_counts_the_ttl_from_arrival() {
    // Find a seed whose pending proposal commits at once when quorum is back.
    for seed in 0..50 {
        let mut t = T::new(1, seed);
        t.c.set_quorum_lost(true, t.at(0));
        let p = t.send(0, 0, "PUT", "/v2/keys/k", Some("value=x&ttl=2"));
        t.c.set_quorum_lost(false, t.at(1_500));
        t.collect();
        if t.pending(p) {
            continue;
        }
        assert_eq!(t.take(p).0, 201);
        // Received at 0 with ttl 2: expires at the 2 s tick, not 1.5 s + 2 s.
        t.advance(2_000);
        assert_eq!(t.c.store_v2().unwrap().get("k"), None);
        return;
    }
    panic!("no seed committed at once");
}

#[test]
fn same_seed_same_cluster() {
    let script = |seed: u64| {
        let mut t = T::new(3, seed);
        let mut out = Vec::new();
        t.c.set_quorum_lost(true, t.at(0));
        for i in 0..20 {
            t.send(
                i * 10,
                (i % 3) as usize,
                "PUT",
                "/v2/keys/k",
                Some("value=v&ttl=3"),
            );
        }
        t.c.set_quorum_lost(false, t.at(1_000));
        t.advance(20_000);
        while let Some(n) = t.c.poll_note() {
            out.push(format!("{n:?}"));
        }
        out.push(format!("{:?}", t.c.store_v2().unwrap().get("k")));
        out
    };
    assert_eq!(script(9), script(9));
}

#[test]
fn doc_example_runs() {
    fn demo(t0: Instant) {
        let mut cluster = SimCluster::new(t0, ClusterConfig::new(3, 7));
        let put = |member: &str| {
            http::Request::put(format!("http://{member}/v2/keys/lock?prevExist=false"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(b"value=a&ttl=5".to_vec())
                .unwrap()
        };
        let leader = cluster.leader().unwrap();
        let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
        // A dead member refuses connections; the other two keep a quorum.
        cluster.kill(a, t0);
        cluster.handle(1, &put(cluster.authority(a)), t0);
        assert!(matches!(cluster.poll(), Some((1, Delivery::Refused))));
        cluster.handle(2, &put(cluster.authority(leader)), t0);
        let Some((2, Delivery::Response(r))) = cluster.poll() else {
            panic!()
        };
        assert_eq!(r.status(), 201);
        // A hung member keeps the request; it is served when the member resumes.
        cluster.restart(a, t0);
        cluster.hang(b, t0);
        cluster.handle(3, &put(cluster.authority(b)), t0);
        assert!(cluster.poll().is_none());
        cluster.resume(b, t0 + Duration::from_secs(1));
        let Some((3, Delivery::Response(r))) = cluster.poll() else {
            panic!()
        };
        assert_eq!(r.status(), 412); // the key exists
    }
    demo(Instant::now());
}
