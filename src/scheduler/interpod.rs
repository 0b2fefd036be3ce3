//! The plugins that look across nodes: required and preferred pod (anti-)affinity and
//! topology spread constraints. `Prepared::new` does the counting across the cluster
//! once per pod (as upstream's PreFilter and PreScore do); filtering or scoring one
//! node is then a lookup of its topology domain.

use super::plugins::{NodeInfo, selector_matches};
use crate::api::selector::LabelSelector;
use serde_json::Value;
use std::collections::HashMap;

/// Whether `term` (of a pod in `owner_ns`) selects `pod`.
fn term_selects(term: &Value, owner_ns: &str, pod: &Value) -> bool {
    let namespaces: Vec<&str> = term["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let ns_ok = if namespaces.is_empty() && term["namespaceSelector"].is_null() {
        ns == owner_ns
    } else {
        namespaces.contains(&ns)
            || term["namespaceSelector"]
                .as_object()
                .is_some_and(|m| m.is_empty())
    };
    ns_ok
        && LabelSelector::from_object(&term["labelSelector"])
            .is_ok_and(|s| s.matches(pod["metadata"]["labels"].as_object()))
}

fn terms<'a>(pod: &'a Value, kind: &str, when: &str) -> impl Iterator<Item = &'a Value> {
    pod["spec"]["affinity"][kind][when]
        .as_array()
        .into_iter()
        .flatten()
}

/// Matching pods per value of the topology key `key`, counted over `nodes`.
fn domains<'n>(
    nodes: &'n [NodeInfo],
    key: &str,
    counts: impl Fn(&NodeInfo) -> i64,
) -> HashMap<&'n str, i64> {
    let mut out: HashMap<&str, i64> = HashMap::new();
    for n in nodes {
        if let Some(v) = n.label(key) {
            *out.entry(v).or_default() += counts(n);
        }
    }
    out
}

struct Spread<'n> {
    key: String,
    max_skew: i64,
    counts: HashMap<&'n str, i64>,
    min: i64,
}

/// One pod's view of the cluster, for the cross-node filters and scores.
pub struct Prepared<'n> {
    /// required pod affinity: per term, its key, the domains holding a matching pod,
    /// and whether this pod may start a group (nothing matches anywhere yet, and the
    /// pod matches its own term)
    affinity: Vec<(String, HashMap<&'n str, i64>, bool)>,
    /// required pod anti-affinity: per term, its key and the domains to avoid
    anti: Vec<(String, HashMap<&'n str, i64>)>,
    /// domains where a running pod's required anti-affinity rules this pod out
    existing: Vec<(String, &'n str)>,
    spread: Vec<Spread<'n>>,
    soft_spread: Vec<Spread<'n>>,
    /// preferred pod (anti-)affinity: key, signed weight, matching pods per domain
    preferred: Vec<(String, i64, HashMap<&'n str, i64>)>,
}

impl<'n> Prepared<'n> {
    pub fn new(pod: &Value, nodes: &'n [NodeInfo]) -> Prepared<'n> {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let count = |term: &Value| {
            let key = term["topologyKey"].as_str().unwrap_or("").to_string();
            let d = domains(nodes, &key, |n| {
                n.pods().filter(|p| term_selects(term, ns, p)).count() as i64
            });
            (key, d)
        };
        let affinity = terms(
            pod,
            "podAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
        )
        .map(|t| {
            let (key, d) = count(t);
            let anywhere = nodes
                .iter()
                .any(|n| n.pods().any(|p| term_selects(t, ns, p)));
            let d = d.into_iter().filter(|(_, c)| *c > 0).collect();
            (key, d, !anywhere && term_selects(t, ns, pod))
        })
        .collect();
        let anti = terms(
            pod,
            "podAntiAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
        )
        .map(|t| {
            let (key, d) = count(t);
            (key, d.into_iter().filter(|(_, c)| *c > 0).collect())
        })
        .collect();
        let mut existing = Vec::new();
        for n in nodes {
            for p in n.anti_affine() {
                let owner_ns = p["metadata"]["namespace"].as_str().unwrap_or("");
                for t in terms(
                    p,
                    "podAntiAffinity",
                    "requiredDuringSchedulingIgnoredDuringExecution",
                ) {
                    let key = t["topologyKey"].as_str().unwrap_or("");
                    if let Some(v) = n.label(key)
                        && term_selects(t, owner_ns, pod)
                    {
                        existing.push((key.to_string(), v));
                    }
                }
            }
        }
        let (mut spread, mut soft_spread) = (Vec::new(), Vec::new());
        for c in pod["spec"]["topologySpreadConstraints"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = c["topologyKey"].as_str().unwrap_or("").to_string();
            let term = serde_json::json!({"labelSelector": c["labelSelector"]});
            // as upstream's default nodeAffinityPolicy (Honor): only nodes the pod could
            // go to by its selector and node affinity make up the domains
            let eligible: Vec<&NodeInfo> = nodes
                .iter()
                .filter(|n| n.is_present() && selector_matches(pod, n.node()))
                .collect();
            let mut counts: HashMap<&str, i64> = HashMap::new();
            for n in eligible {
                if let Some(v) = n.label(&key) {
                    *counts.entry(v).or_default() += n
                        .pods()
                        .filter(|p| {
                            p["metadata"]["deletionTimestamp"].is_null()
                                && term_selects(&term, ns, p)
                        })
                        .count() as i64;
                }
            }
            let s = Spread {
                min: counts.values().copied().min().unwrap_or(0),
                key,
                max_skew: c["maxSkew"].as_i64().unwrap_or(1),
                counts,
            };
            if c["whenUnsatisfiable"] == "DoNotSchedule" {
                spread.push(s);
            } else {
                soft_spread.push(s);
            }
        }
        let mut preferred = Vec::new();
        for (kind, sign) in [("podAffinity", 1), ("podAntiAffinity", -1)] {
            for p in terms(pod, kind, "preferredDuringSchedulingIgnoredDuringExecution") {
                let (key, d) = count(&p["podAffinityTerm"]);
                preferred.push((key, sign * p["weight"].as_i64().unwrap_or(0), d));
            }
        }
        Prepared {
            affinity,
            anti,
            existing,
            spread,
            soft_spread,
            preferred,
        }
    }

    /// Upstream's reasons why `info` is ruled out by the rules across nodes.
    pub fn filter(&self, info: &NodeInfo) -> Vec<String> {
        let mut why = Vec::new();
        let in_domain =
            |key: &str, d: &HashMap<&str, i64>| info.label(key).is_some_and(|v| d.contains_key(v));
        if self
            .affinity
            .iter()
            .any(|(key, d, first)| !(in_domain(key, d) || (*first && info.label(key).is_some())))
        {
            why.push("node(s) didn't match pod affinity rules".to_string());
        }
        if self.anti.iter().any(|(key, d)| in_domain(key, d)) {
            why.push("node(s) didn't match pod anti-affinity rules".to_string());
        }
        if self
            .existing
            .iter()
            .any(|(key, v)| info.label(key) == Some(*v))
        {
            why.push("node(s) didn't satisfy existing pods anti-affinity rules".to_string());
        }
        for s in &self.spread {
            let Some(mine) = info.label(&s.key) else {
                why.push(
                    "node(s) didn't match pod topology spread constraints (missing required label)"
                        .to_string(),
                );
                continue;
            };
            let skew = s.counts.get(mine).copied().unwrap_or(0) + 1 - s.min;
            if skew > s.max_skew {
                why.push("node(s) didn't match pod topology spread constraints".to_string());
            }
        }
        why
    }

    /// Raw scores for `info`: preferred inter-pod affinity (higher is better) and the
    /// matching pods in its domains of `ScheduleAnyway` spread constraints (lower is
    /// better); `place` normalises both across the feasible nodes.
    pub fn scores(&self, info: &NodeInfo) -> (i64, i64) {
        let at = |key: &str, d: &HashMap<&str, i64>| {
            info.label(key).and_then(|v| d.get(v).copied()).unwrap_or(0)
        };
        let affinity = self.preferred.iter().map(|(k, w, d)| w * at(k, d)).sum();
        let spread = self.soft_spread.iter().map(|s| at(&s.key, &s.counts)).sum();
        (affinity, spread)
    }

    /// Whether the soft spread score means anything for this pod.
    pub fn spreads(&self) -> bool {
        !self.soft_spread.is_empty()
    }
}
