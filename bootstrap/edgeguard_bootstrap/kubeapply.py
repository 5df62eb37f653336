"""Apply a manifest file only when the cluster differs from it."""
from __future__ import annotations

from .engine import BootstrapError, Ctx


def apply_manifest(ctx: Ctx, path: str, why: str) -> None:
    """kubectl diff first, so an unchanged manifest is not re-applied (idempotent runs)."""
    diff = ctx.query(["kubectl", "diff", "-f", path], timeout=60)
    if diff.returncode == 0:
        ctx.unchanged(f"{path} already applied")
        return
    if diff.returncode == 1:
        ctx.say("\n".join("    " + line for line in ctx.redact(diff.stdout).rstrip().splitlines()))
    elif not ctx.dry_run:
        raise BootstrapError(f"kubectl diff -f {path} failed: {ctx.tail(diff.stderr, 300)}")
    else:
        ctx.note(f"kubectl diff -f {path} not possible yet: {ctx.tail(diff.stderr, 160)}")
    ctx.run(["kubectl", "apply", "-f", path], why=why)
    ctx.record({"kind": "kubectl", "file": path})
