//! NetworkPolicy enforced by the agents' nftables, with real pods on two nodes in a
//! lab of network namespaces: default deny, then allowed by pod selector on a named
//! port (across nodes and on the same node), by namespace selector, by ipBlock with an
//! exception; egress isolation; everything open again when the policies go.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::cluster::Cluster;
use common::eventually;

fn pods() -> String {
    let pod = |name: &str, ns: &str, node: &str, labels: &str, web: bool| {
        let (cmd, ports) = if web {
            (
                r#"["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]"#,
                "\n    ports: [{name: http, containerPort: 8080}]",
            )
        } else {
            (r#"["sleep", "3600"]"#, "")
        };
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: docker.io/library/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: {cmd}{ports}\n"
        )
    };
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {team: a}}\n".to_string(),
        pod("web", "default", "n2", "app: web", true),
        pod("client", "default", "n1", "role: client", false),
        pod("neighbour", "default", "n2", "role: client", false),
        pod("other", "default", "n1", "", false),
        pod("visitor", "team", "n1", "", false),
    ]
    .join("\n")
}

/// Whether `pod` (in `ns`) gets the web page at `ip`.
fn reaches(c: &Cluster, ns: &str, pod: &str, ip: &str) -> bool {
    let (_, out) = c.kubectl(
        "1.33",
        &[
            "exec",
            "-n",
            ns,
            pod,
            "--",
            "sh",
            "-c",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8080"),
        ],
    );
    out.contains("200 OK")
}

/// Waits until each of `who` (namespace, pod) reaches (or not) the web pod.
fn expect(c: &Cluster, ip: &str, who: &[(&str, &str, bool)]) {
    for (ns, pod, allowed) in who {
        let what = format!(
            "{ns}/{pod} {} reach web",
            if *allowed { "to" } else { "not to" }
        );
        eventually(20, &what, || {
            (reaches(c, ns, pod, ip) == *allowed).then_some(())
        });
    }
}

fn apply_policy(c: &Cluster, name: &str, spec: &str) {
    c.apply(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}"
    ));
}

fn delete_policy(c: &Cluster, name: &str) {
    let (ok, out) = c.kubectl("1.33", &["delete", "networkpolicy", name]);
    assert!(ok, "{out}");
}

#[test]
fn network_policy_denies_then_allows() {
    let c = Cluster::start_lab(&[], &[("n1", "10.250.0.11"), ("n2", "10.250.0.12")]);
    c.apply(&pods());
    for p in ["web", "client", "neighbour", "other"] {
        c.wait_phase(p, "Running", 90);
    }
    eventually(60, "the visitor to run", || {
        let (_, out) = c.kubectl(
            "1.33",
            &[
                "get",
                "pod",
                "-n",
                "team",
                "visitor",
                "-o",
                "jsonpath={.status.phase}",
            ],
        );
        (out.trim() == "Running").then_some(())
    });
    let web = c.pod_field("web", "{.status.podIP}");
    let everyone = |allowed: bool| {
        vec![
            ("default", "client", allowed),
            ("default", "neighbour", allowed),
            ("default", "other", allowed),
            ("team", "visitor", allowed),
        ]
    };
    expect(&c, &web, &everyone(true));

    // default deny for the web pod
    apply_policy(
        &c,
        "deny",
        "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n",
    );
    expect(&c, &web, &everyone(false));
    // the node itself still reaches the pod (probes)
    let out = c
        .node_netns("n2")
        .command("busybox")
        .args([
            "sh",
            "-c",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {web} 8080"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("200 OK"),
        "the node is always allowed"
    );

    // clients by label on the named port: across nodes and on the same node
    apply_policy(
        &c,
        "clients",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n    ports: [{port: http}]\n",
    );
    expect(
        &c,
        &web,
        &[
            ("default", "client", true),
            ("default", "neighbour", true),
            ("default", "other", false),
            ("team", "visitor", false),
        ],
    );
    // a port the rule does not name stays closed
    apply_policy(
        &c,
        "clients",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n    ports: [{port: 9090}]\n",
    );
    expect(&c, &web, &[("default", "client", false)]);
    delete_policy(&c, "clients");

    // a whole namespace by its labels
    apply_policy(
        &c,
        "team",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: a}}}]\n",
    );
    expect(
        &c,
        &web,
        &[("team", "visitor", true), ("default", "client", false)],
    );
    delete_policy(&c, "team");

    // an ipBlock with an exception
    let client = c.pod_field("client", "{.status.podIP}");
    apply_policy(
        &c,
        "block",
        &format!(
            "  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from: [{{ipBlock: {{cidr: 10.42.0.0/16, except: [{client}/32]}}}}]\n"
        ),
    );
    expect(
        &c,
        &web,
        &[("default", "other", true), ("default", "client", false)],
    );
    delete_policy(&c, "block");
    delete_policy(&c, "deny");
    expect(&c, &web, &everyone(true));

    // egress: the client may send nothing (its node still answers its DNS)
    apply_policy(
        &c,
        "quiet",
        "  podSelector: {matchLabels: {role: client}}\n  policyTypes: [Egress]\n",
    );
    expect(
        &c,
        &web,
        &[("default", "client", false), ("default", "other", true)],
    );
    let (ok, out) = c.kubectl(
        "1.33",
        &[
            "exec",
            "client",
            "--",
            "nslookup",
            "kubernetes.default.svc.cluster.local",
        ],
    );
    assert!(ok && out.contains("10.43.0.1"), "{out}");
    delete_policy(&c, "quiet");
    expect(&c, &web, &everyone(true));
    let table = String::from_utf8_lossy(
        &c.node_netns("n2")
            .command("nft")
            .args(["list", "table", "ip", "skua-policy"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !table.contains("jump"),
        "no pod is isolated any more: {table}"
    );
}
