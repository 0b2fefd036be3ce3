//! Upstream's ServiceAccount admission plugin, for pods created in a namespace.

use super::{Attributes, Operation, Plugin};
use crate::apiserver::resources::object::{from_store, key};
use crate::apiserver::resources::store_error;
use crate::apiserver::status::ApiStatus;
use crate::store::Store;
use async_trait::async_trait;
use serde_json::{Value, json};

pub struct ServiceAccount;

#[async_trait]
impl Plugin for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    async fn admit(
        &self,
        attrs: &Attributes<'_>,
        pod: &mut Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        let (Operation::Create, Some(ns)) = (attrs.operation, attrs.namespace) else {
            return Ok(());
        };
        if !attrs.is("", "pods") {
            return Ok(());
        }
        // as upstream, a mirror pod (a static pod's API copy) gets no service account
        let mirror = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key(super::node_restriction::MIRROR_ANNOTATION));
        if mirror {
            return Ok(());
        }
        service_account(attrs, store, ns, pod).await
    }
}

/// The account `name` in `ns`. `default` is looked for again for up to a second and a
/// half, as upstream's plugin does: its controller makes it with the namespace, a
/// moment later.
async fn account(store: &dyn Store, ns: &str, name: &str) -> Result<Option<Value>, ApiStatus> {
    let attempts = if name == "default" { 10 } else { 1 };
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
        let found = store
            .get(&key(&crate::api::registry::SERVICEACCOUNTS, Some(ns), name))
            .await
            .map_err(store_error)?
            .kv
            .and_then(|kv| from_store(&kv).ok());
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Where a pod's service account token is mounted.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Upstream's ServiceAccount admission: the pod runs as `default` unless it names an
/// account, and unless automounting is off (on the pod, else on the account) it gets
/// the projected `kube-api-access-<random>` volume (a bound token, the cluster CA from
/// `kube-root-ca.crt`, and the namespace) mounted read-only in every container.
/// A pod naming an account that does not exist is refused (the account controller
/// creates `default` with its namespace; until then, too).
async fn service_account(
    attrs: &Attributes<'_>,
    store: &dyn Store,
    ns: &str,
    pod: &mut Value,
) -> Result<(), ApiStatus> {
    let named = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| pod["spec"][*k].as_str().filter(|n| !n.is_empty()))
        .unwrap_or("default")
        .to_string();
    pod["spec"]["serviceAccountName"] = json!(named);
    pod["spec"]["serviceAccount"] = json!(named);
    let account = account(store, ns, &named).await?;
    if account.is_none() {
        return Err(attrs.forbidden(format!(
            "error looking up service account {ns}/{named}: serviceaccount {named:?} not found"
        )));
    }
    let automount = pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| {
            account
                .as_ref()
                .and_then(|a| a["automountServiceAccountToken"].as_bool())
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"];
    let all_mounted = containers.iter().all(|f| {
        pod["spec"][*f].as_array().into_iter().flatten().all(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == SERVICE_ACCOUNT_PATH)
        })
    });
    if all_mounted {
        return Ok(());
    }
    // upstream's alphabet for generated suffixes (no vowels, no look-alikes)
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let seed = crate::api::meta::new_uid().replace('-', "");
    let suffix: String = seed
        .as_bytes()
        .chunks(2)
        .take(5)
        .map(|c| {
            let n = u8::from_str_radix(std::str::from_utf8(c).unwrap_or("0"), 16).unwrap_or(0);
            ALPHABET[n as usize % ALPHABET.len()] as char
        })
        .collect();
    let volume = format!("kube-api-access-{suffix}");
    let projected = json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    match pod["spec"]["volumes"].as_array_mut() {
        Some(v) => v.push(projected),
        None => pod["spec"]["volumes"] = json!([projected]),
    }
    for f in containers {
        for c in pod["spec"][f].as_array_mut().into_iter().flatten() {
            let mounted = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == SERVICE_ACCOUNT_PATH);
            if mounted {
                continue;
            }
            let mount =
                json!({"name": volume, "readOnly": true, "mountPath": SERVICE_ACCOUNT_PATH});
            match c["volumeMounts"].as_array_mut() {
                Some(m) => m.push(mount),
                None => c["volumeMounts"] = json!([mount]),
            }
        }
    }
    Ok(())
}
