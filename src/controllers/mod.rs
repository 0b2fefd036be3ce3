//! The control loops that run inside `skua server`. Each is level-triggered: it reads
//! what is current from the shared informers (one copy of each object per process),
//! writes through the API like any client (an in-process client with a system
//! identity, so validation and field tracking apply), and converges again after a
//! restart at any point. They run only while this server holds the controller lease.

pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod gc;
mod harness_tests;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod revisions;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;

use crate::api::registry;
use crate::client::ApiClient;
pub use crate::runtime::Context;
pub use crate::runtime::controller::{next_pass, resync};
use std::sync::Arc;

/// What the control loops need from the server's configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Pod ranges for nodes are cut from this (`--cluster-cidr`).
    pub cluster_cidr: crate::config::Ipv4Net,
    /// A node silent this long is unreachable.
    pub node_monitor_grace_period: std::time::Duration,
    /// Seconds added to the CronJob clock (tests only).
    pub cronjob_clock_skew: i64,
    /// Events older than this are deleted (`--event-ttl`).
    pub event_ttl: std::time::Duration,
    /// Terminated pods beyond this many are deleted, oldest first (0: never).
    pub terminated_pod_gc_threshold: usize,
    /// The CA bundle published to every namespace as `kube-root-ca.crt`.
    pub root_ca: String,
    /// Whether ServiceLB serves LoadBalancer services (`--disable servicelb` turns it off).
    pub servicelb: bool,
}

/// A loop the assembly adds to each term (the scheduler), sharing its informers.
pub type Loop = fn(Arc<Context>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A client acting as the named identity: a user when the name is one of upstream's
/// component users (`system:kube-controller-manager`, `system:kube-scheduler`), else
/// the service account of that name in `kube-system` (as kube-controller-manager's
/// `--use-service-account-credentials`, which k3s sets).
pub type Identity = Arc<dyn Fn(&str) -> ApiClient + Send + Sync>;

/// The user the controller manager itself acts as (leader election, the informers).
pub const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";

/// Starts the control loops (and `others`, each with the identity it names) under
/// leader election; each loop writes as its own identity, the informers list and
/// watch as the controller manager. They stop when the returned task is aborted.
///
/// `instance` names this server stably across restarts (its data directory), so a
/// server restarted after a crash takes its own lease back at once instead of waiting
/// for it to expire.
pub fn start(
    identity: Identity,
    instance: &str,
    settings: Settings,
    others: Vec<(&'static str, Loop)>,
) -> tokio::task::JoinHandle<()> {
    let digest = ring::digest::digest(&ring::digest::SHA256, instance.as_bytes());
    let id: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let holder = format!("{}_{id}", hostname());
    let client = identity(CONTROLLER_MANAGER);
    tokio::spawn(async move {
        let election = crate::runtime::leader::Election {
            // upstream's lease, which system:kube-controller-manager may hold
            name: "kube-controller-manager".into(),
            identity: holder,
            duration_secs: 15,
        };
        loop {
            election.acquire(&client).await;
            // one context per term: dropped with this task, or stopped at its end
            let cx = Context::new(client.clone());
            let _term = Term(cx.clone());
            let as_ = |name: &str| cx.acting_as(identity(name));
            spawn_loops(&cx, &as_, &settings, &others);
            election.keep(&client).await;
            cx.stop();
        }
    })
}

/// One term's loops, each under upstream's identity for it.
fn spawn_loops(
    cx: &Arc<Context>,
    as_: &dyn Fn(&str) -> Arc<Context>,
    settings: &Settings,
    others: &[(&'static str, Loop)],
) {
    cx.spawn(namespace::run(
        as_("namespace-controller"),
        as_("generic-garbage-collector"),
    ));
    cx.spawn(replicaset::run(
        as_("replicaset-controller"),
        &registry::REPLICASETS,
    ));
    cx.spawn(replicaset::run(
        as_("replication-controller"),
        &registry::REPLICATIONCONTROLLERS,
    ));
    cx.spawn(deployment::run(as_("deployment-controller")));
    cx.spawn(clusterrole_aggregation::run(as_(
        "clusterrole-aggregation-controller",
    )));
    cx.spawn(gc::run(as_("generic-garbage-collector")));
    for (name, other) in others {
        cx.spawn(other(as_(name)));
    }
    cx.spawn(serviceaccount::run(
        as_("service-account-controller"),
        as_("root-ca-cert-publisher"),
        settings.root_ca.clone(),
    ));
    cx.spawn(job::run(as_("job-controller")));
    cx.spawn(resourcequota::run(as_("resourcequota-controller")));
    cx.spawn(disruption::run(as_("disruption-controller")));
    cx.spawn(daemonset::run(as_("daemon-set-controller")));
    cx.spawn(endpoints::run(
        as_("endpoint-controller"),
        as_("endpointslice-controller"),
    ));
    if settings.servicelb {
        cx.spawn(servicelb::run(as_(servicelb::IDENTITY)));
    }
    cx.spawn(statefulset::run(as_("statefulset-controller")));
    cx.spawn(cronjob::run(
        as_("cronjob-controller"),
        settings.cronjob_clock_skew,
    ));
    cx.spawn(nodelifecycle::run(
        as_("node-controller"),
        settings.node_monitor_grace_period,
    ));
    cx.spawn(podgc::run(
        as_("pod-garbage-collector"),
        settings.node_monitor_grace_period,
        settings.terminated_pod_gc_threshold,
    ));
    cx.spawn(nodeipam::run(as_("node-controller"), settings.cluster_cidr));
    // events expire as upstream's storage TTL has them: the API server's own doing
    cx.spawn(events::expire(
        as_(EVENT_TTL).client.clone(),
        settings.event_ttl,
    ));
}

/// Who deletes expired events: the API server itself (upstream's events expire in
/// storage, which no authorizer sees).
pub const EVENT_TTL: &str = "system:apiserver";

/// Stops a term's context when the control-loop task ends, however it ends (its tasks
/// hold the context, so dropping it alone would not).
struct Term(Arc<Context>);

impl Drop for Term {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "skua".into())
}

/// The owner reference of `obj` that is its controller, if any.
pub fn controller_of(obj: &serde_json::Value) -> Option<&serde_json::Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
}

/// An owner reference naming `owner` as controller.
pub fn controller_ref(owner: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    })
}
