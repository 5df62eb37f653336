"""`make demo` plays every seed scenario, reports each plainly, stops what it started and exits 0."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from local import gateway

ROOT = Path(__file__).resolve().parents[2]


def test_demo_reports_every_scenario_and_cleans_up(tmp_path):
    port = gateway.free_port()
    proc = subprocess.run([sys.executable, "-m", "local.demo", "--port", str(port)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    summary = out.split("Summary", 1)[1]
    outcomes = re.findall(r"^\s+(\d)\. (ok|not built yet|FAILED\S*)\s", summary, re.M)
    assert [n for n, _ in outcomes] == ["1", "2", "3", "4"], summary
    # Every function is built: each scenario must succeed, none may say "not built yet".
    assert [o for _, o in outcomes] == ["ok"] * 4, summary
    assert "Traceback" not in out and "Traceback" not in proc.stderr
    with socket.socket() as s:  # the gateway is gone
        s.bind(("127.0.0.1", port))
    marker = f"{ROOT}/.local-state/build"
    leftovers = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:  # the stand-in names its context on the command line; the watchdog and index.py run inside it
            if marker.encode() in (proc_dir / "cmdline").read_bytes() or os.readlink(proc_dir / "cwd").startswith(marker):
                leftovers.append(proc_dir.name)
        except OSError:
            pass
    assert not leftovers, f"function processes outlived the demo: {leftovers}"
    runtime = gateway.launch.Runtime()
    assert f"runtime     {runtime.describe()}" in out
    # Under the real runtime these are the watchdogs' own logs, request lines included: no token may be there.
    logs = {p.name: p.read_text(errors="replace") for p in (ROOT / ".local-state" / "logs").glob("*.log")}
    assert set(logs) == {"audit-ingest.log", "alert-forwarder.log", "configmap-secret-scrubber.log", "node-enroll.log"}
    if runtime.watchdog:
        assert all(re.search(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (POST|GET|DELETE) /", text, re.M)
                   for text in logs.values()), "the watchdog logs every request line"
    for secret in (ROOT / ".local-state" / "secrets").iterdir():
        value = secret.read_text().strip()
        if value and (secret.name.endswith(("-token", "-key")) or secret.name == "basic-auth-password"):
            leaked = [name for name, text in logs.items() if value in text]
            assert not leaked, f"secret {secret.name} appears in {leaked}"
