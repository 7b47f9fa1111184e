//! The connection core's handler tables (`PROTOCOL.md` section 9): the table the peer announced,
//! grown by its `Handlers` updates, which new calls are checked against; and how far this node's
//! own registrations have been told to the peer.
//!
//! Both live in the core, under the lock every new call already takes, so checking a call
//! against the peer's table costs one hash lookup and no lock of its own.

use super::{ConnCore, Handles, ProtocolViolation};
use crate::frame::{Frame, Op, Route};
use crate::table::{self, HandlerTable, LocalTable, Supported};

impl<H: Handles> ConnCore<H> {
    /// Sets what the handshake told: the table the peer announced (`None` from an older peer),
    /// and how many of this node's registrations its own handshake record carried.
    pub(crate) fn set_tables(&mut self, peer: Option<HandlerTable>, announced: usize) {
        self.peer_table = peer;
        self.announced = announced;
    }

    /// Whether the peer serves `route`, by the table it announced.
    pub(crate) fn peer_supports(&self, route: &Route) -> Supported {
        self.peer_table
            .as_ref()
            .map_or(Supported::Unknown, |t| t.supports(route))
    }

    /// True when the peer's complete table lacks `route`: a new call to it fails at once, with
    /// nothing sent. The check of every new call: one lookup in a complete table, none otherwise.
    pub(crate) fn peer_lacks(&self, route: &Route) -> bool {
        self.peer_table.as_ref().is_some_and(|t| t.lacks(route))
    }

    /// Tells the peer about the registrations of `local` it has not heard of, in `Handlers`
    /// frames of at most `max_len` bytes (the link's payload limit). Nothing goes to a peer that
    /// announced no table: an older node would take the unknown op for a violation.
    pub(crate) fn announce(&mut self, local: &impl LocalTable, max_len: usize) {
        if self.peer_table.is_none() || !self.is_open() {
            return;
        }
        let entries = local.entries_since(self.announced);
        let complete = local.is_complete();
        let mut done = 0;
        while done < entries.len() {
            let (update, n) = table::encode_prefix(&entries[done..], complete, max_len);
            if n == 0 {
                // A registration larger than a frame of this link can carry: it is never
                // announced, and the table never says it is complete.
                break;
            }
            done += n;
            self.push_control(Frame::Handlers { update });
        }
        self.announced += done;
    }

    /// A `Handlers` update from the peer: its routes join the peer's table. A peer that
    /// announced no table in its handshake has no business sending one, and a malformed update
    /// is a violation; either closes the connection.
    pub(super) fn on_handlers(&mut self, update: &[u8]) {
        let refused = match &mut self.peer_table {
            None => Some(ProtocolViolation::UnexpectedOp { op: Op::Handlers }),
            Some(t) => t.apply(update).err().map(ProtocolViolation::HandlerTable),
        };
        if let Some(v) = refused {
            self.violate(v);
        }
    }
}
