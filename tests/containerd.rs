//! The agent runs a containerd of its own, keeps it running, and imports image
//! tarballs from its images directory, as k3s' agent does on air-gapped nodes. Needs
//! root and Debian's containerd (CI has both; scripts/test.sh installs it).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, eventually};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The agent process; stopped with SIGTERM (so it stops its containerd) when dropped.
struct Agent(Child);

impl Agent {
    fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn containerd_pid(config: &Path) -> Option<String> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("containerd --config {}", config.display())])
        .output()
        .ok()?;
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!pid.is_empty()).then_some(pid)
}

#[test]
fn the_agent_runs_its_own_containerd_restarts_it_and_imports_image_tarballs() {
    // the agent sets up its overlay, DNS and proxy: all inside the server's namespace
    let server = SkuaServer::start_isolated();
    let root = server.dir.path().to_path_buf();
    let token = std::fs::read_to_string(root.join("data/server/node-token")).unwrap();
    // the test images, built from Debian's busybox-static
    let built = root.join("built");
    common::build_images(&built);
    let data = root.join("node");
    let images = data.join("agent/images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::copy(built.join("pause.tar"), images.join("pause.tar")).unwrap();
    let log = std::fs::File::create(root.join("agent.log")).unwrap();
    std::fs::write(root.join("resolv.conf"), "nameserver 10.250.0.1\n").unwrap();
    let mut agent = Agent(
        server
            .command(env!("CARGO_BIN_EXE_skua"))
            .env("SKUA_EVICTION_HARD", common::TEST_EVICTION_HARD)
            .args([
                "agent",
                "--server",
                &format!("https://127.0.0.1:{}", server.port),
            ])
            .args(["--token", token.trim(), "--node-name", "c1"])
            .args(["--node-ip", "10.250.0.1"])
            .arg("--resolv-conf")
            .arg(root.join("resolv.conf"))
            // no pods run here: any free kubelet port, and logs kept in the test's dir
            .args(["--kubelet-port", "0"])
            .arg("--pod-log-dir")
            .arg(root.join("pods"))
            .arg("--container-log-dir")
            .arg(root.join("containers"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--node-password-file")
            .arg(root.join("password"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let agent_log = || std::fs::read_to_string(root.join("agent.log")).unwrap_or_default();
    let socket: PathBuf = data.join("agent/containerd/containerd.sock");
    let config = data.join("agent/containerd/config.toml");
    let images_listed = || {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io", "images", "ls", "-q"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let listed = eventually(60, "the pause tarball to be imported", || {
        images_listed().filter(|l| l.contains("registry.k8s.io/pause:3.10"))
    });
    assert!(!listed.contains("busybox"), "{listed}");
    // the config keeps everything under the agent's data directory
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!(
            "root = \"{}/agent/containerd/root\"",
            data.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""),
        "{text}"
    );
    // a tarball dropped in later is imported too
    std::fs::copy(built.join("busybox.tar"), images.join("busybox.tar")).unwrap();
    eventually(30, "the busybox tarball to be imported", || {
        images_listed().filter(|l| l.contains("docker.io/library/busybox:latest"))
    });
    // the agent speaks CRI to it: the runtime's name, and the images it holds
    let said = agent_log();
    assert!(
        said.contains("container runtime ready over CRI") && said.contains("runtime=containerd://"),
        "{said}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !agent_log().lines().any(|l| {
        l.contains("images on this node (CRI)") && l.contains("docker.io/library/busybox:latest")
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the images were not listed over CRI: {}",
            agent_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // the node registers itself with what this machine and its runtime are, says it
    // cannot run pods yet, and renews its lease
    let node = eventually(30, "node c1 to register", || {
        let (ok, out) = common::kubectl_run(&server, "1.33", &["get", "node", "c1", "-o", "json"]);
        ok.then(|| serde_json::from_str::<serde_json::Value>(&out).unwrap())
    });
    let info = &node["status"]["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{info}"
    );
    assert_eq!(info["kubeletVersion"], "v1.33.0+skua");
    let cpus = std::thread::available_parallelism()
        .unwrap()
        .get()
        .to_string();
    assert_eq!(node["status"]["capacity"]["cpu"], cpus.as_str());
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "c1");
    // the lease is created right after the node registers (not with it): wait for it
    eventually(10, "the node's lease", || {
        let (ok, _) = common::kubectl_run(
            &server,
            "1.33",
            &["get", "lease", "c1", "-n", "kube-node-lease"],
        );
        ok.then_some(())
    });
    // once node IPAM gives the node its range, containerd gets a CNI config for it
    let cidr = eventually(30, "a pod range for c1", || {
        let (_, out) = common::kubectl_run(
            &server,
            "1.33",
            &["get", "node", "c1", "-o", "jsonpath={.spec.podCIDR}"],
        );
        (!out.trim().is_empty()).then(|| out.trim().to_string())
    });
    let conflist = data.join("agent/etc/cni/net.d/10-skua.conflist");
    let net = eventually(30, "the CNI config", || {
        let text = std::fs::read_to_string(&conflist).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()
    });
    assert_eq!(
        net["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        cidr.as_str(),
        "{net}"
    );
    // with its network configured the runtime is ready, and so is the node: its
    // not-ready taint goes
    eventually(30, "c1 to be Ready", || {
        let (_, out) = common::kubectl_run(
            &server,
            "1.33",
            &[
                "get",
                "node",
                "c1",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
            ],
        );
        (out == "KubeletReady").then_some(())
    });
    eventually(30, "the not-ready taint to go", || {
        let (_, out) = common::kubectl_run(
            &server,
            "1.33",
            &["get", "node", "c1", "-o", "jsonpath={.spec.taints[*].key}"],
        );
        (!out.contains("node.kubernetes.io/not-ready")).then_some(())
    });
    // containerd killed is started again
    let first = containerd_pid(&config).expect("containerd runs");
    let _ = Command::new("kill").args(["-9", &first]).status();
    eventually(30, "containerd to be started again", || {
        let again = containerd_pid(&config)?;
        (again != first && images_listed().is_some()).then_some(())
    });
    assert!(
        agent_log().contains("containerd exited; starting it again"),
        "{}",
        agent_log()
    );
    // stopping the agent stops its containerd
    agent.stop();
    eventually(10, "containerd to stop with the agent", || {
        containerd_pid(&config).is_none().then_some(())
    });
}
