//! From a pod's spec to what the runtime is asked for: the sandbox config, each
//! container's config, resources, security context, environment and DNS — as
//! upstream's kuberuntime builds them. Pure: no I/O, so it is unit-tested here.

use super::Settings;
use crate::api::quantity;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, DnsConfig, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Labels the runtime keeps on every sandbox and container, as upstream names them:
/// how a restarted kubelet finds what belongs to which pod.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Annotation with the hash of the container's spec: a changed spec (a new image)
/// means a new container.
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
/// Annotation: the grace period the container is stopped with.
pub const GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// The labels identifying a pod's objects in the runtime.
pub fn pod_labels(pod: &Value) -> HashMap<String, String> {
    let m = &pod["metadata"];
    HashMap::from([
        (POD_UID.to_string(), s(&m["uid"])),
        (POD_NAME.to_string(), s(&m["name"])),
        (POD_NAMESPACE.to_string(), s(&m["namespace"])),
    ])
}

/// `<ns>_<name>_<uid>`: the pod's directory under the pod log root.
pub fn log_dir_name(pod: &Value) -> String {
    let m = &pod["metadata"];
    format!("{}_{}_{}", s(&m["namespace"]), s(&m["name"]), s(&m["uid"]))
}

/// The pod's cgroup, under upstream's `/kubepods` hierarchy by QoS class.
pub fn cgroup_parent(pod: &Value) -> String {
    let uid = s(&pod["metadata"]["uid"]);
    match crate::api::defaults::qos_class(pod) {
        "Guaranteed" => format!("/kubepods/pod{uid}"),
        "Burstable" => format!("/kubepods/burstable/pod{uid}"),
        _ => format!("/kubepods/besteffort/pod{uid}"),
    }
}

fn host_network(pod: &Value) -> bool {
    pod["spec"]["hostNetwork"].as_bool().unwrap_or(false)
}

/// The DNS a pod gets by its `dnsPolicy` (upstream's dns.go): the cluster's DNS with
/// the namespace's search path, the node's own resolv.conf, or only `dnsConfig`.
pub fn dns_config(pod: &Value, settings: &Settings, host_resolv: &str) -> DnsConfig {
    let spec = &pod["spec"];
    let ns = s(&pod["metadata"]["namespace"]);
    let policy = spec["dnsPolicy"].as_str().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network(pod),
        _ => false,
    } && !settings.cluster_dns.is_empty();
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    let (host_servers, host_searches, host_options) = parse_resolv(host_resolv);
    if cluster {
        servers = settings.cluster_dns.clone();
        let d = &settings.cluster_domain;
        searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
        searches.extend(host_searches);
        options = vec!["ndots:5".to_string()];
    } else if policy != "None" {
        (servers, searches, options) = (host_servers, host_searches, host_options);
    }
    let extra = &spec["dnsConfig"];
    for v in extra["nameservers"].as_array().into_iter().flatten() {
        servers.push(s(v));
    }
    for v in extra["searches"].as_array().into_iter().flatten() {
        searches.push(s(v));
    }
    for o in extra["options"].as_array().into_iter().flatten() {
        let name = s(&o["name"]);
        options.retain(|x| x.split(':').next() != Some(name.as_str()));
        options.push(match o["value"].as_str() {
            Some(v) => format!("{name}:{v}"),
            None => name,
        });
    }
    servers.dedup();
    searches.dedup();
    searches.truncate(32);
    DnsConfig {
        servers,
        searches,
        options,
    }
}

/// Servers, search domains and options of a resolv.conf text.
pub fn parse_resolv(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(String::from)),
            Some("search" | "domain") => searches = words.map(String::from).collect(),
            Some("options") => options.extend(words.map(String::from)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// The sandbox a pod runs in.
pub fn sandbox_config(
    pod: &Value,
    settings: &Settings,
    attempt: u32,
    host_resolv: &str,
) -> PodSandboxConfig {
    let m = &pod["metadata"];
    let spec = &pod["spec"];
    let mut labels = pod_labels(pod);
    for (k, v) in m["labels"].as_object().into_iter().flatten() {
        labels.entry(k.clone()).or_insert_with(|| s(v));
    }
    let annotations = m["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), s(v)))
        .collect();
    let hostname = spec["hostname"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| s(&m["name"]).chars().take(63).collect());
    let port_mappings = containers(pod)
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["hostPort"].as_i64().unwrap_or(0) > 0)
        .map(|p| PortMapping {
            protocol: protocol(p["protocol"].as_str()) as i32,
            container_port: p["containerPort"].as_i64().unwrap_or(0) as i32,
            host_port: p["hostPort"].as_i64().unwrap_or(0) as i32,
            host_ip: s(&p["hostIP"]),
        })
        .collect();
    let privileged = all_containers(pod).any(|c| c["securityContext"]["privileged"] == true);
    let mode = |host: bool, shared: NamespaceMode| {
        if host {
            NamespaceMode::Node as i32
        } else {
            shared as i32
        }
    };
    let psc = &spec["securityContext"];
    let pid = if spec["shareProcessNamespace"] == true {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: s(&m["name"]),
            uid: s(&m["uid"]),
            namespace: s(&m["namespace"]),
            attempt,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            hostname
        },
        log_directory: settings
            .pod_log_dir
            .join(log_dir_name(pod))
            .to_string_lossy()
            .into_owned(),
        dns_config: Some(dns_config(pod, settings, host_resolv)),
        port_mappings,
        labels,
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(pod),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: mode(host_network(pod), NamespaceMode::Pod),
                    pid: mode(spec["hostPID"] == true, pid),
                    ipc: mode(spec["hostIPC"] == true, NamespaceMode::Pod),
                    ..Default::default()
                }),
                run_as_user: psc["runAsUser"].as_i64().map(|value| Int64Value { value }),
                run_as_group: psc["runAsGroup"].as_i64().map(|value| Int64Value { value }),
                supplemental_groups: groups(psc),
                privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn protocol(p: Option<&str>) -> Protocol {
    match p {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

fn groups(psc: &Value) -> Vec<i64> {
    let mut g: Vec<i64> = psc["supplementalGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect();
    g.extend(psc["fsGroup"].as_i64());
    g
}

/// The pod's app containers.
pub fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod["spec"]["containers"].as_array().into_iter().flatten()
}

/// The pod's init containers, in order.
pub fn init_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
}

fn all_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    init_containers(pod).chain(containers(pod))
}

/// A hash of the container's spec: the runtime keeps it, and a container whose spec
/// changed since it was made is replaced.
pub fn container_hash(container: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    container.to_string().hash(&mut h);
    format!("{:x}", h.finish())
}

/// CPU and memory for the runtime, as upstream's kuberuntime: shares from the request
/// (or the limit), a CFS quota from the limit, the memory limit, and the OOM score by
/// QoS class.
pub fn resources(container: &Value, qos: &str, node_memory: f64) -> LinuxContainerResources {
    let r = &container["resources"];
    let cpu_limit = quantity::of(&r["limits"]["cpu"]);
    let cpu_request = quantity::of(&r["requests"]["cpu"]).or(cpu_limit);
    let memory_limit = quantity::of(&r["limits"]["memory"]);
    let memory_request = quantity::of(&r["requests"]["memory"]).or(memory_limit);
    let milli = |cores: f64| (cores * 1000.0).round() as i64;
    let cpu_shares = cpu_request.map_or(2, |c| (milli(c) * 1024 / 1000).max(2));
    let (cpu_period, cpu_quota) = match cpu_limit {
        Some(c) => (100_000, (milli(c) * 100_000 / 1000).max(1000)),
        None => (0, 0),
    };
    let oom_score_adj = match qos {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let request = memory_request.unwrap_or(0.0);
            let adj = if node_memory > 0.0 {
                1000 - (1000.0 * request / node_memory) as i64
            } else {
                999
            };
            adj.clamp(2, 999)
        }
    };
    LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: memory_limit.map_or(0, |m| m as i64),
        oom_score_adj,
        ..Default::default()
    }
}

/// The paths upstream masks or makes read-only in unprivileged containers.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The container's security context, the pod's as its default.
pub fn security_context(pod: &Value, container: &Value) -> LinuxContainerSecurityContext {
    let psc = &pod["spec"]["securityContext"];
    let csc = &container["securityContext"];
    let pick = |k: &str| csc[k].as_i64().or_else(|| psc[k].as_i64());
    let privileged = csc["privileged"] == true;
    // as the user wrote them: the runtime adds the `CAP_` prefix itself
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|c| s(c).to_ascii_uppercase())
            .collect()
    };
    let spec = &pod["spec"];
    let host = |k: &str| spec[k] == true;
    LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: names(&csc["capabilities"]["add"]),
            drop_capabilities: names(&csc["capabilities"]["drop"]),
            ..Default::default()
        }),
        privileged,
        namespace_options: Some(NamespaceOption {
            network: if host("hostNetwork") {
                NamespaceMode::Node
            } else {
                NamespaceMode::Pod
            } as i32,
            pid: if host("hostPID") {
                NamespaceMode::Node
            } else if host("shareProcessNamespace") {
                NamespaceMode::Pod
            } else {
                NamespaceMode::Container
            } as i32,
            ipc: if host("hostIPC") {
                NamespaceMode::Node
            } else {
                NamespaceMode::Pod
            } as i32,
            ..Default::default()
        }),
        run_as_user: pick("runAsUser").map(|value| Int64Value { value }),
        run_as_group: pick("runAsGroup").map(|value| Int64Value { value }),
        readonly_rootfs: csc["readOnlyRootFilesystem"] == true,
        supplemental_groups: groups(psc),
        no_new_privs: csc["allowPrivilegeEscalation"] == false && !privileged,
        masked_paths: if privileged {
            Vec::new()
        } else {
            MASKED.iter().map(|p| p.to_string()).collect()
        },
        readonly_paths: if privileged {
            Vec::new()
        } else {
            READ_ONLY.iter().map(|p| p.to_string()).collect()
        },
        ..Default::default()
    }
}

/// One container's config; `envs` and `mounts` come resolved from the caller.
pub fn container_config(
    pod: &Value,
    container: &Value,
    image: &str,
    attempt: u32,
    envs: Vec<(String, String)>,
    mounts: Vec<Mount>,
    node_memory: f64,
) -> ContainerConfig {
    let name = s(&container["name"]);
    let strings =
        |v: &Value| -> Vec<String> { v.as_array().into_iter().flatten().map(s).collect() };
    // $(VAR) in command and args refers to the container's environment
    let vars: BTreeMap<String, String> = envs.iter().cloned().collect();
    let expand_all = |v: Vec<String>| v.iter().map(|a| expand(a, &vars)).collect();
    let mut labels = pod_labels(pod);
    labels.insert(CONTAINER_NAME.into(), name.clone());
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(30);
    let annotations = HashMap::from([
        (CONTAINER_HASH.to_string(), container_hash(container)),
        (
            "io.kubernetes.container.restartCount".to_string(),
            attempt.to_string(),
        ),
        (GRACE.to_string(), grace.to_string()),
    ]);
    let qos = crate::api::defaults::qos_class(pod);
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.clone(),
            attempt,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: expand_all(strings(&container["command"])),
        args: expand_all(strings(&container["args"])),
        working_dir: s(&container["workingDir"]),
        envs: envs
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
        mounts,
        labels,
        annotations,
        log_path: format!("{name}/{attempt}.log"),
        stdin: container["stdin"] == true,
        stdin_once: container["stdinOnce"] == true,
        tty: container["tty"] == true,
        linux: Some(LinuxContainerConfig {
            resources: Some(resources(container, qos, node_memory)),
            security_context: Some(security_context(pod, container)),
        }),
        ..Default::default()
    }
}

/// Expands `$(VAR)` from `vars` as upstream's expansion does: `$$` is a literal `$`,
/// and a reference to an unknown variable is left as written.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment variables upstream gives every container for the services of its
/// namespace (and the master service `kubernetes`): `{NAME}_SERVICE_HOST`,
/// `{NAME}_SERVICE_PORT[_{PORT}]` and the Docker-link variables.
pub fn service_env(services: &[Value], namespace: &str, links: bool) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &Value> = BTreeMap::new();
    for svc in services {
        let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
        let name = s(&svc["metadata"]["name"]);
        let master = ns == "default" && name == "kubernetes";
        if ns == namespace && (links || master) {
            chosen.insert(name, svc);
        } else if master {
            chosen.entry(name).or_insert(svc);
        }
    }
    let mut out = Vec::new();
    for (name, svc) in chosen {
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        let ip = s(&svc["spec"]["clusterIP"]);
        let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        if let Some(first) = ports.first() {
            out.push((format!("{prefix}_SERVICE_PORT"), first["port"].to_string()));
        }
        for p in &ports {
            if let Some(pn) = p["name"].as_str().filter(|n| !n.is_empty()) {
                let pn = pn.to_ascii_uppercase().replace('-', "_");
                out.push((format!("{prefix}_SERVICE_PORT_{pn}"), p["port"].to_string()));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            let port = p["port"].to_string();
            let url = format!("{}://{ip}:{port}", proto.to_ascii_lowercase());
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let base = format!("{prefix}_PORT_{port}_{proto}");
            out.push((base.clone(), url));
            out.push((format!("{base}_PROTO"), proto.to_ascii_lowercase()));
            out.push((format!("{base}_PORT"), port));
            out.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    out
}

/// A `fieldRef` of the downward API (`metadata.name`, `metadata.labels['k']`,
/// `status.podIP`, …), or `None` if the path is not one upstream supports.
pub fn field_ref(pod: &Value, path: &str, host_ip: &str, pod_ip: &str) -> Option<String> {
    let m = &pod["metadata"];
    let map_text = |v: &Value| {
        let mut lines: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", Value::from(s(v))))
            .collect();
        lines.sort();
        lines.join("\n")
    };
    let keyed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
    };
    Some(match path {
        "metadata.name" => s(&m["name"]),
        "metadata.namespace" => s(&m["namespace"]),
        "metadata.uid" => s(&m["uid"]),
        "metadata.labels" => map_text(&m["labels"]),
        "metadata.annotations" => map_text(&m["annotations"]),
        "spec.nodeName" => s(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => s(&pod["spec"]["serviceAccountName"]),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        _ => {
            if let Some(k) = keyed("metadata.labels") {
                s(&m["labels"][k])
            } else if let Some(k) = keyed("metadata.annotations") {
                s(&m["annotations"][k])
            } else {
                return None;
            }
        }
    })
}

/// A `resourceFieldRef`: the container's request or limit in units of `divisor`
/// (rounded up, as upstream); a missing limit is the node's allocatable.
pub fn resource_field_ref(
    container: &Value,
    resource: &str,
    divisor: Option<&str>,
    node_cpu: f64,
    node_memory: f64,
) -> Option<String> {
    let r = &container["resources"];
    let (kind, name) = resource.split_once('.')?;
    let value = match (kind, name) {
        ("limits", "cpu") => quantity::of(&r["limits"]["cpu"]).unwrap_or(node_cpu),
        ("limits", "memory") => quantity::of(&r["limits"]["memory"]).unwrap_or(node_memory),
        ("requests", "cpu") => quantity::of(&r["requests"]["cpu"]).unwrap_or(0.0),
        ("requests", "memory") => quantity::of(&r["requests"]["memory"]).unwrap_or(0.0),
        ("limits" | "requests", other) => quantity::of(&r[kind][other]).unwrap_or(0.0),
        _ => return None,
    };
    let divisor = divisor.and_then(quantity::parse).unwrap_or(1.0);
    Some(format!(
        "{}",
        (value / divisor - 1e-9).ceil().max(0.0) as i64
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings::for_tests()
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo $(GREETING) $$(X)"],
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
        })
    }

    #[test]
    fn the_sandbox_carries_identity_dns_ports_and_cgroup() {
        let c = sandbox_config(
            &pod(),
            &settings(),
            0,
            "nameserver 192.0.2.53\nsearch corp.example\n",
        );
        let m = c.metadata.as_ref().unwrap();
        assert_eq!(
            (m.name.as_str(), m.uid.as_str(), m.namespace.as_str()),
            ("web", "u-1", "shop")
        );
        assert_eq!(c.hostname, "web");
        assert_eq!(c.labels[POD_UID], "u-1");
        assert_eq!(c.labels["app"], "web");
        assert!(
            c.log_directory.ends_with("/shop_web_u-1"),
            "{}",
            c.log_directory
        );
        let dns = c.dns_config.unwrap();
        assert_eq!(dns.servers, vec!["10.43.0.10"]);
        assert_eq!(
            dns.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(dns.options, vec!["ndots:5"]);
        assert_eq!(c.port_mappings.len(), 1);
        assert_eq!(c.port_mappings[0].host_port, 8080);
        let linux = c.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/besteffort/podu-1");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, NamespaceMode::Pod as i32);
        // host network: the node's DNS and network namespace
        let mut p = pod();
        p["spec"]["hostNetwork"] = json!(true);
        let c = sandbox_config(&p, &settings(), 0, "nameserver 192.0.2.53\n");
        assert_eq!(c.dns_config.unwrap().servers, vec!["192.0.2.53"]);
        let ns = c
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);
    }

    #[test]
    fn containers_get_expanded_commands_resources_and_security() {
        let mut p = pod();
        p["spec"]["containers"][0]["resources"] =
            json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
        p["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1000, "capabilities": {"add": ["NET_ADMIN"]}, "readOnlyRootFilesystem": true});
        let c = &p["spec"]["containers"][0];
        let cfg = container_config(
            &p,
            c,
            "docker.io/library/busybox:latest",
            2,
            vec![("GREETING".into(), "hi".into())],
            vec![],
            1e9,
        );
        assert_eq!(cfg.command, vec!["sh", "-c", "echo hi $(X)"]);
        assert_eq!(cfg.log_path, "c/2.log");
        assert_eq!(cfg.image.unwrap().image, "docker.io/library/busybox:latest");
        assert_eq!(cfg.labels[CONTAINER_NAME], "c");
        let linux = cfg.linux.unwrap();
        let r = linux.resources.unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period),
            (512, 50_000, 100_000)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.oom_score_adj, -997, "limits only: Guaranteed");
        let sc = linux.security_context.unwrap();
        assert_eq!(sc.run_as_user.unwrap().value, 1000);
        assert!(sc.readonly_rootfs);
        assert_eq!(sc.capabilities.unwrap().add_capabilities, vec!["NET_ADMIN"]);
        assert!(!sc.masked_paths.is_empty());
    }

    #[test]
    fn expansion_follows_upstream() {
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$-$(", &vars), "1-$(B)-$(A)-$-$(");
    }

    #[test]
    fn service_variables_name_every_port() {
        let svc = json!({"metadata": {"name": "my-db", "namespace": "shop"},
            "spec": {"clusterIP": "10.43.0.7", "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]}});
        let master = json!({"metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}});
        let headless =
            json!({"metadata": {"name": "h", "namespace": "shop"}, "spec": {"clusterIP": "None"}});
        let env: BTreeMap<_, _> =
            service_env(&[svc.clone(), master.clone(), headless], "shop", true)
                .into_iter()
                .collect();
        assert_eq!(env["MY_DB_SERVICE_HOST"], "10.43.0.7");
        assert_eq!(env["MY_DB_SERVICE_PORT"], "5432");
        assert_eq!(env["MY_DB_SERVICE_PORT_SQL"], "5432");
        assert_eq!(env["MY_DB_PORT"], "tcp://10.43.0.7:5432");
        assert_eq!(env["MY_DB_PORT_5432_TCP_ADDR"], "10.43.0.7");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
        assert!(!env.contains_key("H_SERVICE_HOST"));
        // enableServiceLinks: false keeps only the master service
        let env: BTreeMap<_, _> = service_env(&[svc, master], "shop", false)
            .into_iter()
            .collect();
        assert!(!env.contains_key("MY_DB_SERVICE_HOST"));
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
    }

    #[test]
    fn downward_api_fields_and_resources() {
        let p = pod();
        assert_eq!(
            field_ref(&p, "metadata.labels['app']", "h", "p").unwrap(),
            "web"
        );
        assert_eq!(
            field_ref(&p, "metadata.labels", "h", "p").unwrap(),
            "app=\"web\""
        );
        assert_eq!(
            field_ref(&p, "status.podIP", "h", "10.42.0.5").unwrap(),
            "10.42.0.5"
        );
        assert!(field_ref(&p, "spec.nope", "h", "p").is_none());
        let c = json!({"resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}});
        assert_eq!(
            resource_field_ref(&c, "limits.memory", Some("1Mi"), 2.0, 1e9).unwrap(),
            "64"
        );
        assert_eq!(
            resource_field_ref(&c, "requests.cpu", Some("1m"), 2.0, 1e9).unwrap(),
            "250"
        );
        assert_eq!(
            resource_field_ref(&c, "limits.cpu", None, 2.0, 1e9).unwrap(),
            "2"
        );
    }
}
