//! The disruption controller: keeps each PodDisruptionBudget's status current —
//! pods expected, healthy (ready) pods, the healthy count the budget demands, and how
//! many disruptions it allows now — which `pods/eviction` (and so `kubectl drain`)
//! honours.

use super::Context;
use super::replicaset::{ready, selects};
use crate::client::watch::object_path;
use serde_json::{Value, json};
use std::sync::Arc;

/// An int-or-percent of `total`, rounding up (as upstream does for budgets).
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if s.ends_with('%') => {
            let p: i64 = s.trim_end_matches('%').parse().ok()?;
            Some((p * total + 99) / 100)
        }
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub async fn run(cx: Arc<Context>) {
    let budgets = cx.informer(&crate::api::registry::PODDISRUPTIONBUDGETS);
    let pods = cx.informer(&crate::api::registry::PODS);
    let (mut a, mut b) = (budgets.subscribe(), pods.subscribe());
    budgets.synced().await;
    pods.synced().await;
    loop {
        for pdb in budgets.list(None) {
            let ns = pdb["metadata"]["namespace"].as_str();
            let matching: Vec<Arc<Value>> = pods
                .list(ns)
                .into_iter()
                .filter(|p| selects(&pdb, p) && p["metadata"]["deletionTimestamp"].is_null())
                .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
                .collect();
            let expected = matching.len() as i64;
            let healthy = matching.iter().filter(|p| ready(p)).count() as i64;
            let desired = if let Some(min) = scaled(&pdb["spec"]["minAvailable"], expected) {
                min
            } else if let Some(max) = scaled(&pdb["spec"]["maxUnavailable"], expected) {
                (expected - max).max(0)
            } else {
                expected
            };
            let allowed = (healthy - desired).max(0);
            let old = &pdb["status"];
            let prev_cond = old["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionAllowed"))
                .cloned();
            let (status, reason) = if allowed > 0 {
                ("True", "SufficientPods")
            } else {
                ("False", "InsufficientPods")
            };
            let since = match &prev_cond {
                Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
                _ => json!(crate::api::meta::now_rfc3339()),
            };
            let next_status = json!({
                "observedGeneration": pdb["metadata"]["generation"],
                "expectedPods": expected,
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "disruptionsAllowed": allowed,
                "conditions": [{"type": "DisruptionAllowed", "status": status, "reason": reason, "message": "",
                                "observedGeneration": pdb["metadata"]["generation"], "lastTransitionTime": since}],
                "disruptedPods": old.get("disruptedPods").cloned().unwrap_or(json!({})),
            });
            let same = [
                "observedGeneration",
                "expectedPods",
                "currentHealthy",
                "desiredHealthy",
                "disruptionsAllowed",
            ]
            .iter()
            .all(|k| old[k] == next_status[k])
                && prev_cond.is_some_and(|c| c["status"] == status);
            if same {
                continue;
            }
            let path = format!(
                "{}/status",
                object_path(
                    budgets.res,
                    ns,
                    pdb["metadata"]["name"].as_str().unwrap_or("")
                )
            );
            let mut next = (*pdb).clone();
            next["status"] = next_status;
            if let Err(e) = cx.client.update(&path, &next).await {
                tracing::debug!(error = %e, "disruption budget status update failed; retrying");
            }
        }
        super::next_pass(&mut a, &mut b).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_scale_with_the_pods_they_cover() {
        assert_eq!(scaled(&json!("50%"), 3), Some(2));
        assert_eq!(scaled(&json!(1), 3), Some(1));
        assert_eq!(scaled(&json!("2"), 3), Some(2));
        assert_eq!(scaled(&Value::Null, 3), None);
    }
}
