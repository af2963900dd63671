//! The `microlock` command, as a user runs it: real processes against real etcd.
//!
//! Needs the binary built first (`make test` does it):
//! `cargo build -p microlock-tokio --features cli --bin microlock`.
//!
//! The commands run by `microlock run` here are small `sh` scripts that append to a fenced
//! log (`start TOKEN NANOS PID NODE_ID` / `end TOKEN NANOS`, times from `date +%s%N`), from
//! which the tests check that holders never overlap and that tokens grow. Bounds are
//! generous (a busy 2-core machine); nothing sleeps where an event can be awaited: files,
//! processes and process groups are polled.

use std::path::Path;
use std::time::Duration;

use microlock_tests::cli::{
    self, assert_fenced, code_blocks, command, group_exists, now_ns, read_log, readme_section,
    run_command, wait_until, LogLine, Output, Process, TempDir,
};
use microlock_tests::cut_proxy::CutProxy;
use microlock_tests::etcd::{shared, shared_v3_only, unique_key, EtcdServer};
use microlock_tests::{auth, inspect, tls};
use serde_json::Value;

/// A bound for what should be prompt (a command that gets its answer at once).
const PROMPT: Duration = Duration::from_secs(20);

/// A CMD holding the lock for `$2` seconds, logging its start and end to `$1`.
const FENCED: &str = r#"log="$1"
echo "start $MICROLOCK_TOKEN $(date +%s%N) $$ $MICROLOCK_NODE_ID" >> "$log"
sleep "$2"
echo "end $MICROLOCK_TOKEN $(date +%s%N)" >> "$log"
"#;

/// A CMD that runs until SIGTERM, logs when it got it, and exits at once.
const OBEYS_SIGTERM: &str = r#"log="$1"
trap 'echo "term $MICROLOCK_TOKEN $(date +%s%N)" >> "$log"; kill "$pid" 2>/dev/null; echo "end $MICROLOCK_TOKEN $(date +%s%N)" >> "$log"; exit 143' TERM
echo "start $MICROLOCK_TOKEN $(date +%s%N) $$" >> "$log"
sleep 120 & pid=$!
wait "$pid"
"#;

/// A CMD that logs SIGTERM and keeps running: only SIGKILL stops it.
const IGNORES_SIGTERM: &str = r#"log="$1"
trap 'echo "term $MICROLOCK_TOKEN $(date +%s%N)" >> "$log"' TERM
echo "start $MICROLOCK_TOKEN $(date +%s%N) $$" >> "$log"
while :; do sleep 0.2 & wait $!; done
"#;

/// A CMD that runs until SIGINT, logs it, and exits with status 3.
const TRAPS_SIGINT: &str = r#"log="$1"
trap 'echo "int $MICROLOCK_TOKEN $(date +%s%N)" >> "$log"; kill "$pid" 2>/dev/null; exit 3' INT
echo "start $MICROLOCK_TOKEN $(date +%s%N) $$" >> "$log"
sleep 120 & pid=$!
wait "$pid"
"#;

/// `microlock ARGS` on the shared etcd, to the end (within [`PROMPT`]).
#[track_caller]
fn microlock(args: &[&str]) -> Output {
    cli::run(&shared().client_url(), args, PROMPT)
}

/// The lines of the log that are `kind`.
fn kinds<'a>(lines: &'a [LogLine], kind: &str) -> Vec<&'a LogLine> {
    lines.iter().filter(|l| l.kind == kind).collect()
}

/// A loopback URL where nothing listens.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    drop(listener);
    url
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

#[test]
fn contenders_take_turns_in_token_order() {
    let url = shared().client_url();
    let key = unique_key("cli-turns");
    let dir = TempDir::new("turns");
    let script = dir.write("fenced.sh", FENCED);
    let log = dir.path().join("log");
    let spawn = |name: &str| {
        let mut run = command(&url);
        run.args(["run", "--key", &key, "--wait", "60s", "--verbose", "--"])
            .args(["sh", path(&script), path(&log), "1"]);
        Process::spawn(&mut run, &dir, name)
    };
    let mut first = spawn("first");
    let mut second = spawn("second");
    assert_eq!(
        first.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        first.stderr()
    );
    assert_eq!(
        second.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        second.stderr()
    );

    let lines = read_log(&log);
    let tokens = assert_fenced(&lines);
    assert_eq!(tokens.len(), 2, "{lines:#?}");
    // The one that waited said who held the lock (--verbose: stderr is not a terminal).
    let starts = kinds(&lines, "start");
    let first_holder = starts[0].node.clone().expect("a node id");
    let waited = [first.stderr(), second.stderr()]
        .into_iter()
        .find(|e| e.contains("waiting for"))
        .expect("one of them waited and said so");
    assert!(
        waited.contains(&format!(
            "waiting for {key}: held by {first_holder} (token {})",
            tokens[0]
        )),
        "{waited}"
    );
    assert!(inspect::node(&url, &key).is_none(), "released at the end");
}

#[test]
fn wait_runs_out_with_75_and_cmd_never_runs() {
    let url = shared().client_url();
    let key = unique_key("cli-wait");
    let dir = TempDir::new("wait");
    let marker = dir.path().join("ran");
    let held = microlock(&["lock", "--key", &key, "--id", "holder", "--ttl", "30s"]);
    held.expect_code(0);
    let token: u64 = held.stdout.trim().parse().expect("lock prints the token");

    let waiter = microlock(&[
        "run",
        "--key",
        &key,
        "--wait",
        "1s",
        "--",
        "sh",
        "-c",
        "echo ran > \"$1\"",
        "sh",
        path(&marker),
    ]);
    waiter.expect_code(75);
    assert!(waiter.took >= Duration::from_secs(1), "{:?}", waiter.took);
    assert!(!marker.exists(), "CMD ran without the lock");
    assert!(
        waiter.stderr.contains(&format!(
            "{key} not acquired within 1s: held by holder (token {token})"
        )),
        "{}",
        waiter.stderr
    );
    // `lock --wait 0` tries once.
    let other = microlock(&["lock", "--key", &key, "--id", "other"]);
    other.expect_code(75);
    assert!(other.stderr.contains("held by holder"), "{}", other.stderr);
    assert_eq!(inspect::value(&url, &key).as_deref(), Some("holder"));
    microlock(&["unlock", "--key", &key, "--id", "holder"]).expect_code(0);
}

#[test]
fn cmd_exit_status_passes_through() {
    let url = shared().client_url();
    let key = unique_key("cli-status");
    let dir = TempDir::new("status");
    let not_executable = dir.write("not-executable", "#!/bin/sh\nexit 0\n");
    let cases: [(&[&str], i32, &str); 4] = [
        (&["sh", "-c", "exit 7"], 7, ""),
        (&["sh", "-c", "kill -9 $$"], 128 + 9, ""),
        (&["/nonexistent/cmd"], 127, "command not found"),
        (&[path(&not_executable)], 126, "permission denied"),
    ];
    for (cmd, code, message) in cases {
        let mut args = vec!["run", "--key", &key, "--"];
        args.extend_from_slice(cmd);
        let out = microlock(&args);
        out.expect_code(code);
        assert!(out.stderr.contains(message), "{cmd:?}: {}", out.stderr);
        assert!(
            inspect::node(&url, &key).is_none(),
            "{cmd:?}: the lock must be released"
        );
    }
}

#[test]
fn cmd_environment_and_growing_tokens() {
    let key = unique_key("cli-env");
    let dir = TempDir::new("env");
    let env_of = |id: Option<&str>| -> Vec<String> {
        let file = dir.path().join("env");
        let mut args = vec!["run", "--key", &key];
        if let Some(id) = id {
            args.extend(["--id", id]);
        }
        let script =
            r#"printf '%s\n' "$MICROLOCK_KEY" "$MICROLOCK_TOKEN" "$MICROLOCK_NODE_ID" > "$1""#;
        args.extend(["--", "sh", "-c", script, "sh", path(&file)]);
        microlock(&args).expect_code(0);
        let text = std::fs::read_to_string(&file).expect("CMD wrote its environment");
        text.lines().map(str::to_owned).collect()
    };
    let first = env_of(Some("worker 1"));
    assert_eq!(first[0], key);
    assert_eq!(first[2], "worker 1");
    let second = env_of(None);
    assert_eq!(second[0], key);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("a host name");
    let (node_host, node_pid) = second[2].rsplit_once(':').expect("<hostname>:<pid>");
    assert_eq!(node_host, host.trim());
    assert!(node_pid.parse::<u32>().is_ok(), "{}", second[2]);
    let (t1, t2): (u64, u64) = (
        first[1].parse().expect("a token"),
        second[1].parse().expect("a token"),
    );
    assert!(t2 > t1, "tokens must grow between holders: {t1} then {t2}");
}

/// What a loss scenario measured, in nanoseconds since the proxy was cut.
#[derive(Debug)]
struct Loss {
    /// When the holder's CMD logged SIGTERM.
    term: Option<i128>,
    /// When the test first saw no process left in the holder's CMD's group.
    gone: i128,
    /// When the test saw the holder's microlock exit, and its status.
    holder_exit: (i128, Option<i32>),
    /// When the second holder's CMD started.
    second_start: i128,
    tokens: (u64, u64),
    holder_stderr: String,
}

/// TTL 4 s, kill-after 1 s: the hold is valid 3.6 s after each successful renewal (TTL −
/// TTL/10); renewals every 0.7 s; SIGTERM 2.1 s and SIGKILL 3.1 s after the last successful
/// renewal. The last renewal went out before the cut, so these are upper bounds from the cut.
const LOSS_VALIDITY: Duration = Duration::from_millis(3600);
const LOSS_TERM_POINT: Duration = Duration::from_millis(2100);
const LOSS_KILL_POINT: Duration = Duration::from_millis(3100);
/// Lateness allowed to this process's timer, the signal and the trap's `date` on a busy machine.
const LOSS_SLACK: Duration = Duration::from_millis(1000);

/// A holder behind a proxy that is cut while its CMD (`holder_script`) runs; a second
/// `microlock run` straight to etcd waits for the lock.
fn loss_scenario(name: &str, holder_script: &str) -> Loss {
    let url = shared().client_url();
    let proxy = CutProxy::start(&url);
    let key = unique_key(name);
    let dir = TempDir::new(name);
    let holder_cmd = dir.write("holder.sh", holder_script);
    let second_cmd = dir.write("fenced.sh", FENCED);
    let log = dir.path().join("log");

    let mut run = command(&proxy.url);
    run.args(["run", "--key", &key, "--ttl", "4s", "--kill-after", "1s"])
        .args([
            "--wait",
            "0",
            "--verbose",
            "--",
            "sh",
            path(&holder_cmd),
            path(&log),
        ]);
    let mut holder = Process::spawn(&mut run, &dir, "holder");
    wait_until(PROMPT, "the holder's CMD starts", || {
        !kinds(&read_log(&log), "start").is_empty()
    });
    let start = read_log(&log)[0].clone();
    let pgid = start.pid.expect("the holder's CMD logs its pid");
    wait_until(PROMPT, "a renewal goes through the proxy", || {
        proxy.renewals() >= 1
    });

    let cut = now_ns();
    proxy.cut();
    let mut run = command(&url);
    run.args(["run", "--key", &key, "--ttl", "4s", "--wait", "30s", "--"])
        .args(["sh", path(&second_cmd), path(&log), "0"]);
    let mut second = Process::spawn(&mut run, &dir, "second");

    let (mut gone, mut holder_exit) = (None, None);
    wait_until(
        Duration::from_secs(40),
        "the holder's CMD gone, the holder exited, the second CMD started",
        || {
            if gone.is_none() && !group_exists(pgid) {
                gone = Some(now_ns() - cut);
            }
            if holder_exit.is_none() {
                holder_exit = holder.exited().map(|code| (now_ns() - cut, code));
            }
            gone.is_some()
                && holder_exit.is_some()
                && read_log(&log)
                    .iter()
                    .any(|l| l.kind == "start" && l.token != start.token)
        },
    );
    assert_eq!(second.wait(PROMPT), Some(0), "{}", second.stderr());
    let lines = read_log(&log);
    let second_start = kinds(&lines, "start")[1];
    let holder_stderr = holder.stderr();
    println!("holder's stderr:\n{holder_stderr}");
    Loss {
        term: kinds(&lines, "term").first().map(|l| l.ns - cut),
        gone: gone.expect("seen"),
        holder_exit: holder_exit.expect("seen"),
        second_start: second_start.ns - cut,
        tokens: (start.token, second_start.token),
        holder_stderr,
    }
}

fn secs(ns: i128) -> String {
    format!("{:+.3}s", ns as f64 / 1e9)
}

fn print_transcript(title: &str, loss: &Loss) {
    println!(
        "\n=== {title} ===\n\
         TTL 4s, --kill-after 1s: after each successful renewal the hold is valid 3.6s;\n\
         renewals every 0.7s; SIGTERM at +2.1s, SIGKILL at +3.1s after the last successful\n\
         renewal (which was sent before the cut: these are upper bounds from the cut).\n\
         {:>9}  proxy cut: the holder's renewals fail from now on\n\
         {:>9}  holder's CMD got SIGTERM\n\
         {:>9}  holder's CMD process group gone\n\
         {:>9}  holder's microlock exited, status {:?}\n\
         {:>9}  second holder's CMD started (token {} > {})\n",
        secs(0),
        loss.term.map_or("never".to_owned(), secs),
        secs(loss.gone),
        secs(loss.holder_exit.0),
        loss.holder_exit.1,
        secs(loss.second_start),
        loss.tokens.1,
        loss.tokens.0,
    );
}

fn ns(d: Duration) -> i128 {
    d.as_nanos() as i128
}

#[test]
fn loss_sends_sigterm_before_the_validity_deadline() {
    let loss = loss_scenario("cli-loss-term", OBEYS_SIGTERM);
    print_transcript("loss: CMD obeys SIGTERM", &loss);
    assert_eq!(loss.holder_exit.1, Some(124), "{}", loss.holder_stderr);
    assert!(
        loss.holder_stderr.contains("losing the lock") && loss.holder_stderr.contains("SIGTERM"),
        "{}",
        loss.holder_stderr
    );
    let term = loss.term.expect("CMD got SIGTERM");
    assert!(term > 0, "SIGTERM before the cut: {loss:?}");
    assert!(
        term <= ns(LOSS_TERM_POINT + LOSS_SLACK),
        "SIGTERM too late: {loss:?}"
    );
    // Gone before the hold's validity deadline (at most 3.6 s after the cut).
    assert!(term < ns(LOSS_VALIDITY), "{loss:?}");
    assert!(
        loss.gone < ns(LOSS_VALIDITY),
        "CMD outlived the deadline: {loss:?}"
    );
    // The next holder only after the first CMD's group is gone, with a larger token.
    assert!(loss.second_start > loss.gone, "{loss:?}");
    assert!(loss.tokens.1 > loss.tokens.0, "{loss:?}");
}

#[test]
fn loss_sends_sigkill_to_a_cmd_that_ignores_sigterm() {
    let loss = loss_scenario("cli-loss-kill", IGNORES_SIGTERM);
    print_transcript("loss: CMD ignores SIGTERM", &loss);
    assert_eq!(loss.holder_exit.1, Some(124), "{}", loss.holder_stderr);
    assert!(
        loss.holder_stderr.contains("SIGKILL"),
        "{}",
        loss.holder_stderr
    );
    let term = loss.term.expect("CMD got SIGTERM");
    assert!(
        term > 0 && term <= ns(LOSS_TERM_POINT + LOSS_SLACK),
        "{loss:?}"
    );
    // It survived SIGTERM and was killed about --kill-after later...
    assert!(
        loss.gone - term >= ns(Duration::from_millis(500)),
        "{loss:?}"
    );
    assert!(
        loss.gone <= ns(LOSS_KILL_POINT + LOSS_SLACK) && loss.gone < ns(LOSS_VALIDITY),
        "SIGKILL too late: {loss:?}"
    );
    // ... before anyone else could hold the lock.
    assert!(loss.second_start > loss.gone, "{loss:?}");
    assert!(loss.tokens.1 > loss.tokens.0, "{loss:?}");
}

#[test]
fn key_taken_away_stops_cmd_at_once() {
    let url = shared().client_url();
    let key = unique_key("cli-taken");
    let dir = TempDir::new("taken");
    let script = dir.write("holder.sh", OBEYS_SIGTERM);
    let log = dir.path().join("log");
    let mut run = command(&url);
    run.args(["run", "--key", &key, "--ttl", "60s", "--"])
        .args(["sh", path(&script), path(&log)]);
    let mut holder = Process::spawn(&mut run, &dir, "holder");
    wait_until(PROMPT, "CMD starts", || !read_log(&log).is_empty());
    // Someone deletes the key (as `etcdctl rm` would): the hold is gone now, not at its
    // deadline a minute away, so CMD is stopped now.
    let deleted = now_ns();
    let r = microlock_tests::etcd::raw_request(&url, "DELETE", &inspect::key_path(&key), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(holder.wait(PROMPT), Some(124), "{}", holder.stderr());
    let term = kinds(&read_log(&log), "term")[0].ns - deleted;
    println!("key deleted: CMD got SIGTERM {} later", secs(term));
    assert!(term < ns(Duration::from_secs(5)), "{}", secs(term));
    assert!(
        holder.stderr().contains("losing the lock"),
        "{}",
        holder.stderr()
    );
}

#[test]
fn signals_are_forwarded_and_the_lock_released_at_once() {
    let url = shared().client_url();
    let key = unique_key("cli-sigint");
    let dir = TempDir::new("sigint");
    let script = dir.write("traps.sh", TRAPS_SIGINT);
    let log = dir.path().join("log");
    let mut run = command(&url);
    run.args(["run", "--key", &key, "--ttl", "60s", "--"])
        .args(["sh", path(&script), path(&log)]);
    let mut holder = Process::spawn(&mut run, &dir, "holder");
    wait_until(PROMPT, "CMD starts", || !read_log(&log).is_empty());
    holder.signal("-INT");
    assert_eq!(holder.wait(PROMPT), Some(3), "{}", holder.stderr());
    assert_eq!(
        kinds(&read_log(&log), "int").len(),
        1,
        "CMD got SIGINT once"
    );
    // Released, not left to its 60 s TTL: another node takes it at once.
    assert!(inspect::node(&url, &key).is_none());
    microlock(&["lock", "--key", &key, "--id", "next", "--ttl", "60s"]).expect_code(0);

    // A SIGINT while waiting for the lock: 128 + 2, and CMD never runs.
    let marker = dir.path().join("ran");
    let mut run = command(&url);
    run.args(["run", "--key", &key, "--wait", "60s", "--verbose", "--"])
        .args(["sh", "-c", "echo ran > \"$1\"", "sh", path(&marker)]);
    let mut waiter = Process::spawn(&mut run, &dir, "waiter");
    wait_until(PROMPT, "the waiter says it waits", || {
        waiter.stderr().contains("waiting for")
    });
    waiter.signal("-INT");
    assert_eq!(waiter.wait(PROMPT), Some(130), "{}", waiter.stderr());
    assert!(!marker.exists());
    assert_eq!(inspect::value(&url, &key).as_deref(), Some("next"));
    microlock(&["unlock", "--key", &key, "--id", "next"]).expect_code(0);
}

#[test]
fn lock_status_watch_unlock() {
    let url = shared().client_url();
    let key = unique_key("cli-observe");
    let dir = TempDir::new("observe");
    let mut run = command(&url);
    run.args(["watch", "--key", &key, "--json"]);
    let mut watch = Process::spawn(&mut run, &dir, "watch");
    let watched = |n: usize| -> Vec<Value> {
        let mut lines = Vec::new();
        wait_until(PROMPT, "watch prints its lines", || {
            lines = watch.stdout().lines().map(str::to_owned).collect();
            lines.len() >= n
        });
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    };

    let locked = microlock(&["lock", "--key", &key, "--id", "holder-1", "--ttl", "30s"]);
    locked.expect_code(0);
    let token: u64 = locked.stdout.trim().parse().expect("the token on stdout");
    assert!(
        locked
            .stderr
            .contains(&format!("microlock unlock --key {key} --id holder-1")),
        "{}",
        locked.stderr
    );
    // Still held after `lock` exited: not renewed, not released.
    let node = inspect::node(&url, &key).expect("held");
    assert_eq!(node["value"], "holder-1");
    assert_eq!(node["createdIndex"].as_u64(), Some(token));
    assert!(node["ttl"].as_u64().is_some_and(|ttl| ttl > 0 && ttl <= 30));

    let first = &watched(1)[0];
    assert_eq!(first["event"], "locked", "{first}");
    assert_eq!(first["key"], key.as_str());
    assert_eq!(first["holder"], "holder-1");
    assert_eq!(first["token"].as_u64(), Some(token));
    assert!(first["time"].is_string());

    let status = microlock(&["status", "--key", &key, "--json"]);
    let status: Value = serde_json::from_str(&status.expect_code(0).stdout).expect("JSON");
    assert_eq!(status["key"], key.as_str());
    assert_eq!(status["held"], true);
    assert_eq!(status["holder"], "holder-1");
    assert_eq!(status["token"].as_u64(), Some(token));
    let ttl_left = status["ttl_left_ms"].as_u64().expect("the TTL left, in ms");
    assert!(ttl_left > 0 && ttl_left <= 30_000, "{status}");
    let text = microlock(&["status", "--key", &key]);
    assert!(
        text.expect_code(0)
            .stdout
            .contains(&format!("held by holder-1, token {token}, TTL left")),
        "{}",
        text.stdout
    );

    let wrong = microlock(&["unlock", "--key", &key, "--id", "intruder"]);
    wrong.expect_code(77);
    assert!(
        wrong.stderr.contains("is not held by intruder"),
        "{}",
        wrong.stderr
    );
    assert_eq!(inspect::value(&url, &key).as_deref(), Some("holder-1"));
    microlock(&["unlock", "--key", &key, "--id", "holder-1"]).expect_code(0);
    assert!(inspect::node(&url, &key).is_none());

    let second = &watched(2)[1];
    assert_eq!(second["event"], "unlocked", "{second}");
    assert_eq!(second["previous_holder"], "holder-1");
    assert_eq!(second["expired"], false);
    let free = microlock(&["status", "--key", &key, "--json"]);
    let free: Value = serde_json::from_str(&free.expect_code(0).stdout).expect("JSON");
    assert_eq!(free["held"], false);
    assert!(free["holder"].is_null() && free["token"].is_null());

    watch.signal("-INT");
    assert_eq!(watch.wait(PROMPT), Some(0), "{}", watch.stderr());
}

/// `--protocol v3` (or `MICROLOCK_PROTOCOL=v3`): the same commands on etcd's v3 API, the lock
/// laid out as `etcdctl lock`'s; without it, an etcd serving no v2 API is named as such.
#[test]
fn protocol_v3_lock_status_unlock_run() {
    let url = shared_v3_only().client_url();
    let key = unique_key("cli-v3");
    let v3 = |args: &[&str]| {
        let all: Vec<&str> = ["--protocol", "v3"].iter().chain(args).copied().collect();
        cli::run(&url, &all, PROMPT)
    };
    let v2 = cli::run(&url, &["status", "--key", &key], PROMPT);
    v2.expect_code(69);
    assert!(v2.stderr.contains("--protocol v3"), "{}", v2.stderr);

    let locked = v3(&["lock", "--key", &key, "--id", "holder-1", "--ttl", "30s"]);
    locked.expect_code(0);
    let token: u64 = locked.stdout.trim().parse().expect("the token on stdout");
    // Held after `lock` exited (its lease is not revoked), as etcdctl lock's layout.
    assert_eq!(
        inspect::v3_holder(&url, &key),
        Some(("holder-1".to_owned(), token))
    );
    let status = v3(&["status", "--key", &key, "--json"]);
    let status: Value = serde_json::from_str(&status.expect_code(0).stdout).expect("JSON");
    assert_eq!(status["held"], true);
    assert_eq!(status["holder"], "holder-1");
    assert_eq!(status["token"].as_u64(), Some(token));
    let ttl_left = status["ttl_left_ms"]
        .as_u64()
        .expect("the lease's TTL left");
    assert!(ttl_left > 0 && ttl_left <= 30_000, "{status}");

    v3(&["unlock", "--key", &key, "--id", "intruder"]).expect_code(77);
    v3(&["unlock", "--key", &key, "--id", "holder-1"]).expect_code(0);
    assert_eq!(inspect::v3_holder(&url, &key), None);

    // The variable instead of the flag; CMD gets the fencing token.
    let mut run = command(&url);
    run.env("MICROLOCK_PROTOCOL", "v3").args([
        "run",
        "--key",
        &key,
        "--",
        "sh",
        "-c",
        "echo $MICROLOCK_TOKEN",
    ]);
    let ran = run_command(&mut run, PROMPT);
    let second: u64 = ran.expect_code(0).stdout.trim().parse().expect("a token");
    assert!(second > token, "{second} > {token}");
    assert_eq!(
        inspect::v3_holder(&url, &key),
        None,
        "released when CMD exited"
    );
}

#[test]
fn usage_errors_exit_64() {
    // Nothing listens: a usage error must be found before etcd is asked (69 otherwise).
    let url = closed_port_url();
    let cases: [&[&str]; 9] = [
        &[],
        &["bogus"],
        &["run", "--key", "k"],
        &["run", "--key", "k", "--ttl", "ten", "--", "true"],
        &[
            "run",
            "--key",
            "k",
            "--ttl",
            "3s",
            "--kill-after",
            "5s",
            "--",
            "true",
        ],
        &["lock"],
        &["lock", "--key", "a//b"],
        &["status", "--key", "k", "--cert", "/nonexistent.pem"],
        &["unlock", "--key", "k"],
    ];
    for args in cases {
        let out = cli::run(&url, args, PROMPT);
        out.expect_code(64);
        assert!(!out.stderr.is_empty(), "{args:?}: a usage error says why");
    }
    let out = cli::run(
        &url,
        &[
            "run",
            "--key",
            "k",
            "--ttl",
            "3s",
            "--kill-after",
            "5s",
            "--",
            "true",
        ],
        PROMPT,
    );
    assert!(
        out.stderr
            .contains("--kill-after 5s does not fit in --ttl 3s"),
        "{}",
        out.stderr
    );
    let help = cli::run(&url, &["run", "--help"], PROMPT);
    help.expect_code(0);
    for section in ["Loss timing:", "Exit status:", "MICROLOCK_TOKEN"] {
        assert!(help.stdout.contains(section), "{section}: {}", help.stdout);
    }
    cli::run(&url, &["--version"], PROMPT).expect_code(0);
}

#[test]
fn unreachable_etcd_exits_69_quickly() {
    let url = closed_port_url();
    let dir = TempDir::new("unreachable");
    let marker = dir.path().join("ran");
    let cases: [&[&str]; 5] = [
        &["lock", "--key", "k"],
        &[
            "run",
            "--key",
            "k",
            "--",
            "sh",
            "-c",
            "echo ran > \"$1\"",
            "sh",
            path(&marker),
        ],
        &["status", "--key", "k"],
        &["watch", "--key", "k"],
        &["unlock", "--key", "k", "--id", "n"],
    ];
    for args in cases {
        let out = cli::run(&url, args, PROMPT);
        out.expect_code(69);
        assert!(
            out.stderr.contains("Connection refused"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.took < Duration::from_secs(5),
            "{args:?}: {:?}",
            out.took
        );
    }
    assert!(!marker.exists(), "CMD ran without the lock");

    // A member that accepts connections and never answers: the operation budget (4 request
    // timeouts, 8 s) plus one request timeout bounds it.
    let hung = CutProxy::start(&shared().client_url());
    hung.cut();
    let out = cli::run(&hung.url, &["lock", "--key", "k"], Duration::from_secs(30));
    out.expect_code(69);
    assert!(out.took < Duration::from_secs(20), "{:?}", out.took);
}

#[test]
fn tls_and_user_as_etcdctl() {
    // Mutual TLS, with the flags, then with etcdctl's variables.
    let server = tls::shared_tls();
    let https = server.tls_client_url().expect("a TLS etcd");
    let pki = tls::pki();
    let (ca, cert, cert_key) = (
        path(&pki.ca.path),
        path(&pki.client.cert.path),
        path(&pki.client.key.path),
    );
    let key = unique_key("cli-tls");
    let tls_flags = ["--cacert", ca, "--cert", cert, "--key-file", cert_key];
    let mut args = vec!["lock", "--key", &key, "--id", "tls-1"];
    args.extend(tls_flags);
    let token = cli::run(&https, &args, PROMPT)
        .expect_code(0)
        .stdout
        .clone();
    let mut status = command(&https);
    status
        .env("ETCDCTL_CACERT", ca)
        .env("ETCDCTL_CERT", cert)
        .env("ETCDCTL_KEY", cert_key)
        .args(["status", "--key", &key, "--json"]);
    let status: Value =
        serde_json::from_str(&run_command(&mut status, PROMPT).expect_code(0).stdout)
            .expect("JSON");
    assert_eq!(status["holder"], "tls-1");
    assert_eq!(status["token"].to_string(), token.trim());
    // No client certificate: etcd refuses the handshake.
    let refused = cli::run(&https, &["status", "--key", &key, "--cacert", ca], PROMPT);
    refused.expect_code(69);
    assert!(refused.stderr.contains("TLS"), "{}", refused.stderr);
    // A CA for http:// endpoints is a usage error.
    let plain = cli::run(
        &server.client_url(),
        &["status", "--key", &key, "--cacert", ca],
        PROMPT,
    );
    plain.expect_code(64);
    let mut args = vec!["unlock", "--key", &key, "--id", "tls-1"];
    args.extend(tls_flags);
    cli::run(&https, &args, PROMPT).expect_code(0);
    assert!(inspect::node(&server.client_url(), &key).is_none());

    // etcd's authentication: its own etcd (auth changes the whole server).
    let server = EtcdServer::start();
    let url = server.client_url();
    auth::enable_v2_auth(&url, "root-pw");
    auth::add_prefix_user(&url, "root-pw", "alice", "alice-pw", "locks");
    let key = "locks/cli";
    let user = ["--user", "alice:alice-pw"];
    let mut args = vec!["run", "--key", key];
    args.extend(user);
    args.extend(["--", "sh", "-c", "exit 5"]);
    cli::run(&url, &args, PROMPT).expect_code(5);
    let anonymous = cli::run(&url, &["lock", "--key", key], PROMPT);
    anonymous.expect_code(69);
    assert!(
        anonymous.stderr.contains("refused access"),
        "{}",
        anonymous.stderr
    );
    let mut lock = command(&url);
    lock.env("ETCDCTL_USER", "alice")
        .env("ETCDCTL_PASSWORD", "alice-pw")
        .args(["lock", "--key", key, "--id", "a-1"]);
    run_command(&mut lock, PROMPT).expect_code(0);
    let unlock = [
        "unlock",
        "--key",
        key,
        "--id",
        "a-1",
        "--user",
        "alice",
        "--password",
        "alice-pw",
    ];
    cli::run(&url, &unlock, PROMPT).expect_code(0);
    cli::run(&url, &["status", "--key", key, "--password", "x"], PROMPT).expect_code(64);
}

#[test]
fn readme_section_is_correct() {
    let url = shared().client_url();
    let section = readme_section("## Command line: microlock");
    let dir = TempDir::new("readme");

    // Every shell example that uses microlock runs as it is (with `sh -eu`), against the
    // test etcd instead of the default endpoint.
    let examples: Vec<String> = code_blocks(&section, "sh")
        .into_iter()
        .filter(|b| b.contains("microlock ") && !b.contains("cargo "))
        .collect();
    assert!(!examples.is_empty(), "no runnable example in:\n{section}");
    for example in &examples {
        let script = example.replace("http://127.0.0.1:2379", &url);
        let mut sh = cli::shell(&url);
        sh.current_dir(dir.path()).args(["-eu", "-c", &script]);
        let mut process = Process::spawn(&mut sh, &dir, "example");
        let code = process.wait(Duration::from_secs(60));
        assert_eq!(
            code,
            Some(0),
            "README example failed:\n{script}\nstdout:\n{}\nstderr:\n{}",
            process.stdout(),
            process.stderr()
        );
        println!(
            "README example ran:\n{script}\nits output:\n{}",
            process.stdout()
        );
    }

    // The synopsis: every flag it shows exists in that subcommand's --help.
    let synopsis: Vec<String> = code_blocks(&section, "text")
        .into_iter()
        .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.starts_with("microlock ") || l.starts_with("common:"))
        .collect();
    assert!(synopsis.len() >= 6, "no synopsis in:\n{section}");
    for line in &synopsis {
        let words: Vec<&str> = line.split_whitespace().collect();
        let help_args: Vec<&str> = if words[0] == "common:" {
            vec!["--help"]
        } else {
            vec![words[1], "--help"]
        };
        let help = cli::run(&url, &help_args, PROMPT);
        help.expect_code(0);
        for word in &words {
            let flag = word
                .trim_start_matches(['[', '('])
                .split(['=', ']', ')', '/', ','])
                .next()
                .unwrap_or("");
            if flag.starts_with("--") && flag.len() > 2 {
                assert!(
                    help.stdout.contains(flag),
                    "README synopsis `{line}`: {flag} is not in `microlock {help_args:?}`"
                );
            }
        }
    }

    // The exit status table and --help list the same statuses.
    let readme_codes: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|c| c.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    let help = cli::run(&url, &["--help"], PROMPT).stdout;
    let help_codes: Vec<String> = help
        .split("Exit status:")
        .nth(1)
        .expect("--help lists exit statuses")
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    assert!(help_codes.len() >= 9, "{help}");
    assert_eq!(readme_codes, help_codes, "README table vs --help");
}
