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
    ContainerFilter, ContainerState, ContainerStatusRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

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

/// The runtime's filter for everything of pod `uid`.
pub(super) fn label_filter(uid: &str) -> HashMap<String, String> {
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
    ) -> Result<Outcome, super::KubeletError> {
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
                    if e.code() != 409 {
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
                mounts: &*self.host.mounts,
                root: &self.settings.root_dir,
                host_ip: &self.settings.host_ip,
                pod_ip: &pod_ip_now,
                node_cpu: self.settings.node_cpu,
                node_memory: self.settings.node_memory,
            };
            match volumes::set_up(&env, pod).await {
                Ok(v) => {
                    memory.volumes = Some(v);
                    memory.volumes_at = Some(self.host.clock.now());
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
        // a sandbox's address never changes: ask the runtime once per sandbox
        seen.pod_ip = match &memory.sandbox_ip {
            Some((id, ip)) if *id == sandbox_id => ip.clone(),
            _ => {
                let ip = self
                    .cri()
                    .runtime
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: sandbox_id.clone(),
                        verbose: false,
                    })
                    .await?
                    .into_inner()
                    .status
                    .and_then(|s| s.network)
                    .map(|n| n.ip);
                memory.sandbox_ip = Some((sandbox_id.clone(), ip.clone()));
                ip
            }
        };
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
        let now = self.host.clock.now();
        let ran_long = memory
            .backoff
            .get(&name)
            .is_some_and(|(_, since)| now.duration_since(*since) >= BACKOFF_RESET);
        if ran_long {
            memory.backoff.remove(&name);
        }
        let finished = {
            let now_ns = self.host.clock.wall_nanos();
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
