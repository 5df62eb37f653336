"""Where the real OpenFaaS parts are: of-watchdog, faas-cli and the python3-http template.

They are test equipment a user's clone does not have, so every one is optional and
found from settings (environment variables; ``make`` passes its variables as these):

=====================  ==========================  =====================================================
setting                make variable               default
=====================  ==========================  =====================================================
``EDGEGUARD_TOOLS``    ``TOOLS``                   ``../shared/tools`` next to the repository
``EDGEGUARD_WATCHDOG`` ``WATCHDOG``                ``$TOOLS/openfaas/of-watchdog``
``EDGEGUARD_FAAS_CLI`` ``FAAS_CLI``                ``$TOOLS/openfaas/faas-cli``, else ``faas-cli`` on PATH
``EDGEGUARD_TEMPLATE`` ``TEMPLATE``                ``./template/python3-http`` (what ``faas-cli template
                                                   pull stack`` writes), else ``$TOOLS/openfaas/template/
                                                   python3-http``
``EDGEGUARD_RUNTIME``  ``RUNTIME``                 ``auto``: the real runtime when all three are found
=====================  ==========================  =====================================================

The watchdog is never looked up on PATH: several of them run on one host only with
the ``metrics_port`` patch that ../shared/tools/openfaas carries (upstream binds 8081).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIMES = ("auto", "watchdog", "local")
# Every test that skips for want of a real part says so with this prefix; CI fails such skips
# (EDGEGUARD_REQUIRE_REAL_COMPONENTS=1, tests/conftest.py).
REAL_PREFIX = "needs real component:"


def needs_real(what: str) -> str:
    """A skip reason naming the missing part and the setting that provides it."""
    return f"{REAL_PREFIX} {what}"


class ComponentError(RuntimeError):
    """A setting names a component that is not there, or asks for a runtime that cannot run."""


@dataclass(frozen=True)
class Components:
    tools: Path | None
    watchdog: Path | None
    faas_cli: Path | None
    template: Path | None
    runtime: str  # the EDGEGUARD_RUNTIME setting: auto, watchdog or local

    def missing_for_watchdog(self) -> list[str]:
        """What the real runtime lacks, each named with the setting that would provide it."""
        missing = []
        if self.watchdog is None:
            missing.append("of-watchdog (EDGEGUARD_WATCHDOG / make WATCHDOG=)")
        if self.faas_cli is None:
            missing.append("faas-cli (EDGEGUARD_FAAS_CLI / make FAAS_CLI=)")
        if self.template is None:
            missing.append("the python3-http template folder (EDGEGUARD_TEMPLATE / make TEMPLATE=)")
        return missing

    def watchdog_skip_reason(self) -> str | None:
        """Why a test that needs the real runtime cannot run here, or None when it can."""
        if self.runtime == "local":
            return needs_real("of-watchdog; EDGEGUARD_RUNTIME=local asks for the stand-in runtime")
        missing = self.missing_for_watchdog()
        return needs_real(", ".join(missing) + " (or EDGEGUARD_TOOLS=<../shared/tools>)") if missing else None

    @property
    def use_watchdog(self) -> bool:
        if self.runtime == "local":
            return False
        missing = self.missing_for_watchdog()
        if self.runtime == "watchdog" and missing:
            raise ComponentError("EDGEGUARD_RUNTIME=watchdog, but these are missing: " + "; ".join(missing))
        return not missing


def _explicit(env: Mapping[str, str], name: str, *, folder: bool = False) -> Path | None:
    raw = env.get(name, "")
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (ROOT / path).resolve()
    ok = path.is_dir() if folder else (path.is_file() and os.access(path, os.X_OK))
    if not ok:
        what = "a folder" if folder else "an executable file"
        raise ComponentError(f"{name}={raw} is not {what}")
    return path


def _first(*candidates: Path | None, folder: bool = False) -> Path | None:
    for c in candidates:
        if c is not None and (c.is_dir() if folder else (c.is_file() and os.access(c, os.X_OK))):
            return c
    return None


def locate(env: Mapping[str, str] | None = None) -> Components:
    env = os.environ if env is None else env
    tools = _explicit(env, "EDGEGUARD_TOOLS", folder=True) or _first(ROOT.parent / "shared" / "tools", folder=True)
    openfaas = tools / "openfaas" if tools else None
    watchdog = _explicit(env, "EDGEGUARD_WATCHDOG") or _first(openfaas / "of-watchdog" if openfaas else None)
    on_path = shutil.which("faas-cli", path=env.get("PATH"))
    faas_cli = _explicit(env, "EDGEGUARD_FAAS_CLI") or _first(
        openfaas / "faas-cli" if openfaas else None, Path(on_path) if on_path else None
    )
    template = _explicit(env, "EDGEGUARD_TEMPLATE", folder=True) or _first(
        ROOT / "template" / "python3-http", openfaas / "template" / "python3-http" if openfaas else None, folder=True
    )
    runtime = (env.get("EDGEGUARD_RUNTIME") or "auto").strip().lower()
    if runtime not in RUNTIMES:
        raise ComponentError(f"EDGEGUARD_RUNTIME={runtime!r} must be one of {', '.join(RUNTIMES)}")
    return Components(tools=tools, watchdog=watchdog, faas_cli=faas_cli, template=template, runtime=runtime)
