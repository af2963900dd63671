//! CMD in its own process group: spawning it there, signalling the whole group, and knowing
//! when every process of the group is gone.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::process::Child;

use crate::exit::{Failure, CANNOT_EXECUTE, NOT_FOUND};

/// The process group CMD leads (its id is CMD's pid).
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pgid: Pid,
}

/// Starts `command` (program and arguments) with `env` added to the environment, in a new
/// process group of its own, as a shell would report a failure to start it: 127 when not
/// found, 126 when it cannot be executed.
pub fn spawn(command: &[OsString], env: &[(&str, String)]) -> Result<(Child, Group), Failure> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Failure::usage("no command given after `--`"))?;
    // Orphans of CMD's group become our children, so that we can reap them and tell when the
    // group is really gone, whatever the system's init does with zombies.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut std_command = std::process::Command::new(program);
    std_command
        .args(args)
        .envs(env.iter().cloned())
        .process_group(0);
    let child = tokio::process::Command::from(std_command)
        .spawn()
        .map_err(|e| {
            let name = program.to_string_lossy();
            match e.kind() {
                io::ErrorKind::NotFound => {
                    Failure::new(NOT_FOUND, format!("{name}: command not found"))
                }
                io::ErrorKind::PermissionDenied => {
                    Failure::new(CANNOT_EXECUTE, format!("{name}: permission denied"))
                }
                _ => Failure::new(CANNOT_EXECUTE, format!("{name}: cannot execute: {e}")),
            }
        })?;
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| Failure::new(CANNOT_EXECUTE, "the command exited before it started"))?;
    Ok((
        child,
        Group {
            pgid: Pid::from_raw(pid),
        },
    ))
}

impl Group {
    /// The group's id (CMD's pid).
    pub fn id(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Sends `signal` to every process of the group; false when the group is gone.
    pub fn signal(&self, signal: Signal) -> bool {
        killpg(self.pgid, signal).is_ok()
    }

    /// Whether no process of the group is left. Call it once CMD itself has been reaped:
    /// its leftover processes that are our children (orphans, through the subreaper) and
    /// have exited are reaped here first, so that zombies do not count as alive.
    pub fn is_gone(&self) -> bool {
        let group = Pid::from_raw(-self.pgid.as_raw());
        loop {
            match waitpid(group, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue, // reaped one; more may wait
            }
        }
        matches!(killpg(self.pgid, None), Err(Errno::ESRCH))
    }
}
