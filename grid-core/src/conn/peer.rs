//! What outlives one socket: the per-peer state the manager and every
//! [`Connection`](super::Connection) share — the live session, the link's state, its counters and
//! why the last session ended.

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::{broadcast, watch};

use super::core::{CloseKind, CloseReason};
use super::events::{EventSink, LinkEvent};
use super::session::Session;
use super::stats::ConnStats;
use super::ConnState;
use crate::config::Config;
use crate::handshake::{HandshakeError, InstanceId};

/// Per-peer state shared by the manager and every [`Connection`] handle.
pub(crate) struct PeerConn {
    pub(crate) local: Arc<str>,
    pub(crate) peer: Arc<str>,
    pub(crate) config: Arc<Config>,
    pub(crate) current: RwLock<Option<Arc<Session>>>,
    pub(crate) state: watch::Sender<ConnState>,
    /// Why the last session ended.
    pub(crate) last_reason: parking_lot::Mutex<Option<CloseReason>>,
    pub(crate) stats: Arc<ConnStats>,
    pub(crate) events: Arc<EventSink>,
    /// The peer process's instance id on the live or the last session.
    instance: parking_lot::Mutex<Option<InstanceId>>,
    /// Why the last dial or handshake to the peer failed.
    pub(crate) last_dial_failure: parking_lot::Mutex<Option<DialFailure>>,
}

/// Why a dial to a peer failed: the link's last failure, kept for the API (not only the logs).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialFailure {
    /// The handshake failed: rejected by the peer, or the peer refused by us (wrong secret or
    /// keys, clock skew, wrong name, ...), with the reason either side gave.
    Handshake(HandshakeError),
    /// The TCP or TLS connection failed (the system's text).
    Io(String),
    /// Anything else (the error's text).
    Other(String),
}

impl std::fmt::Display for DialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialFailure::Handshake(e) => write!(f, "{e}"),
            DialFailure::Io(t) | DialFailure::Other(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for PeerConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConn")
            .field("peer", &self.peer)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl PeerConn {
    pub(crate) fn new(
        local: Arc<str>,
        peer: Arc<str>,
        config: Arc<Config>,
        manager_events: broadcast::Sender<LinkEvent>,
    ) -> PeerConn {
        PeerConn {
            stats: Arc::new(ConnStats::new(&local, &peer)),
            local,
            events: Arc::new(EventSink::new(peer.clone(), manager_events)),
            instance: parking_lot::Mutex::new(None),
            last_dial_failure: parking_lot::Mutex::new(None),
            peer,
            config,
            current: RwLock::new(None),
            state: watch::channel(ConnState::Disconnected).0,
            last_reason: parking_lot::Mutex::new(None),
        }
    }

    pub(crate) fn session(&self) -> Option<Arc<Session>> {
        self.current.read().clone().filter(|s| !s.is_closed())
    }

    /// Makes `session` the live one, closing any previous session first. Refuses (and closes
    /// `session`) once the manager shut down, so a dial that finishes late cannot revive it.
    pub(crate) fn install(&self, session: Arc<Session>, instance: InstanceId) -> bool {
        let mut cur = self.current.write();
        let gone = match *self.state.borrow() {
            ConnState::Shutdown => Some(CloseKind::Shutdown),
            ConnState::Removed => Some(CloseKind::Removed),
            ConnState::Connected | ConnState::Disconnected => None,
        };
        if let Some(kind) = gone {
            drop(cur);
            session.close(CloseReason::local(kind));
            return false;
        }
        let old = cur.replace(session);
        drop(cur);
        if let Some(old) = old {
            old.close(CloseReason::local(CloseKind::Replaced));
        }
        self.stats.connected();
        let before = self.instance.lock().replace(instance);
        if let Some(old) = before.filter(|old| *old != instance) {
            self.events.emit(LinkEvent::Restarted {
                peer: self.peer.clone(),
                old,
                new: instance,
            });
        }
        self.events.emit(LinkEvent::Connected {
            peer: self.peer.clone(),
            instance,
        });
        self.state.send_replace(ConnState::Connected);
        true
    }

    /// Records why a dial failed.
    pub(crate) fn record_dial_failure(&self, e: &crate::error::Error) {
        let failure = match e {
            crate::error::Error::Handshake(h) => DialFailure::Handshake(h.clone()),
            crate::error::Error::Io(io) => DialFailure::Io(io.to_string()),
            other => DialFailure::Other(other.to_string()),
        };
        *self.last_dial_failure.lock() = Some(failure);
    }

    /// The peer process's instance id on the live or the last session.
    pub(crate) fn instance(&self) -> Option<InstanceId> {
        *self.instance.lock()
    }

    /// Clears `session` if it is still the live one.
    pub(crate) fn uninstall(&self, session: &Arc<Session>) {
        if let Some(reason) = session.close_reason() {
            *self.last_reason.lock() = Some(reason.clone());
            self.events.emit(LinkEvent::Disconnected {
                peer: self.peer.clone(),
                reason,
            });
        }
        let mut cur = self.current.write();
        if cur.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *cur = None;
            drop(cur);
            self.state.send_if_modified(|s| {
                if *s == ConnState::Connected {
                    *s = ConnState::Disconnected;
                    true
                } else {
                    false
                }
            });
        }
    }
}
