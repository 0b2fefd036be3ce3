//! Services through the agent's nftables proxy, with real pods, in a fresh network
//! namespace (tests/common/cluster.rs): ClusterIP balancing over ready endpoints,
//! NodePort and LoadBalancer from the node, hairpin, ClientIP session affinity, an
//! endpoint failing readiness, a service without endpoints refusing at once, and the
//! table's removal on a clean stop and rebuild on start.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::cluster::Cluster;
use common::eventually;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const WEB: &str = r#"
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
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nothing-has-this}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 8081, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: docker.io/library/busybox:latest, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}
"#;

fn get(c: &Cluster, what: &str, jsonpath: &str) -> String {
    let (_, out) = c.kubectl(
        "1.33",
        &["get", what, "-o", &format!("jsonpath={jsonpath}")],
    );
    out
}

/// An HTTP GET with busybox nc (busybox-static's wget crashes in its resolver): the
/// script and how to read its answer, the page's last line (a backend's hostname).
fn http_get(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "80"));
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}")
}

fn page(out: &str) -> Option<String> {
    out.contains("200 OK")
        .then(|| out.trim().lines().last().unwrap_or("").trim().to_string())
}

/// GET from inside pod `pod`.
fn fetch_from_pod(c: &Cluster, pod: &str, addr: &str) -> Option<String> {
    let (ok, out) = c.kubectl("1.33", &["exec", pod, "--", "sh", "-c", &http_get(addr)]);
    if ok { page(&out) } else { None }
}

/// GET from the node's own network namespace.
fn fetch_from_node(c: &Cluster, addr: &str) -> Option<String> {
    let out = c
        .netns
        .command("busybox")
        .args(["sh", "-c", &http_get(addr)])
        .output()
        .unwrap();
    page(&String::from_utf8_lossy(&out.stdout))
}

fn backends(c: &Cluster) -> BTreeSet<String> {
    let (_, out) = c.kubectl(
        "1.33",
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    out.split_whitespace().map(String::from).collect()
}

fn table_exists(c: &Cluster) -> bool {
    c.netns
        .command("nft")
        .args(["list", "table", "ip", "skua"])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn services_route_to_ready_endpoints() {
    let mut c = Cluster::start();
    // the node reaches cluster IPs by its default route (the bridge leads nowhere)
    let out = c
        .netns
        .command("ip")
        .args(["route", "add", "default", "dev", "node0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    c.apply(WEB);
    c.wait_phase("client", "Running", 60);
    eventually(60, "two ready web endpoints", || {
        (get(&c, "endpoints/web", "{.subsets[0].addresses[*].ip}")
            .split_whitespace()
            .count()
            == 2)
            .then_some(())
    });
    let pods = backends(&c);
    assert_eq!(pods.len(), 2);
    let cip = get(&c, "service/web", "{.spec.clusterIP}");
    let url = format!("{cip}:80");

    // ClusterIP from a pod: both backends answer, at random
    let mut seen = BTreeSet::new();
    eventually(30, "the cluster IP to answer", || {
        fetch_from_pod(&c, "client", &url)
    });
    for _ in 0..30 {
        seen.insert(fetch_from_pod(&c, "client", &url).expect("cluster IP answers"));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, pods, "both endpoints serve the cluster IP");

    // NodePort and the cluster IP from the node itself
    let node_port = get(&c, "service/web", "{.spec.ports[0].nodePort}");
    let page = fetch_from_node(&c, &format!("10.250.0.1:{node_port}")).expect("node port answers");
    assert!(pods.contains(&page), "{page}");
    let page = fetch_from_node(&c, &url).expect("cluster IP answers on the node");
    assert!(pods.contains(&page), "{page}");

    // hairpin: a backend reaches itself through its own service
    let me = pods.iter().next().unwrap().clone();
    let mut hairpin = BTreeSet::new();
    for _ in 0..30 {
        hairpin.insert(fetch_from_pod(&c, &me, &url).expect("a backend reaches its service"));
        if hairpin.contains(&me) {
            break;
        }
    }
    assert!(
        hairpin.contains(&me),
        "the backend never reached itself: {hairpin:?}"
    );

    // LoadBalancer: ServiceLB gives it the node's address, which then serves its port
    let ingress = eventually(30, "the load balancer's ingress", || {
        let ip = get(&c, "service/lb", "{.status.loadBalancer.ingress[0].ip}");
        (!ip.is_empty()).then_some(ip)
    });
    assert_eq!(ingress, "10.250.0.1");
    let (_, table) = c.kubectl("1.33", &["get", "service", "lb"]);
    assert!(table.contains("10.250.0.1"), "EXTERNAL-IP column: {table}");
    let page = eventually(30, "the load balancer to answer", || {
        fetch_from_node(&c, "10.250.0.1:8081")
    });
    assert!(pods.contains(&page), "{page}");

    // ClientIP affinity keeps one backend for the client
    c.kubectl(
        "1.33",
        &[
            "patch",
            "service",
            "web",
            "-p",
            r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut sticky = BTreeSet::new();
    for _ in 0..12 {
        sticky.insert(fetch_from_pod(&c, "client", &url).expect("answers with affinity"));
    }
    assert_eq!(sticky.len(), 1, "affinity sent the client to {sticky:?}");
    c.kubectl(
        "1.33",
        &[
            "patch",
            "service",
            "web",
            "-p",
            r#"{"spec":{"sessionAffinity":"None"}}"#,
        ],
    );

    // an endpoint failing readiness stops receiving traffic
    let (ok, out) = c.kubectl("1.33", &["exec", &me, "--", "rm", "/tmp/ready"]);
    assert!(ok, "{out}");
    eventually(30, "the unready endpoint to leave", || {
        (get(&c, "endpoints/web", "{.subsets[0].addresses[*].ip}")
            .split_whitespace()
            .count()
            == 1)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..15 {
        let page = fetch_from_pod(&c, "client", &url).expect("the ready endpoint answers");
        assert_ne!(page, me, "traffic reached the unready endpoint");
    }

    // a service without endpoints refuses at once (no timeout)
    let empty = get(&c, "service/empty", "{.spec.clusterIP}");
    let started = Instant::now();
    let (_, out) = c.kubectl(
        "1.33",
        &[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            &format!("nc -w 10 {empty} 80 </dev/null"),
        ],
    );
    let took = started.elapsed();
    assert!(out.contains("refused"), "{out}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: the connection timed out instead of being refused"
    );

    // a clean stop removes the table; a start rebuilds it and service works again
    c.stop_agent("n1");
    assert!(!table_exists(&c), "the table outlived the agent");
    c.start_agent("n1");
    eventually(30, "the table to be rebuilt", || {
        table_exists(&c).then_some(())
    });
    let page = eventually(30, "the cluster IP after the restart", || {
        fetch_from_pod(&c, "client", &url)
    });
    assert!(pods.contains(&page));
}
