"""Cold start of each function: from process start until it answers, under the session's runtime.

``python -m bench coldstart`` (EDGEGUARD_RUNTIME=local|watchdog picks the runtime; default: the real
of-watchdog when local/components.py finds it). "Ready" is what local/launch.py waits for: the
function's own server accepts connections (and, under the watchdog, /_/health says OK). The first
answer here is an unauthenticated GET /, which every function refuses (401, 503, or 405 for node-enroll)
before it touches anything it imports lazily.

The cold start that counts against the target (<= 0.6 s) ends with the first *real* answer: an
authenticated, representative request (bench/workloads.py) through the local gateway, with the
function's secrets and Kubernetes API in place. bench/memory.py measures it with ``time_start`` and
prints it in its table.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from local import launch, stackfile

TARGET_S = 0.6


@dataclass(frozen=True)
class ColdStart:
    ready_s: float  # process start -> local/launch.py's readiness
    first_s: float  # process start -> the answer of the first request


def time_start(process: launch.FunctionProcess, answer: Callable[[], object], timeout: float = 60) -> ColdStart:
    """Start a stopped ``process`` and time it until ready, then until ``answer()`` (its first request) returns."""
    t = time.perf_counter()
    process.start().wait_ready(time.monotonic() + timeout)
    ready = time.perf_counter() - t
    answer()
    return ColdStart(ready, time.perf_counter() - t)


def summary(starts: list[ColdStart]) -> str:
    ready = [s.ready_s * 1000 for s in starts]
    first = [s.first_s * 1000 for s in starts]
    return (
        f"ready: median {statistics.median(ready):.0f} ms (min {min(ready):.0f}, max {max(ready):.0f}); "
        f"first answer: median {statistics.median(first):.0f} ms (max {max(first):.0f}) over {len(starts)} starts"
    )


def main(runs: int = 5) -> None:
    runtime = launch.Runtime()
    stack = stackfile.load()
    print(f"runtime: {runtime.describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        contexts = runtime.build_contexts(stack, tmp / "build")
        print(f"build contexts for {len(contexts)} functions: {(time.perf_counter() - t0) * 1000:.0f} ms")
        for name, fn in stack.functions.items():
            starts = []
            for i in range(runs):
                env = runtime.base_env(fn)
                env.update(
                    {
                        "EDGEGUARD_SECRETS_DIR": str(tmp / "no-secrets"),
                        "OPENFAAS_NAME": name,
                        "HOSTNAME": f"{name}-bench",
                        "PYTHONDONTWRITEBYTECODE": "1",
                        "spool_dir": str(tmp / f"spool-{name}-{i}"),
                    }
                )
                process = runtime.process(name, contexts[name], env, tmp / f"{name}-{i}.log", scratch=tmp)

                def unauthenticated_get(process=process):
                    status = requests.get(process.url + "/", timeout=30).status_code
                    assert status in (401, 405, 503), status

                try:
                    starts.append(time_start(process, unauthenticated_get))
                finally:
                    process.stop()
            print(f"{name:<26} {summary(starts)} (unauthenticated GET /)")
    print("cold start to the first real answer: see bench memory")
