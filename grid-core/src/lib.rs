//! The grid runtime.
