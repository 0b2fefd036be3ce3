//! ServiceLB, as k3s' built-in load balancer but without its `svclb-*` pods: a
//! `type: LoadBalancer` Service (without a `loadBalancerClass`) gets the addresses of
//! the cluster's Ready nodes as `status.loadBalancer.ingress` — their ExternalIPs
//! where a node has one, else their InternalIPs — and every node's proxy forwards
//! traffic to those addresses on the service's ports. When some nodes carry
//! `svccontroller.skua.io/enablelb=true`, only those serve. As with k3s, a port (with
//! its protocol) serves one service: a later service asking for a taken port stays
//! `<pending>` until the port is free.

use super::Context;
use crate::client::watch::object_path;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Whom ServiceLB acts as: upstream's service (load balancer) controller, whose
/// role grants exactly what it does (read services and nodes, write service status).
pub const IDENTITY: &str = "service-controller";

/// The node label that narrows ServiceLB to some nodes (k3s' name, skua's domain).
pub const ENABLE_LABEL: &str = "svccontroller.skua.io/enablelb";

fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The addresses load balancers answer on: per serving node, its ExternalIPs, else
/// its InternalIPs.
pub fn ingress_ips(nodes: &[Arc<Value>]) -> Vec<String> {
    let labelled = nodes
        .iter()
        .any(|n| n["metadata"]["labels"][ENABLE_LABEL] == "true");
    let mut ips = BTreeSet::new();
    for n in nodes {
        if !node_ready(n) || (labelled && n["metadata"]["labels"][ENABLE_LABEL] != "true") {
            continue;
        }
        let addrs = n["status"]["addresses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let of = |t: &str| -> Vec<String> {
            addrs
                .iter()
                .filter(|a| a["type"] == t)
                .filter_map(|a| a["address"].as_str().map(String::from))
                .collect()
        };
        let external = of("ExternalIP");
        ips.extend(if external.is_empty() {
            of("InternalIP")
        } else {
            external
        });
    }
    ips.into_iter().collect()
}

fn served(svc: &Value) -> bool {
    svc["spec"]["type"] == "LoadBalancer" && svc["spec"]["loadBalancerClass"].is_null()
}

fn ports(svc: &Value) -> Vec<(String, u64)> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
                p["port"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The ingress each service should have: oldest services claim their ports first.
pub fn assign(services: &[Arc<Value>], ips: &[String]) -> HashMap<String, Vec<String>> {
    let mut lbs: Vec<&Arc<Value>> = services.iter().filter(|s| served(s)).collect();
    lbs.sort_by_key(|s| {
        (
            s["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            crate::client::watch::key_of(s),
        )
    });
    let mut taken: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut out = HashMap::new();
    for s in lbs {
        let wanted = ports(s);
        let free = wanted.iter().all(|p| !taken.contains(p));
        if free {
            taken.extend(wanted);
        }
        out.insert(
            crate::client::watch::key_of(s),
            if free { ips.to_vec() } else { Vec::new() },
        );
    }
    out
}

pub async fn run(cx: Arc<Context>) {
    let services = cx.informer(&crate::api::registry::SERVICES);
    let nodes = cx.informer(&crate::api::registry::NODES);
    let (mut a, mut b) = (services.subscribe(), nodes.subscribe());
    services.synced().await;
    nodes.synced().await;
    loop {
        let all = services.list(None);
        let ips = ingress_ips(&nodes.list(None));
        let wanted = assign(&all, &ips);
        for svc in &all {
            let key = crate::client::watch::key_of(svc);
            let current = &svc["status"]["loadBalancer"];
            let next = match wanted.get(&key) {
                Some(ips) if !ips.is_empty() => {
                    json!({"ingress": ips.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect::<Vec<_>>()})
                }
                Some(_) => json!({}),
                // no longer a load balancer of ours: what we set goes
                None if current["ingress"].is_array() && !served(svc) => json!({}),
                None => continue,
            };
            if current == &next || (current.is_null() && next == json!({})) {
                continue;
            }
            let mut updated = (**svc).clone();
            updated["status"]["loadBalancer"] = next;
            let path = format!(
                "{}/status",
                object_path(
                    services.res,
                    svc["metadata"]["namespace"].as_str(),
                    svc["metadata"]["name"].as_str().unwrap_or("")
                )
            );
            if let Err(e) = cx.client.update(&path, &updated).await {
                tracing::debug!(service = %key, error = %e, "servicelb: status update failed; retrying");
            }
        }
        super::next_pass(&mut a, &mut b).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, addrs: &[(&str, &str)], lb: Option<&str>) -> Arc<Value> {
        let mut n = json!({"metadata": {"name": name, "labels": {}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                       "addresses": addrs.iter().map(|(t, a)| json!({"type": t, "address": a})).collect::<Vec<_>>()}});
        if let Some(v) = lb {
            n["metadata"]["labels"][ENABLE_LABEL] = json!(v);
        }
        Arc::new(n)
    }

    fn lb(name: &str, created: &str, port: u64) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"namespace": "default", "name": name, "creationTimestamp": created},
            "spec": {"type": "LoadBalancer", "ports": [{"port": port, "protocol": "TCP"}]}}),
        )
    }

    #[test]
    fn ready_nodes_answer_with_external_ips_first() {
        let nodes = [
            node("a", true, &[("InternalIP", "10.250.0.2")], None),
            node(
                "b",
                true,
                &[("InternalIP", "10.250.0.3"), ("ExternalIP", "192.0.2.3")],
                None,
            ),
            node("c", false, &[("InternalIP", "10.250.0.4")], None),
        ];
        assert_eq!(ingress_ips(&nodes), ["10.250.0.2", "192.0.2.3"]);
        // labelled nodes narrow the set
        let nodes = [
            node("a", true, &[("InternalIP", "10.250.0.2")], Some("true")),
            node("b", true, &[("InternalIP", "10.250.0.3")], None),
        ];
        assert_eq!(ingress_ips(&nodes), ["10.250.0.2"]);
    }

    #[test]
    fn a_taken_port_leaves_the_later_service_pending() {
        let ips = vec!["10.250.0.2".to_string()];
        let mut classed = (*lb("classed", "2026-01-01T00:00:03Z", 81)).clone();
        classed["spec"]["loadBalancerClass"] = json!("example.com/lb");
        let got = assign(
            &[
                lb("second", "2026-01-01T00:00:02Z", 80),
                lb("first", "2026-01-01T00:00:01Z", 80),
                lb("other", "2026-01-01T00:00:02Z", 8080),
                Arc::new(classed),
            ],
            &ips,
        );
        assert_eq!(got["default/first"], ips);
        assert!(got["default/second"].is_empty());
        assert_eq!(got["default/other"], ips);
        assert!(!got.contains_key("default/classed"));
    }
}
