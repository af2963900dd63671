//! The one place that turns the common flags into an [`Etcd`] handle, and the node id default.

use microlock_tokio::{Credentials, Etcd};

use crate::args::Common;
use crate::exit::Failure;

/// The etcd handle the common flags (or their `ETCDCTL_*` variables) describe: endpoints, CA,
/// client certificate, user, protocol. Every check is the library's (`build()` names the option or file
/// at fault); its errors are usage errors.
pub fn etcd(common: &Common) -> Result<Etcd, Failure> {
    let mut builder = Etcd::builder([common.endpoints.as_str()]).protocol(common.protocol);
    if let Some(ca) = given(&common.cacert) {
        builder = builder.ca_file(ca);
    }
    // clap makes --cert and --key-file (or their variables) come together.
    if let (Some(cert), Some(key)) = (given(&common.cert), given(&common.key_file)) {
        builder = builder.client_cert_files(cert, key);
    }
    let password = common.password.as_deref().filter(|p| !p.is_empty());
    match (common.user.as_deref().filter(|u| !u.is_empty()), password) {
        (Some(user), Some(password)) if !user.contains(':') => {
            builder = builder.user(user, password);
        }
        (Some(user), _) => {
            let credentials = Credentials::parse(user, "--user")
                .map_err(|e| Failure::from_error("reading --user (or ETCDCTL_USER)", &e))?;
            builder = builder.user(credentials.user(), credentials.password());
        }
        (None, Some(_)) => {
            return Err(Failure::usage(
                "--password (or ETCDCTL_PASSWORD) is given without --user (or ETCDCTL_USER)",
            ))
        }
        (None, None) => {}
    }
    builder
        .build()
        .map_err(|e| Failure::from_error("connecting to etcd", &e))
}

/// A path flag, unless empty (an empty `ETCDCTL_*` variable counts as unset, as in etcdctl).
fn given(path: &Option<std::path::PathBuf>) -> Option<&std::path::Path> {
    path.as_deref().filter(|p| !p.as_os_str().is_empty())
}

/// `<hostname>:<pid>`: the default node id, unique among the processes of a cluster.
pub fn default_node_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
