//! Running the calls the core admitted: one task per call, and the rules every task keeps.
//!
//! A task owns its call's admission slot through a [`SlotGuard`]: whatever way the task ends —
//! the handler returned and its last frame is queued, the call was cancelled and the cancel
//! grace ran out, the handler panicked, the runtime dropped the task — the guard's drop tells
//! the core [`finish`](super::core::ConnCore::finish) with the call's key, and nothing else
//! can. The count of running handlers is therefore exact, whatever mux ids the peer reuses.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::warn;

use super::core::{CallKey, Start, StartKind};
use super::session::Session;
use super::slot::Shared;
use crate::cancel::CancelSignal;
use crate::error::RemoteError;
use crate::frame::{ErrorCode, ErrorRecord, Route};
use crate::handler::{panic_record, Context, Registered, Registry};
use crate::mux::{CancelCause, StreamCallee};
use crate::stream::{RequestReceiver, ResponseSender};

/// How long a cancelled handler keeps running so it can observe
/// [`Context::cancelled`] and clean up; after that its future is dropped (a handler that ignores
/// its context cannot outlive its call by more than this). Its slot is held meanwhile.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_millis(500);

/// Releases a call's admission slot when its task ends, however it ends (and ends its span
/// and metrics).
struct SlotGuard {
    session: Arc<Session>,
    key: CallKey,
    obs: crate::observe::Serve,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.session.finish(self.key);
        self.obs.end(&self.session.stats);
    }
}

/// Spawns the task of an admitted call.
pub(crate) fn spawn(
    session: &Arc<Session>,
    registry: &Arc<Registry>,
    start: Start<Registered, CancelSignal>,
) {
    let Start {
        key,
        route,
        handler,
        cancel,
        deadline,
        metadata,
        payload,
        kind,
    } = start;
    let obs = crate::observe::Serve::start(session, &route, key.mux, handler.is_stream());
    let span = obs.span();
    let mut guard = SlotGuard {
        session: session.clone(),
        key,
        obs,
    };
    let ctx = Context::new(
        session.peer.clone(),
        route.handler,
        route.subroute.as_deref(),
        deadline,
        metadata,
        cancel.clone(),
    );
    guard.obs.adopt(ctx.metadata());
    match (handler, kind) {
        (Registered::Unary(handler), StartKind::Unary(mut machine)) => {
            // The handler's wire name is looked up only for a message: not on the hot path.
            let registry = registry.clone();
            let name = move || registry.name_of(route.handler);
            crate::observe::spawn_within(span, async move {
                // The handler is called inside the guarded future: a closure that panics before
                // it returns its future is caught like one that panics while running.
                let run =
                    AssertUnwindSafe(async move { handler(ctx, payload).await }).catch_unwind();
                let mut run = std::pin::pin!(run);
                let sleep = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                };
                // Biased, handler first: a handler that finishes on its first poll never
                // registers the deadline timer or the cancellation waiter.
                let result = tokio::select! {
                    biased;
                    r = &mut run => r,
                    cause = cancel.cancelled() => {
                        guard.obs.cancelled(cause);
                        machine.abort(cause);
                        return cancel_grace(run, guard).boxed().await;
                    }
                    () = sleep => {
                        guard.obs.cancelled(CancelCause::Deadline);
                        cancel.cancel(CancelCause::Deadline);
                        if guard.session.commit_response(guard.key) {
                            if let Some(f) = machine.handle_timeout(Instant::now()) {
                                guard.session.send_control(&f);
                            }
                        }
                        return cancel_grace(run, guard).boxed().await;
                    }
                };
                let session = &guard.session;
                let result = match result {
                    Ok(Ok(bytes)) if bytes.len() > session.max_payload() => Err(ErrorRecord::text(
                        ErrorCode::TooLarge,
                        format!(
                            "response of {} bytes from {} exceeds the limit of {}",
                            bytes.len(),
                            name(),
                            session.max_payload()
                        ),
                    )),
                    Ok(Ok(bytes)) => Ok(Some(bytes)),
                    Ok(Err(e)) => Err(e.into_record()),
                    Err(panic) => {
                        let rec = panic_record(panic);
                        warn!(peer = %session.peer, handler = %name(), "{}", String::from_utf8_lossy(&rec.message));
                        Err(rec)
                    }
                };
                guard.obs.returned(&result, cancel.cause());
                // Committing first means a Cancel that arrives now finds nothing: the response
                // is already on its way. The slot is held until it is queued.
                if session.commit_response(guard.key) {
                    if let Some(frame) = machine.respond(result) {
                        session.send_response(&frame).await;
                    }
                }
                drop(guard);
            });
        }
        (Registered::Stream(handler), StartKind::Stream { shared, input }) => {
            let input = input.then(|| RequestReceiver::new(session.clone(), shared.clone()));
            let output = ResponseSender::new(session.clone(), shared.clone(), cancel.clone());
            // Called here, not inside the task: the task then holds the handler's boxed
            // future only, not its arguments as well (they would stay in the task's future for
            // the stream's whole life). A closure that panics before it returns its future is
            // caught here, as one that panics while running is caught in the task.
            let started =
                std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx, payload, input, output)));
            crate::observe::spawn_within(span, run_stream(started, cancel, shared, guard));
        }
        // The registry answered for the kind the frame asked for (`Router::route`), so a
        // mismatch cannot happen; if it ever did, the guard still releases the slot.
        (_, _) => refuse_mismatch(&route, guard),
    }
}

/// A stream handler's future, or the panic of the closure that was to return it.
type Started = std::thread::Result<BoxFuture<'static, Result<(), RemoteError>>>;

/// The task of a stream handler: runs it, then sends its end behind its messages. An idle
/// stream's memory is mostly this task, so its future is kept small: nothing in it is held twice.
async fn run_stream(
    started: Started,
    cancel: CancelSignal,
    shared: Shared<StreamCallee>,
    mut guard: SlotGuard,
) {
    let result = match started {
        Ok(run) => {
            let mut run = AssertUnwindSafe(run).catch_unwind();
            tokio::select! {
                biased;
                r = &mut run => r,
                cause = cancel.cancelled() => {
                    guard.obs.cancelled(cause);
                    return cancel_grace(run, guard).boxed().await;
                }
            }
        }
        Err(panic) => Err(panic),
    };
    let result = match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into_record()),
        Err(panic) => Err(panic_record(panic)),
    };
    guard.obs.returned(&result, cancel.cause());
    // The end travels in the data lane, behind the messages the handler sent.
    let session = &guard.session;
    if session.data_room().await.is_ok() {
        let mut slot = shared.lock();
        if let Some(end) = slot.machine.finish(result) {
            let _ = session.push_data_now(&end);
        }
        slot.wake();
    }
    drop(guard);
}

fn refuse_mismatch(route: &Route, guard: SlotGuard) {
    warn!(peer = %guard.session.peer, handler = %route.handler, "handler kind does not match the call");
}

/// Polls a cancelled handler for at most [`CANCEL_GRACE`], then drops it; the slot goes with the
/// guard, after the grace. Its result is discarded: the call is already over for the caller.
///
/// Callers box this future: its timer would otherwise be part of every call's task for the
/// whole life of the call (an idle stream's task is most of its memory), and only a cancelled
/// call needs it.
async fn cancel_grace<F: Future>(run: F, guard: SlotGuard) {
    let _ = tokio::time::timeout(CANCEL_GRACE, run).await;
    drop(guard);
}
