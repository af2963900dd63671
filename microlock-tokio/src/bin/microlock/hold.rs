//! `microlock lock` and `microlock unlock`: take the lock and leave it held for its TTL;
//! release it by node id.

use microlock_tokio::{Config, Error, Microlock};

use crate::args::{Common, LockArgs, UnlockArgs};
use crate::client;
use crate::exit::{self, Failure, NOT_OWNED, OK};
use crate::signals::Signals;
use crate::take::{take, Taken};
use crate::timing::show;

/// Runs `microlock lock`: prints the fencing token and leaves the key held (not renewed).
pub async fn lock(common: &Common, args: LockArgs) -> Result<u8, Failure> {
    let node_id = args.take.id.clone().unwrap_or_else(client::default_node_id);
    // Auto-renew stays off: the key lives exactly its TTL after this process took it.
    let config = Config::new(&args.take.key, &node_id, args.take.ttl)
        .map_err(|e| Failure::from_error("invalid lock", &e))?;
    let key = config.key().as_str().to_owned();
    let ttl = config.ttl();
    let etcd = client::etcd(common)?;
    let mut signals = Signals::install()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("installing signal handlers: {e}")))?;
    let lock = Microlock::with_config(&etcd, config)
        .map_err(|e| Failure::from_error("invalid lock", &e))?;
    let mut events = lock.events();
    let fence = match take(&lock, &mut events, args.wait, &mut signals, common.verbose).await? {
        Taken::Held(fence) => fence,
        Taken::Interrupted(signal) => return Ok(exit::of_signal(signal as i32)),
    };
    println!("{}", fence.token());
    eprintln!(
        "microlock: {key} locked by {node_id} (token {}) until its TTL ({}) runs out; release \
         it with: microlock unlock --key {} --id {}",
        fence.token(),
        show(ttl),
        quoted(&key),
        quoted(&node_id),
    );
    // Destroying the client does not release the key: it stays held until its TTL runs out.
    lock.destroy();
    Ok(OK)
}

/// Runs `microlock unlock`: releases the key if `--id` holds it (77 otherwise).
pub async fn unlock(common: &Common, args: UnlockArgs) -> Result<u8, Failure> {
    let etcd = client::etcd(common)?;
    // The TTL is not used by a release; any valid one will do.
    let lock = Microlock::new(
        &etcd,
        &args.key,
        &args.id,
        std::time::Duration::from_secs(1),
    )
    .map_err(|e| Failure::from_error("invalid lock", &e))?;
    let key = lock.config().key().as_str().to_owned();
    match lock.unlock().await {
        Ok(()) => {
            if common.verbose {
                eprintln!("microlock: released {key} (held by {})", args.id);
            }
            Ok(OK)
        }
        Err(Error::LockNotOwned { .. }) => Err(Failure::new(
            NOT_OWNED,
            format!(
                "{key} is not held by {} (it is free, or another node holds it): nothing released",
                args.id
            ),
        )),
        Err(e) => Err(Failure::from_error(&format!("releasing {key}"), &e)),
    }
}

/// `text` as one shell word: as it is when plain, else in single quotes.
fn quoted(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.:/@,+=%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn ids_are_quoted_for_the_shell() {
        assert_eq!(quoted("host-1:123"), "host-1:123");
        assert_eq!(quoted("worker 1"), "'worker 1'");
        assert_eq!(quoted("it's"), r"'it'\''s'");
    }
}
