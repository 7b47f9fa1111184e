//! The `#[grid::handler]` proc macro (work in progress).
