//! Which table an inbound frame belongs to, and what to say about frames for muxes we do not know.
//!
//! A mux id's parity names the side that allocated it (odd: the dialer, even: the acceptor), and
//! an op names the direction it travels in. Together they say whether a frame is for a call *we*
//! started (our outgoing table) or for a call we *serve* (our incoming table). A frame whose op and
//! id disagree — a `Request` with an id from our own half, say — is a connection-level protocol
//! violation.

use crate::frame::{ErrorCode, ErrorRecord, Frame, Op};
use crate::ids::MuxId;

/// Which side of the WebSocket this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We dialed: we allocate odd mux ids.
    Dialer,
    /// We accepted: we allocate even mux ids.
    Acceptor,
}

impl Role {
    /// True when `mux` was allocated by this side.
    pub fn allocated(self, mux: MuxId) -> bool {
        mux.is_dialer_allocated() == (self == Role::Dialer)
    }

    /// The first mux id this side allocates.
    pub fn first_id(self) -> u32 {
        match self {
            Role::Dialer => 1,
            Role::Acceptor => 2,
        }
    }
}

/// Where an inbound frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A connection-level frame (ping, pong, go-away, handshake).
    Connection,
    /// A frame for a call we started.
    Outgoing(MuxId),
    /// A frame for a call we serve.
    Incoming(MuxId),
}

impl Direction {
    /// Classifies an inbound frame, or names the op whose id is from the wrong half.
    pub fn of(role: Role, frame: &Frame) -> Result<Direction, Op> {
        let mux = frame.mux();
        if mux.is_connection() {
            return Ok(Direction::Connection);
        }
        let ours = role.allocated(mux);
        // Ops a callee sends travel to the caller, ops a caller sends travel to the callee; the
        // symmetric ones (data, credit, end, ping, pong) are told apart by the id alone.
        let to_caller = match frame.op() {
            Op::Response | Op::Ack | Op::Error => Some(true),
            Op::Request | Op::Open | Op::Cancel => Some(false),
            _ => None,
        };
        match to_caller {
            Some(true) if !ours => Err(frame.op()),
            Some(false) if ours => Err(frame.op()),
            _ if ours => Ok(Direction::Outgoing(mux)),
            _ => Ok(Direction::Incoming(mux)),
        }
    }
}

/// The reply, if any, to a frame addressed to a mux that is not in its table.
///
/// Late frames after a cancel or an end are normal and are ignored. Only a stream *ping* gets an
/// answer, because a caller pinging a stream we no longer serve must learn it is orphaned: the
/// answer is an `Error` (a callee→caller op) for that same id, so it can only reach the caller's
/// outgoing mux of that number and never an unrelated mux of ours.
pub fn unknown_mux_reply(direction: Direction, frame: &Frame) -> Option<Frame> {
    match (direction, frame) {
        (Direction::Incoming(mux), Frame::Ping { .. }) => Some(Frame::Error {
            mux,
            error: ErrorRecord::text(ErrorCode::Protocol, "unknown stream"),
        }),
        (Direction::Outgoing(mux), Frame::Ping { .. }) => Some(Frame::Cancel {
            mux,
            reason: crate::frame::CancelReason::CallerGaveUp,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::CancelReason;

    #[test]
    fn parity_and_op_pick_the_table() {
        let ping = |m| Frame::Ping {
            mux: MuxId(m),
            nonce: 7,
        };
        // The dialer allocated 3: for the dialer it is outgoing, for the acceptor incoming.
        assert_eq!(
            Direction::of(Role::Dialer, &ping(3)),
            Ok(Direction::Outgoing(MuxId(3)))
        );
        assert_eq!(
            Direction::of(Role::Acceptor, &ping(3)),
            Ok(Direction::Incoming(MuxId(3)))
        );
        assert_eq!(
            Direction::of(Role::Dialer, &ping(0)),
            Ok(Direction::Connection)
        );
        let cancel = Frame::Cancel {
            mux: MuxId(4),
            reason: CancelReason::CallerGaveUp,
        };
        assert_eq!(
            Direction::of(Role::Dialer, &cancel),
            Ok(Direction::Incoming(MuxId(4)))
        );
        // A cancel for an id we allocated would be the peer cancelling our own call: refused.
        assert_eq!(Direction::of(Role::Acceptor, &cancel), Err(Op::Cancel));
        let ack = Frame::Ack { mux: MuxId(5) };
        assert_eq!(
            Direction::of(Role::Dialer, &ack),
            Ok(Direction::Outgoing(MuxId(5)))
        );
        assert_eq!(Direction::of(Role::Acceptor, &ack), Err(Op::Ack));
    }

    #[test]
    fn unknown_mux_replies_go_the_right_way() {
        // We are the acceptor and serve nothing under 3; the dialer pings its stream 3.
        let frame = Frame::Ping {
            mux: MuxId(3),
            nonce: 1,
        };
        let dir = Direction::of(Role::Acceptor, &frame).expect("valid");
        let reply = unknown_mux_reply(dir, &frame).expect("pings are answered");
        assert_eq!(reply.op(), Op::Error);
        // The reply is a callee→caller op on id 3: at the dialer it can only reach its outgoing 3.
        assert_eq!(
            Direction::of(Role::Dialer, &reply),
            Ok(Direction::Outgoing(MuxId(3)))
        );
        // Late data, credits, ends and responses are ignored.
        for late in [
            Frame::Data {
                mux: MuxId(3),
                seq: 9,
                payload: None,
            },
            Frame::Credit {
                mux: MuxId(3),
                credits: 1,
                bytes: 1,
            },
            Frame::End {
                mux: MuxId(3),
                seq: 0,
                error: None,
            },
            Frame::Cancel {
                mux: MuxId(3),
                reason: CancelReason::Deadline,
            },
        ] {
            let dir = Direction::of(Role::Acceptor, &late).expect("valid");
            assert_eq!(unknown_mux_reply(dir, &late), None, "{late:?}");
        }
    }
}
