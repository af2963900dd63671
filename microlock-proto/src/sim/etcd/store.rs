//! The v2 store (etcd's `v2store`): the node tree and its operations, `get`, `set`, `create`,
//! `update`, `compareAndSwap`, `delete` and `compareAndDelete`, each with etcd's event, errors
//! and causes.

use super::clock::before_min_expire;
use super::error::{
    EtcdError, E_DIR_NOT_EMPTY, E_KEY_NOT_FOUND, E_NODE_EXIST, E_NOT_DIR, E_NOT_FILE, E_ROOT_RONLY,
    E_TEST_FAILED,
};
use super::json::{json_str, node_json, NodeJson};
use super::request::Params;
use super::url::path_clean;
use super::SimEtcd;

#[derive(Debug, Clone)]
pub(super) struct Node {
    /// `None` for a directory.
    pub(super) value: Option<Vec<u8>>,
    pub(super) created: u64,
    pub(super) modified: u64,
    /// Expiry time in nanoseconds since `start`; `None` for a permanent node.
    pub(super) expire: Option<i128>,
    pub(super) ttl_seq: u64,
}

/// An event produced by a store operation (etcd's `v2store.Event`).
pub(super) struct Ev {
    pub(super) action: &'static str,
    pub(super) key: Vec<u8>,
    /// The node's modifiedIndex (`Event.Index()`).
    pub(super) index: u64,
    pub(super) etcd_index: u64,
    pub(super) node: Vec<u8>,
    pub(super) prev: Option<Vec<u8>>,
    pub(super) deleted_dir: bool,
}

impl Ev {
    /// etcd's `Event.IsCreated`: answered with 201.
    pub(super) fn is_created(&self) -> bool {
        self.action == "create" || (self.action == "set" && self.prev.is_none())
    }

    pub(super) fn body(&self, bare: bool) -> Vec<u8> {
        let mut out = b"{\"action\":".to_vec();
        json_str(&mut out, self.action.as_bytes());
        if !bare {
            out.extend_from_slice(b",\"node\":");
            out.extend_from_slice(&self.node);
            if let Some(prev) = &self.prev {
                out.extend_from_slice(b",\"prevNode\":");
                out.extend_from_slice(prev);
            }
        }
        out.extend_from_slice(b"}\n");
        out
    }
}

impl SimEtcd {
    pub(super) fn is_dir(&self, path: &[u8]) -> bool {
        path == b"/" || self.nodes.get(path).is_some_and(|n| n.value.is_none())
    }

    /// The children of directory `dir`, in key order.
    fn children(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        let mut prefix = dir.to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        self.nodes
            .range::<[u8], _>((
                std::ops::Bound::Included(&prefix[..]),
                std::ops::Bound::Unbounded,
            ))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .filter(|k| !k[prefix.len()..].contains(&b'/'))
            .cloned()
            .collect()
    }

    /// etcd's `internalGet`: the node must exist; errors name the first missing path or the
    /// first non-directory parent.
    pub(super) fn internal_get(&self, path: &[u8]) -> Result<(), EtcdError> {
        let mut cur = b"/".to_vec();
        for comp in path.split(|&b| b == b'/').skip(1) {
            if comp.is_empty() {
                return Ok(());
            }
            if !self.is_dir(&cur) {
                return Err(EtcdError::new(E_NOT_DIR, ext(&cur), self.index));
            }
            let child = join(&cur, comp);
            if !self.nodes.contains_key(&child) {
                return Err(EtcdError::new(E_KEY_NOT_FOUND, child, self.index));
            }
            cur = child;
        }
        Ok(())
    }

    /// (value, expire, modifiedIndex, createdIndex) of an existing node or the root.
    pub(super) fn info(&self, path: &[u8]) -> (Option<&[u8]>, Option<i128>, u64, u64) {
        match self.nodes.get(path) {
            Some(n) => (n.value.as_deref(), n.expire, n.modified, n.created),
            None => (None, None, 0, 0),
        }
    }

    /// etcd's `node.Repr` (`list_top == recursive`) and `loadInternalNode` (`list_top`: a
    /// directory lists its children, each rendered with `Repr(recursive)`), without recursion
    /// on the call stack.
    fn render(&self, path: &[u8], list_top: bool, recursive: bool, now: i128) -> Vec<u8> {
        struct Frame {
            path: Vec<u8>,
            list: bool,
            kids: Vec<Vec<u8>>,
            next: usize,
            done: Vec<Vec<u8>>,
        }
        let frame = |me: &SimEtcd, path: Vec<u8>, list: bool| {
            let kids = if list && me.is_dir(&path) {
                me.children(&path)
                    .into_iter()
                    .filter(|k| !is_hidden_node(k))
                    .collect()
            } else {
                Vec::new()
            };
            Frame {
                path,
                list,
                kids,
                next: 0,
                done: Vec::new(),
            }
        };
        let mut stack = vec![frame(self, path.to_vec(), list_top)];
        loop {
            let Some(top) = stack.last_mut() else {
                return Vec::new();
            };
            if let Some(kid) = top.kids.get(top.next).cloned() {
                top.next += 1;
                stack.push(frame(self, kid, recursive));
                continue;
            }
            let Some(f) = stack.pop() else {
                return Vec::new();
            };
            let (value, expire, modified, created) = self.info(&f.path);
            let json = node_json(&NodeJson {
                key: ext(&f.path),
                value,
                dir: self.is_dir(&f.path),
                expire,
                now,
                nodes: if f.list { Some(&f.done) } else { None },
                modified,
                created,
            });
            match stack.last_mut() {
                Some(parent) => parent.done.push(json),
                None => return json,
            }
        }
    }

    pub(super) fn repr(&self, path: &[u8], now: i128) -> Vec<u8> {
        self.render(path, false, false, now)
    }

    /// Removes `path` and everything under it; returns the removed paths in the order etcd's
    /// `node.Remove` calls its callback (children first, then the directory itself).
    pub(super) fn remove_subtree(&mut self, path: &[u8]) -> Vec<Vec<u8>> {
        let mut order = Vec::new();
        let mut stack: Vec<(Vec<u8>, bool)> = vec![(path.to_vec(), false)];
        while let Some((p, expanded)) = stack.pop() {
            if expanded || !self.is_dir(&p) {
                order.push(p);
                continue;
            }
            let kids = self.children(&p);
            stack.push((p, true));
            for kid in kids.into_iter().rev() {
                stack.push((kid, false));
            }
        }
        for p in &order {
            self.remove_ttl(p);
            self.nodes.remove(p);
        }
        order
    }

    pub(super) fn get_event(
        &self,
        key: &[u8],
        recursive: bool,
        _sorted: bool,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        self.internal_get(key)?;
        let (_, _, modified, _) = self.info(key);
        Ok(Ev {
            action: "get",
            key: key.to_vec(),
            index: modified,
            etcd_index: self.index,
            node: self.render(key, true, recursive, now),
            prev: None,
            deleted_dir: false,
        })
    }

    /// etcd's `internalCreate`: creates missing parent directories (with the new index, no
    /// event), refuses the root, replaces a file when `replace`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn internal_create(
        &mut self,
        key: &[u8],
        dir: bool,
        value: &[u8],
        unique: bool,
        replace: bool,
        expire: Option<i128>,
        action: &'static str,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        let next = cur + 1;
        let mut path = key.to_vec();
        if unique {
            path.extend_from_slice(format!("/{next:020}").as_bytes());
        }
        let path = path_clean(&path);
        if path == b"/" {
            return Err(EtcdError::new(E_ROOT_RONLY, "/", cur));
        }
        let expire = expire.filter(|&e| !before_min_expire(e));
        let split = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let mut parent = b"/".to_vec();
        for comp in path[..split]
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
        {
            let child = join(&parent, comp);
            match self.nodes.get(&child) {
                Some(n) if n.value.is_none() => {}
                Some(_) => return Err(EtcdError::new(E_NOT_DIR, child, cur)),
                None => {
                    self.nodes.insert(
                        child.clone(),
                        Node {
                            value: None,
                            created: next,
                            modified: next,
                            expire: None,
                            ttl_seq: 0,
                        },
                    );
                }
            }
            parent = child;
        }
        let mut prev = None;
        if let Some(existing) = self.nodes.get(&path) {
            if !replace {
                return Err(EtcdError::new(E_NODE_EXIST, path, cur));
            }
            if existing.value.is_none() {
                return Err(EtcdError::new(E_NOT_FILE, path, cur));
            }
            prev = Some(self.repr(&path, now));
            self.remove_subtree(&path);
        }
        self.nodes.insert(
            path.clone(),
            Node {
                value: if dir { None } else { Some(value.to_vec()) },
                created: next,
                modified: next,
                expire: None,
                ttl_seq: 0,
            },
        );
        if let Some(e) = expire {
            self.add_ttl(&path, e);
        }
        self.index = next;
        let node = node_json(&NodeJson {
            key: &path,
            value: if dir { None } else { Some(value) },
            dir,
            expire,
            now,
            nodes: None,
            modified: next,
            created: next,
        });
        Ok(Ev {
            action,
            key: path,
            index: next,
            etcd_index: next,
            node,
            prev,
            deleted_dir: false,
        })
    }

    /// etcd's `store.Set`.
    pub(super) fn set(
        &mut self,
        key: &[u8],
        dir: bool,
        value: &[u8],
        expire: Option<i128>,
        refresh: bool,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let got = self.internal_get(key);
        let exists = match got {
            Ok(()) => true,
            Err(e) if e.code == E_KEY_NOT_FOUND && !refresh => false,
            Err(e) => return Err(e),
        };
        let value = if refresh {
            self.info(key).0.unwrap_or_default().to_vec()
        } else {
            value.to_vec()
        };
        let prev = exists.then(|| self.repr(key, now));
        let mut ev = self.internal_create(key, dir, &value, false, true, expire, "set", now)?;
        if prev.is_some() {
            ev.prev = prev;
        }
        Ok(self.commit(ev, refresh, &[]))
    }

    /// etcd's `store.Update` (`prevExist=true`).
    pub(super) fn update(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire: Option<i128>,
        refresh: bool,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        let next = cur + 1;
        if key == b"/" {
            return Err(EtcdError::new(E_ROOT_RONLY, "/", cur));
        }
        self.internal_get(key)?;
        let (old_value, _, _, created) = self.info(key);
        let is_dir = old_value.is_none();
        if is_dir && !value.is_empty() {
            return Err(EtcdError::new(E_NOT_FILE, key, cur));
        }
        let value = if refresh {
            old_value.unwrap_or_default().to_vec()
        } else {
            value.to_vec()
        };
        let prev = self.repr(key, now);
        if let Some(n) = self.nodes.get_mut(key) {
            // etcd's node.Write fails (ignored) on a directory: its modifiedIndex stays.
            if !is_dir {
                n.value = Some(value.clone());
                n.modified = next;
            }
        }
        self.update_ttl(key, expire);
        let node = node_json(&NodeJson {
            key,
            value: if is_dir { None } else { Some(&value) },
            dir: is_dir,
            expire: self.info(key).1,
            now,
            nodes: None,
            modified: next,
            created,
        });
        self.index = next;
        let ev = Ev {
            action: "update",
            key: key.to_vec(),
            index: next,
            etcd_index: next,
            node,
            prev: Some(prev),
            deleted_dir: false,
        };
        Ok(self.commit(ev, refresh, &[]))
    }

    /// etcd's `store.CompareAndSwap`.
    pub(super) fn compare_and_swap(
        &mut self,
        key: &[u8],
        p: &Params,
        expire: Option<i128>,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        if key == b"/" {
            return Err(EtcdError::new(E_ROOT_RONLY, "/", cur));
        }
        self.internal_get(key)?;
        let (old_value, _, modified, created) = self.info(key);
        let Some(old_value) = old_value else {
            return Err(EtcdError::new(E_NOT_FILE, key, cur));
        };
        compare(old_value, modified, &p.prev_value, p.prev_index)
            .map_err(|cause| EtcdError::new(E_TEST_FAILED, cause, cur))?;
        let value = if p.refresh {
            old_value.to_vec()
        } else {
            p.value.clone()
        };
        self.index += 1;
        let index = self.index;
        let prev = self.repr(key, now);
        if let Some(n) = self.nodes.get_mut(key) {
            n.value = Some(value.clone());
            n.modified = index;
        }
        self.update_ttl(key, expire);
        let node = node_json(&NodeJson {
            key,
            value: Some(&value),
            dir: false,
            expire: self.info(key).1,
            now,
            nodes: None,
            modified: index,
            created,
        });
        let ev = Ev {
            action: "compareAndSwap",
            key: key.to_vec(),
            index,
            etcd_index: index,
            node,
            prev: Some(prev),
            deleted_dir: false,
        };
        Ok(self.commit(ev, p.refresh, &[]))
    }

    /// etcd's `store.Delete`.
    pub(super) fn delete(
        &mut self,
        key: &[u8],
        dir: bool,
        recursive: bool,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        if key == b"/" {
            return Err(EtcdError::new(E_ROOT_RONLY, "/", cur));
        }
        let dir = dir || recursive;
        self.internal_get(key)?;
        let next = cur + 1;
        let is_dir = self.is_dir(key);
        if is_dir {
            if !dir {
                return Err(EtcdError::new(E_NOT_FILE, key, cur));
            }
            if !recursive && !self.children(key).is_empty() {
                return Err(EtcdError::new(E_DIR_NOT_EMPTY, key, cur));
            }
        }
        let (_, _, _, created) = self.info(key);
        let prev = self.repr(key, now);
        let node = node_json(&NodeJson {
            key,
            value: None,
            dir: is_dir,
            expire: None,
            now,
            nodes: None,
            modified: next,
            created,
        });
        let removed = self.remove_subtree(key);
        self.index = next;
        let ev = Ev {
            action: "delete",
            key: key.to_vec(),
            index: next,
            etcd_index: next,
            node,
            prev: Some(prev),
            deleted_dir: is_dir,
        };
        Ok(self.commit(ev, false, &removed))
    }

    /// etcd's `store.CompareAndDelete` (it has no root check: the root is "Not a file").
    pub(super) fn compare_and_delete(
        &mut self,
        key: &[u8],
        prev_value: &[u8],
        prev_index: u64,
        now: i128,
    ) -> Result<Ev, EtcdError> {
        let cur = self.index;
        self.internal_get(key)?;
        let (value, _, modified, created) = self.info(key);
        let Some(value) = value.filter(|_| key != b"/") else {
            return Err(EtcdError::new(E_NOT_FILE, ext(key), cur));
        };
        compare(value, modified, prev_value, prev_index)
            .map_err(|cause| EtcdError::new(E_TEST_FAILED, cause, cur))?;
        self.index += 1;
        let index = self.index;
        let prev = self.repr(key, now);
        let node = node_json(&NodeJson {
            key,
            value: None,
            dir: false,
            expire: None,
            now,
            nodes: None,
            modified: index,
            created,
        });
        let removed = self.remove_subtree(key);
        let ev = Ev {
            action: "compareAndDelete",
            key: key.to_vec(),
            index,
            etcd_index: index,
            node,
            prev: Some(prev),
            deleted_dir: false,
        };
        Ok(self.commit(ev, false, &removed))
    }
}

/// etcd's `node.Compare` and `getCompareFailCause`.
fn compare(value: &[u8], modified: u64, prev_value: &[u8], prev_index: u64) -> Result<(), Vec<u8>> {
    let index_match = prev_index == 0 || modified == prev_index;
    let value_match = prev_value.is_empty() || value == prev_value;
    let value_cause = || [b"[", prev_value, b" != ", value, b"]"].concat();
    let index_cause = || format!("[{prev_index} != {modified}]").into_bytes();
    match (value_match, index_match) {
        (true, true) => Ok(()),
        (false, true) => Err(value_cause()),
        (true, false) => Err(index_cause()),
        (false, false) => {
            let mut cause = value_cause();
            cause.push(b' ');
            cause.extend(index_cause());
            Err(cause)
        }
    }
}

pub(super) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A path as etcd shows it (keys live under `/1`, trimmed from keys and causes): the root is
/// the empty string.
pub(super) fn ext(path: &[u8]) -> &[u8] {
    if path == b"/" {
        b""
    } else {
        path
    }
}

/// etcd's `node.IsHidden`: the last component starts with `_`.
fn is_hidden_node(path: &[u8]) -> bool {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
    name.first() == Some(&b'_')
}

#[cfg(test)]
mod tests {
    use crate::sim::etcd::test_util::T;

    #[test]
    fn lock_cycle_exact_bytes() {
        let mut t = T::new();
        let (s, i, b) = t.call(
            0,
            "PUT",
            "/v2/keys/lock?prevExist=false",
            Some("value=node-a&ttl=10"),
        );
        assert_eq!((s, i.as_str()), (201, "4"));
        assert_eq!(b, "{\"action\":\"create\",\"node\":{\"key\":\"/lock\",\"value\":\"node-a\",\"expiration\":\"2020-01-01T00:00:10Z\",\"ttl\":10,\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        let (s, i, b) = t.call(
            100,
            "PUT",
            "/v2/keys/lock?prevExist=false",
            Some("value=node-b&ttl=10"),
        );
        assert_eq!((s, i.as_str()), (412, "4"));
        assert_eq!(b, "{\"errorCode\":105,\"message\":\"Key already exists\",\"cause\":\"/lock\",\"index\":4}\n");
        // renew
        let (s, i, b) = t.call(
            1500,
            "PUT",
            "/v2/keys/lock?prevValue=node-a",
            Some("refresh=true&ttl=10"),
        );
        assert_eq!((s, i.as_str()), (200, "5"));
        assert_eq!(b, "{\"action\":\"compareAndSwap\",\"node\":{\"key\":\"/lock\",\"value\":\"node-a\",\"expiration\":\"2020-01-01T00:00:11.5Z\",\"ttl\":10,\"modifiedIndex\":5,\"createdIndex\":4},\"prevNode\":{\"key\":\"/lock\",\"value\":\"node-a\",\"expiration\":\"2020-01-01T00:00:10Z\",\"ttl\":9,\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        // renew by the wrong holder
        let (s, _, b) = t.call(
            1600,
            "PUT",
            "/v2/keys/lock?prevValue=node-b",
            Some("refresh=true&ttl=10"),
        );
        assert_eq!(s, 412);
        assert_eq!(b, "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[node-b != node-a]\",\"index\":5}\n");
        // unlock by the wrong holder, then the right one
        let (s, _, _) = t.call(1700, "DELETE", "/v2/keys/lock?prevValue=node-b", None);
        assert_eq!(s, 412);
        let (s, i, b) = t.call(1800, "DELETE", "/v2/keys/lock?prevValue=node-a", None);
        assert_eq!((s, i.as_str()), (200, "6"));
        assert_eq!(b, "{\"action\":\"compareAndDelete\",\"node\":{\"key\":\"/lock\",\"modifiedIndex\":6,\"createdIndex\":4},\"prevNode\":{\"key\":\"/lock\",\"value\":\"node-a\",\"expiration\":\"2020-01-01T00:00:11.5Z\",\"ttl\":10,\"modifiedIndex\":5,\"createdIndex\":4}}\n");
        let (s, i, b) = t.call(1900, "DELETE", "/v2/keys/lock?prevValue=node-a", None);
        assert_eq!((s, i.as_str()), (404, "6"));
        assert_eq!(
            b,
            "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/lock\",\"index\":6}\n"
        );
        let (s, _, _) = t.call(
            1900,
            "PUT",
            "/v2/keys/lock?prevValue=node-a",
            Some("refresh=true&ttl=10"),
        );
        assert_eq!(s, 404);
    }

    #[test]
    fn refresh_variants_and_errors() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/r", Some("value=a&ttl=100"));
        let (s, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/r?prevValue=a",
            Some("refresh=true&ttl=5&value=x"),
        );
        assert_eq!((s, b.as_str()), (400, "{\"errorCode\":211,\"message\":\"Value provided on refresh\",\"cause\":\"A value was provided on a refresh\",\"index\":0}\n"));
        let (s, i, b) = t.call(0, "PUT", "/v2/keys/r?prevValue=a", Some("refresh=true"));
        assert_eq!((s, i.as_str(), b.as_str()), (400, "0", "{\"errorCode\":212,\"message\":\"A TTL must be provided on refresh\",\"cause\":\"No TTL value set\",\"index\":0}\n"));
        // an empty value is not "a value"
        let (s, _, _) = t.call(
            0,
            "PUT",
            "/v2/keys/r?prevValue=a",
            Some("refresh=true&ttl=5&value="),
        );
        assert_eq!(s, 200);
        // prevExist=true refresh: update, value kept
        let (s, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/r?prevExist=true",
            Some("refresh=true&ttl=5"),
        );
        assert_eq!(s, 200);
        assert!(
            b.starts_with("{\"action\":\"update\",\"node\":{\"key\":\"/r\",\"value\":\"a\""),
            "{b}"
        );
        // unconditional refresh: set, new createdIndex
        let (s, i, b) = t.call(0, "PUT", "/v2/keys/r", Some("refresh=true&ttl=5"));
        assert_eq!((s, i.as_str()), (200, "7"));
        assert!(b.starts_with("{\"action\":\"set\",\"node\":{\"key\":\"/r\",\"value\":\"a\",\"expiration\":\"2020-01-01T00:00:05Z\",\"ttl\":5,\"modifiedIndex\":7,\"createdIndex\":7},\"prevNode\""), "{b}");
        assert_eq!(t.etcd.get("/r"), Some(("a".into(), 7, 7)));
        // unconditional refresh of a missing key
        let (s, _, _) = t.call(0, "PUT", "/v2/keys/nope", Some("refresh=true&ttl=5"));
        assert_eq!(s, 404);
        // refresh=bogus
        let (s, _, b) = t.call(0, "PUT", "/v2/keys/r", Some("refresh=yes&ttl=5"));
        assert_eq!((s, b.as_str()), (400, "{\"errorCode\":209,\"message\":\"Invalid field\",\"cause\":\"invalid value for refresh\",\"index\":0}\n"));
    }

    #[test]
    fn compare_causes() {
        let mut t = T::new();
        t.call(0, "PUT", "/v2/keys/r", Some("value=a")); // 4
        let cause = |t: &mut T, q: &str| {
            let (s, _, b) = t.call(0, "PUT", &format!("/v2/keys/r?{q}"), Some("value=b"));
            assert_eq!(s, 412);
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            v["cause"].as_str().unwrap().to_string()
        };
        assert_eq!(cause(&mut t, "prevIndex=99"), "[99 != 4]");
        assert_eq!(
            cause(&mut t, "prevIndex=99&prevValue=zz"),
            "[zz != a] [99 != 4]"
        );
        assert_eq!(cause(&mut t, "prevIndex=4&prevValue=zz"), "[zz != a]");
        assert_eq!(cause(&mut t, "prevExist=true&prevValue=zz"), "[zz != a]");
        let (s, _, b) = t.call(0, "DELETE", "/v2/keys/r?prevIndex=3", None);
        assert_eq!((s, b.as_str()), (412, "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[3 != 4]\",\"index\":4}\n"));
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/r?prevIndex=4", Some("value=c"))
                .0,
            200
        );
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/nope?prevExist=true", Some("value=c"))
                .0,
            404
        );
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/nope?prevValue=x", Some("value=c"))
                .0,
            404
        );
    }

    #[test]
    fn in_order_keys_and_directories() {
        let mut t = T::new();
        let (s, _, b) = t.call(0, "POST", "/v2/keys/queue", Some("value=q&ttl=5"));
        assert_eq!(s, 201);
        assert!(b.starts_with("{\"action\":\"create\",\"node\":{\"key\":\"/queue/00000000000000000004\",\"value\":\"q\""), "{b}");
        t.call(0, "POST", "/v2/keys/queue", Some("value=q2"));
        t.call(0, "PUT", "/v2/keys/queue/_hidden", Some("value=h"));
        let (_, _, b) = t.call(0, "GET", "/v2/keys/queue?sorted=true", None);
        assert_eq!(b, "{\"action\":\"get\",\"node\":{\"key\":\"/queue\",\"dir\":true,\"nodes\":[{\"key\":\"/queue/00000000000000000004\",\"value\":\"q\",\"expiration\":\"2020-01-01T00:00:05Z\",\"ttl\":5,\"modifiedIndex\":4,\"createdIndex\":4},{\"key\":\"/queue/00000000000000000005\",\"value\":\"q2\",\"modifiedIndex\":5,\"createdIndex\":5}],\"modifiedIndex\":4,\"createdIndex\":4}}\n");
        let (s, _, b) = t.call(0, "POST", "/v2/keys", Some("value=r"));
        assert_eq!(s, 201);
        assert!(b.contains("\"key\":\"/00000000000000000007\""));
        // directories
        let (s, _, b) = t.call(0, "PUT", "/v2/keys/d1?dir=true", Some("ttl=100"));
        assert_eq!((s, b.as_str()), (201, "{\"action\":\"set\",\"node\":{\"key\":\"/d1\",\"dir\":true,\"expiration\":\"2020-01-01T00:01:40Z\",\"ttl\":100,\"modifiedIndex\":8,\"createdIndex\":8}}\n"));
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/d1?dir=true", None).2,
            "{\"errorCode\":102,\"message\":\"Not a file\",\"cause\":\"/d1\",\"index\":8}\n"
        );
        t.call(0, "PUT", "/v2/keys/d1/f", Some("value=v"));
        assert_eq!(t.call(0, "DELETE", "/v2/keys/d1", None).0, 403);
        assert_eq!(t.call(0, "DELETE", "/v2/keys/d1?dir=true", None).2, "{\"errorCode\":108,\"message\":\"Directory not empty\",\"cause\":\"/d1\",\"index\":9}\n");
        let (_, _, b) = t.call(0, "GET", "/v2/keys/?recursive=true&sorted=true", None);
        assert!(b.contains("{\"key\":\"/d1\",\"dir\":true,\"expiration\":\"2020-01-01T00:01:40Z\",\"ttl\":100,\"nodes\":[{\"key\":\"/d1/f\",\"value\":\"v\",\"modifiedIndex\":9,\"createdIndex\":9}],\"modifiedIndex\":8,\"createdIndex\":8}"), "{b}");
        let (s, _, b) = t.call(0, "DELETE", "/v2/keys/d1?recursive=true", None);
        assert_eq!((s, b.as_str()), (200, "{\"action\":\"delete\",\"node\":{\"key\":\"/d1\",\"dir\":true,\"modifiedIndex\":10,\"createdIndex\":8},\"prevNode\":{\"key\":\"/d1\",\"dir\":true,\"expiration\":\"2020-01-01T00:01:40Z\",\"ttl\":100,\"modifiedIndex\":8,\"createdIndex\":8}}\n"));
        assert_eq!(t.etcd.next_expiry(), Some(t.at(5000)));
        // a TTL directory expires with its children
        t.call(0, "PUT", "/v2/keys/d2?dir=true", Some("ttl=1"));
        t.call(0, "PUT", "/v2/keys/d2/a/b", Some("value=v"));
        t.etcd.advance(t.at(1000));
        assert!(t.etcd.get("/d2/a/b").is_none());
        assert_eq!(t.call(1000, "GET", "/v2/keys/d2", None).0, 404);
    }
}
