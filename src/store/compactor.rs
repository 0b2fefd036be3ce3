//! Periodic compaction, as kube-apiserver does it: at every tick, compact to the
//! revision that was current one tick earlier, so at least one interval of history
//! (default 5 minutes) is always kept for watchers that resume.

use super::{Revision, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Runs until `shutdown` resolves. Several servers may run it against one etcd: a
/// compaction another one already did is not an error.
pub async fn run(
    store: Arc<dyn Store>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<Revision> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        if let Some(target) = previous {
            match store.compact(target).await {
                Ok(()) => tracing::debug!(revision = target, "datastore compacted"),
                Err(StoreError::Compacted { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, revision = target, "datastore compaction failed")
                }
            }
        }
        match store.current_revision().await {
            Ok(now) => previous = Some(now),
            Err(e) => tracing::warn!(error = %e, "cannot read the datastore revision"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{ListOptions, StoreError};

    #[tokio::test(start_paused = true)]
    async fn keeps_one_interval_of_history_and_compacts_the_rest() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let first = store.create("/k/a", b"1".to_vec()).await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(store.clone(), Duration::from_secs(300), async {
            let _ = stop_rx.await;
        }));
        // First tick at t=0 records `first` as the revision to compact next time.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = store.update("/k/a", b"2".to_vec(), first).await.unwrap();
        let at = |revision| ListOptions {
            revision,
            ..Default::default()
        };
        // Before the next tick, history older than `first` is still readable.
        assert!(store.list("/k/", at(first - 1)).await.is_ok());
        tokio::time::sleep(Duration::from_secs(300)).await;
        // Second tick: compacted to `first`, which stays readable; older is gone.
        assert!(store.list("/k/", at(first)).await.is_ok());
        assert!(matches!(
            store.list("/k/", at(first - 1)).await,
            Err(StoreError::Compacted { compact_revision, .. }) if compact_revision == first
        ));
        assert!(store.list("/k/", at(second)).await.is_ok());
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
