"""preflight's checks of the edge set-up: memory budget, OpenFaaS CE's values, node-enroll's policy, offline."""

from __future__ import annotations

from pathlib import Path

from . import admission, offline, openfaas_ce, resources
from .engine import Check, Ctx


def checks(ctx: Ctx, repo: Path, earlier: list[Check]) -> list[Check]:
    """Only with a reachable API server (the `cluster` check before passed); all are warnings or a budget fail."""
    if not any(c.name == "cluster" and c.status == "pass" for c in earlier):
        return []
    return [resources.check(ctx), openfaas_ce.check(ctx), admission.check(ctx), offline.check(ctx, repo)]
