//! The command line: k3s' defaults with our names, and flag > env > file > default.
//! (nextest runs each test in its own process, so setting env vars here is contained.)
// test helpers: a failed unwrap is a failed test
#![allow(clippy::unwrap_used)]
// std::env::set_var is unsafe in Rust 2024; nextest runs each test in its own process
#![allow(unsafe_code)]

use skua::cli::{Cli, CliError, Command, ServerArgs, parse};
use std::path::Path;

fn server(args: &[&str]) -> Result<ServerArgs, CliError> {
    let mut argv = vec!["skua".to_string(), "server".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    match parse(argv.into_iter().map(Into::into).collect())? {
        Cli {
            command: Command::Server(a),
        } => Ok(*a),
        other => panic!("parsed as {other:?}"),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn defaults_match_k3s_with_our_names() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, "");
    let a = server(&["--config", cfg.to_str().unwrap()]).unwrap();
    assert_eq!(a.common.data_dir, Path::new("/var/lib/skua"));
    assert_eq!(a.https_listen_port, 6443);
    assert_eq!(a.cluster_cidr.to_string(), "10.42.0.0/16");
    assert_eq!(a.service_cidr.to_string(), "10.43.0.0/16");
    assert_eq!(a.cluster_dns.to_string(), "10.43.0.10");
    assert_eq!(a.cluster_domain, "cluster.local");
    assert_eq!(a.write_kubeconfig, Path::new("/etc/skua/skua.yaml"));
    assert!(!a.disable_agent);
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(
        &cfg,
        "data-dir: /from/file\nhttps-listen-port: 7000\ncluster-domain: file.local\ndisable-agent: true\ntls-san:\n  - a.example\n  - 10.0.0.1\n",
    );
    // SAFETY: this test process is single-threaded here and alone (nextest).
    unsafe {
        std::env::set_var("SKUA_HTTPS_LISTEN_PORT", "8000");
        std::env::set_var("SKUA_CLUSTER_DOMAIN", "env.local");
    }
    let a = server(&[
        "--config",
        cfg.to_str().unwrap(),
        "--cluster-domain",
        "flag.local",
    ])
    .unwrap();
    assert_eq!(a.cluster_domain, "flag.local", "flag wins");
    assert_eq!(a.https_listen_port, 8000, "env beats file");
    assert_eq!(
        a.common.data_dir,
        Path::new("/from/file"),
        "file beats default"
    );
    assert_eq!(
        a.service_cidr.to_string(),
        "10.43.0.0/16",
        "default remains"
    );
    assert!(a.disable_agent, "booleans come from the file too");
    assert_eq!(a.tls_san, vec!["a.example", "10.0.0.1"]);
}

#[test]
fn drop_in_files_apply_in_name_order_and_plus_appends() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, "cluster-domain: main.local\ntls-san: [one]\n");
    write(
        &dir.path().join("config.yaml.d/20-late.yaml"),
        "cluster-domain: late.local\ntls-san+: [three]\n",
    );
    write(
        &dir.path().join("config.yaml.d/10-early.yaml"),
        "cluster-domain: early.local\ntls-san+: [two]\n",
    );
    write(
        &dir.path().join("config.yaml.d/notes.txt"),
        "ignored: true\n",
    );
    // the config file can also come from the environment
    unsafe { std::env::set_var("SKUA_CONFIG_FILE", cfg.to_str().unwrap()) };
    let a = server(&[]).unwrap();
    assert_eq!(a.cluster_domain, "late.local");
    assert_eq!(a.tls_san, vec!["one", "two", "three"]);
}

#[test]
fn an_unknown_key_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, "data-dir: /x\ncluster-cdir: 10.0.0.0/8\n");
    let err = server(&["--config", cfg.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cluster-cdir"), "{err}");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
}

#[test]
fn bad_values_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, "https-listen-port: lots\n");
    assert!(matches!(
        server(&["--config", cfg.to_str().unwrap()]),
        Err(CliError::Clap(_))
    ));
    write(&cfg, "- just\n- a list\n");
    let err = server(&["--config", cfg.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("mapping"), "{err}");
    let missing = dir.path().join("nope.yaml");
    let err = server(&["--config", missing.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert!(server(&["--cluster-cidr", "10.42.0.0"]).is_err());
}

#[test]
fn network_flags_take_k3s_values_and_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(
        &cfg,
        "disable: coredns,servicelb\nflannel-backend: host-gw\n",
    );
    let a = server(&[
        "--config",
        cfg.to_str().unwrap(),
        "--disable-network-policy",
    ])
    .unwrap();
    assert_eq!(a.disable, ["coredns", "servicelb"]);
    assert_eq!(a.flannel_backend.name(), "host-gw");
    assert!(a.disable_network_policy && !a.disable_kube_proxy);
    let d = server(&[
        "--config",
        cfg.to_str().unwrap(),
        "--flannel-backend",
        "vxlan",
    ])
    .unwrap();
    assert_eq!(d.flannel_backend.name(), "vxlan", "flag beats file");
    let empty = dir.path().join("empty.yaml");
    write(&empty, "");
    let d = server(&["--config", empty.to_str().unwrap()]).unwrap();
    assert_eq!(
        (d.flannel_backend.name(), d.disable.len()),
        ("vxlan", 0),
        "k3s' defaults"
    );
    let err = server(&[
        "--config",
        empty.to_str().unwrap(),
        "--flannel-backend",
        "wireguard",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("vxlan, host-gw, auto or none"), "{err}");
    let err = server(&["--config", empty.to_str().unwrap(), "--disable", "dns"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("coredns") && err.contains("\"dns\""), "{err}");
}

#[test]
fn the_binary_reports_its_version_and_fails_cleanly() {
    let bin = env!("CARGO_BIN_EXE_skua");
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("skua v{}", env!("CARGO_PKG_VERSION"))
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, "no-such-flag: 1\n");
    let out = std::process::Command::new(bin)
        .args(["server", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key \"no-such-flag\""), "{err}");

    // a damaged data dir stops the server with the datastore's message
    let data = dir.path().join("data");
    write(&data.join("server/db/skua-datastore"), "marker\n");
    write(&cfg, "");
    let out = std::process::Command::new(bin)
        .args([
            "server",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server/db") && err.contains("unreadable or lost"),
        "{err}"
    );
}

/// Every flag is checked before anything starts: a bad `--eviction-hard` or log size
/// stops `skua agent` before it joins or starts containerd, and `skua server` before it
/// opens its datastore (the server checks its embedded agent's flags with its own).
#[test]
fn a_bad_flag_fails_before_anything_starts() {
    let bin = env!("CARGO_BIN_EXE_skua");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, "");
    let data = dir.path().join("data");
    // a server that would be reached: nothing may try (the port is closed anyway)
    let token =
        "K10aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa::server:secret";
    for (args, says) in [
        (
            &["--eviction-hard", "memory.available<lots"][..],
            "--eviction-hard",
        ),
        (&["--eviction-hard", "cpu.available<1"], "unknown signal"),
        (
            &["--container-log-max-size", "ten"],
            "--container-log-max-size",
        ),
    ] {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(bin)
            .args(["agent", "--config", cfg.to_str().unwrap(), "--data-dir"])
            .arg(&data)
            .args(["--server", "https://127.0.0.1:1", "--token", token])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("join"), "{args:?} tried to join: {err}");
        assert!(!data.exists(), "{args:?} made {}", data.display());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));

        let out = std::process::Command::new(bin)
            .args(["server", "--config", cfg.to_str().unwrap(), "--data-dir"])
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "server {args:?}: {err}");
        assert!(err.contains(says), "server {args:?}: {err}");
        assert!(!data.exists(), "server {args:?} made {}", data.display());
    }
    // the agent's required flags are named
    let out = std::process::Command::new(bin)
        .args(["agent", "--config", cfg.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .args(["--token", token])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));
}
