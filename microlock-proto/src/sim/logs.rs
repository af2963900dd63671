//! The machine's `tracing` events in a simulated world's trace: while a world is replayed
//! ([`replay`](crate::sim::dst::replay)), a subscriber local to the thread collects every event
//! (debug and above) as one line, and the world writes them into its trace at the virtual time
//! of the input that caused them — so a failing seed reads like a production log. Events carry
//! no instants (durations only), so the lines are the same in every process.
//!
//! How: `tracing` caches, per call site, whether any subscriber wants it, and a subscriber set
//! for one thread only races with other threads' (tests run in parallel): events could be
//! missed, and two replays differ. So the first replay installs a process-wide subscriber that
//! wants every event exactly while its thread is replaying, and hands it to that thread's
//! world; other threads pay one thread-local check per event. When the application already
//! set a process-wide subscriber, a thread-local one is used instead (best effort).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tracing::field::{Field, Visit};
use tracing::subscriber::{DefaultGuard, Interest};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

thread_local! {
    /// Where this thread's events go while it replays a world.
    static SINK: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// While it lives, this thread's events are collected.
pub(crate) struct Collecting {
    _fallback: Option<DefaultGuard>,
}

impl Drop for Collecting {
    fn drop(&mut self) {
        SINK.with(|sink| *sink.borrow_mut() = None);
    }
}

/// The lines collected since the last [`take`](Logs::take).
#[derive(Debug, Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    /// Collects the events of this thread until the guard is dropped.
    pub(crate) fn install(&self) -> Collecting {
        static GLOBAL: OnceLock<bool> = OnceLock::new();
        let global = *GLOBAL.get_or_init(|| {
            let subscriber = tracing_subscriber::registry().with(Forward);
            tracing::subscriber::set_global_default(subscriber).is_ok()
        });
        SINK.with(|sink| *sink.borrow_mut() = Some(self.clone()));
        let fallback = (!global).then(|| {
            tracing::subscriber::set_default(tracing_subscriber::registry().with(Forward))
        });
        Collecting {
            _fallback: fallback,
        }
    }

    fn push(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    /// The lines collected so far, oldest first.
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// `message key=value ...`, the message first.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// The process-wide subscriber's layer: every event of a replaying thread, debug and above.
struct Forward;

impl<S: Subscriber> Layer<S> for Forward {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes() // decided per event: is this thread replaying?
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        *metadata.level() <= Level::DEBUG && SINK.with(|sink| sink.borrow().is_some())
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        let level = *event.metadata().level();
        let text = format!("log {level}: {}{}", line.message, line.fields);
        SINK.with(|sink| {
            if let Some(logs) = sink.borrow().as_ref() {
                logs.push(text);
            }
        });
    }
}
