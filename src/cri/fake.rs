//! An in-memory CRI runtime for unit tests: sandboxes and containers with containerd's
//! state machine (created → running → exited; a stopped sandbox stops its
//! containers), label-selector filters, images, and scripted behaviour — what each
//! container does once started (keeps running, or exits with a code) and what its
//! exec probes answer. Every call is logged with the time it was made, so a test can
//! assert order (init containers) and timing (crash-loop back-off) of what a
//! component asked of the runtime.
#![cfg(test)]

use super::services::{Answer, ImageService, RuntimeService};
use k8s_cri::v1;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tonic::{Response, Status};

/// What a container does once started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Runs until stopped.
    Run,
    /// Exits at once with this code.
    Exit(i32),
}

struct Sandbox {
    config: v1::PodSandboxConfig,
    state: v1::PodSandboxState,
    created_at: i64,
    ip: String,
}

struct Container {
    sandbox: String,
    config: v1::ContainerConfig,
    image: String,
    state: v1::ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
}

#[derive(Default)]
struct State {
    next: u64,
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, Container>,
    images: BTreeSet<String>,
    /// container name → what it does when started (default: runs)
    behaviour: HashMap<String, Behaviour>,
    /// container name → the exit code of exec probes (default: 0)
    exec_exit: HashMap<String, i32>,
    /// (when, what) of every call
    calls: Vec<(Instant, String)>,
}

/// The fake runtime (see the module documentation); one value serves both services.
pub struct FakeRuntime {
    state: Mutex<State>,
    clock: Arc<dyn crate::host::Clock>,
}

fn matches(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl FakeRuntime {
    /// An empty runtime holding `images`, on `clock` (its timestamps are the clock's).
    pub fn new(images: &[&str], clock: Arc<dyn crate::host::Clock>) -> Arc<FakeRuntime> {
        let state = State {
            images: images.iter().map(|i| i.to_string()).collect(),
            ..Default::default()
        };
        Arc::new(FakeRuntime {
            state: Mutex::new(state),
            clock,
        })
    }

    /// Both services as a `Cri`.
    pub fn cri(self: &Arc<Self>) -> super::Cri {
        super::Cri {
            runtime: self.clone(),
            images: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, s: &mut State, what: String) {
        s.calls.push((self.clock.now(), what));
    }

    /// What the container named `name` does when started from now on.
    pub fn behave(&self, name: &str, b: Behaviour) {
        self.lock().behaviour.insert(name.to_string(), b);
    }

    /// The exit code exec probes get in the container named `name`.
    pub fn exec_exits(&self, name: &str, code: i32) {
        self.lock().exec_exit.insert(name.to_string(), code);
    }

    /// Every call so far, with when it was made.
    pub fn calls(&self) -> Vec<(Instant, String)> {
        self.lock().calls.clone()
    }

    /// The calls whose description starts with `prefix`.
    pub fn calls_of(&self, prefix: &str) -> Vec<(Instant, String)> {
        self.calls()
            .into_iter()
            .filter(|(_, c)| c.starts_with(prefix))
            .collect()
    }

    /// (name, attempt, state) of every container, oldest first.
    pub fn containers(&self) -> Vec<(String, u32, v1::ContainerState)> {
        let s = self.lock();
        let mut out: Vec<_> = s
            .containers
            .values()
            .map(|c| {
                let m = c.config.metadata.clone().unwrap_or_default();
                (c.created_at, m.name, m.attempt, c.state)
            })
            .collect();
        out.sort_by_key(|c| c.0);
        out.into_iter().map(|(_, n, a, st)| (n, a, st)).collect()
    }

    fn id(s: &mut State, prefix: &str) -> String {
        s.next += 1;
        format!("{prefix}{:04}", s.next)
    }

    fn name_of(c: &Container) -> String {
        c.config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default()
    }

    fn status_of(id: &str, c: &Container) -> v1::ContainerStatus {
        v1::ContainerStatus {
            id: id.to_string(),
            metadata: c.config.metadata.clone(),
            state: c.state as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: Some(v1::ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            image_ref: format!("sha256:{}", c.image.len()),
            reason: if c.state == v1::ContainerState::ContainerExited {
                if c.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .into()
            } else {
                String::new()
            },
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            log_path: String::new(),
            ..Default::default()
        }
    }
}

fn unimplemented<T>(what: &str) -> Answer<T> {
    Err(Status::unimplemented(format!(
        "the fake runtime has no {what}"
    )))
}

#[async_trait::async_trait]
impl RuntimeService for FakeRuntime {
    async fn version(&self, _: v1::VersionRequest) -> Answer<v1::VersionResponse> {
        Ok(Response::new(v1::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "1.0".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn status(&self, _: v1::StatusRequest) -> Answer<v1::StatusResponse> {
        Ok(Response::new(v1::StatusResponse::default()))
    }

    async fn run_pod_sandbox(
        &self,
        req: v1::RunPodSandboxRequest,
    ) -> Answer<v1::RunPodSandboxResponse> {
        let now = self.clock.wall_nanos();
        let mut s = self.lock();
        let id = Self::id(&mut s, "sb");
        let ip = format!("10.42.0.{}", s.next % 250 + 2);
        let config = req.config.unwrap_or_default();
        self.log(&mut s, format!("run_pod_sandbox {id}"));
        s.sandboxes.insert(
            id.clone(),
            Sandbox {
                config,
                state: v1::PodSandboxState::SandboxReady,
                created_at: now,
                ip,
            },
        );
        Ok(Response::new(v1::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: v1::StopPodSandboxRequest,
    ) -> Answer<v1::StopPodSandboxResponse> {
        let now = self.clock.wall_nanos();
        let mut s = self.lock();
        self.log(&mut s, format!("stop_pod_sandbox {}", req.pod_sandbox_id));
        if let Some(sb) = s.sandboxes.get_mut(&req.pod_sandbox_id) {
            sb.state = v1::PodSandboxState::SandboxNotready;
        }
        for c in s.containers.values_mut() {
            if c.sandbox == req.pod_sandbox_id && c.state == v1::ContainerState::ContainerRunning {
                c.state = v1::ContainerState::ContainerExited;
                c.finished_at = now;
                c.exit_code = 137;
            }
        }
        Ok(Response::new(v1::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: v1::RemovePodSandboxRequest,
    ) -> Answer<v1::RemovePodSandboxResponse> {
        let mut s = self.lock();
        self.log(&mut s, format!("remove_pod_sandbox {}", req.pod_sandbox_id));
        s.sandboxes.remove(&req.pod_sandbox_id);
        s.containers.retain(|_, c| c.sandbox != req.pod_sandbox_id);
        Ok(Response::new(v1::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: v1::PodSandboxStatusRequest,
    ) -> Answer<v1::PodSandboxStatusResponse> {
        let s = self.lock();
        let sb = s
            .sandboxes
            .get(&req.pod_sandbox_id)
            .ok_or_else(|| Status::not_found(format!("sandbox {}", req.pod_sandbox_id)))?;
        Ok(Response::new(v1::PodSandboxStatusResponse {
            status: Some(v1::PodSandboxStatus {
                id: req.pod_sandbox_id.clone(),
                metadata: sb.config.metadata.clone(),
                state: sb.state as i32,
                created_at: sb.created_at,
                network: Some(v1::PodSandboxNetworkStatus {
                    ip: sb.ip.clone(),
                    ..Default::default()
                }),
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: v1::ListPodSandboxRequest,
    ) -> Answer<v1::ListPodSandboxResponse> {
        let s = self.lock();
        let selector = req.filter.map(|f| f.label_selector).unwrap_or_default();
        let items = s
            .sandboxes
            .iter()
            .filter(|(_, sb)| matches(&sb.config.labels, &selector))
            .map(|(id, sb)| v1::PodSandbox {
                id: id.clone(),
                metadata: sb.config.metadata.clone(),
                state: sb.state as i32,
                created_at: sb.created_at,
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(v1::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: v1::CreateContainerRequest,
    ) -> Answer<v1::CreateContainerResponse> {
        let now = self.clock.wall_nanos();
        let mut s = self.lock();
        if !s.sandboxes.contains_key(&req.pod_sandbox_id) {
            return Err(Status::not_found(format!("sandbox {}", req.pod_sandbox_id)));
        }
        let config = req.config.unwrap_or_default();
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let id = Self::id(&mut s, "c");
        let m = config.metadata.clone().unwrap_or_default();
        self.log(&mut s, format!("create_container {} {}", m.name, m.attempt));
        s.containers.insert(
            id.clone(),
            Container {
                sandbox: req.pod_sandbox_id,
                config,
                image,
                state: v1::ContainerState::ContainerCreated,
                created_at: now,
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
            },
        );
        Ok(Response::new(v1::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: v1::StartContainerRequest,
    ) -> Answer<v1::StartContainerResponse> {
        let now = self.clock.wall_nanos();
        let mut s = self.lock();
        let Some(c) = s.containers.get(&req.container_id) else {
            return Err(Status::not_found(format!("container {}", req.container_id)));
        };
        let name = Self::name_of(c);
        let behaviour = s.behaviour.get(&name).copied().unwrap_or(Behaviour::Run);
        self.log(&mut s, format!("start_container {name}"));
        if let Some(c) = s.containers.get_mut(&req.container_id) {
            c.started_at = now;
            match behaviour {
                Behaviour::Run => c.state = v1::ContainerState::ContainerRunning,
                Behaviour::Exit(code) => {
                    c.state = v1::ContainerState::ContainerExited;
                    c.finished_at = now;
                    c.exit_code = code;
                }
            }
        }
        Ok(Response::new(v1::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: v1::StopContainerRequest,
    ) -> Answer<v1::StopContainerResponse> {
        let now = self.clock.wall_nanos();
        let mut s = self.lock();
        let name = s.containers.get(&req.container_id).map(Self::name_of);
        self.log(
            &mut s,
            format!("stop_container {}", name.unwrap_or_default()),
        );
        if let Some(c) = s.containers.get_mut(&req.container_id) {
            if c.state == v1::ContainerState::ContainerRunning {
                c.state = v1::ContainerState::ContainerExited;
                c.finished_at = now;
                c.exit_code = 137;
            }
        }
        Ok(Response::new(v1::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: v1::RemoveContainerRequest,
    ) -> Answer<v1::RemoveContainerResponse> {
        let mut s = self.lock();
        let name = s.containers.get(&req.container_id).map(Self::name_of);
        self.log(
            &mut s,
            format!("remove_container {}", name.unwrap_or_default()),
        );
        s.containers.remove(&req.container_id);
        Ok(Response::new(v1::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: v1::ListContainersRequest,
    ) -> Answer<v1::ListContainersResponse> {
        let s = self.lock();
        let selector = req.filter.map(|f| f.label_selector).unwrap_or_default();
        let containers = s
            .containers
            .iter()
            .filter(|(_, c)| matches(&c.config.labels, &selector))
            .map(|(id, c)| v1::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox.clone(),
                metadata: c.config.metadata.clone(),
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(v1::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: v1::ContainerStatusRequest,
    ) -> Answer<v1::ContainerStatusResponse> {
        let s = self.lock();
        let c = s
            .containers
            .get(&req.container_id)
            .ok_or_else(|| Status::not_found(format!("container {}", req.container_id)))?;
        Ok(Response::new(v1::ContainerStatusResponse {
            status: Some(Self::status_of(&req.container_id, c)),
            ..Default::default()
        }))
    }

    async fn list_container_stats(
        &self,
        _: v1::ListContainerStatsRequest,
    ) -> Answer<v1::ListContainerStatsResponse> {
        Ok(Response::new(v1::ListContainerStatsResponse::default()))
    }

    async fn reopen_container_log(
        &self,
        _: v1::ReopenContainerLogRequest,
    ) -> Answer<v1::ReopenContainerLogResponse> {
        Ok(Response::new(v1::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: v1::ExecSyncRequest) -> Answer<v1::ExecSyncResponse> {
        let mut s = self.lock();
        let Some(c) = s.containers.get(&req.container_id) else {
            return Err(Status::not_found(format!("container {}", req.container_id)));
        };
        let name = Self::name_of(c);
        let code = s.exec_exit.get(&name).copied().unwrap_or(0);
        self.log(&mut s, format!("exec_sync {name} {}", req.cmd.join(" ")));
        Ok(Response::new(v1::ExecSyncResponse {
            stdout: Vec::new(),
            stderr: Vec::new(),
            exit_code: code,
        }))
    }

    async fn exec(&self, _: v1::ExecRequest) -> Answer<v1::ExecResponse> {
        unimplemented("exec streaming")
    }

    async fn attach(&self, _: v1::AttachRequest) -> Answer<v1::AttachResponse> {
        unimplemented("attach streaming")
    }

    async fn port_forward(&self, _: v1::PortForwardRequest) -> Answer<v1::PortForwardResponse> {
        unimplemented("port forwarding")
    }
}

#[async_trait::async_trait]
impl ImageService for FakeRuntime {
    async fn list_images(&self, _: v1::ListImagesRequest) -> Answer<v1::ListImagesResponse> {
        let s = self.lock();
        let images = s
            .images
            .iter()
            .map(|i| v1::Image {
                id: format!("sha256:{}", i.len()),
                repo_tags: vec![i.clone()],
                ..Default::default()
            })
            .collect();
        Ok(Response::new(v1::ListImagesResponse { images }))
    }

    async fn image_status(&self, req: v1::ImageStatusRequest) -> Answer<v1::ImageStatusResponse> {
        let s = self.lock();
        let name = req.image.map(|i| i.image).unwrap_or_default();
        let image = s.images.contains(&name).then(|| v1::Image {
            id: format!("sha256:{}", name.len()),
            repo_tags: vec![name.clone()],
            uid: Some(v1::Int64Value { value: 0 }),
            ..Default::default()
        });
        Ok(Response::new(v1::ImageStatusResponse {
            image,
            ..Default::default()
        }))
    }

    async fn pull_image(&self, req: v1::PullImageRequest) -> Answer<v1::PullImageResponse> {
        let mut s = self.lock();
        let name = req.image.map(|i| i.image).unwrap_or_default();
        self.log(&mut s, format!("pull_image {name}"));
        if name.contains("missing") {
            return Err(Status::not_found(format!("{name}: not found")));
        }
        s.images.insert(name.clone());
        Ok(Response::new(v1::PullImageResponse { image_ref: name }))
    }
}
