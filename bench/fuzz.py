"""The property tests (marked ``fuzz``) with the bench profile: >= 2,000 generated requests per route.

``python -m bench fuzz`` (part of ``make bench``) runs ``pytest -m fuzz`` with
EDGEGUARD_HYPOTHESIS_PROFILE=bench and prints, per route, how many requests the tests sent (each
fuzz test counts its requests with ``tests.fuzzing.fuzz_route``), against the target. A route under
the target is named; a failing test fails the bench.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2000


class FuzzFailed(RuntimeError):
    pass


def run(args: list[str] | None = None, *, profile: str = "bench", timeout: float = 3600) -> tuple[int, dict, str]:
    """``pytest -m fuzz [args]`` under ``profile``: (pytest's exit code, requests per route, its output)."""
    with tempfile.TemporaryDirectory(prefix="edgeguard-fuzz-") as tmp:
        counts_file = Path(tmp) / "counts.json"
        env = dict(os.environ, EDGEGUARD_HYPOTHESIS_PROFILE=profile, EDGEGUARD_FUZZ_COUNTS=str(counts_file))
        cmd = [sys.executable, "-m", "pytest", "-m", "fuzz", "-p", "no:cacheprovider", *(args or [])]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    return proc.returncode, counts, proc.stdout + proc.stderr


def report(counts: dict, target: int = TARGET) -> str:
    if not counts:
        return "no fuzz test counted a request (tests.fuzzing.fuzz_route)"
    width = max(len(k) for k in counts)
    lines = [f"{'route':<{width}}  requests"]
    for route, n in sorted(counts.items()):
        lines.append(f"{route:<{width}}  {n:>8}  {'ok' if n >= target else f'UNDER the {target} target'}")
    return "\n".join(lines)


def main() -> None:
    code, counts, out = run()
    if code == 5:
        print("no test is marked fuzz yet")
        return
    print(f"pytest -m fuzz with EDGEGUARD_HYPOTHESIS_PROFILE=bench: exit {code}; " + out.strip().splitlines()[-1])
    print(report(counts))
    if code != 0:
        print(out[-4000:])
        raise FuzzFailed(f"pytest -m fuzz exited {code}")
    under = [r for r, n in counts.items() if n < TARGET]
    if under:
        raise FuzzFailed(f"{len(under)} route(s) under {TARGET} requests: {', '.join(sorted(under))}")
