"""Lists: kinds, empty lists for every known type, selectors, all-namespace lists, pagination."""

from __future__ import annotations

import kubernetes
import pytest

from tests.kubeemu.helpers import api_error, deployment


def _apis(client):
    c = kubernetes.client
    core, apps, batch, rbac = (
        c.CoreV1Api(client),
        c.AppsV1Api(client),
        c.BatchV1Api(client),
        c.RbacAuthorizationV1Api(client),
    )
    events = c.EventsV1Api(client)
    return [
        (core.list_namespaced_config_map, "V1ConfigMapList"),
        (core.list_namespaced_secret, "V1SecretList"),
        (core.list_namespaced_pod, "V1PodList"),
        (core.list_namespaced_event, "CoreV1EventList"),
        (core.list_namespaced_service, "V1ServiceList"),
        (core.list_namespaced_service_account, "V1ServiceAccountList"),
        (apps.list_namespaced_deployment, "V1DeploymentList"),
        (apps.list_namespaced_stateful_set, None),
        (apps.list_namespaced_daemon_set, None),
        (apps.list_namespaced_replica_set, None),
        (batch.list_namespaced_job, None),
        (batch.list_namespaced_cron_job, None),
        (rbac.list_namespaced_role, None),
        (rbac.list_namespaced_role_binding, None),
        (events.list_namespaced_event, None),
    ], [core.list_node, rbac.list_cluster_role, rbac.list_cluster_role_binding]


def test_every_known_type_lists_empty_not_404(kube_emulator):
    client = kube_emulator.api_client()
    namespaced, cluster = _apis(client)
    for fn, _ in namespaced:
        assert fn("default").items == [], fn.__name__
    for fn in cluster:
        assert fn().items == [], fn.__name__
    client.close()


@pytest.mark.parametrize(
    "path,kind",
    [
        ("/api/v1/namespaces/default/configmaps", "ConfigMapList"),
        ("/apis/apps/v1/namespaces/default/deployments", "DeploymentList"),
        ("/apis/batch/v1/cronjobs", "CronJobList"),
        ("/apis/rbac.authorization.k8s.io/v1/clusterroles", "ClusterRoleList"),
        ("/apis/events.k8s.io/v1/namespaces/default/events", "EventList"),
    ],
)
def test_list_has_kind_api_version_and_resource_version(kube_emulator, path, kind):
    import requests

    body = requests.get(kube_emulator.url + path, timeout=5).json()
    assert body["kind"] == kind
    assert body["metadata"]["resourceVersion"].isdigit()
    assert body["items"] == []


def test_label_selectors_equality_set_and_exists(kube_clients):
    _, core, _ = kube_clients
    for name, labels in [
        ("a", {"app": "web", "tier": "front"}),
        ("b", {"app": "db"}),
        ("c", {"app": "cache"}),
        ("d", {}),
    ]:
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": labels}})

    def names(sel):
        return [i.metadata.name for i in core.list_namespaced_config_map("default", label_selector=sel).items]

    assert names("app=web") == ["a"]
    assert names("app==db") == ["b"]
    assert names("app!=web") == ["b", "c", "d"]
    assert names("app in (web, db)") == ["a", "b"]
    assert names("app notin (web,db)") == ["c", "d"]
    assert names("tier") == ["a"]
    assert names("!tier") == ["b", "c", "d"]
    assert names("app,app notin (cache),!tier") == ["b"]
    assert api_error(core.list_namespaced_config_map, "default", label_selector="app in ()").status == 400


def test_field_selectors_name_namespace_and_node_name(kube_clients):
    emu, core, _ = kube_clients
    for ns in ("a", "b"):
        core.create_namespace({"metadata": {"name": ns}})
        for n, node in (("p1", "n1"), ("p2", "n2")):
            emu.seed(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": n, "namespace": ns},
                    "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
                }
            )
    pods = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items
    assert sorted((p.metadata.namespace, p.metadata.name) for p in pods) == [("a", "p1"), ("b", "p1")]
    pods = core.list_pod_for_all_namespaces(field_selector="metadata.namespace=b,metadata.name!=p1").items
    assert [(p.metadata.namespace, p.metadata.name) for p in pods] == [("b", "p2")]
    assert [p.metadata.name for p in core.list_namespaced_pod("a", field_selector="metadata.name=p2").items] == ["p2"]
    exc = api_error(core.list_namespaced_config_map, "a", field_selector="data.key=x")
    assert exc.status == 400 and "field label not supported" in exc.status_body["message"]


def test_all_namespace_list_spans_namespaces(kube_clients):
    _, core, apps = kube_clients
    core.create_namespace({"metadata": {"name": "x"}})
    apps.create_namespaced_deployment("x", deployment("d1"))
    apps.create_namespaced_deployment("default", deployment("d2"))
    items = apps.list_deployment_for_all_namespaces().items
    assert sorted((d.metadata.namespace, d.metadata.name) for d in items) == [("default", "d2"), ("x", "d1")]
    assert [d.metadata.name for d in apps.list_namespaced_deployment("x").items] == ["d1"]


def test_list_pagination_with_limit_and_continue(kube_clients):
    _, core, _ = kube_clients
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
    first = core.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in first.items] == ["c0", "c1"]
    second = core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    third = core.list_namespaced_config_map("default", limit=2, _continue=second.metadata._continue)
    assert [i.metadata.name for i in second.items + third.items] == ["c2", "c3", "c4"]
    assert third.metadata._continue is None


def test_cluster_scoped_lists_nodes_namespaces_and_cluster_roles(kube_clients):
    emu, core, _ = kube_clients
    emu.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"arch": "arm64"}}})
    emu.seed(
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}, "rules": []}
    )
    assert [n.metadata.name for n in core.list_node(label_selector="arch=arm64").items] == ["n1"]
    client = emu.api_client()
    rbac = kubernetes.client.RbacAuthorizationV1Api(client)
    assert [r.metadata.name for r in rbac.list_cluster_role().items] == ["r"]
    client.close()
