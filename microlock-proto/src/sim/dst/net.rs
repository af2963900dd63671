//! Requests and answers between the clients' machines and the cluster, through the faulty
//! network. A streamed answer (a v3 watch) travels as its head, then its pieces, in order:
//! each arrives after a latency of its own, never before the piece sent before it.

use super::*;
use crate::sim::cluster::{Delivery, NoteKind};
use crate::{Event, LostReason};

impl World {
    /// Sends the cluster's answers on their way, schedules its next wake-up, traces quorum and
    /// leader changes.
    pub(super) fn after_cluster(&mut self) {
        while let Some(note) = self.cluster.poll_note() {
            let m = note.member;
            let line = match note.kind {
                NoteKind::Committed { answered, received } => format!(
                    "m{m}: a proposal that waited for quorum commits: {} (received {}{})",
                    note.request,
                    offset(received),
                    if answered { "" } else { ", its client gone" }
                ),
                NoteKind::Dropped => format!("m{m}: a proposal is dropped: {}", note.request),
                NoteKind::ServedForNobody => {
                    format!("m{m}: serves a kept request for nobody: {}", note.request)
                }
                NoteKind::StreamsCut { streams } => {
                    format!("m{m}: knows no leader: ends its {streams} watch stream(s)")
                }
            };
            self.trace(line);
        }
        while let Some((global, delivery)) = self.cluster.poll() {
            let last = delivery.is_last();
            let route = if last {
                self.routes.remove(&global)
            } else {
                self.routes.get(&global).copied()
            };
            let Some(route) = route else {
                continue; // cancelled
            };
            if route.duplicate {
                if !last {
                    // Nobody reads a duplicate's stream: its connection closes.
                    self.routes.remove(&global);
                    self.cluster.cancel(global);
                }
                continue;
            }
            let reply = match delivery {
                Delivery::Response(r) => Net::Response(r),
                Delivery::Head(head) => Net::Head(head),
                Delivery::Chunk(chunk) => Net::Chunk(chunk),
                Delivery::End => Net::End,
                Delivery::Refused => Net::Refused("connection refused"),
                Delivery::Reset => Net::Reset("connection reset"),
            };
            self.reply(global, route, reply);
        }
        if let Some(t) = self.cluster.next_wakeup() {
            let at = t.saturating_duration_since(self.base).max(self.now);
            if self.wake_at.map_or(true, |w| at < w) {
                self.wake_at = Some(at);
                self.at(at, Ev::ClusterWake { at });
            }
        }
        let quorum = self.cluster.has_quorum();
        if quorum != self.had_quorum {
            self.had_quorum = quorum;
            self.trace(if quorum {
                "cluster: quorum back".into()
            } else {
                "cluster: no quorum".into()
            });
        }
        if self.cluster.elections() != self.elections {
            self.elections = self.cluster.elections();
            let leader = self
                .cluster
                .leader()
                .map_or("?".into(), |l| format!("m{l}"));
            self.trace(format!("cluster: {leader} elected leader"));
        }
    }

    /// Sends a reply back over the network (unless lost).
    pub(super) fn reply(&mut self, global: u64, route: Route, reply: Net) {
        let client = route.client;
        let piece = matches!(reply, Net::Chunk(_) | Net::End)
            || matches!(reply, Net::Reset(_) if self.streams.contains_key(&global));
        let last = !matches!(reply, Net::Head(_) | Net::Chunk(_));
        if route.reply_lost {
            // A stream is lost whole: told once, at its head.
            if !piece {
                self.trace(format!("net: reply to c{client} r{} lost", route.rid));
                let c = &mut self.clients[client];
                if c.incarnation == route.incarnation {
                    c.hindered = c.hindered.max(self.now);
                }
            }
            return;
        }
        let mut at = self.now + self.latency();
        if let Some(&before) = self.streams.get(&global) {
            at = at.max(before);
        }
        if last {
            self.streams.remove(&global);
        } else {
            self.streams.insert(global, at);
        }
        self.at(
            at,
            Ev::AtClient {
                client,
                incarnation: route.incarnation,
                rid: route.rid,
                reply,
            },
        );
    }

    /// Carries out what a client's machine asks, and reacts to its completions and events.
    pub(super) fn drain(&mut self, client: usize) {
        // What the machine logged for the input just given (replay only; not hashed, so a
        // replay's checks are the same as a run's).
        if let (Some(logs), Some(full)) = (self.logs.as_ref(), self.full.as_mut()) {
            for line in logs.take() {
                full.push((self.now, format!("c{client} {line}")));
            }
        }
        let incarnation = self.clients[client].incarnation;
        while let Some(rid) = self.clients[client].lock.poll_cancel() {
            if let Some(out) = self.clients[client].out.remove(&rid.as_raw()) {
                self.cluster.cancel(out.global);
                self.routes.remove(&out.global);
            }
        }
        while let Some((rid, request)) = self.clients[client].lock.poll_request() {
            self.next_global += 1;
            let global = self.next_global;
            let member = request
                .uri()
                .authority()
                .and_then(|a| self.cluster.member_of(a.as_str()));
            let dialect::Sent {
                what, watch, acts, ..
            } = dialect::sent(self.p.protocol, &request, false);
            if acts {
                self.clients[client].wrote = self.now;
            }
            let sent = self.now;
            self.clients[client].out.insert(
                rid.as_raw(),
                Out {
                    global,
                    member,
                    watch,
                    what,
                    sent,
                },
            );
            self.send(client, incarnation, rid.as_raw(), global, request);
        }
        while let Some(done) = self.clients[client].lock.poll_completion() {
            self.completed(client, done);
        }
        while let Some(event) = self.clients[client].lock.poll_event() {
            self.trace(format!("c{client} event {event:?}"));
            if let Event::Lost { token, reason } = event {
                let now = self.local(client, self.now);
                let valid = self.clients[client].valid_until.is_some_and(|v| now < v);
                if valid && matches!(reason, LostReason::NotOwned | LostReason::Superseded) {
                    self.violation(
                        'i',
                        format!("c{client} lost token {token} ({reason:?}) while it was valid"),
                    );
                }
                if matches!(self.clients[client].doing, Doing::Holding { .. }) {
                    self.clients[client].doing = Doing::Idle;
                    let next = self.now
                        + self.rand_dur(Duration::from_millis(10), Duration::from_millis(500));
                    self.at(
                        next,
                        Ev::Act {
                            client,
                            incarnation,
                        },
                    );
                }
            }
        }
        let fence = self.clients[client].lock.fence();
        self.clients[client].valid_until = fence.map(|f| f.valid_until());
        // Re-arm the machine's timer.
        self.clients[client].timer_generation += 1;
        if let Some(at) = self.clients[client].lock.poll_timeout() {
            let t = self.true_time(client, at).max(self.now);
            let generation = self.clients[client].timer_generation;
            self.at(t, Ev::Timer { client, generation });
        }
    }

    pub(super) fn send(
        &mut self,
        client: usize,
        incarnation: u32,
        rid: u64,
        global: u64,
        request: Request<Vec<u8>>,
    ) {
        let cut_off = self.clients[client]
            .cut_off_until
            .is_some_and(|u| u > self.now);
        if cut_off {
            // Half the time the connection is refused at once; otherwise it is a black hole.
            let refused = self.rng.next_u64() % 2 == 0;
            if refused {
                let at = self.now + self.latency();
                self.at(
                    at,
                    Ev::AtClient {
                        client,
                        incarnation,
                        rid,
                        reply: Net::Refused("network unreachable"),
                    },
                );
            }
            self.trace(format!(
                "net: c{client} r{rid} cut off ({})",
                if refused { "refused" } else { "black hole" }
            ));
            return;
        }
        let faulty = self.faulty();
        if faulty && self.chance(self.p.request_loss) {
            self.trace(format!("net: c{client} r{rid} request lost"));
            let c = &mut self.clients[client];
            c.hindered = c.hindered.max(self.now);
            return;
        }
        let reply_lost = faulty && self.chance(self.p.reply_loss);
        let duplicate = faulty && self.chance(self.p.duplication);
        let at = self.now + self.latency();
        if duplicate {
            if request.method() != http::Method::GET {
                if let Doing::Releasing { copied, .. } = &mut self.clients[client].doing {
                    *copied = true;
                }
            }
            self.next_global += 1;
            let dup_global = self.next_global;
            let copy = clone_request(&request);
            let later = at + self.latency();
            // The duplicate's reply goes nowhere (the client took the first).
            self.routes.insert(
                dup_global,
                Route {
                    client,
                    incarnation,
                    rid,
                    reply_lost: true,
                    duplicate: true,
                },
            );
            self.at(
                later,
                Ev::AtEtcd {
                    global: dup_global,
                    request: copy,
                },
            );
        }
        self.routes.insert(
            global,
            Route {
                client,
                incarnation,
                rid,
                reply_lost,
                duplicate: false,
            },
        );
        self.at(at, Ev::AtEtcd { global, request });
    }
}
