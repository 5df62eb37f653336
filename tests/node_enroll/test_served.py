"""node-enroll served over HTTP by the session's runtime (the real of-watchdog when its tools are found)."""

from __future__ import annotations

import time

import pytest
import requests
import yaml

from tests.node_enroll.helpers import BASE_ENV, KEY, enroll_doc, records_of, seed_records_namespace, signed


@pytest.fixture
def served(serve_function, kube_emulator):
    seed_records_namespace(kube_emulator)
    fn = serve_function(
        "node-enroll",
        env=BASE_ENV,
        secrets={
            "node-enroll-key": KEY + "\n",
            "node-enroll-admin-token": "admin-xxxxxxxx",
            "node-enroll-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict()),
        },
    )
    return fn, kube_emulator


def test_a_captured_enrollment_replayed_after_a_restart_is_refused(served):
    """issue 17 §1 as reported: the same bytes, after the function restarted, got 201 and a new join token."""
    fn, emu = served
    body, headers = signed(enroll_doc(), timestamp=int(time.time()) + 20)
    first = requests.post(fn.url + "/enroll", data=body, headers=headers, timeout=30)
    assert first.status_code == 201, first.text
    fn.restart()
    again = requests.post(fn.url + "/enroll", data=body, headers=headers, timeout=30)
    assert again.status_code == 401 and "replayed" in again.json()["error"], again.text
    assert len(records_of(emu)) == 1
    assert "Traceback" not in fn.logs()
