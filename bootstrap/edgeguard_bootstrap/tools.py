"""Install the CLIs a step needs (helm, faas-cli) with arkade when they are missing."""

from __future__ import annotations

import os
from pathlib import Path

from .engine import BootstrapError, Ctx

BIN = "/usr/local/bin"
ARKADE_INSTALL = "curl -sSL https://get.arkade.dev | sudo sh"


def _add_local_bin(ctx: Ctx) -> None:
    # Where we put the tools; on a real node it is on PATH already, under --root it is not.
    local_bin = str(ctx.host(BIN))
    path = ctx.env.get("PATH", "")
    if local_bin not in path.split(os.pathsep):
        ctx.env["PATH"] = path + os.pathsep + local_bin if path else local_bin


def ensure(ctx: Ctx, names: tuple[str, ...]) -> None:
    _add_local_bin(ctx)
    missing = [n for n in names if not ctx.which(n)]
    if not missing:
        return
    if not ctx.which("arkade"):
        if ctx.dry_run:
            # A dry run shows the whole plan: the missing tool is a failed check, and the plan goes on as if
            # it were installed (its read-only queries answer "not found").
            ctx.say(
                f"  !! FAIL {', '.join(missing)} not found and arkade is not installed: a real run stops here "
                f"(run `{ARKADE_INSTALL}`, or install {' and '.join(missing)} yourself); the plan goes on"
            )
            ctx.memo.setdefault("failed_checks", []).extend(missing)
            return
        raise BootstrapError(
            f"{', '.join(missing)} not found and arkade is not installed to fetch "
            f"{'them' if len(missing) > 1 else 'it'}: run `{ARKADE_INSTALL}` (or install "
            f"{' and '.join(missing)} yourself) and re-run"
        )
    for name in missing:
        ctx.run(["arkade", "get", name], why=f"{name} is needed and missing")
        downloaded = Path(ctx.env.get("HOME", os.path.expanduser("~"))) / ".arkade" / "bin" / name
        if ctx.dry_run:
            ctx.change(f"install {downloaded} as {BIN}/{name} (0755)")
            continue
        try:
            data = downloaded.read_bytes()
        except OSError:
            raise BootstrapError(f"arkade get {name} did not leave {downloaded}") from None
        ctx.write_file(f"{BIN}/{name}", data, mode=0o755, why=f"{name} from arkade")
