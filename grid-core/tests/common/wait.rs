//! The bounded waits of every test. [`next_event`] waits on a link's events; [`eventually`] is
//! for a condition that no event announces: it looks again every few milliseconds. Both fail
//! loudly, with what they waited for and what they saw instead, once their bound has passed.
//!
//! One file so that both harnesses (`common/` and `scripted/`, which the `attack` example also
//! builds) share it.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Debug;
use std::time::Duration;

use grid_core::{LinkEvent, LinkEvents};
use tokio::time::Instant;

/// How long [`eventually`] sleeps between two looks.
const STEP: Duration = Duration::from_millis(5);

/// Looks at `check` until it gives `Ok`, and returns that value. `Err` carries what the check saw
/// instead; once `within` has passed, the wait panics with `what`, the time it waited and the last
/// thing seen. (A large `Err`, whole stats, draws clippy's `result_large_err`: allow it in the
/// test file, since what a check saw is printed at most once.)
pub async fn eventually<T, E: Debug>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let start = Instant::now();
    loop {
        let seen = match check() {
            Ok(done) => return done,
            Err(seen) => seen,
        };
        let waited = start.elapsed();
        assert!(
            waited < within,
            "{what}: not within {within:?} (waited {waited:?}); last seen: {seen:?}"
        );
        tokio::time::sleep(STEP).await;
    }
}

/// Waits for the first event of `events` that `pick` takes, and returns what it made of it; once
/// `within` has passed (or the manager is gone), panics with `what` and the events passed over.
pub async fn next_event<T>(
    what: &str,
    within: Duration,
    events: &mut LinkEvents,
    mut pick: impl FnMut(&LinkEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) => match pick(&e) {
                Some(picked) => return picked,
                None => seen.push(e),
            },
            Ok(None) => panic!("{what}: the manager is gone; saw {seen:?}"),
            Err(_) => panic!("{what}: not within {within:?}; saw {seen:?}"),
        }
    }
}
