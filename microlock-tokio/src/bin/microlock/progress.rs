//! The status line shown on stderr while waiting for the lock: who holds it and for how long
//! we have waited. On a terminal it is one line rewritten in place; elsewhere it is silent,
//! unless `--verbose`, which prints one line per change of holder.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::timing::show;

/// Who holds the lock, as the event stream last told: `None` when free or not known yet.
pub type Holder = Option<(String, u64)>;

/// Longest status line drawn on a terminal, so that it never wraps on a common terminal
/// (a wrapped line cannot be rewritten in place).
const MAX_WIDTH: usize = 79;

/// The waiting status line.
#[derive(Debug)]
pub struct StatusLine {
    key: String,
    started: Instant,
    terminal: bool,
    verbose: bool,
    holder: Holder,
    /// Whether the holder is known (an event arrived), free or held.
    known: bool,
    /// Whether something is drawn on the terminal line now.
    drawn: bool,
}

impl StatusLine {
    /// A status line for waiting on `key`, started now.
    pub fn new(key: &str, verbose: bool) -> StatusLine {
        StatusLine {
            key: key.to_owned(),
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            verbose,
            holder: None,
            known: false,
            drawn: false,
        }
    }

    /// Whether the line is redrawn every second (a terminal).
    pub fn ticks(&self) -> bool {
        self.terminal
    }

    /// The holder changed (an event from the watch).
    pub fn set_holder(&mut self, holder: Holder) {
        let changed = !self.known || holder != self.holder;
        self.holder = holder;
        self.known = true;
        if self.terminal {
            self.draw();
        } else if self.verbose && changed {
            eprintln!("microlock: {}", self.text());
        }
    }

    /// The holder, as far as known.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Redraws the line (on a terminal).
    pub fn draw(&mut self) {
        if !self.terminal {
            return;
        }
        let text: String = format!("microlock: {}", self.text())
            .chars()
            .take(MAX_WIDTH)
            .collect();
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{text}");
        let _ = stderr.flush();
        self.drawn = true;
    }

    /// Erases the line (before anything else is printed, and when the wait is over).
    pub fn clear(&mut self) {
        if self.drawn {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.drawn = false;
        }
    }

    /// `waiting for KEY: held by ID (token N), waited 12s`.
    fn text(&self) -> String {
        let waited = Duration::from_secs(self.started.elapsed().as_secs());
        format!(
            "waiting for {}: {}, waited {}",
            self.key,
            describe_holder(&self.holder, self.known),
            show(waited)
        )
    }
}

/// `held by ID (token N)`, `free`, or `held by another node` when not known yet.
pub fn describe_holder(holder: &Holder, known: bool) -> String {
    match holder {
        Some((id, token)) => format!("held by {id} (token {token})"),
        None if known => "free, taking it".to_owned(),
        None => "held by another node".to_owned(),
    }
}
