use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Req;
#[derive(Serialize, Deserialize)]
pub struct Oops;

#[grid::handler]
pub trait Svc {
    async fn get(&self, req: Req, a: grid::Sender<Req>, b: grid::Sender<Req>) -> Result<(), Oops>;
}
fn main() {}
