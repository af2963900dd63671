//! Go's texts: `strconv.Quote`, `encoding/json`'s string escaping, and `encoding/base64`'s
//! standard decoding with its error offsets.

use super::gojson::DecodeError;

/// The length of the valid UTF-8 sequence starting `s`, or 0.
pub(crate) fn utf8_len(s: &[u8]) -> usize {
    let n = match s[0] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return 0,
    };
    if s.len() >= n && std::str::from_utf8(&s[..n]).is_ok() {
        n
    } else {
        0
    }
}

/// Whether Go's `strconv.IsPrint` holds (for the runes the model meets: controls, NBSP and
/// the soft hyphen are not printable).
pub(crate) fn is_go_print(ch: char) -> bool {
    !(ch.is_control() || ch == '\u{00A0}' || ch == '\u{00AD}')
}

/// Go's `strconv.Quote` of a byte string (`%q`): printable characters kept, the rest escaped
/// (`\a \b \f \n \r \t \v`, `\xNN` for other ASCII controls and invalid UTF-8 bytes, `\uNNNN`
/// for non-printable characters). Non-ASCII characters other than controls count as printable.
pub(crate) fn go_quote(s: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c < 0x80 {
            match c {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                7 => out.push_str("\\a"),
                8 => out.push_str("\\b"),
                12 => out.push_str("\\f"),
                b'\n' => out.push_str("\\n"),
                b'\r' => out.push_str("\\r"),
                b'\t' => out.push_str("\\t"),
                11 => out.push_str("\\v"),
                0..=0x1f | 0x7f => out.push_str(&format!("\\x{c:02x}")),
                _ => out.push(char::from(c)),
            }
            i += 1;
            continue;
        }
        let len = utf8_len(&s[i..]);
        if len == 0 {
            out.push_str(&format!("\\x{c:02x}"));
            i += 1;
            continue;
        }
        let ch = std::str::from_utf8(&s[i..i + len])
            .ok()
            .and_then(|t| t.chars().next())
            .unwrap_or('\u{FFFD}');
        if is_go_print(ch) {
            out.push(ch);
        } else if (ch as u32) < 0x10000 {
            out.push_str(&format!("\\u{:04x}", ch as u32));
        } else {
            out.push_str(&format!("\\U{:08x}", ch as u32));
        }
        i += len;
    }
    out.push('"');
    out
}

/// Writes `s` as a JSON string the way Go's `encoding/json` does: `<`, `>`, `&`, U+2028 and
/// U+2029 as `\uXXXX`, controls as `\n \r \t` or `\u00XX`, invalid UTF-8 as `\ufffd`.
pub(crate) fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c < 0x80 {
            match c {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'<' | b'>' | b'&' | 0..=0x1f => {
                    out.extend_from_slice(format!("\\u00{c:02x}").as_bytes())
                }
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        let len = utf8_len(&s[i..]);
        if len == 0 {
            out.extend_from_slice(b"\\ufffd");
            i += 1;
        } else if &s[i..i + len] == "\u{2028}".as_bytes() {
            out.extend_from_slice(b"\\u2028");
            i += len;
        } else if &s[i..i + len] == "\u{2029}".as_bytes() {
            out.extend_from_slice(b"\\u2029");
            i += len;
        } else {
            out.extend_from_slice(&s[i..i + len]);
            i += len;
        }
    }
    out.push(b'"');
}

/// Go's `base64.StdEncoding.DecodeString`: padding required, `\r` and `\n` skipped anywhere,
/// trailing bits ignored; the error names the offset of the first bad byte, as Go's
/// `CorruptInputError` does (`illegal base64 data at input byte N`).
pub(crate) fn go_base64_decode(src: &[u8]) -> Result<Vec<u8>, DecodeError> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let nl = |c: u8| c == b'\n' || c == b'\r';
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    loop {
        let mut dbuf = [0u32; 4];
        let mut dlen = 4;
        let mut j = 0;
        let mut end = false;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // Padding is required: a short final quantum is corrupt.
                return Err(corrupt(si - j));
            }
            let c = src[si];
            si += 1;
            if let Some(v) = sextet(c) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if nl(c) {
                continue;
            }
            if c != b'=' {
                return Err(corrupt(si - 1));
            }
            match j {
                0 | 1 => return Err(corrupt(si - 1)),
                2 => {
                    while si < src.len() && nl(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(corrupt(src.len()));
                    }
                    if src[si] != b'=' {
                        return Err(corrupt(si - 1));
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && nl(src[si]) {
                si += 1;
            }
            if si < src.len() {
                return Err(corrupt(si));
            }
            dlen = j;
            end = true;
            break;
        }
        let val = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3];
        let bytes = [(val >> 16) as u8, (val >> 8) as u8, val as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if end {
            return Ok(out);
        }
    }
}

/// Go's `base64.StdEncoding.EncodeToString`.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_go_decodes_it() {
        let d = |s: &str| go_base64_decode(s.as_bytes());
        assert_eq!(d("YQ=="), Ok(b"a".to_vec()));
        assert_eq!(d("YR=="), Ok(b"a".to_vec()));
        assert_eq!(d("YWI="), Ok(b"ab".to_vec()));
        assert_eq!(d("YQ\r\n=="), Ok(b"a".to_vec()));
        assert_eq!(d("YQ==\n"), Ok(b"a".to_vec()));
        assert_eq!(d(""), Ok(vec![]));
        let e = |s: &str, at: usize| {
            assert_eq!(
                d(s),
                Err(format!("illegal base64 data at input byte {at}")),
                "{s}"
            )
        };
        e("YQ", 0);
        e("a", 0);
        e("YWI", 0);
        e("YQ=", 3);
        e("YQ===", 4);
        e("Y Q==", 1);
        e("-_8=", 0);
        e("YQ==YQ==", 4);
        e("YQ==\u{0}", 4);
    }

    #[test]
    fn strings_escape_as_go() {
        let mut out = Vec::new();
        json_string(&mut out, "a\"<\n\u{1}é\u{2028}".as_bytes());
        assert_eq!(out, b"\"a\\\"\\u003c\\n\\u0001\xc3\xa9\\u2028\"".to_vec());
        let mut out = Vec::new();
        json_string(&mut out, b"\xff");
        assert_eq!(out, b"\"\\ufffd\"".to_vec());
        assert_eq!(go_quote(b"a\"\x00\xff"), "\"a\\\"\\x00\\xff\"");
    }
}
