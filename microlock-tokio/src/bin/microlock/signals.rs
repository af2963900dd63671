//! The signals `microlock` handles itself: SIGINT, SIGTERM and SIGHUP. Before CMD runs they
//! stop the wait; while it runs they are forwarded to its process group.

use std::io;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

/// The handlers, installed once (from then on these signals no longer kill `microlock`).
#[derive(Debug)]
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal received (cancel safe).
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.interrupt.recv() => Signal::SIGINT,
            Some(()) = self.terminate.recv() => Signal::SIGTERM,
            Some(()) = self.hangup.recv() => Signal::SIGHUP,
            else => std::future::pending().await,
        }
    }

    /// A signal received and not yet taken, if any (does not wait).
    pub async fn pending(&mut self) -> Option<Signal> {
        tokio::time::timeout(Duration::ZERO, self.recv()).await.ok()
    }
}
