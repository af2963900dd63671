//! The original microlock for Node.js as a peer process, for interoperability tests.
//!
//! [`NodePeer::start`] runs `tests/node-interop/peer.js` (microlock 1.2.1 on node-etcd 7.0.0,
//! pinned by its `package-lock.json`) with `node` from `$NODE_BIN` or `PATH`, installing its
//! packages with `npm ci` the first time. A missing `node`/`npm` is a loud failure with an
//! install hint, never a skip.
//!
//! [`NodePeer::start_with`] also takes [`PeerOptions`]: node-etcd's TLS options (`ca`, `cert`,
//! `key`, read from files) for an `https://` URL, and its basic-auth option (`auth`), handed to
//! `peer.js` through `MICROLOCK_PEER_*` environment variables.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a Node.js answer may take (it talks to a local etcd).
const PATIENCE: Duration = Duration::from_secs(20);

/// `tests/node-interop`.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node-interop")
}

fn tool(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` not found (set {var} or put it on PATH). The Node.js interoperability \
             test runs the original microlock; install Node.js: `apt-get install -y nodejs npm`"
        )
    })
}

/// Installs the peer's packages once per test process (`npm ci`: exactly the locked versions).
fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = interop_dir();
        if dir.join("node_modules/microlock/package.json").is_file()
            && dir.join("node_modules/node-etcd/package.json").is_file()
        {
            return;
        }
        let out = Command::new(tool("NPM_BIN", "npm"))
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run npm: {e}"));
        assert!(
            out.status.success(),
            "`npm ci` in {} failed ({}):\n{}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// What the Node.js client answered to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The promise resolved.
    Ok,
    /// `AlreadyLockedError`.
    AlreadyLocked,
    /// `LockNotOwnedError`.
    LockNotOwned,
    /// Anything else (etcd's error code or the message).
    Error(String),
}

/// How the Node.js client connects, beyond its URL: node-etcd's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerOptions {
    /// CA certificate(s) trusted for etcd's server certificate (node-etcd's `ca`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key files presented to etcd (node-etcd's `cert` and `key`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// User name and password for etcd's authentication (node-etcd's `auth`: HTTP basic).
    pub user: Option<(String, String)>,
}

impl PeerOptions {
    /// Mutual TLS with the test PKI: trusts its CA, presents its client certificate.
    pub fn mutual_tls(pki: &crate::tls::Pki) -> PeerOptions {
        PeerOptions {
            ca_file: Some(pki.ca.path.clone()),
            client_cert: Some((pki.client.cert.path.clone(), pki.client.key.path.clone())),
            user: None,
        }
    }

    /// The environment of `peer.js` for these options.
    fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut env = Vec::new();
        if let Some(ca) = &self.ca_file {
            env.push(("MICROLOCK_PEER_CA", ca.clone().into_os_string()));
        }
        if let Some((cert, key)) = &self.client_cert {
            env.push(("MICROLOCK_PEER_CERT", cert.clone().into_os_string()));
            env.push(("MICROLOCK_PEER_KEY", key.clone().into_os_string()));
        }
        if let Some((user, password)) = &self.user {
            env.push(("MICROLOCK_PEER_USER", user.into()));
            env.push(("MICROLOCK_PEER_PASSWORD", password.into()));
        }
        env
    }
}

/// One microlock (Node.js) client for one key and node id, in its own process.
pub struct NodePeer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Events received and not yet taken by [`NodePeer::event`].
    events: Vec<String>,
    name: String,
}

impl NodePeer {
    /// `new Microlock(new Etcd([host]), key, node_id, ttl)` in a Node.js process.
    pub fn start(client_url: &str, key: &str, node_id: &str, ttl_secs: u64) -> NodePeer {
        NodePeer::start_with(client_url, key, node_id, ttl_secs, &PeerOptions::default())
    }

    /// `new Microlock(new Etcd([host], options), key, node_id, ttl)` in a Node.js process, with
    /// node-etcd's TLS and authentication `options` (an `https://` `client_url` for TLS).
    pub fn start_with(
        client_url: &str,
        key: &str,
        node_id: &str,
        ttl_secs: u64,
        options: &PeerOptions,
    ) -> NodePeer {
        install();
        // node-etcd wants `host:port` (it adds `http://`), or a whole `https://` URL.
        let host = client_url
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut child = Command::new(tool("NODE_BIN", "node"))
            .arg(interop_dir().join("peer.js"))
            .args([host, key, node_id, &ttl_secs.to_string()])
            .env_remove("MICROLOCK_PEER_CA")
            .env_remove("MICROLOCK_PEER_CERT")
            .env_remove("MICROLOCK_PEER_KEY")
            .env_remove("MICROLOCK_PEER_USER")
            .env_remove("MICROLOCK_PEER_PASSWORD")
            .envs(options.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = NodePeer {
            child,
            stdin,
            lines,
            events: Vec::new(),
            name: format!("node peer {node_id:?}"),
        };
        let first = peer.line();
        assert_eq!(first, "ready", "{}: first line", peer.name);
        peer
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: no output within {PATIENCE:?}", self.name)
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("{}: exited ({:?})", self.name, self.child.try_wait())
            }
        }
    }

    fn command(&mut self, command: &str) -> Answer {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("{}: cannot send {command:?}: {e}", self.name));
        loop {
            let line = self.line();
            if let Some(event) = line.strip_prefix("event ") {
                self.events.push(event.to_owned());
                continue;
            }
            let result = line
                .strip_prefix("result ")
                .unwrap_or_else(|| panic!("{}: unexpected line {line:?}", self.name));
            return match result {
                "ok" => Answer::Ok,
                "AlreadyLocked" => Answer::AlreadyLocked,
                "LockNotOwned" => Answer::LockNotOwned,
                other => Answer::Error(other.trim_start_matches("error ").to_owned()),
            };
        }
    }

    /// `lock.lock()`.
    pub fn lock(&mut self) -> Answer {
        self.command("lock")
    }

    /// `lock.unlock()`.
    pub fn unlock(&mut self) -> Answer {
        self.command("unlock")
    }

    /// `lock.renew()`.
    pub fn renew(&mut self) -> Answer {
        self.command("renew")
    }

    /// Waits for microlock's next event (`"locked"` or `"unlocked"`), in the order emitted.
    pub fn event(&mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        while self.events.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match line.strip_prefix("event ") {
                    Some(event) => self.events.push(event.to_owned()),
                    None => panic!("{}: unexpected line {line:?}", self.name),
                },
                Err(_) => panic!("{}: no event within {PATIENCE:?}", self.name),
            }
        }
        self.events.remove(0)
    }
}

impl Drop for NodePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
