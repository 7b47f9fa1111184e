//! The guide: how to use grid, a page per topic. Its examples are doctests that run (two nodes
//! in one process, on loopback sockets), except where they need a crate grid does not depend on
//! (axum) or files on disk (TLS certificates).
//!
//! Start with the [crate docs](crate) (the stream ends) and the [`handler`](macro@crate::handler)
//! macro, then:
//!
//! - [`streams`]: the three stream shapes, flow control, how a stream ends;
//! - [`deadlines`]: deadlines, cancellation, failing fast;
//! - [`handlers`]: where a handler runs, and what that asks of long work;
//! - [`subroutes`]: several instances of one service on a node;
//! - [`tls`]: `https://` names, the cluster CA, mutual TLS;
//! - [`embedding`]: serving grid's route from axum, hyper or your own accept loop;
//! - [`evolution`]: rolling upgrades, handler tables and the grid-build lock file.

#[doc = include_str!("guide/streams.md")]
pub mod streams {}

#[doc = include_str!("guide/deadlines.md")]
pub mod deadlines {}

#[doc = include_str!("guide/handlers.md")]
pub mod handlers {}

#[doc = include_str!("guide/subroutes.md")]
pub mod subroutes {}

#[doc = include_str!("guide/tls.md")]
pub mod tls {}

#[doc = include_str!("guide/embedding.md")]
pub mod embedding {}

#[doc = include_str!("guide/evolution.md")]
pub mod evolution {}
