//! Running the `microlock` command (microlock-tokio's `cli` feature) in tests: finding the
//! built binary, spawning it with its output in files, waiting with bounds, and the fenced
//! log its test commands write.
//!
//! The binary is built beforehand, never from a test (cargo holds the build lock while tests
//! run): `make test` does it, by hand run [`BUILD_COMMAND`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What builds the binary the tests run.
pub const BUILD_COMMAND: &str = "cargo build -p microlock-tokio --features cli --bin microlock";

/// Variables of the caller's environment that would change what the command does.
const CLEARED_VARS: [&str; 8] = [
    "ETCDCTL_ENDPOINTS",
    "ETCDCTL_CACERT",
    "ETCDCTL_CERT",
    "ETCDCTL_KEY",
    "ETCDCTL_USER",
    "ETCDCTL_PASSWORD",
    "MICROLOCK_PROTOCOL",
    "RUST_LOG",
];

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// `<target dir>/debug/microlock` (`$CARGO_TARGET_DIR` respected).
///
/// # Panics
/// Loudly, with the build command, when it is missing or older than the CLI's own sources (a
/// stale binary would test old code). Library sources newer than it only get a warning on
/// stderr: in a tree others are editing they change under a running test.
pub fn binary() -> PathBuf {
    let workspace = workspace();
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let binary = target.join("debug").join("microlock");
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "\n\n*** the microlock CLI tests need the binary {}: build it first with\n    \
                 {BUILD_COMMAND}\n(`make test` does) ***\n",
                binary.display()
            )
        });
    if let Some(newer) = newer_files(&workspace.join("microlock-tokio/src/bin"), built).first() {
        panic!(
            "\n\n*** {} is older than {}: rebuild it with\n    {BUILD_COMMAND} ***\n",
            binary.display(),
            newer.display()
        );
    }
    let library = ["microlock-tokio/src", "microlock-proto/src"];
    if let Some(newer) = library
        .iter()
        .flat_map(|dir| newer_files(&workspace.join(dir), built))
        .next()
    {
        eprintln!(
            "warning: {} is older than {}; rebuild with `{BUILD_COMMAND}`",
            binary.display(),
            newer.display()
        );
    }
    binary
}

/// The `.rs` files under `dir` modified after `than`.
fn newer_files(dir: &Path, than: SystemTime) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(newer_files(&path, than));
        } else if path.extension().is_some_and(|e| e == "rs")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m > than)
        {
            found.push(path);
        }
    }
    found
}

/// A `microlock` command talking to `endpoints` (through `ETCDCTL_ENDPOINTS`), with the
/// caller's etcdctl variables cleared and stdin from `/dev/null`.
pub fn command(endpoints: &str) -> Command {
    with_env(Command::new(binary()), endpoints)
}

/// `sh` with the environment of [`command`], and the directory of the `microlock` binary
/// first on its `PATH`: for scripts that call `microlock` as a user would.
pub fn shell(endpoints: &str) -> Command {
    let binary = binary();
    let dir = binary.parent().expect("the binary is in a directory");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path));
    let mut sh = with_env(Command::new("sh"), endpoints);
    sh.env("PATH", std::env::join_paths(paths).expect("a valid PATH"));
    sh
}

fn with_env(mut command: Command, endpoints: &str) -> Command {
    for var in CLEARED_VARS {
        command.env_remove(var);
    }
    command.env("ETCDCTL_ENDPOINTS", endpoints);
    command.stdin(Stdio::null());
    command
}

/// What a finished `microlock` printed and returned.
#[derive(Debug)]
pub struct Output {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// From spawn to exit.
    pub took: Duration,
}

impl Output {
    /// Asserts the exit code, showing the output otherwise.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Output {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit status {code}; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `microlock ARGS` against `endpoints` to the end, which must come within `bound`.
#[track_caller]
pub fn run(endpoints: &str, args: &[&str], bound: Duration) -> Output {
    run_command(command(endpoints).args(args), bound)
}

/// Runs a prepared [`command`] to the end, which must come within `bound`.
#[track_caller]
pub fn run_command(command: &mut Command, bound: Duration) -> Output {
    let dir = TempDir::new("run");
    let mut process = Process::spawn(command, &dir, "microlock");
    let code = process.wait(bound);
    Output {
        code,
        stdout: process.stdout(),
        stderr: process.stderr(),
        took: process.started.elapsed(),
    }
}

/// A running process whose stdout and stderr go to files; stopped (SIGTERM, then SIGKILL) if
/// still running when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// When it was spawned.
    pub started: Instant,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `command` with its output in `dir/NAME.out` and `dir/NAME.err`.
    pub fn spawn(command: &mut Command, dir: &TempDir, name: &str) -> Process {
        let stdout = dir.path().join(format!("{name}.out"));
        let stderr = dir.path().join(format!("{name}.err"));
        let file = |path: &Path| std::fs::File::create(path).expect("an output file");
        let child = command
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {command:?}: {e}"));
        Process {
            child,
            stdout,
            stderr,
            started: Instant::now(),
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`"-INT"`, `"-TERM"`...) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("the kill command runs");
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    /// The exit code if it has exited (`Some(None)`: killed by a signal).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.map(|s| s.code())
    }

    /// Waits for the exit, which must come within `bound`; the exit code.
    #[track_caller]
    pub fn wait(&mut self, bound: Duration) -> Option<i32> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(code) = self.exited() {
                return code;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "microlock did not exit within {bound:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // microlock forwards SIGTERM to its CMD's group and exits once CMD has.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh directory under the system's temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/microlock-cli-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("microlock-cli-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to the file `name` in the directory; its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("a temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `done` every 10 ms until it holds, which must happen within `bound`; how long it
/// took.
#[track_caller]
pub fn wait_until(bound: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Nanoseconds since the Unix epoch (the clock of `date +%s%N` in the test commands).
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i128
}

/// Whether any process of process group `pgid` exists (zombies included), via `kill -0`.
pub fn group_exists(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// One line of the fenced log the test commands append to: `KIND TOKEN NANOS [PID [NODE_ID]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `start`, `end`, `term`, ...
    pub kind: String,
    /// `$MICROLOCK_TOKEN` of the command that wrote it.
    pub token: u64,
    /// `date +%s%N` when it was written.
    pub ns: i128,
    /// The writer's pid (`$$`), on `start` lines.
    pub pid: Option<u32>,
    /// `$MICROLOCK_NODE_ID`, on `start` lines (the rest of the line).
    pub node: Option<String>,
}

/// The fenced log at `path` (empty when absent).
pub fn read_log(path: &Path) -> Vec<LogLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let parse = |i: usize| -> &str {
                fields
                    .get(i)
                    .copied()
                    .unwrap_or_else(|| panic!("short log line {line:?}"))
            };
            LogLine {
                kind: parse(0).to_owned(),
                token: parse(1)
                    .parse()
                    .unwrap_or_else(|_| panic!("token in {line:?}")),
                ns: parse(2)
                    .parse()
                    .unwrap_or_else(|_| panic!("time in {line:?}")),
                pid: fields.get(3).and_then(|p| p.parse().ok()),
                node: (fields.len() > 4).then(|| fields[4..].join(" ")),
            }
        })
        .collect()
}

/// Asserts that the `start`/`end` lines of a fenced log never overlap (each holder ended
/// before the next started) and that tokens grow strictly from holder to holder; the
/// tokens in order.
#[track_caller]
pub fn assert_fenced(lines: &[LogLine]) -> Vec<u64> {
    let spans: Vec<&LogLine> = lines
        .iter()
        .filter(|l| l.kind == "start" || l.kind == "end")
        .collect();
    assert!(
        spans.len() % 2 == 0,
        "unbalanced start/end lines: {lines:#?}"
    );
    let mut tokens = Vec::new();
    let mut last_end: Option<&LogLine> = None;
    for pair in spans.chunks(2) {
        let (start, end) = (pair[0], pair[1]);
        assert!(
            start.kind == "start" && end.kind == "end" && start.token == end.token,
            "overlapping holders: {start:?} then {end:?} in {lines:#?}"
        );
        if let Some(previous) = last_end {
            assert!(
                start.token > previous.token,
                "tokens must grow: {previous:?} then {start:?}"
            );
            assert!(
                start.ns >= previous.ns,
                "started before the previous holder ended: {previous:?} then {start:?}"
            );
        }
        tokens.push(start.token);
        last_end = Some(end);
    }
    tokens
}

/// The text of the README section that starts with the heading line `heading` (up to the
/// next `## ` heading).
pub fn readme_section(heading: &str) -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"));
    let rest = &readme[start + 1..];
    let end = rest[heading.len()..]
        .find("\n## ")
        .map_or(rest.len(), |i| i + heading.len());
    rest[..end].to_owned()
}

/// The fenced code blocks of `text` whose info string is `lang` (```` ```sh ````).
pub fn code_blocks(text: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```") => {
                if line.trim_start().trim_start_matches('`').trim() == lang {
                    current = Some(String::new());
                } else {
                    current = Some("\u{0}".to_owned()); // another language: skipped
                }
            }
            None => {}
            Some(block) if line.trim_start().starts_with("```") => {
                if !block.starts_with('\u{0}') {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}
