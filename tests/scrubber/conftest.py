"""Scrubber test helpers: the emulator fixture, the handler wired to it, and seed objects."""

from __future__ import annotations

import importlib
import json
import time

import pytest
import yaml

from tests.kubeemu.fixtures import kube_emulator, kube_emulator_factory

__all__ = ["kube_emulator", "kube_emulator_factory"]  # the emulator's fixtures, found by pytest here

TOKEN = "scrubber-test-token-0123456789"
FINGERPRINT_KEY = "scrubber-fingerprint-key-9f8e7d6c5b4a"
FN = "configmap-secret-scrubber"


def configmap(name, data=None, ns="demo", binary=None, labels=None, annotations=None, immutable=None):
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}},
    }
    if data is not None:
        obj["data"] = data
    if binary is not None:
        obj["binaryData"] = binary
    if immutable is not None:
        obj["immutable"] = immutable
    return obj


def pod_spec(
    cm="aws-creds",
    key="aws_access_key_id",
    env=True,
    env_from=False,
    volume=False,
    items=None,
    projected=False,
    optional=None,
):
    c = {"name": "app", "image": "busybox"}
    spec = {"containers": [c]}
    if env:
        ref = {"name": cm, "key": key}
        if optional is not None:
            ref["optional"] = optional
        c["env"] = [{"name": "CRED", "valueFrom": {"configMapKeyRef": ref}}, {"name": "PLAIN", "value": "x"}]
    if env_from:
        c["envFrom"] = [{"configMapRef": {"name": cm}, "prefix": "CM_"}]
    if volume or projected:
        c["volumeMounts"] = [
            {"name": "conf", "mountPath": "/etc/conf"},
            {"name": "conf", "mountPath": "/etc/one", "subPath": key},
        ]
        src = {"name": cm}
        if items:
            src["items"] = items
        if projected:
            labels = {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
            spec["volumes"] = [
                {"name": "conf", "projected": {"sources": [{"configMap": src}, {"downwardAPI": {"items": [labels]}}]}}
            ]
        else:
            spec["volumes"] = [{"name": "conf", "configMap": dict(src, defaultMode=0o440)}]
    return spec


def deployment(name="web", ns="demo", spec=None, labels=None, annotations=None, replicas=2):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec or pod_spec()},
        },
    }


def workload(kind, name, spec, ns="demo", **extra):
    api = {"StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}[kind]
    template = {
        "metadata": {"labels": {"app": name}},
        "spec": dict(spec, restartPolicy="OnFailure") if kind in ("Job", "CronJob") else spec,
    }
    body = {"selector": {"matchLabels": {"app": name}}, "template": template}
    if kind == "StatefulSet":
        body["serviceName"] = name
        body["replicas"] = 1
    if kind == "Job":
        body = {"template": template}
    if kind == "CronJob":
        body = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    body.update(extra)
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": body}


def bare_pod(name="debug", ns="demo", spec=None, phase="Running", owner=None):
    md = {"name": name, "namespace": ns}
    if owner:
        md["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec or pod_spec(), "status": {"phase": phase}}


@pytest.fixture
def scrubber_fn(load_function, request):
    """Factory: the handler module, with the emulator's kubeconfig as its OpenFaaS secret."""
    emu = request.getfixturevalue("kube_emulator")  # the test's own emulator (a parameter would shadow the import)

    loaded = []

    def load(**env):
        env = {
            "rollout_poll_seconds": "0.02",
            "rollout_timeout_seconds": "3",
            "kube_timeout_seconds": "2",
            "rate_limit_per_minute": "1000",
            **{k: str(v) for k, v in env.items()},
        }
        mod = load_function(
            FN,
            env=env,
            secrets={
                "configmap-secret-scrubber-token": TOKEN + "\n",
                "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY + "\n",
                "configmap-secret-scrubber-kubeconfig": yaml.safe_dump(emu.kubeconfig_dict()),
            },
        )
        loaded.append(mod)
        return mod

    yield load
    # a job still queued must not run on into the next test's emulator (which may get this one's port)
    emu.hold_rollouts(False)
    deadline = time.monotonic() + 60
    for mod in loaded:
        while mod._JOBS is not None and mod._JOBS.depth() != (0, 0):
            assert time.monotonic() < deadline, "the test's jobs did not finish"
            time.sleep(0.01)


@pytest.fixture
def call(make_event):
    """call(mod, method, body=None, query=None, token=TOKEN) -> (status, decoded JSON, response).

    A POST waits for its job (``?wait=1``, the synchronous use) unless ``background=True``."""

    def do(
        mod,
        method="POST",
        body=None,
        query=None,
        token=TOKEN,
        content_type="application/json",
        raw=None,
        path="/",
        headers=None,
        background=False,
    ):
        hdrs = {"Content-Type": content_type, **(headers or {})}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        query = dict(query or {})
        if method == "POST" and not background:
            query.setdefault("wait", "1")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        resp = mod.handle(make_event(method=method, path=path, body=data, headers=hdrs, query=query), None)
        return resp["statusCode"], json.loads(resp["body"]), resp

    return do


def submodule(handler_mod, name):
    """A sibling module of the loaded handler (same package instance, same edgeguard state)."""
    return importlib.import_module(f"{handler_mod.__package__}.{name}")


def kube_client(handler_mod, emu, **kwargs):
    """The function's own kubeapi.Client on the emulator's admin credentials."""
    kube, kubeapi = submodule(handler_mod, "edgeguard.kube"), submodule(handler_mod, "edgeguard.kubeapi")
    return kubeapi.Client(kube.Connection.of(emu.api_client()), **kwargs)


def writes(emu):
    return [r for r in emu.requests if r[0] not in ("get", "list", "watch")]
