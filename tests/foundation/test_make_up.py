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
        deadline = time.monotonic() + 60
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
    finally:
        if proc.poll() is None:
            proc.kill()
