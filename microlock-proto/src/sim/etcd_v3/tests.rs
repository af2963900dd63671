//! Scenario tests of the whole model, with bodies as etcd wrote them (ids replaced by the
//! model's constants).
//! Test code only: `mod.rs` declares it under #[cfg(test)].

use std::time::{Duration, Instant};

use super::*;

const H: &str = r#""cluster_id":"14841639068965178418","member_id":"10276657743932975437""#;

fn post(path: &str, body: &str) -> Request<Vec<u8>> {
    Request::post(format!("http://127.0.0.1:2379{path}"))
        .body(body.as_bytes().to_vec())
        .unwrap()
}

fn call(e: &mut SimEtcdV3, path: &str, body: &str, now: Instant) -> (u16, String) {
    let r = e.handle(&post(path, body), now);
    (
        r.status().as_u16(),
        String::from_utf8(r.into_body()).unwrap(),
    )
}

fn hdr(rev: i64) -> String {
    format!(r#"{{{H},"revision":"{rev}","raft_term":"2"}}"#)
}

fn lines(e: &mut SimEtcdV3, w: WatchId) -> Vec<String> {
    e.poll_watch(w)
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect()
}

#[test]
fn lock_recipe() {
    let t0 = Instant::now();
    let mut e = SimEtcdV3::new(EtcdVersion::V3_5, t0);
    assert_eq!(e.revision(), 1);
    let (s, b) = call(&mut e, "/v3/lease/grant", r#"{"TTL":30,"ID":"100"}"#, t0);
    assert_eq!(
        (s, b),
        (
            200,
            format!(r#"{{"header":{},"ID":"100","TTL":"30"}}"#, hdr(1))
        )
    );
    let acquire = r#"{"compare":[{"key":"bGsvYQ==","target":"CREATE","result":"EQUAL","create_revision":"0"}],"success":[{"request_put":{"key":"bGsvYQ==","value":"dg==","lease":"100"}},{"request_range":{"key":"bGsv","range_end":"bGsw","sort_order":"ASCEND","sort_target":"CREATE","limit":"1"}}],"failure":[{"request_range":{"key":"bGsvYQ=="}}]}"#;
    let (s, b) = call(&mut e, "/v3/kv/txn", acquire, t0);
    assert_eq!(s, 200);
    let kv = r#"{"key":"bGsvYQ==","create_revision":"2","mod_revision":"2","version":"1","value":"dg==","lease":"100"}"#;
    assert_eq!(
        b,
        format!(
            r#"{{"header":{},"succeeded":true,"responses":[{{"response_put":{{"header":{{"revision":"2"}}}}}},{{"response_range":{{"header":{{"revision":"2"}},"kvs":[{kv}],"count":"1"}}}}]}}"#,
            hdr(2)
        )
    );
    let (_, b) = call(&mut e, "/v3/kv/txn", acquire, t0);
    assert_eq!(
        b,
        format!(
            r#"{{"header":{},"responses":[{{"response_range":{{"header":{{"revision":"2"}},"kvs":[{kv}],"count":"1"}}}}]}}"#,
            hdr(2)
        )
    );
    let (_, b) = call(
        &mut e,
        "/v3/lease/timetolive",
        r#"{"ID":"100","keys":true}"#,
        t0 + Duration::from_millis(300),
    );
    assert_eq!(
        b,
        format!(
            r#"{{"header":{},"ID":"100","TTL":"29","grantedTTL":"30","keys":["bGsvYQ=="]}}"#,
            hdr(2)
        )
    );
    let (_, b) = call(&mut e, "/v3/lease/keepalive", r#"{"ID":"100"}"#, t0);
    assert_eq!(
        b,
        format!(
            "{{\"result\":{{\"header\":{},\"ID\":\"100\",\"TTL\":\"30\"}}}}\n",
            hdr(2)
        )
    );
    let (_, b) = call(&mut e, "/v3/lease/revoke", r#"{"ID":"100"}"#, t0);
    assert_eq!(b, format!(r#"{{"header":{}}}"#, hdr(3)));
    assert!(e.get(b"lk/a").is_none());
    let (s, b) = call(&mut e, "/v3/lease/revoke", r#"{"ID":"100"}"#, t0);
    assert_eq!(
        (s, b.as_str()),
        (
            404,
            r#"{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}"#
        )
    );
    let (_, b) = call(&mut e, "/v3/lease/keepalive", r#"{"ID":"100"}"#, t0);
    assert_eq!(
        b,
        format!("{{\"result\":{{\"header\":{},\"ID\":\"100\"}}}}\n", hdr(3))
    );
    let (_, b) = call(&mut e, "/v3/lease/timetolive", r#"{"ID":"100"}"#, t0);
    assert_eq!(
        b,
        format!(r#"{{"header":{},"ID":"100","TTL":"-1"}}"#, hdr(3))
    );
}

#[test]
fn expiry_deletes_keys_and_watches_see_it() {
    let t0 = Instant::now();
    let mut e = SimEtcdV3::new(EtcdVersion::V3_4, t0);
    let (_, b) = call(&mut e, "/v3/lease/grant", r#"{"TTL":1}"#, t0);
    assert!(b.contains(r#""TTL":"2""#), "{b}");
    let id = e.leases()[0];
    call(
        &mut e,
        "/v3/kv/put",
        &format!(r#"{{"key":"YQ==","lease":"{id}"}}"#),
        t0,
    );
    let w = e
        .open_watch(
            &post(
                "/v3/watch",
                r#"{"create_request":{"key":"YQ==","prev_kv":true}}"#,
            ),
            t0,
        )
        .unwrap();
    assert_eq!(
        lines(&mut e, w),
        vec![format!(
            "{{\"result\":{{\"header\":{},\"created\":true}}}}\n",
            hdr(2)
        )]
    );
    assert_eq!(e.next_expiry(), Some(t0 + Duration::from_secs(2)));
    e.advance(t0 + Duration::from_millis(1999));
    assert!(lines(&mut e, w).is_empty());
    e.advance(t0 + Duration::from_secs(2));
    let got = lines(&mut e, w);
    assert_eq!(got.len(), 1);
    assert!(got[0].contains(r#""events":[{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"3"},"prev_kv":{"key":"YQ==","create_revision":"2""#), "{}", got[0]);
    assert!(e.leases().is_empty());
    assert_eq!(e.revision(), 3);
}

#[test]
fn watch_history_compaction_and_filters() {
    let t0 = Instant::now();
    let mut e = SimEtcdV3::new(EtcdVersion::V3_5, t0);
    for v in ["MQ==", "Mg==", "Mw=="] {
        call(
            &mut e,
            "/v3/kv/put",
            &format!(r#"{{"key":"cA==","value":"{v}"}}"#),
            t0,
        );
    }
    call(&mut e, "/v3/kv/deleterange", r#"{"key":"cA=="}"#, t0);
    let w = e
        .open_watch(&post("/v3/watch", r#"{"create_request":{"key":"cA==","start_revision":"3","prev_kv":true,"filters":["NOPUT"],"watch_id":"7"}}"#), t0)
        .unwrap();
    let got = lines(&mut e, w);
    assert_eq!(got.len(), 2);
    assert!(got[0].contains(r#""watch_id":"7","created":true"#));
    assert_eq!(
        got[1],
        format!(
            "{{\"result\":{{\"header\":{},\"watch_id\":\"7\",\"events\":[{{\"type\":\"DELETE\",\"kv\":{{\"key\":\"cA==\",\"mod_revision\":\"5\"}},\"prev_kv\":{{\"key\":\"cA==\",\"create_revision\":\"2\",\"mod_revision\":\"4\",\"version\":\"3\",\"value\":\"Mw==\"}}}}]}}}}\n",
            hdr(5)
        )
    );
    let (s, _) = call(&mut e, "/v3/kv/compaction", r#"{"revision":"4"}"#, t0);
    assert_eq!(s, 200);
    let (s, b) = call(
        &mut e,
        "/v3/kv/range",
        r#"{"key":"cA==","revision":"3"}"#,
        t0,
    );
    assert_eq!(
        (s, b.as_str()),
        (
            400,
            r#"{"error":"etcdserver: mvcc: required revision has been compacted","code":11,"message":"etcdserver: mvcc: required revision has been compacted"}"#
        )
    );
    let w = e
        .open_watch(
            &post(
                "/v3/watch",
                r#"{"create_request":{"key":"cA==","start_revision":"2"}}"#,
            ),
            t0,
        )
        .unwrap();
    let got = lines(&mut e, w);
    assert_eq!(
        got[1],
        format!("{{\"result\":{{\"header\":{{{H},\"raft_term\":\"2\"}},\"canceled\":true,\"compact_revision\":\"4\"}}}}\n")
    );
    e.close_watch(w);
    assert_eq!(e.open_watches(), 1);
}

#[test]
fn range_options() {
    let t0 = Instant::now();
    let mut e = SimEtcdV3::new(EtcdVersion::V3_4, t0);
    // p (rev 2), p3 (3), p1 (4), p2 (5), p3 again (6).
    for k in ["cA==", "cDM=", "cDE=", "cDI=", "cDM="] {
        call(
            &mut e,
            "/v3/kv/put",
            &format!(r#"{{"key":"{k}","value":"dg=="}}"#),
            t0,
        );
    }
    let keys = |b: &str| -> Vec<String> {
        b.split(r#""key":""#)
            .skip(1)
            .map(|s| s[..4].to_string())
            .collect()
    };
    let (_, b) = call(
        &mut e,
        "/v3/kv/range",
        r#"{"key":"cA==","range_end":"cQ==","sort_target":"CREATE"}"#,
        t0,
    );
    assert_eq!(keys(&b), ["cA==", "cDM=", "cDE=", "cDI="]);
    let (_, b) = call(
        &mut e,
        "/v3/kv/range",
        r#"{"key":"cA==","range_end":"cQ==","sort_target":"CREATE","sort_order":"DESCEND","max_create_revision":"4","limit":1}"#,
        t0,
    );
    assert_eq!(keys(&b), ["cDE="]);
    assert!(b.ends_with(r#""more":true,"count":"4"}"#), "{b}");
    let (_, b) = call(
        &mut e,
        "/v3/kv/range",
        r#"{"key":"cA==","range_end":"cQ==","sort_target":"VERSION","sort_order":"DESCEND"}"#,
        t0,
    );
    assert_eq!(keys(&b), ["cDM=", "cA==", "cDE=", "cDI="]);
    let (_, b) = call(
        &mut e,
        "/v3/kv/range",
        r#"{"key":"cA==","range_end":"cQ==","min_create_revision":"9"}"#,
        t0,
    );
    assert_eq!(b, format!(r#"{{"header":{},"count":"4"}}"#, hdr(6)));
    let (_, b) = call(
        &mut e,
        "/v3/kv/range",
        r#"{"key":"AA==","range_end":"AA==","count_only":true}"#,
        t0,
    );
    assert_eq!(b, format!(r#"{{"header":{},"count":"4"}}"#, hdr(6)));
    let (_, b) = call(
        &mut e,
        "/v3/kv/range",
        r#"{"key":"cA==","range_end":"cQ==","revision":"3","keys_only":true}"#,
        t0,
    );
    assert_eq!(
        b,
        format!(
            r#"{{"header":{},"kvs":[{{"key":"cA==","create_revision":"2","mod_revision":"2","version":"1"}},{{"key":"cDM=","create_revision":"3","mod_revision":"3","version":"1"}}],"count":"2"}}"#,
            hdr(6)
        )
    );
    let (s, _) = call(
        &mut e,
        "/v3/kv/range",
        r#"{"key":"cA==","revision":"7"}"#,
        t0,
    );
    assert_eq!(s, 400);
}

#[test]
fn errors_and_http() {
    let t0 = Instant::now();
    let mut e = SimEtcdV3::new(EtcdVersion::V3_4, t0);
    let err = |m: &str, c: u32| format!(r#"{{"error":"{m}","message":"{m}","code":{c}}}"#);
    assert_eq!(
        call(&mut e, "/v3/kv/put", "{}", t0),
        (400, err("etcdserver: key is not provided", 3))
    );
    assert_eq!(
        call(&mut e, "/v3/kv/put", r#"{"key":"!!"}"#, t0),
        (400, err("illegal base64 data at input byte 0", 3))
    );
    assert_eq!(
        call(&mut e, "/v3/kv/put", "[]", t0),
        (
            400,
            err(
                "json: cannot unmarshal array into Go value of type map[string]json.RawMessage",
                3
            )
        )
    );
    assert_eq!(
        call(&mut e, "/v3/kv/put", r#"{"key":"YQ==","lease":"5"}"#, t0),
        (404, err("etcdserver: requested lease not found", 5))
    );
    assert_eq!(
        call(
            &mut e,
            "/v3/kv/put",
            r#"{"key":"YQ==","ignore_value":true}"#,
            t0
        ),
        (400, err("etcdserver: key not found", 3))
    );
    assert_eq!(
        call(&mut e, "/v3/kv/txn", r#"{"success":[{}]}"#, t0),
        (400, err("etcdserver: key not found", 3))
    );
    assert_eq!(
        call(
            &mut e,
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"eg=="}},{"request_delete_range":{"key":"eg=="}}]}"#,
            t0
        ),
        (
            400,
            err("etcdserver: duplicate key given in txn request", 3)
        )
    );
    assert_eq!(
        call(&mut e, "/v3/lease/grant", r#"{"TTL":9999999999}"#, t0),
        (400, err("etcdserver: too large lease TTL", 11))
    );
    call(&mut e, "/v3/lease/grant", r#"{"TTL":5,"ID":"77"}"#, t0);
    assert_eq!(
        call(&mut e, "/v3/lease/grant", r#"{"TTL":5,"ID":"77"}"#, t0),
        (412, err("etcdserver: lease already exists", 9))
    );
    assert_eq!(
        call(&mut e, "/v3/kv/nothere", "{}", t0),
        (404, "Not Found\n".into())
    );
    assert_eq!(
        call(&mut e, "/v4", "{}", t0),
        (404, "404 page not found\n".into())
    );
    let r = e.handle(
        &Request::get("http://h/v3/kv/range").body(vec![]).unwrap(),
        t0,
    );
    assert_eq!(r.status(), 405);
    let r = e.handle(&post("/v3//kv/range", "{}"), t0);
    assert_eq!(
        (r.status().as_u16(), &r.headers()["Location"]),
        (301, &"/v3/kv/range".parse::<http::HeaderValue>().unwrap())
    );
    let r = e.open_watch(&post("/v3/watch", "xx"), t0).unwrap_err();
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.into_body(),
        err("invalid character 'x' looking for beginning of value", 2).into_bytes()
    );
}

#[test]
fn no_quorum() {
    let t0 = Instant::now();
    let mut e = SimEtcdV3::new(EtcdVersion::V3_5, t0);
    call(&mut e, "/v3/lease/grant", r#"{"TTL":2,"ID":"9"}"#, t0);
    call(&mut e, "/v3/kv/put", r#"{"key":"YQ==","lease":"9"}"#, t0);
    e.set_paused(true);
    let timed_out = r#"{"error":"etcdserver: request timed out","code":14,"message":"etcdserver: request timed out"}"#;
    assert_eq!(
        call(&mut e, "/v3/kv/put", r#"{"key":"YQ=="}"#, t0),
        (503, timed_out.into())
    );
    assert_eq!(
        call(&mut e, "/v3/kv/range", r#"{"key":"YQ=="}"#, t0),
        (503, timed_out.into())
    );
    assert_eq!(
        call(
            &mut e,
            "/v3/kv/range",
            r#"{"key":"YQ==","serializable":true}"#,
            t0
        )
        .0,
        200
    );
    assert_eq!(
        call(&mut e, "/v3/lease/keepalive", r#"{"ID":"9"}"#, t0),
        (503, r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: request timed out","http_status":"Service Unavailable"}}"#.into())
    );
    // No leader, no expiry.
    e.advance(t0 + Duration::from_secs(5));
    assert!(e.get(b"a").is_some());
    e.set_paused(false);
    // The first check after quorum is back revokes it.
    assert_eq!(e.next_expiry(), Some(t0 + Duration::from_millis(5500)));
    e.advance(t0 + Duration::from_millis(5500));
    assert!(e.get(b"a").is_none());
}
