//! A whole cluster that runs real containers, inside a network namespace the test
//! creates (the network safety rule: no route to the machine's real interfaces):
//! a `skua server` (control plane only) and `skua agent`s with their own containerd,
//! the test images (busybox, pause) imported, and `kubectl` run inside the namespace.
//! Dropping it deletes every pod, stops the agents (and their containerd), kills what
//! is left of their containers, unmounts and deletes the namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A network namespace with loopback and one bridge (`node0`) holding `10.250.0.1/24`
/// (the node's address); deleted on drop.
pub struct Netns {
    pub name: String,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    pub fn create() -> Netns {
        let ns = Netns::bare();
        for args in [
            &["link", "add", "node0", "type", "bridge"][..],
            &["addr", "add", "10.250.0.1/24", "dev", "node0"],
            &["link", "set", "node0", "up"],
        ] {
            ns.ip(args);
        }
        ns
    }

    /// A namespace with only loopback (up).
    pub fn bare() -> Netns {
        let name = format!(
            "skua-t{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() % 100_000 + rand_suffix()
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <this> <args>`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// A sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(self
            .command("sh")
            .args(["-c", &format!("echo {value} > {path}")]));
    }

    /// A command run inside the namespace (`nsenter` enters only the network
    /// namespace: `ip netns exec` would also remount /sys and hide the cgroups).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }
}

fn rand_suffix() -> u128 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u32::from_le_bytes(b) as u128 % 1_000_000
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// The server, agents and namespace of one test.
pub struct Cluster {
    pub dir: TempDir,
    server: Child,
    pub agents: Vec<(String, Option<Child>)>,
    pub port: u16,
    pub kubeconfig: PathBuf,
    pub images: PathBuf,
    /// Extra flags for every agent this cluster starts.
    pub agent_args: Vec<String>,
    /// Nodes with a network namespace of their own (`start_lab`): name, namespace,
    /// address. Agents not named here run in the cluster's namespace.
    pub lab_nodes: Vec<(String, Netns, String)>,
    // last: the namespace outlives everything in it
    pub netns: Netns,
}

impl Cluster {
    /// A server and one agent (node `n1`), with the test images, Ready.
    pub fn start() -> Cluster {
        Self::start_with(false, &[])
    }

    /// A server and agent `n1` started with extra agent flags.
    pub fn start_with_agent_args(args: &[&str]) -> Cluster {
        Self::start_with(false, args)
    }

    /// `skua server` with its embedded agent (node `s1`), as one command gives a
    /// single-node cluster; `restart_server` stops and starts it.
    pub fn start_single() -> Cluster {
        Self::start_with(true, &[])
    }

    fn server_command(&self, embedded: bool) -> Command {
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("server.log"))
            .unwrap();
        let mut cmd = self.netns.command(env!("CARGO_BIN_EXE_skua"));
        cmd.env("SKUA_LOG", "info,skua=debug")
            .env("SKUA_EVICTION_HARD", super::TEST_EVICTION_HARD)
            .arg("server")
            .arg("--config")
            .arg(root.join("none.yaml"))
            .arg("--data-dir")
            .arg(root.join("server"))
            .arg("--write-kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-ip", "10.250.0.1"])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if embedded {
            let data = root.join("server");
            let images = data.join("agent/images");
            std::fs::create_dir_all(&images).unwrap();
            // only the workload image: the agent builds its own sandbox image
            std::fs::copy(self.images.join("busybox.tar"), images.join("busybox.tar")).unwrap();
            cmd.args(["--node-name", "s1"])
                .arg("--resolv-conf")
                .arg(root.join("resolv.conf"))
                .arg("--node-password-file")
                .arg(data.join("password"))
                .arg("--pod-log-dir")
                .arg(data.join("log/pods"))
                .arg("--container-log-dir")
                .arg(data.join("log/containers"));
        } else {
            cmd.arg("--disable-agent");
        }
        cmd
    }

    /// Stops the server with SIGTERM and starts it again (with its embedded agent).
    pub fn restart_server(&mut self) {
        let _ = Command::new("kill")
            .arg(self.server.id().to_string())
            .status();
        let _ = self.server.wait();
        self.server = self
            .server_command(true)
            .spawn()
            .expect("start skua server");
        self.wait_api();
        self.wait_ready("s1");
    }

    fn wait_api(&self) {
        super::eventually(30, "the API to answer", || {
            let (ok, _) = self.kubectl("1.33", &["get", "--raw", "/readyz"]);
            ok.then_some(())
        });
    }

    /// The cluster's files (images, an empty config, the lab's resolv.conf) in a new
    /// temp dir, before any process starts.
    fn prepare(netns: Netns, agent_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let images = root.join("images");
        super::build_images(&images);
        std::fs::write(root.join("none.yaml"), "").unwrap();
        // the nodes' upstream resolver is in the lab, never the machine's own
        std::fs::write(root.join("resolv.conf"), "nameserver 10.250.0.1\n").unwrap();
        let kubeconfig = root.join("kubeconfig.yaml");
        // a placeholder until the real server starts (the struct owns one child)
        let mut server = Command::new("true").spawn().expect("true");
        let _ = server.wait();
        Cluster {
            dir,
            server,
            agents: Vec::new(),
            port: 6443,
            kubeconfig,
            images,
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
            lab_nodes: Vec::new(),
            netns,
        }
    }

    fn start_with(embedded: bool, agent_args: &[&str]) -> Cluster {
        let mut cluster = Self::prepare(Netns::create(), agent_args);
        cluster.server = cluster
            .server_command(embedded)
            .spawn()
            .expect("start skua server");
        cluster.wait_api();
        if embedded {
            cluster.wait_ready("s1");
        } else {
            cluster.add_agent("n1");
        }
        cluster
    }

    /// A lab of separate machines: the cluster's namespace is the lab's switch and
    /// router (bridges `node0` = 10.250.0.0/24 and `node1` = 10.251.0.0/24, the
    /// control plane on 10.250.0.1), and each of `nodes` (name, address in one of those
    /// subnets) is a namespace of its own wired to its subnet's bridge by a veth pair,
    /// with its own agent. Nothing in it has a route to the machine's real interfaces.
    /// `server_args` go to `skua server` (e.g. the flannel backend).
    pub fn start_lab(server_args: &[&str], nodes: &[(&str, &str)]) -> Cluster {
        let netns = Netns::create();
        netns.ip(&["link", "add", "node1", "type", "bridge"]);
        netns.ip(&["addr", "add", "10.251.0.1/24", "dev", "node1"]);
        netns.ip(&["link", "set", "node1", "up"]);
        netns.sysctl("net.ipv4.ip_forward", "1");
        let mut cluster = Self::prepare(netns, &[]);
        for (name, ip) in nodes {
            cluster.add_lab_machine(name, ip);
        }
        cluster.server = cluster
            .server_command(false)
            .args(server_args)
            .spawn()
            .expect("start skua server");
        cluster.wait_api();
        for (name, _) in nodes {
            cluster.add_agent(name);
        }
        cluster
    }

    /// A machine of the lab: namespace `name` with `eth0` at `ip`/24 on its subnet's
    /// bridge, default route via the lab router.
    pub fn add_lab_machine(&mut self, name: &str, ip: &str) {
        let ns = Netns::bare();
        let (bridge, gw) = if ip.starts_with("10.251.") {
            ("node1", "10.251.0.1")
        } else {
            ("node0", "10.250.0.1")
        };
        let host_side = format!("v-{name}");
        self.netns.ip(&[
            "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.netns
            .ip(&["link", "set", &host_side, "master", bridge, "up"]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", gw]);
        self.lab_nodes.push((name.to_string(), ns, ip.to_string()));
    }

    /// The namespace node `name` runs in.
    pub fn node_netns(&self, name: &str) -> &Netns {
        self.lab_nodes
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, ns, _)| ns)
            .unwrap_or(&self.netns)
    }

    /// Starts agent `name` (its data under `<dir>/<name>`) and waits for it to be Ready.
    pub fn add_agent(&mut self, name: &str) {
        let child = self.spawn_agent(name, None);
        self.agents.push((name.to_string(), Some(child)));
        self.wait_ready(name);
    }

    pub fn node_dir(&self, name: &str) -> PathBuf {
        // the embedded agent keeps its data with the server's
        self.dir
            .path()
            .join(if name == "s1" { "server" } else { name })
    }

    /// The token agents join with.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server/server/node-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn spawn_agent(&self, name: &str, token: Option<&str>) -> Child {
        let data = self.node_dir(name);
        let images = data.join("agent/images");
        std::fs::create_dir_all(&images).unwrap();
        // only the workload image, as on an air-gapped node: the agent builds its own
        // sandbox image
        std::fs::copy(self.images.join("busybox.tar"), images.join("busybox.tar")).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        // a second agent on this machine needs its own kubelet port
        let index = self
            .agents
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or(self.agents.len());
        let lab = self.lab_nodes.iter().find(|(n, _, _)| n == name);
        let (ns, server, ip) = match lab {
            Some((_, ns, ip)) => (ns, "10.250.0.1", ip.as_str()),
            None => (&self.netns, "127.0.0.1", "10.250.0.1"),
        };
        ns.command(env!("CARGO_BIN_EXE_skua"))
            .env("SKUA_LOG", "info,skua=debug")
            .env("SKUA_EVICTION_HARD", super::TEST_EVICTION_HARD)
            .args([
                "agent",
                "--server",
                &format!("https://{server}:{}", self.port),
            ])
            .args([
                "--token",
                token.unwrap_or(&self.token()),
                "--node-name",
                name,
            ])
            .args(["--node-ip", ip])
            .args(["--kubelet-port", &(10250 + index).to_string()])
            .arg("--config")
            .arg(self.dir.path().join("none.yaml"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--node-password-file")
            .arg(data.join("password"))
            .arg("--pod-log-dir")
            .arg(data.join("log/pods"))
            .arg("--container-log-dir")
            .arg(data.join("log/containers"))
            .arg("--private-registry")
            .arg(self.registries_file())
            .arg("--resolv-conf")
            .arg(self.dir.path().join("resolv.conf"))
            .args(&self.agent_args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start skua agent")
    }

    /// The registries.yaml agents read at start (absent until a test writes it).
    pub fn registries_file(&self) -> PathBuf {
        self.dir.path().join("registries.yaml")
    }

    /// A local registry (Debian's docker-registry) on 127.0.0.1:`port` inside the
    /// namespace, with htpasswd users if `auth` is given, holding the busybox image
    /// under each `repo:tag` of `images`.
    pub fn start_registry(&self, port: u16, auth: Option<(&str, &str)>, images: &[&str]) -> Child {
        let root = self.dir.path().join(format!("registry-{port}"));
        std::fs::create_dir_all(&root).unwrap();
        let mut config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root.join("data").display()
        );
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .unwrap();
            assert!(out.status.success());
            std::fs::write(root.join("htpasswd"), out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd: {{realm: skua-test, path: {}}}\n",
                root.join("htpasswd").display()
            ));
        }
        let file = root.join("config.yml");
        std::fs::write(&file, config).unwrap();
        let log =
            std::fs::File::create(self.dir.path().join(format!("registry-{port}.log"))).unwrap();
        let child = self
            .netns
            .command("docker-registry")
            .arg("serve")
            .arg(&file)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        for image in images {
            super::eventually(30, "the registry to take the image", || {
                let mut cmd = self.netns.command("skopeo");
                cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
                if let Some((user, password)) = auth {
                    cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
                }
                let out = cmd
                    .arg(format!(
                        "docker-archive:{}",
                        self.images.join("busybox.tar").display()
                    ))
                    .arg(format!("docker://127.0.0.1:{port}/{image}"))
                    .output()
                    .ok()?;
                out.status.success().then_some(())
            });
        }
        child
    }

    /// Runs an agent with `token` and returns its output once it exits (for refusals).
    pub fn agent_refused(&self, name: &str, token: &str) -> String {
        let mut child = self.spawn_agent(name, Some(token));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            assert!(Instant::now() < deadline, "agent {name} did not give up");
            std::thread::sleep(Duration::from_millis(200));
        }
        self.agent_log(name)
    }

    pub fn wait_ready(&self, name: &str) {
        super::eventually(120, &format!("node {name} to be Ready"), || {
            let (ok, out) = self.kubectl(
                "1.33",
                &[
                    "get",
                    "node",
                    name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            );
            (ok && out.trim() == "True").then_some(())
        });
    }

    /// Stops agent `name` with SIGTERM (its containerd stops; containers keep running).
    pub fn stop_agent(&mut self, name: &str) {
        if let Some((_, slot)) = self.agents.iter_mut().find(|(n, _)| n == name) {
            if let Some(mut child) = slot.take() {
                let _ = Command::new("kill").arg(child.id().to_string()).status();
                let _ = child.wait();
            }
        }
    }

    /// Starts a stopped agent again without waiting for it.
    pub fn restart_agent_nowait(&mut self, name: &str) {
        let slot = self
            .agents
            .iter()
            .position(|(n, _)| n == name)
            .expect("a known agent");
        self.agents[slot].1 = Some(self.spawn_agent(name, None));
    }

    /// Starts a stopped agent again.
    pub fn start_agent(&mut self, name: &str) {
        let slot = self
            .agents
            .iter()
            .position(|(n, _)| n == name)
            .expect("a known agent");
        self.agents[slot].1 = Some(self.spawn_agent(name, None));
        self.wait_ready(name);
    }

    pub fn agent_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Where node `name` keeps pods' logs (`--pod-log-dir`, `--container-log-dir`).
    pub fn log_dirs(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.node_dir(name);
        (d.join("log/pods"), d.join("log/containers"))
    }

    /// The containerd socket of node `name`.
    pub fn containerd_socket(&self, name: &str) -> PathBuf {
        self.node_dir(name).join("agent/containerd/containerd.sock")
    }

    /// The network namespaces (`/var/run/netns/cni-…`) the runtime of node `name`
    /// holds for its pods' sandboxes.
    pub fn sandbox_netns(&self, name: &str) -> Vec<String> {
        let ctr = |args: &[&str]| {
            let out = Command::new("ctr")
                .arg("--address")
                .arg(self.containerd_socket(name))
                .args(["--namespace", "k8s.io", "containers"])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let mut paths = Vec::new();
        for id in ctr(&["ls", "-q"]).lines().filter(|l| !l.is_empty()) {
            let info: serde_json::Value =
                serde_json::from_str(&ctr(&["info", id])).unwrap_or_default();
            for ns in info["Spec"]["linux"]["namespaces"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(p) = ns["path"].as_str().filter(|p| p.contains("/netns/")) {
                    if !paths.iter().any(|x| x == p) {
                        paths.push(p.to_string());
                    }
                }
            }
        }
        paths
    }

    /// Runs `kubectl.<version>` inside the namespace.
    pub fn kubectl(&self, version: &str, args: &[&str]) -> (bool, String) {
        self.kubectl_with_input(version, args, None)
    }

    pub fn kubectl_with_input(
        &self,
        version: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> (bool, String) {
        let (code, text) = self.kubectl_code(version, args, input);
        (code == 0, text)
    }

    /// Runs `kubectl.<version>` inside the namespace; its exit code and output.
    pub fn kubectl_code(&self, version: &str, args: &[&str], input: Option<&str>) -> (i32, String) {
        let mut cmd = self.netns.command(super::kubectl(version));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(text) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().expect("kubectl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    /// `kubectl apply -f -` of `manifest`; panics with kubectl's words if it fails.
    pub fn apply(&self, manifest: &str) {
        let (ok, out) = self.kubectl_with_input("1.33", &["apply", "-f", "-"], Some(manifest));
        assert!(ok, "{out}");
    }

    /// A field of a pod by jsonpath (empty when the pod is missing).
    pub fn pod_field(&self, pod: &str, jsonpath: &str) -> String {
        let (_, out) = self.kubectl(
            "1.33",
            &["get", "pod", pod, "-o", &format!("jsonpath={jsonpath}")],
        );
        out
    }

    /// Waits until pod `pod` reaches `phase`.
    pub fn wait_phase(&self, pod: &str, phase: &str, secs: u64) {
        super::eventually(secs, &format!("pod {pod} to be {phase}"), || {
            (self.pod_field(pod, "{.status.phase}") == phase).then_some(())
        });
    }

    /// Whatever processes run on node `name`'s containerd (shims and containers).
    pub fn runtime_processes(&self, name: &str) -> Vec<String> {
        let marker = self.node_dir(name).to_string_lossy().into_owned();
        let out = Command::new("pgrep")
            .args(["-af", &marker])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("containerd-shim"))
            .map(String::from)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // the kubelets remove the pods' containers, sandboxes, mounts, cgroups and
        // network namespaces; first what would make new pods
        let _ = self.kubectl(
            "1.33",
            &[
                "delete",
                "deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs",
                "--all",
                "-A",
                "--cascade=orphan",
                "--timeout=30s",
            ],
        );
        let _ = self.kubectl(
            "1.33",
            &[
                "delete",
                "pods",
                "--all",
                "-A",
                "--grace-period=1",
                "--timeout=60s",
            ],
        );
        let names: Vec<String> = self.agents.iter().map(|(n, _)| n.clone()).collect();
        for n in &names {
            self.stop_agent(n);
        }
        let _ = Command::new("kill")
            .arg(self.server.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(self.server.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        // anything a failed test left behind: shims, containers, mounts
        skua::agent::containerd::remove_leftovers(self.dir.path());
        if let Ok(dir) = std::env::var("SKUA_TEST_LOGS") {
            let _ = std::fs::create_dir_all(&dir);
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let n = entry.file_name().to_string_lossy().into_owned();
                if n.ends_with(".log") {
                    let _ = std::fs::copy(
                        entry.path(),
                        Path::new(&dir).join(format!("{}-{n}", self.netns.name)),
                    );
                }
            }
        }
    }
}
