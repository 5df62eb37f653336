"""audit-ingest's memory under the real of-watchdog: the largest batch it accepts, and unauthenticated floods.

``python -m bench audit_ingest_memory`` (part of ``make bench``). audit-ingest runs as in its pod (of-watchdog in
front of the template's index.py, stack.yml's environment, behind the local gateway, alert-forwarder beside
it). Figures are VmRSS / VmHWM of the watchdog and the python process (bench/memory.py's ``sample``), each in
a fresh process, because VmHWM is a process's lifetime peak:

1. idle, and the peak after the largest accepted batch (``max_body_bytes``): 100 events (the API server's
   ``--audit-webhook-batch-max-size`` bootstrap writes) filling the limit (~100 KiB each at 10 MiB,
   ``--audit-webhook-truncate-max-event-size``'s default) with many small fields, the shape that costs
   Python the most per byte. Target
   (issue 12 §3): peak <= 80% of stack.yml's memory limit, watchdog included;
2. the same batch sent by 4 clients at once (the API server sends batches concurrently);
3. 4, 16 and 32 concurrent unauthenticated senders of a 12 MiB body (issue 17 §7): RSS before, during and
   after, and whether the refusals came without the body being read into the function's memory.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from bench import memory
from local import components, gateway, launch, stackfile

EVENTS = 100


def _event(i: int, target: int) -> dict:
    """A ConfigMap update at RequestResponse level: request and response objects of many small keys."""
    n = 0
    data: dict = {}
    base = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/default/configmaps/settings-{i}",
        "verb": "update",
        "user": {"username": "system:serviceaccount:ci:deployer", "groups": ["system:serviceaccounts"]},
        "sourceIPs": ["10.42.0.7"],
        "userAgent": "kubectl/v1.30.0",
        "objectRef": {"resource": "configmaps", "namespace": "default", "name": f"settings-{i}", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2024-05-01T10:11:12.000000Z",
        "stageTimestamp": "2024-05-01T10:11:12.004000Z",
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
    }
    obj = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": f"settings-{i}", "namespace": "default"},
        "data": data,
    }
    base["requestObject"] = obj
    base["responseObject"] = obj
    size = len(json.dumps(base))
    while size < target:
        key, value = f"setting-{n:05d}", f"value-{n:05d}-{'x' * 12}"
        data[key] = value
        size += 2 * (len(key) + len(value) + 6)
        n += 1
    return json.loads(json.dumps(base))  # request and response as separate objects, as decoded


def largest_batch(limit: int) -> bytes:
    """The biggest EventList of EVENTS events that fits ``limit`` bytes."""
    per = (limit - 200) // EVENTS - 64
    while True:
        body = json.dumps(
            {
                "kind": "EventList",
                "apiVersion": "audit.k8s.io/v1",
                "metadata": {},
                "items": [_event(i, per) for i in range(EVENTS)],
            }
        ).encode()
        if len(body) <= limit:
            return body
        per -= max(64, (len(body) - limit) // EVENTS + 16)


def _limit_mib(fn: stackfile.Function) -> float:
    text = fn.raw.get("limits", {}).get("memory", "128Mi") if hasattr(fn, "raw") else "128Mi"
    return float(text.rstrip("Mi"))


def _stack(tmp: Path, env: dict | None = None) -> gateway.LocalStack:
    return gateway.LocalStack(
        gateway.free_port(),
        state_dir=tmp / "state",
        kube="none",
        functions=["audit-ingest", "alert-forwarder"],
        env_overrides={"audit-ingest": dict(env or {})},
    ).start()


def _restart(stack: gateway.LocalStack) -> launch.FunctionProcess:
    process = stack.functions["audit-ingest"].process
    process.stop()
    process.start().wait_ready(time.monotonic() + 60)
    time.sleep(memory.SETTLE_S)
    return process


def _post(url: str, body: bytes, token: str | None) -> int:
    hdrs = {"Content-Type": "application/json"}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    try:
        return requests.post(url, data=body, headers=hdrs, timeout=120).status_code
    except requests.RequestException as exc:
        return -1 if "Connection" in type(exc).__name__ else -2


def _concurrently(n: int, fn) -> list:
    out: list = [None] * n
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def run(env: dict | None = None, *, floods=(4, 16, 32)) -> dict:
    """The figures for one audit-ingest configuration (``env`` over stack.yml's)."""
    fn = stackfile.load().functions["audit-ingest"]
    limit = int((env or {}).get("max_body_bytes") or fn.environment["max_body_bytes"])
    body = largest_batch(limit)
    out: dict = {"max_body_bytes": limit, "batch_bytes": len(body)}
    with tempfile.TemporaryDirectory(prefix="edgeguard-bench-ai-mem-") as tmp:
        stack = _stack(Path(tmp), env)
        try:
            url = f"{stack.url}/function/audit-ingest"
            token = stack.secret("audit-ingest-token")
            process = _restart(stack)
            out["idle"] = memory.sample(process)
            t = time.perf_counter()
            out["batch_status"] = _post(url, body, token)
            out["batch_s"] = time.perf_counter() - t
            time.sleep(memory.SETTLE_S)
            out["after_batch"] = memory.sample(process)
            process = _restart(stack)
            out["concurrent_status"] = _concurrently(4, lambda i: _post(url, largest_batch(limit), token))
            time.sleep(memory.SETTLE_S)
            out["after_concurrent"] = memory.sample(process)
            big = b'{"kind":"EventList","items":[' + b'{"a":"' + b"x" * (12 << 20) + b'"}]}'
            for n in floods:
                process = _restart(stack)
                before = memory.sample(process)
                statuses = _concurrently(n, lambda i: _post(url, big, None))
                time.sleep(memory.SETTLE_S)
                out[f"flood_{n}"] = (before, memory.sample(process), statuses)
        finally:
            stack.stop()
    return out


def report(label: str, r: dict, limit_mib: float) -> str:
    def peak(s):
        return s.peak_kib / 1024

    lines = [
        f"{label}: largest accepted batch {r['batch_bytes']:,} bytes (max_body_bytes {r['max_body_bytes']:,}), "
        f"{EVENTS} events; answered {r['batch_status']} in {r['batch_s']:.2f} s"
    ]
    idle, after = r["idle"], r["after_batch"]
    lines.append(
        f"  idle watchdog+python {_mib(idle.watchdog_kib)}+{_mib(idle.python_kib)} MiB; peak (VmHWM) "
        f"{_mib(after.watchdog_hwm_kib)}+{_mib(after.python_hwm_kib)} = {peak(after):.1f} MiB = "
        f"{100 * peak(after) / limit_mib:.0f}% of the {limit_mib:.0f}Mi limit (target <= 80%); "
        f"after: {after.total_kib / 1024:.1f} MiB"
    )
    c = r["after_concurrent"]
    lines.append(
        f"  4 such batches at once: statuses {sorted(r['concurrent_status'])}; peak {peak(c):.1f} MiB = "
        f"{100 * peak(c) / limit_mib:.0f}% of the limit; after: {c.total_kib / 1024:.1f} MiB"
    )
    for key in sorted((k for k in r if k.startswith("flood_")), key=lambda k: int(k[6:])):
        before, after_f, statuses = r[key]
        lines.append(
            f"  {key[6:]:>2} concurrent unauthenticated 12 MiB senders: statuses "
            f"{ {s: statuses.count(s) for s in set(statuses)} }; RSS {before.total_kib / 1024:.1f} -> "
            f"{after_f.total_kib / 1024:.1f} MiB (peak {peak(after_f):.1f} MiB)"
        )
    return "\n".join(lines)


def main() -> None:
    logging.getLogger("waitress").setLevel(logging.ERROR)  # the local gateway's "Task queue depth" notices
    comps = components.locate()
    reason = comps.watchdog_skip_reason()
    if reason:
        print(f"bench audit_ingest_memory skipped: {reason}")
        return
    fn = stackfile.load().functions["audit-ingest"]
    print(f"runtime: {launch.Runtime(comps).describe()}")
    print(report("stack.yml", run(), _limit_mib(fn)))


if __name__ == "__main__":
    main()
