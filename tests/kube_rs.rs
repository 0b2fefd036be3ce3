//! kube-rs against a real skua server: typed create/list/patch, and the runtime
//! watcher (list, then watch, restarting and relisting as kube-rs does).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::SkuaServer;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeMap;
use std::time::Duration;

async fn client(server: &SkuaServer) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable");
    kube::Client::try_from(config).expect("client")
}

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            // every namespace also holds the published kube-root-ca.crt: select ours
            labels: Some(BTreeMap::from([(
                "test".to_string(),
                "kube-rs".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), value.to_string())])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_client_and_watcher_work_unchanged() {
    let server = SkuaServer::start();
    let client = client(&server).await;
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.git_version, "v1.33.0+skua");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("one", "1"))
        .await
        .expect("create");
    let listed = cms
        .list(&ListParams::default().labels("test=kube-rs"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);

    // the runtime watcher: initial list, then live events
    let mut stream = watcher::watcher(
        cms.clone(),
        watcher::Config::default().labels("test=kube-rs"),
    )
    .boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watcher event")
            .expect("stream")
            .expect("ok")
        {
            Event::Init => {}
            Event::InitApply(o) => initial.push(o.metadata.name.unwrap()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, ["one"]);
    cms.create(&PostParams::default(), &cm("two", "2"))
        .await
        .unwrap();
    cms.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    cms.delete("two", &Default::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watcher event")
            .expect("stream")
            .expect("ok")
        {
            Event::Apply(o) => seen.push(format!(
                "apply {} {}",
                o.metadata.name.unwrap(),
                o.data.unwrap()["k"]
            )),
            Event::Delete(o) => seen.push(format!("delete {}", o.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["apply two 2", "apply one changed", "delete two"]);
}
