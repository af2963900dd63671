//! # microlock-async-std
//!
//! A dead simple distributed lock on [etcd](https://etcd.io) for async-std, compatible with
//! microlock for Node.js (same key, same value, same TTL), with typed errors and fencing
//! tokens.
//!
//! ```no_run
//! use std::time::Duration;
//! use microlock_async_std::{Error, Etcd, Microlock};
//!
//! # async fn demo() -> Result<(), Error> {
//! let etcd = Etcd::new(["http://127.0.0.1:2379"])?;
//! let foo = Microlock::new(&etcd, "foo", "node-1", Duration::from_secs(5))?;
//! match foo.lock().await {
//!     Ok(fence) => {
//!         // foo is locked by this node; fence.token() is the fencing token.
//!         foo.renew().await?;
//!         foo.unlock().await?;
//!     }
//!     Err(Error::AlreadyLocked { .. }) => { /* another node holds foo */ }
//!     Err(e) => return Err(e), // etcd unreachable, timed out, ...
//! }
//! # Ok(()) }
//! ```
//!
//! All protocol logic lives in [`microlock_proto`]; this crate only moves bytes and timers.
//! It has the same API and behaviour as `microlock-tokio`: both drive the same
//! [`microlock_proto::driver::Driver`].
//!
//! Upstream async-std is deprecated in favour of [smol](https://docs.rs/smol). The part of this
//! crate that is specific to a runtime is small: its driver (`driver.rs`) is about 430 lines of
//! code (the loop, and its sharing with the callers waiting for an answer: a caller in
//! `block_on` is off the executor's threads, and reads its answer itself rather than wait for a
//! wake-up from one), the whole crate about 850 (the public API, the same as microlock-tokio's,
//! and an HTTP/1.1 connection pool), so an adapter for smol or another runtime is a file of the
//! same shape.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod guard;
mod http_client;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_std::channel::{self, Receiver, Sender};

pub use microlock_proto::{
    AuthFailure, Config, Credentials, Endpoint, Error, Event, Fence, Holder, Key, LostReason,
    Members, NodeId, Protocol, TlsFailure,
};
use microlock_proto::{FromSettings, Lock, Outcome, Settings};

use crate::driver::{Caller, Command, Driving, Input, Reply, Shared, SharedMembers};
pub use crate::guard::LockGuard;
use crate::guard::RenewClaim;
use crate::http_client::HttpClient;

/// A handle on an etcd cluster: its client URLs, TLS settings and credentials, a keep-alive
/// connection pool, and what is known of each member's health, all shared by every lock made
/// from it. Cheap to clone.
///
/// A member that fails is skipped by every lock of the handle for a back-off (see
/// [`Members`]); requests fail over to the other members, so one member's failure costs
/// callers latency, not errors.
#[derive(Clone, Debug)]
pub struct Etcd {
    settings: Settings,
    members: SharedMembers,
    client: HttpClient,
}

/// Configures an [`Etcd`] handle: [`Etcd::builder`].
pub type EtcdBuilder = microlock_proto::Builder<Etcd>;

impl Etcd {
    /// An etcd cluster reachable at these client URLs: `http://host:port`,
    /// `https://host:port` (verified against the platform's trust roots; see
    /// [`builder`](Etcd::builder) for a CA, a client certificate or a user), or `host:port`
    /// (node-etcd's form); an item may be a comma-separated list, as in `ETCDCTL_ENDPOINTS`.
    ///
    /// ```
    /// # use microlock_async_std::Etcd;
    /// let etcd = Etcd::new(["http://127.0.0.1:2379", "http://127.0.0.1:22379"])?;
    /// assert_eq!(etcd.endpoints().len(), 2);
    /// # Ok::<(), microlock_async_std::Error>(())
    /// ```
    pub fn new<I, S>(endpoints: I) -> Result<Etcd, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        EtcdBuilder::new(endpoints).build()
    }

    /// A handle configured like `etcdctl`: a CA to trust, a client certificate (mutual TLS), a
    /// user for etcd's authentication. Everything is checked by `build()`, which names the
    /// option or file at fault.
    ///
    /// ```no_run
    /// # use microlock_async_std::Etcd;
    /// let etcd = Etcd::builder(["https://10.0.0.1:2379", "https://10.0.0.2:2379"])
    ///     .ca_file("/etc/etcd/ca.pem")
    ///     .client_cert_files("/etc/etcd/client.pem", "/etc/etcd/client-key.pem")
    ///     .user("alice", "secret")
    ///     .build()?;
    /// # Ok::<(), microlock_async_std::Error>(())
    /// ```
    pub fn builder<I, S>(endpoints: I) -> EtcdBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        EtcdBuilder::new(endpoints)
    }

    /// A handle configured from the environment as `etcdctl` is: `ETCDCTL_ENDPOINTS` (default
    /// `http://127.0.0.1:2379`), `ETCDCTL_CACERT`, `ETCDCTL_CERT` and `ETCDCTL_KEY`,
    /// `ETCDCTL_USER` (`name:password`, or `name` with `ETCDCTL_PASSWORD`).
    ///
    /// ```no_run
    /// # use microlock_async_std::Etcd;
    /// let etcd = Etcd::from_env()?;
    /// # Ok::<(), microlock_async_std::Error>(())
    /// ```
    pub fn from_env() -> Result<Etcd, Error> {
        EtcdBuilder::from_vars(|name| std::env::var(name).ok()).build()
    }

    /// Member discovery: the locks of this handle also use every member the cluster names
    /// (`GET /v2/members`, asked when a lock is first used, then every minute), so one given
    /// endpoint of many is enough for failover. See [`Config::with_member_discovery`].
    ///
    /// ```
    /// # use microlock_async_std::Etcd;
    /// let etcd = Etcd::new(["http://etcd-1.example:2379"])?.with_member_discovery(true);
    /// # Ok::<(), microlock_async_std::Error>(())
    /// ```
    pub fn with_member_discovery(mut self, on: bool) -> Etcd {
        self.settings = self.settings.with_member_discovery(on);
        self
    }

    /// The client URLs.
    pub fn endpoints(&self) -> &[Endpoint] {
        self.settings.endpoints()
    }

    /// What the locks of this handle know of the members' health, now.
    pub fn members(&self) -> Members {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl FromSettings for Etcd {
    fn from_settings(settings: Settings) -> Result<Etcd, Error> {
        Ok(Etcd {
            members: SharedMembers::new(std::sync::Mutex::new(Members::new(
                settings.endpoints().to_vec(),
            ))),
            client: HttpClient::new(&settings),
            settings,
        })
    }
}

impl Default for Etcd {
    /// etcd's default client URL, `http://127.0.0.1:2379`.
    fn default() -> Etcd {
        Etcd::new([Endpoint::default().as_str()]).expect("the default endpoint is valid")
    }
}

/// A lock client for one key and one node id (microlock's `new Microlock(etcd, key, id, ttl)`).
///
/// Dropping it (or calling [`destroy`](Microlock::destroy)) stops its driver task, cancels its
/// requests and ends its event streams. On etcd v2 it does not release the key: call
/// [`unlock`](Microlock::unlock) for that, or let the TTL run out. On v3 the lock's lease is
/// revoked first, and its keys (held or waiting) go with it.
#[derive(Debug)]
pub struct Microlock {
    inputs: Sender<Input>,
    driving: Driving,
    config: Config,
    shared: Shared,
}

impl Microlock {
    /// A lock on `key` for `node_id` with a lease of `ttl` (whole seconds, rounded up; at least
    /// 1 s). Invalid input is an error here, before anything is sent.
    ///
    /// Its driver task runs on async-std's global executor, so this works from any thread.
    pub fn new(etcd: &Etcd, key: &str, node_id: &str, ttl: Duration) -> Result<Microlock, Error> {
        Microlock::with_config(etcd, Config::new(key, node_id, ttl)?)
    }

    /// A lock from a full [`Config`] (request timeout, safety margin...). The config's
    /// endpoints are replaced by `etcd`'s, and so are its credentials when `etcd` has some.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use microlock_async_std::{Config, Etcd, Microlock};
    /// # async fn demo() -> Result<(), microlock_async_std::Error> {
    /// let etcd = Etcd::default();
    /// let config = Config::new("jobs/nightly", "worker-7", Duration::from_secs(10))?
    ///     .with_request_timeout(Duration::from_secs(2));
    /// let lock = Microlock::with_config(&etcd, config)?;
    /// # Ok(()) }
    /// ```
    pub fn with_config(etcd: &Etcd, config: Config) -> Result<Microlock, Error> {
        let config = etcd.settings.apply(config)?;
        let (inputs, receiver) = channel::unbounded();
        let machine = Lock::new(config.clone());
        let shared = Shared::default();
        let span = machine.span().clone();
        let driver = driver::run(
            machine,
            etcd.client.clone(),
            etcd.members.clone(),
            shared.clone(),
            receiver,
        );
        let driving = Driving::spawn(tracing::Instrument::instrument(driver, span));
        Ok(Microlock {
            inputs,
            driving,
            config,
            shared,
        })
    }

    /// The configuration (key, node id, TTL...).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Tries to take the lock. `Err(Error::AlreadyLocked)` when another node holds it (or this
    /// one does already, as in microlock for Node.js). The returned [`Fence`] carries the
    /// fencing token and the local validity deadline.
    ///
    /// Dropping the future does not cancel the request: etcd may still grant the lock.
    pub async fn lock(&self) -> Result<Fence, Error> {
        self.run(Command::Lock).await?.into_fence()
    }

    /// Releases the lock. `Err(Error::LockNotOwned)` when this node does not hold it.
    pub async fn unlock(&self) -> Result<(), Error> {
        self.run(Command::Unlock).await?.into_unlocked()
    }

    /// Extends the lease by the TTL. `Err(Error::LockNotOwned)` when this node does not hold
    /// the lock (any more).
    pub async fn renew(&self) -> Result<Fence, Error> {
        self.run(Command::Renew).await?.into_fence()
    }

    /// Who holds the key now — any node, this one included — or `None` when it is free: a
    /// quorum read that changes nothing (it fails over like the other commands). For status
    /// pages and tools; to act on the lock, use [`lock`](Microlock::lock) or
    /// [`acquire`](Microlock::acquire).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use microlock_async_std::{Etcd, Microlock};
    /// # async fn demo() -> Result<(), microlock_async_std::Error> {
    /// let lock = Microlock::new(&Etcd::default(), "jobs/nightly", "observer", Duration::from_secs(10))?;
    /// match lock.read().await? {
    ///     Some(holder) => println!("held by {} (token {})", holder.node_id, holder.token),
    ///     None => println!("free"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read(&self) -> Result<Option<Holder>, Error> {
        self.run(Command::Read).await?.into_holder()
    }

    /// Takes the lock, waiting up to `timeout` for it to be released if another node holds
    /// it. Waiters are served first come, first served: each takes a ticket in a queue kept in
    /// etcd and watches only the one ahead of it; the head watches the key (woken by its
    /// release or expiry) — no polling, no herd (see [`Config::with_fair_acquire`]).
    /// `Err(Error::WaitTimeout)` when the time is up; `Duration::MAX` waits without limit.
    ///
    /// Dropping the returned future cancels the wait: no request, watch or timer is left
    /// behind (a write already sent is settled in the background and, if it took the lock,
    /// released).
    pub async fn acquire(&self, timeout: Duration) -> Result<Fence, Error> {
        let (sender, receiver) = channel::bounded(1);
        let caller = self.driving.caller();
        self.send(Command::Acquire(timeout, sender))?;
        let waiting = CancelOnDrop {
            lock: self,
            receiver,
            answered: false,
        };
        waiting.answer(caller).await?.into_fence()
    }

    /// Acquires the lock (waiting up to `timeout`) and returns a [`LockGuard`] that owns it:
    /// auto-renewed while it lives, released when dropped.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use microlock_async_std::{Etcd, Microlock};
    /// # async fn demo() -> Result<(), microlock_async_std::Error> {
    /// let lock = Microlock::new(&Etcd::default(), "jobs/nightly", "worker-7", Duration::from_secs(10))?;
    /// let guard = lock.guard(Duration::from_secs(30)).await?;
    /// // ... work, passing guard.token() to the resource, checking guard.is_held() ...
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn guard(&self, timeout: Duration) -> Result<LockGuard<'_>, Error> {
        let (sender, losses) = channel::unbounded();
        self.send(Command::SubscribeLost(sender))?;
        // Auto-renew from now until the guard (or this attempt, failed or cancelled) ends.
        let renewing = RenewClaim::new(self);
        let fence = self.acquire(timeout).await?;
        Ok(LockGuard::new(self, fence, losses, renewing))
    }

    /// Switches automatic lease renewal on or off (default: the config's, off unless
    /// [`Config::with_auto_renew`]). While on and holding, the lease is renewed every
    /// [`Config::renew_interval`]; if renewal cannot succeed before the local validity
    /// deadline, [`Event::Lost`] is emitted and the hold ends. A live [`LockGuard`] renews
    /// whatever this says; when it ends, this setting applies again.
    pub fn set_auto_renew(&self, on: bool) {
        let _ = self.send(Command::AutoRenew(on));
    }

    /// The current hold's fence, while this node believes it holds the lock.
    pub fn fence(&self) -> Option<Fence> {
        *self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this node holds the lock now: a fence whose validity deadline is ahead.
    pub fn is_held(&self) -> bool {
        self.fence()
            .is_some_and(|f| f.is_valid_at(std::time::Instant::now()))
    }

    /// A guard starts or ends (see [`RenewClaim`]).
    pub(crate) fn guard_renews(&self, starts: bool) {
        let _ = self.send(Command::Guard(starts));
    }

    pub(crate) fn unlock_in_background(&self) {
        let (sender, _) = channel::bounded(1);
        let _ = self.send(Command::Unlock(sender));
    }

    /// Subscribes to this key's events: [`Event::Locked`] / [`Event::Unlocked`] (node
    /// agnostic, from a watch that runs while at least one subscription is alive; the first
    /// event is `Locked` by the current holder when the key is held) and this node's
    /// [`Event::Lost`].
    pub fn events(&self) -> Events {
        let (sender, receiver) = channel::unbounded();
        let _ = self.send(Command::Subscribe(sender));
        Events {
            receiver,
            inputs: self.inputs.clone(),
        }
    }

    /// Stops the driver: cancels in-flight requests and the watch, fails pending operations
    /// with [`Error::Destroyed`], ends event streams. Idempotent; also done on drop.
    pub fn destroy(&self) {
        let _ = self.send(Command::Destroy);
    }

    async fn run(&self, command: fn(Reply) -> Command) -> Result<Outcome, Error> {
        let (sender, receiver) = channel::bounded(1);
        let caller = self.driving.caller();
        self.send(command(sender))?;
        caller.wait(&receiver).await.map_err(|_| Error::Destroyed)?
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        (self.inputs.try_send(Input::Command(command))).map_err(|_| Error::Destroyed)
    }
}

impl Drop for Microlock {
    fn drop(&mut self) {
        // `Events` hold senders too, so the channel may stay open: the driver stops on this
        // command, not on the channel's closure.
        self.destroy();
    }
}

/// A cancellable command's answer: dropped before it comes, it tells the driver the caller
/// went away.
struct CancelOnDrop<'a> {
    lock: &'a Microlock,
    receiver: Receiver<Result<Outcome, Error>>,
    answered: bool,
}

impl CancelOnDrop<'_> {
    async fn answer(mut self, caller: Caller<'_>) -> Result<Outcome, Error> {
        let result = caller.wait(&self.receiver).await;
        self.answered = true;
        result.map_err(|_| Error::Destroyed)?
    }
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.answered {
            // Closed before `Cancelled` is sent: the driver then asks which callers are gone,
            // possibly on another thread at once.
            self.receiver.close();
            let _ = self.lock.send(Command::Cancelled);
        }
    }
}

/// A subscription to a lock's events: `events.next().await`, or use it as a
/// [`Stream`](futures_core::Stream). Ends (`None`) when the lock is destroyed or dropped.
#[derive(Debug)]
pub struct Events {
    receiver: Receiver<Event>,
    // Only to announce the unsubscription: it does not keep the driver alive (see `Drop for
    // Microlock`).
    inputs: Sender<Input>,
}

impl Events {
    /// The next event, or `None` once the lock is gone.
    pub async fn next(&mut self) -> Option<Event> {
        self.receiver.recv().await.ok()
    }
}

impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.receiver).poll_next(cx)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.receiver.close();
        let _ = self.inputs.try_send(Input::Command(Command::Unsubscribed));
    }
}
