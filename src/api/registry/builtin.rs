//! The built-in resources, one named static each (`&PODS`: a misspelt name does not
//! compile), and [`RESOURCES`], every one of them with preferred versions first.

use super::{CREATE, CRUD, CRUD_NO_COLLECTION, Resource, STATUS, res, sub};

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const NS: bool = true;
const CLUSTER: bool = false;

/// Every built-in resource, preferred versions first.
pub static RESOURCES: &[&Resource] = &[
    &BINDINGS,
    &CONFIGMAPS,
    &ENDPOINTS,
    &EVENTS,
    &LIMITRANGES,
    &NAMESPACES,
    &NODES,
    &PERSISTENTVOLUMECLAIMS,
    &PERSISTENTVOLUMES,
    &PODS,
    &REPLICATIONCONTROLLERS,
    &RESOURCEQUOTAS,
    &SECRETS,
    &SERVICEACCOUNTS,
    &SERVICES,
    &CONTROLLERREVISIONS,
    &DAEMONSETS,
    &DEPLOYMENTS,
    &REPLICASETS,
    &STATEFULSETS,
    &SELFSUBJECTREVIEWS,
    &TOKENREVIEWS,
    &LOCALSUBJECTACCESSREVIEWS,
    &SELFSUBJECTACCESSREVIEWS,
    &SELFSUBJECTRULESREVIEWS,
    &SUBJECTACCESSREVIEWS,
    &HORIZONTALPODAUTOSCALERS,
    &HORIZONTALPODAUTOSCALERS_V1,
    &CRONJOBS,
    &JOBS,
    &LEASES,
    &ENDPOINTSLICES,
    &INGRESSCLASSES,
    &INGRESSES,
    &NETWORKPOLICIES,
    &PODDISRUPTIONBUDGETS,
    &CLUSTERROLEBINDINGS,
    &CLUSTERROLES,
    &ROLEBINDINGS,
    &ROLES,
    &PRIORITYCLASSES,
    &STORAGECLASSES,
];

// The built-in resources by name: `&PODS` is pods' entry, and a misspelt name does
// not compile (string lookups are for what clients send).

/// bindings (v1 Binding).
pub static BINDINGS: Resource = res(
    "",
    "v1",
    "Binding",
    "bindings",
    "binding",
    NS,
    CREATE,
    NONE,
    NONE,
    &[],
);

/// configmaps (v1 ConfigMap).
pub static CONFIGMAPS: Resource = res(
    "",
    "v1",
    "ConfigMap",
    "configmaps",
    "configmap",
    NS,
    CRUD,
    &["cm"],
    NONE,
    &[],
);

/// endpoints (v1 Endpoints).
pub static ENDPOINTS: Resource = res(
    "",
    "v1",
    "Endpoints",
    "endpoints",
    "endpoints",
    NS,
    CRUD,
    &["ep"],
    NONE,
    &[],
);

/// events (v1 Event).
pub static EVENTS: Resource = res(
    "",
    "v1",
    "Event",
    "events",
    "event",
    NS,
    CRUD,
    &["ev"],
    NONE,
    &[],
);

/// limitranges (v1 LimitRange).
pub static LIMITRANGES: Resource = res(
    "",
    "v1",
    "LimitRange",
    "limitranges",
    "limitrange",
    NS,
    CRUD,
    &["limits"],
    NONE,
    &[],
);

/// namespaces (v1 Namespace).
pub static NAMESPACES: Resource = res(
    "",
    "v1",
    "Namespace",
    "namespaces",
    "namespace",
    CLUSTER,
    CRUD_NO_COLLECTION,
    &["ns"],
    NONE,
    &[
        sub("finalize", ("", "v1", "Namespace"), &["update"]),
        sub("status", ("", "v1", "Namespace"), STATUS),
    ],
);

/// nodes (v1 Node).
pub static NODES: Resource = res(
    "",
    "v1",
    "Node",
    "nodes",
    "node",
    CLUSTER,
    CRUD,
    &["no"],
    NONE,
    &[
        sub(
            "proxy",
            ("", "v1", "NodeProxyOptions"),
            &["create", "delete", "get", "patch", "update"],
        ),
        sub("status", ("", "v1", "Node"), STATUS),
    ],
);

/// persistentvolumeclaims (v1 PersistentVolumeClaim).
pub static PERSISTENTVOLUMECLAIMS: Resource = res(
    "",
    "v1",
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    "persistentvolumeclaim",
    NS,
    CRUD,
    &["pvc"],
    NONE,
    &[sub("status", ("", "v1", "PersistentVolumeClaim"), STATUS)],
);

/// persistentvolumes (v1 PersistentVolume).
pub static PERSISTENTVOLUMES: Resource = res(
    "",
    "v1",
    "PersistentVolume",
    "persistentvolumes",
    "persistentvolume",
    CLUSTER,
    CRUD,
    &["pv"],
    NONE,
    &[sub("status", ("", "v1", "PersistentVolume"), STATUS)],
);

/// pods (v1 Pod).
pub static PODS: Resource = res(
    "",
    "v1",
    "Pod",
    "pods",
    "pod",
    NS,
    CRUD,
    &["po"],
    ALL,
    &[
        sub("attach", ("", "v1", "PodAttachOptions"), &["create", "get"]),
        sub("binding", ("", "v1", "Binding"), CREATE),
        sub("ephemeralcontainers", ("", "v1", "Pod"), STATUS),
        sub("eviction", ("policy", "v1", "Eviction"), CREATE),
        sub("exec", ("", "v1", "PodExecOptions"), &["create", "get"]),
        sub("log", ("", "v1", "Pod"), &["get"]),
        sub(
            "portforward",
            ("", "v1", "PodPortForwardOptions"),
            &["create", "get"],
        ),
        sub(
            "proxy",
            ("", "v1", "PodProxyOptions"),
            &["create", "delete", "get", "patch", "update"],
        ),
        sub("status", ("", "v1", "Pod"), STATUS),
    ],
);

/// replicationcontrollers (v1 ReplicationController).
pub static REPLICATIONCONTROLLERS: Resource = res(
    "",
    "v1",
    "ReplicationController",
    "replicationcontrollers",
    "replicationcontroller",
    NS,
    CRUD,
    &["rc"],
    ALL,
    &[
        sub("scale", ("autoscaling", "v1", "Scale"), STATUS),
        sub("status", ("", "v1", "ReplicationController"), STATUS),
    ],
);

/// resourcequotas (v1 ResourceQuota).
pub static RESOURCEQUOTAS: Resource = res(
    "",
    "v1",
    "ResourceQuota",
    "resourcequotas",
    "resourcequota",
    NS,
    CRUD,
    &["quota"],
    NONE,
    &[sub("status", ("", "v1", "ResourceQuota"), STATUS)],
);

/// secrets (v1 Secret).
pub static SECRETS: Resource = res(
    "",
    "v1",
    "Secret",
    "secrets",
    "secret",
    NS,
    CRUD,
    NONE,
    NONE,
    &[],
);

/// serviceaccounts (v1 ServiceAccount).
pub static SERVICEACCOUNTS: Resource = res(
    "",
    "v1",
    "ServiceAccount",
    "serviceaccounts",
    "serviceaccount",
    NS,
    CRUD,
    &["sa"],
    NONE,
    &[sub(
        "token",
        ("authentication.k8s.io", "v1", "TokenRequest"),
        CREATE,
    )],
);

/// services (v1 Service).
pub static SERVICES: Resource = res(
    "",
    "v1",
    "Service",
    "services",
    "service",
    NS,
    CRUD,
    &["svc"],
    ALL,
    &[
        sub(
            "proxy",
            ("", "v1", "ServiceProxyOptions"),
            &["create", "delete", "get", "patch", "update"],
        ),
        sub("status", ("", "v1", "Service"), STATUS),
    ],
);

/// controllerrevisions.apps (apps/v1 ControllerRevision).
pub static CONTROLLERREVISIONS: Resource = res(
    "apps",
    "v1",
    "ControllerRevision",
    "controllerrevisions",
    "controllerrevision",
    NS,
    CRUD,
    NONE,
    NONE,
    &[],
);

/// daemonsets.apps (apps/v1 DaemonSet).
pub static DAEMONSETS: Resource = res(
    "apps",
    "v1",
    "DaemonSet",
    "daemonsets",
    "daemonset",
    NS,
    CRUD,
    &["ds"],
    ALL,
    &[sub("status", ("apps", "v1", "DaemonSet"), STATUS)],
);

/// deployments.apps (apps/v1 Deployment).
pub static DEPLOYMENTS: Resource = res(
    "apps",
    "v1",
    "Deployment",
    "deployments",
    "deployment",
    NS,
    CRUD,
    &["deploy"],
    ALL,
    &[
        sub("scale", ("autoscaling", "v1", "Scale"), STATUS),
        sub("status", ("apps", "v1", "Deployment"), STATUS),
    ],
);

/// replicasets.apps (apps/v1 ReplicaSet).
pub static REPLICASETS: Resource = res(
    "apps",
    "v1",
    "ReplicaSet",
    "replicasets",
    "replicaset",
    NS,
    CRUD,
    &["rs"],
    ALL,
    &[
        sub("scale", ("autoscaling", "v1", "Scale"), STATUS),
        sub("status", ("apps", "v1", "ReplicaSet"), STATUS),
    ],
);

/// statefulsets.apps (apps/v1 StatefulSet).
pub static STATEFULSETS: Resource = res(
    "apps",
    "v1",
    "StatefulSet",
    "statefulsets",
    "statefulset",
    NS,
    CRUD,
    &["sts"],
    ALL,
    &[
        sub("scale", ("autoscaling", "v1", "Scale"), STATUS),
        sub("status", ("apps", "v1", "StatefulSet"), STATUS),
    ],
);

/// selfsubjectreviews.authentication.k8s.io (authentication.k8s.io/v1 SelfSubjectReview).
pub static SELFSUBJECTREVIEWS: Resource = res(
    "authentication.k8s.io",
    "v1",
    "SelfSubjectReview",
    "selfsubjectreviews",
    "selfsubjectreview",
    CLUSTER,
    CREATE,
    NONE,
    NONE,
    &[],
);

/// tokenreviews.authentication.k8s.io (authentication.k8s.io/v1 TokenReview).
pub static TOKENREVIEWS: Resource = res(
    "authentication.k8s.io",
    "v1",
    "TokenReview",
    "tokenreviews",
    "tokenreview",
    CLUSTER,
    CREATE,
    NONE,
    NONE,
    &[],
);

/// localsubjectaccessreviews.authorization.k8s.io (authorization.k8s.io/v1 LocalSubjectAccessReview).
pub static LOCALSUBJECTACCESSREVIEWS: Resource = res(
    "authorization.k8s.io",
    "v1",
    "LocalSubjectAccessReview",
    "localsubjectaccessreviews",
    "localsubjectaccessreview",
    NS,
    CREATE,
    NONE,
    NONE,
    &[],
);

/// selfsubjectaccessreviews.authorization.k8s.io (authorization.k8s.io/v1 SelfSubjectAccessReview).
pub static SELFSUBJECTACCESSREVIEWS: Resource = res(
    "authorization.k8s.io",
    "v1",
    "SelfSubjectAccessReview",
    "selfsubjectaccessreviews",
    "selfsubjectaccessreview",
    CLUSTER,
    CREATE,
    NONE,
    NONE,
    &[],
);

/// selfsubjectrulesreviews.authorization.k8s.io (authorization.k8s.io/v1 SelfSubjectRulesReview).
pub static SELFSUBJECTRULESREVIEWS: Resource = res(
    "authorization.k8s.io",
    "v1",
    "SelfSubjectRulesReview",
    "selfsubjectrulesreviews",
    "selfsubjectrulesreview",
    CLUSTER,
    CREATE,
    NONE,
    NONE,
    &[],
);

/// subjectaccessreviews.authorization.k8s.io (authorization.k8s.io/v1 SubjectAccessReview).
pub static SUBJECTACCESSREVIEWS: Resource = res(
    "authorization.k8s.io",
    "v1",
    "SubjectAccessReview",
    "subjectaccessreviews",
    "subjectaccessreview",
    CLUSTER,
    CREATE,
    NONE,
    NONE,
    &[],
);

/// horizontalpodautoscalers.autoscaling (autoscaling/v2 HorizontalPodAutoscaler).
pub static HORIZONTALPODAUTOSCALERS: Resource = res(
    "autoscaling",
    "v2",
    "HorizontalPodAutoscaler",
    "horizontalpodautoscalers",
    "horizontalpodautoscaler",
    NS,
    CRUD,
    &["hpa"],
    ALL,
    &[sub(
        "status",
        ("autoscaling", "v2", "HorizontalPodAutoscaler"),
        STATUS,
    )],
);

/// horizontalpodautoscalers.autoscaling (autoscaling/v1 HorizontalPodAutoscaler).
pub static HORIZONTALPODAUTOSCALERS_V1: Resource = res(
    "autoscaling",
    "v1",
    "HorizontalPodAutoscaler",
    "horizontalpodautoscalers",
    "horizontalpodautoscaler",
    NS,
    CRUD,
    &["hpa"],
    ALL,
    &[sub(
        "status",
        ("autoscaling", "v1", "HorizontalPodAutoscaler"),
        STATUS,
    )],
);

/// cronjobs.batch (batch/v1 CronJob).
pub static CRONJOBS: Resource = res(
    "batch",
    "v1",
    "CronJob",
    "cronjobs",
    "cronjob",
    NS,
    CRUD,
    &["cj"],
    ALL,
    &[sub("status", ("batch", "v1", "CronJob"), STATUS)],
);

/// jobs.batch (batch/v1 Job).
pub static JOBS: Resource = res(
    "batch",
    "v1",
    "Job",
    "jobs",
    "job",
    NS,
    CRUD,
    NONE,
    ALL,
    &[sub("status", ("batch", "v1", "Job"), STATUS)],
);

/// leases.coordination.k8s.io (coordination.k8s.io/v1 Lease).
pub static LEASES: Resource = res(
    "coordination.k8s.io",
    "v1",
    "Lease",
    "leases",
    "lease",
    NS,
    CRUD,
    NONE,
    NONE,
    &[],
);

/// endpointslices.discovery.k8s.io (discovery.k8s.io/v1 EndpointSlice).
pub static ENDPOINTSLICES: Resource = res(
    "discovery.k8s.io",
    "v1",
    "EndpointSlice",
    "endpointslices",
    "endpointslice",
    NS,
    CRUD,
    NONE,
    NONE,
    &[],
);

/// ingressclasses.networking.k8s.io (networking.k8s.io/v1 IngressClass).
pub static INGRESSCLASSES: Resource = res(
    "networking.k8s.io",
    "v1",
    "IngressClass",
    "ingressclasses",
    "ingressclass",
    CLUSTER,
    CRUD,
    NONE,
    NONE,
    &[],
);

/// ingresses.networking.k8s.io (networking.k8s.io/v1 Ingress).
pub static INGRESSES: Resource = res(
    "networking.k8s.io",
    "v1",
    "Ingress",
    "ingresses",
    "ingress",
    NS,
    CRUD,
    &["ing"],
    NONE,
    &[sub(
        "status",
        ("networking.k8s.io", "v1", "Ingress"),
        STATUS,
    )],
);

/// networkpolicies.networking.k8s.io (networking.k8s.io/v1 NetworkPolicy).
pub static NETWORKPOLICIES: Resource = res(
    "networking.k8s.io",
    "v1",
    "NetworkPolicy",
    "networkpolicies",
    "networkpolicy",
    NS,
    CRUD,
    &["netpol"],
    NONE,
    &[],
);

/// poddisruptionbudgets.policy (policy/v1 PodDisruptionBudget).
pub static PODDISRUPTIONBUDGETS: Resource = res(
    "policy",
    "v1",
    "PodDisruptionBudget",
    "poddisruptionbudgets",
    "poddisruptionbudget",
    NS,
    CRUD,
    &["pdb"],
    NONE,
    &[sub(
        "status",
        ("policy", "v1", "PodDisruptionBudget"),
        STATUS,
    )],
);

/// clusterrolebindings.rbac.authorization.k8s.io (rbac.authorization.k8s.io/v1 ClusterRoleBinding).
pub static CLUSTERROLEBINDINGS: Resource = res(
    "rbac.authorization.k8s.io",
    "v1",
    "ClusterRoleBinding",
    "clusterrolebindings",
    "clusterrolebinding",
    CLUSTER,
    CRUD,
    NONE,
    NONE,
    &[],
);

/// clusterroles.rbac.authorization.k8s.io (rbac.authorization.k8s.io/v1 ClusterRole).
pub static CLUSTERROLES: Resource = res(
    "rbac.authorization.k8s.io",
    "v1",
    "ClusterRole",
    "clusterroles",
    "clusterrole",
    CLUSTER,
    CRUD,
    NONE,
    NONE,
    &[],
);

/// rolebindings.rbac.authorization.k8s.io (rbac.authorization.k8s.io/v1 RoleBinding).
pub static ROLEBINDINGS: Resource = res(
    "rbac.authorization.k8s.io",
    "v1",
    "RoleBinding",
    "rolebindings",
    "rolebinding",
    NS,
    CRUD,
    NONE,
    NONE,
    &[],
);

/// roles.rbac.authorization.k8s.io (rbac.authorization.k8s.io/v1 Role).
pub static ROLES: Resource = res(
    "rbac.authorization.k8s.io",
    "v1",
    "Role",
    "roles",
    "role",
    NS,
    CRUD,
    NONE,
    NONE,
    &[],
);

/// priorityclasses.scheduling.k8s.io (scheduling.k8s.io/v1 PriorityClass).
pub static PRIORITYCLASSES: Resource = res(
    "scheduling.k8s.io",
    "v1",
    "PriorityClass",
    "priorityclasses",
    "priorityclass",
    CLUSTER,
    CRUD,
    &["pc"],
    NONE,
    &[],
);

/// storageclasses.storage.k8s.io (storage.k8s.io/v1 StorageClass).
pub static STORAGECLASSES: Resource = res(
    "storage.k8s.io",
    "v1",
    "StorageClass",
    "storageclasses",
    "storageclass",
    CLUSTER,
    CRUD,
    &["sc"],
    NONE,
    &[],
);
