"""alert-forwarder's state on the real kube-apiserver (v1.24), with exactly the rights of
deploy/rbac/alert-forwarder.yaml: per-node alert tokens (issue 12 §7) and the spool handover (issue 11 §3)."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

import pytest

pytestmark = pytest.mark.cluster


def node_token() -> tuple[str, str]:
    """What node-enroll mints: 32 random bytes base64url, stored as sha256:<hex>."""
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return token, "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "Content-Type": "application/json"}


def wait(pred, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_per_node_tokens_are_accepted_revoked_within_the_ttl_and_the_fleet_token_keeps_working(
        forwarder_kube, load_handler, h):
    pi1, pi1_hash = node_token()
    pi2, pi2_hash = node_token()
    forwarder_kube.set_node_tokens({"pi-01": pi1_hash, "pi-02": pi2_hash})
    mod = load_handler(env={"node_tokens_ttl": "5s"},
                       secrets={"alert-forwarder-kubeconfig": forwarder_kube.kubeconfig})
    wait(lambda: mod.NODE_TOKENS.status()["nodes"] == 2, "the node tokens to be read")
    al = h.falco_alert(priority="Warning")
    assert h.call(mod, "POST", "/", al, headers=basic("pi-01", pi1))["statusCode"] == 202
    assert h.call(mod, "POST", "/", al, headers=basic("pi-02", pi1))["statusCode"] == 401  # another node's token
    assert h.call(mod, "POST", "/", al, headers=basic("pi-03", pi1))["statusCode"] == 401  # unknown node
    assert h.call(mod, "POST", "/", al, headers=basic("falco", h.TOKEN))["statusCode"] == 202  # the fleet token
    assert h.call(mod, "POST", "/", al, headers={"Authorization": f"Bearer {pi1}",
                                                "Content-Type": "application/json"})["statusCode"] == 401
    # Node tokens are for the alert input only.
    assert h.call(mod, "GET", "/metrics", headers=basic("pi-01", pi1))["statusCode"] == 401
    revoked_at = time.monotonic()
    forwarder_kube.set_node_tokens({"pi-02": pi2_hash})  # node-enroll revokes pi-01: its key goes
    wait(lambda: h.call(mod, "POST", "/", al, headers=basic("pi-01", pi1))["statusCode"] == 401,
         "pi-01's token to be refused", timeout=5)
    took = time.monotonic() - revoked_at
    assert took < 5, took  # within the TTL (the watch makes it about a second)
    assert h.call(mod, "POST", "/", al, headers=basic("pi-02", pi2))["statusCode"] == 202
    assert h.call(mod, "POST", "/", al, headers=basic("falco", h.TOKEN))["statusCode"] == 202
    text = h.call(mod, "GET", "/metrics")["body"]
    assert 'edgeguard_alert_forwarder_senders_total{sender="node"} 2' in text
    assert 'edgeguard_alert_forwarder_senders_total{sender="fleet"} 2' in text
    st = json.loads(h.call(mod, "GET", "/")["body"])["node_tokens"]
    assert st["nodes"] == 1 and st["in_sync"] and pi2_hash not in json.dumps(st)


def test_node_tokens_fail_closed_when_the_secret_cannot_be_read(forwarder_kube, load_handler, h):
    """With a credential the API server refuses, node tokens are never accepted; the fleet token still is."""
    pi1, pi1_hash = node_token()
    forwarder_kube.set_node_tokens({"pi-01": pi1_hash})
    bad = forwarder_kube.kubeconfig.replace(forwarder_kube.token, "not-a-valid-token")
    mod = load_handler(env={"node_tokens_ttl": "1s"}, secrets={"alert-forwarder-kubeconfig": bad})
    time.sleep(1.0)
    al = h.falco_alert()
    assert h.call(mod, "POST", "/", al, headers=basic("pi-01", pi1))["statusCode"] == 401
    assert h.call(mod, "POST", "/", al, headers=basic("falco", h.TOKEN))["statusCode"] == 202
    st = json.loads(h.call(mod, "GET", "/")["body"])["node_tokens"]
    assert st["in_sync"] is False and "401" in st["last_error"]


def test_the_identity_reads_no_other_secret(forwarder_kube):
    """Least privilege, shown on the real RBAC: list/watch only by these names, no get, nothing else."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(forwarder_kube.cluster.api_client(forwarder_kube.kubeconfig))

    def status(call, *a, **kw):
        try:
            call(*a, _preload_content=False, **kw)
            return 200
        except ApiException as exc:
            return exc.status

    assert status(core.list_namespaced_secret, "openfaas-fn",
                  field_selector="metadata.name=alert-forwarder-spool-handover") == 200
    assert status(core.list_namespaced_secret, "edgeguard-enroll",
                  field_selector="metadata.name=edgeguard-node-alert-tokens") == 200
    assert status(core.read_namespaced_secret, "alert-forwarder-spool-handover", "openfaas-fn") == 403  # no get
    assert status(core.list_namespaced_secret, "openfaas-fn") == 403
    assert status(core.list_namespaced_secret, "openfaas-fn",
                  field_selector="metadata.name=alert-forwarder-sa-token") == 403
    assert status(core.list_namespaced_secret, "kube-system") == 403
    assert status(core.delete_namespaced_secret, "alert-forwarder-spool-handover", "openfaas-fn") == 403
    assert status(core.create_namespaced_secret, "openfaas-fn",
                  {"metadata": {"name": "x"}, "type": "Opaque"}) == 403
    assert status(core.list_namespaced_config_map, "openfaas-fn") == 403
