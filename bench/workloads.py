"""Representative authenticated requests for each function, sent through the local gateway.

Used by bench/memory.py (RSS after a load test) and bench/coldstart.py (time to the first real answer).
Each workload talks to a running ``local.gateway.LocalStack`` through ``local.scenarios.Context``, the
way the demo and a user with curl do: tokens from the stack's secrets, Kubernetes objects in the stack's
API (the in-memory emulator unless KUBECONFIG points at a cluster). Every answer's status is checked:
a load test that only collected errors would measure the error path.

* audit-ingest: EventList batches of Falco's regression audit events (unique auditIDs; some raise alerts,
  which are handed off to alert-forwarder as in a cluster);
* alert-forwarder: Falco alerts as http_output posts them, Notice to Critical;
* configmap-secret-scrubber: report runs over a namespace holding ConfigMaps with and without credentials,
  the Falco alert that triggers it, and GET reports;
* node-enroll: signed enrollments, the admin listing, and revocations (DELETE /nodes/<name>).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "tests" / "data" / "falco" / "regression" / "events"
# The load test: a few hundred requests per function.
DEFAULT_REQUESTS = 300
# Settings that would turn a load test into a rate-limit test (each function's own limits are theirs to bench).
LOAD_ENV = {
    "configmap-secret-scrubber": {"rate_limit_per_minute": "1000000"},
    "node-enroll": {
        "rate_limit_per_minute": "1000000",
        "rate_limit_global_per_minute": "1000000",
        "rate_limit_unsigned_per_minute": "1000000",
        "max_outstanding_tokens": "1000",
    },
}


class WorkloadError(RuntimeError):
    """A function answered a representative request with an unexpected status."""


@dataclass
class Tally:
    """Statuses of the requests a workload sent."""

    statuses: Counter = field(default_factory=Counter)

    def check(self, r, ok: tuple, what: str):
        self.statuses[r.status_code] += 1
        if r.status_code not in ok:
            raise WorkloadError(f"{what}: HTTP {r.status_code} (expected {ok}): {r.text[:300]}")
        return r

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())


# --- audit-ingest ---------------------------------------------------------------------------------
def _audit_events() -> list[dict]:
    out = []
    for f in sorted(EVENTS.glob("*.json")):
        text = f.read_text()
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        for d in docs:
            out.extend(d["items"] if d.get("kind") == "EventList" else [d])
    return out


def audit_batch(events: list[dict], size: int) -> dict:
    items = []
    for i in range(size):
        e = dict(events[i % len(events)])
        e["auditID"] = str(uuid.uuid4())
        items.append(e)
    return {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items}


def _audit_first(ctx, tally: Tally) -> None:
    events = _audit_events()
    tally.check(
        ctx.call("audit-ingest", body=audit_batch(events, 1), token_secret="audit-ingest-token"),
        (200, 202),
        "audit-ingest first batch",
    )


def _audit_load(ctx, tally: Tally, n: int) -> None:
    events = _audit_events()
    for _ in range(n):
        tally.check(
            ctx.call("audit-ingest", body=audit_batch(events, 20), token_secret="audit-ingest-token"),
            (200, 202),
            "audit-ingest batch of 20 events",
        )


# --- alert-forwarder ------------------------------------------------------------------------------
_PRIORITIES = ("Notice", "Warning", "Error", "Critical")


def falco_alert(i: int, priority: str = "Warning") -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return {
        "hostname": f"edge-{i % 7}",
        "priority": priority,
        "rule": f"Bench rule {i % 11}",
        "source": "syscall",
        "output": f"10:11:12.123456789: {priority} bench alert {i} (user=root proc=sh{i})",
        "output_fields": {"user.name": "root", "proc.name": f"sh{i}", "container.id": f"{i:012x}"},
        "tags": ["bench", "T1059"],
        "time": f"{now}.{i % 1000000:06d}000Z",
    }


def _forwarder_first(ctx, tally: Tally) -> None:
    tally.check(
        ctx.call("alert-forwarder", body=falco_alert(0), token_secret="alert-forwarder-token"),
        (200, 202),
        "alert-forwarder first alert",
    )


def _forwarder_load(ctx, tally: Tally, n: int) -> None:
    for i in range(1, n + 1):
        body = falco_alert(i, _PRIORITIES[i % len(_PRIORITIES)])
        if i % 10 == 0:  # audit-ingest hands off arrays
            body = [falco_alert(i * 100 + k, _PRIORITIES[k % 4]) for k in range(10)]
        tally.check(
            ctx.call("alert-forwarder", body=body, token_secret="alert-forwarder-token"),
            (200, 202),
            "alert-forwarder alert",
        )


# --- configmap-secret-scrubber --------------------------------------------------------------------
SCRUB_NS = "default"


def _scrubber_prepare(ctx) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    v1 = client.CoreV1Api(ctx.kube)
    for i in range(20):
        data = {"app.properties": f"threads={i}\nname=bench-{i}\n"}
        if i % 4 == 0:  # a quarter hold a credential the detector finds with high confidence
            data["aws_access_key_id"] = "AKIA" + secrets.token_hex(8).upper()
        try:
            v1.create_namespaced_config_map(SCRUB_NS, {"metadata": {"name": f"bench-cm-{i}"}, "data": data})
        except ApiException as exc:
            if exc.status != 409:
                raise


def _scrubber_first(ctx, tally: Tally) -> None:
    tally.check(
        ctx.call(
            "configmap-secret-scrubber",
            body={"namespace": SCRUB_NS, "name": "bench-cm-0"},
            token_secret="configmap-secret-scrubber-token",
        ),
        (200, 202),
        "scrubber first report",
    )


def _scrubber_load(ctx, tally: Tally, n: int) -> None:
    token = "configmap-secret-scrubber-token"
    for i in range(n):
        kind = i % 3
        if kind == 0:
            r = ctx.call("configmap-secret-scrubber", body={"namespace": SCRUB_NS}, token_secret=token)
        elif kind == 1:
            alert = {
                "rule": "Create/Modify Configmap With Private Credentials",
                "priority": "Warning",
                "source": "k8s_audit",
                "output": "bench",
                "output_fields": {"ka.target.namespace": SCRUB_NS, "ka.target.name": f"bench-cm-{i % 20}"},
            }
            r = ctx.call("configmap-secret-scrubber", body=alert, token_secret=token)
        else:
            r = ctx.call(
                "configmap-secret-scrubber",
                method="GET",
                token_secret=token,
                params={"namespace": SCRUB_NS, "name": f"bench-cm-{i % 20}"},
            )
        tally.check(r, (200, 202), "scrubber report")


# --- node-enroll ----------------------------------------------------------------------------------
def _enroll_client():
    from local.scenarios import node_enroll

    return node_enroll._client()


def _enroll_prepare(ctx) -> None:
    from local.scenarios import node_enroll

    node_enroll._apply_records_namespace(ctx)


def _enroll(ctx, tally: Tally, client, node: str):
    body, headers = client.build_request(
        key=ctx.token("node-enroll-key"),
        hostname=node,
        arch="aarch64",
        machine_id=secrets.token_hex(16),
        labels={"node.edgeguard.io/site": "bench"},
        rotate=False,
    )
    return tally.check(
        ctx.call("node-enroll", "/enroll", body=body, headers=headers), (200, 201), f"node-enroll enrollment of {node}"
    )


def _enroll_first(ctx, tally: Tally) -> None:
    node = f"bench-first-{secrets.token_hex(3)}"
    _enroll(ctx, tally, _enroll_client(), node)
    tally.check(
        ctx.call("node-enroll", f"/nodes/{node}", method="DELETE", token_secret="node-enroll-admin-token"),
        (200,),
        "node-enroll revocation",
    )


def _enroll_load(ctx, tally: Tally, n: int) -> None:
    client = _enroll_client()
    admin = "node-enroll-admin-token"
    for i in range(max(1, n // 3)):
        node = f"bench-node-{i:04d}"
        _enroll(ctx, tally, client, node)
        tally.check(ctx.call("node-enroll", "/nodes", method="GET", token_secret=admin), (200,), "node-enroll listing")
        tally.check(
            ctx.call("node-enroll", f"/nodes/{node}", method="DELETE", token_secret=admin),
            (200,),
            "node-enroll revocation",
        )


@dataclass(frozen=True)
class Workload:
    first: Callable  # (ctx, tally): the first real request after a start (cold start ends with its answer)
    load: Callable  # (ctx, tally, n): about n requests
    prepare: Callable | None = None  # (ctx): objects the requests need, created once per stack
    what: str = ""


WORKLOADS = {
    "audit-ingest": Workload(
        _audit_first,
        _audit_load,
        None,
        "EventList batches of 20 regression audit events, handed off to alert-forwarder",
    ),
    "alert-forwarder": Workload(
        _forwarder_first, _forwarder_load, None, "Falco alerts Notice..Critical, one per request and arrays of 10"
    ),
    "configmap-secret-scrubber": Workload(
        _scrubber_first,
        _scrubber_load,
        _scrubber_prepare,
        "namespace report runs, Falco alerts, GET reports over 20 ConfigMaps",
    ),
    "node-enroll": Workload(
        _enroll_first, _enroll_load, _enroll_prepare, "signed enrollment, admin listing, revocation (one third each)"
    ),
}
