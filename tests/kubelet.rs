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
    let (ok, out) = c.kubectl("1.33", &["delete", "pod", "hello", "--timeout=60s"]);
    assert!(ok, "{out}");
    eventually(30, "the pod's containers to go", || {
        c.runtime_processes("n1").is_empty().then_some(())
    });
    assert!(!file.exists() && std::fs::symlink_metadata(&link).is_err());
    let volumes = c.dir.path().join(format!("n1/agent/kubelet/pods/{uid}"));
    assert!(!volumes.exists(), "{}", volumes.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&uid), "a mount of the pod is left");
    for h in ["memory", "pids", "cpu"] {
        let cg = std::path::Path::new("/sys/fs/cgroup")
            .join(h)
            .join(format!("kubepods/besteffort/pod{uid}"));
        assert!(!cg.exists(), "{} is left", cg.display());
    }
}
