//! NetworkPolicy as nftables rules for the pods of one node (pure: objects in, an
//! `nft -f` script out). Upstream's semantics: a pod selected by a policy with the
//! Ingress (Egress) type is isolated in that direction and takes only what the union
//! of those policies' rules allow; replies to allowed connections pass; traffic from
//! the pod's own node and a pod to itself always pass. Rules match pods (by
//! podSelector, namespaceSelector or both), ipBlocks with their exceptions, and ports
//! (numbers, ranges with endPort, or named container ports).
//!
//! The table, `ip skua-policy`, hooks `forward`: every packet to or from a pod passes
//! it (bridged traffic too, with br_netfilter), after service DNAT. The first packet
//! of a connection goes through the source pod's egress chain and the destination
//! pod's ingress chain, chosen by verdict maps keyed by pod address.

use crate::api::selector::LabelSelector;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub const TABLE: &str = "skua-policy";

/// What the rules need of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub labels: Map<String, Value>,
    /// Named container ports: (name, protocol lower-case, port).
    pub ports: Vec<(String, String, u16)>,
}

/// A pod that takes part in policy: it has an IPv4 address of its own (not the host's
/// network) and has not finished.
pub fn pod_info(pod: &Value) -> Option<PodInfo> {
    if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
        return None;
    }
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let ip: Ipv4Addr = pod["status"]["podIP"].as_str()?.parse().ok()?;
    let mut ports = Vec::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            if let (Some(name), Some(port)) = (p["name"].as_str(), p["containerPort"].as_u64()) {
                let proto = p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase();
                ports.push((name.to_string(), proto, port as u16));
            }
        }
    }
    Some(PodInfo {
        namespace: pod["metadata"]["namespace"].as_str()?.to_string(),
        name: pod["metadata"]["name"].as_str()?.to_string(),
        ip,
        labels: pod["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ports,
    })
}

/// Everything the rules are made from.
pub struct Inputs<'a> {
    pub policies: &'a [std::sync::Arc<Value>],
    /// Every pod in the cluster (peers may be anywhere).
    pub pods: &'a [PodInfo],
    /// Namespace name → its labels.
    pub namespaces: &'a BTreeMap<String, Map<String, Value>>,
    /// The pods of this node (the ones whose traffic this node polices).
    pub local: &'a [PodInfo],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
    /// The address the rule's peers are matched on.
    fn peer_field(self) -> &'static str {
        match self {
            Direction::Ingress => "ip saddr",
            Direction::Egress => "ip daddr",
        }
    }
    /// What an allowing rule does: ingress ends the check; egress goes on to the
    /// destination's ingress check.
    fn allow(self) -> &'static str {
        match self {
            Direction::Ingress => "accept",
            Direction::Egress => "return",
        }
    }
}

/// The policy's types (upstream's default: Ingress, plus Egress when it has egress
/// rules).
fn has_type(policy: &Value, d: Direction) -> bool {
    match policy["spec"]["policyTypes"].as_array() {
        Some(types) if !types.is_empty() => types.iter().any(|t| t.as_str() == Some(d.title())),
        _ => {
            d == Direction::Ingress
                || policy["spec"]["egress"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
        }
    }
}

fn selector(v: &Value) -> Option<LabelSelector> {
    LabelSelector::from_object(v).ok()
}

/// The pods and ipBlocks a rule's `from`/`to` names; `None` means everyone.
struct Peers<'a> {
    pods: Vec<&'a PodInfo>,
    blocks: Vec<(String, Vec<String>)>,
}

fn peers<'a>(
    inputs: &'a Inputs<'a>,
    policy_ns: &str,
    list: Option<&Vec<Value>>,
) -> Option<Peers<'a>> {
    let list = list.filter(|l| !l.is_empty())?;
    let mut out = Peers {
        pods: Vec::new(),
        blocks: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for peer in list {
        if let Some(block) = peer.get("ipBlock") {
            // only what parses as an IPv4 CIDR reaches the ruleset (IPv6 blocks cannot
            // match in this IPv4 table)
            if let Some(cidr) = block["cidr"].as_str().and_then(v4_cidr) {
                let except = block["except"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str().and_then(v4_cidr))
                    .collect();
                out.blocks.push((cidr, except));
            }
            continue;
        }
        let pod_sel = peer.get("podSelector").map(selector);
        let ns_sel = peer.get("namespaceSelector").map(selector);
        // an unreadable selector selects nothing
        if matches!(pod_sel, Some(None)) || matches!(ns_sel, Some(None)) {
            continue;
        }
        let (pod_sel, ns_sel) = (pod_sel.flatten(), ns_sel.flatten());
        if pod_sel.is_none() && ns_sel.is_none() {
            continue;
        }
        for p in inputs.pods {
            let ns_ok = match &ns_sel {
                Some(s) => s.matches(inputs.namespaces.get(&p.namespace)),
                None => p.namespace == policy_ns,
            };
            let pod_ok = pod_sel.as_ref().is_none_or(|s| s.matches(Some(&p.labels)));
            if ns_ok && pod_ok && seen.insert(p.ip) {
                out.pods.push(p);
            }
        }
    }
    Some(out)
}

/// `a.b.c.d/len` in canonical form, or `None` for anything else.
fn v4_cidr(s: &str) -> Option<String> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    Some(format!("{}/{len}", Ipv4Addr::from(u32::from(ip) & mask)))
}

/// A rule's ports: (protocol, port or range, or a name to resolve).
#[derive(Clone, Debug)]
enum PortRef {
    Any,
    Number(u16, Option<u16>),
    Named(String),
}

fn ports(list: Option<&Vec<Value>>) -> Option<Vec<(String, PortRef)>> {
    let list = list.filter(|l| !l.is_empty())?;
    Some(
        list.iter()
            .filter_map(|p| {
                let proto = p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase();
                // the protocols NetworkPolicy knows; anything else matches nothing
                if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                    return None;
                }
                let port = match &p["port"] {
                    Value::Number(n) => PortRef::Number(
                        n.as_u64().unwrap_or(0) as u16,
                        p["endPort"].as_u64().map(|e| e as u16),
                    ),
                    Value::String(s) => match s.parse::<u16>() {
                        Ok(n) => PortRef::Number(n, None),
                        Err(_) => PortRef::Named(s.clone()),
                    },
                    _ => PortRef::Any,
                };
                Some((proto, port))
            })
            .collect(),
    )
}

/// `meta l4proto tcp th dport { 80, 90-99 }` clauses, one per protocol, with named
/// ports resolved on `target`; empty when nothing could be resolved.
fn port_clauses(list: &[(String, PortRef)], target: Option<&PodInfo>) -> Vec<String> {
    let mut by_proto: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut any_port: BTreeSet<&str> = BTreeSet::new();
    for (proto, port) in list {
        match port {
            PortRef::Any => {
                any_port.insert(proto);
            }
            PortRef::Number(p, end) => {
                let v = match end {
                    Some(e) if e > p => format!("{p}-{e}"),
                    _ => p.to_string(),
                };
                by_proto.entry(proto).or_default().insert(v);
            }
            PortRef::Named(name) => {
                if let Some(t) = target {
                    for (n, pr, num) in &t.ports {
                        if n == name && pr == proto {
                            by_proto.entry(proto).or_default().insert(num.to_string());
                        }
                    }
                }
            }
        }
    }
    let mut out: Vec<String> = any_port
        .iter()
        .map(|p| format!("meta l4proto {p}"))
        .collect();
    for (proto, set) in by_proto {
        if !any_port.contains(proto) {
            out.push(format!(
                "meta l4proto {proto} th dport {{ {} }}",
                set.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    out
}

fn has_named(list: &[(String, PortRef)]) -> bool {
    list.iter().any(|(_, p)| matches!(p, PortRef::Named(_)))
}

/// The rules of one pod's chain in one direction (`None`: the pod is not isolated
/// that way).
fn chain_rules(inputs: &Inputs, pod: &PodInfo, d: Direction) -> Option<Vec<String>> {
    let selecting: Vec<&Value> = inputs
        .policies
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p["metadata"]["namespace"].as_str() == Some(pod.namespace.as_str()))
        .filter(|p| has_type(p, d))
        .filter(|p| {
            selector(&p["spec"]["podSelector"]).is_some_and(|s| s.matches(Some(&pod.labels)))
        })
        .collect();
    if selecting.is_empty() {
        return None;
    }
    let field = d.peer_field();
    let allow = d.allow();
    let mut rules = Vec::new();
    match d {
        Direction::Ingress => {
            // a pod can always reach itself, and its node can always reach it
            rules.push(format!("ip saddr {} accept", pod.ip));
            rules.push("fib saddr type local accept".to_string());
        }
        Direction::Egress => rules.push(format!("ip daddr {} return", pod.ip)),
    }
    for policy in selecting {
        let ns = policy["metadata"]["namespace"].as_str().unwrap_or("");
        let (list_key, peer_key) = match d {
            Direction::Ingress => ("ingress", "from"),
            Direction::Egress => ("egress", "to"),
        };
        for rule in policy["spec"][list_key].as_array().into_iter().flatten() {
            let peers = peers(inputs, ns, rule[peer_key].as_array());
            let port_list = ports(rule["ports"].as_array());
            // egress to named ports: resolved on each destination pod
            if let (Direction::Egress, Some(pl)) = (d, &port_list) {
                if has_named(pl) {
                    let dests: Vec<&PodInfo> = match &peers {
                        Some(p) => p.pods.clone(),
                        None => inputs.pods.iter().collect(),
                    };
                    for dest in dests {
                        for clause in port_clauses(pl, Some(dest)) {
                            rules.push(format!("{field} {} {clause} {allow}", dest.ip));
                        }
                    }
                    // numbered ports of the same rule still apply to ipBlocks, or to
                    // every destination when the rule names none
                    match &peers {
                        Some(p) => {
                            for (cidr, except) in &p.blocks {
                                for clause in port_clauses(pl, None) {
                                    rules.push(block_rule(field, cidr, except, &clause, allow));
                                }
                            }
                        }
                        None => {
                            for clause in port_clauses(pl, None) {
                                rules.push(join(&[&clause, allow]));
                            }
                        }
                    }
                    continue;
                }
            }
            let clauses: Vec<String> = match &port_list {
                None => vec![String::new()],
                Some(pl) => {
                    let target = (d == Direction::Ingress).then_some(pod);
                    let c = port_clauses(pl, target);
                    if c.is_empty() {
                        // only named ports this pod does not have: matches nothing
                        continue;
                    }
                    c
                }
            };
            match &peers {
                None => {
                    for clause in &clauses {
                        rules.push(join(&[clause, allow]));
                    }
                }
                Some(p) => {
                    let ips: BTreeSet<String> = p.pods.iter().map(|x| x.ip.to_string()).collect();
                    if !ips.is_empty() {
                        let set = ips.into_iter().collect::<Vec<_>>().join(", ");
                        for clause in &clauses {
                            rules.push(join(&[&format!("{field} {{ {set} }}"), clause, allow]));
                        }
                    }
                    for (cidr, except) in &p.blocks {
                        for clause in &clauses {
                            rules.push(block_rule(field, cidr, except, clause, allow));
                        }
                    }
                }
            }
        }
    }
    rules.push(format!(
        "counter drop comment \"{} denied by NetworkPolicy\"",
        d.key()
    ));
    Some(rules)
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

fn block_rule(field: &str, cidr: &str, except: &[String], clause: &str, allow: &str) -> String {
    let except = if except.is_empty() {
        String::new()
    } else {
        format!("{field} != {{ {} }}", except.join(", "))
    };
    join(&[&format!("{field} {cidr}"), &except, clause, allow])
}

/// The whole table for this node, replaced in one transaction.
pub fn ruleset(inputs: &Inputs) -> String {
    let mut chains = String::new();
    let mut maps: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut done = BTreeSet::new();
    for pod in inputs.local.iter().filter(|p| done.insert(p.ip)) {
        for (i, d) in [Direction::Egress, Direction::Ingress]
            .into_iter()
            .enumerate()
        {
            if let Some(rules) = chain_rules(inputs, pod, d) {
                let chain = format!("{}-{}", d.key(), pod.ip);
                let _ = writeln!(chains, "\tchain {chain} {{");
                let _ = writeln!(chains, "\t\tcomment \"{}/{}\"", pod.namespace, pod.name);
                for r in rules {
                    let _ = writeln!(chains, "\t\t{r}");
                }
                let _ = writeln!(chains, "\t}}");
                maps[i].push(format!("{} : jump {chain}", pod.ip));
            }
        }
    }
    let mut s = format!("add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    s.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
    s.push_str("\t\tct state established,related accept\n");
    if !maps[0].is_empty() {
        let _ = writeln!(s, "\t\tip saddr vmap {{ {} }}", maps[0].join(", "));
    }
    if !maps[1].is_empty() {
        let _ = writeln!(s, "\t\tip daddr vmap {{ {} }}", maps[1].join(", "));
    }
    s.push_str("\t}\n");
    s.push_str(&chains);
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(ns: &str, name: &str, ip: &str, labels: Value) -> PodInfo {
        pod_info(&json!({"metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running"}}))
        .unwrap()
    }

    fn world() -> (Vec<PodInfo>, BTreeMap<String, Map<String, Value>>) {
        let pods = vec![
            pod("default", "web", "10.42.1.5", json!({"app": "web"})),
            pod("default", "client", "10.42.0.7", json!({"role": "client"})),
            pod("default", "other", "10.42.0.8", json!({})),
            pod("team", "visitor", "10.42.2.9", json!({"role": "client"})),
        ];
        let mut ns = BTreeMap::new();
        ns.insert("default".into(), Map::new());
        ns.insert(
            "team".into(),
            json!({"team": "a"}).as_object().unwrap().clone(),
        );
        (pods, ns)
    }

    fn policy(spec: Value) -> Arc<Value> {
        Arc::new(json!({"metadata": {"namespace": "default", "name": "p"}, "spec": spec}))
    }

    fn script(policies: &[Arc<Value>], local: &[&str]) -> String {
        let (pods, ns) = world();
        let local: Vec<PodInfo> = pods
            .iter()
            .filter(|p| local.contains(&p.name.as_str()))
            .cloned()
            .collect();
        ruleset(&Inputs {
            policies,
            pods: &pods,
            namespaces: &ns,
            local: &local,
        })
    }

    #[test]
    fn no_policy_no_isolation() {
        let s = script(&[], &["web", "client"]);
        assert!(!s.contains("vmap") && !s.contains("drop"), "{s}");
        assert!(s.starts_with("add table ip skua-policy\ndelete table ip skua-policy\n"));
        // a policy selecting other pods leaves these alone
        let p = policy(json!({"podSelector": {"matchLabels": {"app": "db"}}}));
        assert!(!script(&[p], &["web"]).contains("vmap"));
    }

    #[test]
    fn default_deny_ingress_keeps_the_node_and_the_pod_itself() {
        let s = script(
            &[policy(
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            )],
            &["web"],
        );
        assert!(
            s.contains("ip daddr vmap { 10.42.1.5 : jump ingress-10.42.1.5 }"),
            "{s}"
        );
        assert!(!s.contains("ip saddr vmap"), "no egress isolation: {s}");
        let chain = &s[s.find("chain ingress-10.42.1.5").unwrap()..];
        assert!(chain.contains("ip saddr 10.42.1.5 accept"));
        assert!(chain.contains("fib saddr type local accept"));
        assert!(chain.contains("counter drop"));
        assert!(
            !chain.contains("ip saddr {"),
            "nothing else allowed: {chain}"
        );
    }

    #[test]
    fn pod_namespace_and_block_peers_with_named_ports() {
        let p = policy(
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": "http"}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]},
                {"from": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.0.7/32"]}}], "ports": [{"protocol": "UDP", "port": 53, "endPort": 60}]},
            ]}),
        );
        let s = script(&[p], &["web"]);
        // role=client in the policy's namespace only (not team's visitor), on http = 8080
        assert!(
            s.contains("ip saddr { 10.42.0.7 } meta l4proto tcp th dport { 8080 } accept"),
            "{s}"
        );
        assert!(s.contains("ip saddr { 10.42.2.9 } accept"), "{s}");
        assert!(s.contains("ip saddr 10.42.0.0/16 ip saddr != { 10.42.0.7/32 } meta l4proto udp th dport { 53-60 } accept"), "{s}");
    }

    #[test]
    fn egress_isolation_returns_to_the_ingress_check() {
        let p = policy(
            json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]},
                       {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}),
        );
        let s = script(&[p], &["client", "web"]);
        assert!(
            s.contains("ip saddr vmap { 10.42.0.7 : jump egress-10.42.0.7 }"),
            "{s}"
        );
        let chain = &s[s.find("chain egress-10.42.0.7").unwrap()..];
        assert!(
            chain.contains("ip daddr 10.42.1.5 meta l4proto tcp th dport { 8080 } return"),
            "{chain}"
        );
        assert!(chain.contains("ip daddr 192.0.2.0/24 return"), "{chain}");
        assert!(chain.contains("counter drop"));
        // the policy selects only client: web is not isolated
        assert!(!s.contains("egress-10.42.1.5") && !s.contains("ingress-"));
    }

    #[test]
    fn only_well_formed_blocks_and_protocols_reach_the_ruleset() {
        let p = policy(json!({"podSelector": {}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/8\n}\nflush ruleset"}}]},
            {"from": [{"ipBlock": {"cidr": "::/0"}}]},
            {"from": [{"ipBlock": {"cidr": "10.42.7.9/16", "except": ["bad", "10.42.1.0/24"]}}], "ports": [{"protocol": "ICMP\n", "port": 1}, {"protocol": "UDP", "port": 53}]},
        ]}));
        let s = script(&[p], &["web"]);
        assert!(
            !s.contains("flush") && !s.contains("::") && !s.contains("ICMP") && !s.contains("bad"),
            "{s}"
        );
        assert!(s.contains("ip saddr 10.42.0.0/16 ip saddr != { 10.42.1.0/24 } meta l4proto udp th dport { 53 } accept"), "{s}");
    }

    #[test]
    fn egress_named_ports_to_anywhere_keep_their_numbered_ports() {
        let p = policy(
            json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": "http"}, {"port": 443}]}]}),
        );
        let s = script(&[p], &["client"]);
        assert!(
            s.contains("meta l4proto tcp th dport { 443 } return"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr 10.42.1.5 meta l4proto tcp th dport { 443, 8080 } return"),
            "{s}"
        );
    }

    #[test]
    fn policy_types_default_as_upstream() {
        let egress_only = json!({"spec": {"egress": [], "policyTypes": ["Egress"]}});
        assert!(
            has_type(&egress_only, Direction::Egress)
                && !has_type(&egress_only, Direction::Ingress)
        );
        let implicit = json!({"spec": {"egress": [{}]}});
        assert!(has_type(&implicit, Direction::Egress) && has_type(&implicit, Direction::Ingress));
        // upstream: egress is implied only by egress rules, not by an empty list
        let empty = json!({"spec": {"egress": []}});
        assert!(!has_type(&empty, Direction::Egress));
        let plain = json!({"spec": {}});
        assert!(has_type(&plain, Direction::Ingress) && !has_type(&plain, Direction::Egress));
        // finished and host-network pods take no part
        assert!(pod_info(&json!({"metadata": {"namespace": "a", "name": "b"}, "spec": {"hostNetwork": true}, "status": {"podIP": "10.0.0.1"}})).is_none());
        assert!(pod_info(&json!({"metadata": {"namespace": "a", "name": "b"}, "spec": {}, "status": {"podIP": "10.42.0.1", "phase": "Succeeded"}})).is_none());
    }
}
