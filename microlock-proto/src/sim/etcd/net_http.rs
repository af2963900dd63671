//! Go's `net/http` server as etcd runs it: what happens before etcd's keys handler sees a
//! request (path decoding, `OPTIONS`, the `ServeMux` redirect to the clean path, `404`, `405`),
//! `Request.ParseForm`, and the responses (JSON with `X-Etcd-Index`, `http.Error`'s plain
//! text, the answer to a bad request line, `http.Redirect`).

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::error::{EtcdError, E_INVALID_FORM};
use super::mime::parse_media_type;
use super::request::parse_params;
use super::url::{mux_clean_path, parse_query, path_clean, unescape, Form};
use super::{EtcdVersion, Served, SimEtcd};

/// Go's `parsePostForm` limit.
const MAX_FORM_BYTES: usize = 10 << 20;
pub(super) const KEYS_PREFIX: &[u8] = b"/v2/keys";

impl SimEtcd {
    pub(super) fn serve(&mut self, id: u64, req: &Request<Vec<u8>>, now: i128) -> Served {
        let method = req.method();
        // Go's server decodes the path while parsing the request line.
        let path = match unescape(req.uri().path().as_bytes(), false) {
            Ok(p) if p.is_empty() => b"/".to_vec(),
            Ok(p) => p,
            Err(_) => return Served::Now(go_bad_request(), None),
        };
        // etcd's CORS wrapper answers every OPTIONS request (a preflight) itself.
        if *method == Method::OPTIONS {
            return Served::Now(build(200, &[], Vec::new()), None);
        }
        // Go's ServeMux redirects unclean paths.
        let clean = mux_clean_path(&path);
        if clean != path {
            return Served::Now(redirect(method, &clean, req.uri().query()), None);
        }
        if !(path == KEYS_PREFIX || path.starts_with(b"/v2/keys/")) {
            return Served::Now(plain_error(404, "404 page not found\n", &[]), None);
        }
        if !matches!(
            *method,
            Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE
        ) {
            return Served::Now(
                plain_error(
                    405,
                    "Method Not Allowed\n",
                    &[("allow", "HEAD,GET,PUT,POST,DELETE")],
                ),
                None,
            );
        }
        let form = match self.parse_form(req) {
            Ok(form) => form,
            Err(cause) => {
                return Served::Now(EtcdError::new(E_INVALID_FORM, cause, 0).response(), None)
            }
        };
        let params = match parse_params(&form, method) {
            Ok(p) => p,
            Err(e) => return Served::Now(e.response(), None),
        };
        let mut key = b"/".to_vec();
        key.extend_from_slice(&path[KEYS_PREFIX.len()..]);
        let key = path_clean(&key);
        match self.dispatch(id, method, &key, &params, now) {
            Ok(served) => served,
            Err(e) => Served::Now(e.response(), None),
        }
    }

    /// Go's `Request.ParseForm`: the body (PUT/POST with a form content type) first, then the
    /// query.
    pub(super) fn parse_form(&self, req: &Request<Vec<u8>>) -> Result<Form, String> {
        let legacy = self.version == EtcdVersion::V3_5;
        let mut err: Option<String> = None;
        let mut form = Form::new();
        if matches!(*req.method(), Method::PUT | Method::POST) {
            let ct = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty())
                .unwrap_or(b"application/octet-stream");
            match parse_media_type(ct, legacy) {
                Err(e) => err = Some(e.to_string()),
                Ok(media_type) if media_type == b"application/x-www-form-urlencoded" => {
                    if req.body().len() > MAX_FORM_BYTES {
                        err = Some("http: POST too large".to_string());
                    } else {
                        let (values, e) = parse_query(req.body(), legacy);
                        err = e;
                        form = values;
                    }
                }
                Ok(_) => {}
            }
        }
        let (values, e) = parse_query(req.uri().query().unwrap_or("").as_bytes(), legacy);
        form.extend(values);
        match err.or(e) {
            Some(e) => Err(e),
            None => Ok(form),
        }
    }
}

fn build(status: u16, headers: &[(&str, &[u8])], body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

pub(super) fn json_response(status: u16, etcd_index: u64, body: Vec<u8>) -> Response<Vec<u8>> {
    build(
        status,
        &[
            ("content-type", b"application/json"),
            ("x-etcd-index", etcd_index.to_string().as_bytes()),
        ],
        body,
    )
}

/// Go's `http.Error`.
fn plain_error(status: u16, body: &str, extra: &[(&str, &str)]) -> Response<Vec<u8>> {
    let mut headers: Vec<(&str, &[u8])> = extra.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    headers.push(("content-type", b"text/plain; charset=utf-8"));
    headers.push(("x-content-type-options", b"nosniff"));
    build(status, &headers, body.as_bytes().to_vec())
}

/// What Go's server answers to a request line it cannot parse (here: a bad `%` escape).
fn go_bad_request() -> Response<Vec<u8>> {
    build(
        400,
        &[
            ("content-type", b"text/plain; charset=utf-8"),
            ("connection", b"close"),
        ],
        b"400 Bad Request".to_vec(),
    )
}

/// Go's `ServeMux` redirect to the clean path (`http.Redirect` with 301).
fn redirect(method: &Method, clean: &[u8], query: Option<&str>) -> Response<Vec<u8>> {
    let mut location = escape_path(clean);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        location.push('?');
        location.push_str(q);
    }
    let mut headers: Vec<(&str, &[u8])> = vec![("location", location.as_bytes())];
    if *method == Method::GET || *method == Method::HEAD {
        headers.push(("content-type", b"text/html; charset=utf-8"));
    }
    let body = if *method == Method::GET {
        format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            html_escape(&location)
        )
        .into_bytes()
    } else {
        Vec::new()
    };
    build(301, &headers, body)
}

/// Go's `url.PathEscape`-like escaping of `URL.EscapedPath` (mode `encodePath`).
fn escape_path(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len());
    for &b in p {
        let keep = b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sim::etcd::test_util::{req, text, FORM, T};
    use crate::sim::etcd::Reply;

    #[test]
    fn semicolons_per_version() {
        let t0 = Instant::now();
        let mut e = SimEtcd::new(t0).with_version(EtcdVersion::V3_5);
        let Reply::Now(r) = e.handle(
            1,
            &req(
                "PUT",
                "/v2/keys/a?x=1;prevExist=false",
                Some("value=v;ttl=5"),
            ),
            t0,
        ) else {
            panic!()
        };
        assert_eq!(r.status(), 201);
        assert!(r.body().starts_with(
            b"{\"action\":\"create\",\"node\":{\"key\":\"/a\",\"value\":\"v\",\"expiration\""
        ));
        assert_eq!(EtcdVersion::from_version_string("3.5.1"), EtcdVersion::V3_5);
        assert_eq!(
            EtcdVersion::from_version_string("3.4.23"),
            EtcdVersion::V3_4
        );
    }

    #[test]
    fn paths_like_go() {
        let mut t = T::new();
        let r = t.now(0, "GET", "/v2/keys/a//b", None);
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], "/v2/keys/a/b");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(
            r.body().as_slice(),
            b"<a href=\"/v2/keys/a/b\">Moved Permanently</a>.\n\n"
        );
        let r = t.now(0, "PUT", "/v2/keys/a//b?x=1&y=a%20b", Some("value=1"));
        assert_eq!((r.status().as_u16(), r.body().len()), (301, 0));
        assert_eq!(r.headers()["location"], "/v2/keys/a/b?x=1&y=a%20b");
        assert!(r.headers().get("content-type").is_none());
        for (p, loc) in [
            ("/v2/keys/a/%2E%2E/b%20c%3Fd?q=1", "/v2/keys/b%20c%3Fd?q=1"),
            ("/v2/keys/a%2F%2Fb", "/v2/keys/a/b"),
            ("/v2/keys/./a", "/v2/keys/a"),
            ("/v2/keys/..", "/v2"),
            ("/v2/keys/a/..", "/v2/keys"),
            ("/v2/keys//", "/v2/keys/"),
            ("/v2//keys/a", "/v2/keys/a"),
        ] {
            let r = t.now(0, "GET", p, None);
            assert_eq!(
                (
                    r.status().as_u16(),
                    r.headers()["location"].to_str().unwrap()
                ),
                (301, loc),
                "{p}"
            );
        }
        let r = t.now(0, "GET", "/v2/keys/a%zz", None);
        assert_eq!(
            (r.status().as_u16(), r.body().as_slice()),
            (400, &b"400 Bad Request"[..])
        );
        let r = t.now(0, "GET", "/v2/keysfoo", None);
        assert_eq!(
            (r.status().as_u16(), r.body().as_slice()),
            (404, &b"404 page not found\n"[..])
        );
        let r = t.now(0, "OPTIONS", "/v2/keys//a", None);
        assert_eq!((r.status().as_u16(), r.body().len()), (200, 0));
        let r = t.now(0, "PATCH", "/v2/keys/a", None);
        assert_eq!(
            (r.status().as_u16(), r.body().as_slice()),
            (405, &b"Method Not Allowed\n"[..])
        );
        assert_eq!(r.headers()["allow"], "HEAD,GET,PUT,POST,DELETE");
        // root
        for (m, pq) in [
            ("PUT", "/v2/keys/"),
            ("PUT", "/v2/keys"),
            ("PUT", "/v2/keys?prevExist=true"),
            ("PUT", "/v2/keys?prevValue=x"),
            ("DELETE", "/v2/keys?recursive=true"),
        ] {
            let (s, i, b) = t.call(0, m, pq, Some("value=1"));
            assert_eq!((s, i.as_str(), b.as_str()), (400, "3", "{\"errorCode\":107,\"message\":\"Root is read only\",\"cause\":\"/\",\"index\":3}\n"), "{m} {pq}");
        }
        let (s, _, b) = t.call(0, "DELETE", "/v2/keys?prevValue=x", None);
        assert_eq!(
            (s, b.as_str()),
            (
                403,
                "{\"errorCode\":102,\"message\":\"Not a file\",\"index\":3}\n"
            )
        );
        // special characters; %2F is a separator, trailing slash dropped
        let (s, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/sp%20a%3Fb%25c+d%2Be",
            Some("value=x+y%2Bz"),
        );
        assert_eq!(s, 201);
        assert!(
            b.contains("\"key\":\"/sp a?b%c+d+e\",\"value\":\"x y+z\""),
            "{b}"
        );
        assert_eq!(t.call(0, "PUT", "/v2/keys/n%2Fm/", Some("value=1")).0, 201);
        assert_eq!(t.etcd.get("/n/m").unwrap().0, "1");
        let (s, _, b) = t.call(0, "GET", "/v2/keys/n/m/", None);
        assert_eq!(s, 200);
        assert!(b.contains("\"key\":\"/n/m\""));
        let (s, _, b) = t.call(0, "GET", "/v2/keys/x/y/z", None);
        assert_eq!(
            (s, b.as_str()),
            (
                404,
                "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/x\",\"index\":5}\n"
            )
        );
        let (s, _, b) = t.call(0, "PUT", "/v2/keys/n/m/o", Some("value=1"));
        assert_eq!((s, b.as_str()), (400, "{\"errorCode\":104,\"message\":\"Not a directory\",\"cause\":\"/n/m\",\"index\":5}\n"));
        assert_eq!(
            t.call(0, "PUT", "/v2/keys/n/m/o?prevExist=false", Some("value=1"))
                .0,
            400
        );
        assert_eq!(t.call(0, "GET", "/v2/keys/n/m/o", None).0, 400);
        // HEAD: no body
        let r = t.now(0, "HEAD", "/v2/keys/n/m", None);
        assert_eq!((r.status().as_u16(), r.body().len()), (200, 0));
    }

    #[test]
    fn form_rules() {
        let mut t = T::new();
        // body wins over query
        let (_, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/q?value=query",
            Some("value=body&value=body2"),
        );
        assert!(b.contains("\"value\":\"body\""));
        // query used when body lacks it; content-type parameters are fine
        let r = Request::put("/v2/keys/q?value=query")
            .header(
                "content-type",
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            )
            .body(b"ttl=5".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(1, &r, t.t0) else {
            panic!()
        };
        assert!(String::from_utf8_lossy(r.body()).contains("\"value\":\"query\",\"expiration\""));
        // without the form content type the body is ignored
        let r = Request::put("/v2/keys/q")
            .header("content-type", "text/plain")
            .body(b"value=b".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(2, &r, t.t0) else {
            panic!()
        };
        assert!(String::from_utf8_lossy(r.body()).contains("\"value\":\"\""));
        let r = Request::put("/v2/keys/q")
            .body(b"value=b".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(3, &r, t.t0) else {
            panic!()
        };
        assert!(String::from_utf8_lossy(r.body()).contains("\"value\":\"\""));
        let r = Request::put("/v2/keys/q")
            .header("content-type", "bad/;;;")
            .body(b"value=b".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(4, &r, t.t0) else {
            panic!()
        };
        assert_eq!(text(&r).2, "{\"errorCode\":210,\"message\":\"Invalid POST form\",\"cause\":\"mime: expected token after slash\",\"index\":0}\n");
        // DELETE body is ignored: unconditional delete
        t.call(0, "PUT", "/v2/keys/d", Some("value=v"));
        let r = Request::delete("/v2/keys/d")
            .header("content-type", FORM)
            .body(b"prevValue=zz".to_vec())
            .unwrap();
        let Reply::Now(r) = t.etcd.handle(5, &r, t.t0) else {
            panic!()
        };
        assert!(text(&r).2.starts_with("{\"action\":\"delete\""));
        // noValueOnSuccess
        let (s, _, b) = t.call(
            0,
            "PUT",
            "/v2/keys/nv?noValueOnSuccess=true",
            Some("value=1"),
        );
        assert_eq!((s, b.as_str()), (201, "{\"action\":\"set\"}\n"));
    }
}
