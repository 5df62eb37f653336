"""When a rewired workload counts as rolled out: its new pods are ready, not merely created.

The real v1.24 controllers showed it (tests/scrubber/test_cluster.py, on a node that cannot pull the image):
a StatefulSet and a DaemonSet replace a pod before its successor is ready, and a Recreate Deployment stops every
old pod first, so "every replica updated, none ready" is a normal state of a stuck rollout. Here the same
statuses, as the emulator now reports them for a held rollout (tests/kubeemu/helpers.py REAL_STUCK).
"""

from __future__ import annotations

import pytest

from tests.kubeemu.helpers import REAL_STUCK

from .conftest import configmap, deployment, pod_spec, submodule, workload

SEED = "AKES20LNOA"


@pytest.mark.parametrize("kind,replicas,extra,real", REAL_STUCK, ids=lambda v: str(v)[:20])
def test_a_stuck_rollout_as_the_real_controllers_report_it_is_pending(scrubber_fn, kind, replicas, extra, real):
    remediate = submodule(scrubber_fn(), "remediate")
    obj = {
        "metadata": {"generation": 2},
        "spec": dict(extra, **({"replicas": replicas} if replicas else {})),
        "status": dict(real, observedGeneration=2),
    }
    if kind == "StatefulSet":
        obj["status"].update(currentRevision="w-old", updateRevision="w-new")
    assert remediate.rollout_pending(obj, kind)


def test_finished_rollouts_are_not_pending(scrubber_fn):
    remediate = submodule(scrubber_fn(), "remediate")
    done = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "currentRevision": "w-1",
            "updateRevision": "w-1",
        },
    }
    for kind in ("Deployment", "StatefulSet"):
        assert remediate.rollout_pending(done, kind) is None
    ds = {
        "metadata": {"generation": 2},
        "spec": {},
        "status": {
            "observedGeneration": 2,
            "desiredNumberScheduled": 1,
            "updatedNumberScheduled": 1,
            "numberReady": 1,
            "numberAvailable": 1,
        },
    }
    assert remediate.rollout_pending(ds, "DaemonSet") is None


def test_held_statefulset_daemonset_and_recreate_deployment_keep_the_key(scrubber_fn, call, kube_emulator):
    kube_emulator.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED}))
    dep = deployment(spec=pod_spec(), replicas=1)
    dep["spec"]["strategy"] = {"type": "Recreate"}
    kube_emulator.seed(dep)
    kube_emulator.seed(workload("StatefulSet", "db", pod_spec()))
    kube_emulator.seed(workload("DaemonSet", "agent", pod_spec()))
    kube_emulator.hold_rollouts(True)
    mod = scrubber_fn(scrub_mode="move", rollout_timeout_seconds="0.3")
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    out = body["configmaps"][0]
    assert out["status"] == "pending_rollout", out
    assert {r.split(":")[0] for r in out["reasons"]} == {"Deployment web", "StatefulSet db", "DaemonSet agent"}
    assert kube_emulator.get("configmaps", "demo", "aws-creds")["data"] == {"aws_access_key_id": SEED}
    kube_emulator.hold_rollouts(False)
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved", body
