"""node-enroll's ValidatingAdmissionPolicy: applied where the API server serves it, a warning where not."""

from __future__ import annotations

import json
from pathlib import Path

from .engine import Check, Ctx
from .kubeapply import apply_manifest

MANIFEST = "deploy/admission/node-enroll.yaml"
POLICY = "edgeguard-node-enroll-bootstrap-tokens-only"
API = "/apis/admissionregistration.k8s.io/v1"


def served(ctx: Ctx) -> bool | None:
    """Whether admissionregistration.k8s.io/v1 serves validatingadmissionpolicies (Kubernetes >= 1.30);
    None when the API server cannot be asked."""
    proc = ctx.query(["kubectl", "get", "--raw", API], timeout=30)
    if proc.returncode != 0:
        return None
    try:
        resources = json.loads(proc.stdout or "{}").get("resources") or []
    except ValueError:
        return None
    return any(r.get("name") == "validatingadmissionpolicies" for r in resources)


OLD_CLUSTER = (
    "this API server has no ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, Kubernetes "
    "1.30 = k3s v1.30.0+k3s1): node-enroll's RBAC alone lets its credential create and delete ANY "
    "Secret in kube-system (node passwords included); upgrade k3s to get "
    f"{MANIFEST} applied"
)


def check(ctx: Ctx) -> Check:
    have = served(ctx)
    if have is None:
        return Check("node-enroll policy", "warn", f"cannot read {API} from the API server")
    if not have:
        return Check("node-enroll policy", "warn", OLD_CLUSTER)
    proc = ctx.query(["kubectl", "get", "validatingadmissionpolicy", POLICY, "-o", "name"], timeout=30)
    if proc.returncode == 0 and proc.stdout.strip():
        return Check("node-enroll policy", "pass", f"{POLICY} confines node-enroll to bootstrap-token Secrets")
    return Check(
        "node-enroll policy", "warn", f"{POLICY} not applied yet (edgeguard-bootstrap openfaas applies {MANIFEST})"
    )


def run(ctx: Ctx, repo: Path) -> None:
    path = repo / MANIFEST
    have = served(ctx)
    if have is False:
        ctx.say(f"  !! {OLD_CLUSTER}")
        return
    if have is None and not ctx.dry_run:
        ctx.say(f"  !! cannot tell whether the API server serves ValidatingAdmissionPolicy; {MANIFEST} not applied")
        return
    if not path.is_file():
        ctx.say(f"  !! {path} is missing: node-enroll is confined by RBAC only")
        return
    apply_manifest(ctx, str(path), "confine node-enroll to bootstrap-token Secrets in kube-system")
