//! The RPCs applied to the store and the lessor, as etcd's `applierV3backend` and `lessor` do,
//! with their responses rendered.

use std::time::Instant;

use super::lease::{remaining_secs, MAX_LEASE_TTL};
use super::render::{self, sub_header, Obj};
use super::requests::{Compare, DeleteReq, Op, PutReq, RangeReq, Refusal, TxnReq, KEY_NOT_FOUND};
use super::store::{KeyValue, RevError, Span, WriteTxn};
use super::SimEtcdV3;

pub(crate) const LEASE_NOT_FOUND: Refusal = (5, "etcdserver: requested lease not found");
const LEASE_EXISTS: Refusal = (9, "etcdserver: lease already exists");
const LEASE_TTL_TOO_LARGE: Refusal = (11, "etcdserver: too large lease TTL");
const COMPACTED: Refusal = (11, "etcdserver: mvcc: required revision has been compacted");
const FUTURE_REV: Refusal = (
    11,
    "etcdserver: mvcc: required revision is a future revision",
);

fn rev_refusal(e: RevError) -> Refusal {
    match e {
        RevError::Compacted => COMPACTED,
        RevError::Future => FUTURE_REV,
    }
}

/// Which branch each transaction (the top one and every nested one on the path) takes,
/// decided before anything is applied, as etcd's `compareToPath` does.
struct Path {
    succeeded: bool,
    /// For each op of the branch taken: the path of a nested transaction.
    nested: Vec<Option<Path>>,
}

impl SimEtcdV3 {
    /// A range at the current revision, or at `revision` (the header has the current one).
    pub(super) fn apply_range(&self, r: &RangeReq, read_rev: i64) -> Result<Obj, Refusal> {
        let rev = if r.revision > 0 {
            self.store.check_rev(r.revision).map_err(rev_refusal)?
        } else {
            read_rev
        };
        let mut kvs = self
            .store
            .range_unchecked(&Span::new(&r.key, &r.range_end), rev);
        let count = kvs.len() as i64;
        let keep = |kv: &KeyValue| {
            !(r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision
                || r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision
                || r.max_create_revision != 0 && kv.create_revision > r.max_create_revision
                || r.min_create_revision != 0 && kv.create_revision < r.min_create_revision)
        };
        kvs.retain(keep);
        let mut order = r.sort_order;
        if r.sort_target != 0 && order == 0 {
            order = 1;
        }
        if order == 1 || order == 2 {
            // Go's sort.Sort is an insertion sort below 12 items, hence stable there; the model
            // sorts stably at every size.
            match r.sort_target {
                0 => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
                1 => kvs.sort_by_key(|kv| kv.version),
                2 => kvs.sort_by_key(|kv| kv.create_revision),
                3 => kvs.sort_by_key(|kv| kv.mod_revision),
                4 => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
                _ => {}
            }
            if order == 2 {
                // sort.Reverse of a stable sort keeps equal items in their (key) order.
                stable_reverse(&mut kvs, r.sort_target);
            }
        }
        if r.count_only {
            // The mvcc layer returns no items for a count: nothing to truncate, no `more`.
            kvs.clear();
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() as i64 > r.limit {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        let items: Vec<Vec<u8>> = kvs
            .iter()
            .map(|kv| {
                let mut kv = kv.clone();
                if r.keys_only {
                    kv.value.clear();
                }
                render::kv(&kv)
            })
            .collect();
        Ok(Obj::new()
            .raw("header", &self.header_for(read_rev))
            .list("kvs", &items)
            .bool("more", more)
            .int("count", count))
    }

    /// The header of a response: the full one at top level, only the revision inside a txn.
    fn header_for(&self, rev: i64) -> Vec<u8> {
        if self.in_txn {
            sub_header(rev)
        } else {
            render::header(&self.ids, rev)
        }
    }

    fn check_put(&self, p: &PutReq) -> Result<(), Refusal> {
        if p.lease != 0 && self.lessor.get(p.lease).is_none() {
            return Err(LEASE_NOT_FOUND);
        }
        if (p.ignore_value || p.ignore_lease) && self.store.get(&p.key).is_none() {
            return Err(KEY_NOT_FOUND);
        }
        Ok(())
    }

    fn apply_put(&mut self, wt: &mut WriteTxn, p: &PutReq) -> Obj {
        let existing = self.store.get(&p.key).cloned();
        let value = match (&existing, p.ignore_value) {
            (Some(kv), true) => kv.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&existing, p.ignore_lease) {
            (Some(kv), true) => kv.lease,
            _ => p.lease,
        };
        let prev = self.store.put(wt, &p.key, value, lease);
        let prev = if p.prev_kv {
            prev.map(|kv| render::kv(&kv))
        } else {
            None
        };
        Obj::new()
            .raw("header", &self.header_for(wt.begin + 1))
            .opt("prev_kv", prev)
    }

    fn apply_delete(&mut self, wt: &mut WriteTxn, d: &DeleteReq) -> Obj {
        let gone = self.store.delete(wt, &Span::new(&d.key, &d.range_end));
        let prev: Vec<Vec<u8>> = if d.prev_kv {
            gone.iter().map(render::kv).collect()
        } else {
            Vec::new()
        };
        let rev = wt.read_rev();
        Obj::new()
            .raw("header", &self.header_for(rev))
            .int("deleted", gone.len() as i64)
            .list("prev_kvs", &prev)
    }

    /// A single put, delete or transaction: one write transaction, one revision if anything
    /// changed; watchers hear of it.
    pub(super) fn write(
        &mut self,
        f: impl FnOnce(&mut SimEtcdV3, &mut WriteTxn) -> Obj,
    ) -> Vec<u8> {
        let mut wt = self.store.begin();
        let body = f(self, &mut wt);
        let events = self.store.end(wt);
        let rev = self.store.revision();
        if !events.is_empty() {
            self.notify(rev, &events);
        }
        body.done()
    }

    pub(super) fn put(&mut self, p: &PutReq) -> Result<Vec<u8>, Refusal> {
        self.check_put(p)?;
        Ok(self.write(|s, wt| s.apply_put(wt, p)))
    }

    pub(super) fn delete(&mut self, d: &DeleteReq) -> Vec<u8> {
        self.write(|s, wt| s.apply_delete(wt, d))
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs = self
            .store
            .range_unchecked(&Span::new(&c.key, &c.range_end), self.store.revision());
        if kvs.is_empty() {
            if c.target == 3 {
                return false;
            }
            return compare_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, kv))
    }

    fn path(&self, t: &TxnReq) -> Path {
        let succeeded = t.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &t.success } else { &t.failure };
        Path {
            succeeded,
            nested: ops
                .iter()
                .map(|o| match o {
                    Op::Txn(n) => Some(self.path(n)),
                    _ => None,
                })
                .collect(),
        }
    }

    fn check_path(&self, t: &TxnReq, path: &Path) -> Result<(), Refusal> {
        let ops = if path.succeeded {
            &t.success
        } else {
            &t.failure
        };
        for (o, nested) in ops.iter().zip(&path.nested) {
            match (o, nested) {
                (Op::Range(r), _) if r.revision > 0 => {
                    self.store.check_rev(r.revision).map_err(rev_refusal)?;
                }
                (Op::Put(p), _) => self.check_put(p)?,
                (Op::Txn(n), Some(np)) => self.check_path(n, np)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn exec(&mut self, wt: &mut WriteTxn, t: &TxnReq, path: &Path) -> Vec<Vec<u8>> {
        let ops = if path.succeeded {
            &t.success
        } else {
            &t.failure
        };
        let mut out = Vec::new();
        for (o, nested) in ops.iter().zip(&path.nested) {
            let (name, body) = match (o, nested) {
                (Op::Range(r), _) => (
                    "response_range",
                    // Checked before: a range in a txn cannot fail here.
                    self.apply_range(r, wt.read_rev())
                        .map(Obj::done)
                        .unwrap_or_default(),
                ),
                (Op::Put(p), _) => ("response_put", self.apply_put(wt, p).done()),
                (Op::Delete(d), _) => ("response_delete_range", self.apply_delete(wt, d).done()),
                (Op::Txn(n), Some(np)) => {
                    let responses = self.exec(wt, n, np);
                    (
                        "response_txn",
                        Obj::new()
                            .raw("header", b"{}")
                            .bool("succeeded", np.succeeded)
                            .list("responses", &responses)
                            .done(),
                    )
                }
                _ => continue,
            };
            out.push(Obj::new().raw(name, &body).done());
        }
        out
    }

    pub(super) fn txn(&mut self, t: &TxnReq) -> Result<Vec<u8>, Refusal> {
        let path = self.path(t);
        self.check_path(t, &path)?;
        let mut wt = self.store.begin();
        self.in_txn = true;
        let responses = self.exec(&mut wt, t, &path);
        self.in_txn = false;
        let events = self.store.end(wt);
        let rev = self.store.revision();
        if !events.is_empty() {
            self.notify(rev, &events);
        }
        Ok(Obj::new()
            .raw("header", &render::header(&self.ids, rev))
            .bool("succeeded", path.succeeded)
            .list("responses", &responses)
            .done())
    }

    /// Whether a transaction only reads, and only serializably (etcd serves it without raft).
    pub(super) fn txn_is_serializable(t: &TxnReq) -> bool {
        t.success
            .iter()
            .chain(&t.failure)
            .all(|o| matches!(o, Op::Range(r) if r.serializable))
    }

    pub(super) fn compact(&mut self, revision: i64) -> Result<Vec<u8>, Refusal> {
        self.store.compact(revision).map_err(rev_refusal)?;
        Ok(self.top(Obj::new()))
    }

    /// A top-level answer with just the header at the current revision, plus `o`'s fields.
    pub(super) fn top(&self, o: Obj) -> Vec<u8> {
        let h = render::header(&self.ids, self.store.revision());
        let mut body = Obj::new().raw("header", &h).done();
        let rest = o.done();
        if rest.len() > 2 {
            body.pop();
            body.push(b',');
            body.extend_from_slice(&rest[1..]);
        }
        body
    }

    pub(super) fn lease_grant(
        &mut self,
        ttl: i64,
        id: i64,
        now: Instant,
    ) -> Result<Vec<u8>, Refusal> {
        if ttl > MAX_LEASE_TTL {
            return Err(LEASE_TTL_TOO_LARGE);
        }
        let id = if id == 0 { self.lessor.next_id() } else { id };
        if self.lessor.get(id).is_some() {
            return Err(LEASE_EXISTS);
        }
        let granted = self.lessor.grant(id, ttl, now).ttl;
        Ok(self.top(Obj::new().int("ID", id).int("TTL", granted)))
    }

    /// Revokes a lease: its keys go in one revision (in key order, as etcd sorts them).
    pub(super) fn revoke(&mut self, id: i64) -> bool {
        if self.lessor.remove(id).is_none() {
            return false;
        }
        let keys = self.store.keys_with_lease(id);
        if !keys.is_empty() {
            self.write(|s, wt| {
                for k in &keys {
                    s.store.delete(wt, &Span::One(k.clone()));
                }
                Obj::new()
            });
        }
        true
    }

    pub(super) fn lease_revoke(&mut self, id: i64) -> Result<Vec<u8>, Refusal> {
        if !self.revoke(id) {
            return Err(LEASE_NOT_FOUND);
        }
        Ok(self.top(Obj::new()))
    }

    pub(super) fn lease_keepalive(&mut self, id: i64, now: Instant) -> Vec<u8> {
        let ttl = match self.lessor.renew(id, now) {
            Some(ttl) => ttl,
            None => {
                // An expired lease not yet revoked: etcd's Renew waits for the revocation,
                // then answers like for an unknown lease.
                self.revoke(id);
                0
            }
        };
        let inner = self.top(Obj::new().int("ID", id).int("TTL", ttl));
        let mut out = Obj::new().raw("result", &inner).done();
        out.push(b'\n');
        out
    }

    pub(super) fn lease_time_to_live(&self, id: i64, keys: bool, now: Instant) -> Vec<u8> {
        match self.lessor.get(id) {
            None => self.top(Obj::new().int("ID", id).int("TTL", -1)),
            Some(l) => {
                let names: Vec<Vec<u8>> = if keys {
                    self.store
                        .keys_with_lease(id)
                        .iter()
                        .map(|k| format!("\"{}\"", super::gotext::base64_encode(k)).into_bytes())
                        .collect()
                } else {
                    Vec::new()
                };
                self.top(
                    Obj::new()
                        .int("ID", id)
                        .int("TTL", remaining_secs(l.deadline, now))
                        .int("grantedTTL", l.ttl)
                        .list("keys", &names),
                )
            }
        }
    }

    pub(super) fn lease_leases(&self) -> Vec<u8> {
        let items: Vec<Vec<u8>> = self
            .lessor
            .ids()
            .into_iter()
            .map(|id| Obj::new().int("ID", id).done())
            .collect();
        self.top(Obj::new().list("leases", &items))
    }
}

/// Reverses a stably sorted list while keeping equal items in their order.
fn stable_reverse(kvs: &mut [KeyValue], target: i32) {
    let key = |kv: &KeyValue| -> (i64, Vec<u8>) {
        match target {
            0 => (0, kv.key.clone()),
            1 => (kv.version, Vec::new()),
            2 => (kv.create_revision, Vec::new()),
            3 => (kv.mod_revision, Vec::new()),
            _ => (0, kv.value.clone()),
        }
    };
    kvs.reverse();
    // Equal runs are now reversed: put each back in its original order.
    let mut i = 0;
    while i < kvs.len() {
        let mut j = i + 1;
        while j < kvs.len() && key(&kvs[j]) == key(&kvs[i]) {
            j += 1;
        }
        kvs[i..j].reverse();
        i = j;
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let union = |field: u8| match c.union {
        Some((f, v)) if f == field => v,
        _ => 0,
    };
    let ord = match c.target {
        0 => kv.version.cmp(&union(4)),
        1 => kv.create_revision.cmp(&union(5)),
        2 => kv.mod_revision.cmp(&union(6)),
        3 => {
            let v: &[u8] = match c.union {
                Some((7, _)) => &c.value,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        4 => kv.lease.cmp(&union(8)),
        _ => std::cmp::Ordering::Equal,
    };
    match c.result {
        0 => ord.is_eq(),
        1 => ord.is_gt(),
        2 => ord.is_lt(),
        3 => ord.is_ne(),
        _ => true,
    }
}
