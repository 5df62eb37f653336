"""edgeguard-bootstrap on a simulated node: how long a plan and a run take, and the launcher's memory.

The node is the test suite's fake (recording commands, loopback gateway, --root in a tmp dir), so the
figures are bootstrap's own overhead plus ~20 ms per fake command; real kubectl/helm calls take longer.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _fixtures():
    spec = importlib.util.spec_from_file_location("bootstrap_test_fixtures", REPO / "tests/bootstrap/conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _node(fx, tmp: Path):
    handler = type("Gateway", (fx._Gateway,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    node = fx.Node(tmp, f"http://127.0.0.1:{server.server_address[1]}")
    handler.node = node
    return node, server


def _timed(node, *args) -> tuple[float, int]:
    node.clear_calls()
    t0 = time.perf_counter()
    code, out = node.run(*args)
    elapsed = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"bootstrap {' '.join(args)} exited {code}:\n{out[-2000:]}")
    return elapsed, len(node.calls())


def main() -> None:
    fx = _fixtures()
    with tempfile.TemporaryDirectory() as d:
        node, server = _node(fx, Path(d))
        try:
            plan, n_plan = _timed(node, "all", "--dry-run")
            run, n_run = _timed(node, "all", "--yes", "--check-timeout", "10")
            again, n_again = _timed(node, "all", "--yes")
            print(f"all --dry-run (fresh root): {plan * 1000:.0f} ms, {n_plan} commands (read-only)")
            print(f"all (first run, fake node): {run * 1000:.0f} ms, {n_run} commands")
            print(f"all (second run, no changes): {again * 1000:.0f} ms, {n_again} commands")
            env = dict(node.env(), PATH=f"{node.bin}:/usr/bin:/bin")
            argv = [
                sys.executable,
                "-S",
                str(REPO / "bootstrap/edgeguard-bootstrap"),
                "all",
                "--dry-run",
                "--root",
                str(node.root),
                "--gateway",
                node.gateway,
                "--repo",
                str(node.repo),
            ]
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            print(
                f"launcher `python3 -S edgeguard-bootstrap all --dry-run`: {wall * 1000:.0f} ms wall, "
                f"peak RSS {usage.ru_maxrss / 1024:.1f} MiB (largest of bootstrap and its fake children)"
            )
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
