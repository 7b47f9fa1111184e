//! The process's book of handler names: which wire name each [`HandlerId`] was derived from.
//!
//! A [`HandlerId`] on the wire is a 32-bit number; people read names. Every registration on a
//! [`Manager`](crate::Manager) and every generated typed client writes the wire names it knows
//! here (they are `&'static str`s already, from [`HandlerSpec`]), so that a raw id — made by
//! hand, decoded from a frame, or carried in an [`Error`](crate::Error) — displays as
//! `Locker.lock` wherever the process knows the name, and as its hex value otherwise.
//!
//! The book is read only to print (a log line, a span field, an error message, a metric label
//! registered once per connection and handler): never on the path of a call that no subscriber
//! or recorder looks at. It only grows, and is bounded by the handlers the process's code names.
//! Two different names of one id (a hash collision across services a registry never sees
//! together) keep the first.

use std::collections::HashMap;
use std::sync::LazyLock;

use parking_lot::RwLock;

use crate::handler::HandlerSpec;
use crate::ids::HandlerId;

static BOOK: LazyLock<RwLock<HashMap<u32, &'static str>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Writes the names of `specs` into the book (a read first: most names are already known).
pub(crate) fn remember(specs: &[HandlerSpec]) {
    let known = {
        let book = BOOK.read();
        specs.iter().all(|s| book.contains_key(&s.id.0))
    };
    if known {
        return;
    }
    let mut book = BOOK.write();
    for s in specs {
        book.entry(s.id.0).or_insert(s.name);
    }
}

/// The wire name `id` was derived from, if this process knows it.
pub(crate) fn name_of(id: HandlerId) -> Option<&'static str> {
    BOOK.read().get(&id.0).copied()
}
