//! tonic 0.14: gRPC over one HTTP/2 connection (one `Channel`). The messages are prost derives
//! and the service is written by hand (what `tonic-build` would generate), so no protoc is needed.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, BoxStream, Service};
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_prost::ProstCodec;

use crate::common::{check_msg, stream_msg, CountFn, EchoFn, System};

#[derive(Clone, PartialEq, prost::Message)]
struct EchoMsg {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StreamReq {
    #[prost(uint64, tag = "1")]
    count: u64,
}

const UNARY: &str = "/bench.Echo/Unary";
const SERVER_STREAM: &str = "/bench.Echo/ServerStream";
const BIDI: &str = "/bench.Echo/Bidi";

/// Message limits of both ends: room for the 64 MiB echoes of the large-transfer workload
/// (tonic's default is 4 MiB). Small calls do not notice.
const MAX_MESSAGE: usize = 96 << 20;

#[derive(Clone)]
struct EchoService;

impl NamedService for EchoService {
    const NAME: &'static str = "bench.Echo";
}

struct UnarySvc;
impl tonic::server::UnaryService<EchoMsg> for UnarySvc {
    type Response = EchoMsg;
    type Future = BoxFuture<tonic::Response<EchoMsg>, tonic::Status>;
    fn call(&mut self, req: tonic::Request<EchoMsg>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(req.into_inner())) })
    }
}

struct StreamSvc;
impl tonic::server::ServerStreamingService<StreamReq> for StreamSvc {
    type Response = EchoMsg;
    type ResponseStream = BoxStream<EchoMsg>;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;
    fn call(&mut self, req: tonic::Request<StreamReq>) -> Self::Future {
        let n = req.into_inner().count;
        Box::pin(async move {
            let s = futures::stream::iter(0..n).map(|i| {
                Ok(EchoMsg {
                    data: stream_msg(i),
                })
            });
            Ok(tonic::Response::new(Box::pin(s) as BoxStream<EchoMsg>))
        })
    }
}

struct BidiSvc;
impl tonic::server::StreamingService<EchoMsg> for BidiSvc {
    type Response = EchoMsg;
    type ResponseStream = BoxStream<EchoMsg>;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;
    fn call(&mut self, req: tonic::Request<tonic::Streaming<EchoMsg>>) -> Self::Future {
        let input = req.into_inner();
        Box::pin(async move { Ok(tonic::Response::new(Box::pin(input) as BoxStream<EchoMsg>)) })
    }
}

impl<B> Service<http::Request<B>> for EchoService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            UNARY => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<EchoMsg, EchoMsg>::default())
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                Ok(grpc.unary(UnarySvc, req).await)
            }),
            SERVER_STREAM => Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<EchoMsg, StreamReq>::default());
                Ok(grpc.server_streaming(StreamSvc, req).await)
            }),
            BIDI => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<EchoMsg, EchoMsg>::default());
                Ok(grpc.streaming(BidiSvc, req).await)
            }),
            _ => Box::pin(
                async move { Ok(tonic::Status::unimplemented("no such method").into_http()) },
            ),
        }
    }
}

async fn server_stream(mut grpc: tonic::client::Grpc<Channel>, n: u64) -> Result<u64, String> {
    grpc.ready().await.map_err(|e| e.to_string())?;
    let mut s = grpc
        .server_streaming(
            tonic::Request::new(StreamReq { count: n }),
            http::uri::PathAndQuery::from_static(SERVER_STREAM),
            ProstCodec::<StreamReq, EchoMsg>::default(),
        )
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut got = 0;
    while let Some(m) = s.message().await.map_err(|e| e.to_string())? {
        check_msg(&m.data, got)?;
        got += 1;
    }
    Ok(got)
}

async fn bidi(mut grpc: tonic::client::Grpc<Channel>, n: u64) -> Result<u64, String> {
    grpc.ready().await.map_err(|e| e.to_string())?;
    let out = futures::stream::iter(0..n).map(|i| EchoMsg {
        data: stream_msg(i),
    });
    let mut s = grpc
        .streaming(
            tonic::Request::new(out),
            http::uri::PathAndQuery::from_static(BIDI),
            ProstCodec::<EchoMsg, EchoMsg>::default(),
        )
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut got = 0;
    while let Some(m) = s.message().await.map_err(|e| e.to_string())? {
        check_msg(&m.data, got)?;
        got += 1;
    }
    Ok(got)
}

/// Starts the tonic server and connects one client channel (one HTTP/2 connection) to it.
pub(crate) async fn start() -> Result<System, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(EchoService)
            .serve_with_incoming(incoming)
            .await;
    });
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);

    let g = grpc.clone();
    let echo: EchoFn = Arc::new(move |b| {
        let mut g = g.clone();
        async move {
            g.ready().await.map_err(|e| e.to_string())?;
            g.unary(
                tonic::Request::new(EchoMsg { data: b }),
                http::uri::PathAndQuery::from_static(UNARY),
                ProstCodec::<EchoMsg, EchoMsg>::default(),
            )
            .await
            .map(|r| r.into_inner().data)
            .map_err(|e| e.to_string())
        }
        .boxed()
    });
    let g = grpc.clone();
    let stream: CountFn = Arc::new(move |n| server_stream(g.clone(), n).boxed());
    let g = grpc;
    let bidi: CountFn = Arc::new(move |n| bidi(g.clone(), n).boxed());
    Ok(System {
        name: "tonic",
        echo,
        stream: Some(stream),
        bidi: Some(bidi),
        note: "",
        wire: None,
    })
}
