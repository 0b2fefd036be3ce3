//! The checks against upstream's own examples and messages.

use super::*;
use serde_json::json;

fn restricted() -> LevelVersion {
    LevelVersion {
        level: Level::Restricted,
        version: Version::Latest,
    }
}

fn baseline() -> LevelVersion {
    LevelVersion {
        level: Level::Baseline,
        version: Version::Latest,
    }
}

fn detail(lv: LevelVersion, spec: Value) -> String {
    forbidden_detail(&evaluate(lv, &json!({}), &spec))
}

/// A pod that meets restricted.
fn hardened() -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "x", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
    })
}

#[test]
fn a_plain_pod_breaks_restricted_as_upstream_says() {
    let spec = json!({"containers": [{"name": "nginx", "image": "nginx"}]});
    assert_eq!(
        format!(
            "violates PodSecurity \"{}\": {}",
            restricted(),
            detail(restricted(), spec.clone())
        ),
        r#"violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "nginx" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "nginx" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "nginx" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "nginx" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#
    );
    assert!(evaluate(baseline(), &json!({}), &spec).is_empty());
    assert!(evaluate(LevelVersion::PRIVILEGED, &json!({}), &spec).is_empty());
    assert!(evaluate(restricted(), &json!({}), &hardened()).is_empty());
}

#[test]
fn baseline_refuses_host_access_and_privilege() {
    let spec = json!({
        "hostNetwork": true, "hostPID": true,
        "containers": [
            {"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN", "SYS_ADMIN"]}},
             "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 90, "hostPort": 10000}]},
            {"name": "b", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}, "procMount": "Unmasked"}},
        ],
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
    });
    assert_eq!(
        detail(baseline(), spec),
        r#"non-default capabilities (containers "a", "b" must not include "NET_ADMIN", "SYS_ADMIN" in securityContext.capabilities.add), host namespaces (hostNetwork, hostPID), hostPath volumes (volume "host"), hostPort (container "a" uses hostPorts 10000, 8080), privileged (container "a" must not set securityContext.privileged=true), procMount (container "b" must not set securityContext.procMount to "Unmasked")"#
    );
}

#[test]
fn selinux_seccomp_sysctls_apparmor_and_windows_follow_upstream_wording() {
    let spec = json!({
        "securityContext": {"seLinuxOptions": {"type": "foo", "user": "u"},
                            "seccompProfile": {"type": "Unconfined"},
                            "sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}, {"name": "net.core.somaxconn", "value": "1"}],
                            "appArmorProfile": {"type": "Unconfined"},
                            "windowsOptions": {"hostProcess": true}},
        "containers": [{"name": "e", "securityContext": {"seLinuxOptions": {"type": "bar", "role": "r"}}},
                       {"name": "f", "securityContext": {"seLinuxOptions": {"type": "container_t"}}}],
    });
    assert_eq!(
        detail(baseline(), spec),
        r#"forbidden AppArmor profile (pod must not set AppArmor profile type to "Unconfined"), seLinuxOptions (pod and container "e" set forbidden securityContext.seLinuxOptions: types "bar", "foo"; user may not be set; role may not be set), seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined"), forbidden sysctls (net.core.somaxconn), hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)"#
    );
    // the old annotations count too
    let metadata =
        json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/x": "unconfined"}});
    let failures = evaluate(
        baseline(),
        &metadata,
        &json!({"containers": [{"name": "x"}]}),
    );
    assert_eq!(
        forbidden_detail(&failures),
        r#"forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/x="unconfined"")"#
    );
    // a sysctl allowed since 1.32 is refused at an older pinned version
    let tcp = json!({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1"}]}, "containers": []});
    assert!(detail(baseline(), tcp.clone()).is_empty());
    let v131 = LevelVersion {
        level: Level::Baseline,
        version: Version::Minor(31),
    };
    assert_eq!(detail(v131, tcp), "forbidden sysctls (net.ipv4.tcp_rmem)");
}

#[test]
fn restricted_refuses_root_volumes_and_capabilities() {
    let mut spec = hardened();
    spec["securityContext"]["runAsUser"] = json!(0);
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
    spec["containers"][0]["securityContext"]["capabilities"]["add"] =
        json!(["NET_BIND_SERVICE", "NET_RAW"]);
    spec["volumes"] = json!([{"name": "host", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {}}, {"name": "img", "image": {"reference": "x"}}]);
    assert_eq!(
        detail(restricted(), spec),
        r#"unrestricted capabilities (container "app" must not include "NET_RAW" in securityContext.capabilities.add), restricted volume types (volumes "host", "n" use restricted volume types "hostPath", "nfs"), runAsNonRoot != true (container "app" must not set securityContext.runAsNonRoot=false), runAsUser=0 (pod must not set runAsUser=0)"#
    );
    // pinned below 1.22, restricted still runs the baseline capability check
    let mut spec = hardened();
    spec["containers"][0]["securityContext"] =
        json!({"allowPrivilegeEscalation": false, "capabilities": {"add": ["SYS_ADMIN"]}});
    let v121 = LevelVersion {
        level: Level::Restricted,
        version: Version::Minor(21),
    };
    assert_eq!(
        detail(v121, spec),
        r#"non-default capabilities (container "app" must not include "SYS_ADMIN" in securityContext.capabilities.add)"#
    );
    // init and ephemeral containers are checked too, in upstream's order
    let mut spec = hardened();
    spec["initContainers"] = json!([{"name": "init"}]);
    spec["ephemeralContainers"] = json!([{"name": "debug", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]);
    assert_eq!(
        detail(restricted(), spec),
        r#"allowPrivilegeEscalation != false (container "init" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "init" must set securityContext.capabilities.drop=["ALL"])"#
    );
}

#[test]
fn labels_override_defaults_and_bad_labels_fail_safe() {
    let labels = json!({
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "v1.25",
    });
    let (p, errors) = policy_of(labels.as_object(), &Policy::default());
    assert!(errors.is_empty());
    assert_eq!(p.enforce.to_string(), "baseline:latest");
    assert_eq!(p.warn.to_string(), "restricted:v1.25");
    assert_eq!(p.audit, LevelVersion::PRIVILEGED);
    let bad = json!({
        "pod-security.kubernetes.io/enforce": "strict",
        "pod-security.kubernetes.io/audit": "Restricted",
        "pod-security.kubernetes.io/warn-version": "v1.05",
    });
    let (p, errors) = policy_of(bad.as_object(), &Policy::default());
    assert_eq!(
        p.enforce.level,
        Level::Restricted,
        "a bad enforce level fails closed"
    );
    assert_eq!(
        p.audit.level,
        Level::Privileged,
        "a bad audit level fails open"
    );
    assert_eq!(errors.len(), 3);
    assert_eq!(
        errors[0].message,
        "must be one of privileged, baseline, restricted"
    );
    assert_eq!(errors[2].message, "must be \"latest\" or \"v1.x\"");
    for bad in ["1.25", "v1.", "v2.0", "v1.x", "latest "] {
        assert_eq!(Version::parse(bad), None, "{bad}");
    }
    assert_eq!(Version::parse("v1.0"), Some(Version::Minor(0)));
    assert_eq!(Version::parse("v1.99"), Some(Version::Minor(99)));
}
