use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Req;
#[derive(Serialize, Deserialize)]
pub struct Oops;

#[grid::handler]
pub trait Svc {
    fn get(&self, req: Req) -> Result<Req, Oops>;
    async fn put(&mut self, req: Req) -> Req;
}
fn main() {}
