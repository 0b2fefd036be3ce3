"""Drives a skua server with the official Python `kubernetes` client (PyPI).

Usage: client_check.py KUBECONFIG. Exits non-zero with the failing check on stderr.
"""
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")


# create a namespace and objects in it
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
cm = core.create_namespaced_config_map(
    "py",
    client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a", labels={"app": "x"}), data={"k": "v"}),
)
check(cm.metadata.uid and cm.metadata.resource_version, "create returns uid and resourceVersion")
core.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="b"), data={}))

# list with a label selector and with paging
listed = core.list_namespaced_config_map("py", label_selector="app=x")
check([i.metadata.name for i in listed.items] == ["a"], "label selector")
page = core.list_namespaced_config_map("py", limit=1)
check(len(page.items) == 1 and page.metadata._continue, "first page has a continue token")
rest = core.list_namespaced_config_map("py", limit=1, _continue=page.metadata._continue)
check([i.metadata.name for i in rest.items] == ["b"], "second page")

# watch from the list's resourceVersion sees exactly the later change
rv = listed.metadata.resource_version
core.patch_namespaced_config_map("a", "py", {"data": {"k": "v2"}})
seen = []
w = watch.Watch()
for event in w.stream(core.list_namespaced_config_map, "py", resource_version=rv, timeout_seconds=5):
    if event["object"].metadata.name == "kube-root-ca.crt":  # published into every namespace
        continue
    seen.append((event["type"], event["object"].metadata.name, event["object"].data))
    w.stop()
check(seen == [("MODIFIED", "a", {"k": "v2"})], f"watch resumes after the list: {seen}")

# resume again from the last event's resourceVersion
last_rv = core.read_namespaced_config_map("a", "py").metadata.resource_version
core.delete_namespaced_config_map("b", "py")
seen = []
for event in w.stream(core.list_namespaced_config_map, "py", resource_version=last_rv, timeout_seconds=5):
    if event["object"].metadata.name == "kube-root-ca.crt":
        continue
    seen.append((event["type"], event["object"].metadata.name))
    w.stop()
check(seen == [("DELETED", "b")], f"watch resumes from the last revision: {seen}")

# optimistic concurrency
try:
    core.replace_namespaced_config_map(
        "a", "py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a", resource_version=cm.metadata.resource_version), data={})
    )
    sys.exit("FAILED: a stale replace must conflict")
except ApiException as e:
    check(e.status == 409, f"stale replace is 409, got {e.status}")

# a Deployment and its scale subresource
dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1")]),
        ),
    ),
)
created = apps.create_namespaced_deployment("py", dep)
check(created.spec.strategy.type == "RollingUpdate", "deployment defaults")
apps.patch_namespaced_deployment_scale("web", "py", {"spec": {"replicas": 4}})
check(apps.read_namespaced_deployment("web", "py").spec.replicas == 4, "scale subresource")

# what the client's models require: upstream's delete answers (the pod and the
# service themselves) and zero values in statuses
pod = core.create_namespaced_pod("py", client.V1Pod(
    metadata=client.V1ObjectMeta(name="p"),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
))
deleted = core.delete_namespaced_pod("p", "py")
check(isinstance(deleted, client.V1Pod) and deleted.metadata.name == "p", f"delete pod answers the pod: {deleted}")
core.create_namespaced_service("py", client.V1Service(
    metadata=client.V1ObjectMeta(name="s"),
    spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)]),
))
deleted = core.delete_namespaced_service("s", "py")
check(isinstance(deleted, client.V1Service) and deleted.metadata.name == "s", "delete service answers the service")
template = client.V1PodTemplateSpec(
    metadata=client.V1ObjectMeta(labels={"app": "d"}),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
)
ds = apps.create_namespaced_daemon_set("py", client.V1DaemonSet(
    metadata=client.V1ObjectMeta(name="d"),
    spec=client.V1DaemonSetSpec(selector=client.V1LabelSelector(match_labels={"app": "d"}), template=template),
))
ds = apps.read_namespaced_daemon_set_status("d", "py")
check(ds.status is None or ds.status.current_number_scheduled is not None, "daemon set status counts")
rc = core.create_namespaced_replication_controller("py", client.V1ReplicationController(
    metadata=client.V1ObjectMeta(name="r"),
    spec=client.V1ReplicationControllerSpec(replicas=0, template=template),
))
check(rc.spec.selector == {"app": "d"}, f"the selector defaults to the template's labels: {rc.spec.selector}")
rc = core.read_namespaced_replication_controller("r", "py")
check(rc.status is None or rc.status.replicas is not None, "replication controller status replicas")
gone = apps.delete_namespaced_daemon_set("d", "py")
status = gone if isinstance(gone, dict) else gone.to_dict()
check(status.get("kind") == "Status" and status.get("status") == "Success"
      and (status.get("details") or {}).get("name") == "d", f"delete daemon set answers a Status: {gone}")

# missing objects are 404s the client understands
try:
    core.read_namespaced_config_map("nope", "py")
    sys.exit("FAILED: missing object must be 404")
except ApiException as e:
    check(e.status == 404, "404 for a missing object")

print("python kubernetes client: all checks passed")
