//! The kubelet runs real containers on the agent's own containerd, inside a network
//! namespace each test creates (tests/common/cluster.rs). Needs root, containerd,
//! runc and the CNI plugins (CI has them; scripts/test.sh installs them).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::cluster::Cluster;
use common::eventually;

const BUSYBOX: &str = "docker.io/library/busybox:latest";

#[test]
fn a_busybox_pod_runs_logs_and_leaves_nothing_behind() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: greeting}}
data: {{word: hello, file.txt: "from a volume"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hello, labels: {{app: hello}}}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo $GREETING from $POD_NAME on $NODE; cat /cfg/file.txt; echo; env | grep KUBERNETES_SERVICE_HOST; cat /etc/hostname; while true; do sleep 1; done"]
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: greeting, key: word}}}}
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: NODE
      valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
  volumes:
  - name: cfg
    configMap: {{name: greeting}}
"#
    ));
    // host network, a user, a memory-backed emptyDir, a secret and the downward API
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hostnet, labels: {{tier: demo}}}}
spec:
  hostNetwork: true
  securityContext: {{runAsUser: 1000, runAsGroup: 3000}}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "id -u; id -g; grep ' /mem ' /proc/mounts | cut -d' ' -f3; cat /info/labels; echo; echo $PASSWORD; cat /creds/password; echo; sleep 3600"]
    env:
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
    volumeMounts:
    - {{name: mem, mountPath: /mem}}
    - {{name: info, mountPath: /info}}
    - {{name: creds, mountPath: /creds}}
  volumes:
  - {{name: mem, emptyDir: {{medium: Memory}}}}
  - name: info
    downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}
  - {{name: creds, secret: {{secretName: creds}}}}
"#
    ));
    c.wait_phase("hostnet", "Running", 90);
    // nothing brought a pause image: the agent built its sandbox image from busybox
    let said = c.agent_log("n1");
    assert!(
        said.contains("built the sandbox image from this machine's busybox"),
        "{said}"
    );
    assert_eq!(c.pod_field("hostnet", "{.status.podIP}"), "10.250.0.1");
    let out = eventually(30, "hostnet's output", || {
        let (ok, out) = c.kubectl("1.33", &["logs", "hostnet"]);
        (ok && out.lines().count() >= 6).then_some(out)
    });
    assert_eq!(out, "1000\n3000\ntmpfs\ntier=\"demo\"\ns3cret\ns3cret\n");
    c.wait_phase("hello", "Running", 90);
    let ip = c.pod_field("hello", "{.status.podIP}");
    assert!(ip.starts_with("10.42."), "pod IP {ip:?}");
    assert_eq!(c.pod_field("hello", "{.status.hostIP}"), "10.250.0.1");
    assert_eq!(c.pod_field("hello", "{.status.qosClass}"), "BestEffort");
    let id = c.pod_field("hello", "{.status.containerStatuses[0].containerID}");
    assert!(id.starts_with("containerd://"), "{id}");
    let image_id = c.pod_field("hello", "{.status.containerStatuses[0].imageID}");
    assert!(image_id.contains("sha256:"), "{image_id}");
    eventually(30, "the pod to be Ready", || {
        (c.pod_field("hello", "{.status.conditions[?(@.type==\"Ready\")].status}") == "True")
            .then_some(())
    });
    // kubectl logs, old and new kubectl, through the API server and the kubelet API
    for v in ["1.27", "1.33"] {
        let out = eventually(30, "the pod's output", || {
            let (ok, out) = c.kubectl(v, &["logs", "hello"]);
            (ok && out.contains("KUBERNETES_SERVICE_HOST")).then_some(out)
        });
        assert!(out.contains("hello from hello on n1"), "{out}");
        assert!(out.contains("from a volume"), "{out}");
        assert!(out.contains("KUBERNETES_SERVICE_HOST=10.43.0.1"), "{out}");
        assert!(out.lines().any(|l| l == "hello"), "hostname: {out}");
    }
    let (ok, out) = c.kubectl("1.33", &["logs", "hello", "--tail=1", "--timestamps"]);
    assert!(
        ok && out.lines().count() == 1 && out.starts_with("20"),
        "{out}"
    );
    let (ok, out) = c.kubectl("1.33", &["logs", "hello", "-c", "nope"]);
    assert!(
        !ok && out.contains("container nope is not valid for pod hello"),
        "{out}"
    );
    // where log collectors look
    let (pods_dir, containers_dir) = c.log_dirs("n1");
    let uid = c.pod_field("hello", "{.metadata.uid}");
    let file = pods_dir.join(format!("default_hello_{uid}/main/0.log"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains(" stdout F hello from hello"),
        "{text}"
    );
    let cid = id.trim_start_matches("containerd://");
    let link = containers_dir.join(format!("hello_default_main-{cid}.log"));
    assert_eq!(std::fs::read_link(&link).unwrap(), file);
    // deleting the pod removes its containers, sandbox, volumes, logs and cgroup
    let hostnet_uid = c.pod_field("hostnet", "{.metadata.uid}");
    let netns = c.sandbox_netns("n1");
    assert_eq!(
        netns.len(),
        1,
        "hello's sandbox (hostnet shares the node's): {netns:?}"
    );
    let (ok, out) = c.kubectl(
        "1.33",
        &["delete", "pod", "hello", "hostnet", "--timeout=60s"],
    );
    assert!(ok, "{out}");
    eventually(30, "the pods' containers to go", || {
        c.runtime_processes("n1").is_empty().then_some(())
    });
    assert!(!file.exists() && std::fs::symlink_metadata(&link).is_err());
    for ns in &netns {
        assert!(
            !std::path::Path::new(ns).exists(),
            "the pod's network namespace {ns} is left"
        );
    }
    let volumes = c.dir.path().join(format!("n1/agent/kubelet/pods/{uid}"));
    assert!(!volumes.exists(), "{}", volumes.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&uid), "a mount of the pod is left");
    assert!(
        !mounts.contains(&hostnet_uid),
        "the memory-backed emptyDir is left mounted"
    );
    for h in ["", "memory", "pids", "cpu"] {
        let cg = std::path::Path::new("/sys/fs/cgroup")
            .join(h)
            .join(format!("kubepods/besteffort/pod{uid}"));
        assert!(!cg.exists(), "{} is left", cg.display());
    }
}

fn condition(c: &Cluster, pod: &str, t: &str) -> String {
    c.pod_field(
        pod,
        &format!("{{.status.conditions[?(@.type==\"{t}\")].status}}"),
    )
}

#[test]
fn restarts_probes_oom_kills_and_init_containers_behave_as_upstream() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sh", "-c", "echo run; exit 3"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {{command: ["test", "-f", "/tmp/healthy"]}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: ready}}
spec:
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 2; touch /tmp/ready; sleep 20; rm /tmp/ready; sleep 3600"]
    readinessProbe:
      exec: {{command: ["test", "-f", "/tmp/ready"]}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: oom}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "head -c 400m /dev/zero | tail"]
    resources: {{limits: {{memory: 32Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: init}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: one, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sh", "-c", "echo one >> /work/order"], volumeMounts: [{{name: w, mountPath: /work}}]}}
  - {{name: two, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sh", "-c", "sleep 1; echo two >> /work/order"], volumeMounts: [{{name: w, mountPath: /work}}]}}
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sh", "-c", "echo three >> /work/order; cat /work/order"], volumeMounts: [{{name: w, mountPath: /work}}]}}
  volumes:
  - {{name: w, emptyDir: {{}}}}
"#
    ));
    // readiness: not ready, ready, not ready again
    assert_ne!(condition(&c, "ready", "Ready"), "True");
    eventually(30, "ready to become Ready", || {
        (condition(&c, "ready", "Ready") == "True").then_some(())
    });
    assert_eq!(
        c.pod_field("ready", "{.status.containerStatuses[0].ready}"),
        "true"
    );
    eventually(60, "ready to become unready", || {
        (condition(&c, "ready", "Ready") == "False").then_some(())
    });
    assert_eq!(
        c.pod_field("ready", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    // a container that keeps failing is restarted with back-off
    eventually(60, "crash to be restarted", || {
        let n: u32 = c
            .pod_field("crash", "{.status.containerStatuses[0].restartCount}")
            .parse()
            .unwrap_or(0);
        (n >= 1).then_some(())
    });
    eventually(30, "crash to be in back-off", || {
        (c.pod_field(
            "crash",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CrashLoopBackOff")
            .then_some(())
    });
    assert_eq!(
        c.pod_field(
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "3"
    );
    assert_eq!(c.pod_field("crash", "{.status.phase}"), "Running");
    let (ok, out) = c.kubectl("1.27", &["logs", "crash", "--previous"]);
    assert!(ok && out.contains("run"), "{out}");
    let (_, out) = c.kubectl("1.33", &["get", "pod", "crash"]);
    assert!(
        out.contains("CrashLoopBackOff") || out.contains("Error"),
        "{out}"
    );
    // a failing liveness probe restarts the container
    eventually(60, "live to be restarted by its liveness probe", || {
        (c.pod_field("live", "{.status.containerStatuses[0].restartCount}") == "1").then_some(())
    });
    let (_, events) = c.kubectl(
        "1.33",
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=live",
        ],
    );
    assert!(
        events.contains("Unhealthy") && events.contains("Liveness probe failed"),
        "{events}"
    );
    // over its memory limit: OOMKilled
    c.wait_phase("oom", "Failed", 60);
    assert_eq!(
        c.pod_field(
            "oom",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "OOMKilled"
    );
    // init containers run one after the other, before the app container
    c.wait_phase("init", "Succeeded", 60);
    let (ok, out) = c.kubectl("1.33", &["logs", "init", "-c", "main"]);
    assert!(ok && out == "one\ntwo\nthree\n", "{out:?}");
    assert_eq!(
        c.pod_field(
            "init",
            "{.status.initContainerStatuses[1].state.terminated.reason}"
        ),
        "Completed"
    );
    assert_eq!(condition(&c, "init", "Initialized"), "True");
}

#[test]
fn volumes_follow_updates_prestop_runs_first_and_agent_restarts_adopt_containers() {
    let mut c = Cluster::start();
    let marks = c.dir.path().join("marks");
    c.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: live-config}}
data: {{key: first}}
---
apiVersion: v1
kind: Pod
metadata: {{name: watcher}}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'echo term >> /marks/order; exit 0' TERM; while true; do cat /cfg/key; echo; sleep 1; done"]
    lifecycle:
      preStop:
        exec: {{command: ["sh", "-c", "echo prestop >> /marks/order"]}}
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
    - {{name: marks, mountPath: /marks}}
  volumes:
  - {{name: cfg, configMap: {{name: live-config}}}}
  - {{name: marks, hostPath: {{path: {}, type: DirectoryOrCreate}}}}
"#,
        marks.display()
    ));
    c.wait_phase("watcher", "Running", 60);
    let id = c.pod_field("watcher", "{.status.containerStatuses[0].containerID}");
    // a restarted agent adopts what runs: nothing is restarted
    c.stop_agent("n1");
    assert!(
        !c.runtime_processes("n1").is_empty(),
        "containers outlive the agent"
    );
    c.start_agent("n1");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        c.pod_field("watcher", "{.status.containerStatuses[0].containerID}"),
        id
    );
    assert_eq!(
        c.pod_field("watcher", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert_eq!(c.pod_field("watcher", "{.status.phase}"), "Running");
    // a ConfigMap change reaches the mounted volume
    let (ok, out) = c.kubectl(
        "1.33",
        &[
            "patch",
            "configmap",
            "live-config",
            "-p",
            r#"{"data":{"key":"second"}}"#,
        ],
    );
    assert!(ok, "{out}");
    eventually(60, "the new value in the volume", || {
        let (_, out) = c.kubectl("1.33", &["logs", "watcher", "--tail=1"]);
        (out.trim() == "second").then_some(())
    });
    // deletion: preStop first, then SIGTERM
    let (ok, out) = c.kubectl("1.33", &["delete", "pod", "watcher", "--timeout=60s"]);
    assert!(ok, "{out}");
    let order = std::fs::read_to_string(marks.join("order")).unwrap();
    assert_eq!(order, "prestop\nterm\n");
}

#[test]
fn a_second_agent_joins_with_the_token_and_runs_a_pod() {
    let mut c = Cluster::start();
    c.add_agent("n2");
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: on-n2}}
spec:
  nodeName: n2
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sh", "-c", "echo on $(hostname); sleep 3600"]}}
"#
    ));
    c.wait_phase("on-n2", "Running", 60);
    let ip = c.pod_field("on-n2", "{.status.podIP}");
    assert!(ip.starts_with("10.42.1."), "n2's pod range: {ip}");
    let out = eventually(30, "the pod's output", || {
        let (ok, out) = c.kubectl("1.33", &["logs", "on-n2"]);
        (ok && !out.is_empty()).then_some(out)
    });
    assert_eq!(out, "on on-n2\n");
    // a wrong token and a tampered CA hash are refused before anything joins
    let token = c.token();
    let (hash, secret) = token.split_once("::").unwrap();
    let said = c.agent_refused("n3", &format!("{hash}::server:wrong"));
    assert!(said.contains("join token was refused"), "{said}");
    let tampered = format!("K10{}::{secret}", "0".repeat(64));
    let said = c.agent_refused("n4", &tampered);
    assert!(said.contains("possible man-in-the-middle"), "{said}");
}

#[test]
fn one_server_command_runs_a_single_node_cluster_that_survives_its_restart() {
    let mut c = Cluster::start_single();
    let (ok, out) = c.kubectl("1.33", &["get", "nodes"]);
    assert!(
        ok && out.contains("s1") && out.contains("control-plane") && out.contains("Ready"),
        "{out}"
    );
    c.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - {{name: main, image: {BUSYBOX}, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo up; sleep 3600"]}}
"#
    ));
    eventually(90, "two web pods running", || {
        let (_, out) = c.kubectl(
            "1.33",
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
        );
        (out == "2").then_some(())
    });
    let ids = |c: &Cluster| {
        let (_, out) = c.kubectl(
            "1.33",
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].status.containerStatuses[0].containerID}",
            ],
        );
        out
    };
    let before = ids(&c);
    // restarting the server (and its agent) leaves the containers running
    c.restart_server();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(ids(&c), before);
    let (_, restarts) = c.kubectl(
        "1.33",
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
        ],
    );
    assert_eq!(restarts, "0 0");
}

#[test]
fn exec_attach_cp_and_port_forward_work_with_old_and_new_kubectl() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: shell}}
spec:
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sh", "-c", "while true; do echo tick; sleep 1; done"]}}
  - name: web
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www; echo hello-from-httpd > /www/index.html; exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080, name: http}}]
"#
    ));
    c.wait_phase("shell", "Running", 60);
    // the service account token volume: a bound token the API accepts, the CA, the namespace
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let (_, ns) = c.kubectl_code(
        "1.33",
        &[
            "exec",
            "shell",
            "-c",
            "main",
            "--",
            "cat",
            &format!("{sa}/namespace"),
        ],
        None,
    );
    assert_eq!(ns, "default");
    let (_, ca) = c.kubectl_code(
        "1.33",
        &[
            "exec",
            "shell",
            "-c",
            "main",
            "--",
            "cat",
            &format!("{sa}/ca.crt"),
        ],
        None,
    );
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let (_, token) = c.kubectl_code(
        "1.33",
        &[
            "exec",
            "shell",
            "-c",
            "main",
            "--",
            "cat",
            &format!("{sa}/token"),
        ],
        None,
    );
    let review = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}"}}}}"#
    );
    let (code, user) = c.kubectl_code(
        "1.33",
        &[
            "create",
            "--validate=false",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.user.username}",
        ],
        Some(&review),
    );
    assert_eq!(
        (code, user.as_str()),
        (0, "system:serviceaccount:default:default")
    );
    // the kubelet's stats through nodes/proxy
    let summary = eventually(30, "stats for the pod", || {
        let (ok, out) = c.kubectl(
            "1.33",
            &["get", "--raw", "/api/v1/nodes/n1/proxy/stats/summary"],
        );
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && v["pods"]
            .as_array()?
            .iter()
            .any(|p| p["podRef"]["name"] == "shell"))
        .then_some(v)
    });
    assert_eq!(summary["node"]["nodeName"], "n1");
    let (ok, metrics) = c.kubectl(
        "1.33",
        &["get", "--raw", "/api/v1/nodes/n1/proxy/metrics/resource"],
    );
    assert!(ok && metrics.contains(r#"container_memory_working_set_bytes{container="main",namespace="default",pod="shell"}"#), "{metrics}");
    // kubectl logs -f follows what the container writes
    let followed = c.dir.path().join("follow.out");
    let mut follow = c
        .netns
        .command(common::kubectl("1.33"))
        .env("KUBECONFIG", &c.kubeconfig)
        .args(["logs", "-f", "--tail=1", "shell", "-c", "main"])
        .stdout(std::fs::File::create(&followed).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(30, "followed lines", || {
        let text = std::fs::read_to_string(&followed).ok()?;
        (text.matches("tick").count() >= 3).then_some(())
    });
    let _ = follow.kill();
    let _ = follow.wait();
    let local = c.dir.path().join("upload.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    for (i, v) in ["1.27", "1.33"].into_iter().enumerate() {
        // the exit code of the command reaches the caller
        let (code, out) = c.kubectl_code(
            v,
            &[
                "exec",
                "shell",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo out; exit 3",
            ],
            None,
        );
        assert_eq!(code, 3, "kubectl {v}: {out}");
        assert!(out.contains("out"), "{out}");
        // with a terminal (-it): `script` gives kubectl a pseudo-terminal
        let line = format!(
            "KUBECONFIG={} {} exec -it shell -c main -- sh -c 'tty; exit 4'",
            c.kubeconfig.display(),
            common::kubectl(v).display()
        );
        let out = c
            .netns
            .command("script")
            .args(["-qec", &line, "/dev/null"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(4), "kubectl {v} exec -it: {text}");
        assert!(text.contains("/dev/pts/"), "a terminal inside: {text}");
        let (code, out) = c.kubectl_code(
            v,
            &["exec", "shell", "-c", "main", "--", "echo", "hi"],
            None,
        );
        assert_eq!((code, out.as_str()), (0, "hi\n"), "kubectl {v}");
        // stdin, to its end
        let (code, out) = c.kubectl_code(
            v,
            &["exec", "-i", "shell", "-c", "main", "--", "cat"],
            Some("piped\n"),
        );
        assert_eq!((code, out.as_str()), (0, "piped\n"), "kubectl {v}");
        // kubectl cp both ways (tar over exec)
        let target = format!("shell:/tmp/up-{i}.txt");
        let (code, out) = c.kubectl_code(
            v,
            &["cp", "-c", "main", local.to_str().unwrap(), &target],
            None,
        );
        assert_eq!(code, 0, "kubectl {v} cp: {out}");
        let (_, out) = c.kubectl_code(
            v,
            &[
                "exec",
                "shell",
                "-c",
                "main",
                "--",
                "cat",
                &format!("/tmp/up-{i}.txt"),
            ],
            None,
        );
        assert_eq!(out, "copied in\n", "kubectl {v}");
        let back = c.dir.path().join(format!("back-{i}.txt"));
        let (code, out) = c.kubectl_code(
            v,
            &["cp", "-c", "main", &target, back.to_str().unwrap()],
            None,
        );
        assert_eq!(code, 0, "kubectl {v} cp back: {out}");
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
        // attach: the running container's output streams until we stop listening
        let seen = c.dir.path().join(format!("attach-{i}.out"));
        let mut attach = c
            .netns
            .command(common::kubectl(v))
            .env("KUBECONFIG", &c.kubeconfig)
            .args(["attach", "shell", "-c", "main"])
            .stdout(std::fs::File::create(&seen).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        eventually(30, "attached output", || {
            let text = std::fs::read_to_string(&seen).ok()?;
            (text.matches("tick").count() >= 2).then_some(())
        });
        let _ = attach.kill();
        let _ = attach.wait();
        // port-forward reaches the pod's httpd
        let port = 18080 + i;
        let mut pf = c
            .netns
            .command(common::kubectl(v))
            .env("KUBECONFIG", &c.kubeconfig)
            .args(["port-forward", "pod/shell", &format!("{port}:8080")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let body = eventually(30, "an answer through port-forward", || {
            let out = c
                .netns
                .command("curl")
                .args([
                    "-s",
                    "--max-time",
                    "2",
                    &format!("http://127.0.0.1:{port}/"),
                ])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (!text.is_empty()).then_some(text)
        });
        let _ = pf.kill();
        let _ = pf.wait();
        assert_eq!(body, "hello-from-httpd\n", "kubectl {v}");
    }
}
