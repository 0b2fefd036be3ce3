//! A container may not reach its host: the attacks of CVE-2017-1002101/1002102 and
//! their kin, run with real containers on the agent's own containerd inside the
//! test's network namespace (needs root, containerd and runc; CI has them).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::cluster::Cluster;
use common::eventually;

const BUSYBOX: &str = "docker.io/library/busybox:latest";

fn waiting_reason(c: &Cluster, pod: &str) -> (String, String) {
    (
        c.pod_field(pod, "{.status.containerStatuses[0].state.waiting.reason}"),
        c.pod_field(pod, "{.status.containerStatuses[0].state.waiting.message}"),
    )
}

#[test]
fn volumes_subpaths_and_security_contexts_keep_containers_in_their_place() {
    let c = Cluster::start();
    // a directory of the host the attacks aim at
    let victim = c.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious"), "keep me").unwrap();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{key: first}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: attacker}}
spec:
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    securityContext: {{seccompProfile: {{type: RuntimeDefault}}}}
    command: ["sh", "-c", "ln -s {victim} /cfg/..x; echo link=$?; mv -T /cfg/..x /cfg/..data; echo mv=$?; touch /sec/x; echo touch=$?; grep -E ' /(cfg|sec) ' /proc/mounts; grep Seccomp: /proc/self/status; sleep 3600"]
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
    - {{name: sec, mountPath: /sec}}
  volumes:
  - {{name: cfg, configMap: {{name: cfg}}}}
  - {{name: sec, secret: {{secretName: sec}}}}
"#,
        victim = victim.display()
    ));
    c.wait_phase("attacker", "Running", 60);
    let logs = eventually(30, "the attacker's report", || {
        let (_, out) = c.kubectl("1.33", &["logs", "attacker"]);
        out.contains("Seccomp:").then_some(out)
    });
    // the API's data is mounted read-only, whatever the manifest says
    assert!(
        logs.contains("link=1") && logs.contains("mv=1") && logs.contains("touch=1"),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains(" /cfg ") && l.contains(" ro,")),
        "{logs}"
    );
    // the secret is on tmpfs, never on the node's disk; RuntimeDefault seccomp applies
    assert!(
        logs.lines()
            .any(|l| l.starts_with("tmpfs /sec ") && l.contains(" ro,")),
        "{logs}"
    );
    assert!(logs.contains("Seccomp:\t2"), "{logs}");

    // a `..data` link planted in the volume (as a container could when the volume was
    // writable) is never followed: the next refresh replaces it, the victim stays
    let uid = c.pod_field("attacker", "{.metadata.uid}");
    let vol = c.node_dir("n1").join(format!(
        "agent/kubelet/pods/{uid}/volumes/kubernetes.io~configmap/cfg"
    ));
    let data = vol.join("..data");
    std::fs::remove_file(&data).unwrap();
    std::os::unix::fs::symlink(&victim, &data).unwrap();
    std::os::unix::fs::symlink(&victim, vol.join("..ddd")).unwrap();
    let (ok, out) = c.kubectl(
        "1.33",
        &[
            "patch",
            "configmap",
            "cfg",
            "-p",
            r#"{"data":{"key":"second"}}"#,
        ],
    );
    assert!(ok, "{out}");
    eventually(60, "the new value in the volume", || {
        let (_, out) = c.kubectl("1.33", &["exec", "attacker", "--", "cat", "/cfg/key"]);
        (out.trim() == "second").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(12));
    assert_eq!(
        std::fs::read_to_string(victim.join("precious")).unwrap(),
        "keep me",
        "the host directory survives"
    );

    // subPath through a link a container planted: refused, host / never mounted
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: subpath}}
spec:
  initContainers:
  - name: plant
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "ln -s / /data/x && ln -s ../../.. /data/up"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "ls /host; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /host, subPath: x}}]
  volumes:
  - {{name: data, emptyDir: {{}}}}
"#
    ));
    let (reason, message) = eventually(60, "the subPath refusal", || {
        let got = waiting_reason(&c, "subpath");
        (got.0 == "CreateContainerConfigError").then_some(got)
    });
    assert!(message.contains("leaves volume"), "{reason}: {message}");

    // runAsNonRoot with an image that runs as root: refused before it runs; with a
    // runAsUser it runs
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: nonroot}}
spec:
  securityContext: {{runAsNonRoot: true}}
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot-uid}}
spec:
  securityContext: {{runAsNonRoot: true, runAsUser: 1000}}
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sh", "-c", "id -u; sleep 3600"]}}
"#
    ));
    let (_, message) = eventually(60, "the runAsNonRoot refusal", || {
        let got = waiting_reason(&c, "nonroot");
        (got.0 == "CreateContainerConfigError").then_some(got)
    });
    assert!(
        message.contains("container has runAsNonRoot and image will run as root"),
        "{message}"
    );
    c.wait_phase("nonroot-uid", "Running", 60);
    let (_, out) = c.kubectl("1.33", &["logs", "nonroot-uid"]);
    assert_eq!(out.trim(), "1000");

    // deleting the pods unmounts their tmpfs and subPath binds before anything is
    // removed; the victim is still whole
    let (ok, out) = c.kubectl(
        "1.33",
        &[
            "delete",
            "pod",
            "attacker",
            "subpath",
            "nonroot",
            "nonroot-uid",
            "--grace-period=1",
            "--timeout=90s",
        ],
    );
    assert!(ok, "{out}");
    eventually(60, "the pod directories are gone", || {
        let pods = c.node_dir("n1").join("agent/kubelet/pods");
        std::fs::read_dir(&pods)
            .map(|d| d.count() == 0)
            .unwrap_or(true)
            .then_some(())
    });
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&uid), "no mount of the pod is left");
    assert_eq!(
        std::fs::read_to_string(victim.join("precious")).unwrap(),
        "keep me"
    );
}
