"""Build contexts written by the real ``faas-cli build --shrinkwrap``, in a scratch folder.

faas-cli resolves ``handler:`` and ``configuration.copy`` paths against its working
directory and reads templates from ``./template/<lang>``, and it writes ``./build/``.
Running it in the user's checkout would leave ``template/`` and ``build/`` there, so it
runs in a scratch root instead: the top-level folders those paths start with are
symlinked in (faas-cli follows them), and the template folder is copied to
``template/<lang>`` (faas-cli does not accept a symlink there: "template ... not found").
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from . import stackfile


class ShrinkwrapError(RuntimeError):
    pass


def _first_component(rel: str) -> str:
    parts = [p for p in PurePosixPath(rel).parts if p not in (".", "")]
    if not parts or parts[0] == ".." or PurePosixPath(rel).is_absolute():
        raise ShrinkwrapError(f"path {rel!r} must be inside the stack folder")
    return parts[0]


def prepare_root(stack: stackfile.Stack, template: Path, root: Path) -> Path:
    """A scratch folder faas-cli can build ``stack`` in, without touching the stack's own folder."""
    base = stack.path.resolve().parent
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    tops = {_first_component(str(fn.raw["handler"])) for fn in stack.functions.values()}
    tops |= {_first_component(rel) for rel in stack.copy}
    for top in sorted(tops - {"template", "build"}):
        if (base / top).exists():
            os.symlink(base / top, root / top)
    for lang in sorted({fn.lang for fn in stack.functions.values()}):
        dest = root / "template" / lang
        shutil.copytree(template, dest)
        for p in [dest, *dest.rglob("*")]:  # ../shared is read-only; faas-cli copies modes into build/
            p.chmod(p.stat().st_mode | 0o200)
    return root


def build(
    stack: stackfile.Stack, *, faas_cli: Path, template: Path, root: Path, env: dict | None = None, timeout: float = 60
) -> dict[str, Path]:
    """Run ``faas-cli build --shrinkwrap`` for every function; return ``{name: root/build/<name>}``."""
    prepare_root(stack, template, root)
    cmd = [str(faas_cli), "build", "--shrinkwrap", "-f", str(stack.path.resolve())]
    run_env = dict(os.environ if env is None else env)
    run_env.setdefault("NO_COLOR", "1")
    proc = subprocess.run(cmd, cwd=root, env=run_env, capture_output=True, text=True, timeout=timeout)
    out = {name: root / "build" / name for name in stack.functions}
    missing = [n for n, p in out.items() if not (p / "function").is_dir()]
    if proc.returncode != 0 or missing:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise ShrinkwrapError(
            f"{' '.join(cmd)} (in {root}) exited {proc.returncode}; "
            f"no build context for {missing or 'some functions'}:\n{tail}"
        )
    return out
