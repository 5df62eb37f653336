"""The OpenFaaS CE release's values for a small edge node: requests that fit 2 GB, images started offline.

OpenFaaS CE is installed by the operator (`arkade install openfaas-ce`, a Helm release of the
openfaas/openfaas chart). bootstrap only overlays the values below on that release with
`helm upgrade --reuse-values` at the chart version already deployed, so arkade's own settings
(basic-auth secret, NodePort, queue-worker settings) stay as they are.
"""

from __future__ import annotations

import json

from .engine import Check, Ctx

NAMESPACE = "openfaas"
CHART = "openfaas/openfaas"
REPO = ("openfaas", "https://openfaas.github.io/faas-netes/")
VALUES = "/var/lib/edgeguard/openfaas-values.yaml"

# Value names from the chart's README (openfaas/faas-netes chart/openfaas/README.md, "Configuration").
# - Prometheus (512Mi) and AlertManager only serve CE's alert-based autoscaling; edgeguard pins every
#   function to one replica (com.openfaas.scale.min = max = 1), and the gateway answers
#   /system/functions without Prometheus (gateway/metrics/add_metrics.go returns the provider's list
#   when the query fails), so both are left out.
# - The four remaining components request 120Mi each by default; 64Mi is not a measured figure
#   (docs/bootstrap.md marks it so).
# - openfaasImagePullPolicy: the chart's own note says "can change to IfNotPresent in offline env";
#   with it the core components start from the node's image store with the uplink down.
#   (Functions keep Always: CE hard-codes it; see offline.py.)
COMPONENT_REQUEST = {"requests": {"memory": "64Mi", "cpu": "50m"}}
VALUES_DOC = {
    "openfaasImagePullPolicy": "IfNotPresent",
    "prometheus": {"create": False},
    "alertmanager": {"create": False},
    "gateway": {"resources": COMPONENT_REQUEST},
    "faasnetes": {"resources": COMPONENT_REQUEST},
    "queueWorker": {"resources": COMPONENT_REQUEST},
    "nats": {"resources": COMPONENT_REQUEST},
}


def values_text() -> str:
    from . import yamlout

    return yamlout.dump(VALUES_DOC, "OpenFaaS CE values overlaid by edgeguard-bootstrap (helm upgrade --reuse-values)")


def contains(have, want) -> bool:
    """Whether every key of `want` is in `have` with the same value (maps compared recursively)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and contains(have[k], v) for k, v in want.items())
    return have == want


def release(ctx: Ctx) -> dict | None:
    """The Helm release of the openfaas/openfaas chart in `openfaas` (arkade names it `openfaas`)."""
    listed = ctx.query(["helm", "list", "-n", NAMESPACE, "-o", "json"])
    if listed.returncode != 0:
        return None
    try:
        releases = json.loads(listed.stdout or "[]")
    except ValueError:
        return None
    for rel in releases:
        if str(rel.get("chart", "")).startswith("openfaas-") and rel.get("status") == "deployed":
            return rel
    return None


def applied_values(ctx: Ctx, name: str) -> dict | None:
    got = ctx.query(["helm", "get", "values", name, "-n", NAMESPACE, "-o", "json"])
    if got.returncode != 0:
        return None
    try:
        return json.loads(got.stdout or "null") or {}
    except ValueError:
        return None


def check(ctx: Ctx) -> Check:
    """preflight: whether the CE release carries the edge values (a warning: `openfaas` applies them)."""
    if not ctx.which("helm"):
        return Check("openfaas values", "warn", "helm not found: cannot read the OpenFaaS CE release's values")
    rel = release(ctx)
    if rel is None:
        return Check(
            "openfaas values",
            "warn",
            "no deployed Helm release of openfaas/openfaas in namespace "
            "openfaas (arkade install openfaas-ce); cannot check its requests",
        )
    have = applied_values(ctx, rel["name"])
    if have is not None and contains(have, VALUES_DOC):
        return Check(
            "openfaas values",
            "pass",
            f"release {rel['name']} ({rel['chart']}): Prometheus and AlertManager off, 64Mi requests, IfNotPresent",
        )
    return Check(
        "openfaas values",
        "warn",
        f"release {rel['name']} ({rel['chart']}) has the chart's requests "
        "(about 1 GiB with Prometheus): edgeguard-bootstrap openfaas "
        "overlays the edge values",
    )


def run(ctx: Ctx) -> None:
    if not ctx.which("helm"):
        ctx.write_file(VALUES, values_text(), why="OpenFaaS CE values for a 2 GB node")
        ctx.say(
            f"  !! helm not found: the edge values for OpenFaaS CE are in {VALUES}; apply them with "
            "`helm upgrade <release> openfaas/openfaas -n openfaas --reuse-values -f` that file"
        )
        return
    rel = release(ctx)
    if rel is None:
        ctx.say(
            "  !! no deployed Helm release of openfaas/openfaas in namespace openfaas: the edge values "
            f"(requests, Prometheus off, IfNotPresent) are not applied; they are in {VALUES} for "
            "`helm upgrade --reuse-values -f`"
        )
        ctx.write_file(VALUES, values_text(), why="OpenFaaS CE values for a 2 GB node")
        return
    ctx.write_file(VALUES, values_text(), why="OpenFaaS CE values for a 2 GB node")
    name, chart = rel["name"], rel["chart"]
    have = applied_values(ctx, name)
    if have is not None and contains(have, VALUES_DOC):
        ctx.unchanged(f"helm release {name} ({chart}) has the edge values")
        return
    version = chart[len("openfaas-") :]
    repos = ctx.query(["helm", "repo", "list", "-o", "json"])
    try:
        names = {r.get("name") for r in json.loads(repos.stdout or "[]")} if repos.returncode == 0 else set()
    except ValueError:
        names = set()
    if REPO[0] not in names:
        ctx.run(["helm", "repo", "add", *REPO], why="OpenFaaS's chart repository")
    # --reuse-values keeps arkade's settings; the same chart version keeps the upgrade to values only.
    ctx.run(
        [
            "helm",
            "upgrade",
            name,
            CHART,
            "--namespace",
            NAMESPACE,
            "--version",
            version,
            "--reuse-values",
            "--values",
            str(ctx.host(VALUES)),
            "--wait",
            "--timeout",
            "10m",
        ],
        why="OpenFaaS CE requests for a 2 GB node, Prometheus off, core images IfNotPresent",
    )
    ctx.record(
        {"kind": "helm-rollback", "release": name, "namespace": NAMESPACE, "revision": str(rel.get("revision", ""))}
    )
