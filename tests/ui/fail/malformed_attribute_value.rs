use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Req;
#[derive(Serialize, Deserialize)]
pub struct Oops;

#[grid::handler]
pub trait Svc {
    #[grid(id = "seven")]
    async fn get(&self, req: Req) -> Result<Req, Oops>;
}
fn main() {}
