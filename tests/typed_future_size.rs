//! A typed unary call's future stays as small as the untyped one's: it holds the untyped call's
//! future in place, with no box of its own, and fits the allocator's per-thread cache when a
//! caller boxes it (see grid-core's `tests/future_size.rs` for why that bound matters).

#![allow(clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use grid::{CallOptions, HandlerId, Manager};

/// Most bytes a typed unary call's future may take: the untyped bound (grid-core's
/// `tests/future_size.rs`) plus the typed call's own fields.
const MAX_TYPED_CALL_FUTURE: usize = 960;

#[grid::handler]
pub trait Measured {
    async fn echo(&self, b: Bytes) -> Result<Bytes, String>;
}

#[tokio::test]
async fn a_typed_unary_calls_future_holds_the_untyped_one_in_place() {
    let node = Manager::builder("http://127.0.0.1:1")
        .peers(["http://127.0.0.1:2"])
        .secret("sizes")
        .no_listener()
        .start()
        .await
        .unwrap();
    let conn = node.connection("http://127.0.0.1:2").unwrap();
    let client = MeasuredClient::new(conn.clone());
    // Futures do nothing until polled: these are only measured, never run.
    let typed = client.echo(Bytes::new());
    let untyped = conn.call(HandlerId(5), Bytes::new(), CallOptions::default());
    let (typed_size, untyped_size) = (
        std::mem::size_of_val(&typed),
        std::mem::size_of_val(&untyped),
    );
    assert!(
        typed_size >= untyped_size,
        "the typed call ({typed_size} bytes) is smaller than the untyped call it holds \
         ({untyped_size} bytes): it boxes it again"
    );
    assert!(
        typed_size <= MAX_TYPED_CALL_FUTURE,
        "a typed unary call's future is {typed_size} bytes, over {MAX_TYPED_CALL_FUTURE} \
         (the untyped one is {untyped_size})"
    );
    drop((typed, untyped));
    node.shutdown().await;
}
