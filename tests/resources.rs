//! Stored resources through the real API: CRUD, conflicts, validation errors, lists
//! with selectors and paging, watches — with kubectl 1.27 and raw HTTPS (JSON).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, admin_request, kubectl, kubectl_run as k};
use serde_json::{Value, json};
use std::process::Command;

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn kubectl_creates_gets_and_deletes_namespaces_and_configmaps() {
    let server = SkuaServer::start();
    let (ok, out) = k(&server, "1.27", &["get", "ns", "-o", "name"]);
    assert!(ok, "{out}");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(out.contains(&format!("namespace/{ns}")), "{out}");
    }
    let (ok, out) = k(&server, "1.27", &["create", "namespace", "demo"]);
    assert!(ok && out.contains("namespace/demo created"), "{out}");
    let (ok, out) = k(
        &server,
        "1.27",
        &[
            "-n",
            "demo",
            "create",
            "configmap",
            "web",
            "--from-literal=a=1",
        ],
    );
    assert!(ok, "{out}");
    for version in ["1.27", "1.33"] {
        let (ok, out) = k(
            &server,
            version,
            &["-n", "demo", "get", "configmap", "web", "-o", "json"],
        );
        assert!(ok, "{out}");
        let cm = parse(&out);
        assert_eq!(cm["data"]["a"], "1");
        assert_eq!(cm["metadata"]["namespace"], "demo");
        assert_eq!(cm["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert!(
            cm["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        assert!(
            cm["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 0
        );
        let (ok, out) = k(
            &server,
            version,
            &[
                "-n",
                "demo",
                "get",
                "configmap",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
        );
        // every namespace also holds the published kube-root-ca.crt
        let ours: Vec<&str> = out
            .split_whitespace()
            .filter(|n| *n != "kube-root-ca.crt")
            .collect();
        assert!(ok && ours == ["web"], "{out}");
    }
    let (ok, out) = k(
        &server,
        "1.27",
        &["-n", "demo", "create", "configmap", "web"],
    );
    assert!(
        !ok && out.contains("configmaps \"web\" already exists"),
        "{out}"
    );
    let (ok, out) = k(&server, "1.27", &["-n", "nope", "create", "configmap", "x"]);
    assert!(
        !ok && out.contains("namespaces \"nope\" not found"),
        "{out}"
    );
    // deleting the namespace takes its content along
    let (ok, out) = k(&server, "1.33", &["delete", "namespace", "demo"]);
    assert!(ok, "{out}");
    let (_, out) = k(&server, "1.33", &["get", "configmaps", "-A", "-o", "name"]);
    assert!(!out.contains("web"), "{out}");
    let (ok, out) = k(&server, "1.33", &["get", "namespace", "demo"]);
    assert!(
        !ok && out.contains("namespaces \"demo\" not found"),
        "{out}"
    );
}

#[test]
fn writes_are_validated_and_conflicts_reported_as_upstream() {
    let server = SkuaServer::start();
    let base = "/api/v1/namespaces/default/configmaps";
    let (code, body) = admin_request(
        &server,
        "POST",
        base,
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"x":"1"}}"#),
    );
    assert_eq!(code, 201, "{body}");
    let rv = parse(&body)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // update with the current resourceVersion works, a stale one conflicts
    let put = |rv: &str, x: &str| {
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","resourceVersion": rv},"data":{"x": x}}).to_string()
    };
    let (code, body) = admin_request(&server, "PUT", &format!("{base}/a"), Some(&put(&rv, "2")));
    assert_eq!(code, 200, "{body}");
    let (code, body) = admin_request(&server, "PUT", &format!("{base}/a"), Some(&put(&rv, "3")));
    assert_eq!(code, 409, "{body}");
    let status = parse(&body);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let (_, body) = admin_request(&server, "GET", &format!("{base}/a"), None);
    assert_eq!(
        parse(&body)["data"]["x"],
        "2",
        "the stale write changed nothing"
    );

    // bad names, garbage, oversize bodies, wrong kinds
    let (code, body) = admin_request(
        &server,
        "POST",
        base,
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#),
    );
    assert_eq!(code, 422, "{body}");
    let status = parse(&body);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
    assert!(status["message"].as_str().unwrap().starts_with(
        "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
    ));
    let (code, _) = admin_request(&server, "POST", base, Some("{not json"));
    assert_eq!(code, 400);
    let (code, _) = admin_request(
        &server,
        "POST",
        base,
        Some(r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#),
    );
    assert_eq!(code, 400);
    let big = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"x":"y".repeat(4 * 1024 * 1024)}}).to_string();
    let file = server.dir.path().join("big.json");
    std::fs::write(&file, big).unwrap();
    let (code, body) = admin_request(&server, "POST", base, Some(&format!("@{}", file.display())));
    assert_eq!(code, 413, "{body}");
    // nothing of the above was stored
    let (_, body) = admin_request(&server, "GET", base, None);
    let names: Vec<Value> = parse(&body)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].clone())
        .filter(|n| n != "kube-root-ca.crt")
        .collect();
    assert_eq!(names, vec![json!("a")]);
    // delete with a stale uid precondition conflicts; then deletes
    let (code, _) = admin_request(
        &server,
        "DELETE",
        &format!("{base}/a"),
        Some(r#"{"preconditions":{"uid":"nope"}}"#),
    );
    assert_eq!(code, 409);
    let (code, body) = admin_request(&server, "DELETE", &format!("{base}/a"), None);
    assert_eq!(
        (code, parse(&body)["status"].as_str()),
        (200, Some("Success"))
    );
    let (code, body) = admin_request(&server, "GET", &format!("{base}/a"), None);
    assert_eq!(code, 404);
    assert_eq!(parse(&body)["message"], "configmaps \"a\" not found");
}

#[test]
fn lists_page_and_select_and_watches_stream_changes() {
    let server = SkuaServer::start();
    let base = "/api/v1/namespaces/default/secrets";
    for i in 0..5 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        let obj = json!({"apiVersion":"v1","kind":"Secret","metadata":{"name": format!("cm{i}"), "labels": {"tier": tier}}});
        assert_eq!(
            admin_request(&server, "POST", base, Some(&obj.to_string())).0,
            201
        );
    }
    // pages of two, one snapshot
    let (_, body) = admin_request(&server, "GET", &format!("{base}?limit=2"), None);
    let page = parse(&body);
    assert_eq!(page["kind"], "SecretList");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["metadata"]["remainingItemCount"], 3);
    let mut names: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut token = page["metadata"]["continue"].as_str().map(str::to_string);
    // a write between pages does not show up
    admin_request(
        &server,
        "POST",
        base,
        Some(r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"cm9"}}"#),
    );
    while let Some(t) = token {
        let (_, body) = admin_request(
            &server,
            "GET",
            &format!("{base}?limit=2&continue={t}"),
            None,
        );
        let page = parse(&body);
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        token = page["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(names, ["cm0", "cm1", "cm2", "cm3", "cm4"]);
    // selectors
    let (_, body) = admin_request(
        &server,
        "GET",
        &format!("{base}?labelSelector=tier%3Deven"),
        None,
    );
    assert_eq!(parse(&body)["items"].as_array().unwrap().len(), 3);
    let (_, body) = admin_request(
        &server,
        "GET",
        &format!("{base}?labelSelector=tier+in+%28odd%29&fieldSelector=metadata.name%3Dcm1"),
        None,
    );
    assert_eq!(parse(&body)["items"].as_array().unwrap().len(), 1);
    let (code, body) = admin_request(
        &server,
        "GET",
        &format!("{base}?fieldSelector=data.x%3D1"),
        None,
    );
    assert_eq!(
        (code, parse(&body)["message"].as_str()),
        (400, Some("field label not supported: data.x"))
    );

    // watch from a revision: exactly the later changes, then the stream times out
    let (_, body) = admin_request(&server, "GET", base, None);
    let rv = parse(&body)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    admin_request(&server, "DELETE", &format!("{base}/cm0"), None);
    let cm1 = parse(&admin_request(&server, "GET", &format!("{base}/cm1"), None).1);
    let mut changed = cm1.clone();
    changed["data"] = json!({"k": "v"});
    admin_request(
        &server,
        "PUT",
        &format!("{base}/cm1"),
        Some(&changed.to_string()),
    );
    let (code, body) = admin_request(
        &server,
        "GET",
        &format!("{base}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        None,
    );
    assert_eq!(code, 200);
    let events: Vec<Value> = body.lines().map(parse).collect();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, [("DELETED", "cm0"), ("MODIFIED", "cm1")]);
    assert_eq!(events[1]["object"]["kind"], "Secret");
    // without a revision: the current state as ADDED, filtered by the selector
    let (_, body) = admin_request(
        &server,
        "GET",
        &format!("{base}?watch=1&labelSelector=tier%3Dodd&timeoutSeconds=1"),
        None,
    );
    let added: Vec<String> = body
        .lines()
        .map(parse)
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(added, ["ADDED cm1", "ADDED cm3"]);
    // bookmarks end the initial events when asked
    let (_, body) = admin_request(
        &server,
        "GET",
        &format!(
            "{base}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
        ),
        None,
    );
    let last = parse(body.lines().last().unwrap());
    assert_eq!(last["type"], "BOOKMARK");
    assert_eq!(
        last["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[test]
fn kubectl_label_annotate_and_patch_all_three_types() {
    let server = SkuaServer::start();
    let (ok, out) = k(
        &server,
        "1.27",
        &["create", "configmap", "web", "--from-literal=a=1"],
    );
    assert!(ok, "{out}");
    for version in ["1.27", "1.33"] {
        let (ok, out) = k(
            &server,
            version,
            &[
                "label",
                "configmap",
                "web",
                &format!("tier=t{version}"),
                "--overwrite",
            ],
        );
        assert!(ok, "kubectl {version} label: {out}");
        let (ok, out) = k(
            &server,
            version,
            &[
                "annotate",
                "configmap",
                "web",
                &format!("note=n{version}"),
                "--overwrite",
            ],
        );
        assert!(ok, "kubectl {version} annotate: {out}");
    }
    for (kind, patch) in [
        ("json", r#"[{"op":"add","path":"/data/b","value":"2"}]"#),
        ("merge", r#"{"data":{"a":null}}"#),
        (
            "strategic",
            r#"{"data":{"c":"3"},"metadata":{"labels":{"extra":"yes"}}}"#,
        ),
    ] {
        let (ok, out) = k(
            &server,
            "1.33",
            &["patch", "configmap", "web", "--type", kind, "-p", patch],
        );
        assert!(ok, "patch --type {kind}: {out}");
    }
    let (_, out) = k(&server, "1.33", &["get", "configmap", "web", "-o", "json"]);
    let cm = parse(&out);
    assert_eq!(cm["data"], json!({"b": "2", "c": "3"}));
    assert_eq!(
        cm["metadata"]["labels"],
        json!({"tier": "t1.33", "extra": "yes"})
    );
    assert_eq!(cm["metadata"]["annotations"]["note"], "n1.33");

    // a failing test operation changes nothing; unknown patch types are 415
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "patch",
            "configmap",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/data/b","value":"x"},{"op":"remove","path":"/data/b"}]"#,
        ],
    );
    assert!(!ok && out.contains("test failed"), "{out}");
    let (_, out) = k(
        &server,
        "1.33",
        &["get", "configmap", "web", "-o", "jsonpath={.data.b}"],
    );
    assert_eq!(out, "2");
    let path = "/api/v1/namespaces/default/configmaps/web";
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PATCH",
            "--cacert",
        ])
        .arg(server.dir.path().join("data/server/tls/server-ca.crt"))
        .arg("--cert")
        .arg(server.dir.path().join("data/server/tls/client-admin.crt"))
        .arg("--key")
        .arg(server.dir.path().join("data/server/tls/client-admin.key"))
        .args(["-H", "Content-Type: text/plain", "--data", "x"])
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "415");
    let ops: Vec<Value> = (0..10_001)
        .map(|_| json!({"op": "test", "path": "/data/b", "value": "2"}))
        .collect();
    let file = server.dir.path().join("ops.json");
    std::fs::write(&file, Value::Array(ops).to_string()).unwrap();
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "patch",
            "configmap",
            "web",
            "--type",
            "json",
            "--patch-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && out.contains("maximum operations in a JSON patch is 10000"),
        "{out}"
    );
}

#[test]
fn kubectl_get_prints_upstream_columns_from_server_side_tables() {
    let server = SkuaServer::start();
    assert!(
        k(
            &server,
            "1.27",
            &[
                "create",
                "configmap",
                "web",
                "--from-literal=a=1",
                "--from-literal=b=2"
            ]
        )
        .0
    );
    assert!(
        k(
            &server,
            "1.27",
            &["create", "secret", "generic", "s1", "--from-literal=x=y"]
        )
        .0
    );
    for version in ["1.27", "1.33"] {
        let (ok, out) = k(&server, version, &["get", "namespaces"]);
        assert!(ok, "{out}");
        let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "STATUS", "AGE"], "kubectl {version}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("kube-system") && l.contains("Active")),
            "{out}"
        );
        let (_, out) = k(&server, version, &["get", "configmap", "web"]);
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["NAME", "DATA", "AGE"]);
        assert_eq!(rows[1][..2], ["web", "2"]);
        let (_, out) = k(&server, version, &["get", "secrets"]);
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["NAME", "TYPE", "DATA", "AGE"]);
        assert_eq!(rows[1][..3], ["s1", "Opaque", "1"]);
    }
    // the Table itself, as kubectl asks for it
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(server.dir.path().join("data/server/tls/server-ca.crt"))
        .arg("--cert")
        .arg(server.dir.path().join("data/server/tls/client-admin.crt"))
        .arg("--key")
        .arg(server.dir.path().join("data/server/tls/client-admin.key"))
        .args([
            "-H",
            "Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        ])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps",
            server.port
        ))
        .output()
        .unwrap();
    let table = parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert!(
        table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["object"]["metadata"]["name"] == "web"),
        "{table}"
    );
}

#[test]
fn finalizers_propagation_and_graceful_pod_deletion() {
    let server = SkuaServer::start();
    let cms = "/api/v1/namespaces/default/configmaps";
    // an object with a finalizer stays, marked for deletion, until the finalizer goes
    let (code, _) = admin_request(
        &server,
        "POST",
        cms,
        Some(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/hold"]}}"#,
        ),
    );
    assert_eq!(code, 201);
    let (ok, out) = k(
        &server,
        "1.33",
        &["delete", "configmap", "held", "--wait=false"],
    );
    assert!(ok, "{out}");
    let (code, body) = admin_request(&server, "GET", &format!("{cms}/held"), None);
    assert_eq!(code, 200);
    let held = parse(&body);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert_eq!(held["metadata"]["deletionGracePeriodSeconds"], 0);
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "patch",
            "configmap",
            "held",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        admin_request(&server, "GET", &format!("{cms}/held"), None).0,
        404,
        "removing the last finalizer finishes the deletion"
    );

    // propagationPolicy is recorded as upstream's finalizers
    admin_request(
        &server,
        "POST",
        cms,
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fg"}}"#),
    );
    let (code, body) = admin_request(
        &server,
        "DELETE",
        &format!("{cms}/fg"),
        Some(r#"{"propagationPolicy":"Foreground"}"#),
    );
    assert_eq!(code, 200);
    assert_eq!(
        parse(&body)["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    let (code, _) = admin_request(
        &server,
        "DELETE",
        &format!("{cms}/fg"),
        Some(r#"{"propagationPolicy":"Sideways"}"#),
    );
    assert_eq!(code, 400);

    // a pod on a node is deleted gracefully; --grace-period=0 --force removes it at once
    let pods = "/api/v1/namespaces/default/pods";
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox"}]}}"#;
    assert_eq!(admin_request(&server, "POST", pods, Some(pod)).0, 201);
    let (code, body) = admin_request(&server, "DELETE", &format!("{pods}/p"), None);
    assert_eq!(code, 200);
    assert_eq!(parse(&body)["metadata"]["deletionGracePeriodSeconds"], 30);
    let (ok, out) = k(
        &server,
        "1.33",
        &["delete", "pod", "p", "--grace-period=0", "--force"],
    );
    assert!(ok, "{out}");
    assert_eq!(
        admin_request(&server, "GET", &format!("{pods}/p"), None).0,
        404
    );
    // an unscheduled pod goes at once
    let unscheduled = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"q"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    admin_request(&server, "POST", pods, Some(unscheduled));
    let (code, body) = admin_request(&server, "DELETE", &format!("{pods}/q"), None);
    // upstream answers a pod's deletion with the pod (ReturnDeletedObject), a
    // ConfigMap's with a Status
    let deleted = parse(&body);
    assert_eq!(
        (
            code,
            deleted["kind"].as_str(),
            deleted["metadata"]["name"].as_str()
        ),
        (200, Some("Pod"), Some("q"))
    );
    assert_eq!(
        admin_request(&server, "GET", &format!("{pods}/q"), None).0,
        404
    );
    // --cascade=orphan on a pod nothing depends on: the collector removes the orphan
    // finalizer and kubectl's wait ends (it used to wait for ever)
    let lonely = unscheduled.replace(r#""name":"q""#, r#""name":"lonely""#);
    assert_eq!(admin_request(&server, "POST", pods, Some(&lonely)).0, 201);
    let (ok, out) = k(
        &server,
        "1.27",
        &[
            "delete",
            "pod",
            "lonely",
            "--cascade=orphan",
            "--timeout=30s",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        admin_request(&server, "GET", &format!("{pods}/lonely"), None).0,
        404
    );
}

#[test]
fn pods_are_bound_once_and_evicted_within_their_budget() {
    let server = SkuaServer::start();
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str| {
        json!({"apiVersion":"v1","kind":"Pod","metadata":{"name": name, "labels": {"app": "db"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}).to_string()
    };
    assert_eq!(admin_request(&server, "POST", pods, Some(&pod("p"))).0, 201);
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"n1"}}"#;
    let (code, body) = admin_request(&server, "POST", &format!("{pods}/p/binding"), Some(binding));
    assert_eq!(code, 201, "{body}");
    let p = parse(&admin_request(&server, "GET", &format!("{pods}/p"), None).1);
    assert_eq!(p["spec"]["nodeName"], "n1");
    assert_eq!(p["status"]["conditions"][0]["type"], "PodScheduled");
    let (code, body) = admin_request(
        &server,
        "POST",
        &format!("{pods}/p/binding"),
        Some(&binding.replace("n1", "n2")),
    );
    assert_eq!(code, 409);
    assert_eq!(
        parse(&body)["message"],
        "Operation cannot be fulfilled on pods/binding \"p\": pod p is already assigned to node \"n1\""
    );

    // eviction respects the disruption budget
    assert_eq!(admin_request(&server, "POST", pods, Some(&pod("e"))).0, 201);
    let pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    let pdb = r#"{"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"db"},"spec":{"minAvailable":1,"selector":{"matchLabels":{"app":"db"}}}}"#;
    assert_eq!(admin_request(&server, "POST", pdbs, Some(pdb)).0, 201);
    let eviction = r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"e"}}"#;
    let (code, body) = admin_request(
        &server,
        "POST",
        &format!("{pods}/e/eviction"),
        Some(eviction),
    );
    assert_eq!(
        code, 429,
        "a budget nobody has processed yet blocks: {body}"
    );
    // the disruption controller counts healthy (ready) pods: none yet, so none may go
    common::eventually(20, "the budget to be processed", || {
        let pdb = parse(&admin_request(&server, "GET", &format!("{pdbs}/db"), None).1);
        (pdb["status"]["observedGeneration"] == 1).then_some(())
    });
    let (code, body) = admin_request(
        &server,
        "POST",
        &format!("{pods}/e/eviction"),
        Some(eviction),
    );
    assert_eq!(code, 429);
    assert_eq!(
        parse(&body)["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        admin_request(&server, "GET", &format!("{pods}/e"), None).0,
        200,
        "the pod is still there"
    );
    // both pods become ready: one of two may go
    for name in ["p", "e"] {
        let (code, body) = common::admin_request_as(
            &server,
            "PATCH",
            &format!("{pods}/{name}/status"),
            "application/merge-patch+json",
            Some(
                r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
            ),
        );
        assert_eq!(code, 200, "{body}");
    }
    common::eventually(20, "the budget to allow one disruption", || {
        let pdb = parse(&admin_request(&server, "GET", &format!("{pdbs}/db"), None).1);
        (pdb["status"]["disruptionsAllowed"] == 1 && pdb["status"]["currentHealthy"] == 2)
            .then_some(())
    });
    let (code, body) = admin_request(
        &server,
        "POST",
        &format!("{pods}/e/eviction"),
        Some(eviction),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        admin_request(&server, "GET", &format!("{pods}/e"), None).0,
        404
    );
    let pdb_now = parse(&admin_request(&server, "GET", &format!("{pdbs}/db"), None).1);
    assert_eq!(pdb_now["status"]["disruptionsAllowed"], 0);
    // and the last healthy pod may not go
    let (code, _) = admin_request(
        &server,
        "POST",
        &format!("{pods}/p/eviction"),
        Some(&eviction.replace("\"e\"", "\"p\"")),
    );
    assert_eq!(code, 429);
}

#[test]
fn a_watch_from_the_last_seen_revision_resumes_across_a_restart() {
    let mut server = SkuaServer::start();
    let base = "/api/v1/namespaces/default/configmaps";
    admin_request(
        &server,
        "POST",
        base,
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#),
    );
    let (_, body) = admin_request(&server, "GET", base, None);
    let seen = parse(&body)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // changes happen while the client is away, across a restart
    admin_request(
        &server,
        "POST",
        base,
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}"#),
    );
    server.restart();
    admin_request(&server, "DELETE", &format!("{base}/a"), None);
    let (code, body) = admin_request(
        &server,
        "GET",
        &format!("{base}?watch=1&resourceVersion={seen}&timeoutSeconds=1"),
        None,
    );
    assert_eq!(code, 200);
    let events: Vec<String> = body
        .lines()
        .map(parse)
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(events, ["ADDED b", "DELETED a"]);
}

#[test]
fn kubectl_edit_describe_and_delete_wait() {
    let server = SkuaServer::start();
    assert!(
        k(
            &server,
            "1.27",
            &["create", "configmap", "web", "--from-literal=mode=slow"]
        )
        .0
    );
    // EDITOR is a sed script, as people script kubectl edit
    let editor = server.dir.path().join("editor.sh");
    for (version, from, to) in [("1.27", "slow", "fast"), ("1.33", "fast", "slow")] {
        std::fs::write(
            &editor,
            format!("#!/bin/sh\nsed -i 's/mode: {from}/mode: {to}/' \"$1\"\n"),
        )
        .unwrap();
        Command::new("chmod")
            .args(["+x", editor.to_str().unwrap()])
            .status()
            .unwrap();
        let out = Command::new(kubectl(version))
            .args(["edit", "configmap", "web"])
            .env("KUBECONFIG", &server.kubeconfig)
            .env("KUBE_EDITOR", &editor)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("edited"),
            "kubectl {version} edit: {text}"
        );
        let (_, mode) = k(
            &server,
            version,
            &["get", "configmap", "web", "-o", "jsonpath={.data.mode}"],
        );
        assert_eq!(mode, to, "kubectl {version}");
    }
    let (ok, out) = k(&server, "1.33", &["describe", "configmap", "web"]);
    assert!(
        ok && out.contains("Name:") && out.contains("web") && out.contains("mode"),
        "{out}"
    );
    let (ok, out) = k(&server, "1.33", &["describe", "namespace", "default"]);
    assert!(
        ok && out.contains("Status:") && out.contains("Active"),
        "{out}"
    );
    let (ok, out) = k(
        &server,
        "1.33",
        &["delete", "configmap", "web", "--wait", "--timeout=20s"],
    );
    assert!(ok && out.contains("deleted"), "{out}");
    let (ok, _) = k(&server, "1.33", &["get", "configmap", "web"]);
    assert!(!ok);
}

#[test]
fn kubectl_get_watch_sees_changes() {
    let server = SkuaServer::start();
    assert!(
        k(
            &server,
            "1.27",
            &["create", "configmap", "web", "--from-literal=a=1"]
        )
        .0
    );
    for version in ["1.27", "1.33"] {
        let mut watch = Command::new(kubectl(version))
            .args(["get", "configmaps", "-w", "--request-timeout=10s"])
            .env("KUBECONFIG", &server.kubeconfig)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        assert!(
            k(
                &server,
                "1.27",
                &[
                    "label",
                    "configmap",
                    "web",
                    &format!("seen={}", version.replace('.', "-")),
                    "--overwrite"
                ]
            )
            .0
        );
        std::thread::sleep(std::time::Duration::from_millis(700));
        let _ = watch.kill();
        let out = watch.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("web")).collect();
        assert!(
            text.lines().next().is_some_and(
                |h| h.split_whitespace().collect::<Vec<_>>() == ["NAME", "DATA", "AGE"]
            ),
            "kubectl {version}: {text}"
        );
        assert!(
            rows.len() >= 2,
            "kubectl {version} -w printed the object and then its change: {text}"
        );
    }
}

/// kubectl ≥ 1.32 sends its generator commands' objects as protobuf.
#[test]
fn new_kubectl_generator_commands_send_protobuf_and_work() {
    let server = SkuaServer::start();
    for args in [
        &["create", "namespace", "demo"][..],
        &[
            "-n",
            "demo",
            "create",
            "configmap",
            "web",
            "--from-literal=a=1",
            "--from-literal=b=2",
        ],
        &[
            "-n",
            "demo",
            "create",
            "secret",
            "generic",
            "s1",
            "--from-literal=pw=hunter2",
        ],
        &["-n", "demo", "create", "serviceaccount", "builder"],
    ] {
        let (ok, out) = k(&server, "1.33", args);
        assert!(ok, "kubectl 1.33 {args:?}: {out}");
    }
    let (ok, token) = k(
        &server,
        "1.33",
        &["-n", "demo", "create", "token", "builder", "--duration=20m"],
    );
    assert!(ok && token.trim().split('.').count() == 3, "{token}");
    let (_, data) = k(
        &server,
        "1.33",
        &[
            "-n",
            "demo",
            "get",
            "configmap",
            "web",
            "-o",
            "jsonpath={.data}",
        ],
    );
    assert_eq!(parse(&data), json!({"a": "1", "b": "2"}));
    let (_, pw) = k(
        &server,
        "1.33",
        &[
            "-n",
            "demo",
            "get",
            "secret",
            "s1",
            "-o",
            "jsonpath={.data.pw}",
        ],
    );
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(pw.trim())
            .unwrap(),
        b"hunter2"
    );
    // workloads and services from their generators
    for args in [
        &[
            "create",
            "deployment",
            "d1",
            "--image=nginx:1",
            "--replicas=3",
            "--port=80",
        ][..],
        &["create", "service", "nodeport", "s1", "--tcp=80:8080"],
        &["create", "job", "j1", "--image=busybox", "--", "echo", "hi"],
    ] {
        let (ok, out) = k(&server, "1.33", args);
        assert!(ok, "kubectl 1.33 {args:?}: {out}");
    }
    let (_, d) = k(&server, "1.33", &["get", "deployment", "d1", "-o", "json"]);
    let d = parse(&d);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "d1");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    let (_, svc) = k(&server, "1.33", &["get", "service", "s1", "-o", "json"]);
    let svc = parse(&svc);
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    let (_, job) = k(&server, "1.33", &["get", "job", "j1", "-o", "json"]);
    let job = parse(&job);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["echo", "hi"])
    );
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "create",
            "cronjob",
            "c1",
            "--image=busybox",
            "--schedule=*/5 * * * *",
            "--",
            "echo",
            "hi",
        ],
    );
    assert!(ok, "{out}");
    let (_, cj) = k(&server, "1.33", &["get", "cronjob", "c1", "-o", "json"]);
    let cj = parse(&cj);
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["echo", "hi"])
    );
    // RBAC and disruption budgets from their generators
    for args in [
        &[
            "create",
            "role",
            "r1",
            "--verb=get,list",
            "--resource=pods,deployments.apps",
            "--resource-name=p1",
        ][..],
        &[
            "create",
            "rolebinding",
            "rb1",
            "--role=r1",
            "--user=bob",
            "--serviceaccount=default:sa1",
        ],
        &[
            "create",
            "clusterrole",
            "cr1",
            "--verb=get",
            "--non-resource-url=/metrics",
        ],
        &[
            "create",
            "clusterrolebinding",
            "crb1",
            "--clusterrole=cr1",
            "--group=devs",
        ],
        &[
            "create",
            "poddisruptionbudget",
            "pdb1",
            "--selector=app=x",
            "--min-available=50%",
        ],
    ] {
        let (ok, out) = k(&server, "1.33", args);
        assert!(ok, "kubectl 1.33 {args:?}: {out}");
    }
    let (_, role) = k(
        &server,
        "1.33",
        &["get", "role", "r1", "-o", "jsonpath={.rules}"],
    );
    assert_eq!(
        parse(&role)[1],
        json!({"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["p1"], "verbs": ["get", "list"]})
    );
    let (_, rb) = k(
        &server,
        "1.33",
        &["get", "rolebinding", "rb1", "-o", "json"],
    );
    let rb = parse(&rb);
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r1"})
    );
    assert_eq!(
        rb["subjects"][1],
        json!({"kind": "ServiceAccount", "name": "sa1", "namespace": "default"})
    );
    let (_, pdb) = k(
        &server,
        "1.33",
        &["get", "pdb", "pdb1", "-o", "jsonpath={.spec.minAvailable}"],
    );
    assert_eq!(pdb, "50%");
    // quotas, ingresses, priority classes and autoscalers from their generators
    for args in [
        &[
            "create",
            "quota",
            "q1",
            "--hard=pods=3,requests.cpu=500m",
            "--scopes=BestEffort",
        ][..],
        &[
            "create",
            "ingress",
            "ing1",
            "--class=web",
            "--rule=foo.com/bar*=svc1:8080,tls=sec",
            "--default-backend=def:http",
        ],
        &[
            "create",
            "priorityclass",
            "low",
            "--value=-5",
            "--description=batch",
            "--preemption-policy=Never",
        ],
        &[
            "autoscale",
            "deployment",
            "d1",
            "--min=2",
            "--max=4",
            "--cpu-percent=70",
        ],
    ] {
        let (ok, out) = k(&server, "1.33", args);
        assert!(ok, "kubectl 1.33 {args:?}: {out}");
    }
    let get = |what: &str| parse(&k(&server, "1.33", &["get", what, "-o", "json"]).1);
    assert_eq!(
        get("quota/q1")["spec"],
        json!({"hard": {"pods": "3", "requests.cpu": "500m"}, "scopes": ["BestEffort"]})
    );
    assert_eq!(
        get("ingress/ing1")["spec"],
        json!({
            "ingressClassName": "web",
            "defaultBackend": {"service": {"name": "def", "port": {"name": "http"}}},
            "rules": [{"host": "foo.com", "http": {"paths": [{"path": "/bar", "pathType": "Prefix",
                "backend": {"service": {"name": "svc1", "port": {"number": 8080}}}}]}}],
            "tls": [{"hosts": ["foo.com"], "secretName": "sec"}],
        })
    );
    let pc = get("priorityclass/low");
    assert_eq!(
        (
            pc["value"].clone(),
            pc["description"].clone(),
            pc["preemptionPolicy"].clone()
        ),
        (json!(-5), json!("batch"), json!("Never"))
    );
    let hpa = get("hpa/d1");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(
        hpa["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}])
    );
}

#[test]
fn autoscalers_are_served_as_autoscaling_v1_and_v2() {
    // kubectl 1.27 creates autoscaling/v1 objects; both versions read and write them
    let server = SkuaServer::start();
    let (ok, out) = k(
        &server,
        "1.27",
        &["create", "deployment", "web", "--image=nginx"],
    );
    assert!(ok, "{out}");
    let (ok, out) = k(
        &server,
        "1.27",
        &[
            "autoscale",
            "deployment",
            "web",
            "--max=3",
            "--cpu-percent=60",
        ],
    );
    assert!(ok && out.contains("autoscaled"), "{out}");
    let v2 = parse(
        &admin_request(
            &server,
            "GET",
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web",
            None,
        )
        .1,
    );
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    // a v2-only metric survives a v1 read-modify-write
    let (code, body) = common::admin_request_as(
        &server,
        "PATCH",
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web",
        "application/merge-patch+json",
        Some(
            r#"{"spec":{"metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":60}}},{"type":"Resource","resource":{"name":"memory","target":{"type":"AverageValue","averageValue":"100Mi"}}}]}}"#,
        ),
    );
    assert_eq!(code, 200, "{body}");
    let v1_path = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web";
    let mut v1 = parse(&admin_request(&server, "GET", v1_path, None).1);
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    v1["spec"]["maxReplicas"] = json!(5);
    let (code, body) = admin_request(&server, "PUT", v1_path, Some(&v1.to_string()));
    assert_eq!(code, 200, "{body}");
    let v2 = parse(
        &admin_request(
            &server,
            "GET",
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web",
            None,
        )
        .1,
    );
    assert_eq!(v2["spec"]["maxReplicas"], 5);
    assert_eq!(
        v2["spec"]["metrics"][1]["resource"]["name"], "memory",
        "{v2}"
    );
    assert!(v2["metadata"].get("annotations").is_none(), "{v2}");
    // lists and watches answer in the version asked for
    let list = parse(
        &admin_request(
            &server,
            "GET",
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
            None,
        )
        .1,
    );
    assert_eq!(list["apiVersion"], "autoscaling/v1");
    assert_eq!(list["items"][0]["apiVersion"], "autoscaling/v1");
    let (ok, out) = k(
        &server,
        "1.27",
        &[
            "get",
            "hpa.v1.autoscaling",
            "web",
            "-o",
            "jsonpath={.spec.targetCPUUtilizationPercentage}",
        ],
    );
    assert!(ok && out == "60", "{out}");
    let (ok, out) = k(&server, "1.33", &["get", "hpa", "web"]);
    assert!(
        ok && out.contains("cpu: <unknown>/60%, memory: <unknown>/100Mi"),
        "upstream's TARGETS column: {out}"
    );
    let (code, body) = admin_request(
        &server,
        "GET",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers?watch=1&timeoutSeconds=1",
        None,
    );
    assert_eq!(code, 200);
    let event = parse(body.lines().next().unwrap());
    assert_eq!(event["object"]["apiVersion"], "autoscaling/v1", "{event}");
}

#[test]
fn a_deleted_namespace_terminates_refuses_new_content_and_goes_when_empty() {
    let mut server = SkuaServer::start();
    for args in [
        vec!["create", "namespace", "t1"],
        vec![
            "-n",
            "t1",
            "create",
            "configmap",
            "plain",
            "--from-literal=a=1",
        ],
        vec!["-n", "t1", "create", "configmap", "held"],
        vec![
            "-n",
            "t1",
            "patch",
            "configmap",
            "held",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
        ],
        vec!["delete", "namespace", "t1", "--wait=false"],
    ] {
        let (ok, out) = k(&server, "1.33", &args);
        assert!(ok, "{args:?}: {out}");
    }
    // the controller empties what it can and reports what holds the namespace
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ns = loop {
        let (_, body) = admin_request(&server, "GET", "/api/v1/namespaces/t1", None);
        let ns = parse(&body);
        let conditions = ns["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if conditions.len() == 5 {
            break ns;
        }
        assert!(std::time::Instant::now() < deadline, "no conditions: {ns}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    let by_type = |t: &str| {
        ns["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        by_type("NamespaceContentRemaining")["message"],
        "Some resources are remaining: configmaps. has 1 resource instances"
    );
    assert_eq!(
        by_type("NamespaceFinalizersRemaining")["message"],
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    );
    assert_eq!(
        by_type("NamespaceDeletionDiscoveryFailure")["status"],
        "False"
    );
    let (ok, out) = k(&server, "1.27", &["get", "namespace", "t1"]);
    assert!(ok && out.contains("Terminating"), "{out}");
    let (_, out) = k(
        &server,
        "1.27",
        &["-n", "t1", "get", "configmaps", "-o", "name"],
    );
    assert_eq!(out.trim(), "configmap/held", "the plain one is gone");
    // new content is refused with upstream's 403
    let (code, body) = admin_request(
        &server,
        "POST",
        "/api/v1/namespaces/t1/configmaps",
        Some(r#"{"metadata":{"name":"new"}}"#),
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        parse(&body)["message"],
        "configmaps \"new\" is forbidden: unable to create new content in namespace t1 because it is being terminated"
    );
    // a restart in the middle changes nothing: the controller carries on
    server.restart();
    let (ok, out) = k(
        &server,
        "1.27",
        &[
            "-n",
            "t1",
            "patch",
            "configmap",
            "held",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = k(
        &server,
        "1.33",
        &["wait", "--for=delete", "namespace/t1", "--timeout=10s"],
    );
    assert!(ok, "{out}");
    let (code, _) = admin_request(&server, "GET", "/api/v1/namespaces/t1", None);
    assert_eq!(code, 404);
    // `kubectl delete namespace` with its default wait returns once it is gone
    let (ok, out) = k(&server, "1.27", &["create", "namespace", "t2"]);
    assert!(ok, "{out}");
    let (ok, out) = k(&server, "1.27", &["-n", "t2", "create", "configmap", "x"]);
    assert!(ok, "{out}");
    let (ok, out) = k(&server, "1.27", &["delete", "namespace", "t2"]);
    assert!(ok && out.contains("namespace \"t2\" deleted"), "{out}");
    let (code, _) = admin_request(&server, "GET", "/api/v1/namespaces/t2", None);
    assert_eq!(code, 404);
    // the finalize subresource writes spec.finalizers and nothing else
    let (ok, out) = k(&server, "1.27", &["create", "namespace", "t3"]);
    assert!(ok, "{out}");
    let (code, body) = admin_request(
        &server,
        "PUT",
        "/api/v1/namespaces/t3/finalize",
        Some(
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"t3","labels":{"x":"y"}},"spec":{"finalizers":["kubernetes","example.com/x"]}}"#,
        ),
    );
    assert_eq!(code, 200, "{body}");
    let ns = parse(&admin_request(&server, "GET", "/api/v1/namespaces/t3", None).1);
    assert_eq!(
        ns["spec"]["finalizers"],
        json!(["kubernetes", "example.com/x"])
    );
    assert!(ns["metadata"]["labels"].get("x").is_none());
}
