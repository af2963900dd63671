//! JSON as etcd writes it with Go's `encoding/json`: a node's fields in the order of etcd's
//! `NodeExtern`, each `omitempty`, and strings with Go's escaping.

use super::clock::{rfc3339_nano, ttl_secs};
use super::store::ext;
use super::url::decode_rune;

pub(super) struct NodeJson<'a> {
    pub(super) key: &'a [u8],
    pub(super) value: Option<&'a [u8]>,
    pub(super) dir: bool,
    pub(super) expire: Option<i128>,
    pub(super) now: i128,
    pub(super) nodes: Option<&'a [Vec<u8>]>,
    pub(super) modified: u64,
    pub(super) created: u64,
}

/// etcd's `NodeExtern` JSON: fields in struct order, each `omitempty`.
pub(super) fn node_json(n: &NodeJson<'_>) -> Vec<u8> {
    let mut out = b"{".to_vec();
    let field = |out: &mut Vec<u8>, name: &str| {
        if out.len() > 1 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    };
    if !n.key.is_empty() {
        field(&mut out, "key");
        json_str(&mut out, ext(n.key));
    }
    if let Some(value) = n.value {
        field(&mut out, "value");
        json_str(&mut out, value);
    }
    if n.dir {
        field(&mut out, "dir");
        out.extend_from_slice(b"true");
    }
    if let Some(expire) = n.expire {
        field(&mut out, "expiration");
        out.push(b'"');
        out.extend_from_slice(rfc3339_nano(expire).as_bytes());
        out.push(b'"');
        let ttl = ttl_secs(expire, n.now);
        if ttl != 0 {
            field(&mut out, "ttl");
            out.extend_from_slice(ttl.to_string().as_bytes());
        }
    }
    if let Some(nodes) = n.nodes.filter(|nodes| !nodes.is_empty()) {
        field(&mut out, "nodes");
        out.push(b'[');
        for (i, node) in nodes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(node);
        }
        out.push(b']');
    }
    if n.modified != 0 {
        field(&mut out, "modifiedIndex");
        out.extend_from_slice(n.modified.to_string().as_bytes());
    }
    if n.created != 0 {
        field(&mut out, "createdIndex");
        out.extend_from_slice(n.created.to_string().as_bytes());
    }
    out.push(b'}');
    out
}

/// A JSON string as Go's `encoding/json` writes it (HTML escaping on, invalid UTF-8 bytes as
/// `\ufffd` one by one, U+2028/U+2029 escaped).
pub(super) fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'<' | b'>' | b'&' | 0x00..=0x1f => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0xf)]);
                }
                _ => out.push(b),
            }
            i += 1;
            continue;
        }
        match decode_rune(&s[i..]) {
            Some(('\u{2028}', n)) => {
                out.extend_from_slice(b"\\u2028");
                i += n;
            }
            Some(('\u{2029}', n)) => {
                out.extend_from_slice(b"\\u2029");
                i += n;
            }
            Some((_, n)) => {
                out.extend_from_slice(&s[i..i + n]);
                i += n;
            }
            None => {
                out.extend_from_slice(b"\\ufffd");
                i += 1;
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::etcd::test_util::T;

    #[test]
    fn go_json_escaping() {
        let mut out = Vec::new();
        json_str(
            &mut out,
            "<a>&b\u{1}\u{8}\u{c}\t\n\r\"\\\u{2028}é\u{7f}x".as_bytes(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"\\u003ca\\u003e\\u0026b\\u0001\\u0008\\u000c\\t\\n\\r\\\"\\\\\\u2028é\u{7f}x\""
        );
        let mut out = Vec::new();
        json_str(&mut out, b"bad\xff\xe2\x82A");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"bad\\ufffd\\ufffd\\ufffdA\""
        );
        let mut t = T::new();
        let (_, _, b) = t.call(0, "PUT", "/v2/keys/bad%FF", Some("value=%FE%41"));
        assert_eq!(b, "{\"action\":\"set\",\"node\":{\"key\":\"/bad\\ufffd\",\"value\":\"\\ufffdA\",\"modifiedIndex\":4,\"createdIndex\":4}}\n");
    }
}
