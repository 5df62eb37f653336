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

from .conftest import FINGERPRINT_KEY, FN, TOKEN, deployment, pod_spec

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


def test_seed_configmap_moves_on_a_real_cluster_and_the_deployment_rolls_out_from_the_secret(cluster_ns,
                                                                                              load_function,
                                                                                              call, real_kube):
    from kubernetes import client

    api, ns = cluster_ns
    v1, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    v1.create_namespaced_config_map(ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": "aws-creds"},
                                         "data": {"aws_access_key_id": "AKES20LNOA", "region": "eu-west-1"}})
    spec = pod_spec(env=True, env_from=True, volume=True)
    spec["containers"][0].update(image="busybox:1.36", command=["sh", "-c", "test -n \"$CRED\" && sleep 3600"])
    apps.create_namespaced_deployment(ns, deployment("web", ns=ns, spec=spec, replicas=1))
    mod = load_function(FN, env={"mode": "move", "rollout_timeout_seconds": "90", "rollout_poll_seconds": "2",
                                 "rate_limit_per_minute": "1000"},
                        secrets={"configmap-secret-scrubber-token": TOKEN,
                                 "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
                                 "configmap-secret-scrubber-kubeconfig": real_kube.kubeconfig_text})
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

