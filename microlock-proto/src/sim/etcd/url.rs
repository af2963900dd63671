//! Go's `net/url` (percent-decoding, `url.ParseQuery`), the `strconv.Quote` text in its errors,
//! and paths: Go's `path.Clean` and `net/http`'s `cleanPath`.

/// A form's values in order (Go's `url.Values`, flattened).
pub(super) type Form = Vec<(Vec<u8>, Vec<u8>)>;

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b.wrapping_sub(b'A').wrapping_add(10),
    }
}

/// Go's `url.unescape` in path (`+` kept) or query-component (`+` is a space) mode; the error
/// is Go's `EscapeError` text.
pub(super) fn unescape(s: &[u8], query: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                if i + 2 >= s.len() || !is_hex(s[i + 1]) || !is_hex(s[i + 2]) {
                    let bad = &s[i..s.len().min(i + 3)];
                    return Err(format!("invalid URL escape {}", go_quote(bad)));
                }
                out.push(hex_val(s[i + 1]) << 4 | hex_val(s[i + 2]));
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Go's `url.ParseQuery`: the values in order and the error to report, if any. `legacy` is Go
/// 1.16's behaviour (`;` separates like `&`); newer Go reports a `;` as an error (and keeps
/// parsing).
pub(super) fn parse_query(s: &[u8], legacy: bool) -> (Form, Option<String>) {
    let mut out = Form::new();
    let mut err: Option<String> = None;
    let mut rest = s;
    while !rest.is_empty() {
        let (key, tail) = match rest
            .iter()
            .position(|&b| b == b'&' || (legacy && b == b';'))
        {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = tail;
        if !legacy && key.contains(&b';') {
            err = Some("invalid semicolon separator in query".to_string());
            continue;
        }
        if key.is_empty() {
            continue;
        }
        let (k, v) = match key.iter().position(|&b| b == b'=') {
            Some(i) => (&key[..i], &key[i + 1..]),
            None => (key, &key[key.len()..]),
        };
        match (unescape(k, true), unescape(v, true)) {
            (Ok(k), Ok(v)) => out.push((k, v)),
            (Err(e), _) | (_, Err(e)) => {
                if err.is_none() {
                    err = Some(e);
                }
            }
        }
    }
    (out, err)
}

/// Go's `strconv.Quote` (non-ASCII characters are all taken as printable).
fn go_quote(s: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut i = 0;
    while i < s.len() {
        match decode_rune(&s[i..]) {
            Some((c, n)) => {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{7}' => out.push_str("\\a"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{b}' => out.push_str("\\v"),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => {
                        out.push_str(&format!("\\x{:02x}", c as u32));
                    }
                    c => out.push(c),
                }
                i += n;
            }
            None => {
                out.push_str(&format!("\\x{:02x}", s[i]));
                i += 1;
            }
        }
    }
    out.push('"');
    out
}

/// Decodes one UTF-8 character at the start of `s` (Go's `utf8.DecodeRune` when valid).
pub(super) fn decode_rune(s: &[u8]) -> Option<(char, usize)> {
    let len = match *s.first()? {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(s.get(..len)?).ok()?.chars().next()?;
    Some((c, len))
}

/// Go's `path.Clean` (same algorithm: a write index over a lazily copied buffer).
pub(super) fn path_clean(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b".".to_vec();
    }
    let rooted = p[0] == b'/';
    let n = p.len();
    let mut buf: Vec<u8> = Vec::with_capacity(n);
    let mut w = 0usize;
    let append = |buf: &mut Vec<u8>, w: &mut usize, c: u8| {
        if *w < buf.len() {
            buf[*w] = c;
        } else {
            buf.push(c);
        }
        *w += 1;
    };
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        append(&mut buf, &mut w, b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if p[r] == b'/' || (p[r] == b'.' && (r + 1 == n || p[r + 1] == b'/')) {
            // An empty or `.` element.
            r += 1;
        } else if p[r] == b'.' && p.get(r + 1) == Some(&b'.') && (r + 2 == n || p[r + 2] == b'/') {
            r += 2;
            if w > dotdot {
                w -= 1;
                while w > dotdot && buf.get(w) != Some(&b'/') {
                    w -= 1;
                }
            } else if !rooted {
                if w > 0 {
                    append(&mut buf, &mut w, b'/');
                }
                append(&mut buf, &mut w, b'.');
                append(&mut buf, &mut w, b'.');
                dotdot = w;
            }
        } else {
            if (rooted && w != 1) || (!rooted && w != 0) {
                append(&mut buf, &mut w, b'/');
            }
            while r < n && p[r] != b'/' {
                append(&mut buf, &mut w, p[r]);
                r += 1;
            }
        }
    }
    if w == 0 {
        return b".".to_vec();
    }
    buf.truncate(w);
    buf
}

/// Go's `net/http.cleanPath` (what `ServeMux` compares the request path against).
pub(super) fn mux_clean_path(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b"/".to_vec();
    }
    let rooted: Vec<u8> = if p[0] == b'/' {
        p.to_vec()
    } else {
        [b"/", p].concat()
    };
    let mut np = path_clean(&rooted);
    if rooted.last() == Some(&b'/') && np != b"/" {
        np.push(b'/');
    }
    np
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_clean() {
        for (i, o) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/..", "/"),
            ("/a/b/..", "/a"),
            ("/a/", "/a"),
            ("", "."),
            ("a/../..", ".."),
            ("a/..", "."),
            ("/a/b/../../..", "/"),
            ("/abc/def/../x", "/abc/x"),
            ("a/b/../../../c", "../c"),
        ] {
            assert_eq!(
                String::from_utf8(path_clean(i.as_bytes())).unwrap(),
                o,
                "{i}"
            );
        }
        assert_eq!(mux_clean_path(b"/a/b/"), b"/a/b/");
        assert_eq!(mux_clean_path(b"/a/b//"), b"/a/b/");
    }
}
