//! The `skua` command line: clap commands, the config-file merge (flag > env > file >
//! default, as k3s does it) and process start-up. The only place that uses `anyhow`.

mod bench;
mod bench_api;
mod bench_net;
mod bench_pods;
mod bench_proxy;
mod bench_rbac;
mod bench_scale;
pub(crate) mod config;
pub mod debug;
mod debug_net;
pub(crate) mod fuzz;

use crate::apiserver;
use crate::pki::{self, kubeconfig};
use crate::server::{DatastoreConfig, ServerConfig};
use crate::store::etcd::EtcdOptions;
use crate::store::sled::SledOptions;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

pub use crate::VERSION;

/// The whole command line: one command and its flags.
#[derive(Parser, Debug)]
#[command(
    name = "skua",
    version = VERSION,
    about = "A lightweight Kubernetes distribution in one binary",
    long_about = "skua runs a whole Kubernetes cluster from one binary: `skua server` starts the control plane (and, by default, an agent); `skua agent` joins more nodes."
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `skua`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the control plane (datastore, API, controllers) and, unless disabled, an agent.
    Server(Box<ServerArgs>),
    /// Run a node that joins a server.
    Agent(Box<AgentArgs>),
    /// Simulated nodes (no containers) joined to a server, for tests and scale runs.
    Sim(crate::sim::SimArgs),
    /// Reproducible benchmarks (results go to BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Tools for tests; not a stable interface.
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

/// Flags every node command has (server and agent alike).
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Config file; `<file>.d/*.yaml` beside it are read too, in name order.
    #[arg(long, short = 'c', env = "SKUA_CONFIG_FILE", default_value = config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Folder to hold state.
    #[arg(
        long,
        short = 'd',
        env = "SKUA_DATA_DIR",
        default_value = "/var/lib/skua"
    )]
    pub data_dir: PathBuf,
    /// Shared secret (server) or join token K10… (agent).
    #[arg(long, short = 't', env = "SKUA_TOKEN")]
    pub token: Option<String>,
    /// Node name.
    #[arg(long, env = "SKUA_NODE_NAME")]
    pub node_name: Option<String>,
    /// Turn on debug logs.
    #[arg(long, env = "SKUA_DEBUG")]
    pub debug: bool,
}

/// Flags of `skua server`. Each also reads `SKUA_<FLAG>` and the config file key of
/// the same name as the flag.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Flags every node command has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// IP addresses of this node (default: the machine's own addresses); they go into
    /// the serving certificate.
    #[arg(long, env = "SKUA_NODE_IP", value_delimiter = ',')]
    pub node_ip: Vec<IpAddr>,
    /// External IP addresses of this node (ExternalIP in its status; ServiceLB
    /// announces them).
    #[arg(long, env = "SKUA_NODE_EXTERNAL_IP", value_delimiter = ',')]
    pub node_external_ip: Vec<IpAddr>,
    /// How pod traffic crosses nodes: vxlan, host-gw, auto (host-gw on the node's
    /// subnet, vxlan beyond) or none (bring your own CNI). Agents learn it when they join.
    #[arg(long, env = "SKUA_FLANNEL_BACKEND", default_value = "vxlan", value_parser = str::parse::<crate::config::FlannelBackend>)]
    pub flannel_backend: crate::config::FlannelBackend,
    /// Packaged components not to run (k3s' names): coredns (the agents' built-in
    /// cluster DNS), servicelb; traefik, local-storage and metrics-server are accepted
    /// and are never run by skua.
    #[arg(long, env = "SKUA_DISABLE", value_delimiter = ',', value_parser = config::parse_disable)]
    pub disable: Vec<String>,
    /// Agents run no service proxy (bring your own, e.g. a CNI that replaces kube-proxy).
    #[arg(long, env = "SKUA_DISABLE_KUBE_PROXY")]
    pub disable_kube_proxy: bool,
    /// Agents do not enforce NetworkPolicy.
    #[arg(long, env = "SKUA_DISABLE_NETWORK_POLICY")]
    pub disable_network_policy: bool,
    /// Address the API server listens on.
    #[arg(long, env = "SKUA_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port of the API server.
    #[arg(long, env = "SKUA_HTTPS_LISTEN_PORT", default_value_t = 6443)]
    pub https_listen_port: u16,
    /// IPv4 network CIDR for pod IPs.
    #[arg(long, env = "SKUA_CLUSTER_CIDR", default_value = "10.42.0.0/16", value_parser = str::parse::<crate::config::Ipv4Net>)]
    pub cluster_cidr: crate::config::Ipv4Net,
    /// IPv4 network CIDR for service IPs.
    #[arg(long, env = "SKUA_SERVICE_CIDR", default_value = "10.43.0.0/16", value_parser = str::parse::<crate::config::Ipv4Net>)]
    pub service_cidr: crate::config::Ipv4Net,
    /// Cluster DNS service IP (must be inside --service-cidr).
    #[arg(long, env = "SKUA_CLUSTER_DNS", default_value = "10.43.0.10")]
    pub cluster_dns: IpAddr,
    /// Cluster domain.
    #[arg(long, env = "SKUA_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Extra host names or IPs for the serving certificate (repeatable).
    #[arg(long, env = "SKUA_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Where to write the admin kubeconfig.
    #[arg(
        long,
        short = 'o',
        env = "SKUA_KUBECONFIG_OUTPUT",
        default_value = "/etc/skua/skua.yaml"
    )]
    pub write_kubeconfig: PathBuf,
    /// File mode of the admin kubeconfig, e.g. 644.
    #[arg(long, env = "SKUA_KUBECONFIG_MODE", default_value = "600")]
    pub write_kubeconfig_mode: String,
    /// Run only the control plane, no agent.
    #[arg(long, env = "SKUA_DISABLE_AGENT")]
    pub disable_agent: bool,
    /// Flags of the agent the server runs.
    #[command(flatten)]
    pub node: NodeArgs,
    /// etcd endpoints (https://host:2379,...) to use instead of the embedded sled store.
    #[arg(long, env = "SKUA_DATASTORE_ENDPOINT")]
    pub datastore_endpoint: Option<String>,
    /// CA file to verify the etcd servers.
    #[arg(long, env = "SKUA_DATASTORE_CAFILE")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, env = "SKUA_DATASTORE_CERTFILE")]
    pub datastore_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, env = "SKUA_DATASTORE_KEYFILE")]
    pub datastore_keyfile: Option<PathBuf>,
    /// Page cache of the embedded datastore, in MiB.
    #[arg(long, env = "SKUA_DATASTORE_CACHE_MIB", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub datastore_cache_mib: u64,
    /// How often old datastore history is compacted (one interval of history is kept).
    #[arg(long, env = "SKUA_DATASTORE_COMPACTION_INTERVAL", default_value = "5m", value_parser = config::parse_duration)]
    pub datastore_compaction_interval: std::time::Duration,
    /// How long a node may go without renewing its Lease before it is marked
    /// NotReady/Unknown and tainted `node.kubernetes.io/unreachable` (upstream's
    /// kube-controller-manager flag of the same name).
    #[arg(long, env = "SKUA_NODE_MONITOR_GRACE_PERIOD", default_value = "40s", value_parser = config::parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// A second join secret (or K10 token) that lets agents, and only agents, join
    /// (k3s' flag): hand it to workers and keep the server token to servers. Written
    /// to `<data-dir>/server/agent-token`.
    #[arg(long, env = "SKUA_AGENT_TOKEN")]
    pub agent_token: Option<String>,
    /// A file holding `--agent-token`.
    #[arg(long, env = "SKUA_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<std::path::PathBuf>,
    /// Record requests in this file (`-`: standard output) as audit.k8s.io/v1 Events,
    /// one JSON line each, as `--audit-policy-file` says (kube-apiserver's flag; CIS
    /// 1.2.16). Without a policy nothing is recorded, as upstream.
    #[arg(long, env = "SKUA_AUDIT_LOG_PATH")]
    pub audit_log_path: Option<std::path::PathBuf>,
    /// Rotate the audit log at this many MiB (0: upstream's 100).
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs kept (0: all).
    #[arg(long, default_value_t = 10)]
    pub audit_log_maxbackup: usize,
    /// Rotated audit logs older than this many days are deleted (0: kept for any age).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxage: u64,
    /// Which requests the audit log records and how much of each: an audit.k8s.io/v1
    /// Policy (kube-apiserver's flag; CIS 1.2.16, k3s' hardening guide).
    #[arg(long, env = "SKUA_AUDIT_POLICY_FILE")]
    pub audit_policy_file: Option<std::path::PathBuf>,
    /// Pod Security admission's cluster defaults and exemptions: an
    /// AdmissionConfiguration with a PodSecurity plugin entry (as k3s' hardening guide
    /// and RKE2 write it) or a bare PodSecurityConfiguration. Without it every
    /// namespace without labels is privileged.
    #[arg(long, env = "SKUA_POD_SECURITY_ADMISSION_CONFIG_FILE")]
    pub pod_security_admission_config_file: Option<std::path::PathBuf>,
    /// Whether `/healthz`, `/livez`, `/readyz` and `/version` answer clients without
    /// credentials (upstream's kube-apiserver flag; k3s and the CIS benchmark turn it
    /// off, and so does skua). `/ping` and `/cacerts` are always open.
    #[arg(long, env = "SKUA_ANONYMOUS_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub anonymous_auth: bool,
    /// Whether lists and watches are served from the in-memory watch cache (one
    /// datastore watch per resource); false reads the datastore for each (upstream's
    /// kube-apiserver flag).
    #[arg(long, env = "SKUA_WATCH_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_cache: bool,
    /// Read-only requests served at once; more get 429 (upstream's kube-apiserver
    /// flag; 0: no limit).
    #[arg(long, env = "SKUA_MAX_REQUESTS_INFLIGHT", default_value_t = crate::apiserver::inflight::DEFAULT_MAX_REQUESTS_INFLIGHT)]
    pub max_requests_inflight: usize,
    /// Mutating requests served at once; more get 429 (upstream's kube-apiserver
    /// flag; 0: no limit).
    #[arg(long, env = "SKUA_MAX_MUTATING_REQUESTS_INFLIGHT", default_value_t = crate::apiserver::inflight::DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT)]
    pub max_mutating_requests_inflight: usize,
    /// The longest lifetime a service-account token may be issued for; longer
    /// TokenRequests are cut to it (upstream's kube-apiserver flag of the same name;
    /// default: no limit below the 2^32 s that validation allows).
    #[arg(long, env = "SKUA_SERVICE_ACCOUNT_MAX_TOKEN_EXPIRATION", value_parser = config::parse_duration)]
    pub service_account_max_token_expiration: Option<std::time::Duration>,
    /// How long events are kept (upstream's kube-apiserver flag of the same name).
    #[arg(long, env = "SKUA_EVENT_TTL", default_value = "1h", value_parser = config::parse_duration)]
    pub event_ttl: std::time::Duration,
    /// Terminated pods (Succeeded or Failed) kept before the oldest are deleted; 0
    /// keeps them all (upstream's kube-controller-manager flag of the same name).
    #[arg(
        long,
        env = "SKUA_TERMINATED_POD_GC_THRESHOLD",
        default_value_t = 12500
    )]
    pub terminated_pod_gc_threshold: usize,
    /// Port range for NodePort services.
    #[arg(long, env = "SKUA_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767", value_parser = str::parse::<crate::config::PortRange>)]
    pub service_node_port_range: crate::config::PortRange,
    /// Seconds added to the CronJob controller's clock (tests move time forward; not
    /// for production).
    #[arg(
        long,
        env = "SKUA_DEBUG_CRONJOB_CLOCK_SKEW",
        default_value_t = 0,
        hide = true
    )]
    pub debug_cronjob_clock_skew: i64,
}

/// Flags of `skua agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Flags every node command has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Server to join, e.g. https://10.0.0.1:6443.
    #[arg(long, short = 's', env = "SKUA_URL")]
    pub server: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "SKUA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// This node's addresses (for its kubelet serving certificate).
    #[arg(long, env = "SKUA_NODE_IP", value_delimiter = ',')]
    pub node_ip: Vec<std::net::IpAddr>,
    /// External IP addresses of this node (ExternalIP in its status; ServiceLB
    /// announces them).
    #[arg(long, env = "SKUA_NODE_EXTERNAL_IP", value_delimiter = ',')]
    pub node_external_ip: Vec<std::net::IpAddr>,
    /// Cluster DNS service IP that pods resolve names with (default: the server's
    /// --cluster-dns, learned when joining).
    #[arg(long, env = "SKUA_CLUSTER_DNS")]
    pub cluster_dns: Option<IpAddr>,
    /// Cluster domain (default: the server's --cluster-domain).
    #[arg(long, env = "SKUA_CLUSTER_DOMAIN")]
    pub cluster_domain: Option<String>,
    /// Flags of the node side.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Flags of the node side, shared by `skua agent` and the agent inside `skua server`.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Where this node's password is kept (made on first join): it proves to the
    /// server that a rejoin under the same name is the same machine.
    #[arg(
        long,
        env = "SKUA_NODE_PASSWORD_FILE",
        default_value = "/etc/skua/node/password"
    )]
    pub node_password_file: PathBuf,
    /// The pod sandbox image (upstream's pod-infra-container-image).
    #[arg(
        long,
        env = "SKUA_PAUSE_IMAGE",
        default_value = "registry.k8s.io/pause:3.10"
    )]
    pub pause_image: String,
    /// A CRI runtime to use instead of starting containerd, e.g.
    /// unix:///run/containerd/containerd.sock.
    #[arg(long, env = "SKUA_CONTAINER_RUNTIME_ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,
    /// HTTPS port of the kubelet API (logs, exec, port-forward).
    #[arg(long, env = "SKUA_KUBELET_PORT", default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Where containers' CRI log files go, by pod.
    #[arg(long, env = "SKUA_POD_LOG_DIR", default_value = "/var/log/pods")]
    pub pod_log_dir: PathBuf,
    /// Where the per-container links for log collectors go.
    #[arg(
        long,
        env = "SKUA_CONTAINER_LOG_DIR",
        default_value = "/var/log/containers"
    )]
    pub container_log_dir: PathBuf,
    /// Size at which a container's log is rotated (upstream's containerLogMaxSize).
    #[arg(long, env = "SKUA_CONTAINER_LOG_MAX_SIZE", default_value = "10Mi")]
    pub container_log_max_size: String,
    /// Log files kept per container, the live one included (containerLogMaxFiles).
    #[arg(long, env = "SKUA_CONTAINER_LOG_MAX_FILES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..))]
    pub container_log_max_files: u64,
    /// Private registry configuration (k3s' registries.yaml: mirrors, rewrites, auth, TLS).
    #[arg(
        long,
        env = "SKUA_PRIVATE_REGISTRY",
        default_value = "/etc/skua/registries.yaml"
    )]
    pub private_registry: PathBuf,
    /// Hard eviction thresholds (upstream's kubelet flag and defaults): below one, the
    /// node reports pressure and evicts pods.
    #[arg(
        long,
        env = "SKUA_EVICTION_HARD",
        default_value = "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%"
    )]
    pub eviction_hard: String,
    /// The interface pod traffic between nodes leaves by (default: the one holding
    /// the node IP).
    #[arg(long, env = "SKUA_FLANNEL_IFACE")]
    pub flannel_iface: Option<String>,
    /// The resolv.conf pods with `dnsPolicy: Default` get.
    #[arg(long, env = "SKUA_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
}

/// Parses the command line, merges the config files and runs the command.
pub fn main() -> anyhow::Result<()> {
    let cli = match parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(CliError::Clap(e)) => e.exit(),
        Err(CliError::Config(e)) => anyhow::bail!("{e}"),
    };
    let debug = match &cli.command {
        Command::Server(a) => a.common.debug,
        Command::Agent(a) => a.common.debug,
        _ => false,
    };
    init_logging(debug);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skua")
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => Ok(crate::server::run(ServerConfig::try_from(*args)?).await?),
            Command::Agent(args) => {
                Ok(crate::agent::run(crate::config::AgentConfig::try_from(*args)?).await?)
            }
            Command::Sim(args) => crate::sim::run(args).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Debug(cmd) => debug::run(cmd).await,
        }
    })
}

/// Why a command line could not be turned into a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Includes `--help` and `--version`, which clap reports as errors to print.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// A config file is missing, unreadable or invalid, or sets a flag the command lacks.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Parses `argv` with the config files merged in (see [`config::merge`]).
pub fn parse(argv: Vec<OsString>) -> Result<Cli, CliError> {
    let matches = Cli::command().try_get_matches_from(argv.clone())?;
    let argv = config::merge(&Cli::command(), &matches, argv.clone())?.unwrap_or(argv);
    let matches = Cli::command().try_get_matches_from(argv)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKUA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

impl NodeArgs {
    /// The node's configuration, every value checked (a bad flag fails here, before
    /// anything starts).
    pub fn resolve(
        self,
        node_name: Option<String>,
        node_ips: Vec<IpAddr>,
        node_external_ips: Vec<IpAddr>,
    ) -> anyhow::Result<crate::config::NodeConfig> {
        Ok(crate::config::NodeConfig {
            node_name,
            node_password_file: self.node_password_file,
            pause_image: self.pause_image,
            container_runtime_endpoint: self
                .container_runtime_endpoint
                .map(|e| PathBuf::from(e.trim_start_matches("unix://"))),
            kubelet_port: self.kubelet_port,
            pod_log_dir: self.pod_log_dir,
            container_log_dir: self.container_log_dir,
            container_log_max_size: crate::api::quantity::parse(&self.container_log_max_size)
                .filter(|b| *b >= 0.0)
                .map(|b| b as u64)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--container-log-max-size {:?} is not a quantity (e.g. 10Mi)",
                        self.container_log_max_size
                    )
                })?,
            container_log_max_files: usize::try_from(self.container_log_max_files)?,
            private_registry: self.private_registry,
            eviction_hard: crate::config::Thresholds::parse(&self.eviction_hard)
                .map_err(|e| anyhow::anyhow!(e))?,
            flannel_iface: self.flannel_iface,
            resolv_conf: self.resolv_conf,
            node_ips,
            node_external_ips,
        })
    }
}

impl TryFrom<AgentArgs> for crate::config::AgentConfig {
    type Error = anyhow::Error;

    /// Everything `skua agent` needs, checked before it joins or starts containerd.
    fn try_from(a: AgentArgs) -> anyhow::Result<Self> {
        let server = a.server.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "--server (or SKUA_URL) is required: the https://HOST:6443 of a skua server"
            )
        })?;
        let token = match (&a.common.token, &a.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
                anyhow::anyhow!("reading the join token from {}: {e}", file.display())
            })?,
            (None, None) => anyhow::bail!(
                "--token (or SKUA_TOKEN, or SKUA_TOKEN_FILE) is required: the server's <data-dir>/server/node-token"
            ),
        };
        crate::pki::join::Token::parse(&token).map_err(|e| anyhow::anyhow!(e))?;
        Ok(crate::config::AgentConfig {
            data_dir: a.common.data_dir,
            server,
            token: token.trim().to_string(),
            cluster_dns: a.cluster_dns,
            cluster_domain: a.cluster_domain,
            node: a
                .node
                .resolve(a.common.node_name, a.node_ip, a.node_external_ip)?,
            debug: a.common.debug,
        })
    }
}

/// The configuration `skua server --data-dir DIR` resolves to with every default (no
/// config file is read), for benches and in-process harnesses.
pub fn server_defaults(data_dir: &std::path::Path) -> anyhow::Result<ServerConfig> {
    let cli = Cli::try_parse_from([
        OsString::from("skua"),
        "server".into(),
        "--data-dir".into(),
        data_dir.as_os_str().to_owned(),
    ])?;
    match cli.command {
        Command::Server(args) => ServerConfig::try_from(*args),
        _ => anyhow::bail!("not a server command line"),
    }
}

/// `skua server`'s flags resolved: every value checked, the embedded agent's too.
impl TryFrom<ServerArgs> for ServerConfig {
    type Error = anyhow::Error;

    fn try_from(a: ServerArgs) -> anyhow::Result<Self> {
        let node_ips = if a.node_ip.is_empty() {
            pki::node_addresses(&[&a.cluster_cidr.to_string(), &a.service_cidr.to_string()])
        } else {
            a.node_ip.clone()
        };
        let datastore = match &a.datastore_endpoint {
            Some(endpoint) => DatastoreConfig::Etcd(EtcdOptions {
                endpoints: endpoint.split(',').map(|e| e.trim().to_string()).collect(),
                ca_file: a.datastore_cafile.clone(),
                cert_file: a.datastore_certfile.clone(),
                key_file: a.datastore_keyfile.clone(),
            }),
            None => {
                let mut opts = SledOptions::new(a.common.data_dir.join("server").join("db"));
                opts.cache_bytes = a.datastore_cache_mib * 1024 * 1024;
                DatastoreConfig::Sled(opts)
            }
        };
        Ok(ServerConfig {
            data_dir: a.common.data_dir,
            bind_address: a.bind_address,
            https_listen_port: a.https_listen_port,
            cluster_cidr: a.cluster_cidr,
            service_cidr: a.service_cidr,
            cluster_dns: a.cluster_dns,
            cluster_domain: a.cluster_domain,
            tls_san: a.tls_san,
            node_ips: node_ips.clone(),
            node_external_ips: a.node_external_ip.clone(),
            flannel_backend: a.flannel_backend,
            disable: crate::config::Disabled::from_names(a.disable.iter().map(String::as_str))
                .map_err(|e| anyhow::anyhow!(e))?,
            disable_kube_proxy: a.disable_kube_proxy,
            disable_network_policy: a.disable_network_policy,
            write_kubeconfig: a.write_kubeconfig,
            write_kubeconfig_mode: kubeconfig::parse_mode(&a.write_kubeconfig_mode)
                .map_err(|e| anyhow::anyhow!("--write-kubeconfig-mode: {e}"))?,
            disable_agent: a.disable_agent,
            datastore,
            compaction_interval: a.datastore_compaction_interval,
            node_monitor_grace_period: a.node_monitor_grace_period,
            service_node_port_range: a.service_node_port_range,
            cronjob_clock_skew: a.debug_cronjob_clock_skew,
            event_ttl: a.event_ttl,
            service_account_max_token_expiration: a.service_account_max_token_expiration,
            anonymous_auth: a.anonymous_auth,
            pod_security: match &a.pod_security_admission_config_file {
                Some(file) => pod_security_config(file)?,
                None => Default::default(),
            },
            watch_cache: a.watch_cache,
            audit: match (a.audit_log_path, &a.audit_policy_file) {
                (Some(path), Some(policy)) => Some(apiserver::audit::AuditConfig {
                    path,
                    max_size_mib: a.audit_log_maxsize,
                    max_backups: a.audit_log_maxbackup,
                    max_age_days: a.audit_log_maxage,
                    policy: audit_policy(policy)?,
                }),
                (Some(_), None) => {
                    tracing::warn!(
                        "no audit policy file provided (--audit-policy-file): no events will be recorded"
                    );
                    None
                }
                (None, _) => None,
            },
            max_requests_inflight: a.max_requests_inflight,
            max_mutating_requests_inflight: a.max_mutating_requests_inflight,
            terminated_pod_gc_threshold: a.terminated_pod_gc_threshold,
            token: a.common.token,
            agent_token: match (a.agent_token, a.agent_token_file) {
                (Some(t), _) => Some(t),
                (None, Some(file)) => Some(
                    std::fs::read_to_string(&file)
                        .map_err(|e| anyhow::anyhow!("--agent-token-file {}: {e}", file.display()))?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            },
            node: Some(
                a.node
                    .resolve(a.common.node_name, node_ips, a.node_external_ip)?,
            ),
            debug: a.common.debug,
        })
    }
}

/// Reads `--pod-security-admission-config-file` (and a file its
/// AdmissionConfiguration names, relative to it).
fn pod_security_config(
    file: &std::path::Path,
) -> anyhow::Result<crate::api::pod_security::config::PodSecurityConfig> {
    use crate::api::pod_security::config::{ConfigError, parse};
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| ConfigError::Kind(format!("{}: {e}", p.display())))
    };
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    let text =
        read(file).map_err(|e| anyhow::anyhow!("--pod-security-admission-config-file {e}"))?;
    parse(&text, &|p| read(&dir.join(p))).map_err(|e| {
        anyhow::anyhow!(
            "--pod-security-admission-config-file {}: {e}",
            file.display()
        )
    })
}

/// Reads `--audit-policy-file`.
fn audit_policy(file: &std::path::Path) -> anyhow::Result<crate::api::audit_policy::Policy> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("--audit-policy-file {}: {e}", file.display()))?;
    crate::api::audit_policy::Policy::parse(&text)
        .map_err(|e| anyhow::anyhow!("--audit-policy-file {}: {e}", file.display()))
}
