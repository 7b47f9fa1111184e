use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Req;
#[derive(Serialize, Deserialize)]
pub struct Oops;

#[grid::handler]
pub trait Svc {
    async fn get(&self, req: Req) -> Result<Req, Oops> {
        Ok(req)
    }
}
fn main() {}
