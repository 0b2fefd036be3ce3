//! Seams over the host the node's components live on: the clock, so what depends on
//! time (crash-loop back-off against the runtime's exit times, probe periods, volume
//! refreshes) runs in tests on tokio's paused time, wall clock included; mounts
//! (`mounts.rs`), so volume set-up and teardown are tested without root; and the
//! node's resources (`resources.rs`), so eviction is tested under chosen pressure.

pub mod mounts;
pub mod resources;

pub use mounts::Mounts;
pub use resources::Resources;
use std::sync::Arc;

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Monotonic and wall time.
pub trait Clock: Send + Sync {
    /// Monotonic now (tokio's: paused in tests).
    fn now(&self) -> Instant;
    /// Wall-clock now, in nanoseconds since the Unix epoch (as CRI timestamps are).
    fn wall_nanos(&self) -> i64;
}

/// The real clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_nanos(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// A wall clock that moves with tokio's (paused) time: it starts at the real wall time
/// and advances exactly as `tokio::time` does, so a test's simulated minutes are
/// minutes on both clocks.
#[cfg(test)]
pub struct TokioClock {
    start: Instant,
    wall_start: i64,
}

#[cfg(test)]
impl Default for TokioClock {
    fn default() -> TokioClock {
        TokioClock::new()
    }
}

#[cfg(test)]
impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock {
            start: Instant::now(),
            wall_start: SystemClock.wall_nanos(),
        }
    }
}

#[cfg(test)]
impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_nanos(&self) -> i64 {
        let since = Instant::now().duration_since(self.start).as_nanos();
        self.wall_start + i64::try_from(since).unwrap_or(i64::MAX)
    }
}

/// What the kubelet needs of its host.
#[derive(Clone)]
pub struct Host {
    pub clock: Arc<dyn Clock>,
    pub mounts: Arc<dyn Mounts>,
    pub resources: Arc<dyn Resources>,
}

impl Host {
    /// The real host.
    pub fn system() -> Host {
        Host {
            clock: Arc::new(SystemClock),
            mounts: Arc::new(mounts::SystemMounts),
            resources: Arc::new(resources::SystemResources),
        }
    }
}
