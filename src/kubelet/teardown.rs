//! A pod's end on the node: its running containers stopped in parallel (preStop, then
//! SIGTERM and SIGKILL after the grace period), then everything it left removed —
//! containers, sandboxes with their network, volumes, logs and cgroups.

use super::spec;
use super::sync::label_filter;
use super::{Kubelet, PodMemory, volumes};
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ListContainersRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, StopPodSandboxRequest,
};
use serde_json::{Value, json};
use std::path::PathBuf;

impl Kubelet {
    /// Stops every running container of pod `uid`, in parallel, with `grace` seconds.
    pub(super) async fn kill_pod(
        &self,
        uid: &str,
        pod: Option<&Value>,
        grace: i64,
        memory: &mut PodMemory,
    ) -> Result<(), super::KubeletError> {
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
        volumes::tear_down(&*self.host.mounts, &self.settings.root_dir, uid);
        super::logs::unlink(&self.settings.container_log_dir, &ids);
        let log_dir = log_dir.or_else(|| pod.map(spec::log_dir_name));
        if let Some(d) = log_dir {
            let _ = std::fs::remove_dir_all(self.settings.pod_log_dir.join(d));
        }
        remove_cgroups(uid);
    }
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
