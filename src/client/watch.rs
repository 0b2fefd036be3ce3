//! Watch streams (one JSON event per line) and the informer: a local copy of every
//! object of one resource, kept current by list + watch (relisting after a 410), that
//! tells its subscribers what changed. One informer per resource type is shared by
//! every control loop in a process, so each object is held once.

use super::{ApiClient, ClientError, ResponseBody};
use crate::api::registry::Resource;
use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// One watch event.
#[derive(Debug)]
pub enum WatchEvent {
    Added(Value),
    Modified(Value),
    Deleted(Value),
    /// A bookmark: everything up to this resourceVersion has been seen.
    Bookmark(String),
}

/// The events of one watch request.
pub struct WatchStream {
    body: ResponseBody,
    buf: Vec<u8>,
}

impl WatchStream {
    /// The next event; `None` when the server ended the watch. An `ERROR` event is
    /// returned as the error it carries (410 means: list again).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let ev: Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        return Some(Err(ClientError::transport(format!("bad watch event: {e}"))));
                    }
                };
                let mut ev = ev;
                let obj = ev.get_mut("object").map(Value::take).unwrap_or(Value::Null);
                return Some(Ok(match ev["type"].as_str().unwrap_or("") {
                    "ADDED" => WatchEvent::Added(obj),
                    "MODIFIED" => WatchEvent::Modified(obj),
                    "DELETED" => WatchEvent::Deleted(obj),
                    "BOOKMARK" => WatchEvent::Bookmark(
                        obj["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    ),
                    _ => {
                        return Some(Err(ClientError {
                            code: obj["code"].as_u64().unwrap_or(500) as u16,
                            reason: obj["reason"].as_str().unwrap_or("").to_string(),
                            message: obj["message"].as_str().unwrap_or("watch error").to_string(),
                        }));
                    }
                }));
            }
            match self.body.frame().await {
                None => return None,
                Some(Err(e)) => return Some(Err(ClientError::transport(e))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

impl ApiClient {
    /// Starts a watch; `path` carries the query (`?watch=1&resourceVersion=…`).
    pub async fn watch(&self, path: &str) -> Result<WatchStream, ClientError> {
        let resp = self
            .send(Method::GET, path, "application/json", None)
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(ClientError::transport)?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ClientError {
                code: status.as_u16(),
                reason: v["reason"].as_str().unwrap_or("").to_string(),
                message: v["message"].as_str().unwrap_or("watch refused").to_string(),
            });
        }
        Ok(WatchStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

/// The collection path of `res` across all namespaces (or one).
pub fn collection_path(res: &Resource, namespace: Option<&str>) -> String {
    let base = if res.group.is_empty() {
        format!("/api/{}", res.version)
    } else {
        format!("/apis/{}/{}", res.group, res.version)
    };
    match namespace {
        Some(ns) if res.namespaced => format!("{base}/namespaces/{ns}/{}", res.plural),
        _ => format!("{base}/{}", res.plural),
    }
}

/// The path of one object.
pub fn object_path(res: &Resource, namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", collection_path(res, namespace))
}

/// `namespace/name` (or `name`): how informers and work queues name objects.
pub fn key_of(obj: &Value) -> String {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

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

/// The local copy of one resource (see the module documentation).
pub struct Informer {
    pub res: &'static Resource,
    objects: RwLock<Objects>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Change>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl Informer {
    /// Starts following `res` (optionally only what `selector` — a fieldSelector —
    /// matches); the task ends when every handle is dropped.
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
        let informer = Arc::new(Informer {
            res,
            objects: RwLock::new(Objects::default()),
            subscribers: Mutex::new(Vec::new()),
            synced: tokio::sync::watch::channel(false).0,
        });
        let weak = Arc::downgrade(&informer);
        let follow = async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let Some(me) = weak.upgrade() else { return };
                match me.follow(&client, field_selector.as_deref()).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::debug!(resource = res.plural, error = %e, "informer: list/watch failed; retrying");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
                drop(me);
                tokio::time::sleep(backoff).await;
            }
        };
        (informer, follow)
    }

    /// One list, then watch until the watch ends or expires.
    async fn follow(
        &self,
        client: &ApiClient,
        field_selector: Option<&str>,
    ) -> Result<(), ClientError> {
        let path = collection_path(self.res, None);
        let selector = field_selector
            .map(|s| format!("&fieldSelector={}", urlencode(s)))
            .unwrap_or_default();
        let list = client.get(&format!("{path}?limit=0{selector}")).await?;
        tracing::debug!(
            resource = self.res.plural,
            items = list["items"].as_array().map_or(0, Vec::len),
            "informer listed"
        );
        let mut rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let mut fresh = BTreeMap::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let mut item = item.clone();
            slim(&mut item);
            item["kind"] = Value::from(self.res.kind);
            item["apiVersion"] = Value::from(self.res.group_version());
            fresh.insert(key_of(&item), Arc::new(item));
        }
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
        loop {
            let mut stream = client
                .watch(&format!("{path}?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=300{selector}"))
                .await?;
            while let Some(ev) = stream.next().await {
                let (obj, deleted) = match ev {
                    Ok(WatchEvent::Bookmark(r)) => {
                        rv = r;
                        continue;
                    }
                    Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => (o, false),
                    Ok(WatchEvent::Deleted(o)) => (o, true),
                    Err(e) if e.code == 410 => return Ok(()), // expired: list again
                    Err(e) => return Err(e),
                };
                if let Some(r) = obj["metadata"]["resourceVersion"].as_str() {
                    rv = r.to_string();
                }
                let mut obj = obj;
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
        }
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

/// Decodes a query component (`%XX` and `+`).
pub fn urldecode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
        let informer = Informer {
            res: &crate::api::registry::PODS,
            objects: RwLock::new(Objects::default()),
            subscribers: Mutex::new(Vec::new()),
            synced: tokio::sync::watch::channel(false).0,
        };
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
}
