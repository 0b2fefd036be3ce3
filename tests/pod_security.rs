//! Pod Security admission as upstream's, configured as k3s' hardening guide does:
//! enforce refuses with upstream's message, warn answers with warnings, workload
//! templates are warned about but not refused, namespace labels are checked, and
//! tightening a namespace warns about the pods already in it. kubectl 1.27 and 1.33.
// test helpers: a failed unwrap is a failed test
#![allow(clippy::unwrap_used)]

mod common;

use common::{SkuaServer, kubectl_run};

/// k3s' CIS hardening guide's file, verbatim.
const K3S_PSA: &str = r#"apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1beta1
    kind: PodSecurityConfiguration
    defaults:
      enforce: "restricted"
      enforce-version: "latest"
      audit: "restricted"
      audit-version: "latest"
      warn: "restricted"
      warn-version: "latest"
    exemptions:
      usernames: []
      runtimeClasses: []
      namespaces: [kube-system, compliance-operator-system]
"#;

const HARDENED: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hardened"},
 "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
  "containers": [{"name": "c", "image": "busybox", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}"#;

#[test]
fn the_hardening_guides_policy_is_enforced_as_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let psa = dir.path().join("psa.yaml");
    std::fs::write(&psa, K3S_PSA).unwrap();
    let policy = dir.path().join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
    )
    .unwrap();
    let audit = dir.path().join("audit.log");
    let server = SkuaServer::start_with_config(&format!(
        "pod-security-admission-config-file: {}\naudit-log-path: {}\naudit-policy-file: {}\n",
        psa.display(),
        audit.display(),
        policy.display()
    ));
    let k = |version: &str, args: &[&str]| kubectl_run(&server, version, args);

    // restricted by default: a plain pod is refused, with every reason
    for version in ["1.27", "1.33"] {
        let (ok, out) = k(version, &["run", "web", "--image=busybox"]);
        assert!(
            !ok && out.contains(r#"pods "web" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "web" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "web" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "web" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "web" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#),
            "{version}: {out}"
        );
    }
    assert!(!k("1.33", &["get", "pod", "web"]).0, "nothing was stored");
    // a pod that meets restricted is created; the exempt namespace takes anything
    let file = dir.path().join("hardened.json");
    std::fs::write(&file, HARDENED).unwrap();
    let (ok, out) = k("1.33", &["create", "-f", file.to_str().unwrap()]);
    assert!(ok && !out.contains("Warning"), "{out}");
    let (ok, out) = k(
        "1.27",
        &["run", "tool", "--image=busybox", "-n", "kube-system"],
    );
    assert!(ok && !out.contains("Warning"), "{out}");

    // a workload's template is warned about, not refused (its pods will be)
    let (ok, out) = k("1.33", &["create", "deployment", "web", "--image=busybox"]);
    assert!(
        ok && out.contains(r#"Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "busybox" must set"#),
        "{out}"
    );

    // audit mode: the annotations land in the audit log, for the refused pod and the
    // warned-about deployment alike
    let events: Vec<serde_json::Value> = common::eventually(10, "the audit events", || {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        events
            .iter()
            .any(|e| {
                e["objectRef"]["resource"] == "deployments"
                    && e["verb"] == "create"
                    && e["stage"] == "ResponseComplete"
            })
            .then_some(events)
    });
    let annotated = |resource: &str, code: u16| {
        events.iter().find(|e| {
            e["objectRef"]["resource"] == resource
                && e["verb"] == "create"
                && e["stage"] == "ResponseComplete"
                && e["responseStatus"]["code"] == code
        })
    };
    let refused = annotated("pods", 403).expect("the refused pod's event");
    assert_eq!(
        refused["annotations"]["pod-security.kubernetes.io/enforce-policy"],
        "restricted:latest"
    );
    assert!(
        refused["annotations"]["pod-security.kubernetes.io/audit-violations"]
            .as_str()
            .is_some_and(|v| v.starts_with(r#"would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false"#)),
        "{refused}"
    );
    let deployment = annotated("deployments", 201).expect("the deployment's event");
    assert!(
        deployment["annotations"]["pod-security.kubernetes.io/audit-violations"]
            .as_str()
            .is_some_and(|v| v.contains(
                r#"container "busybox" must set securityContext.allowPrivilegeEscalation=false"#
            )),
        "{deployment}"
    );

    // a namespace that relaxes enforce and warns for baseline
    let (ok, out) = k("1.33", &["create", "namespace", "legacy"]);
    assert!(ok, "{out}");
    let (ok, out) = k(
        "1.33",
        &[
            "label",
            "namespace",
            "legacy",
            "pod-security.kubernetes.io/enforce=privileged",
            "pod-security.kubernetes.io/warn=baseline",
            "pod-security.kubernetes.io/warn-version=v1.30",
        ],
    );
    assert!(ok, "{out}");
    for (version, name) in [("1.27", "root-a"), ("1.33", "root-b")] {
        let privileged = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "legacy"}},
              "spec": {{"hostNetwork": true, "containers": [{{"name": "p", "image": "busybox", "securityContext": {{"privileged": true}}}}]}}}}"#
        );
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, privileged).unwrap();
        let (ok, out) = k(version, &["create", "-f", file.to_str().unwrap()]);
        assert!(
            ok && out.contains(r#"Warning: would violate PodSecurity "baseline:v1.30": host namespaces (hostNetwork), privileged (container "p" must not set securityContext.privileged=true)"#),
            "{version}: {out}"
        );
    }
    // a server-side dry run is refused, not carried out (not implemented yet)
    let (ok, out) = k(
        "1.33",
        &[
            "label",
            "--dry-run=server",
            "--overwrite",
            "namespace",
            "legacy",
            "pod-security.kubernetes.io/enforce=baseline",
        ],
    );
    assert!(!ok && out.contains("dryRun is not supported"), "{out}");
    let (_, out) = k("1.33", &["get", "namespace", "legacy", "--show-labels"]);
    assert!(out.contains("enforce=privileged"), "{out}");
    // tightening it warns about the pods already there
    let (ok, out) = k(
        "1.33",
        &[
            "label",
            "--overwrite",
            "namespace",
            "legacy",
            "pod-security.kubernetes.io/enforce=baseline",
        ],
    );
    assert!(
        ok && out.contains(r#"Warning: existing pods in namespace "legacy" violate the new PodSecurity enforce level "baseline:latest""#)
            && out.contains("Warning: root-a (and 1 other pod): host namespaces, privileged"),
        "{out}"
    );

    // labels that do not parse are refused, with upstream's field and message
    let (ok, out) = k(
        "1.33",
        &[
            "label",
            "namespace",
            "legacy",
            "pod-security.kubernetes.io/enforce=strict",
            "--overwrite",
        ],
    );
    assert!(
        !ok && out.contains(r#"Namespace "legacy" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be one of privileged, baseline, restricted"#),
        "{out}"
    );
    // the refusal's audit annotation is there for the audit log; a pod naming an
    // account that does not exist is refused by the ServiceAccount plugin first
    let (ok, out) = k(
        "1.33",
        &[
            "run",
            "ghost",
            "--image=busybox",
            "-n",
            "kube-system",
            "--overrides",
            r#"{"spec": {"serviceAccountName": "nobody"}}"#,
        ],
    );
    assert!(
        !ok && out.contains(r#"pods "ghost" is forbidden: error looking up service account kube-system/nobody: serviceaccount "nobody" not found"#),
        "{out}"
    );
}

#[test]
fn a_configuration_that_does_not_load_stops_the_server_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let psa = dir.path().join("psa.yaml");
    std::fs::write(
        &psa,
        K3S_PSA.replace(r#"enforce: "restricted""#, r#"enforce: "strict""#),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skua"))
        .args(["server", "--pod-security-admission-config-file"])
        .arg(&psa)
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"defaults.enforce: Invalid value: "strict": must be one of privileged, baseline, restricted"#),
        "{err}"
    );
}
