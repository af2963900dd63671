//! Events on etcd v3: a read of every key of the lock (`NAME/…`, by create revision), then one
//! prefix watch, from the read's revision, whose messages arrive as a stream. The holder is the
//! key with the lowest create revision; an event is emitted when it changes:
//! [`Event::Unlocked`] when it goes (v3 does not tell an expiry from a release: `expired` is
//! always `false`), [`Event::Locked`] when another key becomes the lowest.

use std::time::Instant;

use super::{Phase, Resume, Seen};
use crate::event::{Event, LostReason};
use crate::lock::{Lock, RequestId};
use crate::wire::v3::{self as wire, EventKind, Kv, WatchMessage};
use crate::Error;

impl Lock {
    /// Reads every key of the lock (the events' starting state).
    pub(super) fn v3_events_read(&mut self, now: Instant) -> RequestId {
        let prefix = self.prefix();
        self.send(self.pick(now), |e, _| wire::keys(e, &prefix))
    }

    /// Watches every key of the lock from `revision`, with the deleted keys' last values.
    pub(super) fn v3_events_watch(&mut self, member: usize, revision: u64) -> RequestId {
        let prefix = self.prefix();
        let end = wire::range_end(&prefix);
        self.send(member, |e, _| {
            wire::watch(e, &prefix, Some(&end), revision as i64, true)
        })
    }

    /// A liveness probe of the watch's member: a linearizable read of the holder there.
    pub(super) fn v3_events_probe(&mut self, member: usize) -> RequestId {
        let prefix = self.prefix();
        self.send(member, |e, _| wire::owner(e, &prefix))
    }

    /// An answer for the events' watch: the read, a watch that ended, or a probe.
    pub(crate) fn on_v3_events_reply(
        &mut self,
        id: RequestId,
        response: Result<&http::Response<Vec<u8>>, Error>,
        now: Instant,
    ) {
        match self.watch.phase {
            Phase::Reading { request, .. } if request == id => {
                match response
                    .map_err(|_| ())
                    .and_then(|r| wire::parse_range(r).map_err(|_| ()))
                {
                    Ok(range) => self.v3_events_state(range.kvs, range.header.revision, now),
                    Err(()) => self.watch_backoff(Resume::Read, now),
                }
            }
            // The stream ended (the member closed it): again from where it was.
            Phase::Waiting {
                request,
                index,
                probe,
            } if request == id => {
                if let Some(probe) = probe.request() {
                    self.cancel_request(probe);
                }
                self.watch_backoff(Resume::Watch(index), now)
            }
            Phase::Waiting {
                index, mut probe, ..
            } if probe.request() == Some(id) => {
                let answered = response.ok().is_some_and(|r| wire::parse_range(r).is_ok());
                if answered {
                    probe.answered(&self.config, now);
                    if let Phase::Waiting { probe: p, .. } = &mut self.watch.phase {
                        *p = probe;
                    }
                } else {
                    self.move_watch(index, now);
                }
            }
            _ => {}
        }
    }

    /// The keys as a read found them at `revision`: the state, then the watch from there.
    fn v3_events_state(&mut self, kvs: Vec<Kv>, revision: i64, now: Instant) {
        self.watch.reset_retry(&self.config);
        self.watch.keys = kvs
            .into_iter()
            .map(|kv| {
                let value = String::from_utf8_lossy(&kv.value).into_owned();
                (kv.create_revision, (kv.key, value))
            })
            .collect();
        self.v3_holder_changed();
        self.start_watch((revision.max(0) as u64).saturating_add(1), now);
    }

    /// A message of the events' watch stream.
    pub(crate) fn on_v3_events_message(
        &mut self,
        id: RequestId,
        message: Result<WatchMessage, wire::Failure>,
        now: Instant,
    ) {
        let Phase::Waiting { request, .. } = self.watch.phase else {
            return;
        };
        if request != id {
            return;
        }
        let message = match message {
            Ok(m) if !m.canceled && m.compact_revision == 0 => m,
            // Cancelled, compacted past, or garbage: read the state again.
            _ => {
                if let Some(probe) = self.watch.probe() {
                    self.cancel_request(probe);
                }
                self.cancel_request(id);
                return self.watch_backoff(Resume::Read, now);
            }
        };
        // One message may carry many events (a watch that starts late gets everything it
        // missed at once): the holder is worked out after each, so that no hold is skipped.
        for event in &message.events {
            match event.kind {
                EventKind::Put => {
                    let value = String::from_utf8_lossy(&event.kv.value).into_owned();
                    let entry = (event.kv.key.clone(), value);
                    self.watch.keys.insert(event.kv.create_revision, entry);
                }
                EventKind::Delete => self.watch.keys.retain(|_, (key, _)| *key != event.kv.key),
            }
            self.v3_holder_changed();
        }
        let revision = message.header.revision;
        if let Phase::Waiting { index, .. } = &mut self.watch.phase {
            *index = (*index).max((revision.max(0) as u64).saturating_add(1));
        }
    }

    /// Emits what changed about the holder (the lowest create revision).
    fn v3_holder_changed(&mut self) {
        let now_seen = match self.watch.keys.iter().next() {
            Some((&token, (_, holder))) => Seen::Held {
                holder: holder.clone(),
                token: token.max(0) as u64,
            },
            None => Seen::Free,
        };
        let before = std::mem::replace(&mut self.watch.seen, now_seen.clone());
        match (before, now_seen) {
            (a, b) if a == b => {}
            (Seen::Unknown, Seen::Free) => {}
            (before, after) => {
                if let Seen::Held {
                    holder,
                    token: ended,
                } = before
                {
                    // The hold that ended is the key created at `ended`: it ends ours if it is
                    // ours, or a later key (ours gone unseen). A key ahead of ours going is the
                    // hand-off to us, although it goes after our key was made (v2's rule, a
                    // release after our hold began, does not hold on v3).
                    if self.held.is_some_and(|h| ended >= h.fence.token) {
                        self.lose(LostReason::Superseded);
                    }
                    self.emit(Event::Unlocked {
                        previous_holder: Some(holder),
                        expired: false,
                    });
                }
                if let Seen::Held { holder, token } = after {
                    self.observe(Event::Locked { holder, token }, token);
                }
            }
        }
    }
}
