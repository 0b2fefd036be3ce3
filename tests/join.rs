//! Joining an agent, the k3s way: the node token pins the server's CA and carries the
//! secret that buys a node its certificates; the node password guards its name.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, kubectl_run};
use skua::pki::join::ca_hash;
use skua::pki::x509::subject;
use std::path::Path;
use std::process::{Command, Output};

fn agent(server: &str, token: &str, name: &str, dir: &Path, password: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_skua"));
    c.args(["agent", "--server", server, "--token", token])
        .args(["--node-name", name])
        .arg("--data-dir")
        .arg(dir)
        .arg("--node-password-file")
        .arg(password)
        .args(["--node-ip", "127.0.0.1"])
        // these agents only join: no container runtime answers there
        .args([
            "--container-runtime-endpoint",
            "unix:///nonexistent/skua-test.sock",
        ]);
    c
}

/// Runs an agent until it says it joined (then stops it) or gives up on its own;
/// returns whether it joined, and everything it said.
fn join(mut cmd: Command) -> (bool, String) {
    use std::io::BufRead;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut said = String::new();
    let mut joined = false;
    for line in stdout.lines().map_while(Result::ok) {
        said.push_str(&line);
        said.push('\n');
        if line.starts_with("joined ") {
            joined = true;
            let _ = child.kill();
            break;
        }
    }
    let _ = child.wait();
    said.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
    (joined, said)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[test]
fn an_agent_joins_with_the_node_token_and_nothing_else_gets_in() {
    let mut server = SkuaServer::start();
    let data = server.dir.path().join("data/server");
    let token = std::fs::read_to_string(data.join("node-token")).unwrap();
    let token = token.trim().to_string();
    assert_eq!(
        std::fs::read_to_string(data.join("token")).unwrap().trim(),
        token
    );
    // K10<sha256 of the server CA bundle>::server:<secret>
    let ca = std::fs::read_to_string(server.server_ca()).unwrap();
    let prefix = format!("K10{}::server:", ca_hash(&ca));
    assert!(
        token.starts_with(&prefix) && token.len() > prefix.len(),
        "{token}"
    );
    let url = format!("https://127.0.0.1:{}", server.port);
    let root = server.dir.path().to_path_buf();

    // a join: certificates for the node, and a kubeconfig that authenticates as it
    let (joined, said) = join(agent(
        &url,
        &token,
        "n1",
        &root.join("a1"),
        &root.join("pw1"),
    ));
    assert!(
        joined && said.contains(&format!("joined {url} as node n1")),
        "{said}"
    );
    let dir = root.join("a1/agent");
    let client = std::fs::read_to_string(dir.join("client-kubelet.crt")).unwrap();
    let who = subject(&der(&client)).unwrap();
    assert_eq!(who.common_names, ["system:node:n1"]);
    assert_eq!(who.organizations, ["system:nodes"]);
    let serving = std::fs::read_to_string(dir.join("serving-kubelet.crt")).unwrap();
    assert_eq!(subject(&der(&serving)).unwrap().common_names, ["n1"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("server-ca.crt")).unwrap(),
        ca
    );
    // its kubeconfig is the node to the API, with what a kubelet may do
    let kubeconfig = dir.join("kubelet.kubeconfig");
    let as_node = |version: &str, args: &[&str]| {
        let out = Command::new(common::kubectl(version))
            .args(args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    };
    let (ok, out) = as_node("1.33", &["auth", "whoami"]);
    assert!(
        ok && out.contains("system:node:n1") && out.contains("system:nodes"),
        "{out}"
    );
    let node = |name: &str| {
        let file = root.join(format!("{name}.json"));
        let body =
            format!(r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}"}}}}"#);
        std::fs::write(&file, body).unwrap();
        file
    };
    let (ok, out) = as_node("1.27", &["create", "-f", node("n1").to_str().unwrap()]);
    assert!(ok, "a node registers itself: {out}");
    let (ok, out) = as_node("1.33", &["create", "-f", node("other").to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains(
            r#"nodes "other" is forbidden: node "n1" is not allowed to modify node "other""#
        ),
        "{out}"
    );
    let (ok, out) = as_node("1.33", &["get", "nodes"]);
    assert!(ok && out.contains("n1"), "{out}");
    let (ok, out) = as_node("1.33", &["get", "secrets", "-A"]);
    assert!(!ok);
    assert!(
        out.contains(r#"User "system:node:n1" cannot list resource "secrets""#),
        "{out}"
    );
    // the server recorded the node's password (hashed) under its name
    let (ok, out) = kubectl_run(
        &server,
        "1.33",
        &[
            "get",
            "secret",
            "-n",
            "kube-system",
            "n1.node-password.skua",
        ],
    );
    assert!(ok, "{out}");

    // the same machine joins again; another machine may not take the name
    let (joined, said) = join(agent(
        &url,
        &token,
        "n1",
        &root.join("a1"),
        &root.join("pw1"),
    ));
    assert!(joined, "{said}");
    let (joined, said) = join(agent(
        &url,
        &token,
        "n1",
        &root.join("a2"),
        &root.join("pw2"),
    ));
    assert!(!joined);
    assert!(
        said.contains("node password rejected for node \"n1\""),
        "{said}"
    );
    assert!(!root.join("a2/agent/client-kubelet.crt").exists());

    // a wrong secret and a tampered CA hash are refused, each in one line
    let wrong = format!("{prefix}not-the-secret");
    let (joined, said) = join(agent(
        &url,
        &wrong,
        "n3",
        &root.join("a3"),
        &root.join("pw3"),
    ));
    assert!(!joined);
    assert!(said.contains("the join token was refused"), "{said}");
    let tampered = token.replacen(&ca_hash(&ca), &"0".repeat(64), 1);
    let (joined, said) = join(agent(
        &url,
        &tampered,
        "n3",
        &root.join("a3"),
        &root.join("pw3"),
    ));
    assert!(!joined);
    assert!(said.contains("possible man-in-the-middle"), "{said}");
    assert!(!root.join("a3/agent/client-kubelet.crt").exists());

    // an agent started while the server is down waits for it, then joins
    server.stop();
    let waiting = std::thread::spawn({
        let (url, token, root) = (url.clone(), token.clone(), root.clone());
        move || {
            join(agent(
                &url,
                &token,
                "n4",
                &root.join("a4"),
                &root.join("pw4"),
            ))
        }
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    server.start_again();
    let (joined, said) = waiting.join().unwrap();
    assert!(joined, "{said}");
    assert!(
        said.contains("cannot reach the server yet; retrying"),
        "{said}"
    );
}

/// One join-endpoint request with curl: (HTTP code, body).
fn join_request(server: &SkuaServer, secret: &str, node: &str, what: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(server.server_ca())
        .args(["-u", &format!("node:{secret}")])
        .args(["-H", &format!("Skua-Node-Name: {node}")])
        .args(["-H", &format!("Skua-Node-Password: pw-{node}")])
        .arg(format!("https://127.0.0.1:{}/v1-skua/{what}", server.port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

#[test]
fn a_join_cannot_pass_for_the_api_server_and_guessing_is_slowed() {
    let server = SkuaServer::start_with_config("agent-token: workers-only-secret\n");
    let data = server.dir.path().join("data/server");
    let token = std::fs::read_to_string(data.join("token")).unwrap();
    let secret = token.trim().rsplit_once(':').unwrap().1.to_string();
    // the agent token joins too, and is kept as a K10 token, owner-only
    let (code, _) = join_request(&server, "workers-only-secret", "w1", "client-kubelet.crt");
    assert_eq!(code, "200");
    use std::os::unix::fs::PermissionsExt;
    let agent_token = data.join("agent-token");
    assert_eq!(
        std::fs::metadata(&agent_token)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&agent_token)
            .unwrap()
            .starts_with("K10")
    );
    // a kubelet serving certificate comes from a CA pods and agents do not trust for
    // the API server
    let (code, pem) = join_request(&server, &secret, "n1", "serving-kubelet.crt");
    assert_eq!(code, "200", "{pem}");
    let cert = server.dir.path().join("n1-serving.crt");
    std::fs::write(
        &cert,
        &pem[..pem.find("-----BEGIN PRIVATE KEY-----").unwrap()],
    )
    .unwrap();
    let verify = |ca: &str| {
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(data.join("tls").join(ca))
            .arg(&cert)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!verify("server-ca.crt"), "not from the server CA");
    assert!(verify("kubelet-serving-ca.crt"));
    // names the API server answers to are refused
    for name in [
        "kubernetes",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    ] {
        let (code, body) = join_request(&server, &secret, name, "serving-kubelet.crt");
        assert_eq!(code, "403", "{name}: {body}");
    }
    let (code, _) = join_request(
        &server,
        &secret,
        "kubernetes-worker-1",
        "client-kubelet.crt",
    );
    assert_eq!(code, "200", "a host name that merely starts so is fine");
    // wrong tokens: refused, then the address is slowed down, right token or not
    for i in 0..10 {
        let (code, _) = join_request(&server, "guess", &format!("g{i}"), "client-kubelet.crt");
        assert_eq!(code, "401");
    }
    let (code, body) = join_request(&server, &secret, "n2", "client-kubelet.crt");
    assert_eq!(code, "429", "{body}");
    assert!(
        server
            .log()
            .contains("join attempt with a wrong token refused")
    );
}
