//! Shared harness for integration tests: real backends, each in its own temp dir.
#![allow(dead_code)]

pub mod conformance;
pub mod watch_checker;

use skua::store::Store;
use skua::store::etcd::EtcdStore;
use skua::store::etcd_local::LocalEtcd;
use skua::store::memory::MemoryStore;
use skua::store::sled::{SledOptions, SledStore};
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;

/// A real etcd (Debian's etcd-server) on 127.0.0.1 with its own temp dir.
pub struct EtcdServer {
    pub local: LocalEtcd,
    pub dir: TempDir,
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = LocalEtcd::start(&etcd_binary(), dir.path()).expect("start etcd");
        EtcdServer { local, dir }
    }

    pub async fn connect(&self) -> EtcdStore {
        self.local.connect().await.expect("etcd did not come up")
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

/// Watch buffer of the embedded backends under test: larger than any run here, so a
/// watcher descheduled on a loaded machine is not cut off (that behaviour has its own
/// test in tests/sled.rs).
const TEST_WATCH_BUFFER: usize = 1 << 16;

impl Backend {
    pub async fn memory() -> Backend {
        Backend {
            store: Arc::new(MemoryStore::with_watch_buffer(TEST_WATCH_BUFFER)),
            dir: None,
            etcd: None,
        }
    }

    pub async fn sled() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut opts = SledOptions::new(dir.path().join("db"));
        opts.watch_buffer = TEST_WATCH_BUFFER;
        let store = SledStore::open(opts).expect("open sled store");
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
