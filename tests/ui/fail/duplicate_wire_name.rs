use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Req;
#[derive(Serialize, Deserialize)]
pub struct Oops;

#[grid::handler]
pub trait Svc {
    async fn get(&self, req: Req) -> Result<Req, Oops>;
    #[grid(name = "Svc.get")]
    async fn get_v2(&self, req: Req) -> Result<Req, Oops>;
}
fn main() {}
