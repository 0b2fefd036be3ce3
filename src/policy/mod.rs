//! NetworkPolicy enforcement on every node (as k3s' built-in policy controller does,
//! here on nftables): the agent follows NetworkPolicies, and once one exists, every
//! pod and namespace (peers may be anywhere), and keeps its table equal to what they
//! say for this node's pods (`rules.rs`). A change rebuilds the table in one atomic
//! transaction; an unchanged result sends nothing. The pod and namespace informers
//! start only when the first policy appears, so a cluster without policies pays
//! nothing for them.

pub mod rules;

use crate::client::ApiClient;
use crate::net::Nft;
use crate::runtime::informer::Informer;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Runs until `stop`. The table stays when the agent stops: its pods keep running, so
/// their policies keep being enforced until the next start rebuilds the table.
pub async fn run(
    client: ApiClient,
    node: String,
    nft: Arc<dyn Nft>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let policies = Informer::start(client.clone(), &crate::api::registry::NETWORKPOLICIES, None);
    let mut policy_changes = policies.subscribe();
    tokio::select! {
        _ = policies.synced() => {}
        _ = stop.changed() => return,
    }
    let mut others: Option<(Arc<Informer>, Arc<Informer>)> = None;
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut last: Option<String> = None;
    let mut retry = false;
    loop {
        if others.is_none() && !policies.list(None).is_empty() {
            let pods = Informer::start(client.clone(), &crate::api::registry::PODS, None);
            let namespaces =
                Informer::start(client.clone(), &crate::api::registry::NAMESPACES, None);
            for inf in [&pods, &namespaces] {
                let mut sub = inf.subscribe();
                let tx = tx.clone();
                tokio::spawn(async move {
                    while sub.recv().await.is_some() {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                });
            }
            tokio::select! {
                _ = async { pods.synced().await; namespaces.synced().await } => {}
                _ = stop.changed() => return,
            }
            tracing::info!("network policy: following pods and namespaces");
            others = Some((pods, namespaces));
        }
        let script = build(&policies, others.as_ref(), &node);
        if last.as_deref() != Some(script.as_str()) || retry {
            // nft runs as a process: off the async workers
            let (n, text) = (nft.clone(), script.clone());
            let applied = tokio::task::spawn_blocking(move || n.apply(&text))
                .await
                .unwrap_or_else(|e| {
                    Err(crate::net::NetError::Refused {
                        tool: "nft",
                        message: e.to_string(),
                    })
                });
            match applied {
                Ok(()) => {
                    tracing::debug!(bytes = script.len(), "network policy: table replaced");
                    last = Some(script);
                    retry = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "network policy: cannot program nftables; retrying");
                    retry = true;
                }
            }
        }
        let wait = if retry {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(60)
        };
        tokio::select! {
            Some(_) = policy_changes.recv() => {}
            Some(_) = changed.recv() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        // a burst of changes is one rebuild
        tokio::time::sleep(Duration::from_millis(50)).await;
        while policy_changes.try_recv().is_ok() {}
        while changed.try_recv().is_ok() {}
    }
}

fn build(
    policies: &Informer,
    others: Option<&(Arc<Informer>, Arc<Informer>)>,
    node: &str,
) -> String {
    let policies = policies.list(None);
    let (pods, namespaces) = match others {
        Some((pods, namespaces)) => {
            let all = pods.list(None);
            let ns: BTreeMap<String, Map<String, Value>> = namespaces
                .list(None)
                .iter()
                .filter_map(|n| {
                    Some((
                        n["metadata"]["name"].as_str()?.to_string(),
                        n["metadata"]["labels"]
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    ))
                })
                .collect();
            (all, ns)
        }
        None => (Vec::new(), BTreeMap::new()),
    };
    let infos: Vec<rules::PodInfo> = pods.iter().filter_map(|p| rules::pod_info(p)).collect();
    let local: Vec<rules::PodInfo> = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(node))
        .filter_map(|p| rules::pod_info(p))
        .collect();
    rules::ruleset(&rules::Inputs {
        policies: &policies,
        pods: &infos,
        namespaces: &namespaces,
        local: &local,
    })
}
