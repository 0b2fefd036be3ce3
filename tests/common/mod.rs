//! Shared harness for integration tests: real backends, each in its own temp dir.
#![allow(dead_code)]

pub mod conformance;
pub mod watch_checker;

use skua::store::Store;
use skua::store::etcd::{EtcdOptions, EtcdStore};
use skua::store::memory::MemoryStore;
use skua::store::sled::{SledOptions, SledStore};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A real etcd (Debian's etcd-server) on 127.0.0.1 with its own data dir, killed on drop.
pub struct EtcdServer {
    child: Option<Child>,
    pub endpoint: String,
    peer: String,
    pub dir: TempDir,
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = EtcdServer {
            child: None,
            endpoint: format!("http://127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new(etcd_binary())
            .args(["--name", "skua-test"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &self.endpoint])
            .args(["--advertise-client-urls", &self.endpoint])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("skua-test={}", self.peer)])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start etcd: install Debian's etcd-server (scripts/test.sh does)");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn options(&self) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![self.endpoint.clone()],
            ..Default::default()
        }
    }

    /// Connects, retrying while etcd starts.
    pub async fn connect(&self) -> EtcdStore {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match EtcdStore::connect(&self.options()).await {
                Ok(store) => return store,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "etcd did not come up: {e}; log: {}",
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
                ),
            }
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn etcd_binary() -> String {
    std::env::var("SKUA_TEST_ETCD").unwrap_or_else(|_| "etcd".to_string())
}

/// One backend under test, with whatever keeps it alive.
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub dir: Option<TempDir>,
    pub etcd: Option<EtcdServer>,
}

impl Backend {
    pub async fn memory() -> Backend {
        Backend {
            store: Arc::new(MemoryStore::new()),
            dir: None,
            etcd: None,
        }
    }

    pub async fn sled() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_sled(dir.path());
        Backend {
            store: Arc::new(store),
            dir: Some(dir),
            etcd: None,
        }
    }

    pub async fn etcd() -> Backend {
        let etcd = EtcdServer::start();
        let store = etcd.connect().await;
        Backend {
            store: Arc::new(store),
            dir: None,
            etcd: Some(etcd),
        }
    }
}

pub fn open_sled(dir: &Path) -> SledStore {
    SledStore::open(SledOptions::new(dir.join("db"))).expect("open sled store")
}
