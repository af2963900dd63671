//! etcd v2 authentication on a test etcd, set up over the v2 HTTP API (`/v2/auth/...`).
//!
//! Enabling authentication changes the whole etcd (every key, every client): a test that does
//! it starts its **own** etcd ([`crate::etcd::EtcdServer::start`], or `start_tls`: the plain
//! side channel of a TLS etcd works too) and never uses [`crate::etcd::shared`].
//!
//! ```text
//! let server = EtcdServer::start();
//! auth::enable_v2_auth(&server.client_url(), "root-pw");
//! auth::add_prefix_user(&server.client_url(), "root-pw", "alice", "alice-pw", "locks");
//! // alice may read and write /locks/* and nothing else; anonymous requests get 401.
//! ```
//!
//! # What etcd answers (3.4.23 and 3.5.1 alike)
//! - A wrong password, an unknown user, no credentials at all, and a right password for a key
//!   outside the user's roles all get the same answer, before any precondition is looked at:
//!   `401 Unauthorized`, `Content-Type: application/json`, `X-Etcd-Index: 0`, no
//!   `WWW-Authenticate` header, body
//!   `{"errorCode":110,"message":"The request requires user authentication","cause":"Insufficient credentials","index":0}`
//!   and a newline ([`UNAUTHORIZED_BODY`]).
//! - A role with read and write on `/P/*` allows every request microlock sends for keys below
//!   `/P/`: `PUT ?prevExist=false` with a TTL (201, or 412 code 105), the compare-and-swap
//!   refresh (`prevValue`, `prevIndex`, `refresh=true`, `ttl`: 200), `DELETE ?prevValue=`
//!   (200, or 404 code 100 / 412 code 101), `GET ?quorum=true`, and `GET ?wait=true&waitIndex=`
//!   watches. `/P` itself (no trailing slash) is outside `/P/*`: 401; `/P/` is inside.
//! - `GET /v2/members`, `GET /version` and `GET /v2/stats/*` need no credentials.
//! - Every request with credentials costs etcd a bcrypt check: 80-150 ms on this machine,
//!   per request (a wrong password too; no credentials: a few ms).
//! - The default `guest` role (what requests without credentials get) starts with read and
//!   write on `/*`; [`enable_v2_auth`] revokes both, else anonymous requests still work.
//! - Over https on an etcd with `--client-cert-auth`, a client certificate whose CN names a v2
//!   user authenticates as that user, without a password (and without the bcrypt cost); basic
//!   credentials, when sent too, are checked as well (a wrong password is 401).
//!
//! The harness's own anonymous reads get 401 too once auth is on: after [`enable_v2_auth`], do
//! not use [`crate::etcd::EtcdServer::wait_serving`] / `quorum_read` or [`crate::inspect`] on
//! that etcd (read with [`node_as`] and root's credentials instead); `GET /version`, which
//! [`crate::etcd::EtcdServer::restart`] waits for, still answers.

use serde_json::{json, Value};

use crate::etcd::{try_raw_request_with_headers, RawResponse, READ_TIMEOUT};
use crate::inspect;

/// The body etcd sends with its `401` (3.4 and 3.5, `Content-Length: 116`): error code 110,
/// and a final newline.
pub const UNAUTHORIZED_BODY: &str = "{\"errorCode\":110,\"message\":\"The request requires user \
     authentication\",\"cause\":\"Insufficient credentials\",\"index\":0}\n";

/// A user name and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds<'a> {
    pub user: &'a str,
    pub password: &'a str,
}

impl<'a> Creds<'a> {
    /// `user` with `password`.
    pub fn new(user: &'a str, password: &'a str) -> Creds<'a> {
        Creds { user, password }
    }

    /// The `root` user with `password`.
    pub fn root(password: &'a str) -> Creds<'a> {
        Creds::new("root", password)
    }

    /// The value of an `Authorization` header: `Basic base64(user:password)`.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.user, self.password).as_bytes())
        )
    }
}

/// Standard base64 with padding (RFC 4648), written here so the tests need no crate for it.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One request to `url` (`http://...`) with `creds` (or none); a `body` is sent as a form,
/// unless it starts with `{` (then as JSON). Panics on I/O errors.
pub fn request(
    url: &str,
    creds: Option<Creds<'_>>,
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
) -> RawResponse {
    let auth = creds.map(|c| c.basic_header());
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    if body.is_some_and(|b| b.starts_with('{')) {
        headers.push(("Content-Type", "application/json"));
    }
    try_raw_request_with_headers(url, method, path_and_query, body, &headers, READ_TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "{method} {url}{path_and_query} (as {:?}) failed: {e}",
                creds.map(|c| c.user)
            )
        })
}

/// Panics unless `r` is a 2xx, naming `what`.
fn expect_2xx(r: RawResponse, what: &str) -> RawResponse {
    assert!(
        (200..300).contains(&r.status),
        "{what}: HTTP {} {}",
        r.status,
        r.text()
    );
    r
}

/// Turns v2 authentication on: creates `root` with `root_password`, enables auth, and revokes
/// the `guest` role's read and write on `/*`, so that requests without credentials get 401.
/// Afterwards only `root` (and users added with [`add_prefix_user`]) may touch keys.
///
/// # Panics
/// When etcd refuses a step (e.g. auth is already on).
pub fn enable_v2_auth(url: &str, root_password: &str) {
    let root = Creds::root(root_password);
    let user = json!({ "user": "root", "password": root_password }).to_string();
    expect_2xx(
        request(url, None, "PUT", "/v2/auth/users/root", Some(&user)),
        "create root",
    );
    expect_2xx(
        request(url, None, "PUT", "/v2/auth/enable", None),
        "enable auth",
    );
    let revoke = json!({
        "role": "guest",
        "revoke": { "kv": { "read": ["/*"], "write": ["/*"] } }
    })
    .to_string();
    let r = expect_2xx(
        request(
            url,
            Some(root),
            "PUT",
            "/v2/auth/roles/guest",
            Some(&revoke),
        ),
        "revoke guest",
    );
    let guest: Value = serde_json::from_slice(&r.body).expect("etcd sent JSON");
    assert_eq!(
        guest["permissions"]["kv"],
        json!({ "read": [], "write": [] }),
        "guest keeps permissions: {}",
        r.text()
    );
    assert!(v2_auth_enabled(url), "auth did not turn on");
}

/// Whether v2 authentication is on (`GET /v2/auth/enable`).
pub fn v2_auth_enabled(url: &str) -> bool {
    let r = expect_2xx(
        request(url, None, "GET", "/v2/auth/enable", None),
        "auth status",
    );
    let v: Value = serde_json::from_slice(&r.body).expect("etcd sent JSON");
    v["enabled"] == json!(true)
}

/// Adds `user` with `password` and one role, `<user>-rw`, that may read and write the keys
/// below `/<prefix>/` (the pattern `/<prefix>/*`; `prefix` without leading or trailing `/`,
/// e.g. `"locks"` or `"a/b"`). Works before and after [`enable_v2_auth`] (after: as root).
///
/// # Panics
/// When etcd refuses a step.
pub fn add_prefix_user(url: &str, root_password: &str, user: &str, password: &str, prefix: &str) {
    let root = Creds::root(root_password);
    let role = format!("{user}-rw");
    let pattern = format!("/{}/*", prefix.trim_matches('/'));
    let role_body = json!({
        "role": role,
        "permissions": { "kv": { "read": [pattern], "write": [pattern] } }
    })
    .to_string();
    expect_2xx(
        request(
            url,
            Some(root),
            "PUT",
            &format!("/v2/auth/roles/{}", inspect::encode(&role)),
            Some(&role_body),
        ),
        "create role",
    );
    let user_body = json!({ "user": user, "password": password, "roles": [role] }).to_string();
    expect_2xx(
        request(
            url,
            Some(root),
            "PUT",
            &format!("/v2/auth/users/{}", inspect::encode(user)),
            Some(&user_body),
        ),
        "create user",
    );
}

/// The node at `key` read with `creds` (quorum read): `Ok(Some(node))`, `Ok(None)` when absent,
/// `Err(response)` for any other answer (e.g. the 401 of a key outside the user's roles).
pub fn node_as(url: &str, creds: Creds<'_>, key: &str) -> Result<Option<Value>, RawResponse> {
    let r = request(
        url,
        Some(creds),
        "GET",
        &format!("{}?quorum=true", inspect::key_path(key)),
        None,
    );
    match r.status {
        200 => {
            let v: Value = serde_json::from_slice(&r.body).expect("etcd sent JSON");
            Ok(Some(v["node"].clone()))
        }
        404 => Ok(None),
        _ => Err(r),
    }
}

/// Whether `r` is etcd's answer to missing or insufficient credentials: 401, error code 110.
pub fn is_unauthorized(r: &RawResponse) -> bool {
    r.status == 401
        && serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["errorCode"] == json!(110))
}

// ----- etcd v3 authentication (through the JSON gateway) -------------------------------------

/// One v3 gateway call (`POST path` with the JSON `body`), with `token` as `Authorization` when
/// given. Panics on I/O errors.
pub fn v3_call(url: &str, token: Option<&str>, path: &str, body: &Value) -> RawResponse {
    let body = body.to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(token) = token {
        headers.push(("Authorization", token));
    }
    try_raw_request_with_headers(url, "POST", path, Some(&body), &headers, READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("POST {url}{path} failed: {e}"))
}

/// A v3 token for `creds` (`/v3/auth/authenticate`).
///
/// # Panics
/// When etcd refuses.
pub fn v3_token(url: &str, creds: Creds<'_>) -> String {
    let body = json!({ "name": creds.user, "password": creds.password });
    let r = expect_2xx(
        v3_call(url, None, "/v3/auth/authenticate", &body),
        "v3 authenticate",
    );
    let answer: Value = serde_json::from_str(&r.text()).expect("authenticate answers JSON");
    answer["token"]
        .as_str()
        .expect("authenticate answers a token")
        .to_owned()
}

/// Adds `user` with `password` and a role of the same name granting read and write on every
/// key starting with `prefix` (v3). Before [`enable_v3_auth`], or with `root`'s token after.
///
/// # Panics
/// When etcd refuses a step.
pub fn add_v3_prefix_user(
    url: &str,
    token: Option<&str>,
    user: &str,
    password: &str,
    prefix: &str,
) {
    let end = {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("a non-empty prefix") += 1;
        end
    };
    let steps = [
        (
            "/v3/auth/user/add",
            json!({ "name": user, "password": password }),
        ),
        ("/v3/auth/role/add", json!({ "name": user })),
        (
            "/v3/auth/role/grant",
            json!({ "name": user, "perm": { "permType": "READWRITE",
                    "key": base64(prefix.as_bytes()), "range_end": base64(&end) } }),
        ),
        ("/v3/auth/user/grant", json!({ "user": user, "role": user })),
    ];
    for (path, body) in steps {
        expect_2xx(v3_call(url, token, path, &body), path);
    }
}

/// Turns v3 authentication on: creates `root` (role `root`) with `root_password`, then enables
/// auth. Afterwards a request without a token gets `user name is empty`.
///
/// # Panics
/// When etcd refuses a step.
pub fn enable_v3_auth(url: &str, root_password: &str) {
    let steps = [
        (
            "/v3/auth/user/add",
            json!({ "name": "root", "password": root_password }),
        ),
        ("/v3/auth/role/add", json!({ "name": "root" })),
        (
            "/v3/auth/user/grant",
            json!({ "user": "root", "role": "root" }),
        ),
        ("/v3/auth/enable", json!({})),
    ];
    for (path, body) in steps {
        expect_2xx(v3_call(url, None, path, &body), path);
    }
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("alice:pä?ss", "YWxpY2U6cMOkP3Nz"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }
}
