//! A work queue of object keys: each key is queued at most once, so a burst of changes
//! to one object costs one reconcile; keys can come back after a delay. Keys come out
//! in order of rank (highest first; the scheduler ranks pods by priority, as upstream's
//! PrioritySort), then in the order they were added.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    /// (negated rank, arrival) → key
    order: BTreeMap<(i64, u64), String>,
    queued: HashSet<String>,
    arrivals: u64,
}

/// See the module documentation.
#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl WorkQueue {
    pub fn add(&self, key: impl Into<String>) {
        self.add_ranked(key, 0);
    }

    /// Queues `key` ahead of every key of lower rank.
    pub fn add_ranked(&self, key: impl Into<String>, rank: i64) {
        let key = key.into();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.queued.insert(key.clone()) {
            s.arrivals += 1;
            let at = (rank.saturating_neg(), s.arrivals);
            s.order.insert(at, key);
            self.wake.notify_one();
        }
    }

    /// Queues `key` again after `delay` (to look again at something time-based).
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        self.add_ranked_after(key, 0, delay);
    }

    /// [`WorkQueue::add_ranked`] after `delay`.
    pub fn add_ranked_after(&self, key: impl Into<String>, rank: i64, delay: Duration) {
        let (q, key) = (self.clone(), key.into());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add_ranked(key, rank);
        });
    }

    fn pop(&self) -> Option<(String, bool)> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (_, k) = s.order.pop_first()?;
        s.queued.remove(&k);
        Some((k, !s.order.is_empty()))
    }

    /// The next key, waiting for one.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.wake.notified();
            if let Some((k, more)) = self.pop() {
                if more {
                    self.wake.notify_one();
                }
                return k;
            }
            notified.await;
        }
    }

    /// The next key if one is queued now.
    pub fn try_next(&self) -> Option<String> {
        self.pop().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .order
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Objects a controller created that its informer has not shown yet, per owner key
/// (upstream's "expectations"): until they show up (or 10 s pass) the owner is not
/// acted on again, so a lagging informer does not make it create them twice.
#[derive(Default)]
pub struct Unseen(std::collections::HashMap<String, (HashSet<String>, std::time::Instant)>);

impl Unseen {
    /// Whether `key` still waits for some of its creations; `seen` says whether a
    /// name is visible now. A key that no longer waits is forgotten.
    pub fn waiting(&mut self, key: &str, seen: impl Fn(&str) -> bool) -> bool {
        let still = match self.0.get_mut(key) {
            Some((names, since)) => {
                names.retain(|n| !seen(n));
                !names.is_empty() && since.elapsed() < Duration::from_secs(10)
            }
            None => false,
        };
        if !still {
            self.0.remove(key);
        }
        still
    }

    /// Remembers that `name` was created for `key`.
    pub fn created(&mut self, key: &str, name: &str) {
        self.0
            .entry(key.to_string())
            .or_insert_with(|| (HashSet::new(), std::time::Instant::now()))
            .0
            .insert(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_queued_once_in_order() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, "a");
        assert_eq!(q.next().await, "b");
        q.add("a");
        assert_eq!(q.next().await, "a");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn higher_ranks_come_first_then_arrival_order() {
        let q = WorkQueue::default();
        q.add("low-1");
        q.add_ranked("high", 1000);
        q.add("low-2");
        q.add_ranked("negative", -5);
        q.add_ranked("high-2", 1000);
        let mut out = Vec::new();
        while let Some(k) = q.try_next() {
            out.push(k);
        }
        assert_eq!(out, ["high", "high-2", "low-1", "low-2", "negative"]);
    }
}
