//! Start-up of a node: join → containerd → kubelet → proxy → overlay → dns.
//! Built so far: joining (`join.rs`), containerd with image import (`containerd.rs`),
//! the node's registration (`node.rs`), the kubelet (`crate::kubelet`) with its HTTPS
//! API, the service proxy (`crate::proxy`), the overlay (`crate::overlay`) and the
//! pods' CNI config at the overlay's MTU (`cni.rs`).

pub(crate) mod cni;
pub mod containerd;
pub(crate) mod join;
pub(crate) mod node;
pub(crate) mod pause;

use crate::config::AgentConfig;
use std::path::PathBuf;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "skua-agent".into())
}

/// The node name an agent registers: `--node-name`, else the host name, lower case.
pub fn node_name(given: Option<&str>) -> String {
    given
        .map(str::to_string)
        .unwrap_or_else(hostname)
        .to_ascii_lowercase()
}

/// What stops an agent from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting (given, or learnt from the server) that cannot be used.
    #[error("{0}")]
    Config(String),
    /// Joining the cluster failed.
    #[error(transparent)]
    Join(#[from] join::JoinError),
    /// The node's credentials could not be written or read.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// The container runtime failed.
    #[error(transparent)]
    Cri(#[from] crate::cri::CriError),
    /// Setting up the node's networking failed.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// The overlay network failed.
    #[error("overlay: {0}")]
    Overlay(#[from] crate::overlay::OverlayError),
    /// Running containerd failed.
    #[error(transparent)]
    Containerd(#[from] containerd::ContainerdError),
    /// Talking to the API server failed.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The kubelet failed.
    #[error(transparent)]
    Kubelet(#[from] crate::kubelet::KubeletError),
    /// The agent's files or directories could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A spawned task panicked or was cancelled.
    #[error("a task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A component that should run until the agent stops ended by itself.
    #[error("{0} stopped")]
    Stopped(&'static str),
}

/// Runs `skua agent` (and the agent `skua server` embeds) with a configuration that
/// `cli` has checked completely: nothing here fails on a flag.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let node_cfg = &cfg.node;
    let server = cfg.server.clone();
    let token = crate::pki::join::Token::parse(&cfg.token)
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let name = node_name(node_cfg.node_name.as_deref());
    let dir = cfg.data_dir.join("agent");
    // node credentials, pod volumes and registry passwords: root only
    // the data dir itself may be a link the operator made (/var/lib/skua -> /data)
    let data_dir = std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
    for d in [data_dir.clone(), data_dir.join("agent")] {
        crate::pki::private_dir(&d)?;
    }
    let joined = join::join(
        &server,
        &token,
        &name,
        &node_cfg.node_ips,
        &node_cfg.node_password_file,
        &dir,
    )
    .await?;
    tracing::info!(node = %name, server = %server, kubeconfig = %joined.kubeconfig.display(), "joined");
    println!(
        "joined {server} as node {name} (certificates in {})",
        joined.dir.display()
    );
    let cluster_dns: std::net::IpAddr = match cfg.cluster_dns {
        Some(ip) => ip,
        None => joined.config.cluster_dns.parse().map_err(|_| {
            AgentError::Config(format!(
                "the server's cluster DNS address {:?} is not an IP address",
                joined.config.cluster_dns
            ))
        })?,
    };
    let cluster_domain = cfg
        .cluster_domain
        .clone()
        .unwrap_or_else(|| joined.config.cluster_domain.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let registries = std::sync::Arc::new(
        crate::cri::registries::Registries::load(&node_cfg.private_registry)
            .map_err(|e| AgentError::Config(e.to_string()))?,
    );
    let (socket, supervisor) = match &node_cfg.container_runtime_endpoint {
        Some(endpoint) => (endpoint.clone(), None),
        None => {
            let c = containerd::Containerd {
                dir: dir.join("containerd"),
                sandbox_image: node_cfg.pause_image.clone(),
                cni_bin_dir: PathBuf::from("/usr/lib/cni"),
                cni_conf_dir: dir.join("etc/cni/net.d"),
                registries: registries.containerd_toml(),
            };
            (c.socket(), Some(tokio::spawn(c.supervise(stop_rx.clone()))))
        }
    };
    // what start-up has started so far stops if a later step fails: a node must not
    // renew its lease (look alive) while its kubelet never started
    let mut started = crate::runtime::StartGuard::default();
    if let Some(s) = &supervisor {
        started.push("containerd", s);
    }
    containerd::wait_ready(&socket, std::time::Duration::from_secs(60)).await?;
    let mut cri = connect_cri(&socket).await?;
    let runtime = cri.version().await?;
    // image tarballs first; then the sandbox image, built here if nothing brought it
    let images = dir.join("images");
    let mut imported = containerd::Imported::new();
    containerd::import_images(&socket, &images, &mut imported).await;
    let pause_image = node_cfg.pause_image.clone();
    if let Err(e) = pause::ensure(&mut cri, &socket, &pause_image, &dir.join("pause-build")).await {
        tracing::warn!("{e}");
    }
    tracing::info!(
        socket = %socket.display(),
        runtime = %format!("{}://{}", runtime.name, runtime.version),
        cri = %runtime.api_version,
        "container runtime ready over CRI"
    );
    // the node: registered and kept current with its own credentials
    let client = crate::client::ApiClient::remote(
        std::sync::Arc::new(crate::client::Remote::from_kubeconfig(&joined.kubeconfig)?),
        "skua-agent",
    );
    let ips = if node_cfg.node_ips.is_empty() {
        crate::pki::node_addresses(&[&joined.config.cluster_cidr, &joined.config.service_cidr])
    } else {
        node_cfg.node_ips.clone()
    };
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", node_cfg.kubelet_port))
        .await
        .map_err(|e| {
            AgentError::Config(format!(
                "cannot listen on the kubelet port {}: {e}; is another kubelet running? (--kubelet-port)",
                node_cfg.kubelet_port
            ))
        })?;
    // port 0 picks a free one (tests run several agents on one machine)
    let kubelet_port = listener.local_addr()?.port();
    let facts = node::Facts::read(&cfg.data_dir);
    let (health_tx, ready_rx) = tokio::sync::watch::channel(node::Health::starting());
    let health = std::sync::Arc::new(health_tx);
    let mut node_object = node::node_object(&name, &ips, &facts, &runtime, kubelet_port);
    if let Some(addresses) = node_object["status"]["addresses"].as_array_mut() {
        for (i, ip) in node_cfg.node_external_ips.iter().enumerate() {
            addresses.insert(
                ips.len() + i,
                serde_json::json!({"type": "ExternalIP", "address": ip.to_string()}),
            );
        }
    }
    let keeper = tokio::spawn(node::keep(client.clone(), node_object, ready_rx));
    started.push("heartbeat", &keeper);
    let readiness = tokio::spawn(watch_runtime(cri.clone(), health.clone()));
    started.push("runtime status", &readiness);
    // the overlay, then the pods' CNI config at the MTU it leaves
    let backend: crate::overlay::plan::Backend =
        joined
            .config
            .flannel_backend
            .parse()
            .map_err(|e: crate::config::ConfigError| {
                AgentError::Config(format!("the server's flannel backend: {e}"))
            })?;
    // one netlink socket for the overlay and cluster DNS
    let links: std::sync::Arc<dyn crate::net::netlink::Links> =
        std::sync::Arc::new(crate::net::netlink::RtNetlink::connect()?);
    let (overlay_ready, overlay_ready_rx) =
        tokio::sync::oneshot::channel::<crate::overlay::Ready>();
    let mut overlay = if backend == crate::overlay::plan::Backend::None {
        tracing::info!("flannel backend none: no overlay and no CNI config; bring your own");
        tokio::spawn(std::future::pending::<
            Result<(), crate::overlay::OverlayError>,
        >())
    } else {
        let cfg = crate::overlay::OverlayConfig {
            node: name.clone(),
            backend,
            iface: node_cfg.flannel_iface.clone(),
            node_ip: ips.iter().find_map(|i| match i {
                std::net::IpAddr::V4(v4) => Some(*v4),
                _ => None,
            }),
            cluster_cidr: joined.config.cluster_cidr.parse().map_err(
                |e: crate::config::ConfigError| {
                    AgentError::Config(format!("the server's cluster CIDR: {e}"))
                },
            )?,
        };
        let (conf, ipam) = (dir.join("etc/cni/net.d"), dir.join("cni"));
        tokio::spawn(async move {
            if let Ok(ready) = overlay_ready_rx.await {
                match cni::write(&conf, &ipam, &ready.pod_cidr.to_string(), ready.mtu) {
                    Ok(()) => {
                        tracing::info!(pod_cidr = %ready.pod_cidr, mtu = ready.mtu, "pod network configured")
                    }
                    Err(e) => {
                        tracing::error!(dir = %conf.display(), error = %e, "cannot write the CNI config")
                    }
                }
            }
        });
        tokio::spawn(crate::overlay::run(
            client.clone(),
            cfg,
            links.clone(),
            std::sync::Arc::new(crate::net::NftCli::default()),
            overlay_ready,
            stop_rx.clone(),
        ))
    };
    started.push("overlay", &overlay);
    // the kubelet and its API
    let settings = crate::kubelet::Settings {
        node_name: name.clone(),
        root_dir: dir.join("kubelet"),
        pod_log_dir: node_cfg.pod_log_dir.clone(),
        container_log_dir: node_cfg.container_log_dir.clone(),
        cluster_dns: vec![cluster_dns.to_string()],
        cluster_domain: cluster_domain.clone(),
        log_max_size: node_cfg.container_log_max_size,
        log_max_files: node_cfg.container_log_max_files,
        host_ip: ips.first().map(|i| i.to_string()).unwrap_or_default(),
        node_cpu: facts.cpus as f64,
        node_memory: facts.memory_kib as f64 * 1024.0,
        volume_refresh: std::time::Duration::from_secs(10),
        resolv_conf: node_cfg.resolv_conf.clone(),
        registries,
        image_dir: dir.join("containerd"),
    };
    let kubelet = crate::kubelet::Kubelet::new(settings, cri.clone(), client.clone());
    let tls = crate::kubelet::server::tls_config(
        &std::fs::read_to_string(joined.dir.join("serving-kubelet.crt"))?,
        &std::fs::read_to_string(joined.dir.join("serving-kubelet.key"))?,
        &std::fs::read_to_string(joined.dir.join("client-ca.crt"))?,
    )?;
    let api = tokio::spawn(crate::kubelet::server::serve(
        kubelet.clone(),
        listener,
        tls,
    ));
    started.push("kubelet API", &api);
    let pods = tokio::spawn(kubelet.clone().run(stop_rx.clone()));
    started.push("kubelet", &pods);
    // Services → this node's nftables table
    // what the server did not --disable: NetworkPolicy, cluster DNS, the service proxy
    let off = &joined.config;
    let skipped = || tokio::spawn(async {});
    let policy = if off.disable_network_policy {
        skipped()
    } else {
        let controller = crate::client::ApiClient::remote(
            std::sync::Arc::new(crate::client::Remote::from_kubeconfig(
                &joined.controller_kubeconfig,
            )?),
            "skua-network-policy",
        );
        tokio::spawn(crate::policy::run(
            controller,
            name.clone(),
            std::sync::Arc::new(crate::net::NftCli::default()),
            stop_rx.clone(),
        ))
    };
    // one copy of the endpoint slices for the proxy and cluster DNS
    let slices = crate::runtime::informer::Informer::start(
        client.clone(),
        &crate::api::registry::ENDPOINTSLICES,
        None,
    );
    let dns = if off.disable_dns {
        skipped()
    } else {
        tokio::spawn(crate::dns::run(
            crate::dns::DnsConfig {
                listen: cluster_dns,
                domain: cluster_domain.clone(),
                resolv_conf: node_cfg.resolv_conf.clone(),
            },
            std::sync::Arc::new(crate::dns::InformerView {
                services: kubelet.services.clone(),
                slices: slices.clone(),
            }),
            links,
            stop_rx.clone(),
        ))
    };
    let proxy = if off.disable_kube_proxy {
        skipped()
    } else {
        tokio::spawn(crate::proxy::run(
            kubelet.services.clone(),
            slices.clone(),
            crate::proxy::ProxyConfig {
                node: name.clone(),
                // the node answers the cluster DNS address itself, unless DNS is off
                cluster_dns: match cluster_dns {
                    std::net::IpAddr::V4(v4) if !off.disable_dns => Some(v4),
                    _ => None,
                },
            },
            crate::proxy::Proxier::new(
                std::sync::Arc::new(crate::net::NftCli::default()),
                std::sync::Arc::new(crate::net::ConntrackCli::default()),
            ),
            stop_rx.clone(),
        ))
    };
    let thresholds = node_cfg.eviction_hard.clone();
    let eviction = {
        let health = health.clone();
        tokio::spawn(crate::kubelet::eviction::run(
            kubelet.clone(),
            thresholds,
            move |memory, disk| {
                health.send_if_modified(|h| {
                    let changed = (h.memory_pressure, h.disk_pressure) != (memory, disk);
                    h.memory_pressure = memory;
                    h.disk_pressure = disk;
                    changed
                });
            },
        ))
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // running: from here the loop below stops everything in order
    started.disarm();
    let mut known: Option<Vec<String>> = None;
    let mut overlay_failed = None;
    loop {
        containerd::import_images(&socket, &images, &mut imported).await;
        // what the runtime holds, said when it changes (its CRI image list follows
        // imports a moment later)
        match cri.image_tags().await {
            Ok(mut tags) => {
                tags.sort();
                if known.as_ref() != Some(&tags) {
                    tracing::info!(images = %tags.join(" "), "images on this node (CRI)");
                    known = Some(tags);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list images over CRI"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            r = &mut overlay => {
                let e = match r {
                    Ok(Err(e)) => AgentError::Overlay(e),
                    Ok(Ok(())) => AgentError::Stopped("overlay"),
                    Err(e) => AgentError::Task(e),
                };
                overlay_failed = Some(e);
                break;
            }
        }
    }
    keeper.abort();
    overlay.abort();
    readiness.abort();
    eviction.abort();
    api.abort();
    let _ = stop_tx.send(true);
    let _ = pods.await;
    let _ = proxy.await;
    let _ = dns.await;
    let _ = policy.await;
    if let Some(s) = supervisor {
        s.await??;
    }
    match overlay_failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Connects to the runtime over CRI, retrying while containerd's CRI plugin comes up
/// (its socket answers a moment before the CRI service does).
async fn connect_cri(socket: &std::path::Path) -> Result<crate::cri::Cri, AgentError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let attempt = async {
            let cri = crate::cri::Cri::connect(socket).await?;
            cri.version().await?;
            Ok::<_, crate::cri::CriError>(cri)
        };
        match attempt.await {
            Ok(cri) => return Ok(cri),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Follows the runtime's own conditions (CRI `Status`): the node is Ready when the
/// runtime and its network (the CNI config) are.
async fn watch_runtime(
    cri: crate::cri::Cri,
    health: std::sync::Arc<tokio::sync::watch::Sender<node::Health>>,
) {
    loop {
        let verdict = match cri
            .runtime
            .status(k8s_cri::v1::StatusRequest { verbose: false })
            .await
        {
            Ok(r) => {
                let conditions = r
                    .into_inner()
                    .status
                    .map(|s| s.conditions)
                    .unwrap_or_default();
                let bad: Vec<String> = conditions
                    .iter()
                    .filter(|c| !c.status)
                    .map(|c| {
                        let what = if c.r#type == "NetworkReady" {
                            "container runtime network not ready"
                        } else {
                            "container runtime not ready"
                        };
                        format!(
                            "{what}: {}=false reason:{} message:{}",
                            c.r#type, c.reason, c.message
                        )
                    })
                    .collect();
                (bad.is_empty(), bad.join("; "))
            }
            Err(e) => (false, format!("container runtime is down: {}", e.message())),
        };
        health.send_if_modified(|now| {
            let changed = (now.ready, &now.message) != (verdict.0, &verdict.1);
            now.ready = verdict.0;
            now.message = verdict.1.clone();
            changed
        });
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}
