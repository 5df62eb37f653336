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
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": image}], **pod_spec}}}}
