//! Handshake errors, and the rejection a state machine hands back: the error plus the `Reject`
//! frame (if any) to send before closing.

use std::fmt;

use super::records::{decode, reject_frame, sanitize_reason, RejectCode, RejectRecord};
use crate::frame::{Frame, Op};

/// Why a handshake failed.
///
/// The variants keep apart *who* said no: [`Rejected`](HandshakeError::Rejected) is the other
/// side's refusal (with its reason, to log), [`Refused`](HandshakeError::Refused) is ours, and the
/// rest are protocol failures we detected. [`code`](HandshakeError::code) gives the reject code in
/// every case, e.g. to back off longer on configuration errors such as
/// [`RejectCode::BadProof`] or [`RejectCode::WrongDirection`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The other side refused the handshake and said why.
    #[error("peer {} rejected us: {reason} [{code}]", who(.peer))]
    Rejected {
        /// The peer's name (empty if not known yet).
        peer: String,
        /// The peer's reject code.
        code: RejectCode,
        /// The peer's reason (sanitized for logging).
        reason: String,
    },
    /// We refused the other side: it is not who or what our policy accepts.
    #[error("refused peer {}: {reason} [{code}]", who(.peer))]
    Refused {
        /// The peer's name, as it claimed or as we dialed it (empty if not known yet).
        peer: String,
        /// The code we sent.
        code: RejectCode,
        /// The reason we sent.
        reason: String,
    },
    /// The peer sent a record that does not decode or is out of bounds.
    #[error("malformed handshake {op:?} from {}: {detail}", who(.peer))]
    Malformed {
        /// The peer's name (empty if not known yet).
        peer: String,
        /// The op of the offending frame.
        op: Op,
        /// What was wrong.
        detail: String,
    },
    /// The peer sent a frame that is not valid in this handshake state.
    #[error("unexpected {got:?} frame from {} while waiting for {expected:?}", who(.peer))]
    UnexpectedFrame {
        /// The peer's name (empty if not known yet).
        peer: String,
        /// The op that arrived.
        got: Op,
        /// The op the handshake was waiting for.
        expected: Op,
    },
    /// The peer speaks another protocol version.
    #[error("peer {} speaks protocol version {theirs}, we speak {ours}", who(.peer))]
    Version {
        /// The peer's name (empty if not known yet).
        peer: String,
        /// Our version.
        ours: u8,
        /// The peer's version.
        theirs: u8,
    },
    /// The handshake did not complete within its timeout. Built by the connection driver, which
    /// owns the clock; the state machines never produce it.
    #[error("handshake with {} did not complete within {after_ms} ms", who(.peer))]
    Timeout {
        /// The peer's name (empty if not known yet).
        peer: String,
        /// The timeout that expired, in milliseconds.
        after_ms: u64,
    },
}

/// How a peer appears in a message: its name, or a placeholder before it said who it is.
fn who(peer: &str) -> &str {
    if peer.is_empty() {
        "(unnamed)"
    } else {
        peer
    }
}

impl HandshakeError {
    /// The reject code of this failure: the peer's code for
    /// [`Rejected`](HandshakeError::Rejected), else the code we send (or would send) for it.
    pub fn code(&self) -> RejectCode {
        match self {
            HandshakeError::Rejected { code, .. } | HandshakeError::Refused { code, .. } => *code,
            HandshakeError::Malformed { .. } => RejectCode::Malformed,
            HandshakeError::UnexpectedFrame { .. } => RejectCode::Unexpected,
            HandshakeError::Version { .. } => RejectCode::BadVersion,
            HandshakeError::Timeout { .. } => RejectCode::Timeout,
        }
    }

    /// True when the other side refused us, false when the failure was detected here.
    pub fn is_remote(&self) -> bool {
        matches!(self, HandshakeError::Rejected { .. })
    }

    /// The peer's name as far as the handshake knew it (empty if it never said).
    pub fn peer(&self) -> &str {
        match self {
            HandshakeError::Rejected { peer, .. }
            | HandshakeError::Refused { peer, .. }
            | HandshakeError::Malformed { peer, .. }
            | HandshakeError::UnexpectedFrame { peer, .. }
            | HandshakeError::Version { peer, .. }
            | HandshakeError::Timeout { peer, .. } => peer,
        }
    }
}

/// A failed handshake step: the error to report, and the `Reject` frame to send the peer before
/// closing the connection.
///
/// Sending the frame is best-effort (the peer may already be gone). It is `None` when the peer
/// itself sent the `Reject`: nobody answers a rejection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The `Reject` frame to send, if any. (Boxed: it is sent once per failed connection, and
    /// keeps `Result<_, Rejection>` small on the success path.)
    pub frame: Option<Box<Frame>>,
    /// What went wrong.
    pub error: HandshakeError,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

impl From<Rejection> for HandshakeError {
    fn from(r: Rejection) -> HandshakeError {
        r.error
    }
}

impl Rejection {
    /// We refuse `peer` with `code` and `reason`; the reason goes to the peer too.
    pub(super) fn refuse(peer: &str, code: RejectCode, reason: String) -> Rejection {
        Rejection {
            frame: Some(Box::new(reject_frame(code, &reason))),
            error: HandshakeError::Refused {
                peer: peer.to_owned(),
                code,
                reason,
            },
        }
    }

    /// A refusal decided outside the handshake's own checks (the node is not ready, or is
    /// shutting down), after the peer proved itself: `code` and `reason` go to the peer.
    pub fn refusal(peer: &str, code: RejectCode, reason: String) -> Rejection {
        Rejection::refuse(peer, code, reason)
    }

    /// The peer's record `op` is malformed.
    pub(super) fn malformed(peer: &str, op: Op, detail: String) -> Rejection {
        Rejection {
            frame: Some(Box::new(reject_frame(RejectCode::Malformed, &detail))),
            error: HandshakeError::Malformed {
                peer: peer.to_owned(),
                op,
                detail,
            },
        }
    }

    /// The peer speaks version `theirs`.
    pub(super) fn version(peer: &str, ours: u8, theirs: u8) -> Rejection {
        let reason = format!("we speak protocol version {ours}, you speak {theirs}");
        Rejection {
            frame: Some(Box::new(reject_frame(RejectCode::BadVersion, &reason))),
            error: HandshakeError::Version {
                peer: peer.to_owned(),
                ours,
                theirs,
            },
        }
    }
}

/// Takes the payload of the handshake frame `expected` out of `frame`; any other frame ends the
/// handshake: a peer's `Reject` becomes [`HandshakeError::Rejected`], anything else
/// [`HandshakeError::UnexpectedFrame`] with a `Reject` to send.
pub(super) fn expect_frame(
    frame: Frame,
    expected: Op,
    peer: &str,
) -> Result<bytes::Bytes, Rejection> {
    match frame {
        Frame::Handshake { op, payload } if op == expected => Ok(payload),
        Frame::Handshake {
            op: Op::Reject,
            payload,
        } => {
            let error = match decode::<RejectRecord>("Reject", &payload) {
                Ok(r) => HandshakeError::Rejected {
                    peer: peer.to_owned(),
                    code: RejectCode::from_u8(r.code),
                    reason: sanitize_reason(&r.reason),
                },
                Err(detail) => HandshakeError::Malformed {
                    peer: peer.to_owned(),
                    op: Op::Reject,
                    detail,
                },
            };
            Err(Rejection { frame: None, error })
        }
        other => {
            let got = other.op();
            let reason = format!("expected a {expected:?} frame, got {got:?}");
            Err(Rejection {
                frame: Some(Box::new(reject_frame(RejectCode::Unexpected, &reason))),
                error: HandshakeError::UnexpectedFrame {
                    peer: peer.to_owned(),
                    got,
                    expected,
                },
            })
        }
    }
}
