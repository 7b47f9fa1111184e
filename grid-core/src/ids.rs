//! Identifier newtypes used on the wire.

use std::fmt;

/// Names one multiplexed call (a "mux") on one connection.
///
/// Allocated by the side that starts the call, from its own half of the space: the side that
/// *dialed* the connection uses odd numbers, the side that *accepted* it uses even numbers. So
/// the same number can never name two unrelated muxes, one in each direction, and a frame for a
/// mux always tells its receiver whether the mux is one it started or one it serves.
///
/// `0` is reserved for connection-level frames (pings, go-away, handshake).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MuxId(pub u32);

impl MuxId {
    /// The connection itself: pings, go-away and the handshake.
    pub const CONNECTION: MuxId = MuxId(0);

    /// True when this id was allocated by the dialing side of the connection.
    pub const fn is_dialer_allocated(self) -> bool {
        self.0 & 1 == 1
    }

    /// True for the reserved connection-level id.
    pub const fn is_connection(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for MuxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mux#{}", self.0)
    }
}

impl fmt::Display for MuxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Names a registered handler, stable across versions of a service.
///
/// Normally derived at compile time from the handler's wire name (`Service.method`) with
/// [`HandlerId::from_wire_name`]; it can also be chosen by hand. `0` is reserved and never names a
/// handler.
///
/// An id displays as the wire name it was derived from when this process knows that name (every
/// handler registered on a [`Manager`](crate::Manager) and every handler of a generated typed
/// client is known; [`HandlerSpec::remember`](crate::HandlerSpec::remember) adds others), and as
/// its hex value otherwise: log lines, span fields, metric labels and error messages name
/// handlers, not numbers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandlerId(pub u32);

impl HandlerId {
    /// Derives the id of a wire name: 32-bit FNV-1a over the UTF-8 bytes; a result of `0` (the
    /// reserved id) maps to `1`. The derivation is part of the protocol and lives in one place,
    /// `grid_wire::handler_id`, which the macro and grid-build use too; its tests pin known
    /// values, since changing it renumbers every handler.
    pub const fn from_wire_name(name: &str) -> HandlerId {
        HandlerId(grid_wire::handler_id(name))
    }

    /// The wire name this id was derived from, if this process knows it (see the type's doc).
    pub fn name(self) -> Option<&'static str> {
        crate::observe::names::name_of(self)
    }
}

impl fmt::Display for HandlerId {
    /// The wire name if known, else the id in hex (`0x0a3d57d6`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{:#010x}", self.0),
        }
    }
}

impl fmt::Debug for HandlerId {
    /// Both: `HandlerId(0xb5937eee "Locker.lock")`, or `HandlerId(0xb5937eee)` when unnamed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "HandlerId({:#010x} {name:?})", self.0),
            None => write!(f, "HandlerId({:#010x})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_name_ids_are_pinned() {
        // Changing these values breaks every deployed cluster: see the doc of `from_wire_name`.
        assert_eq!(HandlerId::from_wire_name(""), HandlerId(0x811c_9dc5));
        assert_eq!(HandlerId::from_wire_name("a"), HandlerId(0xe40c_292c));
        const LOCK: HandlerId = HandlerId::from_wire_name("Locker.lock");
        assert_eq!(LOCK, HandlerId(0xb593_7eee));
        assert_eq!(
            HandlerId::from_wire_name("Locker.lock"),
            HandlerId::from_wire_name("Locker.lock")
        );
        assert_ne!(
            HandlerId::from_wire_name("Locker.lock"),
            HandlerId::from_wire_name("Locker.unlock")
        );
    }

    #[test]
    fn ids_display_their_wire_name_once_known() {
        // A name no other test remembers, so the book's other entries cannot interfere.
        const SPEC: crate::HandlerSpec = crate::HandlerSpec::named("IdsTest.named");
        assert_eq!(SPEC.id.to_string(), format!("{:#010x}", SPEC.id.0));
        assert_eq!(SPEC.id.name(), None);
        crate::HandlerSpec::remember(&[SPEC]);
        assert_eq!(SPEC.id.to_string(), "IdsTest.named");
        assert_eq!(
            format!("{:?}", SPEC.id),
            format!("HandlerId({:#010x} \"IdsTest.named\")", SPEC.id.0)
        );
        // A hand-made id of the same value is the same id: it displays the same.
        assert_eq!(HandlerId(SPEC.id.0).to_string(), "IdsTest.named");
        assert_eq!(HandlerId(7).to_string(), "0x00000007");
    }

    #[test]
    fn mux_parity_tells_the_allocator() {
        assert!(MuxId(1).is_dialer_allocated());
        assert!(!MuxId(2).is_dialer_allocated());
        assert!(MuxId::CONNECTION.is_connection());
    }
}
