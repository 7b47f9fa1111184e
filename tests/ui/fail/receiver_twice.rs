use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Req;
#[derive(Serialize, Deserialize)]
pub struct Oops;

#[grid::handler]
pub trait Svc {
    async fn get(&self, a: grid::RequestReceiver<Req>, b: grid::RequestReceiver<Req>) -> Result<Req, Oops>;
}
fn main() {}
