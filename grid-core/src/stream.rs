//! The user-facing ends of a stream: what a caller holds ([`StreamSender`], [`StreamReceiver`])
//! and what a handler holds ([`HandlerInput`], [`HandlerOutput`]).
//!
//! Each handle shares its stream's sans-IO machine with the socket reader. Receiving takes
//! messages straight out of the machine's bounded queue (and returns credits as it goes); sending
//! waits for a credit, then builds and queues the frame in one step under the machine's lock, so
//! a stream's frames are queued in sequence order and a dropped future never loses a numbered
//! frame. There is no task and no channel per stream.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures::Stream;

use crate::cancel::CancelSignal;
use crate::conn::outq::Refused;
use crate::conn::session::Session;
use crate::conn::slot::{Machine, Shared};
use crate::error::Error;
use crate::ids::HandlerId;
use crate::mux::{CancelCause, MuxError, RecvItem, SendRefusal, StreamCallee, StreamCaller};

/// Polls the next message out of a machine for a `Stream` impl: `None` after a clean end, one
/// `Err` (mapped by `map_err`) when the direction failed, then `None`. `done` remembers the end.
fn poll_stream<M: Machine>(
    session: &Session,
    shared: &Shared<M>,
    done: &mut bool,
    cx: &mut TaskContext<'_>,
    map_err: impl FnOnce(MuxError) -> Error,
) -> Poll<Option<Result<Bytes, Error>>> {
    if *done {
        return Poll::Ready(None);
    }
    let mut slot = shared.lock();
    let item = slot.poll_recv();
    session.transmit(&mut slot.machine);
    match item {
        RecvItem::Item(p) => Poll::Ready(Some(Ok(p.unwrap_or_default()))),
        RecvItem::End(Ok(())) => {
            *done = true;
            Poll::Ready(None)
        }
        RecvItem::End(Err(e)) => {
            *done = true;
            Poll::Ready(Some(Err(map_err(e))))
        }
        RecvItem::Empty => {
            slot.recv_waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Sends one message: waits for a credit and for room in the socket's queue, then queues it.
async fn send_item<M: Machine>(
    session: &Session,
    shared: &Shared<M>,
    item: Bytes,
) -> Result<(), SendRefusal> {
    let mut item = Some(item);
    loop {
        // One lock on the stream, one on the queue: the credit is taken, the frame numbered and
        // queued in one step, and only if the lane has room, so producers woken together
        // cannot each push past the lane's bound. The payload is moved, never copied.
        let pushed = {
            let mut slot = shared.lock();
            session.push_data_with(|| slot.machine.send(item.take()).map(|f| session.encode(&f)))
        };
        match pushed {
            Ok(()) => return Ok(()),
            Err(Refused::Closed) => return Err(SendRefusal::Closed),
            Err(Refused::By(rej)) if rej.reason == SendRefusal::NoCredit => {
                item = rej.payload;
                // Wait for a credit (or the end), then try again.
                futures::future::poll_fn(|cx| {
                    let mut slot = shared.lock();
                    if slot.machine.credits() > 0 || slot.machine.send_closed() {
                        Poll::Ready(())
                    } else {
                        slot.send_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await;
            }
            Err(Refused::By(rej)) => return Err(rej.reason),
            Err(Refused::Full) => {
                if session.data_room().await.is_err() {
                    return Err(SendRefusal::Closed);
                }
            }
        }
    }
}

fn too_large(session: &Session, len: usize) -> Result<(), Error> {
    let limit = session.max_payload();
    if len > limit {
        return Err(Error::PayloadTooLarge { len, limit });
    }
    Ok(())
}

/// The caller's receiving end of a stream: the callee's messages, in order, then the end.
///
/// A clean end is `None`; anything else ends with one `Err` item (a remote error, a disconnect,
/// a deadline, ...), after every message that arrived before it. Dropping the receiver before the
/// end cancels the stream on the callee.
pub struct StreamReceiver {
    session: Arc<Session>,
    shared: Shared<StreamCaller>,
    handler: HandlerId,
    subroute: Option<String>,
    done: bool,
}

impl fmt::Debug for StreamReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReceiver")
            .field("peer", &self.session.peer)
            .field("handler", &self.handler)
            .field("done", &self.done)
            .finish()
    }
}

impl StreamReceiver {
    pub(crate) fn new(
        session: Arc<Session>,
        shared: Shared<StreamCaller>,
        handler: HandlerId,
        subroute: Option<String>,
    ) -> StreamReceiver {
        StreamReceiver {
            session,
            shared,
            handler,
            subroute,
            done: false,
        }
    }

    /// The next message, `None` after a clean end.
    ///
    /// # Errors
    /// Why the stream ended, if not cleanly; returned once, after the messages before it.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<Result<Bytes, Error>> {
        futures::StreamExt::next(self).await
    }

    /// Cancels the stream now; the callee's handler sees `CallerGaveUp`.
    pub fn cancel(&mut self) {
        let mut slot = self.shared.lock();
        if let Some(f) = slot.machine.cancel() {
            self.session.cancel_call(&f);
        }
        slot.settle();
        slot.wake();
        drop(slot);
        self.session.forget_stream(slot_mux(&self.shared));
    }
}

fn slot_mux(shared: &Shared<StreamCaller>) -> crate::ids::MuxId {
    shared.lock().machine.mux()
}

impl Stream for StreamReceiver {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let (session, handler, subroute) = (&this.session, this.handler, &this.subroute);
        poll_stream(session, &this.shared, &mut this.done, cx, |e| {
            Error::from_mux(e, &session.peer, handler, subroute.as_deref())
        })
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        let mut slot = self.shared.lock();
        if let Some(f) = slot.machine.cancel() {
            self.session.cancel_call(&f);
        }
        slot.settle();
        let mux = slot.machine.mux();
        slot.wake();
        drop(slot);
        self.session.forget_stream(mux);
    }
}

/// The caller's sending end of a two-way or client stream. Dropping it (or calling
/// [`finish`](Self::finish)) ends the input stream cleanly.
pub struct StreamSender {
    session: Arc<Session>,
    shared: Shared<StreamCaller>,
}

impl fmt::Debug for StreamSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender")
            .field("peer", &self.session.peer)
            .finish()
    }
}

impl StreamSender {
    pub(crate) fn new(session: Arc<Session>, shared: Shared<StreamCaller>) -> StreamSender {
        StreamSender { session, shared }
    }

    /// Sends one message, waiting while the callee's buffer is full.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`]; [`Error::Cancelled`] once the stream is over (the receiver
    /// says why).
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped, the message was either queued whole or not at all.
    pub async fn send(&mut self, item: Bytes) -> Result<(), Error> {
        too_large(&self.session, item.len())?;
        send_item(&self.session, &self.shared, item)
            .await
            .map_err(|_| Error::Cancelled)
    }

    /// Ends the input stream cleanly.
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        let mut slot = self.shared.lock();
        if let Some(end) = slot.machine.finish() {
            let _ = self.session.push_data_now(&end);
        }
    }
}

/// A handler's input stream: the caller's messages, then `None` when the caller finished.
pub struct HandlerInput {
    session: Arc<Session>,
    shared: Shared<StreamCallee>,
    done: bool,
}

impl fmt::Debug for HandlerInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerInput")
            .field("peer", &self.session.peer)
            .finish()
    }
}

impl HandlerInput {
    pub(crate) fn new(session: Arc<Session>, shared: Shared<StreamCallee>) -> HandlerInput {
        HandlerInput {
            session,
            shared,
            done: false,
        }
    }

    /// The next message, `None` once the caller finished sending.
    ///
    /// # Errors
    /// [`Error::Cancelled`] if the call was cancelled (the context says why).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Result<Bytes, Error>> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for HandlerInput {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        poll_stream(
            &this.session,
            &this.shared,
            &mut this.done,
            cx,
            |e| match e {
                MuxError::Remote(rec) => Error::Remote(rec.into()),
                _ => Error::Cancelled,
            },
        )
    }
}

/// A handler's output stream to the caller. The handler's return ends it.
pub struct HandlerOutput {
    session: Arc<Session>,
    shared: Shared<StreamCallee>,
    signal: CancelSignal,
}

impl fmt::Debug for HandlerOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerOutput")
            .field("peer", &self.session.peer)
            .finish()
    }
}

impl HandlerOutput {
    pub(crate) fn new(
        session: Arc<Session>,
        shared: Shared<StreamCallee>,
        signal: CancelSignal,
    ) -> HandlerOutput {
        HandlerOutput {
            session,
            shared,
            signal,
        }
    }

    /// Sends one message to the caller, waiting while the caller's buffer is full.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`]; once the call is over, [`Error::Disconnected`],
    /// [`Error::Deadline`] or [`Error::Cancelled`] according to why.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped, the message was either queued whole or not at all.
    pub async fn send(&mut self, item: Bytes) -> Result<(), Error> {
        too_large(&self.session, item.len())?;
        send_item(&self.session, &self.shared, item)
            .await
            .map_err(|_| match self.signal.cause() {
                Some(CancelCause::Disconnected) => Error::Disconnected {
                    peer: self.session.peer.to_string(),
                },
                Some(CancelCause::Deadline) => Error::Deadline,
                _ => Error::Cancelled,
            })
    }
}
