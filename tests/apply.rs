//! Manifests from files, as people use kubectl: `apply -f` (create, then a three-way
//! strategic merge that really removes deleted list entries), `create -f` with strict
//! field validation, `replace -f` and `explain` — with kubectl 1.27 and 1.33.

mod common;

use common::{SkuaServer, kubectl};
use std::process::Command;

const APP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1
        ports: [{containerPort: 80}]
      - name: side
        image: busybox
";

fn k(server: &SkuaServer, version: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(kubectl(version))
        .args(args)
        .env("KUBECONFIG", &server.kubeconfig)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn apply_create_replace_and_explain_with_old_and_new_kubectl() {
    for version in ["1.27", "1.33"] {
        let server = SkuaServer::start();
        let file = server.dir.path().join("app.yaml");
        std::fs::write(&file, APP).unwrap();
        let f = file.to_str().unwrap();
        let (ok, out) = k(&server, version, &["apply", "-f", f]);
        assert!(
            ok && out.contains("deployment.apps/web created"),
            "kubectl {version}: {out}"
        );
        // change the image, scale, and drop the side container
        let changed = APP
            .replace("nginx:1", "nginx:2")
            .replace("replicas: 2", "replicas: 3")
            .replace("      - name: side\n        image: busybox\n", "");
        std::fs::write(&file, changed).unwrap();
        let (ok, out) = k(&server, version, &["apply", "-f", f]);
        assert!(
            ok && out.contains("deployment.apps/web configured")
                && out.contains("configmap/settings unchanged"),
            "kubectl {version}: {out}"
        );
        let (_, out) = k(
            &server,
            version,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas} {.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].image} {.metadata.generation}",
            ],
        );
        assert_eq!(out, "3 web nginx:2 2", "kubectl {version}");
        let (ok, out) = k(&server, version, &["replace", "-f", f]);
        assert!(
            ok && out.contains("deployment.apps/web replaced"),
            "kubectl {version}: {out}"
        );

        // unknown fields are refused with the default --validate=strict
        let bad = server.dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndta:\n  x: y\n",
        )
        .unwrap();
        let (ok, out) = k(&server, version, &["create", "-f", bad.to_str().unwrap()]);
        assert!(
            !ok && out.contains("strict decoding error: unknown field \"dta\""),
            "kubectl {version}: {out}"
        );
        let (ok, _) = k(&server, version, &["get", "configmap", "bad"]);
        assert!(!ok, "the refused object was not stored");
        // ...and only warned about with --validate=warn
        let (ok, out) = k(
            &server,
            version,
            &["create", "--validate=warn", "-f", bad.to_str().unwrap()],
        );
        assert!(
            ok && out.contains("unknown field \"dta\""),
            "kubectl {version}: {out}"
        );

        let (ok, out) = k(&server, version, &["explain", "deployment.spec.replicas"]);
        assert!(
            ok && out.contains("replicas") && out.contains("<integer>"),
            "kubectl {version}: {out}"
        );
        let (ok, out) = k(&server, version, &["explain", "pod.spec.containers"]);
        assert!(
            ok && out.contains("<[]Container>"),
            "kubectl {version}: {out}"
        );
    }
}
