//! The cancellation signal of one served call, with its cause.
//!
//! The connection core hands one to the shell with every admitted call and fires it (through an
//! event) when the caller cancels, the deadline passes or the connection drops; the handler's
//! [`Context`](crate::Context) and its stream ends watch it.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::mux::CancelCause;

/// The cancellation signal of one handler invocation, with its cause.
#[derive(Clone, Default)]
pub(crate) struct CancelSignal(Arc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    token: CancellationToken,
    cause: Mutex<Option<CancelCause>>,
}

impl fmt::Debug for CancelSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CancelSignal({:?})", self.cause())
    }
}

impl CancelSignal {
    /// Cancels with `cause`; the first cause wins.
    pub(crate) fn cancel(&self, cause: CancelCause) {
        let mut c = self.0.cause.lock();
        if c.is_none() {
            *c = Some(cause);
            drop(c);
            self.0.token.cancel();
        }
    }

    pub(crate) fn cause(&self) -> Option<CancelCause> {
        *self.0.cause.lock()
    }

    pub(crate) async fn cancelled(&self) -> CancelCause {
        self.0.token.cancelled().await;
        self.cause().unwrap_or(CancelCause::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_cancel_cause_wins() {
        let s = CancelSignal::default();
        s.cancel(CancelCause::Deadline);
        s.cancel(CancelCause::Disconnected);
        assert_eq!(s.cancelled().await, CancelCause::Deadline);
    }
}
