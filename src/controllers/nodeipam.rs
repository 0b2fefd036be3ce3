//! Node IPAM: each node gets its own pod range (`spec.podCIDR`), the next free /24 of
//! `--cluster-cidr`, never given to two nodes; a deleted node's range is free again.

use super::Context;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub async fn run(cx: Arc<Context>, cluster_cidr: crate::config::Ipv4Net) {
    let nodes = cx.informer(&crate::api::registry::NODES);
    let mut changes = nodes.subscribe();
    nodes.synced().await;
    // nodes already told there is no range for them (said once, not at every change)
    let mut told: HashSet<String> = HashSet::new();
    // ranges this allocator gave that the informer may not show yet (upstream's cidrset
    // marks a range occupied when it allocates it): a stale copy of a node must neither
    // get a second range nor let its range go to another node
    // (by name, with the uid of the node it was given to: a node deleted and made again
    // under its name is a new node)
    let mut assigned: HashMap<String, (String, String)> = HashMap::new();
    loop {
        let all = nodes.list(None);
        let has_range =
            |n: &serde_json::Value| n["spec"]["podCIDR"].as_str().is_some_and(|c| !c.is_empty());
        assigned.retain(|name, (uid, _)| {
            all.iter().any(|n| {
                n["metadata"]["name"].as_str() == Some(name.as_str())
                    && n["metadata"]["uid"].as_str() == Some(uid.as_str())
                    && !has_range(n)
            })
        });
        let mut used: HashSet<String> = all
            .iter()
            .filter_map(|n| n["spec"]["podCIDR"].as_str().map(String::from))
            .chain(assigned.values().map(|(_, cidr)| cidr.clone()))
            .collect();
        let mut next = 0u32;
        for node in all.iter().filter(|n| !has_range(n)) {
            let name = node["metadata"]["name"].as_str().unwrap_or("");
            if assigned.contains_key(name) {
                continue;
            }
            let cidr = loop {
                match cluster_cidr.subnet24(next).map(|n| n.to_string()) {
                    Some(c) if used.contains(&c) => next += 1,
                    other => break other,
                }
            };
            let Some(cidr) = cidr else {
                if told.insert(name.to_string()) {
                    tracing::warn!(node = name, %cluster_cidr, "no pod range left for this node; widen --cluster-cidr");
                    // the informer's copy already names its kind and apiVersion
                    cx.events.emit(
                        node,
                        false,
                        "CIDRNotAvailable",
                        format!("Node {name} status is now: CIDRNotAvailable"),
                        "cidrAllocator",
                    );
                }
                continue;
            };
            let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
            match cx
                .client
                .patch(&format!("/api/v1/nodes/{name}"), &patch)
                .await
            {
                Ok(_) => {
                    used.insert(cidr.clone());
                    let uid = node["metadata"]["uid"].as_str().unwrap_or("").to_string();
                    assigned.insert(name.to_string(), (uid, cidr));
                }
                Err(e) => {
                    // not given: it may be given at the next pass
                    tracing::debug!(node = name, error = %e, "could not assign a pod range")
                }
            }
        }
        // wait for a change that asks for work (a node without a range, or a range
        // freed while a node waits for one): a pass reads every node, and in a big
        // cluster nodes change all the time
        let wants = |c: &crate::runtime::informer::Change| match &c.new {
            Some(n) => n["spec"]["podCIDR"].as_str().is_none_or(str::is_empty),
            None => !told.is_empty(),
        };
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            tokio::select! {
                Some(c) = changes.recv() => if wants(&c) { break },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        while changes.try_recv().is_ok() {}
    }
}
