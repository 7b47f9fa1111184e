//! Streams through byte windows over real loopback sockets: messages larger than the window, a
//! window of one message, zero-length messages, slow consumers, batched sends and receives, and
//! every message exactly once and in order, then the outcome, under cancellation and disconnect.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use grid::{CancelCause, Error, ErrorCode, HandlerSpec, Manager, RemoteError, StreamOptions};
use tokio::sync::mpsc;

/// Sends the messages its payload describes (sizes, one u32 each), in batches.
const SIZES: HandlerSpec = HandlerSpec::named("Windows.sizes");
/// Sends the messages its payload describes one at a time.
const SIZES_ONE_BY_ONE: HandlerSpec = HandlerSpec::named("Windows.sizes_one_by_one");
/// Echoes its input with `send_stream`.
const FORWARD: HandlerSpec = HandlerSpec::named("Windows.forward");
/// Echoes its input with `recv_many` and `send_all`.
const ECHO_MANY: HandlerSpec = HandlerSpec::named("Windows.echo_many");
/// Sends numbered messages until it is cancelled, and reports how it ended.
const ENDLESS: HandlerSpec = HandlerSpec::named("Windows.endless");

const LIMIT: Duration = Duration::from_secs(20);

fn internal(e: Error) -> RemoteError {
    RemoteError::text(ErrorCode::Internal, e.to_string())
}

/// Message `i` of a stream: `len` bytes of a pattern seeded by `i`, so any mix-up shows.
fn msg(i: usize, len: usize) -> Bytes {
    common::pattern(len, (i % 251) as u8)
}

fn sizes_payload(sizes: &[u32]) -> Bytes {
    sizes
        .iter()
        .flat_map(|s| s.to_be_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn parse_sizes(b: &[u8]) -> Vec<usize> {
    b.chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()) as usize)
        .collect()
}

fn register(nodes: &[Manager], ended: &mpsc::UnboundedSender<CancelCause>) {
    for m in nodes {
        m.register_stream(SIZES, |_ctx, b, _input, mut out| async move {
            let msgs = parse_sizes(&b).into_iter().enumerate();
            out.send_all(msgs.map(|(i, len)| msg(i, len)))
                .await
                .map_err(internal)
        })
        .unwrap();
        m.register_stream(SIZES_ONE_BY_ONE, |_ctx, b, _input, mut out| async move {
            for (i, len) in parse_sizes(&b).into_iter().enumerate() {
                out.send(msg(i, len)).await.map_err(internal)?;
            }
            Ok(())
        })
        .unwrap();
        m.register_stream(FORWARD, |_ctx, _b, input, mut out| async move {
            let input = input.expect("forward needs input");
            let mut failed = None;
            let items = input.scan(&mut failed, |failed, m| {
                futures::future::ready(match m {
                    Ok(m) => Some(m),
                    Err(e) => {
                        **failed = Some(e);
                        None
                    }
                })
            });
            out.send_stream(items).await.map_err(internal)?;
            failed.map_or(Ok(()), |e| Err(internal(e)))
        })
        .unwrap();
        m.register_stream(ECHO_MANY, |_ctx, _b, input, mut out| async move {
            let mut input = input.expect("echo needs input");
            let mut batch = Vec::new();
            while input.recv_many(&mut batch, 100).await.map_err(internal)? > 0 {
                out.send_all(batch.drain(..)).await.map_err(internal)?;
            }
            Ok(())
        })
        .unwrap();
        let ended = ended.clone();
        m.register_stream(ENDLESS, move |ctx, _b, _input, mut out| {
            let ended = ended.clone();
            async move {
                let mut i = 0usize;
                loop {
                    tokio::select! {
                        cause = ctx.cancelled() => {
                            let _ = ended.send(cause);
                            return Ok(());
                        }
                        sent = out.send_all((i..i + 50).map(|k| msg(k, 40))) => {
                            if sent.is_err() {
                                let _ = ended.send(ctx.cancelled().await);
                                return Ok(());
                            }
                            i += 50;
                        }
                    }
                }
            }
        })
        .unwrap();
    }
}

async fn setup() -> (Vec<Manager>, mpsc::UnboundedReceiver<CancelCause>) {
    let nodes = common::connected(2, common::test_config()).await;
    let (tx, rx) = mpsc::unbounded_channel();
    register(&nodes, &tx);
    (nodes, rx)
}

/// Opens `handler` with `sizes` and windows `(cap, window)` for the output, reads everything
/// with `recv` (or `recv_many` when `many`), pausing every `pause_every` messages, and checks
/// every message and the clean end.
async fn read_sizes(
    nodes: &[Manager],
    handler: HandlerSpec,
    sizes: &[u32],
    (cap, window): (u32, u32),
    many: bool,
    pause_every: Option<usize>,
) {
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let opts = StreamOptions {
        out_capacity: cap,
        out_window: window,
        ..StreamOptions::default()
    };
    let s = conn
        .open_stream(handler.id, sizes_payload(sizes), opts)
        .await
        .unwrap();
    let mut receiver = s.receiver;
    let mut got = Vec::new();
    let largest = *sizes.iter().max().unwrap_or(&0) as usize;
    let mut peak = 0;
    let read = async {
        let mut buf = Vec::new();
        loop {
            // This stream is the only one on the connection: what the node holds is its buffer.
            peak = peak.max(conn.stats().held.inbound);
            if let Some(every) = pause_every {
                if got.len() % every == every - 1 {
                    // A slow consumer: the producer fills the window meanwhile.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            if many {
                match receiver.recv_many(&mut buf, 7).await {
                    Ok(0) => break,
                    Ok(n) => {
                        assert!(n <= 7, "recv_many took {n} of at most 7");
                        got.append(&mut buf);
                    }
                    Err(e) => panic!("stream failed after {} messages: {e}", got.len()),
                }
            } else {
                match receiver.recv().await {
                    None => break,
                    Some(Ok(m)) => got.push(m),
                    Some(Err(e)) => panic!("stream failed after {} messages: {e}", got.len()),
                }
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("the stream did not end");
    assert_eq!(got.len(), sizes.len(), "every message once");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            *m,
            msg(i, sizes[i] as usize),
            "message {i} in order and intact"
        );
    }
    let held = conn.stats().held;
    assert_eq!(
        held.inbound, 0,
        "nothing left charged to the budget: {held:?}"
    );
    assert!(
        peak < window as usize + largest,
        "held {peak} bytes through a window of {window} (largest message {largest})"
    );
}

/// Sizes from zero to several windows.
fn mixed(n: usize, window: u32) -> Vec<u32> {
    (0..n)
        .map(|i| match i % 6 {
            0 => 0,
            1 => 1,
            2 => window / 2,
            3 => window,
            4 => 3 * window + 7,
            _ => 33,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_larger_than_the_window_arrive_whole_and_in_order() {
    let (nodes, _ended) = setup().await;
    for handler in [SIZES, SIZES_ONE_BY_ONE] {
        read_sizes(&nodes, handler, &[10_000; 50], (64, 1000), false, None).await;
        read_sizes(&nodes, handler, &mixed(300, 1000), (64, 1000), true, None).await;
    }
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_one_message_moves_every_message() {
    let (nodes, _ended) = setup().await;
    for handler in [SIZES, SIZES_ONE_BY_ONE] {
        read_sizes(&nodes, handler, &mixed(200, 1), (1, 1), false, None).await;
        read_sizes(&nodes, handler, &[300; 200], (100, 1), true, None).await;
    }
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_messages_flow_within_the_message_cap() {
    let (nodes, _ended) = setup().await;
    read_sizes(&nodes, SIZES, &[0; 5000], (8, 1), true, None).await;
    read_sizes(&nodes, SIZES, &[0; 5000], (8, 1 << 20), false, None).await;
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_gets_everything_once_within_the_window() {
    let (nodes, _ended) = setup().await;
    read_sizes(&nodes, SIZES, &[64; 3000], (4096, 4096), false, Some(300)).await;
    read_sizes(&nodes, SIZES, &mixed(600, 2000), (32, 2000), true, Some(50)).await;
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_windows_move_many_small_messages() {
    let (nodes, _ended) = setup().await;
    let defaults = (
        StreamOptions::DEFAULT_CAPACITY,
        StreamOptions::DEFAULT_WINDOW,
    );
    read_sizes(&nodes, SIZES, &[64; 50_000], defaults, false, None).await;
    read_sizes(&nodes, SIZES, &[64; 50_000], defaults, true, None).await;
    common::assert_drained(&nodes).await;
}

/// Two-way through small windows both ways, echoed by `handler`, the caller sending with
/// `send_all` while it reads.
async fn echo_through(nodes: &[Manager], handler: HandlerSpec, sizes: Vec<u32>, window: u32) {
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let opts = StreamOptions {
        in_capacity: 16,
        in_window: window,
        out_capacity: 16,
        out_window: window,
        ..StreamOptions::default()
    };
    let s = conn
        .open_stream(handler.id, Bytes::new(), opts)
        .await
        .unwrap();
    let (mut sender, mut receiver) = (s.sender.unwrap(), s.receiver);
    let n = sizes.len();
    let to_send = sizes.clone();
    let feeder = tokio::spawn(async move {
        let msgs = to_send.into_iter().enumerate();
        sender
            .send_all(msgs.map(|(i, l)| msg(i, l as usize)))
            .await
            .unwrap();
        sender.finish();
    });
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, async {
        while let Some(m) = receiver.recv().await {
            got.push(m.unwrap());
        }
    })
    .await
    .expect("the echo did not end");
    feeder.await.unwrap();
    assert_eq!(got.len(), n);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(*m, msg(i, sizes[i] as usize), "echo {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_echoes_through_small_windows_exactly_once() {
    let (nodes, _ended) = setup().await;
    for handler in [FORWARD, ECHO_MANY] {
        echo_through(&nodes, handler, mixed(400, 500), 500).await;
        echo_through(&nodes, handler, vec![0; 2000], 1).await;
        echo_through(&nodes, handler, vec![2000; 100], 1).await;
    }
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_mid_batch_delivers_a_prefix_and_cancels_the_handler() {
    let (nodes, mut ended) = setup().await;
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let opts = StreamOptions {
        out_capacity: 64,
        out_window: 1000,
        ..StreamOptions::default()
    };
    let s = conn
        .open_stream(ENDLESS.id, Bytes::new(), opts)
        .await
        .unwrap();
    let mut receiver = s.receiver;
    let mut got = Vec::new();
    while got.len() < 500 {
        got.push(receiver.recv().await.unwrap().unwrap());
    }
    // Some messages are in the receiver's chunk now; cancelling drops them and ends the stream.
    receiver.cancel();
    assert!(
        matches!(receiver.recv().await, Some(Err(Error::Cancelled))),
        "a cancelled stream says so"
    );
    assert!(receiver.recv().await.is_none(), "and then ends");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(*m, msg(i, 40), "message {i}");
    }
    let cause = common::recv_within(&mut ended, LIMIT).await;
    assert_eq!(cause, CancelCause::CallerGaveUp);
    drop(receiver);
    common::assert_drained(&nodes).await;
    assert_eq!(conn.stats().held.inbound, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_mid_stream_delivers_a_prefix_then_disconnected() {
    let (nodes, mut ended) = setup().await;
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let s = conn
        .open_stream(ENDLESS.id, Bytes::new(), StreamOptions::default())
        .await
        .unwrap();
    let mut receiver = s.receiver;
    let mut got = Vec::new();
    while got.len() < 2000 {
        got.push(receiver.recv().await.unwrap().unwrap());
    }
    conn.kill_socket();
    let end = tokio::time::timeout(LIMIT, async {
        loop {
            match receiver.recv().await {
                Some(Ok(m)) => got.push(m),
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ended");
    assert!(
        matches!(end, Some(Err(Error::Disconnected { .. }))),
        "a disconnect is not a clean end: {end:?}"
    );
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            *m,
            msg(i, 40),
            "message {i}: every message before the end, once"
        );
    }
    let cause = common::recv_within(&mut ended, LIMIT).await;
    assert_eq!(cause, CancelCause::Disconnected);
}
