//! How a cluster handle is configured: endpoints, TLS, credentials — written once, for every
//! adapter. An adapter's `Etcd::builder(..)` is a [`Builder`] of its own `Etcd` type, whose
//! [`build`](Builder::build) validates everything (reading the certificate files) and hands the
//! adapter a [`Settings`].

use std::fmt;
use std::marker::PhantomData;
#[cfg(feature = "tls")]
use std::path::Path;

use crate::{Config, Credentials, Endpoint, Error};

/// What a cluster handle is built from, once [`Builder::build`] has validated it.
#[derive(Clone, Debug)]
pub struct Settings {
    endpoints: Vec<Endpoint>,
    credentials: Option<Credentials>,
    member_discovery: bool,
    #[cfg(feature = "tls")]
    tls: Option<crate::TlsConfig>,
}

impl Settings {
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
        let credentials = self.credentials.as_ref().or(config.credentials()).cloned();
        Ok(config
            .with_endpoints(self.endpoints.clone())?
            .with_member_discovery(discovery)
            .with_credentials(credentials))
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
    #[cfg(feature = "tls")]
    ca: Option<crate::tls::Pem>,
    #[cfg(feature = "tls")]
    client: Option<(crate::tls::Pem, crate::tls::Pem)>,
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
            #[cfg(feature = "tls")]
            ca: None,
            #[cfg(feature = "tls")]
            client: None,
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

    /// Member discovery (see `Config::with_member_discovery`).
    pub fn member_discovery(mut self, on: bool) -> Builder<E> {
        self.member_discovery = on;
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
            #[cfg(feature = "tls")]
            tls,
        })
    }
}

impl<E> fmt::Debug for Builder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Builder");
        d.field("endpoints", &self.endpoints)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("member_discovery", &self.member_discovery);
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
    fn debug_never_shows_the_password() {
        let b = Builder::<Settings>::new(["http://127.0.0.1:2379"]).user("alice", "hunter2");
        assert!(!format!("{b:?}").contains("hunter2"));
        let s = b.build().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
