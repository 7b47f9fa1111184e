//! The tasks that drive one live socket, each a thin loop around the session:
//!
//! - the **writer** owns the socket's sink and is the only task that writes; it takes what is
//!   queued a batch at a time (a run of frames the producers encoded in place, sent as it is, or
//!   small frames packed together, control frames first), and flushes once nothing more is
//!   queued;
//! - the **reader** owns the socket's stream, decodes each batch, hands every frame to the core
//!   (the `Data` frames of one stream that arrived back to back as one run: one lookup, one lock
//!   of the stream, one wake; the responses of one message under one lock of the core, their
//!   callers handed their answers once it is let go) and spawns the calls it admits, without
//!   awaiting anything a user task can fill;
//! - the **timer** task serves unary deadlines, stream deadlines, pings and liveness checks;
//! - the **keepalive** task sends connection pings and closes the session when it is stuck.
//!
//! When any of them ends, the session closes; the peer's supervisor (in [`crate::manager`]) then
//! reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::core::{CloseKind, CloseReason, ProtocolViolation};
use super::serve;
use super::session::Session;
use super::stats::ConnStats;
use super::watchdog::Watchdog;
use super::Ws;
use crate::frame::{BatchDecoder, Frame, Limits, Op, Payload};
use crate::handler::Registry;
use crate::ids::MuxId;
use crate::observe::in_span;

/// How long the writer may still take, after a close, to send the go-away that explains it.
const LAST_WORDS: Duration = Duration::from_millis(200);

/// Runs one authenticated socket until it ends, then closes its session.
pub(crate) async fn run_session(session: Arc<Session>, ws: Ws, registry: Arc<Registry>) {
    let (sink, stream) = ws.split();
    let watchdog = Arc::new(Watchdog::new());
    watchdog.inbound();
    // Aborted on return *and* when this future is dropped (a supervisor that stops waiting must
    // not leave a detached reader, writer and keepalive running an orphan socket).
    let span = crate::observe::conn_span(&session);
    let _tasks = AbortOnDrop(
        [
            tokio::spawn(in_span(
                &span,
                write_loop(session.clone(), sink, watchdog.clone()),
            )),
            tokio::spawn(in_span(
                &span,
                read_loop(session.clone(), stream, watchdog.clone(), registry),
            )),
            tokio::spawn(in_span(&span, timer_loop(session.clone()))),
            tokio::spawn(in_span(&span, keepalive_loop(session.clone(), watchdog))),
        ],
        session.clone(),
    );
    session.closed().await;
    // The writer sends a go-away queued by the close, then ends by itself; bounded, since a
    // peer that stopped reading would hold it forever.
    let _ = tokio::time::timeout(LAST_WORDS, session.writer_done()).await;
}

/// Aborts the tasks of one session when dropped, and closes the session: a session whose tasks
/// are gone must not look usable (its calls would wait for a writer that no longer exists).
struct AbortOnDrop([tokio::task::JoinHandle<()>; 4], Arc<Session>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
        self.1.close(CloseReason::library(CloseKind::DriverStopped));
    }
}

/// Closes the session when the task holding it ends, however it ends. Every task of a
/// session closes it with its reason before it returns; this covers the one way they cannot —
/// a panic (a handler's code runs on the reader: a unary handler's first poll) — so a session
/// whose reader or writer is gone never looks usable while its calls wait for nothing.
struct CloseOnExit<'a>(&'a Session);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        self.0.close(CloseReason::library(CloseKind::DriverStopped));
    }
}

async fn write_loop(
    session: Arc<Session>,
    sink: futures::stream::SplitSink<Ws, Message>,
    watchdog: Arc<Watchdog>,
) {
    let _close = CloseOnExit(&session);
    write_batches(&session, sink, &watchdog).await;
    session.writer_finished();
}

async fn write_batches(
    session: &Arc<Session>,
    mut sink: futures::stream::SplitSink<Ws, Message>,
    watchdog: &Watchdog,
) {
    let cfg = session.config.clone();
    // The last message was fed but not flushed, as more was queued then. What was queued may
    // be gone since (a call taken back before it was written): the writer then flushes before
    // it sleeps, never leaving a message in tungstenite's buffer.
    let mut unflushed = false;
    loop {
        let next = if unflushed {
            match session.try_batch(cfg.max_batch_bytes) {
                Some(next) => next,
                None => {
                    unflushed = false;
                    watchdog.write_begin();
                    let flushed = sink.flush().await;
                    watchdog.write_end();
                    if let Err(e) = flushed {
                        return write_failed(session, &e);
                    }
                    continue;
                }
            }
        } else {
            session.next_batch(cfg.max_batch_bytes).await
        };
        let Some(mut batch) = next else {
            break;
        };
        // A busy connection with a short batch: let the tasks that are runnable right now
        // (callers woken by the last responses, handlers spawned by the last requests) queue
        // their frames first, then send them all in one message (MinIO's Gosched merge). An idle
        // connection sends a lone frame at once, without the yield's cost.
        // Several calls in flight means more frames are about to be queued (asked of a short
        // batch only: it takes the core's lock).
        if batch.frames < 4 && batch.len() < cfg.max_batch_bytes / 4 && session.activity() > 1 {
            tokio::task::yield_now().await;
            session.top_up(&mut batch, cfg.max_batch_bytes);
        }
        ConnStats::add(&session.stats.outbound.frames, batch.frames);
        let msg = batch.finish(session.checksum());
        ConnStats::add(&session.stats.outbound.bytes, msg.len());
        ConnStats::add(&session.stats.outbound.messages, 1);
        // Kept to take the buffer back once tungstenite has copied the message out.
        let mine = msg.clone();
        // The keepalive task watches for a write that never ends (a peer that stopped reading).
        watchdog.write_begin();
        // Fed, not flushed, while more is queued: tungstenite writes to the socket as its
        // buffer fills, and the flush comes when the queue is momentarily empty.
        let mut sent = sink.feed(Message::Binary(msg)).await;
        unflushed = sent.is_ok();
        if unflushed && session.nothing_queued() {
            sent = sink.flush().await;
            unflushed = false;
        }
        watchdog.write_end();
        if let Ok(buf) = mine.try_into_mut() {
            session.recycle(buf);
        }
        if let Err(e) = sent {
            return write_failed(session, &e);
        }
    }
    let _ = sink.close().await;
}

fn write_failed(session: &Session, e: &tokio_tungstenite::tungstenite::Error) {
    session.close(CloseReason::library(CloseKind::Io(format!(
        "write failed: {e}"
    ))));
}

async fn read_loop(
    session: Arc<Session>,
    mut stream: futures::stream::SplitStream<Ws>,
    watchdog: Arc<Watchdog>,
    registry: Arc<Registry>,
) {
    let _close = CloseOnExit(&session);
    let cfg = session.config.clone();
    let limits = Limits {
        items: session.items(),
        ..cfg.limits()
    };
    let violation = |v| CloseReason::violation(v);
    // Allocated by the first data frame: an idle link holds no room for runs.
    let mut run: Vec<(u32, Payload)> = Vec::new();
    let mut run_mux = MuxId::CONNECTION;
    // The op of the run's first frame (`Data` or `Items`), for an error it may cause.
    let mut run_op = Op::Data;
    // The responses of one message, handled together (one lock of the core for all).
    let mut responses: Vec<Frame> = Vec::new();
    let mut replies = Vec::new();
    loop {
        // Silence is detected by the keepalive task from the watchdog's stamps.
        let msg = match stream.next().await {
            None => return session.close(CloseReason::remote(CloseKind::SocketClosed)),
            Some(Err(e)) => {
                return session.close(CloseReason::library(CloseKind::Io(format!(
                    "read failed: {e}"
                ))))
            }
            Some(Ok(m)) => m,
        };
        watchdog.inbound();
        let data = match msg {
            Message::Binary(b) => b,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(_) => {
                return session.close(CloseReason::remote(CloseKind::SocketClosed))
            }
            Message::Text(_) => return session.close(violation(ProtocolViolation::TextMessage)),
        };
        ConnStats::add(&session.stats.inbound.bytes, data.len());
        let (data, copy_payloads) = session.received(data);
        let limits = Limits {
            copy_payloads,
            ..limits
        };
        let mut decoder = match BatchDecoder::new(data, &limits) {
            Ok(d) => d,
            Err(e) => return session.close(violation(ProtocolViolation::Frame(e))),
        };
        let now = Instant::now();
        ConnStats::add(&session.stats.inbound.frames, decoder.remaining());
        let mut handed_data = false;
        loop {
            // A stream's data frames that arrived back to back go to it as one run.
            let next = decoder.next_non_data(|op, mux, seq, payload| {
                handed_data = true;
                if mux != run_mux && !run.is_empty() {
                    session.dispatch_run(run_op, run_mux, &mut run, now);
                }
                if run.is_empty() {
                    run_op = op;
                }
                run_mux = mux;
                // The whole run, however long (a batch holds at most `MAX_FRAMES_PER_BATCH`
                // messages): one lock and one wake of its consumer per stream and batch.
                run.push((seq, payload));
            });
            if !run.is_empty() {
                session.dispatch_run(run_op, run_mux, &mut run, now);
            }
            let frame = match next {
                None => break,
                Some(Ok(f)) => f,
                Some(Err(e)) => return session.close(violation(ProtocolViolation::Frame(e))),
            };
            if matches!(frame, Frame::Response { .. }) {
                responses.push(frame);
                continue;
            }
            if !responses.is_empty() {
                session.dispatch_responses(&mut responses, &mut replies, now, &*registry);
            }
            if let Some(start) = session.dispatch(frame, now, &*registry) {
                serve::spawn(&session, &registry, start);
            }
            if session.is_closed() {
                return;
            }
        }
        if !responses.is_empty() {
            session.dispatch_responses(&mut responses, &mut replies, now, &*registry);
        }
        if session.is_closed() {
            return;
        }
        // A burst's worth of room is not kept for an idle link.
        run.shrink_to(RUN_KEPT);
        responses.shrink_to(RUN_KEPT);
        replies.shrink_to(RUN_KEPT);
        if handed_data {
            // A consumer woken by these runs waits behind this task on this worker; yield, so
            // it runs here while reading moves to another worker.
            tokio::task::yield_now().await;
        }
    }
}

/// Frames of room the reader keeps for a run between messages.
const RUN_KEPT: usize = 16;

async fn timer_loop(session: Arc<Session>) {
    let _close = CloseOnExit(&session);
    loop {
        let changed = session.timers_changed();
        let sleep = async {
            match session.next_timer() {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = changed => {}
            () = session.closed() => return,
        }
        // tokio's clock, which the sleep above follows: under paused time (tests) the timers
        // then fire in virtual time instead of the task spinning until the real clock catches up.
        session.fire_timers(tokio::time::Instant::now().into_std());
    }
}

async fn keepalive_loop(session: Arc<Session>, watchdog: Arc<Watchdog>) {
    let _close = CloseOnExit(&session);
    let cfg = session.config.clone();
    let period = Watchdog::period(cfg.ping_interval, cfg.idle_timeout, cfg.write_timeout);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(kind) = watchdog.check(cfg.idle_timeout, cfg.write_timeout) {
                    return session.close(CloseReason::library(kind));
                }
                session.trim_idle();
                if last_ping.elapsed() >= cfg.ping_interval {
                    last_ping = Instant::now();
                    let nonce = session.stats.ping_nonce();
                    session.send_control(&crate::frame::Frame::Ping { mux: MuxId::CONNECTION, nonce });
                }
            }
            reason = session.close_requested() => return session.close(reason),
            () = session.closed() => return,
        }
    }
}
