//! Input built to hurt the API server: patches that nest objects deeper than they can
//! be read back or copy without bound, a stored object nobody can read, pod specs and
//! keys that name host paths, impersonation. Each gets upstream's answer, and nothing
//! else is lost.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, admin_request, admin_request_as, kubectl_run};
use serde_json::{Value, json};

fn nested(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({"a": v});
    }
    v
}

#[test]
fn patches_cannot_store_what_cannot_be_read_and_unreadable_objects_do_not_break_lists() {
    let mut server = SkuaServer::start();
    let (code, body) = admin_request(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "victim"}}"#),
    );
    assert_eq!(code, 201, "{body}");
    // the review's attack: two nested adds, about 180 levels in total
    let first = json!([{"op": "add", "path": "/metadata/annotations", "value": {}},
                       {"op": "add", "path": "/data", "value": {"x": "y"}},
                       {"op": "add", "path": "/x", "value": nested(90)}]);
    let (code, body) = admin_request_as(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/victim",
        "application/json-patch+json",
        Some(&first.to_string()),
    );
    assert_eq!(code, 200, "{body}");
    let second =
        json!([{"op": "add", "path": format!("/x{}", "/a".repeat(89)), "value": nested(90)}]);
    let (code, body) = admin_request_as(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/victim",
        "application/json-patch+json",
        Some(&second.to_string()),
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("levels deep"), "{body}");
    // a merge patch of 120 levels is refused at store time, with 422
    let mut merge = json!({"y": nested(118)});
    merge["data"] = json!({"k": "v"});
    let (code, body) = admin_request_as(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/victim",
        "application/merge-patch+json",
        Some(&merge.to_string()),
    );
    assert_eq!(code, 422, "{body}");
    // copies that double the object: 413, as upstream's JSONPatchMaxCopyBytes
    let mut ops = vec![json!({"op": "add", "path": "/z", "value": {"a": "x".repeat(10_000)}})];
    for i in 0..20 {
        ops.push(json!({"op": "copy", "from": "/z", "path": format!("/z/b{i}")}));
    }
    let (code, body) = admin_request_as(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/victim",
        "application/json-patch+json",
        Some(&Value::Array(ops).to_string()),
    );
    assert_eq!(code, 413, "{body}");
    let (code, body) = admin_request(&server, "GET", "/api/v1/configmaps", None);
    assert_eq!(code, 200, "every configmap still lists: {body}");

    // an object stored before these limits (written straight into the datastore,
    // 200 levels deep) cannot be read, but the list skips it and delete removes it
    server.stop();
    {
        use skua::store::Store;
        let store = common::open_sled(&server.dir.path().join("data/server"));
        let deep = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "deep", "namespace": "default", "uid": "u-deep"},
            "data": {"k": "v"}, "x": nested(200)});
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(store.create(
            "/registry/core/configmaps/default/deep",
            serde_json::to_vec(&deep).unwrap(),
        ))
        .unwrap();
    }
    server.start_again();
    let (code, body) = admin_request(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        None,
    );
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"victim") && !names.contains(&"deep"),
        "{names:?}"
    );
    let (ok, out) = kubectl_run(&server, "1.27", &["get", "configmaps"]);
    assert!(ok && out.contains("victim"), "{out}");
    let (ok, out) = kubectl_run(&server, "1.33", &["delete", "configmap", "deep"]);
    assert!(ok, "{out}");
    let (code, _) = admin_request(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps/deep",
        None,
    );
    assert_eq!(code, 404);
}

#[test]
fn pod_specs_and_keys_that_name_host_paths_are_invalid() {
    let server = SkuaServer::start();
    let cases = [
        (
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "/etc", "mountPath": "/x"}]}], "volumes": [{"name": "/etc", "emptyDir": {}}]}}"#,
            "/api/v1/namespaces/default/pods",
            "spec.volumes[0].name",
        ),
        (
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "../../../../etc/cron.d/x"}]}}]}}"#,
            "/api/v1/namespaces/default/pods",
            "spec.volumes[0].configMap.items[0].path",
        ),
        (
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "../../x", "image": "i"}], "containers": [{"name": "c", "image": "i"}]}}"#,
            "/api/v1/namespaces/default/pods",
            "spec.initContainers[0].name",
        ),
        (
            r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "/etc"}]}], "volumes": [{"name": "v", "emptyDir": {}}]}}}}"#,
            "/apis/apps/v1/namespaces/default/deployments",
            "spec.template.spec.containers[0].volumeMounts[0].subPath",
        ),
        (
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"..data": "x"}}"#,
            "/api/v1/namespaces/default/configmaps",
            "data[..data]",
        ),
        (
            r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"../x": "x"}}"#,
            "/api/v1/namespaces/default/secrets",
            // stringData is merged into data before validation, as upstream
            "data[../x]",
        ),
        (
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"name": "a\nflush ruleset", "port": 80}]}}"#,
            "/api/v1/namespaces/default/services",
            "spec.ports[0].name",
        ),
    ];
    for (body, path, field) in cases {
        let (code, answer) = admin_request(&server, "POST", path, Some(body));
        assert_eq!(code, 422, "{field}: {answer}");
        let status: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(status["reason"], "Invalid");
        let causes = status["details"]["causes"].as_array().unwrap();
        assert!(
            causes.iter().any(|c| c["field"] == field),
            "{field}: {answer}"
        );
    }
    // and nothing of them was stored
    let (_, out) = kubectl_run(
        &server,
        "1.33",
        &["get", "pods,configmaps,secrets,services,deployments"],
    );
    assert!(
        !out.contains("pod/p") && !out.contains("configmap/c "),
        "{out}"
    );
}

#[test]
fn impersonation_runs_as_the_impersonated_user_or_not_at_all() {
    let server = SkuaServer::start();
    // the administrator may impersonate; jane may not delete namespaces, so acting as
    // her the request is refused, with her name in upstream's message
    for version in ["1.27", "1.33"] {
        let (ok, out) = kubectl_run(
            &server,
            version,
            &["--as", "jane", "delete", "namespace", "default"],
        );
        assert!(
            !ok && out.contains(
                r#"namespaces "default" is forbidden: User "jane" cannot delete resource "namespaces" in API group "" in the namespace "default""#
            ),
            "{out}"
        );
    }
    let (ok, out) = kubectl_run(&server, "1.33", &["get", "namespace", "default"]);
    assert!(
        ok && out.contains("Active"),
        "the namespace is still there: {out}"
    );
    // groups without a user: upstream's 400, nothing done
    let tls = server.dir.path().join("data/server/tls");
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(server.server_ca())
        .arg("--cert")
        .arg(tls.join("client-admin.crt"))
        .arg("--key")
        .arg(tls.join("client-admin.key"))
        .args(["-H", "Impersonate-Group: system:masters", "-X", "DELETE"])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default",
            server.port
        ))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["code"], 400, "{body}");
    assert_eq!(
        status["message"], "requested [{Group  system:masters    }] without impersonating a user",
        "{body}"
    );
    let (ok, out) = kubectl_run(&server, "1.33", &["get", "namespace", "default"]);
    assert!(ok && out.contains("Active"), "{out}");
}

/// What a client puts in a list's or watch's query reaches the watch cache first:
/// malformed versions and limits are refused as before, a version from the future
/// does not hold the request for ever, and the server keeps answering.
#[test]
fn malformed_list_and_watch_parameters_are_refused_and_nothing_hangs() {
    let server = SkuaServer::start();
    let base = "/api/v1/namespaces/default/configmaps";
    for query in [
        "resourceVersion=abc",
        "resourceVersion=-1&resourceVersionMatch=Exact",
        "limit=-1",
        "limit=abc",
        "continue=!!!",
        "watch=1&resourceVersion=abc",
        "watch=1&timeoutSeconds=abc",
    ] {
        let (code, body) = admin_request(&server, "GET", &format!("{base}?{query}"), None);
        assert_eq!(code, 400, "{query}: {body}");
        assert!(body.contains("\"kind\":\"Status\""), "{query}: {body}");
    }
    // a version far ahead: the cache waits a bounded time, then the datastore answers
    let t = std::time::Instant::now();
    let (code, body) = admin_request(
        &server,
        "GET",
        &format!("{base}?resourceVersion=999999999999"),
        None,
    );
    assert!(code == 200 || code == 504, "{code}: {body}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let (code, _) = admin_request(&server, "GET", base, None);
    assert_eq!(code, 200, "the server still lists");
}
