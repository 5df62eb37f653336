"""`make up`: requests to the in-memory API reach audit-ingest as k3s's audit webhook would send them."""
import time

import pytest
import requests

from local import gateway
from tests import leaks


@pytest.fixture
def stack(tmp_path):
    ls = gateway.LocalStack(gateway.free_port(), state_dir=tmp_path / "state", kube="emulator", audit_webhook=True,
                            functions=["audit-ingest", "alert-forwarder"])
    ls.start()
    yield ls
    ls.stop()


@pytest.mark.xfail(strict=True, reason=leaks.AUDIT_HANDOFF)
def test_a_configmap_with_a_key_created_through_the_api_raises_the_falco_alert(stack):
    from kubernetes import client

    assert stack.kubeconfig_path.is_file()
    core = client.CoreV1Api(stack.kube_api_client())
    core.create_namespaced_config_map("default", {"metadata": {"name": "aws-creds"},
                                                  "data": {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"}})
    headers = {"Authorization": f"Bearer {stack.secret('audit-ingest-token')}"}
    deadline = time.monotonic() + 20
    counters = {}
    while time.monotonic() < deadline:
        counters = requests.get(f"{stack.url}/function/audit-ingest", headers=headers, timeout=5).json()["counters"]
        if counters.get("alerts", 0) > 0:
            break
        time.sleep(0.2)
    assert counters.get("events", 0) > 0, counters
    assert counters.get("alerts", 0) > 0, counters


def test_the_in_memory_api_holds_the_functions_rbac_objects_as_bootstrap_would_apply_them(stack):
    emu = stack.emulator
    assert emu.get("namespaces", None, "edgeguard-enroll") is not None
    assert emu.get("serviceaccounts", "openfaas-fn", "node-enroll") is not None
    assert emu.get("serviceaccounts", "openfaas-fn", "configmap-secret-scrubber") is not None
