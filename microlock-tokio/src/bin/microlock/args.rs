//! The command line, as `clap` (derive) parses it: the common connection flags and the five
//! subcommands. Nothing here talks to etcd.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use microlock_tokio::Protocol;

use crate::exit::EXIT_STATUSES;
use crate::timing::LOSS_TIMING;

/// `microlock`: a distributed lock on etcd (v2 keys API), for shell scripts and cron jobs.
#[derive(Debug, Parser)]
#[command(
    name = "microlock",
    version,
    about = "A distributed lock on etcd (v2 keys API): run a command while holding it, or \
             take, release, inspect and watch it",
    long_about = "A distributed lock on etcd (v2 keys API), compatible with microlock for \
                  Node.js and the microlock-tokio library: run a command while holding it \
                  (`microlock run`), or take, release, inspect and watch it.\n\n\
                  The lock is the etcd key --key; its value is the holder's node id; its \
                  fencing token is the key's etcd createdIndex (it grows with every new \
                  holder).",
    after_long_help = EXIT_STATUSES,
    propagate_version = true
)]
pub struct Cli {
    /// How to reach etcd (flags common to every subcommand).
    #[command(flatten)]
    pub common: Common,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach etcd, as `etcdctl` is told: flags, or the same `ETCDCTL_*` variables.
#[derive(Debug, Args)]
pub struct Common {
    /// etcd client URLs, comma-separated (http://host:port, https://host:port or host:port)
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_name = "URLS"
    )]
    pub endpoints: String,

    /// CA certificate(s) (PEM) to verify https:// members with, as `etcdctl --cacert`
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_CACERT",
        alias = "ca-file",
        value_name = "FILE"
    )]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS, as `etcdctl --cert`; needs --key-file
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_CERT",
        alias = "cert-file",
        value_name = "FILE",
        requires = "key_file"
    )]
    pub cert: Option<PathBuf>,

    /// The client certificate's private key (PEM): `etcdctl --key` (here --key names the lock)
    #[arg(
        long = "key-file",
        global = true,
        env = "ETCDCTL_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key_file: Option<PathBuf>,

    /// etcd user, `name:password` (or `name` with --password), as `etcdctl --user`
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_USER",
        hide_env_values = true,
        value_name = "NAME[:PASSWORD]"
    )]
    pub user: Option<String>,

    /// The password of --user when it has no `:password` part
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: Option<String>,

    /// The etcd API: v2 (keys API, the default; shares locks with microlock for Node.js) or v3
    /// (etcd 3.4+, the only one of 3.6+; shares locks with `etcdctl lock`). Never guessed: the
    /// two are separate keyspaces
    #[arg(
        long,
        global = true,
        env = "MICROLOCK_PROTOCOL",
        default_value = "v2",
        value_name = "v2|v3",
        value_parser = parse_protocol
    )]
    pub protocol: Protocol,

    /// Tell what happens on stderr (who holds the lock while waiting, renewals, releases),
    /// also when stderr is not a terminal
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command while holding the lock: wait for it, run CMD, renew while CMD runs,
    /// release when CMD exits; stop CMD if the lock is lost
    #[command(
        long_about = "Wait for the lock (up to --wait), run CMD while holding it, renew it \
                      while CMD runs, release it when CMD exits. The exit status is CMD's \
                      (128+N when CMD was killed by signal N).\n\n\
                      CMD runs in its own process group with MICROLOCK_KEY, MICROLOCK_TOKEN \
                      (the fencing token: pass it to what the lock protects) and \
                      MICROLOCK_NODE_ID in its environment. SIGINT, SIGTERM and SIGHUP sent to \
                      microlock are forwarded to that group; the lock is released once CMD \
                      has exited. CMD is not in the terminal's foreground group: it must not \
                      read from the terminal.",
        after_long_help = format!("{LOSS_TIMING}\n\n{EXIT_STATUSES}")
    )]
    Run(RunArgs),
    /// Take the lock, print its fencing token and exit, leaving it held until its TTL runs out
    #[command(
        long_about = "Take the lock (waiting up to --wait; 0 tries once), print its fencing \
                      token on stdout and exit, leaving the key held for its TTL (it is not \
                      renewed). Release it earlier with `microlock unlock --key KEY --id ID`: \
                      the holder's node id is printed on stderr."
    )]
    Lock(LockArgs),
    /// Release the lock if it is held by --id (exit status 77 if it is not)
    Unlock(UnlockArgs),
    /// Print who holds the lock and its fencing token, or that it is free
    Status(StatusArgs),
    /// Print one line per change of the lock (locked, unlocked, expired) until interrupted
    Watch(WatchArgs),
}

/// `--key`, `--id`, `--ttl` and `--wait` of the subcommands that take the lock.
#[derive(Debug, Args)]
pub struct Take {
    /// The lock: an etcd key such as `jobs/nightly` (`/` separates directories)
    #[arg(long, value_name = "KEY")]
    pub key: String,

    /// This holder's node id, stored as the key's value [default: <hostname>:<pid>]
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// The lease: etcd expires the key this long after the last renewal (whole seconds, at
    /// least 1s)
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// `microlock run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The lock, the node id and the lease.
    #[command(flatten)]
    pub take: Take,

    /// How long to wait for the lock when another node holds it (0: try once)
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Duration,

    /// On loss, how long CMD has between SIGTERM and SIGKILL (see "Loss timing" in --help)
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub kill_after: Duration,

    /// The command to run and its arguments, after `--`
    #[arg(
        last = true,
        required = true,
        value_name = "CMD",
        value_parser = clap::value_parser!(OsString)
    )]
    pub command: Vec<OsString>,
}

/// `microlock lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock, the node id and the lease.
    #[command(flatten)]
    pub take: Take,

    /// How long to wait for the lock when another node holds it (0: try once)
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// `microlock unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The lock
    #[arg(long, value_name = "KEY")]
    pub key: String,

    /// The node id that holds it (as printed by `microlock lock`)
    #[arg(long, value_name = "ID")]
    pub id: String,
}

/// `microlock status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The lock
    #[arg(long, value_name = "KEY")]
    pub key: String,

    /// Print one JSON object: {"key", "held", "holder", "token", "ttl_left_ms"}
    #[arg(long)]
    pub json: bool,
}

/// `microlock watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The lock
    #[arg(long, value_name = "KEY")]
    pub key: String,

    /// Print one JSON object per line: {"time", "key", "event", ...}
    #[arg(long)]
    pub json: bool,
}

/// `v2` or `v3` (any case).
fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text.to_ascii_lowercase().as_str() {
        "v2" | "2" => Ok(Protocol::V2),
        "v3" | "3" => Ok(Protocol::V3),
        _ => Err(format!("expected v2 or v3, not {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_its_command_after_double_dash() {
        let cli = Cli::try_parse_from([
            "microlock",
            "run",
            "--key",
            "k",
            "--ttl",
            "5s",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .expect("parses");
        let Command::Run(run) = cli.command else {
            panic!("not run: {cli:?}")
        };
        assert_eq!(run.take.ttl, Duration::from_secs(5));
        assert_eq!(run.wait, Duration::from_secs(30));
        assert_eq!(run.kill_after, Duration::from_secs(2));
        assert_eq!(run.command, ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn durations_are_humantime() {
        let cli = Cli::try_parse_from([
            "microlock",
            "lock",
            "--key",
            "k",
            "--ttl",
            "2m",
            "--wait",
            "500ms",
        ])
        .expect("parses");
        let Command::Lock(lock) = cli.command else {
            panic!("not lock: {cli:?}")
        };
        assert_eq!(lock.take.ttl, Duration::from_secs(120));
        assert_eq!(lock.wait, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["microlock", "lock", "--key", "k", "--ttl", "ten"]).is_err());
    }

    #[test]
    fn common_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "microlock",
            "status",
            "--key",
            "k",
            "--endpoints",
            "http://10.0.0.1:2379",
        ])
        .expect("parses");
        assert_eq!(cli.common.endpoints, "http://10.0.0.1:2379");
    }
}
