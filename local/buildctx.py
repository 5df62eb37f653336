"""Assemble a function's build context as ``faas-cli build --shrinkwrap`` does.

faas-cli copies the template into ``build/<fn>/``, the handler folder into
``build/<fn>/function/`` and every ``configuration.copy`` path into
``build/<fn>/function/<path>``. The template's Dockerfile then installs
``function/requirements.txt`` and copies ``function/`` to ``/home/app/function``,
where ``index.py`` imports ``function.handler``. We have no Docker here, so the
"template" part of the context is our own runtime (``local/runtime.py``), and
the ``function/`` part is laid out byte for byte as faas-cli lays it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import stackfile

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def assemble(fn: stackfile.Function, stack: stackfile.Stack, out_dir: Path) -> Path:
    """Write ``out_dir/<fn>/function/`` and return ``out_dir/<fn>``."""
    ctx = Path(out_dir) / fn.name
    if ctx.exists():
        shutil.rmtree(ctx)
    function_dir = ctx / "function"
    shutil.copytree(fn.handler, function_dir, ignore=_IGNORE)
    base = stack.path.resolve().parent
    for rel in stack.copy:
        src = (base / rel).resolve()
        if src == base or base not in src.parents:
            raise stackfile.StackError(f"copy path {rel!r} must be inside the stack folder and not the folder itself")
        dest = function_dir / os.path.normpath(rel)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=_IGNORE, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    # The template's Dockerfile does `touch ./function/__init__.py`.
    (function_dir / "__init__.py").touch()
    return ctx


def assemble_all(out_dir: Path, stack: stackfile.Stack | None = None) -> dict[str, Path]:
    stack = stack or stackfile.load()
    return {name: assemble(fn, stack, out_dir) for name, fn in stack.functions.items()}
