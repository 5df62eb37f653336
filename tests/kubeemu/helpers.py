"""Small helpers for the emulator tests."""

from __future__ import annotations

import json

import kubernetes
import pytest


def api_error(fn, *args, **kwargs) -> kubernetes.client.ApiException:
    """Call fn, expect the kubernetes client to raise ApiException; return it with its parsed Status body."""
    with pytest.raises(kubernetes.client.ApiException) as info:
        fn(*args, **kwargs)
    exc = info.value
    exc.status_body = json.loads(exc.body) if exc.body else {}
    return exc


def deployment(name: str, image: str = "nginx:1.25", replicas: int = 2, **pod_spec) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": image}], **pod_spec},
            },
        },
    }


# What kube-controller-manager v1.24 reported (../shared/tools/kube/cluster, kubectl-style status read 10 s after a
# template change, while the simulated node refused every new pod with ErrImagePull): a held rollout here.
REAL_STUCK = [
    (
        "Deployment",
        4,
        {},
        {"replicas": 5, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 2},
    ),
    (
        "Deployment",
        1,
        {},
        {"replicas": 2, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1},
    ),
    (
        "Deployment",
        2,
        {"strategy": {"type": "Recreate"}},
        {"replicas": 2, "updatedReplicas": 2, "unavailableReplicas": 2},
    ),
    (
        "StatefulSet",
        3,
        {},
        {"replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2, "currentReplicas": 2},
    ),
    (
        "DaemonSet",
        None,
        {},
        {
            "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1,
            "updatedNumberScheduled": 1,
            "numberReady": 0,
            "numberUnavailable": 1,
            "numberMisscheduled": 0,
        },
    ),
]
