//! What the proxy needs to know of Services and EndpointSlices, and nothing more: one
//! [`ServicePort`] per (service, port), with its endpoints sorted into the sets
//! upstream's kube-proxy routes to (`CategorizeEndpoints`). Pure; no I/O.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The slice label naming the service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

/// One endpoint of one service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The endpoint's address.
    pub ip: Ipv4Addr,
    /// The target port traffic goes to.
    pub port: u16,
    /// The slice's `ready` condition (unset: true).
    pub ready: bool,
    /// The slice's `serving` condition (unset: as `ready`).
    pub serving: bool,
    /// The slice's `terminating` condition (unset: false).
    pub terminating: bool,
    /// On this node (`nodeName` is ours).
    pub local: bool,
}

/// One port of one service, as the proxy routes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `<namespace>/<name>/<protocol>/<port name>`, upstream's ServicePortName.
    pub key: String,
    /// `tcp`, `udp` or `sctp` (nft's names).
    pub protocol: &'static str,
    /// The service's cluster IPs (IPv4 only).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// The service port.
    pub port: u16,
    /// The node port, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// The ingress IPs in a LoadBalancer service's status.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP` with its timeout in seconds.
    pub affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local` on a NodePort or LoadBalancer service: external
    /// traffic goes to this node's endpoints only.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`: cluster traffic goes to this node's endpoints only.
    pub internal_local: bool,
    /// All its endpoints, in (ip, port) order.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// Endpoints for traffic that may go anywhere in the cluster: the ready ones, or
    /// when none is ready the serving ones that are terminating (upstream's
    /// ProxyTerminatingEndpoints).
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter())
    }

    /// The same choice among this node's endpoints only.
    pub fn local_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter().filter(|e| e.local))
    }

    /// Whether traffic reaches it other than by its cluster IP.
    pub fn has_external(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

fn usable<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).collect()
}

fn ipv4s<'a>(values: impl Iterator<Item = &'a Value>) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = values.filter_map(|v| v.as_str()?.parse().ok()).collect();
    ips.sort();
    ips.dedup();
    ips
}

fn protocol(p: &str) -> Option<&'static str> {
    match p {
        "" | "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// The ports of `service` with their endpoints from `slices` (the service's own
/// EndpointSlices). Services the proxy does not route get none: headless,
/// ExternalName, without a cluster IP, or whose cluster IP is `skip_ip` (the cluster
/// DNS address, answered on each node itself).
pub fn service_ports(
    service: &Value,
    slices: &[&Value],
    node: &str,
    skip_ip: Option<Ipv4Addr>,
) -> Vec<ServicePort> {
    let spec = &service["spec"];
    if spec["type"] == "ExternalName" {
        return Vec::new();
    }
    let mut cluster_ips = ipv4s(spec["clusterIPs"].as_array().into_iter().flatten());
    if cluster_ips.is_empty() {
        cluster_ips = ipv4s(
            spec["clusterIP"]
                .as_str()
                .map(|_| &spec["clusterIP"])
                .into_iter(),
        );
    }
    if cluster_ips.is_empty() || skip_ip.is_some_and(|s| cluster_ips.contains(&s)) {
        return Vec::new();
    }
    let ns = service["metadata"]["namespace"].as_str().unwrap_or("");
    let name = service["metadata"]["name"].as_str().unwrap_or("");
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    let external_ips = ipv4s(spec["externalIPs"].as_array().into_iter().flatten());
    let load_balancer_ips = if kind == "LoadBalancer" {
        ipv4s(
            service["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| &i["ip"]),
        )
    } else {
        Vec::new()
    };
    let affinity_seconds = (spec["sessionAffinity"] == "ClientIP").then(|| {
        spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
            .as_u64()
            .map_or(DEFAULT_AFFINITY_SECONDS, |s| s.clamp(1, 86400) as u32)
    });
    let external_policy_applies = kind == "NodePort" || kind == "LoadBalancer";
    let mut out = Vec::new();
    for p in spec["ports"].as_array().into_iter().flatten() {
        let Some(proto) = protocol(p["protocol"].as_str().unwrap_or("TCP")) else {
            continue;
        };
        let Some(port) = p["port"].as_u64().and_then(|v| u16::try_from(v).ok()) else {
            continue;
        };
        let port_name = p["name"].as_str().unwrap_or("");
        let node_port = if external_policy_applies {
            p["nodePort"]
                .as_u64()
                .and_then(|v| u16::try_from(v).ok())
                .filter(|v| *v > 0)
        } else {
            None
        };
        let mut endpoints = BTreeMap::new();
        for slice in slices {
            if slice["addressType"] != "IPv4" {
                continue;
            }
            let Some(target) = slice["ports"].as_array().into_iter().flatten().find(|sp| {
                sp["name"].as_str().unwrap_or("") == port_name
                    && protocol(sp["protocol"].as_str().unwrap_or("TCP")) == Some(proto)
            }) else {
                continue;
            };
            let Some(target_port) = target["port"].as_u64().and_then(|v| u16::try_from(v).ok())
            else {
                continue;
            };
            for ep in slice["endpoints"].as_array().into_iter().flatten() {
                let c = &ep["conditions"];
                // upstream: a nil `ready` means ready; nil serving follows ready
                let ready = c["ready"].as_bool().unwrap_or(true);
                let serving = c["serving"].as_bool().unwrap_or(ready);
                let terminating = c["terminating"].as_bool().unwrap_or(false);
                let local = ep["nodeName"].as_str() == Some(node);
                for ip in ipv4s(ep["addresses"].as_array().into_iter().flatten().take(1)) {
                    endpoints.insert(
                        (ip, target_port),
                        Endpoint {
                            ip,
                            port: target_port,
                            ready,
                            serving,
                            terminating,
                            local,
                        },
                    );
                }
            }
        }
        out.push(ServicePort {
            key: format!("{ns}/{name}/{proto}/{port_name}"),
            protocol: proto,
            cluster_ips: cluster_ips.clone(),
            port,
            node_port,
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            affinity_seconds,
            external_local: external_policy_applies && spec["externalTrafficPolicy"] == "Local",
            internal_local: spec["internalTrafficPolicy"] == "Local",
            endpoints: endpoints.into_values().collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Value {
        json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {
                "type": "NodePort", "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}
                ],
                "externalTrafficPolicy": "Local",
                "sessionAffinity": "ClientIP"
            }
        })
    }

    fn slice() -> Value {
        json!({
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "n1"},
                {"addresses": ["10.42.1.7"], "conditions": {"ready": true}, "nodeName": "n2"},
                {"addresses": ["10.42.0.9"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "n1"}
            ]
        })
    }

    #[test]
    fn ports_get_their_slice_ports_and_policies() {
        let s = slice();
        let ports = service_ports(&svc(), &[&s], "n1", None);
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.key, "default/web/tcp/http");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.affinity_seconds, Some(DEFAULT_AFFINITY_SECONDS));
        assert!(http.external_local && !http.internal_local);
        assert_eq!(http.endpoints.len(), 3);
        let cluster: Vec<String> = http
            .cluster_endpoints()
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        assert_eq!(cluster, ["10.42.0.5", "10.42.1.7"]);
        let local: Vec<String> = http
            .local_endpoints()
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        assert_eq!(local, ["10.42.0.5"]);
        // the UDP port has no slice port of its name: no endpoints
        assert_eq!(ports[1].protocol, "udp");
        assert!(ports[1].endpoints.is_empty());
    }

    #[test]
    fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
        let s = json!({
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.42.0.9"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.42.0.10"], "conditions": {"ready": false, "serving": false, "terminating": true}}
            ]
        });
        let ports = service_ports(&svc(), &[&s], "n1", None);
        let cluster: Vec<String> = ports[0]
            .cluster_endpoints()
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        assert_eq!(cluster, ["10.42.0.9"]);
    }

    #[test]
    fn headless_external_name_and_the_dns_address_are_not_routed() {
        let mut headless = svc();
        headless["spec"]["clusterIP"] = json!("None");
        headless["spec"]["clusterIPs"] = json!(["None"]);
        assert!(service_ports(&headless, &[], "n1", None).is_empty());
        let mut ext = svc();
        ext["spec"]["type"] = json!("ExternalName");
        assert!(service_ports(&ext, &[], "n1", None).is_empty());
        assert!(service_ports(&svc(), &[], "n1", Some("10.43.0.20".parse().unwrap())).is_empty());
    }

    #[test]
    fn load_balancer_ingress_and_external_ips_are_read() {
        let mut lb = svc();
        lb["spec"]["type"] = json!("LoadBalancer");
        lb["spec"]["externalIPs"] = json!(["192.0.2.9"]);
        lb["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": "10.250.0.2"}, {"hostname": "x"}]}});
        let ports = service_ports(&lb, &[], "n1", None);
        assert_eq!(
            ports[0].load_balancer_ips,
            ["10.250.0.2".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            ports[0].external_ips,
            ["192.0.2.9".parse::<Ipv4Addr>().unwrap()]
        );
        // ClusterIP services keep no node port and no external policy
        let mut cip = svc();
        cip["spec"]["type"] = json!("ClusterIP");
        let ports = service_ports(&cip, &[], "n1", None);
        assert_eq!(ports[0].node_port, None);
        assert!(!ports[0].external_local);
    }
}
