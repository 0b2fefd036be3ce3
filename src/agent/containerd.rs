//! containerd, run and supervised by the agent (Debian's `containerd` and `runc`):
//! a config of its own under `<data-dir>/agent/containerd/` (socket, root and state
//! directories, cgroupfs, overlayfs, CNI directories, the sandbox image), so several
//! agents on one machine never collide; restarted with back-off if it dies. Image
//! tarballs (OCI or docker-archive) in `<data-dir>/agent/images/` are imported at
//! start and whenever new ones appear, for air-gapped nodes.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::process::Command;

/// Where and how containerd runs.
#[derive(Clone, Debug)]
pub struct Containerd {
    /// `<data-dir>/agent/containerd`.
    pub dir: PathBuf,
    /// The pod sandbox image (`--pause-image`).
    pub sandbox_image: String,
    /// Where the CNI plugin binaries are.
    pub cni_bin_dir: PathBuf,
    /// Where the pods' CNI network config is written.
    pub cni_conf_dir: PathBuf,
    /// containerd's registry sections from registries.yaml.
    pub registries: String,
}

/// The CRI namespace kubelets use.
pub const NAMESPACE: &str = "k8s.io";

/// Whether this machine lets us lower a process's OOM score (some sandboxes and
/// containers deny it even to root). Where it does not, containerd must keep
/// containers' scores at or above its own (`restrict_oom_score_adj`), or every pod
/// sandbox fails to start.
pub fn can_lower_oom_score() -> bool {
    std::process::Command::new("sh")
        .args(["-c", "echo -999 > /proc/self/oom_score_adj"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Containerd {
    /// The socket containerd serves CRI on.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// containerd's configuration (version 2, as containerd 1.6 reads it).
    pub fn config(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"# Written by skua agent at every start; edits are lost.
version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {sandbox}
  restrict_oom_score_adj = {restrict}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
{registries}"#,
            sandbox = crate::cri::registries::toml(&self.sandbox_image),
            restrict = !can_lower_oom_score(),
            cni_bin = self.cni_bin_dir.display(),
            cni_conf = self.cni_conf_dir.display(),
            registries = self.registries,
        )
    }

    /// Writes the config and runs containerd until `stop` says so, starting it again
    /// (1 s, doubling to 30 s) whenever it exits.
    pub async fn supervise(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ContainerdError> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::create_dir_all(&self.cni_conf_dir)?;
        // registry credentials from registries.yaml are in it: owner only
        crate::pki::write_private(&self.config_path(), self.config().as_bytes(), 0o600)?;
        let mut backoff = Duration::from_secs(1);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("containerd.log"))?;
            let started = std::time::Instant::now();
            let mut child = Command::new("containerd")
                .arg("--config")
                .arg(self.config_path())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .map_err(ContainerdError::Spawn)?;
            tracing::info!(pid = child.id(), config = %self.config_path().display(), "containerd started");
            tokio::select! {
                status = child.wait() => {
                    tracing::warn!(status = ?status, log = %self.dir.join("containerd.log").display(), retry_in = ?backoff, "containerd exited; starting it again");
                }
                _ = stop.changed() => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    tracing::info!("containerd stopped");
                    return Ok(());
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return Ok(()),
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

/// Waits until something answers on `socket`.
pub async fn wait_ready(socket: &Path, timeout: Duration) -> Result<(), ContainerdError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ContainerdError::NotAnswering {
                socket: socket.to_path_buf(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What goes wrong running containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The `containerd` binary could not be started (usually: not installed).
    #[error(
        "cannot start containerd ({0}); install it (scripts/install-deps.sh node) or pass --container-runtime-endpoint"
    )]
    Spawn(std::io::Error),
    /// containerd did not accept connections on its socket in time.
    #[error("containerd did not answer on {} within {timeout:?}", socket.display())]
    NotAnswering {
        /// The socket that was tried.
        socket: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// containerd's directories, config or log could not be written.
    #[error("containerd's files: {0}")]
    Io(#[from] std::io::Error),
    /// containerd's config (which holds registry credentials) could not be written privately.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
}

/// Image tarballs already imported: path → (size, modified).
pub type Imported = HashMap<PathBuf, (u64, Option<SystemTime>)>;

/// Imports every tarball in `dir` that is new or changed since `done` saw it.
pub async fn import_images(socket: &Path, dir: &Path, done: &mut Imported) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return; // no images directory: nothing to import
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "tar" || x == "gz" || x == "tgz" || x == "zst")
        })
        .collect();
    files.sort();
    for file in files {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let stamp = (meta.len(), meta.modified().ok());
        if done.get(&file) == Some(&stamp) {
            continue;
        }
        let out = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["--namespace", NAMESPACE, "images", "import", "--no-unpack"])
            .arg(&file)
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {
                tracing::info!(file = %file.display(), "imported images");
            }
            Ok(o) => tracing::warn!(
                file = %file.display(),
                error = %String::from_utf8_lossy(&o.stderr).trim(),
                "cannot import this image tarball; will try again when it changes"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot run ctr to import images"),
        }
        done.insert(file, stamp);
    }
}

/// Whether a process's command line (`argv`, NUL-separated) is containerd's, a
/// shim's or runc's, with an argument inside `dir`: compared as paths, not as a
/// pattern, and never another program (an operator's `tail -f` of a log there).
fn ours(cmdline: &[u8], dir: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    let Some(program) = args.first() else {
        return false;
    };
    let name = Path::new(std::ffi::OsStr::from_bytes(program))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let runtime = name.starts_with("containerd") || name == "runc";
    runtime
        && args[1..]
            .iter()
            .any(|a| Path::new(std::ffi::OsStr::from_bytes(a)).starts_with(dir))
}

/// Kills containerd, its shims and runc where they run on `dir`, and unmounts
/// whatever is mounted below it, deepest first: what a crashed agent, test or
/// benchmark leaves behind.
pub fn remove_leftovers(dir: &Path) {
    let marker = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if pid != std::process::id() as i32 && ours(&cmdline, dir) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|p| p.starts_with(&marker))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = std::process::Command::new("umount")
                .args(["-l", p])
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_found_by_path_not_by_pattern() {
        let dir = Path::new("/var/lib/skua/agent/containerd");
        let cmd = |args: &[&str]| args.join("\0").into_bytes();
        assert!(ours(
            &cmd(&[
                "/usr/bin/containerd",
                "--config",
                "/var/lib/skua/agent/containerd/config.toml"
            ]),
            dir
        ));
        assert!(ours(
            &cmd(&[
                "containerd-shim-runc-v2",
                "-namespace",
                "k8s.io",
                "-address",
                "/var/lib/skua/agent/containerd/containerd.sock"
            ]),
            dir
        ));
        // an operator reading a log there is not killed; nor a look-alike path
        assert!(!ours(
            &cmd(&[
                "tail",
                "-f",
                "/var/lib/skua/agent/containerd/containerd.log"
            ]),
            dir
        ));
        assert!(!ours(
            &cmd(&[
                "/usr/bin/containerd",
                "--config",
                "/var/lib/skua/agent/containerd2/config.toml"
            ]),
            dir
        ));
        assert!(!ours(
            &cmd(&[
                "/usr/bin/containerd",
                "--root",
                "/var/lib/skua/agent/containerd.*"
            ]),
            Path::new("/var/lib/skua/agent/containerd.x")
        ));
    }

    #[test]
    fn every_path_of_the_config_is_under_the_agents_directory() {
        let c = Containerd {
            dir: "/var/lib/skua/agent/containerd".into(),
            sandbox_image: "registry.k8s.io/pause:3.10".into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            cni_conf_dir: "/var/lib/skua/agent/etc/cni/net.d".into(),
            registries: String::new(),
        };
        let text = c.config();
        for line in text.lines().filter(|l| l.contains("= \"/")) {
            let path = line.split('"').nth(1).unwrap();
            assert!(
                path.starts_with("/var/lib/skua/agent/") || path == "/usr/lib/cni",
                "{line}"
            );
        }
        assert!(text.contains("SystemdCgroup = false"));
        assert!(text.contains(r#"snapshotter = "overlayfs""#));
        assert!(text.contains(r#"sandbox_image = "registry.k8s.io/pause:3.10""#));
    }
}
