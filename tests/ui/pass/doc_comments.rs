#![deny(missing_docs)]
//! Doc comments on the trait and its methods carry over; generated items have their own docs.

use serde::{Deserialize, Serialize};

/// A request.
#[derive(Serialize, Deserialize)]
pub struct Req {
    /// A value.
    pub value: u32,
}

/// A documented service.
#[grid::handler]
pub trait Documented {
    /// Gets a thing.
    ///
    /// With a second paragraph.
    async fn get(&self, req: Req) -> Result<u32, String>;
}

fn main() {
    let _ = DocumentedClient::GET;
}
