//! Watches (etcd's `EventHistory` and `watcherHub`): the history of the last
//! [`HISTORY_CAPACITY`] events, a watch answered at once from it or parked, and the parked
//! watches that each new event completes.

use std::sync::Arc;

use super::clock::duration_from_nanos;
use super::error::{EtcdError, E_EVENT_INDEX_CLEARED};
use super::net_http::json_response;
use super::store::{ext, join, Ev};
use super::url::path_clean;
use super::{EventStamp, Served, SimEtcd, HISTORY_CAPACITY};

#[derive(Debug, Clone)]
pub(super) struct HistEvent {
    pub(super) index: u64,
    /// When it was applied (ns since `start`).
    pub(super) time: i128,
    pub(super) key: Vec<u8>,
    pub(super) refresh: bool,
    /// One of the invisible bootstrap events of a fresh member.
    pub(super) bootstrap: bool,
    /// For `delete`/`expire` of a directory: its path (etcd's `PrevNode.Dir` scan rule).
    pub(super) deleted_dir: Option<Vec<u8>>,
    /// The event as etcd encodes it, trailing newline included (shared: replicas of the
    /// store share their history).
    pub(super) body: Arc<[u8]>,
}

#[derive(Debug, Clone)]
pub(super) struct Watcher {
    pub(super) id: u64,
    pub(super) seq: u64,
    pub(super) recursive: bool,
    pub(super) since: u64,
    pub(super) start_index: u64,
}

impl SimEtcd {
    /// Adds the event to the history and, unless it is a refresh, notifies watchers: first the
    /// watchers of every removed path (etcd's delete callback), then those of every prefix of
    /// the event's key (etcd's `watcherHub.notify`).
    pub(super) fn commit(&mut self, ev: Ev, refresh: bool, removed: &[Vec<u8>]) -> Ev {
        let body = ev.body(false);
        let deleted_dir = if ev.deleted_dir && matches!(ev.action, "delete" | "expire") {
            Some(ev.key.clone())
        } else {
            None
        };
        self.history.push_back(HistEvent {
            index: ev.index,
            time: self.op_time,
            key: ev.key.clone(),
            refresh,
            bootstrap: false,
            deleted_dir,
            body: Arc::from(&body[..]),
        });
        while self.history.len() > HISTORY_CAPACITY {
            self.history.pop_front();
        }
        if !refresh {
            for path in removed {
                self.notify_watchers(&ev, &body, path, true);
            }
            let mut prefix = b"/".to_vec();
            self.notify_watchers(&ev, &body, &prefix, false);
            for comp in ev.key.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
                prefix = join(&prefix, comp);
                self.notify_watchers(&ev, &body, &prefix, false);
            }
        }
        ev
    }

    /// etcd's `watcherHub.notifyWatchers` and `watcher.notify`.
    fn notify_watchers(&mut self, ev: &Ev, body: &[u8], path: &[u8], deleted: bool) {
        let original = ev.key == path;
        if !original && is_hidden(path, &ev.key) {
            return;
        }
        let Some(list) = self.watchers.get_mut(path) else {
            return;
        };
        let mut fired = Vec::new();
        list.retain(|w| {
            let hit = (w.recursive || original || deleted) && ev.index >= w.since;
            if hit {
                fired.push((w.id, w.start_index));
            }
            !hit
        });
        if list.is_empty() {
            self.watchers.remove(path);
        }
        let stamp = EventStamp {
            index: ev.index,
            committed: self.start + duration_from_nanos(self.op_time),
        };
        for (id, start_index) in fired {
            self.completed
                .push_back((id, json_response(200, start_index, body.to_vec()), stamp));
        }
    }

    /// etcd's `store.Watch` and `EventHistory.scan`.
    pub(super) fn watch(
        &mut self,
        id: u64,
        key: &[u8],
        recursive: bool,
        wait_index: u64,
    ) -> Result<Served, EtcdError> {
        // A member behind the store starts from (and reports) the index it has applied.
        let store_index = self.opts.member_index.unwrap_or(self.index);
        let since = if wait_index == 0 {
            store_index + 1
        } else {
            wait_index
        };
        if let (Some(front), Some(back)) = (self.history.front(), self.history.back()) {
            if since < front.index {
                let cause = format!(
                    "the requested history has been cleared [{}/{}]",
                    front.index, since
                );
                return Err(EtcdError::new(E_EVENT_INDEX_CLEARED, cause, store_index));
            }
            if since <= back.index {
                let skip = usize::try_from(since - front.index).unwrap_or(usize::MAX);
                let mut prefix = key.to_vec();
                if prefix.last() != Some(&b'/') {
                    prefix.push(b'/');
                }
                let found = self.history.iter().skip(skip).find(|e| {
                    !e.refresh
                        && !e.bootstrap
                        && (e.key == key
                            || (recursive && e.key.starts_with(&prefix))
                            || e.deleted_dir.as_ref().is_some_and(|d| key.starts_with(d)))
                });
                if let Some(e) = found {
                    let hit = EventStamp {
                        index: e.index,
                        committed: self.start + duration_from_nanos(e.time),
                    };
                    self.last_hit = Some(hit);
                    let response = json_response(200, store_index, e.body.to_vec());
                    return Ok(Served::Now(response, Some(hit)));
                }
            }
        }
        self.watch_seq += 1;
        self.watchers
            .entry(key.to_vec())
            .or_default()
            .push(Watcher {
                id,
                seq: self.watch_seq,
                recursive,
                since,
                start_index: store_index,
            });
        Ok(Served::Parked)
    }
}

/// etcd's `isHidden(watchPath, keyPath)`, on etcd's own paths (under `/1`).
fn is_hidden(watch: &[u8], key: &[u8]) -> bool {
    let real = |p: &[u8]| [b"/1", ext(p)].concat();
    let (watch, key) = (real(watch), real(key));
    if watch.len() > key.len() {
        return false;
    }
    let after = path_clean(&[b"/", &key[watch.len()..]].concat());
    after.windows(2).any(|w| w == b"/_")
}

#[cfg(test)]
mod tests {
    use crate::sim::etcd::test_util::{req, text, T};
    use crate::sim::etcd::Reply;

    #[test]
    fn refresh_does_not_notify_and_is_skipped_in_history() {
        let mut t = T::new();
        t.call(
            0,
            "PUT",
            "/v2/keys/r?prevExist=false",
            Some("value=a&ttl=100"),
        ); // 4
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/r?wait=true&waitIndex=5", None)),
            Reply::Parked
        ));
        t.call(
            0,
            "PUT",
            "/v2/keys/r?prevValue=a",
            Some("refresh=true&ttl=100"),
        ); // 5
        t.call(
            0,
            "PUT",
            "/v2/keys/r?prevIndex=5",
            Some("refresh=true&ttl=100"),
        ); // 6
        assert!(t.etcd.poll_watch().is_none());
        assert_eq!(t.etcd.get("r"), Some(("a".into(), 4, 6)));
        // A new watch from the refresh index is parked too.
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/r?wait=true&waitIndex=5", None)),
            Reply::Parked
        ));
        // The next real change completes both, in order.
        t.call(0, "DELETE", "/v2/keys/r", None); // 7
        let (a, ra) = t.etcd.poll_watch().unwrap();
        let (b, rb) = t.etcd.poll_watch().unwrap();
        assert_eq!((a, b), (2, 5));
        let (s, i, body) = text(&ra);
        assert_eq!((s, i.as_str()), (200, "4"));
        assert!(body.starts_with("{\"action\":\"delete\",\"node\":{\"key\":\"/r\",\"modifiedIndex\":7,\"createdIndex\":4}"));
        assert_eq!(text(&rb).1, "6");
    }

    #[test]
    fn watch_parked_then_completed_by_expire() {
        let mut t = T::new();
        t.call(
            0,
            "PUT",
            "/v2/keys/lock?prevExist=false",
            Some("value=a&ttl=1"),
        );
        let (s, _, _) = t.call(
            0,
            "PUT",
            "/v2/keys/lock?prevExist=false",
            Some("value=b&ttl=1"),
        );
        assert_eq!(s, 412);
        assert!(matches!(
            t.send(100, req("GET", "/v2/keys/lock?wait=true&waitIndex=5", None)),
            Reply::Parked
        ));
        assert!(matches!(
            t.send(100, req("GET", "/v2/keys/other?wait=true", None)),
            Reply::Parked
        ));
        assert_eq!(t.etcd.parked_watches(), 2);
        assert!(t.etcd.poll_watch().is_none());
        t.etcd.advance(t.at(999));
        assert!(t.etcd.poll_watch().is_none());
        t.etcd.advance(t.at(1000));
        let (id, r) = t.etcd.poll_watch().unwrap();
        assert_eq!(id, 3);
        let (s, i, b) = text(&r);
        assert_eq!((s, i.as_str()), (200, "4"));
        assert_eq!(b, "{\"action\":\"expire\",\"node\":{\"key\":\"/lock\",\"modifiedIndex\":5,\"createdIndex\":4},\"prevNode\":{\"key\":\"/lock\",\"value\":\"a\",\"expiration\":\"2020-01-01T00:00:01Z\",\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        assert!(t.etcd.poll_watch().is_none());
        assert_eq!(t.etcd.parked_watches(), 1);
    }

    #[test]
    fn watch_from_history_and_future_index() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/w", Some("value=1")); // 4
        t.call(0, "PUT", "/v2/keys/x", Some("value=1")); // 5
        t.call(0, "PUT", "/v2/keys/w", Some("value=2")); // 6
        let (s, i, b) = t.call(0, "GET", "/v2/keys/w?wait=true&waitIndex=5", None);
        assert_eq!((s, i.as_str()), (200, "6"));
        assert!(b.starts_with("{\"action\":\"set\",\"node\":{\"key\":\"/w\",\"value\":\"2\",\"modifiedIndex\":6,\"createdIndex\":6},\"prevNode\":{\"key\":\"/w\",\"value\":\"1\""));
        // wait=true&quorum=true is a read
        let (s, _, b) = t.call(0, "GET", "/v2/keys/w?wait=true&quorum=true", None);
        assert_eq!(s, 200);
        assert!(b.starts_with("{\"action\":\"get\""));
        // a future waitIndex stays parked past earlier events
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/w?wait=true&waitIndex=8", None)),
            Reply::Parked
        ));
        t.call(0, "PUT", "/v2/keys/w", Some("value=3")); // 7
        assert!(t.etcd.poll_watch().is_none());
        t.call(0, "PUT", "/v2/keys/w", Some("value=4")); // 8
        assert!(t
            .etcd
            .poll_watch()
            .unwrap()
            .1
            .body()
            .starts_with(b"{\"action\":\"set\",\"node\":{\"key\":\"/w\",\"value\":\"4\""));
        // bootstrap events are never seen
        assert!(matches!(
            t.send(
                0,
                req("GET", "/v2/keys?wait=true&recursive=true&waitIndex=1", None)
            ),
            Reply::Now(_)
        ));
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/q?wait=true&waitIndex=1", None)),
            Reply::Parked
        ));
    }

    #[test]
    fn recursive_and_directory_watches() {
        let mut t = T::new();
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/d?wait=true&recursive=true", None)),
            Reply::Parked
        ));
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/d/f?wait=true", None)),
            Reply::Parked
        ));
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/d?wait=true", None)),
            Reply::Parked
        ));
        t.call(0, "PUT", "/v2/keys/d/f", Some("value=1")); // 4: creates dir d
                                                           // walk order: the recursive watcher on /d, then the one on /d/f; the plain one on /d stays
        let ids: Vec<u64> = std::iter::from_fn(|| t.etcd.poll_watch())
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        assert!(t.etcd.poll_watch().is_none());
        // the plain watcher on the directory fires on its recursive delete
        t.call(0, "DELETE", "/v2/keys/d?recursive=true", None);
        let (id, r) = t.etcd.poll_watch().unwrap();
        assert_eq!(id, 3);
        assert!(r
            .body()
            .starts_with(b"{\"action\":\"delete\",\"node\":{\"key\":\"/d\",\"dir\":true,"));
        // history rule: a deleted directory matches watchers of keys under it
        let (s, _, b) = t.call(0, "GET", "/v2/keys/d/f/g?wait=true&waitIndex=5", None);
        assert_eq!(s, 200);
        assert!(b.contains("\"action\":\"delete\""));
    }

    #[test]
    fn history_is_1000_events_then_401() {
        let mut t = T::new();
        for i in 0..1100 {
            t.call(0, "PUT", "/v2/keys/h", Some(&format!("value={i}")));
        }
        assert_eq!(t.etcd.index(), 1103);
        let (s, i, b) = t.call(0, "GET", "/v2/keys/h?wait=true&waitIndex=5", None);
        assert_eq!((s, i.as_str()), (400, "1103"));
        assert_eq!(b, "{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\"cause\":\"the requested history has been cleared [104/5]\",\"index\":1103}\n");
        let (s, _, b) = t.call(0, "GET", "/v2/keys/h?wait=true&waitIndex=104", None);
        assert_eq!(s, 200);
        assert!(b.contains("\"modifiedIndex\":104,"));
        assert_eq!(
            t.call(0, "GET", "/v2/keys/h?wait=true&waitIndex=103", None)
                .0,
            400
        );
    }

    #[test]
    fn close_watches_and_cancel() {
        let mut t = T::new();
        for k in ["a", "b", "c"] {
            assert!(matches!(
                t.send(0, req("GET", &format!("/v2/keys/{k}?wait=true"), None)),
                Reply::Parked
            ));
        }
        t.etcd.cancel(2);
        t.etcd.cancel(99);
        let closed = t.etcd.close_watches();
        assert_eq!(
            closed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![1, 3]
        );
        for (_, r) in &closed {
            assert_eq!(text(r), (200, "3".into(), String::new()));
        }
        assert_eq!(t.etcd.parked_watches(), 0);
        t.call(0, "PUT", "/v2/keys/a", Some("value=1"));
        assert!(t.etcd.poll_watch().is_none());
        // cancel also drops a completed, unpolled response
        assert!(matches!(
            t.send(0, req("GET", "/v2/keys/a?wait=true", None)),
            Reply::Parked
        ));
        t.call(0, "PUT", "/v2/keys/a", Some("value=2"));
        t.etcd.cancel(5);
        assert!(t.etcd.poll_watch().is_none());
    }
}
