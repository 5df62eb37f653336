"""Start one function the way its pod starts it: under the real of-watchdog, or under local/runtime.py.

Real runtime (``of-watchdog``): the context is what ``faas-cli build --shrinkwrap``
wrote (local/shrinkwrap.py), with ``function/__init__.py`` touched as the template's
Dockerfile does, and only ``port=5000`` in ``index.py`` changed to a free port. The
watchdog runs in that folder with the environment of the image's ship stage (the
Dockerfile's ``ENV`` lines: ``fprocess``, ``cgi_headers``, ``mode``, ``upstream_url``),
then every ``environment:`` entry of stack.yml, then what the platform adds, exactly
in the order a pod gets them: so a stack.yml key that is also one of the watchdog's
own settings overrides the image's, as it does on Kubernetes. Only the loopback
plumbing (``port``, ``upstream_url``, ``metrics_port`` and a private ``TMPDIR`` for the
lock file) is ours, and ``python`` on its PATH is this interpreter.

Stand-in (``local``): local/runtime.py serves a context local/buildctx.py wrote.

Either way a function is one process group, its output (for the watchdog: the
watchdog's own log, which carries the function's stderr) goes to one log file, and
it is SIGTERMed when the process that started it dies.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import buildctx, components, shrinkwrap, stackfile

RUNTIME_PY = Path(__file__).resolve().parent / "runtime.py"
INDEX_PORT = "port=5000"
_KEEP_FROM_HOST = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
# of-watchdog (prefix_logs, default true) writes each line of the function's output as
# "2026/12/04 18:23:15 stderr: <line>"; the stand-in passes lines unchanged.
_WATCHDOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:stderr|stdout): ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child: ask Linux to SIGTERM it when its parent dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def image_env(template: Path | None) -> dict:
    """The ``ENV`` settings of the template Dockerfile's last stage, without PATH (the host's is used)."""
    if template is None or not (Path(template) / "Dockerfile").is_file():
        return {}
    env: dict = {}
    for line in (Path(template) / "Dockerfile").read_text().splitlines():
        words = line.strip()
        if words.upper().startswith("FROM "):
            env = {}  # only the stage that ships counts
        elif words.upper().startswith("ENV "):
            parts = shlex.split(words[4:])
            pairs = (
                [p.split("=", 1) for p in parts]
                if all("=" in p for p in parts)
                else [parts[:1] + [" ".join(parts[1:])]]
            )
            for key, value in pairs:
                if key != "PATH" and "$" not in value:
                    env[key] = value
    return env


def host_env() -> dict:
    return {k: v for k, v in os.environ.items() if k in _KEEP_FROM_HOST}


class FunctionProcess:
    """One function's process group, its log file, and how to tell it is ready."""

    kind = "?"

    def __init__(self, name: str, context: Path, env: dict, log_path: Path, *, echo_logs: bool = False):
        self.name, self.context, self.env, self.log_path = name, Path(context), dict(env), Path(log_path)
        self.echo_logs = echo_logs
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> tuple[list[str], dict, Path]:
        raise NotImplementedError

    def start(self) -> FunctionProcess:
        cmd, env, cwd = self._command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Straight to the file, not through a pipe we read: if the starter dies, a watchdog writing to a
        # broken pipe dies of SIGPIPE before it can pass SIGTERM on, and its python child lives on.
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self.proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        if self.echo_logs:
            threading.Thread(target=self._echo, args=(self.proc, offset), daemon=True).start()
        return self

    def _echo(self, proc: subprocess.Popen, offset: int) -> None:
        """Copy what the function logs to our stderr (make up), following the log file."""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            while True:
                line = log.readline()
                if line.endswith(b"\n"):
                    sys.stderr.write(f"[{self.name}] {line.decode('utf-8', 'replace')}")
                    continue
                if proc.poll() is not None:
                    return
                log.seek(log.tell() - len(line))
                time.sleep(0.1)

    def _ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, deadline: float) -> FunctionProcess:
        proc = self.proc
        if proc is None:
            raise RuntimeError(f"function {self.name} was never started")
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"function {self.name} exited with {proc.returncode} under {self.kind} at "
                    f"start-up; the last lines of {self.log_path}:\n{self.last_lines()}"
                )
            if self._ready():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"function {self.name} was not ready in time under {self.kind}; see {self.log_path}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    def restart(self) -> FunctionProcess:
        self.stop()
        return self.start().wait_ready(time.monotonic() + 30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def last_lines(self, n: int = 20) -> str:
        """The end of the log, indented: what a function that died at start-up said last (its reason)."""
        return "\n".join("    " + line[:400] for line in self.logs().splitlines()[-n:])

    def log_records(self) -> list[dict]:
        """The function's JSON log lines (edgeguard/log.py), with the watchdog's prefix taken off."""
        records = []
        for line in self.logs().splitlines():
            text = _WATCHDOG_PREFIX.sub("", line, count=1).strip()
            if text.startswith("{"):
                try:
                    records.append(json.loads(text))
                except ValueError:
                    pass
        return records


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class LocalRuntimeProcess(FunctionProcess):
    kind = "local/runtime.py"

    def _command(self):
        self.port = free_port()
        env = dict(self.env, PYTHONUNBUFFERED="1")
        return (
            [sys.executable, str(RUNTIME_PY), "--context", str(self.context), "--port", str(self.port)],
            env,
            self.context,
        )

    def _ready(self) -> bool:
        return self.port is not None and _accepts(self.port)


class WatchdogProcess(FunctionProcess):
    kind = "of-watchdog"

    def __init__(self, name, context, env, log_path, *, watchdog: Path, python_dir: Path, **kw):
        super().__init__(name, context, env, log_path, **kw)
        self.watchdog = watchdog
        self.python_dir = python_dir
        index = self.context / "index.py"
        as_built = self.context.parent / f".{self.context.name}-index.py"  # index.py as faas-cli wrote it
        if not as_built.exists():
            as_built.write_text(index.read_text())
        self._index_text = as_built.read_text()
        if self._index_text.count(INDEX_PORT) != 1:
            raise RuntimeError(f"{index}: expected exactly one '{INDEX_PORT}' to move to a free port")
        (self.context / "function" / "__init__.py").touch()  # the Dockerfile's `touch ./function/__init__.py`
        self.upstream_port: int | None = None
        self.metrics_port: int | None = None

    def _command(self):
        self.port, self.upstream_port, self.metrics_port = free_port(), free_port(), free_port()
        (self.context / "index.py").write_text(self._index_text.replace(INDEX_PORT, f"port={self.upstream_port}"))
        tmp = self.context.parent / f".{self.context.name}-tmp"
        tmp.mkdir(exist_ok=True)
        env = dict(self.env)
        env.update(
            {
                "port": str(self.port),
                "upstream_url": f"http://127.0.0.1:{self.upstream_port}",
                "metrics_port": str(self.metrics_port),
                "TMPDIR": str(tmp),
                "PATH": os.pathsep.join([str(self.python_dir), env.get("PATH", os.defpath)]),
            }
        )
        return [str(self.watchdog)], env, self.context

    def _ready(self) -> bool:
        # The watchdog's /_/health says OK as soon as it listens, before waitress does (as in a pod):
        # ready means the function itself accepts connections, and the watchdog is healthy.
        if self.upstream_port is None or not _accepts(self.upstream_port):
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/_/health", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False


def python_dir(scratch: Path) -> Path:
    """A folder whose ``python`` is this interpreter (the watchdog runs ``python index.py`` from PATH)."""
    exe = Path(sys.executable)
    candidate = exe.parent / "python"
    if candidate.exists() and os.path.samefile(candidate, exe):
        return exe.parent
    shim = Path(scratch) / "python-bin"
    shim.mkdir(parents=True, exist_ok=True)
    if not (shim / "python").exists():
        os.symlink(exe, shim / "python")
    return shim


class Runtime:
    """The runtime every function of a stack (or a test session) is served with."""

    def __init__(self, comps: components.Components | None = None):
        self.components = comps or components.locate()
        self.watchdog = self.components.use_watchdog
        self.name = "of-watchdog" if self.watchdog else "local/runtime.py"

    # The real watchdog answers 504 itself at exec_timeout; the stand-in needs the gateway to.
    @property
    def enforces_exec_timeout(self) -> bool:
        return self.watchdog

    def describe(self) -> str:
        c = self.components
        if self.watchdog:
            return (
                f"real: of-watchdog {c.watchdog} (mode=http) in front of the template's index.py, "
                f"build contexts from {c.faas_cli} build --shrinkwrap, template {c.template}"
            )
        why = "EDGEGUARD_RUNTIME=local" if c.runtime == "local" else "missing " + "; ".join(c.missing_for_watchdog())
        layout = f"template {c.template}" if c.template else "no template folder: its function/ scaffold is left out"
        return f"stand-in: local/runtime.py over local/buildctx.py contexts ({layout}); {why}"

    def build_contexts(self, stack: stackfile.Stack, out_dir: Path, names=None) -> dict[str, Path]:
        names = list(stack.functions) if names is None else list(names)
        if self.watchdog:
            # use_watchdog is true only when all three parts were found
            assert self.components.faas_cli is not None and self.components.template is not None
            built = shrinkwrap.build(
                stack,
                faas_cli=self.components.faas_cli,
                template=self.components.template,
                root=Path(out_dir) / "faas-cli",
            )
            return {n: built[n] for n in names}
        return {
            n: buildctx.assemble(stack.functions[n], stack, Path(out_dir), template=self.components.template)
            for n in names
        }

    def base_env(self, fn: stackfile.Function) -> dict:
        """Host basics, then the image's ENV, then stack.yml's ``environment:`` (a pod's order)."""
        env = host_env()
        env.update(image_env(self.components.template))
        env.update(fn.environment)
        return env

    def process(
        self,
        name: str,
        context: Path,
        env: dict,
        log_path: Path,
        *,
        echo_logs: bool = False,
        scratch: Path | None = None,
    ) -> FunctionProcess:
        if self.watchdog:
            assert self.components.watchdog is not None
            return WatchdogProcess(
                name,
                context,
                env,
                log_path,
                echo_logs=echo_logs,
                watchdog=self.components.watchdog,
                python_dir=python_dir(scratch or Path(context).parent),
            )
        return LocalRuntimeProcess(name, context, env, log_path, echo_logs=echo_logs)
