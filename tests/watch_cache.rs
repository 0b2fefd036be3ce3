//! The watch cache keeps one datastore watch per resource, however many clients
//! watch it: checked against a real etcd's own count of its watchers.
#![allow(clippy::unwrap_used)]

mod common;

use skua::api::registry;
use skua::apiserver::watchcache::{Msg, WatchCaches};
use skua::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// etcd's gauge of the watchers it serves.
fn etcd_watchers(endpoint: &str) -> f64 {
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("{endpoint}/metrics")])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find(|l| l.starts_with("etcd_debugging_mvcc_watcher_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no watcher gauge in etcd's metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_etcd_watch_serves_every_watcher_of_a_resource() {
    let etcd = common::EtcdServer::start();
    let endpoint = etcd.local.endpoint.clone();
    let store: Arc<dyn Store> = Arc::new(etcd.connect().await);
    let before = etcd_watchers(&endpoint);
    let caches = WatchCaches::new(store.clone(), true);
    let cache = caches.of(&registry::CONFIGMAPS);
    cache.fresh(0).await.unwrap();
    let mut watchers: Vec<_> = (0..25)
        .map(|_| cache.snapshot_and_watch("/registry/core/configmaps/").1)
        .collect();
    let key = "/registry/core/configmaps/default/a";
    let body =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"default"}}"#;
    let written = store.create(key, body.to_vec()).await.unwrap();
    for w in &mut watchers {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), w.recv())
                .await
                .unwrap()
                .unwrap();
            if let Msg::Event(e) = msg {
                assert_eq!((e.kv.key.as_str(), e.revision()), (key, written));
                break;
            }
        }
    }
    // a consistent read through etcd's progress notifications
    let now = caches.current_revision().await.unwrap();
    if store.supports_progress() {
        assert!(cache.fresh(now).await.is_some());
    }
    assert_eq!(
        etcd_watchers(&endpoint) - before,
        1.0,
        "25 watchers of the cache, one etcd watch"
    );
    // a second resource is a second etcd watch
    caches.of(&registry::SECRETS).fresh(0).await.unwrap();
    assert_eq!(etcd_watchers(&endpoint) - before, 2.0);
}
