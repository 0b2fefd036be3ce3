//! What control loops run on: task ownership. A component spawns its tasks into its
//! [`Tasks`], and stopping the component (or dropping it) stops every one of them —
//! informers, feeders, resyncs and loops alike — so nothing outlives the leadership
//! term, agent or server that started it (upstream's contexts; linkerd's drain).

pub mod context;
pub mod controller;
pub mod events;
pub mod informer;
pub mod leader;
pub mod queue;

pub use context::Context;

use std::future::Future;
use std::sync::Mutex;
use tokio::task::{AbortHandle, JoinSet};

/// The tasks one component owns. Dropping it aborts them all.
pub struct Tasks {
    set: Mutex<Option<JoinSet<()>>>,
}

impl Default for Tasks {
    fn default() -> Tasks {
        Tasks::new()
    }
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks {
            set: Mutex::new(Some(JoinSet::new())),
        }
    }

    /// Runs `fut` as one of this component's tasks; after [`Tasks::stop`] nothing more
    /// is started.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) -> Option<AbortHandle> {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let set = set.as_mut()?;
        // finished tasks are reaped as new ones come, so the set does not grow
        while set.try_join_next().is_some() {}
        Some(set.spawn(fut))
    }

    /// Aborts every task and refuses new ones.
    pub fn stop(&self) {
        let set = self.set.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut set) = set {
            set.abort_all();
            // the aborted tasks' futures (and the handles they hold) are dropped as the
            // runtime polls them next; detach so the caller need not wait
            set.detach_all();
        }
    }

    /// How many tasks are still running.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        match set.as_mut() {
            Some(set) => {
                while set.try_join_next().is_some() {}
                set.len()
            }
            None => 0,
        }
    }
}

/// Start-up tasks a component has spawned so far, aborted if it returns before it is
/// running (an error half-way through start-up must not leave, say, a node heartbeat
/// behind while the kubelet never started). [`StartGuard::disarm`] keeps them.
#[derive(Default)]
pub struct StartGuard {
    handles: Vec<(&'static str, AbortHandle)>,
}

impl StartGuard {
    pub fn push<T>(&mut self, name: &'static str, task: &tokio::task::JoinHandle<T>) {
        self.handles.push((name, task.abort_handle()));
    }

    /// Start-up went through: the tasks are the component's to stop.
    pub fn disarm(mut self) {
        self.handles.clear();
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        // in reverse order of starting, as a component is taken down
        for (name, h) in self.handles.iter().rev() {
            tracing::debug!(task = name, "start-up failed: stopping");
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts live futures: incremented when one starts, decremented when it is
    /// dropped (finished or aborted).
    struct Alive(Arc<AtomicUsize>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    fn forever(n: &Arc<AtomicUsize>) -> impl Future<Output = ()> + Send + 'static {
        n.fetch_add(1, Ordering::SeqCst);
        let alive = Alive(n.clone());
        async move {
            let _alive = alive;
            std::future::pending::<()>().await
        }
    }

    #[tokio::test]
    async fn stopping_a_component_stops_every_task_it_started_and_refuses_more() {
        let n = Arc::new(AtomicUsize::new(0));
        let tasks = Tasks::new();
        for _ in 0..5 {
            tasks.spawn(forever(&n)).unwrap();
        }
        tokio::task::yield_now().await;
        assert_eq!((tasks.running(), n.load(Ordering::SeqCst)), (5, 5));
        tasks.stop();
        for _ in 0..50 {
            if n.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(n.load(Ordering::SeqCst), 0, "every future dropped");
        assert!(
            tasks.spawn(forever(&n)).is_none(),
            "stopped: nothing new starts"
        );
        // dropping an owner aborts its tasks too
        let owner = Tasks::new();
        n.store(0, Ordering::SeqCst);
        owner.spawn(forever(&n)).unwrap();
        drop(owner);
        for _ in 0..50 {
            if n.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_start_up_that_fails_takes_down_what_it_started() {
        let n = Arc::new(AtomicUsize::new(0));
        let failed = async {
            let mut guard = StartGuard::default();
            let heartbeat = tokio::spawn(forever(&n));
            guard.push("heartbeat", &heartbeat);
            Err::<(), &str>("the kubelet's certificate cannot be read")?;
            guard.disarm();
            Ok::<(), &str>(())
        };
        assert!(failed.await.is_err());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            n.load(Ordering::SeqCst),
            0,
            "no heartbeat after a failed start"
        );
        // a start-up that goes through keeps its tasks
        let mut guard = StartGuard::default();
        let running = tokio::spawn(forever(&n));
        guard.push("heartbeat", &running);
        guard.disarm();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
        running.abort();
    }
}
