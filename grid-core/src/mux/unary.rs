//! The two halves of a unary call.
//!
//! ```text
//! caller:  Waiting ──Response/Error──▶ Done(result)
//!             │ ──cancel()──────────▶ Done(Cancelled)   + Cancel frame
//!             │ ──deadline──────────▶ Done(Deadline)    + Cancel(deadline) frame
//!             └ ──disconnect()──────▶ Done(Disconnected)
//!
//! callee:  Running ──respond()────────▶ Done            + Response frame
//!             │ ──Cancel frame───────▶ Cancelled(cause) (respond() then sends nothing)
//!             │ ──deadline───────────▶ Cancelled(deadline) + Error(deadline) frame
//!             └ ──disconnect()───────▶ Cancelled(disconnected)
//! ```

use std::time::{Duration, Instant};

use crate::frame::{CancelReason, ErrorCode, ErrorRecord, Frame, Metadata, Payload, Route};
use crate::ids::MuxId;

use super::{CancelCause, MuxError, Violation};

/// The caller's half of a unary call.
#[derive(Debug)]
pub struct UnaryCaller {
    mux: MuxId,
    deadline: Option<Instant>,
    result: Option<Result<Payload, MuxError>>,
    /// The result was produced (it may since have been taken).
    done: bool,
}

impl UnaryCaller {
    /// Starts a call; returns the machine and the `Request` frame to send.
    ///
    /// The deadline travels as milliseconds relative to receipt, rounded up so the callee never
    /// gives up before the caller does.
    pub fn start(
        mux: MuxId,
        route: Route,
        payload: Payload,
        timeout: Option<Duration>,
        now: Instant,
    ) -> (UnaryCaller, Frame) {
        let frame = UnaryCaller::request(mux, route, Metadata::new(), payload, timeout);
        let call = UnaryCaller {
            mux,
            deadline: timeout.and_then(|t| now.checked_add(t)),
            result: None,
            done: false,
        };
        (call, frame)
    }

    /// The `Request` frame alone, for a driver that keeps the call's deadline itself (the
    /// connection core keeps it with the call, and the timer task fails the call when it
    /// passes: no machine is needed for that).
    pub fn request(
        mux: MuxId,
        route: Route,
        metadata: Metadata,
        payload: Payload,
        timeout: Option<Duration>,
    ) -> Frame {
        Frame::Request {
            mux,
            route,
            deadline_ms: timeout.map_or(0, deadline_ms),
            metadata,
            payload,
        }
    }

    /// The call's id.
    pub fn mux(&self) -> MuxId {
        self.mux
    }

    /// Takes a frame addressed to this call. Frames after the result are ignored.
    pub fn handle_frame(&mut self, frame: Frame) {
        if self.done {
            return;
        }
        self.done = true;
        self.result = Some(match frame {
            Frame::Response { result: Ok(p), .. } => Ok(p),
            Frame::Response {
                result: Err(rec), ..
            }
            | Frame::Error { error: rec, .. } => Err(MuxError::Remote(rec)),
            _ => Err(MuxError::Protocol(Violation::Unexpected(
                "frame on a unary call",
            ))),
        });
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.done).then_some(self.deadline).flatten()
    }

    /// Fails the call if its deadline passed; returns the `Cancel` frame for the callee.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Frame> {
        match self.deadline {
            Some(d) if !self.done && now >= d => {
                self.done = true;
                self.result = Some(Err(MuxError::Deadline));
                Some(Frame::Cancel {
                    mux: self.mux,
                    reason: CancelReason::Deadline,
                })
            }
            _ => None,
        }
    }

    /// Gives up on the call; returns the `Cancel` frame, or `None` if it had already finished.
    pub fn cancel(&mut self) -> Option<Frame> {
        if self.done {
            return None;
        }
        self.done = true;
        self.result = Some(Err(MuxError::Cancelled));
        Some(Frame::Cancel {
            mux: self.mux,
            reason: CancelReason::CallerGaveUp,
        })
    }

    /// The connection dropped.
    pub fn disconnect(&mut self) {
        if !self.done {
            self.done = true;
            self.result = Some(Err(MuxError::Disconnected));
        }
    }

    /// The result, once there is one. Takes it: later calls return `None`.
    pub fn take_result(&mut self) -> Option<Result<Payload, MuxError>> {
        self.result.take()
    }

    /// True once the call has a result (taken or not).
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// The callee's half of a unary call.
#[derive(Debug)]
pub struct UnaryCallee {
    mux: MuxId,
    deadline: Option<Instant>,
    state: CalleeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CalleeState {
    Running,
    Cancelled(CancelCause),
    Done,
}

impl UnaryCallee {
    /// Accepts a request that arrived at `now` with the caller's relative deadline.
    pub fn accept(mux: MuxId, deadline_ms: u32, now: Instant) -> UnaryCallee {
        UnaryCallee {
            mux,
            deadline: (deadline_ms > 0).then(|| now + Duration::from_millis(deadline_ms.into())),
            state: CalleeState::Running,
        }
    }

    /// The call's id.
    pub fn mux(&self) -> MuxId {
        self.mux
    }

    /// The deadline as the callee sees it (receipt time plus the caller's remaining time).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Takes a frame addressed to this call: only `Cancel` means anything.
    pub fn handle_frame(&mut self, frame: Frame) {
        if let (CalleeState::Running, Frame::Cancel { reason, .. }) = (self.state, frame) {
            self.state = CalleeState::Cancelled(cause_of(reason));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state == CalleeState::Running)
            .then_some(self.deadline)
            .flatten()
    }

    /// Cancels the handler if the deadline passed; returns an `Error` frame telling the caller.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Frame> {
        match self.deadline {
            Some(d) if self.state == CalleeState::Running && now >= d => {
                self.state = CalleeState::Cancelled(CancelCause::Deadline);
                Some(Frame::Error {
                    mux: self.mux,
                    error: ErrorRecord::text(ErrorCode::Deadline, "deadline passed on the callee"),
                })
            }
            _ => None,
        }
    }

    /// The connection dropped or the node is stopping.
    pub fn abort(&mut self, cause: CancelCause) {
        if self.state == CalleeState::Running {
            self.state = CalleeState::Cancelled(cause);
        }
    }

    /// Why the handler must stop, if it must.
    pub fn cancelled(&self) -> Option<CancelCause> {
        match self.state {
            CalleeState::Cancelled(c) => Some(c),
            _ => None,
        }
    }

    /// The handler finished: the `Response` frame to send, or `None` if nobody is waiting for it.
    pub fn respond(&mut self, result: Result<Payload, ErrorRecord>) -> Option<Frame> {
        if self.state != CalleeState::Running {
            return None;
        }
        self.state = CalleeState::Done;
        Some(Frame::Response {
            mux: self.mux,
            result,
        })
    }
}

/// Milliseconds for the wire, rounded up, at least 1, saturating at `u32::MAX` (49 days).
pub(crate) fn deadline_ms(timeout: Duration) -> u32 {
    let ms = timeout.as_nanos().div_ceil(1_000_000).max(1);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

pub(crate) fn cause_of(reason: CancelReason) -> CancelCause {
    match reason {
        CancelReason::CallerGaveUp => CancelCause::CallerGaveUp,
        CancelReason::Deadline => CancelCause::Deadline,
        CancelReason::ShuttingDown => CancelCause::ShuttingDown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::HandlerId;
    use bytes::Bytes;

    fn route() -> Route {
        Route {
            handler: HandlerId(9),
            subroute: None,
        }
    }

    #[test]
    fn response_completes_the_call_once() {
        let now = Instant::now();
        let (mut call, req) = UnaryCaller::start(MuxId(1), route(), Some(Bytes::new()), None, now);
        assert!(
            matches!(req, Frame::Request { deadline_ms: 0, payload: Some(ref p), .. } if p.is_empty())
        );
        assert_eq!(call.poll_timeout(), None);
        call.handle_frame(Frame::Response {
            mux: MuxId(1),
            result: Ok(None),
        });
        // A late duplicate changes nothing.
        call.handle_frame(Frame::Response {
            mux: MuxId(1),
            result: Ok(Some(Bytes::new())),
        });
        assert_eq!(call.take_result(), Some(Ok(None)), "absent stays absent");
        assert_eq!(call.cancel(), None, "no cancel after the result");
    }

    #[test]
    fn remote_errors_and_rejections_are_remote() {
        let now = Instant::now();
        let rec = ErrorRecord::text(ErrorCode::UnknownHandler, "no such handler");
        let (mut call, _) = UnaryCaller::start(MuxId(3), route(), None, None, now);
        call.handle_frame(Frame::Error {
            mux: MuxId(3),
            error: rec.clone(),
        });
        assert_eq!(call.take_result(), Some(Err(MuxError::Remote(rec))));
    }

    #[test]
    fn deadline_fails_the_call_and_tells_the_callee() {
        let now = Instant::now();
        let t = Duration::from_millis(1500);
        let (mut call, req) = UnaryCaller::start(MuxId(5), route(), None, Some(t), now);
        assert!(matches!(
            req,
            Frame::Request {
                deadline_ms: 1500,
                ..
            }
        ));
        assert_eq!(call.poll_timeout(), Some(now + t));
        assert_eq!(call.handle_timeout(now + Duration::from_millis(1499)), None);
        let cancel = call.handle_timeout(now + t).expect("deadline passed");
        assert_eq!(
            cancel,
            Frame::Cancel {
                mux: MuxId(5),
                reason: CancelReason::Deadline
            }
        );
        assert_eq!(call.take_result(), Some(Err(MuxError::Deadline)));
        assert_eq!(call.poll_timeout(), None);
    }

    #[test]
    fn cancel_and_disconnect_are_distinct() {
        let now = Instant::now();
        let (mut a, _) = UnaryCaller::start(MuxId(7), route(), None, None, now);
        assert!(matches!(
            a.cancel(),
            Some(Frame::Cancel {
                reason: CancelReason::CallerGaveUp,
                ..
            })
        ));
        assert_eq!(a.take_result(), Some(Err(MuxError::Cancelled)));
        let (mut b, _) = UnaryCaller::start(MuxId(9), route(), None, None, now);
        b.disconnect();
        assert_eq!(b.take_result(), Some(Err(MuxError::Disconnected)));
    }

    #[test]
    fn sub_millisecond_deadlines_round_up() {
        assert_eq!(deadline_ms(Duration::from_micros(1)), 1);
        assert_eq!(deadline_ms(Duration::from_micros(1001)), 2);
        assert_eq!(deadline_ms(Duration::from_secs(u64::MAX / 4)), u32::MAX);
    }

    #[test]
    fn callee_cancel_suppresses_the_response() {
        let now = Instant::now();
        let mut c = UnaryCallee::accept(MuxId(2), 0, now);
        assert_eq!(c.deadline(), None);
        c.handle_frame(Frame::Cancel {
            mux: MuxId(2),
            reason: CancelReason::CallerGaveUp,
        });
        assert_eq!(c.cancelled(), Some(CancelCause::CallerGaveUp));
        assert_eq!(c.respond(Ok(None)), None);
    }

    #[test]
    fn callee_deadline_cancels_with_cause_deadline() {
        let now = Instant::now();
        let mut c = UnaryCallee::accept(MuxId(2), 10, now);
        assert_eq!(c.poll_timeout(), Some(now + Duration::from_millis(10)));
        let f = c
            .handle_timeout(now + Duration::from_millis(10))
            .expect("expired");
        assert!(matches!(f, Frame::Error { ref error, .. } if error.code == ErrorCode::Deadline));
        assert_eq!(c.cancelled(), Some(CancelCause::Deadline));
        assert_eq!(c.respond(Ok(None)), None);
    }

    #[test]
    fn callee_responds_once_and_empty_is_not_absent() {
        let now = Instant::now();
        let mut c = UnaryCallee::accept(MuxId(2), 0, now);
        let f = c.respond(Ok(Some(Bytes::new()))).expect("running");
        assert_eq!(
            f,
            Frame::Response {
                mux: MuxId(2),
                result: Ok(Some(Bytes::new()))
            }
        );
        assert_eq!(c.respond(Ok(None)), None);
        c.abort(CancelCause::Disconnected);
        assert_eq!(
            c.cancelled(),
            None,
            "a finished call is not cancelled afterwards"
        );
    }
}
