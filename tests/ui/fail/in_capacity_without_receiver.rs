use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Req;
#[derive(Serialize, Deserialize)]
pub struct Oops;

#[grid::handler]
pub trait Svc {
    #[grid(in_capacity = 4)]
    async fn get(&self, req: Req, out: grid::ResponseSender<Req>) -> Result<(), Oops>;
}
fn main() {}
