//! The pod sandbox image out of the box: when the runtime does not hold the
//! `--pause-image` (nothing imported it, and an air-gapped node cannot pull it), the
//! agent builds it from this machine's busybox-static — one layer with
//! `/bin/busybox`, sleeping for as long as the pod lives — as an OCI archive and
//! imports it under the configured name. A node then starts pods with nothing but its
//! workload images.

use crate::cri::Cri;
use k8s_cri::v1::{ImageSpec, ImageStatusRequest};
use std::path::Path;
use tokio::process::Command;

const BUSYBOX: &str = "/bin/busybox";

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn present(cri: &mut Cri, image: &str) -> bool {
    cri.images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .is_ok_and(|r| r.into_inner().image.is_some())
}

/// Why the sandbox image cannot be made ready (logged; pods then wait for one).
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// The image is missing and busybox-static, which it is built from, too.
    #[error(
        "the sandbox image {0} is not on this node and cannot be built here ({BUSYBOX} is missing): install busybox-static, or put a pause image tarball in <data-dir>/agent/images"
    )]
    NoBusybox(String),
    /// A file of the build could not be written.
    #[error("building the sandbox image in {}: {error}", .dir.display())]
    Io {
        /// The build directory.
        dir: std::path::PathBuf,
        /// What the filesystem said.
        error: std::io::Error,
    },
    /// A tool (tar, ctr) could not be started.
    #[error("cannot run {command}: {error}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it did not start.
        error: std::io::Error,
    },
    /// A tool failed.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The import succeeded but the runtime does not list the image.
    #[error("built and imported {0}, but the runtime does not list it")]
    NotListed(String),
}

async fn run(cmd: &mut Command) -> Result<(), PauseError> {
    let out = cmd.output().await.map_err(|error| PauseError::Spawn {
        command: format!("{cmd:?}"),
        error,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PauseError::Failed {
            command: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Makes sure the runtime holds `image`, building it in `work` if it must.
pub async fn ensure(
    cri: &mut Cri,
    socket: &Path,
    image: &str,
    work: &Path,
) -> Result<(), PauseError> {
    if present(cri, image).await {
        return Ok(());
    }
    if !Path::new(BUSYBOX).exists() {
        return Err(PauseError::NoBusybox(image.to_string()));
    }
    let name = crate::cri::registries::normalize(image);
    let io = |error: std::io::Error| PauseError::Io {
        dir: work.to_path_buf(),
        error,
    };
    let _ = std::fs::remove_dir_all(work);
    let rootfs = work.join("rootfs");
    let blobs = work.join("layout/blobs/sha256");
    std::fs::create_dir_all(rootfs.join("bin")).map_err(io)?;
    std::fs::create_dir_all(&blobs).map_err(io)?;
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).map_err(io)?;
    let layer = work.join("layer.tar");
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
        ])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("."))
    .await?;
    let layer_bytes = std::fs::read(&layer).map_err(io)?;
    let layer_sha = sha256(&layer_bytes);
    std::fs::write(blobs.join(&layer_sha), &layer_bytes).map_err(io)?;
    let config = serde_json::json!({
        "architecture": crate::agent::node::arch(), "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sha}")]},
    })
    .to_string();
    let config_sha = sha256(config.as_bytes());
    std::fs::write(blobs.join(&config_sha), &config).map_err(io)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_sha}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_sha}"), "size": layer_bytes.len()}],
    })
    .to_string();
    let manifest_sha = sha256(manifest.as_bytes());
    std::fs::write(blobs.join(&manifest_sha), &manifest).map_err(io)?;
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_sha}"), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}],
    });
    let layout = work.join("layout");
    std::fs::write(layout.join("index.json"), index.to_string()).map_err(io)?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(io)?;
    let archive = work.join("pause-oci.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."))
    .await?;
    run(Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args([
            "--namespace",
            super::containerd::NAMESPACE,
            "images",
            "import",
            "--no-unpack",
        ])
        .arg(&archive))
    .await?;
    let _ = std::fs::remove_dir_all(work);
    if present(cri, image).await {
        tracing::info!(image = %name, "built the sandbox image from this machine's busybox");
        Ok(())
    } else {
        Err(PauseError::NotListed(name))
    }
}
