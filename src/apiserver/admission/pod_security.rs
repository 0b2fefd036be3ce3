//! Upstream's PodSecurity admission plugin: pods are checked against their
//! namespace's Pod Security Standards (labels `pod-security.kubernetes.io/{enforce,
//! audit,warn}[-version]` over the cluster's defaults): enforce refuses, audit
//! annotates the audit event, warn answers with a warning. Workload templates get
//! warn and audit only (their pods are enforced when created). A namespace's labels
//! must parse; tightening its enforce level warns about the pods already there.

use super::notes::{annotate, warn};
use super::{Attributes, Operation, Plugin};
use crate::api::pod_security::{
    Level, LevelVersion, PREFIX, Policy, checks::Failure, evaluate, forbidden_detail,
    forbidden_reason, policy_of,
};
use crate::api::validation::Cause;
use crate::apiserver::resources::object::{causes_summary, check_values, from_store, key, prefix};
use crate::apiserver::resources::store_error;
use crate::apiserver::status::ApiStatus;
use crate::store::{ListOptions, Store};
use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub use crate::api::pod_security::config::PodSecurityConfig;

/// At most this many existing pods are checked when a namespace's level tightens.
const EXISTING_PODS_CHECKED: usize = 3000;

/// Pod subresources that change nothing Pod Security looks at.
const IGNORED_SUBRESOURCES: [&str; 8] = [
    "exec",
    "attach",
    "binding",
    "eviction",
    "log",
    "portforward",
    "proxy",
    "status",
];

/// The plugin, with the cluster's defaults and exemptions.
pub struct PodSecurity {
    /// From `--pod-security-admission-config-file`, or all privileged.
    pub config: PodSecurityConfig,
}

fn label_causes(errors: &[crate::api::pod_security::LabelError]) -> Vec<Cause> {
    errors
        .iter()
        .map(|e| Cause {
            field: format!("metadata.labels[{}]", e.key),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {:?}: {}", e.value, e.message),
        })
        .collect()
}

/// The pod template a workload carries, if `attrs` names a workload.
fn template<'a>(attrs: &Attributes<'_>, obj: &'a Value) -> Option<&'a Value> {
    let t = match (attrs.resource.group, attrs.resource.plural) {
        ("", "podtemplates") => &obj["template"],
        ("", "replicationcontrollers")
        | ("apps", "replicasets" | "deployments" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => &obj["spec"]["template"],
        ("batch", "cronjobs") => &obj["spec"]["jobTemplate"]["spec"]["template"],
        _ => return None,
    };
    t.is_object().then_some(t)
}

/// Whether an update changes what Pod Security looks at (upstream's
/// `isSignificantPodUpdate`): containers' number or images, seccomp annotations, new or
/// changed ephemeral containers.
fn significant(pod: &Value, old: &Value) -> bool {
    let seccomp = |p: &Value, name: &Value| {
        p["metadata"]["annotations"][format!(
            "container.seccomp.security.alpha.kubernetes.io/{}",
            name.as_str().unwrap_or("")
        )]
        .clone()
    };
    for field in ["containers", "initContainers"] {
        let (new, was) = (
            pod["spec"][field].as_array().cloned().unwrap_or_default(),
            old["spec"][field].as_array().cloned().unwrap_or_default(),
        );
        if new.len() != was.len() {
            return true;
        }
        for (n, w) in new.iter().zip(&was) {
            if n["image"] != w["image"] || seccomp(pod, &n["name"]) != seccomp(old, &n["name"]) {
                return true;
            }
        }
    }
    let was = old["spec"]["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    pod["spec"]["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| match was.iter().find(|w| w["name"] == e["name"]) {
            None => true,
            Some(w) => {
                w["image"] != e["image"] || seccomp(pod, &e["name"]) != seccomp(old, &e["name"])
            }
        })
}

impl PodSecurity {
    /// The namespace's policy and label problems (a missing namespace: the defaults).
    async fn policy(
        &self,
        namespace: &str,
        store: &dyn Store,
    ) -> Result<(Policy, Vec<crate::api::pod_security::LabelError>), ApiStatus> {
        let found = store
            .get(&key(&crate::api::registry::NAMESPACES, None, namespace))
            .await
            .map_err(store_error)?;
        let ns = found.kv.map(|kv| from_store(&kv)).transpose()?;
        let labels = ns
            .as_ref()
            .and_then(|n| n["metadata"]["labels"].as_object());
        Ok(policy_of(labels, &self.config.defaults))
    }

    fn exempt(&self, attrs: &Attributes<'_>) -> bool {
        let ns = attrs.namespace.unwrap_or("");
        if self.config.exempt_namespaces.iter().any(|n| n == ns) {
            annotate(format!("{PREFIX}exempt"), "namespace");
            return true;
        }
        if self.config.exempt_usernames.contains(&attrs.user.name) {
            annotate(format!("{PREFIX}exempt"), "user");
            return true;
        }
        false
    }

    fn runtime_class_exempt(&self, spec: &Value) -> bool {
        let exempt = spec["runtimeClassName"]
            .as_str()
            .is_some_and(|c| self.config.exempt_runtime_classes.iter().any(|e| e == c));
        if exempt {
            annotate(format!("{PREFIX}exempt"), "runtimeClass");
        }
        exempt
    }

    /// audit and warn for `metadata`/`spec`.
    fn audit_and_warn(&self, policy: &Policy, metadata: &Value, spec: &Value, cache: &mut Cache) {
        self.audit(policy, metadata, spec, cache);
        let warned = cache.get(policy.warn, metadata, spec);
        if !warned.is_empty() {
            warn(format!(
                "would violate PodSecurity \"{}\": {}",
                policy.warn,
                forbidden_detail(&warned)
            ));
        }
    }

    /// audit mode for `metadata`/`spec` (noted whether or not enforce refuses).
    fn audit(&self, policy: &Policy, metadata: &Value, spec: &Value, cache: &mut Cache) {
        let audit = cache.get(policy.audit, metadata, spec);
        if !audit.is_empty() {
            annotate(
                format!("{PREFIX}audit-violations"),
                format!(
                    "would violate PodSecurity \"{}\": {}",
                    policy.audit,
                    forbidden_detail(&audit)
                ),
            );
        }
    }

    async fn pod(
        &self,
        attrs: &Attributes<'_>,
        pod: &Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        if IGNORED_SUBRESOURCES.contains(&attrs.subresource) || self.exempt(attrs) {
            return Ok(());
        }
        let (policy, errors) = self.policy(attrs.namespace.unwrap_or(""), store).await?;
        if !errors.is_empty() {
            let all = causes_summary(&label_causes(&errors));
            annotate(
                format!("{PREFIX}error"),
                format!("Failed to parse policy: {all}"),
            );
        } else if policy.all_privileged() {
            annotate(
                format!("{PREFIX}enforce-policy"),
                LevelVersion::PRIVILEGED.to_string(),
            );
            return Ok(());
        }
        if attrs.operation == Operation::Update
            && attrs.old.is_some_and(|old| !significant(pod, old))
        {
            return Ok(());
        }
        let (metadata, spec) = (&pod["metadata"], &pod["spec"]);
        if self.runtime_class_exempt(spec) {
            return Ok(());
        }
        let mut cache = Cache::default();
        annotate(
            format!("{PREFIX}enforce-policy"),
            policy.enforce.to_string(),
        );
        let enforced = cache.get(policy.enforce, metadata, spec);
        if !enforced.is_empty() {
            // audit still notes a refused pod; warnings go only with an allowed one
            self.audit(&policy, metadata, spec, &mut cache);
            let name = metadata["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(attrs.name);
            let subject = if name.is_empty() {
                "pods".to_string()
            } else {
                format!("pods {name:?}")
            };
            return Err(ApiStatus::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{subject} is forbidden: violates PodSecurity \"{}\": {}",
                    policy.enforce,
                    forbidden_detail(&enforced)
                ),
            )
            .with_details(json!({"name": name, "kind": "pods"})));
        }
        self.audit_and_warn(&policy, metadata, spec, &mut cache);
        Ok(())
    }

    async fn workload(
        &self,
        attrs: &Attributes<'_>,
        template: &Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        if self.exempt(attrs) {
            return Ok(());
        }
        let (policy, errors) = self.policy(attrs.namespace.unwrap_or(""), store).await?;
        let quiet = [policy.audit, policy.warn]
            .iter()
            .all(|lv| lv.level == Level::Privileged);
        if (errors.is_empty() && quiet) || self.runtime_class_exempt(&template["spec"]) {
            return Ok(());
        }
        let mut cache = Cache::default();
        self.audit_and_warn(
            &policy,
            &template["metadata"],
            &template["spec"],
            &mut cache,
        );
        Ok(())
    }

    async fn namespace(
        &self,
        attrs: &Attributes<'_>,
        ns: &Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        let name = ns["metadata"]["name"].as_str().unwrap_or(attrs.name);
        let (policy, errors) =
            policy_of(ns["metadata"]["labels"].as_object(), &self.config.defaults);
        let old = attrs
            .old
            .map(|o| policy_of(o["metadata"]["labels"].as_object(), &self.config.defaults));
        if !errors.is_empty() {
            // an update that leaves the same problems is not refused for them
            if old.as_ref().is_none_or(|(_, was)| *was != errors) {
                return check_values(
                    &crate::api::registry::NAMESPACES,
                    name,
                    &label_causes(&errors),
                );
            }
            return Ok(());
        }
        let Some((was, _)) = old else {
            return Ok(());
        };
        let (new, before) = (policy.enforce, was.enforce);
        let tightened = new != before
            && new.level != Level::Privileged
            && !(new.version == before.version && new.level <= before.level);
        if tightened && !self.config.exempt_namespaces.iter().any(|n| n == name) {
            self.check_existing(name, new, store).await?;
        }
        Ok(())
    }

    /// Warns about the pods of `namespace` that its new enforce level would refuse.
    async fn check_existing(
        &self,
        namespace: &str,
        lv: LevelVersion,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        let listed = store
            .list(
                &prefix(&crate::api::registry::PODS, Some(namespace)),
                ListOptions::default(),
            )
            .await
            .map_err(store_error)?;
        let pods: Vec<Value> = listed
            .kvs
            .iter()
            .filter_map(|kv| from_store(kv).ok())
            .filter(|p| {
                !self
                    .config
                    .exempt_runtime_classes
                    .iter()
                    .any(|c| p["spec"]["runtimeClassName"] == *c.as_str())
            })
            .collect();
        let checked = pods.len().min(EXISTING_PODS_CHECKED);
        // by reasons: how many pods, and the first name
        let mut groups: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for p in &pods[..checked] {
            let failures = evaluate(lv, &p["metadata"], &p["spec"]);
            if failures.is_empty() {
                continue;
            }
            let pod = p["metadata"]["name"].as_str().unwrap_or("").to_string();
            let entry = groups
                .entry(forbidden_reason(&failures))
                .or_insert((0, pod.clone()));
            entry.0 += 1;
            if pod < entry.1 {
                entry.1 = pod;
            }
        }
        if checked < pods.len() {
            warn(format!(
                "new PodSecurity enforce level only checked against the first {checked} of {} existing pods",
                pods.len()
            ));
        }
        if groups.is_empty() {
            return Ok(());
        }
        warn(format!(
            "existing pods in namespace {namespace:?} violate the new PodSecurity enforce level \"{lv}\""
        ));
        let mut lines: Vec<String> = groups
            .into_iter()
            .map(|(reasons, (count, pod))| match count {
                1 => format!("{pod}: {reasons}"),
                2 => format!("{pod} (and 1 other pod): {reasons}"),
                n => format!("{pod} (and {} other pods): {reasons}", n - 1),
            })
            .collect();
        lines.sort();
        lines.into_iter().for_each(warn);
        Ok(())
    }
}

/// Evaluations of one request, by level and version (enforce, audit and warn often ask
/// the same).
#[derive(Default)]
struct Cache(Vec<(LevelVersion, Vec<Failure>)>);

impl Cache {
    fn get(&mut self, lv: LevelVersion, metadata: &Value, spec: &Value) -> Vec<Failure> {
        if let Some((_, f)) = self.0.iter().find(|(l, _)| *l == lv) {
            return f.clone();
        }
        let f = evaluate(lv, metadata, spec);
        self.0.push((lv, f.clone()));
        f
    }
}

#[async_trait]
impl Plugin for PodSecurity {
    fn name(&self) -> &'static str {
        "PodSecurity"
    }

    async fn validate(
        &self,
        attrs: &Attributes<'_>,
        obj: &Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        if !matches!(attrs.operation, Operation::Create | Operation::Update) {
            return Ok(());
        }
        if attrs.resource.group.is_empty() && attrs.resource.plural == "pods" {
            return self.pod(attrs, obj, store).await;
        }
        if !attrs.subresource.is_empty() {
            return Ok(());
        }
        if attrs.is("", "namespaces") {
            return self.namespace(attrs, obj, store).await;
        }
        match template(attrs, obj) {
            Some(t) => self.workload(attrs, t, store).await,
            None => Ok(()),
        }
    }
}
