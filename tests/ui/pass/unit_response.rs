//! Unit requests, responses and errors are fine.

#[grid::handler]
pub trait Svc {
    async fn ping(&self) -> Result<(), ()>;
    async fn ticks(&self, out: grid::ResponseSender<()>) -> Result<(), ()>;
}

struct Impl;

impl Svc for Impl {
    async fn ping(&self) -> Result<(), ()> {
        Ok(())
    }
    async fn ticks(&self, mut out: grid::ResponseSender<()>) -> Result<(), ()> {
        out.send(()).await.map_err(|_| ())
    }
}

async fn call(c: SvcClient) -> Result<(), grid::CallError<()>> {
    c.ping().await
}

fn main() {
    let _ = call;
    let _ = SvcServer::new(Impl);
}
