"""`make up KUBE=real`: the shared tools' real control plane instead of the in-memory API (issue 15 §2).

The API server's audit webhook posts over https through the TLS front (client-go sends the token only over
https), so the ConfigMap created with the admin kubeconfig reaches audit-ingest, authenticated.
"""

from __future__ import annotations

import socket
import time

import pytest
import requests

from local import gateway, realcluster

pytestmark = [pytest.mark.cluster, pytest.mark.own_control_plane, pytest.mark.slow]
MISSING = realcluster.missing()


@pytest.mark.skipif(bool(MISSING), reason="needs real component: " + " and ".join(MISSING))
def test_make_up_kube_real_runs_the_control_plane_and_its_audit_webhook_reaches_audit_ingest(tmp_path, monkeypatch):
    from kubernetes import client

    monkeypatch.delenv("KUBECONFIG", raising=False)
    # Another control plane on the launcher's default port (a second make up, or make test beside it) must not
    # stop this one: hold 16443 for the whole run.
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 16443))
        busy.listen()
    except OSError:
        pass  # already taken by someone else, which proves the same
    stack = gateway.LocalStack(
        gateway.free_port(),
        state_dir=tmp_path / "state",
        kube="real",
        audit_webhook=True,
        functions=["audit-ingest", "alert-forwarder"],
    )
    with stack:
        assert stack.kube_description.startswith("real kube-apiserver v1.24") and stack.emulator is None
        assert stack.kubeconfig_path == tmp_path / "state" / "kube" / "admin.kubeconfig"
        api = stack.kube_api_client()
        client.CoreV1Api(api).create_namespaced_config_map(
            "default", {"metadata": {"name": "aws-creds"}, "data": {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"}}
        )
        # the install manifests were applied, as bootstrap would
        assert client.CoreV1Api(api).read_namespace("edgeguard-enroll").metadata.name == "edgeguard-enroll"
        headers = {"Authorization": f"Bearer {stack.secret('audit-ingest-token')}"}
        deadline, counters = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            counters = requests.get(f"{stack.url}/function/audit-ingest", headers=headers, timeout=5).json()["counters"]
            if counters.get("alerts", 0) > 0:
                break
            time.sleep(0.5)
        assert counters.get("alerts", 0) > 0, counters
        front = stack.tls_front
        assert front.with_authorization > 0 and front.without_authorization == 0
    busy.close()
