"""edgeguard.kubeapi against the real kube-apiserver v1.24 (tests/realkube.py): the errors as the server answers
them, the content types it merges, and every call node-enroll makes, with node-enroll's least-privilege
kubeconfig from `edgeguard-bootstrap openfaas` (the scrubber's calls run through its own suites:
tests/scrubber/test_cluster.py, test_real_rbac.py).

The kubeconfig goes the function's way: an OpenFaaS secret file read by edgeguard.kube (CA checked, token).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from edgeguard import kube, kubeapi

from . import certs

pytestmark = pytest.mark.cluster


@pytest.fixture
def as_function(tmp_path, monkeypatch):
    """Factory: a kubeapi.Client on a kubeconfig text, loaded from a secret file as a function loads it."""
    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube.reset()

    def make(kubeconfig_text: str, field_manager: str = "kubeapi-test") -> kubeapi.Client:
        name = f"kc-{uuid.uuid4().hex[:6]}"
        (tmp_path / name).write_text(kubeconfig_text)
        return kubeapi.Client.for_secret(name, timeout=10, field_manager=field_manager)

    yield make
    kube.reset()


@pytest.fixture
def namespace(real_kube, as_function):
    admin = as_function(real_kube.kubeconfig_text)
    ns = f"kubeapi-{uuid.uuid4().hex[:8]}"
    admin.create("Namespace", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    yield admin, ns
    admin.delete("Namespace", None, ns)


def failure(call, *args) -> kubeapi.KubeError:
    with pytest.raises(kubeapi.KubeError) as e:
        call(*args)
    return e.value


def flags(err: kubeapi.KubeError) -> list[str]:
    return [p for p in ("conflict", "not_found", "forbidden", "invalid") if getattr(err, p)]


def test_the_error_type_names_what_the_real_api_server_answers(namespace):
    admin, ns = namespace
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    made = admin.create("Secret", ns, body)
    assert [m["manager"] for m in made["metadata"]["managedFields"]] == ["kubeapi-test"]

    again = failure(admin.create, "Secret", ns, body)
    assert (again.status, again.reason, flags(again)) == (409, 'secrets "s" already exists', ["conflict"])

    stale = failure(admin.delete, "Secret", ns, "s", {"preconditions": {"resourceVersion": "1"}})
    assert stale.status == 409 and flags(stale) == ["conflict"] and "precondition" in stale.reason

    # a failed JSON-patch `test` op: v1.24 answers a bare 422, the same as any other rejected patch, so a caller
    # pinning a resourceVersion re-reads to tell the race (remediate._lost_race)
    raced = failure(
        admin.patch,
        "Secret",
        ns,
        "s",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}, {"op": "remove", "path": "/data/k"}],
        kubeapi.JSON_PATCH,
    )
    assert (raced.status, raced.reason, flags(raced)) == (
        422,
        "the server rejected our request due to an error in our request",
        ["invalid"],
    )
    assert admin.get("Secret", ns, "s")["data"] == {"k": "dg=="}

    bad = failure(
        admin.create, "ConfigMap", ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name"}}
    )
    assert bad.status == 422 and flags(bad) == ["invalid"] and "metadata.name: Invalid value" in bad.reason

    assert admin.delete("Secret", ns, "s")["status"] == "Success"
    gone = failure(admin.delete, "Secret", ns, "s")
    assert (gone.status, gone.reason, flags(gone)) == (404, 'secrets "s" not found', ["not_found"])
    assert admin.get("Secret", ns, "s") is None


def test_patch_content_types_are_merged_as_the_api_server_merges_them(namespace):
    admin, ns = namespace
    admin.create(
        "ConfigMap",
        ns,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}},
    )
    assert admin.patch("ConfigMap", ns, "cm", {"data": {"b": None, "c": "3"}}, kubeapi.MERGE_PATCH)["data"] == {
        "a": "1",
        "c": "3",
    }
    rv = admin.get("ConfigMap", ns, "cm")["metadata"]["resourceVersion"]
    out = admin.patch(
        "ConfigMap",
        ns,
        "cm",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, {"op": "remove", "path": "/data/a"}],
        kubeapi.JSON_PATCH,
    )
    assert out["data"] == {"c": "3"}
    pod = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "busybox", "env": [{"name": "X", "value": "1"}]},
                        {"name": "b", "image": "busybox"},
                    ]
                },
            },
        },
    }
    admin.create("Deployment", ns, pod)
    # strategic merge: containers and env merge by name (a merge patch would replace the whole list)
    out = admin.patch(
        "Deployment",
        ns,
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}]}}}},
        kubeapi.STRATEGIC_MERGE_PATCH,
    )
    cs = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["a", "b"] and [e["name"] for e in cs[0]["env"]] == ["Y", "X"]


def test_lists_page_with_continue_tokens_on_the_real_server(namespace):
    admin, ns = namespace
    for i in range(3):
        admin.create(
            "ConfigMap",
            ns,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i}", "labels": {"pick": "yes" if i != 1 else "no"}},
            },
        )
    names = [
        c["metadata"]["name"] for c in admin.each("ConfigMap", ns, limit=1) if c["metadata"]["name"].startswith("cm-")
    ]
    assert names == ["cm-0", "cm-1", "cm-2"]
    picked = admin.list("ConfigMap", ns, label_selector="pick=yes", limit=1)
    assert [c["metadata"]["name"] for c in picked] == ["cm-0", "cm-2"]
    one = admin.list("ConfigMap", None, field_selector=f"metadata.namespace={ns},metadata.name=cm-1")
    assert [c["metadata"]["name"] for c in one] == ["cm-1"]


def _bootstrap_token(token_id: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{token_id}"},
        "stringData": {
            "token-id": token_id,
            "token-secret": "0123456789abcdef",
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": "system:bootstrappers:k3s:default-node-token",
        },
    }


def test_node_enrolls_calls_with_its_least_privilege_kubeconfig(bootstrapped, as_function):
    """Everything functions/node-enroll/store.py does, through kubeapi, as node-enroll's ServiceAccount: bootstrap-token
    Secrets in kube-system (create/delete, never get), records in edgeguard-enroll (create/list/delete), Nodes (list,
    get, cordon, delete), Pods of a node (list across namespaces), and eviction."""
    admin = as_function(bootstrapped.cluster.kubeconfig_text)
    enroll = as_function(bootstrapped.kubeconfig("node-enroll"), field_manager="node-enroll")
    token_id = uuid.uuid4().hex[:6]

    # kube-system: create and delete the bootstrap token; reading it back is refused
    assert enroll.create("Secret", "kube-system", _bootstrap_token(token_id))["type"] == "bootstrap.kubernetes.io/token"
    dup = failure(enroll.create, "Secret", "kube-system", _bootstrap_token(token_id))
    assert flags(dup) == ["conflict"]
    denied = failure(enroll.get, "Secret", "kube-system", f"bootstrap-token-{token_id}")
    assert (denied.status, flags(denied)) == (403, ["forbidden"]) and "cannot get resource" in denied.reason
    assert flags(failure(enroll.list, "Secret", "kube-system")) == ["forbidden"]
    enroll.delete("Secret", "kube-system", f"bootstrap-token-{token_id}")
    assert flags(failure(enroll.delete, "Secret", "kube-system", f"bootstrap-token-{token_id}")) == ["not_found"]

    # records in edgeguard-enroll, found again by label
    label = {"app.kubernetes.io/managed-by": "node-enroll", "kubeapi-test": token_id}
    enroll.create(
        "Secret",
        "edgeguard-enroll",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"enroll-{token_id}", "labels": label},
            "stringData": {"node": "n"},
        },
    )
    found = enroll.list("Secret", "edgeguard-enroll", label_selector=f"kubeapi-test={token_id}")
    assert [s["metadata"]["name"] for s in found] == [f"enroll-{token_id}"]
    enroll.delete("Secret", "edgeguard-enroll", f"enroll-{token_id}")
    assert enroll.list("Secret", "edgeguard-enroll", label_selector=f"kubeapi-test={token_id}") == []

    # a Node of its own (no kubelet behind it), one Pod bound to it
    node = f"kubeapi-node-{token_id}"
    admin.create("Node", None, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    try:
        assert node in [n["metadata"]["name"] for n in enroll.list("Node")]
        assert enroll.get("Node", None, node)["metadata"]["name"] == node
        assert enroll.get("Node", None, node + "-absent") is None
        cordoned = enroll.patch("Node", None, node, {"spec": {"unschedulable": True}}, kubeapi.STRATEGIC_MERGE_PATCH)
        assert cordoned["spec"]["unschedulable"] is True
        admin.create(
            "Pod",
            "default",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": node},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            },
        )
        on_node = enroll.list("Pod", None, field_selector=f"spec.nodeName={node}")
        assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in on_node] == [("default", node)]
        assert enroll.evict("default", node)["status"] == "Success"
        # no kubelet confirms the graceful deletion here: the Pod stays, terminating
        assert admin.get("Pod", "default", node)["metadata"].get("deletionTimestamp")
        assert flags(failure(enroll.evict, "default", node + "-absent")) == ["not_found"]
        # outside its role: Pods are listed, never deleted directly
        assert flags(failure(enroll.delete, "Pod", "default", node)) == ["forbidden"]
        enroll.delete("Node", None, node)
        assert enroll.get("Node", None, node) is None
    finally:
        if admin.get("Pod", "default", node):
            admin.delete("Pod", "default", node, {"gracePeriodSeconds": 0})
        if admin.get("Node", None, node):
            admin.delete("Node", None, node)


def test_an_eviction_a_disruption_budget_forbids_is_429(namespace):
    admin, ns = namespace
    admin.request(
        "POST",
        f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
        body={
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "keep"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "kept"}}},
        },
        verb="create",
        what="pdb",
    )
    admin.create(
        "Pod",
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "kept", "labels": {"app": "kept"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    )
    # a Pending pod is evicted whatever the budget says (v1.24): wait for the simulated kubelet to run it
    deadline = time.monotonic() + 60
    while (admin.get("Pod", ns, "kept").get("status") or {}).get("phase") != "Running":
        assert time.monotonic() < deadline, admin.get("Pod", ns, "kept").get("status")
        time.sleep(0.3)
    err = failure(admin.evict, ns, "kept")
    assert err.status == 429 and flags(err) == [] and "disruption budget" in err.reason
    assert admin.get("Pod", ns, "kept")["metadata"].get("deletionTimestamp") is None


def test_the_scrubbers_service_account_is_refused_secrets_it_has_no_role_for(bootstrapped, as_function):
    scrubber = as_function(bootstrapped.kubeconfig("configmap-secret-scrubber"))
    for call, args in (
        (scrubber.list, ("Secret", None)),
        (scrubber.get, ("Secret", "kube-system", "x")),
        (scrubber.create, ("Secret", "edgeguard-not-granted", {"metadata": {"name": "x"}})),
    ):
        err = failure(call, *args)
        assert (err.status, flags(err)) == (403, ["forbidden"]), (args, err)
    assert isinstance(scrubber.list("ConfigMap", None, limit=5), list)


def _kubeconfig_variant(text: str, *, user: dict | None = None, **cluster) -> str:
    doc = yaml.safe_load(text)
    for entry in doc["clusters"]:
        for k, v in cluster.items():
            if v is None:
                entry["cluster"].pop(k.replace("_", "-"), None)
            else:
                entry["cluster"][k.replace("_", "-")] = v
    if user is not None:
        for entry in doc["users"]:
            entry["user"] = user
    return yaml.safe_dump(doc)


def test_the_function_path_checks_the_servers_certificate_and_name(real_kube, as_function, tmp_path):
    """Without the kubernetes package (a subprocess shows it is not imported): the cluster's CA is required,
    tls-server-name is honoured, a wrong name or a missing CA is refused (no answer: SSLError)."""
    text = real_kube.kubeconfig_text
    ok = as_function(_kubeconfig_variant(text, tls_server_name="kubernetes.default.svc"))
    assert ok.get("Namespace", None, "default")["metadata"]["name"] == "default"
    for variant in (
        _kubeconfig_variant(text, certificate_authority_data=None),
        _kubeconfig_variant(text, tls_server_name="not-the-apiserver.example"),
    ):
        err = failure(as_function(variant).get, "Namespace", None, "default")
        assert (err.status, err.reason) == (None, "SSLError"), err
    (tmp_path / "kc").write_text(text)
    code = (
        "import sys; from edgeguard import kubeapi; "
        "print(kubeapi.Client.for_secret('kc').get('Namespace', None, 'default')['metadata']['name'], "
        "any(m == 'kubernetes' or m.startswith('kubernetes.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, EDGEGUARD_SECRETS_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.split() == ["default", "False"], (out.stdout, out.stderr[-1000:])


def test_a_client_certificate_authenticates_as_its_common_name(own_kube, as_function, tmp_path):
    pki = own_kube.directory / "pki"
    mine = certs.as_user_data(*certs.client_cert(tmp_path, "edgeguard-kubeapi-cert", pki))
    err = failure(as_function(_kubeconfig_variant(own_kube.kubeconfig_text, user=mine)).list, "Secret", "kube-system")
    assert err.forbidden and 'User "edgeguard-kubeapi-cert"' in err.reason, err  # authenticated, not authorized
    stranger = certs.as_user_data(*certs.client_cert(tmp_path, "edgeguard-stranger", None))
    err = failure(
        as_function(_kubeconfig_variant(own_kube.kubeconfig_text, user=stranger)).list, "Secret", "kube-system"
    )
    assert err.status == 401, err


def test_a_metadata_only_list_carries_no_data(namespace):
    """PartialObjectMetadataList on v1.24: the sweep's candidate listing never downloads ConfigMaps' data."""
    admin, ns = namespace
    admin.create(
        "ConfigMap",
        ns,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x" * 100000}},
    )
    (item,) = admin.list("ConfigMap", ns, field_selector="metadata.name=big", metadata_only=True)
    assert item["metadata"]["name"] == "big" and item["metadata"]["namespace"] == ns
    assert "data" not in item and item["kind"] == "PartialObjectMetadata"
    (full,) = admin.list("ConfigMap", ns, field_selector="metadata.name=big")
    assert full["data"]["k"] == "x" * 100000
