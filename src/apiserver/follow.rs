//! Derived views the API server keeps in memory (the Node authorizer's graph, the
//! RBAC index): the objects under a key prefix listed once, then every change from
//! the list's revision on, handed to the view; a failed watch relists.

use crate::store::{EventKind, ListOptions, Store, StoreError, WatchMessage};
use serde_json::Value;
use std::time::Duration;

/// What a view does with the objects it follows.
pub trait View: Send + Sync {
    /// Forgets everything (before a relist).
    fn reset(&self);
    /// One object, named by its key after the prefix (`<ns>/<name>` or `<name>`);
    /// `None` when it was deleted (or cannot be read).
    fn apply(&self, tail: &str, object: Option<&Value>);
    /// Everything at once (a list): a view that answers requests overrides this to
    /// swap under one lock, so nobody sees it half filled.
    fn replace(&self, objects: Vec<(String, Option<Value>)>) {
        self.reset();
        for (tail, obj) in &objects {
            self.apply(tail, obj.as_ref());
        }
    }
}

/// Keeps `view` equal to the objects under `prefix` until the store shuts down;
/// `synced` hears once when the first list is in the view.
pub async fn follow(
    store: &dyn Store,
    prefix: &str,
    what: &str,
    view: &dyn View,
    mut synced: Option<tokio::sync::mpsc::Sender<()>>,
) {
    loop {
        match list_then_watch(store, prefix, view, &mut synced).await {
            Ok(()) => return, // the store shut down
            Err(e) => {
                tracing::debug!(error = %e, what, "relisting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn list_then_watch(
    store: &dyn Store,
    prefix: &str,
    view: &dyn View,
    synced: &mut Option<tokio::sync::mpsc::Sender<()>>,
) -> Result<(), StoreError> {
    let listed = store.list(prefix, ListOptions::default()).await?;
    let tail = |k: &str| k.strip_prefix(prefix).unwrap_or(k).to_string();
    view.replace(
        listed
            .kvs
            .iter()
            .map(|kv| {
                (
                    tail(&kv.key),
                    serde_json::from_slice::<Value>(&kv.value).ok(),
                )
            })
            .collect(),
    );
    if let Some(tx) = synced.take() {
        let _ = tx.send(()).await;
    }
    let mut watch = store.watch(prefix, listed.revision).await?;
    while let Some(msg) = watch.next().await {
        if let WatchMessage::Event(e) = msg? {
            let obj = match e.kind {
                EventKind::Put => serde_json::from_slice::<Value>(&e.kv.value).ok(),
                EventKind::Delete => None,
            };
            view.apply(&tail(&e.kv.key), obj.as_ref());
        }
    }
    Ok(())
}
