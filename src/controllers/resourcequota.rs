//! ResourceQuota status, as upstream's resource quota controller: `hard` is the
//! spec's, `used` is counted from the objects of the namespace. Admission charges a
//! quota as objects are created; this recount is what gives back what deletes (and
//! creates that failed after admission) freed.

use super::Context;
use crate::api::quota;
use crate::api::registry::Resource;
use crate::client::watch::{collection_path, key_of, object_path};
use crate::runtime::informer::Informer;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Kinds whose objects a quota key can count, besides `count/<plural>.<group>`.
const COUNTED: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

pub async fn run(cx: Arc<Context>) {
    let quotas = cx.informer(&crate::api::registry::RESOURCEQUOTAS);
    let pods = cx.informer(&crate::api::registry::PODS);
    let (mut a, mut b) = (quotas.subscribe(), pods.subscribe());
    quotas.synced().await;
    pods.synced().await;
    loop {
        for q in quotas.list(None) {
            if let Err(e) = sync(&cx, &q, &pods).await {
                tracing::debug!(quota = %key_of(&q), error = %e, "resource quota sync failed");
            }
        }
        // a quota or pod change, or every 10 s for the kinds not watched here
        tokio::select! {
            Some(_) = a.recv() => {}
            Some(_) = b.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        while a.try_recv().is_ok() || b.try_recv().is_ok() {}
    }
}

/// The resource a quota key counts objects of.
fn source(key: &str) -> Option<&'static Resource> {
    // quota keys come from users (`count/widgets.example.com`): looked up by name
    let find = crate::api::registry::preferred;
    if let Some(what) = key.strip_prefix("count/") {
        let (plural, group) = what.split_once('.').unwrap_or((what, ""));
        return find(group, plural);
    }
    COUNTED
        .iter()
        .find(|plural| quota::tracks(key, "", plural))
        .and_then(|plural| find("", plural))
}

async fn sync(cx: &Context, q: &Value, pods: &Informer) -> Result<(), crate::client::ClientError> {
    let ns = q["metadata"]["namespace"].as_str().unwrap_or("");
    let hard: Map<String, Value> = q["spec"]["hard"].as_object().cloned().unwrap_or_default();
    let mut objects: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut used = Map::new();
    for key in hard.keys() {
        let Some(res) = source(key) else {
            continue; // a resource skua does not count: left out of used, as upstream
        };
        if !objects.contains_key(res.plural) {
            let items = if res.group.is_empty() && res.plural == "pods" {
                pods.list(Some(ns)).iter().map(|p| (**p).clone()).collect()
            } else {
                let list = cx.client.get(&collection_path(res, Some(ns))).await?;
                list["items"].as_array().cloned().unwrap_or_default()
            };
            objects.insert(res.plural, items);
        }
        let total: f64 = objects[res.plural]
            .iter()
            .filter_map(|o| quota::usage(res.group, res.plural, o).get(key).copied())
            .sum();
        used.insert(key.clone(), json!(quota::format(key, total)));
    }
    let status = json!({"hard": hard, "used": used});
    if q["status"] == status {
        return Ok(());
    }
    let mut next = q.clone();
    next["status"] = status;
    let path = format!(
        "{}/status",
        object_path(
            &crate::api::registry::RESOURCEQUOTAS,
            Some(ns),
            q["metadata"]["name"].as_str().unwrap_or("")
        )
    );
    match cx.client.update(&path, &next).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_conflict() || e.is_not_found() => Ok(()), // next pass
        Err(e) => Err(e),
    }
}
