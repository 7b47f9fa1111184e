//! The wire rules of grid, written once.
//!
//! Three programs must agree on how a `#[grid::handler]` method becomes something on the wire:
//! the runtime (`grid-core`, which routes calls by handler id), the macro (`grid-macros`, which
//! computes ids at compile time and generates the codecs) and `grid-build` (which records every
//! handler in a lock file before the crate is compiled). If any two of them disagreed, handlers
//! would be renumbered or described wrongly, and a rolling upgrade would break without a
//! warning. So the rules live here, and the three use this crate:
//!
//! - [`handler_id`]: the id of a wire name (32-bit FNV-1a), a `const fn` so the runtime's
//!   `HandlerId::from_wire_name` stays `const`;
//! - [`Shape`]: the four kinds of handler, told apart by their stream ends;
//! - with the `syntax` feature, [`syntax`]: how a trait method reads — which argument is the
//!   context, a stream end or part of the request, the wire name and id it gets, and its
//!   `#[grid(...)]` options. The runtime does not enable it, so it does not depend on syn.
//!
//! The crate has no dependency without `syntax`.

#![deny(rustdoc::broken_intra_doc_links)]
#![forbid(unsafe_code)]

use std::fmt;

#[cfg(feature = "syntax")]
pub mod syntax;

/// The id of a wire name: 32-bit FNV-1a over its UTF-8 bytes, with `0` (the reserved id) mapped
/// to `1`.
///
/// This function is part of the protocol: changing it renumbers every handler of every deployed
/// cluster. The tests pin known values.
pub const fn handler_id(wire_name: &str) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let bytes = wire_name.as_bytes();
    let mut hash = OFFSET_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(PRIME);
        i += 1;
    }
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// The wire name of a method without `#[grid(name = "…")]`: `Service.method`.
///
/// `method` is the method's identifier as Rust prints it (a raw identifier keeps its `r#`).
pub fn default_wire_name(service: &str, method: &str) -> String {
    format!("{service}.{method}")
}

/// What kind of call a handler is, told apart by its stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// Request → response.
    Unary,
    /// Request → stream of items (a `ResponseSender<T>` argument).
    ServerStream,
    /// Request + stream of inputs (a `RequestReceiver<T>` argument) → response.
    ClientStream,
    /// Request + stream of inputs → stream of items (both).
    TwoWay,
}

impl Shape {
    /// The shape of a handler with (or without) an input and an output stream.
    pub const fn from_streams(input: bool, output: bool) -> Shape {
        match (input, output) {
            (false, false) => Shape::Unary,
            (false, true) => Shape::ServerStream,
            (true, false) => Shape::ClientStream,
            (true, true) => Shape::TwoWay,
        }
    }

    /// True when the handler's items are its output (it returns `Result<(), E>`).
    pub const fn has_output_stream(self) -> bool {
        matches!(self, Shape::ServerStream | Shape::TwoWay)
    }

    /// True when the caller sends a stream of inputs.
    pub const fn has_input_stream(self) -> bool {
        matches!(self, Shape::ClientStream | Shape::TwoWay)
    }

    /// The spelling used by lock files and docs: `unary`, `server-stream`, `client-stream`,
    /// `two-way`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Shape::Unary => "unary",
            Shape::ServerStream => "server-stream",
            Shape::ClientStream => "client-stream",
            Shape::TwoWay => "two-way",
        }
    }

    /// Reads [`as_str`](Self::as_str)'s spelling back.
    pub fn parse(s: &str) -> Option<Shape> {
        [
            Shape::Unary,
            Shape::ServerStream,
            Shape::ClientStream,
            Shape::TwoWay,
        ]
        .into_iter()
        .find(|shape| shape.as_str() == s)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_known_wire_names_are_pinned() {
        // Changing any of these renumbers every deployed handler: see `handler_id`.
        assert_eq!(handler_id(""), 0x811c_9dc5);
        assert_eq!(handler_id("a"), 0xe40c_292c);
        assert_eq!(handler_id("Locker.lock"), 0xb593_7eee);
        assert_eq!(handler_id("Locker.watch"), 0x12e1_173c);
        assert_eq!(handler_id("Disk.read"), 0x4766_e936);
    }

    #[test]
    fn the_id_is_computed_at_compile_time() {
        const ID: u32 = handler_id("Locker.lock");
        assert_eq!(ID, 0xb593_7eee);
    }

    #[test]
    fn shapes_round_trip_their_spelling() {
        for (input, output) in [(false, false), (false, true), (true, false), (true, true)] {
            let shape = Shape::from_streams(input, output);
            assert_eq!(shape.has_input_stream(), input);
            assert_eq!(shape.has_output_stream(), output);
            assert_eq!(Shape::parse(shape.as_str()), Some(shape));
        }
        assert_eq!(Shape::parse("sideways"), None);
    }
}
