//! Admission of namespaced creates, as upstream's ServiceAccount, Priority,
//! LimitRanger and ResourceQuota plugins: a pod gets its service account token
//! volume, its priority, and its namespace's LimitRange defaults and must fit their bounds;
//! then every ResourceQuota of the namespace that counts the object is charged for it,
//! with a compare-and-swap on the quota's `status.used`, so two creates racing for
//! the last of a quota cannot both get it. The quota controller recounts usage from
//! the objects themselves (which also gives back what deletes and failed creates
//! freed).

use super::object::{from_store, key, prefix, to_store};
use super::store_error;
use crate::api::quota;
use crate::api::registry::{Resource, find};
use crate::apiserver::status::{ApiStatus, qualified};
use crate::store::{KeyValue, ListOptions, Store, StoreError};
use http::StatusCode;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// How often a quota charge is retried when the quota changed under it.
const CHARGE_TRIES: usize = 16;

async fn list(store: &dyn Store, plural: &str, ns: &str) -> Result<Vec<KeyValue>, ApiStatus> {
    let Some(res) = find("", "v1", plural) else {
        return Ok(Vec::new());
    };
    Ok(store
        .list(&prefix(res, Some(ns)), ListOptions::default())
        .await
        .map_err(store_error)?
        .kvs)
}

/// Admits the create of `obj` (shown in messages as `shown`, its name or generateName)
/// into namespace `ns`, setting LimitRange defaults on pods and charging quotas.
pub async fn admit(
    store: &dyn Store,
    res: &Resource,
    ns: &str,
    shown: &str,
    obj: &mut Value,
) -> Result<(), ApiStatus> {
    let forbidden = |msg: String| {
        ApiStatus::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} \"{shown}\" is forbidden: {msg}",
                qualified(res.plural, res.group)
            ),
        )
    };
    if res.kind == "Pod" {
        // as upstream, a mirror pod (a static pod's API copy) gets no service account
        let mirror = obj
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key(crate::apiserver::node_restriction::MIRROR_ANNOTATION));
        if !mirror {
            service_account(store, ns, obj).await?;
        }
        prioritise(store, obj).await?.map_err(forbidden)?;
        let ranges: Vec<Value> = list(store, "limitranges", ns)
            .await?
            .iter()
            .filter_map(|kv| from_store(kv).ok())
            .collect();
        if !ranges.is_empty() {
            if let Some(said) = quota::apply_defaults(obj, &ranges) {
                obj["metadata"]["annotations"]["kubernetes.io/limit-ranger"] = json!(said);
            }
            let wrong = quota::violations(obj, &ranges);
            if !wrong.is_empty() {
                return Err(forbidden(quota::aggregate(&wrong)));
            }
        }
    }
    let usage = quota::usage(res.group, res.plural, obj);
    let mut charged = std::collections::HashSet::new();
    for _ in 0..CHARGE_TRIES {
        match charge(store, res, ns, obj, &usage, &mut charged).await? {
            Charge::Done => return Ok(()),
            Charge::Refused(msg) => return Err(forbidden(msg)),
            Charge::Raced => continue,
        }
    }
    Err(ApiStatus::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "{} \"{shown}\": the namespace's resource quotas kept changing; try again",
            qualified(res.plural, res.group)
        ),
    ))
}

/// Where a pod's service account token is mounted.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Upstream's ServiceAccount admission: the pod runs as `default` unless it names an
/// account, and unless automounting is off (on the pod, else on the account) it gets
/// the projected `kube-api-access-<random>` volume (a bound token, the cluster CA from
/// `kube-root-ca.crt`, and the namespace) mounted read-only in every container.
async fn service_account(store: &dyn Store, ns: &str, pod: &mut Value) -> Result<(), ApiStatus> {
    let named = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| pod["spec"][*k].as_str().filter(|n| !n.is_empty()))
        .unwrap_or("default")
        .to_string();
    pod["spec"]["serviceAccountName"] = json!(named);
    pod["spec"]["serviceAccount"] = json!(named);
    let account = match find("", "v1", "serviceaccounts") {
        Some(res) => store
            .get(&key(res, Some(ns), &named))
            .await
            .map_err(store_error)?
            .kv
            .and_then(|kv| from_store(&kv).ok()),
        None => None,
    };
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

/// Upstream's Priority admission: `spec.priority` (and `preemptionPolicy`) from the
/// pod's PriorityClass, or the global default class, or 0.
/// The outer error is the store's; the inner one is the refusal.
async fn prioritise(store: &dyn Store, pod: &mut Value) -> Result<Result<(), String>, ApiStatus> {
    let Some(res) = find("scheduling.k8s.io", "v1", "priorityclasses") else {
        return Ok(Ok(()));
    };
    let wanted = pod["spec"]["priorityClassName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let class: Option<Value> = match &wanted {
        Some(name) => {
            let got = store
                .get(&key(res, None, name))
                .await
                .map_err(store_error)?;
            match got.kv {
                Some(kv) => Some(from_store(&kv)?),
                None => return Ok(Err(format!("no PriorityClass with name {name} was found"))),
            }
        }
        // the global default class, if there is one (the lowest, if several)
        None => store
            .list(&prefix(res, None), ListOptions::default())
            .await
            .map_err(store_error)?
            .kvs
            .iter()
            .filter_map(|kv| from_store(kv).ok())
            .filter(|c| c["globalDefault"] == true)
            .min_by_key(|c| c["value"].as_i64().unwrap_or(0)),
    };
    let value = class
        .as_ref()
        .and_then(|c| c["value"].as_i64())
        .unwrap_or(0);
    if let Some(given) = pod["spec"]["priority"].as_i64() {
        if given != value {
            return Ok(Err(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
    }
    pod["spec"]["priority"] = json!(value);
    if let Some(c) = &class {
        if wanted.is_none() {
            pod["spec"]["priorityClassName"] = c["metadata"]["name"].clone();
        }
        if let Some(policy) = c["preemptionPolicy"].as_str() {
            pod["spec"]["preemptionPolicy"] = json!(policy);
        }
    }
    Ok(Ok(()))
}

enum Charge {
    Done,
    Refused(String),
    /// A quota changed between the read and the write: read again.
    Raced,
}

async fn charge(
    store: &dyn Store,
    res: &Resource,
    ns: &str,
    obj: &Value,
    usage: &quota::Usage,
    charged: &mut std::collections::HashSet<String>,
) -> Result<Charge, ApiStatus> {
    // every quota is checked before any is charged: a refusal charges none
    let mut writes = Vec::new();
    for kv in list(store, "resourcequotas", ns).await? {
        let mut q = from_store(&kv)?;
        let name = q["metadata"]["name"].as_str().unwrap_or("").to_string();
        if charged.contains(&name) {
            continue; // charged in an earlier try that raced on another quota
        }
        let hard: Map<String, Value> = q["spec"]["hard"].as_object().cloned().unwrap_or_default();
        let keys: Vec<&String> = hard
            .keys()
            .filter(|k| quota::tracks(k, res.group, res.plural))
            .collect();
        if keys.is_empty() {
            continue;
        }
        if res.kind == "Pod" {
            let missing = quota::missing(obj, &hard);
            if !missing.is_empty() {
                return Ok(Charge::Refused(format!(
                    "failed quota: {name}: must specify {}",
                    missing.join(",")
                )));
            }
        }
        let used: Map<String, Value> = q["status"]["used"].as_object().cloned().unwrap_or_default();
        let unknown: Vec<&str> = keys
            .iter()
            .filter(|k| !used.contains_key(k.as_str()))
            .map(|k| k.as_str())
            .collect();
        if !unknown.is_empty() {
            return Ok(Charge::Refused(format!(
                "status unknown for quota: {name}, resources: {}",
                unknown.join(",")
            )));
        }
        let amount = |m: &Map<String, Value>, k: &str| {
            m.get(k).and_then(crate::api::quantity::of).unwrap_or(0.0)
        };
        let mut next = used.clone();
        let (mut requested, mut was, mut limited) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for k in keys.iter().filter(|k| usage.contains_key(k.as_str())) {
            let delta = usage[k.as_str()];
            let total = amount(&used, k) + delta;
            if total > amount(&hard, k) + 1e-9 {
                requested.insert(k.to_string(), quota::format(k, delta));
                was.insert(k.to_string(), text(&used[k.as_str()]));
                limited.insert(k.to_string(), text(&hard[k.as_str()]));
            }
            next.insert(k.to_string(), json!(quota::format(k, total)));
        }
        if !requested.is_empty() {
            return Ok(Charge::Refused(format!(
                "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                quota::pretty(&requested),
                quota::pretty(&was),
                quota::pretty(&limited)
            )));
        }
        if next == used {
            continue;
        }
        q["status"]["used"] = Value::Object(next);
        writes.push((name, kv, q));
    }
    for (name, kv, q) in writes {
        match store.update(&kv.key, to_store(&q)?, kv.mod_revision).await {
            Ok(_) => {
                charged.insert(name);
            }
            Err(StoreError::Conflict { .. }) => {
                return Ok(Charge::Raced);
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    Ok(Charge::Done)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
