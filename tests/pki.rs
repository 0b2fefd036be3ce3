//! The server's certificates, checked with openssl, and its kubeconfig, read by kubectl.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use skua::pki::{self, PkiOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn options(dir: &Path, sans: &[&str]) -> PkiOptions {
    PkiOptions {
        dir: dir.to_path_buf(),
        cluster_domain: "cluster.local".into(),
        service_cidr: "10.43.0.0/16".into(),
        node_ips: Vec::new(),
        tls_sans: sans.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn certificates_chain_name_and_expire_as_specified() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let first = pki::ensure(&options(&dir, &["skua.example.com", "198.51.100.9"])).unwrap();
    let f = |n: &str| dir.join(n);

    // chains: serving ← server CA, admin ← client CA, and not across
    assert!(
        openssl(&[
            "verify",
            "-CAfile",
            p(&f("server-ca.crt")),
            p(&f("serving-kube-apiserver.crt"))
        ])
        .0
    );
    assert!(
        openssl(&[
            "verify",
            "-CAfile",
            p(&f("client-ca.crt")),
            p(&f("client-admin.crt"))
        ])
        .0
    );
    assert!(
        !openssl(&[
            "verify",
            "-CAfile",
            p(&f("client-ca.crt")),
            p(&f("serving-kube-apiserver.crt"))
        ])
        .0
    );

    let (_, sans) = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        p(&f("serving-kube-apiserver.crt")),
    ]);
    for want in [
        "DNS:kubernetes,",
        "DNS:kubernetes.default,",
        "DNS:kubernetes.default.svc,",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:localhost",
        "DNS:skua.example.com",
        "IP Address:127.0.0.1",
        "IP Address:10.43.0.1",
        "IP Address:198.51.100.9",
    ] {
        assert!(
            sans.contains(want),
            "serving certificate lacks {want}: {sans}"
        );
    }
    let (_, subject) = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-in",
        p(&f("client-admin.crt")),
    ]);
    assert!(
        subject.contains("CN = system:admin") && subject.contains("O = system:masters"),
        "{subject}"
    );

    // lifetimes: CAs 10 years, leaves 365 days
    let valid_for = |cert: &str, days: i64| {
        openssl(&[
            "x509",
            "-noout",
            "-checkend",
            &(days * 86400).to_string(),
            "-in",
            p(&f(cert)),
        ])
        .0
    };
    for ca in ["server-ca.crt", "client-ca.crt"] {
        assert!(
            valid_for(ca, 3649) && !valid_for(ca, 3651),
            "{ca} must last 10 years"
        );
    }
    for leaf in ["serving-kube-apiserver.crt", "client-admin.crt"] {
        assert!(
            valid_for(leaf, 364) && !valid_for(leaf, 366),
            "{leaf} must last 365 days"
        );
    }
    // keys are private
    for key in [
        "server-ca.key",
        "client-ca.key",
        "serving-kube-apiserver.key",
        "client-admin.key",
        "service.key",
    ] {
        assert_eq!(mode(&f(key)), 0o600, "{key}");
    }

    // a restart keeps the CAs and the SA key, and re-issues leaves with new SANs
    let second = pki::ensure(&options(&dir, &["other.example.com"])).unwrap();
    assert_eq!(second.server_ca_cert, first.server_ca_cert);
    assert_eq!(second.client_ca_cert, first.client_ca_cert);
    assert_eq!(second.service_account_key, first.service_account_key);
    let (_, sans) = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        p(&f("serving-kube-apiserver.crt")),
    ]);
    assert!(
        sans.contains("DNS:other.example.com") && !sans.contains("skua.example.com"),
        "{sans}"
    );
    assert!(
        openssl(&[
            "verify",
            "-CAfile",
            p(&f("server-ca.crt")),
            p(&f("serving-kube-apiserver.crt"))
        ])
        .0
    );
}

#[test]
fn a_lone_ca_certificate_is_damage_not_a_fresh_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    pki::ensure(&options(&dir, &[])).unwrap();
    let ca = std::fs::read(dir.join("client-ca.crt")).unwrap();
    std::fs::remove_file(dir.join("client-ca.key")).unwrap();
    let err = pki::ensure(&options(&dir, &[]))
        .err()
        .expect("must refuse")
        .to_string();
    assert!(
        err.contains("client-ca.key") && err.contains("backup"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("client-ca.crt")).unwrap(),
        ca,
        "the CA was not replaced"
    );
}

/// `skua server` writes a kubeconfig that kubectl reads, with the requested mode.
#[test]
fn the_server_writes_an_admin_kubeconfig_kubectl_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let kubeconfig = tmp.path().join("skua.yaml");
    let empty = tmp.path().join("config.yaml");
    std::fs::write(&empty, "").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_skua"))
        .args([
            "server",
            "--disable-agent",
            "--config",
            p(&empty),
            "--data-dir",
            p(&data),
            "--write-kubeconfig",
            p(&kubeconfig),
        ])
        .args([
            "--write-kubeconfig-mode",
            "0640",
            "--https-listen-port",
            &port,
            "--node-ip",
            "198.51.100.7",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubeconfig.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(kubeconfig.exists(), "no kubeconfig written");
    assert_eq!(mode(&kubeconfig), 0o640);
    let serving = data.join("server/tls/serving-kube-apiserver.crt");
    let (_, sans) = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        p(&serving),
    ]);
    assert!(
        sans.contains("IP Address:198.51.100.7"),
        "--node-ip goes into the serving certificate: {sans}"
    );

    let kubectl = |jsonpath: &str| {
        let out = Command::new("kubectl")
            .args([
                "--kubeconfig",
                p(&kubeconfig),
                "config",
                "view",
                "--raw",
                "-o",
                &format!("jsonpath={jsonpath}"),
            ])
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        kubectl("{.clusters[0].cluster.server}"),
        format!("https://127.0.0.1:{port}")
    );
    assert_eq!(kubectl("{.current-context}"), "default");
    use base64::Engine;
    let decode = |b64: String| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let tls = data.join("server/tls");
    assert_eq!(
        decode(kubectl("{.clusters[0].cluster.certificate-authority-data}")),
        std::fs::read_to_string(tls.join("server-ca.crt")).unwrap()
    );
    assert_eq!(
        decode(kubectl("{.users[0].user.client-certificate-data}")),
        std::fs::read_to_string(tls.join("client-admin.crt")).unwrap()
    );
    assert_eq!(
        decode(kubectl("{.users[0].user.client-key-data}")),
        std::fs::read_to_string(tls.join("client-admin.key")).unwrap()
    );
}

#[test]
fn a_subject_with_several_organizations_gives_several_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let der = tmp.path().join("c.der");
    let key = tmp.path().join("k.pem");
    let (ok, out) = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        p(&key),
        "-outform",
        "DER",
        "-out",
        p(&der),
        "-days",
        "1",
        "-subj",
        "/O=dev/CN=bob/O=ops",
    ]);
    assert!(ok, "{out}");
    let subject = pki::x509::subject(&std::fs::read(&der).unwrap()).unwrap();
    assert_eq!(subject.common_names, vec!["bob"]);
    assert_eq!(subject.organizations, vec!["dev", "ops"]);
}

#[test]
fn a_kubeconfig_path_without_a_directory_is_written_in_the_current_directory() {
    // `--write-kubeconfig skua.yaml` names a file in the working directory; its parent
    // is the empty path, which must mean "." (this used to fail with "No such file")
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_current_dir(tmp.path()).unwrap(); // nextest runs each test in its own process
    skua::pki::write_private(Path::new("bare.yaml"), b"x: 1\n", 0o600).unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("bare.yaml")).unwrap(),
        "x: 1\n"
    );
    assert_eq!(mode(&tmp.path().join("bare.yaml")), 0o600);
}
