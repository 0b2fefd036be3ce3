//! More of what the kubelet does with real containers (each test in a fresh network
//! namespace, tests/common/cluster.rs): images through registries.yaml mirrors and
//! pull secrets, eviction under node pressure, and probes, hooks, claims and container
//! settings as the container sees them.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::cluster::Cluster;
use common::eventually;

const BUSYBOX: &str = "docker.io/library/busybox:latest";

fn condition(c: &Cluster, pod: &str, t: &str) -> String {
    c.pod_field(
        pod,
        &format!("{{.status.conditions[?(@.type==\"{t}\")].status}}"),
    )
}

#[test]
fn images_come_through_registries_yaml_mirrors_rewrites_and_pull_secrets() {
    let mut c = Cluster::start();
    let mut registry = c.start_registry(
        5000,
        None,
        &["library/busybox:mirrored", "library/busybox:rewritten"],
    );
    // and a private one, for imagePullSecrets
    let mut private = c.start_registry(5001, Some(("puller", "s3cret")), &["private/busybox:v1"]);
    std::fs::write(
        c.registries_file(),
        r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000"]
    rewrite:
      "^skua-test/(.*)": "library/$1"
  "127.0.0.1:5001":
    endpoint: ["http://127.0.0.1:5001"]
"#,
    )
    .unwrap();
    // registries.yaml is read when the agent starts
    c.stop_agent("n1");
    c.start_agent("n1");
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: mirrored}
spec:
  containers:
  - {name: main, image: docker.io/library/busybox:mirrored, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo pulled; sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: rewritten}
spec:
  containers:
  - {name: main, image: skua-test/busybox:rewritten, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo rewritten; sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  containers:
  - {name: main, image: docker.io/library/busybox:absent, imagePullPolicy: Never}
"#,
    );
    c.wait_phase("mirrored", "Running", 60);
    c.wait_phase("rewritten", "Running", 60);
    let (_, out) = c.kubectl("1.33", &["logs", "rewritten"]);
    assert_eq!(out, "rewritten\n");
    assert_eq!(
        c.pod_field("rewritten", "{.status.containerStatuses[0].image}"),
        "skua-test/busybox:rewritten"
    );
    eventually(30, "ErrImageNeverPull", || {
        (c.pod_field(
            "never",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "ErrImageNeverPull")
            .then_some(())
    });
    // a private registry: refused without the pod's pull secret, pulled with it
    let (ok, out) = c.kubectl(
        "1.33",
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "--docker-server=127.0.0.1:5001",
            "--docker-username=puller",
            "--docker-password=s3cret",
        ],
    );
    assert!(ok, "{out}");
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: private}
spec:
  imagePullSecrets: [{name: regcred}]
  containers:
  - {name: main, image: 127.0.0.1:5001/private/busybox:v1, command: ["sh", "-c", "echo private; sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: no-secret}
spec:
  containers:
  - {name: main, image: 127.0.0.1:5001/private/busybox:v1, imagePullPolicy: Always, command: ["sleep", "3600"]}
"#,
    );
    c.wait_phase("private", "Running", 60);
    eventually(30, "ErrImagePull without the secret", || {
        (c.pod_field(
            "no-secret",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "ErrImagePull")
            .then_some(())
    });
    let _ = registry.kill();
    let _ = registry.wait();
    let _ = private.kill();
    let _ = private.wait();
}

#[test]
fn under_memory_pressure_pods_are_evicted_in_upstream_order() {
    // a threshold no machine meets: the node is always under memory pressure
    let c = Cluster::start_with_agent_args(&["--eviction-hard", "memory.available<100%"]);
    eventually(30, "MemoryPressure", || {
        (c.kubectl(
            "1.33",
            &[
                "get",
                "node",
                "n1",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"MemoryPressure\")].status}",
            ],
        )
        .1 == "True")
            .then_some(())
    });
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: guaranteed}}
spec:
  tolerations: [{{key: node.kubernetes.io/memory-pressure, operator: Exists}}]
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sleep", "3600"], resources: {{limits: {{cpu: 100m, memory: 64Mi}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: critical}}
spec:
  priorityClassName: system-node-critical
  tolerations: [{{key: node.kubernetes.io/memory-pressure, operator: Exists}}]
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sleep", "3600"]}}
"#
    ));
    c.wait_phase("guaranteed", "Running", 60);
    c.wait_phase("critical", "Running", 60);
    // a pod using more than it requested goes before one within its request
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: besteffort}}
spec:
  tolerations: [{{key: node.kubernetes.io/memory-pressure, operator: Exists}}]
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sleep", "3600"]}}
"#
    ));
    c.wait_phase("besteffort", "Running", 60);
    c.wait_phase("besteffort", "Failed", 60);
    assert_eq!(c.pod_field("besteffort", "{.status.reason}"), "Evicted");
    let message = c.pod_field("besteffort", "{.status.message}");
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: 100%"),
        "{message}"
    );
    assert_eq!(
        c.pod_field(
            "besteffort",
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}"
        ),
        "TerminationByKubelet"
    );
    assert_eq!(
        c.pod_field("guaranteed", "{.status.phase}"),
        "Running",
        "evicted in the wrong order"
    );
    c.wait_phase("guaranteed", "Failed", 60);
    // critical pods stay; an evicted pod's containers are stopped
    std::thread::sleep(std::time::Duration::from_secs(12));
    assert_eq!(c.pod_field("critical", "{.status.phase}"), "Running");
    eventually(30, "the evicted pods' containers to stop", || {
        (c.runtime_processes("n1").len() <= 2).then_some(())
    });
}

#[test]
fn probes_hooks_claims_and_container_settings_reach_the_container() {
    let c = Cluster::start();
    let claim_dir = c.dir.path().join("claim");
    c.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: app-env}}
data: {{MODE: fast, LEVEL: "3"}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: local-pv}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {{path: {claim}, type: DirectoryOrCreate}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: local-pv
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: settings}}
spec:
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    workingDir: /data
    envFrom:
    - {{configMapRef: {{name: app-env}}, prefix: APP_}}
    command: ["sh", "-c", "pwd; echo $APP_MODE $APP_LEVEL; sleep 2; cat /tmp/post; grep ^nameserver /etc/resolv.conf; grep -c ^search /etc/resolv.conf; touch /ro 2>/dev/null || echo read-only; grep CapEff /proc/self/status; echo written > /data/out; mkdir -p /tmp/www; echo ok > /tmp/www/index.html; httpd -p 8080 -h /tmp/www; sleep 4; touch /tmp/started; sleep 3600"]
    securityContext:
      readOnlyRootFilesystem: true
      capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo post-start > /tmp/post"]}}
    startupProbe:
      exec: {{command: ["test", "-f", "/tmp/started"]}}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      httpGet: {{path: /index.html, port: 8080}}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: tmp, mountPath: /tmp}}
  - name: priv
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "grep CapEff /proc/self/status; sleep 3600"]
    securityContext: {{privileged: true}}
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: data}}}}
  - {{name: tmp, emptyDir: {{}}}}
"#,
        claim = claim_dir.display()
    ));
    c.wait_phase("settings", "Running", 60);
    // the startup probe holds readiness back until it passes; then httpGet readiness
    assert_eq!(
        c.pod_field("settings", "{.status.containerStatuses[0].started}"),
        "false"
    );
    eventually(30, "settings to be Ready", || {
        (condition(&c, "settings", "Ready") == "True").then_some(())
    });
    assert_eq!(
        c.pod_field("settings", "{.status.containerStatuses[0].started}"),
        "true"
    );
    let out = eventually(30, "settings' output", || {
        let (ok, out) = c.kubectl("1.33", &["logs", "settings", "-c", "main"]);
        (ok && out.contains("CapEff")).then_some(out)
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "/data", "workingDir: {out}");
    assert_eq!(lines[1], "fast 3", "envFrom with a prefix: {out}");
    assert_eq!(lines[2], "post-start", "postStart ran: {out}");
    assert_eq!(lines[3], "nameserver 10.43.0.10", "cluster DNS: {out}");
    assert_eq!(lines[4], "1", "{out}");
    assert_eq!(lines[5], "read-only", "readOnlyRootFilesystem: {out}");
    // only NET_BIND_SERVICE (bit 10) is left
    assert_eq!(
        lines[6].split_whitespace().nth(1),
        Some("0000000000000400"),
        "{out}"
    );
    // a privileged container has every capability
    let (_, priv_out) = c.kubectl("1.33", &["logs", "settings", "-c", "priv"]);
    let caps =
        u64::from_str_radix(priv_out.split_whitespace().nth(1).unwrap_or("0"), 16).unwrap_or(0);
    assert!(caps >= 0x3f_ffff_ffff, "privileged: {priv_out}");
    // the claim's hostPath volume holds what the container wrote
    assert_eq!(
        std::fs::read_to_string(claim_dir.join("out")).unwrap(),
        "written\n"
    );
    // the liveness probe (tcpSocket) keeps passing: no restart
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        c.pod_field("settings", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
}
