//! A first end-to-end check over real sockets: two nodes, unary calls both ways, a stream.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use futures::StreamExt;
use grid::{HandlerSpec, RemoteError, StreamOptions};

const ECHO: HandlerSpec = HandlerSpec::named("Test.echo");
const COUNT: HandlerSpec = HandlerSpec::named("Test.count");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_call_each_other() {
    let nodes = common::cluster(2).await;
    for m in &nodes {
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
        m.register_stream(COUNT, |_ctx, b, _input, mut out| async move {
            let n = u32::from_be_bytes(b[..4].try_into().unwrap());
            for i in 0..n {
                out.send(Bytes::from(i.to_be_bytes().to_vec()))
                    .await
                    .map_err(|e| RemoteError::text(grid::ErrorCode::Internal, e.to_string()))?;
            }
            Ok(())
        })
        .unwrap();
    }
    common::wait_mesh(&nodes).await;
    for (a, b) in [(0, 1), (1, 0)] {
        let conn = nodes[a].connection(nodes[b].name()).unwrap();
        let resp = conn
            .request(ECHO.id, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(&resp[..], b"hello");
        let mut s = conn
            .open_stream(
                COUNT.id,
                Bytes::from(1000u32.to_be_bytes().to_vec()),
                StreamOptions::default(),
            )
            .await
            .unwrap();
        let mut n = 0u32;
        while let Some(item) = s.receiver.next().await {
            assert_eq!(item.unwrap(), Bytes::from(n.to_be_bytes().to_vec()));
            n += 1;
        }
        assert_eq!(n, 1000);
    }
    common::assert_drained(&nodes).await;
}
