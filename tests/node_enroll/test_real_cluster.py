"""node-enroll against a real kube-apiserver (tests/realkube.py: the launched v1.24 control plane, or your
cluster with KUBECONFIG and EDGEGUARD_REAL_CLUSTER=1), with the admin's kubeconfig as the function's.

Proves on a live API server what the emulator cannot: the kube-apiserver's bootstrap-token
authenticator accepts the token node-enroll mints, rejects it once revoked, and (on k3s) the CA hash
equals sha256 of what GET /cacerts serves. Who a token is comes from a TokenReview (authentication.k8s.io/v1,
served on every version) made by the admin: SelfSubjectReview only exists from 1.27. Creates only
bootstrap-token Secrets and node-enroll's records (namespace edgeguard-enroll, created if missing) labelled
app.kubernetes.io/managed-by=edgeguard-node-enroll and removes them again. The least-privilege run is
tests/node_enroll/test_real_rbac.py.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pytest
import requests

from tests.node_enroll import k3s_model
from tests.node_enroll.helpers import admin, call, enroll, enroll_doc
from tests.realkube import wait_authenticated

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(real_kube):
    from kubernetes import client
    from kubernetes import config as kconfig

    cfg = client.Configuration()
    kconfig.load_kube_config(config_file=str(real_kube.kubeconfig), client_configuration=cfg)
    if not cfg.ssl_ca_cert:
        pytest.skip("the kubeconfig has no cluster CA data to hash")
    api = client.CoreV1Api(client.ApiClient(cfg))
    try:  # the records namespace, as `kubectl apply -f deploy/rbac/node-enroll.yaml` creates it
        api.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edgeguard-enroll"}})
    except client.rest.ApiException as exc:
        if exc.status != 409:
            raise
    yield cfg, api, real_kube
    for ns in ("kube-system", "edgeguard-enroll"):
        managed = api.list_namespaced_secret(ns, label_selector="app.kubernetes.io/managed-by=edgeguard-node-enroll")
        for s in managed.items:
            if (s.metadata.annotations or {}).get("node-enroll.edgeguard.io/hostname", "").startswith("edgeguard-e2e-"):
                api.delete_namespaced_secret(s.metadata.name, ns)


def test_real_api_server_accepts_the_minted_token_and_refuses_it_after_revocation(cluster, enroll_fn, make_event):
    cfg, api, kube = cluster
    server = os.environ.get("EDGEGUARD_K3S_SERVER_URL", cfg.host)
    fn = enroll_fn(
        env={"k3s_ca_file": "", "k3s_server_url": server}, secrets={"node-enroll-kubeconfig": kube.kubeconfig_text}
    )
    host = f"edgeguard-e2e-{secrets.token_hex(3)}"
    status, _, doc = enroll(fn, make_event, enroll_doc(hostname=host, machine_id=secrets.token_hex(16)))
    assert status == 201, doc
    ca_pem = Path(cfg.ssl_ca_cert).read_bytes()
    raw = api.read_namespaced_secret(f"bootstrap-token-{doc['token_id']}", "kube-system")
    secret = {
        "metadata": {"name": raw.metadata.name, "namespace": raw.metadata.namespace},
        "type": raw.type,
        "data": raw.data,
    }
    assert k3s_model.rejection(secret, doc["token"], ca_pem) is None

    bearer = doc["token"].split("::", 1)[1]
    review = kube.token_review(bearer)
    assert review.get("authenticated") is True, review
    user = review["user"]
    assert user["username"] == f"system:bootstrap:{doc['token_id']}"
    # the group k3s's node-token bootstrappers are bound by, plus the one every bootstrap token gets
    assert {"system:bootstrappers", "system:bootstrappers:k3s:default-node-token"} <= set(user["groups"]), user

    status, _, res = call(fn, make_event, method="DELETE", path=f"/nodes/{host}", headers=admin())
    assert status == 200 and res["revoked"] == [doc["token_id"]]
    refused, after = wait_authenticated(kube, bearer, want=False)
    assert refused is False, f"still authenticated {after:.0f}s after revocation"
    print(f"revoked bootstrap token refused after {after:.1f}s")
    # and the bearer itself is refused by the API server
    r = requests.get(
        f"{cfg.host}/api", headers={"Authorization": f"Bearer {bearer}"}, verify=cfg.ssl_ca_cert, timeout=15
    )
    assert r.status_code == 401, r.text


def test_ca_hash_matches_k3s_cacerts(cluster, enroll_fn, make_event):
    cfg, _, kube = cluster
    r = requests.get(f"{cfg.host}/cacerts", verify=cfg.ssl_ca_cert, timeout=15)
    if r.status_code != 200:
        pytest.skip("k3s only: this API server serves no /cacerts (the k3s supervisor does)")
    fn = enroll_fn(env={"k3s_ca_file": ""}, secrets={"node-enroll-kubeconfig": kube.kubeconfig_text})
    status, _, doc = enroll(
        fn, make_event, enroll_doc(hostname=f"edgeguard-e2e-{secrets.token_hex(3)}", machine_id=secrets.token_hex(16))
    )
    assert status == 201, doc
    assert doc["ca_hash"] == hashlib.sha256(r.content).hexdigest()
