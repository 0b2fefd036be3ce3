//! Events as upstream's, rotation as lumberjack's.

use super::*;
use http::Method;

fn policy(text: &str) -> Policy {
    Policy::parse(&format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\n{text}"
    ))
    .expect("a policy")
}

#[test]
fn events_follow_the_policy_level_and_stages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit/audit.log");
    let log = AuditLog::start(AuditConfig {
        path: path.clone(),
        max_size_mib: 1,
        max_backups: 2,
        max_age_days: 0,
        policy: policy(
            "omitStages: [RequestReceived]\nrules:\n- level: None\n  resources: [{group: '', resources: [events]}]\n- level: RequestResponse\n  omitManagedFields: true",
        ),
    })
    .unwrap();
    let user = UserInfo {
        name: "system:node:n1".into(),
        groups: vec!["system:nodes".into()],
        ..Default::default()
    };
    let info = RequestInfo::parse(&Method::DELETE, "/api/v1/namespaces/default/pods/web", "");
    let status = json!({"kind": "Status", "status": "Failure", "message": "pods \"web\" is forbidden: no", "reason": "Forbidden", "code": 403});
    let r = Record {
        user: Some(&user),
        impersonated: None,
        annotations: &Default::default(),
        info: &info,
        method: "DELETE",
        uri: "/api/v1/namespaces/default/pods/web",
        source: Some("10.0.0.7".parse().unwrap()),
        user_agent: "kubectl/v1.33",
        code: 403,
        response: Some(&status),
        request: Some(&json!({"kind": "DeleteOptions", "metadata": {"managedFields": [1]}})),
        long_running: false,
        received: std::time::SystemTime::now(),
    };
    let d = log.decide(r.user, r.info);
    assert_eq!(d.level, Level::RequestResponse);
    let e = event(&r, &d, "id-1", "ResponseComplete");
    assert_eq!(e["user"]["username"], "system:node:n1");
    assert_eq!(e["objectRef"]["resource"], "pods");
    assert_eq!(e["objectRef"]["name"], "web");
    assert_eq!(e["verb"], "delete");
    assert_eq!(e["responseStatus"]["code"], 403);
    assert_eq!(e["responseStatus"]["reason"], "Forbidden");
    assert_eq!(
        e["responseStatus"]["message"],
        "pods \"web\" is forbidden: no"
    );
    assert_eq!(e["sourceIPs"][0], "10.0.0.7");
    assert!(
        e["requestObject"]["metadata"]
            .get("managedFields")
            .is_none()
    );
    assert_eq!(e["responseObject"]["kind"], "Status");
    let stamp = e["stageTimestamp"].as_str().unwrap();
    assert_eq!(stamp.len(), "2026-12-08T01:02:03.123456Z".len(), "{stamp}");
    // failed authentication: one event, ResponseStarted, no user
    let nobody = Record { user: None, ..r };
    let e = event(&nobody, &d, "id-2", "ResponseStarted");
    assert_eq!(e["user"], json!({}));
    // events are not audited at all (level None)
    let events = RequestInfo::parse(&Method::GET, "/api/v1/events", "");
    assert_eq!(log.decide(Some(&user), &events).level, Level::None);
    for _ in 0..3000 {
        log.record(&r);
    }
    drop(log);
    std::thread::sleep(std::time::Duration::from_millis(500));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["stage"], "ResponseComplete",
        "RequestReceived is omitted"
    );
    let rotated = backups_of(&path);
    assert!(!rotated.is_empty() && rotated.len() <= 2, "{rotated:?}");
    let name = rotated[0]
        .0
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("audit-20") && name.ends_with(".log"),
        "{name}"
    );
}

#[test]
fn rotated_names_and_pruning_follow_lumberjack() {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_692_568_123);
    assert_eq!(
        backup_name(Path::new("/var/log/audit.log"), at),
        PathBuf::from("/var/log/audit-2026-12-08T01-16-08.123.log")
    );
    let day = std::time::Duration::from_secs(86_400);
    let now = at;
    let files: Vec<(PathBuf, std::time::SystemTime)> = (0..5)
        .map(|i| (PathBuf::from(format!("b{i}")), now - day * i))
        .collect();
    let gone = |n, age| {
        let mut g = expired(files.clone(), n, age, now);
        g.sort();
        g
    };
    assert_eq!(gone(2, 0), ["b2", "b3", "b4"].map(PathBuf::from));
    assert_eq!(gone(0, 2), ["b3", "b4"].map(PathBuf::from));
    assert!(gone(0, 0).is_empty());
}
