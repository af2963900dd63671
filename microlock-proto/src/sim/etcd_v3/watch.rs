//! Watch streams: what a `/v3/watch` create request makes etcd write, one JSON line per
//! `WatchResponse` (`{"result":{...}}\n`): the `created` message, the history since
//! `start_revision` in one message (etcd's `syncWatchers` batches up to 1000 revisions per
//! message, each with the store's revision in its header), then one message per revision that
//! touches the watched range, with that revision in its header. A start revision older than
//! the compaction is answered with `canceled` and `compact_revision` after `created`.

use super::render::{self, Ids, Obj};
use super::requests::WatchCreate;
use super::store::{Event, Span, Store};

/// etcd's `watchBatchMaxRevs`: a history message holds at most this many revisions.
const WATCH_BATCH_MAX_REVS: usize = 1000;

/// One open watch stream.
#[derive(Debug, Clone)]
pub(crate) struct Watcher {
    span: Span,
    /// The first revision not yet delivered.
    next_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    watch_id: i64,
    /// `false` once cancelled (compacted start) or for a stream with no watch in it.
    active: bool,
    /// Lines written and not yet polled.
    lines: Vec<Vec<u8>>,
}

fn line(ids: &Ids, revision: i64, body: impl FnOnce(Obj) -> Obj) -> Vec<u8> {
    let inner = body(Obj::new().raw("header", &render::header(ids, revision))).done();
    let mut out = Obj::new().raw("result", &inner).done();
    out.push(b'\n');
    out
}

impl Watcher {
    /// A stream with no watch (a cancel request or an empty body): it stays open and writes
    /// nothing.
    pub(crate) fn silent() -> Watcher {
        Watcher {
            span: Span::One(Vec::new()),
            next_rev: i64::MAX,
            prev_kv: false,
            no_put: false,
            no_delete: false,
            watch_id: 0,
            active: false,
            lines: Vec::new(),
        }
    }

    /// A stream answering a progress request: one message with the current revision.
    pub(crate) fn progress(ids: &Ids, store: &Store) -> Watcher {
        let mut w = Watcher::silent();
        w.lines
            .push(line(ids, store.revision(), |o| o.int("watch_id", -1)));
        w
    }

    /// A new watch: its `created` message and the history since its start revision.
    pub(crate) fn create(ids: &Ids, store: &Store, req: &WatchCreate) -> Watcher {
        let current = store.revision();
        let mut w = Watcher {
            span: Span::new(&req.key, &req.range_end),
            next_rev: if req.start_revision > 0 {
                req.start_revision
            } else {
                current + 1
            },
            prev_kv: req.prev_kv,
            no_put: req.filters.contains(&0),
            no_delete: req.filters.contains(&1),
            watch_id: req.watch_id,
            active: true,
            lines: Vec::new(),
        };
        let id = w.watch_id;
        w.lines.push(line(ids, current, |o| {
            o.int("watch_id", id).bool("created", true)
        }));
        if req.start_revision > 0 && req.start_revision < store.compacted() {
            let compacted = store.compacted();
            w.lines.push(line(ids, 0, |o| {
                o.int("watch_id", id)
                    .bool("canceled", true)
                    .int("compact_revision", compacted)
            }));
            w.active = false;
            return w;
        }
        if w.next_rev <= current {
            let history = store.history(&w.span, w.next_rev, current);
            let mut batch: Vec<Vec<u8>> = Vec::new();
            let mut revs = 0;
            let mut last_rev = 0;
            for (rev, _, ev) in &history {
                if *rev != last_rev {
                    if revs == WATCH_BATCH_MAX_REVS {
                        w.flush(ids, current, &mut batch);
                        revs = 0;
                    }
                    revs += 1;
                    last_rev = *rev;
                }
                if w.wants(ev) {
                    batch.push(render::event(ev, w.prev_kv));
                }
            }
            w.flush(ids, current, &mut batch);
            w.next_rev = current + 1;
        }
        w
    }

    fn wants(&self, ev: &Event) -> bool {
        self.span.contains(&ev.kv.key)
            && !(ev.delete && self.no_delete || !ev.delete && self.no_put)
    }

    fn flush(&mut self, ids: &Ids, revision: i64, batch: &mut Vec<Vec<u8>>) {
        if batch.is_empty() {
            return;
        }
        let id = self.watch_id;
        let events = std::mem::take(batch);
        self.lines.push(line(ids, revision, |o| {
            o.int("watch_id", id).list("events", &events)
        }));
    }

    /// The events of a new revision: one message if any of them is watched.
    pub(crate) fn notify(&mut self, ids: &Ids, revision: i64, events: &[Event]) {
        if !self.active || revision < self.next_rev {
            return;
        }
        let mut batch: Vec<Vec<u8>> = events
            .iter()
            .filter(|ev| self.wants(ev))
            .map(|ev| render::event(ev, self.prev_kv))
            .collect();
        self.flush(ids, revision, &mut batch);
        self.next_rev = revision + 1;
    }

    /// The lines written since the last call.
    pub(crate) fn take_lines(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lines)
    }
}
