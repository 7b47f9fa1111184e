//! The `#[grid::handler]` attribute macro. Use it through the `grid` crate, which documents it;
//! generated code reaches everything through `::grid::__private`.
//!
//! The crate is split like serde_derive: `ast` parses the trait into a per-method IR (collecting
//! every error it meets), `check` validates cross-cutting rules, and `expand` turns a valid IR
//! into tokens without validating anything. How a method reads (wire name, id, shape, which
//! argument is what) comes from `grid_wire::syntax`, which grid-build shares.

#![deny(rustdoc::broken_intra_doc_links)]

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;

use proc_macro::TokenStream;

/// Turns a trait of `async fn(&self, …)` methods into handler ids, a typed client and server
/// dispatch. See the `grid` crate for the full documentation.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let item = syn::parse_macro_input!(input as syn::ItemTrait);
    expand::expand(args, &item).into()
}
