//! The controller driver: how a level-triggered loop is fed and run. Keys come from
//! informer changes and a periodic resync ([`resync`]); each is reconciled in turn
//! and [`settle`]d: forgotten on success, queued again with per-key exponential
//! back-off on failure (client-go's `processNextWorkItem`).

use super::Context;
use super::informer::{Change, Informer};
use super::queue::WorkQueue;
use crate::client::watch::key_of;
use std::sync::Arc;
use std::time::Duration;

/// Settles one key after its reconcile, as client-go's `processNextWorkItem`: success
/// forgets its failures (and `Some(after)` looks again then), failure queues it again
/// after its back-off.
pub fn settle<E: std::fmt::Display>(
    controller: &'static str,
    queue: &WorkQueue,
    key: String,
    outcome: Result<Option<Duration>, E>,
) {
    match outcome {
        Ok(again) => {
            queue.forget(&key);
            if let Some(after) = again {
                queue.add_after(key, after);
            }
        }
        Err(e) => {
            tracing::debug!(controller, %key, error = %e, "sync failed; retrying");
            queue.add_rate_limited(key);
        }
    }
}

/// Queues every object of `informer` now and every `period` (level-triggered: a lost
/// event costs at most one period).
pub fn resync(
    cx: &Context,
    informer: &Arc<Informer>,
    queue: &WorkQueue,
    period: std::time::Duration,
) {
    let (informer, queue) = (informer.clone(), queue.clone());
    cx.spawn(async move {
        loop {
            for o in informer.list(None) {
                queue.add(key_of(&o));
            }
            tokio::time::sleep(period).await;
        }
    });
}

/// Waits for the next pass of a loop that looks at everything each time: a change on
/// either informer (a burst settles into one pass) or 30 s.
pub async fn next_pass(
    a: &mut tokio::sync::mpsc::UnboundedReceiver<Change>,
    b: &mut tokio::sync::mpsc::UnboundedReceiver<Change>,
) {
    tokio::select! {
        Some(_) = a.recv() => {}
        Some(_) = b.recv() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    while a.try_recv().is_ok() || b.try_recv().is_ok() {}
}
