//! `microlock`: a distributed lock on etcd for shell scripts, cron jobs and deploy steps.
//!
//! ```text
//! microlock run    --key K [--id ID] [--ttl 10s] [--wait 30s] [--kill-after 2s] -- CMD [ARGS...]
//! microlock lock   --key K [--id ID] [--ttl 10s] [--wait 0s]
//! microlock unlock --key K  --id ID
//! microlock status --key K [--json]
//! microlock watch  --key K [--json]
//! ```
//!
//! A thin layer over `microlock-tokio`: every lock decision is the library's. This binary only
//! parses arguments ([`args`]), builds the etcd handle ([`client`]), supervises CMD
//! ([`run`], [`group`], [`timing`]) and prints ([`observe`], [`progress`]). Exit statuses:
//! [`exit`]. Built with the `cli` feature: `cargo install --path microlock-tokio --features cli`.
#![forbid(unsafe_code)]

mod args;
mod client;
mod exit;
mod group;
mod hold;
mod observe;
mod progress;
mod run;
mod signals;
mod take;
mod timing;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit::Failure;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; every other clap error is a usage error.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        // The library's decisions (`RUST_LOG=microlock=debug`), on stderr.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("microlock: cannot start the async runtime: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    drop(runtime);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("microlock: {failure}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// Runs the subcommand; `Ok` is the exit status (`run`: CMD's).
async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    let common = &cli.common;
    match cli.command {
        Command::Run(args) => run::run(common, args).await,
        Command::Lock(args) => hold::lock(common, args).await,
        Command::Unlock(args) => hold::unlock(common, args).await,
        Command::Status(args) => observe::status(common, args).await,
        Command::Watch(args) => observe::watch(common, args).await,
    }
}
