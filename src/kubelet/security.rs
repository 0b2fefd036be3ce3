//! The hardening fields of a security context that the runtime enforces, mapped to
//! CRI as upstream's kubelet maps them, and `runAsNonRoot`, which the kubelet checks
//! itself against the image's user before it creates the container. Nothing here is
//! dropped: a field that cannot be honoured fails the container with
//! `CreateContainerConfigError` instead of running it with less protection.

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{ContainerConfig, SeLinuxOption, SecurityProfile};
use serde_json::Value;
use std::path::Path;

/// What the runtime is asked to confine the container with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profiles {
    pub seccomp: Option<SecurityProfile>,
    pub apparmor: Option<SecurityProfile>,
    pub selinux: Option<SeLinuxOption>,
}

fn pod_name(pod: &Value) -> String {
    format!(
        "{}_{}",
        pod["metadata"]["name"].as_str().unwrap_or(""),
        pod["metadata"]["namespace"].as_str().unwrap_or("")
    )
}

/// Why a container's security settings cannot be given to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A Localhost profile name that is absolute or climbs out of its directory.
    #[error("{what} localhostProfile {name:?} must be a relative path without '..'")]
    LocalName {
        /// seccomp or AppArmor.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A seccomp Localhost profile that is not a file on this node.
    #[error("seccomp profile {} does not exist on this node", .0.display())]
    Missing(std::path::PathBuf),
    /// A profile type other than RuntimeDefault, Unconfined and Localhost.
    #[error("unknown {0} profile type {1:?}")]
    UnknownType(&'static str, Option<String>),
    /// An AppArmor annotation other than runtime/default, unconfined, localhost/<name>.
    #[error("invalid AppArmor profile annotation {0:?}")]
    Annotation(String),
    /// The runtime cannot say which user the image runs as (for runAsNonRoot).
    #[error("cannot read the image's user: {0}")]
    ImageUser(String),
    /// runAsNonRoot refused the container's user (upstream's message).
    #[error("{0}")]
    NonRoot(String),
}

/// A profile name under a root directory: relative, no `..`, no NUL.
fn local_name<'a>(name: &'a str, what: &'static str) -> Result<&'a str, ProfileError> {
    if name.is_empty()
        || name.starts_with('/')
        || name.contains('\0')
        || name.split('/').any(|p| p == "..")
    {
        return Err(ProfileError::LocalName {
            what,
            name: name.to_string(),
        });
    }
    Ok(name)
}

fn profile(kind: ProfileType, localhost_ref: String) -> SecurityProfile {
    SecurityProfile {
        profile_type: kind as i32,
        localhost_ref,
    }
}

/// The container's seccomp, AppArmor and SELinux settings (the container's own,
/// else the pod's). Seccomp Localhost profiles are files under `seccomp_root` (the
/// kubelet's `<root-dir>/seccomp`); a privileged container is unconfined, as
/// upstream. No seccompProfile: unconfined, upstream's default without
/// `--seccomp-default`.
pub fn profiles(pod: &Value, c: &Value, seccomp_root: &Path) -> Result<Profiles, ProfileError> {
    let psc = &pod["spec"]["securityContext"];
    let csc = &c["securityContext"];
    let privileged = csc["privileged"] == true;
    let pick = |k: &str| {
        [csc, psc]
            .into_iter()
            .map(|sc| &sc[k])
            .find(|v| v.is_object())
    };
    let seccomp = match pick("seccompProfile") {
        _ if privileged => Some(profile(ProfileType::Unconfined, String::new())),
        None => Some(profile(ProfileType::Unconfined, String::new())),
        Some(sp) => Some(match sp["type"].as_str() {
            Some("RuntimeDefault") => profile(ProfileType::RuntimeDefault, String::new()),
            Some("Unconfined") => profile(ProfileType::Unconfined, String::new()),
            Some("Localhost") => {
                let name = local_name(sp["localhostProfile"].as_str().unwrap_or(""), "seccomp")?;
                let path = seccomp_root.join(name);
                if !path.is_file() {
                    return Err(ProfileError::Missing(path));
                }
                profile(ProfileType::Localhost, path.to_string_lossy().into_owned())
            }
            other => {
                return Err(ProfileError::UnknownType(
                    "seccomp",
                    other.map(String::from),
                ));
            }
        }),
    };
    // AppArmor: the field (1.30+), else the beta annotation
    let cname = c["name"].as_str().unwrap_or("");
    let annotation = pod["metadata"]["annotations"]
        [format!("container.apparmor.security.beta.kubernetes.io/{cname}")]
    .as_str();
    let apparmor = match (pick("appArmorProfile"), annotation) {
        _ if privileged => None,
        (Some(ap), _) => Some(match ap["type"].as_str() {
            Some("RuntimeDefault") => profile(ProfileType::RuntimeDefault, String::new()),
            Some("Unconfined") => profile(ProfileType::Unconfined, String::new()),
            Some("Localhost") => profile(
                ProfileType::Localhost,
                local_name(ap["localhostProfile"].as_str().unwrap_or(""), "AppArmor")?.to_string(),
            ),
            other => {
                return Err(ProfileError::UnknownType(
                    "AppArmor",
                    other.map(String::from),
                ));
            }
        }),
        (None, Some("runtime/default")) => {
            Some(profile(ProfileType::RuntimeDefault, String::new()))
        }
        (None, Some("unconfined")) => Some(profile(ProfileType::Unconfined, String::new())),
        (None, Some(a)) => match a.strip_prefix("localhost/") {
            Some(name) => Some(profile(
                ProfileType::Localhost,
                local_name(name, "AppArmor")?.to_string(),
            )),
            None => return Err(ProfileError::Annotation(a.to_string())),
        },
        (None, None) => None,
    };
    let selinux = pick("seLinuxOptions").map(|o| {
        let f = |k: &str| o[k].as_str().unwrap_or("").to_string();
        SeLinuxOption {
            user: f("user"),
            role: f("role"),
            r#type: f("type"),
            level: f("level"),
        }
    });
    Ok(Profiles {
        seccomp,
        apparmor,
        selinux,
    })
}

/// Puts `p` into the container's config.
pub fn apply(config: &mut ContainerConfig, p: Profiles) {
    if let Some(sc) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.seccomp = p.seccomp;
        sc.apparmor = p.apparmor;
        sc.selinux_options = p.selinux;
    }
}

/// Upstream's `verifyRunAsNonRoot`: with `runAsNonRoot` (the container's, else the
/// pod's), the container may not run as uid 0: by `runAsUser`, or else by the image's
/// user, which must then be numeric to be checked. The problem, in upstream's words.
pub fn non_root_problem(
    pod: &Value,
    c: &Value,
    image_uid: Option<i64>,
    image_user: &str,
) -> Option<String> {
    let psc = &pod["spec"]["securityContext"];
    let csc = &c["securityContext"];
    let non_root = csc["runAsNonRoot"]
        .as_bool()
        .or_else(|| psc["runAsNonRoot"].as_bool())
        .unwrap_or(false);
    if !non_root {
        return None;
    }
    let cname = c["name"].as_str().unwrap_or("");
    let pod = pod_name(pod);
    let run_as = csc["runAsUser"]
        .as_i64()
        .or_else(|| psc["runAsUser"].as_i64());
    match run_as {
        Some(0) => {
            return Some(format!(
                "container's runAsUser breaks non-root policy (pod: {pod:?}, container: {cname})"
            ));
        }
        Some(_) => return None,
        None => {}
    }
    match image_uid {
        Some(0) => Some(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {cname})"
        )),
        Some(_) => None,
        None if !image_user.is_empty() => {
            // "name" or "name:group": a name cannot be checked without the image's
            // /etc/passwd
            let user = image_user.split(':').next().unwrap_or("");
            match user.parse::<i64>() {
                Ok(0) => Some(format!(
                    "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {cname})"
                )),
                Ok(_) => None,
                Err(_) => Some(format!(
                    "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {cname})"
                )),
            }
        }
        // no user in the image: it runs as root
        None => Some(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {cname})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(psc: Value, csc: Value) -> (Value, Value) {
        let c = json!({"name": "c", "securityContext": csc});
        (
            json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"securityContext": psc, "containers": [c.clone()]}}),
            c,
        )
    }

    #[test]
    fn run_as_non_root_refuses_root_as_upstream() {
        let (p, c) = pod(json!({"runAsNonRoot": true}), json!({}));
        let says = |uid, user| non_root_problem(&p, &c, uid, user);
        assert!(
            says(Some(0), "")
                .unwrap()
                .contains("image will run as root")
        );
        assert!(says(None, "").unwrap().contains("image will run as root"));
        assert!(
            says(None, "nobody")
                .unwrap()
                .contains("non-numeric user (nobody)")
        );
        assert!(says(None, "0:0").is_some());
        assert_eq!(says(Some(1000), ""), None);
        assert_eq!(says(None, "1000:1000"), None);
        // runAsUser decides when given; the container's setting beats the pod's
        let (p, c) = pod(json!({"runAsNonRoot": true}), json!({"runAsUser": 0}));
        assert!(
            non_root_problem(&p, &c, Some(1000), "")
                .unwrap()
                .contains("breaks non-root policy")
        );
        let (p, c) = pod(json!({"runAsNonRoot": true, "runAsUser": 1000}), json!({}));
        assert_eq!(non_root_problem(&p, &c, Some(0), ""), None);
        let (p, c) = pod(
            json!({"runAsNonRoot": true}),
            json!({"runAsNonRoot": false}),
        );
        assert_eq!(non_root_problem(&p, &c, Some(0), ""), None);
    }

    #[test]
    fn profiles_reach_cri_and_bad_ones_fail() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("audit.json"), "{}").unwrap();
        let (p, c) = pod(
            json!({"seccompProfile": {"type": "RuntimeDefault"}, "seLinuxOptions": {"level": "s0:c1,c2"}}),
            json!({"appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-nginx"}}),
        );
        let got = profiles(&p, &c, root.path()).unwrap();
        assert_eq!(
            got.seccomp.unwrap().profile_type,
            ProfileType::RuntimeDefault as i32
        );
        let aa = got.apparmor.unwrap();
        assert_eq!(
            (aa.profile_type, aa.localhost_ref.as_str()),
            (ProfileType::Localhost as i32, "k8s-nginx")
        );
        assert_eq!(got.selinux.unwrap().level, "s0:c1,c2");
        let (p, c) = pod(
            json!({}),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "audit.json"}}),
        );
        let sc = profiles(&p, &c, root.path()).unwrap().seccomp.unwrap();
        assert_eq!(
            sc.localhost_ref,
            root.path().join("audit.json").to_string_lossy()
        );
        for bad in ["../../etc/passwd", "/etc/passwd", "missing.json"] {
            let (p, c) = pod(
                json!({}),
                json!({"seccompProfile": {"type": "Localhost", "localhostProfile": bad}}),
            );
            assert!(profiles(&p, &c, root.path()).is_err(), "{bad}");
        }
        // the annotation, for pods from before the field
        let (mut p, c) = pod(json!({}), json!({}));
        p["metadata"]["annotations"] =
            json!({"container.apparmor.security.beta.kubernetes.io/c": "runtime/default"});
        let aa = profiles(&p, &c, root.path()).unwrap().apparmor.unwrap();
        assert_eq!(aa.profile_type, ProfileType::RuntimeDefault as i32);
        // nothing asked: unconfined seccomp, the runtime's AppArmor default
        let (p, c) = pod(json!({}), json!({}));
        let got = profiles(&p, &c, root.path()).unwrap();
        assert_eq!(
            got.seccomp.unwrap().profile_type,
            ProfileType::Unconfined as i32
        );
        assert!(got.apparmor.is_none());
    }
}
