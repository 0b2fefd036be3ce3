//! The proxy's nftables transactions against the real kernel, in fresh network
//! namespaces: every incremental change the proxy makes is accepted by nft, and after
//! each one the table is exactly what a rebuild from scratch gives. Service ports move
//! at random between the shapes the proxy renders (endpoints coming and going, ready
//! and not, affinity, node ports, external and load-balancer IPs, Local policies, UDP).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::cluster::Netns;
use serde_json::Value;
use skua::net::{ConntrackCli, Nft, NftCli};
use skua::proxy::Proxier;
use skua::proxy::model::{Endpoint, ServicePort};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn random_port(rng: &mut Rng, svc: usize, p: usize) -> ServicePort {
    let udp = rng.next(4) == 0;
    let endpoints = (0..rng.next(4))
        .map(|i| Endpoint {
            ip: format!("10.42.{}.{}", rng.next(2), 10 + i).parse().unwrap(),
            port: 8080,
            ready: rng.next(5) != 0,
            serving: true,
            terminating: rng.next(3) == 0,
            local: rng.next(2) == 0,
        })
        .collect();
    let external = rng.next(2) == 0;
    ServicePort {
        key: format!(
            "ns{}/svc{svc}/{}/p{p}",
            svc % 3,
            if udp { "udp" } else { "tcp" }
        ),
        protocol: if udp { "udp" } else { "tcp" },
        cluster_ips: vec![
            format!("10.43.{}.{}", svc / 200, svc % 200 + 1)
                .parse()
                .unwrap(),
        ],
        port: 80 + p as u16,
        node_port: external.then_some(30000 + (svc * 4 + p) as u16),
        external_ips: if rng.next(4) == 0 {
            vec![format!("192.0.2.{}", svc + 1).parse().unwrap()]
        } else {
            vec![]
        },
        load_balancer_ips: if external && rng.next(2) == 0 {
            vec!["10.250.0.2".parse().unwrap()]
        } else {
            vec![]
        },
        affinity_seconds: (rng.next(3) == 0).then_some(60 + rng.next(2) as u32 * 60),
        external_local: external && rng.next(2) == 0,
        internal_local: rng.next(5) == 0,
        endpoints,
    }
}

/// The table as nft reports it, without handles and in a canonical order: chain →
/// rules (in order), set/map → sorted elements.
fn canonical(netns: &Netns) -> BTreeMap<String, Vec<String>> {
    let out = netns
        .command("nft")
        .args(["-j", "list", "table", "ip", "skua"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in v["nftables"].as_array().unwrap() {
        if let Some(r) = item.get("rule") {
            let chain = r["chain"].as_str().unwrap();
            m.entry(format!("chain {chain}"))
                .or_default()
                .push(r["expr"].to_string());
        } else if let Some(c) = item.get("chain") {
            m.entry(format!("chain {}", c["name"].as_str().unwrap()))
                .or_default();
        } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
            let mut elems: Vec<String> = s["elem"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e.to_string())
                .collect();
            elems.sort();
            let mut head = s.clone();
            head.as_object_mut().unwrap().remove("handle");
            head.as_object_mut().unwrap().remove("elem");
            elems.insert(0, head.to_string());
            m.insert(format!("set {}", s["name"].as_str().unwrap()), elems);
        }
    }
    m
}

/// What differs between two canonical tables, one line per chain or set.
fn differences(
    a: &BTreeMap<String, Vec<String>>,
    b: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("only incremental: {k}")),
            Some(w) if w != v => out.push(format!(
                "differs: {k}\n  incremental: {v:?}\n  rebuilt:     {w:?}"
            )),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("only rebuilt: {k}"));
    }
    out
}

fn proxier(netns: &Netns) -> Proxier {
    let path = PathBuf::from(format!("/var/run/netns/{}", netns.name));
    Proxier::new(
        Arc::new(NftCli(skua::net::Netns(Some(path.clone())))),
        Arc::new(ConntrackCli(skua::net::Netns(Some(path)))),
    )
}

#[test]
fn incremental_changes_are_accepted_and_equal_a_rebuild() {
    let live = Netns::create();
    let mut incremental = proxier(&live);
    let mut rng = Rng(0x5eed);
    let services = 12;
    let mut state: Vec<Vec<ServicePort>> = (0..services)
        .map(|s| {
            (0..1 + rng.next(2) as usize)
                .map(|p| random_port(&mut rng, s, p))
                .collect()
        })
        .collect();
    let all = |state: &Vec<Vec<ServicePort>>| -> Vec<(String, Vec<ServicePort>)> {
        state
            .iter()
            .enumerate()
            .map(|(i, ports)| (format!("ns{}/svc{i}", i % 3), ports.clone()))
            .collect()
    };
    let first = incremental.sync(all(&state)).unwrap();
    assert!(first.full);
    let mut incremental_syncs = 0;
    for step in 0..40 {
        // change one to three services (sometimes removing one altogether)
        let mut updates = Vec::new();
        for _ in 0..1 + rng.next(3) {
            let s = rng.next(services as u64) as usize;
            state[s] = if rng.next(6) == 0 {
                Vec::new()
            } else {
                (0..1 + rng.next(2) as usize)
                    .map(|p| random_port(&mut rng, s, p))
                    .collect()
            };
            updates.push((format!("ns{}/svc{s}", s % 3), state[s].clone()));
        }
        let r = incremental
            .sync(updates)
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
        if !r.full {
            incremental_syncs += 1;
        }
        // the same state from scratch, in a namespace of its own
        let scratch = Netns::create();
        proxier(&scratch).sync(all(&state)).unwrap();
        let d = differences(&canonical(&live), &canonical(&scratch));
        assert!(
            d.is_empty(),
            "step {step}: the incrementally changed table differs from a rebuild:\n{}",
            d.join("\n")
        );
    }
    // incremental unless an affinity timeout changed (a set cannot be redefined)
    assert!(
        incremental_syncs >= 20,
        "only {incremental_syncs} of 40 syncs were incremental"
    );
    // a clean shutdown leaves no table behind; the next start rebuilds it
    incremental.remove_table().unwrap();
    let nft = NftCli(skua::net::Netns(Some(PathBuf::from(format!(
        "/var/run/netns/{}",
        live.name
    )))));
    assert_eq!(nft.list_table("ip", "skua").unwrap(), None);
    let mut restarted = proxier(&live);
    assert!(restarted.sync(all(&state)).unwrap().full);
    assert!(nft.list_table("ip", "skua").unwrap().is_some());
}

#[test]
fn a_table_changed_behind_the_proxys_back_is_rebuilt() {
    let ns = Netns::create();
    let mut p = proxier(&ns);
    let mut rng = Rng(7);
    let ports: Vec<ServicePort> = (0..3)
        .map(|i| {
            let mut sp = random_port(&mut rng, 1, i);
            sp.affinity_seconds = None;
            sp
        })
        .collect();
    p.sync(vec![("ns1/svc1".into(), ports.clone())]).unwrap();
    // someone deletes the table: the next change is refused and the proxy rebuilds
    let out = ns
        .command("nft")
        .args(["delete", "table", "ip", "skua"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut changed = ports.clone();
    changed[0].endpoints.clear();
    let r = p.sync(vec![("ns1/svc1".into(), changed.clone())]).unwrap();
    assert!(r.full, "expected a rebuild after the table vanished");
    let scratch = Netns::create();
    proxier(&scratch)
        .sync(vec![("ns1/svc1".into(), changed)])
        .unwrap();
    let d = differences(&canonical(&ns), &canonical(&scratch));
    assert!(d.is_empty(), "{}", d.join("\n"));
}

#[test]
fn hostile_port_names_cannot_reach_nft_and_other_tables_survive() {
    let ns = Netns::create();
    // the host's own firewall: a table skua must never touch
    let out = ns
        .command("nft")
        .args(["add", "table", "inet", "keepme"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut p = proxier(&ns);
    let mut rng = Rng(11);
    let mut ports = Vec::new();
    for (i, evil) in [
        "a\nflush ruleset\n",
        "b; flush ruleset",
        "c } flush ruleset { ",
        "d\" include \"/etc/shadow",
        "e flush ruleset",
    ]
    .iter()
    .enumerate()
    {
        let mut sp = random_port(&mut rng, 2, i);
        sp.key = format!("ns2/svc2/tcp/{evil}");
        sp.affinity_seconds = Some(30);
        ports.push(sp);
    }
    p.sync(vec![("ns2/svc2".into(), ports)])
        .expect("the proxy programs hostile names as plain, safe identifiers");
    let out = ns.command("nft").args(["list", "tables"]).output().unwrap();
    let tables = String::from_utf8_lossy(&out.stdout);
    assert!(
        tables.contains("table inet keepme") && tables.contains("table ip skua"),
        "{tables}"
    );
}
