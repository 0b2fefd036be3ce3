//! Kubernetes protobuf through the real API, as Go clients speak it: bodies built and
//! read with the types `k8s-pb` generates from upstream's `.proto` files; kubectl 1.33's
//! protobuf generator commands.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, kubectl_run as k};
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Value, json};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// `k8s\0` + `runtime.Unknown`, as client-go's protobuf serializer writes a body.
fn envelope(api_version: &str, kind: &str, msg: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

/// The kind and raw message of an enveloped body.
fn open(body: &[u8]) -> (String, Vec<u8>) {
    assert!(
        body.starts_with(b"k8s\0"),
        "not protobuf: {:?}",
        String::from_utf8_lossy(body)
    );
    let u = Unknown::decode(&body[4..]).expect("an Unknown envelope");
    (
        u.type_meta.and_then(|t| t.kind).unwrap_or_default(),
        u.raw.unwrap_or_default(),
    )
}

struct Answer {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

/// One request as system:admin with curl, binary body and answer.
fn request(
    server: &SkuaServer,
    method: &str,
    path: &str,
    accept: &str,
    body: Option<(&str, &[u8])>,
    extra: &[&str],
) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::admin_curl(server, method);
    cmd.args(["-H", &format!("Accept: {accept}"), "-D"])
        .arg(dir.path().join("headers"))
        .args(extra);
    if let Some((content_type, bytes)) = body {
        std::fs::write(dir.path().join("body"), bytes).unwrap();
        cmd.args([
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
        ])
        .arg(format!("@{}", dir.path().join("body").display()));
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .expect("curl");
    let headers = std::fs::read_to_string(dir.path().join("headers")).unwrap_or_default();
    let code = headers
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let content_type = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Answer {
        code,
        content_type,
        body: out.stdout,
    }
}

#[test]
fn a_go_client_speaking_protobuf_creates_reads_lists_watches_and_deletes() {
    let server = SkuaServer::start();
    let accept = format!("{PROTOBUF}, application/json");
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: Some("pb".into()),
            // Go writes every non-pointer field, empty or not
            namespace: Some(String::new()),
            generate_name: Some(String::new()),
            labels: [("app".to_string(), "pb".to_string())].into(),
            ..Default::default()
        }),
        data: [("k".to_string(), "v".to_string())].into(),
        binary_data: [("b".to_string(), vec![0u8, 1, 2])].into(),
        immutable: None,
    };
    let created = request(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &accept,
        Some((PROTOBUF, &envelope("v1", "ConfigMap", &cm))),
        &[],
    );
    assert_eq!(
        created.code,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.content_type, PROTOBUF);
    let (kind, raw) = open(&created.body);
    assert_eq!(kind, "ConfigMap");
    let got = core::ConfigMap::decode(raw.as_slice()).unwrap();
    let m = got.metadata.unwrap();
    assert!(m.uid.is_some_and(|u| !u.is_empty()) && m.creation_timestamp.is_some());
    assert_eq!(got.binary_data["b"], vec![0u8, 1, 2]);

    // read and listed back as protobuf; JSON clients see the same object
    let one = request(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps/pb",
        &accept,
        None,
        &[],
    );
    let (_, raw) = open(&one.body);
    assert_eq!(
        core::ConfigMap::decode(raw.as_slice()).unwrap().data["k"],
        "v"
    );
    let list = request(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &accept,
        None,
        &[],
    );
    let (kind, raw) = open(&list.body);
    assert_eq!(kind, "ConfigMapList");
    let list = core::ConfigMapList::decode(raw.as_slice()).unwrap();
    assert!(list.metadata.unwrap().resource_version.is_some());
    assert!(
        list.items
            .iter()
            .any(|c| c.metadata.as_ref().unwrap().name.as_deref() == Some("pb"))
    );
    let (_, json_cm) = k(&server, "1.27", &["get", "configmap", "pb", "-o", "json"]);
    let json_cm: Value = serde_json::from_str(&json_cm).unwrap();
    assert_eq!(json_cm["binaryData"]["b"], "AAEC");
    assert_eq!(json_cm["metadata"]["labels"], json!({"app": "pb"}));

    // a missing object: a protobuf Status
    let missing = request(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps/nope",
        &accept,
        None,
        &[],
    );
    assert_eq!(missing.code, 404);
    let (kind, raw) = open(&missing.body);
    assert_eq!(kind, "Status");
    let status = meta::Status::decode(raw.as_slice()).unwrap();
    assert_eq!(
        (status.code, status.reason.as_deref()),
        (Some(404), Some("NotFound"))
    );

    // a watch: length-prefixed WatchEvents whose objects are enveloped
    let watch = request(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0&timeoutSeconds=1&fieldSelector=metadata.name%3Dpb",
        &accept,
        None,
        &["--max-time", "10"],
    );
    assert_eq!(
        watch.content_type,
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let frame_len = u32::from_be_bytes(watch.body[..4].try_into().unwrap()) as usize;
    let event = meta::WatchEvent::decode(&watch.body[4..4 + frame_len]).unwrap();
    assert_eq!(event.r#type.as_deref(), Some("ADDED"));
    let (kind, raw) = open(&event.object.unwrap().raw.unwrap());
    assert_eq!(kind, "ConfigMap");
    assert_eq!(
        core::ConfigMap::decode(raw.as_slice())
            .unwrap()
            .metadata
            .unwrap()
            .name
            .as_deref(),
        Some("pb")
    );

    // a Deployment scaled to zero stays at zero (a pointer field's zero is a value)
    let deploy = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some("zero".into()),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "zero".to_string())].into(),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: [("app".to_string(), "zero".to_string())].into(),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("c".into()),
                        image: Some("busybox".into()),
                        // Go's zero values of non-pointer fields, all on the wire
                        stdin: Some(false),
                        tty: Some(false),
                        termination_message_path: Some(String::new()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let created = request(
        &server,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        Some((PROTOBUF, &envelope("apps/v1", "Deployment", &deploy))),
        &[],
    );
    assert_eq!(
        created.code,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.content_type, "application/json");
    let d: Value = serde_json::from_slice(&created.body).unwrap();
    assert_eq!(d["spec"]["replicas"], 0);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log", "{c}");
    assert!(c.get("stdin").is_none(), "{c}");

    // deleted with protobuf DeleteOptions, as client-go's typed clients delete
    let opts = meta::DeleteOptions {
        propagation_policy: Some("Background".into()),
        ..Default::default()
    };
    let gone = request(
        &server,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/pb",
        &accept,
        Some((PROTOBUF, &envelope("v1", "DeleteOptions", &opts))),
        &[],
    );
    assert_eq!(gone.code, 200, "{}", String::from_utf8_lossy(&gone.body));
    let (kind, raw) = open(&gone.body);
    assert_eq!(kind, "Status");
    assert_eq!(
        meta::Status::decode(raw.as_slice())
            .unwrap()
            .status
            .as_deref(),
        Some("Success")
    );
    // a kind the body names wrongly is refused, not stored
    let bad = request(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        Some((PROTOBUF, b"k8s\0\x0a\x03\x0a\x01")),
        &[],
    );
    assert_eq!(bad.code, 400, "{}", String::from_utf8_lossy(&bad.body));
}

#[test]
fn kubectl_1_33_keeps_a_cluster_roles_aggregation_rule() {
    let server = SkuaServer::start();
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "create",
            "clusterrole",
            "monitoring",
            "--aggregation-rule=rbac.example.com/aggregate-to-monitoring=true",
        ],
    );
    assert!(ok, "{out}");
    let (ok, rule) = k(
        &server,
        "1.33",
        &[
            "get",
            "clusterrole",
            "monitoring",
            "-o",
            "jsonpath={.aggregationRule}",
        ],
    );
    assert!(ok, "{rule}");
    let rule: Value = serde_json::from_str(&rule).unwrap_or(Value::Null);
    assert_eq!(
        rule,
        json!({"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate-to-monitoring": "true"}}]})
    );
}

/// The real Helm CLI (v3 and v4) installs a chart `helm create` writes, lists it and
/// uninstalls it; Helm deletes its release storage with protobuf DeleteOptions.
#[test]
fn helm_installs_and_uninstalls_a_chart() {
    let server = SkuaServer::start();
    let home = tempfile::tempdir().unwrap();
    for major in [3, 4] {
        let helm = |args: &[&str]| common::helm_run(&server, major, home.path(), args);
        let chart = format!("chart{major}");
        let (ok, out) = helm(&["create", &chart]);
        assert!(ok, "helm v{major} create: {out}");
        let release = format!("rel{major}");
        let (ok, out) = helm(&[
            "install",
            &release,
            &format!("./{chart}"),
            "--set",
            "image.repository=busybox,image.tag=stable",
        ]);
        assert!(ok, "helm v{major} install: {out}");
        let (ok, out) = helm(&["list", "-o", "json"]);
        assert!(ok && out.contains(&release), "helm v{major} list: {out}");
        let objects = || {
            k(
                &server,
                "1.33",
                &[
                    "get",
                    "deployment,service,serviceaccount,secret",
                    "-o",
                    "name",
                ],
            )
            .1
        };
        let (objects, after) = (objects(), objects);
        let name = format!("{release}-{chart}");
        for kind in ["deployment.apps", "service", "serviceaccount"] {
            assert!(objects.contains(&format!("{kind}/{name}")), "{objects}");
        }
        assert!(
            objects.contains(&format!("secret/sh.helm.release.v1.{release}.v1")),
            "{objects}"
        );
        let (ok, out) = helm(&["uninstall", &release]);
        assert!(ok, "helm v{major} uninstall: {out}");
        let objects = after();
        assert!(!objects.contains(&name), "helm v{major} left {objects}");
        assert!(!objects.contains(&release), "helm v{major} left {objects}");
    }
}
