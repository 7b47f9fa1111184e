//! Hygiene: under `#![no_implicit_prelude]`, with the facade reached by another name through
//! `crate = "..."`, the expansion still compiles.

#![no_implicit_prelude]

extern crate grid as renamed;

#[renamed::handler(crate = "renamed")]
pub trait Svc {
    async fn get(
        &self,
        ctx: &renamed::Context,
        x: ::std::string::String,
    ) -> ::std::result::Result<u32, ::std::string::String>;
    async fn items(
        &self,
        input: renamed::RequestReceiver<u32>,
        out: renamed::ResponseSender<u32>,
    ) -> ::std::result::Result<(), ()>;
}

fn main() {
    let _ = SvcClient::GET;
}
