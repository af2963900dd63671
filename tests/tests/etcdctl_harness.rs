//! Self-tests of the etcdctl harness (`tests/src/etcdctl.rs`) on the etcd that `ETCD_BIN` names
//! and its own etcdctl (3.4.23 and 3.5.1):
//! `ETCD_BIN=... cargo test -p microlock-tests --features microlock-tokio/cli --test etcdctl_harness`.
//! They also pin what `etcdctl lock` does — the v3 lock recipe microlock's v3 protocol must
//! interoperate with: its key layout, its queue, what it does on signals and crashes.
//!
//! Bounds: [`PATIENCE`] (15 s) for anything etcd and etcdctl do within milliseconds on an idle
//! machine (an acquisition, a hand-over, an exit); etcdctl's own timeouts are 2 s (dial) and 5 s
//! (command).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use microlock_tests::etcd::{self, unique_key, EtcdServer};
use microlock_tests::etcdctl::{etcdctl_binary, wait_watchers, Etcdctl, KeyValue, LockOptions};
use microlock_tests::tls;

/// Generous bound for anything etcd and etcdctl should do quickly.
const PATIENCE: Duration = Duration::from_secs(15);

/// A journal file for [`LockOptions::journal`], removed on drop.
struct Journal(PathBuf);

impl Journal {
    fn new(name: &str) -> Journal {
        let file = unique_key(&format!("etcdctl-journal-{name}")).replace('/', "-");
        Journal(std::env::temp_dir().join(file))
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The documented layout of an `etcdctl lock` key: `NAME/<lease id, %x>`, empty value, put with
/// that lease, never modified.
#[track_caller]
fn assert_lock_key(name: &str, kv: &KeyValue) {
    assert_ne!(kv.lease, 0, "{kv:?}: no lease");
    assert_eq!(kv.key, format!("{name}/{:x}", kv.lease), "{kv:?}");
    let hex = kv.key.rsplit('/').next().expect("suffix");
    assert!(
        !hex.starts_with('0')
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{kv:?}: not lowercase hex without leading zeros"
    );
    assert!(kv.value.is_empty(), "{kv:?}: a value");
    assert_eq!(kv.version, 1, "{kv:?}");
    assert_eq!(kv.mod_revision, kv.create_revision, "{kv:?}");
}

#[test]
fn etcdctl_matches_etcd() {
    let server = etcd::shared_v3_only();
    let ctl = Etcdctl::for_server(server);
    let out = ctl.run(&["version"], PATIENCE);
    assert!(
        out.success()
            .stdout
            .contains(&format!("etcdctl version: {}", server.version())),
        "{} for etcd {}: {}",
        ctl.binary().display(),
        server.version(),
        out.stdout
    );
    assert_eq!(ctl.binary(), etcdctl_binary());
    assert_eq!(
        ctl.binary().parent(),
        etcd::etcd_binary().parent(),
        "the etcdctl beside etcd"
    );
}

#[test]
fn two_etcdctl_locks_exclude_each_other_and_hand_over() {
    // A member without v2, like etcd 3.6: etcdctl speaks v3 only.
    let server = EtcdServer::start_v3_only();
    let ctl = Etcdctl::for_server(&server);
    let name = unique_key("etcdctl-lock");
    let journal = Journal::new("handover");
    let options = LockOptions {
        journal: Some(journal.0.clone()),
        ..LockOptions::default()
    };
    assert_eq!(ctl.lock_queue(&name), []);

    let started = Instant::now();
    let mut a = ctl.lock_with(&name, &options);
    let held_a = a.wait_held(PATIENCE);
    let took_a = started.elapsed();
    let queue = ctl.lock_queue(&name);
    assert_eq!(queue.len(), 1, "{queue:?}");
    let key_a = queue[0].clone();
    assert_lock_key(&name, &key_a);
    assert_eq!(held_a.key, key_a.key, "$ETCD_LOCK_KEY");
    assert_eq!(held_a.revision, key_a.create_revision, "$ETCD_LOCK_REV");
    assert_eq!(held_a.lease(), key_a.lease);
    assert!(ctl.leases().contains(&key_a.lease), "{key_a:?}");
    assert_eq!(ctl.get_prefix(&format!("{name}/")), queue);

    // The second one queues behind the first: its key, created later, and no lock.
    let mut b = ctl.lock_with(&name, &options);
    let queue = ctl.wait_queue_len(&name, 2, PATIENCE);
    assert_eq!(queue[0], key_a, "the owner's key is untouched");
    let key_b = queue[1].clone();
    assert_lock_key(&name, &key_b);
    assert_ne!(key_b.lease, key_a.lease);
    assert!(key_b.create_revision > key_a.create_revision, "{queue:?}");
    assert_eq!(ctl.lock_waiters(&name), std::slice::from_ref(&key_b));
    assert_eq!(b.held(), None, "b holds the lock while a does");
    assert_eq!(b.exit_status(), None, "b gave up: {}", b.stderr());
    assert_eq!(
        journal.lines(),
        [format!("start {} {}", key_a.key, key_a.create_revision)]
    );

    // a lets go: its key is deleted, b gets the lock.
    let released = Instant::now();
    let status = a.release_and_wait(PATIENCE);
    assert!(status.success(), "a: {status}; stderr:\n{}", a.stderr());
    let held_b = b.wait_held(PATIENCE);
    let handover = released.elapsed();
    assert_eq!(held_b.key, key_b.key);
    // $ETCD_LOCK_REV is the store revision when etcdctl found itself the owner (Go's
    // `Mutex.Header().Revision`): after a wait, that of a's deletion (or later), not its key's
    // create revision. (For a, which got the lock at once, the two are the same.)
    assert!(
        held_b.revision > key_b.create_revision,
        "$ETCD_LOCK_REV {} after waiting, key {key_b:?}",
        held_b.revision
    );
    assert_eq!(ctl.lock_queue(&name), std::slice::from_ref(&key_b));
    assert_eq!(
        a.stdout(),
        format!(
            "microlock-etcdctl: held {} {}\n",
            key_a.key, key_a.create_revision
        )
    );

    let status = b.release_and_wait(PATIENCE);
    assert!(status.success(), "b: {status}; stderr:\n{}", b.stderr());
    assert_eq!(ctl.lock_queue(&name), []);
    // The critical sections, as the two CMDs wrote them: one after the other.
    assert_eq!(
        journal.lines(),
        [
            format!("start {} {}", key_a.key, key_a.create_revision),
            format!("end {}", key_a.key),
            format!("start {} {}", key_b.key, held_b.revision),
            format!("end {}", key_b.key),
        ]
    );
    eprintln!(
        "etcd {}: first etcdctl lock held after {took_a:?}, hand-over {handover:?}, keys {} and {}",
        server.version(),
        key_a.key,
        key_b.key
    );
}

#[test]
fn etcdctl_lock_on_signals_and_crashes() {
    // A server of its own: its watcher count tells when the waiter waits.
    let server = EtcdServer::start_v3_only();
    let ctl = Etcdctl::for_server(&server);
    let name = unique_key("etcdctl-signals");
    let mut holder = ctl.lock(&name);
    let held = holder.wait_held(PATIENCE);

    // A waiter told to stop (SIGTERM) withdraws its key and exits 1; its lease is not revoked.
    let mut waiter = ctl.lock(&name);
    let queue = ctl.wait_queue_len(&name, 2, PATIENCE);
    let waiter_key = queue[1].clone();
    // Its key is there, but is it waiting (watching its predecessor's key)? Stopped before
    // that, it could exit without deleting its key (see the module docs of etcdctl.rs).
    wait_watchers(&server, 1, PATIENCE);
    waiter.signal("-TERM");
    let status = waiter.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(1), "{}", waiter.stderr());
    assert!(
        waiter.stderr().contains("context canceled"),
        "{}",
        waiter.stderr()
    );
    assert_eq!(waiter.held(), None);
    assert_eq!(ctl.lock_queue(&name), [queue[0].clone()]);
    assert!(ctl.leases().contains(&waiter_key.lease), "lease revoked");

    // A holder running CMD ignores SIGINT (and SIGTERM): it keeps the lock while CMD runs, and
    // exits 0 once CMD has ended. (The queue reads below take a few round trips: time for the
    // signal to be handled.)
    holder.signal("-INT");
    let mut crasher = ctl.lock_with(
        &name,
        &LockOptions {
            ttl: Some(3),
            ..LockOptions::default()
        },
    );
    let queue = ctl.wait_queue_len(&name, 2, PATIENCE);
    assert_eq!(queue[0].key, held.key, "the holder let go on SIGINT");
    assert_eq!(holder.exit_status(), None, "{}", holder.stderr());
    let status = holder.release_and_wait(PATIENCE);
    assert!(status.success(), "{status}: {}", holder.stderr());
    let crashed = crasher.wait_held(PATIENCE);

    // A crashed holder (SIGKILL) leaves its key: the next one gets the lock when the lease
    // (TTL 3 s, renewed every second) expires, so not within the first second.
    crasher.kill();
    let killed = Instant::now();
    assert_eq!(ctl.lock_queue(&name)[0].key, crashed.key);
    let mut next = ctl.lock(&name);
    let got = next.wait_held(Duration::from_secs(3) + PATIENCE);
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_secs(1),
        "the lease expired after {after:?}"
    );
    assert_eq!(ctl.lock_queue(&name)[0].key, got.key);
    assert!(
        !ctl.leases().contains(&crashed.lease()),
        "the crashed lease lives on"
    );
    let status = next.release_and_wait(PATIENCE);
    assert!(status.success(), "{status}: {}", next.stderr());
    eprintln!(
        "etcd {}: lock free {after:?} after its holder's crash (TTL 3 s)",
        server.version()
    );
}

#[test]
fn dropping_a_handle_stops_its_processes_and_frees_the_lock() {
    // A server of its own: its watcher count tells when the waiter waits.
    let server = EtcdServer::start_v3_only();
    let ctl = Etcdctl::for_server(&server);
    let name = unique_key("etcdctl-drop");
    let mut holder = ctl.lock(&name);
    holder.wait_held(PATIENCE);
    let waiter = ctl.lock(&name);
    ctl.wait_queue_len(&name, 2, PATIENCE);
    wait_watchers(&server, 1, PATIENCE);
    let groups = [holder.pgid(), waiter.pgid()];
    drop(waiter);
    drop(holder);
    assert_eq!(ctl.lock_queue(&name), [], "keys left behind");
    for pgid in groups {
        assert!(
            !microlock_tests::cli::group_exists(pgid),
            "group {pgid} left behind"
        );
    }

    // etcdctl killed alone: its CMD lives on (holding etcdctl's stdout open), yet wait_exit
    // sees the exit at once, and dropping the handle ends CMD too.
    let mut orphaning = ctl.lock(&unique_key("etcdctl-orphan"));
    orphaning.wait_held(PATIENCE);
    orphaning.signal("-KILL");
    let started = Instant::now();
    let status = orphaning.wait_exit(PATIENCE);
    let took = started.elapsed();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(took < Duration::from_secs(5), "wait_exit took {took:?}");
    let pgid = orphaning.pgid();
    assert!(
        microlock_tests::cli::group_exists(pgid),
        "CMD should outlive etcdctl"
    );
    drop(orphaning);
    // CMD, SIGKILLed, is an orphan now: init reaps it, a moment later.
    let reaped =
        microlock_tests::cli::wait_until(PATIENCE, "the orphaned CMD's group to go", || {
            !microlock_tests::cli::group_exists(pgid)
        });
    eprintln!(
        "etcd {}: etcdctl killed alone: wait_exit {took:?}; its orphaned CMD gone {reaped:?} after \
         the drop",
        server.version()
    );
}

#[test]
fn tls_and_user_settings() {
    // Mutual TLS: the https URL wants the client certificate.
    let pki = tls::pki();
    let server = tls::shared_tls();
    let url = server.tls_client_url().expect("a TLS etcd");
    let key = unique_key("etcdctl-tls");
    let ctl = Etcdctl::new(&url)
        .cacert(pki.ca_file())
        .client_cert(pki.client_cert_file(), pki.client_key_file());
    ctl.run(&["put", &key, "v"], PATIENCE).success();
    let kvs = ctl.get_prefix(&key);
    assert_eq!(kvs.len(), 1, "{kvs:?}");
    assert_eq!(kvs[0].value, b"v");
    let anonymous = Etcdctl::new(&url).cacert(pki.ca_file());
    // (etcdctl retries the handshake until its command timeout: 2 s instead of 5 s.)
    let out = anonymous.run(&["--command-timeout=2s", "get", &key], PATIENCE);
    assert!(!out.status.success(), "no client certificate: {out:?}");

    // v3 authentication: --user and --password.
    let server = EtcdServer::start_v3_only();
    let admin = Etcdctl::for_server(&server);
    admin
        .run(&["user", "add", "root:rootpw"], PATIENCE)
        .success();
    admin.run(&["auth", "enable"], PATIENCE).success();
    let root = Etcdctl::for_server(&server).user("root", "rootpw");
    root.run(&["put", "k", "v"], PATIENCE).success();
    assert_eq!(root.get_prefix("k")[0].value, b"v");
    let mut lock = root.lock("authlock");
    lock.wait_held(PATIENCE);
    assert!(
        lock.release_and_wait(PATIENCE).success(),
        "{}",
        lock.stderr()
    );
    let out = admin.run(&["get", "k"], PATIENCE);
    assert!(
        !out.status.success(),
        "anonymous read with auth on: {out:?}"
    );
    let out = Etcdctl::for_server(&server)
        .user("root", "wrong")
        .run(&["get", "k"], PATIENCE);
    assert!(
        !out.status.success() && out.stderr.contains("authentication failed"),
        "{out:?}"
    );
}
