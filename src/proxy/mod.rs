//! The service proxy of a node (in the agent; no kube-proxy, no iptables): Services and
//! EndpointSlices, followed through informers, become one nftables table of skua's own
//! (`ip skua`), changed service by service in atomic transactions. `model` reads the
//! API objects, `rules` renders the table; this file keeps what is applied and runs
//! the loop.

pub mod model;
pub(crate) mod rules;

use crate::net::{Conntrack, NetError, Nft};
use crate::runtime::informer::{Change, Informer};
use model::ServicePort;
use rules::ServiceRules;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one sync did, for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncReport {
    /// Service ports whose rules changed.
    pub changed: usize,
    /// Whether the whole table was rebuilt.
    pub full: bool,
    /// Bytes of nft commands sent.
    pub bytes: usize,
}

/// Which port's element a key of a map holds: key space + key → claimant port → its
/// (map, verdict). The first claimant in name order wins, so two services asking for
/// one external IP and port get a stable, single answer.
type Claims = HashMap<(&'static str, String), BTreeMap<String, (&'static str, String)>>;

fn winner(claims: &Claims, k: &(&'static str, String)) -> Option<(&'static str, String)> {
    claims.get(k).and_then(|m| m.values().next().cloned())
}

/// The applied state of the table and the way to change it.
pub struct Proxier {
    nft: Arc<dyn Nft>,
    conntrack: Arc<dyn Conntrack>,
    /// service port key → its rules as applied
    applied: HashMap<String, ServiceRules>,
    /// `ns/name` → the keys of its ports
    ports_of: HashMap<String, BTreeSet<String>>,
    claims: Claims,
    /// the table is known to match `applied`
    in_sync: bool,
}

impl Proxier {
    /// A proxier that has applied nothing yet, over `nft` and `conntrack`.
    pub fn new(nft: Arc<dyn Nft>, conntrack: Arc<dyn Conntrack>) -> Proxier {
        Proxier {
            nft,
            conntrack,
            applied: HashMap::new(),
            ports_of: HashMap::new(),
            claims: HashMap::new(),
            in_sync: false,
        }
    }

    /// Makes the table match `updates` (each service's ports as they are now; an empty
    /// list for a service that is gone), touching only the services that changed. The
    /// first sync, and any sync after a refused transaction, rebuilds the whole table.
    pub fn sync(
        &mut self,
        updates: Vec<(String, Vec<ServicePort>)>,
    ) -> Result<SyncReport, NetError> {
        let mut old: HashMap<String, ServiceRules> = HashMap::new();
        let mut new: HashMap<String, ServiceRules> = HashMap::new();
        let mut keys: BTreeSet<String> = BTreeSet::new();
        // a service named twice: its last state counts
        let updates: BTreeMap<String, Vec<ServicePort>> = updates.into_iter().collect();
        for (service, ports) in updates {
            let before = self.ports_of.remove(&service).unwrap_or_default();
            for k in &before {
                if let Some(r) = self.applied.get(k) {
                    old.insert(k.clone(), r.clone());
                }
            }
            let mut now = BTreeSet::new();
            for sp in &ports {
                new.insert(sp.key.clone(), rules::service_rules(sp));
                now.insert(sp.key.clone());
            }
            keys.extend(before);
            keys.extend(now.iter().cloned());
            if !now.is_empty() {
                self.ports_of.insert(service, now);
            }
        }
        let changed: Vec<&String> = keys.iter().filter(|k| old.get(*k) != new.get(*k)).collect();
        let needs_full = !self.in_sync
            || changed.iter().any(|k| match (old.get(*k), new.get(*k)) {
                (Some(o), Some(n)) => rules::needs_full(o, n),
                _ => false,
            });
        // map elements: who holds each key touched, before and after
        let none = ServiceRules::default();
        let mut touched: BTreeSet<(&'static str, String)> = BTreeSet::new();
        for k in &changed {
            for e in old
                .get(*k)
                .unwrap_or(&none)
                .elements
                .iter()
                .chain(&new.get(*k).unwrap_or(&none).elements)
            {
                touched.insert((rules::key_space(e.0), e.1.clone()));
            }
        }
        let before: Vec<Option<(&'static str, String)>> =
            touched.iter().map(|t| winner(&self.claims, t)).collect();
        for k in &changed {
            for e in &old.get(*k).unwrap_or(&none).elements {
                let t = (rules::key_space(e.0), e.1.clone());
                if let Some(m) = self.claims.get_mut(&t) {
                    m.remove(*k);
                    if m.is_empty() {
                        self.claims.remove(&t);
                    }
                }
            }
            for e in &new.get(*k).unwrap_or(&none).elements {
                self.claims
                    .entry((rules::key_space(e.0), e.1.clone()))
                    .or_default()
                    .insert((*k).clone(), (e.0, e.2.clone()));
            }
        }
        let mut deletes = Vec::new();
        let mut adds: Vec<rules::Element> = Vec::new();
        for (t, was) in touched.iter().zip(before) {
            let now = winner(&self.claims, t);
            if now == was {
                continue;
            }
            if let Some((map, _)) = was {
                deletes.push((map, t.1.clone()));
            }
            if let Some((map, verdict)) = now {
                adds.push((map, t.1.clone(), verdict));
            }
        }
        let mut report = SyncReport {
            changed: changed.len(),
            ..Default::default()
        };
        if !needs_full && !changed.is_empty() {
            let add_refs: Vec<&rules::Element> = adds.iter().collect();
            let script =
                rules::transition(&old, &new, changed.iter().copied(), &deletes, &add_refs);
            report.bytes = script.len();
            if let Err(e) = self.nft.apply(&script) {
                tracing::warn!(error = %e, "proxy: incremental change refused; rebuilding the table");
                self.in_sync = false;
            }
        }
        // the state is what is wanted from now on, whether it is applied yet or not
        for k in &keys {
            match new.remove(k) {
                Some(r) => self.applied.insert(k.clone(), r),
                None => self.applied.remove(k),
            };
        }
        if needs_full || !self.in_sync {
            let elements: Vec<rules::Element> = self
                .claims
                .iter()
                .filter_map(|(t, m)| {
                    m.values()
                        .next()
                        .map(|(map, v)| (*map, t.1.clone(), v.clone()))
                })
                .collect();
            let script = rules::full(&self.applied, &elements);
            report.bytes = script.len();
            report.full = true;
            self.nft.apply(&script)?;
            self.in_sync = true;
        }
        self.clear_stale_udp(&old, &keys);
        Ok(report)
    }

    fn clear_stale_udp(&self, old: &HashMap<String, ServiceRules>, keys: &BTreeSet<String>) {
        let none = ServiceRules::default();
        for k in keys {
            let (o, n) = (
                old.get(k).unwrap_or(&none),
                self.applied.get(k).unwrap_or(&none),
            );
            for (ip, port) in o.udp_endpoints.difference(&n.udp_endpoints) {
                if let Err(e) = self.conntrack.clear_udp_endpoint(ip, *port) {
                    tracing::warn!(error = %e, endpoint = %format!("{ip}:{port}"), "proxy: stale UDP flows kept");
                }
            }
            for (ip, port) in o.udp_rejecting.difference(&n.udp_rejecting) {
                if let Err(e) = self.conntrack.clear_udp_destination(ip, *port) {
                    tracing::warn!(error = %e, service = %format!("{ip}:{port}"), "proxy: stale UDP flows kept");
                }
            }
        }
    }

    /// Removes the table (a clean shutdown leaves nothing behind).
    pub fn remove_table(&mut self) -> Result<(), NetError> {
        self.in_sync = false;
        self.nft.apply(&format!(
            "add table ip {t}\ndelete table ip {t}\n",
            t = rules::TABLE
        ))
    }
}

/// The EndpointSlices of each service, kept from the slice informer's changes (a scan
/// of a namespace per service would make a full sync quadratic).
#[derive(Default)]
struct SliceIndex {
    by_service: HashMap<String, BTreeMap<String, Arc<Value>>>,
}

fn owning_service(slice: &Value) -> Option<String> {
    let ns = slice["metadata"]["namespace"].as_str()?;
    let svc = slice["metadata"]["labels"][model::SERVICE_NAME_LABEL].as_str()?;
    Some(format!("{ns}/{svc}"))
}

impl SliceIndex {
    /// Records a change; returns the services it touched.
    fn apply(&mut self, c: &Change) -> Vec<String> {
        let mut touched = Vec::new();
        if let Some(svc) = c.old.as_deref().and_then(owning_service) {
            if let Some(m) = self.by_service.get_mut(&svc) {
                m.remove(&c.key);
                if m.is_empty() {
                    self.by_service.remove(&svc);
                }
            }
            touched.push(svc);
        }
        if let Some(new) = &c.new {
            if let Some(svc) = owning_service(new) {
                self.by_service
                    .entry(svc.clone())
                    .or_default()
                    .insert(c.key.clone(), new.clone());
                if !touched.contains(&svc) {
                    touched.push(svc);
                }
            }
        }
        touched
    }
}

/// Where the proxy runs and what it leaves to others.
pub struct ProxyConfig {
    /// This node's name: endpoints on it are local.
    pub node: String,
    /// The cluster DNS address: the node answers it itself, the proxy leaves it alone.
    pub cluster_dns: Option<Ipv4Addr>,
}

/// Runs the proxy until `stop`; then removes its table.
pub async fn run(
    services: Arc<Informer>,
    slices_informer: Arc<Informer>,
    config: ProxyConfig,
    mut proxier: Proxier,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        // replies between pods on one bridge pass conntrack, so DNAT is undone
        ("net.bridge.bridge-nf-call-iptables", "1"),
    ] {
        if let Err(e) = crate::net::sysctl(key, value) {
            tracing::warn!(sysctl = key, error = %e, "proxy: cannot set sysctl");
        }
    }
    let mut service_changes = services.subscribe();
    let mut slice_changes = slices_informer.subscribe();
    services.synced().await;
    slices_informer.synced().await;
    let mut index = SliceIndex::default();
    for s in slices_informer.list(None) {
        index.apply(&Change {
            key: crate::client::watch::key_of(&s),
            old: None,
            new: Some(s),
        });
    }
    let desired = |index: &SliceIndex, svc: &str| -> Vec<ServicePort> {
        let Some(service) = services.get(svc) else {
            return Vec::new();
        };
        let slices: Vec<&Value> = index
            .by_service
            .get(svc)
            .into_iter()
            .flat_map(|m| m.values().map(|v| v.as_ref()))
            .collect();
        model::service_ports(&service, &slices, &config.node, config.cluster_dns)
    };
    let mut dirty: BTreeSet<String> = services
        .list(None)
        .iter()
        .map(|s| crate::client::watch::key_of(s))
        .collect();
    let mut retry: Option<tokio::time::Instant> = None;
    let mut force = false;
    loop {
        if !dirty.is_empty() || std::mem::take(&mut force) {
            let started = Instant::now();
            let updates: Vec<(String, Vec<ServicePort>)> = std::mem::take(&mut dirty)
                .into_iter()
                .map(|s| {
                    let ports = desired(&index, &s);
                    (s, ports)
                })
                .collect();
            let n = updates.len();
            match proxier.sync(updates) {
                Ok(r) => {
                    retry = None;
                    tracing::debug!(
                        services = n,
                        changed = r.changed,
                        full = r.full,
                        bytes = r.bytes,
                        took_ms = started.elapsed().as_millis() as u64,
                        "proxy: synced"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "proxy: cannot program nftables; retrying");
                    retry = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
            }
        }
        tokio::select! {
            Some(c) = service_changes.recv() => { dirty.insert(c.key); }
            Some(c) = slice_changes.recv() => { dirty.extend(index.apply(&c)); }
            _ = async { match retry { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                // a refused sync: the table is rebuilt whole from the wanted state
                force = true;
                retry = None;
            }
            _ = stop.changed() => break,
        }
        // take what else has arrived, so a burst is one transaction
        while let Ok(c) = service_changes.try_recv() {
            dirty.insert(c.key);
        }
        while let Ok(c) = slice_changes.try_recv() {
            dirty.extend(index.apply(&c));
        }
    }
    match proxier.remove_table() {
        Ok(()) => tracing::info!("proxy: table removed"),
        Err(e) => tracing::warn!(error = %e, "proxy: cannot remove its table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{FakeConntrack, FakeNft};
    use model::Endpoint;

    fn port(key: &str, proto: &'static str, eps: &[&str]) -> ServicePort {
        ServicePort {
            key: key.into(),
            protocol: proto,
            cluster_ips: vec!["10.43.0.20".parse().unwrap()],
            port: 53,
            node_port: None,
            external_ips: vec![],
            load_balancer_ips: vec![],
            affinity_seconds: None,
            external_local: false,
            internal_local: false,
            endpoints: eps
                .iter()
                .map(|ip| Endpoint {
                    ip: ip.parse().unwrap(),
                    port: 5353,
                    ready: true,
                    serving: true,
                    terminating: false,
                    local: true,
                })
                .collect(),
        }
    }

    #[test]
    fn first_sync_is_full_then_incremental_and_failures_rebuild() {
        let nft = Arc::new(FakeNft::default());
        let ct = Arc::new(FakeConntrack::default());
        let mut p = Proxier::new(nft.clone(), ct.clone());
        let r = p
            .sync(vec![(
                "default/dns".into(),
                vec![port("default/dns/udp/", "udp", &["10.42.0.5", "10.42.0.6"])],
            )])
            .unwrap();
        assert!(r.full);
        assert!(
            nft.applied.lock().unwrap()[0].starts_with("add table ip skua\ndelete table ip skua\n")
        );
        // an endpoint goes: one small transaction, and its UDP flows are cleared
        let r = p
            .sync(vec![(
                "default/dns".into(),
                vec![port("default/dns/udp/", "udp", &["10.42.0.5"])],
            )])
            .unwrap();
        assert!(!r.full && r.changed == 1);
        let last = nft.applied.lock().unwrap().last().unwrap().clone();
        assert!(!last.contains("delete table"));
        assert!(last.contains("delete chain"));
        assert_eq!(
            ct.cleared.lock().unwrap().as_slice(),
            ["endpoint 10.42.0.6:5353"]
        );
        // unchanged: nothing sent
        let sent = nft.applied.lock().unwrap().len();
        let r = p
            .sync(vec![(
                "default/dns".into(),
                vec![port("default/dns/udp/", "udp", &["10.42.0.5"])],
            )])
            .unwrap();
        assert_eq!((r.changed, nft.applied.lock().unwrap().len()), (0, sent));
        // the kernel refuses an incremental change: the whole table is rebuilt, with
        // the new state
        *nft.fail_next.lock().unwrap() = 1;
        let r = p.sync(vec![("default/dns".into(), vec![])]).unwrap();
        assert!(r.full);
        let last = nft.applied.lock().unwrap().last().unwrap().clone();
        assert!(last.starts_with("add table ip skua\ndelete table ip skua\n"));
        assert!(!last.contains("dnat"));
        // the last endpoint went with the service
        assert!(
            ct.cleared
                .lock()
                .unwrap()
                .contains(&"endpoint 10.42.0.5:5353".to_string())
        );
    }

    #[test]
    fn slices_are_indexed_by_their_service() {
        let mut idx = SliceIndex::default();
        let s = Arc::new(
            serde_json::json!({"metadata": {"namespace": "a", "name": "web-x", "labels": {"kubernetes.io/service-name": "web"}}}),
        );
        let touched = idx.apply(&Change {
            key: "a/web-x".into(),
            old: None,
            new: Some(s.clone()),
        });
        assert_eq!(touched, ["a/web"]);
        assert_eq!(idx.by_service["a/web"].len(), 1);
        let touched = idx.apply(&Change {
            key: "a/web-x".into(),
            old: Some(s),
            new: None,
        });
        assert_eq!(touched, ["a/web"]);
        assert!(idx.by_service.is_empty());
    }
}
