use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Req;
#[derive(Serialize, Deserialize)]
pub struct Oops;

#[grid::handler]
pub trait Svc {
    async fn get(&self, out: grid::ResponseSender<Req>, req: Req) -> Result<(), Oops>;
}
fn main() {}
