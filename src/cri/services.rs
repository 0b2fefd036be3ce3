//! The CRI v1 seam: the runtime and image services as traits (upstream's
//! `cri-api` interfaces), so the kubelet is written against them and tested against
//! an in-memory runtime (`fake.rs`); the real implementation is gRPC to the runtime's
//! Unix socket (tonic, with the `k8s-cri` crate's bindings generated from upstream's
//! `api.proto`). Answers keep tonic's `Response` and `Status` — the CRI's own
//! vocabulary of errors (NotFound, Unavailable, …) — so real and fake fail alike.

use k8s_cri::v1;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// What every CRI call answers.
pub type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

/// The runtime service: sandboxes, containers, their stats, exec/attach/port-forward.
#[async_trait::async_trait]
pub trait RuntimeService: Send + Sync {
    async fn version(&self, req: v1::VersionRequest) -> Answer<v1::VersionResponse>;
    async fn status(&self, req: v1::StatusRequest) -> Answer<v1::StatusResponse>;
    async fn run_pod_sandbox(
        &self,
        req: v1::RunPodSandboxRequest,
    ) -> Answer<v1::RunPodSandboxResponse>;
    async fn stop_pod_sandbox(
        &self,
        req: v1::StopPodSandboxRequest,
    ) -> Answer<v1::StopPodSandboxResponse>;
    async fn remove_pod_sandbox(
        &self,
        req: v1::RemovePodSandboxRequest,
    ) -> Answer<v1::RemovePodSandboxResponse>;
    async fn pod_sandbox_status(
        &self,
        req: v1::PodSandboxStatusRequest,
    ) -> Answer<v1::PodSandboxStatusResponse>;
    async fn list_pod_sandbox(
        &self,
        req: v1::ListPodSandboxRequest,
    ) -> Answer<v1::ListPodSandboxResponse>;
    async fn create_container(
        &self,
        req: v1::CreateContainerRequest,
    ) -> Answer<v1::CreateContainerResponse>;
    async fn start_container(
        &self,
        req: v1::StartContainerRequest,
    ) -> Answer<v1::StartContainerResponse>;
    async fn stop_container(
        &self,
        req: v1::StopContainerRequest,
    ) -> Answer<v1::StopContainerResponse>;
    async fn remove_container(
        &self,
        req: v1::RemoveContainerRequest,
    ) -> Answer<v1::RemoveContainerResponse>;
    async fn list_containers(
        &self,
        req: v1::ListContainersRequest,
    ) -> Answer<v1::ListContainersResponse>;
    async fn container_status(
        &self,
        req: v1::ContainerStatusRequest,
    ) -> Answer<v1::ContainerStatusResponse>;
    async fn list_container_stats(
        &self,
        req: v1::ListContainerStatsRequest,
    ) -> Answer<v1::ListContainerStatsResponse>;
    async fn reopen_container_log(
        &self,
        req: v1::ReopenContainerLogRequest,
    ) -> Answer<v1::ReopenContainerLogResponse>;
    async fn exec_sync(&self, req: v1::ExecSyncRequest) -> Answer<v1::ExecSyncResponse>;
    async fn exec(&self, req: v1::ExecRequest) -> Answer<v1::ExecResponse>;
    async fn attach(&self, req: v1::AttachRequest) -> Answer<v1::AttachResponse>;
    async fn port_forward(&self, req: v1::PortForwardRequest) -> Answer<v1::PortForwardResponse>;
}

/// The image service: what images the runtime holds, and pulls.
#[async_trait::async_trait]
pub trait ImageService: Send + Sync {
    async fn list_images(&self, req: v1::ListImagesRequest) -> Answer<v1::ListImagesResponse>;
    async fn image_status(&self, req: v1::ImageStatusRequest) -> Answer<v1::ImageStatusResponse>;
    async fn pull_image(&self, req: v1::PullImageRequest) -> Answer<v1::PullImageResponse>;
}

/// The real services: gRPC over one channel to the runtime's socket.
#[derive(Clone)]
pub struct Grpc {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Grpc {
    pub fn new(channel: Channel) -> Grpc {
        Grpc {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }
}

#[async_trait::async_trait]
impl RuntimeService for Grpc {
    async fn version(&self, req: v1::VersionRequest) -> Answer<v1::VersionResponse> {
        self.runtime.clone().version(req).await
    }

    async fn status(&self, req: v1::StatusRequest) -> Answer<v1::StatusResponse> {
        self.runtime.clone().status(req).await
    }

    async fn run_pod_sandbox(
        &self,
        req: v1::RunPodSandboxRequest,
    ) -> Answer<v1::RunPodSandboxResponse> {
        self.runtime.clone().run_pod_sandbox(req).await
    }

    async fn stop_pod_sandbox(
        &self,
        req: v1::StopPodSandboxRequest,
    ) -> Answer<v1::StopPodSandboxResponse> {
        self.runtime.clone().stop_pod_sandbox(req).await
    }

    async fn remove_pod_sandbox(
        &self,
        req: v1::RemovePodSandboxRequest,
    ) -> Answer<v1::RemovePodSandboxResponse> {
        self.runtime.clone().remove_pod_sandbox(req).await
    }

    async fn pod_sandbox_status(
        &self,
        req: v1::PodSandboxStatusRequest,
    ) -> Answer<v1::PodSandboxStatusResponse> {
        self.runtime.clone().pod_sandbox_status(req).await
    }

    async fn list_pod_sandbox(
        &self,
        req: v1::ListPodSandboxRequest,
    ) -> Answer<v1::ListPodSandboxResponse> {
        self.runtime.clone().list_pod_sandbox(req).await
    }

    async fn create_container(
        &self,
        req: v1::CreateContainerRequest,
    ) -> Answer<v1::CreateContainerResponse> {
        self.runtime.clone().create_container(req).await
    }

    async fn start_container(
        &self,
        req: v1::StartContainerRequest,
    ) -> Answer<v1::StartContainerResponse> {
        self.runtime.clone().start_container(req).await
    }

    async fn stop_container(
        &self,
        req: v1::StopContainerRequest,
    ) -> Answer<v1::StopContainerResponse> {
        self.runtime.clone().stop_container(req).await
    }

    async fn remove_container(
        &self,
        req: v1::RemoveContainerRequest,
    ) -> Answer<v1::RemoveContainerResponse> {
        self.runtime.clone().remove_container(req).await
    }

    async fn list_containers(
        &self,
        req: v1::ListContainersRequest,
    ) -> Answer<v1::ListContainersResponse> {
        self.runtime.clone().list_containers(req).await
    }

    async fn container_status(
        &self,
        req: v1::ContainerStatusRequest,
    ) -> Answer<v1::ContainerStatusResponse> {
        self.runtime.clone().container_status(req).await
    }

    async fn list_container_stats(
        &self,
        req: v1::ListContainerStatsRequest,
    ) -> Answer<v1::ListContainerStatsResponse> {
        self.runtime.clone().list_container_stats(req).await
    }

    async fn reopen_container_log(
        &self,
        req: v1::ReopenContainerLogRequest,
    ) -> Answer<v1::ReopenContainerLogResponse> {
        self.runtime.clone().reopen_container_log(req).await
    }

    async fn exec_sync(&self, req: v1::ExecSyncRequest) -> Answer<v1::ExecSyncResponse> {
        self.runtime.clone().exec_sync(req).await
    }

    async fn exec(&self, req: v1::ExecRequest) -> Answer<v1::ExecResponse> {
        self.runtime.clone().exec(req).await
    }

    async fn attach(&self, req: v1::AttachRequest) -> Answer<v1::AttachResponse> {
        self.runtime.clone().attach(req).await
    }

    async fn port_forward(&self, req: v1::PortForwardRequest) -> Answer<v1::PortForwardResponse> {
        self.runtime.clone().port_forward(req).await
    }
}

#[async_trait::async_trait]
impl ImageService for Grpc {
    async fn list_images(&self, req: v1::ListImagesRequest) -> Answer<v1::ListImagesResponse> {
        self.images.clone().list_images(req).await
    }

    async fn image_status(&self, req: v1::ImageStatusRequest) -> Answer<v1::ImageStatusResponse> {
        self.images.clone().image_status(req).await
    }

    async fn pull_image(&self, req: v1::PullImageRequest) -> Answer<v1::PullImageResponse> {
        self.images.clone().pull_image(req).await
    }
}
