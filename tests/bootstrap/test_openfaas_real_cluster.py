"""`edgeguard-bootstrap openfaas` against a real kube-apiserver v1.24 (the launched control plane).

Real: kubectl (diff and apply of deploy/rbac/ and the rendered per-namespace templates), the API server's
RBAC objects, and the token controller that fills the ServiceAccount token Secrets bootstrap then turns into
kubeconfigs. Not real: faas-cli. `faas-cli secret create` needs an OpenFaaS gateway and there is none here,
so faas-cli is the bootstrap suite's recording fake (tests/bootstrap/fakecmd.py), and these tests read what it
was handed to store: that is what OpenFaaS would mount into the functions. The functions then run with those
kubeconfigs in tests/scrubber/test_real_rbac.py, tests/node_enroll/test_real_rbac.py and
tests/foundation/test_demo_real_cluster.py.
"""

from __future__ import annotations

import pytest
import yaml

from tests.realkube import (
    ALERT_FORWARDER_RIGHTS,
    FUNCTION_SA,
    SCRUBBER_GRANTED,
    SCRUBBER_IMMUTABLE,
    SCRUBBER_NOT_GRANTED,
    alert_forwarder_rights,
)

pytestmark = pytest.mark.cluster

NS = "openfaas-fn"


def test_every_secret_goes_to_faas_cli_and_the_kubeconfigs_are_the_service_accounts(bootstrapped):
    from edgeguard_bootstrap import secretstore

    created = {c[3] for c in bootstrapped.faas_calls() if c[1:3] == ["secret", "create"]}
    assert created == set(secretstore.ALL), bootstrapped.first_output
    cluster = bootstrapped.cluster
    for sa, secret in FUNCTION_SA.items():
        doc = yaml.safe_load(bootstrapped.kubeconfig(sa))
        server = doc["clusters"][0]["cluster"]
        assert server["server"] == cluster.host
        # the CA the token controller put into the token Secret is the API server's own
        import base64

        assert base64.b64decode(server["certificate-authority-data"]) == cluster.ca_pem
        token = doc["users"][0]["user"]["token"]
        review = cluster.token_review(token)
        assert review.get("authenticated") is True, review
        assert review["user"]["username"] == f"system:serviceaccount:{NS}:{sa}"
        assert token not in bootstrapped.first_output  # bootstrap never prints a credential
        # the node copy bootstrap keeps is the same kubeconfig
        assert (bootstrapped.root / "var/lib/edgeguard/secrets" / secret).read_text() == bootstrapped.kubeconfig(sa)


def test_rbac_is_applied_as_written_and_the_scrubber_may_write_only_where_it_was_given(bootstrapped):
    from kubernetes import client

    api = bootstrapped.cluster.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    assert {s.metadata.name for s in core.list_namespaced_service_account(NS).items} >= set(FUNCTION_SA)
    assert rbac.read_cluster_role("edgeguard:configmap-secret-scrubber").rules
    assert rbac.read_cluster_role("edgeguard-node-enroll").rules
    assert rbac.read_namespaced_role("edgeguard-node-enroll-bootstrap-tokens", "kube-system").rules
    assert rbac.read_namespaced_role("edgeguard-node-enroll-records", "edgeguard-enroll").rules
    write_role = "edgeguard:configmap-secret-scrubber"
    for ns in SCRUBBER_GRANTED:
        binding = rbac.read_namespaced_role_binding(write_role, ns)
        assert [(s.kind, s.namespace, s.name) for s in binding.subjects] == [
            ("ServiceAccount", NS, "configmap-secret-scrubber")
        ]
    assert write_role not in {r.metadata.name for r in rbac.list_namespaced_role_binding(SCRUBBER_NOT_GRANTED).items}
    # the opt-in for immutable ConfigMaps only where it was asked for
    assert {
        b.metadata.namespace
        for b in rbac.list_role_binding_for_all_namespaces().items
        if b.metadata.name == "edgeguard:configmap-secret-scrubber-immutable"
    } == {SCRUBBER_IMMUTABLE}


def test_the_alert_forwarder_kubeconfig_may_watch_its_two_secrets_by_name_and_read_no_other(bootstrapped):
    """What bootstrap builds for alert-forwarder (spool handover, per-node tokens) works on the real RBAC, with
    exactly the rights tests/alert_forwarder/test_kube_state.py proves its flows need."""
    from kubernetes import client

    api = bootstrapped.cluster.api_client(bootstrapped.kubeconfig("alert-forwarder"))
    assert alert_forwarder_rights(api) == ALERT_FORWARDER_RIGHTS
    admin = client.CoreV1Api(bootstrapped.cluster.api_client())
    # the handover Secret alert-forwarder.yaml declares is there for the function to update
    assert admin.read_namespaced_secret("alert-forwarder-spool-handover", NS).type == "Opaque"


def test_a_second_run_against_the_real_api_server_changes_nothing(bootstrapped):
    """kubectl diff on the real server must see the applied manifests (and the token Secrets the controller
    filled) as unchanged, or every run would re-apply."""
    before = bootstrapped.stored()
    code, out = bootstrapped.run()
    assert code == 0, out
    assert out.rstrip().endswith("no changes"), out
    assert bootstrapped.stored() == before
