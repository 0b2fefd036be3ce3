//! The deletion lifecycle of an object, as upstream's generic registry runs it
//! (pure: the time is passed in). A deletion marks the object with a
//! `deletionTimestamp` and its grace period and adds the finalizer its propagation
//! policy asks for; the object goes from the store once it is marked, has no
//! finalizers left (in `metadata` or, for namespaces, in `spec`) and no grace
//! period still running.

use crate::api::civil::{parse_rfc3339, rfc3339};
use serde_json::{Value, json};

/// Whether an object being deleted can now go: no finalizers left (for namespaces,
/// neither in `spec.finalizers`) and no grace period still running.
pub fn ready_to_go(obj: &Value) -> bool {
    let none_left = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    };
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && none_left("/metadata/finalizers")
        && none_left("/spec/finalizers")
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

/// A `propagationPolicy` upstream does not know.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported propagationPolicy {0:?}; use Foreground, Background or Orphan")]
pub struct PolicyError(pub String);

/// The finalizer a `DeleteOptions` asks for: `propagationPolicy` Foreground or
/// Orphan (or the older `orphanDependents: true`). An unknown policy is an error.
pub fn propagation_finalizer(options: &Value) -> Result<Option<&'static str>, PolicyError> {
    match options.get("propagationPolicy").and_then(Value::as_str) {
        Some("Foreground") => Ok(Some("foregroundDeletion")),
        Some("Orphan") => Ok(Some("orphan")),
        Some("Background") | None if options.get("orphanDependents") == Some(&json!(true)) => {
            Ok(Some("orphan"))
        }
        Some("Background") | None => Ok(None),
        Some(other) => Err(PolicyError(other.to_string())),
    }
}

/// `obj` as a deletion at `now` with `grace` seconds and `finalizer` leaves it.
/// An object already being deleted keeps its mark, but a shorter grace period
/// shortens it (as `kubectl delete --grace-period=0 --force` on a terminating pod).
pub fn mark_deleted(obj: &Value, finalizer: Option<&str>, grace: i64, now: i64) -> Value {
    let mut next = obj.clone();
    if let Some(f) = finalizer {
        let mut finalizers: Vec<Value> = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !finalizers.contains(&json!(f)) {
            finalizers.push(json!(f));
        }
        next["metadata"]["finalizers"] = json!(finalizers);
    }
    let marked = obj
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339);
    let current_grace = obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    match (marked, current_grace) {
        (None, _) => {
            next["metadata"]["deletionTimestamp"] = json!(rfc3339(now + grace));
            next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        (Some(at), Some(had)) if grace < had => {
            // the deletion was asked for at `at - had`; it is now due `grace` after that
            next["metadata"]["deletionTimestamp"] = json!(rfc3339(at - had + grace));
            next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        (Some(_), _) => {}
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_marks_the_object_and_it_goes_when_nothing_holds_it() {
        let obj = json!({"metadata": {"name": "a"}});
        let marked = mark_deleted(&obj, None, 0, 1_000);
        assert_eq!(marked["metadata"]["deletionTimestamp"], rfc3339(1_000));
        assert!(
            ready_to_go(&marked),
            "no finalizer, no grace: it goes at once"
        );
        let held = mark_deleted(&obj, Some("orphan"), 0, 1_000);
        assert_eq!(held["metadata"]["finalizers"], json!(["orphan"]));
        assert!(!ready_to_go(&held));
        let graceful = mark_deleted(&obj, None, 30, 1_000);
        assert_eq!(graceful["metadata"]["deletionTimestamp"], rfc3339(1_030));
        assert!(!ready_to_go(&graceful));
        let namespace = json!({"metadata": {}, "spec": {"finalizers": ["kubernetes"]}});
        assert!(!ready_to_go(&mark_deleted(&namespace, None, 0, 1)));
        assert!(!ready_to_go(&obj), "not marked: it stays");
    }

    #[test]
    fn a_second_deletion_only_shortens_the_grace_period() {
        let obj = mark_deleted(&json!({"metadata": {}}), None, 30, 1_000);
        assert_eq!(
            mark_deleted(&obj, None, 60, 1_010),
            obj,
            "longer: no change"
        );
        assert_eq!(mark_deleted(&obj, None, 30, 1_010), obj, "same: no change");
        let shorter = mark_deleted(&obj, None, 5, 1_010);
        assert_eq!(shorter["metadata"]["deletionTimestamp"], rfc3339(1_005));
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
        let forced = mark_deleted(&obj, None, 0, 1_010);
        assert!(ready_to_go(&forced), "--grace-period=0 --force finishes it");
        let policy = mark_deleted(&obj, Some("foregroundDeletion"), 60, 1_010);
        assert_eq!(
            policy["metadata"]["finalizers"],
            json!(["foregroundDeletion"])
        );
        assert_eq!(
            policy["metadata"]["deletionTimestamp"],
            obj["metadata"]["deletionTimestamp"]
        );
    }

    #[test]
    fn propagation_policies_are_upstreams() {
        assert_eq!(propagation_finalizer(&json!({})), Ok(None));
        assert_eq!(
            propagation_finalizer(&json!({"propagationPolicy": "Orphan"})),
            Ok(Some("orphan"))
        );
        assert_eq!(
            propagation_finalizer(&json!({"orphanDependents": true})),
            Ok(Some("orphan"))
        );
        assert_eq!(
            propagation_finalizer(&json!({"propagationPolicy": "Foreground"})),
            Ok(Some("foregroundDeletion"))
        );
        assert!(propagation_finalizer(&json!({"propagationPolicy": "Later"})).is_err());
    }
}
