//! A typed client names its handlers to the process: their ids display as wire names in logs,
//! spans, metric labels and errors, even where no node of the process serves them.

#![allow(clippy::unwrap_used, missing_docs)]

use grid::{HandlerId, Manager};

#[grid::handler]
pub trait Named {
    async fn ping(&self, n: u32) -> Result<u32, String>;
    #[grid(name = "Named.pong.v2")]
    async fn pong(&self, n: u32) -> Result<u32, String>;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_client_makes_its_handler_ids_display_as_names() {
    let hex = format!("{:#010x}", NamedClient::PING.id.0);
    assert_eq!(
        NamedClient::PING.id.to_string(),
        hex,
        "unnamed before any client"
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let me = format!("http://{}", l.local_addr().unwrap());
    // A peer that is never started: the client is made, no call is needed.
    let peer = "http://127.0.0.1:1".to_owned();
    let m = Manager::builder(me)
        .peers([peer.clone()])
        .secret("s")
        .listener(l)
        .start()
        .await
        .unwrap();
    let _client = NamedClient::new(m.connection(&peer).unwrap());
    assert_eq!(NamedClient::PING.id.to_string(), "Named.ping");
    assert_eq!(
        HandlerId(NamedClient::PONG.id.0).to_string(),
        "Named.pong.v2"
    );
    assert_eq!(NamedClient::PONG.id.name(), Some("Named.pong.v2"));
    m.shutdown().await;
}
