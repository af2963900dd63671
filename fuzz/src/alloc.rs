//! Counting the bytes a thread holds, for bounds on the machine's buffering.
//!
//! A binary that wants the counts installs the counting allocator with
//! [`counting_allocator!`](crate::counting_allocator) (the `responses_v3` target and the corpus
//! replay do); without it [`live_bytes`] is `None` and memory checks are skipped. Counts are per
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

/// Installs, in the binary that invokes it, a global allocator that forwards to the system's
/// and counts the bytes each thread holds (see [`live_bytes`]).
#[macro_export]
macro_rules! counting_allocator {
    () => {
        struct MicrolockFuzzCounting;

        // SAFETY: every call forwards to the system allocator with the same arguments; the
        // counting only touches a const-initialised thread-local `Cell` (no allocation, no
        // destructor).
        unsafe impl ::std::alloc::GlobalAlloc for MicrolockFuzzCounting {
            unsafe fn alloc(&self, layout: ::std::alloc::Layout) -> *mut u8 {
                let p = ::std::alloc::GlobalAlloc::alloc(&::std::alloc::System, layout);
                if !p.is_null() {
                    $crate::alloc::note_alloc(layout.size());
                }
                p
            }
            unsafe fn alloc_zeroed(&self, layout: ::std::alloc::Layout) -> *mut u8 {
                let p = ::std::alloc::GlobalAlloc::alloc_zeroed(&::std::alloc::System, layout);
                if !p.is_null() {
                    $crate::alloc::note_alloc(layout.size());
                }
                p
            }
            unsafe fn dealloc(&self, p: *mut u8, layout: ::std::alloc::Layout) {
                ::std::alloc::GlobalAlloc::dealloc(&::std::alloc::System, p, layout);
                $crate::alloc::note_dealloc(layout.size());
            }
            unsafe fn realloc(
                &self,
                p: *mut u8,
                layout: ::std::alloc::Layout,
                new_size: usize,
            ) -> *mut u8 {
                let q =
                    ::std::alloc::GlobalAlloc::realloc(&::std::alloc::System, p, layout, new_size);
                if !q.is_null() {
                    $crate::alloc::note_dealloc(layout.size());
                    $crate::alloc::note_alloc(new_size);
                }
                q
            }
        }

        #[global_allocator]
        static MICROLOCK_FUZZ_ALLOCATOR: MicrolockFuzzCounting = MicrolockFuzzCounting;
    };
}
