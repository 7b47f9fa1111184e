//! Live heap bytes, counted by this benchmark's allocator while the memory workload runs.
//!
//! RSS moves in pages and with the allocator's caches, so an RSS delta over a few connections is
//! noisy; the live bytes that allocations hold are exact. Counting is on only while the memory
//! workload runs (it runs first, before any other workload has allocated): the other workloads
//! pay one read of a flag nobody writes per allocation, the same for every system, and never
//! touch the shared counter.

// The one place the workspace allows it: a `GlobalAlloc` is an unsafe trait, and each method
// only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

/// The system allocator, counting live bytes while [`counting`] is on.
pub(crate) struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

fn add(bytes: usize) {
    if ON.load(Relaxed) {
        LIVE.fetch_add(bytes as i64, Relaxed);
    }
}

fn sub(bytes: usize) {
    if ON.load(Relaxed) {
        LIVE.fetch_sub(bytes as i64, Relaxed);
    }
}

// SAFETY: every call goes to `System` with the caller's arguments unchanged; the counting
// around it allocates nothing and never fails.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            sub(layout.size());
            add(new_size);
        }
        p
    }
}

/// Turns counting on or off. Bytes freed while it is on that were allocated while it was off
/// count against the total, so turn it on before what is measured is built.
pub(crate) fn counting(on: bool) {
    ON.store(on, Relaxed);
}

/// Live bytes allocated while counting was on (less what was freed while it was on).
pub(crate) fn live() -> i64 {
    LIVE.load(Relaxed)
}
