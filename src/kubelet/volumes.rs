//! A pod's volumes on the node, under `<root>/pods/<uid>/volumes/<plugin>/<name>`:
//! emptyDir (tmpfs for `medium: Memory`), hostPath (with its `type` checks),
//! configMap, secret, downwardAPI and projected (with service account tokens from the
//! TokenRequest API), and claims bound to hostPath or local volumes.
//!
//! Files are written as upstream's atomic writer does: the data lives in a timestamped
//! directory that the `..data` link names, and each key is a link through `..data`,
//! so a container never sees a half-written update. Volumes are written again on
//! every refresh, so changed ConfigMaps and Secrets reach running pods.

use super::spec::{field_ref, resource_field_ref};
use crate::client::ApiClient;
use crate::host::Mounts;
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a pod's volume could not be set up (the pod waits in ContainerCreating).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    SetUp { volume: String, message: String },
}

/// What stops one volume's directory from being prepared (the `message` of
/// [`VolumeError::SetUp`]).
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A memory-backed emptyDir whose `sizeLimit` is not a quantity.
    #[error("sizeLimit {0} is not a quantity")]
    SizeLimit(String),
    /// The node's filesystem refused.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The tmpfs could not be mounted.
    #[error(transparent)]
    Mount(#[from] crate::host::mounts::MountError),
}

fn fail(volume: &str, message: impl ToString) -> VolumeError {
    VolumeError::SetUp {
        volume: volume.to_string(),
        message: message.to_string(),
    }
}

/// A file to project: contents and mode.
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

pub use super::atomic_writer::write_atomic;

/// Where a pod's volumes live.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// What the volume needs from the node to be written.
pub struct Env<'a> {
    pub client: &'a ApiClient,
    /// What is mounted, and mounting (tmpfs for secrets and memory emptyDirs).
    pub mounts: &'a dyn Mounts,
    pub root: &'a Path,
    pub host_ip: &'a str,
    pub pod_ip: &'a str,
    pub node_cpu: f64,
    pub node_memory: f64,
}

/// Sets up (or refreshes) every volume of `pod`; the host path of each by name.
pub async fn set_up(env: &Env<'_>, pod: &Value) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let base = pod_dir(env.root, uid).join("volumes");
    let mut paths = HashMap::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("");
        // the name becomes a directory: a stored object from before validation could
        // say `/etc` or `../../..`
        if !is_dns_label(name) {
            return Err(fail(
                name,
                "the volume name is not a DNS-1123 label: refused",
            ));
        }
        let at = |plugin: &str| base.join(plugin).join(name);
        let io = |e: std::io::Error| fail(name, e.to_string());
        let path = if v["emptyDir"].is_object() {
            let dir = at("kubernetes.io~empty-dir");
            std::fs::create_dir_all(&dir).map_err(io)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
            if v["emptyDir"]["medium"] == "Memory" && !env.mounts.is_mount(&dir) {
                let opts = tmpfs_options(&v["emptyDir"]["sizeLimit"]).map_err(|m| fail(name, m))?;
                env.mounts
                    .mount_tmpfs(&dir, &opts)
                    .map_err(|e| fail(name, e.to_string()))?;
            }
            dir
        } else if v["hostPath"].is_object() {
            host_path(name, &v["hostPath"])?
        } else if v["configMap"].is_object() || v["secret"].is_object() {
            let (plugin, files) = if v["configMap"].is_object() {
                (
                    "kubernetes.io~configmap",
                    config_map(env, ns, name, &v["configMap"]).await?,
                )
            } else {
                (
                    "kubernetes.io~secret",
                    secret(env, ns, name, &v["secret"]).await?,
                )
            };
            let dir = at(plugin);
            if plugin == "kubernetes.io~secret" {
                memory_backed(env.mounts, &dir, 1).map_err(|m| fail(name, m))?;
            }
            write_atomic(&dir, &files).map_err(io)?;
            dir
        } else if v["downwardAPI"].is_object() {
            let files = downward(env, pod, name, &v["downwardAPI"])?;
            let dir = at("kubernetes.io~downward-api");
            write_atomic(&dir, &files).map_err(io)?;
            dir
        } else if v["projected"].is_object() {
            let files = projected(env, pod, name, &v["projected"]).await?;
            let dir = at("kubernetes.io~projected");
            let sources = v["projected"]["sources"].as_array().map_or(1, Vec::len);
            memory_backed(env.mounts, &dir, sources).map_err(|m| fail(name, m))?;
            write_atomic(&dir, &files).map_err(io)?;
            dir
        } else if v["persistentVolumeClaim"].is_object() {
            claim(env, ns, name, &v["persistentVolumeClaim"]).await?
        } else {
            return Err(fail(
                name,
                "this volume type is not supported by skua's kubelet (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected, persistentVolumeClaim)",
            ));
        };
        paths.insert(name.to_string(), path);
    }
    Ok(paths)
}

/// Unmounts and removes every volume of the pod `uid`: its tmpfs volumes and subPath
/// binds first, deepest first; if one stays mounted nothing is removed, since a
/// removal would go through the mount.
pub fn tear_down(mounts: &dyn Mounts, root: &Path, uid: &str) {
    let dir = pod_dir(root, uid);
    // mountinfo has resolved paths: a relative or symlinked root must match them
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let mut mounted = mounts.mounts_under(&dir);
    mounted.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in &mounted {
        if let Err(e) = mounts.unmount(m) {
            tracing::warn!(mount = %m.display(), error = %e, "cannot unmount a pod's volume");
        }
    }
    if !mounts.mounts_under(&dir).is_empty() {
        tracing::warn!(dir = %dir.display(), "a pod's volume is still mounted: its directory is kept");
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a pod's volumes");
        }
    }
}

/// The tmpfs options of a memory-backed emptyDir: its `sizeLimit` read as a quantity
/// (a number of bytes goes to `mount`, never the user's text).
fn tmpfs_options(size_limit: &Value) -> Result<String, Problem> {
    let mut opts = "mode=0777".to_string();
    if !size_limit.is_null() {
        let bytes = crate::api::quantity::of(size_limit)
            .filter(|b| b.is_finite() && *b > 0.0 && *b < 1e18)
            .ok_or_else(|| Problem::SizeLimit(size_limit.to_string()))?;
        opts.push_str(&format!(",size={}", bytes.ceil() as u64));
    }
    Ok(opts)
}

/// Upstream's limit on one stored object, which bounds what one source projects.
const OBJECT_BYTES: u64 = 3 << 19;

/// Puts a secret or projected volume on its own tmpfs (as upstream), so its contents
/// never reach the node's disk; sized for two versions of `sources` objects (the
/// atomic writer keeps the old one until the new one is in place). A directory that
/// already holds files from an older skua is left as it is: its containers have it
/// mounted.
fn memory_backed(mounts: &dyn Mounts, dir: &Path, sources: usize) -> Result<(), Problem> {
    if mounts.is_mount(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let used = std::fs::read_dir(dir)?.next().is_some();
    if used {
        return Ok(());
    }
    let size = 2 * OBJECT_BYTES * (sources.max(1) as u64) + (1 << 20);
    mounts.mount_tmpfs(dir, &format!("mode=0755,size={size}"))?;
    Ok(())
}

/// A lowercase RFC 1123 label, as upstream requires of volume and container names.
pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A hostPath volume, checked (or created) by its `type` as upstream does.
fn host_path(name: &str, hp: &Value) -> Result<PathBuf, VolumeError> {
    let path = PathBuf::from(hp["path"].as_str().unwrap_or(""));
    let meta = std::fs::metadata(&path);
    let kind = hp["type"].as_str().unwrap_or("");
    let bad = |what: &str| {
        fail(
            name,
            format!(
                "hostPath type check failed: {} is not a {what}",
                path.display()
            ),
        )
    };
    match kind {
        "DirectoryOrCreate" if meta.is_err() => {
            std::fs::create_dir_all(&path).map_err(|e| fail(name, e.to_string()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| fail(name, e.to_string()))?;
        }
        "FileOrCreate" if meta.is_err() => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(name, e.to_string()))?;
            }
            std::fs::File::create(&path).map_err(|e| fail(name, e.to_string()))?;
        }
        "Directory" | "DirectoryOrCreate" if !meta.as_ref().is_ok_and(|m| m.is_dir()) => {
            return Err(bad("directory"));
        }
        "File" | "FileOrCreate" if !meta.as_ref().is_ok_and(|m| m.is_file()) => {
            return Err(bad("file"));
        }
        "Socket" | "CharDevice" | "BlockDevice" if meta.is_err() => {
            return Err(bad(&kind.to_ascii_lowercase()));
        }
        _ => {}
    }
    Ok(path)
}

fn mode_of(v: &Value, default: u32) -> u32 {
    v.as_u64().map_or(default, |m| m as u32)
}

/// The files of a map of keys, as `items` selects and names them.
fn select(
    volume: &str,
    what: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: &Value,
    default_mode: u32,
    optional: bool,
) -> Result<Files, VolumeError> {
    let mut files = Files::new();
    match items.as_array() {
        Some(items) if !items.is_empty() => {
            for item in items {
                let key = item["key"].as_str().unwrap_or("");
                let path = item["path"].as_str().unwrap_or(key);
                match data.get(key) {
                    Some(bytes) => {
                        files.insert(
                            path.to_string(),
                            (bytes.clone(), mode_of(&item["mode"], default_mode)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(fail(
                            volume,
                            format!("configuration error: key {key:?} not found in {what}"),
                        ));
                    }
                }
            }
        }
        _ => {
            for (k, bytes) in data {
                files.insert(k, (bytes, default_mode));
            }
        }
    }
    Ok(files)
}

async fn get_optional(
    client: &ApiClient,
    path: &str,
    volume: &str,
    kind: &str,
    name: &str,
    optional: bool,
) -> Result<Option<Value>, VolumeError> {
    match client.get(path).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() && optional => Ok(None),
        Err(e) if e.is_not_found() => Err(fail(volume, format!("{kind} {name:?} not found"))),
        Err(e) => Err(fail(volume, format!("cannot read {kind} {name:?}: {e}"))),
    }
}

fn config_map_data(cm: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::new();
    for (k, v) in cm["data"].as_object().into_iter().flatten() {
        data.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
    }
    for (k, v) in cm["binaryData"].as_object().into_iter().flatten() {
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")) {
            data.insert(k.clone(), b);
        }
    }
    data
}

fn secret_data(secret: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::new();
    for (k, v) in secret["data"].as_object().into_iter().flatten() {
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")) {
            data.insert(k.clone(), b);
        }
    }
    data
}

async fn config_map(
    env: &Env<'_>,
    ns: &str,
    volume: &str,
    src: &Value,
) -> Result<Files, VolumeError> {
    let name = src["name"].as_str().unwrap_or("");
    let optional = src["optional"] == true;
    let path = format!("/api/v1/namespaces/{ns}/configmaps/{name}");
    let cm = get_optional(env.client, &path, volume, "configmap", name, optional).await?;
    let data = cm.as_ref().map(config_map_data).unwrap_or_default();
    select(
        volume,
        &format!("configmap {name:?}"),
        data,
        &src["items"],
        mode_of(&src["defaultMode"], 0o644),
        optional,
    )
}

async fn secret(env: &Env<'_>, ns: &str, volume: &str, src: &Value) -> Result<Files, VolumeError> {
    let name = src["secretName"]
        .as_str()
        .or(src["name"].as_str())
        .unwrap_or("");
    let optional = src["optional"] == true;
    let path = format!("/api/v1/namespaces/{ns}/secrets/{name}");
    let s = get_optional(env.client, &path, volume, "secret", name, optional).await?;
    let data = s.as_ref().map(secret_data).unwrap_or_default();
    select(
        volume,
        &format!("secret {name:?}"),
        data,
        &src["items"],
        mode_of(&src["defaultMode"], 0o644),
        optional,
    )
}

fn downward(env: &Env<'_>, pod: &Value, volume: &str, src: &Value) -> Result<Files, VolumeError> {
    let default_mode = mode_of(&src["defaultMode"], 0o644);
    let mut files = Files::new();
    for item in src["items"].as_array().into_iter().flatten() {
        let path = item["path"].as_str().unwrap_or("");
        let text = if let Some(f) = item["fieldRef"]["fieldPath"].as_str() {
            field_ref(pod, f, env.host_ip, env.pod_ip)
                .ok_or_else(|| fail(volume, format!("unsupported fieldPath {f:?}")))?
        } else if let Some(r) = item["resourceFieldRef"]["resource"].as_str() {
            let cname = item["resourceFieldRef"]["containerName"]
                .as_str()
                .unwrap_or("");
            let c = super::spec::containers(pod)
                .find(|c| c["name"] == cname)
                .ok_or_else(|| {
                    fail(
                        volume,
                        format!("no container {cname:?} for resourceFieldRef"),
                    )
                })?;
            resource_field_ref(
                c,
                r,
                item["resourceFieldRef"]["divisor"].as_str(),
                env.node_cpu,
                env.node_memory,
            )
            .ok_or_else(|| fail(volume, format!("unsupported resource {r:?}")))?
        } else {
            continue;
        };
        files.insert(
            path.to_string(),
            (text.into_bytes(), mode_of(&item["mode"], default_mode)),
        );
    }
    Ok(files)
}

async fn projected(
    env: &Env<'_>,
    pod: &Value,
    volume: &str,
    src: &Value,
) -> Result<Files, VolumeError> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let default_mode = mode_of(&src["defaultMode"], 0o644);
    let mut files = Files::new();
    for source in src["sources"].as_array().into_iter().flatten() {
        let mut part = if source["configMap"].is_object() {
            let mut s = source["configMap"].clone();
            s["defaultMode"] = json!(default_mode);
            config_map(env, ns, volume, &s).await?
        } else if source["secret"].is_object() {
            let mut s = source["secret"].clone();
            s["defaultMode"] = json!(default_mode);
            secret(env, ns, volume, &s).await?
        } else if source["downwardAPI"].is_object() {
            let mut s = source["downwardAPI"].clone();
            s["defaultMode"] = json!(default_mode);
            downward(env, pod, volume, &s)?
        } else if source["serviceAccountToken"].is_object() {
            service_account_token(
                env,
                pod,
                volume,
                &source["serviceAccountToken"],
                default_mode,
            )
            .await?
        } else {
            continue;
        };
        files.append(&mut part);
    }
    Ok(files)
}

/// A token bound to the pod from the TokenRequest API.
async fn service_account_token(
    env: &Env<'_>,
    pod: &Value,
    volume: &str,
    src: &Value,
    mode: u32,
) -> Result<Files, VolumeError> {
    let m = &pod["metadata"];
    let ns = m["namespace"].as_str().unwrap_or("default");
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let audiences = src["audience"]
        .as_str()
        .map(|a| vec![a.to_string()])
        .unwrap_or_default();
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "audiences": audiences,
            "expirationSeconds": src["expirationSeconds"].as_i64().unwrap_or(3600),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": m["name"], "uid": m["uid"]},
        },
    });
    let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
    let answer = env.client.create(&path, &body).await.map_err(|e| {
        fail(
            volume,
            format!("cannot get a token for service account {sa:?}: {e}"),
        )
    })?;
    let token = answer["status"]["token"]
        .as_str()
        .unwrap_or("")
        .as_bytes()
        .to_vec();
    let path = src["path"].as_str().unwrap_or("token");
    Ok(Files::from([(path.to_string(), (token, mode))]))
}

/// A claim's volume: the bound PersistentVolume's hostPath or local path.
async fn claim(env: &Env<'_>, ns: &str, volume: &str, src: &Value) -> Result<PathBuf, VolumeError> {
    let name = src["claimName"].as_str().unwrap_or("");
    let pvc = get_optional(
        env.client,
        &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}"),
        volume,
        "persistentvolumeclaim",
        name,
        false,
    )
    .await?
    .unwrap_or_default();
    let pv_name = pvc["spec"]["volumeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            fail(
                volume,
                format!("persistentvolumeclaim {name:?} is not bound to a volume yet"),
            )
        })?;
    let pv = get_optional(
        env.client,
        &format!("/api/v1/persistentvolumes/{pv_name}"),
        volume,
        "persistentvolume",
        pv_name,
        false,
    )
    .await?
    .unwrap_or_default();
    if let Some(hp) = pv["spec"]["hostPath"].as_object() {
        return host_path(volume, &Value::Object(hp.clone()));
    }
    if let Some(path) = pv["spec"]["local"]["path"].as_str() {
        let p = PathBuf::from(path);
        return if p.exists() {
            Ok(p)
        } else {
            Err(fail(
                volume,
                format!("local volume path {path} does not exist on this node"),
            ))
        };
    }
    Err(fail(
        volume,
        format!(
            "persistentvolume {pv_name:?} is neither hostPath nor local, which is all skua's kubelet mounts"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits_reach_mount_as_numbers_only() {
        assert_eq!(
            tmpfs_options(&json!("64Mi")).unwrap(),
            "mode=0777,size=67108864"
        );
        assert_eq!(
            tmpfs_options(&json!("1.5G")).unwrap(),
            "mode=0777,size=1500000000"
        );
        assert_eq!(tmpfs_options(&Value::Null).unwrap(), "mode=0777");
        for bad in [
            json!("1Gi,exec,suid"),
            json!("-1"),
            json!("0"),
            json!("lots"),
        ] {
            assert!(tmpfs_options(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn items_select_and_rename_keys_and_missing_keys_are_errors() {
        let data = BTreeMap::from([
            ("k".to_string(), b"v".to_vec()),
            ("x".to_string(), b"y".to_vec()),
        ]);
        let items = json!([{"key": "k", "path": "dir/file", "mode": 0o400}]);
        let f = select("vol", "configmap \"c\"", data.clone(), &items, 0o644, false).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f["dir/file"], (b"v".to_vec(), 0o400));
        let missing = json!([{"key": "nope", "path": "p"}]);
        let e = select(
            "vol",
            "configmap \"c\"",
            data.clone(),
            &missing,
            0o644,
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("key \"nope\" not found"), "{e}");
        assert!(
            select("vol", "c", data, &missing, 0o644, true)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn host_path_types_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("made");
        let hp = json!({"path": missing, "type": "DirectoryOrCreate"});
        assert_eq!(host_path("v", &hp).unwrap(), missing);
        assert!(missing.is_dir());
        let e = host_path("v", &json!({"path": missing, "type": "File"})).unwrap_err();
        assert!(e.to_string().contains("is not a file"), "{e}");
        assert!(
            host_path(
                "v",
                &json!({"path": dir.path().join("none"), "type": "Directory"})
            )
            .is_err()
        );
    }
}
