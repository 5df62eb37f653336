"""Status the workload controllers would write once a rollout finished (or is held), as pure functions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .clock import now
from .resources import Resource


def template_hash(obj: dict) -> str:
    tpl = json.dumps((obj.get("spec") or {}).get("template") or {}, sort_keys=True)
    return hashlib.sha256(tpl.encode()).hexdigest()[:10]


def _scaled(value: Any, total: int, default: str, round_up: bool) -> int:
    """An IntOrString of a rolling-update strategy (e.g. maxSurge "25%") as a pod count."""
    value = default if value is None else value
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return int(-(-exact // 1)) if round_up else int(exact // 1)
    return int(value)


def _max_unavailable(spec: dict, want: int) -> int:
    """A Deployment's maxUnavailable as a count (Recreate: none may be missing for it to be Available)."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    return _scaled((strategy.get("rollingUpdate") or {}).get("maxUnavailable"), want, "25%", False)


def held_counts(res: Resource, obj: dict, nodes: int) -> dict:
    """What the real controllers report while the new pods exist but none becomes ready (kube-controller-manager
    v1.24 with a node that cannot pull the image, tests/kubeemu/test_controller.py): a rolling update replaces
    pods before their successors are ready, so *updated* counts run ahead of *ready* ones."""
    spec = obj.get("spec") or {}
    old = obj.get("status") or {}
    if res.plural == "daemonsets":
        strategy = spec.get("updateStrategy") or {}
        ready_before = min(int(old.get("numberReady", 0)), nodes)
        updated = (
            0
            if strategy.get("type") == "OnDelete"
            else min(nodes, _scaled((strategy.get("rollingUpdate") or {}).get("maxUnavailable"), nodes, "1", True))
        )
        ready = max(0, ready_before - updated)
        return {
            "updatedNumberScheduled": updated,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": nodes - ready,
        }
    want = int(spec.get("replicas", 1))
    if res.plural == "statefulsets":
        strategy = spec.get("updateStrategy") or {}
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        ready_before = min(int(old.get("readyReplicas", 0)), want)
        # OrderedReady: the highest ordinal is replaced first, and the controller waits for it
        updated = 0 if strategy.get("type") == "OnDelete" or want <= partition else 1
        ready = max(0, ready_before - updated)
        return {
            "replicas": want,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": want - updated,
        }
    strategy = spec.get("strategy") or {}
    if res.plural == "deployments" and strategy.get("type") == "Recreate":
        return {
            "replicas": want,
            "updatedReplicas": want,
            "readyReplicas": 0,
            "availableReplicas": 0,
            "unavailableReplicas": want,
        }
    if res.plural == "deployments":
        surge = _scaled((strategy.get("rollingUpdate") or {}).get("maxSurge"), want, "25%", True)
        unavailable = _max_unavailable(spec, want)
        available_before = min(int(old.get("availableReplicas", 0)), want)
        kept = max(0, available_before - unavailable)  # old pods it may stop while the new ones are not ready
        new = min(want, want + surge - kept)
        return {
            "replicas": kept + new,
            "updatedReplicas": new,
            "readyReplicas": kept,
            "availableReplicas": kept,
            "unavailableReplicas": new,
        }
    return {"replicas": want, "readyReplicas": 0, "availableReplicas": 0}  # a ReplicaSet's pods not ready


def rollout_status(res: Resource, obj: dict, nodes: int, complete: bool) -> dict:
    spec = obj.get("spec") or {}
    gen = obj["metadata"].get("generation", 1)
    old = obj.get("status") or {}
    name = obj["metadata"]["name"]
    rs_name = f"{name}-{template_hash(obj)}"
    ts = now()
    held = {} if complete else held_counts(res, obj, nodes)
    if res.plural == "daemonsets":
        want = nodes
        st: dict[str, Any] = {
            "observedGeneration": gen,
            "desiredNumberScheduled": want,
            "currentNumberScheduled": want,
            "numberMisscheduled": 0,
        }
        if complete:
            st.update(numberReady=want, numberAvailable=want, updatedNumberScheduled=want)
        else:
            st.update(held)
        return {
            k: v
            for k, v in st.items()
            if v != 0 or k in ("desiredNumberScheduled", "numberMisscheduled", "currentNumberScheduled", "numberReady")
        }
    want = int(spec.get("replicas", 1))
    st = {"observedGeneration": gen, "replicas": want}
    if complete:
        st.update(updatedReplicas=want, readyReplicas=want, availableReplicas=want)
    else:
        st.update(held)
    if res.plural == "deployments":
        conds = []
        avail = st.get("availableReplicas", 0) >= want - _max_unavailable(spec, want)
        conds.append(
            {
                "type": "Available",
                "status": "True" if avail else "False",
                "reason": "MinimumReplicasAvailable" if avail else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if avail
                else "Deployment does not have minimum availability.",
                "lastUpdateTime": ts,
                "lastTransitionTime": ts,
            }
        )
        if complete:
            conds.append(
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": f'ReplicaSet "{rs_name}" has successfully progressed.',
                    "lastUpdateTime": ts,
                    "lastTransitionTime": ts,
                }
            )
        else:
            conds.append(
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "ReplicaSetUpdated",
                    "message": f'ReplicaSet "{rs_name}" is progressing.',
                    "lastUpdateTime": ts,
                    "lastTransitionTime": ts,
                }
            )
        st["conditions"] = conds
    elif res.plural == "statefulsets":
        rev = f"{name}-{template_hash(obj)}"
        st["updateRevision"] = rev
        st["currentRevision"] = rev if complete else old.get("currentRevision", rev)
        if complete:
            st["currentReplicas"] = want
        st["collisionCount"] = 0
    elif res.plural == "replicasets":
        st["fullyLabeledReplicas"] = want
        st.pop("updatedReplicas", None)
    # The apiserver omits zero-valued optional counters.
    return {k: v for k, v in st.items() if v != 0 or k in ("replicas", "observedGeneration", "collisionCount")}
