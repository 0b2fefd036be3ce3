//! The control loops that run inside `skua server`. Each is level-triggered: it reads
//! what is current from the shared informers (one copy of each object per process),
//! writes through the API like any client (an in-process client with a system
//! identity, so validation and field tracking apply), and converges again after a
//! restart at any point. They run only while this server holds the controller lease.

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

/// Starts the control loops (and `others`) under leader election, calling the API
/// through `client`; they stop when the returned task is aborted.
///
/// `instance` names this server stably across restarts (its data directory), so a
/// server restarted after a crash takes its own lease back at once instead of waiting
/// for it to expire.
pub fn start(
    client: ApiClient,
    instance: &str,
    settings: Settings,
    others: Vec<Loop>,
) -> tokio::task::JoinHandle<()> {
    let digest = ring::digest::digest(&ring::digest::SHA256, instance.as_bytes());
    let id: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let identity = format!("{}_{id}", hostname());
    tokio::spawn(async move {
        let election = crate::runtime::leader::Election {
            name: "skua-controller-manager".into(),
            identity,
            duration_secs: 15,
        };
        loop {
            election.acquire(&client).await;
            // one context per term: dropped with this task, or stopped at its end
            let cx = Context::new(client.clone());
            let _term = Term(cx.clone());
            let loops = &cx;
            loops.spawn(namespace::run(cx.clone()));
            loops.spawn(replicaset::run(cx.clone(), &registry::REPLICASETS));
            loops.spawn(replicaset::run(
                cx.clone(),
                &registry::REPLICATIONCONTROLLERS,
            ));
            loops.spawn(deployment::run(cx.clone()));
            loops.spawn(gc::run(cx.clone()));
            for other in &others {
                loops.spawn(other(cx.clone()));
            }
            loops.spawn(serviceaccount::run(cx.clone(), settings.root_ca.clone()));
            loops.spawn(job::run(cx.clone()));
            loops.spawn(resourcequota::run(cx.clone()));
            loops.spawn(disruption::run(cx.clone()));
            loops.spawn(daemonset::run(cx.clone()));
            loops.spawn(endpoints::run(cx.clone()));
            if settings.servicelb {
                loops.spawn(servicelb::run(cx.clone()));
            }
            loops.spawn(statefulset::run(cx.clone()));
            loops.spawn(cronjob::run(cx.clone(), settings.cronjob_clock_skew));
            loops.spawn(nodelifecycle::run(
                cx.clone(),
                settings.node_monitor_grace_period,
            ));
            loops.spawn(podgc::run(
                cx.clone(),
                settings.node_monitor_grace_period,
                settings.terminated_pod_gc_threshold,
            ));
            loops.spawn(nodeipam::run(cx.clone(), settings.cluster_cidr));
            loops.spawn(events::expire(client.clone(), settings.event_ttl));
            election.keep(&client).await;
            cx.stop();
        }
    })
}

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
