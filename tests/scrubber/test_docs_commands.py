"""The commands of docs/configmap-secret-scrubber.md "Calling it", run as written against `make up`'s stack.

The block runs in bash from a folder whose `.local-state` is the stack's state folder, with the real faas-cli
on PATH; only the gateway's port differs (127.0.0.1:8080 may be taken here), in the URLs and OPENFAAS_URL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from local import components, gateway, stackfile

from .conftest import FN, configmap

DOC = stackfile.ROOT / "docs" / "configmap-secret-scrubber.md"
MARK = "`tests/scrubber/test_docs_commands.py` runs this block as written"


def block() -> str:
    text = DOC.read_text()
    after = text[text.index(MARK) :]
    return re.search(r"```sh\n(.*?)```", after, re.S).group(1)


def test_the_docs_block_is_the_one_this_test_runs():
    script = block()
    assert "faas-cli invoke" in script and "/jobs/$JOB" in script and "/metrics" in script
    assert ".local-state/8080/secrets/configmap-secret-scrubber-token" in script and ".secrets/" not in script.replace(
        ".local-state/8080/secrets/", ""
    )


def test_the_calling_it_commands_work_as_written_against_make_up(tmp_path, monkeypatch):
    tools = components.locate()
    faas_cli = getattr(tools, "faas_cli", None)
    if not faas_cli or not os.access(str(faas_cli), os.X_OK):
        pytest.skip("needs real component: faas-cli (EDGEGUARD_TOOLS / EDGEGUARD_FAAS_CLI)")
    if shutil.which("curl") is None:
        pytest.skip("needs real component: curl (on PATH)")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    stack = gateway.LocalStack(port=gateway.free_port(), state_dir=tmp_path / ".local-state" / "8080", functions=[FN])
    stack.start()
    try:
        stack.emulator.seed(
            configmap("aws-creds", {"aws_access_key_id": "AKES20LNOA", "region": "eu-west-1"}, ns="default")
        )
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "faas-cli").symlink_to(faas_cli)
        script = "set -euo pipefail\n" + block().replace("127.0.0.1:8080", f"127.0.0.1:{stack.port}")
        env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", OPENFAAS_URL=stack.url, HOME=str(tmp_path))
        run = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        out = run.stdout
        docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        reports = [d for d in docs if "configmaps" in d]
        # the GET report, the ?wait=1 job and the two faas-cli calls; the job status holds the sweep's result
        assert len(reports) == 4, out
        for d in reports:
            assert [c["status"] for c in d["configmaps"]] == ["would_move"], d
        (job,) = [d for d in docs if "state" in d]
        assert job["result"]["configmaps"][0]["status"] == "would_move" or job["state"] in ("queued", "running")
        assert "edgeguard_configmap_secret_scrubber_requests_total" in out
        assert not any("error" in d for d in docs), out
        assert "AKES20LNOA" not in out
    finally:
        stack.stop()
