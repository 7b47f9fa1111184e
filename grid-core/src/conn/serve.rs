//! Running the calls the core admitted, and the rules every call keeps.
//!
//! A unary handler is polled once where the core admitted it, on the reader: one that answers
//! without waiting has its response queued there and needs no task; one that waits is moved into
//! a task of its own. A stream handler always gets a task.
//!
//! A call owns its admission slot through a [`SlotGuard`]: whatever way the call ends — the
//! handler returned and its last frame is queued, the call was cancelled and the cancel grace
//! ran out, the handler panicked, the runtime dropped the task — the guard's drop tells the core
//! [`finish`](super::core::ConnCore::finish) with the call's key, and nothing else can. The count
//! of running handlers is therefore exact, whatever mux ids the peer reuses.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::warn;

use super::core::{CallKey, Start, StartKind};
use super::session::Session;
use super::slot::Shared;
use crate::cancel::CancelSignal;
use crate::error::RemoteError;
use crate::frame::{ErrorCode, ErrorRecord, Frame, Route};
use crate::handler::{panic_record, Context, Registered, Registry};
use crate::ids::HandlerId;
use crate::mux::{CancelCause, StreamCallee, UnaryCallee};
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

/// Runs an admitted call: a unary handler's first poll here, a task for the rest.
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
    let guard = SlotGuard {
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
        (Registered::Unary(handler), StartKind::Unary(machine)) => {
            // The handler is called and polled once right here, on the reader: one that answers
            // without waiting (most in-memory handlers do) costs no task and no wake-up, and its
            // response is queued at once. Only a handler that waits gets a task of its own,
            // which polls it again with the task's waker (a future registers its waker anew at
            // every poll, so nothing is lost by the first poll's waker doing nothing).
            let call = UnaryCall {
                machine,
                cancel,
                deadline,
                guard,
                registry: registry.clone(),
                handler_id: route.handler,
            };
            let first = {
                let _entered = span.enter();
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let mut run = handler(ctx, payload);
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    match run.as_mut().poll(&mut cx) {
                        Poll::Ready(r) => Ok(r),
                        Poll::Pending => Err(run),
                    }
                }))
            };
            let outcome = match first {
                Ok(Err(run)) => return crate::observe::spawn_within(span, call.run(run)),
                Ok(Ok(r)) => Ok(r),
                Err(panic) => Err(panic),
            };
            // What the handler handed back (its response's buffer, its panic's payload) is
            // dropped here, on the reader, and its drop is the handler's code: a panic there
            // must end this call, never the reader (the slot goes with the guard as it unwinds).
            if let Err(panic) =
                std::panic::catch_unwind(AssertUnwindSafe(|| call.answer_now(outcome, span)))
            {
                let rec = panic_record(panic);
                warn!(peer = %session.peer, handler = %registry.name_of(route.handler), "panic dropping a response: {}", String::from_utf8_lossy(&rec.message));
            }
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

/// A unary handler's result, or its panic.
type Outcome = std::thread::Result<Result<Bytes, RemoteError>>;

/// What a unary call needs once its handler has returned, or while it runs in a task.
struct UnaryCall {
    machine: UnaryCallee,
    cancel: CancelSignal,
    deadline: Option<Instant>,
    guard: SlotGuard,
    registry: Arc<Registry>,
    handler_id: HandlerId,
}

impl UnaryCall {
    /// The task of a handler that waited on its first poll: runs it to its end, within the
    /// call's deadline and cancellation, then answers.
    async fn run(mut self, run: BoxFuture<'static, Result<Bytes, RemoteError>>) {
        let mut run = AssertUnwindSafe(run).catch_unwind();
        let deadline = self.deadline;
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        // Biased, handler first: a handler that finishes on this poll never registers the
        // deadline timer or the cancellation waiter.
        let result = tokio::select! {
            biased;
            r = &mut run => r,
            cause = self.cancel.cancelled() => {
                self.guard.obs.cancelled(cause);
                self.machine.abort(cause);
                return cancel_grace(run, self.guard).boxed().await;
            }
            () = sleep => {
                let mut guard = self.guard;
                guard.obs.cancelled(CancelCause::Deadline);
                self.cancel.cancel(CancelCause::Deadline);
                if guard.session.commit_response(guard.key) {
                    if let Some(f) = self.machine.handle_timeout(Instant::now()) {
                        guard.session.send_control(&f);
                    }
                }
                return cancel_grace(run, guard).boxed().await;
            }
        };
        if let Some((frame, guard)) = self.respond(result) {
            guard.session.send_response(&frame).await;
        }
    }

    /// Answers for a handler that returned on its first poll: the response is queued now if
    /// the data lane has room (the reader never waits), else by a task that waits for room
    /// while it holds the call's slot.
    fn answer_now(self, result: Outcome, span: tracing::Span) {
        let Some((frame, guard)) = self.respond(result) else {
            return;
        };
        if guard.session.may_compress(&frame) {
            // Compressing a large answer is work for a task: every other call on the link waits
            // while the reader works. Charged now, as below.
            let send = guard.session.send_response_later(frame);
            crate::observe::spawn_within(span, async move {
                send.await;
                drop(guard);
            });
            return;
        }
        {
            // Queuing is cancel safe (whole or not at all): a try that would wait is dropped
            // and the task tries again.
            let send = guard.session.send_response(&frame);
            let mut send = std::pin::pin!(send);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if send.as_mut().poll(&mut cx).is_ready() {
                return;
            }
        }
        // Polled once here before it is spawned: its bytes are then charged to the
        // pending-response budget before the reader admits another call (a task that had not
        // run yet would leave them uncounted, and a burst in one message admitted past the
        // budget). The first poll queues it if room came meanwhile.
        let mut wait = Box::pin(async move {
            guard.session.send_response(&frame).await;
            drop(guard);
        });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if wait.as_mut().poll(&mut cx).is_pending() {
            crate::observe::spawn_within(span, wait);
        }
    }

    /// Turns the handler's outcome into the response frame, if the call still wants one (a
    /// `Cancel` may have come first), with the slot to hold until it is queued.
    fn respond(mut self, result: Outcome) -> Option<(Frame, SlotGuard)> {
        let session = &self.guard.session;
        let result = match result {
            Ok(Ok(bytes)) if bytes.len() > session.max_payload() => Err(ErrorRecord::text(
                ErrorCode::TooLarge,
                format!(
                    "response of {} bytes from {} exceeds the limit of {}",
                    bytes.len(),
                    self.registry.name_of(self.handler_id),
                    session.max_payload()
                ),
            )),
            Ok(Ok(bytes)) => Ok(Some(bytes)),
            Ok(Err(e)) => Err(e.into_record()),
            Err(panic) => {
                let rec = panic_record(panic);
                let handler = self.registry.name_of(self.handler_id);
                warn!(peer = %session.peer, handler = %handler, "{}", String::from_utf8_lossy(&rec.message));
                Err(rec)
            }
        };
        self.guard.obs.returned(&result, self.cancel.cause());
        // Committing first means a Cancel that arrives now finds nothing: the response is
        // already on its way. The slot is held until it is queued.
        if !session.commit_response(self.guard.key) {
            return None;
        }
        let frame = self.machine.respond(result)?;
        Some((frame, self.guard))
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
    // Boxed: the wait for room would otherwise be part of the task for the stream's whole life.
    end_stream(result, shared, guard).boxed().await;
}

/// Sends a stream's end in the data lane, behind the messages the handler sent, once there is
/// room; then lets the slot go.
async fn end_stream(
    result: Result<(), ErrorRecord>,
    shared: Shared<StreamCallee>,
    guard: SlotGuard,
) {
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
