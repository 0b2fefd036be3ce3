//! Preemption, as upstream's DefaultPreemption plugin: a pod that fits nowhere may
//! take the place of lower-priority pods. On each node, every lower-priority pod is
//! taken away in thought; if the pod then fits, as many of them as possible are put
//! back, most important first, and the rest are the victims. The node whose victims
//! matter least is chosen (lowest highest priority, then lowest sum of priorities,
//! then fewest); its victims get the `DisruptionTarget` condition and a `Preempted`
//! event and are deleted, and the pod is nominated to the node
//! (`status.nominatedNodeName`) until they are gone and it can be placed.

use super::plugins::{Facts, NodeInfo, Verdict, filter_with};
use super::{NAME, with_kind};
use crate::client::watch::object_path;
use crate::runtime::Context;
use serde_json::{Value, json};
use std::sync::Arc;

/// A pod's priority (`spec.priority`, set at admission from its PriorityClass).
pub fn priority(pod: &Value) -> i64 {
    pod["spec"]["priority"].as_i64().unwrap_or(0)
}

/// Where to make room, and whom it costs.
#[derive(Debug)]
pub struct Plan {
    pub node: String,
    pub victims: Vec<Arc<Value>>,
}

fn fits(pod: &Value, facts: &Facts, info: &NodeInfo) -> bool {
    matches!(filter_with(pod, facts, info), Verdict::Fits)
}

/// Victims chosen lately (by uid): they are going, even while the informer does not
/// show them terminating yet, so a retry of the same pod does not choose them again.
#[derive(Default)]
pub struct Chosen(std::collections::HashMap<String, std::time::Instant>);

impl Chosen {
    fn contains(&mut self, pod: &Value) -> bool {
        self.0
            .retain(|_, at| at.elapsed() < std::time::Duration::from_secs(120));
        pod["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| self.0.contains_key(u))
    }

    pub fn remember(&mut self, plan: &Plan) {
        for v in &plan.victims {
            if let Some(uid) = v["metadata"]["uid"].as_str() {
                self.0.insert(uid.to_string(), std::time::Instant::now());
            }
        }
    }
}

/// The cheapest way to make room for `pod`, if preempting lower-priority pods can.
pub fn plan(pod: &Value, nodes: &[NodeInfo], chosen: &mut Chosen) -> Option<Plan> {
    if pod["spec"]["preemptionPolicy"] == "Never" {
        return None;
    }
    let mine = priority(pod);
    let facts = Facts::of(pod);
    let mut best: Option<((i64, i64, usize, String), Plan)> = None;
    for info in nodes.iter().filter(|n| n.is_present()) {
        // lower-priority pods already terminating (earlier victims, say) are going
        // anyway: counted as gone, never chosen again
        let (going, mut lower): (Vec<_>, Vec<_>) = info
            .pod_entries()
            .filter(|(_, p)| priority(p) < mine)
            .map(|(k, p)| (k.clone(), p.clone()))
            .partition(|(_, p)| {
                !p["metadata"]["deletionTimestamp"].is_null() || chosen.contains(p)
            });
        if lower.is_empty() && going.is_empty() {
            continue;
        }
        let mut trial = info.clone();
        for (k, _) in going.iter().chain(&lower) {
            trial.remove(k);
        }
        if !fits(pod, &facts, &trial) {
            continue; // not even an empty node of lower pods would do
        }
        // put back the most important first; whoever no longer fits is a victim
        lower.sort_by(|(ka, a), (kb, b)| priority(b).cmp(&priority(a)).then(ka.cmp(kb)));
        let mut victims = Vec::new();
        for (k, p) in lower {
            trial.insert(k.clone(), p.clone());
            if !fits(pod, &facts, &trial) {
                trial.remove(&k);
                victims.push(p);
            }
        }
        if victims.is_empty() {
            return None; // room is being made already: wait for it
        }
        let highest = victims
            .iter()
            .map(|v| priority(v))
            .max()
            .unwrap_or(i64::MIN);
        let sum = victims.iter().map(|v| priority(v)).sum();
        let rank = (highest, sum, victims.len(), info.name().to_string());
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            let node = info.name().to_string();
            best = Some((rank, Plan { node, victims }));
        }
    }
    best.map(|(_, plan)| plan)
}

/// Carries the plan out: victims marked, told and deleted; the pod nominated.
pub async fn execute(cx: &Context, pod: &Value, plan: &Plan) {
    let pods = &crate::api::registry::PODS;
    let now = crate::api::meta::now_rfc3339();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    for v in &plan.victims {
        let path = object_path(
            pods,
            v["metadata"]["namespace"].as_str(),
            v["metadata"]["name"].as_str().unwrap_or(""),
        );
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{NAME}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": now,
        }]}});
        let _ = cx
            .client
            .call(
                http::Method::PATCH,
                &format!("{path}/status"),
                "application/strategic-merge-patch+json",
                Some(&condition),
            )
            .await;
        cx.events.emit(
            &with_kind(v),
            false,
            "Preempted",
            format!("Preempted by pod {uid} on node {}", plan.node),
            NAME,
        );
        tracing::info!(victim = %crate::client::watch::key_of(v), node = %plan.node, "preempting");
        let _ = cx
            .client
            .delete(
                &path,
                &json!({"preconditions": {"uid": v["metadata"]["uid"]}}),
            )
            .await;
    }
    let path = object_path(
        pods,
        pod["metadata"]["namespace"].as_str(),
        pod["metadata"]["name"].as_str().unwrap_or(""),
    );
    let _ = cx
        .client
        .call(
            http::Method::PATCH,
            &format!("{path}/status"),
            "application/merge-patch+json",
            Some(&json!({"status": {"nominatedNodeName": plan.node}})),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}))
    }

    fn pod(name: &str, cpu: &str, priority: i64) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"priority": priority, "containers": [{"name": "c",
                "resources": {"requests": {"cpu": cpu}}}]}}))
    }

    #[test]
    fn the_cheapest_victims_are_chosen_and_no_more_than_needed() {
        // a: one pod of priority 100 would have to go; b: two of priority 10 would do,
        // but only one of them is needed; c: only equal-priority pods
        let a = NodeInfo::new(node("a", "2"), vec![pod("a1", "2", 100)]);
        let b = NodeInfo::new(node("b", "2"), vec![pod("b1", "1", 10), pod("b2", "1", 10)]);
        let c = NodeInfo::new(node("c", "2"), vec![pod("c1", "2", 1000)]);
        let preemptor = pod("vip", "1", 1000);
        let plan = plan(
            &preemptor,
            &[a.clone(), b, c.clone()],
            &mut Chosen::default(),
        )
        .expect("a plan");
        assert_eq!(plan.node, "b");
        assert_eq!(plan.victims.len(), 1, "{plan:?}");
        // nothing of lower priority, or a pod that never preempts: no plan
        assert!(super::plan(&preemptor, &[c], &mut Chosen::default()).is_none());
        let mut never = (*preemptor).clone();
        never["spec"]["preemptionPolicy"] = json!("Never");
        assert!(super::plan(&never, std::slice::from_ref(&a), &mut Chosen::default()).is_none());
        // victims already chosen are not chosen twice
        let mut chosen = Chosen::default();
        let b = NodeInfo::new(node("b", "2"), vec![pod("b1", "2", 10)]);
        let mut with_uid = (*pod("b1", "2", 10)).clone();
        with_uid["metadata"]["uid"] = json!("u-b1");
        let b_uid = NodeInfo::new(node("b", "2"), vec![Arc::new(with_uid)]);
        let first = super::plan(&preemptor, std::slice::from_ref(&b_uid), &mut chosen).unwrap();
        chosen.remember(&first);
        assert!(super::plan(&preemptor, &[b_uid], &mut chosen).is_none());
        assert!(super::plan(&preemptor, &[b], &mut chosen).is_some());
        // an earlier victim still terminating: nobody else has to go
        let mut going = (*pod("a1", "2", 100)).clone();
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let a = NodeInfo::new(node("a", "2"), vec![Arc::new(going)]);
        assert!(super::plan(&preemptor, &[a], &mut Chosen::default()).is_none());
    }
}
