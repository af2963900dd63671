//! etcd authentication: the credentials a lock presents, and why etcd refused them.

use std::fmt;

use base64::Engine as _;
use http::HeaderValue;

use crate::Error;

/// A user name and password for etcd's authentication.
///
/// On the v2 API they go with every request as HTTP basic authentication. The password never
/// appears in `Debug` output (nor in any error or log of this library):
///
/// ```
/// use microlock_proto::Credentials;
/// let alice = Credentials::new("alice", "s3cret")?;
/// assert_eq!(alice.user(), "alice");
/// assert!(!format!("{alice:?}").contains("s3cret"));
/// # Ok::<(), microlock_proto::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
    /// `Basic base64(user:password)`, marked sensitive (hidden from `http`'s `Debug`).
    header: HeaderValue,
}

impl Credentials {
    /// Validates a user name and password. The name must be non-empty and free of `:` and
    /// control characters (HTTP basic authentication cannot carry them, and etcd accepts no such
    /// name); the password must be free of control characters.
    pub fn new(user: &str, password: &str) -> Result<Credentials, Error> {
        let invalid = |reason: &str| Error::InvalidOption {
            option: "user".to_owned(),
            reason: reason.to_owned(),
        };
        if user.is_empty() {
            return Err(invalid("the user name is empty"));
        }
        if user.contains(':') {
            return Err(invalid("the user name contains ':'"));
        }
        if user.chars().any(char::is_control) {
            return Err(invalid("the user name contains a control character"));
        }
        if password.chars().any(char::is_control) {
            return Err(invalid("the password contains a control character"));
        }
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut header = HeaderValue::from_str(&format!("Basic {token}"))
            .expect("base64 is always a valid header value");
        header.set_sensitive(true);
        Ok(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
            header,
        })
    }

    /// Parses etcdctl's `name:password` form (`--user`, `ETCDCTL_USER`); `option` names where
    /// the text came from, for the error. The password is everything after the first `:`.
    ///
    /// ```
    /// use microlock_proto::Credentials;
    /// let c = Credentials::parse("alice:pa:ss", "ETCDCTL_USER")?;
    /// assert_eq!(c.user(), "alice");
    /// assert!(Credentials::parse("alice", "ETCDCTL_USER").is_err());
    /// # Ok::<(), microlock_proto::Error>(())
    /// ```
    pub fn parse(text: &str, option: &str) -> Result<Credentials, Error> {
        let Some((user, password)) = text.split_once(':') else {
            return Err(Error::InvalidOption {
                option: option.to_owned(),
                reason: "expected `name:password`".to_owned(),
            });
        };
        Credentials::new(user, password).map_err(|e| match e {
            Error::InvalidOption { reason, .. } => Error::InvalidOption {
                option: option.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password (for an adapter or a protocol that must send it).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The `Authorization` header of HTTP basic authentication, marked sensitive.
    pub fn basic_auth_header(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why etcd refused a request's authentication or authorization
/// ([`Error::Auth`](crate::Error::Auth)).
///
/// etcd's v2 API answers a wrong password and a missing permission alike (HTTP 401, error code
/// 110), so v2 reports [`Unauthorized`](AuthFailure::Unauthorized); the v3 API tells the two
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailure {
    /// Either the user name or password is wrong, or the user's roles do not grant read and
    /// write on the lock key (etcd v2 does not say which). Without credentials: etcd's
    /// authentication is on and its `guest` role does not grant access to the key.
    Unauthorized,
    /// The user name or password is wrong.
    AuthenticationFailed,
    /// The user is authenticated, but its roles do not allow this operation on the key.
    PermissionDenied,
}

impl AuthFailure {
    /// What a person should check, for an error message.
    pub(crate) fn advice(self, with_credentials: bool) -> &'static str {
        match (self, with_credentials) {
            (AuthFailure::Unauthorized, true) => {
                "wrong user name or password, or the user's roles do not grant read and write \
                 on this key (etcd's v2 API does not tell which)"
            }
            (AuthFailure::Unauthorized, false) => {
                "etcd's authentication is on and no credentials were given (set a user and \
                 password), or the guest role does not grant read and write on this key"
            }
            (AuthFailure::AuthenticationFailed, _) => "wrong user name or password",
            (AuthFailure::PermissionDenied, _) => {
                "the user's roles do not allow this operation on this key"
            }
        }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthFailure::Unauthorized => "unauthorized",
            AuthFailure::AuthenticationFailed => "authentication failed",
            AuthFailure::PermissionDenied => "permission denied",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_header_is_rfc7617() {
        // RFC 7617's example: Aladdin / open sesame.
        let c = Credentials::new("Aladdin", "open sesame").unwrap();
        assert_eq!(c.basic_auth_header(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(c.basic_auth_header().is_sensitive());
    }

    #[test]
    fn invalid_names_fail() {
        assert!(Credentials::new("", "x").is_err());
        assert!(Credentials::new("a:b", "x").is_err());
        assert!(Credentials::new("a\nb", "x").is_err());
        assert!(Credentials::new("a", "x\r\n").is_err());
        assert!(Credentials::new("a", "").is_ok());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials::new("alice", "hunter2").unwrap();
        let text = format!("{c:?} {:?}", c.basic_auth_header());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("aHVudGVyMg"), "{text}"); // nor its base64
        assert!(!text.contains("YWxpY2U6aHVudGVyMg"), "{text}");
    }
}
