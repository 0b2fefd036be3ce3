//! One pod's sync, level-triggered like upstream's syncPod: look at what the runtime
//! holds for the pod, converge it on the spec (sandbox, init containers in order, then
//! the containers, restarted by policy with crash-loop back-off), probe, and write the
//! status if it changed. Terminating pods are stopped gracefully and removed without a
//! trace.

use super::probes::{ProbeState, Verdict};
use super::spec::{self, POD_UID};
use super::status::{Observed, pod_status};
use super::{Kubelet, PodMemory, volumes};
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    ImageStatusRequest, ListContainersRequest, ListPodSandboxRequest, Mount, PodSandboxFilter,
    PodSandboxState, PodSandboxStatusRequest, PullImageRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Upstream's crash-loop back-off: 10 s doubling to 5 min, forgotten after 10 min.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// What a sync ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pod runs (or waits); sync again soon.
    Again,
    /// The pod is gone from the node and the API: the worker may end.
    Gone,
}

fn uid_of(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

fn label_filter(uid: &str) -> HashMap<String, String> {
    HashMap::from([(POD_UID.to_string(), uid.to_string())])
}

impl Kubelet {
    /// The sandboxes the runtime holds for pod `uid`, newest first.
    pub(super) async fn sandboxes(
        &self,
        uid: &str,
    ) -> Result<Vec<k8s_cri::v1::PodSandbox>, tonic::Status> {
        let mut list = self
            .cri()
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: label_filter(uid),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        list.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(list)
    }

    /// Every container instance of pod `uid`, with its full status.
    pub(super) async fn container_statuses(
        &self,
        uid: &str,
        memory: &mut PodMemory,
    ) -> Result<Vec<k8s_cri::v1::ContainerStatus>, tonic::Status> {
        let list = self
            .cri()
            .runtime
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    label_selector: label_filter(uid),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers;
        let mut out = Vec::new();
        for c in list {
            // a container's status changes only with its state: ask again only then
            if let Some(known) = memory.statuses.get(&c.id).filter(|s| s.state == c.state) {
                out.push(known.clone());
                continue;
            }
            match self
                .cri()
                .runtime
                .container_status(ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(r) => {
                    if let Some(st) = r.into_inner().status {
                        memory.statuses.insert(c.id.clone(), st.clone());
                        out.push(st);
                    }
                }
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let live: std::collections::HashSet<&String> = out.iter().map(|c| &c.id).collect();
        memory.statuses.retain(|id, _| live.contains(id));
        Ok(out)
    }

    /// Syncs one pod (`None`: the pod left the API; `uid` says which).
    pub(super) async fn sync_pod(
        &self,
        uid: &str,
        pod: Option<&Value>,
        memory: &mut PodMemory,
    ) -> anyhow::Result<Outcome> {
        let terminating = pod.is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null());
        if terminating {
            let grace = pod
                .and_then(|p| p["metadata"]["deletionGracePeriodSeconds"].as_i64())
                .unwrap_or(0);
            self.kill_pod(uid, pod, grace, memory).await?;
            self.remove_pod(uid, pod).await;
            if let Some(p) = pod {
                let path = super::pod_path(p);
                let opts = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}});
                if let Err(e) = self.client.delete(&path, &opts).await {
                    if e.code != 409 {
                        return Err(e.into());
                    }
                }
            }
            return Ok(Outcome::Gone);
        }
        let Some(pod) = pod else {
            return Ok(Outcome::Gone);
        };
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        let evicted = super::lock(&self.evicted).contains(uid);
        if evicted || matches!(phase, "Succeeded" | "Failed") {
            // finished: nothing more runs; the containers stay for their logs
            self.kill_pod(uid, Some(pod), 0, memory).await?;
            for sb in self.sandboxes(uid).await? {
                let _ = self
                    .cri()
                    .runtime
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: sb.id,
                    })
                    .await;
            }
            return Ok(Outcome::Again);
        }
        let mut seen = Observed::default();
        // volumes first: containers cannot start without them
        let pod_ip_now = pod["status"]["podIP"].as_str().unwrap_or("").to_string();
        let refresh = memory
            .volumes_at
            .is_none_or(|t| t.elapsed() >= self.settings.volume_refresh);
        if refresh || memory.volumes.is_none() {
            let env = volumes::Env {
                client: &self.client,
                root: &self.settings.root_dir,
                host_ip: &self.settings.host_ip,
                pod_ip: &pod_ip_now,
                node_cpu: self.settings.node_cpu,
                node_memory: self.settings.node_memory,
            };
            match volumes::set_up(&env, pod).await {
                Ok(v) => {
                    memory.volumes = Some(v);
                    memory.volumes_at = Some(Instant::now());
                }
                Err(e) if memory.volumes.is_none() => {
                    self.event(pod, true, "FailedMount", e.to_string());
                    self.write_status(pod, &seen, memory).await;
                    return Ok(Outcome::Again);
                }
                Err(e) => {
                    tracing::warn!(pod = %super::pod_key(pod), error = %e, "volume refresh failed")
                }
            }
        }
        // the sandbox
        let sandboxes = self.sandboxes(uid).await?;
        let ready = sandboxes
            .iter()
            .find(|s| s.state == PodSandboxState::SandboxReady as i32);
        let sandbox_id = match ready {
            Some(s) => s.id.clone(),
            None => {
                // a dead sandbox takes its containers with it: start over in a new one
                let attempt = sandboxes
                    .first()
                    .and_then(|s| s.metadata.as_ref())
                    .map_or(0, |m| m.attempt + 1);
                if !sandboxes.is_empty() {
                    self.kill_pod(uid, Some(pod), 0, memory).await?;
                    for sb in &sandboxes {
                        let _ = self
                            .cri()
                            .runtime
                            .remove_pod_sandbox(RemovePodSandboxRequest {
                                pod_sandbox_id: sb.id.clone(),
                            })
                            .await;
                    }
                }
                let config =
                    spec::sandbox_config(pod, &self.settings, attempt, &self.host_resolv());
                match self
                    .cri()
                    .runtime
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await
                {
                    Ok(r) => r.into_inner().pod_sandbox_id,
                    Err(e) => {
                        self.event(
                            pod,
                            true,
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: {}", e.message()),
                        );
                        self.write_status(pod, &seen, memory).await;
                        return Ok(Outcome::Again);
                    }
                }
            }
        };
        seen.sandbox_ready = true;
        let sandbox = self
            .cri()
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.clone(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status;
        seen.pod_ip = sandbox
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .map(|n| n.ip.clone());
        let pod_ip = if pod["spec"]["hostNetwork"] == true {
            self.settings.host_ip.clone()
        } else {
            seen.pod_ip.clone().unwrap_or_default()
        };
        memory.pod_ip = pod_ip.clone();
        seen.containers = self.container_statuses(uid, memory).await?;
        // init containers, one at a time, in order
        let policy = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
        let mut initialized = true;
        for c in spec::init_containers(pod) {
            let name = c["name"].as_str().unwrap_or("");
            let (latest, _) = seen.instances(name);
            match latest {
                Some(l)
                    if l.state == ContainerState::ContainerExited as i32 && l.exit_code == 0 =>
                {
                    continue;
                }
                Some(l) if l.state == ContainerState::ContainerRunning as i32 => {}
                Some(l) if l.state == ContainerState::ContainerExited as i32 => {
                    if policy != "Never" {
                        let attempt = l.metadata.as_ref().map_or(0, |m| m.attempt) + 1;
                        self.restart_with_backoff(
                            pod,
                            c,
                            &sandbox_id,
                            attempt,
                            l.finished_at,
                            &mut seen,
                            memory,
                        )
                        .await;
                    }
                }
                _ => {
                    self.start_container(pod, c, &sandbox_id, 0, &mut seen, memory)
                        .await;
                }
            }
            initialized = false;
            break;
        }
        if initialized {
            for c in spec::containers(pod) {
                self.converge_container(pod, c, &sandbox_id, policy, &pod_ip, &mut seen, memory)
                    .await;
            }
        }
        // what changed while converging shows in the status at once
        seen.containers = self.container_statuses(uid, memory).await?;
        for st in &seen.containers {
            if let Some(p) = memory.probes.get(&st.id) {
                if p.ready {
                    seen.ready.insert(st.id.clone());
                }
                if p.started {
                    seen.started.insert(st.id.clone());
                }
            }
        }
        self.rotate_logs(pod, &seen).await;
        self.write_status(pod, &seen, memory).await;
        Ok(Outcome::Again)
    }

    /// One app container: running (and probed), restarted by policy, or started.
    #[allow(clippy::too_many_arguments)]
    async fn converge_container(
        &self,
        pod: &Value,
        c: &Value,
        sandbox_id: &str,
        policy: &str,
        pod_ip: &str,
        seen: &mut Observed,
        memory: &mut PodMemory,
    ) {
        let name = c["name"].as_str().unwrap_or("");
        let (latest, _) = seen.instances(name);
        let Some(l) = latest.cloned() else {
            self.start_container(pod, c, sandbox_id, 0, seen, memory)
                .await;
            return;
        };
        let attempt = l.metadata.as_ref().map_or(0, |m| m.attempt);
        if l.state == ContainerState::ContainerRunning as i32 {
            let changed = l.annotations.get(spec::CONTAINER_HASH) != Some(&spec::container_hash(c));
            let probes = memory
                .probes
                .entry(l.id.clone())
                .or_insert_with(|| ProbeState::new(c));
            let verdict = if changed {
                Verdict::Restart("Container spec changed, will be restarted".into())
            } else {
                probes.round(&mut self.cri(), c, &l.id, pod_ip).await
            };
            if let Verdict::Restart(why) = verdict {
                let reason = if changed { "Killing" } else { "Unhealthy" };
                self.event(pod, !changed, reason, why);
                self.event(pod, false, "Killing", format!("Stopping container {name}"));
                self.stop_container(pod, c, &l.id, None).await;
                memory.probes.remove(&l.id);
            }
            return;
        }
        if l.state == ContainerState::ContainerCreated as i32 {
            // made but never started (the agent stopped in between): start it now
            if let Err(e) = self
                .cri()
                .runtime
                .start_container(StartContainerRequest {
                    container_id: l.id.clone(),
                })
                .await
            {
                tracing::warn!(container = %l.id, error = %e.message(), "cannot start a created container");
            }
            return;
        }
        let restart = match policy {
            "Never" => false,
            "OnFailure" => l.exit_code != 0,
            _ => true,
        };
        if restart {
            self.restart_with_backoff(pod, c, sandbox_id, attempt + 1, l.finished_at, seen, memory)
                .await;
        }
    }

    /// Restarts a container that exited, unless it is in crash-loop back-off.
    #[allow(clippy::too_many_arguments)]
    async fn restart_with_backoff(
        &self,
        pod: &Value,
        c: &Value,
        sandbox_id: &str,
        attempt: u32,
        finished_at: i64,
        seen: &mut Observed,
        memory: &mut PodMemory,
    ) {
        let name = c["name"].as_str().unwrap_or("").to_string();
        let now = Instant::now();
        let ran_long = memory
            .backoff
            .get(&name)
            .is_some_and(|(_, since)| now.duration_since(*since) >= BACKOFF_RESET);
        if ran_long {
            memory.backoff.remove(&name);
        }
        let finished = {
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            now - Duration::from_nanos((now_ns - finished_at).max(0) as u64)
        };
        if let Some((delay, _)) = memory.backoff.get(&name) {
            if now < finished + *delay {
                let m = &pod["metadata"];
                seen.waiting.insert(
                    name.clone(),
                    (
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={name} pod={}_{}({})",
                            delay.as_secs(),
                            m["name"].as_str().unwrap_or(""),
                            m["namespace"].as_str().unwrap_or(""),
                            m["uid"].as_str().unwrap_or("")
                        ),
                    ),
                );
                self.event(
                    pod,
                    true,
                    "BackOff",
                    "Back-off restarting failed container".into(),
                );
                return;
            }
        }
        let next = memory
            .backoff
            .get(&name)
            .map_or(BACKOFF_START, |(d, _)| (*d * 2).min(BACKOFF_MAX));
        memory.backoff.insert(name, (next, now));
        self.start_container(pod, c, sandbox_id, attempt, seen, memory)
            .await;
    }

    /// Pulls (by policy), creates and starts one container, then runs its postStart
    /// hook; a failure leaves a waiting reason in `seen`.
    async fn start_container(
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
                seen.waiting
                    .insert(name, ("CreateContainerConfigError".into(), message));
                return;
            }
        };
        let config = spec::container_config(
            pod,
            c,
            &self.effective_image(c["image"].as_str().unwrap_or("")),
            attempt,
            envs,
            mounts,
            self.settings.node_memory,
        );
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
                self.event(pod, true, "FailedPostStartHook", why);
                self.stop_container(pod, c, &id, None).await;
            }
        }
        self.prune(pod, &name, attempt, seen).await;
    }

    /// Keeps the newest dead instance of a container (for `--previous`); removes older.
    async fn prune(&self, pod: &Value, name: &str, attempt: u32, seen: &Observed) {
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

    /// The image, present or pulled as `imagePullPolicy` says.
    async fn ensure_image(&self, pod: &Value, c: &Value) -> Result<(), (String, String)> {
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
    async fn container_inputs(
        &self,
        pod: &Value,
        c: &Value,
        memory: &PodMemory,
    ) -> Result<(Vec<(String, String)>, Vec<Mount>), String> {
        let envs = super::env::resolve(self, pod, c, &memory.pod_ip).await?;
        let volumes = memory.volumes.clone().unwrap_or_default();
        let mut mounts = Vec::new();
        for vm in c["volumeMounts"].as_array().into_iter().flatten() {
            let vname = vm["name"].as_str().unwrap_or("");
            let mut host: PathBuf = volumes
                .get(vname)
                .cloned()
                .ok_or_else(|| format!("volume {vname:?} is not among the pod's volumes"))?;
            if let Some(sub) = vm["subPath"].as_str().filter(|s| !s.is_empty()) {
                if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                    return Err(format!(
                        "subPath {sub:?} must be a relative path without '..'"
                    ));
                }
                host = host.join(sub);
                if !host.exists() {
                    std::fs::create_dir_all(&host).map_err(|e| e.to_string())?;
                }
            }
            mounts.push(Mount {
                container_path: vm["mountPath"].as_str().unwrap_or("").to_string(),
                host_path: host.to_string_lossy().into_owned(),
                readonly: vm["readOnly"] == true,
                ..Default::default()
            });
        }
        if pod["spec"]["hostNetwork"] != true
            && !mounts.iter().any(|m| m.container_path == "/etc/hosts")
        {
            let hosts = self
                .write_hosts(pod, &memory.pod_ip)
                .map_err(|e| e.to_string())?;
            mounts.push(Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        Ok((envs, mounts))
    }

    /// The pod's `/etc/hosts`, as the kubelet manages it.
    fn write_hosts(&self, pod: &Value, pod_ip: &str) -> std::io::Result<PathBuf> {
        let dir = volumes::pod_dir(&self.settings.root_dir, &uid_of(pod));
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
                self.event(pod, true, "FailedPreStopHook", why);
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

    /// Stops every running container of pod `uid`, in parallel, with `grace` seconds.
    async fn kill_pod(
        &self,
        uid: &str,
        pod: Option<&Value>,
        grace: i64,
        memory: &mut PodMemory,
    ) -> anyhow::Result<()> {
        let all = self.container_statuses(uid, memory).await?;
        let empty = json!({});
        let pod = pod.unwrap_or(&empty);
        let running: Vec<_> = all
            .iter()
            .filter(|c| c.state == ContainerState::ContainerRunning as i32)
            .collect();
        let stops = running.iter().map(|st| {
            let name = st.metadata.as_ref().map_or("", |m| m.name.as_str());
            let c = spec::init_containers(pod)
                .chain(spec::containers(pod))
                .find(|c| c["name"] == name)
                .cloned()
                .unwrap_or_else(|| json!({}));
            async move {
                if !c.is_null() && grace > 0 {
                    self.event(pod, false, "Killing", format!("Stopping container {name}"));
                }
                self.stop_container(pod, &c, &st.id, Some(grace)).await
            }
        });
        futures_join_all(stops).await;
        Ok(())
    }

    /// Removes everything the pod left on the node: containers, sandboxes (with their
    /// network), volumes, cgroups and logs.
    pub(super) async fn remove_pod(&self, uid: &str, pod: Option<&Value>) {
        let mut ids = Vec::new();
        if let Ok(list) = self
            .cri()
            .runtime
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    label_selector: label_filter(uid),
                    ..Default::default()
                }),
            })
            .await
        {
            for c in list.into_inner().containers {
                let _ = self
                    .cri()
                    .runtime
                    .remove_container(RemoveContainerRequest {
                        container_id: c.id.clone(),
                    })
                    .await;
                ids.push(c.id);
            }
        }
        let mut log_dir = None;
        for sb in self.sandboxes(uid).await.unwrap_or_default() {
            if let Some(m) = &sb.metadata {
                log_dir = Some(format!("{}_{}_{}", m.namespace, m.name, m.uid));
            }
            let _ = self
                .cri()
                .runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                })
                .await;
            let _ = self
                .cri()
                .runtime
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: sb.id,
                })
                .await;
        }
        volumes::tear_down(&self.settings.root_dir, uid);
        super::logs::unlink(&self.settings.container_log_dir, &ids);
        let log_dir = log_dir.or_else(|| pod.map(spec::log_dir_name));
        if let Some(d) = log_dir {
            let _ = std::fs::remove_dir_all(self.settings.pod_log_dir.join(d));
        }
        remove_cgroups(uid);
    }

    /// Rotates the logs of running containers that outgrew the limit.
    async fn rotate_logs(&self, pod: &Value, seen: &Observed) {
        for c in &seen.containers {
            if c.state != ContainerState::ContainerRunning as i32 || c.log_path.is_empty() {
                continue;
            }
            let path = std::path::Path::new(&c.log_path);
            if super::logs::rotate(
                path,
                self.settings.log_max_size,
                self.settings.log_max_files,
            ) {
                if let Err(e) = self
                    .cri()
                    .runtime
                    .reopen_container_log(k8s_cri::v1::ReopenContainerLogRequest {
                        container_id: c.id.clone(),
                    })
                    .await
                {
                    tracing::warn!(pod = %super::pod_key(pod), error = %e.message(), "cannot reopen a rotated log");
                }
            }
        }
    }

    /// Writes the pod's status if it changed.
    async fn write_status(&self, pod: &Value, seen: &Observed, memory: &mut PodMemory) {
        let now = crate::api::meta::now_rfc3339();
        let start = memory
            .start_time
            .get_or_insert_with(|| {
                pod["status"]["startTime"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| now.clone())
            })
            .clone();
        let status = pod_status(pod, seen, &self.settings.host_ip, &start, &now);
        if memory.written.as_ref() == Some(&status) || same_status(&pod["status"], &status) {
            memory.written = Some(status);
            return;
        }
        let path = format!("{}/status", super::pod_path(pod));
        match self.client.patch(&path, &json!({ "status": status })).await {
            Ok(_) => memory.written = Some(status),
            Err(e) => {
                tracing::debug!(pod = %super::pod_key(pod), error = %e, "status update failed")
            }
        }
    }
}

/// Whether two statuses differ only in what the kubelet does not own.
fn same_status(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "phase"
                        | "conditions"
                        | "containerStatuses"
                        | "initContainerStatuses"
                        | "podIP"
                        | "hostIP"
                )
            });
        }
        v
    };
    strip(old) == strip(new)
}

/// Removes the pod's cgroup from every hierarchy (cgroup v1 and v2).
fn remove_cgroups(uid: &str) {
    let pod = format!("pod{uid}");
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    for entry in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        roots.push(entry.path());
    }
    for root in roots {
        for qos in ["kubepods", "kubepods/burstable", "kubepods/besteffort"] {
            let dir = root.join(qos).join(&pod);
            if dir.is_dir() {
                // leftover child cgroups first, then the pod's own
                for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if child.path().is_dir() {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

/// Awaits every future at once (a small join_all: no futures crate in the build).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut futs: Vec<Option<std::pin::Pin<Box<F>>>> = futs.map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in futs.iter_mut() {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await
}
