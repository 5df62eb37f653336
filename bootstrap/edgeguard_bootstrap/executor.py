"""The one place bootstrap reaches the host: commands, PATH look-ups and plain HTTP GETs.

Ctx holds one Executor for the whole run and every step goes through it, so whether a command is only
planned (--dry-run, --image) is decided in one place (engine.Ctx), and tests hand in their own executor
(tests/bootstrap/inproc.py answers every host command in-process from a simulated node).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request


class Executor:
    def run(
        self, argv: list[str], *, input: str | None = None, env: dict, timeout: float = 120, cwd: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run argv with exactly `env`; a missing program is exit 127, a timeout exit 124 (as the shell)."""
        try:
            return subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                cwd=cwd,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError:
            return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"{argv[0]}: timed out after {timeout}s")

    def which(self, name: str, path: str | None) -> str | None:
        return shutil.which(name, path=path if path is not None else os.defpath)

    def http_get(self, url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
        """(status, body); status 0 with the reason as body when nothing answered."""
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (operator-given URL)
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read() if exc.fp else b""
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return 0, str(getattr(exc, "reason", exc)).encode()

    def https_get(
        self, url: str, headers: dict, ca_pem: bytes, server_name: str | None, timeout: float = 10
    ) -> tuple[int, bytes]:
        """A GET that trusts only `ca_pem` and checks `server_name` (the audit front's own CA)."""
        from .audit_tls import https_get

        return https_get(url, headers, ca_pem, server_name, timeout=timeout)
