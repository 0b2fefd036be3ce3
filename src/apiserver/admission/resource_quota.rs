//! Upstream's ResourceQuota plugin: every ResourceQuota of the namespace that counts
//! an object created — or the growth of one updated (a Service turned NodePort, a
//! bigger claim) — is charged for it, with a compare-and-swap on the quota's
//! `status.used`, so two writes racing for the last of a quota cannot both get it.
//! The quota controller recounts usage from the objects themselves (which also gives
//! back what deletes and failed writes freed).

use super::{Attributes, Operation, Plugin};
use crate::api::quota;
use crate::api::registry::Resource;
use crate::apiserver::resources::object::{from_store, prefix, to_store};
use crate::apiserver::resources::store_error;
use crate::apiserver::status::{ApiStatus, qualified};
use crate::store::{ListOptions, Store, StoreError};
use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// How often a quota charge is retried when the quota changed under it.
const CHARGE_TRIES: usize = 16;

pub struct ResourceQuota;

/// What a write adds to the namespace's usage: all of a new object's, the growth of
/// an updated one's (shrinking is given back by the controller's recount).
fn added_usage(attrs: &Attributes<'_>, obj: &Value) -> quota::Usage {
    let (group, plural) = (attrs.resource.group, attrs.resource.plural);
    let mut usage = quota::usage(group, plural, obj);
    if let Some(old) = attrs.old {
        let before = quota::usage(group, plural, old);
        usage.retain(|k, v| {
            *v -= before.get(k).copied().unwrap_or(0.0);
            *v > 1e-9
        });
    }
    usage
}

#[async_trait]
impl Plugin for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    async fn validate(
        &self,
        attrs: &Attributes<'_>,
        obj: &Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        let Some(ns) = attrs.namespace else {
            return Ok(());
        };
        if attrs.operation == Operation::Delete || !attrs.subresource.is_empty() {
            return Ok(());
        }
        let usage = added_usage(attrs, obj);
        if usage.is_empty() {
            return Ok(());
        }
        // a pod must state what a quota limits when it is created
        let check_required = attrs.operation == Operation::Create && attrs.is("", "pods");
        let res = attrs.resource;
        let mut charged = std::collections::HashSet::new();
        for _ in 0..CHARGE_TRIES {
            match charge(store, res, ns, obj, &usage, check_required, &mut charged).await? {
                Charge::Done => return Ok(()),
                Charge::Refused(msg) => return Err(attrs.forbidden(msg)),
                Charge::Raced => continue,
            }
        }
        Err(ApiStatus::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "{} {:?}: the namespace's resource quotas kept changing; try again",
                qualified(res.plural, res.group),
                attrs.name
            ),
        ))
    }
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
    check_required: bool,
    charged: &mut std::collections::HashSet<String>,
) -> Result<Charge, ApiStatus> {
    // every quota is checked before any is charged: a refusal charges none
    let mut writes = Vec::new();
    let quotas = store
        .list(
            &prefix(&crate::api::registry::RESOURCEQUOTAS, Some(ns)),
            ListOptions::default(),
        )
        .await
        .map_err(store_error)?
        .kvs;
    for kv in quotas {
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
        if check_required {
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
