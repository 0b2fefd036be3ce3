//! Start-up of the control plane: store → PKI → API → controllers → (agent).
//! This build starts the datastore and its compactor; the API server and the rest
//! follow in their own issues.

#[cfg(test)]
pub mod harness;
mod in_process;

pub use in_process::InProcess;

use crate::apiserver;
use crate::pki::{self, PkiOptions, kubeconfig};
use crate::store::etcd::{EtcdOptions, EtcdStore};
use crate::store::sled::{SledOptions, SledStore};
use crate::store::{Store, compactor};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What stops a server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting that cannot be used; the message names it.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Api(#[from] apiserver::ApiError),
    /// An object every cluster starts with could not be written.
    #[error("creating {0}: {1}")]
    Bootstrap(&'static str, String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("a start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The one resolved configuration of a server, handed down to every component.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub https_listen_port: u16,
    pub cluster_cidr: crate::config::Ipv4Net,
    pub service_cidr: crate::config::Ipv4Net,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    pub tls_san: Vec<String>,
    /// Node IPs (`--node-ip`, else the machine's own addresses).
    pub node_ips: Vec<IpAddr>,
    /// `--node-external-ip`.
    pub node_external_ips: Vec<IpAddr>,
    /// `--flannel-backend`, which every agent learns when it joins.
    pub flannel_backend: crate::config::FlannelBackend,
    /// `--disable`: packaged components not to run.
    pub disable: crate::config::Disabled,
    pub disable_kube_proxy: bool,
    pub disable_network_policy: bool,
    pub write_kubeconfig: PathBuf,
    pub write_kubeconfig_mode: u32,
    pub disable_agent: bool,
    pub datastore: DatastoreConfig,
    pub compaction_interval: Duration,
    pub node_monitor_grace_period: Duration,
    pub service_node_port_range: crate::config::PortRange,
    pub cronjob_clock_skew: i64,
    pub event_ttl: Duration,
    pub service_account_max_token_expiration: Option<Duration>,
    pub anonymous_auth: bool,
    /// `--watch-cache`: lists and watches from memory.
    pub watch_cache: bool,
    pub audit: Option<apiserver::audit::AuditConfig>,
    /// Pod Security defaults and exemptions (`--pod-security-admission-config-file`).
    pub pod_security: apiserver::admission::pod_security::PodSecurityConfig,
    pub max_requests_inflight: usize,
    pub max_mutating_requests_inflight: usize,
    pub terminated_pod_gc_threshold: usize,
    /// `--token`: the join secret (or a whole K10 token) agents must present.
    pub token: Option<String>,
    /// `--agent-token`: a second secret that lets agents (only) join.
    pub agent_token: Option<String>,
    /// The embedded agent's node (checked with the rest of the configuration, before
    /// anything starts).
    pub node: Option<crate::config::NodeConfig>,
    pub debug: bool,
}

/// Which datastore to use.
#[derive(Clone, Debug)]
pub enum DatastoreConfig {
    Sled(SledOptions),
    Etcd(EtcdOptions),
}

impl ServerConfig {
    /// The URL local clients use: loopback when listening on every address.
    pub fn api_url(&self) -> String {
        let host = match self.bind_address {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("https://{host}:{}", self.https_listen_port)
    }
}

/// Opens the configured datastore.
pub async fn open_store(cfg: &DatastoreConfig) -> Result<Arc<dyn Store>, ServerError> {
    Ok(match cfg {
        DatastoreConfig::Sled(opts) => {
            let opts = opts.clone();
            Arc::new(tokio::task::spawn_blocking(move || SledStore::open(opts)).await??)
        }
        DatastoreConfig::Etcd(opts) => Arc::new(EtcdStore::connect(opts).await?),
    })
}

/// A running API server.
pub struct ApiHandle {
    pub addr: std::net::SocketAddr,
    pub pki: pki::ServerPki,
    /// The running API, for the server's own in-process calls.
    pub ctx: Arc<apiserver::ApiContext>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    controllers: tokio::task::JoinHandle<()>,
}

impl ApiHandle {
    pub async fn stop(self) {
        self.controllers.abort();
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = self.controllers.await;
    }
}

/// The API part of start-up: initial namespaces → PKI → controllers → HTTPS listener. Used by
/// `skua server` and by `skua bench api`.
pub async fn start_api(
    store: Arc<dyn Store>,
    cfg: &ServerConfig,
) -> Result<ApiHandle, ServerError> {
    let ranges = apiserver::resources::allocate::ServiceRanges::new(
        cfg.service_cidr,
        cfg.service_node_port_range,
    )
    .ok_or_else(|| {
        ServerError::Config(format!(
            "--service-cidr {} is not an IPv4 range of /8 to /30",
            cfg.service_cidr
        ))
    })?;
    apiserver::resources::bootstrap(&*store)
        .await
        .map_err(|s| ServerError::Bootstrap("the initial namespaces", s.message))?;
    apiserver::resources::bootstrap_rbac(&*store)
        .await
        .map_err(|s| ServerError::Bootstrap("the default RBAC policy", s.message))?;
    let pki = {
        let opts = PkiOptions {
            dir: cfg.data_dir.join("server").join("tls"),
            cluster_domain: cfg.cluster_domain.clone(),
            service_cidr: cfg.service_cidr.to_string(),
            node_ips: cfg.node_ips.clone(),
            tls_sans: cfg.tls_san.clone(),
        };
        tokio::task::spawn_blocking(move || pki::ensure(&opts)).await??
    };
    let join_secret = pki::join::ensure_token(
        &cfg.data_dir.join("server"),
        cfg.token.as_deref(),
        &pki.server_ca_cert,
    )?;
    // --agent-token (k3s): agents may join with it or with the server token
    let mut join_secrets = vec![join_secret];
    if let Some(agent) = pki::join::ensure_agent_token(
        &cfg.data_dir.join("server"),
        cfg.agent_token.as_deref(),
        &pki.server_ca_cert,
    )? {
        join_secrets.push(agent);
    }
    let listener = apiserver::bind(std::net::SocketAddr::new(
        cfg.bind_address,
        cfg.https_listen_port,
    ))
    .await?;
    let addr = listener.local_addr()?;
    // where the API is reached: the bind address if it names one, else the node IP
    let endpoint = (!cfg.bind_address.is_unspecified())
        .then_some(cfg.bind_address)
        .or_else(|| cfg.node_ips.first().copied())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    apiserver::resources::bootstrap_kubernetes_service(&*store, &ranges, endpoint, addr.port())
        .await
        .map_err(|s| ServerError::Bootstrap("the kubernetes service", s.message))?;
    // a cluster whose DNS address some service already holds keeps running; DNS is
    // still answered on the address, only the Service object is missing
    let dns_on = !cfg.disable.coredns;
    if !dns_on {
        // --disable coredns: whoever brings DNS brings its Service
    } else if let Err(s) =
        apiserver::resources::bootstrap_dns_service(&*store, &ranges, cfg.cluster_dns).await
    {
        tracing::warn!(address = %cfg.cluster_dns, error = %s.message, "cannot create the kube-dns service");
    }
    let mut tokens =
        apiserver::tokens::TokenAuthority::new(&pki.service_account_key, &cfg.cluster_domain)
            .map_err(|e| ServerError::Config(format!("the service-account key: {e}")))?;
    tokens.max_expiration = cfg
        .service_account_max_token_expiration
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let metrics = Arc::new(apiserver::metrics::Metrics::default());
    let host = if cfg.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        cfg.bind_address.to_string()
    };
    let store: Arc<dyn Store> = Arc::new(apiserver::metrics::InstrumentedStore::new(
        store,
        metrics.clone(),
    ));
    let rbac: Arc<apiserver::rbac::Rbac> = Default::default();
    let ctx = Arc::new(apiserver::ApiContext {
        store: store.clone(),
        tokens,
        metrics,
        server_address: format!("{host}:{}", addr.port()),
        watch_memo: Default::default(),
        node_graph: Default::default(),
        rbac: rbac.clone(),
        inflight: apiserver::inflight::Inflight::new(
            cfg.max_requests_inflight,
            cfg.max_mutating_requests_inflight,
        ),
        anonymous_auth: cfg.anonymous_auth,
        audit: match &cfg.audit {
            Some(a) => Some(apiserver::audit::AuditLog::start(a.clone()).map_err(|e| {
                ServerError::Config(format!("--audit-log-path {}: {e}", a.path.display()))
            })?),
            None => None,
        },
        join: Some(apiserver::join::JoinConfig {
            secrets: join_secrets,
            failures: Default::default(),
            server_ca: pki.server_ca_cert.clone(),
            tls_dir: cfg.data_dir.join("server").join("tls"),
            agent_config: apiserver::join::AgentConfig {
                cluster_cidr: cfg.cluster_cidr.to_string(),
                service_cidr: cfg.service_cidr.to_string(),
                flannel_backend: cfg.flannel_backend.name().to_string(),
                cluster_dns: cfg.cluster_dns.to_string(),
                cluster_domain: cfg.cluster_domain.clone(),
                disable_dns: cfg.disable.coredns,
                disable_kube_proxy: cfg.disable_kube_proxy,
                disable_network_policy: cfg.disable_network_policy,
            },
        }),
        service_ranges: ranges,
        admission: apiserver::admission::Chain::server(rbac, cfg.pod_security.clone()),
        watch_cache: apiserver::watchcache::WatchCaches::new(store.clone(), cfg.watch_cache),
        kubelet_tls: Default::default(),
        registry: Default::default(),
    });
    let instance = std::fs::canonicalize(&cfg.data_dir)
        .unwrap_or_else(|_| cfg.data_dir.clone())
        .display()
        .to_string();
    let identity_ctx = ctx.clone();
    let controllers = crate::controllers::start(
        Arc::new(move |name: &str| {
            InProcess::acting_as(identity_ctx.clone(), name, "skua-controller-manager")
        }),
        &instance,
        crate::controllers::Settings {
            cluster_cidr: cfg.cluster_cidr,
            node_monitor_grace_period: cfg.node_monitor_grace_period,
            cronjob_clock_skew: cfg.cronjob_clock_skew,
            event_ttl: cfg.event_ttl,
            terminated_pod_gc_threshold: cfg.terminated_pod_gc_threshold,
            root_ca: pki.server_ca_cert.clone(),
            servicelb: !cfg.disable.servicelb,
        },
        vec![("system:kube-scheduler", |cx| {
            Box::pin(crate::scheduler::run(cx))
        })],
    );
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(apiserver::serve(
        listener,
        apiserver::tls_config(&pki)?,
        ctx.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    tracing::info!(%addr, "API server listening");
    Ok(ApiHandle {
        addr,
        pki,
        ctx,
        stop,
        task,
        controllers,
    })
}

/// Runs `skua server` until SIGINT or SIGTERM.
pub async fn run(cfg: ServerConfig) -> Result<(), ServerError> {
    tracing::info!(version = crate::VERSION, data_dir = %cfg.data_dir.display(), "starting skua server");
    // the datastore, the CAs' keys and the token: root only, also for older installs
    // the data dir itself may be a link the operator made (/var/lib/skua -> /data)
    let data_dir = std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
    for dir in [data_dir.clone(), data_dir.join("server")] {
        crate::pki::private_dir(&dir)?;
    }
    let store = open_store(&cfg.datastore).await?;
    let revision = store.current_revision().await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let compaction = tokio::spawn(compactor::run(
        store.clone(),
        cfg.compaction_interval,
        async {
            let _ = stop_rx.await;
        },
    ));
    tracing::info!(backend = store.backend(), revision, "datastore ready");
    let api = start_api(store.clone(), &cfg).await?;
    let kubeconfig_text = kubeconfig::render(
        &cfg.api_url(),
        &api.pki.server_ca_cert,
        &api.pki.admin_cert,
        &api.pki.admin_key,
    );
    kubeconfig::write(
        &cfg.write_kubeconfig,
        cfg.write_kubeconfig_mode,
        &kubeconfig_text,
    )?;
    tracing::info!(path = %cfg.write_kubeconfig.display(), "wrote admin kubeconfig");
    let (agent, labeller) = if cfg.disable_agent {
        (None, None)
    } else {
        let labeller = tokio::spawn(label_control_plane(
            InProcess::client(api.ctx.clone(), "system:skua-server", "skua-server"),
            crate::agent::node_name(cfg.node.as_ref().and_then(|n| n.node_name.as_deref())),
        ));
        (Some(tokio::spawn(embedded_agent(&cfg)?)), Some(labeller))
    };
    wait_for_shutdown().await?;
    tracing::info!("shutting down");
    if let Some(labeller) = labeller {
        labeller.abort();
    }
    if let Some(agent) = agent {
        // the agent heard the same signal: it stops its containerd (containers run on)
        let _ = tokio::time::timeout(Duration::from_secs(20), agent).await;
    }
    api.stop().await;
    let _ = stop_tx.send(());
    let _ = compaction.await;
    drop(store); // the sled store flushes and closes when its last handle goes
    Ok(())
}

/// The role label of the embedded agent's node. The server sets it, as k3s' server
/// does: a node's own credentials may not (NodeRestriction), so a worker cannot
/// make itself look like a control-plane node.
async fn label_control_plane(client: crate::client::ApiClient, node: String) {
    let patch = serde_json::json!({"metadata": {"labels": {
        crate::agent::node::CONTROL_PLANE_LABEL: "true",
    }}});
    let path = format!("/api/v1/nodes/{node}");
    loop {
        match client.patch(&path, &patch).await {
            Ok(_) => {
                tracing::debug!(%node, "labelled the control-plane node");
                return;
            }
            Err(e) if e.is_not_found() => {} // the agent has not registered yet
            Err(e) => {
                tracing::warn!(%node, error = %e, "cannot label the control-plane node; retrying")
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The agent `skua server` runs by default (k3s' embedded agent): it joins this
/// server over loopback with the server's own token, as any agent would; the server
/// labels its node a control-plane node ([`label_control_plane`]).
fn embedded_agent(
    cfg: &ServerConfig,
) -> Result<impl std::future::Future<Output = ()> + use<>, ServerError> {
    let token_file = cfg.data_dir.join("server").join("node-token");
    let token = std::fs::read_to_string(&token_file).map_err(|e| {
        ServerError::Config(format!(
            "cannot read the join token {}: {e}",
            token_file.display()
        ))
    })?;
    let node = cfg
        .node
        .clone()
        .ok_or_else(|| ServerError::Config("the embedded agent has no node settings".into()))?;
    let agent = crate::config::AgentConfig {
        data_dir: cfg.data_dir.clone(),
        server: cfg.api_url(),
        token: token.trim().to_string(),
        cluster_dns: Some(cfg.cluster_dns),
        cluster_domain: Some(cfg.cluster_domain.clone()),
        node,
        debug: cfg.debug,
    };
    Ok(async move {
        if let Err(e) = crate::agent::run(agent).await {
            tracing::error!(error = %format!("{e:#}"), "the embedded agent stopped; the control plane keeps running (use --disable-agent for a control-plane-only server)");
        }
    })
}

async fn wait_for_shutdown() -> Result<(), ServerError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
