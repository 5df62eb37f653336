"""Apply a manifest file only when the cluster differs from it."""

from __future__ import annotations

import re

from .engine import BootstrapError, Ctx

# kubectl diff cannot dry-run objects in a namespace the same file creates (kubernetes/kubernetes#114141):
# it stops with this error although `kubectl apply` of that file works.
_MISSING_NS = re.compile(r'namespaces "([a-z0-9-]+)" not found')


def apply_manifest(ctx: Ctx, path: str, why: str) -> bool:
    """kubectl diff first, so an unchanged manifest is not re-applied (idempotent runs). True when it is
    (or would be) applied."""
    if ctx.image:
        ctx.run(["kubectl", "apply", "-f", path], why=why)  # listed for the node's first boot
        return True
    diff = ctx.query(["kubectl", "diff", "-f", path], timeout=60)
    if diff.returncode == 0:
        ctx.unchanged(f"{path} already applied")
        return False
    missing = _MISSING_NS.search(diff.stderr or "") if diff.returncode > 1 else None
    if diff.returncode == 1:
        ctx.say("\n".join("    " + line for line in ctx.redact(diff.stdout).rstrip().splitlines()))
    elif missing:
        # Everything in a namespace that does not exist yet is new; if the file does not create it,
        # the apply below fails with kubectl's own message.
        ctx.note(
            f"namespace {missing.group(1)} does not exist yet, so kubectl diff cannot compare {path}; "
            "its objects there are all new"
        )
    elif not ctx.dry_run:
        raise BootstrapError(f"kubectl diff -f {path} failed: {ctx.tail(diff.stderr, 300)}")
    else:
        ctx.note(f"kubectl diff -f {path} not possible yet: {ctx.tail(diff.stderr, 160)}")
    ctx.run(["kubectl", "apply", "-f", path], why=why)
    ctx.record({"kind": "kubectl", "file": path})
    return True
