//! The Pod Security Standards as upstream's Pod Security admission applies them: levels
//! (privileged, baseline, restricted) at a version, read from a namespace's
//! `pod-security.kubernetes.io/*` labels over the cluster's defaults, and the checks
//! each level runs, in upstream's order and words.

pub mod checks;
pub mod config;

use checks::{Failure, Pod};
use serde_json::Value;

/// The highest policy version this build knows (a 1.33 API: upstream's 1.32 checks);
/// `latest` and anything newer are evaluated as this.
pub const MAX_MINOR: u32 = 32;

/// The label prefix, and the audit annotations' too.
pub const PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security Standard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Unrestricted.
    Privileged,
    /// Known privilege escalations prevented.
    Baseline,
    /// Current hardening best practice.
    Restricted,
}

impl Level {
    /// A level from its label value.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// A policy version: `latest`, or `v1.<minor>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The newest checks.
    Latest,
    /// The checks as of Kubernetes 1.<minor>.
    Minor(u32),
}

impl Version {
    /// A version from its label value (`latest`, `v1.25`; not `v1.05` or `1.25`).
    pub fn parse(s: &str) -> Option<Version> {
        if s == "latest" {
            return Some(Version::Latest);
        }
        let minor = s.strip_prefix("v1.")?;
        let canonical = minor == "0" || (!minor.starts_with('0') && !minor.is_empty());
        if !canonical || !minor.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        minor.parse().ok().map(Version::Minor)
    }

    /// The minor version whose checks apply.
    fn effective(self) -> u32 {
        match self {
            Version::Latest => MAX_MINOR,
            Version::Minor(m) => m.min(MAX_MINOR),
        }
    }
}

/// A level at a version, shown as upstream shows it (`restricted:latest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelVersion {
    /// The standard.
    pub level: Level,
    /// Its version.
    pub version: Version,
}

impl std::fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Version::Latest => write!(f, "{}:latest", self.level.name()),
            Version::Minor(m) => write!(f, "{}:v1.{m}", self.level.name()),
        }
    }
}

impl LevelVersion {
    /// `privileged:latest`.
    pub const PRIVILEGED: LevelVersion = LevelVersion {
        level: Level::Privileged,
        version: Version::Latest,
    };
}

type Check = fn(&Pod, u32) -> Option<Failure>;

/// The baseline checks, by ID order (as upstream reports them).
const BASELINE: [(&str, Check); 11] = [
    ("appArmorProfile", |p, _| checks::app_armor(p)),
    ("capabilities_baseline", |p, _| {
        checks::capabilities_baseline(p)
    }),
    ("hostNamespaces", |p, _| checks::host_namespaces(p)),
    ("hostPathVolumes", |p, _| checks::host_path_volumes(p)),
    ("hostPorts", |p, _| checks::host_ports(p)),
    ("privileged", |p, _| checks::privileged(p)),
    ("procMount", |p, _| checks::proc_mount(p)),
    ("seLinuxOptions", checks::se_linux),
    ("seccompProfile_baseline", checks::seccomp_baseline),
    ("sysctls", checks::sysctls),
    ("windowsHostProcess", |p, _| checks::windows_host_process(p)),
];

/// The restricted checks: ID, first version, the baseline check it replaces.
const RESTRICTED: [(&str, u32, Option<&str>, Check); 6] = [
    (
        "allowPrivilegeEscalation",
        8,
        None,
        checks::allow_privilege_escalation,
    ),
    (
        "capabilities_restricted",
        22,
        Some("capabilities_baseline"),
        checks::capabilities_restricted,
    ),
    ("restrictedVolumes", 0, Some("hostPathVolumes"), |p, _| {
        checks::restricted_volumes(p)
    }),
    ("runAsNonRoot", 0, None, |p, _| checks::run_as_non_root(p)),
    ("runAsUser", 23, None, |p, _| checks::run_as_user(p)),
    (
        "seccompProfile_restricted",
        19,
        Some("seccompProfile_baseline"),
        checks::seccomp_restricted,
    ),
];

/// What `pod` (its metadata and spec) breaks of `lv`, in upstream's order.
pub fn evaluate(lv: LevelVersion, metadata: &Value, spec: &Value) -> Vec<Failure> {
    if lv.level == Level::Privileged {
        return Vec::new();
    }
    let minor = lv.version.effective();
    let pod = Pod { metadata, spec };
    let restricted: Vec<_> = RESTRICTED
        .iter()
        .filter(|(_, since, _, _)| lv.level == Level::Restricted && minor >= *since)
        .collect();
    let replaced = |id: &str| restricted.iter().any(|(_, _, r, _)| *r == Some(id));
    let mut out: Vec<Failure> = BASELINE
        .iter()
        .filter(|(id, _)| !replaced(id))
        .filter_map(|(_, check)| check(&pod, minor))
        .collect();
    out.extend(
        restricted
            .iter()
            .filter_map(|(_, _, _, check)| check(&pod, minor)),
    );
    out
}

/// Upstream's `ForbiddenDetail` of several failures: `reason (detail), reason (detail)`.
pub fn forbidden_detail(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| {
            if f.detail.is_empty() {
                f.reason.clone()
            } else {
                format!("{} ({})", f.reason, f.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Upstream's `ForbiddenReason`: the reasons alone.
pub fn forbidden_reason(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| f.reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The three modes' policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Pods breaking it are refused.
    pub enforce: LevelVersion,
    /// Breaking it is noted in the audit log.
    pub audit: LevelVersion,
    /// Breaking it is answered with a warning.
    pub warn: LevelVersion,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            enforce: LevelVersion::PRIVILEGED,
            audit: LevelVersion::PRIVILEGED,
            warn: LevelVersion::PRIVILEGED,
        }
    }
}

impl Policy {
    /// Whether no mode checks anything.
    pub fn all_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn]
            .iter()
            .all(|lv| lv.level == Level::Privileged)
    }
}

/// A label that does not parse: its key, value and upstream's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelError {
    /// The label's key.
    pub key: String,
    /// What it says.
    pub value: String,
    /// Upstream's complaint.
    pub message: &'static str,
}

/// A namespace's policy: its labels over `defaults`. A bad enforce level fails closed
/// (restricted), a bad audit or warn level open (privileged), a bad version is
/// `latest`; each bad label is reported.
pub fn policy_of(
    labels: Option<&serde_json::Map<String, Value>>,
    defaults: &Policy,
) -> (Policy, Vec<LabelError>) {
    let mut errors = Vec::new();
    let mut policy = *defaults;
    for (mode, lv, fallback) in [
        ("enforce", &mut policy.enforce, Level::Restricted),
        ("audit", &mut policy.audit, Level::Privileged),
        ("warn", &mut policy.warn, Level::Privileged),
    ] {
        let label = |suffix: &str| {
            let key = format!("{PREFIX}{mode}{suffix}");
            let value = labels
                .and_then(|l| l.get(&key))
                .and_then(Value::as_str)
                .map(str::to_string);
            (key, value)
        };
        if let (key, Some(value)) = label("") {
            lv.level = Level::parse(&value).unwrap_or_else(|| {
                errors.push(LabelError {
                    key,
                    value,
                    message: "must be one of privileged, baseline, restricted",
                });
                fallback
            });
        }
        if let (key, Some(value)) = label("-version") {
            lv.version = Version::parse(&value).unwrap_or_else(|| {
                errors.push(LabelError {
                    key,
                    value,
                    message: "must be \"latest\" or \"v1.x\"",
                });
                Version::Latest
            });
        }
    }
    (policy, errors)
}

#[cfg(test)]
mod tests;
