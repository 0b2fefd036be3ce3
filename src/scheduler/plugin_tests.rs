//! The filters and scores (`api::scheduling`) as the scheduler places pods with them.

use super::plugins::*;
use serde_json::Value;
use serde_json::json;
use std::sync::Arc;

fn node(name: &str, cpu: &str, taints: Value) -> NodeInfo {
    NodeInfo::new(
        Arc::new(
            json!({"metadata": {"name": name, "labels": {"zone": "a"}}, "spec": {"taints": taints},
                         "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"}}}),
        ),
        vec![],
    )
}

#[test]
fn reasons_are_counted_in_upstreams_words() {
    let pod =
        json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}});
    let nodes = vec![
        node("a", "1", json!([])),
        node(
            "b",
            "4",
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        ),
        node(
            "c",
            "4",
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        ),
    ];
    assert_eq!(
        super::place(&pod, &nodes, 0).unwrap_err().to_string(),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: db}. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
    );
    let tolerant = json!({"spec": {"containers": [{"name": "c"}], "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
                                    "nodeSelector": {"zone": "a"}}});
    assert!(super::place(&tolerant, &nodes, 0).is_ok());
    let elsewhere = json!({"spec": {"containers": [{"name": "c"}], "nodeSelector": {"zone": "b"}}});
    assert!(
        super::place(&elsewhere, &nodes, 0)
            .unwrap_err()
            .to_string()
            .contains("3 node(s) didn't match Pod's node affinity/selector")
    );
}

fn zoned(name: &str, zone: &str, pods: Vec<Value>) -> NodeInfo {
    NodeInfo::new(
        Arc::new(
            json!({"metadata": {"name": name, "labels": {"zone": zone, "kubernetes.io/hostname": name}},
                         "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"}}}),
        ),
        pods.into_iter().map(Arc::new).collect(),
    )
}

#[test]
fn pod_anti_affinity_and_topology_spread_steer_pods() {
    let web = |ns: &str| json!({"metadata": {"namespace": ns, "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}});
    let nodes = vec![
        zoned("a", "z1", vec![web("default"), web("default")]),
        zoned("b", "z2", vec![]),
    ];
    let apart = json!({"metadata": {"namespace": "default", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}],
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}});
    assert_eq!(super::place(&apart, &nodes, 0).unwrap(), "b");
    let spread = json!({"metadata": {"namespace": "default", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                       "labelSelector": {"matchLabels": {"app": "web"}}}]}});
    assert_eq!(super::place(&spread, &nodes, 0).unwrap(), "b");
    let only_a = vec![zoned("a", "z1", vec![web("default")])];
    assert!(
        super::place(&apart, &only_a, 0)
            .unwrap_err()
            .to_string()
            .contains("1 node(s) didn't match pod anti-affinity rules")
    );
    // affinity: with the web pods, or anywhere for the first of a group
    let near = json!({"metadata": {"namespace": "default", "labels": {"app": "cache"}}, "spec": {"containers": [{"name": "c"}],
        "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}});
    assert_eq!(super::place(&near, &nodes, 0).unwrap(), "a");
    let other_ns = vec![
        zoned("a", "z1", vec![web("other")]),
        zoned("b", "z2", vec![]),
    ];
    assert!(
        super::place(&near, &other_ns, 0)
            .unwrap_err()
            .to_string()
            .contains("didn't match pod affinity rules")
    );
}

#[test]
fn preferred_rules_and_soft_spread_steer_among_feasible_nodes() {
    let web = json!({"metadata": {"namespace": "default", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}});
    let nodes = vec![
        zoned("a", "z1", vec![web.clone(), web.clone()]),
        zoned("b", "z2", vec![]),
    ];
    let preferring = |kind: &str| {
        json!({"metadata": {"namespace": "default", "labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}],
            "affinity": {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm":
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}}]}}}})
    };
    // b is emptier, but preferred affinity outweighs that; anti-affinity agrees with it
    assert_eq!(
        super::place(&preferring("podAffinity"), &nodes, 0).unwrap(),
        "a"
    );
    assert_eq!(
        super::place(&preferring("podAntiAffinity"), &nodes, 0).unwrap(),
        "b"
    );
    // ScheduleAnyway spread: the zone with fewer matching pods, whatever the turn
    let soft = json!({"metadata": {"namespace": "default", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app": "web"}}}]}});
    // equally loaded, so only the spread score tells them apart
    let other = json!({"metadata": {"namespace": "default", "labels": {"app": "db"}}, "spec": {"containers": [{"name": "c"}]}});
    let even = vec![
        zoned("a", "z1", vec![web.clone()]),
        zoned("b", "z2", vec![other]),
    ];
    for turn in 0..2 {
        assert_eq!(super::place(&soft, &even, turn).unwrap(), "b");
    }
    // a PreferNoSchedule taint is avoided when another node will do
    let tainted = NodeInfo::new(
        Arc::new(
            json!({"metadata": {"name": "t"}, "spec": {"taints": [{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]},
                        "status": {"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"}}}),
        ),
        vec![],
    );
    let plain = node("p", "4", json!([]));
    let pod = json!({"spec": {"containers": [{"name": "c"}]}});
    let both = vec![tainted, plain];
    for turn in 0..2 {
        assert_eq!(super::place(&pod, &both, turn).unwrap(), "p");
    }
}

#[test]
fn emptier_nodes_score_higher() {
    let pod = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}});
    let busy = NodeInfo::new(
        Arc::new(
            json!({"metadata": {"name": "busy"}, "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"}}}),
        ),
        vec![Arc::new(pod.clone()), Arc::new(pod.clone())],
    );
    let idle = node("idle", "4", json!([]));
    let facts = Facts::of(&pod);
    assert!(node_scores(&pod, &facts, &idle).0 > node_scores(&pod, &facts, &busy).0);
}
