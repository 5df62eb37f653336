"""configmap-secret-scrubber served by the runtime of its image: of-watchdog in front of the template's index.py.

Its setting was ``mode``, which is also of-watchdog's own: a stack.yml with ``mode: report``
made the real watchdog panic at start-up ("unknown watchdog mode") and the function
never served. The setting is ``scrub_mode`` now.
"""
from __future__ import annotations

import os

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
    return {"configmap-secret-scrubber-token": TOKEN + "\n",
            "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY + "\n",
            "configmap-secret-scrubber-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict())}


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
    r = requests.post(fn.url + "/", json={"namespace": "demo", "name": "aws-creds"}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "report" and r.json()["configmaps"][0]["status"] == "would_move", r.json()
    fn.stop()
    moving = serve_function(FN, env={"scrub_mode": "move", "rollout_timeout_seconds": "5"},
                            secrets=_secrets(kube_emulator))
    r = requests.post(moving.url + "/", json={"namespace": "demo", "name": "aws-creds"}, headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["mode"] == "move", r.text
    assert r.json()["configmaps"][0]["status"] == "moved", r.json()
    assert VALUE not in moving.logs() and VALUE not in fn.logs()
    assert kube_emulator.get("secrets", "demo", "aws-creds-credentials") is not None
