//! The Pod Security Standards' checks (upstream's `pod-security-admission/policy`):
//! each looks at some fields of a pod's metadata and spec and, when they break the
//! standard, says why in upstream's words (a reason, and a detail naming the
//! containers, volumes or values).

use serde_json::Value;
use std::collections::BTreeSet;

/// A failed check: upstream's `ForbiddenReason` and `ForbiddenDetail`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What is wrong, in a few words (`privileged`).
    pub reason: String,
    /// Who does it and how (`container "a" must not set securityContext.privileged=true`).
    pub detail: String,
}

fn fail(reason: impl Into<String>, detail: impl Into<String>) -> Option<Failure> {
    Some(Failure {
        reason: reason.into(),
        detail: detail.into(),
    })
}

/// `"a", "b"`.
fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|i| format!("\"{}\"", i.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural<'a>(one: &'a str, many: &'a str, n: usize) -> &'a str {
    if n == 1 { one } else { many }
}

/// `container "a"` or `containers "a", "b"`.
fn containers_part(names: &[String]) -> String {
    format!(
        "{} {}",
        plural("container", "containers", names.len()),
        join_quote(names)
    )
}

/// The pod being checked: its metadata and spec.
pub struct Pod<'a> {
    /// `metadata` (annotations are read).
    pub metadata: &'a Value,
    /// `spec`.
    pub spec: &'a Value,
}

impl<'a> Pod<'a> {
    /// Init containers, containers, then ephemeral containers: upstream's visit order.
    fn containers(&self) -> impl Iterator<Item = &'a Value> + 'a {
        let spec = self.spec;
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .flat_map(move |f| spec[f].as_array().into_iter().flatten())
    }

    fn name(c: &Value) -> String {
        c["name"].as_str().unwrap_or("").to_string()
    }

    /// Names of the containers for which `bad` holds, in visit order.
    fn containers_where(&self, mut bad: impl FnMut(&Value) -> bool) -> Vec<String> {
        self.containers()
            .filter(|c| bad(c))
            .map(Pod::name)
            .collect()
    }

    fn pod_context(&self) -> &'a Value {
        &self.spec["securityContext"]
    }

    fn windows(&self) -> bool {
        self.spec["os"]["name"] == "windows"
    }

    fn volumes(&self) -> impl Iterator<Item = &'a Value> + 'a {
        self.spec["volumes"].as_array().into_iter().flatten()
    }
}

/// `pod and containers "a", "b"`: who sets something, joined with " and ".
fn setters(pod: bool, containers: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if pod {
        out.push("pod".to_string());
    }
    if !containers.is_empty() {
        out.push(containers_part(containers));
    }
    out
}

const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";

pub fn app_armor(p: &Pod) -> Option<Failure> {
    let bad = |v: &Value| {
        v.as_str()
            .is_some_and(|t| t != "RuntimeDefault" && t != "Localhost")
    };
    let mut values = BTreeSet::new();
    let pod_type = &p.pod_context()["appArmorProfile"]["type"];
    let pod_bad = bad(pod_type);
    if pod_bad {
        values.insert(pod_type.as_str().unwrap_or("").to_string());
    }
    let containers = p.containers_where(|c| {
        let t = &c["securityContext"]["appArmorProfile"]["type"];
        if bad(t) {
            values.insert(t.as_str().unwrap_or("").to_string());
        }
        bad(t)
    });
    let mut values: Vec<String> = values.into_iter().collect();
    let mut who = setters(pod_bad, &containers);
    let mut annotations: Vec<String> = p.metadata["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(APPARMOR_ANNOTATION))
        .filter_map(|(k, v)| {
            let v = v.as_str().unwrap_or("");
            let ok = v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
            (!ok).then(|| format!("{k}={v:?}"))
        })
        .collect();
    annotations.sort();
    if !annotations.is_empty() {
        who.push(plural("annotation", "annotations", annotations.len()).to_string());
        values.extend(annotations);
    }
    if values.is_empty() {
        return None;
    }
    fail(
        plural(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            who.join(" and "),
            join_quote(&values)
        ),
    )
}

const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn adds(c: &Value) -> impl Iterator<Item = &str> {
    c["securityContext"]["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Containers adding capabilities beyond `allowed`, and the capabilities.
fn adding_beyond(p: &Pod, allowed: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut caps = BTreeSet::new();
    let containers = p.containers_where(|c| {
        let extra: Vec<&str> = adds(c).filter(|a| !allowed.contains(a)).collect();
        caps.extend(extra.iter().map(|s| s.to_string()));
        !extra.is_empty()
    });
    (containers, caps.into_iter().collect())
}

fn must_not_include(containers: &[String], caps: &[String]) -> String {
    format!(
        "{} must not include {} in securityContext.capabilities.add",
        containers_part(containers),
        join_quote(caps)
    )
}

pub fn capabilities_baseline(p: &Pod) -> Option<Failure> {
    let (containers, caps) = adding_beyond(p, &BASELINE_CAPABILITIES);
    if containers.is_empty() {
        return None;
    }
    fail(
        "non-default capabilities",
        must_not_include(&containers, &caps),
    )
}

pub fn host_namespaces(p: &Pod) -> Option<Failure> {
    let set: Vec<&str> = ["hostIPC", "hostNetwork", "hostPID"]
        .into_iter()
        .filter(|f| p.spec[*f] == true)
        .collect();
    if set.is_empty() {
        return None;
    }
    fail("host namespaces", set.join(", "))
}

fn volumes_part(names: &[String]) -> String {
    format!(
        "{} {}",
        plural("volume", "volumes", names.len()),
        join_quote(names)
    )
}

pub fn host_path_volumes(p: &Pod) -> Option<Failure> {
    let names: Vec<String> = p
        .volumes()
        .filter(|v| v["hostPath"].is_object())
        .map(Pod::name)
        .collect();
    if names.is_empty() {
        return None;
    }
    fail("hostPath volumes", volumes_part(&names))
}

pub fn host_ports(p: &Pod) -> Option<Failure> {
    let mut ports = BTreeSet::new();
    let containers = p.containers_where(|c| {
        let mine: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|port| port["hostPort"].as_i64())
            .filter(|hp| *hp != 0)
            .map(|hp| hp.to_string())
            .collect();
        ports.extend(mine.iter().cloned());
        !mine.is_empty()
    });
    if containers.is_empty() {
        return None;
    }
    let ports: Vec<String> = ports.into_iter().collect();
    fail(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_part(&containers),
            plural("uses", "use", containers.len()),
            plural("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        ),
    )
}

pub fn privileged(p: &Pod) -> Option<Failure> {
    let containers = p.containers_where(|c| c["securityContext"]["privileged"] == true);
    if containers.is_empty() {
        return None;
    }
    fail(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_part(&containers)
        ),
    )
}

pub fn proc_mount(p: &Pod) -> Option<Failure> {
    let mut values = BTreeSet::new();
    let containers = p.containers_where(|c| {
        let m = c["securityContext"]["procMount"].as_str().unwrap_or("");
        let bad = !m.is_empty() && m != "Default";
        if bad {
            values.insert(m.to_string());
        }
        bad
    });
    if containers.is_empty() {
        return None;
    }
    let values: Vec<String> = values.into_iter().collect();
    fail(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_part(&containers),
            join_quote(&values)
        ),
    )
}

pub fn se_linux(p: &Pod, minor: u32) -> Option<Failure> {
    let mut allowed = vec!["", "container_t", "container_init_t", "container_kvm_t"];
    if minor >= 31 {
        allowed.push("container_engine_t");
    }
    let (mut types, mut user, mut role) = (BTreeSet::new(), false, false);
    let mut check = |o: &Value| {
        let t = o["type"].as_str().unwrap_or("");
        let bad_type = !allowed.contains(&t);
        if bad_type {
            types.insert(t.to_string());
        }
        let u = !o["user"].as_str().unwrap_or("").is_empty();
        let r = !o["role"].as_str().unwrap_or("").is_empty();
        user |= u;
        role |= r;
        bad_type || u || r
    };
    let pod_bad = check(&p.pod_context()["seLinuxOptions"]);
    let containers = p.containers_where(|c| check(&c["securityContext"]["seLinuxOptions"]));
    if !pod_bad && containers.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !types.is_empty() {
        let types: Vec<String> = types.into_iter().collect();
        parts.push(format!(
            "{} {}",
            plural("type", "types", types.len()),
            join_quote(&types)
        ));
    }
    if user {
        parts.push("user may not be set".into());
    }
    if role {
        parts.push("role may not be set".into());
    }
    fail(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters(pod_bad, &containers).join(" and "),
            parts.join("; ")
        ),
    )
}

fn seccomp_type(context: &Value) -> Option<&str> {
    context["seccompProfile"]
        .is_object()
        .then(|| context["seccompProfile"]["type"].as_str().unwrap_or(""))
}

fn seccomp_ok(t: &str) -> bool {
    t == "RuntimeDefault" || t == "Localhost"
}

/// Who sets a seccomp profile type other than RuntimeDefault or Localhost, and which.
fn seccomp_bad(p: &Pod) -> (bool, Vec<String>, Vec<String>) {
    let mut values = BTreeSet::new();
    let pod_type = seccomp_type(p.pod_context());
    let pod_bad = pod_type.is_some_and(|t| !seccomp_ok(t));
    if let (true, Some(t)) = (pod_bad, pod_type) {
        values.insert(t.to_string());
    }
    let containers = p.containers_where(|c| match seccomp_type(&c["securityContext"]) {
        Some(t) if !seccomp_ok(t) => {
            values.insert(t.to_string());
            true
        }
        _ => false,
    });
    (pod_bad, containers, values.into_iter().collect())
}

fn seccomp_must_not(pod: bool, containers: &[String], values: &[String]) -> String {
    format!(
        "{} must not set securityContext.seccompProfile.type to {}",
        setters(pod, containers).join(" and "),
        join_quote(values)
    )
}

pub fn seccomp_baseline(p: &Pod, minor: u32) -> Option<Failure> {
    if minor < 19 {
        return seccomp_annotations(p);
    }
    let (pod, containers, values) = seccomp_bad(p);
    if !pod && containers.is_empty() {
        return None;
    }
    fail(
        "seccompProfile",
        seccomp_must_not(pod, &containers, &values),
    )
}

/// Before 1.19 seccomp was set by annotations.
fn seccomp_annotations(p: &Pod) -> Option<Failure> {
    let ok =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let annotations = &p.metadata["annotations"];
    let mut keys = vec!["seccomp.security.alpha.kubernetes.io/pod".to_string()];
    keys.extend(p.containers().map(|c| {
        format!(
            "container.seccomp.security.alpha.kubernetes.io/{}",
            Pod::name(c)
        )
    }));
    let mut bad: Vec<String> = keys
        .iter()
        .filter_map(|k| annotations[k].as_str().map(|v| (k, v)))
        .filter(|(_, v)| !ok(v))
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    bad.sort();
    if bad.is_empty() {
        return None;
    }
    fail(
        "seccompProfile",
        format!(
            "{} {}",
            plural("forbidden annotation", "forbidden annotations", bad.len()),
            bad.join(", ")
        ),
    )
}

pub fn sysctls(p: &Pod, minor: u32) -> Option<Failure> {
    let mut allowed = vec![
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    ];
    if minor >= 27 {
        allowed.push("net.ipv4.ip_local_reserved_ports");
    }
    if minor >= 29 {
        allowed.extend([
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ]);
    }
    if minor >= 32 {
        allowed.extend(["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"]);
    }
    let bad: Vec<&str> = p.pod_context()["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !allowed.contains(n))
        .collect();
    if bad.is_empty() {
        return None;
    }
    fail("forbidden sysctls", bad.join(", "))
}

pub fn windows_host_process(p: &Pod) -> Option<Failure> {
    let host = |ctx: &Value| ctx["windowsOptions"]["hostProcess"] == true;
    let pod = host(p.pod_context());
    let containers = p.containers_where(|c| host(&c["securityContext"]));
    if !pod && containers.is_empty() {
        return None;
    }
    fail(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters(pod, &containers).join(" and ")
        ),
    )
}

pub fn allow_privilege_escalation(p: &Pod, minor: u32) -> Option<Failure> {
    if minor >= 25 && p.windows() {
        return None;
    }
    let containers =
        p.containers_where(|c| c["securityContext"]["allowPrivilegeEscalation"] != false);
    if containers.is_empty() {
        return None;
    }
    fail(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_part(&containers)
        ),
    )
}

pub fn capabilities_restricted(p: &Pod, minor: u32) -> Option<Failure> {
    if minor >= 25 && p.windows() {
        return None;
    }
    let missing = p.containers_where(|c| {
        !c["securityContext"]["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"))
    });
    let (adders, caps) = adding_beyond(p, &["NET_BIND_SERVICE"]);
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_part(&missing)
        ));
    }
    if !adders.is_empty() {
        parts.push(must_not_include(&adders, &caps));
    }
    if parts.is_empty() {
        return None;
    }
    fail("unrestricted capabilities", parts.join("; "))
}

/// The volume sources restricted allows (`image` since 1.33).
const RESTRICTED_OK: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
    "image",
];

/// The source named for a refused volume: the first of these it sets.
const RESTRICTED_TYPES: [&str; 21] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

pub fn restricted_volumes(p: &Pod) -> Option<Failure> {
    let mut types = BTreeSet::new();
    let names: Vec<String> = p
        .volumes()
        .filter(|v| {
            if RESTRICTED_OK.iter().any(|k| !v[*k].is_null()) {
                return false;
            }
            let t = RESTRICTED_TYPES
                .iter()
                .find(|k| !v[**k].is_null())
                .copied()
                .unwrap_or("unknown");
            types.insert(t.to_string());
            true
        })
        .map(Pod::name)
        .collect();
    if names.is_empty() {
        return None;
    }
    let types: Vec<String> = types.into_iter().collect();
    fail(
        "restricted volume types",
        format!(
            "{} {} {} {}",
            volumes_part(&names),
            plural("uses", "use", names.len()),
            plural(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&types)
        ),
    )
}

pub fn run_as_non_root(p: &Pod) -> Option<Failure> {
    let pod = &p.pod_context()["runAsNonRoot"];
    let pod_false = *pod == false;
    let pod_true = *pod == true;
    let explicit = p.containers_where(|c| c["securityContext"]["runAsNonRoot"] == false);
    let implicit =
        p.containers_where(|c| c["securityContext"]["runAsNonRoot"].is_null() && !pod_true);
    if pod_false || !explicit.is_empty() {
        return fail(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters(pod_false, &explicit).join(" and ")
            ),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    fail(
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_part(&implicit)
        ),
    )
}

pub fn run_as_user(p: &Pod) -> Option<Failure> {
    let root = |ctx: &Value| ctx["runAsUser"].as_i64() == Some(0);
    let pod = root(p.pod_context());
    let containers = p.containers_where(|c| root(&c["securityContext"]));
    if !pod && containers.is_empty() {
        return None;
    }
    fail(
        "runAsUser=0",
        format!(
            "{} must not set runAsUser=0",
            setters(pod, &containers).join(" and ")
        ),
    )
}

pub fn seccomp_restricted(p: &Pod, minor: u32) -> Option<Failure> {
    if minor >= 25 && p.windows() {
        return None;
    }
    let (pod_bad, containers_bad, values) = seccomp_bad(p);
    if pod_bad || !containers_bad.is_empty() {
        return fail(
            "seccompProfile",
            seccomp_must_not(pod_bad, &containers_bad, &values),
        );
    }
    let pod_ok = seccomp_type(p.pod_context()).is_some_and(seccomp_ok);
    if pod_ok {
        return None;
    }
    let unset = p.containers_where(|c| seccomp_type(&c["securityContext"]).is_none());
    if unset.is_empty() {
        return None;
    }
    fail(
        "seccompProfile",
        format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            containers_part(&unset)
        ),
    )
}
