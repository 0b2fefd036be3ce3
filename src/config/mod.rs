//! The resolved configuration of a server and of an agent: typed values that `cli`
//! builds from flags, environment and config files, validated completely before
//! anything starts (k3s' `config.Control` / `config.Agent`). A leaf of the layer map:
//! no clap, no I/O; it uses only `api`'s pure value parsers (quantities).

pub mod eviction;
pub mod net;

pub use eviction::Thresholds;
pub use net::{Ipv4Net, PortRange};
use std::net::IpAddr;
use std::path::PathBuf;

/// A configuration value that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown flannel backend {0:?}: use vxlan, host-gw, auto or none")]
    UnknownBackend(String),
    #[error(
        "unknown component {0:?}: --disable takes coredns, servicelb, traefik, local-storage, metrics-server"
    )]
    UnknownComponent(String),
    #[error("{0:?} is not an IPv4 CIDR (like 10.42.0.0/16)")]
    NotCidr(String),
    #[error("{0:?} has a bad prefix length")]
    BadPrefix(String),
    #[error("{0:?} is not a port range; write it as FIRST-LAST, e.g. 30000-32767")]
    NotPortRange(String),
    #[error("--eviction-hard: {0:?} is not <signal><<quantity> (e.g. memory.available<100Mi)")]
    NotThreshold(String),
    #[error(
        "--eviction-hard: unknown signal {0:?} (memory.available, nodefs.available, nodefs.inodesFree, imagefs.available)"
    )]
    UnknownSignal(String),
    #[error("--eviction-hard: {0:?} is not a percentage")]
    NotPercentage(String),
    #[error("--eviction-hard: {0:?} is not a quantity")]
    NotQuantity(String),
    #[error("{0:?} is not a file mode; write it in octal like 600 or 644")]
    NotFileMode(String),
    #[error("{0:?} is not a duration; write it like 30s, 5m or 1h30m")]
    NotDuration(String),
}

/// How pod traffic crosses nodes (`--flannel-backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlannelBackend {
    /// Every peer through the VXLAN device.
    Vxlan,
    /// A route to each peer's pod range via its node address: all nodes on one subnet.
    HostGw,
    /// host-gw to peers on this node's subnet, VXLAN to the rest (flannel's vxlan with
    /// DirectRouting).
    Auto,
    /// No overlay and no CNI config: the user brings their own network.
    None,
}

impl std::str::FromStr for FlannelBackend {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "vxlan" => Ok(FlannelBackend::Vxlan),
            "host-gw" => Ok(FlannelBackend::HostGw),
            "auto" => Ok(FlannelBackend::Auto),
            "none" => Ok(FlannelBackend::None),
            other => Err(ConfigError::UnknownBackend(other.to_string())),
        }
    }
}

impl FlannelBackend {
    pub fn name(self) -> &'static str {
        match self {
            FlannelBackend::Vxlan => "vxlan",
            FlannelBackend::HostGw => "host-gw",
            FlannelBackend::Auto => "auto",
            FlannelBackend::None => "none",
        }
    }
    /// Whether this node runs a VXLAN device.
    pub fn uses_vxlan(self) -> bool {
        matches!(self, FlannelBackend::Vxlan | FlannelBackend::Auto)
    }
}

impl std::fmt::Display for FlannelBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `--disable`: the packaged components not to run (k3s' names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Disabled {
    pub coredns: bool,
    pub servicelb: bool,
    pub traefik: bool,
    pub local_storage: bool,
    pub metrics_server: bool,
}

impl Disabled {
    /// The names `--disable` takes.
    pub const NAMES: [&str; 5] = [
        "coredns",
        "servicelb",
        "traefik",
        "local-storage",
        "metrics-server",
    ];

    /// Adds one component by its k3s name.
    pub fn add(&mut self, name: &str) -> Result<(), ConfigError> {
        let flag = match name {
            "coredns" => &mut self.coredns,
            "servicelb" => &mut self.servicelb,
            "traefik" => &mut self.traefik,
            "local-storage" => &mut self.local_storage,
            "metrics-server" => &mut self.metrics_server,
            other => return Err(ConfigError::UnknownComponent(other.to_string())),
        };
        *flag = true;
        Ok(())
    }

    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Disabled, ConfigError> {
        let mut d = Disabled::default();
        for n in names {
            d.add(n)?;
        }
        Ok(d)
    }
}

/// What a node runs with: the kubelet's, the runtime's and the overlay's settings, the
/// same for an agent and for the agent a server embeds.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `--node-name`, else the host name (resolved when the agent starts).
    pub node_name: Option<String>,
    pub node_password_file: PathBuf,
    pub pause_image: String,
    /// `--container-runtime-endpoint`: a containerd the user runs; none starts our own.
    pub container_runtime_endpoint: Option<PathBuf>,
    pub kubelet_port: u16,
    pub pod_log_dir: PathBuf,
    pub container_log_dir: PathBuf,
    /// `--container-log-max-size`, in bytes.
    pub container_log_max_size: u64,
    pub container_log_max_files: usize,
    pub private_registry: PathBuf,
    pub eviction_hard: Thresholds,
    pub flannel_iface: Option<String>,
    pub resolv_conf: PathBuf,
    pub node_ips: Vec<IpAddr>,
    pub node_external_ips: Vec<IpAddr>,
}

/// `skua agent`: where to join, with what, and the node it runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// `--server`: `https://HOST:6443`.
    pub server: String,
    /// The join token as given (`K10…` or the bare secret), already read from its file.
    pub token: String,
    /// `--cluster-dns` / `--cluster-domain`, else what the server says at join.
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: Option<String>,
    pub node: NodeConfig,
    pub debug: bool,
}
