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
pub mod job;
pub mod leader;
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

use crate::api::registry::{self, Resource};
use crate::apiserver::ApiContext;
use crate::client::ApiClient;
use crate::client::watch::Informer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What every control loop shares: the client and the informers.
pub struct Context {
    pub client: ApiClient,
    informers: Mutex<HashMap<(&'static str, &'static str), Arc<Informer>>>,
    /// Every task of this leadership term: the loops, their feeders and resyncs, and
    /// the informers. [`Context::stop`] (or dropping the context) ends them all.
    tasks: crate::runtime::Tasks,
}

impl Context {
    pub fn new(client: ApiClient) -> Arc<Context> {
        Arc::new(Context {
            client,
            informers: Mutex::new(HashMap::new()),
            tasks: crate::runtime::Tasks::new(),
        })
    }

    /// An informer of what `field_selector` selects of `group`/`plural`, for one loop
    /// alone (not shared), owned by this term.
    pub fn selected_informer(
        &self,
        res: &'static Resource,
        field_selector: String,
    ) -> Arc<Informer> {
        let (informer, follow) =
            Informer::following(self.client.clone(), res, Some(field_selector));
        self.tasks.spawn(follow);
        informer
    }

    /// Runs `fut` as a task of this term.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(fut);
    }

    /// Ends the term: every loop and informer stops.
    pub fn stop(&self) {
        self.tasks.stop();
        self.informers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The shared informer of a resource (started on first use).
    pub fn informer(&self, res: &'static Resource) -> Arc<Informer> {
        let mut map = self.informers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((res.group, res.plural))
            .or_insert_with(|| {
                let (informer, follow) = Informer::following(self.client.clone(), res, None);
                self.tasks.spawn(follow);
                informer
            })
            .clone()
    }
}

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

/// Starts the control loops under leader election; they stop when the returned task
/// is aborted.
///
/// `instance` names this server stably across restarts (its data directory), so a
/// server restarted after a crash takes its own lease back at once instead of waiting
/// for it to expire.
pub fn start(
    api: Arc<ApiContext>,
    instance: &str,
    settings: Settings,
) -> tokio::task::JoinHandle<()> {
    let digest = ring::digest::digest(&ring::digest::SHA256, instance.as_bytes());
    let id: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let identity = format!("{}_{id}", hostname());
    tokio::spawn(async move {
        let client = ApiClient::local(
            api,
            "system:kube-controller-manager",
            "skua-controller-manager",
        );
        let election = leader::Election {
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
            loops.spawn(crate::scheduler::run(cx.clone()));
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

/// Queues every object of `informer` now and every `period` (level-triggered: a lost
/// event costs at most one period).
pub fn resync(
    cx: &Context,
    informer: &Arc<Informer>,
    queue: &crate::runtime::queue::WorkQueue,
    period: std::time::Duration,
) {
    let (informer, queue) = (informer.clone(), queue.clone());
    cx.spawn(async move {
        loop {
            for o in informer.list(None) {
                queue.add(crate::client::watch::key_of(&o));
            }
            tokio::time::sleep(period).await;
        }
    });
}

/// Waits for the next pass of a loop that looks at everything each time: a change on
/// either informer (a burst settles into one pass) or 30 s.
pub async fn next_pass(
    a: &mut tokio::sync::mpsc::UnboundedReceiver<crate::client::watch::Change>,
    b: &mut tokio::sync::mpsc::UnboundedReceiver<crate::client::watch::Change>,
) {
    tokio::select! {
        Some(_) = a.recv() => {}
        Some(_) = b.recv() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    while a.try_recv().is_ok() || b.try_recv().is_ok() {}
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
