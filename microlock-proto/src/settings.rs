//! How a cluster handle is configured: endpoints, TLS, credentials — written once, for every
//! adapter. An adapter's `Etcd::builder(..)` is a [`Builder`] of its own `Etcd` type, whose
//! [`build`](Builder::build) validates everything (reading the certificate files) and hands the
//! adapter a [`Settings`].

use std::fmt;
use std::marker::PhantomData;
#[cfg(feature = "tls")]
use std::path::Path;

use crate::{Config, Credentials, Endpoint, Error, Protocol};

/// What a cluster handle is built from, once [`Builder::build`] has validated it.
#[derive(Clone, Debug)]
pub struct Settings {
    endpoints: Vec<Endpoint>,
    credentials: Option<Credentials>,
    member_discovery: bool,
    /// `None`: not chosen (a lock's config decides; the default is v2).
    protocol: Option<Protocol>,
    #[cfg(feature = "tls")]
    tls: Option<crate::TlsConfig>,
    max_connections_per_member: usize,
    max_watches_per_member: usize,
}

impl Settings {
    /// The default of [`Builder::max_connections_per_member`]: 64 connections per member for
    /// short requests (lock, unlock, renew, reads, liveness probes).
    ///
    /// Why 64. An HTTP/1.1 connection carries one request at a time, so `n` connections allow
    /// `n` requests in flight per member, and a handle's rate is at most `n / latency`. etcd
    /// commits concurrent writes together (one raft round and one disk sync for many), so it
    /// needs some concurrency to reach its own rate, and no more. Measured on loopback (one
    /// etcd 3.4 member, two cores shared with the client; `examples/many_locks.rs`: 10,000
    /// locks taken at once by one handle), on a quiet machine: 8 connections, 6,000–7,500
    /// locks/s; 16, 7,000–9,400; 32, 8,500–11,300; 64, 7,900–13,000; 128 and 256, no more
    /// (6,700–13,500); the former unbounded pool opened 8,000–10,000 sockets for 5,300–7,900
    /// locks/s. With the cores busy with other work too, 8 or 16 connections let the end of
    /// such a burst wait past the 2 s request timeout (some locks failed with `Timeout`); 64
    /// did in 1 run of 10 (and the unbounded pool in 4 of 6). 64 also leaves room for a real
    /// cluster's latency (a network round trip and a disk sync per write) before the cap, not
    /// etcd, sets the rate; more would only add connections here and goroutines and buffers in
    /// etcd. With
    /// [`DEFAULT_MAX_WATCHES_PER_MEMBER`](Settings::DEFAULT_MAX_WATCHES_PER_MEMBER), a handle
    /// opens at most 256 connections to a member, 768 to three: under 1,024, the usual soft
    /// limit of open files.
    pub const DEFAULT_MAX_CONNECTIONS_PER_MEMBER: usize = 64;

    /// The default of [`Builder::max_watches_per_member`]: 192 long polls per member.
    ///
    /// Why 192. A watch holds a connection of its own for as long as its key is quiet (the v2
    /// API serves one long poll per connection), so this is how many keys a handle can watch
    /// at once on one member without delay (`events()` streams and waiting acquires): far more
    /// than a process usually watches, each costing a file descriptor here and a connection
    /// and goroutine in etcd; and with the 64 short connections, 256 per member in all (see
    /// [`DEFAULT_MAX_CONNECTIONS_PER_MEMBER`](Settings::DEFAULT_MAX_CONNECTIONS_PER_MEMBER)).
    pub const DEFAULT_MAX_WATCHES_PER_MEMBER: usize = 192;

    /// The members' client URLs.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The user to authenticate as, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Whether member discovery is on.
    pub fn member_discovery(&self) -> bool {
        self.member_discovery
    }

    /// The protocol every lock of the handle speaks (see [`Builder::protocol`]).
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }

    /// How many connections the handle opens to one member for short requests (see
    /// [`Builder::max_connections_per_member`]); at least 1.
    pub fn max_connections_per_member(&self) -> usize {
        self.max_connections_per_member
    }

    /// How many long polls (watches) the handle keeps open on one member (see
    /// [`Builder::max_watches_per_member`]); at least 1.
    pub fn max_watches_per_member(&self) -> usize {
        self.max_watches_per_member
    }

    /// The TLS configuration for `https://` endpoints (`None` when every endpoint is
    /// `http://`).
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&crate::TlsConfig> {
        self.tls.as_ref()
    }

    /// The same settings with member discovery switched on or off.
    pub fn with_member_discovery(mut self, on: bool) -> Settings {
        self.member_discovery = on;
        self
    }

    /// A lock's configuration under these settings: the endpoints replace the config's,
    /// member discovery is on if either asks for it, and the credentials, when set, replace
    /// the config's.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use microlock_proto::{Builder, Config, Settings};
    /// let settings = Builder::<Settings>::new(["http://10.0.0.1:2379"]).user("alice", "pw").build()?;
    /// let config = settings.apply(Config::new("k", "n", Duration::from_secs(5))?)?;
    /// assert_eq!(config.endpoints(), settings.endpoints());
    /// assert_eq!(config.credentials().unwrap().user(), "alice");
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn apply(&self, config: Config) -> Result<Config, Error> {
        let discovery = config.member_discovery() || self.member_discovery;
        let protocol = match self.protocol {
            Some(chosen)
                if config.protocol() != Protocol::default() && config.protocol() != chosen =>
            {
                return Err(Error::InvalidOption {
                    option: "protocol".to_owned(),
                    reason: format!(
                        "the lock's config asks for {:?}, its etcd handle speaks {chosen:?}",
                        config.protocol()
                    ),
                })
            }
            Some(chosen) => chosen,
            None => config.protocol(),
        };
        let credentials = self.credentials.as_ref().or(config.credentials()).cloned();
        Ok(config
            .with_endpoints(self.endpoints.clone())?
            .with_member_discovery(discovery)
            .with_credentials(credentials)
            .with_protocol(protocol))
    }

    /// Settings for these endpoints and nothing else (what `Etcd::new` builds).
    ///
    /// With the `tls` feature, `https://` endpoints trust the platform's roots (when found).
    pub fn new(endpoints: Vec<Endpoint>) -> Result<Settings, Error> {
        let builder: Builder<Settings> = Builder {
            endpoints: Vec::new(),
            parsed: Some(endpoints),
            ..Builder::default()
        };
        builder.build()
    }
}

/// A type an adapter builds from [`Settings`]: its cluster handle.
pub trait FromSettings: Sized {
    /// Builds the handle; the settings are already valid.
    fn from_settings(settings: Settings) -> Result<Self, Error>;
}

impl FromSettings for Settings {
    fn from_settings(settings: Settings) -> Result<Settings, Error> {
        Ok(settings)
    }
}

/// Configures a cluster handle `E` the way `etcdctl` is configured: endpoints, a CA, a client
/// certificate, a user. Nothing is checked until [`build`](Builder::build), which reports the
/// first problem, naming the option (and file) at fault.
///
/// ```
/// use microlock_proto::{Builder, Settings};
/// let settings = Builder::<Settings>::new(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
///     .user("alice", "secret")
///     .build()?;
/// assert_eq!(settings.endpoints().len(), 2);
/// assert_eq!(settings.credentials().unwrap().user(), "alice");
/// # Ok::<(), microlock_proto::Error>(())
/// ```
pub struct Builder<E> {
    endpoints: Vec<String>,
    /// Endpoints already parsed (from [`Settings::new`]).
    parsed: Option<Vec<Endpoint>>,
    credentials: Option<(String, String)>,
    /// A credentials problem found early (a malformed `ETCDCTL_USER`), reported by `build`.
    credentials_error: Option<Error>,
    member_discovery: bool,
    protocol: Option<Protocol>,
    #[cfg(feature = "tls")]
    ca: Option<crate::tls::Pem>,
    #[cfg(feature = "tls")]
    client: Option<(crate::tls::Pem, crate::tls::Pem)>,
    max_connections_per_member: usize,
    max_watches_per_member: usize,
    target: PhantomData<fn() -> E>,
}

impl<E> Default for Builder<E> {
    fn default() -> Self {
        Builder {
            endpoints: Vec::new(),
            parsed: None,
            credentials: None,
            credentials_error: None,
            member_discovery: false,
            protocol: None,
            #[cfg(feature = "tls")]
            ca: None,
            #[cfg(feature = "tls")]
            client: None,
            max_connections_per_member: Settings::DEFAULT_MAX_CONNECTIONS_PER_MEMBER,
            max_watches_per_member: Settings::DEFAULT_MAX_WATCHES_PER_MEMBER,
            target: PhantomData,
        }
    }
}

impl<E: FromSettings> Builder<E> {
    /// A builder for these client URLs (`http://host:port`, `https://host:port`, or
    /// `host:port`; an item may be a comma-separated list, as in `ETCDCTL_ENDPOINTS`).
    pub fn new<I, S>(endpoints: I) -> Builder<E>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Builder {
            endpoints: endpoints
                .into_iter()
                .map(|s| s.as_ref().to_owned())
                .collect(),
            ..Builder::default()
        }
    }

    /// A builder configured as `etcdctl` would be by the environment: `ETCDCTL_ENDPOINTS`
    /// (default `http://127.0.0.1:2379`), `ETCDCTL_CACERT`, `ETCDCTL_CERT` with `ETCDCTL_KEY`,
    /// and `ETCDCTL_USER` (`name:password`, or `name` with `ETCDCTL_PASSWORD`). Empty
    /// variables count as unset. `lookup` reads a variable (`|name| std::env::var(name).ok()`
    /// for the process's environment).
    ///
    /// ```
    /// use microlock_proto::{Builder, Settings};
    /// let vars = [("ETCDCTL_ENDPOINTS", "http://10.0.0.1:2379,http://10.0.0.2:2379"),
    ///             ("ETCDCTL_USER", "alice:secret")];
    /// let lookup = |name: &str| vars.iter().find(|v| v.0 == name).map(|v| v.1.to_owned());
    /// let settings = Builder::<Settings>::from_vars(lookup).build()?;
    /// assert_eq!(settings.endpoints().len(), 2);
    /// assert_eq!(settings.credentials().unwrap().user(), "alice");
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Builder<E> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut builder = Builder::new([
            var("ETCDCTL_ENDPOINTS").unwrap_or_else(|| Endpoint::default().as_str().to_owned())
        ]);
        if let Some(skip) = var("ETCDCTL_INSECURE_SKIP_TLS_VERIFY") {
            if skip.trim() != "false" {
                builder.credentials_error = Some(Error::InvalidOption {
                    option: "ETCDCTL_INSECURE_SKIP_TLS_VERIFY".to_owned(),
                    reason: "microlock always verifies certificates; give the CA with \
                             ETCDCTL_CACERT instead"
                        .to_owned(),
                });
            }
        }
        match (var("ETCDCTL_USER"), var("ETCDCTL_PASSWORD")) {
            (Some(user), Some(password)) if !user.contains(':') => {
                builder = builder.user(&user, &password);
            }
            (Some(text), _) => match Credentials::parse(&text, "ETCDCTL_USER") {
                Ok(c) => builder = builder.user(c.user(), c.password()),
                Err(e) => builder.credentials_error = Some(e),
            },
            (None, Some(_)) => {
                builder.credentials_error = Some(Error::InvalidOption {
                    option: "ETCDCTL_PASSWORD".to_owned(),
                    reason: "set without ETCDCTL_USER".to_owned(),
                })
            }
            (None, None) => {}
        }
        #[cfg(feature = "tls")]
        {
            if let Some(ca) = var("ETCDCTL_CACERT") {
                builder = builder.ca_file(ca);
            }
            match (var("ETCDCTL_CERT"), var("ETCDCTL_KEY")) {
                (Some(cert), Some(key)) => builder = builder.client_cert_files(cert, key),
                (Some(_), None) | (None, Some(_)) => {
                    builder.credentials_error = Some(Error::InvalidOption {
                        option: "ETCDCTL_CERT / ETCDCTL_KEY".to_owned(),
                        reason: "a client certificate needs both".to_owned(),
                    })
                }
                (None, None) => {}
            }
        }
        #[cfg(not(feature = "tls"))]
        for name in ["ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY"] {
            if var(name).is_some() {
                builder.credentials_error = Some(Error::InvalidOption {
                    option: name.to_owned(),
                    reason: "TLS needs microlock-proto's `tls` feature".to_owned(),
                });
            }
        }
        builder
    }

    /// Authenticates as `user` with `password` (etcd's authentication; on the v2 API, HTTP
    /// basic authentication on every request). Neither appears in any `Debug` or error output.
    pub fn user(mut self, user: &str, password: &str) -> Builder<E> {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Speak `protocol` to etcd (default [`Protocol::V2`], the protocol of microlock for
    /// Node.js; [`Protocol::V3`] for etcd 3.6 and later, for an etcd without `--enable-v2`,
    /// and to share locks with `etcdctl lock`). Every lock of the handle speaks it.
    ///
    /// ```
    /// use microlock_proto::{Builder, Protocol, Settings};
    /// let settings = Builder::<Settings>::new(["http://127.0.0.1:2379"])
    ///     .protocol(Protocol::V3)
    ///     .build()?;
    /// assert_eq!(settings.protocol(), Protocol::V3);
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn protocol(mut self, protocol: Protocol) -> Builder<E> {
        self.protocol = Some(protocol);
        self
    }

    /// Member discovery (see `Config::with_member_discovery`).
    pub fn member_discovery(mut self, on: bool) -> Builder<E> {
        self.member_discovery = on;
        self
    }

    /// At most `n` connections to each member for short requests — lock, unlock, renew,
    /// reads, liveness probes — shared by every lock of the handle (default
    /// [`Settings::DEFAULT_MAX_CONNECTIONS_PER_MEMBER`], 64; the reasoning is there).
    /// Watches have a budget of their own
    /// ([`max_watches_per_member`](Builder::max_watches_per_member)), so a handle opens at
    /// most `n` + that many connections to a member, however many locks it has.
    ///
    /// A request that finds all `n` busy waits for one (first come, first served) instead of
    /// opening another. The wait counts against the request's own timeout
    /// (`Config::with_request_timeout`): a request still waiting when the machine gives up on
    /// it leaves the queue, and is settled like any request that timed out (a quorum read,
    /// another member). So size `n` for your bursts: a handle drains at most `n / latency`
    /// requests a second, and a burst of `b` requests waits about `b × latency / n` for the
    /// last one.
    ///
    /// `0` is refused by [`build`](Builder::build) (`Error::InvalidOption`).
    ///
    /// ```
    /// use microlock_proto::{Builder, Settings};
    /// let settings = Builder::<Settings>::new(["http://10.0.0.1:2379"])
    ///     .max_connections_per_member(8)
    ///     .build()?;
    /// assert_eq!(settings.max_connections_per_member(), 8);
    /// assert_eq!(settings.max_watches_per_member(), Settings::DEFAULT_MAX_WATCHES_PER_MEMBER);
    ///
    /// let zero = Builder::<Settings>::new(["http://10.0.0.1:2379"]).max_connections_per_member(0);
    /// assert!(matches!(zero.build(), Err(microlock_proto::Error::InvalidOption { .. })));
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn max_connections_per_member(mut self, n: usize) -> Builder<E> {
        self.max_connections_per_member = n;
        self
    }

    /// At most `n` long polls — the watches behind `events()` streams and waiting acquires —
    /// open on each member at once (default [`Settings::DEFAULT_MAX_WATCHES_PER_MEMBER`], 192).
    /// A watch holds its connection for as long as its key is quiet, so watches get
    /// connections of their own, apart from the short requests'
    /// ([`max_connections_per_member`](Builder::max_connections_per_member)): however many
    /// locks watch, lock, unlock and renew never wait behind a watch.
    ///
    /// Past `n`, a watch waits for a slot (first come, first served; a watch that ends, with
    /// an event or because its lock stopped watching, hands its slot on). The machine cannot
    /// tell a waiting watch from one etcd holds: from the moment it asks for the watch it
    /// probes the member with a quorum read every half `Config::with_watch_liveness` (2 s by
    /// default), those probes being short requests, never stuck behind watches. What that
    /// means:
    /// - **A waiting acquire** (`acquire`, `guard`) still takes the lock soon after its
    ///   release: its probe reads the key (or, queued fairly, the entry ahead of it), and a
    ///   probe that finds it gone goes on at once. A release is seen within about half the
    ///   liveness bound instead of at once; nothing else changes.
    /// - **An `events()` stream** hears nothing while its watch waits: its probes only check
    ///   that the member is alive. When the watch gets a slot it asks etcd for every event
    ///   since the index it waits for, so the events come late but none is skipped (when
    ///   etcd's history of 1,000 events no longer reaches back that far, the key is read again
    ///   and the change is reported as one `Unlocked` / `Locked`). A watch on a quiet key keeps
    ///   its slot until its key changes or its lock stops watching, so with more watched keys
    ///   than `n`, a stream can wait indefinitely: set `n` to at least the number of keys the
    ///   handle watches at once (each is one file descriptor here and one connection in etcd).
    /// - A probe that fails or goes unanswered moves the watch, as always: the waiting request
    ///   leaves the queue and the watch asks again, behind the others.
    ///
    /// `0` is refused by [`build`](Builder::build) (`Error::InvalidOption`).
    ///
    /// ```
    /// use microlock_proto::{Builder, Settings};
    /// let settings = Builder::<Settings>::new(["http://10.0.0.1:2379"])
    ///     .max_connections_per_member(16)
    ///     .max_watches_per_member(1000)
    ///     .build()?;
    /// assert_eq!(settings.max_watches_per_member(), 1000);
    ///
    /// let zero = Builder::<Settings>::new(["http://10.0.0.1:2379"]).max_watches_per_member(0);
    /// assert!(matches!(zero.build(), Err(microlock_proto::Error::InvalidOption { .. })));
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn max_watches_per_member(mut self, n: usize) -> Builder<E> {
        self.max_watches_per_member = n;
        self
    }

    /// Trusts the CA certificate(s) in this PEM file for `https://` endpoints (instead of the
    /// platform's trust roots), as `etcdctl --cacert`.
    #[cfg(feature = "tls")]
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Builder<E> {
        self.ca = Some(crate::tls::file(path));
        self
    }

    /// Trusts the CA certificate(s) in this PEM text.
    #[cfg(feature = "tls")]
    pub fn ca_pem(mut self, pem: impl AsRef<[u8]>) -> Builder<E> {
        self.ca = Some(crate::tls::Pem::Bytes(pem.as_ref().to_vec()));
        self
    }

    /// Presents this client certificate (chain) and private key, PEM files, to members that
    /// ask for one (mutual TLS), as `etcdctl --cert --key`.
    #[cfg(feature = "tls")]
    pub fn client_cert_files(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Builder<E> {
        self.client = Some((crate::tls::file(cert), crate::tls::file(key)));
        self
    }

    /// Presents this client certificate (chain) and private key, PEM text.
    #[cfg(feature = "tls")]
    pub fn client_cert_pem(mut self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Builder<E> {
        self.client = Some((
            crate::tls::Pem::Bytes(cert.as_ref().to_vec()),
            crate::tls::Pem::Bytes(key.as_ref().to_vec()),
        ));
        self
    }

    /// Validates everything (parsing endpoints, reading and checking certificate files) and
    /// builds the handle.
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] for a bad URL; [`Error::InvalidOption`] for an unreadable
    /// or malformed file, a key that does not match its certificate, TLS options with only
    /// `http://` endpoints, or a malformed user or environment variable.
    pub fn build(self) -> Result<E, Error> {
        if let Some(e) = self.credentials_error {
            return Err(e);
        }
        for (option, n) in [
            (
                "max_connections_per_member",
                self.max_connections_per_member,
            ),
            ("max_watches_per_member", self.max_watches_per_member),
        ] {
            if n == 0 {
                return Err(Error::InvalidOption {
                    option: option.to_owned(),
                    reason: "must be at least 1 (it is a number of connections)".to_owned(),
                });
            }
        }
        let endpoints = match self.parsed {
            Some(parsed) => parsed,
            None => Endpoint::parse_all(&self.endpoints)?,
        };
        let credentials = self
            .credentials
            .map(|(user, password)| Credentials::new(&user, &password))
            .transpose()?;
        let any_tls = endpoints.iter().any(Endpoint::is_tls);
        #[cfg(feature = "tls")]
        let tls = {
            if !any_tls {
                let option = match (&self.ca, &self.client) {
                    (Some(ca), _) => Some(ca.describe("ca")),
                    (None, Some((cert, _))) => Some(cert.describe("client certificate")),
                    (None, None) => None,
                };
                if let Some(option) = option {
                    return Err(Error::InvalidOption {
                        option,
                        reason: "TLS options given, but every endpoint is http:// (use \
                                 https:// URLs)"
                            .to_owned(),
                    });
                }
                None
            } else {
                let client = self.client.as_ref().map(|(c, k)| (c, k));
                Some(crate::TlsConfig::new(self.ca.as_ref(), client)?)
            }
        };
        #[cfg(not(feature = "tls"))]
        if any_tls {
            return Err(Error::InvalidEndpoint {
                endpoint: endpoints
                    .iter()
                    .find(|e| e.is_tls())
                    .map(|e| e.as_str().to_owned())
                    .unwrap_or_default(),
                reason: "https needs microlock-proto's `tls` feature",
            });
        }
        E::from_settings(Settings {
            endpoints,
            credentials,
            member_discovery: self.member_discovery,
            protocol: self.protocol,
            #[cfg(feature = "tls")]
            tls,
            max_connections_per_member: self.max_connections_per_member,
            max_watches_per_member: self.max_watches_per_member,
        })
    }
}

impl<E> fmt::Debug for Builder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Builder");
        d.field("endpoints", &self.endpoints)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("member_discovery", &self.member_discovery)
            .field("protocol", &self.protocol)
            .field(
                "max_connections_per_member",
                &self.max_connections_per_member,
            )
            .field("max_watches_per_member", &self.max_watches_per_member);
        #[cfg(feature = "tls")]
        d.field("ca", &self.ca)
            .field("client_cert", &self.client.as_ref().map(|(cert, _)| cert));
        d.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|p| p.0 == name).map(|p| p.1.to_owned())
    }

    #[test]
    fn from_vars_defaults_to_etcds_default_endpoint() {
        let s = Builder::<Settings>::from_vars(vars(&[])).build().unwrap();
        assert_eq!(s.endpoints(), &[Endpoint::default()]);
        assert!(s.credentials().is_none());
        let s = Builder::<Settings>::from_vars(vars(&[("ETCDCTL_ENDPOINTS", " ")]))
            .build()
            .unwrap();
        assert_eq!(s.endpoints(), &[Endpoint::default()]);
    }

    #[test]
    fn from_vars_reads_endpoints_and_user() {
        let s = Builder::<Settings>::from_vars(vars(&[
            ("ETCDCTL_ENDPOINTS", "127.0.0.1:1,http://127.0.0.1:2"),
            ("ETCDCTL_USER", "alice:pa:ss"),
        ]))
        .build()
        .unwrap();
        assert_eq!(s.endpoints().len(), 2);
        let c = s.credentials().unwrap();
        assert_eq!((c.user(), c.password()), ("alice", "pa:ss"));
        let s = Builder::<Settings>::from_vars(vars(&[
            ("ETCDCTL_USER", "bob"),
            ("ETCDCTL_PASSWORD", "pw"),
        ]))
        .build()
        .unwrap();
        let c = s.credentials().unwrap();
        assert_eq!((c.user(), c.password()), ("bob", "pw"));
    }

    #[test]
    fn from_vars_rejects_what_it_cannot_honour() {
        let err = |pairs| {
            Builder::<Settings>::from_vars(vars(pairs))
                .build()
                .unwrap_err()
        };
        assert!(matches!(err(&[("ETCDCTL_USER", "bob")]),
            Error::InvalidOption { option, .. } if option == "ETCDCTL_USER"));
        assert!(matches!(err(&[("ETCDCTL_PASSWORD", "pw")]),
            Error::InvalidOption { option, .. } if option == "ETCDCTL_PASSWORD"));
        assert!(
            matches!(err(&[("ETCDCTL_INSECURE_SKIP_TLS_VERIFY", "true")]),
            Error::InvalidOption { option, .. } if option == "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")
        );
        assert!(matches!(
            err(&[("ETCDCTL_ENDPOINTS", "ftp://x:1")]),
            Error::InvalidEndpoint { .. }
        ));
    }

    #[test]
    fn connection_caps_default_and_refuse_zero() {
        let s = Builder::<Settings>::new(["http://127.0.0.1:2379"])
            .build()
            .unwrap();
        assert_eq!(
            s.max_connections_per_member(),
            Settings::DEFAULT_MAX_CONNECTIONS_PER_MEMBER
        );
        assert_eq!(
            s.max_watches_per_member(),
            Settings::DEFAULT_MAX_WATCHES_PER_MEMBER
        );
        let s = Settings::new(vec![Endpoint::default()]).unwrap();
        assert_eq!(
            s.max_connections_per_member(),
            Settings::DEFAULT_MAX_CONNECTIONS_PER_MEMBER
        );
        let s = Builder::<Settings>::new(["http://127.0.0.1:2379"])
            .max_connections_per_member(1)
            .max_watches_per_member(3)
            .build()
            .unwrap();
        assert_eq!(
            (s.max_connections_per_member(), s.max_watches_per_member()),
            (1, 3)
        );
        for builder in [
            Builder::<Settings>::new(["http://127.0.0.1:2379"]).max_connections_per_member(0),
            Builder::<Settings>::new(["http://127.0.0.1:2379"]).max_watches_per_member(0),
        ] {
            assert!(matches!(builder.build(), Err(Error::InvalidOption { .. })));
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let b = Builder::<Settings>::new(["http://127.0.0.1:2379"]).user("alice", "hunter2");
        assert!(!format!("{b:?}").contains("hunter2"));
        let s = b.build().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
