//! Go's `mime.ParseMediaType`, as `Request.ParseForm` applies it to a request's
//! `Content-Type`.

fn is_tspecial(b: u8) -> bool {
    b"()<>@,;:\\\"/[]?=".contains(&b)
}

fn is_token_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !is_tspecial(b)
}

fn consume_token(v: &[u8]) -> (&[u8], &[u8]) {
    let end = v.iter().position(|&b| !is_token_char(b)).unwrap_or(v.len());
    v.split_at(end)
}

fn trim_left_space(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !is_go_space(*b)).unwrap_or(v.len());
    &v[start..]
}

fn trim_space(v: &[u8]) -> &[u8] {
    let v = trim_left_space(v);
    let end = v
        .iter()
        .rposition(|b| !is_go_space(*b))
        .map_or(0, |i| i + 1);
    &v[..end]
}

fn is_go_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// Go's `mime.consumeValue`.
fn consume_value(v: &[u8]) -> (Vec<u8>, &[u8]) {
    match v.first() {
        None => (Vec::new(), v),
        Some(&b'"') => {
            let mut buf = Vec::new();
            let mut i = 1;
            while i < v.len() {
                let r = v[i];
                if r == b'"' {
                    return (buf, &v[i + 1..]);
                }
                if r == b'\\' && i + 1 < v.len() && is_tspecial(v[i + 1]) {
                    buf.push(v[i + 1]);
                    i += 2;
                    continue;
                }
                if r == b'\r' || r == b'\n' {
                    return (Vec::new(), v);
                }
                buf.push(r);
                i += 1;
            }
            (Vec::new(), v)
        }
        Some(_) => {
            let (token, rest) = consume_token(v);
            (token.to_vec(), rest)
        }
    }
}

/// Go's `mime.consumeMediaParam`.
fn consume_media_param(v: &[u8]) -> Option<(Vec<u8>, Vec<u8>, &[u8])> {
    let rest = trim_left_space(v);
    let rest = trim_left_space(rest.strip_prefix(b";")?);
    let (param, rest) = consume_token(rest);
    if param.is_empty() {
        return None;
    }
    let rest = trim_left_space(trim_left_space(rest).strip_prefix(b"=")?);
    let (value, rest2) = consume_value(rest);
    if value.is_empty() && rest2.len() == rest.len() {
        return None;
    }
    Some((param.to_ascii_lowercase(), value, rest2))
}

/// Go's `mime.ParseMediaType`, reduced to what decides a request's fate: the lower-cased media
/// type, or the error `Request.ParseForm` would report.
pub(super) fn parse_media_type(v: &[u8], legacy: bool) -> Result<Vec<u8>, &'static str> {
    let base = v.split(|&b| b == b';').next().unwrap_or_default();
    let media_type = trim_space(&base.to_ascii_lowercase()).to_vec();
    let (kind, rest) = consume_token(&media_type);
    if kind.is_empty() {
        return Err("mime: no media type");
    }
    if !rest.is_empty() {
        let Some(rest) = rest.strip_prefix(b"/") else {
            return Err("mime: expected slash after first token");
        };
        let (sub, rest) = consume_token(rest);
        if sub.is_empty() {
            return Err("mime: expected token after slash");
        }
        if !rest.is_empty() {
            return Err("mime: unexpected content after media subtype");
        }
    }
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut rest = &v[base.len()..];
    loop {
        rest = trim_left_space(rest);
        if rest.is_empty() {
            break;
        }
        let Some((key, value, tail)) = consume_media_param(rest) else {
            if trim_space(rest) == b";" {
                break;
            }
            return Err("mime: invalid media parameter");
        };
        match params.iter().find(|(k, _)| *k == key) {
            Some((_, old)) if legacy || *old != value => {
                return Err("mime: duplicate parameter name")
            }
            Some(_) => {}
            None => params.push((key, value)),
        }
        rest = tail;
    }
    Ok(media_type)
}
