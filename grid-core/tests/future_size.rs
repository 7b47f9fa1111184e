//! A call's future stays small enough to be boxed from the allocator's per-thread cache.
//!
//! Callers box call futures all the time (`BoxFuture`, `tokio::spawn`, a tower service). glibc
//! serves a request up to 1,032 bytes from a per-thread cache; a larger one takes the arena's
//! lock, and when it is freed on the other worker (a caller's task moves between workers while
//! it waits) the two workers contend on that lock. With the future at 1.7 KiB that contention
//! was most of the futex calls of a two-worker unary benchmark; at 856 bytes unary calls ran
//! 8–17 % faster (BENCHMARKS.md, issue 11, fourth session). The bound leaves room for what a
//! caller's own async block adds around the call.

#![allow(clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use grid_core::{CallOptions, HandlerId, Manager};

/// Most bytes a unary call's future may take.
const MAX_CALL_FUTURE: usize = 900;

#[tokio::test]
async fn a_unary_calls_future_fits_the_allocators_per_thread_cache() {
    let node = Manager::builder("http://127.0.0.1:1")
        .peers(["http://127.0.0.1:2"])
        .secret("sizes")
        .no_listener()
        .start()
        .await
        .unwrap();
    let conn = node.connection("http://127.0.0.1:2").unwrap();
    // Futures do nothing until polled: these are only measured, never run.
    let request = conn.request(HandlerId(5), Bytes::new());
    let call = conn.call(HandlerId(5), Bytes::new(), CallOptions::default());
    for (what, size) in [
        ("request", std::mem::size_of_val(&request)),
        ("call", std::mem::size_of_val(&call)),
    ] {
        assert!(
            size <= MAX_CALL_FUTURE,
            "`Connection::{what}`'s future is {size} bytes, over {MAX_CALL_FUTURE}: box the rare \
             paths of the call (waits for the link or for room) rather than grow it"
        );
    }
    drop((request, call));
    node.shutdown().await;
}
