//! tarpc 0.38: serde transport, bincode, one TCP connection (TCP_NODELAY on both ends, which
//! tarpc's own `tcp::connect` does not set). tarpc has no streams.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{EchoFn, System};

#[tarpc::service]
trait Echo {
    /// Returns its argument.
    async fn echo(data: Vec<u8>) -> Vec<u8>;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

/// Starts the tarpc server and connects one client to it.
pub(crate) async fn start() -> Result<System, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).ok();
            let transport = tarpc::serde_transport::Transport::from((tcp, Bincode::default()));
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(EchoServer.serve())
                    .for_each(|f| async move {
                        tokio::spawn(f);
                    }),
            );
        }
    });
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).ok();
    let transport = tarpc::serde_transport::Transport::from((tcp, Bincode::default()));
    let client = EchoClient::new(client::Config::default(), transport).spawn();
    let echo: EchoFn = Arc::new(move |b| {
        let c = client.clone();
        async move {
            c.echo(context::current(), b.to_vec())
                .await
                .map(bytes::Bytes::from)
                .map_err(|e| e.to_string())
        }
        .boxed()
    });
    Ok(System {
        name: "tarpc",
        echo,
        stream: None,
        bidi: None,
        note: "",
        wire: None,
    })
}
