//! A simulated etcd cluster of N members sharing one linearizable v2 store, with the faults of
//! single members: death, `SIGSTOP`-like hangs, restarts, lagging followers, members cut off
//! from their peers, and the loss of quorum that follows when a majority fails.
//!
//! [`SimCluster`] routes each request by its URI's authority (`host:port`) to a member
//! (`m0:2379`, `m1:2379`, … by default). The members share the quorum store, a [`SimEtcd`]:
//! what a healthy, up-to-date member answers is exactly what [`SimEtcd`] answers. A member's
//! faults change *when* and *whether* it answers, and what it sees of the store:
//!
//! | member state | writes, quorum reads (raft proposals) | watches | plain reads |
//! |---|---|---|---|
//! | up, quorum | applied to the store now, answered once this member has applied them | from the store | the store |
//! | up, lagging by `d` | applied now, answered `d` later | events delivered `d` late, in order | the store as of `d` ago |
//! | up, no quorum | pending: `500` after the raft timeout, may still commit later | silent (nothing commits) | the store |
//! | cut off from its peers | pending (as without quorum) | silent until it rejoins | frozen at the cut |
//! | hung (`SIGSTOP`) | no answer; processed when it resumes | frozen; fire when it resumes | no answer |
//! | dead | connection refused | cut (connection reset) when it dies | connection refused |
//!
//! # What is modelled
//! - **Routing**: by `Uri::authority`; an unknown authority is a refused connection (as a name
//!   that does not resolve or a closed port is for a real client).
//! - **Leader and quorum**: one member is the leader. Quorum holds while the leader is up (not
//!   dead, hung or cut off), a majority of members is up, and no cluster-wide quorum loss
//!   ([`SimCluster::set_quorum_lost`]) is on. When the leader fails, a new leader among the up
//!   members is elected after 1–2 election timeouts (if a majority is up); a leader that comes
//!   back before that stays leader (a short `SIGSTOP` of the leader stalls the cluster, nothing
//!   more). A dead leader loses leadership at once. While quorum is lost the store is paused
//!   ([`SimEtcd::set_paused`]): no key expires.
//! - **Proposals without quorum** (also through a member cut off from its peers): the client
//!   gets etcd's `500 {"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver:
//!   request timed out…"}` after the raft request timeout (7 s: etcd's 5 s + 2 × election
//!   timeout; etcd's v2 handler ignores a dropped proposal and waits for the timeout), with
//!   etcd's cause: `…, possibly due to previous leader failure` when a leader was elected within
//!   two election timeouts after the request arrived, `…, possibly due to connection lost`
//!   through a cut-off member, else plain — unless the proposal commits before: then the client
//!   gets the answer when its member has applied it. What becomes of the proposal depends on
//!   why it stalled (seeded):
//!   - the leader is up but lacks a majority (or a cluster-wide quorum loss): it is in the
//!     leader's log and commits when quorum is back (2/3), or is lost (1/3, leader deposed);
//!   - forwarded to a hung leader, or sent through a member cut off from its peers: when quorum
//!     is back and the member rejoined, it commits then, or later (up to [`LATE_COMMIT_MAX`]
//!     after), or never, a third each — a 3-member etcd 3.4 answered `500 … possibly due to
//!     previous leader failure` after 7 s to writes sent while its leader was stopped, and
//!     applied them about a second after the old leader resumed;
//!   - no leader, or a dead one: raft drops it (a 3-member etcd 3.4 never applied a write sent
//!     just after its leader was killed, and answered `500` after 7 s).
//!
//!   A proposal pending longer than [`LIMBO_MAX`] is dropped. A `ttl` counts from the request's
//!   arrival at the member, as in etcd (a late commit can create a key already expired, or
//!   refresh a key to an expiry in the past).
//! - **Restarts**: a restarted member publishes its attributes through raft once quorum
//!   allows: one hidden store event (`X-Etcd-Index` + 1, seen by no watch), as etcd does.
//! - **Hung members** (`SIGSTOP`): requests get no answer; the kernel keeps them. On resume
//!   the member catches up with the store, its parked watches fire, and the kept requests are
//!   served in arrival order — late writes included (a `ttl` then counts from the resume). A
//!   kept request whose client gave up meanwhile is still served if it is a write or a quorum
//!   read (seeded: half of them; etcd's v2 handlers do not notice a closed connection), and
//!   dropped if it is a watch.
//! - **Dead members**: connections are refused; at death every request the member holds
//!   (parked watches, answers not yet sent, kept requests, pending proposals) ends with a reset
//!   connection (outcome unknown to the client). A restart brings the member back up to date
//!   with no watches.
//! - **Lag**: from [`SimCluster::set_lag`] on, the member applies the store's entries `d`
//!   late (after a freeze of `d` at the start): its watches fire `d` after the event, answers to
//!   proposals it served go out `d` after they were applied, a watch reports the member's
//!   applied index in `X-Etcd-Index`, and a plain read sees the store as of `d` ago. Ending the
//!   lag lets it catch up at once.
//! - **Cut off from peers** ([`SimCluster::isolate`]): the member's applied state is frozen at
//!   the cut; clients can still reach it. If it was the leader the others elect a new one.
//! - **Plain reads of a behind member** (lagging or cut off) are served by a replica: a copy
//!   of the store taken when the member fell behind, replaying the store's writes up to the
//!   member's applied time (built lazily, when such a read arrives).
//! - **Closing watches** ([`SimCluster::close_watches`]): one member ends its long polls with
//!   an empty `200`, or cuts them (reset).
//!
//! # Deviations from real etcd
//! - All members share one clock (no skew between members).
//! - Forwarding a proposal to the leader takes no time; a follower's answer waits only for its
//!   own apply (its lag). The leader's identity only matters for elections.
//! - A member cut off from its peers in real etcd may commit a few entries before noticing, or
//!   (as the old leader) lose entries it appended; the model decides each pending proposal's
//!   fate at random as above.
//! - A watch on a lagging member is registered in the shared store and its answer held until
//!   the member has applied the event: the history window (for `401 history cleared`) is the
//!   store's, not the member's.
//! - A member's restart takes no time beyond what the fault schedule says, and the restarted
//!   member is at once up to date; a restarted single-member cluster elects itself after the
//!   usual election delay.
//! - Elections happen 1–2 election timeouts after the leader fails, with no split votes.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use http::{Request, Response};

use crate::rng::Rng;
use crate::sim::etcd::{
    raft_timeout_response, Class, EtcdVersion, EventStamp, ServeOpts, Served, SimEtcd,
};

/// A proposal pending without quorum commits at most this long after quorum is back.
pub const LATE_COMMIT_MAX: Duration = Duration::from_secs(8);
/// A proposal pending longer than this (since it arrived) is dropped.
pub const LIMBO_MAX: Duration = Duration::from_secs(30);

/// How a [`SimCluster`] is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The members' client authorities (`host:port`), one per member.
    pub authorities: Vec<String>,
    /// etcd's election timeout (`--election-timeout`, 1 s by default): a failed leader is
    /// replaced after 1–2 of these.
    pub election_timeout: Duration,
    /// How long a proposal waits before etcd answers `500 "request timed out"` (etcd's
    /// `ReqTimeout`: 5 s + 2 × the election timeout).
    pub raft_timeout: Duration,
    /// Which etcd build the store mimics.
    pub version: EtcdVersion,
    /// The seed of the cluster's own randomness (elections, fates of pending proposals).
    pub seed: u64,
    /// The first leader (`None`: chosen with the seed), e.g. to mirror a real cluster.
    pub leader: Option<usize>,
}

impl ClusterConfig {
    /// `members` members named `m0:2379`, `m1:2379`, …, etcd's default timeouts.
    pub fn new(members: usize, seed: u64) -> ClusterConfig {
        let election_timeout = Duration::from_secs(1);
        ClusterConfig {
            authorities: (0..members.max(1)).map(|i| format!("m{i}:2379")).collect(),
            election_timeout,
            raft_timeout: Duration::from_secs(5) + election_timeout * 2,
            version: EtcdVersion::default(),
            seed,
            leader: None,
        }
    }
}

/// What became of a request: the member's answer, or a connection failure.
#[derive(Debug)]
pub enum Delivery {
    /// The member's HTTP response.
    Response(Response<Vec<u8>>),
    /// The connection was refused (dead member, unknown authority): the request provably never
    /// reached etcd.
    Refused,
    /// The connection broke after the request was sent (the member died, or cut a watch): the
    /// outcome is unknown.
    Reset,
}

/// Something that happened inside the cluster that no client is told about directly, for a
/// simulator's trace ([`SimCluster::poll_note`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The request it is about.
    pub id: u64,
    /// The member the request came through.
    pub member: usize,
    /// What happened.
    pub kind: NoteKind,
    /// The request's method, path and query.
    pub request: String,
}

/// What a [`Note`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// A proposal that waited for quorum was applied now; `answered`: its client was still
    /// waiting and gets the answer.
    Committed {
        /// The client still waited.
        answered: bool,
        /// When the member received it (its `ttl` counts from then).
        received: Duration,
    },
    /// A proposal that waited for quorum will never be applied.
    Dropped,
    /// A request kept by a hung member was served when it resumed, though its client had gone.
    ServedForNobody,
}

/// A member's process and network state (lag is separate: [`SimCluster::lag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Running and connected to its peers.
    Up,
    /// Killed: connections are refused.
    Dead,
    /// Stopped (`SIGSTOP`): connections are accepted, nothing is answered.
    Hung,
    /// Running but cut off from its peers; clients still reach it.
    Isolated,
}

#[derive(Debug)]
struct Member {
    authority: String,
    state: MemberState,
    /// `(since, lag)`: applies the store's entries `lag` late, from `since` on.
    lag: Option<(i128, i128)>,
    /// Everything applied to the store at or before this time (ns) has been applied here.
    applied: i128,
    /// Answers waiting for this member to apply the entry they depend on.
    held: VecDeque<Held>,
    /// Requests that arrived while hung, in arrival order.
    kept: Vec<Kept>,
    /// A copy of the store for plain reads while behind.
    replica: Option<Replica>,
    /// Restarted: publishes its attributes (a hidden store event) once quorum allows.
    publish: bool,
}

#[derive(Debug)]
struct Held {
    /// When the entry this answer waits for was applied to the store (ns).
    commit: i128,
    id: u64,
    response: Response<Vec<u8>>,
    /// A watch's answer (a closing member ends it without an event).
    watch: bool,
}

#[derive(Debug)]
struct Kept {
    id: u64,
    request: Request<Vec<u8>>,
    /// The client gave up (closed the connection).
    cancelled: bool,
}

#[derive(Debug)]
struct Replica {
    store: SimEtcd,
    /// The next log entry to replay (absolute position).
    next: u64,
}

#[derive(Debug)]
enum LogEntry {
    /// A write applied to the store at `time`, parsed at `received`.
    Write {
        time: i128,
        received: i128,
        request: Box<Request<Vec<u8>>>,
    },
    /// The store paused or resumed at `time`.
    Pause { time: i128, on: bool },
    /// A hidden event (a member's attributes) at `time`.
    Hidden { time: i128 },
}

impl LogEntry {
    fn time(&self) -> i128 {
        match *self {
            LogEntry::Write { time, .. }
            | LogEntry::Pause { time, .. }
            | LogEntry::Hidden { time } => time,
        }
    }
}

#[derive(Debug)]
struct Proposal {
    id: u64,
    member: usize,
    request: Request<Vec<u8>>,
    received: i128,
    deadline: i128,
    /// The client still waits for the answer.
    waiting: bool,
    /// Arrived through a member cut off from its peers.
    isolated: bool,
    /// Why it could not commit when it arrived.
    stall: Stall,
    fate: Fate,
}

/// Why a proposal did not commit at once: what its fate can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// The leader is up but has no majority: the entry is in its log and commits when a
    /// majority is back (or is lost if the leader is deposed meanwhile).
    Appended,
    /// Forwarded to a hung leader (or through a cut link): it may commit when that
    /// member comes back, at once or seconds later, or never.
    Kept,
    /// No leader, or a dead one: raft drops the proposal (etcd's v2 handler ignores the error
    /// and answers the timeout).
    Lost,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Waits for quorum (and for its member to reach the leader).
    Undecided,
    /// Commits then (if quorum holds then; else it is dropped).
    CommitAt(i128),
    /// Never commits; kept only to answer its timeout.
    Dropped,
}

/// The simulated cluster. Pure and deterministic: time is an argument, randomness comes from
/// the configured seed, every collection is ordered.
///
/// ```
/// use std::time::{Duration, Instant};
/// use microlock_proto::sim::cluster::{ClusterConfig, Delivery, SimCluster};
///
/// // Simulated time starts wherever the caller says (the model never reads a clock).
/// # fn main() {}
/// fn demo(t0: Instant) {
///     let mut cluster = SimCluster::new(t0, ClusterConfig::new(3, 7));
///     let put = |member: &str| {
///         http::Request::put(format!("http://{member}/v2/keys/lock?prevExist=false"))
///             .header("Content-Type", "application/x-www-form-urlencoded")
///             .body(b"value=a&ttl=5".to_vec())
///             .unwrap()
///     };
///     let leader = cluster.leader().unwrap();
///     let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
///     // A dead member refuses connections; the other two keep a quorum.
///     cluster.kill(a, t0);
///     cluster.handle(1, &put(cluster.authority(a)), t0);
///     assert!(matches!(cluster.poll(), Some((1, Delivery::Refused))));
///     cluster.handle(2, &put(cluster.authority(leader)), t0);
///     let Some((2, Delivery::Response(r))) = cluster.poll() else { panic!() };
///     assert_eq!(r.status(), 201);
///     // A hung member keeps the request; it is served when the member resumes.
///     cluster.restart(a, t0);
///     cluster.hang(b, t0);
///     cluster.handle(3, &put(cluster.authority(b)), t0);
///     assert!(cluster.poll().is_none());
///     cluster.resume(b, t0 + Duration::from_secs(1));
///     let Some((3, Delivery::Response(r))) = cluster.poll() else { panic!() };
///     assert_eq!(r.status(), 412); // the key exists
/// }
/// ```
#[derive(Debug)]
pub struct SimCluster {
    start: Instant,
    config: ClusterConfig,
    store: SimEtcd,
    members: Vec<Member>,
    rng: Rng,
    /// The latest time seen (ns since `start`).
    now: i128,
    leader: Option<usize>,
    election_at: Option<i128>,
    last_elected: Option<i128>,
    elections: u64,
    quorum_lost: bool,
    /// The quorum status last applied to the store.
    quorum: bool,
    proposals: Vec<Proposal>,
    /// Parked watches: id → member.
    watch_owner: BTreeMap<u64, usize>,
    ready: VecDeque<(u64, Delivery)>,
    notes: VecDeque<Note>,
    log: VecDeque<LogEntry>,
    /// The absolute position of `log[0]`.
    log_base: u64,
}

impl SimCluster {
    /// A fresh cluster whose time zero is `start`: every member up and up to date, a leader
    /// elected (chosen with the seed), the store at a fresh cluster's index
    /// ([`initial_index`](crate::sim::etcd::initial_index)).
    pub fn new(start: Instant, config: ClusterConfig) -> SimCluster {
        let n = config.authorities.len().max(1);
        let mut rng = Rng::new(config.seed ^ 0xc105_7e55);
        let seeded = (rng.next_u64() % n as u64) as usize;
        let leader = config.leader.filter(|&l| l < n).unwrap_or(seeded);
        let store = SimEtcd::new_cluster(start, n).with_version(config.version);
        let members = (0..n)
            .map(|i| Member {
                authority: config
                    .authorities
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("m{i}:2379")),
                state: MemberState::Up,
                lag: None,
                applied: 0,
                held: VecDeque::new(),
                kept: Vec::new(),
                replica: None,
                publish: false,
            })
            .collect();
        SimCluster {
            start,
            config,
            store,
            members,
            rng,
            now: 0,
            leader: Some(leader),
            election_at: None,
            last_elected: None,
            elections: 0,
            quorum_lost: false,
            quorum: true,
            proposals: Vec::new(),
            watch_owner: BTreeMap::new(),
            ready: VecDeque::new(),
            notes: VecDeque::new(),
            log: VecDeque::new(),
            log_base: 0,
        }
    }

    // ----- inspection ---------------------------------------------------------------------

    /// The shared (quorum) store.
    pub fn store(&self) -> &SimEtcd {
        &self.store
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `m`'s client URL, `http://m0:2379`.
    pub fn endpoint(&self, m: usize) -> String {
        format!("http://{}", self.members[m].authority)
    }

    /// Member `m`'s authority, `m0:2379`.
    pub fn authority(&self, m: usize) -> &str {
        &self.members[m].authority
    }

    /// The member an authority names.
    pub fn member_of(&self, authority: &str) -> Option<usize> {
        self.members.iter().position(|m| m.authority == authority)
    }

    /// Member `m`'s state.
    pub fn state(&self, m: usize) -> MemberState {
        self.members[m].state
    }

    /// Member `m`'s lag, if it is lagging.
    pub fn lag(&self, m: usize) -> Option<Duration> {
        self.members[m].lag.map(|(_, d)| dur(d))
    }

    /// The current leader, if one is elected and up.
    pub fn leader(&self) -> Option<usize> {
        self.leader
            .filter(|&l| self.members[l].state == MemberState::Up)
    }

    /// How many elections happened since the start.
    pub fn elections(&self) -> u64 {
        self.elections
    }

    /// Whether writes commit now: the leader is up, a majority is up, and no cluster-wide
    /// quorum loss is on.
    pub fn has_quorum(&self) -> bool {
        !self.quorum_lost && self.leader().is_some() && self.up_count() >= self.majority()
    }

    /// How many proposals wait for quorum (or for a late commit).
    pub fn pending_proposals(&self) -> usize {
        self.proposals.len()
    }

    /// How many requests member `m` holds: parked watches, answers waiting for its apply,
    /// requests kept while hung.
    pub fn held_by(&self, m: usize) -> usize {
        let member = &self.members[m];
        self.watch_owner.values().filter(|&&o| o == m).count()
            + member.held.len()
            + member.kept.len()
    }

    fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    fn up_count(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::Up)
            .count()
    }

    // ----- requests -----------------------------------------------------------------------

    /// Member-routed request `id` (unique per request) arrives at time `now`. Its answer, if
    /// any, comes out of [`SimCluster::poll`], now or after a later [`SimCluster::advance`].
    pub fn handle(&mut self, id: u64, req: &Request<Vec<u8>>, now: Instant) {
        self.advance(now);
        let t = self.now;
        let member = req
            .uri()
            .authority()
            .and_then(|a| self.member_of(a.as_str()));
        let Some(m) = member else {
            self.ready.push_back((id, Delivery::Refused));
            return;
        };
        match self.members[m].state {
            MemberState::Dead => self.ready.push_back((id, Delivery::Refused)),
            MemberState::Hung => self.members[m].kept.push(Kept {
                id,
                request: clone_request(req),
                cancelled: false,
            }),
            MemberState::Up | MemberState::Isolated => self.serve(m, id, req, t, t),
        }
        self.collect_watches();
    }

    /// The client gave up on request `id` (closed the connection): a parked watch ends, an
    /// answer not yet sent is dropped. A write already on its way may still be applied.
    pub fn cancel(&mut self, id: u64) {
        self.store.cancel(id);
        self.watch_owner.remove(&id);
        for member in &mut self.members {
            member.held.retain(|h| h.id != id);
            for kept in member.kept.iter_mut().filter(|k| k.id == id) {
                kept.cancelled = true;
            }
        }
        for p in self.proposals.iter_mut().filter(|p| p.id == id) {
            p.waiting = false;
        }
        self.ready.retain(|(done, _)| *done != id);
    }

    /// The next answer or connection failure, in order.
    pub fn poll(&mut self) -> Option<(u64, Delivery)> {
        self.ready.pop_front()
    }

    /// The next note about the cluster's inner workings (late commits, dropped proposals),
    /// in order.
    pub fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// When [`SimCluster::advance`] next has something to do (an expiry, an election, a
    /// lagging member's apply, a proposal's timeout or late commit).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.next_due().map(|t| self.at(t))
    }

    /// Runs everything due up to `now`, in time order. Time never goes back (an earlier `now`
    /// counts as the latest seen).
    pub fn advance(&mut self, now: Instant) {
        let target = self.ns(now).max(self.now);
        while let Some(t) = self.next_due().filter(|&t| t <= target) {
            self.step_to(t.max(self.now));
        }
        self.step_to(target);
    }

    // ----- faults -------------------------------------------------------------------------

    /// Kills member `m` (see the module docs). Does nothing to a dead member.
    pub fn kill(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state == MemberState::Dead {
            return;
        }
        self.members[m].state = MemberState::Dead;
        let owned: Vec<u64> = self
            .watch_owner
            .iter()
            .filter(|&(_, &o)| o == m)
            .map(|(&id, _)| id)
            .collect();
        for id in owned {
            self.store.cancel(id);
            self.watch_owner.remove(&id);
            self.ready.push_back((id, Delivery::Reset));
        }
        let member = &mut self.members[m];
        for held in std::mem::take(&mut member.held) {
            self.ready.push_back((held.id, Delivery::Reset));
        }
        for kept in std::mem::take(&mut member.kept) {
            if !kept.cancelled {
                self.ready.push_back((kept.id, Delivery::Reset));
            }
        }
        member.replica = None;
        member.lag = None;
        for p in self.proposals.iter_mut().filter(|p| p.member == m) {
            if std::mem::replace(&mut p.waiting, false) {
                self.ready.push_back((p.id, Delivery::Reset));
            }
        }
        if self.leader == Some(m) {
            self.leader = None;
        }
        self.refresh_quorum();
        self.trim_log();
    }

    /// Restarts a dead member: up, up to date, no watches. Does nothing to a live member.
    pub fn restart(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Dead {
            return;
        }
        let member = &mut self.members[m];
        member.state = MemberState::Up;
        member.applied = self.now;
        member.publish = true;
        self.refresh_quorum();
    }

    /// Stops member `m` (`SIGSTOP`). Only an up member hangs.
    pub fn hang(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Up {
            return;
        }
        self.members[m].state = MemberState::Hung;
        self.refresh_quorum();
    }

    /// Resumes a hung member (`SIGCONT`): it catches up, its watches fire, and the requests
    /// it kept are served.
    pub fn resume(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Hung {
            return;
        }
        self.members[m].state = MemberState::Up;
        self.refresh_quorum();
        self.catch_up(m);
        let t = self.now;
        for kept in std::mem::take(&mut self.members[m].kept) {
            if kept.cancelled {
                let class = self.store.classify(&kept.request);
                if class == Class::Watch || self.rng.next_u64() % 2 == 0 {
                    continue;
                }
                // Served for nothing: the answer has nowhere to go.
                self.note(kept.id, m, NoteKind::ServedForNobody, &kept.request);
                self.serve(m, kept.id, &kept.request, t, t);
                self.cancel(kept.id);
            } else {
                self.serve(m, kept.id, &kept.request, t, t);
            }
            self.collect_watches();
        }
    }

    /// Cuts member `m` off from its peers (clients still reach it). Only an up member.
    pub fn isolate(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Up {
            return;
        }
        self.ensure_replica(m);
        self.members[m].state = MemberState::Isolated;
        self.refresh_quorum();
    }

    /// Reconnects a member cut off from its peers: it catches up at once.
    pub fn rejoin(&mut self, m: usize, now: Instant) {
        self.advance(now);
        if self.members[m].state != MemberState::Isolated {
            return;
        }
        self.members[m].state = MemberState::Up;
        self.refresh_quorum();
        self.catch_up(m);
    }

    /// Member `m` applies entries `lag` late from now on (`None`: catches up at once and stops
    /// lagging). Ignored for a dead member.
    pub fn set_lag(&mut self, m: usize, lag: Option<Duration>, now: Instant) {
        self.advance(now);
        if self.members[m].state == MemberState::Dead {
            return;
        }
        match lag {
            Some(d) => {
                self.ensure_replica(m);
                let t = self.now;
                self.members[m].lag = Some((t, d.as_nanos() as i128));
            }
            None => {
                self.members[m].lag = None;
                if self.members[m].state == MemberState::Up {
                    self.catch_up(m);
                }
            }
        }
    }

    /// Cluster-wide quorum loss (e.g. every peer link down) on or off: every member behaves as
    /// one without quorum.
    pub fn set_quorum_lost(&mut self, lost: bool, now: Instant) {
        self.advance(now);
        self.quorum_lost = lost;
        self.refresh_quorum();
    }

    /// Member `m` ends every watch it holds: with an empty `200` (a clean close), or by
    /// cutting the connection (`cut`: a reset).
    pub fn close_watches(&mut self, m: usize, cut: bool, now: Instant) {
        self.advance(now);
        let owned: Vec<u64> = self
            .watch_owner
            .iter()
            .filter(|&(_, &o)| o == m)
            .map(|(&id, _)| id)
            .collect();
        for id in owned {
            self.watch_owner.remove(&id);
            if let Some(response) = self.store.close_watch(id) {
                let delivery = if cut {
                    Delivery::Reset
                } else {
                    Delivery::Response(response)
                };
                self.ready.push_back((id, delivery));
            }
        }
        let member = &mut self.members[m];
        let mut rest = VecDeque::new();
        for held in std::mem::take(&mut member.held) {
            if !held.watch {
                rest.push_back(held);
                continue;
            }
            let delivery = if cut {
                Delivery::Reset
            } else {
                let index = held
                    .response
                    .headers()
                    .get("X-Etcd-Index")
                    .cloned()
                    .unwrap_or_else(|| http::HeaderValue::from_static("0"));
                let mut r = Response::new(Vec::new());
                *r.status_mut() = http::StatusCode::OK;
                r.headers_mut().insert(
                    "Content-Type",
                    http::HeaderValue::from_static("application/json"),
                );
                r.headers_mut().insert("X-Etcd-Index", index);
                Delivery::Response(r)
            };
            self.ready.push_back((held.id, delivery));
        }
        member.held = rest;
    }

    // ----- internals ----------------------------------------------------------------------

    fn ns(&self, t: Instant) -> i128 {
        t.saturating_duration_since(self.start).as_nanos() as i128
    }

    fn at(&self, t: i128) -> Instant {
        self.start + dur(t)
    }

    /// Serves request `id` at member `m` (up or cut off) at time `t`, parsed at `received`.
    fn serve(&mut self, m: usize, id: u64, req: &Request<Vec<u8>>, t: i128, received: i128) {
        let applied = self.members[m].applied;
        let behind = applied < t;
        if behind {
            let class = self.store.classify(req);
            if class == Class::Read {
                let response = self.stale_read(m, id, req, t);
                self.ready.push_back((id, Delivery::Response(response)));
                return;
            }
        }
        let isolated = self.members[m].state == MemberState::Isolated;
        let opts = ServeOpts {
            received: Some(self.at(received)),
            member_index: behind.then(|| self.store.index_at(self.at(applied))),
            defer_raft: isolated || !self.quorum,
            no_advance: false,
        };
        let before = self.store.index();
        let served = self.store.serve_with(id, req, self.at(t), opts);
        match served {
            Served::Now(response, stamp) => {
                if self.store.index() != before {
                    self.log_write(t, received, req);
                }
                match stamp {
                    Some(stamp) => {
                        let watch = self.store.answered_watch();
                        self.deliver(m, id, response, stamp, watch);
                    }
                    None => self.ready.push_back((id, Delivery::Response(response))),
                }
            }
            Served::Parked => {
                self.watch_owner.insert(id, m);
            }
            Served::Raft => {
                let stall = if isolated {
                    Stall::Kept
                } else if self.quorum_lost {
                    Stall::Appended
                } else {
                    match self.leader.map(|l| self.members[l].state) {
                        Some(MemberState::Up) => Stall::Appended,
                        Some(MemberState::Hung | MemberState::Isolated) => Stall::Kept,
                        Some(MemberState::Dead) | None => Stall::Lost,
                    }
                };
                let fate = if stall == Stall::Lost {
                    self.note(id, m, NoteKind::Dropped, req);
                    Fate::Dropped
                } else {
                    Fate::Undecided
                };
                self.proposals.push(Proposal {
                    id,
                    member: m,
                    request: clone_request(req),
                    received,
                    deadline: received + self.config.raft_timeout.as_nanos() as i128,
                    waiting: true,
                    isolated,
                    stall,
                    fate,
                });
            }
        }
    }

    /// Sends an answer once member `m` has applied what it depends on.
    fn deliver(
        &mut self,
        m: usize,
        id: u64,
        response: Response<Vec<u8>>,
        stamp: EventStamp,
        watch: bool,
    ) {
        let commit = self.ns(stamp.committed);
        let member = &mut self.members[m];
        if member.state == MemberState::Dead {
            self.ready.push_back((id, Delivery::Reset));
        } else if member.applied >= commit && member.state != MemberState::Hung {
            self.ready.push_back((id, Delivery::Response(response)));
        } else {
            member.held.push_back(Held {
                commit,
                id,
                response,
                watch,
            });
        }
    }

    /// Routes the store's completed watches through their members.
    fn collect_watches(&mut self) {
        while let Some((id, response, stamp)) = self.store.poll_watch_event() {
            match self.watch_owner.remove(&id) {
                Some(m) => self.deliver(m, id, response, stamp, true),
                None => self.ready.push_back((id, Delivery::Response(response))),
            }
        }
    }

    fn next_due(&self) -> Option<i128> {
        let mut due: Option<i128> = None;
        let mut consider = |t: i128| due = Some(due.map_or(t, |d: i128| d.min(t)));
        if let Some(t) = self.store.next_expiry() {
            consider(self.ns(t));
        }
        if let Some(t) = self.election_at {
            consider(t);
        }
        for p in &self.proposals {
            if p.waiting {
                consider(p.deadline);
            }
            match p.fate {
                Fate::CommitAt(t) => consider(t),
                Fate::Undecided => consider(p.received + LIMBO_MAX.as_nanos() as i128),
                Fate::Dropped => {}
            }
        }
        for member in &self.members {
            if member.state != MemberState::Up {
                continue;
            }
            if let Some((_, lag)) = member.lag {
                if let Some(first) = member.held.iter().map(|h| h.commit).min() {
                    consider(first + lag);
                }
            }
        }
        due
    }

    /// Everything due at `t` (the caller goes in time order).
    fn step_to(&mut self, t: i128) {
        self.now = self.now.max(t);
        let t = self.now;
        self.store.advance(self.at(t));
        self.collect_watches();
        if self.election_at.is_some_and(|e| e <= t) {
            self.election_at = None;
            if self.leader().is_none() && self.up_count() >= self.majority() {
                let up: Vec<usize> = (0..self.members.len())
                    .filter(|&i| self.members[i].state == MemberState::Up)
                    .collect();
                let pick = up[(self.rng.next_u64() % up.len() as u64) as usize];
                self.leader = Some(pick);
                self.last_elected = Some(t);
                self.elections += 1;
            }
            self.refresh_quorum();
        }
        self.step_proposals(t);
        for m in 0..self.members.len() {
            self.apply_member(m, t);
        }
    }

    fn step_proposals(&mut self, t: i128) {
        let limbo = LIMBO_MAX.as_nanos() as i128;
        let mut i = 0;
        while i < self.proposals.len() {
            if self.proposals[i].waiting && self.proposals[i].deadline <= t {
                self.proposals[i].waiting = false;
                let cause = self.timeout_cause(i);
                let id = self.proposals[i].id;
                self.ready
                    .push_back((id, Delivery::Response(raft_timeout_response(cause))));
            }
            let p = &mut self.proposals[i];
            match p.fate {
                Fate::CommitAt(c) if c <= t => {
                    if self.quorum {
                        let p = self.proposals.remove(i);
                        self.commit_proposal(p, t);
                        continue;
                    }
                    p.fate = Fate::Dropped;
                    let (id, m) = (p.id, p.member);
                    let request = clone_request(&p.request);
                    self.note(id, m, NoteKind::Dropped, &request);
                }
                Fate::Undecided if p.received + limbo <= t => {
                    p.fate = Fate::Dropped;
                    let (id, m) = (p.id, p.member);
                    let request = clone_request(&p.request);
                    self.note(id, m, NoteKind::Dropped, &request);
                }
                _ => {}
            }
            if self.proposals[i].fate == Fate::Dropped && !self.proposals[i].waiting {
                self.proposals.remove(i);
                continue;
            }
            i += 1;
        }
    }

    fn timeout_cause(&self, i: usize) -> &'static str {
        let p = &self.proposals[i];
        let window = 2 * self.config.election_timeout.as_nanos() as i128;
        match self.last_elected {
            Some(e) if p.received > e - window && p.received < e => {
                "etcdserver: request timed out, possibly due to previous leader failure"
            }
            _ if p.isolated => "etcdserver: request timed out, possibly due to connection lost",
            _ => "etcdserver: request timed out",
        }
    }

    fn note(&mut self, id: u64, member: usize, kind: NoteKind, req: &Request<Vec<u8>>) {
        let request = format!(
            "{} {}",
            req.method(),
            req.uri().path_and_query().map_or("", |p| p.as_str())
        );
        self.notes.push_back(Note {
            id,
            member,
            kind,
            request,
        });
    }

    fn commit_proposal(&mut self, p: Proposal, t: i128) {
        let kind = NoteKind::Committed {
            answered: p.waiting,
            received: dur(p.received),
        };
        self.note(p.id, p.member, kind, &p.request);
        let opts = ServeOpts {
            received: Some(self.at(p.received)),
            member_index: None,
            defer_raft: false,
            no_advance: false,
        };
        let before = self.store.index();
        let served = self.store.serve_with(p.id, &p.request, self.at(t), opts);
        if self.store.index() != before {
            self.log_write(t, p.received, &p.request);
        }
        if let Served::Now(response, stamp) = served {
            if p.waiting {
                let stamp = stamp.unwrap_or(EventStamp {
                    index: self.store.index(),
                    committed: self.at(t),
                });
                self.deliver(p.member, p.id, response, stamp, false);
            }
        }
        self.collect_watches();
    }

    /// Brings member `m`'s applied time to `t` as its state and lag allow, releasing the
    /// answers that waited for it.
    fn apply_member(&mut self, m: usize, t: i128) {
        let member = &mut self.members[m];
        let target = match (member.state, member.lag) {
            (MemberState::Up, Some((since, lag))) => since.max(t - lag),
            (MemberState::Up, None) => t,
            (MemberState::Dead, _) => t,
            (MemberState::Hung | MemberState::Isolated, _) => member.applied,
        };
        member.applied = member.applied.max(target);
        if member.state != MemberState::Up || member.held.is_empty() {
            return;
        }
        let applied = member.applied;
        let mut rest = VecDeque::new();
        for held in std::mem::take(&mut member.held) {
            if held.commit <= applied {
                self.ready
                    .push_back((held.id, Delivery::Response(held.response)));
            } else {
                rest.push_back(held);
            }
        }
        self.members[m].held = rest;
    }

    /// Member `m` is up to date again: answers go out, its replica goes.
    fn catch_up(&mut self, m: usize) {
        let t = self.now;
        if self.members[m].lag.is_none() {
            self.members[m].applied = t;
            self.members[m].replica = None;
            self.trim_log();
        }
        self.apply_member(m, t);
    }

    /// Re-evaluates quorum: elections, the store's pause, pending proposals.
    fn refresh_quorum(&mut self) {
        let t = self.now;
        let ok = self.has_quorum();
        if !ok && !self.quorum_lost && self.leader().is_none() {
            if self.up_count() >= self.majority() {
                if self.election_at.is_none() {
                    let e = self.config.election_timeout.as_nanos() as i128;
                    let jitter = (self.rng.next_u64() % (e.max(1) as u64 + 1)) as i128;
                    self.election_at = Some(t + e + jitter);
                }
            } else {
                self.election_at = None;
            }
        }
        if ok {
            self.election_at = None;
        }
        if ok != self.quorum {
            self.store.advance(self.at(t));
            self.collect_watches();
            self.store.set_paused(!ok);
            self.quorum = ok;
            if !self.log_is_off() {
                self.log.push_back(LogEntry::Pause { time: t, on: !ok });
            }
        }
        if ok {
            // Restarted members publish their attributes.
            for m in 0..self.members.len() {
                if self.members[m].publish && self.members[m].state == MemberState::Up {
                    self.members[m].publish = false;
                    self.store.hidden_event(self.at(t));
                    if !self.log_is_off() {
                        self.log.push_back(LogEntry::Hidden { time: t });
                    }
                }
            }
            // Pending proposals learn their fate once their member can reach the leader.
            let late = LATE_COMMIT_MAX.as_nanos() as u64;
            for i in 0..self.proposals.len() {
                let m = self.proposals[i].member;
                let reachable =
                    matches!(self.members[m].state, MemberState::Up | MemberState::Dead);
                if self.proposals[i].fate != Fate::Undecided || !reachable {
                    continue;
                }
                let roll = self.rng.next_u64() % 3;
                self.proposals[i].fate = match (self.proposals[i].stall, roll) {
                    (Stall::Appended, 0 | 1) | (Stall::Kept, 0) => Fate::CommitAt(t),
                    (Stall::Kept, 1) => {
                        Fate::CommitAt(t + (self.rng.next_u64() % (late + 1)) as i128)
                    }
                    _ => {
                        let (id, request) = (
                            self.proposals[i].id,
                            clone_request(&self.proposals[i].request),
                        );
                        self.note(id, m, NoteKind::Dropped, &request);
                        Fate::Dropped
                    }
                };
            }
            self.step_proposals(t);
        }
    }

    fn log_is_off(&self) -> bool {
        self.members.iter().all(|m| m.replica.is_none())
    }

    fn log_write(&mut self, time: i128, received: i128, request: &Request<Vec<u8>>) {
        if !self.log_is_off() {
            self.log.push_back(LogEntry::Write {
                time,
                received,
                request: Box::new(clone_request(request)),
            });
        }
    }

    /// Drops the log entries every replica has replayed.
    fn trim_log(&mut self) {
        let end = self.log_base + self.log.len() as u64;
        let keep_from = self
            .members
            .iter()
            .filter_map(|m| m.replica.as_ref().map(|r| r.next))
            .min()
            .unwrap_or(end);
        while self.log_base < keep_from && self.log.pop_front().is_some() {
            self.log_base += 1;
        }
        self.log_base = self.log_base.max(keep_from.min(end));
    }

    /// Member `m` is falling behind now: a copy of the store serves its plain reads.
    fn ensure_replica(&mut self, m: usize) {
        if self.members[m].replica.is_some() {
            return;
        }
        let next = self.log_base + self.log.len() as u64;
        self.members[m].replica = Some(Replica {
            store: self.store.replica(),
            next,
        });
    }

    /// A plain read at member `m`, which is behind: its replica replays the store's writes up
    /// to what the member has applied and answers at time `t`.
    fn stale_read(
        &mut self,
        m: usize,
        id: u64,
        req: &Request<Vec<u8>>,
        t: i128,
    ) -> Response<Vec<u8>> {
        let applied = self.members[m].applied;
        let (start, log, log_base) = (self.start, &self.log, self.log_base);
        let at = |ns: i128| start + dur(ns);
        let Some(replica) = self.members[m].replica.as_mut() else {
            return match self.store.serve_with(id, req, at(t), ServeOpts::default()) {
                Served::Now(r, _) => r,
                Served::Parked | Served::Raft => Response::new(Vec::new()),
            };
        };
        while let Some(entry) = log.get((replica.next - log_base) as usize) {
            if entry.time() > applied {
                break;
            }
            match entry {
                LogEntry::Write {
                    time,
                    received,
                    request,
                } => {
                    let opts = ServeOpts {
                        received: Some(at(*received)),
                        ..ServeOpts::default()
                    };
                    let _ = replica.store.serve_with(0, request, at(*time), opts);
                }
                LogEntry::Pause { time, on } => {
                    replica.store.advance(at(*time));
                    replica.store.set_paused(*on);
                }
                LogEntry::Hidden { time } => replica.store.hidden_event(at(*time)),
            }
            replica.next += 1;
        }
        replica.store.advance(at(applied));
        let opts = ServeOpts {
            no_advance: true,
            ..ServeOpts::default()
        };
        let response = match replica.store.serve_with(id, req, at(t), opts) {
            Served::Now(r, _) => r,
            Served::Parked | Served::Raft => Response::new(Vec::new()),
        };
        self.trim_log();
        response
    }
}

fn dur(ns: i128) -> Duration {
    Duration::from_nanos(ns.clamp(0, u64::MAX as i128) as u64)
}

fn clone_request(r: &Request<Vec<u8>>) -> Request<Vec<u8>> {
    let mut b = Request::builder()
        .method(r.method().clone())
        .uri(r.uri().clone());
    for (k, v) in r.headers() {
        b = b.header(k, v);
    }
    b.body(r.body().clone()).expect("a copy of a valid request")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::etcd::initial_index;

    const FORM: &str = "application/x-www-form-urlencoded";

    struct T {
        c: SimCluster,
        t0: Instant,
        next: u64,
        done: BTreeMap<u64, Delivery>,
    }

    impl T {
        fn new(members: usize, seed: u64) -> T {
            let t0 = Instant::now();
            T {
                c: SimCluster::new(t0, ClusterConfig::new(members, seed)),
                t0,
                next: 0,
                done: BTreeMap::new(),
            }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
        fn send(&mut self, ms: u64, m: usize, method: &str, pq: &str, body: Option<&str>) -> u64 {
            self.next += 1;
            let mut b = Request::builder()
                .method(method)
                .uri(format!("http://m{m}:2379{pq}"));
            if body.is_some() {
                b = b.header("content-type", FORM);
            }
            let r = b.body(body.unwrap_or("").as_bytes().to_vec()).unwrap();
            let now = self.at(ms);
            self.c.handle(self.next, &r, now);
            self.collect();
            self.next
        }
        fn advance(&mut self, ms: u64) {
            let now = self.at(ms);
            self.c.advance(now);
            self.collect();
        }
        fn collect(&mut self) {
            while let Some((id, d)) = self.c.poll() {
                assert!(self.done.insert(id, d).is_none(), "two answers to {id}");
            }
        }
        /// (status, X-Etcd-Index, body) of a response; panics on anything else.
        fn take(&mut self, id: u64) -> (u16, u64, String) {
            match self.done.remove(&id) {
                Some(Delivery::Response(r)) => (
                    r.status().as_u16(),
                    r.headers()
                        .get("x-etcd-index")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .unwrap_or(0),
                    String::from_utf8(r.body().clone()).unwrap(),
                ),
                other => panic!("request {id}: {other:?}"),
            }
        }
        fn pending(&self, id: u64) -> bool {
            !self.done.contains_key(&id)
        }
    }

    #[test]
    fn routes_by_authority_and_refuses_dead_or_unknown_members() {
        let mut t = T::new(3, 1);
        assert_eq!(t.c.store().index(), initial_index(3));
        let a = t.send(0, 1, "PUT", "/v2/keys/k?prevExist=false", Some("value=a"));
        assert_eq!(t.take(a).0, 201);
        // Every member serves the same store: a quorum read on another member sees the write.
        let r = t.send(1, 2, "GET", "/v2/keys/k?quorum=true", None);
        assert!(t.take(r).2.contains("\"value\":\"a\""));
        t.c.kill(0, t.at(2));
        let r = t.send(3, 0, "GET", "/v2/keys/k?quorum=true", None);
        assert!(matches!(t.done.remove(&r), Some(Delivery::Refused)));
        let r = t.send(3, 7, "GET", "/v2/keys/k?quorum=true", None);
        assert!(matches!(t.done.remove(&r), Some(Delivery::Refused)));
        // A restarted member serves the same store.
        t.c.restart(0, t.at(4));
        let r = t.send(5, 0, "GET", "/v2/keys/k?quorum=true", None);
        assert!(t.take(r).2.contains("\"value\":\"a\""));
    }

    #[test]
    fn a_dead_member_cuts_its_watches_and_a_watch_sees_writes_through_others() {
        let mut t = T::new(3, 2);
        let i = t.c.store().index();
        let leader = t.c.leader().unwrap();
        let (dies, other) = ((leader + 1) % 3, (leader + 2) % 3);
        let w0 = t.send(
            0,
            dies,
            "GET",
            &format!("/v2/keys/k?wait=true&waitIndex={}", i + 1),
            None,
        );
        let w1 = t.send(
            0,
            other,
            "GET",
            &format!("/v2/keys/k?wait=true&waitIndex={}", i + 1),
            None,
        );
        assert!(t.pending(w0) && t.pending(w1));
        t.c.kill(dies, t.at(10));
        t.collect();
        assert!(matches!(t.done.remove(&w0), Some(Delivery::Reset)));
        let p = t.send(20, leader, "PUT", "/v2/keys/k", Some("value=b"));
        assert_eq!(t.take(p).0, 201);
        let (status, _, body) = t.take(w1);
        assert_eq!(status, 200);
        assert!(body.starts_with("{\"action\":\"set\""));
    }

    #[test]
    fn a_hung_member_answers_nothing_then_serves_what_it_kept() {
        let mut t = T::new(3, 3);
        // Hang a follower (the leader's hang would stall writes for an election).
        let follower = (0..3).find(|&m| Some(m) != t.c.leader()).unwrap();
        t.c.hang(follower, t.at(0));
        assert!(t.c.has_quorum());
        let w = t.send(
            10,
            follower,
            "PUT",
            "/v2/keys/k?prevExist=false",
            Some("value=late&ttl=5"),
        );
        let r = t.send(10, follower, "GET", "/v2/keys/k?quorum=true", None);
        t.advance(5_000);
        assert!(t.pending(w) && t.pending(r));
        assert_eq!(t.c.store().get("k"), None);
        // Meanwhile another member's client takes the key; the late write then fails.
        let other = (0..3).find(|&m| m != follower).unwrap();
        let a = t.send(
            6_000,
            other,
            "PUT",
            "/v2/keys/k?prevExist=false",
            Some("value=a&ttl=5"),
        );
        assert_eq!(t.take(a).0, 201);
        t.c.resume(follower, t.at(7_000));
        t.collect();
        assert_eq!(t.take(w).0, 412);
        assert!(t.take(r).2.contains("\"value\":\"a\""));

        // A late write applies when the member resumes, its ttl counting from then.
        let mut t = T::new(3, 3);
        t.c.hang(follower, t.at(0));
        let w = t.send(
            10,
            follower,
            "PUT",
            "/v2/keys/k?prevExist=false",
            Some("value=late&ttl=5"),
        );
        t.c.cancel(w); // the client gives up: a write is still applied (or not: seeded)
        t.c.resume(follower, t.at(9_000));
        t.collect();
        assert!(t.done.is_empty());
    }

    #[test]
    fn a_lagging_member_delivers_late_in_order_and_reads_stale() {
        let mut t = T::new(3, 4);
        let lagging = 1;
        let before = t.c.store().index();
        t.c.set_lag(lagging, Some(Duration::from_millis(800)), t.at(0));
        let w = t.send(
            0,
            lagging,
            "GET",
            &format!("/v2/keys/k?wait=true&waitIndex={}", before + 1),
            None,
        );
        let p = t.send(100, 0, "PUT", "/v2/keys/k", Some("value=1"));
        assert_eq!(t.take(p).0, 201);
        // The event is in the store, the lagging member has not applied it yet.
        let stale = t.send(200, lagging, "GET", "/v2/keys/k", None);
        assert_eq!(t.take(stale).0, 404);
        t.advance(850);
        assert!(t.pending(w));
        assert_eq!(t.c.next_wakeup(), Some(t.at(900)));
        t.advance(900);
        let (status, index, body) = t.take(w);
        assert_eq!((status, index), (200, before));
        assert!(body.contains("\"value\":\"1\""));
        // A write through the lagging member is applied now, answered once it applied it.
        let q = t.send(1_000, lagging, "PUT", "/v2/keys/k", Some("value=2"));
        assert!(t.pending(q));
        assert_eq!(t.c.store().get("k").unwrap().0, "2");
        t.advance(1_800);
        assert_eq!(t.take(q).0, 200);
        // Catching up releases everything at once.
        let r = t.send(2_000, lagging, "PUT", "/v2/keys/k", Some("value=3"));
        t.c.set_lag(lagging, None, t.at(2_100));
        t.collect();
        assert_eq!(t.take(r).0, 200);
        let fresh = t.send(2_200, lagging, "GET", "/v2/keys/k", None);
        assert!(t.take(fresh).2.contains("\"value\":\"3\""));
    }

    #[test]
    fn an_isolated_member_times_out_proposals_and_goes_silent() {
        let mut t = T::new(3, 5);
        let isolated = (0..3).find(|&m| Some(m) != t.c.leader()).unwrap();
        let i = t.c.store().index();
        let w = t.send(
            0,
            isolated,
            "GET",
            &format!("/v2/keys/k?wait=true&waitIndex={}", i + 1),
            None,
        );
        t.c.isolate(isolated, t.at(0));
        assert!(t.c.has_quorum());
        let p = t.send(10, isolated, "PUT", "/v2/keys/k", Some("value=x"));
        let q = t.send(10, isolated, "GET", "/v2/keys/k?quorum=true", None);
        let other = (0..3).find(|&m| m != isolated).unwrap();
        let a = t.send(20, other, "PUT", "/v2/keys/k", Some("value=a"));
        assert_eq!(t.take(a).0, 201);
        let stale = t.send(30, isolated, "GET", "/v2/keys/k", None);
        assert_eq!(t.take(stale).0, 404);
        t.advance(7_009);
        assert!(t.pending(p) && t.pending(w));
        t.advance(7_010);
        for id in [p, q] {
            let (status, _, body) = t.take(id);
            assert_eq!(status, 500);
            assert_eq!(body, "{\"errorCode\":300,\"message\":\"Raft Internal Error\",\"cause\":\"etcdserver: request timed out, possibly due to connection lost\",\"index\":0}\n");
        }
        assert!(t.pending(w), "the watch is silent while cut off");
        t.c.rejoin(isolated, t.at(8_000));
        t.collect();
        assert!(t.take(w).2.contains("\"value\":\"a\""));
    }

    #[test]
    fn leader_failure_stalls_writes_until_an_election() {
        let mut t = T::new(3, 6);
        let leader = t.c.leader().unwrap();
        let follower = (0..3).find(|&m| m != leader).unwrap();
        t.c.hang(leader, t.at(0));
        assert!(!t.c.has_quorum());
        let p = t.send(10, follower, "PUT", "/v2/keys/k", Some("value=x"));
        assert!(t.pending(p));
        let election = t.c.next_wakeup().unwrap();
        assert!(
            election >= t.at(1_000) && election <= t.at(2_000),
            "{election:?}"
        );
        t.c.advance(election);
        t.collect();
        assert!(t.c.has_quorum());
        assert_ne!(t.c.leader(), Some(leader));
        assert_eq!(t.c.elections(), 1);
        let q = t.send(2_100, follower, "PUT", "/v2/keys/j", Some("value=y"));
        assert_eq!(t.take(q).0, 201);
        // The proposal made without a leader: committed then, later, or never (seeded); its
        // client hears within the raft timeout either way.
        t.advance(7_010);
        let (status, _, body) = t.take(p);
        assert!(status == 201 || (status == 500 && body.contains("previous leader failure")));
    }

    #[test]
    fn a_majority_down_loses_quorum_and_stops_expiry() {
        let mut t = T::new(3, 7);
        let a = t.send(
            0,
            0,
            "PUT",
            "/v2/keys/k?prevExist=false",
            Some("value=a&ttl=1"),
        );
        assert_eq!(t.take(a).0, 201);
        let leader = t.c.leader().unwrap();
        let followers: Vec<usize> = (0..3).filter(|&m| m != leader).collect();
        t.c.kill(followers[0], t.at(100));
        assert!(t.c.has_quorum());
        t.c.kill(followers[1], t.at(200));
        assert!(!t.c.has_quorum());
        t.advance(5_000);
        assert!(t.c.store().get("k").is_some(), "no expiry without quorum");
        let r = t.send(5_000, leader, "GET", "/v2/keys/k", None);
        assert_eq!(t.take(r).0, 200, "plain reads are served");
        t.c.restart(followers[0], t.at(6_000));
        t.collect();
        assert!(
            t.c.has_quorum(),
            "the leader is still up: no election needed"
        );
        t.advance(6_500);
        assert!(t.c.store().get("k").is_none());
    }

    #[test]
    fn a_single_member_cluster_elects_itself_after_a_restart() {
        let mut t = T::new(1, 8);
        assert_eq!(t.c.store().index(), 3);
        t.c.kill(0, t.at(0));
        assert!(!t.c.has_quorum());
        t.c.restart(0, t.at(100));
        assert!(!t.c.has_quorum());
        let p = t.send(100, 0, "PUT", "/v2/keys/k", Some("value=x"));
        assert!(t.pending(p));
        let elected = t.c.next_wakeup().unwrap();
        t.c.advance(elected);
        t.collect();
        assert!(t.c.has_quorum());
    }

    #[test]
    fn late_commit_counts_the_ttl_from_arrival() {
        // Find a seed whose pending proposal commits at once when quorum is back.
        for seed in 0..50 {
            let mut t = T::new(1, seed);
            t.c.set_quorum_lost(true, t.at(0));
            let p = t.send(0, 0, "PUT", "/v2/keys/k", Some("value=x&ttl=2"));
            t.c.set_quorum_lost(false, t.at(1_500));
            t.collect();
            if t.pending(p) {
                continue;
            }
            assert_eq!(t.take(p).0, 201);
            // Received at 0 with ttl 2: expires at the 2 s tick, not 1.5 s + 2 s.
            t.advance(2_000);
            assert_eq!(t.c.store().get("k"), None);
            return;
        }
        panic!("no seed committed at once");
    }

    #[test]
    fn same_seed_same_cluster() {
        let script = |seed: u64| {
            let mut t = T::new(3, seed);
            let mut out = Vec::new();
            t.c.set_quorum_lost(true, t.at(0));
            for i in 0..20 {
                t.send(
                    i * 10,
                    (i % 3) as usize,
                    "PUT",
                    "/v2/keys/k",
                    Some("value=v&ttl=3"),
                );
            }
            t.c.set_quorum_lost(false, t.at(1_000));
            t.advance(20_000);
            while let Some(n) = t.c.poll_note() {
                out.push(format!("{n:?}"));
            }
            out.push(format!("{:?}", t.c.store().get("k")));
            out
        };
        assert_eq!(script(9), script(9));
    }

    #[test]
    fn doc_example_runs() {
        fn demo(t0: Instant) {
            let mut cluster = SimCluster::new(t0, ClusterConfig::new(3, 7));
            let put = |member: &str| {
                http::Request::put(format!("http://{member}/v2/keys/lock?prevExist=false"))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(b"value=a&ttl=5".to_vec())
                    .unwrap()
            };
            let leader = cluster.leader().unwrap();
            let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
            // A dead member refuses connections; the other two keep a quorum.
            cluster.kill(a, t0);
            cluster.handle(1, &put(cluster.authority(a)), t0);
            assert!(matches!(cluster.poll(), Some((1, Delivery::Refused))));
            cluster.handle(2, &put(cluster.authority(leader)), t0);
            let Some((2, Delivery::Response(r))) = cluster.poll() else {
                panic!()
            };
            assert_eq!(r.status(), 201);
            // A hung member keeps the request; it is served when the member resumes.
            cluster.restart(a, t0);
            cluster.hang(b, t0);
            cluster.handle(3, &put(cluster.authority(b)), t0);
            assert!(cluster.poll().is_none());
            cluster.resume(b, t0 + Duration::from_secs(1));
            let Some((3, Delivery::Response(r))) = cluster.poll() else {
                panic!()
            };
            assert_eq!(r.status(), 412); // the key exists
        }
        demo(Instant::now());
    }
}
