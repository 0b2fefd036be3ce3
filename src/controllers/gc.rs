//! The garbage collector: dependents go with their owners, as upstream's
//! ownerReferences promise.
//!
//! - Background (the default): once none of an object's owners exists any more, the
//!   object is deleted (an owner that is merely missing from an informer is looked up
//!   live first, since informers of different kinds lag independently).
//! - Foreground: an owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted first; the finalizer goes when none is left.
//! - Orphan: an owner being deleted with the `orphan` finalizer has its references
//!   removed from its dependents; then the finalizer goes.
//!
//! Owners are the workload kinds and every other kind the controller manager already
//! follows (pods, nodes, services, …): a pod deleted with `--cascade=orphan` loses its
//! `orphan` finalizer even when nothing depends on it.

use super::Context;
use crate::api::registry::{self, Resource};
use crate::client::watch::{key_of, object_path};
use crate::runtime::informer::Informer;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The kinds that own others here, and their dependents.
const OWNERS: &[&Resource] = &[
    &registry::DEPLOYMENTS,
    &registry::REPLICASETS,
    &registry::DAEMONSETS,
    &registry::STATEFULSETS,
    &registry::JOBS,
    &registry::CRONJOBS,
    &registry::REPLICATIONCONTROLLERS,
    &registry::PODS,
    &registry::NODES,
    &registry::SERVICES,
    &registry::ENDPOINTS,
    &registry::SERVICEACCOUNTS,
    &registry::PERSISTENTVOLUMECLAIMS,
    &registry::RESOURCEQUOTAS,
    &registry::CONTROLLERREVISIONS,
    &registry::PODDISRUPTIONBUDGETS,
];
const DEPENDENTS: &[&Resource] = &[
    &registry::REPLICASETS,
    &registry::PODS,
    &registry::JOBS,
    &registry::CONTROLLERREVISIONS,
];

/// A full pass over every dependent at least this often: a safety net under the
/// change-driven checks (a lost change can delay a collection, never prevent it).
const FULL_PASS_EVERY: Duration = Duration::from_secs(60);

/// What changed since the last round: the work of an incremental round.
#[derive(Default)]
struct Dirty {
    /// (dependent informer, key) whose owner references are new or changed
    dependents: std::collections::BTreeSet<(usize, String)>,
    /// uids of owners that went away: their dependents are checked
    owners_gone: std::collections::BTreeSet<String>,
    /// (owner informer, key) of owners being deleted with the `orphan` or
    /// `foregroundDeletion` finalizer
    owners_deleting: std::collections::BTreeSet<(usize, String)>,
}

/// Whether `owner` is being deleted and waits for the collector (orphaning or
/// deleting its dependents first).
fn waits_for_collector(owner: &Value) -> bool {
    !owner["metadata"]["deletionTimestamp"].is_null()
        && owner["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f == "orphan" || f == "foregroundDeletion")
}

fn refs(obj: &Option<Arc<Value>>) -> Option<&Value> {
    obj.as_ref().map(|o| &o["metadata"]["ownerReferences"])
}

pub async fn run(cx: Arc<Context>) {
    let owners: Vec<Arc<Informer>> = OWNERS.iter().map(|r| cx.informer(r)).collect();
    let dependents: Vec<Arc<Informer>> = DEPENDENTS.iter().map(|r| cx.informer(r)).collect();
    let wake = Arc::new(tokio::sync::Notify::new());
    let dirty: Arc<std::sync::Mutex<Dirty>> = Arc::default();
    // owners: a deleted one's dependents need a look; one being deleted with a
    // finalizer is found by the owners' scan of each round
    for (i, inf) in owners.iter().enumerate() {
        let (mut rx, wake, dirty) = (inf.subscribe(), wake.clone(), dirty.clone());
        cx.spawn(async move {
            while let Some(c) = rx.recv().await {
                match (&c.old, &c.new) {
                    (Some(old), None) => {
                        if let Some(uid) = old["metadata"]["uid"].as_str() {
                            lock(&dirty).owners_gone.insert(uid.to_string());
                        }
                    }
                    (_, Some(new)) if waits_for_collector(new) => {
                        lock(&dirty).owners_deleting.insert((i, c.key.clone()));
                    }
                    // an owner that changed otherwise needs nothing of the collector
                    _ => continue,
                }
                wake.notify_one();
            }
        });
    }
    // dependents: a new one, or one whose owner references changed, needs a look
    for (i, inf) in dependents.iter().enumerate() {
        let (mut rx, wake, dirty) = (inf.subscribe(), wake.clone(), dirty.clone());
        cx.spawn(async move {
            while let Some(c) = rx.recv().await {
                if c.new.is_some() && refs(&c.new) != refs(&c.old) {
                    lock(&dirty).dependents.insert((i, c.key.clone()));
                }
                wake.notify_one();
            }
        });
    }
    for inf in owners.iter().chain(dependents.iter()) {
        inf.synced().await;
    }
    let mut last_full: Option<std::time::Instant> = None;
    // owners being deleted whose finalizer is not gone yet (foreground deletions wait
    // for their dependents): looked at every round until they are done
    let mut pending = std::collections::BTreeSet::new();
    loop {
        let started = std::time::Instant::now();
        let full = last_full.is_none_or(|t| t.elapsed() >= FULL_PASS_EVERY);
        let mut work = std::mem::take(&mut *lock(&dirty));
        work.owners_deleting.append(&mut pending);
        match pass(&cx, &owners, &dependents, &work, full).await {
            Ok(left) => {
                pending = left;
                if full {
                    last_full = Some(started);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "garbage collection pass failed; retrying");
                // what was not done is done next round
                let mut d = lock(&dirty);
                d.dependents.extend(work.dependents);
                d.owners_gone.extend(work.owners_gone);
                d.owners_deleting.extend(work.owners_deleting);
            }
        }
        // in a big, busy cluster, wait in proportion to a round's cost so that the
        // collector takes at most about a third of a core
        let settle = (started.elapsed() * 2).max(Duration::from_millis(50));
        tokio::select! {
            _ = wake.notified() => tokio::time::sleep(settle).await,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // the dirty sets are only inserted into and taken whole: never torn
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn owner_informer<'a>(owners: &'a [Arc<Informer>], r: &Value) -> Option<&'a Arc<Informer>> {
    let api_version = r["apiVersion"].as_str().unwrap_or("");
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    owners
        .iter()
        .find(|i| i.res.kind == r["kind"] && i.res.group == group)
}

/// Whether the owner `r` of an object in `ns` exists (with the same uid).
async fn owner_exists(
    cx: &Context,
    owners: &[Arc<Informer>],
    ns: &str,
    r: &Value,
) -> Result<bool, crate::client::ClientError> {
    let Some(inf) = owner_informer(owners, r) else {
        return Ok(true); // a kind this collector does not follow: leave it alone
    };
    let name = r["name"].as_str().unwrap_or("");
    let key = if inf.res.namespaced {
        format!("{ns}/{name}")
    } else {
        name.to_string()
    };
    if let Some(o) = inf.get(&key) {
        if o["metadata"]["uid"] == r["uid"] {
            return Ok(true);
        }
    }
    match cx.client.get(&object_path(inf.res, Some(ns), name)).await {
        Ok(o) => Ok(o["metadata"]["uid"] == r["uid"]),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// One round: owners being deleted with a finalizer, then the dependents whose owners
/// may be gone — all of them (`full`), or those `work` names. Returns the owners
/// whose finalizer is still there.
async fn pass(
    cx: &Context,
    owners: &[Arc<Informer>],
    dependents: &[Arc<Informer>],
    work: &Dirty,
    full: bool,
) -> Result<std::collections::BTreeSet<(usize, String)>, crate::client::ClientError> {
    let only = (!full).then_some(work);
    let mut left_over = std::collections::BTreeSet::new();
    // owners being deleted in the foreground or orphaning
    let deleting: Vec<(usize, Arc<Value>)> = if full {
        let all = owners.iter().enumerate();
        all.flat_map(|(i, inf)| inf.list(None).into_iter().map(move |o| (i, o)))
            .filter(|(_, o)| waits_for_collector(o))
            .collect()
    } else {
        let named = work.owners_deleting.iter();
        named
            .filter_map(|(i, k)| Some((*i, owners[*i].get(k)?)))
            .filter(|(_, o)| waits_for_collector(o))
            .collect()
    };
    for (i, owner) in deleting {
        let inf = &owners[i];
        {
            let finalizers: Vec<&str> = owner["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let foreground = finalizers.contains(&"foregroundDeletion");
            let orphan = finalizers.contains(&"orphan");
            if !foreground && !orphan {
                continue;
            }
            let uid = &owner["metadata"]["uid"];
            let ns = owner["metadata"]["namespace"].as_str();
            let mut left = 0;
            for dep_inf in dependents {
                for dep in dep_inf.list(ns) {
                    let refs = dep["metadata"]["ownerReferences"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if !refs.iter().any(|r| r["uid"] == *uid) {
                        continue;
                    }
                    let path = object_path(
                        dep_inf.res,
                        dep["metadata"]["namespace"].as_str(),
                        dep["metadata"]["name"].as_str().unwrap_or(""),
                    );
                    if orphan {
                        let kept: Vec<Value> =
                            refs.into_iter().filter(|r| r["uid"] != *uid).collect();
                        cx.client
                            .patch(&path, &json!({"metadata": {"ownerReferences": kept}}))
                            .await?;
                    } else {
                        left += 1;
                        if dep["metadata"]["deletionTimestamp"].is_null() {
                            cx.client
                                .delete(&path, &json!({"propagationPolicy": "Foreground"}))
                                .await?;
                        }
                    }
                }
            }
            if left > 0 {
                left_over.insert((i, key_of(&owner)));
            } else {
                let drop = if orphan {
                    "orphan"
                } else {
                    "foregroundDeletion"
                };
                let kept: Vec<&str> = finalizers.iter().copied().filter(|f| *f != drop).collect();
                let path = object_path(
                    inf.res,
                    ns,
                    owner["metadata"]["name"].as_str().unwrap_or(""),
                );
                let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": owner["metadata"]["resourceVersion"]}});
                match cx.client.patch(&path, &patch).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) if e.is_conflict() => {
                        left_over.insert((i, key_of(&owner)));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // dependents whose owners are all gone
    for (i, dep_inf) in dependents.iter().enumerate() {
        let candidates = match only {
            None => dep_inf.list(None),
            Some(dirty) => {
                let mut keys: std::collections::BTreeSet<String> = dirty
                    .dependents
                    .range((i, String::new())..(i + 1, String::new()))
                    .map(|(_, k)| k.clone())
                    .collect();
                for uid in &dirty.owners_gone {
                    keys.extend(dep_inf.owned_by(uid).iter().map(|o| key_of(o)));
                }
                keys.iter().filter_map(|k| dep_inf.get(k)).collect()
            }
        };
        for dep in candidates {
            let Some(refs) = dep["metadata"]["ownerReferences"].as_array() else {
                continue;
            };
            if refs.is_empty() || !dep["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let ns = dep["metadata"]["namespace"].as_str().unwrap_or("");
            let mut gone = Vec::new();
            for r in refs {
                if !owner_exists(cx, owners, ns, r).await? {
                    gone.push(r["uid"].clone());
                }
            }
            if gone.is_empty() {
                continue;
            }
            let path = object_path(
                dep_inf.res,
                Some(ns),
                dep["metadata"]["name"].as_str().unwrap_or(""),
            );
            if gone.len() == refs.len() {
                tracing::debug!(object = %path, "owner gone: deleting");
                cx.client
                    .delete(&path, &json!({"propagationPolicy": "Background"}))
                    .await?;
            } else {
                let kept: Vec<&Value> = refs.iter().filter(|r| !gone.contains(&r["uid"])).collect();
                cx.client
                    .patch(&path, &json!({"metadata": {"ownerReferences": kept}}))
                    .await?;
            }
        }
    }
    Ok(left_over)
}
