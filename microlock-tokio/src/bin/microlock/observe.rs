//! `microlock status` and `microlock watch`: the lock seen from outside, as text or JSON.
//!
//! `status` is one quorum read of the key ([`Microlock::read`]): holder, token and TTL left, or
//! free. `watch` prints the library's event stream (its first event is `Locked` by the current
//! holder when the key is held).

use std::io::Write;
use std::time::{Duration, SystemTime};

use microlock_tokio::{Etcd, Event, Events, Microlock};
use serde_json::{json, Value};

use crate::args::{Common, StatusArgs, WatchArgs};
use crate::client;
use crate::exit::{self, Failure, OK, UNAVAILABLE};
use crate::signals::Signals;

/// A lock client for `key` under a node id nobody uses: it only reads and watches.
fn observer(common: &Common, key: &str) -> Result<Microlock, Failure> {
    let etcd: Etcd = client::etcd(common)?;
    let observer_id = format!("microlock-observer:{}", client::default_node_id());
    Microlock::new(&etcd, key, &observer_id, Duration::from_secs(1))
        .map_err(|e| Failure::from_error("invalid lock", &e))
}

/// A subscription to `key`'s events.
async fn observe(common: &Common, key: &str) -> Result<(Microlock, Events), Failure> {
    let observer = observer(common, key)?;
    // Fail early (exit 69) when etcd cannot be read at all.
    observer
        .read()
        .await
        .map_err(|e| Failure::from_error(&format!("reading {key}"), &e))?;
    let events = observer.events();
    Ok((observer, events))
}

/// Runs `microlock status`.
pub async fn status(common: &Common, args: StatusArgs) -> Result<u8, Failure> {
    let observer = observer(common, &args.key)?;
    let key = observer.config().key().as_str().to_owned();
    let holder = observer
        .read()
        .await
        .map_err(|e| Failure::from_error(&format!("reading {key}"), &e))?;
    let out = if args.json {
        match &holder {
            Some(h) => json!({
                "key": key,
                "held": true,
                "holder": h.node_id,
                "token": h.token,
                "ttl_left_ms": h.ttl_left.map(|t| t.as_millis() as u64),
            }),
            None => json!({
                "key": key,
                "held": false,
                "holder": Value::Null,
                "token": Value::Null,
                "ttl_left_ms": Value::Null,
            }),
        }
        .to_string()
    } else {
        match &holder {
            Some(h) => {
                let ttl = h.ttl_left.map_or("no TTL".to_owned(), |t| {
                    format!("TTL left {}s", t.as_secs())
                });
                format!("{key}: held by {}, token {}, {ttl}", h.node_id, h.token)
            }
            None => format!("{key}: free"),
        }
    };
    print_line(&out)?;
    Ok(OK)
}

/// Runs `microlock watch`: one line per event until SIGINT/SIGTERM/SIGHUP (exit status 0).
pub async fn watch(common: &Common, args: WatchArgs) -> Result<u8, Failure> {
    let mut signals = Signals::install()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("installing signal handlers: {e}")))?;
    let (observer, mut events) = observe(common, &args.key).await?;
    let key = observer.config().key().as_str().to_owned();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(event) => print_line(&event_line(&key, &event, args.json))?,
                None => return Err(Failure::new(exit::SOFTWARE, "the lock client ended unexpectedly")),
            },
            _ = signals.recv() => return Ok(OK),
        }
    }
}

/// One event as a line: `TIME KEY locked holder=ID token=N`, or a JSON object.
fn event_line(key: &str, event: &Event, as_json: bool) -> String {
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let (text, fields) = match event {
        Event::Locked { holder, token } => (
            format!("locked holder={holder} token={token}"),
            json!({"event": "locked", "holder": holder, "token": token}),
        ),
        Event::Unlocked {
            previous_holder,
            expired,
        } => (
            format!(
                "unlocked previous_holder={} expired={expired}",
                previous_holder.as_deref().unwrap_or("unknown")
            ),
            json!({"event": "unlocked", "previous_holder": previous_holder, "expired": expired}),
        ),
        Event::Lost { token, reason } => (
            format!("lost token={token} reason={reason:?}"),
            json!({"event": "lost", "token": token, "reason": format!("{reason:?}")}),
        ),
        other => (
            format!("other {other:?}"),
            json!({"event": "other", "debug": format!("{other:?}")}),
        ),
    };
    if !as_json {
        return format!("{time} {key} {text}");
    }
    let mut object = json!({"time": time, "key": key});
    if let (Some(object), Value::Object(fields)) = (object.as_object_mut(), fields) {
        object.extend(fields);
    }
    object.to_string()
}

/// Prints a line on stdout at once (a reader of a pipe sees each event when it happens).
fn print_line(line: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::new(UNAVAILABLE, format!("writing to stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_as_json_and_text() {
        let locked = Event::Locked {
            holder: "h:1".into(),
            token: 7,
        };
        let v: Value = serde_json::from_str(&event_line("k", &locked, true)).expect("json");
        assert_eq!(v["key"], "k");
        assert_eq!(v["event"], "locked");
        assert_eq!(v["holder"], "h:1");
        assert_eq!(v["token"], 7);
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        let text = event_line("k", &locked, false);
        assert!(text.ends_with(" k locked holder=h:1 token=7"), "{text}");
        let unlocked = Event::Unlocked {
            previous_holder: None,
            expired: true,
        };
        let text = event_line("k", &unlocked, false);
        assert!(
            text.ends_with(" k unlocked previous_holder=unknown expired=true"),
            "{text}"
        );
    }
}
