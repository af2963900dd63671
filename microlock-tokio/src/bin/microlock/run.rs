//! `microlock run`: take the lock, run CMD while holding it, stop CMD in time if the hold is
//! lost, release the lock when CMD exits.

use std::time::{Duration, Instant};

use microlock_tokio::{Config, Event, Events, Fence, LostReason, Microlock};
use nix::sys::signal::Signal;
use tokio::process::Child;

use crate::args::{Common, RunArgs};
use crate::client;
use crate::exit::{self, Failure, LOST};
use crate::group::{self, Group};
use crate::signals::Signals;
use crate::take::{take, Taken};
use crate::timing::{show, Timing};

/// How often the process group is looked at while waiting for its last processes to go
/// (there is no event for processes that are not our children).
const GROUP_POLL: Duration = Duration::from_millis(10);

/// How long after SIGKILL the group may take to disappear before we stop waiting for it
/// (processes stuck in the kernel cannot die sooner).
const GROUP_GONE_BOUND: Duration = Duration::from_secs(5);

/// Runs `microlock run`; `Ok` carries CMD's exit status.
pub async fn run(common: &Common, args: RunArgs) -> Result<u8, Failure> {
    let take_args = &args.take;
    let node_id = take_args.id.clone().unwrap_or_else(client::default_node_id);
    let config = Config::new(&take_args.key, &node_id, take_args.ttl)
        .map_err(|e| Failure::from_error("invalid lock", &e))?;
    let timing = Timing::new(&config, args.kill_after).map_err(Failure::usage)?;
    let config = config
        .with_auto_renew(true)
        .with_renew_interval(timing.renew_every);
    let key = config.key().as_str().to_owned();
    let etcd = client::etcd(common)?;
    let mut signals = Signals::install()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("installing signal handlers: {e}")))?;
    let lock = Microlock::with_config(&etcd, config)
        .map_err(|e| Failure::from_error("invalid lock", &e))?;
    // Subscribed for the whole run: who holds the lock while we wait, and this hold's `Lost`
    // (including the watch seeing the key taken away) while CMD runs.
    let mut events = lock.events();
    let started = Instant::now();
    let fence = match take(&lock, &mut events, args.wait, &mut signals, common.verbose).await? {
        Taken::Held(fence) => fence,
        Taken::Interrupted(signal) => return Ok(exit::of_signal(signal as i32)),
    };
    if common.verbose {
        eprintln!(
            "microlock: {key} locked as {node_id} (token {}) after {}; {}",
            fence.token(),
            show(started.elapsed()),
            timing.describe()
        );
    }
    let env = [
        ("MICROLOCK_KEY", key.clone()),
        ("MICROLOCK_TOKEN", fence.token().to_string()),
        ("MICROLOCK_NODE_ID", node_id.clone()),
    ];
    let (mut child, group) = match group::spawn(&args.command, &env) {
        Ok(started) => started,
        Err(failure) => {
            release(&lock, &key, common.verbose).await;
            return Err(failure);
        }
    };
    let supervisor = Supervisor {
        lock: &lock,
        key: &key,
        fence,
        group,
        timing,
        verbose: common.verbose,
    };
    match supervisor
        .supervise(&mut child, &mut events, &mut signals)
        .await
    {
        End::Exited(status) => {
            release(&lock, &key, common.verbose).await;
            Ok(status)
        }
        // Not released: the key is not ours any more, or expires by itself.
        End::Stopped { reason, status } => Err(Failure::new(
            LOST,
            format!(
                "lost the lock {key} (token {}) while CMD ran: {reason}; CMD was stopped{}",
                fence.token(),
                match status {
                    Some(status) => format!(" (its exit status: {status})"),
                    None => String::new(),
                }
            ),
        )),
    }
}

/// Releases the lock after CMD exited; a failure is a warning (CMD's status stands).
async fn release(lock: &Microlock, key: &str, verbose: bool) {
    match lock.unlock().await {
        Ok(()) if verbose => eprintln!("microlock: released {key}"),
        Ok(()) => {}
        Err(microlock_tokio::Error::LockNotOwned { .. }) => eprintln!(
            "microlock: warning: {key} was no longer held by us when CMD exited (taken away \
             or expired)"
        ),
        Err(e) => {
            eprintln!("microlock: warning: releasing {key} failed ({e}); it expires with its TTL")
        }
    }
}

/// How supervising CMD ended.
#[derive(Debug)]
enum End {
    /// CMD exited by itself with this (shell-style) status, the hold intact.
    Exited(u8),
    /// The hold was lost; CMD and its group were stopped (CMD's own status, if known).
    Stopped { reason: String, status: Option<u8> },
}

/// The hold was lost: CMD's group has had SIGTERM and gets SIGKILL at `kill_at`.
#[derive(Debug)]
struct Stopping {
    reason: String,
    kill_at: Instant,
    /// When SIGKILL was sent.
    killed: Option<Instant>,
}

/// Watches over CMD while the lock is held.
struct Supervisor<'a> {
    lock: &'a Microlock,
    key: &'a str,
    fence: Fence,
    group: Group,
    timing: Timing,
    verbose: bool,
}

impl Supervisor<'_> {
    /// Runs until CMD has exited (and, after a loss, every process of its group is gone),
    /// forwarding signals, and stopping CMD when the hold is lost or about to be.
    async fn supervise(
        &self,
        child: &mut Child,
        events: &mut Events,
        signals: &mut Signals,
    ) -> End {
        let token = self.fence.token();
        // The current hold's validity deadline: moved forward by each successful renewal.
        let mut valid_until = self.fence.valid_until();
        let mut status: Option<u8> = None;
        let mut stopping: Option<Stopping> = None;
        loop {
            if let Some(code) = status {
                match &stopping {
                    None => return End::Exited(code),
                    Some(s) if self.group.is_gone() => {
                        return End::Stopped {
                            reason: s.reason.clone(),
                            status,
                        }
                    }
                    Some(Stopping {
                        killed: Some(at),
                        reason,
                        ..
                    }) if at.elapsed() > GROUP_GONE_BOUND => {
                        eprintln!(
                            "microlock: processes of CMD's group {} are still there {} after \
                             SIGKILL; giving up waiting for them",
                            self.group.id(),
                            show(GROUP_GONE_BOUND)
                        );
                        return End::Stopped {
                            reason: reason.clone(),
                            status,
                        };
                    }
                    Some(_) => {}
                }
            }
            let now = Instant::now();
            // The next deadline: the SIGTERM point while held; the SIGKILL point once
            // stopping; a short poll while waiting for the group's last processes.
            let poll = status.map(|_| now + GROUP_POLL);
            let wake = match &stopping {
                None => self.timing.term_at(valid_until),
                Some(Stopping {
                    killed: None,
                    kill_at,
                    ..
                }) => poll.map_or(*kill_at, |p| p.min(*kill_at)),
                Some(_) => poll.unwrap_or(now + GROUP_POLL),
            };
            tokio::select! {
                exited = child.wait(), if status.is_none() => {
                    status = Some(match exited {
                        Ok(exited) => exit::of_status(exited),
                        Err(e) => {
                            eprintln!("microlock: waiting for CMD failed: {e}");
                            exit::SOFTWARE
                        }
                    });
                }
                event = events.next(), if stopping.is_none() => match event {
                    Some(Event::Lost { token: lost, reason }) if lost == token => {
                        stopping = Some(self.stop(lost_reason(reason), valid_until));
                    }
                    Some(_) => {}
                    None => stopping = Some(self.stop("the lock client ended".into(), valid_until)),
                },
                signal = signals.recv() => self.forward(signal),
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    match &mut stopping {
                        None => match self.lock.fence() {
                            // Renewed since: the SIGTERM point moved.
                            Some(f) if f.token() == token && self.timing.term_at(f.valid_until()) > now => {
                                valid_until = f.valid_until();
                            }
                            Some(f) if f.token() == token => {
                                valid_until = valid_until.max(f.valid_until());
                                let left = valid_until.saturating_duration_since(now);
                                let reason = format!(
                                    "no renewal succeeded in time (the hold is valid for {} more)",
                                    show(left)
                                );
                                stopping = Some(self.stop(reason, valid_until));
                            }
                            _ => {
                                let reason = "the library no longer holds it".to_owned();
                                stopping = Some(self.stop(reason, valid_until));
                            }
                        },
                        Some(s) if s.killed.is_none() && now >= s.kill_at => {
                            if self.group.signal(Signal::SIGKILL) {
                                eprintln!(
                                    "microlock: CMD's process group {} is still there: SIGKILL",
                                    self.group.id()
                                );
                            }
                            s.killed = Some(now);
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// The hold is lost (or about to be): SIGTERM to CMD's group now, SIGKILL `kill_after`
    /// later, and `KILL_MARGIN` before the validity deadline at the latest.
    fn stop(&self, reason: String, valid_until: Instant) -> Stopping {
        let now = Instant::now();
        let kill_at = (now + self.timing.kill_after).min(self.timing.kill_at(valid_until));
        let sent = self.group.signal(Signal::SIGTERM);
        eprintln!(
            "microlock: losing the lock {} (token {}): {reason}; {}",
            self.key,
            self.fence.token(),
            if sent {
                format!(
                    "SIGTERM sent to CMD (process group {}), SIGKILL in {} if it is still there",
                    self.group.id(),
                    show(kill_at.saturating_duration_since(now))
                )
            } else {
                "CMD's process group is already gone".to_owned()
            }
        );
        Stopping {
            reason,
            kill_at,
            killed: None,
        }
    }

    /// A signal to microlock goes to CMD's process group.
    fn forward(&self, signal: Signal) {
        let sent = self.group.signal(signal);
        if self.verbose && sent {
            eprintln!(
                "microlock: {signal} forwarded to CMD (process group {})",
                self.group.id()
            );
        }
    }
}

/// Why the library says the hold ended, for people.
fn lost_reason(reason: LostReason) -> String {
    match reason {
        LostReason::Expired => "no renewal succeeded before the validity deadline".to_owned(),
        LostReason::NotOwned => "etcd says the key is not ours any more".to_owned(),
        LostReason::Superseded => "the key was released or taken by another node".to_owned(),
        LostReason::Destroyed => "the lock client ended".to_owned(),
        other => format!("{other:?}"),
    }
}
