use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Req;
#[derive(Serialize, Deserialize)]
pub struct Oops;

#[grid::handler]
pub trait Svc {
    async fn get(&self, req: Req, a: grid::ResponseSender<Req>, b: grid::ResponseSender<Req>) -> Result<(), Oops>;
}
fn main() {}
