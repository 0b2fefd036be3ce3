//! A node credential is worth one node (upstream's Node authorizer and
//! NodeRestriction): the attacks a stolen kubelet certificate — or the join token,
//! which buys one — would try, each refused as upstream refuses it.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, admin_request, eventually, kubectl, kubectl_run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What an attacker holding the join token does: asks the server for a node
/// certificate under a new name, and writes a kubeconfig with it.
fn node_kubeconfig(server: &SkuaServer, name: &str, cert: &str) -> PathBuf {
    let data = server.dir.path().join("data/server");
    let token = std::fs::read_to_string(data.join("node-token")).unwrap();
    let secret = token.trim().rsplit_once(':').unwrap().1.to_string();
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(server.server_ca())
        .args(["-u", &format!("node:{secret}")])
        .args(["-H", &format!("Skua-Node-Name: {name}")])
        .args(["-H", &format!("Skua-Node-Password: pw-{name}")])
        .arg(format!(
            "https://127.0.0.1:{}/v1-skua/{cert}.crt",
            server.port
        ))
        .output()
        .unwrap();
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{pem}");
    let split = pem.find("-----BEGIN PRIVATE KEY-----").unwrap();
    let (crt, key) = pem.split_at(split);
    let dir = server.dir.path();
    let (crt_file, key_file) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&crt_file, crt).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let kubeconfig = dir.join(format!("{name}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        server.port,
        server.server_ca().display(),
        crt_file.display(),
        key_file.display()
    );
    std::fs::write(&kubeconfig, text).unwrap();
    kubeconfig
}

fn run(version: &str, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(kubectl(version))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn admin(server: &SkuaServer, args: &[&str]) -> String {
    let (ok, out) = kubectl_run(server, "1.33", args);
    assert!(ok, "kubectl {args:?}: {out}");
    out
}

fn apply(server: &SkuaServer, yaml: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    admin(server, &["apply", "-f", file.path().to_str().unwrap()]);
}

fn file(server: &SkuaServer, name: &str, text: &str) -> String {
    let path = server.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A pod bound to `node` that refers to a Secret, a ConfigMap and a claim, and runs
/// as `account`.
fn bound_pod(name: &str, node: &str, suffix: &str, account: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  serviceAccountName: {account}
  containers: [{{name: c, image: busybox, envFrom: [{{configMapRef: {{name: cm-{suffix}}}}}]}}]
  volumes:
  - {{name: s, secret: {{secretName: secret-{suffix}}}}}
  - {{name: d, persistentVolumeClaim: {{claimName: claim-{suffix}}}}}
"#
    )
}

#[test]
fn a_node_credential_is_worth_one_node() {
    let server = SkuaServer::start();
    let n1 = node_kubeconfig(&server, "n1", "client-kubelet");
    // the nodes exist first: the pod garbage collector deletes pods of missing nodes
    apply(
        &server,
        "apiVersion: v1\nkind: Node\nmetadata: {name: server}\n",
    );
    // registering: kubelet labels only
    let node_file = |labels: &str| {
        file(
            &server,
            "node.yaml",
            &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n1, labels: {{{labels}}}}}\n"),
        )
    };
    let (ok, out) = run(
        "1.33",
        &n1,
        &[
            "create",
            "-f",
            &node_file("node-role.kubernetes.io/control-plane: 'true'"),
        ],
    );
    assert!(
        !ok && out.contains(r#"node "n1" is not allowed to set the following labels: node-role.kubernetes.io/control-plane"#),
        "{out}"
    );
    let (ok, out) = run(
        "1.33",
        &n1,
        &["create", "-f", &node_file("kubernetes.io/hostname: n1")],
    );
    assert!(ok, "{out}");
    for suffix in ["1", "2"] {
        apply(
            &server,
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: secret-{suffix}, namespace: default}}\nstringData: {{k: v}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{suffix}, namespace: default}}\ndata: {{k: v}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-{suffix}, namespace: default}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: claim-{suffix}, namespace: default}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}, volumeName: pv-{suffix}}}\n---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: pv-{suffix}}}\nspec: {{capacity: {{storage: 1Gi}}, accessModes: [ReadWriteOnce], hostPath: {{path: /tmp/pv-{suffix}}}}}\n"
            ),
        );
    }
    apply(&server, &bound_pod("p1", "n1", "1", "sa-1"));
    apply(&server, &bound_pod("p2", "server", "2", "sa-2"));

    // 1. pods: no ordinary pod, none on another node (the road to the server's
    //    hostPath and cluster-admin); a mirror pod of its own is what upstream allows
    let attack = file(
        &server,
        "attack.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: grab, namespace: kube-system}\nspec:\n  nodeName: server\n  hostNetwork: true\n  containers: [{name: c, image: busybox, securityContext: {privileged: true}, volumeMounts: [{name: etc, mountPath: /host}]}]\n  volumes: [{name: etc, hostPath: {path: /etc/skua}}]\n",
    );
    for version in ["1.27", "1.33"] {
        let (ok, out) = run(version, &n1, &["create", "-f", &attack]);
        assert!(!ok);
        assert!(
            out.contains(r#"pods "grab" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "n1" can only create mirror pods"#),
            "{out}"
        );
    }
    let mirror = |node: &str, extra: &str| {
        file(
            &server,
            "mirror.yaml",
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: mirror-{node}, namespace: default, annotations: {{kubernetes.io/config.mirror: x}}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox}}]\n{extra}"
            ),
        )
    };
    let (ok, out) = run("1.33", &n1, &["create", "-f", &mirror("server", "")]);
    assert!(
        !ok && out.contains(r#"node "n1" can only create pods with spec.nodeName set to itself"#),
        "{out}"
    );
    let (ok, out) = run(
        "1.33",
        &n1,
        &[
            "create",
            "-f",
            &mirror(
                "n1",
                "  volumes: [{name: s, secret: {secretName: secret-2}}]\n",
            ),
        ],
    );
    assert!(
        !ok && out.contains(r#"node "n1" can not create pods that reference secrets"#),
        "{out}"
    );
    let (ok, out) = run("1.33", &n1, &["create", "-f", &mirror("n1", "")]);
    assert!(ok, "its own mirror pod: {out}");

    // delete, evict and write status only of its own pods
    let (ok, out) = run("1.27", &n1, &["delete", "pod", "p2", "--wait=false"]);
    assert!(
        !ok && out.contains(r#"node "n1" can only delete pods with spec.nodeName set to itself"#),
        "{out}"
    );
    let eviction = file(
        &server,
        "eviction.json",
        r#"{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p2", "namespace": "default"}}"#,
    );
    let (ok, out) = run(
        "1.33",
        &n1,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/p2/eviction",
            "-f",
            &eviction,
        ],
    );
    assert!(
        !ok && out.contains("can only evict pods with spec.nodeName set to itself"),
        "{out}"
    );
    for (pod, allowed) in [("p2", false), ("p1", true)] {
        let (ok, out) = run(
            "1.33",
            &n1,
            &[
                "patch",
                "pod",
                pod,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status": {"message": "mine"}}"#,
            ],
        );
        assert_eq!(ok, allowed, "{pod}: {out}");
        if !allowed {
            assert!(
                out.contains(
                    "can only update pod status for pods with spec.nodeName set to itself"
                ),
                "{out}"
            );
        }
    }
    // list and watch only with spec.nodeName=<itself>
    let (ok, out) = run("1.33", &n1, &["get", "pods", "-A"]);
    assert!(
        !ok && out.contains(r#"User "system:node:n1" cannot list resource "pods""#),
        "{out}"
    );
    let (ok, out) = run(
        "1.27",
        &n1,
        &["get", "pods", "-A", "--field-selector", "spec.nodeName=n1"],
    );
    assert!(ok && out.contains("p1") && !out.contains("p2"), "{out}");

    // 2. what its pods refer to, and nothing else (the graph)
    for (kind, mine, theirs) in [
        ("secret", "secret-1", "secret-2"),
        ("configmap", "cm-1", "cm-2"),
        ("serviceaccount", "sa-1", "sa-2"),
        ("persistentvolumeclaim", "claim-1", "claim-2"),
        ("persistentvolume", "pv-1", "pv-2"),
    ] {
        let (ok, out) = run("1.33", &n1, &["get", kind, mine]);
        assert!(ok, "{kind} {mine}: {out}");
        let (ok, out) = run("1.33", &n1, &["get", kind, theirs]);
        assert!(
            !ok && out.contains("no relationship found between node 'n1' and this object"),
            "{kind} {theirs}: {out}"
        );
    }
    // the moment a pod is bound, its node may read what it needs
    apply(&server, &bound_pod("p3", "n1", "2", "sa-2"));
    let (ok, out) = run("1.33", &n1, &["get", "secret", "secret-2"]);
    assert!(ok, "{out}");

    // tokens: only for its pods' accounts, bound to such a pod
    let uid = |pod: &str| {
        admin(
            &server,
            &["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"],
        )
    };
    let (ok, out) = run("1.33", &n1, &["create", "token", "sa-1"]);
    assert!(
        !ok && out.contains(r#"node "n1" requested token not bound to a pod"#),
        "{out}"
    );
    let (ok, out) = run(
        "1.33",
        &n1,
        &[
            "create",
            "token",
            "sa-2",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p2",
            "--bound-object-uid",
            &uid("p2"),
        ],
    );
    assert!(
        !ok && out.contains("requested token bound to a pod scheduled on a different node"),
        "{out}"
    );
    let (ok, token) = run(
        "1.33",
        &n1,
        &[
            "create",
            "token",
            "sa-1",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p1",
            "--bound-object-uid",
            &uid("p1"),
        ],
    );
    assert!(ok, "{token}");
    let token = token.trim().to_string();
    let whoami = || {
        let out = Command::new(kubectl("1.33"))
            .args(["auth", "whoami", "--token", &token])
            .arg(format!("--server=https://127.0.0.1:{}", server.port))
            .arg(format!(
                "--certificate-authority={}",
                server.server_ca().display()
            ))
            .env("KUBECONFIG", "/dev/null")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = whoami();
    assert!(
        ok && out.contains("system:serviceaccount:default:sa-1"),
        "{out}"
    );

    // its own pods it may delete; then the pod's token and the pod's objects are gone
    let (ok, out) = run(
        "1.33",
        &n1,
        &["delete", "pod", "p1", "--grace-period=0", "--force"],
    );
    assert!(ok, "{out}");
    eventually(20, "p1 is gone", || {
        let (code, _) = admin_request(&server, "GET", "/api/v1/namespaces/default/pods/p1", None);
        (code == 404).then_some(())
    });
    let (ok, out) = whoami();
    assert!(
        !ok && out.contains("Unauthorized"),
        "a dead pod's token: {out}"
    );
    let (ok, out) = run("1.33", &n1, &["get", "secret", "secret-1"]);
    assert!(
        !ok && out.contains("no relationship found"),
        "once p1 is gone: {out}"
    );

    // 3. its own Node: kubelet labels only, no taint changes, a pod range kept
    //    (it registered itself at the start)
    for (args, says) in [
        (
            vec![
                "label",
                "node",
                "n1",
                "node-role.kubernetes.io/control-plane=true",
            ],
            "is not allowed to modify labels: node-role.kubernetes.io/control-plane",
        ),
        (
            vec![
                "label",
                "node",
                "n1",
                "node-restriction.kubernetes.io/trusted=yes",
            ],
            "is not allowed to modify labels: node-restriction.kubernetes.io/trusted",
        ),
        (
            vec!["taint", "node", "n1", "dedicated=x:NoSchedule"],
            r#"node "n1" is not allowed to modify taints"#,
        ),
    ] {
        let (ok, out) = run("1.27", &n1, &args);
        assert!(!ok && out.contains(says), "{args:?}: {out}");
    }
    let (ok, out) = run("1.33", &n1, &["label", "node", "n1", "example.com/rack=r7"]);
    assert!(ok, "{out}");
    eventually(20, "n1 gets a pod range", || {
        let (_, out) = kubectl_run(
            &server,
            "1.33",
            &["get", "node", "n1", "-o", "jsonpath={.spec.podCIDR}"],
        );
        (!out.trim().is_empty()).then_some(())
    });
    for who in [&n1, &server.kubeconfig] {
        let (ok, out) = run(
            "1.33",
            who,
            &[
                "patch",
                "node",
                "n1",
                "--type=merge",
                "-p",
                r#"{"spec": {"podCIDR": "10.42.200.0/24", "podCIDRs": ["10.42.200.0/24"]}}"#,
            ],
        );
        assert!(
            !ok && out.contains("node updates may not change podCIDR except from \"\" to valid"),
            "{out}"
        );
    }

    // 4. the network-policy identity reads pods and namespaces, and nothing secret;
    //    the node may not list namespaces at all
    let controller = node_kubeconfig(&server, "ignored", "client-skua-controller");
    let (ok, out) = run("1.33", &controller, &["auth", "whoami"]);
    assert!(ok && out.contains("system:skua-controller"), "{out}");
    let (ok, out) = run("1.33", &controller, &["get", "pods", "-A"]);
    assert!(ok && out.contains("p2"), "{out}");
    let (ok, _) = run("1.33", &controller, &["get", "secret", "secret-2"]);
    assert!(!ok);
    let (ok, _) = run("1.33", &controller, &["delete", "pod", "p2"]);
    assert!(!ok);
    let (ok, out) = run("1.33", &n1, &["get", "namespaces"]);
    assert!(!ok, "{out}");
}

#[test]
fn token_lifetimes_are_bounded() {
    let server = SkuaServer::start_with_config("service-account-max-token-expiration: 2h\n");
    apply(
        &server,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: bot, namespace: default}\n",
    );
    // more than 2^32 s: invalid, with the field named
    let (code, body) = admin_request(
        &server,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/bot/token",
        Some(
            r#"{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 4294967297}}"#,
        ),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("spec.expirationSeconds")
            && body.contains("may not specify a duration larger than 2^32 seconds"),
        "{body}"
    );
    // a 100-year token is cut to the server's maximum
    let (code, body) = admin_request(
        &server,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/bot/token",
        Some(
            r#"{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3153600000}}"#,
        ),
    );
    assert_eq!(code, 201, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["spec"]["expirationSeconds"], 7200, "{body}");
    // a binding to a pod that is not there, or to another account's pod, is refused
    let (code, body) = admin_request(
        &server,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/bot/token",
        Some(
            r#"{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "nope"}}}"#,
        ),
    );
    assert_eq!(code, 404, "{body}");
}
