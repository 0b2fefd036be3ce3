//! The control loops that run inside `skua server`. Each is level-triggered: it reads
//! what is stored, writes through the same code paths as the API, and converges again
//! after a restart at any point.

pub mod namespace;

use crate::store::Store;
use std::sync::Arc;

/// Starts every controller; they stop when the returned task is aborted.
pub fn start(store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        namespace::run(store, std::future::pending()).await;
    })
}
