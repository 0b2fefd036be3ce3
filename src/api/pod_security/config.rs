//! The cluster's Pod Security defaults and exemptions: upstream's
//! `PodSecurityConfiguration` (pod-security.admission.config.k8s.io v1, v1beta1,
//! v1alpha1), alone or inside an `AdmissionConfiguration` (apiserver.config.k8s.io) as
//! k3s' hardening guide writes it for `--admission-control-config-file`.

use super::{Level, LevelVersion, Policy, Version};
use serde_json::Value;

/// The defaults namespaces without labels get, and who is never checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSecurityConfig {
    /// The policy of a namespace without labels.
    pub defaults: Policy,
    /// Users whose requests are not checked.
    pub exempt_usernames: Vec<String>,
    /// Pods with these runtime classes are not checked.
    pub exempt_runtime_classes: Vec<String>,
    /// Namespaces whose pods are not checked.
    pub exempt_namespaces: Vec<String>,
}

/// Why a configuration was refused (upstream's field paths and messages).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Not YAML or JSON.
    #[error("not a valid configuration: {0}")]
    Syntax(String),
    /// Neither configuration kind, or one without a PodSecurity plugin entry.
    #[error("{0}")]
    Kind(String),
    /// A field's value.
    #[error("{field}: Invalid value: {value:?}: {message}")]
    Invalid {
        /// Where.
        field: String,
        /// What it said.
        value: String,
        /// Upstream's complaint.
        message: &'static str,
    },
    /// A field upstream does not know (strict decoding).
    #[error("unknown field {0:?}")]
    Unknown(String),
    /// An exemption listed twice, or empty.
    #[error("{0}")]
    Exemption(String),
}

const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha1"];
const GROUP: &str = "pod-security.admission.config.k8s.io";

/// Reads a configuration from its text; `path` reads a file an AdmissionConfiguration
/// names (relative paths are the caller's to resolve).
pub fn parse(
    text: &str,
    path: &dyn Fn(&str) -> Result<String, ConfigError>,
) -> Result<PodSecurityConfig, ConfigError> {
    let doc: Value =
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    match doc["kind"].as_str() {
        Some("AdmissionConfiguration") => {
            let plugin = doc["plugins"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == "PodSecurity");
            let Some(plugin) = plugin else {
                return Ok(PodSecurityConfig::default());
            };
            if plugin["configuration"].is_object() {
                return from_value(&plugin["configuration"]);
            }
            match plugin["path"].as_str() {
                Some(p) => parse(&path(p)?, path),
                None => Ok(PodSecurityConfig::default()),
            }
        }
        _ => from_value(&doc),
    }
}

fn from_value(doc: &Value) -> Result<PodSecurityConfig, ConfigError> {
    let api_version = doc["apiVersion"].as_str().unwrap_or("");
    let known = api_version
        .split_once('/')
        .is_some_and(|(g, v)| g == GROUP && VERSIONS.contains(&v));
    if !known || doc["kind"] != "PodSecurityConfiguration" {
        return Err(ConfigError::Kind(format!(
            "no kind \"{}\" is registered for version \"{api_version}\": want a PodSecurityConfiguration of {GROUP}/v1",
            doc["kind"].as_str().unwrap_or("")
        )));
    }
    for (k, _) in doc.as_object().into_iter().flatten() {
        if !["apiVersion", "kind", "defaults", "exemptions"].contains(&k.as_str()) {
            return Err(ConfigError::Unknown(k.clone()));
        }
    }
    let mut cfg = PodSecurityConfig::default();
    let defaults = &doc["defaults"];
    for (k, _) in defaults.as_object().into_iter().flatten() {
        let known = ["enforce", "audit", "warn"]
            .iter()
            .any(|m| k == m || *k == format!("{m}-version"));
        if !known {
            return Err(ConfigError::Unknown(format!("defaults.{k}")));
        }
    }
    for (mode, lv) in [
        ("enforce", &mut cfg.defaults.enforce),
        ("audit", &mut cfg.defaults.audit),
        ("warn", &mut cfg.defaults.warn),
    ] {
        *lv = level_version(defaults, mode)?;
    }
    let exemptions = &doc["exemptions"];
    for (k, _) in exemptions.as_object().into_iter().flatten() {
        if !["usernames", "runtimeClasses", "namespaces"].contains(&k.as_str()) {
            return Err(ConfigError::Unknown(format!("exemptions.{k}")));
        }
    }
    cfg.exempt_usernames = list(exemptions, "usernames")?;
    cfg.exempt_runtime_classes = list(exemptions, "runtimeClasses")?;
    cfg.exempt_namespaces = list(exemptions, "namespaces")?;
    Ok(cfg)
}

fn level_version(defaults: &Value, mode: &str) -> Result<LevelVersion, ConfigError> {
    let field = |suffix: &str| format!("defaults.{mode}{suffix}");
    let level = match defaults[mode].as_str().filter(|s| !s.is_empty()) {
        None => Level::Privileged,
        Some(s) => Level::parse(s).ok_or_else(|| ConfigError::Invalid {
            field: field(""),
            value: s.into(),
            message: "must be one of privileged, baseline, restricted",
        })?,
    };
    let key = format!("{mode}-version");
    let version = match defaults[&key].as_str().filter(|s| !s.is_empty()) {
        None => Version::Latest,
        Some(s) => Version::parse(s).ok_or_else(|| ConfigError::Invalid {
            field: field("-version"),
            value: s.into(),
            message: "must be \"latest\" or \"v1.x\"",
        })?,
    };
    Ok(LevelVersion { level, version })
}

fn list(exemptions: &Value, field: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for (i, v) in exemptions[field]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let s = v.as_str().unwrap_or("").to_string();
        if s.is_empty() {
            return Err(ConfigError::Exemption(format!(
                "exemptions.{field}[{i}]: Required value"
            )));
        }
        if out.contains(&s) {
            return Err(ConfigError::Exemption(format!(
                "exemptions.{field}[{i}]: Duplicate value: {s:?}"
            )));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_files(p: &str) -> Result<String, ConfigError> {
        Err(ConfigError::Kind(format!("no file {p}")))
    }

    #[test]
    fn k3s_hardening_guide_example_loads() {
        let text = r#"
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1beta1
    kind: PodSecurityConfiguration
    defaults:
      enforce: "restricted"
      enforce-version: "latest"
      audit: "restricted"
      audit-version: "latest"
      warn: "restricted"
      warn-version: "latest"
    exemptions:
      usernames: []
      runtimeClasses: []
      namespaces: [kube-system, compliance-operator-system]
"#;
        let cfg = parse(text, &no_files).expect("loads");
        assert_eq!(cfg.defaults.enforce.to_string(), "restricted:latest");
        assert_eq!(cfg.defaults.warn.to_string(), "restricted:latest");
        assert_eq!(
            cfg.exempt_namespaces,
            ["kube-system", "compliance-operator-system"]
        );
    }

    #[test]
    fn bad_configurations_are_refused_with_the_field() {
        let bare = |body: &str| {
            parse(
                &format!(
                    "apiVersion: pod-security.admission.config.k8s.io/v1\nkind: PodSecurityConfiguration\n{body}"
                ),
                &no_files,
            )
        };
        assert_eq!(
            bare("defaults: {enforce: strict}")
                .expect_err("refused")
                .to_string(),
            r#"defaults.enforce: Invalid value: "strict": must be one of privileged, baseline, restricted"#
        );
        assert!(matches!(
            bare("defaults: {enforce-versoin: v1.2}"),
            Err(ConfigError::Unknown(_))
        ));
        assert!(matches!(
            bare("exemptions: {namespaces: [a, a]}"),
            Err(ConfigError::Exemption(_))
        ));
        let cfg = bare("defaults: {warn: baseline}").expect("loads");
        assert_eq!(cfg.defaults.enforce, LevelVersion::PRIVILEGED);
        assert_eq!(cfg.defaults.warn.to_string(), "baseline:latest");
        assert!(matches!(
            parse("kind: Policy", &no_files),
            Err(ConfigError::Kind(_))
        ));
        assert!(parse(": [", &no_files).is_err());
    }
}
