"""An Executor that answers the fake node's commands in-process (no process per call).

The fake executables stay on the test PATH (bootstrap's `which` must find them, and arkade's copies of
them), but a call to one runs fakecmd's handler here, with the command's own environment and cwd, and
is recorded exactly as the spawned fake records it. Anything else (a real tool) runs for real.
"""

from __future__ import annotations

import contextlib
import io
import subprocess

import fakecmd

from edgeguard_bootstrap.executor import Executor

STUB_MARK = b"import fakecmd\n"


class InProcess(Executor):
    def __init__(self):
        self.calls = 0

    def run(self, argv, *, input=None, env, timeout=120, cwd=None):
        exe = self.which(argv[0], env.get("PATH")) if "/" not in argv[0] else argv[0]
        if exe is None or not _is_stub(exe):
            return super().run(argv, input=input, env=env, timeout=timeout, cwd=cwd)
        self.calls += 1
        stdout, stderr = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                fakecmd.main([exe, *argv[1:]], env=env, cwd=cwd, inprocess=True)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def _is_stub(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return STUB_MARK in f.read(4096)
    except OSError:
        return False
