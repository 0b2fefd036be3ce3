use super::*;
use crate::api::registry;
use crate::apiserver::metrics::{InstrumentedStore, Metrics};
use crate::store::memory::MemoryStore;

fn cm(name: &str, app: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}}}))
    .unwrap()
}

fn key(ns: &str, name: &str) -> String {
    format!("/registry/core/configmaps/{ns}/{name}")
}

async fn next_event(rx: &mut mpsc::Receiver<Msg>) -> Arc<Event> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a change arrives")
            .expect("the watch stays open");
        if let Msg::Event(e) = msg {
            return e;
        }
    }
}

fn names(s: &Snapshot) -> Vec<String> {
    s.entries
        .iter()
        .map(|(_, e)| e.view["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn lists_are_consistent_with_the_datastore_and_watchers_share_one_datastore_watch() {
    let metrics = Arc::new(Metrics::default());
    let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(
        Arc::new(MemoryStore::new()),
        metrics.clone(),
    ));
    let a_rev = store
        .create(&key("default", "a"), cm("a", "web"))
        .await
        .unwrap();
    store
        .create(&key("other", "b"), cm("b", "db"))
        .await
        .unwrap();
    let caches = WatchCaches::new(store.clone(), true);
    let cache = caches.of(&registry::CONFIGMAPS);
    // a consistent read waits for the cache to reach the datastore's revision
    let now = caches.current_revision().await.unwrap();
    assert!(cache.fresh(now).await.unwrap() >= now);
    let all = cache.snapshot("/registry/core/configmaps/");
    assert_eq!(names(&all), ["a", "b"]);
    assert_eq!(all.revision, now);
    let default = cache.snapshot("/registry/core/configmaps/default/");
    assert_eq!(names(&default), ["a"]);
    // the view carries what selectors read; the body is what clients get
    let (_, a) = &default.entries[0];
    assert_eq!(a.view["metadata"]["labels"]["app"], "web");
    let body: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], a_rev.to_string());

    // a write to another resource moves the datastore on: a consistent read still
    // finds the cache current (through a progress notification)
    store
        .create("/registry/core/secrets/default/s", b"{}".to_vec())
        .await
        .unwrap();
    let now = caches.current_revision().await.unwrap();
    assert_eq!(cache.fresh(now).await, Some(now));

    // many watchers, one datastore watch
    let mut watchers: Vec<_> = (0..10)
        .map(|_| cache.snapshot_and_watch("/registry/core/configmaps/").1)
        .collect();
    let c = store
        .create(&key("default", "c"), cm("c", "web"))
        .await
        .unwrap();
    for w in &mut watchers {
        let e = next_event(w).await;
        assert_eq!(
            (e.kv.key.as_str(), e.revision()),
            (key("default", "c").as_str(), c)
        );
    }
    assert!(
        metrics
            .render()
            .contains("skua_datastore_watches_opened_total 1\n"),
        "{}",
        metrics.render()
    );
    // a second resource is a second datastore watch
    let _ = caches.of(&registry::SECRETS);
    let _ = caches.of(&registry::CONFIGMAPS);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        metrics
            .render()
            .contains("skua_datastore_watches_opened_total 2\n")
    );
}

#[tokio::test]
async fn a_watch_resumes_from_the_window_or_is_sent_to_the_datastore() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let caches = WatchCaches::new(store.clone(), true);
    let cache = caches.of(&registry::CONFIGMAPS);
    let start = cache.fresh(0).await.unwrap();
    let a = store
        .create(&key("default", "a"), cm("a", "web"))
        .await
        .unwrap();
    let a2 = store
        .update(&key("default", "a"), cm("a", "db"), a)
        .await
        .unwrap();
    let gone = store.delete(&key("default", "a"), a2).await.unwrap();
    cache.fresh(gone).await.unwrap();
    // from `a`: the two later changes, in order, then live ones
    let mut rx = cache.watch_from(a).expect("inside the window");
    assert_eq!(next_event(&mut rx).await.revision(), a2);
    let e = next_event(&mut rx).await;
    assert_eq!((e.revision(), e.kind), (gone, EventKind::Delete));
    let b = store
        .create(&key("default", "b"), cm("b", "web"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut rx).await.revision(), b);
    // the snapshot and the subscription meet exactly: nothing missed, nothing twice
    let (snap, mut live) = cache.snapshot_and_watch("/registry/core/configmaps/");
    assert_eq!(names(&snap), ["b"]);
    let c = store
        .create(&key("default", "c"), cm("c", "web"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut live).await.revision(), c);
    assert!(start < a);

    // a start older than the window is the datastore's to serve (or refuse)
    let mut rev = c;
    for i in 0..(WINDOW + 10) {
        let name = format!("n{}", i % 7);
        rev = match store.get(&key("default", &name)).await.unwrap().kv {
            Some(kv) => store
                .update(&kv.key, cm(&name, "x"), kv.mod_revision)
                .await
                .unwrap(),
            None => store
                .create(&key("default", &name), cm(&name, "x"))
                .await
                .unwrap(),
        };
    }
    cache.fresh(rev).await.unwrap();
    assert!(cache.watch_from(a).is_none(), "before the window");
    assert!(cache.watch_from(rev - 10).is_some(), "inside it");
    // the slow watcher above (nobody read `live` or `rx`) was ended, not left to grow
    let mut ended = false;
    while let Ok(msg) = tokio::time::timeout(Duration::from_secs(5), live.recv()).await {
        if msg.is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "a watcher that does not keep up is ended");
}

#[tokio::test]
async fn selectors_read_the_kinds_fields_from_the_view() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running"}});
    store
        .create(
            "/registry/core/pods/default/p",
            serde_json::to_vec(&pod).unwrap(),
        )
        .await
        .unwrap();
    let caches = WatchCaches::new(store.clone(), true);
    let cache = caches.of(&registry::PODS);
    cache.fresh(0).await.unwrap();
    let snap = cache.snapshot("/registry/core/pods/");
    let view = &snap.entries[0].1.view;
    assert_eq!(view["spec"]["nodeName"], "n1");
    assert_eq!(view["status"]["phase"], "Running");
    assert!(
        view["spec"].get("containers").is_none(),
        "only what selectors read"
    );
    let sel = crate::apiserver::resources::Selection::from_query(
        &registry::PODS,
        &[(
            "fieldSelector".into(),
            "spec.nodeName=n1,status.phase=Running".into(),
        )],
    )
    .unwrap();
    assert!(sel.matches(view));
}
