//! RBAC seen by the clients people run: the Python client and kube-rs with a
//! ServiceAccount token, a Helm chart that brings its own ServiceAccount, Role and
//! RoleBinding, and a pod in the cluster running a static kubectl with its mounted
//! token. Each gets exactly what its bindings grant.
// test helpers: a failed unwrap is a failed test
#![allow(clippy::unwrap_used)]

mod common;

use common::{SkuaServer, kubectl_run, token_kubeconfig};

/// A namespace `team` with ServiceAccount `reader`, allowed to read ConfigMaps there
/// and nothing else; its token's kubeconfig.
fn reader(server: &SkuaServer) -> std::path::PathBuf {
    let admin = |args: &[&str]| {
        let (ok, out) = kubectl_run(server, "1.33", args);
        assert!(ok, "{args:?}: {out}");
        out
    };
    admin(&["create", "namespace", "team"]);
    admin(&["create", "serviceaccount", "reader", "-n", "team"]);
    admin(&[
        "create",
        "role",
        "cm-reader",
        "--verb=get,list,watch",
        "--resource=configmaps",
        "-n",
        "team",
    ]);
    admin(&[
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        "--serviceaccount=team:reader",
        "-n",
        "team",
    ]);
    admin(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=k=v",
        "-n",
        "team",
    ]);
    let token = admin(&["create", "token", "reader", "-n", "team"]);
    token_kubeconfig(server, "reader", token.trim())
}

const PYTHON: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
names = sorted(i.metadata.name for i in core.list_namespaced_config_map("team").items)
print("configmaps:", names)
for what, call in [("secrets", lambda: core.list_namespaced_secret("team")),
                   ("other", lambda: core.list_namespaced_config_map("default"))]:
    try:
        call()
        print(what, "allowed")
    except ApiException as e:
        print(what, e.status, e.reason)
"#;

#[test]
fn the_python_client_with_a_service_account_token_gets_what_its_role_grants() {
    let server = SkuaServer::start();
    let kc = reader(&server);
    let out = std::process::Command::new("python3")
        .args(["-c", PYTHON])
        .arg(&kc)
        .output()
        .expect("python3 (scripts/test.sh installs the kubernetes package)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("configmaps: ['kube-root-ca.crt', 'settings']"),
        "{stdout}"
    );
    assert!(stdout.contains("secrets 403 Forbidden"), "{stdout}");
    assert!(stdout.contains("other 403 Forbidden"), "{stdout}");
}

#[tokio::test]
async fn kube_rs_with_a_service_account_token_gets_what_its_role_grants() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::Api;
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let server = tokio::task::spawn_blocking(SkuaServer::start)
        .await
        .unwrap();
    let kc = reader(&server);
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kc).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let got = cms.get("settings").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "v");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");
    match secrets.list(&Default::default()).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403);
            assert_eq!(
                e.message,
                r#"secrets is forbidden: User "system:serviceaccount:team:reader" cannot list resource "secrets" in API group "" in the namespace "team""#
            );
        }
        other => panic!("secrets listed: {other:?}"),
    }
    let elsewhere: Api<ConfigMap> = Api::namespaced(client, "default");
    assert!(matches!(
        elsewhere.list(&Default::default()).await,
        Err(kube::Error::Api(e)) if e.code == 403
    ));
}

/// A chart as `helm create` writes it, plus a Role and RoleBinding for its
/// ServiceAccount: installed, its account has exactly its rights; uninstalled,
/// everything is gone.
#[test]
fn a_helm_chart_with_rbac_installs_grants_its_rights_and_uninstalls() {
    let server = SkuaServer::start();
    let home = tempfile::tempdir().unwrap();
    for major in [3, 4] {
        let helm = |args: &[&str]| common::helm_run(&server, major, home.path(), args);
        let chart = format!("rbac{major}");
        let (ok, out) = helm(&["create", &chart]);
        assert!(ok, "{out}");
        std::fs::write(
            home.path().join(&chart).join("templates/rbac.yaml"),
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ include "CHART.fullname" . }}-pods
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ include "CHART.fullname" . }}-pods
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "CHART.fullname" . }}-pods
subjects:
- kind: ServiceAccount
  name: {{ include "CHART.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
"#
            .replace("CHART", &chart),
        )
        .unwrap();
        let release = format!("r{major}");
        let (ok, out) = helm(&[
            "install",
            &release,
            &format!("./{chart}"),
            "--set",
            "image.repository=busybox,image.tag=stable",
        ]);
        assert!(ok, "helm v{major} install: {out}");
        let account = format!("system:serviceaccount:default:{release}-{chart}");
        let can = |verb: &str, what: &str| {
            kubectl_run(
                &server,
                "1.33",
                &["auth", "can-i", verb, what, "--as", &account],
            )
            .1
            .trim()
            .to_string()
        };
        common::eventually(10, "the chart's binding", || {
            (can("list", "pods") == "yes").then_some(())
        });
        assert_eq!(can("delete", "pods"), "no");
        assert_eq!(can("list", "secrets"), "no");
        let (ok, out) = helm(&["uninstall", &release]);
        assert!(ok, "helm v{major} uninstall: {out}");
        let (_, left) = kubectl_run(
            &server,
            "1.33",
            &["get", "role,rolebinding,serviceaccount", "-o", "name"],
        );
        assert!(!left.contains(&release), "helm v{major} left {left}");
        common::eventually(10, "the rights to go", || {
            (can("list", "pods") == "no").then_some(())
        });
    }
}

/// A pod whose busybox container runs the static kubectl (mounted from this
/// machine) with its mounted token and in-cluster configuration: allowed what its
/// RoleBinding grants, forbidden beyond it.
#[test]
fn a_pod_runs_kubectl_with_its_own_token_and_gets_exactly_its_rights() {
    let c = common::cluster::Cluster::start();
    let k = |args: &[&str]| {
        let (ok, out) = c.kubectl("1.33", args);
        assert!(ok, "{args:?}: {out}");
        out
    };
    k(&["create", "namespace", "team"]);
    k(&["create", "serviceaccount", "lister", "-n", "team"]);
    k(&[
        "create",
        "role",
        "pod-lister",
        "--verb=get,list",
        "--resource=pods",
        "-n",
        "team",
    ]);
    k(&[
        "create",
        "rolebinding",
        "pod-lister",
        "--role=pod-lister",
        "--serviceaccount=team:lister",
        "-n",
        "team",
    ]);
    let kubectl = common::kubectl("1.33");
    let pod = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "client", "namespace": "team"}},
 "spec": {{"serviceAccountName": "lister", "restartPolicy": "Never",
  "containers": [{{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
   "command": ["sh", "-c", "kubectl get pods -n team -o name; echo EXIT=$?; kubectl get secrets -n team; echo EXIT=$?; kubectl get pods -n default; echo EXIT=$?; sleep 3600"],
   "volumeMounts": [{{"name": "kubectl", "mountPath": "/usr/local/bin/kubectl", "readOnly": true}}]}}],
  "volumes": [{{"name": "kubectl", "hostPath": {{"path": "{}", "type": "File"}}}}]}}}}"#,
        kubectl.display()
    );
    let (ok, out) = c.kubectl_with_input("1.33", &["create", "-f", "-"], Some(&pod));
    assert!(ok, "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let logs = loop {
        let (_, out) = c.kubectl("1.33", &["logs", "client", "-n", "team"]);
        if out.matches("EXIT=").count() == 3 {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pod's kubectl did not finish: {out}\n{}",
            c.kubectl("1.33", &["describe", "pod", "client", "-n", "team"])
                .1
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines.contains(&"pod/client") && lines.contains(&"EXIT=0"),
        "{logs}"
    );
    assert!(
        logs.contains(r#"secrets is forbidden: User "system:serviceaccount:team:lister" cannot list resource "secrets" in API group "" in the namespace "team""#),
        "{logs}"
    );
    assert!(
        logs.contains(r#"pods is forbidden: User "system:serviceaccount:team:lister" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{logs}"
    );
    assert_eq!(logs.matches("EXIT=1").count(), 2, "{logs}");
}
