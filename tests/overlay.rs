//! The overlay across nodes, with real pods, real containerd and the kernel's own
//! VXLAN, routes and ARP/FDB entries: a control plane and agents each in a network
//! namespace of its own, joined by bridges in a lab namespace the test creates (no
//! route to the machine's real interfaces; everything deleted afterwards).
//! vxlan, host-gw and auto; pod-to-pod keeps its source address, traffic leaving the
//! cluster is masqueraded; pod → ClusterIP and lab host → NodePort on either node;
//! a node leaving takes its route with it; a restart removes stale routes.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::cluster::Cluster;
use common::eventually;
use std::time::{Duration, Instant};

/// A busybox httpd on `node` whose /cgi-bin/ip answers the caller's address as it
/// arrived (REMOTE_ADDR), so a test sees whether it was masqueraded.
fn web(name: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: docker.io/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    )
}

fn client(name: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: docker.io/library/busybox:latest, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}}
"#
    )
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// GET `path` from `ip:port` with busybox nc; the answer's last line.
fn http_get(ip: &str, port: &str, path: &str) -> String {
    format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}")
}

/// The answer's last line; an IPv4-mapped address (busybox httpd's REMOTE_ADDR,
/// `[::ffff:10.42.0.2]`) as the IPv4 address it is.
fn last_line(out: &str) -> Option<String> {
    out.contains("200 OK").then(|| {
        let l = out.trim().lines().last().unwrap_or("").trim();
        l.trim_start_matches("[::ffff:")
            .trim_end_matches(']')
            .to_string()
    })
}

fn from_pod(c: &Cluster, pod: &str, ip: &str, port: &str, path: &str) -> Option<String> {
    let (ok, out) = c.kubectl(
        "1.33",
        &["exec", pod, "--", "sh", "-c", &http_get(ip, port, path)],
    );
    if ok { last_line(&out) } else { None }
}

fn from_lab(c: &Cluster, ip: &str, port: &str) -> Option<String> {
    let out = c
        .netns
        .command("busybox")
        .args(["sh", "-c", &http_get(ip, port, "/")])
        .output()
        .unwrap();
    last_line(&String::from_utf8_lossy(&out.stdout))
}

fn jsonpath(c: &Cluster, what: &str, path: &str) -> String {
    let (_, out) = c.kubectl("1.33", &["get", what, "-o", &format!("jsonpath={path}")]);
    out.trim().to_string()
}

/// `ip route` of skua's own routes (proto 66) in node `name`'s namespace.
fn overlay_routes(c: &Cluster, name: &str) -> String {
    let out = c
        .node_netns(name)
        .command("ip")
        .args(["route", "show", "proto", "66"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_node(c: &Cluster, name: &str, args: &[&str]) -> String {
    let out = c
        .node_netns(name)
        .command(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for pods and answers the web pod's address and the client's.
fn start_pods(c: &Cluster, pods: &[(&str, &str, bool)]) {
    for (name, node, is_web) in pods {
        c.apply(&if *is_web {
            web(name, node)
        } else {
            client(name, node)
        });
    }
    for (name, _, _) in pods {
        c.wait_phase(name, "Running", 90);
    }
}

/// `client` reaches `web` (on another node) directly, and sees it answer with the
/// client's own pod address: pod-to-pod traffic is not masqueraded.
fn assert_pod_to_pod(c: &Cluster, client: &str, web: &str) {
    let web_ip = c.pod_field(web, "{.status.podIP}");
    let client_ip = c.pod_field(client, "{.status.podIP}");
    let seen = eventually(30, &format!("{client} to reach {web} at {web_ip}"), || {
        from_pod(c, client, &web_ip, "8080", "/cgi-bin/ip")
    });
    assert_eq!(
        seen, client_ip,
        "{web} saw {client} as {seen}: masqueraded?"
    );
}

#[test]
fn vxlan_carries_pods_services_and_follows_nodes() {
    let mut c = Cluster::start_lab(&[], &[("n1", "10.250.0.11"), ("n2", "10.250.0.12")]);
    // flannel's annotations announce each node
    assert_eq!(
        jsonpath(
            &c,
            "node/n2",
            "{.metadata.annotations.flannel\\.alpha\\.coreos\\.com/public-ip}"
        ),
        "10.250.0.12"
    );
    assert_eq!(
        jsonpath(
            &c,
            "node/n2",
            "{.metadata.annotations.flannel\\.alpha\\.coreos\\.com/backend-type}"
        ),
        "vxlan"
    );
    // the device: VNI 1, port 8472, 50 bytes under the interface's MTU
    let link = in_node(&c, "n1", &["ip", "-d", "link", "show", "flannel.1"]);
    assert!(
        link.contains("vxlan id 1") && link.contains("dstport 8472"),
        "{link}"
    );
    assert!(link.contains("mtu 1450"), "{link}");
    let n2_cidr = jsonpath(&c, "node/n2", "{.spec.podCIDR}");
    let routes = overlay_routes(&c, "n1");
    assert!(
        routes.contains(&n2_cidr) && routes.contains("dev flannel.1") && routes.contains("onlink"),
        "n1's routes: {routes}"
    );
    let mac = jsonpath(
        &c,
        "node/n2",
        "{.metadata.annotations.flannel\\.alpha\\.coreos\\.com/backend-data}",
    );
    let fdb = in_node(&c, "n1", &["bridge", "fdb", "show", "dev", "flannel.1"]);
    assert!(
        fdb.contains("dst 10.250.0.12"),
        "fdb: {fdb} (n2 announces {mac})"
    );

    start_pods(&c, &[("web", "n2", true), ("client", "n1", false)]);
    assert_pod_to_pod(&c, "client", "web");

    // pod → ClusterIP across nodes; lab host → NodePort on either node
    c.apply(SERVICE);
    let cip = jsonpath(&c, "service/web", "{.spec.clusterIP}");
    let page = eventually(30, "the cluster IP from the other node", || {
        from_pod(&c, "client", &cip, "80", "/")
    });
    assert_eq!(page, "web");
    let node_port = jsonpath(&c, "service/web", "{.spec.ports[0].nodePort}");
    for node_ip in ["10.250.0.11", "10.250.0.12"] {
        let page = eventually(30, &format!("node port on {node_ip}"), || {
            from_lab(&c, node_ip, &node_port)
        });
        assert_eq!(page, "web", "NodePort {node_ip}:{node_port}");
    }

    // pod traffic leaving the cluster network is masqueraded to the node's address
    let lab_www = c.dir.path().join("lab-www");
    std::fs::create_dir_all(lab_www.join("cgi-bin")).unwrap();
    std::fs::write(
        lab_www.join("cgi-bin/ip"),
        "#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n",
    )
    .unwrap();
    let chmod = std::process::Command::new("chmod")
        .arg("+x")
        .arg(lab_www.join("cgi-bin/ip"))
        .status()
        .unwrap();
    assert!(chmod.success());
    let mut httpd = c
        .netns
        .command("busybox")
        .args(["httpd", "-f", "-p", "10.250.0.1:18080", "-h"])
        .arg(&lab_www)
        .spawn()
        .unwrap();
    let seen = eventually(30, "the lab host from a pod", || {
        from_pod(&c, "client", "10.250.0.1", "18080", "/cgi-bin/ip")
    });
    let _ = httpd.kill();
    let _ = httpd.wait();
    assert_eq!(
        seen, "10.250.0.11",
        "traffic out of the cluster leaves as the node"
    );

    // a node leaving takes its route, ARP and FDB entries with it, at once
    for p in ["web", "client"] {
        c.kubectl(
            "1.33",
            &["delete", "pod", p, "--grace-period=1", "--wait=true"],
        );
    }
    c.stop_agent("n2");
    let (ok, out) = c.kubectl("1.33", &["delete", "node", "n2"]);
    assert!(ok, "{out}");
    let t = Instant::now();
    eventually(10, "n2's route to go from n1", || {
        (!overlay_routes(&c, "n1").contains(&n2_cidr)).then_some(())
    });
    let took = t.elapsed();
    eprintln!("route of the departed node gone after {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let fdb = in_node(&c, "n1", &["bridge", "fdb", "show", "dev", "flannel.1"]);
    assert!(!fdb.contains("10.250.0.12"), "fdb: {fdb}");
    let neigh = in_node(&c, "n1", &["ip", "neigh", "show", "dev", "flannel.1"]);
    assert!(
        !neigh.contains(n2_cidr.split('/').next().unwrap()),
        "neigh: {neigh}"
    );

    // a node joining: its route appears on the others within a second of its
    // announcement (n2 comes back; its Node object is made again)
    c.restart_agent_nowait("n2");
    let mut announced = None;
    let t0 = Instant::now();
    let joined = loop {
        let now = t0.elapsed();
        if announced.is_none()
            && jsonpath(
                &c,
                "node/n2",
                "{.metadata.annotations.flannel\\.alpha\\.coreos\\.com/public-ip}",
            ) == "10.250.0.12"
        {
            announced = Some(now);
        }
        let cidr = jsonpath(&c, "node/n2", "{.spec.podCIDR}");
        if !cidr.is_empty() && overlay_routes(&c, "n1").contains(&cidr) {
            break now;
        }
        assert!(now < Duration::from_secs(30), "n2's route never came back");
        std::thread::sleep(Duration::from_millis(20));
    };
    let since = joined.saturating_sub(announced.unwrap_or(joined));
    c.wait_ready("n2");
    eprintln!("route of the joining node within {since:?} of its announcement");
    assert!(since < Duration::from_secs(2), "took {since:?}");

    // a restart reconciles: a stale route of skua's is removed, others are left alone
    c.stop_agent("n1");
    for args in [
        &[
            "route",
            "add",
            "10.42.99.0/24",
            "via",
            "10.250.0.99",
            "dev",
            "eth0",
            "proto",
            "66",
        ][..],
        &[
            "route",
            "add",
            "10.77.0.0/24",
            "via",
            "10.250.0.98",
            "dev",
            "eth0",
        ],
    ] {
        c.node_netns("n1").ip(args);
    }
    c.start_agent("n1");
    eventually(20, "the stale route to go", || {
        (!overlay_routes(&c, "n1").contains("10.42.99.0")).then_some(())
    });
    let all = in_node(&c, "n1", &["ip", "route"]);
    assert!(
        all.contains("10.77.0.0/24"),
        "a route that is not skua's stays: {all}"
    );
}

#[test]
fn host_gw_routes_via_nodes_and_refuses_other_subnets() {
    // also: what the server --disables, its agents do not run
    let mut c = Cluster::start_lab(
        &[
            "--flannel-backend",
            "host-gw",
            "--disable-network-policy",
            "--disable",
            "coredns",
        ],
        &[("n1", "10.250.0.11"), ("n2", "10.250.0.12")],
    );
    let tables = in_node(&c, "n1", &["nft", "list", "tables"]);
    assert!(
        tables.contains("skua-overlay")
            && tables.contains("table ip skua\n")
            && !tables.contains("skua-policy"),
        "{tables}"
    );
    assert!(
        !in_node(&c, "n1", &["ip", "addr"]).contains("10.43.0.10"),
        "no cluster DNS"
    );
    let (ok, _) = c.kubectl("1.33", &["get", "service", "-n", "kube-system", "kube-dns"]);
    assert!(!ok, "no kube-dns Service with --disable coredns");
    let n2_cidr = jsonpath(&c, "node/n2", "{.spec.podCIDR}");
    let routes = overlay_routes(&c, "n1");
    assert!(
        routes.contains(&format!("{n2_cidr} via 10.250.0.12 dev eth0")),
        "n1's routes: {routes}"
    );
    let links = in_node(&c, "n1", &["ip", "link"]);
    assert!(
        !links.contains("flannel.1"),
        "host-gw runs no VXLAN device: {links}"
    );
    start_pods(&c, &[("web", "n2", true), ("client", "n1", false)]);
    assert_pod_to_pod(&c, "client", "web");

    // a node on another subnet cannot be reached by host-gw: its agent refuses to start
    c.add_lab_machine("n3", "10.251.0.13");
    let token = c.token();
    let log = c.agent_refused("n3", &token);
    assert!(
        log.contains("host-gw backend cannot reach every node")
            && log.contains("not on this node's subnet")
            && log.contains("vxlan or auto"),
        "n3's log: {log}"
    );
}

#[test]
fn auto_goes_direct_on_the_subnet_and_vxlan_beyond() {
    let c = Cluster::start_lab(
        &["--flannel-backend", "auto"],
        &[
            ("n1", "10.250.0.11"),
            ("n2", "10.250.0.12"),
            ("n3", "10.251.0.13"),
        ],
    );
    let routes = overlay_routes(&c, "n1");
    let n2 = jsonpath(&c, "node/n2", "{.spec.podCIDR}");
    let n3 = jsonpath(&c, "node/n3", "{.spec.podCIDR}");
    assert!(
        routes.contains(&format!("{n2} via 10.250.0.12 dev eth0")),
        "{routes}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with(&n3) && l.contains("dev flannel.1")),
        "{routes}"
    );
    start_pods(
        &c,
        &[
            ("web2", "n2", true),
            ("web3", "n3", true),
            ("client", "n1", false),
        ],
    );
    assert_pod_to_pod(&c, "client", "web2");
    assert_pod_to_pod(&c, "client", "web3");
}

/// The seed scenario: a "tomcat" Deployment with two replicas (one per node) reached
/// from outside through a NodePort, talking to a "mysql" Service by its DNS name on
/// the other node (busybox httpd standing in for both).
const SEED: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: tomcat-app}
data:
  app: |
    #!/bin/sh
    echo "Content-Type: text/plain"
    echo
    echo "tomcat $(hostname) -> $(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 mysql 3306 | tail -n 1)"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: mysql}
spec:
  replicas: 1
  selector: {matchLabels: {app: mysql}}
  template:
    metadata: {labels: {app: mysql}}
    spec:
      nodeSelector: {kubernetes.io/hostname: n1}
      terminationGracePeriodSeconds: 1
      containers:
      - name: mysql
        image: docker.io/library/busybox:latest
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "mkdir -p /db && echo mysql-rows-42 > /db/index.html && exec httpd -f -p 3306 -h /db"]
        ports: [{name: mysql, containerPort: 3306}]
---
apiVersion: v1
kind: Service
metadata: {name: mysql}
spec:
  selector: {app: mysql}
  ports: [{name: mysql, port: 3306}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tomcat}
spec:
  replicas: 2
  selector: {matchLabels: {app: tomcat}}
  template:
    metadata: {labels: {app: tomcat}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: tomcat}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: tomcat
        image: docker.io/library/busybox:latest
        imagePullPolicy: IfNotPresent
        command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
        ports: [{name: http, containerPort: 8080}]
        volumeMounts: [{name: app, mountPath: /www/cgi-bin}]
      volumes:
      - name: app
        configMap: {name: tomcat-app, defaultMode: 0755}
---
apiVersion: v1
kind: Service
metadata: {name: tomcat}
spec:
  type: NodePort
  selector: {app: tomcat}
  ports: [{name: http, port: 8080}]
"#;

#[test]
fn seed_tomcat_behind_a_node_port_reaches_mysql_by_name_across_nodes() {
    let c = Cluster::start_lab(&[], &[("n1", "10.250.0.11"), ("n2", "10.250.0.12")]);
    c.apply(SEED);
    eventually(120, "two tomcats and a mysql ready", || {
        let ready = |d: &str| jsonpath(&c, &format!("deployment/{d}"), "{.status.readyReplicas}");
        (ready("tomcat") == "2" && ready("mysql") == "1").then_some(())
    });
    let (_, nodes) = c.kubectl(
        "1.33",
        &[
            "get",
            "pods",
            "-l",
            "app=tomcat",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
    );
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"], "one tomcat per node");
    let port = jsonpath(&c, "service/tomcat", "{.spec.ports[0].nodePort}");
    let get = |ip: &str| -> Option<String> {
        let out = c
            .netns
            .command("busybox")
            .args(["sh", "-c", &http_get(ip, &port, "/cgi-bin/app")])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        out.contains("200 OK")
            .then(|| out.trim().lines().last().unwrap_or("").trim().to_string())
    };
    let mut seen = std::collections::BTreeSet::new();
    for ip in ["10.250.0.11", "10.250.0.12"] {
        for _ in 0..40 {
            let page = eventually(30, &format!("the app through {ip}:{port}"), || get(ip));
            assert!(
                page.ends_with("-> mysql-rows-42"),
                "tomcat did not reach mysql: {page}"
            );
            seen.insert(page.split_whitespace().nth(1).unwrap_or("").to_string());
            if seen.len() == 2 {
                break;
            }
        }
    }
    assert_eq!(seen.len(), 2, "both tomcats answered: {seen:?}");
}

/// Session affinity and readiness across nodes: one backend per node; a client keeps
/// its backend with ClientIP affinity; a backend failing readiness stops receiving
/// traffic from the other node.
const SPREAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: httpd
        image: docker.io/library/busybox:latest
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www"]
        readinessProbe:
          exec: {command: ["cat", "/tmp/ready"]}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: plain}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

#[test]
fn affinity_and_readiness_hold_across_nodes() {
    let c = Cluster::start_lab(&[], &[("n1", "10.250.0.11"), ("n2", "10.250.0.12")]);
    c.apply(SPREAD);
    c.apply(&client("client", "n1"));
    c.wait_phase("client", "Running", 90);
    eventually(90, "two ready backends", || {
        (jsonpath(&c, "deployment/web", "{.status.readyReplicas}") == "2").then_some(())
    });
    let sticky = jsonpath(&c, "service/sticky", "{.spec.clusterIP}");
    let plain = jsonpath(&c, "service/plain", "{.spec.clusterIP}");
    let first = eventually(30, "the sticky service", || {
        from_pod(&c, "client", &sticky, "80", "/")
    });
    for _ in 0..10 {
        assert_eq!(
            from_pod(&c, "client", &sticky, "80", "/").as_deref(),
            Some(first.as_str()),
            "ClientIP affinity keeps one backend"
        );
    }
    // the plain service reaches both, one on each node
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.extend(from_pod(&c, "client", &plain, "80", "/"));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // the backend on n2 fails readiness: traffic from n1 goes only to n1's
    let (_, on_n2) = c.kubectl(
        "1.33",
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector",
            "spec.nodeName=n2",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let on_n2 = on_n2.trim().to_string();
    let (ok, out) = c.kubectl("1.33", &["exec", &on_n2, "--", "rm", "/tmp/ready"]);
    assert!(ok, "{out}");
    eventually(30, "one endpoint left", || {
        let ips = jsonpath(&c, "endpoints/plain", "{.subsets[0].addresses[*].ip}");
        (ips.split_whitespace().count() == 1).then_some(())
    });
    for _ in 0..15 {
        let page = eventually(10, "the plain service", || {
            from_pod(&c, "client", &plain, "80", "/")
        });
        assert_ne!(page, on_n2, "an unready endpoint got traffic");
    }
}
