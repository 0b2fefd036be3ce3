//! A throw-away etcd on 127.0.0.1 (Debian's `etcd-server`), for tests and for running
//! the store benchmark side by side with sled. Never used by a running cluster.

use super::etcd::{EtcdOptions, EtcdStore};
use super::{Result, StoreError};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An etcd child process with its data under `dir`; SIGKILLed on drop.
pub struct LocalEtcd {
    child: Option<Child>,
    binary: String,
    dir: PathBuf,
    /// The client URL it serves, e.g. `http://127.0.0.1:<port>`.
    pub endpoint: String,
    peer: String,
    tls: Option<ServerTls>,
}

/// PEM files for an etcd that serves HTTPS and requires client certificates.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The CA client certificates must be signed by.
    pub ca_file: PathBuf,
    /// etcd's serving certificate.
    pub cert_file: PathBuf,
    /// The key of `cert_file`.
    pub key_file: PathBuf,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    /// Starts `binary` (e.g. "etcd") with its data and log in `dir`.
    pub fn start(binary: &str, dir: &Path) -> Result<LocalEtcd> {
        Self::start_with(binary, dir, None)
    }

    /// Like [`LocalEtcd::start`], serving clients over TLS when `tls` is given.
    pub fn start_with(binary: &str, dir: &Path, tls: Option<ServerTls>) -> Result<LocalEtcd> {
        let port = |_| free_port().map_err(|e| StoreError::Backend(format!("no free port: {e}")));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut etcd = LocalEtcd {
            child: None,
            binary: binary.to_string(),
            dir: dir.to_path_buf(),
            endpoint: format!("{scheme}://127.0.0.1:{}", port(())?),
            peer: format!("http://127.0.0.1:{}", port(())?),
            tls,
        };
        etcd.spawn()?;
        Ok(etcd)
    }

    fn spawn(&mut self) -> Result<()> {
        let io =
            |e: std::io::Error| StoreError::Backend(format!("cannot start {}: {e}", self.binary));
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .map_err(io)?;
        let mut cmd = Command::new(&self.binary);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "skua-local"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.endpoint])
            .args(["--advertise-client-urls", &self.endpoint])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("skua-local={}", self.peer)])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot start {}: {e} (install Debian's etcd-server)",
                    self.binary
                ))
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts again on the same data and ports.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Options to reach this etcd (with the server's own key pair as the client
    /// identity when it serves TLS; its certificate is made for both uses).
    pub fn options(&self) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![self.endpoint.clone()],
            ca_file: self.tls.as_ref().map(|t| t.ca_file.clone()),
            cert_file: self.tls.as_ref().map(|t| t.cert_file.clone()),
            key_file: self.tls.as_ref().map(|t| t.key_file.clone()),
        }
    }

    /// Connects, retrying for up to 20 s while etcd starts.
    pub async fn connect(&self) -> Result<EtcdStore> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match EtcdStore::connect(&self.options()).await {
                Ok(store) => return Ok(store),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => {
                    let log =
                        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                    return Err(StoreError::Unavailable(format!("{e}; etcd log:\n{log}")));
                }
            }
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}
