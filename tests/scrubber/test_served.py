"""configmap-secret-scrubber served by the runtime of its image: of-watchdog in front of the template's index.py.

Its setting was ``mode``, which is also of-watchdog's own: a stack.yml with ``mode: report``
made the real watchdog panic at start-up ("unknown watchdog mode") and the function
never served. The setting is ``scrub_mode`` now.
"""

from __future__ import annotations

import os
import time

import pytest
import requests
import yaml

from local import components, stackfile
from tests.scrubber.conftest import FINGERPRINT_KEY, FN, TOKEN, configmap

WATCHDOG_SKIP = components.locate().watchdog_skip_reason()
ROOT = stackfile.ROOT
VALUE = "AKES20LNOA"  # the seed's access key id


def _stack_as_before_the_rename(tmp_path) -> stackfile.Stack:
    """The shipped stack.yml with the scrubber's setting under its old name, next to the real sources."""
    text = stackfile.STACK_FILE.read_text()
    assert "      scrub_mode: report\n" in text
    tmp_path.mkdir()
    (tmp_path / "stack.yml").write_text(text.replace("      scrub_mode: report\n", "      mode: report\n"))
    for top in ("functions", "edgeguard"):
        os.symlink(ROOT / top, tmp_path / top)
    return stackfile.load(tmp_path / "stack.yml")


def _secrets(kube_emulator):
    return {
        "configmap-secret-scrubber-token": TOKEN + "\n",
        "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY + "\n",
        "configmap-secret-scrubber-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict()),
    }


@pytest.mark.skipif(WATCHDOG_SKIP is not None, reason=WATCHDOG_SKIP or "")
def test_a_stack_yml_that_still_sets_mode_makes_the_real_watchdog_panic(serve_function, kube_emulator, tmp_path):
    old = _stack_as_before_the_rename(tmp_path / "old")
    with pytest.raises(RuntimeError) as failed:
        serve_function(FN, secrets=_secrets(kube_emulator), stack=old)
    assert "unknown watchdog mode" in str(failed.value)


def test_the_shipped_stack_yml_serves_a_report_and_scrub_mode_move_moves(serve_function, kube_emulator):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": VALUE, "region": "eu-west-1"}))
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    fn = serve_function(FN, secrets=_secrets(kube_emulator))
    r = requests.post(fn.url + "/?wait=1", json={"namespace": "demo", "name": "aws-creds"}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "report" and r.json()["configmaps"][0]["status"] == "would_move", r.json()
    fn.stop()
    moving = serve_function(
        FN, env={"scrub_mode": "move", "rollout_timeout_seconds": "5"}, secrets=_secrets(kube_emulator)
    )
    r = requests.post(
        moving.url + "/?wait=1", json={"namespace": "demo", "name": "aws-creds"}, headers=auth, timeout=30
    )
    assert r.status_code == 200 and r.json()["mode"] == "move", r.text
    assert r.json()["configmaps"][0]["status"] == "moved", r.json()
    assert VALUE not in moving.logs() and VALUE not in fn.logs()
    assert kube_emulator.get("secrets", "demo", "aws-creds-credentials") is not None


@pytest.mark.skipif(WATCHDOG_SKIP is not None, reason=WATCHDOG_SKIP or "")
def test_a_job_answered_202_runs_on_past_the_real_watchdogs_timeouts(serve_function, kube_emulator):
    """alert-forwarder's call gets 202 at once; the move goes on in the function after the response, past
    of-watchdog's exec_timeout and write_timeout (2 s here), and GET /jobs/<id> shows its result."""
    from .conftest import deployment, pod_spec
    from .test_handler import alert

    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": VALUE, "region": "eu-west-1"}))
    kube_emulator.seed(deployment("web", spec=pod_spec(env=True)))
    kube_emulator.hold_rollouts(True)  # the rollout wait keeps the job busy for rollout_timeout_seconds
    auth = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "Idempotency-Key": "5e1f0c9b7a2d4e6f8a0b1c2d3e4f5a6b",
    }
    fn = serve_function(
        FN,
        env={
            "scrub_mode": "move",
            "rollout_timeout_seconds": "6",
            "rollout_poll_seconds": "0.2",
            "exec_timeout": "2s",
            "write_timeout": "2s",
            "read_timeout": "2s",
        },
        secrets=_secrets(kube_emulator),
    )
    t0 = time.monotonic()
    r = requests.post(fn.url + "/", json=alert("aws-creds", "demo"), headers=auth, timeout=10)
    answered = time.monotonic() - t0
    assert r.status_code == 202 and answered < 2, (r.status_code, r.text, answered)
    job = r.json()["id"]
    # the same alert again (alert-forwarder retrying) is the same job
    again = requests.post(fn.url + "/", json=alert("aws-creds", "demo"), headers=auth, timeout=10)
    assert again.status_code == 202 and again.json()["id"] == job
    time.sleep(3)  # past exec_timeout and write_timeout: the job is still running in the function
    status = requests.get(f"{fn.url}/jobs/{job}", headers=auth, timeout=10).json()
    assert status["state"] == "running", status
    assert kube_emulator.get("secrets", "demo", "aws-creds-credentials") is not None  # step 1 is done
    deadline = time.monotonic() + 20
    while status["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
        status = requests.get(f"{fn.url}/jobs/{job}", headers=auth, timeout=10).json()
    out = status["result"]["configmaps"][0]
    assert status["state"] == "done" and out["status"] == "pending_rollout", status
    assert time.monotonic() - t0 > 6  # it waited the whole rollout_timeout, long after the 202
    # the rollout finishes; a new job (another alert) completes the move
    kube_emulator.hold_rollouts(False)
    auth["Idempotency-Key"] = "second-alert"
    r = requests.post(fn.url + "/?wait=1", json=alert("aws-creds", "demo"), headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["configmaps"][0]["status"] == "moved", r.text
    logs = fn.logs()
    assert VALUE not in logs and TOKEN not in logs
