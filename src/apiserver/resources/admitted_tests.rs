//! Every verb that writes a stored object passes the admission chain, with upstream's
//! operation and subresource, and a refusal leaves the store as it was. Run in
//! process over the memory store.

use super::write;
use super::{Writer, allocate::ServiceRanges, create, delete, pods};
use crate::api::managed::{Actor, Operation as FieldOp};
use crate::api::registry::{self, Resource};
use crate::apiserver::admission::{Attributes, Chain, Operation, Plugin};
use crate::apiserver::auth::UserInfo;
use crate::apiserver::status::ApiStatus;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// Records what it is asked; mutates new ConfigMaps; refuses what carries
/// `data.refuse` (and deletes of objects labelled `keep`).
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn note(&self, phase: &str, a: &Attributes<'_>) {
        let line = format!(
            "{phase} {} {}{}{} by {}",
            a.operation.as_str(),
            a.resource.plural,
            if a.subresource.is_empty() { "" } else { "/" },
            a.subresource,
            a.user.name
        );
        self.0.lock().unwrap().push(line);
    }
}

#[async_trait]
impl Plugin for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: &mut Value,
        _: &dyn Store,
    ) -> Result<(), ApiStatus> {
        self.note("admit", a);
        if a.operation == Operation::Create && a.is("", "configmaps") {
            obj["metadata"]["labels"]["admitted"] = json!("yes");
        }
        Ok(())
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        _: &dyn Store,
    ) -> Result<(), ApiStatus> {
        self.note("validate", a);
        let keep =
            a.operation == Operation::Delete && obj.pointer("/metadata/labels/keep").is_some();
        if obj.pointer("/data/refuse").is_some() || keep {
            return Err(a.forbidden("refused by the recorder"));
        }
        Ok(())
    }
}

fn actor(res: &Resource) -> Actor {
    Actor {
        manager: "test".into(),
        operation: FieldOp::Update,
        subresource: String::new(),
        api_version: res.group_version(),
    }
}

fn no_check(_: &Value) -> Result<Vec<String>, ApiStatus> {
    Ok(Vec::new())
}

fn ranges() -> ServiceRanges {
    let cidr = "10.43.0.0/16".parse().unwrap();
    let ports = crate::config::PortRange {
        first: 30000,
        last: 32767,
    };
    ServiceRanges::new(cidr, ports).unwrap()
}

async fn stored(store: &dyn Store, res: &Resource, ns: Option<&str>, name: &str) -> Option<Value> {
    let kv = store
        .get(&super::object::key(res, ns, name))
        .await
        .unwrap()
        .kv?;
    Some(super::object::from_store(&kv).unwrap())
}

#[tokio::test]
async fn every_write_verb_passes_the_chain_and_a_refusal_changes_nothing() {
    let store = MemoryStore::new();
    super::bootstrap(&store).await.unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let chain = Chain::new(vec![Box::new(Recorder(log.clone()))]);
    let alice = UserInfo {
        name: "alice".into(),
        groups: vec!["system:authenticated".into()],
        ..Default::default()
    };
    let ranges = ranges();
    let w = Writer {
        store: &store,
        ranges: Some(&ranges),
        admission: &chain,
        user: &alice,
    };
    let taken = |log: &Arc<Mutex<Vec<String>>>| std::mem::take(&mut *log.lock().unwrap());
    let cms = &registry::CONFIGMAPS;
    let ns = Some("default");

    // create: both phases, and the mutation is what is stored
    let cm = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
    create(&w, cms, ns, cm, Some(&actor(cms))).await.unwrap();
    assert_eq!(
        taken(&log),
        [
            "admit CREATE configmaps by alice",
            "validate CREATE configmaps by alice"
        ]
    );
    assert_eq!(
        stored(&store, cms, ns, "a").await.unwrap()["metadata"]["labels"]["admitted"],
        "yes"
    );
    let refused = json!({"metadata": {"name": "b"}, "data": {"refuse": "1"}});
    let err = create(&w, cms, ns, refused, None).await.unwrap_err();
    assert_eq!(err.code, StatusCode::FORBIDDEN);
    assert_eq!(
        err.message,
        "configmaps \"b\" is forbidden: refused by the recorder"
    );
    assert!(stored(&store, cms, ns, "b").await.is_none());
    taken(&log);

    // update, patch and apply are UPDATEs; a refused one is not written
    let before = stored(&store, cms, ns, "a").await.unwrap();
    let put = json!({"metadata": {"name": "a"}, "data": {"refuse": "1"}});
    let err = write::update(&w, cms, ns, "a", put, &actor(cms))
        .await
        .unwrap_err();
    assert_eq!(err.code, StatusCode::FORBIDDEN);
    assert_eq!(stored(&store, cms, ns, "a").await.unwrap(), before);
    let patch = br#"{"data": {"k": "w"}}"#;
    let media = "application/merge-patch+json";
    write::patch(&w, cms, ns, "a", media, patch, &no_check, &actor(cms))
        .await
        .unwrap();
    let apply = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "x"}}"#;
    let mut applier = actor(cms);
    applier.operation = FieldOp::Apply;
    write::apply(&w, cms, ns, "a", apply, &no_check, &applier, true)
        .await
        .unwrap();
    assert_eq!(
        taken(&log),
        [
            "admit UPDATE configmaps by alice",
            "validate UPDATE configmaps by alice",
            "admit UPDATE configmaps by alice",
            "validate UPDATE configmaps by alice",
            "admit UPDATE configmaps by alice",
            "validate UPDATE configmaps by alice",
        ]
    );

    // the status and scale subresources, and a namespace's finalize
    let deployments = &registry::DEPLOYMENTS;
    let deploy = json!({"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}},
                     "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    create(&w, deployments, ns, deploy, None).await.unwrap();
    let namespaces = &registry::NAMESPACES;
    create(
        &w,
        namespaces,
        None,
        json!({"metadata": {"name": "t"}}),
        None,
    )
    .await
    .unwrap();
    taken(&log);
    let status = br#"{"status": {"replicas": 0}}"#;
    write::status(
        &w,
        deployments,
        ns,
        "d",
        Some(media),
        status,
        &actor(deployments),
    )
    .await
    .unwrap();
    let scale = br#"{"spec": {"replicas": 3}}"#;
    write::scale(
        &w,
        deployments,
        ns,
        "d",
        Some(media),
        scale,
        &actor(deployments),
    )
    .await
    .unwrap();
    write::finalize(&w, namespaces, "t", None, &|cur| Ok(cur.clone()))
        .await
        .unwrap();
    assert_eq!(
        taken(&log),
        [
            "admit UPDATE deployments/status by alice",
            "validate UPDATE deployments/status by alice",
            "admit UPDATE deployments/scale by alice",
            "validate UPDATE deployments/scale by alice",
            "admit UPDATE namespaces/finalize by alice",
            "validate UPDATE namespaces/finalize by alice",
        ]
    );

    // binding and eviction are CREATEs of the pod's subresource
    let podres = &registry::PODS;
    let pod =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    create(&w, podres, ns, pod, None).await.unwrap();
    taken(&log);
    let binding = br#"{"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}}"#;
    pods::bind(&w, "default", "p", binding).await.unwrap();
    pods::evict(&w, "default", "p", br#"{"metadata": {"name": "p"}}"#)
        .await
        .unwrap();
    assert_eq!(
        taken(&log),
        [
            "admit CREATE pods/binding by alice",
            "validate CREATE pods/binding by alice",
            "admit CREATE pods/eviction by alice",
            "validate CREATE pods/eviction by alice",
        ]
    );

    // delete: the chain sees the object as stored, and may keep it
    let kept = json!({"metadata": {"name": "k", "labels": {"keep": "1"}}});
    create(&w, cms, ns, kept, None).await.unwrap();
    taken(&log);
    let err = delete(&w, cms, ns, "k", b"").await.unwrap_err();
    assert_eq!(err.code, StatusCode::FORBIDDEN);
    assert!(stored(&store, cms, ns, "k").await.is_some());
    delete(&w, cms, ns, "a", b"").await.unwrap();
    assert!(stored(&store, cms, ns, "a").await.is_none());
    assert_eq!(
        taken(&log),
        [
            "admit DELETE configmaps by alice",
            "validate DELETE configmaps by alice",
            "admit DELETE configmaps by alice",
            "validate DELETE configmaps by alice",
        ]
    );
    // the server's own bookkeeping writes pass no admission
    write::guaranteed_update(&store, cms, ns, "k", None, &|cur| Ok(cur.clone()))
        .await
        .unwrap();
    assert!(taken(&log).is_empty());
}

#[tokio::test]
async fn quotas_are_charged_for_what_an_update_adds() {
    let store = MemoryStore::new();
    super::bootstrap(&store).await.unwrap();
    let chain = Chain::builtin();
    let admin = UserInfo::apiserver();
    let ranges = ranges();
    let w = Writer {
        store: &store,
        ranges: Some(&ranges),
        admission: &chain,
        user: &admin,
    };
    let ns = Some("default");
    let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"services.nodeports": "0", "services": "5"}}});
    create(&w, &registry::RESOURCEQUOTAS, ns, quota, None)
        .await
        .unwrap();
    // the quota controller's first count
    write::guaranteed_update(&store, &registry::RESOURCEQUOTAS, ns, "q", None, &|cur| {
        let mut next = cur.clone();
        next["status"] = json!({"hard": cur["spec"]["hard"], "used": {"services.nodeports": "0", "services": "0"}});
        Ok(next)
    })
    .await
    .unwrap();
    let services = &registry::SERVICES;
    let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}], "selector": {"app": "s"}}});
    create(&w, services, ns, svc, None).await.unwrap();
    let used = stored(&store, &registry::RESOURCEQUOTAS, ns, "q")
        .await
        .unwrap();
    assert_eq!(used["status"]["used"]["services"], "1");
    // turning it into a NodePort Service adds a node port the quota does not allow
    let patch = br#"{"spec": {"type": "NodePort"}}"#;
    let err = write::patch(
        &w,
        services,
        ns,
        "s",
        "application/merge-patch+json",
        patch,
        &no_check,
        &actor(services),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, StatusCode::FORBIDDEN, "{}", err.message);
    assert!(
        err.message.starts_with(
            "services \"s\" is forbidden: exceeded quota: q, requested: services.nodeports=1"
        ),
        "{}",
        err.message
    );
    let svc = stored(&store, services, ns, "s").await.unwrap();
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    // an update that adds nothing is not charged again
    let patch = br#"{"metadata": {"labels": {"a": "b"}}}"#;
    write::patch(
        &w,
        services,
        ns,
        "s",
        "application/merge-patch+json",
        patch,
        &no_check,
        &actor(services),
    )
    .await
    .unwrap();
    let used = stored(&store, &registry::RESOURCEQUOTAS, ns, "q")
        .await
        .unwrap();
    assert_eq!(used["status"]["used"]["services"], "1");
}

#[tokio::test]
async fn namespace_lifecycle_keeps_the_system_namespaces_and_terminating_ones_closed() {
    let store = MemoryStore::new();
    super::bootstrap(&store).await.unwrap();
    let chain = Chain::builtin();
    let admin = UserInfo::apiserver();
    let w = Writer {
        store: &store,
        ranges: None,
        admission: &chain,
        user: &admin,
    };
    let namespaces = &registry::NAMESPACES;
    for immortal in ["default", "kube-system", "kube-public"] {
        let err = delete(&w, namespaces, None, immortal, b"")
            .await
            .unwrap_err();
        assert_eq!(err.code, StatusCode::FORBIDDEN);
        assert_eq!(
            err.message,
            format!("namespaces \"{immortal}\" is forbidden: this namespace may not be deleted")
        );
    }
    let cms = &registry::CONFIGMAPS;
    let err = create(
        &w,
        cms,
        Some("nowhere"),
        json!({"metadata": {"name": "a"}}),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, StatusCode::NOT_FOUND);
    assert_eq!(err.message, "namespaces \"nowhere\" not found");
    create(
        &w,
        namespaces,
        None,
        json!({"metadata": {"name": "t"}}),
        None,
    )
    .await
    .unwrap();
    let pending = delete(&w, namespaces, None, "t", b"").await.unwrap();
    assert_eq!(pending["status"]["phase"], "Terminating");
    let err = create(
        &w,
        cms,
        Some("t"),
        json!({"metadata": {"generateName": "x-"}}),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "configmaps \"x-\" is forbidden: unable to create new content in namespace t because it is being terminated"
    );
}
