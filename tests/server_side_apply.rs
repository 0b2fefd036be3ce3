//! Server-side apply and field ownership as upstream's field manager does them:
//! `kubectl apply --server-side` creates and updates, fields the applier stops applying
//! are removed, a field another manager owns is a 409 `FieldManagerConflict` until
//! `--force-conflicts`, and kubectl's migration from client-side apply works — with
//! kubectl 1.27 and 1.33. Bad apply requests get upstream's answers and change nothing.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, admin_request, admin_request_as, kubectl_run as k};
use serde_json::{Value, json};

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
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

fn get(server: &SkuaServer, path: &str) -> Value {
    let (code, body) = admin_request(server, "GET", path, None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The field managers of `obj`, except skua's own controllers (which, like upstream's
/// kube-controller-manager, record the status and annotations they write).
fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["manager"] != "skua-controller-manager")
        .map(|e| {
            format!(
                "{}/{}{}",
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap(),
                e.get("subresource")
                    .map(|s| format!("/{}", s.as_str().unwrap()))
                    .unwrap_or_default()
            )
        })
        .collect()
}

/// kubectl's apply entry.
fn apply_entry(obj: &Value) -> Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl" && e["operation"] == "Apply")
        .cloned()
        .unwrap_or_default()
}

const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/web";

#[test]
fn kubectl_server_side_apply_prunes_conflicts_and_forces() {
    for version in ["1.27", "1.33"] {
        let server = SkuaServer::start();
        let file = server.dir.path().join("web.yaml");
        let f = file.to_str().unwrap();
        std::fs::write(&file, WEB).unwrap();
        let (ok, out) = k(&server, version, &["apply", "--server-side", "-f", f]);
        assert!(
            ok && out.contains("deployment.apps/web serverside-applied"),
            "kubectl {version}: {out}"
        );
        let live = get(&server, DEPLOY);
        assert_eq!(managers(&live), ["kubectl/Apply"], "kubectl {version}");
        let fields = &live["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:ports"],
            json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}})
        );
        assert!(
            fields["f:spec"].get("f:progressDeadlineSeconds").is_none(),
            "defaults belong to nobody: {fields}"
        );
        // someone else scales: replicas now belong to the scale subresource's updater
        let (ok, out) = k(
            &server,
            version,
            &["scale", "deployment/web", "--replicas=4"],
        );
        assert!(ok, "{out}");
        let scaled = get(&server, DEPLOY);
        assert!(
            managers(&scaled)
                .iter()
                .any(|m| m.ends_with("/Update/scale")),
            "kubectl {version}: {:?}",
            managers(&scaled)
        );
        // re-apply with other replicas, without the tier label and the side container
        let next = WEB
            .replace("replicas: 2", "replicas: 3")
            .replace(", tier: front", "")
            .replace("      - name: side\n        image: busybox\n", "");
        std::fs::write(&file, &next).unwrap();
        let (ok, out) = k(&server, version, &["apply", "--server-side", "-f", f]);
        assert!(!ok, "kubectl {version}: a conflict must fail: {out}");
        assert!(
            out.contains("Apply failed with 1 conflict: conflict with \"kubectl")
                && out.contains("with subresource \"scale\" using apps/v1 at ")
                && out.contains(": .spec.replicas"),
            "kubectl {version}: {out}"
        );
        let unchanged = get(&server, DEPLOY);
        assert_eq!(
            (
                &unchanged["metadata"]["generation"],
                &unchanged["spec"],
                &unchanged["metadata"]["labels"]
            ),
            (
                &scaled["metadata"]["generation"],
                &scaled["spec"],
                &scaled["metadata"]["labels"]
            ),
            "a refused apply writes nothing"
        );
        let (ok, out) = k(
            &server,
            version,
            &["apply", "--server-side", "--force-conflicts", "-f", f],
        );
        assert!(ok, "kubectl {version}: {out}");
        let forced = get(&server, DEPLOY);
        assert_eq!(forced["spec"]["replicas"], 3);
        assert_eq!(
            forced["metadata"]["labels"],
            json!({"app": "web"}),
            "the dropped label is pruned"
        );
        let containers = forced["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1, "the dropped container is pruned");
        assert_eq!(
            managers(&forced),
            ["kubectl/Apply"],
            "the scaler lost its only field"
        );
        // the same apply again, a second later, changes nothing, not even the time
        // of kubectl's entry (managedFields times have one-second resolution)
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (ok, out) = k(&server, version, &["apply", "--server-side", "-f", f]);
        assert!(ok, "{out}");
        assert_eq!(
            apply_entry(&get(&server, DEPLOY)),
            apply_entry(&forced),
            "neither the fields nor the time of kubectl's entry move"
        );
        assert_eq!(
            get(&server, DEPLOY)["metadata"]["generation"],
            forced["metadata"]["generation"]
        );
    }
}

#[test]
fn client_side_apply_records_its_fields_and_kubectl_migrates_to_server_side() {
    for version in ["1.27", "1.33"] {
        let server = SkuaServer::start();
        let file = server.dir.path().join("web.yaml");
        let f = file.to_str().unwrap();
        std::fs::write(&file, WEB).unwrap();
        let (ok, out) = k(&server, version, &["apply", "-f", f]);
        assert!(ok, "{out}");
        assert_eq!(
            managers(&get(&server, DEPLOY)),
            ["kubectl-client-side-apply/Update"]
        );
        std::fs::write(&file, WEB.replace("replicas: 2", "replicas: 5")).unwrap();
        let (ok, out) = k(&server, version, &["apply", "--server-side", "-f", f]);
        assert!(
            !ok && out.contains("conflict with \"kubectl-client-side-apply\" using apps/v1"),
            "kubectl {version}: {out}"
        );
        // the same values co-own; kubectl then moves client-side ownership to itself
        std::fs::write(&file, WEB).unwrap();
        let (ok, out) = k(&server, version, &["apply", "--server-side", "-f", f]);
        assert!(ok, "kubectl {version}: {out}");
        let live = get(&server, DEPLOY);
        let now = managers(&live);
        assert!(
            now.contains(&"kubectl/Apply".to_string()),
            "kubectl {version}: {now:?}"
        );
        assert!(
            !now.contains(&"kubectl-client-side-apply/Update".to_string()),
            "kubectl {version} migrates the client-side entry: {now:?}"
        );
        // and plain updates are recorded under the manager kubectl names
        let (ok, out) = k(&server, version, &["label", "deployment/web", "owner=ops"]);
        assert!(ok, "{out}");
        let labelled = get(&server, DEPLOY);
        let entry = labelled["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["fieldsV1"]["f:metadata"]["f:labels"]
                    .get("f:owner")
                    .is_some()
            })
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            entry["operation"], "Update",
            "kubectl {version}: {labelled}"
        );
        assert!(entry["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}

#[test]
fn bad_apply_requests_get_upstream_answers_and_change_nothing() {
    let server = SkuaServer::start();
    let apply = |path: &str, body: &str| {
        let (code, text) = admin_request_as(
            &server,
            "PATCH",
            path,
            "application/apply-patch+yaml",
            Some(body),
        );
        (
            code,
            serde_json::from_str::<Value>(&text).unwrap_or(json!({"raw": text})),
        )
    };
    let cm = "/api/v1/namespaces/default/configmaps/c";
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n";
    // no field manager: 422 from PatchOptions validation
    let (code, st) = apply(cm, yaml);
    assert_eq!(code, 422, "{st}");
    assert_eq!(
        st["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    assert_eq!(st["details"]["causes"][0]["field"], "fieldManager");
    // force on a non-apply patch
    let (code, text) = admin_request_as(
        &server,
        "PATCH",
        &format!("{cm}?force=true"),
        "application/merge-patch+json",
        Some("{}"),
    );
    assert_eq!(code, 422, "{text}");
    assert!(text.contains("force: Forbidden: may not be specified for non-apply patch"));
    // apply creates (201), JSON is YAML too
    let (code, created) = apply(&format!("{cm}?fieldManager=a"), yaml);
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["data"]["a"], "1");
    let rv = created["metadata"]["resourceVersion"].clone();
    let (code, _) = apply(
        &format!("{cm}?fieldManager=a"),
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"1"}}"#,
    );
    assert_eq!(code, 200);
    // each of these is refused and leaves the object as it was
    for (body, code_want, text_want) in [
        ("data: {a: '2'}\n", 400, "Object 'apiVersion' is missing"),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: c}\n",
            400,
            "does not match",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n",
            400,
            "does not match the name on the URL",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, managedFields: [{manager: x}]}\n",
            400,
            "metadata.managedFields must be nil",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: [unclosed\n",
            400,
            "error decoding YAML",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '9'}\nbogus: 1\n",
            400,
            "unknown field \"bogus\"",
        ),
    ] {
        let (code, st) = apply(&format!("{cm}?fieldManager=b&fieldValidation=Strict"), body);
        assert_eq!(code, code_want, "{body}: {st}");
        assert!(
            st["message"]
                .as_str()
                .unwrap_or_default()
                .contains(text_want),
            "{body}: {st}"
        );
    }
    // a different manager changing an owned value: 409 with FieldManagerConflict causes
    let (code, st) = apply(
        &format!("{cm}?fieldManager=b"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '2'}\n",
    );
    assert_eq!(code, 409, "{st}");
    assert_eq!(st["reason"], "Conflict");
    assert_eq!(
        st["message"],
        "Apply failed with 1 conflict: conflict with \"a\": .data.a"
    );
    assert_eq!(
        st["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"a\"", "field": ".data.a"}])
    );
    assert_eq!(get(&server, cm)["metadata"]["resourceVersion"], rv);
    // forced: b owns data.a now, a keeps nothing and disappears
    let (code, st) = apply(
        &format!("{cm}?fieldManager=b&force=true"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '2'}\n",
    );
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["data"]["a"], "2");
    assert_eq!(managers(&st), ["b/Apply"]);
    // a stale resourceVersion in the configuration is a precondition
    let (code, st) = apply(
        &format!("{cm}?fieldManager=b"),
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, resourceVersion: '{}'}}\ndata: {{a: '3'}}\n",
            rv.as_str().unwrap()
        ),
    );
    assert_eq!(code, 409, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
}
