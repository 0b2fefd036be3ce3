//! Starting and stopping one container: the image by pull policy (with pull
//! secrets and registries.yaml rewrites), the environment and mounts resolved against
//! the API and the pod's volumes, create and start over CRI with its log linked for
//! collectors, the postStart hook; and the stop with its preStop hook.

use super::probes::ProbeState;
use super::spec;
use super::status::Observed;
use super::{Kubelet, PodMemory, volumes};
use k8s_cri::v1::{
    CreateContainerRequest, ImageSpec, ImageStatusRequest, Mount, PullImageRequest,
    RemoveContainerRequest, StartContainerRequest, StopContainerRequest,
};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// Why a container cannot be configured: it waits in `CreateContainerConfigError`
/// with this message, as upstream's kubelet reports it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Its security profiles or runAsNonRoot.
    #[error(transparent)]
    Profile(#[from] super::security::ProfileError),
    /// Its environment.
    #[error(transparent)]
    Env(#[from] super::env::EnvError),
    /// A volumeMount naming no volume of the pod.
    #[error("volume {0:?} is not among the pod's volumes")]
    UnknownVolume(String),
    /// A subPath mount for a container whose name cannot be a directory name.
    #[error("container name {0:?} is not a DNS-1123 label")]
    NotDnsLabel(String),
    /// A subPath that cannot be mounted.
    #[error(transparent)]
    SubPath(#[from] super::subpath::SubPathError),
    /// The pod's /etc/hosts could not be written.
    #[error("cannot write the pod's hosts file: {0}")]
    Hosts(std::io::Error),
}

impl Kubelet {
    /// Pulls (by policy), creates and starts one container, then runs its postStart
    /// hook; a failure leaves a waiting reason in `seen`.
    pub(super) async fn start_container(
        &self,
        pod: &Value,
        c: &Value,
        sandbox_id: &str,
        attempt: u32,
        seen: &mut Observed,
        memory: &mut PodMemory,
    ) {
        let name = c["name"].as_str().unwrap_or("").to_string();
        if let Err((reason, message)) = self.ensure_image(pod, c).await {
            self.event(pod, true, "Failed", message.clone());
            seen.waiting.insert(name, (reason, message));
            return;
        }
        let (envs, mounts) = match self.container_inputs(pod, c, memory).await {
            Ok(x) => x,
            Err(message) => {
                self.event(pod, true, "Failed", format!("Error: {message}"));
                seen.waiting.insert(
                    name,
                    ("CreateContainerConfigError".into(), message.to_string()),
                );
                return;
            }
        };
        // the security context's confinement, and runAsNonRoot against the image
        let checked =
            match super::security::profiles(pod, c, &self.settings.root_dir.join("seccomp")) {
                Ok(p) => self.non_root_check(pod, c).await.map(|()| p),
                Err(e) => Err(e),
            };
        let profiles = match checked {
            Ok(p) => p,
            Err(message) => {
                self.event(pod, true, "Failed", format!("Error: {message}"));
                seen.waiting.insert(
                    name,
                    ("CreateContainerConfigError".into(), message.to_string()),
                );
                return;
            }
        };
        let mut config = spec::container_config(
            pod,
            c,
            &self.effective_image(c["image"].as_str().unwrap_or("")),
            attempt,
            envs,
            mounts,
            self.settings.node_memory,
        );
        super::security::apply(&mut config, profiles);
        let sandbox_config = spec::sandbox_config(pod, &self.settings, 0, &self.host_resolv());
        let created = self
            .cri()
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                let message = e.message().to_string();
                self.event(pod, true, "Failed", format!("Error: {message}"));
                seen.waiting
                    .insert(name, ("CreateContainerError".into(), message));
                return;
            }
        };
        self.event(pod, false, "Created", format!("Created container {name}"));
        let m = &pod["metadata"];
        let (pname, ns) = (
            m["name"].as_str().unwrap_or(""),
            m["namespace"].as_str().unwrap_or(""),
        );
        super::logs::link(
            &self.settings.container_log_dir,
            &super::logs::link_name(pname, ns, &name, &id),
            &self
                .settings
                .pod_log_dir
                .join(spec::log_dir_name(pod))
                .join(&name)
                .join(format!("{attempt}.log")),
        );
        if let Err(e) = self
            .cri()
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            let message = e.message().to_string();
            self.event(pod, true, "Failed", format!("Error: {message}"));
            seen.waiting
                .insert(name, ("RunContainerError".into(), message));
            return;
        }
        self.event(pod, false, "Started", format!("Started container {name}"));
        memory.probes.insert(id.clone(), ProbeState::new(c));
        let hook = &c["lifecycle"]["postStart"];
        if hook.is_object() {
            let outcome = super::probes::run_action(
                &mut self.cri(),
                hook,
                c,
                &id,
                &memory.pod_ip,
                Duration::from_secs(30),
            )
            .await;
            if let Err(why) = outcome {
                self.event(pod, true, "FailedPostStartHook", why.to_string());
                self.stop_container(pod, c, &id, None).await;
            }
        }
        self.prune(pod, &name, attempt, seen).await;
    }

    /// Keeps the newest dead instance of a container (for `--previous`); removes older.
    pub(super) async fn prune(&self, pod: &Value, name: &str, attempt: u32, seen: &Observed) {
        let old: Vec<String> = seen
            .containers
            .iter()
            .filter(|c| {
                c.metadata
                    .as_ref()
                    .is_some_and(|m| m.name == name && m.attempt + 1 < attempt)
            })
            .map(|c| c.id.clone())
            .collect();
        for id in &old {
            let _ = self
                .cri()
                .runtime
                .remove_container(RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await;
        }
        super::logs::unlink(&self.settings.container_log_dir, &old);
        let _ = pod;
    }

    /// `runAsNonRoot`: the image's user, from the runtime, when the pod gives none.
    async fn non_root_check(
        &self,
        pod: &Value,
        c: &Value,
    ) -> Result<(), super::security::ProfileError> {
        use super::security::ProfileError;
        if super::security::non_root_problem(pod, c, Some(0), "").is_none() {
            return Ok(()); // not asked, or runAsUser decides
        }
        let image = self.effective_image(c["image"].as_str().unwrap_or(""));
        let status = self
            .cri()
            .images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map_err(|e| ProfileError::ImageUser(e.message().to_string()))?
            .into_inner();
        let image = status
            .image
            .ok_or_else(|| ProfileError::ImageUser("the image is gone".into()))?;
        match super::security::non_root_problem(pod, c, image.uid.map(|u| u.value), &image.username)
        {
            Some(problem) => Err(ProfileError::NonRoot(problem)),
            None => Ok(()),
        }
    }

    /// The image, present or pulled as `imagePullPolicy` says.
    pub(super) async fn ensure_image(
        &self,
        pod: &Value,
        c: &Value,
    ) -> Result<(), (String, String)> {
        let image = self.effective_image(c["image"].as_str().unwrap_or(""));
        let spec = ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let present = self
            .cri()
            .images
            .image_status(ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image.is_some())
            .unwrap_or(false);
        let policy = c["imagePullPolicy"].as_str().unwrap_or("IfNotPresent");
        match policy {
            "Never" if !present => {
                return Err((
                    "ErrImageNeverPull".into(),
                    format!("Container image {image:?} is not present with pull policy of Never"),
                ));
            }
            "Never" | "IfNotPresent" if present => return Ok(()),
            _ => {}
        }
        self.event(pod, false, "Pulling", format!("Pulling image {image:?}"));
        let auth = super::pull::auth_for(&self.client, pod, &image).await;
        let started = Instant::now();
        match self
            .cri()
            .images
            .pull_image(PullImageRequest {
                image: Some(spec),
                auth,
                sandbox_config: None,
            })
            .await
        {
            Ok(_) => {
                self.event(
                    pod,
                    false,
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                Ok(())
            }
            Err(e) => Err((
                "ErrImagePull".into(),
                format!("failed to pull and unpack image {image:?}: {}", e.message()),
            )),
        }
    }

    /// The container's environment and mounts, resolved against the API.
    pub(super) async fn container_inputs(
        &self,
        pod: &Value,
        c: &Value,
        memory: &PodMemory,
    ) -> Result<(Vec<(String, String)>, Vec<Mount>), ConfigError> {
        let envs = super::env::resolve(self, pod, c, &memory.pod_ip).await?;
        let volumes = memory.volumes.clone().unwrap_or_default();
        let cname = c["name"].as_str().unwrap_or("");
        // a container's mounts of the API's data are read-only whatever the manifest
        // says (upstream since CVE-2017-1002102): the kubelet rewrites them
        let projected: std::collections::HashSet<&str> = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| {
                ["configMap", "secret", "downwardAPI", "projected"]
                    .iter()
                    .any(|k| v[*k].is_object())
            })
            .filter_map(|v| v["name"].as_str())
            .collect();
        let mut mounts = Vec::new();
        for (index, vm) in c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let vname = vm["name"].as_str().unwrap_or("");
            let mut host: PathBuf = volumes
                .get(vname)
                .cloned()
                .ok_or_else(|| ConfigError::UnknownVolume(vname.to_string()))?;
            if let Some(sub) = vm["subPath"].as_str().filter(|s| !s.is_empty()) {
                if !volumes::is_dns_label(cname) {
                    return Err(ConfigError::NotDnsLabel(cname.to_string()));
                }
                // opened beneath the volume and bind-mounted by fd: a link a container
                // planted never leads out of it
                let target = volumes::pod_dir(
                    &self.settings.root_dir,
                    pod["metadata"]["uid"].as_str().unwrap_or(""),
                )
                .join("volume-subpaths")
                .join(vname)
                .join(cname)
                .join(index.to_string());
                host = super::subpath::bind(&host, sub, &target)?;
            }
            mounts.push(Mount {
                container_path: vm["mountPath"].as_str().unwrap_or("").to_string(),
                host_path: host.to_string_lossy().into_owned(),
                readonly: vm["readOnly"] == true || projected.contains(vname),
                ..Default::default()
            });
        }
        if pod["spec"]["hostNetwork"] != true
            && !mounts.iter().any(|m| m.container_path == "/etc/hosts")
        {
            let hosts = self
                .write_hosts(pod, &memory.pod_ip)
                .map_err(ConfigError::Hosts)?;
            mounts.push(Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        Ok((envs, mounts))
    }

    /// The pod's `/etc/hosts`, as the kubelet manages it.
    pub(super) fn write_hosts(&self, pod: &Value, pod_ip: &str) -> std::io::Result<PathBuf> {
        let dir = volumes::pod_dir(
            &self.settings.root_dir,
            pod["metadata"]["uid"].as_str().unwrap_or(""),
        );
        std::fs::create_dir_all(&dir)?;
        let name = pod["spec"]["hostname"]
            .as_str()
            .or(pod["metadata"]["name"].as_str())
            .unwrap_or("");
        let mut text = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        if !pod_ip.is_empty() {
            text.push_str(&format!("{pod_ip}\t{name}\n"));
        }
        for alias in pod["spec"]["hostAliases"].as_array().into_iter().flatten() {
            let names: Vec<&str> = alias["hostnames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            text.push_str(&format!(
                "\n# Entries added by HostAliases.\n{}\t{}\n",
                alias["ip"].as_str().unwrap_or(""),
                names.join("\t")
            ));
        }
        let path = dir.join("etc-hosts");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Stops one container: its preStop hook, then SIGTERM and SIGKILL after the grace
    /// period (the runtime sends both).
    pub(super) async fn stop_container(
        &self,
        pod: &Value,
        c: &Value,
        id: &str,
        grace: Option<i64>,
    ) {
        let grace = grace
            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .max(0);
        let started = Instant::now();
        let hook = &c["lifecycle"]["preStop"];
        if hook.is_object() && grace > 0 {
            let outcome = super::probes::run_action(
                &mut self.cri(),
                hook,
                c,
                id,
                pod["status"]["podIP"].as_str().unwrap_or(""),
                Duration::from_secs(grace as u64),
            )
            .await;
            if let Err(why) = outcome {
                self.event(pod, true, "FailedPreStopHook", why.to_string());
            }
        }
        let left = (grace - started.elapsed().as_secs() as i64).max(if grace > 0 { 2 } else { 0 });
        if let Err(e) = self
            .cri()
            .runtime
            .stop_container(StopContainerRequest {
                container_id: id.to_string(),
                timeout: left,
            })
            .await
        {
            tracing::warn!(container = %id, error = %e.message(), "cannot stop a container");
        }
    }
}
