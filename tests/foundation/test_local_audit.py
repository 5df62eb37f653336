"""`make up`: requests to the in-memory API reach audit-ingest as k3s's audit webhook would send them."""

import shutil
import subprocess
import time

import pytest
import requests
import yaml

from local import gateway


@pytest.fixture
def stack(tmp_path):
    ls = gateway.LocalStack(
        gateway.free_port(),
        state_dir=tmp_path / "state",
        kube="emulator",
        audit_webhook=True,
        functions=["audit-ingest", "alert-forwarder"],
    )
    ls.start()
    yield ls
    ls.stop()


def test_a_configmap_with_a_key_created_through_the_api_raises_the_falco_alert(stack):
    from kubernetes import client

    assert stack.kubeconfig_path.is_file()
    core = client.CoreV1Api(stack.kube_api_client())
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "aws-creds"}, "data": {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"}}
    )
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
    # as the API server's client-go does: over https through the TLS front, the token in the Authorization header
    front = stack.tls_front
    assert front is not None and front.with_authorization > 0 and front.without_authorization == 0
    assert front.sni_seen and set(front.sni_seen) == {"audit-ingest.edgeguard.internal"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_against_make_up_is_authenticated_and_audited_as_the_admin(stack):
    """Issue 15 §2: the in-memory API serves https with its CA in the kubeconfig, so kubectl sends its token."""
    kubeconfig = yaml.safe_load(stack.kubeconfig_path.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
    assert kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
    proc = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(stack.kubeconfig_path),
            "create",
            "configmap",
            "app-cfg",
            "--from-literal",
            "threads=4",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    events = [
        e
        for e in stack.emulator.audit_events
        if e["verb"] == "create" and e.get("objectRef", {}).get("name") == "app-cfg"
    ]
    assert events and {e["user"]["username"] for e in events} == {"system:admin"}


def test_the_in_memory_api_holds_the_functions_rbac_objects_as_bootstrap_would_apply_them(stack):
    emu = stack.emulator
    assert emu.get("namespaces", None, "edgeguard-enroll") is not None
    assert emu.get("serviceaccounts", "openfaas-fn", "node-enroll") is not None
    assert emu.get("serviceaccounts", "openfaas-fn", "configmap-secret-scrubber") is not None
