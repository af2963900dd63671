//! TTLs: the expiry times of nodes, kept in an ordered set, and the SYNC tick that expires the
//! nodes whose time has come (etcd's `DeleteExpiredKeys`), each as one `expire` event.

use super::json::{node_json, NodeJson};
use super::store::Ev;
use super::SimEtcd;

impl SimEtcd {
    pub(super) fn add_ttl(&mut self, path: &[u8], expire: i128) {
        self.ttl_seq += 1;
        let seq = self.ttl_seq;
        if let Some(n) = self.nodes.get_mut(path) {
            n.expire = Some(expire);
            n.ttl_seq = seq;
            self.ttl.insert((expire, seq, path.to_vec()));
        }
    }

    pub(super) fn remove_ttl(&mut self, path: &[u8]) {
        if let Some(n) = self.nodes.get_mut(path) {
            if let Some(expire) = n.expire.take() {
                self.ttl.remove(&(expire, n.ttl_seq, path.to_vec()));
            }
        }
    }

    /// etcd's `node.UpdateTTL`: no expiry time makes the node permanent.
    pub(super) fn update_ttl(&mut self, path: &[u8], expire: Option<i128>) {
        self.remove_ttl(path);
        if let Some(expire) = expire {
            self.add_ttl(path, expire);
        }
    }

    /// etcd's `store.DeleteExpiredKeys(cutoff)`, run at tick time `tick` (ns since start).
    pub(super) fn expire_at(&mut self, tick: i128) {
        let saved = self.op_time;
        self.op_time = tick;
        while let Some((deadline, _, path)) = self.ttl.first().cloned() {
            if deadline > tick {
                break;
            }
            if !self.nodes.contains_key(&path) {
                // Cannot happen (removals keep the set in step); never loop on it.
                self.ttl.pop_first();
                continue;
            }
            self.index += 1;
            let index = self.index;
            let is_dir = self.is_dir(&path);
            let (_, _, _, created) = self.info(&path);
            let prev = self.repr(&path, tick);
            let node = node_json(&NodeJson {
                key: &path,
                value: None,
                dir: is_dir,
                expire: None,
                now: tick,
                nodes: None,
                modified: index,
                created,
            });
            let removed = self.remove_subtree(&path);
            let ev = Ev {
                action: "expire",
                key: path,
                index,
                etcd_index: index,
                node,
                prev: Some(prev),
                deleted_dir: is_dir,
            };
            self.commit(ev, false, &removed);
        }
        self.op_time = saved;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::sim::etcd::test_util::{req, T};
    use crate::sim::etcd::SimEtcd;

    #[test]
    fn ttl_zero_lives_until_the_next_tick() {
        let mut t = T::new();
        let (s, _, b) = t.call(700, "PUT", "/v2/keys/z", Some("value=x&ttl=0"));
        assert_eq!(s, 201);
        assert_eq!(b, "{\"action\":\"set\",\"node\":{\"key\":\"/z\",\"value\":\"x\",\"expiration\":\"2020-01-01T00:00:00.7Z\",\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        assert_eq!(t.call(999, "GET", "/v2/keys/z", None).0, 200);
        assert_eq!(t.etcd.next_expiry(), Some(t.at(1000)));
        assert_eq!(t.call(1000, "GET", "/v2/keys/z", None).0, 404);
        assert_eq!(t.etcd.index(), 5);
    }

    #[test]
    fn expiry_on_sync_ticks() {
        let mut t = T::new();
        t.call(200, "PUT", "/v2/keys/k", Some("value=x&ttl=1")); // deadline 1.2 s
        assert_eq!(t.etcd.next_expiry(), Some(t.at(1500)));
        t.etcd.advance(t.at(1499));
        assert!(t.etcd.get("/k").is_some());
        // ttl while late: 0 is omitted
        let (_, _, b) = t.call(1400, "GET", "/v2/keys/k", None);
        assert!(!b.contains("\"ttl\""), "{b}");
        t.etcd.advance(t.at(1500));
        assert!(t.etcd.get("/k").is_none());
        assert_eq!(t.etcd.next_expiry(), None);
        // the expire event is in the history
        let (s, i, b) = t.call(1600, "GET", "/v2/keys/k?wait=true&waitIndex=5", None);
        assert_eq!((s, i.as_str()), (200, "5"));
        assert_eq!(b, "{\"action\":\"expire\",\"node\":{\"key\":\"/k\",\"modifiedIndex\":5,\"createdIndex\":4},\"prevNode\":{\"key\":\"/k\",\"value\":\"x\",\"expiration\":\"2020-01-01T00:00:01.2Z\",\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        // custom interval
        let mut e = SimEtcd::new(t.t0).with_sync_interval(Duration::from_millis(100));
        e.handle(
            1,
            &req("PUT", "/v2/keys/k", Some("value=x&ttl=1")),
            t.at(250),
        );
        assert_eq!(e.next_expiry(), Some(t.at(1300)));
        assert_eq!(e.sync_interval(), Duration::from_millis(100));
    }

    #[test]
    fn ttl_rounds_up_and_goes_negative() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/k", Some("value=x&ttl=5"));
        let (_, _, b) = t.call(100, "GET", "/v2/keys/k", None);
        assert!(b.contains("\"ttl\":5,"), "{b}");
        let (_, _, b) = t.call(1000, "GET", "/v2/keys/k", None);
        assert!(b.contains("\"ttl\":4,"), "{b}");
        t.etcd.advance(t.at(1000));
        t.etcd.set_paused(true);
        let (_, _, b) = t.call(7200, "GET", "/v2/keys/k", None);
        assert!(b.contains("\"ttl\":-2,"), "{b}");
    }

    #[test]
    fn ttl_removed_by_write_without_ttl() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/k", Some("value=a&ttl=1"));
        t.call(0, "PUT", "/v2/keys/k?prevValue=a", Some("value=b"));
        assert_eq!(t.etcd.next_expiry(), None);
        t.etcd.advance(t.at(10_000));
        assert_eq!(t.etcd.get("k").unwrap().0, "b");
    }
}
