"""GET /nodes and DELETE /nodes/<name> against the API emulator; the RBAC manifest under enforcement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.node_enroll.helpers import admin, call, enroll, enroll_doc, sub

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac" / "node-enroll.yaml"


def node(name, *, ready=True, arch="arm64", kubelet="v1.31.4+k3s1", enrolled=True):
    labels = {"edgeguard.io/enrolled-by": "node-enroll"} if enrolled else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "nodeInfo": {
                "architecture": arch,
                "kubeletVersion": kubelet,
                "kubeProxyVersion": kubelet,
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.6.51+rpt-rpi-v8",
                "containerRuntimeVersion": "containerd://1.7",
                "machineID": "m",
                "systemUUID": "s",
                "bootID": "b",
            },
        },
    }


def pod(name, node_name, ns="default", owner=None, labels=None, annotations=None, phase="Running"):
    meta = {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner, "name": f"{name}-owner", "uid": f"uid-{name}", "controller": True}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def nodes_of(fn, make_event, headers=None):
    return call(fn, make_event, method="GET", path="/nodes", headers=admin() if headers is None else headers)


def test_nodes_needs_the_admin_token(kenroll, make_event):
    fn, _ = kenroll()
    assert nodes_of(fn, make_event, headers={})[0] == 401
    assert nodes_of(fn, make_event, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert call(fn, make_event, method="DELETE", path="/nodes/pi-1")[0] == 401


def test_enrollment_shows_as_not_joined_until_the_node_appears(kenroll, make_event):
    fn, emu = kenroll()
    _, _, doc = enroll(fn, make_event, enroll_doc(labels={"node.edgeguard.io/site": "north"}))
    status, _, listing = nodes_of(fn, make_event)
    assert status == 200 and listing["count"] == 1
    item = listing["nodes"][0]
    assert item["name"] == "pi-north-01" and item["joined"] is False and item["ready"] is None
    assert item["arch"] == "arm64" and item["kubelet_version"] is None and item["falco"] is None
    assert item["token"] == {"id": doc["token_id"], "expires_at": doc["expires_at"], "expired": False}
    assert item["labels"]["node.edgeguard.io/site"] == "north"
    assert doc["token"].rsplit(".", 1)[1] not in str(listing)  # the token's secret half is never listed


def test_joined_node_reports_ready_arch_kubelet_and_its_falco_pod(kenroll, make_event):
    fn, emu = kenroll()
    _, _, doc = enroll(fn, make_event)
    emu.seed(node("pi-north-01", arch="arm64", kubelet="v1.31.4+k3s1"))
    emu.seed(
        pod("falco-abcde", "pi-north-01", ns="falco", owner="DaemonSet", labels={"app.kubernetes.io/name": "falco"})
    )
    emu.seed(pod("falco-other", "server-1", ns="falco", owner="DaemonSet", labels={"app.kubernetes.io/name": "falco"}))
    _, _, listing = nodes_of(fn, make_event)
    item = next(i for i in listing["nodes"] if i["name"] == "pi-north-01")
    assert item["joined"] is True and item["ready"] is True
    assert item["arch"] == "arm64" and item["kubelet_version"] == "v1.31.4+k3s1"
    assert item["falco"] == {"pod": "falco/falco-abcde", "phase": "Running", "ready": True}
    assert item["token"]["id"] == doc["token_id"]


def test_joined_nodes_stay_listed_after_their_token_is_gone(kenroll, make_event):
    fn, emu = kenroll()
    emu.seed(node("pi-old", ready=False))
    emu.seed(node("server-1", enrolled=False))  # not ours
    _, _, listing = nodes_of(fn, make_event)
    assert [i["name"] for i in listing["nodes"]] == ["pi-old"]
    assert listing["nodes"][0]["ready"] is False and listing["nodes"][0]["token"] is None


def test_host_mode_reports_falco_mode_instead_of_pods(kenroll, make_event):
    fn, emu = kenroll(env={"falco_mode": "host", "public_gateway_url": "https://gw"})
    enroll(fn, make_event)
    _, _, listing = nodes_of(fn, make_event)
    assert listing["nodes"][0]["falco"] == {"mode": "host"}
    assert not any("/pods" in p for _, p, _ in emu.requests)


def test_delete_revokes_the_token(kenroll, make_event):
    fn, emu = kenroll()
    _, _, doc = enroll(fn, make_event)
    status, _, res = call(fn, make_event, method="DELETE", path="/nodes/pi-north-01", headers=admin())
    assert status == 200 and res["revoked"] == [doc["token_id"]]
    assert emu.get("secrets", "kube-system", f"bootstrap-token-{doc['token_id']}") is None
    assert nodes_of(fn, make_event)[2]["count"] == 0


def test_delete_unknown_node_is_404_and_bad_name_is_400(kenroll, make_event):
    fn, _ = kenroll()
    assert call(fn, make_event, method="DELETE", path="/nodes/ghost", headers=admin())[0] == 404
    assert call(fn, make_event, method="DELETE", path="/nodes/Bad_Name!", headers=admin())[0] == 400


def test_drain_cordons_evicts_and_deletes_the_node(kenroll, make_event):
    fn, emu = kenroll()
    enroll(fn, make_event)
    emu.seed(node("pi-north-01"))
    emu.seed(pod("app-1", "pi-north-01", owner="ReplicaSet"))
    emu.seed(pod("falco-x", "pi-north-01", ns="falco", owner="DaemonSet"))
    emu.seed(pod("static-1", "pi-north-01", ns="kube-system", annotations={"kubernetes.io/config.mirror": "abc"}))
    emu.seed(pod("elsewhere", "pi-south-01", owner="ReplicaSet"))
    status, _, res = call(
        fn, make_event, method="DELETE", path="/nodes/pi-north-01", query={"drain": "true"}, headers=admin()
    )
    assert status == 200, res
    assert res["drain"]["cordoned"] and res["drain"]["deleted"]
    assert res["drain"]["evicted"] == ["default/app-1"]
    assert {s["pod"] for s in res["drain"]["skipped"]} == {"falco/falco-x", "kube-system/static-1"}
    assert emu.get("nodes", None, "pi-north-01") is None
    assert emu.get("pods", "default", "app-1") is None
    assert emu.get("pods", "default", "elsewhere") is not None
    verbs = [(v, p) for v, p, _ in emu.requests]
    assert ("patch", "/api/v1/nodes/pi-north-01") in verbs
    assert verbs.index(("patch", "/api/v1/nodes/pi-north-01")) < verbs.index(
        ("create", "/api/v1/namespaces/default/pods/app-1/eviction")
    )


def test_drain_blocked_by_a_disruption_budget_keeps_the_node_cordoned(kenroll, make_event):
    fn, emu = kenroll()
    emu.seed(node("pi-north-01"))
    emu.seed(pod("db-0", "pi-north-01", owner="StatefulSet", labels={"app": "db"}))
    emu.seed(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, "minAvailable": 1},
            "status": {"disruptionsAllowed": 0},
        }
    )
    status, _, res = call(
        fn, make_event, method="DELETE", path="/nodes/pi-north-01", query={"drain": "1"}, headers=admin()
    )
    assert status == 409 and "not deleted" in res["error"]
    assert res["drain"]["failed"][0]["status"] == 429
    n = emu.get("nodes", None, "pi-north-01")
    assert n is not None and n["spec"]["unschedulable"] is True
    assert emu.get("pods", "default", "db-0") is not None


def test_delete_without_drain_leaves_a_joined_node_alone(kenroll, make_event):
    fn, emu = kenroll()
    emu.seed(node("pi-north-01"))
    status, _, res = call(fn, make_event, method="DELETE", path="/nodes/pi-north-01", headers=admin())
    assert status == 200 and res["revoked"] == [] and "drain=true" in res["note"]
    assert emu.get("nodes", None, "pi-north-01") is not None


def kube_system_secret(name, type_="Opaque"):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "kube-system"},
        "type": type_,
        "data": {"hash": "bm90LWEtcmVhbC1vbmU="},
    }


@pytest.mark.parametrize(
    "planted",
    [
        # issue 12 §5: the Role may delete any kube-system Secret, so node-enroll must only ever delete what it
        # recorded.
        # Someone who can create Secrets in edgeguard-enroll plants what looks like an enrollment of pi-north-01:
        {
            "type": "bootstrap.kubernetes.io/token",
            "name": "bootstrap-token-abc123",
        },  # a token-typed Secret, not a record
        {"type": "Opaque", "name": "enroll-abc123"},  # a record's name, another type
        {"type": "edgeguard.io/node-enroll-record", "name": "enroll-abc123", "unlabelled": True},
    ],
)
def test_only_tokens_node_enroll_recorded_are_ever_deleted(kenroll, make_event, planted):
    fn, emu = kenroll()
    tokens = sub(fn, "tokens")
    body = tokens.build_secret(
        token_id="abc123",
        token_secret="a" * 16,
        hostname="pi-north-01",
        arch="arm64",
        machine_id="9" * 32,
        labels={},
        taints=[],
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        now=datetime.now(UTC),
        source=None,
    )
    fake = {
        **body,
        "type": planted["type"],
        "metadata": {**body["metadata"], "name": planted["name"], "namespace": "edgeguard-enroll"},
    }
    if planted.get("unlabelled"):
        fake["metadata"]["labels"] = {}
    emu.seed(fake)
    emu.seed(kube_system_secret("bootstrap-token-abc123", "bootstrap.kubernetes.io/token"))  # not node-enroll's
    status, _, res = call(fn, make_event, method="DELETE", path="/nodes/pi-north-01", headers=admin())
    assert status == 404 and emu.get("secrets", "kube-system", "bootstrap-token-abc123") is not None, res
    assert [i["name"] for i in nodes_of(fn, make_event)[2]["nodes"]] == []


def test_a_whole_cycle_deletes_nothing_in_kube_system_but_its_own_bootstrap_tokens(kenroll, make_event):
    import re

    fn, emu = kenroll()
    emu.seed(kube_system_secret("pi-north-01.node-password.k3s"))
    emu.seed(kube_system_secret("k3s-serving", "kubernetes.io/tls"))
    _, _, first = enroll(fn, make_event)
    _, _, second = enroll(fn, make_event, enroll_doc(rotate=True))
    emu.seed(node("pi-north-01"))
    enroll(fn, make_event, enroll_doc(hostname="pi-2", machine_id="2" * 32))  # consumes pi-north-01's token
    call(fn, make_event, method="DELETE", path="/nodes/pi-north-01", query={"drain": "true"}, headers=admin())
    call(fn, make_event, method="DELETE", path="/nodes/pi-2", headers=admin())
    deleted = [p for v, p, _ in emu.requests if v == "delete" and p.startswith("/api/v1/namespaces/kube-system/")]
    assert {f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{d['token_id']}" for d in (first, second)} <= set(
        deleted
    )
    assert all(re.fullmatch(r"/api/v1/namespaces/kube-system/secrets/bootstrap-token-[a-z0-9]{6}", p) for p in deleted)
    assert emu.get("secrets", "kube-system", "pi-north-01.node-password.k3s") is not None
    assert emu.get("secrets", "kube-system", "k3s-serving") is not None


# ------------------------------------------------------------------ RBAC manifest, enforced


def rbac_docs():
    return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


@pytest.fixture
def rbac_emu():
    from local.kubeemu import KubeEmulator

    emu = KubeEmulator(rbac=True).start()
    try:
        yield emu
    finally:
        emu.stop()


def load_with_sa(enroll_fn, emu, docs, env=None):
    for d in docs:
        emu.seed(d)
    token = emu.service_account_token("openfaas-fn", "node-enroll")
    return enroll_fn(env=env, secrets={"node-enroll-kubeconfig": yaml.safe_dump(emu.kubeconfig_dict(user_token=token))})


def full_cycle(fn, emu, make_event):
    """Every API call node-enroll makes: enroll, rotate, list, drain. Returns the statuses."""
    emu.seed(node("pi-old"))
    emu.seed(pod("app-1", "pi-old", owner="ReplicaSet"))
    out = [
        enroll(fn, make_event)[0],
        enroll(fn, make_event, enroll_doc(rotate=True))[0],
        call(fn, make_event, method="GET", path="/nodes", headers=admin())[0],
        call(fn, make_event, method="DELETE", path="/nodes/pi-north-01", headers=admin())[0],
        call(fn, make_event, method="DELETE", path="/nodes/pi-old", query={"drain": "true"}, headers=admin())[0],
    ]
    return out


def test_rbac_manifest_grants_everything_the_function_uses(enroll_fn, rbac_emu, make_event):
    fn = load_with_sa(enroll_fn, rbac_emu, rbac_docs())
    assert full_cycle(fn, rbac_emu, make_event) == [201, 201, 200, 200, 200]
    assert not [r for r in rbac_emu.requests if r[2] == 403]


def test_rbac_manifest_grants_the_host_mode_alert_tokens(enroll_fn, rbac_emu, make_event):
    fn = load_with_sa(enroll_fn, rbac_emu, rbac_docs(), env={"falco_mode": "host", "public_gateway_url": "https://gw"})
    statuses = full_cycle(fn, rbac_emu, make_event)
    assert statuses == [201, 201, 200, 200, 200], statuses
    assert not [r for r in rbac_emu.requests if r[2] == 403]
    assert rbac_emu.get("secrets", "edgeguard-enroll", "edgeguard-node-alert-tokens")["data"] == {}


def _without(docs, kind, name, resource, verb):
    out = []
    for d in docs:
        d = yaml.safe_load(yaml.safe_dump(d))
        if d["kind"] == kind and d["metadata"]["name"] == name:
            for rule in d["rules"]:
                if resource in rule["resources"]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        out.append(d)
    return out


RECORDS_ROLE, TOKENS_ROLE, CLUSTER_ROLE = (
    "edgeguard-node-enroll-records",
    "edgeguard-node-enroll-bootstrap-tokens",
    "edgeguard-node-enroll",
)


@pytest.mark.parametrize(
    "kind,name,resource,verb",
    [
        ("Role", RECORDS_ROLE, "secrets", "list"),
        ("Role", RECORDS_ROLE, "secrets", "create"),
        ("Role", RECORDS_ROLE, "secrets", "delete"),
        ("Role", RECORDS_ROLE, "secrets", "patch"),
        ("Role", TOKENS_ROLE, "secrets", "create"),
        ("Role", TOKENS_ROLE, "secrets", "delete"),
        ("ClusterRole", CLUSTER_ROLE, "nodes", "get"),
        ("ClusterRole", CLUSTER_ROLE, "nodes", "list"),
        ("ClusterRole", CLUSTER_ROLE, "nodes", "patch"),
        ("ClusterRole", CLUSTER_ROLE, "nodes", "delete"),
        ("ClusterRole", CLUSTER_ROLE, "pods", "list"),
        ("ClusterRole", CLUSTER_ROLE, "pods/eviction", "create"),
    ],
)
def test_every_granted_verb_is_needed(enroll_fn, rbac_emu, make_event, kind, name, resource, verb):
    fn = load_with_sa(enroll_fn, rbac_emu, _without(rbac_docs(), kind, name, resource, verb))
    statuses = full_cycle(fn, rbac_emu, make_event)
    assert any(s == 502 for s in statuses), statuses
    assert any(r[2] == 403 for r in rbac_emu.requests)


def test_service_account_cannot_read_kube_system_secrets(enroll_fn, rbac_emu, make_event):
    from kubernetes import client
    from kubernetes import config as kconfig
    from kubernetes.client.rest import ApiException

    load_with_sa(enroll_fn, rbac_emu, rbac_docs())
    rbac_emu.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "k3s-serving", "namespace": "kube-system"},
            "type": "kubernetes.io/tls",
            "data": {"tls.key": "c2VjcmV0"},
        }
    )
    cfg = client.Configuration()
    token = rbac_emu.service_account_token("openfaas-fn", "node-enroll")
    kconfig.load_kube_config_from_dict(rbac_emu.kubeconfig_dict(user_token=token), client_configuration=cfg)
    core = client.CoreV1Api(client.ApiClient(cfg))
    attempts = {
        "list kube-system": lambda: core.list_namespaced_secret("kube-system"),
        "get kube-system": lambda: core.read_namespaced_secret("k3s-serving", "kube-system"),
        "list all namespaces": lambda: core.list_secret_for_all_namespaces(),
        "watch kube-system": lambda: core.list_namespaced_secret("kube-system", watch=True, timeout_seconds=1),
        "patch kube-system": lambda: core.patch_namespaced_secret("k3s-serving", "kube-system", {"data": {}}),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ApiException) as err:
            attempt()
        assert err.value.status == 403, what


def test_rbac_manifest_is_exactly_these_rules():
    docs = rbac_docs()
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d["rules"] for d in docs if d["kind"] == "Role"}
    assert roles == {
        ("edgeguard-enroll", RECORDS_ROLE): [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "create", "delete"]},
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["edgeguard-enroll-nonces", "edgeguard-node-alert-tokens"],
                "verbs": ["patch"],
            },
        ],
        ("kube-system", TOKENS_ROLE): [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]}],
    }
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    ]
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"] == ["edgeguard-enroll"]
    bindings = {(d["metadata"].get("namespace"), d["roleRef"]["name"]) for d in docs if d["kind"].endswith("Binding")}
    assert bindings == {("edgeguard-enroll", RECORDS_ROLE), ("kube-system", TOKENS_ROLE), (None, CLUSTER_ROLE)}


def test_rbac_manifest_validates_against_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate")
    for d in rbac_docs():
        kv.validate(d, "1.30", strict=True)
