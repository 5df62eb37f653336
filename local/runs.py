"""Local runs (``make up``, ``make demo``, a test's stack) that do not collide: a state folder each, and who runs.

Every run keeps its secrets, kubeconfig, spool, build contexts and logs in its own folder: ``STATE_DIR=``
(``--state-dir``), else ``.local-state/<port>/`` (``EDGEGUARD_STATE_ROOT`` moves ``.local-state``; the test
suite points it at a scratch folder so it never touches yours). A run writes ``run.json`` there (its pid,
port and kind) while it lives, so another run can say who is there before it starts, and two runs never
share one folder: the second would overwrite the first one's kubeconfig and find its spool locked.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE_ROOT_ENV = "EDGEGUARD_STATE_ROOT"
RUN_FILE = "run.json"
RUN_KIND_ENV = "EDGEGUARD_RUN_KIND"  # the Makefile says "make up" / "make demo"


class RunConflict(RuntimeError):
    """Another live run holds the state folder (or the port) this run asked for."""


def state_root() -> Path:
    return Path(os.environ.get(STATE_ROOT_ENV) or ROOT / ".local-state")


def default_state_dir(port: int) -> Path:
    return state_root() / str(port)


@dataclass(frozen=True)
class Run:
    kind: str  # "make up", "make demo", "python -m local.gateway", ...
    pid: int
    port: int
    state_dir: Path
    started: float

    def __str__(self) -> str:
        return f"{self.kind} is running (pid {self.pid}, port {self.port})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read(state_dir: Path) -> Run | None:
    """The live run that holds ``state_dir``, or None (no run.json, or its process is gone)."""
    state_dir = Path(state_dir).resolve()
    try:
        doc = json.loads((state_dir / RUN_FILE).read_text())
        run = Run(str(doc["kind"]), int(doc["pid"]), int(doc["port"]), state_dir, float(doc["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run if _alive(run.pid) else None


def _registry() -> Path:
    return state_root() / "runs"  # one entry per live run, wherever its folder is (STATE_DIR= included)


def active(exclude_pid: int | None = None) -> list[Run]:
    """Live runs, oldest first."""
    found = []
    reg = _registry()
    for entry in sorted(reg.glob("*.json")) if reg.is_dir() else []:
        try:
            run = read(Path(json.loads(entry.read_text())["state_dir"]))
        except (OSError, ValueError, KeyError, TypeError):
            run = None
        if run is None or str(run.pid) != entry.stem:
            entry.unlink(missing_ok=True)  # its run is gone (killed, say): forget it
        elif run.pid != exclude_pid:
            found.append(run)
    return sorted(found, key=lambda r: r.started)


def _write(path: Path, doc: dict) -> None:
    tmp = path.parent / f".{path.name}.{os.getpid()}"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def claim(state_dir: Path, port: int, kind: str) -> Run:
    """Take ``state_dir`` for this process, or raise RunConflict naming the live run that holds it."""
    state_dir = Path(state_dir).resolve()
    holder = read(state_dir)
    if holder is not None and holder.pid != os.getpid():
        raise RunConflict(
            f"{holder} in {state_dir}; give this run another folder with STATE_DIR=<dir> (or another PORT=<n>)"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    run = Run(kind, os.getpid(), port, state_dir, time.time())
    _write(state_dir / RUN_FILE, {"kind": kind, "pid": run.pid, "port": port, "started": run.started})
    _registry().mkdir(parents=True, exist_ok=True)
    _write(_registry() / f"{run.pid}.json", {"state_dir": str(state_dir)})
    return run


def release(state_dir: Path) -> None:
    state_dir = Path(state_dir).resolve()
    run = read(state_dir)
    if run is None or run.pid == os.getpid():
        (state_dir / RUN_FILE).unlink(missing_ok=True)
        (_registry() / f"{os.getpid()}.json").unlink(missing_ok=True)


def port_arg(text: str) -> int:
    """argparse type for a TCP port (``make demo PORT=abc`` gets a one-line error, not a traceback)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"PORT must be a number from 1 to 65535, not {text!r}")
    return port


def port_from_env(default: int = 8080) -> tuple[int | None, str | None]:
    """(port, error) from $PORT (make exports its command-line variables), the default when it is unset."""
    raw = os.environ.get("PORT", "")
    if not raw.strip():
        return default, None
    try:
        return port_arg(raw.strip()), None
    except argparse.ArgumentTypeError as exc:
        return None, str(exc)


def kind(module: str) -> str:
    """How the user started this run, as they would name it: ``make up`` / ``make demo`` (the Makefile sets
    EDGEGUARD_RUN_KIND for its own recipe only), else the module."""
    return os.environ.get(RUN_KIND_ENV) or f"python -m {module}"


def others(port: int | None = None) -> list[str]:
    """One line per live run of another process (what a starting run says before it starts)."""
    return [
        str(r) + (f", state in {r.state_dir}" if port is None or r.port != port else "")
        for r in active(exclude_pid=os.getpid())
    ]
