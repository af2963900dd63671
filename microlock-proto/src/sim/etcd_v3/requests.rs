//! The request messages of the modelled RPCs, decoded from the gateway's JSON as `jsonpb` does
//! (fields in proto declaration order, so the first bad field in that order is the error), and
//! the checks etcd's gRPC layer makes before a request reaches raft.

use super::gojson::{DecodeError, EnumType, Obj};

pub(crate) const SORT_ORDER: EnumType = EnumType {
    names: &["NONE", "ASCEND", "DESCEND"],
    go_v34: "etcdserverpb.RangeRequest_SortOrder",
    go_v35: "etcdserverpb.RangeRequest.SortOrder",
};
pub(crate) const SORT_TARGET: EnumType = EnumType {
    names: &["KEY", "VERSION", "CREATE", "MOD", "VALUE"],
    go_v34: "etcdserverpb.RangeRequest_SortTarget",
    go_v35: "etcdserverpb.RangeRequest.SortTarget",
};
const COMPARE_RESULT: EnumType = EnumType {
    names: &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"],
    go_v34: "etcdserverpb.Compare_CompareResult",
    go_v35: "etcdserverpb.Compare.CompareResult",
};
const COMPARE_TARGET: EnumType = EnumType {
    names: &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"],
    go_v34: "etcdserverpb.Compare_CompareTarget",
    go_v35: "etcdserverpb.Compare.CompareTarget",
};
const FILTER_TYPE: EnumType = EnumType {
    names: &["NOPUT", "NODELETE"],
    go_v34: "etcdserverpb.WatchCreateRequest_FilterType",
    go_v35: "etcdserverpb.WatchCreateRequest.FilterType",
};

/// etcd's `--max-txn-ops` default.
const MAX_TXN_OPS: usize = 128;

/// A request refused before it is applied: gRPC code and message.
pub(crate) type Refusal = (u32, &'static str);

pub(crate) const EMPTY_KEY: Refusal = (3, "etcdserver: key is not provided");
pub(crate) const KEY_NOT_FOUND: Refusal = (3, "etcdserver: key not found");
const VALUE_PROVIDED: Refusal = (3, "etcdserver: value is provided");
const LEASE_PROVIDED: Refusal = (3, "etcdserver: lease is provided");
const TOO_MANY_OPS: Refusal = (3, "etcdserver: too many operations in txn request");
const DUPLICATE_KEY: Refusal = (3, "etcdserver: duplicate key given in txn request");

#[derive(Debug, Clone, Default)]
pub(crate) struct RangeReq {
    pub(crate) key: Vec<u8>,
    pub(crate) range_end: Vec<u8>,
    pub(crate) limit: i64,
    pub(crate) revision: i64,
    pub(crate) sort_order: i32,
    pub(crate) sort_target: i32,
    pub(crate) serializable: bool,
    pub(crate) keys_only: bool,
    pub(crate) count_only: bool,
    pub(crate) min_mod_revision: i64,
    pub(crate) max_mod_revision: i64,
    pub(crate) min_create_revision: i64,
    pub(crate) max_create_revision: i64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PutReq {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) lease: i64,
    pub(crate) prev_kv: bool,
    pub(crate) ignore_value: bool,
    pub(crate) ignore_lease: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteReq {
    pub(crate) key: Vec<u8>,
    pub(crate) range_end: Vec<u8>,
    pub(crate) prev_kv: bool,
}

/// A compare's target value (the `target_union` oneof; `None` when unset).
#[derive(Debug, Clone, Default)]
pub(crate) struct Compare {
    pub(crate) result: i32,
    pub(crate) target: i32,
    pub(crate) key: Vec<u8>,
    pub(crate) range_end: Vec<u8>,
    /// The oneof's field number (4 version .. 8 lease) and its value; the value of a `value`
    /// target is in `value`.
    pub(crate) union: Option<(u8, i64)>,
    pub(crate) value: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Range(RangeReq),
    Put(PutReq),
    Delete(DeleteReq),
    Txn(TxnReq),
    /// A `RequestOp` with none of its fields set.
    Empty,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TxnReq {
    pub(crate) compare: Vec<Compare>,
    pub(crate) success: Vec<Op>,
    pub(crate) failure: Vec<Op>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct WatchCreate {
    pub(crate) key: Vec<u8>,
    pub(crate) range_end: Vec<u8>,
    pub(crate) start_revision: i64,
    pub(crate) filters: Vec<i32>,
    pub(crate) prev_kv: bool,
    pub(crate) watch_id: i64,
}

/// What a `/v3/watch` body asks for.
#[derive(Debug, Clone)]
pub(crate) enum WatchReq {
    Create(WatchCreate),
    Progress,
    /// A cancel request, or nothing: the stream stays open and silent.
    Nothing,
}

pub(crate) fn range(o: &Obj<'_>) -> Result<RangeReq, DecodeError> {
    Ok(RangeReq {
        key: o.bytes("key", "key")?,
        range_end: o.bytes("range_end", "rangeEnd")?,
        limit: o.int64("limit", "limit")?,
        revision: o.int64("revision", "revision")?,
        sort_order: o.enumeration("sort_order", "sortOrder", &SORT_ORDER)?,
        sort_target: o.enumeration("sort_target", "sortTarget", &SORT_TARGET)?,
        serializable: o.bool("serializable", "serializable")?,
        keys_only: o.bool("keys_only", "keysOnly")?,
        count_only: o.bool("count_only", "countOnly")?,
        min_mod_revision: o.int64("min_mod_revision", "minModRevision")?,
        max_mod_revision: o.int64("max_mod_revision", "maxModRevision")?,
        min_create_revision: o.int64("min_create_revision", "minCreateRevision")?,
        max_create_revision: o.int64("max_create_revision", "maxCreateRevision")?,
    })
}

pub(crate) fn put(o: &Obj<'_>) -> Result<PutReq, DecodeError> {
    Ok(PutReq {
        key: o.bytes("key", "key")?,
        value: o.bytes("value", "value")?,
        lease: o.int64("lease", "lease")?,
        prev_kv: o.bool("prev_kv", "prevKv")?,
        ignore_value: o.bool("ignore_value", "ignoreValue")?,
        ignore_lease: o.bool("ignore_lease", "ignoreLease")?,
    })
}

pub(crate) fn delete(o: &Obj<'_>) -> Result<DeleteReq, DecodeError> {
    Ok(DeleteReq {
        key: o.bytes("key", "key")?,
        range_end: o.bytes("range_end", "rangeEnd")?,
        prev_kv: o.bool("prev_kv", "prevKv")?,
    })
}

fn compare(o: &Obj<'_>) -> Result<Compare, DecodeError> {
    let mut c = Compare {
        result: o.enumeration("result", "result", &COMPARE_RESULT)?,
        target: o.enumeration("target", "target", &COMPARE_TARGET)?,
        key: o.bytes("key", "key")?,
        ..Compare::default()
    };
    // The oneof: the last field set in declaration order wins.
    let ints = [
        (4, "version", "version"),
        (5, "create_revision", "createRevision"),
        (6, "mod_revision", "modRevision"),
    ];
    for (n, name, camel) in ints {
        if o.has(name, camel) {
            c.union = Some((n, o.int64(name, camel)?));
        }
    }
    if o.has("value", "value") {
        c.value = o.bytes("value", "value")?;
        c.union = Some((7, 0));
    }
    if o.has("lease", "lease") {
        c.union = Some((8, o.int64("lease", "lease")?));
    }
    c.range_end = o.bytes("range_end", "rangeEnd")?;
    Ok(c)
}

fn op(o: &Obj<'_>) -> Result<Op, DecodeError> {
    let mut out = Op::Empty;
    if let Some(m) = o.message("request_range", "requestRange")? {
        out = Op::Range(range(&m)?);
    }
    if let Some(m) = o.message("request_put", "requestPut")? {
        out = Op::Put(put(&m)?);
    }
    if let Some(m) = o.message("request_delete_range", "requestDeleteRange")? {
        out = Op::Delete(delete(&m)?);
    }
    if let Some(m) = o.message("request_txn", "requestTxn")? {
        out = Op::Txn(txn(&m)?);
    }
    Ok(out)
}

pub(crate) fn txn(o: &Obj<'_>) -> Result<TxnReq, DecodeError> {
    Ok(TxnReq {
        compare: o
            .repeated_message("compare", "compare")?
            .iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: o
            .repeated_message("success", "success")?
            .iter()
            .map(op)
            .collect::<Result<_, _>>()?,
        failure: o
            .repeated_message("failure", "failure")?
            .iter()
            .map(op)
            .collect::<Result<_, _>>()?,
    })
}

pub(crate) fn watch(o: &Obj<'_>) -> Result<WatchReq, DecodeError> {
    let mut out = WatchReq::Nothing;
    if let Some(c) = o.message("create_request", "createRequest")? {
        out = WatchReq::Create(WatchCreate {
            key: c.bytes("key", "key")?,
            range_end: c.bytes("range_end", "rangeEnd")?,
            start_revision: c.int64("start_revision", "startRevision")?,
            filters: {
                c.bool("progress_notify", "progressNotify")?;
                c.repeated_enum("filters", "filters", &FILTER_TYPE)?
            },
            prev_kv: c.bool("prev_kv", "prevKv")?,
            watch_id: c.int64("watch_id", "watchId")?,
        });
        c.bool("fragment", "fragment")?;
    }
    if let Some(c) = o.message("cancel_request", "cancelRequest")? {
        c.int64("watch_id", "watchId")?;
        out = WatchReq::Nothing;
    }
    if o.message("progress_request", "progressRequest")?.is_some() {
        out = WatchReq::Progress;
    }
    Ok(out)
}

pub(crate) fn check_range(r: &RangeReq) -> Result<(), Refusal> {
    if r.key.is_empty() {
        return Err(EMPTY_KEY);
    }
    Ok(())
}

pub(crate) fn check_put(r: &PutReq) -> Result<(), Refusal> {
    if r.key.is_empty() {
        return Err(EMPTY_KEY);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(VALUE_PROVIDED);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(LEASE_PROVIDED);
    }
    Ok(())
}

pub(crate) fn check_delete(r: &DeleteReq) -> Result<(), Refusal> {
    if r.key.is_empty() {
        return Err(EMPTY_KEY);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` and `checkIntervals`.
pub(crate) fn check_txn(r: &TxnReq) -> Result<(), Refusal> {
    check_txn_ops(r, MAX_TXN_OPS)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnReq, max: usize) -> Result<(), Refusal> {
    if r.compare.len() > max || r.success.len() > max || r.failure.len() > max {
        return Err(TOO_MANY_OPS);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EMPTY_KEY);
    }
    for (i, o) in r.success.iter().enumerate() {
        check_op(o, max - i)?;
    }
    for (i, o) in r.failure.iter().enumerate() {
        check_op(o, max - i)?;
    }
    Ok(())
}

fn check_op(o: &Op, max: usize) -> Result<(), Refusal> {
    match o {
        Op::Range(r) => check_range(r),
        Op::Put(p) => check_put(p),
        Op::Delete(d) => check_delete(d),
        Op::Txn(t) => check_txn_ops(t, max),
        Op::Empty => Err(KEY_NOT_FOUND),
    }
}

/// Keys put, and `(key, range_end)` ranges deleted.
type Intervals = (Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

/// The keys put and the ranges deleted by a list of ops, nested transactions included; a key
/// put twice, or put and deleted, is a duplicate.
fn check_intervals(ops: &[Op]) -> Result<Intervals, Refusal> {
    let mut puts: Vec<Vec<u8>> = Vec::new();
    let mut dels: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let in_dels = |dels: &[(Vec<u8>, Vec<u8>)], k: &[u8]| {
        dels.iter()
            .any(|(key, end)| super::store::Span::new(key, end).contains(k))
    };
    // Deletions first, as etcd collects them before the puts.
    for o in ops {
        if let Op::Delete(d) = o {
            dels.push((d.key.clone(), d.range_end.clone()));
        }
    }
    for o in ops {
        match o {
            Op::Put(p) => {
                if puts.contains(&p.key) || in_dels(&dels, &p.key) {
                    return Err(DUPLICATE_KEY);
                }
                puts.push(p.key.clone());
            }
            Op::Txn(t) => {
                let (sp, sd) = check_intervals(&t.success)?;
                let (fp, fd) = check_intervals(&t.failure)?;
                for k in sp.iter().chain(&fp) {
                    if puts.contains(k) || in_dels(&dels, k) {
                        return Err(DUPLICATE_KEY);
                    }
                }
                for (key, end) in sd.iter().chain(&fd) {
                    let span = super::store::Span::new(key, end);
                    if puts.iter().any(|k| span.contains(k)) {
                        return Err(DUPLICATE_KEY);
                    }
                }
                puts.extend(sp.into_iter().chain(fp));
                dels.extend(sd.into_iter().chain(fd));
            }
            _ => {}
        }
    }
    Ok((puts, dels))
}
