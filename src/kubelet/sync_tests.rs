//! The pod sync loop against the fake runtime (`cri::fake`) and the in-process API
//! (`server::harness`), on paused time with a wall clock that moves with it: init
//! containers in order, crash-loop back-off, adoption after a kubelet restart,
//! restarts driven by a failing liveness probe.
#![cfg(test)]

use super::{Kubelet, PodMemory, Settings};
use crate::cri::fake::{Behaviour, FakeRuntime};
use crate::host::TokioClock;
use crate::host::mounts::FakeMounts;
use crate::host::resources::FakeResources;
use crate::server::harness::Harness;
use k8s_cri::v1::ContainerState;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const PODS: &str = "/api/v1/namespaces/default/pods";

struct Node {
    dir: std::path::PathBuf,
    h: Harness,
    runtime: Arc<FakeRuntime>,
    mounts: Arc<FakeMounts>,
    resources: Arc<FakeResources>,
    kubelet: Arc<Kubelet>,
    clock: Arc<TokioClock>,
    _dir: tempfile::TempDir,
}

async fn node() -> Node {
    let h = Harness::new().await;
    let clock = Arc::new(TokioClock::new());
    let runtime = FakeRuntime::new(&["busybox:1"], clock.clone());
    let dir = tempfile::tempdir().unwrap();
    let mounts = Arc::new(FakeMounts::default());
    let resources = Arc::new(FakeResources::default());
    let host = crate::host::Host {
        clock: clock.clone(),
        mounts: mounts.clone(),
        resources: resources.clone(),
    };
    let kubelet = kubelet_on(&h, &runtime, host, dir.path());
    Node {
        dir: dir.path().to_path_buf(),
        h,
        runtime,
        mounts,
        resources,
        kubelet,
        clock,
        _dir: dir,
    }
}

fn kubelet_on(
    h: &Harness,
    runtime: &Arc<FakeRuntime>,
    host: crate::host::Host,
    dir: &std::path::Path,
) -> Arc<Kubelet> {
    let mut settings = Settings::for_tests();
    settings.root_dir = dir.join("kubelet");
    settings.pod_log_dir = dir.join("pods");
    settings.container_log_dir = dir.join("containers");
    settings.resolv_conf = dir.join("resolv.conf");
    Kubelet::with_host(settings, runtime.cri(), h.client.clone(), host)
}

fn container(name: &str) -> Value {
    json!({"name": name, "image": "busybox:1", "imagePullPolicy": "IfNotPresent"})
}

async fn create(n: &Node, name: &str, spec: Value) -> String {
    let mut spec = spec;
    spec["nodeName"] = json!("n1");
    spec["automountServiceAccountToken"] = json!(false);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec});
    let created = n.h.client.create(PODS, &pod).await.unwrap();
    created["metadata"]["uid"].as_str().unwrap().to_string()
}

/// One sync of the pod as the API has it now; the pod after it.
async fn sync(n: &Node, kubelet: &Kubelet, name: &str, memory: &mut PodMemory) -> Value {
    let pod = n.h.client.get(&format!("{PODS}/{name}")).await.unwrap();
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    kubelet.sync_pod(&uid, Some(&pod), memory).await.unwrap();
    n.h.client.get(&format!("{PODS}/{name}")).await.unwrap()
}

fn started(n: &Node) -> Vec<String> {
    n.runtime
        .calls_of("start_container ")
        .into_iter()
        .map(|(_, c)| c["start_container ".len()..].to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_one_at_a_time_in_order_before_the_app() {
    let n = node().await;
    n.runtime.behave("first", Behaviour::Exit(0));
    n.runtime.behave("second", Behaviour::Exit(0));
    create(
        &n,
        "ordered",
        json!({"initContainers": [container("first"), container("second")],
               "containers": [container("app")]}),
    )
    .await;
    let mut memory = PodMemory::default();
    let mut pod = Value::Null;
    for _ in 0..5 {
        pod = sync(&n, &n.kubelet, "ordered", &mut memory).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(started(&n), ["first", "second", "app"]);
    let created: Vec<String> = n
        .runtime
        .calls_of("create_container ")
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(
        created,
        [
            "create_container first 0",
            "create_container second 0",
            "create_container app 0"
        ],
        "each container is made only once the one before it has finished"
    );
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    let inits = pod["status"]["initContainerStatuses"].as_array().unwrap();
    assert!(
        inits
            .iter()
            .all(|s| s["state"]["terminated"]["reason"] == "Completed")
    );
    assert!(pod["status"]["containerStatuses"][0]["state"]["running"].is_object());
}

#[tokio::test(start_paused = true)]
async fn a_failing_init_container_holds_the_app_back_and_is_retried() {
    let n = node().await;
    n.runtime.behave("setup", Behaviour::Exit(3));
    create(
        &n,
        "held",
        json!({"initContainers": [container("setup")], "containers": [container("app")]}),
    )
    .await;
    let mut memory = PodMemory::default();
    let mut pod = Value::Null;
    for _ in 0..15 {
        pod = sync(&n, &n.kubelet, "held", &mut memory).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let starts = started(&n);
    assert!(starts.iter().all(|s| s == "setup"), "{starts:?}");
    // as upstream: the first failure is retried at once, the next after 10 s
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert_eq!(pod["status"]["phase"], "Pending");
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["restartCount"], 2, "{pod}");
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_restarts_with_doubling_back_off() {
    let n = node().await;
    n.runtime.behave("crash", Behaviour::Exit(1));
    create(&n, "crashy", json!({"containers": [container("crash")]})).await;
    let mut memory = PodMemory::default();
    let mut waiting = Vec::new();
    for _ in 0..100 {
        let pod = sync(&n, &n.kubelet, "crashy", &mut memory).await;
        if let Some(r) =
            pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str()
        {
            waiting.push(r.to_string());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let at: Vec<_> = n
        .runtime
        .calls_of("start_container crash")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert!(at.len() >= 5, "{} starts in 100 s", at.len());
    let gaps: Vec<u64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    // as upstream: the first crash is restarted at the next sync, then back-off
    // 10 s, 20 s, 40 s (each within the 1 s between syncs)
    for (gap, want) in gaps.iter().zip([0, 10, 20, 40]) {
        assert!(
            (want..=want + 2).contains(gap),
            "restarts {gaps:?} apart, wanted 0, 10, 20, 40"
        );
    }
    assert!(
        waiting.iter().any(|r| r == "CrashLoopBackOff"),
        "{waiting:?}"
    );
    let made: Vec<String> = n
        .runtime
        .calls_of("create_container crash")
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(
        made[..4],
        [
            "create_container crash 0",
            "create_container crash 1",
            "create_container crash 2",
            "create_container crash 3"
        ],
        "each restart is a new attempt"
    );
    assert!(
        n.runtime.containers().len() <= 2,
        "old attempts are removed, the last one kept for its logs"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_kubelet_adopts_what_runs_instead_of_starting_it_again() {
    let n = node().await;
    create(
        &n,
        "adopted",
        json!({"containers": [container("a"), container("b")]}),
    )
    .await;
    let mut memory = PodMemory::default();
    for _ in 0..3 {
        sync(&n, &n.kubelet, "adopted", &mut memory).await;
    }
    let before = n.runtime.calls().len();
    let running: Vec<_> = n.runtime.containers();
    assert!(
        running
            .iter()
            .all(|c| c.2 == ContainerState::ContainerRunning)
    );
    // a new kubelet: nothing remembered, everything read back from the runtime
    let dir = tempfile::tempdir().unwrap();
    let host = crate::host::Host {
        clock: n.clock.clone(),
        mounts: n.mounts.clone(),
        resources: n.resources.clone(),
    };
    let again = kubelet_on(&n.h, &n.runtime, host, dir.path());
    let mut fresh = PodMemory::default();
    let pod = sync(&n, &again, "adopted", &mut fresh).await;
    let after: Vec<String> = n.runtime.calls()[before..]
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    assert!(
        !after.iter().any(|c| c.starts_with("run_pod_sandbox")
            || c.starts_with("create_container")
            || c.starts_with("start_container")
            || c.starts_with("stop_")),
        "the restarted kubelet changed what ran: {after:?}"
    );
    assert_eq!(n.runtime.containers(), running);
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(
        pod["status"]["containerStatuses"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_restarts_the_container() {
    let n = node().await;
    let mut probed = container("web");
    probed["livenessProbe"] = json!({"exec": {"command": ["check"]},
        "periodSeconds": 1, "failureThreshold": 2});
    create(&n, "probed", json!({"containers": [probed]})).await;
    let mut memory = PodMemory::default();
    for _ in 0..5 {
        sync(&n, &n.kubelet, "probed", &mut memory).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        n.runtime.calls_of("exec_sync web check").len() >= 3,
        "probed each second"
    );
    assert!(
        n.runtime.calls_of("stop_container").is_empty(),
        "healthy: left alone"
    );
    n.runtime.exec_exits("web", 1);
    let mut failing = 0;
    while n.runtime.calls_of("stop_container web").is_empty() {
        sync(&n, &n.kubelet, "probed", &mut memory).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        failing += 1;
        assert!(failing < 10, "never restarted for its failing probe");
    }
    assert!(
        failing >= 2,
        "restarted after {failing} s: before failureThreshold"
    );
    n.runtime.exec_exits("web", 0);
    let mut pod = Value::Null;
    for _ in 0..8 {
        pod = sync(&n, &n.kubelet, "probed", &mut memory).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        n.runtime.calls_of("stop_container web").len(),
        1,
        "stopped once"
    );
    let attempts: Vec<u32> = n.runtime.containers().iter().map(|c| c.1).collect();
    assert_eq!(attempts, [0, 1], "and started again as a new attempt");
    let st = &pod["status"]["containerStatuses"][0];
    assert_eq!(st["restartCount"], 1, "{pod}");
    assert!(st["lastState"]["terminated"].is_object(), "{st}");
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_is_stopped_then_removed_without_a_trace_and_released() {
    let n = node().await;
    create(
        &n,
        "going",
        json!({"containers": [container("a"), container("b")]}),
    )
    .await;
    let mut memory = PodMemory::default();
    for _ in 0..3 {
        sync(&n, &n.kubelet, "going", &mut memory).await;
    }
    assert_eq!(n.runtime.containers().len(), 2);
    n.h.client
        .delete(&format!("{PODS}/going"), &json!({"gracePeriodSeconds": 5}))
        .await
        .unwrap();
    let pod = n.h.client.get(&format!("{PODS}/going")).await.unwrap();
    assert!(
        pod["metadata"]["deletionTimestamp"].is_string(),
        "graceful: still there"
    );
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let outcome = n
        .kubelet
        .sync_pod(&uid, Some(&pod), &mut memory)
        .await
        .unwrap();
    assert_eq!(outcome, super::sync::Outcome::Gone);
    let calls: Vec<String> = n.runtime.calls().into_iter().map(|(_, c)| c).collect();
    let first = |p: &str| calls.iter().position(|c| c.starts_with(p)).unwrap();
    let last = |p: &str| calls.iter().rposition(|c| c.starts_with(p)).unwrap();
    assert!(
        last("stop_container") < first("remove_container"),
        "{calls:?}"
    );
    assert!(
        last("remove_container") < first("remove_pod_sandbox"),
        "{calls:?}"
    );
    assert!(n.runtime.containers().is_empty(), "no container left");
    let sandboxes = n.runtime.calls_of("run_pod_sandbox").len();
    assert_eq!(n.runtime.calls_of("remove_pod_sandbox").len(), sandboxes);
    let gone = n.h.client.get(&format!("{PODS}/going")).await;
    assert!(
        gone.is_err_and(|e| e.is_not_found()),
        "the kubelet released the pod"
    );
}

#[tokio::test(start_paused = true)]
async fn secrets_and_memory_volumes_are_on_tmpfs_written_then_unmounted_and_removed() {
    let n = node().await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"password": "s3cret", "user": "me"}});
    n.h.client
        .create("/api/v1/namespaces/default/secrets", &secret)
        .await
        .unwrap();
    let mut app = container("app");
    app["volumeMounts"] = json!([{"name": "creds", "mountPath": "/creds"},
                                 {"name": "scratch", "mountPath": "/scratch"}]);
    let uid = create(
        &n,
        "mounted",
        json!({"containers": [app], "volumes": [
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "disk", "emptyDir": {}}]}),
    )
    .await;
    let mut memory = PodMemory::default();
    let pod = sync(&n, &n.kubelet, "mounted", &mut memory).await;
    assert!(
        pod["status"]["containerStatuses"][0]["state"]["running"].is_object(),
        "{pod}"
    );
    let volumes = n.dir.join("kubelet/pods").join(&uid).join("volumes");
    let volumes = std::fs::canonicalize(volumes).unwrap();
    let mounted = n.mounts.mounted();
    let at = |p: &str| volumes.join(p);
    assert_eq!(mounted.len(), 2, "{mounted:?}");
    assert!(
        mounted.iter().any(
            |(p, o)| *p == at("kubernetes.io~secret/creds") && o.starts_with("mode=0755,size=")
        )
    );
    assert!(
        mounted
            .iter()
            .any(|(p, o)| *p == at("kubernetes.io~empty-dir/scratch")
                && o == &format!("mode=0777,size={}", 64 << 20))
    );
    assert!(
        !mounted.iter().any(|(p, _)| p.ends_with("disk")),
        "a disk emptyDir is a plain directory"
    );
    let password = std::fs::read(at("kubernetes.io~secret/creds/password")).unwrap();
    assert_eq!(password, b"s3cret");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(at("kubernetes.io~secret/creds/password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o400);

    n.h.client
        .delete(&format!("{PODS}/mounted"), &json!({}))
        .await
        .unwrap();
    let pod = n.h.client.get(&format!("{PODS}/mounted")).await.unwrap();
    n.kubelet
        .sync_pod(&uid, Some(&pod), &mut memory)
        .await
        .unwrap();
    assert!(n.mounts.mounted().is_empty(), "every tmpfs unmounted");
    assert!(
        !volumes.exists(),
        "the pod's volumes are removed once nothing is mounted"
    );
}

#[tokio::test(start_paused = true)]
async fn volumes_unmount_deepest_first_and_a_busy_one_keeps_the_pod_directory() {
    let n = node().await;
    let uid = create(
        &n,
        "stuck",
        json!({"containers": [container("app")], "volumes": [
            {"name": "scratch", "emptyDir": {"medium": "Memory"}}]}),
    )
    .await;
    let mut memory = PodMemory::default();
    sync(&n, &n.kubelet, "stuck", &mut memory).await;
    let dir = std::fs::canonicalize(n.dir.join("kubelet/pods").join(&uid)).unwrap();
    // a mount below the volume (a subPath bind), which will not let go
    let inner = dir.join("volumes/kubernetes.io~empty-dir/scratch/inner");
    std::fs::create_dir_all(&inner).unwrap();
    crate::host::Mounts::mount_tmpfs(&*n.mounts, &inner, "mode=0700").unwrap();
    n.mounts.busy.lock().unwrap().push(inner.clone());
    n.h.client
        .delete(&format!("{PODS}/stuck"), &json!({}))
        .await
        .unwrap();
    let pod = n.h.client.get(&format!("{PODS}/stuck")).await.unwrap();
    n.kubelet
        .sync_pod(&uid, Some(&pod), &mut memory)
        .await
        .unwrap();
    let unmounted = n.mounts.unmounted.lock().unwrap().clone();
    assert_eq!(unmounted.len(), 2, "{unmounted:?}");
    assert_eq!(unmounted[0], inner, "deepest first");
    assert!(
        dir.exists(),
        "nothing is removed through a mount that stayed"
    );
    assert!(inner.exists());
}

#[tokio::test(start_paused = true)]
async fn under_memory_pressure_the_lowest_priority_pod_goes_and_a_critical_one_never() {
    let n = node().await;
    let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "high"}, "value": 1000});
    n.h.client
        .create("/apis/scheduling.k8s.io/v1/priorityclasses", &class)
        .await
        .unwrap();
    let with_class = |class: &str| {
        let mut c = container("app");
        c["resources"] = json!({"requests": {"memory": "64Mi"}});
        let mut spec = json!({"containers": [c]});
        if !class.is_empty() {
            spec["priorityClassName"] = json!(class);
        }
        spec
    };
    create(&n, "low", with_class("")).await;
    create(&n, "high", with_class("high")).await;
    create(&n, "critical", with_class("system-cluster-critical")).await;
    let mut memories: Vec<PodMemory> = (0..3).map(|_| PodMemory::default()).collect();
    for (name, memory) in ["low", "high", "critical"].iter().zip(memories.iter_mut()) {
        sync(&n, &n.kubelet, name, memory).await;
    }
    n.h.until("the kubelet sees three running pods", || async {
        let running = n
            .kubelet
            .pods
            .list(None)
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (running == 3).then_some(())
    })
    .await;
    let thresholds =
        super::eviction::Thresholds::parse(super::eviction::Thresholds::DEFAULT).unwrap();
    let said = std::sync::Mutex::new(Vec::new());
    let pressure = |m: bool, d: bool| said.lock().unwrap().push((m, d));
    *n.resources.memory.lock().unwrap() = Some((4e9, 8e9));
    *n.resources.disk.lock().unwrap() = Some((50e9, 100e9));
    assert_eq!(
        super::eviction::round(&n.kubelet, &thresholds, &pressure).await,
        None
    );
    // 50 MiB left: below the 100Mi threshold
    *n.resources.memory.lock().unwrap() = Some((50.0 * 1024.0 * 1024.0, 8e9));
    let evicted = super::eviction::round(&n.kubelet, &thresholds, &pressure).await;
    assert_eq!(evicted.as_deref(), Some("default/low"));
    assert_eq!(*said.lock().unwrap(), [(false, false), (true, false)]);
    let low = n.h.client.get(&format!("{PODS}/low")).await.unwrap();
    assert_eq!(
        (&low["status"]["phase"], &low["status"]["reason"]),
        (&json!("Failed"), &json!("Evicted"))
    );
    assert!(
        low["status"]["message"]
            .as_str()
            .unwrap()
            .contains("low on resource: memory")
    );
    // next rounds: the high-priority pod, then nothing (the critical one stays)
    n.h.until("the informer sees the eviction", || async {
        let p = n.kubelet.pods.get("default/low")?;
        (p["status"]["phase"] == "Failed").then_some(())
    })
    .await;
    let next = super::eviction::round(&n.kubelet, &thresholds, &pressure).await;
    assert_eq!(next.as_deref(), Some("default/high"));
    n.h.until("the informer sees the second eviction", || async {
        let p = n.kubelet.pods.get("default/high")?;
        (p["status"]["phase"] == "Failed").then_some(())
    })
    .await;
    assert_eq!(
        super::eviction::round(&n.kubelet, &thresholds, &pressure).await,
        None
    );
    let critical = n.h.client.get(&format!("{PODS}/critical")).await.unwrap();
    assert_eq!(critical["status"]["phase"], "Running");
}
