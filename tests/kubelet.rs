//! The kubelet runs real containers on the agent's own containerd, inside a network
//! namespace each test creates (tests/common/cluster.rs). Needs root, containerd,
//! runc and the CNI plugins (CI has them; scripts/test.sh installs them).

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
    for h in ["memory", "pids", "cpu"] {
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
