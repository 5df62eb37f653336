"""`make up` (python -m local.gateway) serves in the foreground and stops cleanly on SIGTERM."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from local import gateway

ROOT = Path(__file__).resolve().parents[2]


def test_gateway_serves_until_sigterm_and_prints_how_to_curl_it():
    port = gateway.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "local.gateway", "--port", str(port), "--kube", "none"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise AssertionError("gateway did not come up")
        r = requests.post(f"http://127.0.0.1:{port}/function/audit-ingest", data=b"{}",
                          headers={"Content-Type": "application/json"})
        assert r.headers["Content-Type"].startswith("application/json")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert f"http://127.0.0.1:{port}" in out and "curl" in out
        assert "audit-ingest-token)" in out  # tells where the token is, never the token itself
        runtime = gateway.launch.Runtime()
        assert f"  runtime: {'real: of-watchdog' if runtime.watchdog else 'stand-in: local/runtime.py'}" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_functions_die_with_a_killed_gateway(tmp_path):
    port = gateway.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "local.gateway", "--port", str(port), "--kube", "none"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/system/functions", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        children = _descendants(proc.pid)  # under of-watchdog: the watchdogs and their python index.py
        assert children, "the gateway should have started function processes"
        if gateway.launch.Runtime().watchdog:
            assert any(_cmdline(c) == "python index.py" for c in children), [_cmdline(c) for c in children]
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() and _state(c) != "Z" for c in children):
            time.sleep(0.1)
        assert not [c for c in children if Path(f"/proc/{c}").exists() and _state(c) != "Z"]
    finally:
        if proc.poll() is None:
            proc.kill()


def _descendants(pid: int) -> list[str]:
    found, frontier = [], {pid}
    while frontier:
        kids = [p.parent.name for p in Path("/proc").glob("[0-9]*/stat") if _ppid(p) in frontier]
        found += kids
        frontier = {int(k) for k in kids}
    return found


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _ppid(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
