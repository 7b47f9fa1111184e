//! The typed layer's runtime: the values that `#[grid::handler]` code hands to handlers and callers.
//!
//! Every payload is msgpack with field names (`rmp_serde::to_vec_named`), so a struct can gain a
//! `#[serde(default)]` field and still talk to older peers. A handler's error `E` travels as an
//! application error record whose message is `E` encoded the same way; the caller decodes it back
//! and sees [`CallError::Remote`].
//!
//! Stream items are encoded once, straight into their frame in the outgoing batch (no buffer of
//! their own), and decoded from the slice of the received message they arrived in. `send_all`
//! and `recv_many` move many items per lock of the stream, as the untyped ends do.

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::Stream;
use grid_core as raw;
use grid_core::{
    CallOptions, Connection, Error, ErrorCode, HandlerSpec, Metadata, RemoteError, StreamOptions,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The error of a typed call: either the handler returned its error `E`, or the call itself
/// failed (disconnect, deadline, cancellation, unknown handler, protocol or codec error).
#[derive(Debug)]
pub enum CallError<E> {
    /// The handler ran and returned `E`.
    Remote(E),
    /// The call did not complete: see [`Error`].
    Transport(Error),
}

impl<E> CallError<E> {
    /// The handler's error, if that is what this is.
    pub fn remote(&self) -> Option<&E> {
        match self {
            CallError::Remote(e) => Some(e),
            CallError::Transport(_) => None,
        }
    }

    /// The transport error, if that is what this is.
    pub fn transport(&self) -> Option<&Error> {
        match self {
            CallError::Remote(_) => None,
            CallError::Transport(e) => Some(e),
        }
    }
}

impl<E: fmt::Debug> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Remote(e) => write!(f, "the handler returned an error: {e:?}"),
            CallError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Remote(_) => None,
            CallError::Transport(e) => Some(e),
        }
    }
}

impl<E> From<Error> for CallError<E> {
    fn from(e: Error) -> CallError<E> {
        CallError::Transport(e)
    }
}

/// Bytes of the block a thread encodes unary payloads into.
const SCRATCH_BLOCK: usize = 16 << 10;

thread_local! {
    /// Where this thread encodes unary payloads: each payload is split off the front of the
    /// block, and the block is reused once every payload cut from it is gone (they are copied
    /// into their frames at once), so a steady flow of calls allocates nothing per payload.
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Encodes a payload (msgpack with field names).
fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    SCRATCH.with(|scratch| {
        let Ok(mut buf) = scratch.try_borrow_mut() else {
            // A value whose serialization encodes another payload: a buffer of its own.
            let mut buf = BytesMut::new();
            encode_into(value, &mut buf)?;
            return Ok(buf.freeze());
        };
        if buf.capacity() < SCRATCH_BLOCK / 4 {
            // Takes the block back in place when nothing cut from it is still alive.
            buf.reserve(SCRATCH_BLOCK);
        }
        let encoded = encode_into(value, &mut buf);
        let out = buf.split().freeze();
        if buf.capacity() > SCRATCH_BLOCK * 4 {
            // A large payload grew the block: let it go with its last payload.
            *buf = BytesMut::new();
        }
        encoded.map(|()| out)
    })
}

/// Encodes a stream item at the end of `dst` (straight into its frame): a [`Bytes`] item as its
/// msgpack bin directly, anything else through [`encode_into`].
#[inline(always)]
fn encode_item<T: Serialize + 'static>(value: &T, dst: &mut BytesMut) -> Result<(), Error> {
    match (value as &dyn Any).downcast_ref::<Bytes>() {
        Some(b) if b.len() <= usize::from(u8::MAX) => {
            // What rmp writes for a short bin: its marker and length byte, then the bytes
            // (one reservation for all three).
            dst.reserve(2 + b.len());
            dst.put_u8(0xc4);
            dst.put_u8(b.len() as u8);
            dst.put_slice(b);
            Ok(())
        }
        Some(b) => encode_long_bin(b, dst),
        None => encode_into(value, dst),
    }
}

/// [`encode_item`] of a [`Bytes`] item longer than 255 bytes: the shortest bin header rmp
/// writes, then the bytes.
#[inline(never)]
fn encode_long_bin(b: &Bytes, dst: &mut BytesMut) -> Result<(), Error> {
    match (u16::try_from(b.len()), u32::try_from(b.len())) {
        (Ok(n), _) => {
            dst.put_u8(0xc5);
            dst.put_u16(n);
        }
        (_, Ok(n)) => {
            dst.put_u8(0xc6);
            dst.put_u32(n);
        }
        _ => return encode_into(b, dst),
    }
    dst.put_slice(b);
    Ok(())
}

/// Encodes a payload at the end of `dst` (straight into a frame).
#[inline(never)]
fn encode_into<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), Error> {
    rmp_serde::encode::write_named(&mut dst.writer(), value)
        .map_err(|e| Error::Codec(format!("encoding {}: {e}", std::any::type_name::<T>())))
}

/// Decodes a payload.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| Error::Codec(format!("decoding {}: {e}", std::any::type_name::<T>())))
}

/// Decodes a payload that arrived as `bytes`. A payload whose type is [`Bytes`] itself and that
/// is one msgpack bin (how `Bytes` encodes) comes back as a slice of `bytes`: no copy, no
/// allocation. Anything else decodes from the slice as [`decode`] does.
#[inline]
fn decode_owned<T: DeserializeOwned + 'static>(bytes: Bytes) -> Result<T, Error> {
    match as_bytes_payload(bytes) {
        Ok(v) => Ok(v),
        Err(bytes) => decode(&bytes),
    }
}

/// `bytes` as the `T` it encodes when `T` is [`Bytes`] and `bytes` is one msgpack bin (a slice,
/// no copy); else `bytes` back, for serde.
#[inline]
fn as_bytes_payload<T: 'static>(mut bytes: Bytes) -> Result<T, Bytes> {
    if TypeId::of::<T>() != TypeId::of::<Bytes>() {
        return Err(bytes);
    }
    let Some(header) = bin_header(&bytes) else {
        return Err(bytes);
    };
    bytes.advance(header);
    let mut out: Option<T> = None;
    if let Some(slot) = (&mut out as &mut dyn Any).downcast_mut::<Option<Bytes>>() {
        *slot = Some(bytes);
    }
    out.ok_or_else(Bytes::new)
}

/// The length of the msgpack header when `p` is exactly one bin (`bin 8`, `bin 16` or
/// `bin 32`).
fn bin_header(p: &[u8]) -> Option<usize> {
    let (&marker, rest) = p.split_first()?;
    let (len, header) = match marker {
        0xc4 => (usize::from(*rest.first()?), 2),
        0xc5 => (usize::from(u16::from_be_bytes(*rest.first_chunk()?)), 3),
        0xc6 => (
            usize::try_from(u32::from_be_bytes(*rest.first_chunk()?)).ok()?,
            5,
        ),
        _ => return None,
    };
    (p.len() == header + len).then_some(header)
}

/// Turns an untyped call error into a typed one, decoding an application error into `E`.
fn typed_error<E: DeserializeOwned>(err: Error) -> CallError<E> {
    match err {
        Error::Remote(re) if re.code == ErrorCode::Application => match decode::<E>(&re.message) {
            Ok(e) => CallError::Remote(e),
            Err(codec) => CallError::Transport(codec),
        },
        other => CallError::Transport(other),
    }
}

/// The handler side of a server or two-way stream: sends typed items to the caller.
///
/// # Example
///
/// A server stream's handler sends its items (the rest of the program is hidden; the
/// [`ResponseReceiver`] example shows the caller).
///
/// ```
/// # use std::net::TcpListener;
/// # use std::time::Duration;
/// #
/// # use futures::StreamExt;
/// #[grid::handler]
/// trait Numbers {
///     /// Sends `0..n`.
///     async fn count(&self, n: u32, out: grid::ResponseSender<u32>) -> Result<(), String>;
///     /// Adds up what the caller sends.
///     async fn sum(&self, input: grid::RequestReceiver<u32>) -> Result<u64, String>;
///     /// Sends every item back, doubled.
///     async fn double(
///         &self,
///         input: grid::RequestReceiver<u32>,
///         out: grid::ResponseSender<u32>,
///     ) -> Result<(), String>;
/// }
///
/// struct Service;
/// impl Numbers for Service {
///     async fn count(&self, n: u32, mut out: grid::ResponseSender<u32>) -> Result<(), String> {
///         // `send` waits for flow-control credit; `send_all` sends many items per wait.
///         out.send_all(0..n).await.map_err(|e| e.to_string())
///     }
/// #     async fn sum(&self, mut input: grid::RequestReceiver<u32>) -> Result<u64, String> {
/// #         let mut total = 0;
/// #         // `None` once the caller has finished its input.
/// #         while let Some(item) = input.recv().await {
/// #             total += u64::from(item.map_err(|e| e.to_string())?);
/// #         }
/// #         Ok(total)
/// #     }
/// #     async fn double(
/// #         &self,
/// #         mut input: grid::RequestReceiver<u32>,
/// #         mut out: grid::ResponseSender<u32>,
/// #     ) -> Result<(), String> {
/// #         while let Some(item) = input.next().await {
/// #             out.send(item.map_err(|e| e.to_string())? * 2)
/// #                 .await
/// #                 .map_err(|e| e.to_string())?;
/// #         }
/// #         Ok(())
/// #     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #     let listeners = [TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?];
/// #     let names = [
/// #         format!("http://{}", listeners[0].local_addr()?),
/// #         format!("http://{}", listeners[1].local_addr()?),
/// #     ];
/// #     let mut nodes = Vec::new();
/// #     for (name, listener) in names.iter().zip(listeners) {
/// #         let node = grid::Manager::builder(name.as_str())
/// #             .peers(names.iter().cloned())
/// #             .secret("docs")
/// #             .listener(listener)
/// #             .start()
/// #             .await?;
/// #         NumbersServer::new(Service).register(&node)?;
/// #         nodes.push(node);
/// #     }
/// #     let numbers = NumbersClient::new(nodes[0].connection(&names[1])?);
/// #     numbers.connection().wait_for_connect(Duration::from_secs(10)).await?;
/// #     // A server stream: the receiver is a `Stream` of items.
/// #     let mut items = numbers.count(3).await?;
/// #     let mut got = Vec::new();
/// #     while let Some(item) = items.next().await {
/// #         got.push(item?);
/// #     }
/// #     assert_eq!(got, [0, 1, 2]);
/// #     // A client stream: send the input, finish it, then await the handler's one result.
/// #     let (mut input, result) = numbers.sum().await?;
/// #     input.send_all([1, 2, 3]).await?;
/// #     input.send(4).await?;
/// #     input.finish();
/// #     assert_eq!(result.response().await?, 10);
/// #     // Two-way: feed the input from one task while reading the output on this one.
/// #     let (mut input, output) = numbers.double().await?;
/// #     let feeder = tokio::spawn(async move {
/// #         input.send_all(1..=3).await?;
/// #         input.finish();
/// #         Ok::<_, grid::Error>(())
/// #     });
/// #     let doubled: Vec<u32> = output.map(|item| item.unwrap()).collect().await;
/// #     feeder.await??;
/// #     assert_eq!(doubled, [2, 4, 6]);
/// #     for node in &nodes {
/// #         node.shutdown().await;
/// #     }
/// #     Ok(())
/// # }
/// ```
pub struct ResponseSender<T> {
    out: raw::ResponseSender,
    _item: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for ResponseSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseSender")
            .field("out", &self.out)
            .finish()
    }
}

impl<T: Serialize + 'static> ResponseSender<T> {
    /// Sends one item, waiting for flow-control credit.
    ///
    /// # Errors
    /// The caller went away ([`Error::Disconnected`], [`Error::Cancelled`], [`Error::Deadline`]),
    /// or the item could not be encoded or is too large.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped, the item was either queued whole or not at all.
    pub async fn send(&mut self, item: T) -> Result<(), Error> {
        self.send_all(std::iter::once(item)).await
    }

    /// Sends every item of `items`, in order, as many at a time as the stream's windows and the
    /// socket's queue allow, each encoded straight into the outgoing batch: the fast way to send
    /// many small items.
    ///
    /// # Errors
    /// As [`send`](Self::send), for the first item that fails (the items before it are sent).
    ///
    /// # Cancel safety
    /// If the future is dropped, the items queued so far are sent, in order, and the rest are
    /// not; none is sent in part.
    pub async fn send_all<I>(&mut self, items: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
    {
        self.out
            .send_encoded(items, |item, dst| encode_item(item, dst))
            .await
    }
}

/// The handler side of a client or two-way stream: receives typed items from the caller.
///
/// # Example
///
/// A client stream's and a two-way stream's handlers read their input; it is also a
/// [`Stream`](futures::Stream).
///
/// ```
/// # use std::net::TcpListener;
/// # use std::time::Duration;
/// #
/// # use futures::StreamExt;
/// #[grid::handler]
/// trait Numbers {
///     /// Sends `0..n`.
///     async fn count(&self, n: u32, out: grid::ResponseSender<u32>) -> Result<(), String>;
///     /// Adds up what the caller sends.
///     async fn sum(&self, input: grid::RequestReceiver<u32>) -> Result<u64, String>;
///     /// Sends every item back, doubled.
///     async fn double(
///         &self,
///         input: grid::RequestReceiver<u32>,
///         out: grid::ResponseSender<u32>,
///     ) -> Result<(), String>;
/// }
///
/// struct Service;
/// impl Numbers for Service {
/// #     async fn count(&self, n: u32, mut out: grid::ResponseSender<u32>) -> Result<(), String> {
/// #         // `send` waits for flow-control credit; `send_all` sends many items per wait.
/// #         out.send_all(0..n).await.map_err(|e| e.to_string())
/// #     }
///     async fn sum(&self, mut input: grid::RequestReceiver<u32>) -> Result<u64, String> {
///         let mut total = 0;
///         // `None` once the caller has finished its input.
///         while let Some(item) = input.recv().await {
///             total += u64::from(item.map_err(|e| e.to_string())?);
///         }
///         Ok(total)
///     }
///     async fn double(
///         &self,
///         mut input: grid::RequestReceiver<u32>,
///         mut out: grid::ResponseSender<u32>,
///     ) -> Result<(), String> {
///         while let Some(item) = input.next().await {
///             out.send(item.map_err(|e| e.to_string())? * 2)
///                 .await
///                 .map_err(|e| e.to_string())?;
///         }
///         Ok(())
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #     let listeners = [TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?];
/// #     let names = [
/// #         format!("http://{}", listeners[0].local_addr()?),
/// #         format!("http://{}", listeners[1].local_addr()?),
/// #     ];
/// #     let mut nodes = Vec::new();
/// #     for (name, listener) in names.iter().zip(listeners) {
/// #         let node = grid::Manager::builder(name.as_str())
/// #             .peers(names.iter().cloned())
/// #             .secret("docs")
/// #             .listener(listener)
/// #             .start()
/// #             .await?;
/// #         NumbersServer::new(Service).register(&node)?;
/// #         nodes.push(node);
/// #     }
/// #     let numbers = NumbersClient::new(nodes[0].connection(&names[1])?);
/// #     numbers.connection().wait_for_connect(Duration::from_secs(10)).await?;
/// #     // A server stream: the receiver is a `Stream` of items.
/// #     let mut items = numbers.count(3).await?;
/// #     let mut got = Vec::new();
/// #     while let Some(item) = items.next().await {
/// #         got.push(item?);
/// #     }
/// #     assert_eq!(got, [0, 1, 2]);
/// #     // A client stream: send the input, finish it, then await the handler's one result.
/// #     let (mut input, result) = numbers.sum().await?;
/// #     input.send_all([1, 2, 3]).await?;
/// #     input.send(4).await?;
/// #     input.finish();
/// #     assert_eq!(result.response().await?, 10);
/// #     // Two-way: feed the input from one task while reading the output on this one.
/// #     let (mut input, output) = numbers.double().await?;
/// #     let feeder = tokio::spawn(async move {
/// #         input.send_all(1..=3).await?;
/// #         input.finish();
/// #         Ok::<_, grid::Error>(())
/// #     });
/// #     let doubled: Vec<u32> = output.map(|item| item.unwrap()).collect().await;
/// #     feeder.await??;
/// #     assert_eq!(doubled, [2, 4, 6]);
/// #     for node in &nodes {
/// #         node.shutdown().await;
/// #     }
/// #     Ok(())
/// # }
/// ```
pub struct RequestReceiver<T> {
    input: raw::RequestReceiver,
    /// What [`recv_many`](Self::recv_many) takes before decoding.
    raw: Vec<Bytes>,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for RequestReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestReceiver")
            .field("input", &self.input)
            .finish()
    }
}

impl<T: DeserializeOwned + 'static> RequestReceiver<T> {
    /// The next item; `None` once the caller finished its input.
    ///
    /// # Errors
    /// The caller went away, or an item could not be decoded.
    ///
    /// # Cancel safety
    /// Cancel safe: an item is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<Result<T, Error>> {
        futures::StreamExt::next(self).await
    }

    /// Waits for the next item, then moves into `buf` every item already received after it
    /// too (at most `limit`): one lock of the stream for all of them. Returns how many it added;
    /// `0` once the caller finished its input.
    ///
    /// # Errors
    /// The caller went away, or an item could not be decoded (the items before it are in
    /// `buf`).
    ///
    /// # Cancel safety
    /// Cancel safe: items are moved only when the call returns.
    pub async fn recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> Result<usize, Error> {
        self.raw.clear();
        let n = self.input.recv_many(&mut self.raw, limit).await?;
        buf.reserve(n);
        for b in self.raw.drain(..) {
            buf.push(decode_owned(b)?);
        }
        Ok(n)
    }
}

impl<T: DeserializeOwned + 'static> Stream for RequestReceiver<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.get_mut().input).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(decode_owned(b))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The caller side of a client or two-way stream: sends typed items to the handler. Dropping it
/// (or [`finish`](Self::finish)) ends the input.
///
/// # Example
///
/// The caller of a client stream and of a two-way stream sends the input (the service is the
/// one of the [`RequestReceiver`] example).
///
/// ```
/// use std::net::TcpListener;
/// use std::time::Duration;
///
/// use futures::StreamExt;
/// # #[grid::handler]
/// # trait Numbers {
/// #     /// Sends `0..n`.
/// #     async fn count(&self, n: u32, out: grid::ResponseSender<u32>) -> Result<(), String>;
/// #     /// Adds up what the caller sends.
/// #     async fn sum(&self, input: grid::RequestReceiver<u32>) -> Result<u64, String>;
/// #     /// Sends every item back, doubled.
/// #     async fn double(
/// #         &self,
/// #         input: grid::RequestReceiver<u32>,
/// #         out: grid::ResponseSender<u32>,
/// #     ) -> Result<(), String>;
/// # }
/// #
/// # struct Service;
/// # impl Numbers for Service {
/// #     async fn count(&self, n: u32, mut out: grid::ResponseSender<u32>) -> Result<(), String> {
/// #         // `send` waits for flow-control credit; `send_all` sends many items per wait.
/// #         out.send_all(0..n).await.map_err(|e| e.to_string())
/// #     }
/// #     async fn sum(&self, mut input: grid::RequestReceiver<u32>) -> Result<u64, String> {
/// #         let mut total = 0;
/// #         // `None` once the caller has finished its input.
/// #         while let Some(item) = input.recv().await {
/// #             total += u64::from(item.map_err(|e| e.to_string())?);
/// #         }
/// #         Ok(total)
/// #     }
/// #     async fn double(
/// #         &self,
/// #         mut input: grid::RequestReceiver<u32>,
/// #         mut out: grid::ResponseSender<u32>,
/// #     ) -> Result<(), String> {
/// #         while let Some(item) = input.next().await {
/// #             out.send(item.map_err(|e| e.to_string())? * 2)
/// #                 .await
/// #                 .map_err(|e| e.to_string())?;
/// #         }
/// #         Ok(())
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #     let listeners = [TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?];
/// #     let names = [
/// #         format!("http://{}", listeners[0].local_addr()?),
/// #         format!("http://{}", listeners[1].local_addr()?),
/// #     ];
/// #     let mut nodes = Vec::new();
/// #     for (name, listener) in names.iter().zip(listeners) {
/// #         let node = grid::Manager::builder(name.as_str())
/// #             .peers(names.iter().cloned())
/// #             .secret("docs")
/// #             .listener(listener)
/// #             .start()
/// #             .await?;
/// #         NumbersServer::new(Service).register(&node)?;
/// #         nodes.push(node);
/// #     }
/// #     let numbers = NumbersClient::new(nodes[0].connection(&names[1])?);
/// #     numbers.connection().wait_for_connect(Duration::from_secs(10)).await?;
/// #     // A server stream: the receiver is a `Stream` of items.
/// #     let mut items = numbers.count(3).await?;
/// #     let mut got = Vec::new();
/// #     while let Some(item) = items.next().await {
/// #         got.push(item?);
/// #     }
/// #     assert_eq!(got, [0, 1, 2]);
/// // A client stream: send the input, finish it, then await the handler's one result.
/// let (mut input, result) = numbers.sum().await?;
/// input.send_all([1, 2, 3]).await?;
/// input.send(4).await?;
/// input.finish();
/// assert_eq!(result.response().await?, 10);
/// // Two-way: feed the input from one task while reading the output on this one.
/// let (mut input, output) = numbers.double().await?;
/// let feeder = tokio::spawn(async move {
///     input.send_all(1..=3).await?;
///     input.finish();
///     Ok::<_, grid::Error>(())
/// });
/// let doubled: Vec<u32> = output.map(|item| item.unwrap()).collect().await;
/// feeder.await??;
/// assert_eq!(doubled, [2, 4, 6]);
/// #     for node in &nodes {
/// #         node.shutdown().await;
/// #     }
/// #     Ok(())
/// # }
/// ```
pub struct RequestSender<T> {
    sender: raw::RequestSender,
    _item: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for RequestSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSender")
            .field("sender", &self.sender)
            .finish()
    }
}

impl<T: Serialize + 'static> RequestSender<T> {
    /// Sends one item to the handler, waiting for flow-control credit.
    ///
    /// # Errors
    /// The stream ended or the item could not be encoded or is too large.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped, the item was either queued whole or not at all.
    pub async fn send(&mut self, item: T) -> Result<(), Error> {
        self.send_all(std::iter::once(item)).await
    }

    /// Sends every item of `items`, in order, as many at a time as the stream's windows and the
    /// socket's queue allow, each encoded straight into the outgoing batch: the fast way to send
    /// many small items.
    ///
    /// # Errors
    /// As [`send`](Self::send), for the first item that fails (the items before it are sent).
    ///
    /// # Cancel safety
    /// If the future is dropped, the items queued so far are sent, in order, and the rest are
    /// not; none is sent in part.
    pub async fn send_all<I>(&mut self, items: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
    {
        self.sender
            .send_encoded(items, |item, dst| encode_item(item, dst))
            .await
    }

    /// Ends the input; the handler's receiver then yields `None`.
    pub fn finish(self) {
        self.sender.finish();
    }
}

/// The caller side of a stream's output: a [`Stream`] of typed items. An error ends it: the
/// handler's `E` as [`CallError::Remote`], anything else as [`CallError::Transport`]. Dropping
/// it cancels the stream.
///
/// # Example
///
/// The caller reads a server stream's items, or awaits a client stream's one result with
/// [`response`](ResponseReceiver::response) (the service is the one of the [`RequestReceiver`]
/// example).
///
/// ```
/// use std::net::TcpListener;
/// use std::time::Duration;
///
/// use futures::StreamExt;
/// # #[grid::handler]
/// # trait Numbers {
/// #     /// Sends `0..n`.
/// #     async fn count(&self, n: u32, out: grid::ResponseSender<u32>) -> Result<(), String>;
/// #     /// Adds up what the caller sends.
/// #     async fn sum(&self, input: grid::RequestReceiver<u32>) -> Result<u64, String>;
/// #     /// Sends every item back, doubled.
/// #     async fn double(
/// #         &self,
/// #         input: grid::RequestReceiver<u32>,
/// #         out: grid::ResponseSender<u32>,
/// #     ) -> Result<(), String>;
/// # }
/// #
/// # struct Service;
/// # impl Numbers for Service {
/// #     async fn count(&self, n: u32, mut out: grid::ResponseSender<u32>) -> Result<(), String> {
/// #         // `send` waits for flow-control credit; `send_all` sends many items per wait.
/// #         out.send_all(0..n).await.map_err(|e| e.to_string())
/// #     }
/// #     async fn sum(&self, mut input: grid::RequestReceiver<u32>) -> Result<u64, String> {
/// #         let mut total = 0;
/// #         // `None` once the caller has finished its input.
/// #         while let Some(item) = input.recv().await {
/// #             total += u64::from(item.map_err(|e| e.to_string())?);
/// #         }
/// #         Ok(total)
/// #     }
/// #     async fn double(
/// #         &self,
/// #         mut input: grid::RequestReceiver<u32>,
/// #         mut out: grid::ResponseSender<u32>,
/// #     ) -> Result<(), String> {
/// #         while let Some(item) = input.next().await {
/// #             out.send(item.map_err(|e| e.to_string())? * 2)
/// #                 .await
/// #                 .map_err(|e| e.to_string())?;
/// #         }
/// #         Ok(())
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #     let listeners = [TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?];
/// #     let names = [
/// #         format!("http://{}", listeners[0].local_addr()?),
/// #         format!("http://{}", listeners[1].local_addr()?),
/// #     ];
/// #     let mut nodes = Vec::new();
/// #     for (name, listener) in names.iter().zip(listeners) {
/// #         let node = grid::Manager::builder(name.as_str())
/// #             .peers(names.iter().cloned())
/// #             .secret("docs")
/// #             .listener(listener)
/// #             .start()
/// #             .await?;
/// #         NumbersServer::new(Service).register(&node)?;
/// #         nodes.push(node);
/// #     }
/// #     let numbers = NumbersClient::new(nodes[0].connection(&names[1])?);
/// #     numbers.connection().wait_for_connect(Duration::from_secs(10)).await?;
/// // A server stream: the receiver is a `Stream` of items.
/// let mut items = numbers.count(3).await?;
/// let mut got = Vec::new();
/// while let Some(item) = items.next().await {
///     got.push(item?);
/// }
/// assert_eq!(got, [0, 1, 2]);
/// // A client stream: send the input, finish it, then await the handler's one result.
/// let (mut input, result) = numbers.sum().await?;
/// input.send_all([1, 2, 3]).await?;
/// input.send(4).await?;
/// input.finish();
/// assert_eq!(result.response().await?, 10);
/// #     // Two-way: feed the input from one task while reading the output on this one.
/// #     let (mut input, output) = numbers.double().await?;
/// #     let feeder = tokio::spawn(async move {
/// #         input.send_all(1..=3).await?;
/// #         input.finish();
/// #         Ok::<_, grid::Error>(())
/// #     });
/// #     let doubled: Vec<u32> = output.map(|item| item.unwrap()).collect().await;
/// #     feeder.await??;
/// #     assert_eq!(doubled, [2, 4, 6]);
/// #     for node in &nodes {
/// #         node.shutdown().await;
/// #     }
/// #     Ok(())
/// # }
/// ```
pub struct ResponseReceiver<T, E> {
    receiver: raw::ResponseReceiver,
    _item: PhantomData<fn() -> (T, E)>,
}

impl<T, E> fmt::Debug for ResponseReceiver<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseReceiver")
            .field("receiver", &self.receiver)
            .finish()
    }
}

impl<T: DeserializeOwned + 'static, E: DeserializeOwned> ResponseReceiver<T, E> {
    /// Cancels the stream: the handler's context sees the cancellation.
    pub fn cancel(&mut self) {
        self.receiver.cancel();
    }

    /// Waits for the one response of a client stream (the handler's `Ok` value).
    ///
    /// # Errors
    /// The handler's error, a transport error, or a protocol error if the stream ended without
    /// exactly one item.
    pub async fn response(mut self) -> Result<T, CallError<E>> {
        use futures::StreamExt;
        let first = match self.next().await {
            Some(r) => r?,
            None => {
                return Err(CallError::Transport(Error::Protocol(
                    "the stream ended without a response".into(),
                )))
            }
        };
        match self.next().await {
            None => Ok(first),
            Some(Err(e)) => Err(e),
            Some(Ok(_)) => Err(CallError::Transport(Error::Protocol(
                "more than one response".into(),
            ))),
        }
    }
}

impl<T: DeserializeOwned + 'static, E: DeserializeOwned> Stream for ResponseReceiver<T, E> {
    type Item = Result<T, CallError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.get_mut().receiver).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(match as_bytes_payload(b) {
                Ok(v) => Ok(v),
                Err(b) => decode(&b).map_err(CallError::Transport),
            })),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(typed_error(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The options every typed call takes, set on its builder: generated for [`UnaryCall`],
/// [`StreamCall`] and [`DuplexCall`] alike.
macro_rules! common_options {
    ($call:ident <$($g:ident),*>) => {
        impl<'a, $($g),*> $call<'a, $($g),*> {
            /// Gives up after `timeout`, counted from now: the call fails with
            /// [`Error::Deadline`], and the handler's [`Context::deadline`](crate::Context::deadline)
            /// is this one (not the method's `#[grid(timeout_ms)]` default). A zero timeout fails
            /// at once, before anything is sent.
            pub fn timeout(mut self, timeout: Duration) -> Self {
                self.opts_timeout(Some(timeout));
                self
            }

            /// Gives up at `deadline` (see [`timeout`](Self::timeout)); a deadline already past
            /// fails at once, before anything is sent.
            pub fn deadline(self, deadline: Instant) -> Self {
                let left = deadline.saturating_duration_since(Instant::now());
                self.timeout(left)
            }

            /// If the peer is not connected, waits for the connection within the call's deadline
            /// instead of failing at once with [`Error::NotConnected`].
            pub fn wait_for_connect(mut self) -> Self {
                self.opts_wait();
                self
            }

            /// Adds one metadata entry, which the handler reads from
            /// [`Context::metadata`](crate::Context::metadata) (an entry under the same key is
            /// replaced). An invalid entry (empty key, key over 255 bytes, value over 65 535
            /// bytes) makes the call fail with [`Error::Metadata`] when awaited, unsent; so does
            /// metadata over the limits of either side.
            pub fn metadata(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
                if let Some(metadata) = self.opts_metadata() {
                    if let Err(e) = metadata.insert(key, value) {
                        self.fail(Error::Metadata(e));
                    }
                }
                self
            }

            /// Replaces the call's metadata with `metadata`.
            pub fn with_metadata(mut self, metadata: Metadata) -> Self {
                if let Some(m) = self.opts_metadata() {
                    *m = metadata;
                }
                self
            }
        }
    };
}

pin_project_lite::pin_project! {
    /// A typed unary call, returned by a generated client method: `.await` it as it is, or set
    /// per-call options on it first.
    ///
    /// See the [`handler`](macro@crate::handler) macro's docs for an example.
    ///
    /// It is a [`Future`] (so `join_all` and `select!` take it as they are); nothing is sent until
    /// it is first polled, and options set on it are for this call only. Dropping it once polled
    /// cancels the call, on the remote handler too.
    ///
    /// `F` is the untyped call's future, which lives inside this one rather than in a box of
    /// its own; generated methods return
    /// `UnaryCall<'_, Resp, E, impl Future<Output = Result<Bytes, Error>> + Send + use<'_>>`:
    /// the call borrows the client, not the arguments, which are encoded when the method is
    /// called.
    #[must_use = "a call does nothing until it is awaited"]
    pub struct UnaryCall<'a, Resp, E, F> {
        conn: &'a Connection,
        spec: HandlerSpec,
        // `Connection::call`: its future's type is `F`, which only this pointer names.
        start: fn(&'a Connection, raw::HandlerId, Bytes, CallOptions) -> F,
        #[pin]
        state: UnaryState<F>,
        _out: PhantomData<fn() -> (Resp, E)>,
    }
}

pin_project_lite::pin_project! {
    /// Where a typed unary call is. The parts it waits with and the call in flight take the same
    /// bytes: the future stays as small as the untyped call's.
    #[project = UnaryStateProj]
    enum UnaryState<F> {
        // Not polled yet: what the call will send (or why it fails without sending).
        Ready {
            payload: Result<Bytes, Error>,
            opts: CallOptions,
        },
        Running { #[pin] call: F },
        Done,
    }
}

impl<Resp, E, F> fmt::Debug for UnaryCall<'_, Resp, E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UnaryCall");
        d.field("handler", &self.spec.name);
        match &self.state {
            UnaryState::Ready { opts, .. } => d.field("options", opts),
            UnaryState::Running { .. } => d.field("state", &"running"),
            UnaryState::Done => d.field("state", &"done"),
        };
        d.finish_non_exhaustive()
    }
}

impl<Resp, E, F> UnaryCall<'_, Resp, E, F> {
    /// Replaces every option of the call with `opts` (its `timeout: None` then means the
    /// configured default, not the method's).
    pub fn options(mut self, new: CallOptions) -> Self {
        if let Some(opts) = self.ready_opts() {
            *opts = new;
        }
        self
    }

    /// The options the call will start with. A call is `Ready` until first polled, and once
    /// polled it is pinned (its untyped future is not `Unpin`), so the builder methods always
    /// find them; they change nothing otherwise.
    fn ready_opts(&mut self) -> Option<&mut CallOptions> {
        match &mut self.state {
            UnaryState::Ready { opts, .. } => Some(opts),
            _ => None,
        }
    }

    fn opts_timeout(&mut self, t: Option<Duration>) {
        if let Some(opts) = self.ready_opts() {
            opts.timeout = t;
        }
    }

    fn opts_wait(&mut self) {
        if let Some(opts) = self.ready_opts() {
            opts.wait_for_connect = true;
        }
    }

    fn opts_metadata(&mut self) -> Option<&mut Metadata> {
        self.ready_opts().map(|opts| &mut opts.metadata)
    }

    fn fail(&mut self, e: Error) {
        if let UnaryState::Ready {
            payload: payload @ Ok(_),
            ..
        } = &mut self.state
        {
            *payload = Err(e);
        }
    }
}

common_options!(UnaryCall<Resp, E, F>);

impl<Resp, E, F> Future for UnaryCall<'_, Resp, E, F>
where
    Resp: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + Send + 'static,
    F: Future<Output = Result<Bytes, Error>>,
{
    type Output = Result<Resp, CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let UnaryStateProj::Ready { payload, opts } = this.state.as_mut().project() {
            let payload = std::mem::replace(payload, Err(Error::Cancelled));
            let opts = std::mem::take(opts);
            let payload = match payload {
                Ok(p) => p,
                Err(e) => return Poll::Ready(Err(CallError::Transport(e))),
            };
            let call = (this.start)(this.conn, this.spec.id, payload, opts);
            this.state.set(UnaryState::Running { call });
        }
        let UnaryStateProj::Running { call } = this.state.as_mut().project() else {
            // Polled again after it returned.
            return Poll::Ready(Err(CallError::Transport(Error::Cancelled)));
        };
        let result = std::task::ready!(call.poll(cx));
        this.state.set(UnaryState::Done);
        Poll::Ready(match result {
            Ok(b) => decode_owned(b).map_err(CallError::Transport),
            Err(e) => Err(typed_error(e)),
        })
    }
}

/// Stream options a typed stream call sets, shared by [`StreamCall`] and [`DuplexCall`].
macro_rules! stream_options {
    ($call:ident <$($g:ident),*>) => {
        impl<'a, $($g),*> $call<'a, $($g),*> {
            /// Replaces every option of the stream with `opts` (capacities, windows, deadline,
            /// metadata). A stream with input keeps at least one message of input capacity.
            pub fn options(mut self, opts: StreamOptions) -> Self {
                let input = self.opts.in_capacity > 0;
                self.opts = opts;
                if input {
                    self.opts.in_capacity = self.opts.in_capacity.max(1);
                } else {
                    self.opts.in_capacity = 0;
                }
                self
            }

            /// Messages the handler may send ahead of this caller's reading (at least 1).
            pub fn out_capacity(mut self, messages: u32) -> Self {
                self.opts.out_capacity = messages.max(1);
                self
            }

            /// Payload bytes the handler may send ahead of this caller's reading (at least 1).
            pub fn out_window(mut self, bytes: u32) -> Self {
                self.opts.out_window = bytes.max(1);
                self
            }

            fn opts_timeout(&mut self, t: Option<Duration>) {
                self.opts.timeout = t;
            }

            fn opts_wait(&mut self) {
                self.opts.wait_for_connect = true;
            }

            fn opts_metadata(&mut self) -> Option<&mut Metadata> {
                Some(&mut self.opts.metadata)
            }

            fn fail(&mut self, e: Error) {
                if self.payload.is_ok() {
                    self.payload = Err(e);
                }
            }
        }
    };
}

/// A typed server stream, returned by a generated client method: `.await` it for the
/// [`ResponseReceiver`], or set per-call options on it first (`.timeout(..)`, `.metadata(..)`,
/// `.out_capacity(..)`, ...). Nothing is sent until it is awaited.
#[must_use = "a stream is opened only when awaited"]
pub struct StreamCall<'a, Out, E> {
    conn: &'a Connection,
    spec: HandlerSpec,
    payload: Result<Bytes, Error>,
    opts: StreamOptions,
    /// The open in flight, from the first poll on.
    running: Option<StreamFuture<'a, Out, E>>,
}

/// A typed client or two-way stream, returned by a generated client method: `.await` it for
/// the ([`RequestSender`], [`ResponseReceiver`]) pair, or set per-call options on it first (those
/// of [`StreamCall`], plus `.in_capacity(..)` and `.in_window(..)`). Nothing is sent until it is
/// awaited.
#[must_use = "a stream is opened only when awaited"]
pub struct DuplexCall<'a, In, Out, E> {
    conn: &'a Connection,
    spec: HandlerSpec,
    payload: Result<Bytes, Error>,
    opts: StreamOptions,
    /// The open in flight, from the first poll on.
    running: Option<DuplexFuture<'a, In, Out, E>>,
}

type StreamFuture<'a, Out, E> = BoxFuture<'a, Result<ResponseReceiver<Out, E>, CallError<E>>>;

type DuplexFuture<'a, In, Out, E> =
    BoxFuture<'a, Result<(RequestSender<In>, ResponseReceiver<Out, E>), CallError<E>>>;

impl<Out, E> fmt::Debug for StreamCall<'_, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamCall")
            .field("handler", &self.spec.name)
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<In, Out, E> fmt::Debug for DuplexCall<'_, In, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuplexCall")
            .field("handler", &self.spec.name)
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

stream_options!(StreamCall<Out, E>);
stream_options!(DuplexCall<In, Out, E>);
common_options!(StreamCall<Out, E>);
common_options!(DuplexCall<In, Out, E>);

impl<'a, In, Out, E> DuplexCall<'a, In, Out, E> {
    /// Messages this caller may send ahead of the handler's reading (at least 1).
    pub fn in_capacity(mut self, messages: u32) -> Self {
        self.opts.in_capacity = messages.max(1);
        self
    }

    /// Payload bytes this caller may send ahead of the handler's reading (at least 1).
    pub fn in_window(mut self, bytes: u32) -> Self {
        self.opts.in_window = bytes.max(1);
        self
    }
}

impl<'a, Out, E> Future for StreamCall<'a, Out, E>
where
    Out: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + Send + 'static,
{
    type Output = Result<ResponseReceiver<Out, E>, CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let running = this.running.get_or_insert_with(|| {
            let open = open_raw(this.conn, this.spec, &mut this.payload, &mut this.opts);
            Box::pin(async move {
                let s = open.await.map_err(typed_error)?;
                Ok(ResponseReceiver {
                    receiver: s.receiver,
                    _item: PhantomData,
                })
            })
        });
        running.as_mut().poll(cx)
    }
}

impl<'a, In, Out, E> Future for DuplexCall<'a, In, Out, E>
where
    In: Serialize + Send + 'static,
    Out: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + Send + 'static,
{
    type Output = Result<(RequestSender<In>, ResponseReceiver<Out, E>), CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let running = this.running.get_or_insert_with(|| {
            let open = open_raw(this.conn, this.spec, &mut this.payload, &mut this.opts);
            Box::pin(async move {
                let s = open.await.map_err(typed_error)?;
                let sender = s.sender.ok_or_else(|| {
                    CallError::Transport(Error::Protocol("stream opened without input".into()))
                })?;
                Ok((
                    RequestSender {
                        sender,
                        _item: PhantomData,
                    },
                    ResponseReceiver {
                        receiver: s.receiver,
                        _item: PhantomData,
                    },
                ))
            })
        });
        running.as_mut().poll(cx)
    }
}

/// Takes a stream call's parts (its first poll) and opens the stream with them.
fn open_raw<'a>(
    conn: &'a Connection,
    spec: HandlerSpec,
    payload: &mut Result<Bytes, Error>,
    opts: &mut StreamOptions,
) -> impl Future<Output = Result<raw::ClientStream, Error>> + Send + 'a {
    let payload = std::mem::replace(payload, Err(Error::Cancelled));
    let opts = std::mem::take(opts);
    async move { conn.open_stream(spec.id, payload?, opts).await }
}

/// Support for code generated by `#[grid::handler]`. Not a public API.
#[doc(hidden)]
pub(crate) mod support {
    use super::*;

    pub use std::sync::Arc;
    pub use std::time::Duration;

    /// Options of a generated unary call.
    pub fn call_options(timeout_ms: Option<u64>) -> CallOptions {
        CallOptions {
            timeout: timeout_ms.map(Duration::from_millis),
            ..CallOptions::default()
        }
    }

    /// Options of a generated stream.
    pub fn stream_options(
        input: bool,
        in_capacity: Option<u32>,
        out_capacity: Option<u32>,
        timeout_ms: Option<u64>,
    ) -> StreamOptions {
        let d = StreamOptions::default();
        StreamOptions {
            in_capacity: if input {
                in_capacity.unwrap_or(d.out_capacity).max(1)
            } else {
                0
            },
            out_capacity: out_capacity.unwrap_or(d.out_capacity).max(1),
            timeout: timeout_ms.map(Duration::from_millis),
            ..d
        }
    }

    /// A typed unary call with the method's default options, ready for per-call options.
    /// `payload` is the request as [`encode_request`] gave it: encoded here, the request's type
    /// would be captured by the returned future's type, and with it every borrow the request
    /// holds.
    pub fn unary_call<'a, Resp, E>(
        conn: &'a Connection,
        spec: HandlerSpec,
        payload: Result<Bytes, Error>,
        opts: CallOptions,
    ) -> UnaryCall<'a, Resp, E, impl Future<Output = Result<Bytes, Error>> + Send + 'a> {
        UnaryCall {
            conn,
            spec,
            start: Connection::call,
            state: UnaryState::Ready { payload, opts },
            _out: PhantomData,
        }
    }

    /// Encodes a unary call's request (see [`unary_call`]).
    pub fn encode_request<Req: Serialize + ?Sized>(req: &Req) -> Result<Bytes, Error> {
        encode(req)
    }

    /// A typed server stream with the method's default options.
    pub fn stream_call<'a, Req, Out, E>(
        conn: &'a Connection,
        spec: HandlerSpec,
        req: &Req,
        opts: StreamOptions,
    ) -> StreamCall<'a, Out, E>
    where
        Req: Serialize + ?Sized,
    {
        StreamCall {
            conn,
            spec,
            payload: encode(req),
            opts,
            running: None,
        }
    }

    /// A typed client or two-way stream with the method's default options.
    pub fn duplex_call<'a, Req, In, Out, E>(
        conn: &'a Connection,
        spec: HandlerSpec,
        req: &Req,
        opts: StreamOptions,
    ) -> DuplexCall<'a, In, Out, E>
    where
        Req: Serialize + ?Sized,
    {
        DuplexCall {
            conn,
            spec,
            payload: encode(req),
            opts,
            running: None,
        }
    }

    /// Decodes a request on the handler side; a codec failure is the caller's fault. Takes the
    /// payload itself: a `Bytes` argument is a slice of it, and a clone would cost a reference
    /// count (or the promotion of the buffer to a shared one) per call.
    pub fn decode_request<T: DeserializeOwned + 'static>(bytes: Bytes) -> Result<T, RemoteError> {
        decode_owned(bytes).map_err(|e| RemoteError::text(ErrorCode::Internal, e.to_string()))
    }

    /// Encodes a handler's result: `Ok` as the payload, `Err` as an application error.
    pub fn encode_result<T: Serialize, E: Serialize>(
        r: Result<T, E>,
    ) -> Result<Bytes, RemoteError> {
        match r {
            Ok(v) => encode(&v).map_err(|e| RemoteError::text(ErrorCode::Internal, e.to_string())),
            Err(e) => Err(app_error(&e)),
        }
    }

    /// Encodes a handler's error as an application error record.
    pub fn app_error<E: Serialize>(e: &E) -> RemoteError {
        match encode(e) {
            Ok(b) => RemoteError::application(b),
            Err(codec) => RemoteError::text(ErrorCode::Internal, codec.to_string()),
        }
    }

    /// A stream handler's end: `Ok(())` or its error as an application error.
    pub fn stream_result<E: Serialize>(r: Result<(), E>) -> Result<(), RemoteError> {
        r.map_err(|e| app_error(&e))
    }

    /// A client-stream handler's end: its response as the one item, or its error.
    pub async fn send_response<T: Serialize + 'static, E: Serialize>(
        out: &mut ResponseSender<T>,
        r: Result<T, E>,
    ) -> Result<(), RemoteError> {
        match r {
            Ok(v) => out
                .send(v)
                .await
                .map_err(|e| RemoteError::text(ErrorCode::Internal, e.to_string())),
            Err(e) => Err(app_error(&e)),
        }
    }

    /// Wraps the handler's output.
    pub fn sender<T>(out: raw::ResponseSender) -> ResponseSender<T> {
        ResponseSender {
            out,
            _item: PhantomData,
        }
    }

    /// Wraps the handler's input; a stream opened without input is refused.
    pub fn receiver<T>(
        input: Option<raw::RequestReceiver>,
    ) -> Result<RequestReceiver<T>, RemoteError> {
        input
            .map(|input| RequestReceiver {
                input,
                raw: Vec::new(),
                _item: PhantomData,
            })
            .ok_or_else(|| RemoteError::text(ErrorCode::Internal, "the stream has no input"))
    }

    /// Compile-time check that a type can be a request or response, reported on the user's type.
    pub const fn assert_serde<T: Serialize + DeserializeOwned>() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bytes_item_is_encoded_as_rmp_encodes_it() {
        for len in [0usize, 1, 255, 256, 65_535, 65_536, 70_000] {
            let b = Bytes::from(vec![0xabu8; len]);
            let mut fast = BytesMut::new();
            encode_item(&b, &mut fast).expect("encodes");
            let slow = rmp_serde::to_vec_named(&b).expect("encodes");
            assert_eq!(&fast[..], &slow[..], "{len} bytes");
        }
    }

    #[test]
    fn a_bytes_payload_decodes_as_a_slice_of_what_arrived() {
        for len in [0usize, 3, 300, 70_000] {
            let b = Bytes::from(vec![7u8; len]);
            let wire = Bytes::from(rmp_serde::to_vec_named(&b).expect("encodes"));
            let back: Bytes = decode_owned(wire.clone()).expect("decodes");
            assert_eq!(back, b);
            if len > 0 {
                let at = back.as_ptr() as usize - wire.as_ptr() as usize;
                assert!(at <= 5, "the payload is a slice of the message, at {at}");
            }
        }
    }

    #[test]
    fn other_payloads_and_other_encodings_decode_through_serde() {
        // A Bytes written as an array of integers (not a bin) still decodes, by copy.
        let wire = Bytes::from(rmp_serde::to_vec_named(&vec![1u8, 2, 3]).expect("encodes"));
        let back: Bytes = decode_owned(wire).expect("decodes");
        assert_eq!(&back[..], &[1, 2, 3]);
        let wire = Bytes::from(rmp_serde::to_vec_named(&(5u32, "x")).expect("encodes"));
        let back: (u32, String) = decode_owned(wire).expect("decodes");
        assert_eq!(back, (5, "x".to_owned()));
        // A bin with bytes after it is not one bin: serde decodes it, as it decodes any payload.
        let mut wire = rmp_serde::to_vec_named(&Bytes::from_static(b"ab")).expect("encodes");
        wire.push(0);
        let back: Bytes = decode_owned(Bytes::from(wire)).expect("decodes");
        assert_eq!(&back[..], b"ab");
    }
}
