//! A work queue of object keys: each key is queued at most once, so a burst of changes
//! to one object costs one reconcile; keys can come back after a delay, and a key that
//! keeps failing comes back after an exponentially growing one (client-go's
//! rate-limited queue: 5 ms doubling to 1 000 s, reset when the key succeeds). Keys come
//! out in order of rank (highest first; the scheduler ranks pods by priority, as
//! upstream's PrioritySort), then in the order they were added. Delayed keys wait in
//! the queue itself: no task is spawned per delay, so dropping the queue drops them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The first retry delay of a failing key (client-go's default).
pub const BACKOFF_BASE: Duration = Duration::from_millis(5);
/// The longest retry delay of a failing key (client-go's default).
pub const BACKOFF_MAX: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct State {
    /// (negated rank, arrival) → key
    order: BTreeMap<(i64, u64), String>,
    queued: HashSet<String>,
    arrivals: u64,
    /// (due, arrival) → (key, rank): keys that come back later
    delayed: BTreeMap<(Instant, u64), (String, i64)>,
    /// failures in a row, per key
    failures: HashMap<String, u32>,
}

impl State {
    fn push(&mut self, key: String, rank: i64) -> bool {
        if !self.queued.insert(key.clone()) {
            return false;
        }
        self.arrivals += 1;
        let at = (rank.saturating_neg(), self.arrivals);
        self.order.insert(at, key);
        true
    }

    /// Moves the delayed keys that are due into the queue.
    fn promote(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, rank) = entry.remove();
            self.push(key, rank);
        }
    }
}

/// See the module documentation.
#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // every change under the lock is a whole insert or remove
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: impl Into<String>) {
        self.add_ranked(key, 0);
    }

    /// Queues `key` ahead of every key of lower rank.
    pub fn add_ranked(&self, key: impl Into<String>, rank: i64) {
        if self.lock().push(key.into(), rank) {
            self.wake.notify_one();
        }
    }

    /// Queues `key` again after `delay` (to look again at something time-based).
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        self.add_ranked_after(key, 0, delay);
    }

    /// [`WorkQueue::add_ranked`] after `delay`.
    pub fn add_ranked_after(&self, key: impl Into<String>, rank: i64, delay: Duration) {
        if delay.is_zero() {
            return self.add_ranked(key, rank);
        }
        let mut s = self.lock();
        s.arrivals += 1;
        let at = (Instant::now() + delay, s.arrivals);
        s.delayed.insert(at, (key.into(), rank));
        drop(s);
        // a waiting `next` recomputes how long to sleep
        self.wake.notify_one();
    }

    /// Queues `key` again after its back-off: 5 ms after its first failure, doubling
    /// with each failure in a row, at most 1 000 s.
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        let delay = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_default();
            let delay = backoff(*n);
            *n = n.saturating_add(1);
            delay
        };
        self.add_after(key, delay);
    }

    /// Forgets `key`'s failures (it succeeded): its next back-off starts again at 5 ms.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// How many times in a row `key` has failed.
    #[cfg(test)]
    pub fn failures(&self, key: &str) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next ready key, and when the next delayed one is due.
    fn pop(&self) -> (Option<(String, bool)>, Option<Instant>) {
        let mut s = self.lock();
        s.promote(Instant::now());
        let next_due = s.delayed.first_key_value().map(|((due, _), _)| *due);
        let Some((_, k)) = s.order.pop_first() else {
            return (None, next_due);
        };
        s.queued.remove(&k);
        (Some((k, !s.order.is_empty())), next_due)
    }

    /// The next key, waiting for one.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.wake.notified();
            let (popped, next_due) = self.pop();
            if let Some((k, more)) = popped {
                if more {
                    self.wake.notify_one();
                }
                return k;
            }
            match next_due {
                Some(due) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The next key if one is ready now.
    #[cfg(test)]
    pub fn try_next(&self) -> Option<String> {
        self.pop().0.map(|(k, _)| k)
    }

    /// Keys ready now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let mut s = self.lock();
        s.promote(Instant::now());
        s.order.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys waiting for their delay.
    #[cfg(test)]
    pub fn delayed(&self) -> usize {
        self.lock().delayed.len()
    }
}

/// The back-off after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    let factor = 1u64.checked_shl(failures.min(63)).unwrap_or(u64::MAX);
    let millis = (BACKOFF_BASE.as_millis() as u64).saturating_mul(factor);
    Duration::from_millis(millis).min(BACKOFF_MAX)
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

    #[test]
    fn back_off_doubles_from_5ms_to_1000s() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(10), Duration::from_millis(5 * 1024));
        assert_eq!(backoff(30), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_key_comes_back_later_each_time_until_it_succeeds() {
        let q = WorkQueue::default();
        let mut waits = Vec::new();
        for _ in 0..4 {
            q.add_rate_limited("k");
            assert!(q.try_next().is_none(), "not before its back-off");
            let t = Instant::now();
            assert_eq!(q.next().await, "k");
            waits.push(t.elapsed());
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(waits, [ms(5), ms(10), ms(20), ms(40)]);
        assert_eq!(q.failures("k"), 4);
        q.forget("k");
        q.add_rate_limited("k");
        let t = Instant::now();
        assert_eq!(q.next().await, "k");
        assert_eq!(t.elapsed(), ms(5), "forgotten: the back-off starts again");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_wait_in_the_queue_in_due_order() {
        let q = WorkQueue::default();
        q.add_after("late", Duration::from_secs(3));
        q.add_after("soon", Duration::from_secs(1));
        assert_eq!((q.len(), q.delayed()), (0, 2));
        // a key added now is not held up by the delayed ones
        q.add("now");
        assert_eq!(q.next().await, "now");
        let t = Instant::now();
        assert_eq!(q.next().await, "soon");
        assert_eq!(q.next().await, "late");
        assert_eq!(t.elapsed(), Duration::from_secs(3));
        // a delayed key already queued is not queued twice
        q.add("x");
        q.add_after("x", Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(q.len(), 1);
        // dropping the queue drops what waits in it: nothing was spawned
        q.add_after("gone", Duration::from_secs(60));
        drop(q);
    }
}
