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


def rollout_status(res: Resource, obj: dict, nodes: int, complete: bool) -> dict:
    spec = obj.get("spec") or {}
    gen = obj["metadata"].get("generation", 1)
    old = obj.get("status") or {}
    name = obj["metadata"]["name"]
    rs_name = f"{name}-{template_hash(obj)}"
    ts = now()
    if res.plural == "daemonsets":
        want = nodes
        st: dict[str, Any] = {"observedGeneration": gen, "desiredNumberScheduled": want,
                              "currentNumberScheduled": want, "numberMisscheduled": 0}
        if complete:
            st.update(numberReady=want, numberAvailable=want, updatedNumberScheduled=want)
        else:
            st.update(numberReady=old.get("numberReady", 0), numberAvailable=old.get("numberAvailable", 0),
                      updatedNumberScheduled=0, numberUnavailable=want)
        return {k: v for k, v in st.items() if v != 0 or k in ("desiredNumberScheduled", "numberMisscheduled",
                                                                  "currentNumberScheduled", "numberReady")}
    want = int(spec.get("replicas", 1))
    st = {"observedGeneration": gen, "replicas": want}
    if complete:
        st.update(updatedReplicas=want, readyReplicas=want, availableReplicas=want)
    else:
        st.update(updatedReplicas=0, readyReplicas=old.get("readyReplicas", 0),
                  availableReplicas=old.get("availableReplicas", 0),
                  unavailableReplicas=max(0, want - old.get("availableReplicas", 0)))
    if res.plural == "deployments":
        conds = []
        avail = complete or old.get("availableReplicas", 0) >= want
        conds.append({"type": "Available", "status": "True" if avail else "False",
                      "reason": "MinimumReplicasAvailable" if avail else "MinimumReplicasUnavailable",
                      "message": "Deployment has minimum availability." if avail
                      else "Deployment does not have minimum availability.",
                      "lastUpdateTime": ts, "lastTransitionTime": ts})
        if complete:
            conds.append({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                          "message": f'ReplicaSet "{rs_name}" has successfully progressed.',
                          "lastUpdateTime": ts, "lastTransitionTime": ts})
        else:
            conds.append({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                          "message": f'ReplicaSet "{rs_name}" is progressing.',
                          "lastUpdateTime": ts, "lastTransitionTime": ts})
        st["conditions"] = conds
    elif res.plural == "statefulsets":
        rev = f"{name}-{template_hash(obj)}"
        st["updateRevision"] = rev
        st["currentRevision"] = rev if complete else old.get("currentRevision", rev)
        st["currentReplicas"] = want if complete else old.get("currentReplicas", 0)
        st["collisionCount"] = 0
    elif res.plural == "replicasets":
        st["fullyLabeledReplicas"] = want
        st.pop("updatedReplicas", None)
    # The apiserver omits zero-valued optional counters.
    return {k: v for k, v in st.items() if v != 0 or k in ("replicas", "observedGeneration", "collisionCount")}
