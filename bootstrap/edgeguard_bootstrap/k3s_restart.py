"""Restarting k3s: once per run, after a yes.

k3s reads its audit flags, registries.yaml and embedded-registry only at start. `all` writes both
k3s-audit's and offline's files before restarting, so the API server goes down once (and the operator
is asked once); each step's after-restart work (the audit probe, waiting for pinned images) runs then.
A refused restart is remembered per step (`pending_key`) so a later run restarts even when no file
changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .engine import BootstrapError, Ctx

BATCH = "k3s_restart_batch"


@dataclass
class Request:
    changed: bool
    pending_key: str
    what: str  # "the audit policy and webhook"
    after: Callable[[bool], None]  # called with whether k3s restarted (and is ready again)


def batch(ctx: Ctx) -> None:
    """From now on, restarts are collected until flush()."""
    ctx.memo[BATCH] = []


def restart_then(ctx: Ctx, request: Request) -> None:
    queued = ctx.memo.get(BATCH)
    if queued is not None:
        queued.append(request)
        return
    _run(ctx, [request])


def flush(ctx: Ctx) -> None:
    queued = ctx.memo.pop(BATCH, None)
    if queued:
        _run(ctx, queued)


def _run(ctx: Ctx, requests: list[Request]) -> None:
    wanted = [r for r in requests if r.changed or ctx.state.get(r.pending_key, False)]
    restarted = restart(ctx, [r.pending_key for r in wanted], " and ".join(r.what for r in wanted)) if wanted else False
    if restarted:
        wait_ready(ctx)
    for r in requests:
        r.after(restarted)


def restart(ctx: Ctx, pending_keys: list[str], what: str) -> bool:
    """One `systemctl restart k3s` (after --yes or a yes at the prompt); True when it ran."""
    if ctx.dry_run:
        ctx.change(
            f"run: systemctl restart k3s  (loads {what}; only with --yes, or after a yes at the terminal prompt)"
        )
        return False
    if not ctx.confirm(f"k3s must restart to load {what} (the API server is down for a few seconds). Restart now?"):
        for key in pending_keys:
            ctx.state[key] = True
        ctx.save_state()
        ctx.say(f"  !! k3s NOT restarted: {what} take effect after `sudo systemctl restart k3s` (or re-run with --yes)")
        return False
    ctx.run(["systemctl", "restart", "k3s"], why=f"load {what}")
    for key in pending_keys:
        ctx.state[key] = False
    ctx.save_state()
    return True


def wait_ready(ctx: Ctx, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = ctx.query(["kubectl", "get", "--raw", "/readyz"], timeout=15)
        if proc.returncode == 0 and proc.stdout.strip() == "ok":
            ctx.say("  API server ready after the restart")
            return
        if time.monotonic() > deadline:
            raise BootstrapError(
                "the API server did not become ready within "
                f"{int(timeout)}s after the restart: check `journalctl -u k3s`"
            )
        time.sleep(2)
