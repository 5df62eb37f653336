"""Cold start of each function: from process start until it answers, under the session's runtime.

``python -m bench coldstart`` (EDGEGUARD_RUNTIME=local|watchdog picks the runtime; default: the real
of-watchdog when local/components.py finds it). "Ready" is what local/launch.py waits for: the
function's own server accepts connections (and, under the watchdog, /_/health says OK). The first
answer is an unauthenticated GET /, which every function refuses (401, 503, or 405 for node-enroll).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import requests

from local import launch, stackfile


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
            ready, first = [], []
            for i in range(runs):
                env = runtime.base_env(fn)
                env.update({"EDGEGUARD_SECRETS_DIR": str(tmp / "no-secrets"), "OPENFAAS_NAME": name,
                            "HOSTNAME": f"{name}-bench", "PYTHONDONTWRITEBYTECODE": "1",
                            "spool_dir": str(tmp / f"spool-{name}-{i}")})
                process = runtime.process(name, contexts[name], env, tmp / f"{name}-{i}.log", scratch=tmp)
                t = time.perf_counter()
                try:
                    process.start().wait_ready(time.monotonic() + 60)
                    ready.append(time.perf_counter() - t)
                    status = requests.get(process.url + "/", timeout=30).status_code
                    first.append(time.perf_counter() - t)
                    assert status in (401, 405, 503), status
                finally:
                    process.stop()
            print(f"{name:<26} ready: median {statistics.median(ready) * 1000:.0f} ms "
                  f"(min {min(ready) * 1000:.0f}, max {max(ready) * 1000:.0f}); first answer: median "
                  f"{statistics.median(first) * 1000:.0f} ms over {runs} starts")
