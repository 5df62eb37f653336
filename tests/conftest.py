"""Shared fixtures: functions loaded or served from build contexts assembled as faas-cli does."""
from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from local import buildctx, stackfile

pytest_plugins = ["tests.realkube"]  # the real control plane for the `cluster` tests

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
_counter = itertools.count()


def make_event(method="POST", path="/", body=b"", headers=None, query=None):
    """An event shaped like the python3-http template's (bytes body, werkzeug headers and query)."""
    from werkzeug.datastructures import Headers, ImmutableMultiDict

    if isinstance(body, str):
        body = body.encode("utf-8")
    return SimpleNamespace(body=body, headers=Headers(list((headers or {}).items())), method=method.upper(),
                           query=ImmutableMultiDict(list((query or {}).items())), path=path)


@pytest.fixture(name="make_event")
def make_event_fixture():
    return make_event


def write_secrets(directory: Path, secrets: dict | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in (secrets or {}).items():
        p = directory / name
        p.write_bytes(value if isinstance(value, bytes) else str(value).encode("utf-8"))
        p.chmod(0o600)
    return directory


@pytest.fixture
def load_function(tmp_path, monkeypatch):
    """Factory: import a function's handler from an assembled build context, in this process.

    The context is imported under a unique package name so several functions (or
    several copies of one) coexist, each with its own ``edgeguard`` module state,
    as separate images would.
    """
    loaded: list[str] = []
    stack = stackfile.load()

    def load(name: str, env: dict | None = None, secrets: dict | None = None):
        fn = stack.functions[name]
        n = next(_counter)
        ctx = buildctx.assemble(fn, stack, tmp_path / f"build-{n}")
        secrets_dir = write_secrets(tmp_path / f"secrets-{name}-{n}", secrets)
        for k, v in {**fn.environment, **(env or {})}.items():
            monkeypatch.setenv(k, str(v))
        monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(secrets_dir))
        monkeypatch.setenv("OPENFAAS_NAME", name)
        pkg = f"_fn_{name.replace('-', '_')}_{n}"
        spec = importlib.util.spec_from_file_location(pkg, ctx / "function" / "__init__.py",
                                                      submodule_search_locations=[str(ctx / "function")])
        module = importlib.util.module_from_spec(spec)
        sys.modules[pkg] = module
        spec.loader.exec_module(module)
        loaded.append(pkg)
        handler = importlib.import_module(f"{pkg}.handler")
        handler.secrets_dir = secrets_dir  # lets a test rotate or remove a secret
        return handler

    yield load
    for pkg in loaded:
        for mod in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
            del sys.modules[mod]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedFunction:
    """A function's build context served over HTTP by the python3-http runtime in its own process."""

    def __init__(self, name: str, context: Path, env: dict, log_path: Path):
        self.name, self.context, self.env, self.log_path = name, context, env, log_path
        self.proc = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServedFunction":
        self.port = _free_port()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "local" / "runtime.py"), "--context", str(self.context),
                                      "--port", str(self.port)], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen in time")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(10)

    def restart(self) -> "ServedFunction":
        self.stop()
        return self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def serve_function(tmp_path):
    """Factory: serve a function over real HTTP in a subprocess; stopped at teardown."""
    served: list[ServedFunction] = []
    stack = stackfile.load()

    def serve(name: str, env: dict | None = None, secrets: dict | None = None) -> ServedFunction:
        fn = stack.functions[name]
        n = next(_counter)
        ctx = buildctx.assemble(fn, stack, tmp_path / f"served-{n}")
        secrets_dir = write_secrets(tmp_path / f"served-secrets-{name}-{n}", secrets)
        full_env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
        full_env.update(fn.environment)
        full_env.update({"EDGEGUARD_SECRETS_DIR": str(secrets_dir), "OPENFAAS_NAME": name,
                         "HOSTNAME": f"{name}-test", "PYTHONUNBUFFERED": "1"})
        full_env.update({k: str(v) for k, v in (env or {}).items()})
        sf = ServedFunction(name, ctx, full_env, tmp_path / f"{name}-{n}.log").start()
        sf.secrets_dir = secrets_dir
        served.append(sf)
        return sf

    yield serve
    for sf in served:
        sf.stop(kill=True)
