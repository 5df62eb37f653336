"""`make demo` plays every seed scenario, reports each plainly, stops what it started and exits 0."""

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from local import gateway

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # the whole demo, end to end (~20 s)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    port, state = gateway.free_port(), tmp_path_factory.mktemp("demo-state")
    # `make demo` as README says, with a free port and a folder of its own
    proc = subprocess.run(
        ["make", "-s", "demo", f"PORT={port}", f"STATE_DIR={state}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return port, proc, state


def test_demo_reports_every_scenario_and_cleans_up(demo):
    port, proc, state = demo
    out = proc.stdout
    assert "Summary" in out, out + proc.stderr
    summary = out.split("Summary", 1)[1]
    outcomes = re.findall(r"^\s+(\d)\. (ok|not built yet|FAILED\S*)\s", summary, re.M)
    assert [n for n, _ in outcomes] == ["1", "2", "3", "4"], summary
    # Every function is built: each scenario must succeed, none may say "not built yet".
    assert [o for _, o in outcomes] == ["ok"] * 4, summary
    assert "Traceback" not in out and "Traceback" not in proc.stderr
    with socket.socket() as s:  # the gateway is gone
        s.bind(("127.0.0.1", port))
    marker = f"{state}/build"
    leftovers = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:  # the stand-in names its context on the command line; the watchdog and index.py run inside it
            if marker.encode() in (proc_dir / "cmdline").read_bytes() or os.readlink(proc_dir / "cwd").startswith(
                marker
            ):
                leftovers.append(proc_dir.name)
        except OSError:
            pass
    assert not leftovers, f"function processes outlived the demo: {leftovers}"
    runtime = gateway.launch.Runtime()
    assert f"runtime     {runtime.describe()}" in out
    # Under the real runtime these are the watchdogs' own logs, request lines included: no token may be there.
    logs = {p.name: p.read_text(errors="replace") for p in (state / "logs").glob("*.log")}
    functions = {"audit-ingest.log", "alert-forwarder.log", "configmap-secret-scrubber.log", "node-enroll.log"}
    assert set(logs) == functions | {"gateway.log", "queue-worker.log"}
    if runtime.watchdog:
        assert all(
            re.search(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (POST|GET|DELETE) /", logs[name], re.M) for name in functions
        ), "the watchdog logs every request line"
    # The gateway logs every call as the real one does (and the queue-worker's calls through it).
    assert re.search(
        r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d Forwarded \[POST\] to /function/audit-ingest - \[200\] - "
        r"\d+\.\d{4}s$",
        logs["gateway.log"],
        re.M,
    ), logs["gateway.log"][:2000]


def test_demo_writes_no_secret_value_to_any_platform_log(demo):
    """The gateway's access log, the queue-worker's and every watchdog's: what `kubectl logs` shows an operator."""
    _, proc, _ = demo
    assert "LEAK" not in proc.stdout, proc.stdout.split("Summary", 1)[-1]
    assert re.search(
        r"^  no secret value in any platform log \(.*gateway\.log.*queue-worker\.log.*\)$", proc.stdout, re.M
    ), proc.stdout[-2000:]
    assert proc.returncode == 0
