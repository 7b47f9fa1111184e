//! The typed layer's runtime: the values that `#[grid::handler]` code hands to handlers and callers.
//!
//! Every payload is msgpack with field names (`rmp_serde::to_vec_named`), so a struct can gain a
//! `#[serde(default)]` field and still talk to older peers. A handler's error `E` travels as an
//! application error record whose message is `E` encoded the same way; the caller decodes it back
//! and sees [`CallError::Remote`].

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures::Stream;
use grid_core::{
    CallOptions, Connection, Error, ErrorCode, HandlerInput, HandlerOutput, HandlerSpec,
    RemoteError, StreamOptions, StreamReceiver, StreamSender,
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

/// Encodes a payload (msgpack with field names).
fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    rmp_serde::to_vec_named(value)
        .map(Bytes::from)
        .map_err(|e| Error::Codec(format!("encoding {}: {e}", std::any::type_name::<T>())))
}

/// Decodes a payload.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| Error::Codec(format!("decoding {}: {e}", std::any::type_name::<T>())))
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
pub struct Sender<T> {
    out: HandlerOutput,
    _item: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("out", &self.out).finish()
    }
}

impl<T: Serialize> Sender<T> {
    /// Sends one item, waiting for flow-control credit.
    ///
    /// # Errors
    /// The caller went away ([`Error::Disconnected`], [`Error::Cancelled`], [`Error::Deadline`]),
    /// or the item could not be encoded or is too large.
    pub async fn send(&mut self, item: T) -> Result<(), Error> {
        let bytes = encode(&item)?;
        self.out.send(bytes).await
    }
}

/// The handler side of a client or two-way stream: receives typed items from the caller.
pub struct Receiver<T> {
    input: HandlerInput,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("input", &self.input)
            .finish()
    }
}

impl<T: DeserializeOwned> Receiver<T> {
    /// The next item; `None` once the caller finished its input.
    ///
    /// # Errors
    /// The caller went away, or an item could not be decoded.
    pub async fn recv(&mut self) -> Option<Result<T, Error>> {
        futures::StreamExt::next(self).await
    }
}

impl<T: DeserializeOwned> Stream for Receiver<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        Pin::new(&mut this.input)
            .poll_next(cx)
            .map(|o| o.map(|r| r.and_then(|b| decode(&b))))
    }
}

/// The caller side of a client or two-way stream: sends typed items to the handler. Dropping it
/// (or [`finish`](Self::finish)) ends the input.
pub struct RequestSink<T> {
    sender: StreamSender,
    _item: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for RequestSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSink")
            .field("sender", &self.sender)
            .finish()
    }
}

impl<T: Serialize> RequestSink<T> {
    /// Sends one item to the handler, waiting for flow-control credit.
    ///
    /// # Errors
    /// The stream ended or the item could not be encoded or is too large.
    pub async fn send(&mut self, item: T) -> Result<(), Error> {
        let bytes = encode(&item)?;
        self.sender.send(bytes).await
    }

    /// Ends the input; the handler's receiver then yields `None`.
    pub fn finish(self) {
        self.sender.finish();
    }
}

/// The caller side of a stream's output: a [`Stream`] of typed items. An error ends it: the
/// handler's `E` as [`CallError::Remote`], anything else as [`CallError::Transport`]. Dropping
/// it cancels the stream.
pub struct ResponseStream<T, E> {
    receiver: StreamReceiver,
    _item: PhantomData<fn() -> (T, E)>,
}

impl<T, E> fmt::Debug for ResponseStream<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseStream")
            .field("receiver", &self.receiver)
            .finish()
    }
}

impl<T: DeserializeOwned, E: DeserializeOwned> ResponseStream<T, E> {
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

impl<T: DeserializeOwned, E: DeserializeOwned> Stream for ResponseStream<T, E> {
    type Item = Result<T, CallError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        Pin::new(&mut this.receiver).poll_next(cx).map(|o| {
            o.map(|r| match r {
                Ok(b) => decode(&b).map_err(CallError::Transport),
                Err(e) => Err(typed_error(e)),
            })
        })
    }
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

    /// A typed unary call.
    pub async fn unary<Req, Resp, E>(
        conn: &Connection,
        spec: HandlerSpec,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let payload = encode(req)?;
        match conn.call(spec.id, payload, opts).await {
            Ok(b) => decode(&b).map_err(CallError::Transport),
            Err(e) => Err(typed_error(e)),
        }
    }

    /// Opens a typed stream.
    pub async fn open<Req, In, Out, E>(
        conn: &Connection,
        spec: HandlerSpec,
        req: &Req,
        opts: StreamOptions,
    ) -> Result<(Option<RequestSink<In>>, ResponseStream<Out, E>), CallError<E>>
    where
        Req: Serialize + ?Sized,
        E: DeserializeOwned,
    {
        let payload = encode(req)?;
        let s = conn
            .open_stream(spec.id, payload, opts)
            .await
            .map_err(typed_error)?;
        let sink = s.sender.map(|sender| RequestSink {
            sender,
            _item: PhantomData,
        });
        let stream = ResponseStream {
            receiver: s.receiver,
            _item: PhantomData,
        };
        Ok((sink, stream))
    }

    /// The sink of a stream opened with input.
    pub fn expect_sink<T, E>(sink: Option<RequestSink<T>>) -> Result<RequestSink<T>, CallError<E>> {
        sink.ok_or_else(|| {
            CallError::Transport(Error::Protocol("stream opened without input".into()))
        })
    }

    /// Decodes a request on the handler side; a codec failure is the caller's fault.
    pub fn decode_request<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RemoteError> {
        decode(bytes).map_err(|e| RemoteError::text(ErrorCode::Internal, e.to_string()))
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
    pub async fn send_response<T: Serialize, E: Serialize>(
        out: &mut Sender<T>,
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
    pub fn sender<T>(out: HandlerOutput) -> Sender<T> {
        Sender {
            out,
            _item: PhantomData,
        }
    }

    /// Wraps the handler's input; a stream opened without input is refused.
    pub fn receiver<T>(input: Option<HandlerInput>) -> Result<Receiver<T>, RemoteError> {
        input
            .map(|input| Receiver {
                input,
                _item: PhantomData,
            })
            .ok_or_else(|| RemoteError::text(ErrorCode::Internal, "the stream has no input"))
    }

    /// Compile-time check that a type can be a request or response, reported on the user's type.
    pub const fn assert_serde<T: Serialize + DeserializeOwned>() {}
}
