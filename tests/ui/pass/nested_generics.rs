//! Argument and response types may be nested generics, and a method may take several arguments.

use std::collections::BTreeMap;

#[grid::handler]
pub trait Svc {
    async fn get(
        &self,
        a: Vec<Option<String>>,
        b: BTreeMap<String, Vec<(u8, Option<bool>)>>,
        c: Option<Vec<u64>>,
    ) -> Result<Vec<Option<String>>, Option<String>>;
    async fn items(
        &self,
        q: Vec<Vec<u8>>,
        out: grid::ResponseSender<Option<Vec<String>>>,
    ) -> Result<(), String>;
}

fn main() {}
