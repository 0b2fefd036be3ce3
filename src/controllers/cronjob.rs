//! The CronJob controller: creates a Job (named `<cronjob>-<minutes since the epoch>`,
//! as upstream) at each scheduled time of its cron schedule in its `timeZone`, unless
//! suspended or later than `startingDeadlineSeconds`; `concurrencyPolicy` Allow runs
//! jobs side by side, Forbid skips a run while one is active, Replace deletes the
//! active one first; finished jobs beyond the history limits are deleted.

use super::{Context, controller_of, controller_ref};
use crate::api::cron::{Schedule, Zone};
use crate::api::meta::{now_secs, parse_rfc3339, rfc3339};
use crate::client::watch::object_path;
use crate::runtime::informer::Informer;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn finished(job: &Value) -> Option<bool> {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| {
            (c["status"] == "True" && (c["type"] == "Complete" || c["type"] == "Failed"))
                .then(|| c["type"] == "Complete")
        })
}

/// Runs the loop; `skew` seconds are added to the clock (tests move time forward).
pub async fn run(cx: Arc<Context>, skew: i64) {
    let cronjobs = cx.informer(&crate::api::registry::CRONJOBS);
    let jobs = cx.informer(&crate::api::registry::JOBS);
    let (mut a, mut b) = (cronjobs.subscribe(), jobs.subscribe());
    cronjobs.synced().await;
    jobs.synced().await;
    loop {
        for cj in cronjobs.list(None) {
            if let Err(e) = sync(&cx, &cj, &jobs, &cronjobs, now_secs() + skew).await {
                tracing::debug!(cronjob = %crate::client::watch::key_of(&cj), error = %e, "cron job sync failed");
            }
        }
        // schedules are to the minute: a look every second is plenty
        tokio::select! {
            Some(_) = a.recv() => {}
            Some(_) = b.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        while a.try_recv().is_ok() || b.try_recv().is_ok() {}
    }
}

async fn sync(
    cx: &Context,
    cj: &Arc<Value>,
    jobs: &Informer,
    cronjobs: &Informer,
    now: i64,
) -> Result<(), crate::client::ClientError> {
    if !cj["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let ns = cj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = cj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let uid = &cj["metadata"]["uid"];
    let mut owned: Vec<Arc<Value>> = jobs
        .list(Some(&ns))
        .into_iter()
        .filter(|j| {
            controller_of(j).is_some_and(|r| r["uid"] == *uid)
                && j["metadata"]["deletionTimestamp"].is_null()
        })
        .collect();
    owned.sort_by_key(|j| {
        j["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    let job_path = |j: &str| object_path(jobs.res, Some(&ns), j);
    // history limits
    for (success, limit) in [
        (
            true,
            cj["spec"]["successfulJobsHistoryLimit"]
                .as_i64()
                .unwrap_or(3),
        ),
        (
            false,
            cj["spec"]["failedJobsHistoryLimit"].as_i64().unwrap_or(1),
        ),
    ] {
        let done: Vec<&Arc<Value>> = owned
            .iter()
            .filter(|j| finished(j) == Some(success))
            .collect();
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        for j in done.iter().take(excess) {
            cx.client
                .delete(
                    &job_path(j["metadata"]["name"].as_str().unwrap_or("")),
                    &json!({"propagationPolicy": "Background"}),
                )
                .await?;
        }
    }
    let mut active: Vec<&Arc<Value>> = owned.iter().filter(|j| finished(j).is_none()).collect();
    let mut last_schedule = cj["status"]["lastScheduleTime"].as_str().map(String::from);
    let schedule = Schedule::parse(cj["spec"]["schedule"].as_str().unwrap_or(""));
    let zone = Zone::load(cj["spec"]["timeZone"].as_str().unwrap_or("UTC"));
    let mut created = None;
    if let (Ok(schedule), Ok(zone)) = (&schedule, &zone) {
        let since = last_schedule
            .as_deref()
            .or_else(|| cj["metadata"]["creationTimestamp"].as_str())
            .and_then(parse_rfc3339)
            .unwrap_or(now);
        let due = schedule.last_between(since, now, zone);
        let late = |t: i64| {
            cj["spec"]["startingDeadlineSeconds"]
                .as_i64()
                .is_some_and(|d| now - t > d)
        };
        if let Some(t) = due.filter(|t| cj["spec"]["suspend"] != true && !late(*t)) {
            let policy = cj["spec"]["concurrencyPolicy"].as_str().unwrap_or("Allow");
            let run = match policy {
                "Forbid" => active.is_empty(),
                "Replace" => {
                    for j in &active {
                        cx.client
                            .delete(
                                &job_path(j["metadata"]["name"].as_str().unwrap_or("")),
                                &json!({"propagationPolicy": "Background"}),
                            )
                            .await?;
                    }
                    active.clear();
                    true
                }
                _ => true,
            };
            if run {
                let job_name = format!("{name}-{}", t / 60);
                let template = &cj["spec"]["jobTemplate"];
                let mut job = json!({
                    "apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": job_name, "namespace": ns, "ownerReferences": [controller_ref(cj)],
                                 "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp": rfc3339(t)}},
                    "spec": template["spec"],
                });
                if let Some(l) = template["metadata"]["labels"].as_object() {
                    job["metadata"]["labels"] = json!(l);
                }
                if let Some(a) = template["metadata"]["annotations"].as_object() {
                    for (k, v) in a {
                        job["metadata"]["annotations"][k] = v.clone();
                    }
                }
                match cx
                    .client
                    .create(&format!("/apis/batch/v1/namespaces/{ns}/jobs"), &job)
                    .await
                {
                    Ok(j) => created = Some(j),
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => return Err(e),
                }
                last_schedule = Some(rfc3339(t));
            }
        }
    }
    let mut refs: Vec<Value> = active
        .iter()
        .map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"], "namespace": ns, "uid": j["metadata"]["uid"], "resourceVersion": j["metadata"]["resourceVersion"]}))
        .collect();
    if let Some(j) = &created {
        refs.push(json!({"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"], "namespace": ns, "uid": j["metadata"]["uid"], "resourceVersion": j["metadata"]["resourceVersion"]}));
        let mut me = (**cj).clone();
        me["kind"] = json!("CronJob");
        me["apiVersion"] = json!("batch/v1");
        cx.events
            .record(
                &me,
                false,
                "SuccessfulCreate",
                &format!(
                    "Created job {}",
                    j["metadata"]["name"].as_str().unwrap_or("")
                ),
                "cronjob-controller",
            )
            .await;
    }
    let last_success = owned
        .iter()
        .filter(|j| finished(j) == Some(true))
        .filter_map(|j| j["status"]["completionTime"].as_str())
        .max()
        .map(String::from);
    let mut status = json!({});
    if !refs.is_empty() {
        status["active"] = json!(refs);
    }
    if let Some(t) = last_schedule {
        status["lastScheduleTime"] = json!(t);
    }
    if let Some(t) = last_success {
        status["lastSuccessfulTime"] = json!(t);
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        for r in v["active"].as_array_mut().into_iter().flatten() {
            r.as_object_mut().map(|m| m.remove("resourceVersion"));
        }
        v
    };
    if strip(&cj["status"]) != strip(&status) {
        let mut next = (**cj).clone();
        next["status"] = status;
        cx.client
            .update(
                &format!("{}/status", object_path(cronjobs.res, Some(&ns), &name)),
                &next,
            )
            .await?;
    }
    Ok(())
}
