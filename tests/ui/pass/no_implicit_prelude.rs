//! Hygiene: the expansion names nothing from the prelude.

#![no_implicit_prelude]

#[::grid::handler]
pub trait Svc {
    async fn get(
        &self,
        ctx: &::grid::Context,
        x: ::std::string::String,
    ) -> ::std::result::Result<u32, ::std::string::String>;
    async fn items(
        &self,
        x: u32,
        input: ::grid::RequestReceiver<u32>,
        out: ::grid::ResponseSender<u32>,
    ) -> ::std::result::Result<(), ()>;
    async fn total(&self, input: ::grid::RequestReceiver<u32>) -> ::std::result::Result<u32, ()>;
}

fn main() {}
