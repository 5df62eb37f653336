"""The seed flow against a real kube-apiserver (tests/realkube.py: the launched v1.24 control plane, or your
cluster with KUBECONFIG and EDGEGUARD_REAL_CLUSTER=1), with the admin's kubeconfig as the function's.

Runs in a throw-away namespace it creates and deletes (the kubeconfig needs rights to create
namespaces, or set EDGEGUARD_TEST_NAMESPACE to an existing, empty one). The function is loaded
from its build context. The least-privilege run of the same flow is tests/scrubber/test_real_rbac.py.
"""

from __future__ import annotations

import base64
import os
import time
import uuid

import pytest

from .conftest import FINGERPRINT_KEY, FN, TOKEN, deployment, pod_spec, workload

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster_ns(real_kube):
    from kubernetes import client

    api = real_kube.api_client()
    v1 = client.CoreV1Api(api)
    ns = os.environ.get("EDGEGUARD_TEST_NAMESPACE")
    created = False
    if not ns:
        ns = f"edgeguard-scrubber-{uuid.uuid4().hex[:8]}"
        v1.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        created = True
    try:
        yield api, ns
    finally:
        if created:
            v1.delete_namespace(ns)


def test_seed_configmap_moves_on_a_real_cluster_and_the_deployment_rolls_out_from_the_secret(
    cluster_ns, load_function, call, real_kube
):
    from kubernetes import client

    api, ns = cluster_ns
    v1, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    v1.create_namespaced_config_map(
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "aws-creds"},
            "data": {"aws_access_key_id": "AKES20LNOA", "region": "eu-west-1"},
        },
    )
    spec = pod_spec(env=True, env_from=True, volume=True)
    spec["containers"][0].update(image="busybox:1.36", command=["sh", "-c", 'test -n "$CRED" && sleep 3600'])
    apps.create_namespaced_deployment(ns, deployment("web", ns=ns, spec=spec, replicas=1))
    mod = load_function(
        FN,
        env={
            "scrub_mode": "move",
            "rollout_timeout_seconds": "90",
            "rollout_poll_seconds": "2",
            "rate_limit_per_minute": "1000",
        },
        secrets={
            "configmap-secret-scrubber-token": TOKEN,
            "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
            "configmap-secret-scrubber-kubeconfig": real_kube.kubeconfig_text,
        },
    )
    status, body, resp = call(mod, "POST", {"namespace": ns, "name": "aws-creds"})
    assert status == 200, body
    assert body["configmaps"][0]["status"] in ("moved", "pending_rollout"), body
    if body["configmaps"][0]["status"] == "pending_rollout":  # slow image pull: finish on a re-run
        time.sleep(30)
        status, body, resp = call(mod, "POST", {"namespace": ns, "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved", body
    assert "AKES20LNOA" not in resp["body"]
    cm = v1.read_namespaced_config_map("aws-creds", ns)
    assert cm.data == {"region": "eu-west-1"}
    sec = v1.read_namespaced_secret("aws-creds-credentials", ns)
    assert base64.b64decode(sec.data["aws_access_key_id"]) == b"AKES20LNOA"
    dep = apps.read_namespaced_deployment("web", ns)
    env = dep.spec.template.spec.containers[0].env[0]
    assert env.value_from.secret_key_ref.name == "aws-creds-credentials"
    deadline = time.monotonic() + 120  # the new pod reads the key from the Secret: it must become available
    while (dep.status.available_replicas or 0) < 1 or (dep.status.updated_replicas or 0) < 1:
        assert time.monotonic() < deadline, dep.status
        time.sleep(2)
        dep = apps.read_namespaced_deployment("web", ns)
    # re-run: nothing left to do
    status, body, _ = call(mod, "POST", {"namespace": ns, "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "clean"


OFFLINE = "sim.edgeguard.io/offline"  # node_sim: every new Pod on such a Node fails with ErrImagePull


def _ready(apps, ns, name):
    sts = apps.read_namespaced_stateful_set(f"{name}-db", ns).status
    ds = apps.read_namespaced_daemon_set(f"{name}-agent", ns).status
    dep = apps.read_namespaced_deployment(name, ns).status
    return (
        (sts.ready_replicas or 0) == 1
        and (ds.number_available or 0) == ds.desired_number_scheduled >= 1
        and (dep.available_replicas or 0) == 1
    )


def test_keys_stay_in_the_configmap_until_the_rewired_pods_are_ready(own_kube, cluster_ns, load_function, call):
    """An edge node whose uplink is down cannot pull the rewired pods' image. A StatefulSet, a DaemonSet and a
    Recreate Deployment then report every replica *updated* although none is ready (the real v1.24 controllers'
    status); the keys must stay in the ConfigMap until the new pods are ready, as `kubectl rollout status` would
    wait, and a re-run once the node is back online finishes the move."""
    from kubernetes import client

    api, ns = cluster_ns
    v1, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    name = "aws-creds"
    v1.create_namespaced_config_map(
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"aws_access_key_id": "AKES20LNOA"},
        },
    )
    spec = pod_spec(env=True)
    dep = deployment(name, ns=ns, spec=spec, replicas=1)
    dep["spec"]["strategy"] = {"type": "Recreate"}
    apps.create_namespaced_deployment(ns, dep)
    apps.create_namespaced_stateful_set(ns, workload("StatefulSet", f"{name}-db", spec, ns=ns))
    apps.create_namespaced_daemon_set(ns, workload("DaemonSet", f"{name}-agent", spec, ns=ns))
    deadline = time.monotonic() + 60
    while not _ready(apps, ns, name):
        assert time.monotonic() < deadline, "the workloads never became ready"
        time.sleep(0.5)
    nodes = [n.metadata.name for n in v1.list_node().items if n.metadata.name.startswith("sim-node-")]
    secrets = {
        "configmap-secret-scrubber-token": TOKEN,
        "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
        "configmap-secret-scrubber-kubeconfig": own_kube.kubeconfig_text,
    }
    try:
        for n in nodes:
            v1.patch_node(n, {"metadata": {"labels": {OFFLINE: "true"}}})
        mod = load_function(
            FN,
            env={
                "scrub_mode": "move",
                "rollout_timeout_seconds": "6",
                "rollout_poll_seconds": "0.5",
                "rate_limit_per_minute": "1000",
            },
            secrets=secrets,
        )
        status, body, _ = call(mod, "POST", {"namespace": ns, "name": name})
        assert status == 200, body
        out = body["configmaps"][0]
        assert out["status"] == "pending_rollout", out
        pending = " ".join(out["reasons"])
        for kind in (f"Deployment {name}", f"StatefulSet {name}-db", f"DaemonSet {name}-agent"):
            assert kind in pending, out
        assert v1.read_namespaced_config_map(name, ns).data == {"aws_access_key_id": "AKES20LNOA"}
    finally:
        for n in nodes:
            v1.patch_node(n, {"metadata": {"labels": {OFFLINE: None}}})
    deadline = time.monotonic() + 60
    while not _ready(apps, ns, name):
        assert time.monotonic() < deadline, "the rewired pods never became ready after the node came back"
        time.sleep(0.5)
    status, body, _ = call(mod, "POST", {"namespace": ns, "name": name})
    assert body["configmaps"][0]["status"] == "moved", body
    assert not v1.read_namespaced_config_map(name, ns).data


def test_a_configmap_edited_between_read_and_patch_is_re_read_not_clobbered(cluster_ns, load_function, call, real_kube):
    """The contraction is a JSON patch guarded by a `test` of resourceVersion. kube-apiserver v1.24 refuses a
    stale one with a bare 422 ("the server rejected our request...", no details), so the scrubber must tell the
    lost race by re-reading: the edit made in between survives and the move still completes."""
    from kubernetes import client

    from .conftest import submodule

    api, ns = cluster_ns
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "aws-creds"},
            "data": {"aws_access_key_id": "AKES20LNOA", "region": "eu-west-1"},
        },
    )
    mod = load_function(
        FN,
        env={"scrub_mode": "move", "rate_limit_per_minute": "1000"},
        secrets={
            "configmap-secret-scrubber-token": TOKEN,
            "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
            "configmap-secret-scrubber-kubeconfig": real_kube.kubeconfig_text,
        },
    )
    kubeapi = submodule(mod, "edgeguard.kubeapi")
    kube = kubeapi.Client
    real_patch, answers = kube.patch, []

    def patch_after_someone_else(self, kind, namespace, name, body, content_type):
        if kind == "ConfigMap" and not answers:
            v1.patch_namespaced_config_map(name, namespace, {"data": {"added-meanwhile": "yes"}})
        try:
            return real_patch(self, kind, namespace, name, body, content_type)
        except kubeapi.KubeError as err:
            answers.append((err.status, err.reason))
            raise

    kube.patch = patch_after_someone_else
    status, body, _ = call(mod, "POST", {"namespace": ns, "name": "aws-creds"})
    assert status == 200 and body["configmaps"][0]["status"] == "moved", body
    assert answers == [(422, "the server rejected our request due to an error in our request")]
    assert v1.read_namespaced_config_map("aws-creds", ns).data == {"region": "eu-west-1", "added-meanwhile": "yes"}
