//! The services every node of the example serves: a quorum lock in the style of MinIO's dsync,
//! and a small store with an echo and a listing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Who wants which lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockRequest {
    /// The resource locked.
    pub(crate) resource: String,
    /// A unique name of the client holding it.
    pub(crate) owner: String,
}

/// Why a lock call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LockError {
    /// The resource name is empty.
    InvalidResource,
}

/// One node's share of a distributed lock. A lock is held cluster-wide when a quorum
/// (n/2 + 1) of nodes granted it to the same owner.
#[grid::handler]
pub(crate) trait DLock {
    /// Grants `resource` to `owner` on this node if it is free, expired, or already theirs.
    async fn lock(&self, req: LockRequest) -> Result<bool, LockError>;
    /// Releases `resource` if `owner` holds it here.
    async fn unlock(&self, req: LockRequest) -> Result<bool, LockError>;
    /// Keeps a granted lock alive: each ping extends the lease and is answered with whether the
    /// lock is still held by the owner.
    #[grid(in_capacity = 4, out_capacity = 4)]
    async fn refresh(
        &self,
        req: LockRequest,
        pings: grid::RequestReceiver<u64>,
        out: grid::ResponseSender<bool>,
    ) -> Result<(), LockError>;
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The entry's name.
    pub(crate) name: String,
    /// Its position in the listing.
    pub(crate) index: u32,
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoreError {
    /// The listing asked for too many entries.
    TooMany(u32),
}

/// A tiny store: an echo for latency, a listing for streaming.
#[grid::handler]
pub(crate) trait Store {
    /// Returns the body unchanged.
    async fn echo(&self, body: String) -> Result<String, StoreError>;
    /// Streams `count` entries named under `prefix`, in order.
    #[grid(out_capacity = 256)]
    async fn list(
        &self,
        prefix: String,
        count: u32,
        out: grid::ResponseSender<Entry>,
    ) -> Result<(), StoreError>;
    /// The caller finished a round of its work (multi-process mode: the workload, then the
    /// link cut); each call counts one round.
    async fn done(&self, node: String) -> Result<(), StoreError>;
}

/// How long a grant lives without a refresh.
pub(crate) const LEASE: Duration = Duration::from_secs(2);

/// This node's lock table.
#[derive(Debug, Default, Clone)]
pub(crate) struct LockTable {
    held: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

impl LockTable {
    /// Grants if free, expired or already the owner's.
    pub(crate) fn try_lock(&self, req: &LockRequest) -> bool {
        let mut held = self.held.lock();
        let now = Instant::now();
        match held.get(&req.resource) {
            Some((owner, expires)) if owner != &req.owner && *expires > now => false,
            _ => {
                held.insert(req.resource.clone(), (req.owner.clone(), now + LEASE));
                true
            }
        }
    }

    /// Releases if held by the owner.
    pub(crate) fn unlock(&self, req: &LockRequest) -> bool {
        let mut held = self.held.lock();
        match held.get(&req.resource) {
            Some((owner, _)) if owner == &req.owner => {
                held.remove(&req.resource);
                true
            }
            _ => false,
        }
    }

    /// Extends the owner's lease; false if the owner no longer holds it.
    pub(crate) fn extend(&self, req: &LockRequest) -> bool {
        let mut held = self.held.lock();
        match held.get_mut(&req.resource) {
            Some((owner, expires)) if owner == &req.owner => {
                *expires = Instant::now() + LEASE;
                true
            }
            _ => false,
        }
    }
}

impl DLock for LockTable {
    async fn lock(&self, req: LockRequest) -> Result<bool, LockError> {
        if req.resource.is_empty() {
            return Err(LockError::InvalidResource);
        }
        Ok(self.try_lock(&req))
    }

    async fn unlock(&self, req: LockRequest) -> Result<bool, LockError> {
        Ok(LockTable::unlock(self, &req))
    }

    async fn refresh(
        &self,
        req: LockRequest,
        mut pings: grid::RequestReceiver<u64>,
        mut out: grid::ResponseSender<bool>,
    ) -> Result<(), LockError> {
        while let Some(Ok(_)) = pings.next().await {
            if out.send(self.extend(&req)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// The store: stateless apart from how many times each peer said it is done.
#[derive(Debug, Default, Clone)]
pub(crate) struct StoreImpl {
    done: Arc<Done>,
}

#[derive(Debug, Default)]
struct Done {
    /// How many times each peer called `done`: once per finished round.
    rounds: Mutex<HashMap<String, u32>>,
    changed: tokio::sync::Notify,
}

impl StoreImpl {
    /// Waits until every one of `peers` has called `done` at least `round` times, at most
    /// `timeout`. Returns the peers still missing (empty when all arrived).
    pub(crate) async fn wait_round(
        &self,
        peers: &[String],
        round: u32,
        timeout: Duration,
    ) -> Vec<String> {
        let missing = || -> Vec<String> {
            let rounds = self.done.rounds.lock();
            peers
                .iter()
                .filter(|p| rounds.get(*p).copied().unwrap_or(0) < round)
                .cloned()
                .collect()
        };
        let wait = async {
            loop {
                // Register for the wake-up before looking, so a `done` in between is not missed.
                let changed = self.done.changed.notified();
                if missing().is_empty() {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        missing()
    }
}

impl Store for StoreImpl {
    async fn echo(&self, body: String) -> Result<String, StoreError> {
        Ok(body)
    }

    async fn list(
        &self,
        prefix: String,
        count: u32,
        mut out: grid::ResponseSender<Entry>,
    ) -> Result<(), StoreError> {
        if count > 10_000_000 {
            return Err(StoreError::TooMany(count));
        }
        for index in 0..count {
            let entry = Entry {
                name: format!("{prefix}/object-{index:08}"),
                index,
            };
            if out.send(entry).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn done(&self, node: String) -> Result<(), StoreError> {
        *self.done.rounds.lock().entry(node).or_insert(0) += 1;
        self.done.changed.notify_waiters();
        Ok(())
    }
}
