//! `--datastore-endpoint https://…` with `--datastore-cafile/certfile/keyfile`: a real
//! etcd on 127.0.0.1 that serves TLS and requires client certificates.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use skua::store::etcd::{EtcdOptions, EtcdStore};
use skua::store::etcd_local::{LocalEtcd, ServerTls};
use skua::store::{Store, StoreError};
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate for 127.0.0.1 signed by it, usable by server and client.
fn make_pki(dir: &Path, name: &str) -> ServerTls {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=skua-test-ca",
    ]);
    openssl(dir, &args);
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=etcd"]);
    openssl(dir, &args);
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let cert = format!("{name}.pem");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    ServerTls {
        ca_file: dir.join(ca),
        cert_file: dir.join(cert),
        key_file: dir.join(key),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_pki(dir.path(), "etcd");
    let etcd = LocalEtcd::start_with(
        &common::etcd_binary(),
        &dir.path().join("etcd"),
        Some(tls.clone()),
    )
    .unwrap();
    assert!(etcd.endpoint.starts_with("https://"));

    let store = etcd.connect().await.expect("etcd over TLS did not come up");
    let r = store.create("/tls/a", b"1".to_vec()).await.unwrap();
    assert_eq!(
        store.get("/tls/a").await.unwrap().kv.unwrap().mod_revision,
        r
    );

    // without a client certificate etcd refuses us, and we say so
    let no_client_cert = EtcdOptions {
        cert_file: None,
        key_file: None,
        ..etcd.options()
    };
    assert!(matches!(
        EtcdStore::connect(&no_client_cert).await,
        Err(StoreError::Unavailable(_))
    ));
    // a server certificate from another CA is not trusted
    let other = make_pki(dir.path(), "other");
    let wrong_ca = EtcdOptions {
        ca_file: Some(other.ca_file),
        ..etcd.options()
    };
    assert!(matches!(
        EtcdStore::connect(&wrong_ca).await,
        Err(StoreError::Unavailable(_))
    ));
    // certificate and key go together
    let half = EtcdOptions {
        key_file: None,
        ..etcd.options()
    };
    match EtcdStore::connect(&half).await {
        Err(StoreError::InvalidArgument(msg)) => {
            assert!(msg.contains("--datastore-keyfile"), "{msg}")
        }
        Err(e) => panic!("expected an argument error, got {e}"),
        Ok(_) => panic!("expected an argument error, got a connection"),
    }
}
