//! The hostile-input catalogue: odd keys, node ids and TTLs, each with its exact outcome.
//!
//! A rejected row must fail `Config::new` with exactly the listed error (variant, input and
//! reason). An accepted row is taken for real: its lock request (from `Lock::lock` →
//! `poll_request`) is shown, then the tokio adapter locks, renews and unlocks it on a real etcd,
//! and the key, value and TTL etcd stored are read back byte for byte (raw HTTP, with the test
//! suite's own encoder), and the key is the only one in its directory. Every row has its own
//! directory, so rows cannot collide.
//!
//! The table it computes is `docs/hostile-input.md`'s: the test fails, printing the expected
//! table, when they differ; `MICROLOCK_BLESS=1` rewrites the file.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use microlock_proto::{Config, Error, Lock, MAX_KEY_BYTES, MAX_NODE_ID_BYTES, MAX_TTL};
use microlock_tests::etcd::{self, unique_key};
use microlock_tests::inspect;
use microlock_tokio::{Etcd, Microlock};

/// The node id of key and TTL rows.
const NODE: &str = "node-a";
/// The TTL of key and node id rows.
const TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Key,
    NodeId,
    Ttl,
}

#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Ttl(Duration),
}

#[derive(Debug, Clone)]
enum Expect {
    /// `Config::new` fails with exactly this error.
    Rejected(Error),
    /// Accepted; stored in etcd exactly as given.
    Stored,
}

#[derive(Debug, Clone)]
struct Row {
    field: Field,
    label: &'static str,
    value: Value,
    expect: Expect,
}

fn key_error(key: &str, reason: &'static str) -> Expect {
    Expect::Rejected(Error::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

fn node_error(node_id: &str, reason: &'static str) -> Expect {
    Expect::Rejected(Error::InvalidNodeId {
        node_id: node_id.to_owned(),
        reason,
    })
}

fn ttl_error(ttl: Duration, reason: &'static str) -> Expect {
    Expect::Rejected(Error::InvalidTtl { ttl, reason })
}

const KEY_EMPTY: &str = "the key is empty";
const KEY_ROOT: &str = "the key is the root directory `/`, which etcd keeps read-only";
const KEY_SEGMENT: &str = "the key has an empty segment (`//` or a trailing `/`)";
const KEY_DOTS: &str = "the key has a `.` or `..` segment";
const KEY_CONTROL: &str = "the key contains an ASCII control character";
const KEY_LONG: &str = "the key is longer than 16 KiB";
const NODE_EMPTY: &str = "the node id is empty";
const NODE_CONTROL: &str = "the node id contains an ASCII control character";
const NODE_LONG: &str = "the node id is longer than 16 KiB";
const TTL_SHORT: &str = "the TTL is shorter than etcd's one-second resolution";
const TTL_LONG: &str = "the TTL is longer than u32::MAX seconds";

/// The texts tried as keys and as node ids, and what each becomes as a key / as a node id
/// (`None`: stored).
fn texts() -> Vec<(&'static str, String, Option<&'static str>, Option<&'static str>)> {
    vec![
        ("empty", String::new(), Some(KEY_EMPTY), Some(NODE_EMPTY)),
        ("slash", "/".into(), Some(KEY_ROOT), None),
        ("leading slash", "/lead".into(), None, None),
        ("double slash", "a//b".into(), Some(KEY_SEGMENT), None),
        ("trailing slash", "a/".into(), Some(KEY_SEGMENT), None),
        ("nested", "a/b/c".into(), None, None),
        ("dot", ".".into(), Some(KEY_DOTS), None),
        ("dot-dot", "..".into(), Some(KEY_DOTS), None),
        ("dot segment", "a/./b".into(), Some(KEY_DOTS), None),
        ("dot-dot segment", "a/../b".into(), Some(KEY_DOTS), None),
        ("three dots", "...".into(), None, None),
        ("dot prefix", ".hidden".into(), None, None),
        ("underscore prefix", "_hidden".into(), None, None),
        ("encoded slash", "%2F".into(), None, None),
        ("percent", "100%".into(), None, None),
        ("query", "?x=1".into(), None, None),
        ("fragment", "#".into(), None, None),
        ("parameter injection", "&prevExist=true".into(), None, None),
        ("space", "a b".into(), None, None),
        ("only a space", " ".into(), None, None),
        ("plus", "+".into(), None, None),
        ("unicode", "räksmörgås ✓ 🔒".into(), None, None),
        ("line separator", "a\u{2028}b".into(), None, None),
        ("NUL", "a\0b".into(), Some(KEY_CONTROL), Some(NODE_CONTROL)),
        ("tab", "a\tb".into(), Some(KEY_CONTROL), Some(NODE_CONTROL)),
        ("newline", "a\nb".into(), Some(KEY_CONTROL), Some(NODE_CONTROL)),
        ("DEL", "a\u{7f}b".into(), Some(KEY_CONTROL), Some(NODE_CONTROL)),
        ("10 KiB", "k".repeat(10 * 1024), None, None),
        ("10 KiB of unicode", "é".repeat(5 * 1024), None, None),
    ]
}

fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (label, text, as_key, as_node) in texts() {
        rows.push(Row {
            field: Field::Key,
            label,
            value: Value::Text(text.clone()),
            expect: as_key.map_or(Expect::Stored, |r| key_error(&text, r)),
        });
        rows.push(Row {
            field: Field::NodeId,
            label,
            value: Value::Text(text.clone()),
            expect: as_node.map_or(Expect::Stored, |r| node_error(&text, r)),
        });
    }
    // The length limits: exactly at the limit (the directory included) and one byte over.
    let at_limit = "k".repeat(MAX_KEY_BYTES);
    let over = "k".repeat(MAX_KEY_BYTES + 1);
    rows.push(Row {
        field: Field::Key,
        label: "16 KiB (the limit)",
        value: Value::Text(at_limit),
        expect: Expect::Stored,
    });
    rows.push(Row {
        field: Field::Key,
        label: "16 KiB + 1",
        value: Value::Text(over.clone()),
        expect: key_error(&over, KEY_LONG),
    });
    let at_limit = "é".repeat(MAX_NODE_ID_BYTES / 2);
    let over = "k".repeat(MAX_NODE_ID_BYTES + 1);
    rows.push(Row {
        field: Field::NodeId,
        label: "16 KiB of unicode (the limit)",
        value: Value::Text(at_limit),
        expect: Expect::Stored,
    });
    rows.push(Row {
        field: Field::NodeId,
        label: "16 KiB + 1",
        value: Value::Text(over.clone()),
        expect: node_error(&over, NODE_LONG),
    });
    let ttls: [(&str, Duration); 8] = [
        ("zero", Duration::ZERO),
        ("sub-second", Duration::from_millis(999)),
        ("one second", Duration::from_secs(1)),
        ("a fraction", Duration::from_millis(1200)),
        ("u32::MAX seconds", MAX_TTL),
        ("u32::MAX seconds + 1 ns", MAX_TTL + Duration::from_nanos(1)),
        ("u64::MAX seconds", Duration::from_secs(u64::MAX)),
        ("Duration::MAX", Duration::MAX),
    ];
    for (label, ttl) in ttls {
        let expect = if ttl < Duration::from_secs(1) {
            ttl_error(ttl, TTL_SHORT)
        } else if ttl > MAX_TTL {
            ttl_error(ttl, TTL_LONG)
        } else {
            Expect::Stored
        };
        rows.push(Row {
            field: Field::Ttl,
            label,
            value: Value::Ttl(ttl),
            expect,
        });
    }
    rows
}

/// A string for the table: Rust's escaping (`\0`, `\u{2028}`), long runs abbreviated.
fn show(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() > 40 && chars.iter().all(|c| *c == chars[0]) {
        return format!("{:?} × {}", chars[0].to_string(), chars.len());
    }
    if chars.len() > 40 {
        let head: String = chars[..30].iter().collect();
        return format!("{head:?}… ({} bytes)", s.len());
    }
    format!("{s:?}")
}

fn show_wire(s: &str) -> String {
    if s.len() > 60 {
        let head: String = s.chars().take(24).collect();
        let tail: String = s.chars().skip(s.chars().count() - 24).collect();
        format!("{head}…{tail} ({} bytes)", s.len())
    } else {
        s.to_owned()
    }
}

fn show_error(e: &Error) -> String {
    let (variant, reason) = match e {
        Error::InvalidKey { reason, .. } => ("InvalidKey", *reason),
        Error::InvalidNodeId { reason, .. } => ("InvalidNodeId", *reason),
        Error::InvalidTtl { reason, .. } => ("InvalidTtl", *reason),
        other => panic!("unexpected error {other:?}"),
    };
    format!("`{variant}`: {}", reason.replace('`', "'"))
}

fn cell(s: &str) -> String {
    format!("`{}`", s.replace('`', "'").replace('|', "\\|"))
}

/// The directory that every stored key of a row lives in, shown as `‹dir›`.
const DIR: &str = "‹dir›";

/// Runs one row; returns its table line.
async fn run(row: &Row, client: &Etcd, url: &str) -> String {
    let dir = unique_key("hostile");
    let (key, node, ttl) = match (&row.field, &row.value) {
        (Field::Key, Value::Text(k)) => (k.clone(), NODE.to_owned(), TTL),
        (Field::NodeId, Value::Text(n)) => (unique_key("hostile-node"), n.clone(), TTL),
        (Field::Ttl, Value::Ttl(t)) => (unique_key("hostile-ttl"), NODE.to_owned(), *t),
        _ => unreachable!(),
    };
    let input = match &row.value {
        Value::Text(t) => show(t),
        Value::Ttl(t) => format!("{t:?}"),
    };
    let field = match row.field {
        Field::Key => "key",
        Field::NodeId => "node id",
        Field::Ttl => "TTL",
    };
    let head = format!("| {field} | {} | {} |", row.label, cell(&input));
    let result = Config::new(&key, &node, ttl);
    match (&row.expect, result) {
        (Expect::Rejected(expected), Err(e)) => {
            assert_eq!(&e, expected, "{field} {:?}: the wrong error", row.label);
            format!("{head} {} | — | — |", show_error(&e))
        }
        (Expect::Rejected(expected), Ok(_)) => {
            panic!("{field} {:?} was accepted, expected {expected:?}", row.label)
        }
        (Expect::Stored, Err(e)) => panic!("{field} {:?} was refused: {e:?}", row.label),
        (Expect::Stored, Ok(config)) => {
            // The key stored: under the row's own directory (filled up to the tested length
            // for the length-limit rows).
            let stored_key = match row.field {
                Field::Key => {
                    let k = config.key().as_str();
                    assert_eq!(k, key.strip_prefix('/').unwrap_or(&key), "Key::as_str");
                    if k.len() == MAX_KEY_BYTES {
                        let fill = MAX_KEY_BYTES - dir.len() - 1;
                        format!("{dir}/{}", &k[..fill])
                    } else {
                        format!("{dir}/{k}")
                    }
                }
                _ => format!("{dir}/lock"),
            };
            let placed = Config::new(&stored_key, &node, ttl).expect("valid under a directory");
            let (path, body) = lock_request(&placed, &dir);
            let wire = match row.field {
                Field::Key => cell(&show_wire(&path)),
                Field::NodeId | Field::Ttl => cell(&show_wire(&body)),
            };
            let stored = store(&placed, client, url, &dir).await;
            let accepted = match row.field {
                Field::Key => format!("key {}", cell(&show(config.key().as_str()))),
                Field::NodeId => format!("node id {}", cell(&show(&node))),
                Field::Ttl => format!("{} s", config.ttl_secs()),
            };
            format!("{head} accepted: {accepted} | {wire} | {stored} |")
        }
    }
}

/// The lock request the machine builds: the path after `/v2/keys/<dir>/` (with the query), and
/// the form body.
fn lock_request(config: &Config, dir: &str) -> (String, String) {
    let mut lock = Lock::new(config.clone());
    lock.lock(Instant::now());
    let (_, request) = lock.poll_request().expect("a lock request");
    let prefix = inspect::key_path(dir);
    let pq = request.uri().path_and_query().expect("a path").as_str();
    let path = pq
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{pq} is not under {prefix}"));
    let body = String::from_utf8(request.body().clone()).expect("a UTF-8 form body");
    (format!("…{path}"), body)
}

/// Locks, checks what etcd stored, renews, unlocks; describes what was stored.
async fn store(config: &Config, client: &Etcd, url: &str, dir: &str) -> String {
    let key = config.key().as_str().to_owned();
    let node_id = config.node_id().as_str().to_owned();
    let lock = Microlock::with_config(client, config.clone()).expect("a lock client");
    let fence = lock
        .lock()
        .await
        .unwrap_or_else(|e| panic!("lock {key:?} as {node_id:?}: {e:?}"));
    let (u, k) = (url.to_owned(), key.clone());
    let node = tokio::task::spawn_blocking(move || inspect::node(&u, &k))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{key:?} not found in etcd after lock"));
    let stored_key = node["key"].as_str().expect("a key");
    assert_eq!(stored_key, format!("/{key}"), "the key etcd stored");
    assert_eq!(
        node["value"].as_str(),
        Some(node_id.as_str()),
        "the value etcd stored"
    );
    assert_eq!(node["ttl"].as_u64(), Some(config.ttl_secs()), "the TTL");
    assert_eq!(node["createdIndex"].as_u64(), Some(fence.token()));
    let (u, d) = (url.to_owned(), dir.to_owned());
    let listed = tokio::task::spawn_blocking(move || inspect::keys_under(&u, &d))
        .await
        .unwrap();
    let hidden = key[dir.len() + 1..].starts_with('_');
    if hidden {
        // etcd hides keys whose name starts with `_` from directory listings.
        assert_eq!(listed, Vec::<String>::new(), "listing of {dir:?}");
    } else {
        assert_eq!(listed, vec![format!("/{key}")], "the only key in {dir:?}");
    }
    lock.renew().await.expect("renew");
    lock.unlock().await.expect("unlock");
    let (u, k) = (url.to_owned(), key.clone());
    let gone = tokio::task::spawn_blocking(move || inspect::node(&u, &k))
        .await
        .unwrap();
    assert!(gone.is_none(), "{key:?} still in etcd after unlock");
    let rest = &stored_key[dir.len() + 1..];
    let shown = if stored_key.len() > 100 {
        let run = cell(&format!("\"/{DIR}/\" + {}", show(&rest[1..])));
        if key.len() == MAX_KEY_BYTES {
            format!("{run} ({MAX_KEY_BYTES} bytes in all)")
        } else {
            run
        }
    } else {
        cell(&show(&format!("/{DIR}{rest}")))
    };
    let mut text = format!(
        "key {shown}, value {}, TTL {} s",
        cell(&show(&node_id)),
        config.ttl_secs()
    );
    if hidden {
        text.push_str(" (hidden from directory listings: `_` prefix)");
    }
    text
}

fn render(lines: &[String]) -> String {
    let mut table = String::new();
    table.push_str(
        "| field | case | input (Rust escapes) | `Config::new` | on the wire (lock request) | \
         read back from etcd after `lock()` |\n",
    );
    table.push_str("|---|---|---|---|---|---|\n");
    for line in lines {
        let _ = writeln!(table, "{line}");
    }
    table
}

const BEGIN: &str = "<!-- BEGIN hostile-input table (generated by tests/tests/hostile_input.rs) -->\n";
const END: &str = "<!-- END hostile-input table -->";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_catalogue() {
    let url = etcd::shared().client_url();
    let client = Etcd::new([url.as_str()]).expect("endpoint");
    let mut lines = Vec::new();
    for row in rows() {
        lines.push(run(&row, &client, &url).await);
    }
    let table = render(&lines);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/hostile-input.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let current = doc
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(table, _)| table);
    if current == Some(table.as_str()) {
        return;
    }
    if std::env::var_os("MICROLOCK_BLESS").is_some_and(|v| v == "1") {
        let updated = match doc.split_once(BEGIN) {
            Some((before, rest)) => {
                let after = rest.split_once(END).map_or("", |(_, after)| after);
                format!("{before}{BEGIN}{table}{END}{after}")
            }
            None => format!("# Hostile input\n\n{BEGIN}{table}{END}\n"),
        };
        std::fs::write(&path, updated).expect("write docs/hostile-input.md");
        eprintln!("rewrote {}", path.display());
        return;
    }
    panic!(
        "docs/hostile-input.md is out of date (run with MICROLOCK_BLESS=1 to rewrite it). \
         The table should be:\n{table}"
    );
}
