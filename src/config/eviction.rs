//! `--eviction-hard`: the signals and thresholds under which the kubelet evicts pods
//! (upstream's hard eviction), parsed once when the configuration is resolved.

use super::ConfigError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
        }
    }

    /// The resource a pod is evicted for ("memory", "ephemeral-storage").
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            _ => "ephemeral-storage",
        }
    }
}

/// A threshold: an absolute quantity or a share of capacity.
#[derive(Clone, Debug, PartialEq)]
pub enum Amount {
    Quantity(f64, String),
    Percent(f64),
}

/// `--eviction-hard`.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds(pub Vec<(Signal, Amount)>);

impl Thresholds {
    /// Upstream's defaults.
    pub const DEFAULT: &'static str =
        "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%";

    pub fn parse(text: &str) -> Result<Thresholds, ConfigError> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('<')
                .ok_or_else(|| ConfigError::NotThreshold(part.to_string()))?;
            let signal = match name.trim() {
                "memory.available" => Signal::MemoryAvailable,
                "nodefs.available" => Signal::NodefsAvailable,
                "nodefs.inodesFree" => Signal::NodefsInodesFree,
                "imagefs.available" => Signal::ImagefsAvailable,
                other => return Err(ConfigError::UnknownSignal(other.to_string())),
            };
            let value = value.trim();
            let amount = match value.strip_suffix('%') {
                Some(p) => Amount::Percent(
                    p.parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=100.0).contains(p))
                        .ok_or_else(|| ConfigError::NotPercentage(value.to_string()))?,
                ),
                None => Amount::Quantity(
                    crate::api::quantity::parse(value)
                        .ok_or_else(|| ConfigError::NotQuantity(value.to_string()))?,
                    value.to_string(),
                ),
            };
            out.push((signal, amount));
        }
        Ok(Thresholds(out))
    }
}
