"""OpenFaaS CE's Helm values for a 2 GB node, the memory check, and the budget docs/bootstrap.md states.

Exercised against the recording helm/kubectl fakes only: no OpenFaaS chart was rendered or installed here.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml

from edgeguard_bootstrap import falco, openfaas_ce, resources
from edgeguard_bootstrap.engine import Ctx

REPO = Path(__file__).resolve().parents[2]
ARKADE_VALUES = {"generateBasicAuth": False, "serviceType": "NodePort", "queueWorker": {"maxInflight": 1}}


def arkade_release(node, values=None, revision="1"):
    """The release `arkade install openfaas-ce` leaves: openfaas/openfaas in namespace openfaas."""
    node.update_world(
        releases={
            "openfaas": {
                "namespace": "openfaas",
                "status": "deployed",
                "chart": "openfaas-15.0.6",
                "revision": revision,
                "values": values if values is not None else ARKADE_VALUES,
            }
        },
        repos={"openfaas": "https://openfaas.github.io/faas-netes/"},
    )


def test_values_overlay_the_release_at_its_own_chart_version_keeping_arkades_settings(node):
    arkade_release(node)
    code, out = node.run("openfaas")
    assert code == 0, out
    values_path = node.path(openfaas_ce.VALUES)
    assert yaml.safe_load(values_path.read_text()) == openfaas_ce.VALUES_DOC
    upgrades = [c for c in node.mutating_calls() if c[:2] == ["helm", "upgrade"]]
    assert upgrades == [
        [
            "helm",
            "upgrade",
            "openfaas",
            "openfaas/openfaas",
            "--namespace",
            "openfaas",
            "--version",
            "15.0.6",
            "--reuse-values",
            "--values",
            str(values_path),
            "--wait",
            "--timeout",
            "10m",
        ]
    ]
    release = node.world()["releases"]["openfaas"]
    assert release["values"]["generateBasicAuth"] is False and release["values"]["serviceType"] == "NodePort"
    assert release["values"]["prometheus"] == {"create": False}
    assert release["values"]["openfaasImagePullPolicy"] == "IfNotPresent"
    node.clear_calls()
    code, out = node.run("openfaas")
    assert code == 0 and not any(c[:2] == ["helm", "upgrade"] for c in node.calls())
    assert "has the edge values" in out


def test_revert_rolls_the_release_back_to_the_revision_before_the_values(node):
    arkade_release(node, revision="3")
    assert node.run("openfaas")[0] == 0
    node.clear_calls()
    code, out = node.run("revert", "--yes")
    assert code == 0, out
    assert ["helm", "rollback", "openfaas", "3", "-n", "openfaas", "--wait"] in node.mutating_calls()


def test_without_an_openfaas_release_nothing_is_upgraded_and_the_file_says_what_to_apply(node):
    code, out = node.run("openfaas")
    assert code == 0, out
    assert "no deployed Helm release of openfaas/openfaas" in out
    assert node.path(openfaas_ce.VALUES).exists()
    assert not any(c[:2] == ["helm", "upgrade"] for c in node.calls())


def test_preflight_reports_whether_the_release_has_the_edge_values(node):
    arkade_release(node)
    code, out = node.run("preflight")
    assert "has the chart's requests" in out
    node.run("openfaas")
    code, out = node.run("preflight")
    line = next(row for row in out.splitlines() if "openfaas values" in row)
    assert "PASS" in line


@pytest.mark.parametrize(
    "text,bytes_",
    [
        ("64Mi", 64 << 20),
        ("1Gi", 1 << 30),
        ("512M", 512_000_000),
        ("134217728", 134217728),
        ("1.5Gi", 3 << 29),
        (None, 0),
    ],
)
def test_memory_quantities(text, bytes_):
    assert resources.quantity(text) == bytes_


def pod(name, ns, *requests, phase="Running", unschedulable=False, init=()):
    status = {"phase": phase}
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    return {
        "metadata": {"name": name, "namespace": ns},
        "status": status,
        "spec": {
            "containers": [{"resources": {"requests": {"memory": r}}} for r in requests],
            "initContainers": [{"resources": {"requests": {"memory": r}}} for r in init],
        },
    }


def ctx_for(node):
    return Ctx(str(node.root), out=io.StringIO(), env=node.env())


def test_memory_check_adds_requests_against_allocatable(node):
    node.update_world(
        allocatable="1750Mi",
        pods=[
            pod("coredns", "kube-system", "70Mi"),
            pod("gateway", "openfaas", "64Mi", "64Mi"),
            pod("falco", "falco", "256Mi", init=["512Mi"]),
            pod("done", "default", "900Mi", phase="Succeeded"),
        ],
    )
    check = resources.check(ctx_for(node))
    # falco: its init container's 512Mi counts (the larger of init and containers), the finished pod does not
    assert check.status == "pass" and "pods request 710 MiB of 1750 MiB" in check.detail
    node.update_world(
        allocatable="1750Mi", pods=[pod("prometheus", "openfaas", "512Mi", phase="Pending", unschedulable=True)]
    )
    check = resources.check(ctx_for(node))
    assert check.status == "fail" and "unschedulable: prometheus" in check.detail


def stack_requests() -> dict[str, int]:
    doc = yaml.safe_load((REPO / "stack.yml").read_text())
    return {n: resources.quantity(f["requests"]["memory"]) >> 20 for n, f in doc["functions"].items()}


def planned() -> dict[str, int]:
    """The requests, in MiB, that a single-node k3s server carries once bootstrap has run."""
    component = resources.quantity(openfaas_ce.COMPONENT_REQUEST["requests"]["memory"]) >> 20
    return {
        "k3s's own pods (coredns 70, metrics-server 70)": 140,
        "OpenFaaS CE (gateway, faas-netes, queue-worker, NATS)": 4 * component,
        "Falco": resources.quantity(falco.RESOURCES["requests"]["memory"]) >> 20,
        "the four functions (stack.yml)": sum(stack_requests().values()),
    }


def test_the_budget_in_the_docs_is_the_one_bootstrap_writes():
    doc = (REPO / "docs" / "bootstrap.md").read_text()
    total = sum(planned().values())
    assert f"| **total requests** | **{total} MiB** |" in doc
    for label, mib in planned().items():
        assert re.search(rf"\| {re.escape(label)} \| {mib} MiB \|", doc), label
    assert openfaas_ce.VALUES_DOC["prometheus"] == {"create": False}
    assert openfaas_ce.VALUES_DOC["alertmanager"] == {"create": False}
