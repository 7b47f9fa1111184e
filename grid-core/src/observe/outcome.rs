//! How a call ended, as one word: the `outcome` field of its span and the `kind` label of its
//! error counter.

use crate::error::Error;
use crate::frame::ErrorCode;
use crate::mux::CancelCause;

/// How a call ended, on either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The call succeeded (a stream: it opened, or its handler returned `Ok`).
    Ok,
    /// The handler returned its error.
    Application,
    /// The handler panicked.
    Panic,
    /// No such handler or subroute.
    UnknownHandler,
    /// The deadline passed.
    Deadline,
    /// Cancelled: locally, or (on the server) the caller gave up.
    Cancelled,
    /// The caller dropped the call's future before it finished.
    Dropped,
    /// The link dropped in flight.
    Disconnected,
    /// Not sent: no live link.
    NotConnected,
    /// The peer is draining or shutting down.
    GoingAway,
    /// The other side stopped answering a stream's pings.
    Unresponsive,
    /// Refused for load: too many calls, or a full byte budget.
    Overloaded,
    /// A payload over a limit.
    TooLarge,
    /// A protocol violation.
    Protocol,
    /// This node is shutting down.
    Shutdown,
    /// Anything else.
    Other,
}

impl Outcome {
    /// Every outcome but `Ok`, in `index` order: the kinds of error counted.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ERRORS: [Outcome; 15] = [
        Outcome::Application,
        Outcome::Panic,
        Outcome::UnknownHandler,
        Outcome::Deadline,
        Outcome::Cancelled,
        Outcome::Dropped,
        Outcome::Disconnected,
        Outcome::NotConnected,
        Outcome::GoingAway,
        Outcome::Unresponsive,
        Outcome::Overloaded,
        Outcome::TooLarge,
        Outcome::Protocol,
        Outcome::Shutdown,
        Outcome::Other,
    ];

    /// The word in spans and labels.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Application => "application",
            Outcome::Panic => "panic",
            Outcome::UnknownHandler => "unknown_handler",
            Outcome::Deadline => "deadline",
            Outcome::Cancelled => "cancelled",
            Outcome::Dropped => "dropped",
            Outcome::Disconnected => "disconnected",
            Outcome::NotConnected => "not_connected",
            Outcome::GoingAway => "going_away",
            Outcome::Unresponsive => "unresponsive",
            Outcome::Overloaded => "overloaded",
            Outcome::TooLarge => "too_large",
            Outcome::Protocol => "protocol",
            Outcome::Shutdown => "shutdown",
            Outcome::Other => "other",
        }
    }

    /// Position in [`ERRORS`](Self::ERRORS); `None` for `Ok`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn error_index(self) -> Option<usize> {
        Outcome::ERRORS.iter().position(|o| *o == self)
    }

    /// The outcome of a call that failed with `e`, as the caller sees it.
    pub(crate) fn of_error(e: &Error) -> Outcome {
        match e {
            Error::Remote(r) => Outcome::of_code(r.code),
            Error::UnknownHandler { .. } => Outcome::UnknownHandler,
            Error::Disconnected { .. } => Outcome::Disconnected,
            Error::GoingAway { .. } => Outcome::GoingAway,
            Error::NotConnected { .. } | Error::UnknownPeer(_) => Outcome::NotConnected,
            Error::Deadline => Outcome::Deadline,
            Error::Cancelled => Outcome::Cancelled,
            Error::Unresponsive => Outcome::Unresponsive,
            Error::BudgetExceeded => Outcome::Overloaded,
            Error::PayloadTooLarge { .. } => Outcome::TooLarge,
            Error::Protocol(_) => Outcome::Protocol,
            Error::Shutdown => Outcome::Shutdown,
            _ => Outcome::Other,
        }
    }

    /// The outcome an error record says.
    pub(crate) fn of_code(code: ErrorCode) -> Outcome {
        match code {
            ErrorCode::Application => Outcome::Application,
            ErrorCode::UnknownHandler | ErrorCode::UnknownSubroute => Outcome::UnknownHandler,
            ErrorCode::Panic => Outcome::Panic,
            ErrorCode::Deadline => Outcome::Deadline,
            ErrorCode::Cancelled => Outcome::Cancelled,
            ErrorCode::TooLarge => Outcome::TooLarge,
            ErrorCode::Overloaded => Outcome::Overloaded,
            ErrorCode::Protocol => Outcome::Protocol,
            ErrorCode::ShuttingDown => Outcome::Shutdown,
            ErrorCode::Internal | ErrorCode::Other(_) => Outcome::Other,
        }
    }

    /// The outcome of a served call cancelled for `cause`.
    pub(crate) fn of_cause(cause: CancelCause) -> Outcome {
        match cause {
            CancelCause::CallerGaveUp => Outcome::Cancelled,
            CancelCause::Deadline => Outcome::Deadline,
            CancelCause::Disconnected => Outcome::Disconnected,
            CancelCause::ShuttingDown => Outcome::Shutdown,
            CancelCause::CallerUnresponsive => Outcome::Unresponsive,
            CancelCause::Protocol => Outcome::Protocol,
            CancelCause::Overloaded => Outcome::Overloaded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_outcome_has_its_own_index_and_word() {
        assert_eq!(Outcome::Ok.error_index(), None);
        let mut words: Vec<_> = Outcome::ERRORS.iter().map(|o| o.as_str()).collect();
        for (i, o) in Outcome::ERRORS.iter().enumerate() {
            assert_eq!(o.error_index(), Some(i));
        }
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), Outcome::ERRORS.len());
    }
}
