"""The resource types the emulator serves, with the facts the apiserver's per-type strategies encode.

Each entry mirrors what discovery (`kubectl api-resources`) reports for a k3s 1.30-ish cluster, plus the
behaviour switches the store needs (status subresource, generation tracking, selectable fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Fields every type accepts in a fieldSelector (apiserver: DefaultClusterScopedAttr / DefaultNamespaceScopedAttr).
COMMON_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # Subresources served besides the object itself ("status", "scale", "eviction", ...).
    subresources: tuple[str, ...] = ()
    # Whether metadata.generation is maintained (types whose strategy bumps it on spec changes).
    generation: bool = False
    # Extra fieldSelector labels the real apiserver supports for this type (besides COMMON_FIELDS).
    fields: tuple[str, ...] = ()
    # Verbs in discovery; "create-only" virtual types (reviews) only list create.
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def selectable(self, label: str) -> bool:
        return label in COMMON_FIELDS or label in self.fields

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

BUILTIN: tuple[Resource, ...] = (
    # core/v1
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize"), fields=("status.phase",)),
    Resource("", "v1", "nodes", "Node", False, ("no",), ("status",), fields=("spec.unschedulable",)),
    Resource(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        ("po",),
        ("status", "eviction", "log", "binding"),
        fields=(
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
    ),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", "v1", "secrets", "Secret", True, (), fields=("type",)),
    Resource("", "v1", "services", "Service", True, ("svc",), ("status",)),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ("token",)),
    Resource("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    Resource("", "v1", "events", "Event", True, ("ev",), fields=_EVENT_FIELDS),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    Resource("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), ("status",)),
    Resource(
        "", "v1", "replicationcontrollers", "ReplicationController", True, ("rc",), ("status", "scale"), generation=True
    ),
    Resource("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    Resource("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), ("status",)),
    # apps/v1
    Resource("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"), generation=True),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("status", "scale"), generation=True),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), generation=True),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"), generation=True),
    Resource("apps", "v1", "controllerrevisions", "ControllerRevision", True),
    # batch/v1
    Resource("batch", "v1", "jobs", "Job", True, (), ("status",), generation=True, fields=("status.successful",)),
    Resource("batch", "v1", "cronjobs", "CronJob", True, ("cj",), ("status",), generation=True),
    # policy/v1
    Resource(
        "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), ("status",), generation=True
    ),
    # rbac.authorization.k8s.io/v1
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    # events.k8s.io/v1 (stored apart from core/v1 events: the emulator does not convert between the two)
    Resource(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        True,
        ("ev",),
        fields=(
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "reportingController",
            "type",
        ),
    ),
    # coordination.k8s.io/v1 (node heartbeats)
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    # certificates.k8s.io/v1
    Resource(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        False,
        ("csr",),
        ("status", "approval"),
        fields=("spec.signerName",),
    ),
    # networking.k8s.io/v1
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",), generation=True),
    Resource("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), ("status",), generation=True),
    # apiextensions.k8s.io/v1: creating a CRD makes its resource servable
    Resource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        ("status",),
        generation=True,
    ),
    # authorization.k8s.io/v1: answered from the emulator's deny rules / RBAC, never stored
    Resource(
        "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, verbs=("create",)
    ),
    Resource("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False, verbs=("create",)),
)

# Workload types the built-in rollout "controller" completes.
WORKLOADS = ("deployments", "statefulsets", "daemonsets", "replicasets")


@dataclass
class Registry:
    resources: list[Resource] = field(default_factory=lambda: list(BUILTIN))

    def add(self, res: Resource) -> None:
        self.resources = [r for r in self.resources if (r.group, r.plural) != (res.group, res.plural)] + [res]

    def by_path(self, group: str, version: str, plural: str) -> Resource | None:
        for r in self.resources:
            if r.group == group and r.version == version and r.plural == plural:
                return r
        return None

    def lookup(self, ref: str) -> Resource:
        """Find a type by plural, kind, singular or short name; "plural.group" or "group/version/plural" pin it."""
        text = ref.strip()
        group = None
        if "/" in text:
            parts = text.split("/")
            if len(parts) == 3:
                group, _, text = parts
            elif len(parts) == 2:  # "v1/pods" or "apps/deployments"
                group = "" if parts[0] == "v1" else parts[0]
                text = parts[1]
        elif "." in text:
            text, group = text.split(".", 1)
        low = text.lower()
        matches = [
            r
            for r in self.resources
            if (group is None or r.group == group) and low in (r.plural, r.singular, r.kind.lower(), *r.short_names)
        ]
        if not matches:
            raise KeyError(f"unknown resource type: {ref!r}")
        # Core types win on ambiguity (e.g. "events"), as kubectl prefers the legacy group.
        matches.sort(key=lambda r: (r.group != "", r.group))
        return matches[0]
