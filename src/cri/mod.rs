//! The CRI v1 client: the runtime and image services (`services.rs`: traits, and
//! gRPC to the container runtime's Unix socket), or an in-memory runtime for tests
//! (`fake.rs`). The kubelet drives pods through this; the agent also uses it to learn
//! what runtime it has and which images it holds.

#[cfg(test)]
pub mod fake;
pub mod registries;
pub mod services;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{ListImagesRequest, VersionRequest};
pub use services::{ImageService, RuntimeService};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::{Endpoint, Uri};

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error(
        "cannot reach the container runtime at {path}: {message}; is containerd running (or --container-runtime-endpoint right)?"
    )]
    Connect { path: PathBuf, message: String },
    #[error("the container runtime answered: {0}")]
    Call(#[from] tonic::Status),
}

/// A CRI runtime: its two services.
#[derive(Clone)]
pub struct Cri {
    /// The runtime service (sandboxes, containers, exec); the kubelet calls it directly.
    pub runtime: Arc<dyn RuntimeService>,
    /// The image service (pull, status, list).
    pub images: Arc<dyn ImageService>,
}

/// What the runtime says it is (`Version`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub name: String,
    pub version: String,
    pub api_version: String,
}

impl Cri {
    /// Connects to the runtime's Unix socket (`unix://` prefix allowed).
    pub async fn connect(socket: &Path) -> Result<Cri, CriError> {
        let path = PathBuf::from(
            socket
                .to_string_lossy()
                .trim_start_matches("unix://")
                .to_string(),
        );
        let fail = |message: String| CriError::Connect {
            path: path.clone(),
            message,
        };
        // the URI is only a placeholder: every connection goes to the socket
        let endpoint = Endpoint::try_from("http://[::1]:50051").map_err(|e| fail(e.to_string()))?;
        let target = path.clone();
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let target = target.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(target).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let grpc = Arc::new(services::Grpc::new(channel));
        Ok(Cri {
            runtime: grpc.clone(),
            images: grpc,
        })
    }

    /// The runtime's name and version (what a node reports as
    /// `containerRuntimeVersion`, e.g. `containerd://1.6.20`).
    pub async fn version(&self) -> Result<RuntimeVersion, CriError> {
        let v = self
            .runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await?
            .into_inner();
        Ok(RuntimeVersion {
            name: v.runtime_name,
            version: v.runtime_version,
            api_version: v.runtime_api_version,
        })
    }

    /// The tags of every image the runtime holds.
    pub async fn image_tags(&self) -> Result<Vec<String>, CriError> {
        let list = self
            .images
            .list_images(ListImagesRequest { filter: None })
            .await?
            .into_inner();
        Ok(list.images.into_iter().flat_map(|i| i.repo_tags).collect())
    }
}
