//! A method behind `cfg` exists only when the cfg is on, on every generated item.

#[grid::handler]
pub trait Svc {
    async fn always(&self, x: u32) -> Result<u32, String>;
    #[cfg(any())]
    async fn never(&self, x: u32) -> Result<u32, String>;
}

struct Impl;

impl Svc for Impl {
    async fn always(&self, x: u32) -> Result<u32, String> {
        Ok(x)
    }
}

fn main() {
    let _ = SvcClient::ALWAYS;
    assert_eq!(SvcClient::HANDLERS.len(), 1);
    let _ = SvcServer::new(Impl);
}
