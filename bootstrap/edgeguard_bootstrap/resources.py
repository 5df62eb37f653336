"""The memory budget: what the cluster's pods request against what the node can give them."""

from __future__ import annotations

import json
import re

from .engine import Check, Ctx

_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def quantity(text: str | None) -> int:
    """Bytes in a Kubernetes memory quantity ("64Mi", "1Gi", "512M", "134217728"); 0 when unset."""
    if not text:
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text).strip())
    if not m:
        raise ValueError(f"not a memory quantity: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def mib(n: int) -> str:
    return f"{n / 1024**2:.0f} MiB"


def pod_requests(pod: dict) -> int:
    """A pod's effective memory request: the larger of its containers' sum and its largest init container."""
    spec = pod.get("spec") or {}
    main = sum(
        quantity(((c.get("resources") or {}).get("requests") or {}).get("memory")) for c in spec.get("containers") or []
    )
    init = max(
        [
            quantity(((c.get("resources") or {}).get("requests") or {}).get("memory"))
            for c in spec.get("initContainers") or []
        ]
        or [0]
    )
    return max(main, init)


def check(ctx: Ctx) -> Check:
    nodes = ctx.query(["kubectl", "get", "nodes", "-o", "json"], timeout=30)
    pods = ctx.query(["kubectl", "get", "pods", "-A", "-o", "json"], timeout=60)
    if nodes.returncode != 0 or pods.returncode != 0:
        return Check("memory", "warn", "cannot list nodes and pods to add up memory requests")
    try:
        node_items = json.loads(nodes.stdout or "{}").get("items", [])
        pod_items = json.loads(pods.stdout or "{}").get("items", [])
        allocatable = sum(
            quantity(((n.get("status") or {}).get("allocatable") or {}).get("memory")) for n in node_items
        )
        live = [p for p in pod_items if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        by_ns: dict[str, int] = {}
        for p in live:
            ns = (p.get("metadata") or {}).get("namespace", "?")
            by_ns[ns] = by_ns.get(ns, 0) + pod_requests(p)
    except ValueError as exc:
        return Check("memory", "warn", f"cannot read memory requests: {exc}")
    total = sum(by_ns.values())
    pending = [
        p["metadata"]["name"]
        for p in live
        if (p.get("status") or {}).get("phase") == "Pending"
        and any(c.get("reason") == "Unschedulable" for c in (p.get("status") or {}).get("conditions") or [])
    ]
    shown = ", ".join(f"{ns} {mib(v)}" for ns, v in sorted(by_ns.items(), key=lambda kv: -kv[1]) if v)
    detail = f"pods request {mib(total)} of {mib(allocatable)} allocatable ({shown})"
    if pending:
        return Check("memory", "fail", f"{detail}; unschedulable: {', '.join(sorted(pending))}")
    if allocatable and total > allocatable:
        return Check("memory", "fail", detail)
    if allocatable and total > 0.9 * allocatable:
        return Check("memory", "warn", detail + " (over 90%)")
    return Check("memory", "pass", detail)
