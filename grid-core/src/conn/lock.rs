//! The mutex of the hot per-connection state: the core, the outbound lanes, each stream's slot.
//!
//! The standard library's futex mutex, which spins up to 100 rounds on a held lock, with no system
//! call, before it sleeps (`parking_lot`'s yields the thread and then sleeps much sooner):
//! these locks are held for a short copy at most, and a worker thread put to sleep on one costs
//! a futex wait and a wake-up (two context switches) where spinning costs a few hundred
//! nanoseconds. A panic under the lock leaves the state as it was at the panic, as
//! `parking_lot`'s lock did: poisoning is ignored. Like `parking_lot`'s, the lock is not fair
//! (a thread that just let go may take it again first); `parking_lot`'s hand-over to a sleeper
//! about every half millisecond is gone. That hand-over matters to a lock held for long, or
//! taken again and again by one thread in a tight loop; each of these is held for one short step
//! at a time, and every loop that retakes one (the writer's batches, a producer's frames) does
//! other work in between.

use std::sync::{Mutex as StdMutex, MutexGuard as StdGuard, PoisonError};

/// A mutex whose `lock` never fails (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(StdMutex<T>);

/// Held while the state is borrowed.
pub(crate) type MutexGuard<'a, T> = StdGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Mutex<T> {
        Mutex(StdMutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
