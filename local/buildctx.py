"""Assemble a function's build context as ``faas-cli build --shrinkwrap`` does.

faas-cli copies the template into ``build/<fn>/`` (its ``function/`` scaffold
included: ``handler.py``, ``handler_test.py``, ``requirements.txt``, ``tox.ini``),
then the handler folder over ``build/<fn>/function/`` and every
``configuration.copy`` path into ``build/<fn>/function/<path>``. The template's
Dockerfile then touches ``function/__init__.py``, installs
``function/requirements.txt`` and copies ``function/`` to ``/home/app/function``,
where ``index.py`` imports ``function.handler``.

Given the template folder, the ``function/`` tree written here is byte for byte
faas-cli's plus that ``__init__.py`` (tests/foundation/test_build_context.py
checks it against the real faas-cli when both are there). Without one, the
template's scaffold files are simply absent: nothing at run time reads them
(``handler_test.py`` and ``tox.ini`` only serve the opt-in in-build tests), and
the rest of the tree is the same. Only ``function/`` is written; the served
runtime is then ``local/runtime.py``, or the template's own ``index.py`` in a
context that ``local/shrinkwrap.py`` has the real faas-cli write.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import stackfile

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def assemble(fn: stackfile.Function, stack: stackfile.Stack, out_dir: Path, *, template: Path | None = None) -> Path:
    """Write ``out_dir/<fn>/function/`` and return ``out_dir/<fn>``.

    ``template`` is the python3-http template folder; its ``function/`` scaffold goes
    in first and the handler's files over it, in faas-cli's order.
    """
    ctx = Path(out_dir) / fn.name
    if ctx.exists():
        shutil.rmtree(ctx)
    function_dir = ctx / "function"
    if template is not None and (Path(template) / "function").is_dir():
        shutil.copytree(Path(template) / "function", function_dir, ignore=_IGNORE, copy_function=shutil.copyfile)
        for d in [function_dir, *(p for p in function_dir.rglob("*") if p.is_dir())]:
            d.chmod(d.stat().st_mode | 0o700)  # copytree copied the (read-only) template's folder modes
    shutil.copytree(fn.handler, function_dir, ignore=_IGNORE, dirs_exist_ok=True)
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
