//! What a socket gets before it has authenticated: a place among a capped number of pending
//! handshakes, WebSocket limits of the handshake's size, and refusal logs at a bounded rate.
//!
//! Anyone who can reach the listener can open sockets, so until a peer has proved it holds the
//! cluster secret it may cost the node little:
//! - **a capped number of pending handshakes** ([`Config::max_pending_handshakes`]). A socket
//!   holds a [`Pending`] place from the moment it is accepted until its handshake has succeeded or
//!   failed (bounded by [`Config::handshake_timeout`]); an excess socket is refused at once, before
//!   any TLS or WebSocket work, and counted;
//! - **handshake-sized WebSocket limits** ([`handshake_ws_config`]): tungstenite refuses a frame
//!   or message larger than one handshake record when it reads its header, before it reserves any
//!   room for it. The configured limits ([`ws_config`](super::ws_config)) apply only once the other
//!   side has proved itself;
//! - **rate-limited refusal logs** ([`RefusalLog`]): one WARN line per address per
//!   [`Config::refusal_log_interval`], with the count of the refusals in between.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::warn;

use super::refusals::{RefusalLog, Verdict, MAX_TRACKED_ADDRESSES};
use crate::config::Config;
use crate::conn::Ws;
use crate::error::Error;
use crate::handshake::HANDSHAKE_LIMITS;

/// tungstenite's read buffer while the handshake runs: one handshake message fits twice.
const HANDSHAKE_READ_BUFFER: usize = 8 << 10;

/// The WebSocket limits of a socket whose peer has not authenticated: a frame or message larger
/// than one handshake batch ([`HANDSHAKE_LIMITS`]) is refused when its header is read, so an
/// unauthenticated peer cannot make the node reserve or buffer a full-size (64 MiB) message.
pub(crate) fn handshake_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(HANDSHAKE_LIMITS.max_batch))
        .max_frame_size(Some(HANDSHAKE_LIMITS.max_batch))
        .read_buffer_size(HANDSHAKE_READ_BUFFER)
}

/// The same socket with other WebSocket limits.
///
/// tungstenite cannot change the limits of a live stream, so the socket is wrapped anew; bytes the
/// old wrapper had read ahead are dropped. Call it only where an honest peer is silent, waiting for
/// our next handshake message, so that nothing of its can be buffered: after receiving the
/// `Welcome` (dialer) or the `Confirm` (acceptor), and before sending the next message. A peer that
/// sends ahead at that point has already proved itself; what it loses is its own connection.
pub(crate) async fn with_limits(ws: Ws, role: Role, config: WebSocketConfig) -> Ws {
    WebSocketStream::from_raw_socket(ws.into_inner(), role, Some(config)).await
}

/// A place among the pending handshakes; the place is given back when this is dropped.
#[derive(Debug)]
pub(crate) struct Pending(#[allow(dead_code)] OwnedSemaphorePermit);

/// The manager's pending-handshake cap, its counters, and its refusal log.
pub(crate) struct Gate {
    places: Arc<Semaphore>,
    limit: usize,
    refused: AtomicU64,
    log: Mutex<RefusalLog<Option<IpAddr>>>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("pending", &self.pending())
            .field("limit", &self.limit)
            .field("refused", &self.refused())
            .finish()
    }
}

impl Gate {
    /// A gate for `config`.
    ///
    /// # Errors
    /// [`Error::Config`] when `max_pending_handshakes` is 0 (no socket could ever get in) or over
    /// tokio's semaphore limit.
    pub(crate) fn new(config: &Config) -> Result<Gate, Error> {
        let limit = config.max_pending_handshakes;
        if limit == 0 || limit > Semaphore::MAX_PERMITS {
            return Err(Error::Config(format!(
                "max_pending_handshakes must be between 1 and {}, got {limit}",
                Semaphore::MAX_PERMITS
            )));
        }
        Ok(Gate {
            places: Arc::new(Semaphore::new(limit)),
            limit,
            refused: AtomicU64::new(0),
            log: Mutex::new(RefusalLog::new(
                config.refusal_log_interval,
                MAX_TRACKED_ADDRESSES,
            )),
        })
    }

    /// Takes a place for a new socket's handshake, or counts the refusal.
    ///
    /// # Errors
    /// [`Error::TooManyHandshakes`] when every place is taken.
    pub(crate) fn enter(&self) -> Result<Pending, Error> {
        match self.places.clone().try_acquire_owned() {
            Ok(permit) => Ok(Pending(permit)),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Error::TooManyHandshakes { limit: self.limit })
            }
        }
    }

    /// Handshakes in progress.
    pub(crate) fn pending(&self) -> usize {
        self.limit - self.places.available_permits()
    }

    /// Sockets refused because every place was taken.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Logs a refused incoming socket, at most one line per address per interval.
    pub(crate) fn log_refusal(&self, local: &str, from: Option<SocketAddr>, error: &Error) {
        let verdict = self
            .log
            .lock()
            .refusal(from.map(|a| a.ip()), Instant::now());
        let from = from.map_or_else(|| "(unknown address)".to_owned(), |a| a.to_string());
        match verdict {
            Verdict::Quiet => {}
            Verdict::Log { suppressed: 0 } => {
                warn!(local, %from, "incoming connection refused: {error}");
            }
            Verdict::Log { suppressed } => {
                warn!(local, %from, suppressed, "incoming connection refused: {error} ({suppressed} more refused from this address since its last line)");
            }
            Verdict::LogOverflow { suppressed } => {
                warn!(local, %from, suppressed, "incoming connection refused: {error} ({suppressed} more refused from other addresses since the last such line)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(limit: usize) -> Result<Gate, Error> {
        Gate::new(&Config {
            max_pending_handshakes: limit,
            ..Config::default()
        })
    }

    #[test]
    fn places_are_counted_refused_and_given_back() {
        let g = gate(2).expect("a valid cap");
        let a = g.enter().expect("first place");
        let b = g.enter().expect("second place");
        assert_eq!((g.pending(), g.refused()), (2, 0));
        assert!(matches!(
            g.enter(),
            Err(Error::TooManyHandshakes { limit: 2 })
        ));
        assert!(matches!(
            g.enter(),
            Err(Error::TooManyHandshakes { limit: 2 })
        ));
        assert_eq!((g.pending(), g.refused()), (2, 2));
        drop(a);
        assert_eq!(g.pending(), 1);
        let _c = g.enter().expect("a place given back is taken again");
        drop(b);
        assert_eq!((g.pending(), g.refused()), (1, 2));
    }

    #[test]
    fn a_cap_of_zero_is_a_configuration_error() {
        assert!(matches!(gate(0), Err(Error::Config(_))));
    }

    #[test]
    fn handshake_limits_fit_one_handshake_batch() {
        let c = handshake_ws_config();
        assert_eq!(c.max_message_size, Some(HANDSHAKE_LIMITS.max_batch));
        assert_eq!(c.max_frame_size, Some(HANDSHAKE_LIMITS.max_batch));
        assert!(c.read_buffer_size >= HANDSHAKE_LIMITS.max_batch);
    }
}
