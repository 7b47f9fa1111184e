//! The user-facing ends of a stream: what a caller holds ([`RequestSender`], [`ResponseReceiver`])
//! and what a handler holds ([`RequestReceiver`], [`ResponseSender`]).
//!
//! Each handle shares its stream's sans-IO machine with the socket reader. Both ends move
//! batches:
//!
//! - **receiving** takes every message queued (up to half a window) in one lock of the stream
//!   into the handle's own buffer and hands them out one by one with no lock; coming back for
//!   the next chunk counts the last one as consumed, which returns its credit (in messages and
//!   bytes) and releases it from the connection's byte budget. The reader wakes a waiting
//!   consumer once per run of frames, not once per message;
//! - **sending** ([`ResponseSender::send_all`], [`RequestSender::send_all`], or `send` for one)
//!   takes the stream's lock and the socket queue's lock once, and for as many messages as credit
//!   and queue room allow takes a credit, numbers the frame and encodes it straight into the
//!   outgoing batch; then it waits for credit or room and goes on. Sequence order is queue order,
//!   and a dropped future never loses a numbered frame.
//!
//! There is no task and no channel per stream.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;

use crate::cancel::CancelSignal;
use crate::conn::outq::{Bound, DataWriter, Refused, ITEM_MAX};
use crate::conn::session::Session;
use crate::conn::slot::{Machine, Shared, Slot};
use crate::error::Error;
use crate::frame::{self, Frame, Payload, FRAME_HEADER_LEN};
use crate::ids::{HandlerId, MuxId};
use crate::mux::{CancelCause, MuxError, RecvChunk, SendRefusal, StreamCallee, StreamCaller};

/// Makes sure `local` (the chunk taken last, handed out without a lock) holds messages: when it
/// is empty, takes the next chunk under the stream's lock, which counts the last one as consumed
/// and returns its credit. `Ready(Ok(true))` with messages in `local`, `Ready(Ok(false))` after
/// a clean end, one `Ready(Err)` (mapped by `map_err`) when the direction failed, after every
/// message before it, then `Ready(Ok(false))`. `done` remembers the end.
fn poll_fill<M: Machine>(
    session: &Session,
    shared: &Shared<M>,
    local: &mut VecDeque<Payload>,
    done: &mut bool,
    cx: &mut TaskContext<'_>,
    map_err: impl FnOnce(MuxError) -> Error,
) -> Poll<Result<bool, Error>> {
    if !local.is_empty() {
        return Poll::Ready(Ok(true));
    }
    if *done {
        return Poll::Ready(Ok(false));
    }
    let mut slot = shared.lock();
    let chunk = slot.poll_recv_chunk(local);
    session.transmit(&mut slot.machine);
    match chunk {
        RecvChunk::Items(_) => Poll::Ready(Ok(true)),
        RecvChunk::End(Ok(())) => {
            *done = true;
            Poll::Ready(Ok(false))
        }
        RecvChunk::End(Err(e)) => {
            *done = true;
            Poll::Ready(Err(map_err(e)))
        }
        RecvChunk::Empty => {
            match &slot.recv_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => slot.recv_waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        }
    }
}

/// The next message for a `Stream` impl: `None` after a clean end, one `Err` when the direction
/// failed, then `None` (see [`poll_fill`]).
fn poll_stream<M: Machine>(
    session: &Session,
    shared: &Shared<M>,
    local: &mut VecDeque<Payload>,
    done: &mut bool,
    cx: &mut TaskContext<'_>,
    map_err: impl FnOnce(MuxError) -> Error,
) -> Poll<Option<Result<Bytes, Error>>> {
    match poll_fill(session, shared, local, done, cx, map_err) {
        Poll::Ready(Ok(true)) => Poll::Ready(local.pop_front().map(|p| Ok(p.unwrap_or_default()))),
        Poll::Ready(Ok(false)) => Poll::Ready(None),
        Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        Poll::Pending => Poll::Pending,
    }
}

/// Moves up to `limit` (at least 1) of the messages received so far into `buf`, waiting for one
/// if there is none: `Ok(n)` with `n > 0`, `Ok(0)` after a clean end, one `Err` when the
/// direction failed, after every message before it (see [`poll_fill`]).
#[allow(clippy::too_many_arguments)]
fn poll_many<M: Machine>(
    session: &Session,
    shared: &Shared<M>,
    local: &mut VecDeque<Payload>,
    done: &mut bool,
    cx: &mut TaskContext<'_>,
    map_err: impl FnOnce(MuxError) -> Error,
    buf: &mut Vec<Bytes>,
    limit: usize,
) -> Poll<Result<usize, Error>> {
    match poll_fill(session, shared, local, done, cx, map_err) {
        Poll::Ready(Ok(true)) => {
            let n = limit.max(1).min(local.len());
            buf.extend(local.drain(..n).map(Option::unwrap_or_default));
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Ok(false)) => Poll::Ready(Ok(0)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Messages to send, each written straight into its frame in the outgoing batch.
///
/// The sender takes a message out ([`take`](Self::take)) and writes it from where it is, and
/// gives back ([`keep`](Self::keep)) one it could not queue yet. Taken rather than looked at in
/// place: a message moved into a look-ahead slot was copied there with one wide load over the
/// narrower stores that had just built it, which the CPU could not forward (BENCHMARKS.md,
/// "eleventh session").
trait Source {
    /// A message.
    type Item;
    /// Why a message could not be written.
    type Error: From<Error>;
    /// The next message, taken out of the source.
    fn take(&mut self) -> Option<Self::Item>;
    /// Gives back `item`, taken and not queued: it comes next again.
    fn keep(&mut self, item: Self::Item);
    /// Writes `item`'s payload at the end of `dst` (what it wrote on error is cut off again),
    /// within `max_payload` bytes.
    fn write(
        &mut self,
        item: &Self::Item,
        dst: &mut BytesMut,
        max_payload: usize,
    ) -> Result<(), Self::Error>;
    /// `item`'s payload length, when it is known before it is written.
    fn len(_item: &Self::Item) -> Option<usize> {
        None
    }
    /// `item` as it is, when it is held as bytes longer than `large_above` (its frame goes in
    /// parts): it is then queued without a copy. Otherwise `item` back, to be written.
    fn large(item: Self::Item, _large_above: usize) -> Result<Bytes, Self::Item> {
        Err(item)
    }
}

/// Byte messages, copied into the batch as they are; one that goes in parts is queued as it is
/// ([`Source::large`]).
struct BytesSource<I: Iterator<Item = Bytes>>(Pending<I>);

impl<I: Iterator<Item = Bytes>> BytesSource<I> {
    fn new(items: I) -> Self {
        BytesSource(Pending::new(items))
    }
}

/// An iterator's items, and the one given back, which comes next.
struct Pending<I: Iterator> {
    items: I,
    kept: Option<I::Item>,
}

impl<I: Iterator> Pending<I> {
    fn new(items: I) -> Self {
        Pending { items, kept: None }
    }

    #[inline]
    fn take(&mut self) -> Option<I::Item> {
        match self.kept.take() {
            Some(item) => Some(item),
            None => self.items.next(),
        }
    }

    fn keep(&mut self, item: I::Item) {
        self.kept = Some(item);
    }
}

impl<I: Iterator<Item = Bytes>> Source for BytesSource<I> {
    type Item = Bytes;
    type Error = Error;

    #[inline]
    fn take(&mut self) -> Option<Bytes> {
        self.0.take()
    }

    fn keep(&mut self, item: Bytes) {
        self.0.keep(item);
    }

    #[inline]
    fn write(&mut self, item: &Bytes, dst: &mut BytesMut, max_payload: usize) -> Result<(), Error> {
        if item.len() > max_payload {
            return Err(too_large(item.len(), max_payload));
        }
        dst.extend_from_slice(item);
        Ok(())
    }

    fn len(item: &Bytes) -> Option<usize> {
        Some(item.len())
    }

    fn large(item: Bytes, large_above: usize) -> Result<Bytes, Bytes> {
        if item.len() > large_above {
            Ok(item)
        } else {
            Err(item)
        }
    }
}

#[cold]
fn too_large(len: usize, limit: usize) -> Error {
    Error::PayloadTooLarge { len, limit }
}

/// Messages an encoder writes, one call per message (the typed layer's serializer).
struct EncodeSource<I: Iterator, F> {
    items: Pending<I>,
    encode: F,
}

impl<I: Iterator, F> EncodeSource<I, F> {
    fn new(items: I, encode: F) -> Self {
        EncodeSource {
            items: Pending::new(items),
            encode,
        }
    }
}

impl<T, I, F, E> Source for EncodeSource<I, F>
where
    I: Iterator<Item = T>,
    F: FnMut(&T, &mut BytesMut) -> Result<(), E>,
    E: From<Error>,
{
    type Item = T;
    type Error = E;

    #[inline]
    fn take(&mut self) -> Option<T> {
        self.items.take()
    }

    fn keep(&mut self, item: T) {
        self.items.keep(item);
    }

    fn write(&mut self, item: &T, dst: &mut BytesMut, max_payload: usize) -> Result<(), E> {
        let start = dst.len();
        (self.encode)(item, dst)?;
        let len = dst.len() - start;
        if len > max_payload {
            return Err(too_large(len, max_payload).into());
        }
        Ok(())
    }
}

/// A `Data` frame's bytes before its payload: the header and the sequence number.
const DATA_HEAD_LEN: usize = FRAME_HEADER_LEN + 4;

/// What one pass of [`append`] left.
enum Step<E> {
    /// Everything was queued.
    Done,
    /// A whole batch was queued: let the writer have it, then go on.
    More,
    /// No credit in one of the windows: wait for the peer.
    NoCredit,
    /// The socket's data lane is at its bound: wait for the writer.
    Full,
    /// The direction is over.
    Closed,
    /// A message could not be written; the ones before it are queued.
    Failed(E),
}

/// Queues messages from `src` while the stream has credit and the data lane has room: one lock
/// of the stream and one of the lane for all of them. Under both locks each message takes its
/// credit, gets its sequence number and is encoded into the lane, so sequence order is queue
/// order and a message is queued whole or not at all.
fn append<M: Machine, S: Source>(
    session: &Session,
    slot: &mut Slot<M>,
    src: &mut S,
) -> Step<S::Error> {
    let (mux, max) = (slot.machine.mux(), session.max_payload());
    let items = session.items();
    let machine = &mut slot.machine;
    let appended = session.append_data(Bound::Room, |w| {
        // Payloads longer than this go in parts.
        let large_above = w.large_above().saturating_sub(DATA_HEAD_LEN);
        loop {
            let Some(item) = src.take() else {
                return Ok(Step::Done);
            };
            let stop = if w.has_room() {
                match machine.send_ready() {
                    Ok(()) => None,
                    Err(SendRefusal::NoCredit) => Some(Step::NoCredit),
                    Err(SendRefusal::Closed) => Some(Step::Closed),
                }
            } else {
                Some(Step::Full)
            };
            if let Some(step) = stop {
                src.keep(item);
                return Ok(step);
            }
            let seq = machine.next_seq();
            // A message that goes in parts is queued as it is: copied into the run, it would hold
            // the lane's lock (and every producer and the writer of the link) for the whole copy.
            let item = match S::large(item, large_above) {
                Ok(bytes) if bytes.len() > max => return Err(too_large(bytes.len(), max).into()),
                Ok(bytes) => {
                    machine.spend(queue_large(w, mux, seq, bytes));
                    continue;
                }
                Err(item) => item,
            };
            // Small ones go packed in `Items` frames to a peer that agreed; the rest (and an
            // encoder's that turn out long) as `Data` frames.
            let len = if items && S::len(&item).is_none_or(|l| l <= ITEM_MAX) {
                w.item(mux.0, seq, |dst| src.write(&item, dst, max))?
            } else {
                w.frame(|dst| {
                    frame::encode_data_with(mux, seq, false, dst, |d| src.write(&item, d, max))
                })?
            };
            drop(item);
            machine.spend(len);
            if w.run_full() {
                return Ok(Step::More);
            }
        }
    });
    match appended {
        Ok(step) => step,
        Err(Refused::By(e)) => Step::Failed(e),
        Err(Refused::Closed) => Step::Closed,
        Err(Refused::Full | Refused::Stuck) => Step::Full,
    }
}

/// Queues `item`, a message whose frame goes in parts, as it is (out of the hot loop of
/// [`append`]); returns its length.
#[cold]
#[inline(never)]
fn queue_large(w: &mut DataWriter<'_>, mux: MuxId, seq: u32, item: Bytes) -> usize {
    let len = item.len();
    let payload = Some(item);
    w.large(
        mux.0,
        frame::encode_split(&Frame::Data { mux, seq, payload }),
    );
    len
}

/// Why [`send_from`] stopped short.
enum SendFail<E> {
    /// The direction is over.
    Closed,
    /// A message could not be written.
    Failed(E),
}

/// Sends every message of `src`, waiting for credit and for room in the socket's queue as
/// needed. If the future is dropped, the messages queued so far stay queued, in order, and the
/// rest are not sent.
async fn send_from<M: Machine, S: Source>(
    session: &Session,
    shared: &Shared<M>,
    src: &mut S,
) -> Result<(), SendFail<S::Error>> {
    loop {
        let step = {
            let mut slot = shared.lock();
            append(session, &mut slot, src)
        };
        match step {
            Step::Done => return Ok(()),
            // Let the writer, woken by the first frames, take this batch on this worker while
            // the rest of ours moves to another (a task woken here waits behind us otherwise).
            Step::More => tokio::task::yield_now().await,
            Step::Closed => return Err(SendFail::Closed),
            Step::Failed(e) => return Err(SendFail::Failed(e)),
            Step::NoCredit => wait_credit(shared).await,
            Step::Full => {
                if session.data_room().await.is_err() {
                    return Err(SendFail::Closed);
                }
            }
        }
    }
}

/// Most messages [`send_stream`] gathers from a stream before it queues them.
const GATHER: usize = 1024;

/// Sends every message of `stream`: waits for one, takes every further one the stream has ready
/// right now (at most [`GATHER`]), and queues them together, so a fast stream moves in batches
/// and a slow one goes message by message without delay.
async fn send_stream<M, S>(
    session: &Session,
    shared: &Shared<M>,
    stream: S,
) -> Result<(), SendFail<Error>>
where
    M: Machine,
    S: Stream<Item = Bytes>,
{
    use futures::{FutureExt, StreamExt};
    let mut stream = std::pin::pin!(stream);
    let mut batch = VecDeque::new();
    while let Some(first) = stream.next().await {
        batch.push_back(first);
        let mut ended = false;
        while batch.len() < GATHER {
            // Polling again with the real waker (the `next().await` above) re-registers it, so
            // a poll with none here loses no wake-up.
            match stream.next().now_or_never() {
                Some(Some(item)) => batch.push_back(item),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        let mut src = BytesSource::new(batch.drain(..));
        send_from(session, shared, &mut src).await?;
        if ended {
            break;
        }
    }
    Ok(())
}

/// Waits until the stream may send again (credit in both windows) or is over.
async fn wait_credit<M: Machine>(shared: &Shared<M>) {
    futures::future::poll_fn(|cx| {
        let mut slot = shared.lock();
        if !matches!(slot.machine.send_ready(), Err(SendRefusal::NoCredit)) {
            return Poll::Ready(());
        }
        match &slot.send_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.send_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    })
    .await;
}

/// The caller's receiving end of a stream: the callee's messages, in order, then the end.
///
/// A clean end is `None`; anything else ends with one `Err` item (a remote error, a disconnect,
/// a deadline, ...), after every message that arrived before it. Dropping the receiver before the
/// end cancels the stream on the callee.
pub struct ResponseReceiver {
    session: Arc<Session>,
    shared: Shared<StreamCaller>,
    handler: HandlerId,
    subroute: Option<String>,
    /// The chunk taken last, handed out without a lock.
    local: VecDeque<Payload>,
    done: bool,
}

impl fmt::Debug for ResponseReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseReceiver")
            .field("peer", &self.session.peer)
            .field("handler", &self.handler)
            .field("done", &self.done)
            .finish()
    }
}

impl ResponseReceiver {
    pub(crate) fn new(
        session: Arc<Session>,
        shared: Shared<StreamCaller>,
        handler: HandlerId,
        subroute: Option<String>,
    ) -> ResponseReceiver {
        ResponseReceiver {
            session,
            shared,
            handler,
            subroute,
            local: VecDeque::new(),
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

    /// Waits for the next message, then moves into `buf` every message already received after
    /// it too (at most `limit`, and at most half a window at a time): one lock of the stream for
    /// all of them. Returns how many it added; `0` after a clean end.
    ///
    /// # Errors
    /// Why the stream ended, if not cleanly; returned once, after the messages before it.
    ///
    /// # Cancel safety
    /// Cancel safe: messages are moved only when the call returns.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> Result<usize, Error> {
        let (session, handler) = (&self.session, self.handler);
        let (shared, subroute) = (&self.shared, &self.subroute);
        let (local, done) = (&mut self.local, &mut self.done);
        futures::future::poll_fn(|cx| {
            poll_many(
                session,
                shared,
                local,
                done,
                cx,
                |e| Error::from_mux(e, &session.peer, handler, subroute.as_deref()),
                buf,
                limit,
            )
        })
        .await
    }

    /// Cancels the stream now; the callee's handler sees `CallerGaveUp`. Messages received and
    /// not yet returned are dropped.
    pub fn cancel(&mut self) {
        self.local.clear();
        let mut slot = self.shared.lock();
        if let Some(f) = slot.machine.cancel() {
            self.session.cancel_call(&f);
        }
        slot.settle();
        slot.wake();
        let mux = slot.machine.mux();
        drop(slot);
        self.session.forget_stream(mux);
    }
}

impl Stream for ResponseReceiver {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let (session, handler, subroute) = (&this.session, this.handler, &this.subroute);
        poll_stream(
            session,
            &this.shared,
            &mut this.local,
            &mut this.done,
            cx,
            |e| Error::from_mux(e, &session.peer, handler, subroute.as_deref()),
        )
    }
}

impl Drop for ResponseReceiver {
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

/// Maps why a caller's send stopped to what the user sees.
fn caller_send_error(fail: SendFail<Error>) -> Error {
    match fail {
        SendFail::Closed => Error::Cancelled,
        SendFail::Failed(e) => e,
    }
}

/// The caller's sending end of a two-way or client stream. Dropping it (or calling
/// [`finish`](Self::finish)) ends the input stream cleanly.
pub struct RequestSender {
    session: Arc<Session>,
    shared: Shared<StreamCaller>,
}

impl fmt::Debug for RequestSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSender")
            .field("peer", &self.session.peer)
            .finish()
    }
}

impl RequestSender {
    pub(crate) fn new(session: Arc<Session>, shared: Shared<StreamCaller>) -> RequestSender {
        RequestSender { session, shared }
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
        self.send_all(std::iter::once(item)).await
    }

    /// Sends every message of `items`, in order, as many at a time as the windows and the
    /// socket's queue allow: one lock of the stream and of the queue per batch, each message
    /// encoded straight into the outgoing batch. The fast way to send many small messages.
    /// A message too long for one part (over `Config::chunk_size` with its 14-byte frame head)
    /// is queued as it is, without a copy, and goes in parts: the queue holds the message's
    /// buffer (the whole allocation a slice is cut from) until its last part is written.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] for the first message over the limit (the ones before it are
    /// sent); [`Error::Cancelled`] once the stream is over (the receiver says why).
    ///
    /// # Cancel safety
    /// If the future is dropped, the messages queued so far are sent, in order, and the rest
    /// are not; none is sent in part.
    pub async fn send_all<I>(&mut self, items: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = Bytes>,
    {
        let mut src = BytesSource::new(items.into_iter());
        send_from(&self.session, &self.shared, &mut src)
            .await
            .map_err(caller_send_error)
    }

    /// Sends every message of `stream` until it ends: whatever the stream has ready at once is
    /// queued together, as [`send_all`](Self::send_all) would.
    ///
    /// # Errors
    /// As [`send_all`](Self::send_all).
    ///
    /// # Cancel safety
    /// If the future is dropped, the messages queued so far are sent, in order; messages taken
    /// from `stream` and not yet queued are dropped.
    pub async fn send_stream<S>(&mut self, stream: S) -> Result<(), Error>
    where
        S: Stream<Item = Bytes>,
    {
        send_stream(&self.session, &self.shared, stream)
            .await
            .map_err(caller_send_error)
    }

    /// Sends every item of `items`, each written straight into its frame by `encode` (which
    /// appends the item's payload to the buffer it is given): no buffer per message. Otherwise
    /// like [`send_all`](Self::send_all).
    ///
    /// # Errors
    /// `encode`'s error for the first item it fails on, [`Error::PayloadTooLarge`] (as `E`) for
    /// the first item over the limit (the items before either are sent); [`Error::Cancelled`]
    /// once the stream is over.
    ///
    /// # Cancel safety
    /// As [`send_all`](Self::send_all).
    pub async fn send_encoded<T, I, F, E>(&mut self, items: I, encode: F) -> Result<(), E>
    where
        I: IntoIterator<Item = T>,
        F: FnMut(&T, &mut BytesMut) -> Result<(), E>,
        E: From<Error>,
    {
        let mut src = EncodeSource::new(items.into_iter(), encode);
        send_from(&self.session, &self.shared, &mut src)
            .await
            .map_err(|f| match f {
                SendFail::Closed => E::from(Error::Cancelled),
                SendFail::Failed(e) => e,
            })
    }

    /// Ends the input stream cleanly.
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for RequestSender {
    fn drop(&mut self) {
        let mut slot = self.shared.lock();
        if let Some(end) = slot.machine.finish() {
            let _ = self.session.push_data_now(&end);
        }
    }
}

/// A handler's input stream: the caller's messages, then `None` when the caller finished.
pub struct RequestReceiver {
    session: Arc<Session>,
    shared: Shared<StreamCallee>,
    /// The chunk taken last, handed out without a lock.
    local: VecDeque<Payload>,
    done: bool,
}

impl fmt::Debug for RequestReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestReceiver")
            .field("peer", &self.session.peer)
            .finish()
    }
}

impl RequestReceiver {
    pub(crate) fn new(session: Arc<Session>, shared: Shared<StreamCallee>) -> RequestReceiver {
        RequestReceiver {
            session,
            shared,
            local: VecDeque::new(),
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

    /// Waits for the next message, then moves into `buf` every message already received after
    /// it too (at most `limit`, and at most half a window at a time): one lock of the stream for
    /// all of them. Returns how many it added; `0` once the caller finished sending.
    ///
    /// # Errors
    /// [`Error::Cancelled`] if the call was cancelled (the context says why).
    ///
    /// # Cancel safety
    /// Cancel safe: messages are moved only when the call returns.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> Result<usize, Error> {
        let (session, shared) = (&self.session, &self.shared);
        let (local, done) = (&mut self.local, &mut self.done);
        futures::future::poll_fn(|cx| {
            poll_many(session, shared, local, done, cx, input_error, buf, limit)
        })
        .await
    }
}

/// What a handler sees when its input failed.
fn input_error(e: MuxError) -> Error {
    match e {
        MuxError::Remote(rec) => Error::Remote(rec.into()),
        _ => Error::Cancelled,
    }
}

impl Stream for RequestReceiver {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        poll_stream(
            &this.session,
            &this.shared,
            &mut this.local,
            &mut this.done,
            cx,
            input_error,
        )
    }
}

impl Drop for RequestReceiver {
    fn drop(&mut self) {
        // The chunk it held is consumed: its credit goes back and the budget lets it go.
        let mut slot = self.shared.lock();
        slot.machine.release_taken();
        slot.settle();
        self.session.transmit(&mut slot.machine);
    }
}

/// A handler's output stream to the caller. The handler's return ends it.
pub struct ResponseSender {
    session: Arc<Session>,
    shared: Shared<StreamCallee>,
    signal: CancelSignal,
}

impl fmt::Debug for ResponseSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseSender")
            .field("peer", &self.session.peer)
            .finish()
    }
}

impl ResponseSender {
    pub(crate) fn new(
        session: Arc<Session>,
        shared: Shared<StreamCallee>,
        signal: CancelSignal,
    ) -> ResponseSender {
        ResponseSender {
            session,
            shared,
            signal,
        }
    }

    /// Why the call is over, as the handler's sends report it.
    fn over(&self) -> Error {
        match self.signal.cause() {
            Some(CancelCause::Disconnected) => Error::Disconnected {
                peer: self.session.peer.to_string(),
            },
            Some(CancelCause::Deadline) => Error::Deadline,
            _ => Error::Cancelled,
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
        self.send_all(std::iter::once(item)).await
    }

    /// Sends every message of `items`, in order, as many at a time as the windows and the
    /// socket's queue allow: one lock of the stream and of the queue per batch, each message
    /// encoded straight into the outgoing batch. The fast way to send many small messages.
    /// A message too long for one part (over `Config::chunk_size` with its 14-byte frame head)
    /// is queued as it is, without a copy, and goes in parts: the queue holds the message's
    /// buffer (the whole allocation a slice is cut from) until its last part is written.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] for the first message over the limit (the ones before it are
    /// sent); once the call is over, as [`send`](Self::send).
    ///
    /// # Cancel safety
    /// If the future is dropped, the messages queued so far are sent, in order, and the rest
    /// are not; none is sent in part.
    pub async fn send_all<I>(&mut self, items: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = Bytes>,
    {
        let mut src = BytesSource::new(items.into_iter());
        match send_from(&self.session, &self.shared, &mut src).await {
            Ok(()) => Ok(()),
            Err(SendFail::Closed) => Err(self.over()),
            Err(SendFail::Failed(e)) => Err(e),
        }
    }

    /// Sends every message of `stream` until it ends: whatever the stream has ready at once is
    /// queued together, as [`send_all`](Self::send_all) would. Forwarding a handler's input
    /// (`out.send_stream(input)`) echoes it in batches.
    ///
    /// # Errors
    /// As [`send_all`](Self::send_all).
    ///
    /// # Cancel safety
    /// If the future is dropped, the messages queued so far are sent, in order; messages taken
    /// from `stream` and not yet queued are dropped.
    pub async fn send_stream<S>(&mut self, stream: S) -> Result<(), Error>
    where
        S: Stream<Item = Bytes>,
    {
        match send_stream(&self.session, &self.shared, stream).await {
            Ok(()) => Ok(()),
            Err(SendFail::Closed) => Err(self.over()),
            Err(SendFail::Failed(e)) => Err(e),
        }
    }

    /// Sends every item of `items`, each written straight into its frame by `encode` (which
    /// appends the item's payload to the buffer it is given): no buffer per message. Otherwise
    /// like [`send_all`](Self::send_all).
    ///
    /// # Errors
    /// `encode`'s error for the first item it fails on, [`Error::PayloadTooLarge`] (as `E`) for
    /// the first item over the limit (the items before either are sent); once the call is over,
    /// as [`send`](Self::send).
    ///
    /// # Cancel safety
    /// As [`send_all`](Self::send_all).
    pub async fn send_encoded<T, I, F, E>(&mut self, items: I, encode: F) -> Result<(), E>
    where
        I: IntoIterator<Item = T>,
        F: FnMut(&T, &mut BytesMut) -> Result<(), E>,
        E: From<Error>,
    {
        let mut src = EncodeSource::new(items.into_iter(), encode);
        match send_from(&self.session, &self.shared, &mut src).await {
            Ok(()) => Ok(()),
            Err(SendFail::Closed) => Err(E::from(self.over())),
            Err(SendFail::Failed(e)) => Err(e),
        }
    }
}
