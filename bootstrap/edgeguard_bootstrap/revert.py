"""revert: undo what bootstrap recorded in its state file, newest first."""

from __future__ import annotations

import json
import os

from . import k3s_audit, offline, secretstore
from .engine import STATE_FILE, Ctx, sha256


def run(ctx: Ctx, *, gateway: str) -> None:
    ctx.section("revert: undo what edgeguard-bootstrap did")
    # Known before any command runs, so a failing faas-cli or kubectl that echoes a value is masked too.
    for name in secretstore.ALL:
        secretstore.local(ctx, name)
    actions = list(ctx.state.get("actions", []))
    files = dict(ctx.state.get("files", {}))
    if not actions and not files and not ctx.state.get("dirs"):
        ctx.say(f"  nothing recorded in {STATE_FILE}")
        return
    for action in reversed(actions):
        undo(ctx, action, gateway)
        if not ctx.dry_run:
            ctx.forget(action)
    audit_touched = False
    for path, entry in sorted(files.items(), reverse=True):
        current = ctx.read(path)
        if current is None:
            ctx.unchanged(f"{path} already gone")
            if not ctx.dry_run:
                ctx.state["files"].pop(path, None)
                ctx.save_state()
            continue
        if entry.get("sha256") and sha256(current) != entry["sha256"] and not ctx.force:
            ctx.say(f"  !! {path} changed since bootstrap wrote it; left in place (--force reverts it anyway)")
            continue
        elif entry.get("backup"):
            ctx.restore_file(path, entry["backup"])
        else:
            ctx.remove_file(path, "written by bootstrap")
        audit_touched |= path in (
            k3s_audit.DROPIN,
            k3s_audit.POLICY,
            k3s_audit.WEBHOOK,
            offline.REGISTRIES,
            offline.DROPIN,
        )
        if not ctx.dry_run:
            ctx.state["files"].pop(path, None)
            ctx.save_state()
    for d in sorted(ctx.state.get("dirs", []), reverse=True):
        target = ctx.host(d)
        if target.is_dir() and not any(target.iterdir()):
            ctx.change(f"remove empty directory {d}/")
            if not ctx.dry_run:
                target.rmdir()
    if audit_touched:
        ctx.state["k3s_restart_pending"] = False
        k3s_audit.restart_k3s(ctx, True)
    if not ctx.dry_run:
        ctx.state["dirs"] = []
        ctx.save_state()


def undo(ctx: Ctx, action: dict, gateway: str) -> None:
    kind = action.get("kind")
    if kind == "helm":
        listed = ctx.query(["helm", "list", "-n", action["namespace"], "-o", "json"])
        names = {r.get("name") for r in json.loads(listed.stdout or "[]")} if listed.returncode == 0 else set()
        if action["release"] not in names:
            ctx.unchanged(f"helm release {action['release']} not installed")
            return
        ctx.run(["helm", "uninstall", action["release"], "-n", action["namespace"]])
    elif kind == "helm-rollback":
        # Values overlaid on a release bootstrap did not install: back to the revision before them.
        if action.get("revision"):
            ctx.run(["helm", "rollback", action["release"], action["revision"], "-n", action["namespace"], "--wait"])
        else:
            ctx.say(f"  !! no earlier revision recorded for helm release {action['release']}; left as it is")
    elif kind == "systemd":
        ctx.run(["systemctl", "disable", "--now", action["unit"]])
    elif kind == "apt":
        ctx.run(["apt-get", "remove", "-y", action["package"]], env={"DEBIAN_FRONTEND": "noninteractive"})
    elif kind == "kubectl":
        if os.path.exists(action["file"]):
            ctx.run(["kubectl", "delete", "--ignore-not-found", "-f", action["file"]])
        else:
            ctx.say(f"  !! {action['file']} is gone; delete its objects by hand")
    elif kind == "faas-secret":
        ctx.run(["faas-cli", "secret", "remove", action["name"], "--gateway", gateway])
    else:
        ctx.say(f"  !! unknown recorded action {action!r}; skipped")
