//! Cluster DNS, built into every agent, with real pods in a lab of network namespaces
//! (tests/common/cluster.rs): services and `kubernetes.default` by name from a
//! busybox pod, the search path, SRV for named ports, headless services and
//! StatefulSet pod names, a new service resolving at once, and names outside the
//! cluster relayed to the node's upstream resolver (a fake one in the lab namespace).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::cluster::Cluster;
use common::eventually;
use std::time::{Duration, Instant};

const APPS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: mysql}
spec:
  selector: {app: mysql}
  ports: [{name: mysql, port: 3306, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: sql, port: 3306}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: main, image: docker.io/library/busybox:latest, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: docker.io/library/busybox:latest, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}
"#;

/// A fake upstream resolver: answers every A query with 192.0.2.44.
const UPSTREAM: &str = r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.250.0.1", 53))
while True:
    q, peer = s.recvfrom(512)
    i = 12
    while q[i] != 0:
        i += q[i] + 1
    question = q[12:i + 5]
    header = q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 44])
    s.sendto(header + question + answer, peer)
"#;

/// A helper process that goes with the test, even when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lookup(c: &Cluster, args: &[&str]) -> (bool, String) {
    let mut cmd = vec!["exec", "client", "--", "nslookup"];
    cmd.extend_from_slice(args);
    c.kubectl("1.33", &cmd)
}

/// The addresses busybox nslookup found ("Address: x" lines; its server line has no
/// space after the colon).
fn answers(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Address: "))
        .map(|a| a.trim().to_string())
        .collect()
}

fn jsonpath(c: &Cluster, what: &str, path: &str) -> String {
    let (_, out) = c.kubectl("1.33", &["get", what, "-o", &format!("jsonpath={path}")]);
    out.trim().to_string()
}

#[test]
fn pods_resolve_services_and_the_world_through_cluster_dns() {
    let c = Cluster::start_lab(&[], &[("n1", "10.250.0.11"), ("n2", "10.250.0.12")]);
    let _upstream = KillOnDrop(
        c.netns
            .command("python3")
            .args(["-c", UPSTREAM])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    c.apply(APPS);
    c.wait_phase("client", "Running", 90);
    // the address is kube-dns's, as on k3s
    let (ok, out) = c.kubectl(
        "1.33",
        &[
            "get",
            "service",
            "kube-dns",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    assert!(ok && out.trim() == "10.43.0.10", "{out}");
    let resolv = c
        .kubectl("1.33", &["exec", "client", "--", "cat", "/etc/resolv.conf"])
        .1;
    assert!(
        resolv.contains("nameserver 10.43.0.10")
            && resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.contains("ndots:5"),
        "{resolv}"
    );

    let mysql_ip = jsonpath(&c, "service/mysql", "{.spec.clusterIP}");
    let (ok, out) = lookup(&c, &["mysql.default.svc.cluster.local"]);
    assert!(ok && answers(&out) == [mysql_ip.clone()], "{out}");
    let (ok, out) = lookup(&c, &["kubernetes.default.svc.cluster.local"]);
    assert!(ok && answers(&out) == ["10.43.0.1"], "{out}");
    // kubernetes.default through the search path, as resolvers expand it
    // (busybox's nslookup asks for a name as given; its libc resolver, here through
    // ping, expands the search path as every resolver does: the first candidate,
    // kubernetes.default.default.svc.cluster.local, must be NXDOMAIN at once)
    for (short, ip) in [
        ("kubernetes.default", "10.43.0.1"),
        ("mysql", mysql_ip.as_str()),
    ] {
        let (_, out) = c.kubectl(
            "1.33",
            &[
                "exec",
                "client",
                "--",
                "sh",
                "-c",
                &format!("ping -c1 -W1 {short}; true"),
            ],
        );
        assert!(out.contains(&format!("PING {short} ({ip})")), "{out}");
    }
    let (_, out) = lookup(&c, &["kubernetes.default.default.svc.cluster.local"]);
    assert!(
        answers(&out).is_empty() && out.contains("NXDOMAIN"),
        "{out}"
    );
    // a name the cluster does not have: NXDOMAIN, answered by the cluster itself
    let (ok, out) = lookup(&c, &["nothing.default.svc.cluster.local"]);
    assert!(
        !ok || out.contains("NXDOMAIN") || out.contains("can't find"),
        "{out}"
    );

    // SRV for a named port
    let (ok, out) = lookup(
        &c,
        &["-type=srv", "_mysql._tcp.mysql.default.svc.cluster.local"],
    );
    assert!(
        ok && out.contains("3306") && out.contains("mysql.default.svc.cluster.local"),
        "{out}"
    );

    // headless: the service names every ready pod; StatefulSet pods by name
    eventually(90, "both db pods ready", || {
        (jsonpath(&c, "statefulset/db", "{.status.readyReplicas}") == "2").then_some(())
    });
    let db0 = c.pod_field("db-0", "{.status.podIP}");
    let db1 = c.pod_field("db-1", "{.status.podIP}");
    let out = eventually(20, "db-0 by name", || {
        let (ok, out) = lookup(&c, &["db-0.db.default.svc.cluster.local"]);
        (ok && out.contains(&db0)).then_some(out)
    });
    assert!(!out.contains(&db1), "{out}");
    let out = eventually(20, "the headless service", || {
        let (ok, out) = lookup(&c, &["db.default.svc.cluster.local"]);
        (ok && out.contains(&db0) && out.contains(&db1)).then_some(out)
    });
    assert!(
        !out.lines().any(|l| l.starts_with("Address: 10.43.")),
        "a headless service has no cluster IP: {out}"
    );

    // a pod's A record
    let client_ip = c.pod_field("client", "{.status.podIP}");
    let (ok, out) = lookup(
        &c,
        &[&format!(
            "{}.default.pod.cluster.local",
            client_ip.replace('.', "-")
        )],
    );
    assert!(ok && out.contains(&client_ip), "{out}");

    // a new service resolves at once (asked from node n1 itself)
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec:\n  ports: [{port: 80}]\n",
    );
    let t = Instant::now();
    let late_ip = eventually(10, "the new service to resolve", || {
        let out = c
            .node_netns("n1")
            .command("busybox")
            .args(["nslookup", "late.default.svc.cluster.local", "10.43.0.10"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        out.lines()
            .rfind(|l| l.contains("Address") && l.contains("10.43."))
            .map(str::to_string)
    });
    let took = t.elapsed();
    eprintln!("new service resolved after {took:?}: {late_ip}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // outside the cluster: relayed to the node's upstream
    let out = eventually(20, "an outside name through the upstream", || {
        let (ok, out) = lookup(&c, &["www.example.org"]);
        (ok && out.contains("192.0.2.44")).then_some(out)
    });
    assert!(out.contains("192.0.2.44"), "{out}");
}
