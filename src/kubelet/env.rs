//! A container's environment, resolved as upstream's kubelet does: the service
//! variables of the namespace first, then `envFrom`, then `env` (values with `$(VAR)`
//! expansion, and `valueFrom` configMapKeyRef / secretKeyRef / fieldRef /
//! resourceFieldRef); later definitions win.

use super::Kubelet;
use super::spec::{expand, field_ref, resource_field_ref, service_env};
use base64::Engine as _;
use serde_json::Value;
use std::collections::BTreeMap;

/// An ordered environment where a later definition replaces an earlier one in place.
#[derive(Default)]
struct Environment {
    order: Vec<String>,
    values: BTreeMap<String, String>,
}

impl Environment {
    fn set(&mut self, k: String, v: String) {
        if !self.values.contains_key(&k) {
            self.order.push(k.clone());
        }
        self.values.insert(k, v);
    }

    fn into_vec(self) -> Vec<(String, String)> {
        let Environment { order, mut values } = self;
        order
            .into_iter()
            .filter_map(|k| values.remove(&k).map(|v| (k, v)))
            .collect()
    }
}

/// Whether `k` is a name upstream accepts for an environment variable.
fn valid_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Why a container's environment cannot be resolved (upstream's messages).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The API did not answer for a source.
    #[error("cannot read {kind} {name:?}: {error}")]
    Read {
        /// configmap or secret.
        kind: String,
        /// Its name.
        name: String,
        /// The API's answer.
        error: crate::client::ClientError,
    },
    /// A source that is not optional does not exist.
    #[error("{0} {1:?} not found")]
    NotFound(&'static str, String),
    /// A fieldRef the kubelet cannot resolve.
    #[error("unsupported fieldPath {path:?} in env {name:?}")]
    FieldPath {
        /// The fieldPath.
        path: String,
        /// The variable.
        name: String,
    },
    /// A resourceFieldRef the kubelet cannot resolve.
    #[error("unsupported resource in env {0:?}")]
    Resource(String),
    /// A key that is not optional is missing from its ConfigMap or Secret.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        /// The key.
        key: String,
        /// ConfigMap or Secret.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// The data of a ConfigMap or a Secret (decoded), or `None` if it is missing.
async fn source(
    kubelet: &Kubelet,
    ns: &str,
    kind: &'static str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, EnvError> {
    let plural = if kind == "configmap" {
        "configmaps"
    } else {
        "secrets"
    };
    match kubelet
        .client
        .get(&format!("/api/v1/namespaces/{ns}/{plural}/{name}"))
        .await
    {
        Ok(obj) => {
            let mut out = BTreeMap::new();
            for (k, v) in obj["data"].as_object().into_iter().flatten() {
                let text = v.as_str().unwrap_or("");
                let value = if kind == "secret" {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .unwrap_or_default();
                    String::from_utf8_lossy(&bytes).into_owned()
                } else {
                    text.to_string()
                };
                out.insert(k.clone(), value);
            }
            Ok(Some(out))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(EnvError::Read {
            kind: kind.to_string(),
            name: name.to_string(),
            error: e,
        }),
    }
}

/// The environment of container `c` of `pod`.
pub async fn resolve(
    kubelet: &Kubelet,
    pod: &Value,
    c: &Value,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, EnvError> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let mut env = Environment::default();
    let services: Vec<Value> = kubelet
        .services
        .list(None)
        .iter()
        .map(|s| (**s).clone())
        .collect();
    let links = pod["spec"]["enableServiceLinks"] != false;
    for (k, v) in service_env(&services, ns, links) {
        env.set(k, v);
    }
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        let (kind, r) = if from["configMapRef"].is_object() {
            ("configmap", &from["configMapRef"])
        } else {
            ("secret", &from["secretRef"])
        };
        let name = r["name"].as_str().unwrap_or("");
        match source(kubelet, ns, kind, name).await? {
            Some(data) => {
                for (k, v) in data {
                    let key = format!("{prefix}{k}");
                    if valid_name(&key) {
                        env.set(key, v);
                    }
                }
            }
            None if r["optional"] == true => {}
            None => return Err(EnvError::NotFound(kind, name.to_string())),
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_string();
        let from = &e["valueFrom"];
        let value = if !from.is_object() {
            expand(e["value"].as_str().unwrap_or(""), &env.values)
        } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            field_ref(pod, path, &kubelet.settings.host_ip, pod_ip).ok_or_else(|| {
                EnvError::FieldPath {
                    path: path.to_string(),
                    name: name.clone(),
                }
            })?
        } else if from["resourceFieldRef"].is_object() {
            let r = &from["resourceFieldRef"];
            let target = r["containerName"]
                .as_str()
                .filter(|n| !n.is_empty())
                .and_then(|n| super::spec::containers(pod).find(|x| x["name"] == n))
                .unwrap_or(c);
            resource_field_ref(
                target,
                r["resource"].as_str().unwrap_or(""),
                r["divisor"].as_str(),
                kubelet.settings.node_cpu,
                kubelet.settings.node_memory,
            )
            .ok_or_else(|| EnvError::Resource(name.clone()))?
        } else {
            let (kind, r) = if from["configMapKeyRef"].is_object() {
                ("configmap", &from["configMapKeyRef"])
            } else {
                ("secret", &from["secretKeyRef"])
            };
            let src = r["name"].as_str().unwrap_or("");
            let key = r["key"].as_str().unwrap_or("");
            let optional = r["optional"] == true;
            match source(kubelet, ns, kind, src).await? {
                Some(data) => match data.get(key) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::MissingKey {
                            key: key.to_string(),
                            kind: if kind == "configmap" {
                                "ConfigMap"
                            } else {
                                "Secret"
                            },
                            namespace: ns.to_string(),
                            name: src.to_string(),
                        });
                    }
                },
                None if optional => continue,
                None => return Err(EnvError::NotFound(kind, src.to_string())),
            }
        };
        env.set(name, value);
    }
    Ok(env.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_definitions_replace_earlier_ones_in_place() {
        let mut e = Environment::default();
        e.set("A".into(), "1".into());
        e.set("B".into(), "2".into());
        e.set("A".into(), "3".into());
        assert_eq!(
            e.into_vec(),
            vec![
                ("A".to_string(), "3".to_string()),
                ("B".to_string(), "2".to_string())
            ]
        );
        assert!(valid_name("MY_VAR.x-1"));
        assert!(!valid_name("1A") && !valid_name("a b") && !valid_name(""));
    }
}
