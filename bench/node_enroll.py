"""node-enroll figures: request verification cost, enrollment latency through the local gateway, memory.

Run: .venv/bin/python -m bench node_enroll   (part of `make bench`)
"""

from __future__ import annotations

import hashlib
import importlib.util
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
FN = ROOT / "functions" / "node-enroll"
CA = ROOT / "tests" / "node_enroll" / "data" / "server-ca.crt"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def verification(n: int = 20000) -> None:
    signing = _load(FN / "signing.py", "bench_ne_signing")
    replay = _load(FN / "replay.py", "bench_ne_replay")
    key = secrets.token_hex(32)
    body = b'{"hostname":"pi-north-01","arch":"arm64","machine_id":"0123456789abcdef0123456789abcdef"}'
    now = int(time.time())
    reqs = []
    for i in range(n):
        nonce = f"bench-nonce-{i:012d}"
        reqs.append((str(now), nonce, signing.sign(key, str(now), nonce, body)))
    guard = replay.ReplayGuard(max_skew=300, max_entries=n + 10, started_at=0)
    t0 = time.perf_counter()
    for ts, nonce, sig in reqs:
        assert signing.signature_matches(key, ts, nonce, body, sig)
        guard.check_and_record(int(ts), nonce)
    dt = time.perf_counter() - t0
    print(
        f"signature check + replay guard: {dt / n * 1e6:.1f} us/request over {n} requests "
        f"(nonce cache holds {len(guard)})"
    )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def end_to_end(n: int = 100) -> None:
    try:
        from local import gateway
    except ImportError as exc:
        print(f"end-to-end skipped: {exc}")
        return
    client = _load(FN / "client" / "edgeguard-enroll.py", "bench_ne_client")
    ca_hash = hashlib.sha256(CA.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {
            "node-enroll": {
                "k3s_ca_hash": ca_hash,
                "max_outstanding_tokens": str(n + 10),
                "rate_limit_per_minute": str(10 * n),
                "rate_limit_global_per_minute": str(10 * n),
            }
        }
        try:
            stack = gateway.LocalStack(
                gateway.free_port(),
                state_dir=Path(tmp) / "state",
                kube="emulator",
                functions=["node-enroll"],
                env_overrides=overrides,
            ).start()
        except Exception as exc:  # no emulator on this checkout yet
            print(f"end-to-end skipped: {type(exc).__name__}: {exc}")
            return
        try:
            if stack.emulator is None:
                print(f"end-to-end skipped: {stack.kube_description}")
                return
            key = stack.secret("node-enroll-key")
            admin = stack.secret("node-enroll-admin-token")
            url = f"{stack.url}/function/node-enroll/enroll"
            s = requests.Session()
            pid = stack.functions["node-enroll"].proc.pid
            rss_idle = _rss_kib(pid)
            lat = []
            for i in range(n):
                body, headers = client.build_request(
                    key=key,
                    hostname=f"pi-{i:04d}",
                    arch="arm64",
                    machine_id=secrets.token_hex(16),
                    labels={},
                    rotate=False,
                )
                t0 = time.perf_counter()
                r = s.post(url, data=body, headers=headers, timeout=30)
                lat.append(time.perf_counter() - t0)
                if r.status_code != 201:
                    raise RuntimeError(f"enroll {i} answered {r.status_code}: {r.text[:200]}")
            reuse = []  # the same machine asking again: 200 with its token, no token written
            body, headers = None, None
            mid = secrets.token_hex(16)
            for i in range(n):
                body, headers = client.build_request(
                    key=key, hostname="pi-reuse", arch="arm64", machine_id=mid, labels={}, rotate=False
                )
                t0 = time.perf_counter()
                r = s.post(url, data=body, headers=headers, timeout=30)
                reuse.append(time.perf_counter() - t0)
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"re-enroll {i} answered {r.status_code}: {r.text[:200]}")
            t0 = time.perf_counter()
            r = s.get(
                f"{stack.url}/function/node-enroll/nodes", headers={"Authorization": f"Bearer {admin}"}, timeout=30
            )
            list_s = time.perf_counter() - t0
            assert r.status_code == 200 and r.json()["count"] == n + 1
            lat.sort()
            reuse.sort()
            print(
                f"POST /enroll via local gateway + emulator: p50 {statistics.median(lat) * 1e3:.1f} ms, "
                f"p95 {lat[int(len(lat) * 0.95) - 1] * 1e3:.1f} ms, min {lat[0] * 1e3:.1f} ms, "
                f"over {n} enrollments"
            )
            print(
                f"POST /enroll of one machine again (200, reused): p50 {statistics.median(reuse) * 1e3:.1f} ms, "
                f"p95 {reuse[int(len(reuse) * 0.95) - 1] * 1e3:.1f} ms over {n}"
            )
            print(f"GET /nodes with {n + 1} enrollments: {list_s * 1e3:.1f} ms")
            print(
                f"function process RSS: {rss_idle / 1024:.1f} MiB before the first request, "
                f"{_rss_kib(pid) / 1024:.1f} MiB after (bench memory has the figures under the real watchdog)"
            )
        finally:
            stack.stop()


def main() -> None:
    verification()
    end_to_end()


if __name__ == "__main__":
    main()
