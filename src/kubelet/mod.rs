//! The kubelet: runs the pods bound to this node through the container runtime.
//!
//! One worker per pod (as upstream's pod workers) syncs it level-triggered against
//! what CRI reports (`sync.rs`) whenever the pod changes and every second (probes,
//! restarts); the spec-to-CRI mapping is `spec.rs`, the status `status.rs`, volumes
//! `volumes.rs`, the environment `env.rs`, probes and hooks `probes.rs`, logs
//! `logs.rs`, pull credentials `pull.rs`, and the HTTPS API on 10250 `server.rs`.
//!
//! A restarted kubelet finds its sandboxes and containers by their labels and adopts
//! them: nothing is restarted. Sandboxes of pods that are no longer bound here are
//! removed by housekeeping.

pub mod atomic_writer;
pub mod containers;
pub mod env;
pub mod eviction;
pub mod logs;
pub mod probes;
pub mod pull;
pub mod security;
pub mod server;
pub mod spec;
pub mod stats;
pub mod status;
pub mod stream;
pub mod subpath;
pub mod sync;
mod sync_tests;
pub mod teardown;
pub mod volumes;

use crate::client::ApiClient;
use crate::cri::Cri;
use crate::runtime::informer::Informer;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What goes wrong syncing a pod or serving the kubelet API.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("the container runtime: {0}")]
    Runtime(#[from] tonic::Status),
    #[error(transparent)]
    Cri(#[from] crate::cri::CriError),
    #[error(transparent)]
    Api(#[from] crate::client::ClientError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error("the kubelet's TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The kubelet's settings (from the agent's flags).
#[derive(Clone, Debug)]
pub struct Settings {
    pub node_name: String,
    /// Pods' volumes and files: `<data-dir>/agent/kubelet`.
    pub root_dir: PathBuf,
    /// `/var/log/pods` (CRI log files by pod).
    pub pod_log_dir: PathBuf,
    /// `/var/log/containers` (links by container, for log collectors).
    pub container_log_dir: PathBuf,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub log_max_size: u64,
    pub log_max_files: usize,
    /// The node's address: pods' `hostIP`.
    pub host_ip: String,
    pub node_cpu: f64,
    pub node_memory: f64,
    /// How often ConfigMap, Secret and projected volumes are written again.
    pub volume_refresh: Duration,
    /// The resolv.conf for pods with `dnsPolicy: Default`.
    pub resolv_conf: PathBuf,
    /// registries.yaml: its rewrite rules change what is pulled.
    pub registries: Arc<crate::cri::registries::Registries>,
    /// Where the runtime keeps images (the imagefs eviction signal).
    pub image_dir: PathBuf,
}

impl Settings {
    #[cfg(test)]
    pub fn for_tests() -> Settings {
        Settings {
            node_name: "n1".into(),
            root_dir: "/tmp/skua-test/kubelet".into(),
            pod_log_dir: "/tmp/skua-test/pods".into(),
            container_log_dir: "/tmp/skua-test/containers".into(),
            cluster_dns: vec!["10.43.0.10".into()],
            cluster_domain: "cluster.local".into(),
            log_max_size: 10 << 20,
            log_max_files: 5,
            host_ip: "192.0.2.1".into(),
            node_cpu: 2.0,
            node_memory: 1e9,
            volume_refresh: Duration::from_secs(10),
            resolv_conf: "/etc/resolv.conf".into(),
            registries: Default::default(),
            image_dir: "/tmp/skua-test/containerd".into(),
        }
    }
}

/// What the kubelet remembers of one pod between syncs (lost on restart, as upstream's
/// in-memory state is; everything else is read back from the runtime).
#[derive(Default)]
pub struct PodMemory {
    start_time: Option<String>,
    /// container name → (current back-off, when it was last restarted)
    backoff: HashMap<String, (Duration, Instant)>,
    /// container id → its probes
    probes: HashMap<String, probes::ProbeState>,
    /// container id → its last full status from the runtime
    statuses: HashMap<String, k8s_cri::v1::ContainerStatus>,
    volumes: Option<HashMap<String, PathBuf>>,
    volumes_at: Option<Instant>,
    pod_ip: String,
    /// The current sandbox's id and address.
    sandbox_ip: Option<(String, Option<String>)>,
    written: Option<Value>,
}

/// The running kubelet.
pub struct Kubelet {
    pub settings: Settings,
    cri: Cri,
    pub client: ApiClient,
    events: crate::runtime::events::Recorder,
    /// The clock and the mounts (fakes in tests).
    host: crate::host::Host,
    pub pods: Arc<Informer>,
    pub services: Arc<Informer>,
    /// pod uid → the worker's inbox (the newest pod object; `None` once deleted)
    workers: Mutex<HashMap<String, watch::Sender<Option<Arc<Value>>>>>,
    /// uids of pods this kubelet evicted: failed, whatever the API still says
    evicted: Mutex<std::collections::HashSet<String>>,
}

/// `/api/v1/namespaces/<ns>/pods/<name>`.
pub fn pod_path(pod: &Value) -> String {
    format!(
        "/api/v1/namespaces/{}/pods/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or(""),
        pod["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// `<ns>/<name>`, for logs.
pub fn pod_key(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or(""),
        pod["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Kubelet {
    pub fn new(settings: Settings, cri: Cri, client: ApiClient) -> Arc<Kubelet> {
        Kubelet::with_host(settings, cri, client, crate::host::Host::system())
    }

    /// A kubelet on `host` (tests give it paused time and listed mounts).
    pub fn with_host(
        settings: Settings,
        cri: Cri,
        client: ApiClient,
        host: crate::host::Host,
    ) -> Arc<Kubelet> {
        let selector = format!("spec.nodeName={}", settings.node_name);
        let pods = Informer::start(client.clone(), &crate::api::registry::PODS, Some(selector));
        let services = Informer::start(client.clone(), &crate::api::registry::SERVICES, None);
        Arc::new(Kubelet {
            settings,
            cri,
            events: crate::runtime::events::Recorder::new(client.clone()),
            host,
            client,
            pods,
            services,
            workers: Mutex::new(HashMap::new()),
            evicted: Mutex::new(Default::default()),
        })
    }

    /// A handle on the runtime (tonic clients are cheap to clone).
    pub fn cri(&self) -> Cri {
        self.cri.clone()
    }

    /// The reference the runtime pulls and runs for `image` (registries.yaml rewrites).
    pub fn effective_image(&self, image: &str) -> String {
        self.settings
            .registries
            .rewrite(image)
            .unwrap_or_else(|| image.to_string())
    }

    fn host_resolv(&self) -> String {
        std::fs::read_to_string(&self.settings.resolv_conf).unwrap_or_default()
    }

    /// Records an event about `pod` from this kubelet.
    fn event(&self, pod: &Value, warning: bool, reason: &'static str, message: String) {
        if warning {
            tracing::warn!(pod = %pod_key(pod), reason, "{message}");
        } else {
            tracing::debug!(pod = %pod_key(pod), reason, "{message}");
        }
        let mut about = pod.clone();
        about["kind"] = Value::from("Pod");
        about["apiVersion"] = Value::from("v1");
        self.events
            .emit(&about, warning, reason, message, "kubelet");
    }

    /// Runs until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.pods.subscribe();
        self.pods.synced().await;
        self.services.synced().await;
        for pod in self.pods.list(None) {
            self.dispatch(pod);
        }
        let mut housekeeping = tokio::time::interval(Duration::from_secs(20));
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some(change) = change else { break };
                    let (old_uid, new_uid) = (
                        change.old.as_ref().and_then(|o| o["metadata"]["uid"].as_str().map(String::from)),
                        change.new.as_ref().and_then(|n| n["metadata"]["uid"].as_str().map(String::from)),
                    );
                    if let Some(old) = old_uid.filter(|u| Some(u) != new_uid.as_ref()) {
                        if let Some(tx) = lock(&self.workers).get(&old) {
                            tx.send_replace(None);
                        }
                    }
                    if let Some(pod) = change.new {
                        self.dispatch(pod);
                    }
                }
                _ = housekeeping.tick() => self.clone().housekeeping().await,
                _ = stop.changed() => break,
            }
        }
    }

    /// Hands the newest `pod` to its worker, starting one if it has none.
    fn dispatch(self: &Arc<Self>, pod: Arc<Value>) {
        let Some(uid) = pod["metadata"]["uid"].as_str().map(String::from) else {
            return;
        };
        let mut workers = lock(&self.workers);
        if let Some(tx) = workers.get(&uid) {
            tx.send_replace(Some(pod));
            return;
        }
        let (tx, rx) = watch::channel(Some(pod));
        workers.insert(uid.clone(), tx);
        tokio::spawn(self.clone().work(uid, rx));
    }

    async fn work(self: Arc<Self>, uid: String, mut rx: watch::Receiver<Option<Arc<Value>>>) {
        let mut memory = PodMemory::default();
        loop {
            let pod = rx.borrow_and_update().clone();
            match self.sync_pod(&uid, pod.as_deref(), &mut memory).await {
                Ok(sync::Outcome::Gone) => break,
                Ok(sync::Outcome::Again) => {}
                Err(e) => tracing::warn!(pod = %uid, error = %e, "pod sync failed; retrying"),
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        lock(&self.workers).remove(&uid);
        lock(&self.evicted).remove(&uid);
    }

    /// Removes what the runtime still holds of pods that are no longer bound here
    /// (deleted while the agent was down, or bound elsewhere).
    async fn housekeeping(self: Arc<Self>) {
        let Ok(list) = self
            .cri()
            .runtime
            .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest { filter: None })
            .await
        else {
            return;
        };
        let known: std::collections::HashSet<String> = self
            .pods
            .list(None)
            .iter()
            .filter_map(|p| p["metadata"]["uid"].as_str().map(String::from))
            .collect();
        for sb in list.into_inner().items {
            let Some(uid) = sb.labels.get(spec::POD_UID).cloned() else {
                continue;
            };
            if known.contains(&uid) || lock(&self.workers).contains_key(&uid) {
                continue;
            }
            tracing::info!(pod = %uid, "removing the remains of a pod no longer bound here");
            self.remove_pod(&uid, None).await;
        }
    }
}
