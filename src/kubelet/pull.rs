//! Credentials for image pulls from a pod's `imagePullSecrets`
//! (`kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg`), matched to the
//! image's registry as upstream's credential keyring does.

use crate::client::ApiClient;
use base64::Engine as _;
use k8s_cri::v1::AuthConfig;
use serde_json::Value;

/// The registry host of an image reference (`docker.io` when it names none).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

/// The host a docker config key names (`https://index.docker.io/v1/` → `docker.io`).
fn key_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

/// The credentials for `image` in a docker config (`auths` map or bare map).
pub fn find(config: &Value, image: &str) -> Option<AuthConfig> {
    let want = registry_of(image);
    let auths = config.get("auths").unwrap_or(config).as_object()?;
    let (_, entry) = auths.iter().find(|(k, _)| key_host(k) == want)?;
    let mut username = entry["username"].as_str().unwrap_or("").to_string();
    let mut password = entry["password"].as_str().unwrap_or("").to_string();
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(auth) {
            if let Some((u, p)) = String::from_utf8_lossy(&bytes).split_once(':') {
                username = u.to_string();
                password = p.to_string();
            }
        }
    }
    // no server address: the registry is matched here already, and containerd would
    // try to parse "127.0.0.1:5000" as a URL
    Some(AuthConfig {
        username,
        password,
        ..Default::default()
    })
}

/// The credentials of the first of the pod's pull secrets that has some for `image`.
pub async fn auth_for(client: &ApiClient, pod: &Value, image: &str) -> Option<AuthConfig> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    for r in pod["spec"]["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = r["name"].as_str().unwrap_or("");
        let Ok(secret) = client
            .get(&format!("/api/v1/namespaces/{ns}/secrets/{name}"))
            .await
        else {
            tracing::warn!(
                secret = name,
                "image pull secret not readable; pulling without it"
            );
            continue;
        };
        for key in [".dockerconfigjson", ".dockercfg"] {
            let Some(data) = secret["data"][key].as_str() else {
                continue;
            };
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
                continue;
            };
            let Ok(config) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if let Some(auth) = find(&config, image) {
                return Some(auth);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registries_and_credentials_match_as_upstream() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/app:v1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        let cfg = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": "dTpw"},
            "127.0.0.1:5000": {"username": "me", "password": "pw"},
        }});
        let a = find(&cfg, "busybox").unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
        let b = find(&cfg, "127.0.0.1:5000/app:v1").unwrap();
        assert_eq!((b.username.as_str(), b.password.as_str()), ("me", "pw"));
        assert!(
            b.server_address.is_empty(),
            "containerd would misparse host:port"
        );
        assert!(find(&cfg, "quay.io/x").is_none());
    }
}
