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
}
