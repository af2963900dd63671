//! The MVCC key-value store: the revision counter, every key's history of versions and
//! tombstones since the last compaction, ranges at the current or a past revision, write
//! transactions that make one revision, and the events each revision produced.

use std::collections::BTreeMap;

/// One key's value as etcd's `mvccpb.KeyValue` has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The revision of the write that created the key (since its last deletion).
    pub create_revision: i64,
    /// The revision of its last write.
    pub mod_revision: i64,
    /// How many writes since its creation (1 for a new key).
    pub version: i64,
    /// The value.
    pub value: Vec<u8>,
    /// Its lease ID, 0 for none.
    pub lease: i64,
}

/// What happened to a key at one revision (etcd's `mvccpb.Event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `true` for a deletion (`"type":"DELETE"`), `false` for a put.
    pub delete: bool,
    /// The key after the write; for a deletion, only `key` and `mod_revision` are set.
    pub kv: KeyValue,
    /// The key as it was at the revision before, if it existed then.
    pub prev_kv: Option<KeyValue>,
}

/// One entry of a key's history: a version, or a tombstone (`kv: None`).
#[derive(Debug, Clone)]
struct Rec {
    main: i64,
    sub: i64,
    kv: Option<KeyValue>,
}

/// The range a request names: one key, `[key, end)`, or every key from `key` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Span {
    One(Vec<u8>),
    From(Vec<u8>, Vec<u8>),
    ToEnd(Vec<u8>),
}

impl Span {
    /// etcd's reading of `key` and `range_end`: empty end is one key, `"\0"` is to the end.
    pub(crate) fn new(key: &[u8], range_end: &[u8]) -> Span {
        match range_end {
            [] => Span::One(key.to_vec()),
            [0] => Span::ToEnd(key.to_vec()),
            end => Span::From(key.to_vec(), end.to_vec()),
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match self {
            Span::One(key) => k == key.as_slice(),
            Span::From(key, end) => k >= key.as_slice() && k < end.as_slice(),
            Span::ToEnd(key) => k >= key.as_slice(),
        }
    }
}

/// An mvcc read error (both are gRPC `OutOfRange`, code 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevError {
    Compacted,
    Future,
}

/// The store.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    rev: i64,
    compacted: i64,
    keys: BTreeMap<Vec<u8>, Vec<Rec>>,
}

/// A write transaction in progress: its writes are in the store already, at revision
/// `begin + 1`, and become visible to others when [`Store::end`] moves the revision on.
#[derive(Debug)]
pub(crate) struct WriteTxn {
    pub(crate) begin: i64,
    events: Vec<Event>,
}

impl WriteTxn {
    /// The revision reads inside the transaction see (its own writes included).
    pub(crate) fn read_rev(&self) -> i64 {
        if self.events.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }
}

impl Store {
    /// A fresh store at `revision` (a fresh etcd is at 1, with nothing compacted).
    pub(crate) fn new(revision: i64) -> Store {
        Store {
            rev: revision,
            compacted: 0,
            keys: BTreeMap::new(),
        }
    }

    pub(crate) fn revision(&self) -> i64 {
        self.rev
    }

    pub(crate) fn compacted(&self) -> i64 {
        self.compacted
    }

    /// The key at revision `rev` (no bounds check).
    fn at(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        let recs = self.keys.get(key)?;
        recs.iter()
            .rev()
            .find(|r| r.main <= rev)
            .and_then(|r| r.kv.as_ref())
    }

    /// The keys of `span` alive at `rev` (0 or less: the current revision), in key order.
    #[cfg(test)]
    pub(crate) fn range(&self, span: &Span, rev: i64) -> Result<Vec<KeyValue>, RevError> {
        let rev = self.check_rev(rev)?;
        Ok(self.range_unchecked(span, rev))
    }

    /// Checks a read revision: 0 or less is the current one.
    pub(crate) fn check_rev(&self, rev: i64) -> Result<i64, RevError> {
        if rev <= 0 {
            return Ok(self.rev);
        }
        if rev > self.rev {
            return Err(RevError::Future);
        }
        if rev < self.compacted {
            return Err(RevError::Compacted);
        }
        Ok(rev)
    }

    pub(crate) fn range_unchecked(&self, span: &Span, rev: i64) -> Vec<KeyValue> {
        let iter: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<Rec>)>> = match span {
            Span::One(k) => Box::new(self.keys.get_key_value(k).into_iter()),
            Span::From(k, end) if k >= end => Box::new(std::iter::empty()),
            Span::From(k, end) => Box::new(self.keys.range(k.clone()..end.clone())),
            Span::ToEnd(k) => Box::new(self.keys.range(k.clone()..)),
        };
        iter.filter_map(|(k, _)| self.at(k, rev).cloned()).collect()
    }

    /// Starts a write transaction.
    pub(crate) fn begin(&self) -> WriteTxn {
        WriteTxn {
            begin: self.rev,
            events: Vec::new(),
        }
    }

    fn push(&mut self, txn: &mut WriteTxn, kv: Option<KeyValue>, key: &[u8]) {
        let main = txn.begin + 1;
        let sub = txn.events.len() as i64;
        let prev = self.at(key, txn.begin + 1).cloned();
        let event = match &kv {
            Some(kv) => Event {
                delete: false,
                kv: kv.clone(),
                prev_kv: prev,
            },
            None => Event {
                delete: true,
                kv: KeyValue {
                    key: key.to_vec(),
                    mod_revision: main,
                    ..KeyValue::default()
                },
                prev_kv: prev,
            },
        };
        self.keys
            .entry(key.to_vec())
            .or_default()
            .push(Rec { main, sub, kv });
        txn.events.push(event);
    }

    /// Puts `key` in the transaction; returns the previous value (as of the transaction).
    pub(crate) fn put(
        &mut self,
        txn: &mut WriteTxn,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
    ) -> Option<KeyValue> {
        let main = txn.begin + 1;
        let prev = self.at(key, main).cloned();
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: prev.as_ref().map_or(main, |p| p.create_revision),
            mod_revision: main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.push(txn, Some(kv), key);
        prev
    }

    /// Deletes the keys of `span` in the transaction; returns them as they were.
    pub(crate) fn delete(&mut self, txn: &mut WriteTxn, span: &Span) -> Vec<KeyValue> {
        let gone = self.range_unchecked(span, txn.begin + 1);
        for kv in &gone {
            self.push(txn, None, &kv.key);
        }
        gone
    }

    /// Ends a write transaction: the revision moves on if it wrote anything. Returns the new
    /// revision's events (empty if none).
    pub(crate) fn end(&mut self, txn: WriteTxn) -> Vec<Event> {
        if !txn.events.is_empty() {
            self.rev = txn.begin + 1;
        }
        txn.events
    }

    /// Compacts the history up to `rev`: reads and watches before it are refused.
    pub(crate) fn compact(&mut self, rev: i64) -> Result<(), RevError> {
        if rev > self.rev {
            return Err(RevError::Future);
        }
        if rev <= self.compacted {
            return Err(RevError::Compacted);
        }
        self.compacted = rev;
        self.keys.retain(|_, recs| {
            // Keep what is after `rev` and the last record at or before it, unless that is
            // a tombstone.
            let keep_from = recs.iter().rposition(|r| r.main <= rev);
            if let Some(i) = keep_from {
                let drop = if recs[i].kv.is_none() { i + 1 } else { i };
                recs.drain(..drop);
            }
            !recs.is_empty()
        });
        Ok(())
    }

    /// The events of `span` at revisions `from..=to`, in revision order, each with the key as
    /// it was before (`prev_kv`), as a watch from `from` replays them.
    pub(crate) fn history(&self, span: &Span, from: i64, to: i64) -> Vec<(i64, i64, Event)> {
        let mut out = Vec::new();
        for (key, recs) in &self.keys {
            if !span.contains(key) {
                continue;
            }
            for (i, r) in recs.iter().enumerate() {
                if r.main < from || r.main > to {
                    continue;
                }
                let prev = i
                    .checked_sub(1)
                    .and_then(|p| recs[p].kv.clone())
                    .filter(|p| p.mod_revision < r.main);
                let event = match &r.kv {
                    Some(kv) => Event {
                        delete: false,
                        kv: kv.clone(),
                        prev_kv: prev,
                    },
                    None => Event {
                        delete: true,
                        kv: KeyValue {
                            key: key.clone(),
                            mod_revision: r.main,
                            ..KeyValue::default()
                        },
                        prev_kv: prev,
                    },
                };
                out.push((r.main, r.sub, event));
            }
        }
        out.sort_by_key(|(main, sub, _)| (*main, *sub));
        out
    }

    /// Every live key with lease `lease`, in key order.
    pub(crate) fn keys_with_lease(&self, lease: i64) -> Vec<Vec<u8>> {
        self.keys
            .iter()
            .filter_map(|(k, recs)| {
                let kv = recs.last()?.kv.as_ref()?;
                (kv.lease == lease).then(|| k.clone())
            })
            .collect()
    }

    /// The current value of `key`, if it exists.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.at(key, self.rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &mut Store, k: &str, v: &str) -> Vec<Event> {
        let mut t = s.begin();
        s.put(&mut t, k.as_bytes(), v.as_bytes().to_vec(), 0);
        s.end(t)
    }

    #[test]
    fn revisions_versions_and_past_reads() {
        let mut s = Store::new(1);
        put(&mut s, "a", "1");
        put(&mut s, "a", "2");
        assert_eq!(s.revision(), 3);
        let kv = s.get(b"a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        let old = s.range(&Span::One(b"a".to_vec()), 2).unwrap();
        assert_eq!(old[0].value, b"1");
        assert_eq!(s.range(&Span::One(b"a".to_vec()), 4), Err(RevError::Future));
        let mut t = s.begin();
        let gone = s.delete(&mut t, &Span::ToEnd(b"\0".to_vec()));
        assert_eq!(gone.len(), 1);
        let ev = s.end(t);
        assert!(ev[0].delete && ev[0].prev_kv.is_some());
        assert_eq!(s.revision(), 4);
        put(&mut s, "a", "3");
        let kv = s.get(b"a").unwrap();
        assert_eq!((kv.create_revision, kv.version), (5, 1));
        s.compact(4).unwrap();
        assert_eq!(
            s.range(&Span::One(b"a".to_vec()), 3),
            Err(RevError::Compacted)
        );
        assert_eq!(s.compact(4), Err(RevError::Compacted));
        let h = s.history(&Span::One(b"a".to_vec()), 4, 5);
        assert_eq!(h.len(), 1);
        assert!(h[0].2.prev_kv.is_none());
    }

    #[test]
    fn an_empty_delete_makes_no_revision() {
        let mut s = Store::new(1);
        let mut t = s.begin();
        assert!(s.delete(&mut t, &Span::One(b"x".to_vec())).is_empty());
        assert!(s.end(t).is_empty());
        assert_eq!(s.revision(), 1);
    }
}
