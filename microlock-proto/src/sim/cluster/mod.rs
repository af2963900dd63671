//! A simulated etcd cluster of N members sharing one linearizable store — etcd's v2 keys API
//! ([`SimEtcd`]) or its v3 JSON gateway ([`SimEtcdV3`]), chosen by
//! [`ClusterConfig::protocol`] — with the faults of single members: death, `SIGSTOP`-like
//! hangs, restarts, lagging followers, members cut off from their peers, and the loss of
//! quorum that follows when a majority fails.
//!
//! [`SimCluster`] routes each request by its URI's authority (`host:port`) to a member
//! (`m0:2379`, `m1:2379`, … by default). The members share the quorum store: what a healthy,
//! up-to-date member answers is exactly what the store answers. A member's faults change
//! *when* and *whether* it answers, and what it sees of the store. The fault, quorum and
//! network machinery is the same for both protocols; only the store behind it differs (what
//! a request is — a raft proposal, a plain read, a watch — how it is served, and etcd's error
//! answers in each dialect):
//!
//! | member state | writes, linearizable reads (raft) | watches | plain reads |
//! |---|---|---|---|
//! | up, quorum | applied to the store now, answered once this member has applied them | from the store | the store |
//! | up, lagging by `d` | applied now, answered `d` later | events delivered `d` late, in order | the store as of `d` ago (v2) |
//! | up, no quorum | pending: an error after the raft timeout, may still commit later | silent (nothing commits) | the store |
//! | cut off from its peers | pending (as without quorum) | silent until it rejoins | frozen at the cut (v2) |
//! | hung (`SIGSTOP`) | no answer; processed when it resumes | frozen; fire when it resumes | no answer |
//! | dead | connection refused | cut (connection reset) when it dies | connection refused |
//!
//! On v3, a member that *knows no leader* (below) refuses at once every request carrying the
//! gRPC metadata `hasleader=true` (the header `Grpc-Metadata-hasleader: true` that the
//! machine always sends), and ends its watch streams a few seconds later.
//!
//! # What is modelled
//! - **Routing**: by `Uri::authority`; an unknown authority is a refused connection (as a name
//!   that does not resolve or a closed port is for a real client).
//! - **Leader and quorum**: one member is the leader. Quorum holds while the leader is up (not
//!   dead, hung or cut off), a majority of members is up, and no cluster-wide quorum loss
//!   ([`SimCluster::set_quorum_lost`]) is on. When the leader fails, a new leader among the up
//!   members is elected after 1–2 election timeouts (if a majority is up); a leader that comes
//!   back before that stays leader (a short `SIGSTOP` of the leader stalls the cluster, nothing
//!   more). A dead leader loses leadership at once. While quorum is lost the store is paused:
//!   no key expires (v2 TTLs, v3 leases).
//! - **A member's view of the leader** (what `hasleader` checks, v3): a member that is up and
//!   part of a quorum knows the leader. One that loses it (quorum lost, its leader failed, or
//!   it is cut off from its peers) goes on believing in the old leader for one election
//!   timeout (a follower campaigns only after an election timeout without heartbeats; a leader
//!   without a majority steps down after one, etcd's `CheckQuorum`), then knows none until
//!   quorum holds for it again ([`SimCluster::knows_leader`]).
//! - **Proposals without quorum** (also through a member cut off from its peers): the client
//!   gets etcd's timeout answer after the raft request timeout (7 s: etcd's 5 s + 2 × election
//!   timeout), unless the proposal commits before: then the client gets the answer when its
//!   member has applied it.
//!   - v2: `500 {"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request
//!     timed out…"}` (etcd's v2 handler ignores a dropped proposal and waits for the timeout),
//!     with etcd's cause: `…, possibly due to previous leader failure` when a leader was
//!     elected within two election timeouts after the request arrived, `…, possibly due to
//!     connection lost` through a cut-off member, else plain.
//!   - v3 (what etcd 3.4/3.5 answered through the gateway after 7 s without a leader): a range
//!     or a txn `503` code 14 with the same causes; a put, grant or revoke `500` code 2
//!     `context deadline exceeded`; a keepalive `503` with the stream error `etcdserver: no
//!     leader`; a time-to-live `503 etcdserver: no leader`. With `hasleader`, a member that
//!     knows no leader refuses at once with `503 "etcdserver: no leader"` (a watch or keepalive
//!     with the stream error shape) — the request was certainly not applied.
//!
//!   What becomes of a pending proposal depends on why it stalled (seeded):
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
//!   A proposal pending longer than [`LIMBO_MAX`] is dropped. A v2 `ttl` counts from the
//!   request's arrival at the member, as in etcd (a late commit can create a key already
//!   expired, or refresh a key to an expiry in the past); a v3 lease granted or kept alive
//!   late counts from its commit (the leader's lessor applies it).
//! - **Leases and leader changes** (v3): leases expire only on the leader's lessor. Each
//!   election, and quorum coming back after a loss of at least an election timeout (the leader
//!   stepped down meanwhile: a new term), promotes the leader's lessor: every lease's deadline
//!   becomes now + election timeout + its TTL ([`SimEtcdV3::promote_leases`]).
//! - **Restarts**: a restarted member publishes its attributes through raft once quorum
//!   allows: on v2 one hidden store event (`X-Etcd-Index` + 1, seen by no watch), as etcd
//!   does; on v3 nothing visible (the mvcc revision does not move).
//! - **Hung members** (`SIGSTOP`): requests get no answer; the kernel keeps them. On resume
//!   the member catches up with the store, its parked watches fire (its streams deliver what
//!   they held), and the kept requests are served in arrival order — late writes included (a
//!   `ttl` then counts from the resume). A kept request whose client gave up meanwhile is still
//!   served if it is a write or a linearizable read (seeded: half of them; etcd's handlers do
//!   not notice a closed connection), and dropped if it is a watch.
//! - **Dead members**: connections are refused; at death every request the member holds
//!   (parked watches, open streams, answers not yet sent, kept requests, pending proposals)
//!   ends with a reset connection (outcome unknown to the client). A restart brings the member
//!   back up to date with no watches.
//! - **Lag**: from [`SimCluster::set_lag`] on, the member applies the store's entries `d`
//!   late (after a freeze of `d` at the start): its watches fire `d` after the event (a v3
//!   stream's messages too, in order), answers to proposals it served go out `d` after they
//!   were applied, a v2 watch reports the member's applied index in `X-Etcd-Index`, and a v2
//!   plain read sees the store as of `d` ago. Ending the lag lets it catch up at once.
//! - **Cut off from peers** ([`SimCluster::isolate`]): the member's applied state is frozen at
//!   the cut; clients can still reach it. If it was the leader the others elect a new one.
//! - **Plain reads of a behind member** (v2, lagging or cut off) are served by a replica: a
//!   copy of the store taken when the member fell behind, replaying the store's writes up to
//!   the member's applied time (built lazily, when such a read arrives).
//! - **Watches** (v2 long polls, v3 streams): [`SimCluster::close_watches`] makes one member
//!   end them — a v2 long poll with an empty `200`, a v3 stream with the error etcd writes when
//!   it shuts down (code 14, `transport is closing` on 3.4, `error reading from server: EOF` on
//!   3.5) and the end of its body — or cut them (reset). A v3 stream is one response: its head
//!   ([`Delivery::Head`]) as soon as the watch is created, then one [`Delivery::Chunk`] per
//!   message (`{"result":…}\n`), as long as it lasts. A member that knows no leader ends its
//!   streams (etcd's `monitorLeader`: after three checks, one per election timeout, without a
//!   leader) 4–5 election timeouts after it lost the leader, with the stream error `etcdserver:
//!   no leader`; a real etcd measured 4–5 s after its peers were stopped.
//!
//! # Deviations from real etcd
//! - All members share one clock (no skew between members).
//! - Forwarding a proposal to the leader takes no time; a follower's answer waits only for its
//!   own apply (its lag). The leader's identity only matters for elections (and, on v3, for
//!   the lessor's promotions).
//! - A member cut off from its peers in real etcd may commit a few entries before noticing, or
//!   (as the old leader) lose entries it appended; the model decides each pending proposal's
//!   fate at random as above.
//! - A leader that lost its majority keeps leading in the model (etcd's leader steps down after
//!   an election timeout and one is elected again when the majority is back); only the v3
//!   lessor's promotion marks the new term.
//! - A v3 keepalive is a proposal here (a real one is served by the leader's lessor without
//!   raft; a leader that has not yet noticed the lost quorum still renews).
//! - A watch on a lagging member is registered in the shared store and its answer held until
//!   the member has applied the event: the history window (v2 `401 history cleared`) is the
//!   store's, not the member's; a v3 stream's `created` message waits for the member to have
//!   applied the store's current revision.
//! - v3 serializable reads (which the machine never sends) on a behind member are served from
//!   the quorum store.
//! - A member's restart takes no time beyond what the fault schedule says, and the restarted
//!   member is at once up to date; a restarted single-member cluster elects itself after the
//!   usual election delay.
//! - Elections happen 1–2 election timeouts after the leader fails, with no split votes.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use http::{Request, Response};

use crate::rng::Rng;
use crate::sim::etcd::{Class, EtcdVersion, EventStamp, ServeOpts, SimEtcd};
use crate::sim::etcd_v3::SimEtcdV3;
use crate::Protocol;

mod backend;
mod faults;
mod proposals;
mod quorum;
mod replica;
mod v3;

use backend::{Answer, Backend};
use proposals::Proposal;
use replica::{LogEntry, Replica};

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
    /// Which API the members serve: the v2 keys API ([`SimEtcd`]) or the v3 JSON gateway
    /// ([`SimEtcdV3`]).
    pub protocol: Protocol,
    /// The seed of the cluster's own randomness (elections, fates of pending proposals).
    pub seed: u64,
    /// The first leader (`None`: chosen with the seed), e.g. to mirror a real cluster.
    pub leader: Option<usize>,
    /// A deliberately wrong store (`None`: etcd as it is), to show that a simulation's checkers
    /// catch what it breaks.
    pub planted_bug: Option<PlantedBug>,
}

/// A deliberate deviation from etcd ([`ClusterConfig::planted_bug`]): a simulation whose
/// checkers are sound must report a violation when it is planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlantedBug {
    /// v3: the lessor expires every lease after a third of its TTL while its answers give the
    /// whole TTL, so that a client believes its lease (and its hold) lives long after etcd
    /// revoked it and gave the lock to the next in line.
    ShortLivedLeases,
}

impl ClusterConfig {
    /// `members` members named `m0:2379`, `m1:2379`, …, etcd's default timeouts, serving the
    /// v2 keys API.
    pub fn new(members: usize, seed: u64) -> ClusterConfig {
        let election_timeout = Duration::from_secs(1);
        ClusterConfig {
            authorities: (0..members.max(1)).map(|i| format!("m{i}:2379")).collect(),
            election_timeout,
            raft_timeout: Duration::from_secs(5) + election_timeout * 2,
            version: EtcdVersion::default(),
            protocol: Protocol::V2,
            seed,
            leader: None,
            planted_bug: None,
        }
    }

    /// The same cluster serving `protocol`.
    pub fn with_protocol(mut self, protocol: Protocol) -> ClusterConfig {
        self.protocol = protocol;
        self
    }
}

/// What became of a request: the member's answer (whole, or a stream in pieces), or a
/// connection failure.
#[derive(Debug)]
pub enum Delivery {
    /// The member's HTTP response, whole.
    Response(Response<Vec<u8>>),
    /// The head of a streamed response (a v3 watch): its body follows in [`Delivery::Chunk`]s,
    /// then [`Delivery::End`] or [`Delivery::Reset`].
    Head(http::response::Parts),
    /// The next piece of a streamed response's body (a v3 watch: one message, one line).
    Chunk(Vec<u8>),
    /// A streamed response's body ended.
    End,
    /// The connection was refused (dead member, unknown authority): the request provably never
    /// reached etcd.
    Refused,
    /// The connection broke after the request was sent (the member died, or cut a watch): the
    /// outcome is unknown.
    Reset,
}

impl Delivery {
    /// Whether nothing more comes for the request after this.
    pub fn is_last(&self) -> bool {
        !matches!(self, Delivery::Head(_) | Delivery::Chunk(_))
    }
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
    /// A member that knows no leader ended its watch streams (v3, `hasleader`).
    StreamsCut {
        /// How many.
        streams: usize,
    },
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
    /// Answers (and stream pieces) waiting for this member to apply the entry they depend on.
    held: VecDeque<Held>,
    /// Requests that arrived while hung, in arrival order.
    kept: Vec<Kept>,
    /// A copy of the store for plain reads while behind (v2).
    replica: Option<Replica>,
    /// Restarted: publishes its attributes (a hidden store event) once quorum allows.
    publish: bool,
    /// Since when (ns) this member has had no contact with a leader holding a quorum: it
    /// knows no leader one election timeout later.
    lost_leader: Option<i128>,
    /// When it ends its streams for want of a leader (v3).
    cut_streams_at: Option<i128>,
}

#[derive(Debug)]
struct Held {
    /// When the entry this answer waits for was applied to the store (ns).
    commit: i128,
    id: u64,
    delivery: Delivery,
    /// A watch's answer or stream piece (a closing member ends it without an event).
    watch: bool,
}

#[derive(Debug)]
struct Kept {
    id: u64,
    request: Request<Vec<u8>>,
    /// The client gave up (closed the connection).
    cancelled: bool,
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
    store: Backend,
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
    /// Since when quorum has been lost (while it is).
    quorum_lost_since: Option<i128>,
    proposals: Vec<Proposal>,
    /// Parked watches and open streams: id → member.
    watch_owner: BTreeMap<u64, usize>,
    ready: VecDeque<(u64, Delivery)>,
    notes: VecDeque<Note>,
    log: VecDeque<LogEntry>,
    /// The absolute position of `log[0]`.
    log_base: u64,
}

impl SimCluster {
    /// A fresh cluster whose time zero is `start`: every member up and up to date, a leader
    /// elected (chosen with the seed), the store fresh (v2: at a fresh cluster's index,
    /// [`initial_index`](crate::sim::etcd::initial_index); v3: at revision 1).
    pub fn new(start: Instant, config: ClusterConfig) -> SimCluster {
        let n = config.authorities.len().max(1);
        let mut rng = Rng::new(config.seed ^ 0xc105_7e55);
        let seeded = (rng.next_u64() % n as u64) as usize;
        let leader = config.leader.filter(|&l| l < n).unwrap_or(seeded);
        let store = match config.protocol {
            Protocol::V3 => {
                Backend::V3(v3::V3Store::new(start, config.version, config.planted_bug))
            }
            _ => Backend::V2(SimEtcd::new_cluster(start, n).with_version(config.version)),
        };
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
                lost_leader: None,
                cut_streams_at: None,
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
            quorum_lost_since: None,
            proposals: Vec::new(),
            watch_owner: BTreeMap::new(),
            ready: VecDeque::new(),
            notes: VecDeque::new(),
            log: VecDeque::new(),
            log_base: 0,
        }
    }

    // ----- inspection ---------------------------------------------------------------------

    /// The API the members serve.
    pub fn protocol(&self) -> Protocol {
        self.config.protocol
    }

    /// The shared (quorum) v2 store, on a v2 cluster.
    pub fn store_v2(&self) -> Option<&SimEtcd> {
        match &self.store {
            Backend::V2(store) => Some(store),
            Backend::V3(_) => None,
        }
    }

    /// The shared (quorum) v3 store, on a v3 cluster.
    pub fn store_v3(&self) -> Option<&SimEtcdV3> {
        match &self.store {
            Backend::V2(_) => None,
            Backend::V3(store) => Some(store.etcd()),
        }
    }

    /// The store's position: the v2 `X-Etcd-Index`, or the v3 revision. It grows with every
    /// change a client can see.
    pub fn index(&self) -> u64 {
        self.store.index()
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

    /// Whether member `m` believes it has a leader now (what etcd's `hasleader` check asks):
    /// see the module docs.
    pub fn knows_leader(&self, m: usize) -> bool {
        self.knows_leader_at(m, self.now)
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

    /// How many requests member `m` holds: parked watches and open streams, answers waiting
    /// for its apply, requests kept while hung.
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

    /// The client gave up on request `id` (closed the connection): a parked watch or an open
    /// stream ends, an answer not yet sent is dropped. A write already on its way may still
    /// be applied.
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

    /// The next answer, stream piece or connection failure, in order.
    pub fn poll(&mut self) -> Option<(u64, Delivery)> {
        self.ready.pop_front()
    }

    /// The next note about the cluster's inner workings (late commits, dropped proposals),
    /// in order.
    pub fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// When [`SimCluster::advance`] next has something to do (an expiry, an election, a
    /// lagging member's apply, a proposal's timeout or late commit, a member ending its
    /// streams).
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

    // ----- internals ----------------------------------------------------------------------

    fn ns(&self, t: Instant) -> i128 {
        t.saturating_duration_since(self.start).as_nanos() as i128
    }

    fn at(&self, t: i128) -> Instant {
        self.start + dur(t)
    }

    /// Serves request `id` at member `m` (up or cut off) at time `t`, parsed at `received`.
    fn serve(&mut self, m: usize, id: u64, req: &Request<Vec<u8>>, t: i128, received: i128) {
        if !self.knows_leader_at(m, t) {
            // v3 `hasleader`: refused before anything is done.
            if let Some(response) = self.store.no_leader_response(req) {
                self.ready.push_back((id, Delivery::Response(response)));
                return;
            }
        }
        let applied = self.members[m].applied;
        let behind = applied < t;
        if behind && self.store.classify(req) == Class::Read {
            if let Some(response) = self.stale_read(m, id, req, t) {
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
        let served = self.store.serve(id, req, self.at(t), opts);
        match served {
            Answer::Now(response, stamp) => {
                if self.store.index() != before {
                    self.log_write(t, received, req);
                }
                match stamp {
                    Some(stamp) => {
                        let watch = self.store.answered_watch();
                        self.deliver(m, id, Delivery::Response(response), stamp, watch);
                    }
                    None => self.ready.push_back((id, Delivery::Response(response))),
                }
            }
            Answer::Parked => {
                self.watch_owner.insert(id, m);
            }
            Answer::Opened(head) => {
                self.watch_owner.insert(id, m);
                self.ready.push_back((id, Delivery::Head(head)));
            }
            Answer::Raft => self.propose(m, id, req, received, isolated),
        }
    }

    /// Sends an answer (or a stream piece) once member `m` has applied what it depends on.
    fn deliver(&mut self, m: usize, id: u64, delivery: Delivery, stamp: EventStamp, watch: bool) {
        let commit = self.ns(stamp.committed);
        let member = &mut self.members[m];
        if member.state == MemberState::Dead {
            self.ready.push_back((id, Delivery::Reset));
        } else if member.applied >= commit
            && member.state != MemberState::Hung
            && !member.held.iter().any(|h| h.id == id)
        {
            self.ready.push_back((id, delivery));
        } else {
            member.held.push_back(Held {
                commit,
                id,
                delivery,
                watch,
            });
        }
    }

    /// Routes the store's completed watches and stream pieces through their members.
    fn collect_watches(&mut self) {
        while let Some((id, delivery, stamp)) = self.store.poll_watch_event() {
            let last = delivery.is_last();
            let owner = if last {
                self.watch_owner.remove(&id)
            } else {
                self.watch_owner.get(&id).copied()
            };
            match owner {
                Some(m) => self.deliver(m, id, delivery, stamp, true),
                None => self.ready.push_back((id, delivery)),
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
        self.proposals_due(&mut consider);
        for (m, member) in self.members.iter().enumerate() {
            // A hung member does nothing (its streams end, if still due, once it resumes).
            let running = matches!(member.state, MemberState::Up | MemberState::Isolated);
            if let Some(cut) = member.cut_streams_at.filter(|_| running) {
                if self.watch_owner.values().any(|&o| o == m) {
                    consider(cut);
                }
            }
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
        self.step_election(t);
        self.step_proposals(t);
        for m in 0..self.members.len() {
            self.apply_member(m, t);
        }
        self.step_stream_cuts(t);
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
            // A stream's pieces go in order: one held back holds back those after it.
            if held.commit <= applied && !rest.iter().any(|r: &Held| r.id == held.id) {
                self.ready.push_back((held.id, held.delivery));
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
mod tests;
#[cfg(test)]
mod tests_v3;
