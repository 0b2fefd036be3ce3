//! `skua bench rbac`: authorization decisions from the RBAC index, at the size issue 17
//! names (10 000 RoleBindings, 1 000 ClusterRoles): decisions per second on one core
//! and the latency of one decision, allowed and denied requests mixed.

use crate::api::rbac::Request;
use crate::apiserver::rbac::{Caller, Rbac};
use clap::Args;
use serde_json::json;
use std::time::{Duration, Instant};

/// `skua bench rbac` options.
#[derive(Args, Debug)]
pub struct RbacBenchArgs {
    /// ClusterRoles in the index.
    #[arg(long, default_value_t = 1000)]
    pub cluster_roles: usize,
    /// RoleBindings in the index, spread over `--namespaces`.
    #[arg(long, default_value_t = 10_000)]
    pub role_bindings: usize,
    /// Namespaces the bindings are spread over.
    #[arg(long, default_value_t = 100)]
    pub namespaces: usize,
    /// Decisions timed.
    #[arg(long, default_value_t = 200_000)]
    pub decisions: usize,
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

const GROUPS: [&str; 5] = ["", "apps", "batch", "networking.k8s.io", "example.com"];
const VERBS: [&str; 6] = ["get", "list", "watch", "create", "update", "delete"];

/// The index: ClusterRoles of 8 rules each, RoleBindings of a ServiceAccount and a
/// team group to one of them, and 50 ClusterRoleBindings of groups.
fn build(a: &RbacBenchArgs) -> Rbac {
    let rbac = Rbac::default();
    for r in 0..a.cluster_roles {
        let rules: Vec<_> = (0..8)
            .map(|k| {
                json!({"apiGroups": [GROUPS[(r + k) % GROUPS.len()]],
                       "resources": [format!("res{}", (r * 8 + k) % 200)],
                       "verbs": &VERBS[..3 + (k % 3)]})
            })
            .collect();
        rbac.insert(&json!({"kind": "ClusterRole", "metadata": {"name": format!("role-{r}")}, "rules": rules}));
    }
    for b in 0..a.role_bindings {
        let ns = format!("ns-{}", b % a.namespaces);
        let sa = b / a.namespaces;
        rbac.insert(&json!({"kind": "RoleBinding",
            "metadata": {"name": format!("rb-{b}"), "namespace": ns},
            "roleRef": {"kind": "ClusterRole", "name": format!("role-{}", (b * 7) % a.cluster_roles.max(1))},
            "subjects": [{"kind": "ServiceAccount", "name": format!("sa-{sa}")},
                         {"kind": "Group", "name": format!("team-{}", b % 20)}]}));
    }
    for c in 0..50 {
        rbac.insert(&json!({"kind": "ClusterRoleBinding", "metadata": {"name": format!("crb-{c}")},
            "roleRef": {"kind": "ClusterRole", "name": format!("role-{}", c * 13 % a.cluster_roles.max(1))},
            "subjects": [{"kind": "Group", "name": format!("team-{}", c % 20)}]}));
    }
    rbac
}

/// Runs the benchmark and prints its table.
pub async fn run(a: RbacBenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let rbac = build(&a);
    let built = started.elapsed();
    let per_ns = (a.role_bindings / a.namespaces.max(1)).max(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut times = Vec::with_capacity(a.decisions);
    let mut allowed = 0usize;
    let wall = Instant::now();
    for _ in 0..a.decisions {
        let n = rng.below(a.namespaces);
        let sa = rng.below(per_ns);
        let ns = format!("ns-{n}");
        let name = format!("system:serviceaccount:{ns}:sa-{sa}");
        let groups = vec![
            format!("team-{}", rng.below(40)),
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".to_string(),
        ];
        // half the requests ask what the caller's own binding grants (allowed), half
        // anything (mostly denied: every binding of the caller is looked at)
        let (group, resource, verb) = if rng.below(2) == 0 {
            let role = ((sa * a.namespaces + n) * 7) % a.cluster_roles.max(1);
            let k = rng.below(8);
            (
                GROUPS[(role + k) % GROUPS.len()],
                format!("res{}", (role * 8 + k) % 200),
                VERBS[rng.below(3)],
            )
        } else {
            (
                GROUPS[rng.below(GROUPS.len())],
                format!("res{}", rng.below(200)),
                VERBS[rng.below(VERBS.len())],
            )
        };
        let request = Request {
            verb,
            resource_request: true,
            group,
            resource: &resource,
            subresource: "",
            name: "",
            path: "",
        };
        let caller = Caller {
            name: &name,
            groups: &groups,
        };
        let t = Instant::now();
        allowed += usize::from(rbac.allows(&caller, &ns, &request));
        times.push(t.elapsed());
    }
    let total = wall.elapsed();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "skua bench rbac: {} ClusterRoles, {} RoleBindings over {} namespaces, 50 ClusterRoleBindings; {} decisions on one thread\n",
        a.cluster_roles, a.role_bindings, a.namespaces, a.decisions
    );
    println!("| measure | value |\n|---|---:|");
    println!(
        "| index built from the objects | {:.0} ms |",
        built.as_secs_f64() * 1e3
    );
    println!(
        "| decisions / s (one thread, key formatting included) | {:.0} |",
        a.decisions as f64 / total.as_secs_f64()
    );
    println!(
        "| decision p50 / p99 / max | {:.1} / {:.1} / {:.1} µs |",
        us(at(0.5)),
        us(at(0.99)),
        us(at(1.0))
    );
    println!(
        "| allowed | {:.1} % |",
        allowed as f64 * 100.0 / a.decisions.max(1) as f64
    );
    Ok(())
}
