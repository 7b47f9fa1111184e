//! grid: typed, multiplexed, two-way RPC between the servers of one cluster, over one WebSocket per
//! pair of nodes.
//!
//! This is the facade crate: the only crate users name. It re-exports the runtime (`grid-core`)
//! and, once it lands, the `#[grid::handler]` macro.

pub use grid_core::*;
