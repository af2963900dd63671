//! A keys request as etcd's `v2http` reads it (`parseKeyRequest`: the parameters and their
//! validation, codes 201 to 212 with etcd's causes, in etcd's order), and how it reaches the
//! store (`RequestV2.Handle` and `applierV2store`), through raft or not.

use http::Method;

use super::clock::duration_from_nanos;
use super::error::{
    EtcdError, E_INDEX_NAN, E_INVALID_FIELD, E_PREV_VALUE_REQUIRED, E_RAFT_INTERNAL,
    E_REFRESH_TTL_REQUIRED, E_REFRESH_VALUE, E_TTL_NAN,
};
use super::net_http::json_response;
use super::url::Form;
use super::{EventStamp, Served, SimEtcd};

/// The parameters of a keys request (etcd's `etcdserverpb.Request` fields).
pub(super) struct Params {
    pub(super) prev_index: u64,
    pub(super) wait_index: u64,
    pub(super) recursive: bool,
    pub(super) sorted: bool,
    pub(super) wait: bool,
    pub(super) dir: bool,
    pub(super) quorum: bool,
    pub(super) prev_value: Vec<u8>,
    pub(super) no_value_on_success: bool,
    pub(super) ttl: Option<u64>,
    pub(super) prev_exist: Option<bool>,
    pub(super) refresh: bool,
    pub(super) value: Vec<u8>,
}

impl SimEtcd {
    /// etcd's `RequestV2.Handle` and `applierV2store`.
    pub(super) fn dispatch(
        &mut self,
        id: u64,
        method: &Method,
        key: &[u8],
        p: &Params,
        now: i128,
    ) -> Result<Served, EtcdError> {
        let through_raft = *method != Method::GET && *method != Method::HEAD
            || (*method == Method::GET && p.quorum);
        if through_raft && self.opts.defer_raft {
            return Ok(Served::Raft);
        }
        if through_raft && self.paused {
            return Err(EtcdError::new(
                E_RAFT_INTERNAL,
                "etcdserver: request timed out",
                0,
            ));
        }
        if through_raft {
            // A failed write (412, 404, ...) went through raft too: its answer also waits for
            // the member to apply it.
            return match self.apply(id, method, key, p, now) {
                Ok(served) => Ok(served),
                Err(e) => Ok(Served::Now(e.response(), Some(self.stamp_now()))),
            };
        }
        self.apply(id, method, key, p, now)
    }

    /// The store's current index, applied now.
    fn stamp_now(&self) -> EventStamp {
        EventStamp {
            index: self.index,
            committed: self.start + duration_from_nanos(self.op_time),
        }
    }

    /// Applies one validated request (etcd's `applierV2store`).
    fn apply(
        &mut self,
        id: u64,
        method: &Method,
        key: &[u8],
        p: &Params,
        now: i128,
    ) -> Result<Served, EtcdError> {
        let through_raft = *method != Method::GET && *method != Method::HEAD
            || (*method == Method::GET && p.quorum);
        // Go: time.Now().Add(time.Duration(ttl) * time.Second), wrapping like Go, on the member
        // that parsed the request.
        let received = self.opts.received.map_or(now, |r| self.ns(r));
        let expire = p
            .ttl
            .map(|ttl| received + i128::from((ttl as i64).wrapping_mul(1_000_000_000)));
        let ev = match *method {
            Method::GET if !p.quorum && p.wait => {
                return self.watch(id, key, p.recursive, p.wait_index);
            }
            Method::GET | Method::HEAD => self.get_event(key, p.recursive, p.sorted, now)?,
            Method::POST => {
                let ev =
                    self.internal_create(key, p.dir, &p.value, true, false, expire, "create", now)?;
                self.commit(ev, false, &[])
            }
            Method::PUT => match p.prev_exist {
                Some(true) if p.prev_index == 0 && p.prev_value.is_empty() => {
                    self.update(key, &p.value, expire, p.refresh, now)?
                }
                Some(true) => self.compare_and_swap(key, p, expire, now)?,
                Some(false) => {
                    let ev = self.internal_create(
                        key, p.dir, &p.value, false, false, expire, "create", now,
                    )?;
                    self.commit(ev, false, &[])
                }
                None if p.prev_index > 0 || !p.prev_value.is_empty() => {
                    self.compare_and_swap(key, p, expire, now)?
                }
                None => self.set(key, p.dir, &p.value, expire, p.refresh, now)?,
            },
            _ => {
                if p.prev_index > 0 || !p.prev_value.is_empty() {
                    self.compare_and_delete(key, &p.prev_value, p.prev_index, now)?
                } else {
                    self.delete(key, p.dir, p.recursive, now)?
                }
            }
        };
        let bare = p.no_value_on_success
            && matches!(ev.action, "set" | "compareAndSwap" | "create" | "update");
        let status = if ev.is_created() { 201 } else { 200 };
        // An answer through raft is sent once the serving member has applied the entry.
        let applied = through_raft.then(|| self.stamp_now());
        Ok(Served::Now(
            json_response(status, ev.etcd_index, ev.body(bare)),
            applied,
        ))
    }
}

fn form_get<'a>(form: &'a Form, name: &str) -> Option<&'a [u8]> {
    form.iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

pub(super) fn parse_params(form: &Form, method: &Method) -> Result<Params, EtcdError> {
    let index = |name: &str| -> Result<u64, EtcdError> {
        match form_get(form, name) {
            None => Ok(0),
            Some(v) => parse_uint(v).ok_or_else(|| {
                EtcdError::new(E_INDEX_NAN, format!("invalid value for \"{name}\""), 0)
            }),
        }
    };
    let flag = |name: &str| -> Result<bool, EtcdError> {
        match form_get(form, name) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| {
                EtcdError::new(E_INVALID_FIELD, format!("invalid value for \"{name}\""), 0)
            }),
        }
    };
    let prev_index = index("prevIndex")?;
    let wait_index = index("waitIndex")?;
    let recursive = flag("recursive")?;
    let sorted = flag("sorted")?;
    let wait = flag("wait")?;
    let dir = flag("dir")?;
    let quorum = flag("quorum")?;
    let _stream = flag("stream")?;
    if wait && *method != Method::GET {
        return Err(EtcdError::new(
            E_INVALID_FIELD,
            "\"wait\" can only be used with GET requests",
            0,
        ));
    }
    let prev_value = form_get(form, "prevValue");
    if prev_value.is_some_and(<[u8]>::is_empty) {
        return Err(EtcdError::new(
            E_PREV_VALUE_REQUIRED,
            "\"prevValue\" cannot be empty",
            0,
        ));
    }
    let no_value_on_success = flag("noValueOnSuccess")?;
    let ttl = match form_get(form, "ttl") {
        Some(v) if !v.is_empty() => Some(
            parse_uint(v)
                .ok_or_else(|| EtcdError::new(E_TTL_NAN, "invalid value for \"ttl\"", 0))?,
        ),
        _ => None,
    };
    let prev_exist = match form_get(form, "prevExist") {
        None => None,
        Some(v) => Some(
            parse_bool(v)
                .ok_or_else(|| EtcdError::new(E_INVALID_FIELD, "invalid value for prevExist", 0))?,
        ),
    };
    let value = form_get(form, "value").unwrap_or_default().to_vec();
    let refresh = match form_get(form, "refresh") {
        None => false,
        Some(v) => parse_bool(v)
            .ok_or_else(|| EtcdError::new(E_INVALID_FIELD, "invalid value for refresh", 0))?,
    };
    if refresh {
        if !value.is_empty() {
            return Err(EtcdError::new(
                E_REFRESH_VALUE,
                "A value was provided on a refresh",
                0,
            ));
        }
        if ttl.is_none() {
            return Err(EtcdError::new(
                E_REFRESH_TTL_REQUIRED,
                "No TTL value set",
                0,
            ));
        }
    }
    Ok(Params {
        prev_index,
        wait_index,
        recursive,
        sorted,
        wait,
        dir,
        quorum,
        prev_value: prev_value.unwrap_or_default().to_vec(),
        no_value_on_success,
        ttl,
        prev_exist,
        refresh,
        value,
    })
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(v, 10, 64)`.
fn parse_uint(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::etcd::json::json_str;
    use crate::sim::etcd::test_util::T;

    #[test]
    fn parse_errors() {
        let mut t = T::new();
        let cases = [
            (
                "PUT",
                "/v2/keys/a?prevValue=",
                "value=x",
                201,
                "\"prevValue\" cannot be empty",
            ),
            (
                "PUT",
                "/v2/keys/a",
                "value=x&ttl=abc",
                202,
                "invalid value for \"ttl\"",
            ),
            (
                "PUT",
                "/v2/keys/a",
                "value=x&ttl=-1",
                202,
                "invalid value for \"ttl\"",
            ),
            (
                "PUT",
                "/v2/keys/a",
                "value=x&ttl=+1",
                202,
                "invalid value for \"ttl\"",
            ),
            (
                "PUT",
                "/v2/keys/a?prevIndex=x",
                "value=x",
                203,
                "invalid value for \"prevIndex\"",
            ),
            (
                "GET",
                "/v2/keys/a?wait=true&waitIndex=x",
                "",
                203,
                "invalid value for \"waitIndex\"",
            ),
            (
                "GET",
                "/v2/keys/a?wait=",
                "",
                209,
                "invalid value for \"wait\"",
            ),
            (
                "PUT",
                "/v2/keys/a?prevExist=maybe",
                "value=x",
                209,
                "invalid value for prevExist",
            ),
            (
                "PUT",
                "/v2/keys/a?wait=true",
                "value=x",
                209,
                "\"wait\" can only be used with GET requests",
            ),
            (
                "GET",
                "/v2/keys/a?x=%zz",
                "",
                210,
                "invalid URL escape \"%zz\"",
            ),
            (
                "GET",
                "/v2/keys/a?x=%4",
                "",
                210,
                "invalid URL escape \"%4\"",
            ),
            (
                "GET",
                "/v2/keys/a?x=1;y=2",
                "",
                210,
                "invalid semicolon separator in query",
            ),
            (
                "PUT",
                "/v2/keys/a",
                "a;b=c",
                210,
                "invalid semicolon separator in query",
            ),
        ];
        for (m, pq, body, code, cause) in cases {
            let body = if m == "GET" { None } else { Some(body) };
            let (s, i, b) = t.call(0, m, pq, body);
            let mut want = format!("{{\"errorCode\":{code},\"message\":\"");
            want.push_str(EtcdError::new(code, "", 0).message());
            want.push_str("\",\"cause\":");
            let mut c = Vec::new();
            json_str(&mut c, cause.as_bytes());
            want.push_str(std::str::from_utf8(&c).unwrap());
            want.push_str(",\"index\":0}\n");
            assert_eq!(
                (s, i.as_str(), b.as_str()),
                (400, "0", want.as_str()),
                "{m} {pq}"
            );
        }
        assert_eq!(t.etcd.index(), 3);
    }
}
