"""Rewiring pod specs: every form of ConfigMap consumption, idempotence, and what stays untouched."""

from __future__ import annotations

import copy
import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest

from .conftest import pod_spec

FUNCTION_DIR = Path(__file__).resolve().parents[2] / "functions" / "configmap-secret-scrubber"


@pytest.fixture(scope="module")
def cons():
    pkg = "_scrubber_consumers_pkg"
    module = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(pkg, None, is_package=True))
    module.__path__ = [str(FUNCTION_DIR)]
    sys.modules[pkg] = module
    return importlib.import_module(pkg + ".consumers")


KEYS = {"aws_access_key_id"}


def test_every_consumption_form_is_found(cons):
    spec = pod_spec(env=True, env_from=True, volume=True)
    spec["initContainers"] = [{"name": "init", "envFrom": [{"configMapRef": {"name": "aws-creds"}}]}]
    vias = sorted((r.via, r.container) for r in cons.references(spec, "aws-creds", KEYS))
    assert vias == [("env", "app"), ("envFrom", "app"), ("envFrom", "init"), ("volume", "conf")]
    assert cons.references(spec, "other", KEYS) == []
    assert (
        cons.references(pod_spec(env=False, volume=True, items=[{"key": "region", "path": "r"}]), "aws-creds", KEYS)
        == []
    )  # a volume listing only other keys does not read ours


def test_rewire_keeps_optional_prefix_items_modes_and_other_entries(cons):
    spec = pod_spec(
        env=True,
        env_from=True,
        volume=True,
        optional=True,
        items=[{"key": "aws_access_key_id", "path": "k", "mode": 0o400}, {"key": "region", "path": "r"}],
    )
    spec["containers"][0]["envFrom"][0]["configMapRef"]["optional"] = False
    before = copy.deepcopy(spec)
    new = cons.rewire(spec, "aws-creds", KEYS, "s")
    assert spec == before  # the input is not mutated
    c = new["containers"][0]
    assert c["env"][0]["valueFrom"] == {"secretKeyRef": {"name": "s", "key": "aws_access_key_id", "optional": True}}
    assert c["env"][1] == {"name": "PLAIN", "value": "x"}
    assert c["envFrom"] == [
        {"configMapRef": {"name": "aws-creds", "optional": False}, "prefix": "CM_"},
        {"secretRef": {"name": "s", "optional": False}, "prefix": "CM_"},
    ]
    assert new["volumes"][0] == {
        "name": "conf",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"configMap": {"name": "aws-creds", "defaultMode": 0o440, "items": [{"key": "region", "path": "r"}]}},
                {"secret": {"name": "s", "items": [{"key": "aws_access_key_id", "path": "k", "mode": 0o400}]}},
            ],
        },
    }
    assert c["volumeMounts"] == spec["containers"][0]["volumeMounts"]  # paths and subPath unchanged


@pytest.mark.parametrize(
    "kw",
    [
        dict(env=True),
        dict(env=False, env_from=True),
        dict(env=False, volume=True),
        dict(env=False, projected=True),
        dict(env=True, env_from=True, volume=True),
    ],
)
def test_rewire_is_idempotent(cons, kw):
    once = cons.rewire(pod_spec(**kw), "aws-creds", KEYS, "s")
    assert cons.rewire(copy.deepcopy(once), "aws-creds", KEYS, "s") == once
    assert once != pod_spec(**kw)


def test_rename_points_every_remaining_reference_at_the_replacement(cons):
    spec = pod_spec(env=True, env_from=True, projected=True)
    spec["containers"][0]["env"].append(
        {"name": "R", "valueFrom": {"configMapKeyRef": {"name": "aws-creds", "key": "region"}}}
    )
    new = cons.rewire(spec, "aws-creds", KEYS, "s", rename_to="aws-creds-v2")
    assert cons.references(new, "aws-creds", KEYS | {"region"}) == []
    assert cons.rewire(new, "aws-creds", KEYS, "s", rename_to="aws-creds-v2") == new
    assert new["containers"][0]["env"][2]["valueFrom"]["configMapKeyRef"]["name"] == "aws-creds-v2"


@pytest.mark.parametrize(
    "md,who",
    [
        ({"labels": {"app.kubernetes.io/managed-by": "Helm"}}, "Helm"),
        ({"labels": {"helm.sh/chart": "x-1.0"}}, "Helm"),
        ({"annotations": {"argocd.argoproj.io/tracking-id": "a:/ConfigMap:ns/x"}}, "Argo CD"),
        ({"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}}, "Flux"),
        ({"managedFields": [{"manager": "helm", "operation": "Update"}]}, "Helm"),
        ({"managedFields": [{"manager": "argocd-controller", "operation": "Apply"}]}, "Argo CD"),
        ({"ownerReferences": [{"kind": "Postgres", "name": "db", "controller": True}]}, "owner Postgres/db"),
        ({"labels": {"app.kubernetes.io/managed-by": "kubectl"}}, None),
        ({"managedFields": [{"manager": "kubectl-create", "operation": "Update"}]}, None),
    ],
)
def test_deployment_tools_and_operators_are_recognised(cons, md, who):
    assert cons.managed_by({"metadata": md}) == who
