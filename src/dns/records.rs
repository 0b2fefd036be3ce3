//! Cluster DNS records (the Kubernetes DNS specification, as CoreDNS' kubernetes
//! plugin answers it): services, headless services and their endpoints' names, SRV
//! for named ports, pod A records, reverse lookups of cluster IPs. Pure: it reads the
//! cluster through [`ClusterView`] (the agent's shared informer caches).

use super::wire::{self, RData, Record};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// TTL of cluster answers (CoreDNS' kubernetes plugin default).
pub const TTL: u32 = 5;

/// What the resolver reads of the cluster.
pub trait ClusterView {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Value>>;
    /// The EndpointSlices of a service.
    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<Value>>;
    /// The service whose cluster IP is `ip`, for reverse lookups.
    fn service_by_ip(&self, ip: IpAddr) -> Option<Arc<Value>>;
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Answer it from the cluster (authoritative).
    Answer {
        rcode: u8,
        answers: Vec<Record>,
        additional: Vec<Record>,
        /// The zone's SOA goes in the authority section of negative answers.
        negative: bool,
    },
    /// Not the cluster's: ask the node's upstream resolvers.
    Forward,
}

fn answer(answers: Vec<Record>, additional: Vec<Record>) -> Resolution {
    let negative = answers.is_empty();
    Resolution::Answer {
        rcode: wire::RCODE_NOERROR,
        answers,
        additional,
        negative,
    }
}

fn nxdomain() -> Resolution {
    Resolution::Answer {
        rcode: wire::RCODE_NXDOMAIN,
        answers: vec![],
        additional: vec![],
        negative: true,
    }
}

/// The zone's SOA record (negative answers carry it, so resolvers cache them briefly).
pub fn soa(domain: &str) -> Record {
    Record {
        name: domain.to_string(),
        ttl: TTL,
        data: RData::Soa {
            mname: format!("ns.dns.{domain}"),
            rname: format!("hostmaster.{domain}"),
            serial: 1,
            refresh: 7200,
            retry: 1800,
            expire: 86400,
            minimum: TTL,
        },
    }
}

fn ready(ep: &Value) -> bool {
    ep["conditions"]["ready"].as_bool() != Some(false)
}

/// The name of a headless endpoint: its hostname, else its address with dashes.
fn endpoint_label(ep: &Value, ip: &str) -> String {
    ep["hostname"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| ip.replace(['.', ':'], "-"))
}

fn record(name: &str, data: RData) -> Record {
    Record {
        name: name.to_string(),
        ttl: TTL,
        data,
    }
}

fn address_record(name: &str, ip: &str, qtype: u16) -> Option<Record> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if matches!(qtype, wire::TYPE_A | wire::TYPE_ANY) => {
            Some(record(name, RData::A(v4)))
        }
        IpAddr::V6(v6) if matches!(qtype, wire::TYPE_AAAA | wire::TYPE_ANY) => {
            Some(record(name, RData::Aaaa(v6)))
        }
        _ => None,
    }
}

/// Ready endpoints of a service: (label, address, the endpoint object).
fn endpoints(view: &dyn ClusterView, ns: &str, svc: &str) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for s in view.slices(ns, svc) {
        for ep in s["endpoints"].as_array().into_iter().flatten() {
            if !ready(ep) {
                continue;
            }
            for ip in ep["addresses"].as_array().into_iter().flatten() {
                if let Some(ip) = ip.as_str() {
                    out.push((endpoint_label(ep, ip), ip.to_string(), ep.clone()));
                }
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.dedup_by(|a, b| a.1 == b.1);
    out
}

fn is_headless(svc: &Value) -> bool {
    svc["spec"]["clusterIP"].as_str() == Some("None")
}

/// Resolves `name` (lower case, no trailing dot) of type `qtype` in cluster `domain`.
pub fn resolve(view: &dyn ClusterView, domain: &str, name: &str, qtype: u16) -> Resolution {
    if let Some(r) = reverse(view, domain, name, qtype) {
        return r;
    }
    let rel = if name == domain {
        ""
    } else if let Some(rel) = name.strip_suffix(domain).and_then(|r| r.strip_suffix('.')) {
        rel
    } else {
        return Resolution::Forward;
    };
    let labels: Vec<&str> = if rel.is_empty() {
        vec![]
    } else {
        rel.split('.').collect()
    };
    match labels.as_slice() {
        // the zone itself
        [] => {
            if qtype == wire::TYPE_SOA {
                answer(vec![soa(domain)], vec![])
            } else {
                answer(vec![], vec![])
            }
        }
        ["svc"] | ["pod"] | [_, "svc"] | [_, "pod"] => answer(vec![], vec![]),
        [svc, ns, "svc"] => service(view, name, ns, svc, qtype),
        [endpoint, svc, ns, "svc"] => {
            let Some(s) = view.service(ns, svc) else {
                return nxdomain();
            };
            if !is_headless(&s) {
                return nxdomain();
            }
            let named: Vec<String> = endpoints(view, ns, svc)
                .into_iter()
                .filter(|(label, _, _)| label == endpoint)
                .map(|(_, ip, _)| ip)
                .collect();
            let exists = !named.is_empty();
            let found: Vec<Record> = named
                .iter()
                .filter_map(|ip| address_record(name, ip, qtype))
                .collect();
            if exists {
                answer(found, vec![])
            } else {
                nxdomain()
            }
        }
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            srv(view, domain, name, ns, svc, &port[1..], &proto[1..], qtype)
        }
        // pod A records: <a-b-c-d>.<ns>.pod.<domain> (CoreDNS' "pods insecure")
        [dashed, _ns, "pod"] => {
            let ip = dashed.replace('-', ".");
            if let Ok(v4) = ip.parse::<Ipv4Addr>() {
                let a = matches!(qtype, wire::TYPE_A | wire::TYPE_ANY)
                    .then(|| record(name, RData::A(v4)));
                return answer(a.into_iter().collect(), vec![]);
            }
            let ip6 = dashed.replace('-', ":");
            if let Ok(v6) = ip6.parse::<Ipv6Addr>() {
                let a = matches!(qtype, wire::TYPE_AAAA | wire::TYPE_ANY)
                    .then(|| record(name, RData::Aaaa(v6)));
                return answer(a.into_iter().collect(), vec![]);
            }
            nxdomain()
        }
        _ => nxdomain(),
    }
}

fn service(view: &dyn ClusterView, name: &str, ns: &str, svc: &str, qtype: u16) -> Resolution {
    let Some(s) = view.service(ns, svc) else {
        return nxdomain();
    };
    if s["spec"]["type"] == "ExternalName" {
        let target = s["spec"]["externalName"].as_str().unwrap_or("").to_string();
        return answer(vec![record(name, RData::Cname(target))], vec![]);
    }
    if qtype == wire::TYPE_SRV {
        let mut answers = Vec::new();
        let mut extra = Vec::new();
        for p in s["spec"]["ports"].as_array().into_iter().flatten() {
            if p["name"].as_str().is_some_and(|n| !n.is_empty()) {
                answers.push(record(
                    name,
                    RData::Srv {
                        priority: 0,
                        weight: 100,
                        port: p["port"].as_u64().unwrap_or(0) as u16,
                        target: name.to_string(),
                    },
                ));
            }
        }
        if !answers.is_empty() {
            extra.extend(
                cluster_ips(&s)
                    .iter()
                    .filter_map(|ip| address_record(name, ip, wire::TYPE_ANY)),
            );
        }
        return answer(answers, extra);
    }
    let ips: Vec<String> = if is_headless(&s) {
        endpoints(view, ns, svc)
            .into_iter()
            .map(|(_, ip, _)| ip)
            .collect()
    } else {
        cluster_ips(&s)
    };
    answer(
        ips.iter()
            .filter_map(|ip| address_record(name, ip, qtype))
            .collect(),
        vec![],
    )
}

fn cluster_ips(s: &Value) -> Vec<String> {
    let mut ips: Vec<String> = s["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if ips.is_empty() {
        ips.extend(s["spec"]["clusterIP"].as_str().map(str::to_string));
    }
    ips.retain(|ip| ip != "None" && !ip.is_empty());
    ips
}

#[allow(clippy::too_many_arguments)]
fn srv(
    view: &dyn ClusterView,
    domain: &str,
    name: &str,
    ns: &str,
    svc: &str,
    port: &str,
    proto: &str,
    qtype: u16,
) -> Resolution {
    let Some(s) = view.service(ns, svc) else {
        return nxdomain();
    };
    let svc_name = format!("{svc}.{ns}.svc.{domain}");
    let found = s["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["name"].as_str() == Some(port)
                && p["protocol"]
                    .as_str()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(proto)
        });
    let Some(p) = found else { return nxdomain() };
    if !matches!(qtype, wire::TYPE_SRV | wire::TYPE_ANY) {
        return answer(vec![], vec![]);
    }
    if !is_headless(&s) {
        let srv = record(
            name,
            RData::Srv {
                priority: 0,
                weight: 100,
                port: p["port"].as_u64().unwrap_or(0) as u16,
                target: svc_name.clone(),
            },
        );
        let extra = cluster_ips(&s)
            .iter()
            .filter_map(|ip| address_record(&svc_name, ip, wire::TYPE_ANY))
            .collect();
        return answer(vec![srv], extra);
    }
    // headless: one SRV per ready endpoint, at the endpoint's port of that name
    let mut answers = Vec::new();
    let mut extra = Vec::new();
    for slice in view.slices(ns, svc) {
        let port_num = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|sp| sp["name"].as_str() == Some(port))
            .and_then(|sp| sp["port"].as_u64());
        let Some(port_num) = port_num else { continue };
        for ep in slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| ready(e))
        {
            for ip in ep["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
            {
                let target = format!("{}.{svc_name}", endpoint_label(ep, ip));
                answers.push(record(
                    name,
                    RData::Srv {
                        priority: 0,
                        weight: 100,
                        port: port_num as u16,
                        target: target.clone(),
                    },
                ));
                extra.extend(address_record(&target, ip, wire::TYPE_ANY));
            }
        }
    }
    answer(answers, extra)
}

/// PTR for cluster IPs of services (`<d>.<c>.<b>.<a>.in-addr.arpa`).
fn reverse(view: &dyn ClusterView, domain: &str, name: &str, qtype: u16) -> Option<Resolution> {
    let rev = name.strip_suffix(".in-addr.arpa")?;
    let parts: Vec<u8> = rev
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if parts.len() != 4 {
        return None;
    }
    let ip = Ipv4Addr::new(parts[3], parts[2], parts[1], parts[0]);
    let s = view.service_by_ip(IpAddr::V4(ip))?;
    let target = format!(
        "{}.{}.svc.{domain}",
        s["metadata"]["name"].as_str().unwrap_or(""),
        s["metadata"]["namespace"].as_str().unwrap_or("")
    );
    Some(if matches!(qtype, wire::TYPE_PTR | wire::TYPE_ANY) {
        answer(vec![record(name, RData::Ptr(target))], vec![])
    } else {
        answer(vec![], vec![])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct View {
        services: BTreeMap<String, Arc<Value>>,
        slices: BTreeMap<String, Vec<Arc<Value>>>,
    }

    impl ClusterView for View {
        fn service(&self, ns: &str, name: &str) -> Option<Arc<Value>> {
            self.services.get(&format!("{ns}/{name}")).cloned()
        }
        fn slices(&self, ns: &str, svc: &str) -> Vec<Arc<Value>> {
            self.slices
                .get(&format!("{ns}/{svc}"))
                .cloned()
                .unwrap_or_default()
        }
        fn service_by_ip(&self, ip: IpAddr) -> Option<Arc<Value>> {
            self.services
                .values()
                .find(|s| s["spec"]["clusterIP"].as_str() == Some(&ip.to_string()))
                .cloned()
        }
    }

    fn view() -> View {
        let mut v = View::default();
        v.services.insert("default/mysql".into(), Arc::new(json!({"metadata": {"name": "mysql", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.50", "clusterIPs": ["10.43.0.50"], "ports": [{"name": "sql", "port": 3306, "protocol": "TCP"}, {"port": 9}]}})));
        v.services.insert("default/db".into(), Arc::new(json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"name": "sql", "port": 3306, "protocol": "TCP"}]}})));
        v.slices.insert("default/db".into(), vec![Arc::new(json!({"ports": [{"name": "sql", "port": 3307, "protocol": "TCP"}], "endpoints": [
            {"addresses": ["10.42.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.1.8"], "conditions": {"ready": true}},
            {"addresses": ["10.42.1.9"], "hostname": "db-2", "conditions": {"ready": false}},
        ]}))]);
        v.services.insert(
            "default/ext".into(),
            Arc::new(json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "db.example.org"}})),
        );
        v
    }

    fn records(r: Resolution) -> (u8, Vec<RData>, Vec<RData>) {
        match r {
            Resolution::Answer {
                rcode,
                answers,
                additional,
                ..
            } => (
                rcode,
                answers.into_iter().map(|r| r.data).collect(),
                additional.into_iter().map(|r| r.data).collect(),
            ),
            Resolution::Forward => panic!("forwarded"),
        }
    }

    const D: &str = "cluster.local";

    #[test]
    fn services_resolve_to_cluster_ips_and_unknown_names_are_nxdomain() {
        let v = view();
        let (rc, a, _) = records(resolve(
            &v,
            D,
            "mysql.default.svc.cluster.local",
            wire::TYPE_A,
        ));
        assert_eq!((rc, a), (0, vec![RData::A("10.43.0.50".parse().unwrap())]));
        // no IPv6 address: the name exists, with no AAAA
        let (rc, a, _) = records(resolve(
            &v,
            D,
            "mysql.default.svc.cluster.local",
            wire::TYPE_AAAA,
        ));
        assert_eq!((rc, a.len()), (0, 0));
        // the search path's first tries must fail fast, not be forwarded
        for n in [
            "mysql.default.default.svc.cluster.local",
            "nope.default.svc.cluster.local",
            "a.b.c.d.e.f.cluster.local",
        ] {
            assert_eq!(
                records(resolve(&v, D, n, wire::TYPE_A)).0,
                wire::RCODE_NXDOMAIN,
                "{n}"
            );
        }
        assert_eq!(
            resolve(&v, D, "example.org", wire::TYPE_A),
            Resolution::Forward
        );
        assert_eq!(
            resolve(&v, D, "cluster.local.example.org", wire::TYPE_A),
            Resolution::Forward
        );
        let (_, a, _) = records(resolve(
            &v,
            D,
            "ext.default.svc.cluster.local",
            wire::TYPE_A,
        ));
        assert_eq!(a, vec![RData::Cname("db.example.org".into())]);
    }

    #[test]
    fn headless_services_name_their_ready_endpoints() {
        let v = view();
        let (_, a, _) = records(resolve(&v, D, "db.default.svc.cluster.local", wire::TYPE_A));
        assert_eq!(
            a,
            vec![
                RData::A("10.42.0.7".parse().unwrap()),
                RData::A("10.42.1.8".parse().unwrap())
            ]
        );
        let (_, a, _) = records(resolve(
            &v,
            D,
            "db-0.db.default.svc.cluster.local",
            wire::TYPE_A,
        ));
        assert_eq!(a, vec![RData::A("10.42.0.7".parse().unwrap())]);
        let (_, a, _) = records(resolve(
            &v,
            D,
            "10-42-1-8.db.default.svc.cluster.local",
            wire::TYPE_A,
        ));
        assert_eq!(a, vec![RData::A("10.42.1.8".parse().unwrap())]);
        // not ready: not named
        assert_eq!(
            records(resolve(
                &v,
                D,
                "db-2.db.default.svc.cluster.local",
                wire::TYPE_A
            ))
            .0,
            wire::RCODE_NXDOMAIN
        );
        // endpoint names exist only under headless services
        assert_eq!(
            records(resolve(
                &v,
                D,
                "db-0.mysql.default.svc.cluster.local",
                wire::TYPE_A
            ))
            .0,
            wire::RCODE_NXDOMAIN
        );
    }

    #[test]
    fn srv_for_named_ports() {
        let v = view();
        let (_, a, extra) = records(resolve(
            &v,
            D,
            "_sql._tcp.mysql.default.svc.cluster.local",
            wire::TYPE_SRV,
        ));
        assert_eq!(
            a,
            vec![RData::Srv {
                priority: 0,
                weight: 100,
                port: 3306,
                target: "mysql.default.svc.cluster.local".into()
            }]
        );
        assert_eq!(extra, vec![RData::A("10.43.0.50".parse().unwrap())]);
        let (_, a, _) = records(resolve(
            &v,
            D,
            "_sql._tcp.db.default.svc.cluster.local",
            wire::TYPE_SRV,
        ));
        assert_eq!(a.len(), 2);
        assert!(a.contains(&RData::Srv {
            priority: 0,
            weight: 100,
            port: 3307,
            target: "db-0.db.default.svc.cluster.local".into()
        }));
        assert_eq!(
            records(resolve(
                &v,
                D,
                "_sql._udp.mysql.default.svc.cluster.local",
                wire::TYPE_SRV
            ))
            .0,
            wire::RCODE_NXDOMAIN
        );
    }

    #[test]
    fn pods_and_reverse_lookups() {
        let v = view();
        let (_, a, _) = records(resolve(
            &v,
            D,
            "10-42-0-5.default.pod.cluster.local",
            wire::TYPE_A,
        ));
        assert_eq!(a, vec![RData::A("10.42.0.5".parse().unwrap())]);
        let (_, a, _) = records(resolve(&v, D, "50.0.43.10.in-addr.arpa", wire::TYPE_PTR));
        assert_eq!(
            a,
            vec![RData::Ptr("mysql.default.svc.cluster.local".into())]
        );
        // a reverse name that is no service's is the upstream's
        assert_eq!(
            resolve(&v, D, "1.0.0.127.in-addr.arpa", wire::TYPE_PTR),
            Resolution::Forward
        );
        let (rc, a, _) = records(resolve(&v, D, "cluster.local", wire::TYPE_SOA));
        assert_eq!((rc, a.len()), (0, 1));
    }
}
