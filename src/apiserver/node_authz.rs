//! Upstream's Node authorizer (its graph part) and the NodeRestriction checks that
//! need a stored object: a node credential is worth one node.
//!
//! - A node reads a Secret, ConfigMap, PersistentVolumeClaim or ServiceAccount, and
//!   asks a token for a ServiceAccount, only when a pod bound to it refers to that
//!   object; a PersistentVolume only when such a claim is bound to it. The relations
//!   are kept in a graph fed by a watch on pods and claims ([`follow`]); a miss is
//!   checked against the store before it is refused, so a pod bound a moment ago is
//!   never refused because the graph has not seen it yet (a node gets a budget of
//!   such reads, so misses cannot be used to make the server work).
//! - A node deletes, evicts and writes the status of only the pods bound to it.
//!
//! The request-only rules (which resources, its own Node and Lease) are in `auth.rs`.

use super::ApiContext;
use super::auth::UserInfo;
use super::request_info::RequestInfo;
use super::resources::object::{from_store, key, prefix};
use super::status::ApiStatus;
use crate::api::pod_refs::{RefKind, pod_refs};
use crate::api::registry;
use crate::store::{ListOptions, Store};
use http::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Which nodes may read which objects, from the pods bound to them.
#[derive(Default)]
pub struct NodeGraph {
    inner: RwLock<Graph>,
    /// Store reads after graph misses, per node: a node asking for names none of
    /// its pods use cannot make the server read its namespaces over and over.
    misses: std::sync::Mutex<HashMap<String, (u32, std::time::Instant)>>,
}

/// Store reads after misses a node may cause per [`MISS_WINDOW`].
const MISS_BUDGET: u32 = 20;
const MISS_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Graph {
    /// Bound pods by `namespace/name`: their node and what they refer to.
    pods: HashMap<String, (String, Vec<(RefKind, String)>)>,
    /// `(kind, namespace/name)` → node → how many of its pods refer to the object.
    edges: HashMap<(RefKind, String), HashMap<String, u32>>,
    /// Claims by `namespace/name` → the volume they are bound to.
    claims: HashMap<String, String>,
}

impl Graph {
    fn remove_pod(&mut self, pod: &str) {
        let Some((node, refs)) = self.pods.remove(pod) else {
            return;
        };
        for r in refs {
            if let Some(nodes) = self.edges.get_mut(&r) {
                if let Some(n) = nodes.get_mut(&node) {
                    *n -= 1;
                    if *n == 0 {
                        nodes.remove(&node);
                    }
                }
                if nodes.is_empty() {
                    self.edges.remove(&r);
                }
            }
        }
    }

    fn set_pod(&mut self, pod: &str, obj: Option<&Value>) {
        self.remove_pod(pod);
        let Some(obj) = obj else { return };
        let Some(node) = obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            return;
        };
        let ns = pod.split_once('/').map_or("", |(ns, _)| ns);
        let refs: Vec<(RefKind, String)> = pod_refs(obj)
            .into_iter()
            .map(|(kind, name)| (kind, format!("{ns}/{name}")))
            .collect();
        for r in &refs {
            *self
                .edges
                .entry(r.clone())
                .or_default()
                .entry(node.to_string())
                .or_default() += 1;
        }
        self.pods.insert(pod.to_string(), (node.to_string(), refs));
    }

    fn set_claim(&mut self, claim: &str, obj: Option<&Value>) {
        match obj.and_then(|o| o["spec"]["volumeName"].as_str()) {
            Some(volume) if !volume.is_empty() => {
                self.claims.insert(claim.to_string(), volume.to_string());
            }
            _ => {
                self.claims.remove(claim);
            }
        }
    }

    fn refers(&self, node: &str, kind: RefKind, object: &str) -> bool {
        self.edges
            .get(&(kind, object.to_string()))
            .is_some_and(|nodes| nodes.contains_key(node))
    }
}

impl NodeGraph {
    /// Whether `node` may have the store read after a miss now (and counts it).
    fn may_read_store(&self, node: &str) -> bool {
        let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        if misses.len() > 10_000 {
            misses.clear();
        }
        let entry = misses
            .entry(node.to_string())
            .or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() >= MISS_WINDOW {
            *entry = (0, std::time::Instant::now());
        }
        entry.0 += 1;
        entry.0 <= MISS_BUDGET
    }

    /// Whether a pod bound to `node` refers to `kind` `namespace/name`, as far as the
    /// graph has seen.
    pub fn refers(&self, node: &str, kind: RefKind, namespace: &str, name: &str) -> bool {
        self.read()
            .refers(node, kind, &format!("{namespace}/{name}"))
    }

    /// Whether a claim a pod bound to `node` refers to is bound to `volume`.
    pub fn refers_to_volume(&self, node: &str, volume: &str) -> bool {
        let g = self.read();
        g.claims
            .iter()
            .any(|(claim, v)| v == volume && g.refers(node, RefKind::PersistentVolumeClaim, claim))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Graph> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Graph> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, which: Followed, name: &str, obj: Option<&Value>) {
        let mut g = self.write();
        match which {
            Followed::Pods => g.set_pod(name, obj),
            Followed::Claims => g.set_claim(name, obj),
        }
    }

    fn reset(&self, which: Followed) {
        let mut g = self.write();
        match which {
            Followed::Pods => {
                g.pods.clear();
                g.edges.clear();
            }
            Followed::Claims => g.claims.clear(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Followed {
    Pods,
    Claims,
}

/// Keeps `graph` equal to the stored pods and claims until the store shuts down.
pub async fn follow(store: Arc<dyn Store>, graph: Arc<NodeGraph>) {
    tokio::join!(
        follow_one(store.clone(), graph.clone(), Followed::Pods),
        follow_one(store, graph, Followed::Claims),
    );
}

/// The graph as seen through one followed resource.
struct Part<'a>(&'a NodeGraph, Followed);

impl super::follow::View for Part<'_> {
    fn reset(&self) {
        self.0.reset(self.1);
    }

    fn apply(&self, tail: &str, object: Option<&Value>) {
        self.0.apply(self.1, tail, object);
    }
}

async fn follow_one(store: Arc<dyn Store>, graph: Arc<NodeGraph>, which: Followed) {
    let res = match which {
        Followed::Pods => &registry::PODS,
        Followed::Claims => &registry::PERSISTENTVOLUMECLAIMS,
    };
    let view = Part(&graph, which);
    super::follow::follow(
        &*store,
        &prefix(res, None),
        "node authorizer graph",
        &view,
        None,
    )
    .await;
}

fn forbidden(user: &UserInfo, info: &RequestInfo, reason: &str) -> ApiStatus {
    super::auth::forbidden(user, info, Some(reason))
}

/// The second step of authorizing `node`'s request (after `auth::node_may`): the
/// checks that need the graph or a stored pod.
pub async fn authorize(
    ctx: &ApiContext,
    user: &UserInfo,
    node: &str,
    info: &RequestInfo,
) -> Result<(), ApiStatus> {
    if !info.is_resource_request || !info.group.is_empty() {
        return Ok(());
    }
    let ns = info.namespace.as_deref().unwrap_or("");
    let name = info.name.as_deref().unwrap_or("");
    let no_relation = || {
        forbidden(
            user,
            info,
            &format!("no relationship found between node '{node}' and this object"),
        )
    };
    let sub = info.subresource.as_deref();
    match (info.resource.as_str(), sub, info.verb.as_str()) {
        ("serviceaccounts", Some("token"), "create") | (_, None, "get") => {
            let Some(kind) = RefKind::from_resource(&info.resource) else {
                if info.resource == "persistentvolumes" && info.verb == "get" {
                    return if ctx.node_graph.refers_to_volume(node, name)
                        || (ctx.node_graph.may_read_store(node)
                            && volume_in_store(ctx, node, name).await?)
                    {
                        Ok(())
                    } else {
                        Err(no_relation())
                    };
                }
                return Ok(());
            };
            if ctx.node_graph.refers(node, kind, ns, name)
                || (ctx.node_graph.may_read_store(node)
                    && refers_in_store(&*ctx.store, node, kind, ns, name).await?)
            {
                Ok(())
            } else {
                Err(no_relation())
            }
        }
        ("pods", None, "delete") => own_pod(ctx, node, ns, name, "delete pods").await,
        ("pods", Some("eviction"), "create") => own_pod(ctx, node, ns, name, "evict pods").await,
        ("pods", Some("status"), "update" | "patch") => {
            own_pod(ctx, node, ns, name, "update pod status for pods").await
        }
        _ => Ok(()),
    }
}

/// NodeRestriction: a node acts only on pods bound to it. A pod that does not exist
/// is left to the handler (404).
async fn own_pod(
    ctx: &ApiContext,
    node: &str,
    ns: &str,
    name: &str,
    what: &str,
) -> Result<(), ApiStatus> {
    let got = ctx
        .store
        .get(&key(&registry::PODS, Some(ns), name))
        .await
        .map_err(super::resources::store_error)?;
    let Some(kv) = got.kv else { return Ok(()) };
    // an unreadable pod (written before the depth limit) is nobody's: a node may not
    // touch it
    let bound = from_store(&kv)
        .ok()
        .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_string));
    if bound.as_deref() == Some(node) {
        return Ok(());
    }
    Err(ApiStatus::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "pods {name:?} is forbidden: node {node:?} can only {what} with spec.nodeName set to itself"
        ),
    ))
}

/// The graph missed: whether the store's pods say otherwise (a pod bound a moment
/// ago), reading the pods of one namespace.
async fn refers_in_store(
    store: &dyn Store,
    node: &str,
    kind: RefKind,
    ns: &str,
    name: &str,
) -> Result<bool, ApiStatus> {
    let listed = store
        .list(&prefix(&registry::PODS, Some(ns)), ListOptions::default())
        .await
        .map_err(super::resources::store_error)?;
    Ok(listed.kvs.iter().any(|kv| {
        serde_json::from_slice::<Value>(&kv.value).is_ok_and(|pod| {
            pod["spec"]["nodeName"].as_str() == Some(node)
                && pod_refs(&pod).iter().any(|(k, n)| *k == kind && n == name)
        })
    }))
}

/// The graph missed a volume: the claims bound to it, and the pods of their
/// namespaces, from the store.
async fn volume_in_store(ctx: &ApiContext, node: &str, volume: &str) -> Result<bool, ApiStatus> {
    let claims_res = &registry::PERSISTENTVOLUMECLAIMS;
    let claims_prefix = prefix(claims_res, None);
    let listed = ctx
        .store
        .list(&claims_prefix, ListOptions::default())
        .await
        .map_err(super::resources::store_error)?;
    for kv in &listed.kvs {
        let Ok(claim) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if claim["spec"]["volumeName"].as_str() != Some(volume) {
            continue;
        }
        let ns = claim["metadata"]["namespace"].as_str().unwrap_or("");
        let name = claim["metadata"]["name"].as_str().unwrap_or("");
        if refers_in_store(&*ctx.store, node, RefKind::PersistentVolumeClaim, ns, name).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(node: &str, secret: &str) -> Value {
        json!({"spec": {"nodeName": node, "volumes": [
            {"name": "s", "secret": {"secretName": secret}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "data"}}
        ]}})
    }

    #[test]
    fn the_graph_follows_pods_as_they_come_move_and_go() {
        let g = NodeGraph::default();
        g.apply(Followed::Pods, "a/web-1", Some(&pod("n1", "db")));
        g.apply(Followed::Pods, "a/web-2", Some(&pod("n1", "db")));
        g.apply(Followed::Pods, "b/web-1", Some(&pod("n2", "other")));
        assert!(g.refers("n1", RefKind::Secret, "a", "db"));
        assert!(!g.refers("n2", RefKind::Secret, "a", "db"));
        assert!(!g.refers("n1", RefKind::Secret, "b", "other"));
        assert!(!g.refers("n1", RefKind::ConfigMap, "a", "db"));
        // one of two pods goes: the other still needs the secret
        g.apply(Followed::Pods, "a/web-1", None);
        assert!(g.refers("n1", RefKind::Secret, "a", "db"));
        g.apply(Followed::Pods, "a/web-2", Some(&pod("n1", "changed")));
        assert!(!g.refers("n1", RefKind::Secret, "a", "db"));
        assert!(g.refers("n1", RefKind::Secret, "a", "changed"));
        // an unbound pod gives nobody anything
        g.apply(Followed::Pods, "a/web-3", Some(&pod("", "free")));
        assert!(!g.refers("", RefKind::Secret, "a", "free"));
        // volumes through bound claims
        g.apply(
            Followed::Claims,
            "a/data",
            Some(&json!({"spec": {"volumeName": "pv-1"}})),
        );
        assert!(g.refers_to_volume("n1", "pv-1"));
        assert!(!g.refers_to_volume("n2", "pv-1"));
        assert!(!g.refers_to_volume("n1", "pv-2"));
        g.apply(Followed::Pods, "a/web-2", None);
        g.apply(Followed::Pods, "b/web-1", None);
        assert!(!g.refers_to_volume("n1", "pv-1"));
        assert!(g.read().edges.is_empty(), "no edge outlives its pods");
    }
}
