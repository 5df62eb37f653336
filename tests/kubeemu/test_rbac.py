"""Optional RBAC enforcement (rbac=True) from stored Role/Binding objects, and access reviews."""

from __future__ import annotations

import kubernetes
import pytest

from local.kubeemu import KubeEmulator
from tests.kubeemu.helpers import api_error

MANIFEST = """
apiVersion: v1
kind: Namespace
metadata: {name: edgeguard}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: scrubber, namespace: edgeguard}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: scrubber}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
  resourceNames: [allowed]
- apiGroups: [""]
  resources: [pods/eviction]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: scrubber, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: scrubber}
subjects:
- {kind: ServiceAccount, name: scrubber, namespace: edgeguard}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-reader}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: node-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-reader}
subjects:
- {kind: ServiceAccount, name: scrubber, namespace: edgeguard}
"""


@pytest.fixture
def rbac_emu():
    with KubeEmulator(rbac=True) as emu:
        emu.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
        emu.load_manifests(MANIFEST)
        for n in ("allowed", "other"):
            emu.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n, "namespace": "apps"}})
        emu.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "apps"}})
        emu.seed(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "apps"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            }
        )
        yield emu


def test_rbac_grants_exactly_the_bound_verbs(rbac_emu):
    client = rbac_emu.api_client(rbac_emu.service_account_token("edgeguard", "scrubber"))
    core = kubernetes.client.CoreV1Api(client)
    core.list_namespaced_config_map("apps")
    core.patch_namespaced_config_map("c", "apps", {"data": {"k": "v"}})
    assert api_error(core.delete_namespaced_config_map, "c", "apps").status == 403
    assert api_error(core.list_namespaced_config_map, "default").status == 403  # binding is per-namespace
    exc = api_error(core.create_namespaced_secret, "apps", {"metadata": {"name": "x"}})
    assert exc.status == 403
    assert (
        'User "system:serviceaccount:edgeguard:scrubber" cannot create resource "secrets"' in exc.status_body["message"]
    )
    core.list_node()  # via the ClusterRoleBinding
    client.close()


def test_rbac_resource_names_and_subresources(rbac_emu):
    client = rbac_emu.api_client(rbac_emu.service_account_token("edgeguard", "scrubber"))
    core = kubernetes.client.CoreV1Api(client)
    core.read_namespaced_secret("allowed", "apps")
    assert api_error(core.read_namespaced_secret, "other", "apps").status == 403
    assert api_error(core.list_namespaced_secret, "apps").status == 403
    assert api_error(core.delete_namespaced_pod, "p", "apps").status == 403  # eviction is not delete
    core.create_namespaced_pod_eviction("p", "apps", {"metadata": {"name": "p", "namespace": "apps"}})
    client.close()


def test_admin_token_bypasses_rbac(rbac_emu):
    client = rbac_emu.api_client()
    kubernetes.client.CoreV1Api(client).delete_namespaced_config_map("c", "apps")
    client.close()


def test_self_subject_access_review_reflects_rbac_and_deny_rules(rbac_emu):
    client = rbac_emu.api_client(rbac_emu.service_account_token("edgeguard", "scrubber"))
    authz = kubernetes.client.AuthorizationV1Api(client)

    def can(verb, resource, ns="apps", group=""):
        review = authz.create_self_subject_access_review(
            {"spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": ns, "group": group}}}
        )
        return review.status.allowed

    assert can("patch", "configmaps") is True
    assert can("delete", "configmaps") is False
    rbac_emu.deny("patch", "configmaps")
    assert can("patch", "configmaps") is False
    client.close()


def test_subject_access_review_for_another_user(kube_emulator):
    kube_emulator.deny("get", "secrets", user="mallory")
    client = kube_emulator.api_client()
    authz = kubernetes.client.AuthorizationV1Api(client)

    def can(user):
        return authz.create_subject_access_review(
            {
                "spec": {
                    "user": user,
                    "resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": "default"},
                }
            }
        ).status.allowed

    assert (can("alice"), can("mallory")) == (True, False)
    client.close()


def test_binding_role_ref_cannot_change(kube_emulator):
    client = kube_emulator.api_client()
    rbac = kubernetes.client.RbacAuthorizationV1Api(client)
    rbac.create_namespaced_role_binding(
        "default",
        {
            "metadata": {"name": "b"},
            "subjects": [],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "one"},
        },
    )
    exc = api_error(rbac.patch_namespaced_role_binding, "b", "default", {"roleRef": {"name": "two"}})
    assert exc.status == 422 and "cannot change roleRef" in exc.status_body["message"]
    rbac.patch_namespaced_role_binding(
        "b", "default", {"subjects": [{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}]}
    )
    client.close()
