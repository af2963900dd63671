//! What the machine logs: a capturing `tracing` subscriber records the events of a contended
//! acquire, a lost lock, and a lost answer settled by a read, with their levels and fields.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Response;
use microlock_proto::{Config, Endpoint, Lock, Outcome};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One captured event: level, message, fields, and the fields of the spans it is in.
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    message: String,
    fields: BTreeMap<String, String>,
    span: BTreeMap<String, String>,
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut span = BTreeMap::new();
        if let Some(scope) = ctx.event_scope(event) {
            for s in scope {
                if let Some(f) = s.extensions().get::<BTreeMap<String, String>>() {
                    span.extend(f.clone());
                }
            }
        }
        let message = fields.0.remove("message").unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            message,
            fields: fields.0,
            span,
        });
    }
}

/// Runs `f` with a capturing subscriber; returns what was logged.
fn capture(f: impl FnOnce()) -> Vec<Captured> {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, f);
    let events = capture.0.lock().unwrap().clone();
    events
}

fn find<'a>(events: &'a [Captured], level: Level, message: &str) -> &'a Captured {
    events
        .iter()
        .find(|e| e.level == level && e.message.contains(message))
        .unwrap_or_else(|| panic!("no {level} event {message:?} in {events:#?}"))
}

fn json(status: u16, index: u64, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("X-Etcd-Index", index.to_string())
        .body(body.as_bytes().to_vec())
        .unwrap()
}

fn created(index: u64) -> Response<Vec<u8>> {
    json(
        201,
        index,
        &format!(
            r#"{{"action":"create","node":{{"key":"/jobs/a","value":"w-1","ttl":5,"modifiedIndex":{index},"createdIndex":{index}}}}}"#
        ),
    )
}

fn config() -> Config {
    Config::new("jobs/a", "w-1", Duration::from_secs(5))
        .unwrap()
        .with_endpoints(Endpoint::parse_all(["m0:2379,m1:2379"]).unwrap())
        .unwrap()
        .with_fair_acquire(false)
}

#[test]
fn a_contended_acquire_tells_its_story() {
    let t = Instant::now();
    let events = capture(|| {
        let mut lock = Lock::new(config());
        let _in = lock.span().clone().entered();
        lock.acquire(None, t);
        let (id, _) = lock.poll_request().unwrap();
        lock.handle_response(
            id,
            json(
                412,
                10,
                r#"{"errorCode":105,"message":"Key already exists","cause":"/jobs/a","index":10}"#,
            ),
            t,
        );
        let (id, _) = lock.poll_request().unwrap();
        let released = t + Duration::from_secs(3);
        lock.handle_timeout(t + Duration::from_secs(2)); // a liveness probe goes out
        let (probe, _) = lock.poll_request().unwrap();
        lock.handle_response(
            probe,
            json(
                200,
                10,
                r#"{"action":"get","node":{"key":"/jobs/a","value":"w-2","modifiedIndex":9,"createdIndex":9}}"#,
            ),
            t + Duration::from_secs(2),
        );
        lock.handle_response(
            id,
            json(
                200,
                11,
                r#"{"action":"delete","node":{"key":"/jobs/a","modifiedIndex":11,"createdIndex":9},"prevNode":{"key":"/jobs/a","value":"w-2","modifiedIndex":9,"createdIndex":9}}"#,
            ),
            released,
        );
        let at = lock.poll_timeout().unwrap();
        lock.handle_timeout(at);
        let (id, _) = lock.poll_request().unwrap();
        lock.handle_response(id, created(12), at);
        assert!(matches!(
            lock.poll_completion().unwrap().result,
            Ok(Outcome::Acquired(_))
        ));
    });
    let sent = find(&events, Level::DEBUG, "request sent");
    assert_eq!(sent.fields["method"], "PUT");
    assert_eq!(sent.fields["member"], "http://m0:2379");
    assert_eq!(sent.fields["path"], "/v2/keys/jobs/a?prevExist=false");
    assert_eq!(sent.span["key"], "jobs/a");
    assert_eq!(sent.span["node_id"], "w-1");
    let answered = find(&events, Level::DEBUG, "request answered");
    assert_eq!(answered.fields["status"], "412");
    assert_eq!(answered.fields["outcome"], "etcd_error");
    assert!(answered.fields.contains_key("took"));
    let acquired = find(&events, Level::INFO, "lock acquired");
    assert_eq!(acquired.fields["token"], "12");
    assert!(acquired.fields["waited"].starts_with("3."), "{acquired:?}");
    assert_eq!(acquired.span["key"], "jobs/a");
    // Nothing above debug but the acquisition: a quiet log at info.
    let loud: Vec<_> = events.iter().filter(|e| e.level <= Level::INFO).collect();
    assert_eq!(loud.len(), 1, "{loud:#?}");
}

#[test]
fn a_lost_lock_warns_while_renewals_fail_then_says_why() {
    let t = Instant::now();
    let events = capture(|| {
        let mut lock = Lock::new(config().with_auto_renew(true));
        lock.lock(t);
        let (id, _) = lock.poll_request().unwrap();
        lock.handle_response(id, created(7), t);
        let _ = lock.poll_completion();
        // Every member refuses from now on.
        while lock.fence().is_some() {
            let at = lock.poll_timeout().unwrap();
            lock.handle_timeout(at);
            while let Some((id, _)) = lock.poll_request() {
                lock.handle_connect_error(id, "connection refused", at);
            }
        }
    });
    let unhealthy = find(&events, Level::INFO, "marked unhealthy");
    assert_eq!(unhealthy.fields["member"], "http://m0:2379");
    let warned = find(&events, Level::WARN, "renewal failed");
    assert_eq!(warned.fields["token"], "7");
    assert!(warned.fields.contains_key("time_left"));
    assert!(warned.fields["error"].contains("connection refused"));
    let lost = find(&events, Level::INFO, "lock lost");
    assert_eq!(lost.fields["reason"], "Expired");
    assert_eq!(lost.fields["token"], "7");
    let failed = find(&events, Level::DEBUG, "request failed");
    assert_eq!(failed.fields["outcome"], "connect");
}

#[test]
fn a_lost_answer_settled_by_a_read_is_explained() {
    let t = Instant::now();
    let events = capture(|| {
        let mut lock = Lock::new(config());
        lock.lock(t);
        let (_, _) = lock.poll_request().unwrap();
        // m0 hangs: at the request timeout, a read on m1 settles it.
        let at = lock.poll_timeout().unwrap();
        lock.handle_timeout(at);
        let (read, _) = lock.poll_request().unwrap();
        lock.handle_response(
            read,
            json(
                404,
                20,
                r#"{"errorCode":100,"message":"Key not found","cause":"/jobs/a","index":20}"#,
            ),
            at,
        );
        let (id, _) = lock.poll_request().unwrap();
        lock.handle_response(id, created(21), at);
        assert!(matches!(
            lock.poll_completion().unwrap().result,
            Ok(Outcome::Locked(_))
        ));
    });
    let timed_out = find(&events, Level::DEBUG, "request failed");
    assert_eq!(timed_out.fields["outcome"], "timeout");
    assert_eq!(timed_out.fields["member"], "http://m0:2379");
    find(&events, Level::INFO, "marked unhealthy");
    let settled = find(&events, Level::DEBUG, "settled by a quorum read");
    assert_eq!(settled.fields["command"], "lock");
    assert!(
        settled.fields["settled"].contains("send it again"),
        "{settled:?}"
    );
    let again = events
        .iter()
        .filter(|e| e.message == "request sent")
        .nth(2)
        .expect("the lock sent again");
    assert_eq!(again.fields["member"], "http://m1:2379");
    find(&events, Level::INFO, "lock acquired");
}

#[test]
fn no_event_carries_a_body() {
    // Bodies hold node ids and values; the machine logs paths and statuses, never bodies.
    let events = capture(|| {
        let t = Instant::now();
        let mut lock = Lock::new(config());
        lock.lock(t);
        let (id, _) = lock.poll_request().unwrap();
        lock.handle_response(id, created(3), t);
    });
    for e in &events {
        for value in e.fields.values() {
            assert!(!value.contains("\"action\""), "{e:?}");
            assert!(!value.contains("value=w-1"), "{e:?}");
        }
    }
}
