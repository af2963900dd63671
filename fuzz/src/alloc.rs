//! Counting the bytes a thread holds, for bounds on the machine's buffering.
//!
//! The counts come from a counting global allocator, which needs `unsafe` (`GlobalAlloc`): the
//! project forbids unsafe code everywhere, so none is installed and [`live_bytes`] is `None`
//! (the memory checks are skipped; the machine's cancellation of oversized bodies is checked
//! instead). Counts are per
//! thread (a test harness runs tests on several threads at once), so only differences measured
//! on one thread mean anything.

use std::cell::Cell;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static INSTALLED: Cell<bool> = const { Cell::new(false) };
}

/// Called by the counting allocator: `bytes` were allocated on this thread.
#[doc(hidden)]
pub fn note_alloc(bytes: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().wrapping_add(bytes as isize)));
    let _ = INSTALLED.try_with(|i| i.set(true));
}

/// Called by the counting allocator: `bytes` were freed on this thread.
#[doc(hidden)]
pub fn note_dealloc(bytes: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().wrapping_sub(bytes as isize)));
}

/// Bytes allocated minus bytes freed on this thread so far, if the counting allocator is
/// installed.
pub fn live_bytes() -> Option<isize> {
    if INSTALLED.try_with(Cell::get).unwrap_or(false) {
        LIVE.try_with(Cell::get).ok()
    } else {
        None
    }
}
