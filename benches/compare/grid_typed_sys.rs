//! grid through its typed layer: the same echo, server stream and two-way echo as `grid_sys.rs`,
//! declared with `#[grid::handler]` and called through the generated client, with `Bytes`
//! payloads (a msgpack bin each) and default options.

use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use grid::Config;
use serde::{Deserialize, Serialize};

use crate::common::{check_msg, stream_msg, CountFn, EchoFn, System};
use crate::grid_sys::{cluster_with, wire_fn};

/// The benchmark's handlers never fail; the error type is what a real service would declare.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Never;

#[grid::handler]
pub(crate) trait Typed {
    /// Returns its argument.
    async fn echo(&self, data: Bytes) -> Result<Bytes, Never>;
    /// Sends `n` numbered 64-byte messages.
    async fn stream(&self, n: u64, out: grid::ResponseSender<Bytes>) -> Result<(), Never>;
    /// Sends every input message back, in batches.
    async fn bidi(
        &self,
        input: grid::RequestReceiver<Bytes>,
        out: grid::ResponseSender<Bytes>,
    ) -> Result<(), Never>;
}

struct Service;

impl Typed for Service {
    async fn echo(&self, data: Bytes) -> Result<Bytes, Never> {
        Ok(data)
    }

    async fn stream(&self, n: u64, mut out: grid::ResponseSender<Bytes>) -> Result<(), Never> {
        // A caller that goes away ends the stream: nothing more to report.
        let _ = out.send_all((0..n).map(stream_msg)).await;
        Ok(())
    }

    async fn bidi(
        &self,
        mut input: grid::RequestReceiver<Bytes>,
        mut out: grid::ResponseSender<Bytes>,
    ) -> Result<(), Never> {
        let mut batch = Vec::new();
        while let Ok(n) = input.recv_many(&mut batch, 4096).await {
            if n == 0 || out.send_all(batch.drain(..)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Starts two managers serving `Typed` and returns the system as seen from the first.
pub(crate) async fn start() -> Result<System, String> {
    let managers = cluster_with(2, &Config::default(), |m| {
        TypedServer::new(Service)
            .register(m)
            .map_err(|e| e.to_string())
    })
    .await?;
    let conn = managers[0]
        .connection(managers[1].name())
        .map_err(|e| e.to_string())?;
    let wire = wire_fn(&managers)?;
    std::mem::forget(managers);
    let client = TypedClient::new(conn);
    let c = client.clone();
    let echo: EchoFn = Arc::new(move |b| {
        let c = c.clone();
        async move { c.echo(b).await.map_err(|e| e.to_string()) }.boxed()
    });
    let c = client.clone();
    let stream: CountFn = Arc::new(move |n| {
        let c = c.clone();
        async move {
            let mut s = c.stream(n).await.map_err(|e| e.to_string())?;
            let mut got = 0;
            while let Some(m) = s.next().await {
                check_msg(&m.map_err(|e| e.to_string())?, got)?;
                got += 1;
            }
            Ok(got)
        }
        .boxed()
    });
    let c = client;
    let bidi: CountFn = Arc::new(move |n| {
        let c = c.clone();
        async move {
            let (mut sink, mut s) = c.bidi().await.map_err(|e| e.to_string())?;
            let feeder = tokio::spawn(async move {
                sink.send_all((0..n).map(stream_msg))
                    .await
                    .map_err(|e| e.to_string())?;
                sink.finish();
                Ok::<_, String>(())
            });
            let mut got = 0;
            while let Some(m) = s.next().await {
                check_msg(&m.map_err(|e| e.to_string())?, got)?;
                got += 1;
            }
            feeder.await.map_err(|e| e.to_string())??;
            Ok(got)
        }
        .boxed()
    });
    Ok(System {
        name: "grid-typed",
        echo,
        stream: Some(stream),
        bidi: Some(bidi),
        note: "",
        wire: Some(wire),
    })
}
