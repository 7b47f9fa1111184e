//! What happens to a link, as events a caller can watch: connected (with the peer's instance),
//! restarted (a new instance under the same name), going away, disconnected (with its typed
//! reason).
//!
//! Each peer link has its own channel ([`Connection::events`](super::Connection::events)) and the
//! manager has one for all of them ([`Manager::events`](crate::Manager::events)). Both are
//! broadcast channels: a watcher that falls behind by more than [`CAPACITY`] events is told how
//! many it missed ([`LinkEvent::Missed`]) rather than slowing the link down.
//!
//! A link's own channel is made when its first watcher subscribes: a broadcast channel keeps all
//! its slots from the start (about 20 KiB for [`CAPACITY`] events), and most links are never
//! watched one by one. Events before the first watcher had nobody to reach anyway.

use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use super::core::CloseReason;
use crate::handshake::InstanceId;

/// Events kept for a watcher that is behind.
pub(crate) const CAPACITY: usize = 256;

/// A change of one peer link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A session is up with the peer's process `instance`.
    Connected {
        /// The peer's name.
        peer: Arc<str>,
        /// The peer process's instance id.
        instance: InstanceId,
    },
    /// The peer came back as a new process: nothing of the old instance's state (its locks,
    /// its streams) exists any more. Sent before the `Connected` of the new instance.
    Restarted {
        /// The peer's name.
        peer: Arc<str>,
        /// The instance of the previous session.
        old: InstanceId,
        /// The instance now connected.
        new: InstanceId,
    },
    /// The peer said it is leaving (it drains or shuts down): new calls to it fail with
    /// `GoingAway`, calls in flight carry on until it closes.
    GoingAway {
        /// The peer's name.
        peer: Arc<str>,
    },
    /// The session ended.
    Disconnected {
        /// The peer's name.
        peer: Arc<str>,
        /// Who ended it and why.
        reason: CloseReason,
    },
    /// This watcher fell behind and missed this many events.
    Missed {
        /// How many.
        count: u64,
    },
}

/// A watcher of link events.
#[derive(Debug)]
pub struct LinkEvents(broadcast::Receiver<LinkEvent>);

impl LinkEvents {
    /// The next event; `None` once the manager is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: an event is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<LinkEvent> {
        match self.0.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(count)) => Some(LinkEvent::Missed { count }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Where a link's events go: its own channel and the manager's.
#[derive(Debug)]
pub(crate) struct EventSink {
    pub(crate) peer: Arc<str>,
    /// Made by the first [`subscribe`](Self::subscribe).
    link: OnceLock<broadcast::Sender<LinkEvent>>,
    manager: broadcast::Sender<LinkEvent>,
}

impl EventSink {
    pub(crate) fn new(peer: Arc<str>, manager: broadcast::Sender<LinkEvent>) -> EventSink {
        EventSink {
            peer,
            link: OnceLock::new(),
            manager,
        }
    }

    pub(crate) fn emit(&self, event: LinkEvent) {
        // No watcher is not an error.
        if let Some(link) = self.link.get() {
            let _ = link.send(event.clone());
        }
        let _ = self.manager.send(event);
    }

    pub(crate) fn subscribe(&self) -> LinkEvents {
        let link = self.link.get_or_init(|| broadcast::channel(CAPACITY).0);
        LinkEvents(link.subscribe())
    }

    pub(crate) fn going_away(&self) {
        self.emit(LinkEvent::GoingAway {
            peer: self.peer.clone(),
        });
    }
}

/// A watcher of the manager's channel.
pub(crate) fn manager_events(tx: &broadcast::Sender<LinkEvent>) -> LinkEvents {
    LinkEvents(tx.subscribe())
}
