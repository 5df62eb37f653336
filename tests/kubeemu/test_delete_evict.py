"""Deletion (preconditions, DeleteOptions, finalizers, collections), eviction and node cordoning."""

from __future__ import annotations

import kubernetes

from tests.kubeemu.helpers import api_error


def _pod(name, node="n1", labels=None):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
    }


def test_delete_with_stale_resource_version_precondition_is_409(kube_clients):
    emu, core, _ = kube_clients
    a = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    core.patch_namespaced_config_map("c", "default", {"data": {"x": "1"}})
    exc = api_error(
        core.delete_namespaced_config_map,
        "c",
        "default",
        body=kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(resource_version=a.metadata.resource_version)
        ),
    )
    assert exc.status == 409 and "Precondition failed" in exc.status_body["message"]
    assert emu.get("configmaps", "default", "c") is not None


def test_delete_with_matching_preconditions_and_options_body(kube_clients):
    emu, core, _ = kube_clients
    a = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    status = core.delete_namespaced_config_map(
        "c",
        "default",
        body={
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Foreground",
            "gracePeriodSeconds": 0,
            "preconditions": {"resourceVersion": a.metadata.resource_version, "uid": a.metadata.uid},
        },
    )
    assert status["status"] == "Success" and status["details"]["uid"] == a.metadata.uid
    assert emu.get("configmaps", "default", "c") is None
    assert api_error(core.delete_namespaced_config_map, "c", "default").status == 404


def test_delete_with_wrong_uid_precondition_is_409(kube_clients):
    _, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    exc = api_error(
        core.delete_namespaced_config_map,
        "c",
        "default",
        body={"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}},
    )
    assert exc.status == 409


def test_dry_run_delete_and_create_change_nothing(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    core.delete_namespaced_config_map("c", "default", dry_run="All")
    core.create_namespaced_config_map("default", {"metadata": {"name": "d"}}, dry_run="All")
    assert emu.get("configmaps", "default", "c") is not None
    assert emu.get("configmaps", "default", "d") is None


def test_finalizers_hold_deletion_until_removed(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c", "finalizers": ["edgeguard/x"]}})
    answer = core.delete_namespaced_config_map("c", "default")
    held = emu.get("configmaps", "default", "c")
    assert held["metadata"]["deletionTimestamp"]
    assert answer["metadata"]["deletionTimestamp"]  # the held object comes back, with 200
    assert emu.requests[-1] == ("delete", "/api/v1/namespaces/default/configmaps/c", 200)
    exc = api_error(
        core.patch_namespaced_config_map, "c", "default", {"metadata": {"finalizers": ["edgeguard/x", "another/y"]}}
    )
    assert exc.status == 422  # no new finalizers on an object being deleted
    assert exc.status_body["details"]["causes"][0]["field"] == "metadata.finalizers"
    core.patch_namespaced_config_map(
        "c", "default", {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    assert emu.get("configmaps", "default", "c") is None


def test_delete_collection_by_label(kube_clients):
    emu, core, _ = kube_clients
    for n, lab in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map("default", {"metadata": {"name": n, "labels": {"l": lab}}})
    core.delete_collection_namespaced_config_map("default", label_selector="l=x")
    assert [c["metadata"]["name"] for c in emu.list("configmaps", "default")] == ["c"]


def test_pod_eviction_subresource_deletes_the_pod(kube_clients):
    emu, core, _ = kube_clients
    emu.seed(_pod("p"))
    core.create_namespaced_pod_eviction(
        "p",
        "default",
        kubernetes.client.V1Eviction(metadata=kubernetes.client.V1ObjectMeta(name="p", namespace="default")),
    )
    assert emu.get("pods", "default", "p") is None
    assert ("create", "/api/v1/namespaces/default/pods/p/eviction", 201) in emu.requests
    exc = api_error(
        core.create_namespaced_pod_eviction, "p", "default", {"metadata": {"name": "p", "namespace": "default"}}
    )
    assert exc.status == 404


def test_eviction_blocked_by_pod_disruption_budget_is_429(kube_clients):
    emu, core, _ = kube_clients
    emu.seed(_pod("p", labels={"app": "db"}))
    emu.seed(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, "minAvailable": 1},
            "status": {"disruptionsAllowed": 0},
        }
    )
    exc = api_error(
        core.create_namespaced_pod_eviction, "p", "default", {"metadata": {"name": "p", "namespace": "default"}}
    )
    assert exc.status == 429
    assert emu.get("pods", "default", "p") is not None


def test_node_cordon_by_patching_unschedulable(kube_clients):
    emu, core, _ = kube_clients
    emu.seed(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    core.patch_node("n1", {"spec": {"unschedulable": True}})
    assert emu.get("nodes", None, "n1")["spec"]["unschedulable"] is True
    assert [n.metadata.name for n in core.list_node(field_selector="spec.unschedulable=true").items] == ["n1"]
    node = core.read_node("n1")
    assert node.status.conditions[0].type == "Ready"  # status kept across a spec patch
    core.delete_node("n1")
    assert emu.get("nodes", None, "n1") is None


def test_pod_delete_returns_the_pod(kube_clients):
    emu, core, _ = kube_clients
    emu.seed(_pod("p"))
    out = core.delete_namespaced_pod("p", "default")
    assert out.kind == "Pod" and out.metadata.name == "p"


def test_garbage_collector_deletes_dependents_and_orphan_keeps_them(kube_clients):
    emu, core, _ = kube_clients
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_secret("default", {"metadata": {"name": "dep", "ownerReferences": [ref]}})
    core.create_namespaced_secret(
        "default",
        {
            "metadata": {
                "name": "two-owners",
                "ownerReferences": [
                    ref,
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "x",
                        "uid": "00000000-0000-0000-0000-000000000001",
                    },
                ],
            }
        },
    )
    core.delete_namespaced_config_map("owner", "default")
    assert emu.get("secrets", "default", "dep") is None
    assert [r["name"] for r in emu.get("secrets", "default", "two-owners")["metadata"]["ownerReferences"]] == ["x"]
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref["uid"] = owner.metadata.uid
    core.create_namespaced_secret("default", {"metadata": {"name": "dep", "ownerReferences": [ref]}})
    core.delete_namespaced_config_map("owner", "default", propagation_policy="Orphan")
    assert "ownerReferences" not in emu.get("secrets", "default", "dep")["metadata"]
