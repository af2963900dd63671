//! Percent-encoding for the only three places user text reaches the wire: path segments,
//! query values and `application/x-www-form-urlencoded` values.
//!
//! One rule serves all three: every byte outside RFC 3986's *unreserved* set
//! (`A-Z a-z 0-9 - . _ ~`) is written as `%XX`. That is stricter than each context needs, and it
//! is what makes injection impossible: a key or node id can never produce `/`, `?`, `&`, `=`,
//! `#`, `+` or `%` on the wire unescaped, so it can neither add a parameter nor change the path.

/// Percent-encodes `input` (UTF-8 bytes), leaving only unreserved characters as they are.
pub(crate) fn percent_encode(input: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(input.len());
    for &b in input.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
    out
}

/// Decodes `%XX` escapes (and, when `plus_is_space`, `+` as a space), the way Go's `net/url`
/// reads queries and form bodies. Invalid escapes are kept literally. Used by the simulator
/// and by tests that read what the machine wrote.
#[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
pub(crate) fn percent_decode(input: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hi = (bytes[i + 1] as char).to_digit(16);
                let lo = (bytes[i + 2] as char).to_digit(16);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_pass_through() {
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
    }

    #[test]
    fn everything_else_is_escaped() {
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_encode("?&=#+%/"), "%3F%26%3D%23%2B%25%2F");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("🔒"), "%F0%9F%94%92");
    }

    #[test]
    fn decode_inverts_encode() {
        for s in ["", "a b", "?&=#+%/", "é🔒", "100%", "%zz"] {
            assert_eq!(
                percent_decode(&percent_encode(s), false),
                s.as_bytes(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn decode_like_go() {
        assert_eq!(percent_decode("a+b%20c", true), b"a b c");
        assert_eq!(percent_decode("a+b", false), b"a+b");
        assert_eq!(percent_decode("100%", false), b"100%");
        assert_eq!(percent_decode("%4", false), b"%4");
        assert_eq!(percent_decode("%zz", false), b"%zz");
    }
}
