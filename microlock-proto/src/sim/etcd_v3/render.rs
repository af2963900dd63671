//! The gateway's JSON output (`jsonpb` with proto field names, zero values omitted): int64 as
//! strings, bytes as padded standard base64, enums by name, fields in proto order; and the two
//! error bodies (unary calls, and a stream that fails before its first message).

use crate::sim::etcd::EtcdVersion;

use super::gotext::{base64_encode, json_string};
use super::store::{Event, KeyValue};

/// A JSON object under construction; every adder skips zero values, as `jsonpb` does with
/// `EmitDefaults` off.
pub(crate) struct Obj {
    buf: Vec<u8>,
}

impl Obj {
    pub(crate) fn new() -> Obj {
        Obj { buf: vec![b'{'] }
    }

    fn name(&mut self, name: &str) {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        self.buf.push(b'"');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// An int64 (or uint64) field, as a JSON string.
    pub(crate) fn int(mut self, name: &str, v: i64) -> Obj {
        if v != 0 {
            self.name(name);
            self.buf.extend_from_slice(format!("\"{v}\"").as_bytes());
        }
        self
    }

    pub(crate) fn uint(mut self, name: &str, v: u64) -> Obj {
        if v != 0 {
            self.name(name);
            self.buf.extend_from_slice(format!("\"{v}\"").as_bytes());
        }
        self
    }

    /// An int32 field, as a JSON number.
    pub(crate) fn int32(mut self, name: &str, v: i32) -> Obj {
        if v != 0 {
            self.name(name);
            self.buf.extend_from_slice(v.to_string().as_bytes());
        }
        self
    }

    pub(crate) fn bool(mut self, name: &str, v: bool) -> Obj {
        if v {
            self.name(name);
            self.buf.extend_from_slice(b"true");
        }
        self
    }

    pub(crate) fn bytes(mut self, name: &str, v: &[u8]) -> Obj {
        if !v.is_empty() {
            self.name(name);
            self.buf.push(b'"');
            self.buf.extend_from_slice(base64_encode(v).as_bytes());
            self.buf.push(b'"');
        }
        self
    }

    pub(crate) fn string(mut self, name: &str, v: &str) -> Obj {
        if !v.is_empty() {
            self.name(name);
            json_string(&mut self.buf, v.as_bytes());
        }
        self
    }

    /// An enum field, by name (omitted at its zero value).
    pub(crate) fn enumeration(self, name: &str, v: usize, names: &[&str]) -> Obj {
        if v == 0 {
            return self;
        }
        self.string(name, names[v])
    }

    /// A message field already rendered (always written, even when `{}`).
    pub(crate) fn raw(mut self, name: &str, json: &[u8]) -> Obj {
        self.name(name);
        self.buf.extend_from_slice(json);
        self
    }

    /// A message field, if present.
    pub(crate) fn opt(self, name: &str, json: Option<Vec<u8>>) -> Obj {
        match json {
            Some(j) => self.raw(name, &j),
            None => self,
        }
    }

    /// A repeated field of rendered items (omitted when empty).
    pub(crate) fn list(mut self, name: &str, items: &[Vec<u8>]) -> Obj {
        if !items.is_empty() {
            self.name(name);
            self.buf.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                self.buf.extend_from_slice(item);
            }
            self.buf.push(b']');
        }
        self
    }

    pub(crate) fn done(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }
}

/// The identity every response header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    pub(crate) cluster_id: u64,
    pub(crate) member_id: u64,
    pub(crate) raft_term: u64,
}

/// A top-level `ResponseHeader`.
pub(crate) fn header(ids: &Ids, revision: i64) -> Vec<u8> {
    Obj::new()
        .uint("cluster_id", ids.cluster_id)
        .uint("member_id", ids.member_id)
        .int("revision", revision)
        .uint("raft_term", ids.raft_term)
        .done()
}

/// The header of a response inside a transaction: only its revision.
pub(crate) fn sub_header(revision: i64) -> Vec<u8> {
    Obj::new().int("revision", revision).done()
}

pub(crate) fn kv(kv: &KeyValue) -> Vec<u8> {
    Obj::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .done()
}

pub(crate) fn event(ev: &Event, with_prev: bool) -> Vec<u8> {
    let prev = if with_prev {
        ev.prev_kv.as_ref().map(kv)
    } else {
        None
    };
    Obj::new()
        .enumeration("type", usize::from(ev.delete), &["PUT", "DELETE"])
        .raw("kv", &kv(&ev.kv))
        .opt("prev_kv", prev)
        .done()
}

/// A gRPC status as the gateway writes a failed unary call: `{"error","code","message"}` in
/// 3.5, `{"error","message","code"}` in 3.4.
pub(crate) fn unary_error(version: EtcdVersion, code: u32, message: &str) -> Vec<u8> {
    let mut out = b"{\"error\":".to_vec();
    json_string(&mut out, message.as_bytes());
    match version {
        EtcdVersion::V3_4 => {
            out.extend_from_slice(b",\"message\":");
            json_string(&mut out, message.as_bytes());
            out.extend_from_slice(format!(",\"code\":{code}}}").as_bytes());
        }
        EtcdVersion::V3_5 => {
            out.extend_from_slice(format!(",\"code\":{code},\"message\":").as_bytes());
            json_string(&mut out, message.as_bytes());
            out.push(b'}');
        }
    }
    out
}

/// A gRPC status as the gateway writes a stream that fails (same on 3.4 and 3.5):
/// `{"error":{"grpc_code":14,"http_code":503,"message":"...","http_status":"Service
/// Unavailable"}}`, no newline.
pub(crate) fn stream_error(code: u32, message: &str) -> Vec<u8> {
    let status = http_status(EtcdVersion::V3_5, code);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let inner = Obj::new()
        .int32("grpc_code", code as i32)
        .int32("http_code", i32::from(status))
        .string("message", message)
        .string("http_status", reason)
        .done();
    Obj::new().raw("error", &inner).done()
}

/// The gateway's HTTP status for a gRPC code. Only `FailedPrecondition` differs: 412 in 3.4's
/// grpc-gateway, 400 in 3.5's (checked with `etcdserver: lease already exists`).
pub(crate) fn http_status(version: EtcdVersion, code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 408,
        2 => 500,
        3 => 400,
        4 => 504,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        9 => match version {
            EtcdVersion::V3_4 => 412,
            EtcdVersion::V3_5 => 400,
        },
        10 => 409,
        11 => 400,
        12 => 501,
        13 => 500,
        14 => 503,
        15 => 500,
        16 => 401,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_by_version() {
        let m = "etcdserver: requested lease not found";
        assert_eq!(
            String::from_utf8(unary_error(EtcdVersion::V3_5, 5, m)).unwrap(),
            format!(r#"{{"error":"{m}","code":5,"message":"{m}"}}"#)
        );
        assert_eq!(
            String::from_utf8(unary_error(EtcdVersion::V3_4, 5, m)).unwrap(),
            format!(r#"{{"error":"{m}","message":"{m}","code":5}}"#)
        );
        assert_eq!(
            String::from_utf8(stream_error(14, "etcdserver: no leader")).unwrap(),
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#
        );
    }

    #[test]
    fn zero_values_are_omitted() {
        let k = KeyValue {
            key: b"a".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            ..KeyValue::default()
        };
        assert_eq!(
            String::from_utf8(kv(&k)).unwrap(),
            r#"{"key":"YQ==","create_revision":"2","mod_revision":"2","version":"1"}"#
        );
    }
}
