//! The informer: a local copy of every object of one resource, kept current by list
//! and watch, that tells its subscribers what changed. One informer per resource is
//! shared by every control loop in a process, so each object is held once, indexed
//! by owner, by controller and by node.
//!
//! Following a resource is an explicit state machine ([`Phase`], as kube-rs' watcher
//! and client-go's reflector): list in pages of 500, watch from the list's
//! resourceVersion with bookmarks, list again when the server answers 410 Gone (a
//! continue token that expired mid-list falls back to one unpaged list), and back off
//! exponentially after failures. Each transition is one request, tested alone over a
//! scripted transport.

use crate::api::registry::Resource;
use crate::client::watch::{WatchEvent, collection_path, key_of};
use crate::client::{ApiClient, ClientError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Objects per list page (client-go's reflector and kube-rs page at 500).
const PAGE: usize = 500;

/// A change an informer saw: the object before and after (`None` = absent).
#[derive(Clone, Debug)]
pub struct Change {
    pub key: String,
    pub old: Option<Arc<Value>>,
    pub new: Option<Arc<Value>>,
}

/// Drops `metadata.managedFields` from an informer's copy, as upstream's informers'
/// usual transform does: no control loop reads them, they are nearly half of a pod,
/// and an update sent without them leaves the stored ones as they are.
fn slim(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
}

/// The objects an informer holds, indexed by owner and by node.
#[derive(Default)]
struct Objects {
    all: BTreeMap<String, Arc<Value>>,
    /// owner uid → keys of the objects it owns (controller or not)
    by_owner: HashMap<String, BTreeSet<String>>,
    /// keys of the objects without a controller
    orphans: BTreeSet<String>,
    /// `spec.nodeName` → keys of the pods bound to that node
    by_node: HashMap<String, BTreeSet<String>>,
}

fn node_name(obj: &Value) -> Option<&str> {
    obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?["uid"]
        .as_str()
}

impl Objects {
    fn insert(&mut self, key: String, obj: Arc<Value>) -> Option<Arc<Value>> {
        let old = self.remove(&key);
        for uid in owner_uids(&obj) {
            self.by_owner
                .entry(uid.to_string())
                .or_default()
                .insert(key.clone());
        }
        if controller_uid(&obj).is_none() {
            self.orphans.insert(key.clone());
        }
        if let Some(node) = node_name(&obj) {
            self.by_node
                .entry(node.to_string())
                .or_default()
                .insert(key.clone());
        }
        self.all.insert(key, obj);
        old
    }

    fn remove(&mut self, key: &str) -> Option<Arc<Value>> {
        let old = self.all.remove(key)?;
        for uid in owner_uids(&old) {
            if let Some(keys) = self.by_owner.get_mut(uid) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
        if controller_uid(&old).is_none() {
            self.orphans.remove(key);
        }
        if let Some(node) = node_name(&old) {
            if let Some(keys) = self.by_node.get_mut(node) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_node.remove(node);
                }
            }
        }
        Some(old)
    }
}

/// Where following a resource stands (see the module documentation).
#[derive(Debug)]
pub enum Phase {
    /// Start over: list from the beginning, in pages of `limit` (0: all at once).
    List { limit: usize },
    /// Listing: the objects of the pages so far and the token of the next page.
    Paging {
        limit: usize,
        token: String,
        seen: BTreeMap<String, Arc<Value>>,
    },
    /// Current up to `rv`: watch from there.
    Watch { rv: String },
    /// `after` failed `failures` times in a row: wait, then try it again.
    Retry { after: Box<Phase>, failures: u32 },
}

impl Phase {
    /// The first phase: a paged list.
    pub fn start() -> Phase {
        Phase::List { limit: PAGE }
    }
}

/// How long to wait after `failures` failures in a row: 100 ms doubling to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(5))
}

/// The local copy of one resource (see the module documentation).
pub struct Informer {
    pub res: &'static Resource,
    /// Only what this fieldSelector matches (`None`: everything).
    field_selector: Option<String>,
    objects: RwLock<Objects>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Change>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl Informer {
    fn new(res: &'static Resource, field_selector: Option<String>) -> Informer {
        Informer {
            res,
            field_selector,
            objects: RwLock::new(Objects::default()),
            subscribers: Mutex::new(Vec::new()),
            synced: tokio::sync::watch::channel(false).0,
        }
    }

    /// Starts following `res` (optionally only what `selector` — a fieldSelector —
    /// matches) in a task of its own, which ends once every handle is dropped and the
    /// current request is over.
    pub fn start(
        client: ApiClient,
        res: &'static Resource,
        field_selector: Option<String>,
    ) -> Arc<Informer> {
        let (informer, follow) = Informer::following(client, res, field_selector);
        tokio::spawn(follow);
        informer
    }

    /// An informer and the task that keeps it current, for its owner to run (and to
    /// stop: the informer's watch ends with the task).
    pub fn following(
        client: ApiClient,
        res: &'static Resource,
        field_selector: Option<String>,
    ) -> (
        Arc<Informer>,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let informer = Arc::new(Informer::new(res, field_selector));
        let weak = Arc::downgrade(&informer);
        let follow = async move {
            let mut phase = Phase::start();
            loop {
                let Some(me) = weak.upgrade() else { return };
                phase = me.step(&client, phase).await;
            }
        };
        (informer, follow)
    }

    /// One transition: at most one request (a retry waits its back-off first).
    pub async fn step(&self, client: &ApiClient, phase: Phase) -> Phase {
        let (phase, failures) = match phase {
            Phase::Retry { after, failures } => {
                tokio::time::sleep(backoff(failures)).await;
                (*after, failures)
            }
            phase => (phase, 0),
        };
        match self.attempt(client, phase).await {
            Ok(next) => next,
            Err((e, again)) => {
                tracing::debug!(resource = self.res.plural, error = %e, "informer: list/watch failed; retrying");
                Phase::Retry {
                    after: Box::new(again),
                    failures: failures + 1,
                }
            }
        }
    }

    /// Carries out `phase`; on failure, the phase to try again.
    async fn attempt(
        &self,
        client: &ApiClient,
        phase: Phase,
    ) -> Result<Phase, (ClientError, Phase)> {
        match phase {
            Phase::List { limit } => {
                self.page(client, limit, String::new(), BTreeMap::new())
                    .await
            }
            Phase::Paging { limit, token, seen } => self.page(client, limit, token, seen).await,
            Phase::Watch { rv } => self.watch(client, rv).await,
            retry @ Phase::Retry { .. } => Ok(retry),
        }
    }

    fn selector(&self) -> String {
        self.field_selector
            .as_deref()
            .map(|s| format!("&fieldSelector={}", crate::util::url::encode(s)))
            .unwrap_or_default()
    }

    /// One page of a list; the last one replaces what the informer holds.
    async fn page(
        &self,
        client: &ApiClient,
        limit: usize,
        token: String,
        mut seen: BTreeMap<String, Arc<Value>>,
    ) -> Result<Phase, (ClientError, Phase)> {
        let mut path = format!(
            "{}?limit={limit}{}",
            collection_path(self.res, None),
            self.selector()
        );
        if !token.is_empty() {
            path.push_str(&format!("&continue={}", crate::util::url::encode(&token)));
        }
        let list = match client.get(&path).await {
            Ok(list) => list,
            // the token's revision was compacted away: upstream's answer is to list
            // again in one piece
            Err(e) if e.code() == 410 && !token.is_empty() => return Ok(Phase::List { limit: 0 }),
            Err(e) => return Err((e, Phase::Paging { limit, token, seen })),
        };
        for item in list["items"].as_array().into_iter().flatten() {
            let mut item = item.clone();
            slim(&mut item);
            item["kind"] = Value::from(self.res.kind);
            item["apiVersion"] = Value::from(self.res.group_version());
            seen.insert(key_of(&item), Arc::new(item));
        }
        match list["metadata"]["continue"].as_str() {
            Some(next) if !next.is_empty() => Ok(Phase::Paging {
                limit,
                token: next.to_string(),
                seen,
            }),
            _ => {
                tracing::debug!(
                    resource = self.res.plural,
                    items = seen.len(),
                    "informer listed"
                );
                self.replace(seen);
                let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0");
                Ok(Phase::Watch { rv: rv.to_string() })
            }
        }
    }

    /// Replaces every object with a complete list, telling subscribers what differs.
    fn replace(&self, fresh: BTreeMap<String, Arc<Value>>) {
        let changes = {
            let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
            let mut changes = Vec::new();
            for (k, old) in objects.all.iter() {
                if !fresh.contains_key(k) {
                    changes.push(Change {
                        key: k.clone(),
                        old: Some(old.clone()),
                        new: None,
                    });
                }
            }
            for (k, new) in &fresh {
                if objects.all.get(k) != Some(new) {
                    changes.push(Change {
                        key: k.clone(),
                        old: objects.all.get(k).cloned(),
                        new: Some(new.clone()),
                    });
                }
            }
            *objects = Objects::default();
            for (k, v) in fresh {
                objects.insert(k, v);
            }
            changes
        };
        self.publish(changes);
        self.synced.send_replace(true);
    }

    /// One watch request from `rv`, applied event by event until the server ends it.
    async fn watch(
        &self,
        client: &ApiClient,
        mut rv: String,
    ) -> Result<Phase, (ClientError, Phase)> {
        let path = format!(
            "{}?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=300{}",
            collection_path(self.res, None),
            self.selector()
        );
        let mut stream = match client.watch(&path).await {
            Ok(s) => s,
            Err(e) if e.code() == 410 => return Ok(Phase::start()),
            Err(e) => return Err((e, Phase::Watch { rv })),
        };
        while let Some(ev) = stream.next().await {
            let (obj, deleted) = match ev {
                Ok(WatchEvent::Bookmark(r)) => {
                    rv = r;
                    continue;
                }
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => (o, false),
                Ok(WatchEvent::Deleted(o)) => (o, true),
                // expired: list again
                Err(e) if e.code() == 410 => return Ok(Phase::start()),
                Err(e) => return Err((e, Phase::Watch { rv })),
            };
            if let Some(r) = obj["metadata"]["resourceVersion"].as_str() {
                rv = r.to_string();
            }
            self.apply(obj, deleted);
        }
        Ok(Phase::Watch { rv })
    }

    /// One watch event into the local copy, published.
    fn apply(&self, mut obj: Value, deleted: bool) {
        slim(&mut obj);
        let key = key_of(&obj);
        let new = (!deleted).then(|| Arc::new(obj));
        let old = {
            let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
            match &new {
                Some(n) => objects.insert(key.clone(), n.clone()),
                None => objects.remove(&key),
            }
        };
        self.publish(vec![Change { key, old, new }]);
    }

    fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|tx| changes.iter().all(|c| tx.send(c.clone()).is_ok()));
    }

    /// Changes from now on.
    ///
    /// A subscriber that comes after the informer has loaded objects first hears of
    /// every object it holds as an addition (as client-go's `AddEventHandler`), so a
    /// control loop started after another one made the shared informer misses nothing.
    /// A change applied but not yet published when it subscribes may come twice.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for (key, obj) in &self.objects.read().unwrap_or_else(|e| e.into_inner()).all {
            let _ = tx.send(Change {
                key: key.clone(),
                old: None,
                new: Some(obj.clone()),
            });
        }
        subs.push(tx);
        rx
    }

    /// Waits until the first list has been loaded.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .get(key)
            .cloned()
    }

    /// The objects whose controller (the owner reference with `controller: true`) has
    /// this uid: an index lookup, not a scan.
    pub fn controlled_by(&self, uid: &str) -> Vec<Arc<Value>> {
        let mut owned = self.owned_by(uid);
        owned.retain(|o| controller_uid(o) == Some(uid));
        owned
    }

    /// The objects with an owner reference (controller or not) to this uid.
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<Value>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects
            .by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| objects.all.get(k).cloned())
            .collect()
    }

    /// The pods bound to `node` (by `spec.nodeName`): an index lookup, not a scan.
    pub fn on_node(&self, node: &str) -> Vec<Arc<Value>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| objects.all.get(k).cloned())
            .collect()
    }

    /// The names of the nodes that pods are bound to, without copying the pods out:
    /// the pod garbage collector's cheap first look.
    pub fn nodes_bound(&self) -> Vec<String> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects.by_node.keys().cloned().collect()
    }

    /// The objects of `namespace` without a controller (for adoption).
    pub fn orphans(&self, namespace: &str) -> Vec<Arc<Value>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        let prefix = format!("{namespace}/");
        objects
            .orphans
            .range(prefix.clone()..)
            .take_while(|k| k.starts_with(&prefix))
            .filter_map(|k| objects.all.get(k).cloned())
            .collect()
    }

    /// Every object (of one namespace).
    pub fn list(&self, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        match namespace {
            Some(ns) => {
                let prefix = format!("{ns}/");
                objects
                    .all
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v.clone())
                    .collect()
            }
            None => objects.all.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, owners: Value) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": name, "namespace": "ns", "ownerReferences": owners},
                        "spec": {"nodeName": node}}),
        )
    }

    fn keys(index: &HashMap<String, BTreeSet<String>>, k: &str) -> Vec<String> {
        index.get(k).into_iter().flatten().cloned().collect()
    }

    #[test]
    fn indexes_follow_inserts_updates_and_removals() {
        let mut o = Objects::default();
        let rs = json!([{"uid": "rs-1", "controller": true}, {"uid": "cfg-1"}]);
        o.insert("ns/a".into(), pod("a", "n1", rs.clone()));
        o.insert("ns/b".into(), pod("b", "n1", json!([{"uid": "cfg-1"}])));
        o.insert("ns/c".into(), pod("c", "", json!(null)));
        assert_eq!(keys(&o.by_owner, "rs-1"), ["ns/a"]);
        assert_eq!(keys(&o.by_owner, "cfg-1"), ["ns/a", "ns/b"]);
        assert_eq!(keys(&o.by_node, "n1"), ["ns/a", "ns/b"]);
        assert!(!o.by_node.contains_key(""), "unbound pods are on no node");
        // b has no controller, c has no owner at all: both are orphans
        assert_eq!(o.orphans.iter().collect::<Vec<_>>(), ["ns/b", "ns/c"]);
        // an update moves the object between index entries
        o.insert(
            "ns/a".into(),
            pod("a", "n2", json!([{"uid": "rs-2", "controller": true}])),
        );
        assert!(!o.by_owner.contains_key("rs-1"));
        assert_eq!(keys(&o.by_owner, "cfg-1"), ["ns/b"]);
        assert_eq!(keys(&o.by_node, "n2"), ["ns/a"]);
        assert_eq!(keys(&o.by_node, "n1"), ["ns/b"]);
        // removal leaves no empty entries behind
        o.remove("ns/b");
        o.remove("ns/a");
        assert!(o.by_owner.is_empty() && o.by_node.is_empty());
        assert_eq!(o.orphans.iter().collect::<Vec<_>>(), ["ns/c"]);
    }

    /// The scheduler subscribed to the shared nodes informer after the node lifecycle
    /// controller had started it and it had listed: it never heard of the nodes and
    /// left pods Pending with "no nodes available" until a node changed.
    #[test]
    fn a_late_subscriber_hears_of_every_object_already_loaded_then_of_changes() {
        let informer = Informer::new(&crate::api::registry::PODS, None);
        let mut early = informer.subscribe();
        assert!(early.try_recv().is_err(), "nothing loaded, nothing heard");
        {
            let mut o = informer.objects.write().unwrap();
            o.insert("ns/a".into(), pod("a", "n1", json!(null)));
            o.insert("ns/b".into(), pod("b", "n2", json!(null)));
        }
        let added = |key: &str| Change {
            key: key.into(),
            old: None,
            new: informer.get(key),
        };
        informer.publish(vec![added("ns/a"), added("ns/b")]);
        let mut late = informer.subscribe();
        for rx in [&mut early, &mut late] {
            let heard: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
            assert_eq!(
                heard.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
                ["ns/a", "ns/b"]
            );
            assert!(heard.iter().all(|c| c.old.is_none() && c.new.is_some()));
        }
        let gone = informer.objects.write().unwrap().remove("ns/a");
        informer.publish(vec![Change {
            key: "ns/a".into(),
            old: gone,
            new: None,
        }]);
        for rx in [&mut early, &mut late] {
            let c = rx.try_recv().expect("the removal");
            assert!(c.key == "ns/a" && c.old.is_some() && c.new.is_none());
            assert!(rx.try_recv().is_err());
        }
    }

    use crate::client::scripted::{Answer, Scripted};

    fn scripted(answers: Vec<Answer>) -> (Arc<Scripted>, ApiClient) {
        let t = Arc::new(Scripted::new(answers));
        (t.clone(), ApiClient::new(t, "test"))
    }

    fn named(name: &str, rv: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}})
    }

    fn list(items: &[Value], rv: &str, next: &str) -> Answer {
        Answer::ok(json!({"metadata": {"resourceVersion": rv, "continue": next}, "items": items}))
    }

    fn keys_of(informer: &Informer) -> Vec<String> {
        informer.list(None).iter().map(|o| key_of(o)).collect()
    }

    fn heard(rx: &mut mpsc::UnboundedReceiver<Change>) -> Vec<(String, bool, bool)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| (c.key, c.old.is_some(), c.new.is_some()))
            .collect()
    }

    #[tokio::test]
    async fn a_paged_list_is_assembled_before_anyone_hears_of_it_then_watched() {
        let (t, client) = scripted(vec![
            list(&[named("a", "5"), named("b", "6")], "9", "tok-1"),
            list(&[named("c", "7"), named("d", "8")], "9", "tok 2"),
            list(&[named("e", "9")], "9", ""),
            Answer::events(&[
                json!({"type": "MODIFIED", "object": named("a", "10")}),
                json!({"type": "DELETED", "object": named("b", "11")}),
                json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}),
            ]),
        ]);
        let informer = Informer::new(&crate::api::registry::PODS, Some("spec.nodeName=n1".into()));
        let mut rx = informer.subscribe();
        let mut phase = informer.step(&client, Phase::List { limit: 2 }).await;
        assert!(
            matches!(&phase, Phase::Paging { token, seen, .. } if token == "tok-1" && seen.len() == 2)
        );
        phase = informer.step(&client, phase).await;
        assert!(
            heard(&mut rx).is_empty(),
            "nothing is published before the last page"
        );
        assert!(keys_of(&informer).is_empty());
        phase = informer.step(&client, phase).await;
        assert!(
            matches!(&phase, Phase::Watch { rv } if rv == "9"),
            "{phase:?}"
        );
        assert_eq!(keys_of(&informer), ["ns/a", "ns/b", "ns/c", "ns/d", "ns/e"]);
        assert_eq!(heard(&mut rx).len(), 5);
        assert!(*informer.synced.borrow());
        phase = informer.step(&client, phase).await;
        // the watch ended: watch again from the bookmark
        assert!(
            matches!(&phase, Phase::Watch { rv } if rv == "15"),
            "{phase:?}"
        );
        assert_eq!(keys_of(&informer), ["ns/a", "ns/c", "ns/d", "ns/e"]);
        assert_eq!(
            heard(&mut rx),
            [("ns/a".into(), true, true), ("ns/b".into(), true, false)]
        );
        let asked = t.asked();
        assert_eq!(
            asked[..3],
            [
                "/api/v1/pods?limit=2&fieldSelector=spec.nodeName%3Dn1",
                "/api/v1/pods?limit=2&fieldSelector=spec.nodeName%3Dn1&continue=tok-1",
                "/api/v1/pods?limit=2&fieldSelector=spec.nodeName%3Dn1&continue=tok%202",
            ]
        );
        assert!(asked[3].contains("watch=1") && asked[3].contains("resourceVersion=9"));
        assert!(asked[3].contains("allowWatchBookmarks=true"));
    }

    #[tokio::test]
    async fn an_expired_continue_token_falls_back_to_one_unpaged_list() {
        let (t, client) = scripted(vec![
            list(&[named("a", "5")], "9", "tok"),
            Answer::status(410, "Expired"),
            list(&[named("a", "5"), named("b", "6")], "12", ""),
        ]);
        let informer = Informer::new(&crate::api::registry::PODS, None);
        let mut phase = informer.step(&client, Phase::List { limit: 1 }).await;
        phase = informer.step(&client, phase).await;
        assert!(matches!(phase, Phase::List { limit: 0 }), "{phase:?}");
        phase = informer.step(&client, phase).await;
        assert!(matches!(&phase, Phase::Watch { rv } if rv == "12"));
        assert_eq!(keys_of(&informer), ["ns/a", "ns/b"]);
        assert_eq!(t.asked()[2], "/api/v1/pods?limit=0");
    }

    #[tokio::test]
    async fn a_watch_answered_410_lists_again_and_publishes_what_went_missing() {
        let (_t, client) = scripted(vec![
            list(&[named("a", "5"), named("b", "6")], "9", ""),
            Answer::events(&[json!({"type": "ERROR", "object":
                {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}})]),
            list(&[named("b", "20")], "21", ""),
        ]);
        let informer = Informer::new(&crate::api::registry::PODS, None);
        let mut phase = informer.step(&client, Phase::start()).await;
        let mut rx = informer.subscribe();
        heard(&mut rx);
        phase = informer.step(&client, phase).await;
        assert!(matches!(phase, Phase::List { limit: PAGE }), "{phase:?}");
        phase = informer.step(&client, phase).await;
        assert!(matches!(&phase, Phase::Watch { rv } if rv == "21"));
        assert_eq!(
            heard(&mut rx),
            [("ns/a".into(), true, false), ("ns/b".into(), true, true)],
            "the relist tells of the deletion it missed and of the change"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_retry_the_same_step() {
        let (t, client) = scripted(vec![
            list(&[named("a", "5")], "9", "tok"),
            Answer::status(500, "InternalError"),
            Answer::status(503, "ServiceUnavailable"),
            list(&[named("b", "6")], "9", ""),
        ]);
        let informer = Informer::new(&crate::api::registry::PODS, None);
        let mut phase = informer.step(&client, Phase::List { limit: 1 }).await;
        phase = informer.step(&client, phase).await;
        assert!(
            matches!(&phase, Phase::Retry { failures: 1, .. }),
            "{phase:?}"
        );
        let t0 = tokio::time::Instant::now();
        phase = informer.step(&client, phase).await;
        assert!(
            matches!(&phase, Phase::Retry { failures: 2, .. }),
            "{phase:?}"
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
        phase = informer.step(&client, phase).await;
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(300),
            "100 ms, then 200 ms"
        );
        assert!(matches!(&phase, Phase::Watch { .. }), "{phase:?}");
        // the retried page kept what the first page brought
        assert_eq!(keys_of(&informer), ["ns/a", "ns/b"]);
        assert_eq!(t.asked()[1], t.asked()[2]);
        assert_eq!(backoff(30), Duration::from_secs(5), "capped");
    }
}
