//! The HTTPS front: TLS with the server CA, HTTP/1.1 and HTTP/2, anonymous access
//! limited to health and version, client certificates from the admin kubeconfig —
//! driven with curl and with the oldest and newest kubectl.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, kubectl};
use std::process::Command;

fn curl(server: &SkuaServer, args: &[&str], path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(server.server_ca())
        .args(args)
        .args(["-w", "\n%{http_code} %{http_version} %{content_type}"])
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, meta) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), meta.to_string())
}

#[test]
fn health_and_version_are_open_only_with_anonymous_auth_and_the_rest_needs_credentials() {
    // --anonymous-auth=true: health and version for anyone (upstream's default)
    let server = SkuaServer::start_with_config("anonymous-auth: true\n");
    // the serving certificate verifies against the server CA for 127.0.0.1
    let (body, meta) = curl(&server, &["--http1.1"], "/healthz");
    assert_eq!(
        (body.as_str(), meta.as_str()),
        ("ok", "200 1.1 text/plain; charset=utf-8")
    );
    let (_, meta) = curl(&server, &["--http2"], "/livez");
    assert!(meta.starts_with("200 2 "), "HTTP/2 by ALPN: {meta}");
    let (body, meta) = curl(&server, &[], "/version");
    assert!(meta.ends_with(" application/json"), "{meta}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["gitVersion"], "v1.33.0+skua");
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("33"))
    );

    // anything else is RBAC's to refuse to system:anonymous (upstream's answer)
    let (body, meta) = curl(&server, &[], "/api/v1/namespaces");
    assert!(meta.starts_with("403 "), "{meta}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        r#"namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" in API group "" at the cluster scope"#
    );
    // a credential that does not authenticate is a 401, never anonymous
    let (body, meta) = curl(
        &server,
        &["-H", "Authorization: Bearer not-a-token"],
        "/api/v1/namespaces",
    );
    assert!(meta.starts_with("401 "), "{meta}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(status["code"], 401);
    drop(server);

    // the default, as k3s and CIS 1.2.1: only /ping and /cacerts without credentials
    let server = SkuaServer::start();
    for path in ["/healthz", "/readyz", "/version", "/metrics"] {
        let (_, meta) = curl(&server, &[], path);
        assert!(meta.starts_with("401 "), "{path}: {meta}");
    }
    let (body, meta) = curl(&server, &[], "/ping");
    assert_eq!((body.as_str(), &meta[..4]), ("pong", "200 "));
    let (_, meta) = curl(&server, &[], "/cacerts");
    assert!(meta.starts_with("200 "), "{meta}");
    let tls = server.dir.path().join("data/server/tls");
    let cert = [
        "--cert",
        tls.join("client-admin.crt").to_str().unwrap(),
        "--key",
        tls.join("client-admin.key").to_str().unwrap(),
    ]
    .map(String::from);
    let cert: Vec<&str> = cert.iter().map(String::as_str).collect();
    let (body, meta) = curl(&server, &cert, "/readyz");
    assert_eq!((body.as_str(), &meta[..4]), ("ok", "200 "));

    // paths upstream also serves with a trailing slash (kr8s starts with /version/),
    // and the named health checks
    for (path, kind) in [
        ("/version/", "gitVersion"),
        ("/api/", "APIVersions"),
        ("/apis/", "APIGroupList"),
        ("/api/v1/", "APIResourceList"),
        ("/apis/apps/v1/", "APIResourceList"),
        ("/api/v1/namespaces/default/", "Namespace"),
        ("/api/v1/namespaces/default/configmaps/", "ConfigMapList"),
    ] {
        let (body, meta) = curl(&server, &cert, path);
        assert!(meta.starts_with("200 "), "{path}: {meta} {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["kind"] == kind || v.get(kind).is_some(), "{path}: {body}");
    }
    for path in ["/livez/ping", "/readyz/ping", "/healthz/etcd"] {
        let (body, meta) = curl(&server, &cert, path);
        assert_eq!((body.as_str(), &meta[..4]), ("ok", "200 "), "{path}");
    }
    let (_, meta) = curl(&server, &cert, "/livez/nonsense");
    assert!(meta.starts_with("404 "), "{meta}");
}

#[test]
fn nothing_before_authentication_costs_the_server() {
    let server = SkuaServer::start();
    // unauthenticated requests with random paths and big bodies: 401, and no new
    // metric series (the labels come only from known resources)
    let big = server.dir.path().join("big");
    std::fs::write(&big, "x".repeat(2_000_000)).unwrap();
    let big = format!("@{}", big.display());
    for i in 0..200 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(server.server_ca())
            .args([
                "-X",
                "POST",
                "--data-binary",
                if i % 50 == 0 { &big } else { "small" },
            ])
            .arg(format!(
                "https://127.0.0.1:{}/apis/g{i}/v{i}/r{i}",
                server.port
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    }
    let (_, metrics) = common::admin_request(&server, "GET", "/metrics", None);
    assert!(
        !metrics.contains("g17") && !metrics.contains("r42"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authentication_attempts{result=\"error\"} 200"),
        "{metrics}"
    );
    // a client that never finishes its TLS handshake is dropped after a while; one
    // that never sends its headers too
    use std::io::Read;
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    idle.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closes a silent connection");
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
}

#[test]
fn kubectl_old_and_new_reach_the_server_with_the_admin_kubeconfig() {
    let server = SkuaServer::start();
    for version in ["1.27", "1.33"] {
        let out = Command::new(kubectl(version))
            .args(["version", "-o", "json"])
            .env("KUBECONFIG", &server.kubeconfig)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "kubectl {version}: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            v["serverVersion"]["gitVersion"], "v1.33.0+skua",
            "kubectl {version}"
        );
        // authenticated by the admin client certificate: not 401 but upstream's 404
        let out = Command::new(kubectl(version))
            .args(["get", "--raw", "/apis/skua.example/v1"])
            .env("KUBECONFIG", &server.kubeconfig)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("NotFound") || err.contains("could not find"),
            "kubectl {version}: {err}"
        );
        assert!(!err.contains("Unauthorized"), "kubectl {version}: {err}");
    }
}

/// A client certificate from the client CA authenticates (CN → user, O → groups);
/// without system:masters the request is refused with upstream's 403 wording.
#[test]
fn other_users_are_authenticated_and_refused_by_the_authorizer() {
    let server = SkuaServer::start();
    let tls = server.dir.path().join("data/server/tls");
    let dir = server.dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "bob.key",
        "-out",
        "bob.csr",
        "-subj",
        "/CN=bob/O=dev",
    ]);
    std::fs::write(dir.join("bob.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "bob.csr",
        "-CA",
        tls.join("client-ca.crt").to_str().unwrap(),
        "-CAkey",
        tls.join("client-ca.key").to_str().unwrap(),
        "-CAcreateserial",
        "-out",
        "bob.crt",
        "-days",
        "1",
        "-extfile",
        "bob.ext",
    ]);
    let (body, meta) = curl(
        &server,
        &[
            "--cert",
            dir.join("bob.crt").to_str().unwrap(),
            "--key",
            dir.join("bob.key").to_str().unwrap(),
        ],
        "/api/v1/namespaces/default/configmaps/web",
    );
    assert!(meta.starts_with("403 "), "{meta}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "configmaps \"web\" is forbidden: User \"bob\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
}

#[test]
fn discovery_serves_kubectl_old_and_new() {
    let server = SkuaServer::start();
    for version in ["1.27", "1.33"] {
        let out = Command::new(kubectl(version))
            .args(["api-resources", "--no-headers"])
            .env("KUBECONFIG", &server.kubeconfig)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        for want in [
            vec!["deployments", "deploy", "apps/v1", "true", "Deployment"],
            vec!["namespaces", "ns", "v1", "false", "Namespace"],
            vec!["configmaps", "cm", "v1", "true", "ConfigMap"],
            vec![
                "horizontalpodautoscalers",
                "hpa",
                "autoscaling/v2",
                "true",
                "HorizontalPodAutoscaler",
            ],
            vec!["secrets", "v1", "true", "Secret"],
        ] {
            assert!(
                rows.contains(&want),
                "kubectl {version}: no row {want:?} in\n{text}"
            );
        }
    }
    // legacy discovery: exact content type and subresources with their own group
    let admin = |path: &str| {
        let out = Command::new(kubectl("1.33"))
            .args(["get", "--raw", path])
            .env("KUBECONFIG", &server.kubeconfig)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let core = admin("/api/v1");
    let names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for sub in [
        "pods/status",
        "pods/log",
        "pods/exec",
        "pods/binding",
        "pods/eviction",
        "serviceaccounts/token",
    ] {
        assert!(names.contains(&sub), "{sub} missing from /api/v1");
    }
    let apps = admin("/apis/apps/v1");
    let scale = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .unwrap();
    assert_eq!(
        (scale["group"].as_str(), scale["kind"].as_str()),
        (Some("autoscaling"), Some("Scale"))
    );
    // content types, via curl with the admin certificate
    let tls = server.dir.path().join("data/server/tls");
    let (crt, key) = (tls.join("client-admin.crt"), tls.join("client-admin.key"));
    let cert = [
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (_, meta) = curl(&server, &cert, "/apis");
    assert!(meta.ends_with(" application/json"), "{meta}");
    let accept = "Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let mut args = cert.to_vec();
    args.extend(["-H", accept]);
    let (body, meta) = curl(&server, &args, "/apis");
    assert!(
        meta.ends_with(" application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
        "{meta}"
    );
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "APIGroupDiscoveryList");
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["metadata"]["name"] == "apps")
    );
}

/// Service-account tokens: TokenRequest (`kubectl create token`), bearer
/// authentication, TokenReview, and revocation by deleting the account.
#[test]
fn service_account_tokens_authenticate_until_the_account_goes() {
    let server = SkuaServer::start();
    let run = |version: &str, args: &[&str]| {
        let out = Command::new(kubectl(version))
            .args(args)
            .env("KUBECONFIG", &server.kubeconfig)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let sa = server.dir.path().join("sa.yaml");
    std::fs::write(
        &sa,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: builder}\n",
    )
    .unwrap();
    assert!(run("1.33", &["apply", "-f", sa.to_str().unwrap()]).0);
    let (ok, token, err) = run(
        "1.27",
        &[
            "create",
            "token",
            "builder",
            "--audience",
            "https://kubernetes.default.svc.cluster.local",
        ],
    );
    assert!(ok && token.split('.').count() == 3, "{err}");
    let (ok, _, err) = run("1.27", &["create", "token", "builder", "--duration=1m"]);
    assert!(
        !ok && err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );

    let bearer = format!("Authorization: Bearer {token}");
    let (body, meta) = curl(
        &server,
        &["-H", &bearer],
        "/api/v1/namespaces/default/configmaps",
    );
    assert!(
        meta.starts_with("403 "),
        "authenticated, then refused by the authorizer: {meta}"
    );
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("User \"system:serviceaccount:default:builder\" cannot list"),
        "{status}"
    );
    let (_, meta) = curl(
        &server,
        &["-H", "Authorization: Bearer not.a.token"],
        "/api/v1/namespaces",
    );
    assert!(meta.starts_with("401 "), "{meta}");

    // TokenReview, as a webhook or the kubelet would ask
    let review = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}).to_string();
    let (code, body) = common::admin_request(
        &server,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(&review),
    );
    assert_eq!(code, 201, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:default:builder"
    );
    assert!(
        r["status"]["user"]["groups"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("system:serviceaccounts:default"))
    );
    let (code, body) = common::admin_request(
        &server,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#),
    );
    assert_eq!(code, 201, "{body}\nserver log:\n{}", server.log());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"]["userInfo"]["username"],
        "system:admin"
    );

    // deleting the account revokes its tokens
    assert!(run("1.33", &["delete", "serviceaccount", "builder"]).0);
    let (_, meta) = curl(
        &server,
        &["-H", &bearer],
        "/api/v1/namespaces/default/configmaps",
    );
    assert!(meta.starts_with("401 "), "{meta}");
    let (_, body) = common::admin_request(
        &server,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(&review),
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"]["authenticated"],
        false
    );
}

#[test]
fn metrics_count_requests_watches_and_store_latency() {
    let server = SkuaServer::start();
    for _ in 0..3 {
        common::admin_request(
            &server,
            "GET",
            "/api/v1/namespaces/default/configmaps",
            None,
        );
    }
    common::admin_request(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps/missing",
        None,
    );
    // a watch that is open while /metrics is read (the controllers hold watches too)
    let longrunning = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("apiserver_longrunning_requests{component=\"apiserver\",group=\"\",resource=\"configmaps\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = longrunning(&common::admin_request(&server, "GET", "/metrics", None).1);
    let tls = server.dir.path().join("data/server/tls");
    let mut watch = Command::new("curl")
        .args(["-s", "-N", "--cacert"])
        .arg(tls.join("server-ca.crt"))
        .arg("--cert")
        .arg(tls.join("client-admin.crt"))
        .arg("--key")
        .arg(tls.join("client-admin.key"))
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=30",
            server.port
        ))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, text) = common::admin_request(&server, "GET", "/metrics", None);
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(code, 200);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_string()
    };
    assert!(line("apiserver_request_total{component=\"apiserver\",code=\"200\",group=\"\",resource=\"configmaps\",scope=\"namespace\",subresource=\"\",verb=\"LIST\"").ends_with(" 3"));
    assert!(line("apiserver_request_total{component=\"apiserver\",code=\"404\",group=\"\",resource=\"configmaps\",scope=\"resource\"").ends_with(" 1"));
    assert_eq!(longrunning(&text), before + 1, "{text}");
    assert!(text.contains("apiserver_request_duration_seconds_bucket{"));
    // the lists are served by the watch cache, which read the datastore once
    assert!(line("etcd_request_duration_seconds_count{operation=\"list\",type=\"/registry/core/configmaps\"}").split(' ').nth(1).unwrap().parse::<u64>().unwrap() >= 1);
    assert!(
        line("skua_datastore_watches_opened_total ")
            .split(' ')
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // anonymous callers may not read metrics
    let (_, meta) = curl(&server, &[], "/metrics");
    assert!(meta.starts_with("401 "), "{meta}");
}

/// Requests answered without needing their body (errors, reviews) still read it
/// first: over HTTP/2 an unread body made the server reset the stream under the
/// client. And POST to an item path is 405, as upstream.
#[test]
fn quick_answers_to_requests_with_bodies_reach_the_client_over_http2() {
    let server = SkuaServer::start();
    let tls = server.dir.path().join("data/server/tls");
    for i in 0..20 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "--cacert",
            ])
            .arg(tls.join("server-ca.crt"))
            .arg("--cert")
            .arg(tls.join("client-admin.crt"))
            .arg("--key")
            .arg(tls.join("client-admin.key"))
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "{}",
            ])
            .arg(format!(
                "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps/x{i}",
                server.port
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "405",
            "attempt {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_audit_log_records_what_its_policy_asks() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit/audit.log");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  resources: [{group: coordination.k8s.io}]\n- level: RequestResponse\n  resources: [{group: '', resources: [configmaps]}]\n  omitManagedFields: true\n- level: Metadata\n",
    )
    .unwrap();
    let server = SkuaServer::start_with_config(&format!(
        "audit-log-path: {}\naudit-policy-file: {}\n",
        log.display(),
        policy.display()
    ));
    let (ok, out) = common::kubectl_run(&server, "1.33", &["get", "pods", "-n", "kube-system"]);
    assert!(ok, "{out}");
    let (ok, out) = common::kubectl_run(
        &server,
        "1.27",
        &["create", "configmap", "audited", "--from-literal=k=v"],
    );
    assert!(ok, "{out}");
    let (ok, out) = common::kubectl_run(&server, "1.33", &["run", "audited", "--image=busybox"]);
    assert!(ok, "{out}");
    let (ok, out) = common::kubectl_run(&server, "1.33", &["get", "pods", "--as", "jane"]);
    assert!(!ok && out.contains("forbidden"), "{out}");
    let (_, meta) = curl(&server, &[], "/api/v1/secrets");
    assert!(meta.starts_with("401 "), "{meta}");
    let events: Vec<serde_json::Value> = common::eventually(10, "the events are written", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        events
            .iter()
            .any(|e| e["requestURI"] == "/api/v1/secrets")
            .then_some(events)
    });
    assert!(
        events.iter().all(|e| e["stage"] != "RequestReceived"),
        "omitted stage"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["objectRef"]["apiGroup"] == "coordination.k8s.io"),
        "level None"
    );
    assert!(
        events
            .iter()
            .any(|e| e["user"]["username"] == "system:admin"
                && e["level"] == "Metadata"
                && e["stage"] == "ResponseComplete"
                && e["verb"] == "list"
                && e["objectRef"]["resource"] == "pods"
                && e["objectRef"]["namespace"] == "kube-system"
                && e["responseStatus"]["code"] == 200
                && e["sourceIPs"][0] == "127.0.0.1"
                && e.get("requestObject").is_none()),
        "{events:#?}"
    );
    let created = events
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["name"] == "audited")
        .expect("the configmap's creation");
    assert_eq!(created["level"], "RequestResponse");
    assert_eq!(created["requestObject"]["data"]["k"], "v");
    assert_eq!(created["responseObject"]["metadata"]["name"], "audited");
    assert!(
        created["responseObject"]["metadata"]
            .get("managedFields")
            .is_none()
    );
    assert!(
        events
            .iter()
            .any(|e| e["user"]["username"] == "system:admin"
                && e["impersonatedUser"]["username"] == "jane"
                && e["responseStatus"]["code"] == 403
                && e["responseStatus"]["reason"] == "Forbidden"),
        "{events:#?}"
    );
    // Pod Security says which policy decided the pod
    assert!(
        events.iter().any(|e| e["verb"] == "create"
            && e["objectRef"]["resource"] == "pods"
            && e["annotations"]["pod-security.kubernetes.io/enforce-policy"]
                == "privileged:latest"),
        "{events:#?}"
    );
    // a failed authentication: once, at ResponseStarted, nobody as the user
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["requestURI"] == "/api/v1/secrets")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["stage"], "ResponseStarted");
    assert_eq!(refused[0]["user"], serde_json::json!({}));
    assert_eq!(refused[0]["responseStatus"]["code"], 401);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
