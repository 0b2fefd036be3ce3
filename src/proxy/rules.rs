//! The nftables ruleset of the service proxy, after upstream's kube-proxy nftables
//! design (`pkg/proxy/nftables/README.md`): verdict maps keyed by destination
//! (`service-ips`, `service-nodeports`) jump to one chain per service port, which picks
//! one endpoint chain at random (`numgen`); endpoint chains DNAT. Services without
//! usable endpoints sit in `no-endpoint-*` maps checked by filter chains that reject
//! at once. Pure: it renders nft command text, the transaction that turns one set of
//! [`ServiceRules`] into another touches only the services that changed.

use super::model::{Endpoint, ServicePort};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

/// The table's name, in the `ip` family. Nothing else is ever touched or read.
pub const TABLE: &str = "skua";
/// The bridge pods sit on (the CNI config's): traffic from it is pod traffic.
pub const POD_BRIDGE: &str = "skua0";

/// Everything one service port adds to the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// chain name → its rules, in order
    pub chains: BTreeMap<String, Vec<String>>,
    /// set name → its definition (affinity sets)
    pub sets: BTreeMap<String, String>,
    /// (map, key, verdict) this port asks for; when ports of two services claim one
    /// key, the proxy gives it to one of them (see `Proxier`)
    pub elements: BTreeSet<Element>,
    /// UDP endpoints (`ip`, `port`): their flows are cleared when they go
    pub udp_endpoints: BTreeSet<(String, u16)>,
    /// UDP destinations (`ip`, `port`) that reject for want of endpoints
    pub udp_rejecting: BTreeSet<(String, u16)>,
}

/// Upstream's chain-name hash: the first 8 base32 characters of the SHA-256 of the
/// service port name, so names stay unique when truncated and readable otherwise.
fn hash(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let b = d.as_ref();
    // 40 bits → 8 characters
    let mut v: u64 = 0;
    for byte in &b[..5] {
        v = (v << 8) | *byte as u64;
    }
    (0..8)
        .rev()
        .map(|i| ALPHABET[((v >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// The readable tail of an nftables name: user text (namespace, service and port
/// names) reduced to characters nft takes in a bare identifier — no newline, `;`,
/// brace, quote or space can reach the script, whatever the API let through — and
/// cut short. The hash before it is of the whole text, so names stay unique.
fn readable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_./".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(160)
        .collect()
}

fn chain_name(prefix: &str, key: &str) -> String {
    format!("{prefix}-{}-{}", hash(key), readable(key))
}

fn endpoint_chain(key: &str, ep: &Endpoint) -> String {
    let id = format!("{key}__{}/{}", ep.ip, ep.port);
    format!("endpoint-{}-{}", hash(&id), readable(&id))
}

fn affinity_set(key: &str, ep: &Endpoint) -> String {
    let id = format!("{key}__{}/{}", ep.ip, ep.port);
    format!("affinity-{}-{}", hash(&id), readable(&id))
}

/// The chain that picks one of `eps` (with session affinity first, when asked).
fn balance(sp: &ServicePort, eps: &[&Endpoint]) -> Vec<String> {
    let mut rules = Vec::new();
    if sp.affinity_seconds.is_some() {
        for ep in eps {
            rules.push(format!(
                "ip saddr @{} goto {}",
                affinity_set(&sp.key, ep),
                endpoint_chain(&sp.key, ep)
            ));
        }
    }
    // A cascade, each rule drawing anew: rule i takes 1/(n-i) of what reaches it, so
    // every endpoint gets 1/n (iptables' kube-proxy does the same). Not an anonymous
    // `numgen … vmap { … }`: the kernel names every anonymous set by scanning the
    // table's sets, which made a full sync quadratic in the number of services.
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let chain = endpoint_chain(&sp.key, ep);
        if i + 1 == n {
            rules.push(format!("goto {chain}"));
        } else {
            rules.push(format!("numgen random mod {} == 0 goto {chain}", n - i));
        }
    }
    rules
}

/// The rules of one service port on this node.
pub fn service_rules(sp: &ServicePort) -> ServiceRules {
    let mut r = ServiceRules::default();
    let cluster = sp.cluster_endpoints();
    let local = sp.local_endpoints();
    let proto = sp.protocol;
    let svc_chain = chain_name("service", &sp.key);
    let local_chain = chain_name("local", &sp.key);
    let ext_chain = chain_name("external", &sp.key);
    let mut used: BTreeSet<&Endpoint> = BTreeSet::new();
    if !cluster.is_empty() {
        let mut rules: Vec<String> = sp
            .cluster_ips
            .iter()
            .map(|ip| {
                format!(
                    "ip daddr {ip} {proto} dport {} iifname != \"{POD_BRIDGE}\" jump mark-for-masquerade",
                    sp.port
                )
            })
            .collect();
        rules.extend(balance(sp, &cluster));
        r.chains.insert(svc_chain.clone(), rules);
        used.extend(cluster.iter().copied());
    }
    let needs_local = sp.internal_local || (sp.external_local && sp.has_external());
    if needs_local && !local.is_empty() {
        r.chains.insert(local_chain.clone(), balance(sp, &local));
        used.extend(local.iter().copied());
    }
    for ep in &used {
        let chain = endpoint_chain(&sp.key, ep);
        let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", ep.ip)];
        if let Some(secs) = sp.affinity_seconds {
            let set = affinity_set(&sp.key, ep);
            r.sets.insert(
                set.clone(),
                format!("{{ type ipv4_addr ; flags dynamic,timeout ; timeout {secs}s ; }}"),
            );
            rules.push(format!("update @{set} {{ ip saddr }}"));
        }
        rules.push(format!(
            "meta l4proto {proto} dnat to {}:{}",
            ep.ip, ep.port
        ));
        r.chains.insert(chain, rules);
        if proto == "udp" {
            r.udp_endpoints.insert((ep.ip.to_string(), ep.port));
        }
    }
    // traffic to the cluster IPs
    let internal = if sp.internal_local {
        (!local.is_empty()).then(|| local_chain.clone())
    } else {
        (!cluster.is_empty()).then(|| svc_chain.clone())
    };
    for ip in &sp.cluster_ips {
        let key = format!("{ip} . {proto} . {}", sp.port);
        match &internal {
            Some(chain) => r
                .elements
                .insert(("service-ips", key, format!("goto {chain}"))),
            None if cluster.is_empty() => {
                r.udp_rejecting.insert((ip.to_string(), sp.port));
                r.elements
                    .insert(("no-endpoint-services", key, "goto reject-chain".into()))
            }
            // internalTrafficPolicy Local without a local endpoint: dropped (upstream)
            None => r
                .elements
                .insert(("no-endpoint-services", key, "drop".into())),
        };
    }
    // traffic from outside: node ports, external IPs, load-balancer IPs
    if sp.has_external() {
        let externals = sp.external_ips.iter().chain(&sp.load_balancer_ips);
        if cluster.is_empty() {
            for ip in externals {
                r.elements.insert((
                    "no-endpoint-services",
                    format!("{ip} . {proto} . {}", sp.port),
                    "goto reject-chain".into(),
                ));
            }
            if let Some(np) = sp.node_port {
                r.elements.insert((
                    "no-endpoint-nodeports",
                    format!("{proto} . {np}"),
                    "goto reject-chain".into(),
                ));
            }
        } else {
            let mut rules = Vec::new();
            if sp.external_local {
                // pods and the node itself may use any endpoint; the rest only local
                // ones, keeping their source address
                rules.push(format!("iifname \"{POD_BRIDGE}\" goto {svc_chain}"));
                rules.push("fib saddr type local jump mark-for-masquerade".into());
                rules.push(format!("fib saddr type local goto {svc_chain}"));
                if local.is_empty() {
                    rules.push("drop".into());
                } else {
                    rules.push(format!("goto {local_chain}"));
                }
            } else {
                rules.push("jump mark-for-masquerade".into());
                rules.push(format!("goto {svc_chain}"));
            }
            r.chains.insert(ext_chain.clone(), rules);
            for ip in externals {
                r.elements.insert((
                    "service-ips",
                    format!("{ip} . {proto} . {}", sp.port),
                    format!("goto {ext_chain}"),
                ));
            }
            if let Some(np) = sp.node_port {
                r.elements.insert((
                    "service-nodeports",
                    format!("{proto} . {np}"),
                    format!("goto {ext_chain}"),
                ));
            }
        }
    }
    r
}

/// The chains, maps and hooks every table has, whatever the services.
pub fn base() -> String {
    let t = format!("ip {TABLE}");
    let mut s = String::new();
    let _ = writeln!(s, "add table {t} {{ comment \"skua service proxy\" ; }}");
    for (map, key) in [
        ("service-ips", "ipv4_addr . inet_proto . inet_service"),
        (
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service",
        ),
        ("service-nodeports", "inet_proto . inet_service"),
        ("no-endpoint-nodeports", "inet_proto . inet_service"),
    ] {
        let _ = writeln!(s, "add map {t} {map} {{ type {key} : verdict ; }}");
    }
    let local_dest = "fib daddr type local ip daddr != 127.0.0.0/8";
    let chains: &[(&str, &str, &[&str])] = &[
        (
            "mark-for-masquerade",
            "",
            &["meta mark set meta mark | 0x4000"],
        ),
        (
            "masquerading",
            "",
            &[
                "meta mark & 0x4000 == 0 return",
                "meta mark set meta mark ^ 0x4000",
                "masquerade fully-random",
            ],
        ),
        ("reject-chain", "", &["reject"]),
        (
            "services",
            "",
            &[
                "ip daddr . meta l4proto . th dport vmap @service-ips",
                "NODEPORTS",
            ],
        ),
        (
            "service-endpoints-check",
            "",
            &["ip daddr . meta l4proto . th dport vmap @no-endpoint-services"],
        ),
        ("nodeport-endpoints-check", "", &["NOENDPOINT-NODEPORTS"]),
        (
            "filter-input",
            "type filter hook input priority -110 ; policy accept ;",
            &[
                "ct state new jump nodeport-endpoints-check",
                "ct state new jump service-endpoints-check",
            ],
        ),
        (
            "filter-forward",
            "type filter hook forward priority -110 ; policy accept ;",
            &["ct state new jump service-endpoints-check"],
        ),
        (
            "filter-output",
            "type filter hook output priority -110 ; policy accept ;",
            &["ct state new jump service-endpoints-check"],
        ),
        (
            "nat-prerouting",
            "type nat hook prerouting priority dstnat ; policy accept ;",
            &["jump services"],
        ),
        (
            "nat-output",
            "type nat hook output priority -100 ; policy accept ;",
            &["jump services"],
        ),
        (
            "nat-postrouting",
            "type nat hook postrouting priority srcnat ; policy accept ;",
            &["jump masquerading"],
        ),
    ];
    for (name, hook, rules) in chains.iter().copied() {
        if hook.is_empty() {
            let _ = writeln!(s, "add chain {t} {name}");
        } else {
            let _ = writeln!(s, "add chain {t} {name} {{ {hook} }}");
        }
        for rule in rules {
            let rule = match *rule {
                "NODEPORTS" => {
                    format!("{local_dest} meta l4proto . th dport vmap @service-nodeports")
                }
                "NOENDPOINT-NODEPORTS" => {
                    format!("{local_dest} meta l4proto . th dport vmap @no-endpoint-nodeports")
                }
                r => r.to_string(),
            };
            let _ = writeln!(s, "add rule {t} {name} {rule}");
        }
    }
    s
}

/// One element of a verdict map: (map, key, verdict).
pub type Element = (&'static str, String, String);

/// Elements whose keys share one space: a destination is either served
/// (`service-ips`) or refused (`no-endpoint-services`), never both, and so for node
/// ports.
pub fn key_space(map: &str) -> &'static str {
    match map {
        "service-nodeports" | "no-endpoint-nodeports" => "nodeport",
        _ => "destination",
    }
}

/// The whole table from scratch, in one transaction: what was there (even a table
/// someone else changed) is replaced.
pub fn full<'a>(
    services: &HashMap<String, ServiceRules>,
    elements: impl IntoIterator<Item = &'a Element>,
) -> String {
    let mut s = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
    s.push_str(&base());
    let empty = HashMap::new();
    let adds: Vec<&Element> = elements.into_iter().collect();
    s.push_str(&transition(&empty, services, services.keys(), &[], &adds));
    s
}

/// The transaction that turns `old` into `new` for the service ports in `changed`
/// (nothing else is touched), with the map elements to delete and add. Order matters
/// within it: elements that point at chains go before those chains, chains exist
/// before rules jump to them, and stale chains are emptied before any is deleted.
pub fn transition<'a>(
    old: &HashMap<String, ServiceRules>,
    new: &HashMap<String, ServiceRules>,
    changed: impl IntoIterator<Item = &'a String>,
    delete_elements: &[(&'static str, String)],
    add_elements: &[&Element],
) -> String {
    let t = format!("ip {TABLE}");
    let none = ServiceRules::default();
    let pairs: Vec<(&ServiceRules, &ServiceRules)> = changed
        .into_iter()
        .map(|k| (old.get(k).unwrap_or(&none), new.get(k).unwrap_or(&none)))
        .filter(|(o, n)| o.chains != n.chains || o.sets != n.sets)
        .collect();
    let mut s = String::new();
    for (map, key) in delete_elements {
        let _ = writeln!(s, "delete element {t} {map} {{ {key} }}");
    }
    for (o, n) in &pairs {
        for (set, def) in &n.sets {
            if o.sets.get(set) != Some(def) {
                let _ = writeln!(s, "add set {t} {set} {def}");
            }
        }
        for chain in n.chains.keys() {
            if !o.chains.contains_key(chain) {
                let _ = writeln!(s, "add chain {t} {chain}");
            }
        }
    }
    for (o, n) in &pairs {
        for (chain, rules) in &n.chains {
            match o.chains.get(chain) {
                Some(old_rules) if old_rules == rules => continue,
                Some(_) => {
                    let _ = writeln!(s, "flush chain {t} {chain}");
                }
                None => {}
            }
            for rule in rules {
                let _ = writeln!(s, "add rule {t} {chain} {rule}");
            }
        }
    }
    for (map, key, verdict) in add_elements {
        let _ = writeln!(s, "add element {t} {map} {{ {key} : {verdict} }}");
    }
    let stale: Vec<&String> = pairs
        .iter()
        .flat_map(|(o, n)| o.chains.keys().filter(|c| !n.chains.contains_key(*c)))
        .collect();
    for chain in &stale {
        let _ = writeln!(s, "flush chain {t} {chain}");
    }
    for chain in &stale {
        let _ = writeln!(s, "delete chain {t} {chain}");
    }
    for (o, n) in &pairs {
        for set in o.sets.keys() {
            if !n.sets.contains_key(set) {
                let _ = writeln!(s, "delete set {t} {set}");
            }
        }
    }
    s
}

/// Whether going from `old` to `new` needs the whole table rebuilt: an affinity set
/// whose timeout changed cannot be redefined in place.
pub fn needs_full(old: &ServiceRules, new: &ServiceRules) -> bool {
    new.sets
        .iter()
        .any(|(k, v)| old.sets.get(k).is_some_and(|o| o != v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::Endpoint;

    fn ep(ip: &str, local: bool, ready: bool) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            port: 8080,
            ready,
            serving: ready,
            terminating: false,
            local,
        }
    }

    fn sp(endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            key: "default/web/tcp/http".into(),
            protocol: "tcp",
            cluster_ips: vec!["10.43.0.20".parse().unwrap()],
            port: 80,
            node_port: None,
            external_ips: vec![],
            load_balancer_ips: vec![],
            affinity_seconds: None,
            external_local: false,
            internal_local: false,
            endpoints,
        }
    }

    fn rules_of<'a>(r: &'a ServiceRules, prefix: &str) -> &'a Vec<String> {
        r.chains
            .iter()
            .find(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {prefix} chain in {:?}", r.chains.keys()))
    }

    #[test]
    fn hostile_names_never_reach_the_script() {
        // names from before validation, or that validation missed: newline, `;`,
        // braces, quotes, `flush ruleset`
        let mut p = sp(vec![ep("10.42.0.5", true, true)]);
        p.key = "default/web/tcp/a\nflush ruleset\n;}{\"x\" include \"/etc/shadow\"".into();
        p.affinity_seconds = Some(10);
        let r = service_rules(&p);
        let services = HashMap::from([(p.key.clone(), r)]);
        let script = full(&services, []);
        assert!(!script.contains("flush ruleset"), "{script}");
        assert!(!script.contains("/etc/shadow\""), "{script}");
        assert!(
            !script.contains(" include ") && !script.contains(";}{"),
            "{script}"
        );
        for line in script.lines().filter(|l| l.contains("default/web")) {
            // the user text is one bare identifier of safe characters
            let name = line
                .split_whitespace()
                .find(|w| w.contains("default/web"))
                .unwrap();
            assert!(
                name.trim_start_matches(['@'])
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)),
                "{line}"
            );
        }
        // the names differ from an honest port's even so: the hash is of the whole text
        let honest = chain_name("service", "default/web/tcp/a_flush_ruleset_");
        assert!(!script.contains(&honest));
    }

    #[test]
    fn hash_is_upstream_shaped() {
        let h = hash("default/web/tcp/http");
        assert_eq!(h.len(), 8);
        assert!(
            h.chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
        assert_ne!(h, hash("default/web/tcp/https"));
    }

    #[test]
    fn cluster_ip_balances_over_ready_endpoints() {
        let r = service_rules(&sp(vec![
            ep("10.42.0.5", true, true),
            ep("10.42.1.5", false, true),
            ep("10.42.1.6", false, false),
        ]));
        let svc = rules_of(&r, "service-");
        assert!(svc[0].contains("ip daddr 10.43.0.20 tcp dport 80 iifname != \"skua0\""));
        assert!(
            svc[1].starts_with("numgen random mod 2 == 0 goto endpoint-"),
            "{svc:?}"
        );
        assert!(svc[2].starts_with("goto endpoint-"), "{svc:?}");
        // one endpoint chain each for the ready two; hairpin masquerade, then DNAT
        let eps: Vec<_> = r
            .chains
            .keys()
            .filter(|k| k.starts_with("endpoint-"))
            .collect();
        assert_eq!(eps.len(), 2);
        let first = rules_of(&r, "endpoint-");
        assert!(
            first[0].starts_with("ip saddr 10.42.")
                && first[0].ends_with("jump mark-for-masquerade")
        );
        assert!(
            first
                .last()
                .unwrap()
                .starts_with("meta l4proto tcp dnat to 10.42.")
        );
        let el: Vec<_> = r.elements.iter().collect();
        assert_eq!(el.len(), 1);
        assert_eq!(el[0].0, "service-ips");
        assert_eq!(el[0].1, "10.43.0.20 . tcp . 80");
    }

    #[test]
    fn no_endpoints_rejects_and_remembers_udp() {
        let mut p = sp(vec![ep("10.42.0.5", true, false)]);
        p.protocol = "udp";
        p.key = "default/dns/udp/".into();
        p.node_port = Some(30053);
        let r = service_rules(&p);
        assert!(r.chains.is_empty());
        let maps: BTreeSet<_> = r.elements.iter().map(|e| (e.0, e.2.as_str())).collect();
        assert!(maps.contains(&("no-endpoint-services", "goto reject-chain")));
        assert!(maps.contains(&("no-endpoint-nodeports", "goto reject-chain")));
        assert!(r.udp_rejecting.contains(&("10.43.0.20".to_string(), 80)));
    }

    #[test]
    fn affinity_remembers_the_client() {
        let mut p = sp(vec![ep("10.42.0.5", true, true)]);
        p.affinity_seconds = Some(60);
        let r = service_rules(&p);
        let svc = rules_of(&r, "service-");
        assert!(svc[1].starts_with("ip saddr @affinity-"));
        let epr = rules_of(&r, "endpoint-");
        assert!(epr[1].starts_with("update @affinity-") && epr[1].ends_with("{ ip saddr }"));
        assert!(r.sets.values().all(|d| d.contains("timeout 60s")));
    }

    #[test]
    fn external_local_goes_to_local_endpoints_only() {
        let mut p = sp(vec![
            ep("10.42.0.5", true, true),
            ep("10.42.1.5", false, true),
        ]);
        p.node_port = Some(30080);
        p.load_balancer_ips = vec!["10.250.0.2".parse().unwrap()];
        p.external_local = true;
        let r = service_rules(&p);
        let ext = rules_of(&r, "external-");
        assert!(ext[0].starts_with("iifname \"skua0\" goto service-"));
        assert!(ext.last().unwrap().starts_with("goto local-"));
        let local = rules_of(&r, "local-");
        // one local endpoint: straight to it
        assert_eq!(local.len(), 1);
        assert!(local[0].starts_with("goto endpoint-"), "{local:?}");
        assert!(r.elements.contains(&(
            "service-nodeports",
            "tcp . 30080".into(),
            format!("goto {}", chain_name("external", &p.key))
        )));
        assert!(
            r.elements
                .iter()
                .any(|e| e.0 == "service-ips" && e.1 == "10.250.0.2 . tcp . 80")
        );
        // no local endpoint: outside traffic is dropped, not sent across the cluster
        let mut p2 = p.clone();
        p2.endpoints = vec![ep("10.42.1.5", false, true)];
        let r2 = service_rules(&p2);
        assert_eq!(rules_of(&r2, "external-").last().unwrap(), "drop");
    }

    #[test]
    fn internal_local_without_local_endpoints_drops() {
        let mut p = sp(vec![ep("10.42.1.5", false, true)]);
        p.internal_local = true;
        let r = service_rules(&p);
        assert!(r.elements.contains(&(
            "no-endpoint-services",
            "10.43.0.20 . tcp . 80".into(),
            "drop".into()
        )));
    }

    #[test]
    fn transitions_touch_only_what_changed() {
        let before = service_rules(&sp(vec![ep("10.42.0.5", true, true)]));
        let after = service_rules(&sp(vec![
            ep("10.42.0.5", true, true),
            ep("10.42.0.6", true, true),
        ]));
        let key = "default/web/tcp/http".to_string();
        let old = HashMap::from([(key.clone(), before)]);
        let new = HashMap::from([(key.clone(), after.clone())]);
        let t = transition(&old, &new, [&key], &[], &[]);
        // the new endpoint chain is added; the service chain is rewritten; the
        // unchanged endpoint chain is left alone
        assert!(t.contains("add chain ip skua endpoint-"));
        assert!(t.contains("flush chain ip skua service-"));
        assert_eq!(t.matches("dnat to").count(), 1);
        // removing the service deletes its element before its chains
        let el: Vec<(&'static str, String)> =
            after.elements.iter().map(|e| (e.0, e.1.clone())).collect();
        let t = transition(&new, &HashMap::new(), [&key], &el, &[]);
        let del_el = t.find("delete element").unwrap();
        let del_chain = t.find("delete chain").unwrap();
        assert!(del_el < del_chain);
        assert_eq!(t.matches("delete chain").count(), 3);
        // nothing changed: nothing to send
        assert!(transition(&new, &new, [&key], &[], &[]).is_empty());
    }
}
