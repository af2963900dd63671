//! Go's JSON as the gateway reads it: a parser whose syntax errors are Go's `encoding/json`
//! scanner messages, and the typed field decoding of `jsonpb` (int64 as number or string,
//! `null` as absent, bytes as Go's padded standard base64, enums by name or number, messages,
//! repeated fields).

use std::collections::BTreeMap;

use crate::sim::etcd::EtcdVersion;

use super::gotext::{go_base64_decode, go_quote, is_go_print, utf8_len};

/// A JSON value as read from a request body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// The literal as written (`1`, `-0`, `1.5e3`).
    Number(String),
    /// `raw`: the bytes between the quotes as written; `text`: the unescaped string (invalid
    /// UTF-8 and lone surrogates become U+FFFD, as Go does).
    Str {
        raw: Vec<u8>,
        text: Vec<u8>,
    },
    Array(Vec<Value>),
    /// Members in input order (duplicates kept; the last one wins when read).
    Object(Vec<(Vec<u8>, Value)>),
}

impl Value {
    /// The kind name in Go's `UnmarshalTypeError` ("number", "string", ...).
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::Str { .. } => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

/// A decoding error: the text etcd puts in `error` and `message`.
pub(crate) type DecodeError = String;

/// How the request body ended up: a value, or nothing at all (an empty or blank body, which the
/// gateway reads as an empty request).
pub(crate) enum Body {
    Empty,
    Value(Value),
}

/// Reads the first JSON value of `input` as Go's `json.Decoder` does (what follows it is never
/// read). A value cut short is `unexpected EOF`.
pub(crate) fn decode_body(input: &[u8]) -> Result<Body, DecodeError> {
    let mut p = Parser { s: input, i: 0 };
    p.skip_ws();
    if p.i == input.len() {
        return Ok(Body::Empty);
    }
    match p.value() {
        Ok(v) => Ok(Body::Value(v)),
        Err(Fail::Eof) => Err("unexpected EOF".into()),
        Err(Fail::Syntax(m)) => Err(m),
    }
}

/// Parses all of `input` as one JSON value as Go's `json.Unmarshal` does (trailing data is an
/// error, an empty or cut input is `unexpected end of JSON input`).
fn unmarshal_whole(input: &[u8]) -> Result<Value, DecodeError> {
    let mut p = Parser { s: input, i: 0 };
    p.skip_ws();
    let v = match p.value() {
        Ok(v) => v,
        Err(Fail::Eof) => return Err("unexpected end of JSON input".into()),
        Err(Fail::Syntax(m)) => return Err(m),
    };
    p.skip_ws();
    if p.i < input.len() {
        return Err(invalid(input[p.i], "after top-level value"));
    }
    Ok(v)
}

enum Fail {
    Eof,
    Syntax(String),
}

fn invalid(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Result<u8, Fail> {
        self.s.get(self.i).copied().ok_or(Fail::Eof)
    }

    fn syntax<T>(&self, context: &str) -> Result<T, Fail> {
        Err(Fail::Syntax(invalid(self.s[self.i], context)))
    }

    fn value(&mut self) -> Result<Value, Fail> {
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => {
                let (raw, text) = self.string()?;
                Ok(Value::Str { raw, text })
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true").map(|_| Value::Bool(true)),
            b'f' => self.literal(b"false").map(|_| Value::Bool(false)),
            b'n' => self.literal(b"null").map(|_| Value::Null),
            _ => self.syntax("looking for beginning of value"),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Fail> {
        for (k, &want) in word.iter().enumerate() {
            let c = self.peek()?;
            if c != want {
                let lit = std::str::from_utf8(word).unwrap_or("");
                return self.syntax(&format!(
                    "in literal {lit} (expecting {})",
                    quote_char(want)
                ));
            }
            let _ = k;
            self.i += 1;
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Value, Fail> {
        self.i += 1;
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(Value::Object(members));
        }
        loop {
            if self.peek()? != b'"' {
                return self.syntax("looking for beginning of object key string");
            }
            let (_, key) = self.string()?;
            self.skip_ws();
            if self.peek()? != b':' {
                return self.syntax("after object key");
            }
            self.i += 1;
            self.skip_ws();
            let v = self.value()?;
            members.push((key, v));
            self.skip_ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.skip_ws();
                }
                b'}' => {
                    self.i += 1;
                    return Ok(Value::Object(members));
                }
                _ => return self.syntax("after object key:value pair"),
            }
        }
    }

    fn array(&mut self) -> Result<Value, Fail> {
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.skip_ws();
                }
                b']' => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                _ => return self.syntax("after array element"),
            }
        }
    }

    fn number(&mut self) -> Result<Value, Fail> {
        let start = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return self.syntax("in numeric literal");
            }
        }
        // Go's scanner: a leading 0 ends the integer part.
        if self.s[self.i] == b'0' {
            self.i += 1;
        } else {
            self.digits();
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return self.syntax("after decimal point in numeric literal");
            }
            self.digits();
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek()?, b'+' | b'-') {
                self.i += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return self.syntax("in exponent of numeric literal");
            }
            self.digits();
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        Ok(Value::Number(text))
    }

    fn digits(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
    }

    /// A string at `self.i` (on its `"`): its raw bytes and its unescaped text.
    fn string(&mut self) -> Result<(Vec<u8>, Vec<u8>), Fail> {
        self.i += 1;
        let start = self.i;
        let mut text: Vec<u8> = Vec::new();
        loop {
            let c = self.peek()?;
            match c {
                b'"' => {
                    let raw = self.s[start..self.i].to_vec();
                    self.i += 1;
                    return Ok((raw, text));
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => text.push(e),
                        b'b' => text.push(8),
                        b'f' => text.push(12),
                        b'n' => text.push(b'\n'),
                        b'r' => text.push(b'\r'),
                        b't' => text.push(b'\t'),
                        b'u' => {
                            let u = self.hex4()?;
                            let ch = if (0xD800..0xDC00).contains(&u)
                                && self.s.get(self.i) == Some(&b'\\')
                                && self.s.get(self.i + 1) == Some(&b'u')
                            {
                                // A surrogate pair, when the next escape completes it (a
                                // wrong second half is decoded on its own).
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    char::from_u32(0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00))
                                } else {
                                    self.i = save;
                                    None
                                }
                            } else {
                                char::from_u32(u)
                            };
                            let ch = ch.unwrap_or('\u{FFFD}');
                            let mut buf = [0u8; 4];
                            text.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => {
                            self.i -= 1;
                            return self.syntax("in string escape code");
                        }
                    }
                }
                0..=0x1f => return self.syntax("in string literal"),
                0x80..=0xff => {
                    // Invalid UTF-8 becomes U+FFFD, byte by byte, as Go's unquote does.
                    let rest = &self.s[self.i..];
                    let len = utf8_len(rest);
                    if len == 0 {
                        text.extend_from_slice("\u{FFFD}".as_bytes());
                        self.i += 1;
                    } else {
                        text.extend_from_slice(&rest[..len]);
                        self.i += len;
                    }
                }
                _ => {
                    text.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, Fail> {
        let mut v = 0u32;
        for _ in 0..4 {
            let c = self.peek()?;
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return self.syntax("in \\u hexadecimal character escape"),
            };
            v = v * 16 + u32::from(d);
            self.i += 1;
        }
        Ok(v)
    }
}

/// Go's `quoteChar` of the JSON scanner: `'x'`, `'\n'`, `'\x00'`, `'\u0080'`.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        _ => {
            let q = go_quote(&[c]);
            // A byte ≥ 0x80 is the rune U+0080..U+00FF in Go (`string(c)`).
            let q = if c >= 0x80 {
                let ch = char::from(c);
                if is_go_print(ch) {
                    format!("\"{ch}\"")
                } else {
                    format!("\"\\u{:04x}\"", c)
                }
            } else {
                q
            };
            format!("'{}'", &q[1..q.len() - 1])
        }
    }
}

/// An enum's names (by number) and the type names Go prints in errors for 3.4 and 3.5.
pub(crate) struct EnumType {
    pub(crate) names: &'static [&'static str],
    pub(crate) go_v34: &'static str,
    pub(crate) go_v35: &'static str,
}

/// The members of one JSON object, read the way `jsonpb` reads a message: the last of duplicate
/// names wins, a field is found by its proto name or else its JSON (camelCase) name, `null` is
/// absent, unknown names are ignored.
pub(crate) struct Obj<'a> {
    fields: BTreeMap<&'a [u8], &'a Value>,
    version: EtcdVersion,
}

impl<'a> Obj<'a> {
    /// The message in `v`: an object, or `null` (an empty message).
    pub(crate) fn new(v: &'a Value, version: EtcdVersion) -> Result<Obj<'a>, DecodeError> {
        match v {
            Value::Object(members) => Ok(Obj {
                fields: members.iter().map(|(k, v)| (k.as_slice(), v)).collect(),
                version,
            }),
            Value::Null => Ok(Obj::empty(version)),
            other => Err(type_error(other, "map[string]json.RawMessage")),
        }
    }

    pub(crate) fn empty(version: EtcdVersion) -> Obj<'a> {
        Obj {
            fields: BTreeMap::new(),
            version,
        }
    }

    fn get(&self, name: &str, camel: &str) -> Option<&'a Value> {
        let v = self
            .fields
            .get(name.as_bytes())
            .or_else(|| self.fields.get(camel.as_bytes()))?;
        (!matches!(v, Value::Null)).then_some(*v)
    }

    /// Whether the field is present and not `null`.
    pub(crate) fn has(&self, name: &str, camel: &str) -> bool {
        self.get(name, camel).is_some()
    }

    pub(crate) fn int64(&self, name: &str, camel: &str) -> Result<i64, DecodeError> {
        match self.get(name, camel) {
            None => Ok(0),
            Some(v) => int_value(v, "int64", i64::MIN, i64::MAX),
        }
    }

    pub(crate) fn bool(&self, name: &str, camel: &str) -> Result<bool, DecodeError> {
        match self.get(name, camel) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(type_error(v, "bool")),
        }
    }

    pub(crate) fn bytes(&self, name: &str, camel: &str) -> Result<Vec<u8>, DecodeError> {
        match self.get(name, camel) {
            None => Ok(Vec::new()),
            Some(Value::Str { text, .. }) => go_base64_decode(text),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::Null => Ok(0),
                    v => int_value(v, "uint8", 0, 255).map(|n| n as u8),
                })
                .collect(),
            Some(v) => Err(type_error(v, "[]uint8")),
        }
    }

    pub(crate) fn enumeration(
        &self,
        name: &str,
        camel: &str,
        ty: &EnumType,
    ) -> Result<i32, DecodeError> {
        match self.get(name, camel) {
            None => Ok(0),
            Some(v) => enum_value(v, ty, self.version),
        }
    }

    pub(crate) fn repeated_enum(
        &self,
        name: &str,
        camel: &str,
        ty: &EnumType,
    ) -> Result<Vec<i32>, DecodeError> {
        self.list(name, camel)?
            .iter()
            .map(|v| match v {
                Value::Null => Ok(0),
                v => enum_value(v, ty, self.version),
            })
            .collect()
    }

    /// A message field: `None` when absent or `null`.
    pub(crate) fn message(&self, name: &str, camel: &str) -> Result<Option<Obj<'a>>, DecodeError> {
        self.get(name, camel)
            .map(|v| Obj::new(v, self.version))
            .transpose()
    }

    pub(crate) fn repeated_message(
        &self,
        name: &str,
        camel: &str,
    ) -> Result<Vec<Obj<'a>>, DecodeError> {
        self.list(name, camel)?
            .iter()
            .map(|v| Obj::new(v, self.version))
            .collect()
    }

    fn list(&self, name: &str, camel: &str) -> Result<&'a [Value], DecodeError> {
        match self.get(name, camel) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(v) => Err(type_error(v, "[]json.RawMessage")),
        }
    }
}

fn type_error(v: &Value, go_type: &str) -> DecodeError {
    format!(
        "json: cannot unmarshal {} into Go value of type {go_type}",
        v.kind()
    )
}

/// An integer field as `jsonpb` reads it: a number, or a string whose raw content (not
/// unescaped) is parsed again as a whole JSON value.
fn int_value(v: &Value, go_type: &str, min: i64, max: i64) -> Result<i64, DecodeError> {
    let inner;
    let v = match v {
        Value::Str { raw, .. } => {
            inner = unmarshal_whole(raw)?;
            &inner
        }
        v => v,
    };
    match v {
        Value::Null => Ok(0),
        Value::Number(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                format!("json: cannot unmarshal number {text} into Go value of type {go_type}")
            }),
        v => Err(type_error(v, go_type)),
    }
}

fn enum_value(v: &Value, ty: &EnumType, version: EtcdVersion) -> Result<i32, DecodeError> {
    match v {
        Value::Str { raw, .. } => match ty.names.iter().position(|n| n.as_bytes() == raw) {
            Some(i) => Ok(i as i32),
            None => Err(match version {
                EtcdVersion::V3_4 => {
                    format!("unknown value {} for enum {}", go_quote(raw), ty.go_v34)
                }
                EtcdVersion::V3_5 => {
                    let mut quoted = b"\"".to_vec();
                    quoted.extend_from_slice(raw);
                    quoted.push(b'"');
                    format!("unknown value {} for enum {}", go_quote(&quoted), ty.go_v35)
                }
            }),
        },
        v => int_value(v, ty.go_v34, i64::from(i32::MIN), i64::from(i32::MAX)).map(|n| n as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match decode_body(body.as_bytes()) {
            Err(e) => e,
            Ok(_) => panic!("{body} parsed"),
        }
    }

    #[test]
    fn syntax_errors_are_gos() {
        assert_eq!(
            err("notjson"),
            "invalid character 'o' in literal null (expecting 'u')"
        );
        assert_eq!(
            err("xx"),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(
            err(r#"{"key":"YQ==",}"#),
            "invalid character '}' looking for beginning of object key string"
        );
        assert_eq!(
            err(r#"{"key" "YQ=="}"#),
            "invalid character '\"' after object key"
        );
        assert_eq!(
            err(r#"{"a":1 "b"}"#),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(err(r#"{"key":"YQ=="#), "unexpected EOF");
        assert_eq!(err("[1 2]"), "invalid character '2' after array element");
        assert_eq!(err("-x"), "invalid character 'x' in numeric literal");
        assert_eq!(
            err("\"\u{1}\""),
            "invalid character '\\x01' in string literal"
        );
        assert_eq!(
            err("'"),
            "invalid character '\\'' looking for beginning of value"
        );
        assert_eq!(
            err("\u{80}"),
            "invalid character 'Â' looking for beginning of value"
        );
        assert!(matches!(decode_body(b"  "), Ok(Body::Empty)));
        // The decoder reads one value: what follows is never read.
        assert!(matches!(decode_body(b"{} x"), Ok(Body::Value(_))));
    }

    #[test]
    fn int64_as_jsonpb_reads_it() {
        let v = |s: &str| match decode_body(s.as_bytes()) {
            Ok(Body::Value(v)) => v,
            _ => panic!(),
        };
        let get = |s: &str| {
            let v = v(s);
            let o = Obj::new(&v, EtcdVersion::V3_4).unwrap();
            o.int64("limit", "limit")
        };
        assert_eq!(get(r#"{"limit":"5"}"#), Ok(5));
        assert_eq!(get(r#"{"limit":" 5"}"#), Ok(5));
        assert_eq!(get(r#"{"limit":-0}"#), Ok(0));
        assert_eq!(get(r#"{"limit":"99","limit":null}"#), Ok(0));
        assert_eq!(
            get(r#"{"limit":"05"}"#).unwrap_err(),
            "invalid character '5' after top-level value"
        );
        assert_eq!(
            get(r#"{"limit":"abc"}"#).unwrap_err(),
            "invalid character 'a' looking for beginning of value"
        );
        assert_eq!(
            get(r#"{"limit":""}"#).unwrap_err(),
            "unexpected end of JSON input"
        );
        assert_eq!(
            get(r#"{"limit":"\"5\""}"#).unwrap_err(),
            "invalid character '\\\\' looking for beginning of value"
        );
        assert_eq!(
            get(r#"{"limit":1e2}"#).unwrap_err(),
            "json: cannot unmarshal number 1e2 into Go value of type int64"
        );
        assert_eq!(
            get(r#"{"limit":true}"#).unwrap_err(),
            "json: cannot unmarshal bool into Go value of type int64"
        );
        assert_eq!(
            get(r#"{"limit":"99999999999999999999"}"#).unwrap_err(),
            "json: cannot unmarshal number 99999999999999999999 into Go value of type int64"
        );
    }

    #[test]
    fn enum_errors_differ_by_version() {
        let v = match decode_body(br#"{"o":"BAD"}"#) {
            Ok(Body::Value(v)) => v,
            _ => panic!(),
        };
        let ty = EnumType {
            names: &["NONE", "ASCEND", "DESCEND"],
            go_v34: "etcdserverpb.RangeRequest_SortOrder",
            go_v35: "etcdserverpb.RangeRequest.SortOrder",
        };
        let o = Obj::new(&v, EtcdVersion::V3_4).unwrap();
        assert_eq!(
            o.enumeration("o", "o", &ty).unwrap_err(),
            "unknown value \"BAD\" for enum etcdserverpb.RangeRequest_SortOrder"
        );
        let o = Obj::new(&v, EtcdVersion::V3_5).unwrap();
        assert_eq!(
            o.enumeration("o", "o", &ty).unwrap_err(),
            "unknown value \"\\\"BAD\\\"\" for enum etcdserverpb.RangeRequest.SortOrder"
        );
    }
}
