//! jsonrpsee 0.26: JSON-RPC over one WebSocket. JSON carries no raw bytes, so payloads travel
//! hex-encoded (what a user of jsonrpsee would have to do). Server streaming is a subscription;
//! there is no client-to-server stream.

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::rpc_params;
use jsonrpsee::server::{PendingSubscriptionSink, RpcModule, Server, SubscriptionMessage};
use jsonrpsee::types::Params;
use jsonrpsee::ws_client::WsClientBuilder;

use crate::common::{check_msg, stream_msg, CountFn, EchoFn, System};

async fn subscription(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
) -> SubscriptionResult {
    let n: u64 = params.one()?;
    let sink = pending.accept().await?;
    for i in 0..n {
        let raw = serde_json::value::to_raw_value(&hex::encode(stream_msg(i)))?;
        sink.send(SubscriptionMessage::from(raw)).await?;
    }
    Ok(())
}

/// Starts the jsonrpsee server and connects one WebSocket client to it.
pub(crate) async fn start(stream_n: u64) -> Result<System, String> {
    let server = Server::builder()
        .build("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let mut module = RpcModule::new(());
    module
        .register_method("echo", |params, _, _| {
            params.one::<String>().map_err(|e| e.to_owned())
        })
        .map_err(|e| e.to_string())?;
    module
        .register_subscription("sub", "item", "unsub", |params, pending, _, _| {
            subscription(params, pending)
        })
        .map_err(|e| e.to_string())?;
    let handle = server.start(module);
    // The server runs until the process ends.
    std::mem::forget(handle);

    let client = WsClientBuilder::default()
        .max_concurrent_requests(4096)
        .max_buffer_capacity_per_subscription(stream_n as usize + 1024)
        .set_tcp_no_delay(true)
        .build(format!("ws://{addr}"))
        .await
        .map_err(|e| e.to_string())?;
    let client = Arc::new(client);

    let c = client.clone();
    let echo: EchoFn = Arc::new(move |b: Bytes| {
        let c = c.clone();
        async move {
            let s: String = c
                .request("echo", rpc_params![hex::encode(&b)])
                .await
                .map_err(|e| e.to_string())?;
            hex::decode(s).map(Bytes::from).map_err(|e| e.to_string())
        }
        .boxed()
    });
    let c = client;
    let stream: CountFn = Arc::new(move |n| {
        let c = c.clone();
        async move {
            let mut sub = c
                .subscribe::<String, _>("sub", rpc_params![n], "unsub")
                .await
                .map_err(|e| e.to_string())?;
            let mut got = 0;
            while got < n {
                let Some(item) = sub.next().await else { break };
                let m = hex::decode(item.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                check_msg(&m, got)?;
                got += 1;
            }
            Ok(got)
        }
        .boxed()
    });
    Ok(System {
        name: "jsonrpsee",
        echo,
        stream: Some(stream),
        bidi: None,
        note: "payloads hex-encoded in JSON; streaming is a subscription",
        wire: None,
    })
}
