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
const KEY_LONG: &str =
    "the key is longer than 2000 bytes percent-encoded (etcd refuses request lines of 4 KiB)";
const NODE_EMPTY: &str = "the node id is empty";
const NODE_CONTROL: &str = "the node id contains an ASCII control character";
const NODE_LONG: &str =
    "the node id is longer than 1900 bytes percent-encoded (etcd refuses request lines of 4 KiB)";
const TTL_SHORT: &str = "the TTL is shorter than etcd's one-second resolution";
const TTL_LONG: &str = "the TTL is longer than u32::MAX seconds";

/// The texts tried as keys and as node ids, and what each becomes as a key / as a node id
/// (`None`: stored).
fn texts() -> Vec<(
    &'static str,
    String,
    Option<&'static str>,
    Option<&'static str>,
)> {
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
        (
            "newline",
            "a\nb".into(),
            Some(KEY_CONTROL),
            Some(NODE_CONTROL),
        ),
        (
            "DEL",
            "a\u{7f}b".into(),
            Some(KEY_CONTROL),
            Some(NODE_CONTROL),
        ),
        (
            "10 KiB",
            "k".repeat(10 * 1024),
            Some(KEY_LONG),
            Some(NODE_LONG),
        ),
        (
            "10 KiB of unicode",
            "é".repeat(5 * 1024),
            Some(KEY_LONG),
            Some(NODE_LONG),
        ),
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
        label: "2000 bytes (the limit)",
        value: Value::Text(at_limit),
        expect: Expect::Stored,
    });
    rows.push(Row {
        field: Field::Key,
        label: "2000 bytes + 1",
        value: Value::Text(over.clone()),
        expect: key_error(&over, KEY_LONG),
    });
    let at_limit = "é".repeat(MAX_NODE_ID_BYTES / 6); // 6 bytes each once encoded
    let over = "k".repeat(MAX_NODE_ID_BYTES + 1);
    rows.push(Row {
        field: Field::NodeId,
        label: "1900 bytes encoded, of unicode (the limit)",
        value: Value::Text(at_limit),
        expect: Expect::Stored,
    });
    rows.push(Row {
        field: Field::NodeId,
        label: "1900 bytes + 1",
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

/// etcd serves HTTP and gRPC on one client port through cmux, which reads at most 4096 bytes
/// to recognise HTTP/1: a connection whose first request line (method, path and query,
/// version, CRLF) is longer is reset. Later requests on a connection are not inspected.
const REQUEST_LINE_LIMIT: usize = 4096;

/// The request line of each request the machine sends for `config`: lock, renew, unlock.
fn request_lines(config: &Config) -> [(String, Vec<u8>); 3] {
    let line = |command: fn(&mut Lock, Instant)| {
        let mut lock = Lock::new(config.clone());
        command(&mut lock, Instant::now());
        let (_, request) = lock.poll_request().expect("a request");
        let pq = request.uri().path_and_query().expect("a path").as_str();
        (
            format!("{} {pq} HTTP/1.1\r\n", request.method()),
            request.body().clone(),
        )
    };
    [
        line(|l, t| {
            l.lock(t);
        }),
        line(|l, t| {
            l.renew(t);
        }),
        line(|l, t| {
            l.unlock(t);
        }),
    ]
}

/// Runs one row; returns its table line.
async fn run(row: &Row, url: &str) -> String {
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
    let config = match (&row.expect, result) {
        (Expect::Rejected(expected), Err(e)) => {
            assert_eq!(&e, expected, "{field} {:?}: the wrong error", row.label);
            return format!("{head} {} | — | — | — |", show_error(&e));
        }
        (Expect::Rejected(expected), Ok(_)) => {
            panic!(
                "{field} {:?} was accepted, expected {expected:?}",
                row.label
            )
        }
        (Expect::Stored, Err(e)) => panic!("{field} {:?} was refused: {e:?}", row.label),
        (Expect::Stored, Ok(config)) => config,
    };
    let accepted = match row.field {
        Field::Key => {
            let k = config.key().as_str();
            assert_eq!(k, key.strip_prefix('/').unwrap_or(&key), "Key::as_str");
            format!("key {}", cell(&show(k)))
        }
        Field::NodeId => format!("node id {}", cell(&show(&node))),
        Field::Ttl => format!("{} s", config.ttl_secs()),
    };
    // The key as stored: in the row's own directory (filled up to exactly the limit for the
    // limit row).
    let stored_key = match row.field {
        Field::Key if config.key().as_str().len() == MAX_KEY_BYTES => {
            format!(
                "{dir}/{}",
                &config.key().as_str()[..MAX_KEY_BYTES - dir.len() - 1]
            )
        }
        Field::Key => format!("{dir}/{}", config.key().as_str()),
        _ => format!("{dir}/lock"),
    };
    let placed = Config::new(&stored_key, &node, ttl).expect("valid under a directory");
    let lines = request_lines(&placed);
    let wire = match row.field {
        Field::Key => {
            // The lock request of the key as given (not placed in the directory).
            let line = &request_lines(&config)[0].0;
            let rest = line
                .strip_prefix("PUT /v2/keys")
                .unwrap_or_else(|| panic!("{line} is not a PUT under /v2/keys"));
            cell(&show_wire(&format!(
                "…{}",
                rest.trim_end_matches(" HTTP/1.1\r\n")
            )))
        }
        Field::NodeId | Field::Ttl => cell(&show_wire(
            &String::from_utf8(lines[0].1.clone()).expect("UTF-8 form"),
        )),
    };
    let (on_etcd, stored) = on_etcd(&placed, &lines, url, &dir).await;
    format!("{head} accepted: {accepted} | {wire} | {on_etcd} | {stored} |")
}

/// A lock client on a connection of its own (a fresh `Etcd` has an empty pool).
fn fresh(url: &str, config: &Config) -> Microlock {
    let etcd = Etcd::new([url]).expect("endpoint");
    Microlock::with_config(&etcd, config.clone()).expect("a lock client")
}

fn outcome<T>(result: &Result<T, Error>) -> String {
    match result {
        Ok(_) => "✓".into(),
        Err(Error::Transport { .. }) => "`Transport` (connection reset)".into(),
        Err(e) => format!("`{e:?}`"),
    }
}

/// Locks, checks what etcd stored, renews and unlocks — each on a fresh connection, so the
/// outcome does not depend on connection reuse; returns the outcome and what was stored.
async fn on_etcd(
    config: &Config,
    lines: &[(String, Vec<u8>); 3],
    url: &str,
    dir: &str,
) -> (String, String) {
    let key = config.key().as_str().to_owned();
    let node_id = config.node_id().as_str().to_owned();
    let fits: Vec<bool> = lines
        .iter()
        .map(|(line, _)| line.len() <= REQUEST_LINE_LIMIT)
        .collect();
    let lock = fresh(url, config).lock().await;
    if fits[0] {
        assert!(lock.is_ok(), "lock {key:?} as {node_id:?}: {lock:?}");
    } else {
        assert!(
            matches!(lock, Err(Error::Transport { .. })),
            "lock {key:?} with a {}-byte request line: {lock:?}",
            lines[0].0.len()
        );
    }
    let mut stored = "—".to_owned();
    if let Ok(fence) = &lock {
        let (u, k) = (url.to_owned(), key.clone());
        let node = tokio::task::spawn_blocking(move || inspect::node(&u, &k))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key:?} not found in etcd after lock"));
        let stored_key = node["key"].as_str().expect("a key").to_owned();
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
        let rest = &stored_key[dir.len() + 1..];
        let hidden = rest[1..].starts_with('_');
        if hidden {
            // etcd hides keys whose name starts with `_` from directory listings.
            assert_eq!(listed, Vec::<String>::new(), "listing of {dir:?}");
        } else {
            assert_eq!(listed, vec![stored_key.clone()], "the only key in {dir:?}");
        }
        let shown = if rest.len() > 64 {
            let name = &rest[1..];
            if key.len() == MAX_KEY_BYTES && !name.is_empty() && name.bytes().all(|b| b == b'k') {
                // How many bytes the filling takes depends on the directory's length (the
                // process id is in it), so the table shows the rule, not this run's count.
                format!(
                    "{} + `\"k\"` × n ({MAX_KEY_BYTES} bytes in all)",
                    cell(&format!("\"/{DIR}/\""))
                )
            } else {
                cell(&format!("\"/{DIR}/\" + {}", show(name)))
            }
        } else {
            cell(&show(&format!("/{DIR}{rest}")))
        };
        stored = format!(
            "key {shown}, value {}, TTL {} s",
            cell(&show(&node_id)),
            config.ttl_secs()
        );
        if hidden {
            stored.push_str(" (hidden from directory listings: `_` prefix)");
        }
    }
    let renew = fresh(url, config).renew().await.map(|_| ());
    let unlock = fresh(url, config).unlock().await;
    for (name, result, fits) in [("renew", &renew, fits[1]), ("unlock", &unlock, fits[2])] {
        match (fits, lock.is_ok()) {
            (false, _) => assert!(
                matches!(result, Err(Error::Transport { .. })),
                "{name} {key:?} as {node_id:?} with a long request line: {result:?}"
            ),
            (true, true) => assert!(result.is_ok(), "{name} {key:?} as {node_id:?}: {result:?}"),
            (true, false) => assert!(
                matches!(result, Err(Error::LockNotOwned { .. })),
                "{name} {key:?} (never locked): {result:?}"
            ),
        }
    }
    if lock.is_ok() && unlock.is_ok() {
        let (u, k) = (url.to_owned(), key.clone());
        let gone = tokio::task::spawn_blocking(move || inspect::node(&u, &k))
            .await
            .unwrap();
        assert!(gone.is_none(), "{key:?} still in etcd after unlock");
    }
    let mut text = format!(
        "lock {}, renew {}, unlock {}",
        outcome(&lock),
        outcome(&renew),
        outcome(&unlock)
    );
    if fits.iter().any(|f| !f) {
        text.push_str(" — request line over 4096 bytes");
    }
    (text, stored)
}

fn render(lines: &[String]) -> String {
    let mut table = String::new();
    table.push_str(
        "| field | case | input (Rust escapes) | `Config::new` | on the wire (lock request) | \
         on real etcd, each on a fresh connection | read back from etcd after `lock()` |\n",
    );
    table.push_str("|---|---|---|---|---|---|---|\n");
    for line in lines {
        let _ = writeln!(table, "{line}");
    }
    table
}

const BEGIN: &str =
    "<!-- BEGIN hostile-input table (generated by tests/tests/hostile_input.rs) -->\n";
const END: &str = "<!-- END hostile-input table -->";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_catalogue() {
    let url = etcd::shared().client_url();
    let mut lines = Vec::new();
    for row in rows() {
        lines.push(run(&row, &url).await);
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
            None => format!("{doc}{BEGIN}{table}{END}\n"),
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

/// The limit behind the long-key and long-node-id rows, at the byte: on a fresh connection a
/// request line of 4096 bytes (CRLF included) is served and one of 4097 is reset; on a
/// connection that already carried a request, the longer one is served too — so without a
/// bound in `Config`, such a lock works or fails depending on connection reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_resets_fresh_connections_with_request_lines_over_4096_bytes() {
    let url = etcd::shared().client_url();
    let dir = unique_key("line-limit");
    // `PUT /v2/keys/<dir>/<name>?prevExist=false HTTP/1.1\r\n` of exactly `len` bytes.
    let key_for = |len: usize, c: char| {
        let fixed = format!(
            "PUT {}/?prevExist=false HTTP/1.1\r\n",
            inspect::key_path(&dir)
        );
        format!("{dir}/{}", c.to_string().repeat(len - fixed.len()))
    };
    let config = |key: &str| Config::new(key, NODE, TTL);
    let (at_limit, over, warm_over) = (
        key_for(REQUEST_LINE_LIMIT, 'a'),
        key_for(REQUEST_LINE_LIMIT + 1, 'b'),
        key_for(REQUEST_LINE_LIMIT + 1, 'c'),
    );
    let (Ok(at_limit), Ok(over), Ok(warm_over)) =
        (config(&at_limit), config(&over), config(&warm_over))
    else {
        // Config refuses keys this long (a fix of the limit): nothing can reach etcd.
        for key in [&at_limit, &over] {
            assert!(matches!(config(key), Err(Error::InvalidKey { .. }) | Ok(_)));
        }
        return;
    };
    assert_eq!(request_lines(&at_limit)[0].0.len(), REQUEST_LINE_LIMIT);
    assert_eq!(request_lines(&over)[0].0.len(), REQUEST_LINE_LIMIT + 1);

    let lock = fresh(&url, &at_limit).lock().await;
    assert!(lock.is_ok(), "4096-byte request line: {lock:?}");
    let lock = fresh(&url, &over).lock().await;
    assert!(
        matches!(lock, Err(Error::Transport { .. })),
        "4097-byte request line on a fresh connection: {lock:?}"
    );
    // The same length on a connection that has carried a request already is served.
    let etcd = Etcd::new([url.as_str()]).expect("endpoint");
    let short = Config::new(&format!("{dir}/short"), NODE, TTL).unwrap();
    Microlock::with_config(&etcd, short)
        .unwrap()
        .lock()
        .await
        .expect("short key");
    tokio::time::sleep(Duration::from_millis(100)).await; // the connection is back in the pool
    let lock = Microlock::with_config(&etcd, warm_over)
        .unwrap()
        .lock()
        .await;
    assert!(
        lock.is_ok(),
        "4097-byte request line on a reused connection: {lock:?}"
    );
}
