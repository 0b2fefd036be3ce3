//! Manifests from files, as people use kubectl: `apply -f` (create, then a three-way
//! strategic merge that really removes deleted list entries), `create -f` with strict
//! field validation, `replace -f` and `explain` — with kubectl 1.27 and 1.33.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, kubectl_run as k};

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

#[test]
fn scale_and_status_subresources_behave_as_upstream() {
    let server = SkuaServer::start();
    let file = server.dir.path().join("app.yaml");
    std::fs::write(&file, APP).unwrap();
    assert!(k(&server, "1.33", &["apply", "-f", file.to_str().unwrap()]).0);
    for (version, n) in [("1.27", "4"), ("1.33", "5")] {
        let (ok, out) = k(
            &server,
            version,
            &["scale", "deployment", "web", &format!("--replicas={n}")],
        );
        assert!(
            ok && out.contains("deployment.apps/web scaled"),
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
                "jsonpath={.spec.replicas}",
            ],
        );
        assert_eq!(out, n);
    }
    let base = "/apis/apps/v1/namespaces/default/deployments/web";
    let (code, body) = common::admin_request(&server, "GET", &format!("{base}/scale"), None);
    let scale: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        (scale["kind"].as_str(), scale["apiVersion"].as_str()),
        (Some("Scale"), Some("autoscaling/v1"))
    );
    assert_eq!(
        (
            scale["spec"]["replicas"].as_i64(),
            scale["status"]["selector"].as_str()
        ),
        (Some(5), Some("app=web"))
    );
    let (code, _) = common::admin_request(
        &server,
        "PUT",
        &format!("{base}/scale"),
        Some(
            r#"{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"web","resourceVersion":"1"},"spec":{"replicas":2}}"#,
        ),
    );
    assert_eq!(code, 409, "a stale Scale is refused");

    // status is written through /status only; spec changes there are ignored. (An
    // autoscaler: no controller of skua writes its status, unlike a deployment's.)
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "autoscale",
            "deployment",
            "web",
            "--min=2",
            "--max=5",
            "--cpu-percent=60",
        ],
    );
    assert!(ok, "{out}");
    let hpa = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web";
    let status_patch =
        r#"{"status":{"currentReplicas":3,"desiredReplicas":3},"spec":{"maxReplicas":99}}"#;
    let (code, body) = common::admin_request_as(
        &server,
        "PATCH",
        &format!("{hpa}/status"),
        "application/merge-patch+json",
        Some(status_patch),
    );
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            h["status"]["currentReplicas"].as_i64(),
            h["spec"]["maxReplicas"].as_i64()
        ),
        (Some(3), Some(5))
    );
    // ...and a main-resource write cannot change status
    let (ok, _) = k(
        &server,
        "1.33",
        &[
            "patch",
            "hpa",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"currentReplicas":0}}"#,
        ],
    );
    assert!(ok);
    let (_, out) = k(
        &server,
        "1.33",
        &[
            "get",
            "hpa",
            "web",
            "-o",
            "jsonpath={.status.currentReplicas}",
        ],
    );
    assert_eq!(out, "3");
    let (_, out) = k(&server, "1.33", &["get", "hpa", "web"]);
    assert!(
        out.lines().nth(1).unwrap().split_whitespace().nth(6) == Some("3"),
        "REPLICAS: {out}"
    );
}

#[test]
fn created_objects_carry_upstream_defaults() {
    let server = SkuaServer::start();
    let file = server.dir.path().join("objs.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec:\n  containers: [{name: c, image: busybox, ports: [{containerPort: 80}]}]\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: s1}\nspec:\n  type: NodePort\n  ports: [{port: 80}]\n---\n\
apiVersion: batch/v1\nkind: Job\nmetadata: {name: j1}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox:1.36}]\n",
    )
    .unwrap();
    let (ok, out) = k(&server, "1.33", &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    let get = |what: &str| -> serde_json::Value {
        let (_, out) = k(&server, "1.33", &["get", what, "-o", "json"]);
        serde_json::from_str(&out).unwrap()
    };
    let pod = get("pod/p1");
    let spec = &pod["spec"];
    assert_eq!(
        (
            spec["restartPolicy"].as_str(),
            spec["dnsPolicy"].as_str(),
            spec["schedulerName"].as_str()
        ),
        (
            Some("Always"),
            Some("ClusterFirst"),
            Some("default-scheduler")
        )
    );
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(
        spec["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(
        (
            pod["status"]["phase"].as_str(),
            pod["status"]["qosClass"].as_str()
        ),
        (Some("Pending"), Some("BestEffort"))
    );
    let svc = get("service/s1");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    let job = get("job/j1");
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        "j1"
    );
    assert_eq!(
        (
            job["spec"]["backoffLimit"].as_i64(),
            job["spec"]["completions"].as_i64()
        ),
        (Some(6), Some(1))
    );
    // applying the same file again changes nothing (defaults cause no diff)
    let (ok, out) = k(&server, "1.33", &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok && out.matches("unchanged").count() == 3, "{out}");
}

#[test]
fn invalid_objects_are_refused_with_upstream_messages_and_not_stored() {
    let server = SkuaServer::start();
    let apply = |name: &str, text: &str| {
        let file = server.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        k(&server, "1.33", &["apply", "-f", file.to_str().unwrap()])
    };
    let (ok, out) = apply(
        "pod",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n",
    );
    assert!(
        !ok && out.contains("Pod \"p\" is invalid: spec.containers[0].image: Required value"),
        "{out}"
    );
    // a NetworkPolicy whose ipBlock is no CIDR (it would otherwise reach every node's
    // nftables) is refused with the field named
    let (ok, out) = apply(
        "netpol",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: not-a-cidr}}]\n    ports: [{protocol: ICMP}]\n",
    );
    assert!(
        !ok && out.contains("The NetworkPolicy \"np\" is invalid")
            && out.contains("spec.ingress[0].from[0].ipBlock.cidr: Invalid value: \"not-a-cidr\"")
            && out.contains("spec.ingress[0].ports[0].protocol: Unsupported value: \"ICMP\""),
        "{out}"
    );
    let (ok, _) = k(&server, "1.33", &["get", "networkpolicy", "np"]);
    assert!(!ok, "nothing stored");
    let (ok, out) = apply(
        "dep",
        &APP.replace(
            "    metadata: {labels: {app: web}}",
            "    metadata: {labels: {app: other}}",
        ),
    );
    assert!(
        !ok && out.contains("`selector` does not match template `labels`"),
        "{out}"
    );
    let (ok, out) = apply(
        "label",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: l\n  labels: {\"bad key!\": x}\n",
    );
    assert!(
        !ok && out.contains("metadata.labels: Invalid value: \"bad key!\""),
        "{out}"
    );
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n  annotations: {{a: \"{}\"}}\n",
        "x".repeat(300 * 1024)
    );
    let (ok, out) = apply("big", &big);
    assert!(
        !ok && out.contains("Too long: must have at most 262144 bytes"),
        "{out}"
    );
    let (_, out) = k(
        &server,
        "1.33",
        &["get", "pods,deployments,configmaps", "-o", "name"],
    );
    assert!(
        !out.contains("pod/p")
            && !out.contains("deployment")
            && !out.contains("configmap/l")
            && !out.contains("configmap/big"),
        "{out}"
    );
    // immutable fields
    assert!(apply("app", APP).0);
    let moved = APP
        .replace(
            "selector: {matchLabels: {app: web}}",
            "selector: {matchLabels: {app: web, v: \"2\"}}",
        )
        .replace(
            "    metadata: {labels: {app: web}}",
            "    metadata: {labels: {app: web, v: \"2\"}}",
        );
    let (ok, out) = apply("app2", &moved);
    assert!(
        !ok && out.contains("spec.selector: Invalid value") && out.contains("field is immutable"),
        "{out}"
    );
}

const SCENARIO: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: tomcat, labels: {app: tomcat}}
spec:
  replicas: 2
  selector: {matchLabels: {app: tomcat}}
  template:
    metadata: {labels: {app: tomcat}}
    spec:
      containers:
      - name: tomcat
        image: tomcat:9
        ports: [{containerPort: 8080}]
        env: [{name: DB_HOST, value: mysql}]
---
apiVersion: v1
kind: Service
metadata: {name: tomcat}
spec:
  type: NodePort
  selector: {app: tomcat}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: tomcat-config}
data: {level: info}
---
apiVersion: v1
kind: Secret
metadata: {name: db-password}
stringData: {password: s3cret}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: busybox, command: [sh, -c, 'echo migrate']}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: backup}
spec:
  schedule: '0 3 * * *'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: backup, image: busybox}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: tomcat}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: tomcat}
  minReplicas: 2
  maxReplicas: 5
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}}]
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: data}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/skua-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
";

fn header(out: &str) -> Vec<String> {
    out.lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn the_seed_scenario_applies_and_prints_with_old_and_new_kubectl() {
    for version in ["1.27", "1.33"] {
        let server = SkuaServer::start();
        let file = server.dir.path().join("scenario.yaml");
        std::fs::write(&file, SCENARIO).unwrap();
        let (ok, out) = k(&server, version, &["apply", "-f", file.to_str().unwrap()]);
        assert!(ok, "kubectl {version}: {out}");
        assert_eq!(
            out.matches(" created").count(),
            9,
            "kubectl {version}: {out}"
        );
        for (kind, columns) in [
            (
                "deployments",
                vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            ),
            (
                "services",
                vec![
                    "NAME",
                    "TYPE",
                    "CLUSTER-IP",
                    "EXTERNAL-IP",
                    "PORT(S)",
                    "AGE",
                ],
            ),
            ("configmaps", vec!["NAME", "DATA", "AGE"]),
            ("secrets", vec!["NAME", "TYPE", "DATA", "AGE"]),
            (
                "jobs",
                vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
            ),
            (
                "cronjobs",
                vec![
                    "NAME",
                    "SCHEDULE",
                    "TIMEZONE",
                    "SUSPEND",
                    "ACTIVE",
                    "LAST SCHEDULE",
                    "AGE",
                ],
            ),
            (
                "hpa",
                vec![
                    "NAME",
                    "REFERENCE",
                    "TARGETS",
                    "MINPODS",
                    "MAXPODS",
                    "REPLICAS",
                    "AGE",
                ],
            ),
            (
                "pv",
                vec![
                    "NAME",
                    "CAPACITY",
                    "ACCESS MODES",
                    "RECLAIM POLICY",
                    "STATUS",
                    "CLAIM",
                    "STORAGECLASS",
                    "VOLUMEATTRIBUTESCLASS",
                    "REASON",
                    "AGE",
                ],
            ),
            (
                "pvc",
                vec![
                    "NAME",
                    "STATUS",
                    "VOLUME",
                    "CAPACITY",
                    "ACCESS MODES",
                    "STORAGECLASS",
                    "VOLUMEATTRIBUTESCLASS",
                    "AGE",
                ],
            ),
        ] {
            let (ok, out) = k(&server, version, &["get", kind]);
            assert!(ok, "kubectl {version} get {kind}: {out}");
            assert_eq!(
                header(&out),
                columns,
                "kubectl {version} get {kind}:\n{out}"
            );
        }
        let (_, out) = k(&server, version, &["get", "service", "tomcat"]);
        assert!(out.contains("80:30080/TCP"), "{out}");
        let (_, out) = k(&server, version, &["get", "hpa", "tomcat"]);
        assert!(out.contains("Deployment/tomcat"), "{out}");
        // stringData is merged into data, as upstream does on every write
        let (_, out) = k(
            &server,
            version,
            &[
                "get",
                "secret",
                "db-password",
                "-o",
                "jsonpath={.data.password} {.stringData}",
            ],
        );
        assert_eq!(out.trim(), "czNjcmV0", "{out}");
        let (_, out) = k(&server, version, &["get", "secret", "db-password"]);
        assert_eq!(
            out.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()[..3],
            ["db-password", "Opaque", "1"]
        );
        let (ok, out) = k(
            &server,
            version,
            &[
                "get",
                "deployment",
                "tomcat",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].env[0].value}",
            ],
        );
        assert!(ok && out == "mysql", "{out}");
        let (ok, out) = k(&server, version, &["delete", "-f", file.to_str().unwrap()]);
        assert!(
            ok && out.matches(" deleted").count() == 9,
            "kubectl {version}: {out}"
        );
    }
}
