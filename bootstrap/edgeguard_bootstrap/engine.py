"""The change engine: every file write and command goes through a Ctx.

One object decides, for the whole run, whether something is only planned
(--dry-run) or done, prints what it is (with a unified diff for files), keeps
secret values out of everything it prints, backs up files it replaces, and
records what it did so `revert` can undo it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .executor import Executor

STATE_FILE = "/var/lib/edgeguard/bootstrap-state.json"
BACKUP_DIR = "/var/lib/edgeguard/backups"
HIDDEN = "<secret hidden>"


class BootstrapError(Exception):
    """A step cannot continue; the message is shown to the user (never a secret)."""


class Refused(BootstrapError):
    """A check failed and --force was not given."""


@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str = ""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Ctx:
    def __init__(
        self,
        root: str = "/",
        *,
        dry_run: bool = False,
        force: bool = False,
        yes: bool = False,
        out=None,
        stdin=None,
        env: dict | None = None,
        image: bool = False,
        executor: Executor | None = None,
    ):
        self.root = Path(root)
        # Every command, PATH look-up and HTTP GET of the run goes through this one object.
        self.executor = executor or Executor()
        self.dry_run = dry_run
        # --image: files go into an OS image under --root; commands belong to the node's
        # first boot, not to the machine preparing the image, so none is run.
        self.image = image
        self.deferred: list[str] = []
        self.force = force
        self.yes = yes
        self.out = out or sys.stdout
        self.stdin = stdin or sys.stdin
        self.env = dict(os.environ if env is None else env)
        self.changes = 0
        self._secrets: set[str] = set()
        self.memo: dict = {}  # values planned earlier in this run (dry-run has nothing on disk)
        self.state = self._load_state()

    # ---- paths -----------------------------------------------------------
    def host(self, path: str) -> Path:
        """Where a node path lives under --root."""
        return self.root / path.lstrip("/")

    # ---- output ----------------------------------------------------------
    def add_secret(self, value: str | bytes | None) -> None:
        if value:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            text = text.strip()
            # Every value, however short: bootstrap's own are long random strings, and an operator's short
            # one (kept from OpenFaaS) must not be the one that leaks. Masking a common short string in the
            # output costs readability only.
            if text:
                self._secrets.add(text)

    def redact(self, text: str) -> str:
        # Longest first so a value containing another is hidden whole.
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, HIDDEN)
        return text

    def tail(self, text: str | None, n: int) -> str:
        """The end of a command's output for a message: masked BEFORE it is cut, so a cut never splits a
        secret into an unrecognisable (and so unmasked) piece."""
        return self.redact((text or "").strip())[-n:]

    def say(self, text: str = "") -> None:
        print(self.redact(text), file=self.out)

    def section(self, title: str) -> None:
        self.say("")
        self.say(f"== {title}")

    def note(self, text: str) -> None:
        self.say(f"  note: {text}")

    def change(self, text: str) -> None:
        self.changes += 1
        prefix = "would " if self.dry_run else ""
        self.say(f"  [{prefix}change] {text}")

    def unchanged(self, text: str) -> None:
        self.say(f"  [ok] {text}")

    # ---- checks ----------------------------------------------------------
    def skip_in_image(self, name: str) -> Check | None:
        """With --image, a check of the machine preparing the image (its kernel, tools, cluster, network)
        says nothing about the node: SKIP, not FAIL."""
        if not self.image:
            return None
        return Check(name, "skip", "not checked with --image: it would describe this machine, not the node")

    def require(self, checks: list[Check], title: str = "checks") -> bool:
        """Print a table; refuse to go on after a failure unless --force."""
        print_table(self, checks)
        failed = [c for c in checks if c.status == "fail"]
        if not failed:
            return True
        names = ", ".join(c.name for c in failed)
        if self.image:
            self.say(f"  note: these checks describe this machine, not the image ({names} failed); going on")
            return False
        if self.dry_run:
            # Nothing changes in a dry run, so show the rest of the plan too.
            self.say(f"  !! failed {title} ({names}): a real run stops here unless --force; the plan goes on")
            return False
        if self.force:
            self.say(f"  !! continuing despite failed {title} ({names}) because of --force")
            return False
        raise Refused(f"refusing to continue: failed {title}: {names} (fix them, or re-run with --force)")

    # ---- files -----------------------------------------------------------
    def read(self, path: str) -> bytes | None:
        try:
            return self.host(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write_file(
        self,
        path: str,
        content: str | bytes,
        *,
        mode: int = 0o644,
        secret: bool = False,
        why: str = "",
        dir_mode: int = 0o755,
    ) -> bool:
        """Create or replace a node file; True when it changed (or would)."""
        data = content.encode("utf-8") if isinstance(content, str) else content
        if secret:
            self.add_secret(data)
            mode = 0o600
        target = self.host(path)
        old = self.read(path)
        old_mode = (target.stat().st_mode & 0o777) if old is not None else None
        if old == data and old_mode == mode:
            self.unchanged(f"{path} unchanged")
            return False
        if old is None:
            verb = "create"
        elif old == data:
            verb = f"chmod {old_mode:o} -> {mode:o}"
        else:
            verb = "update"
        extra = f" ({mode:04o}{', secret' if secret else ''})"
        self.change(f"{verb} {path}{extra}" + (f": {why}" if why else ""))
        if old != data:
            self.say(self.diff(path, old, data, secret))
        if self.dry_run:
            return True
        entry = self.state["files"].get(path)
        backup = entry.get("backup") if entry else None
        if old is not None and (entry is None or entry.get("sha256") != sha256(old)):
            # Someone else's content: keep it, so revert can put it back.
            backup = self._backup(path, old, old_mode)
            self.say(f"    backup of the previous {path}: {backup}")
        self._mkdirs(target.parent, dir_mode)
        tmp = target.with_name(f".{target.name}.edgeguard-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # umask must not widen or narrow what we asked for
        os.replace(tmp, target)
        self.state["files"][path] = {
            "sha256": sha256(data),
            "mode": mode,
            "backup": backup,
            "created": entry["created"] if entry else old is None,
        }
        self.save_state()
        return True

    def _mkdirs(self, directory: Path, dir_mode: int) -> None:
        missing = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir(mode=dir_mode)
            os.chmod(d, dir_mode)

    def _backup(self, path: str, data: bytes, mode: int | None) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        rel = f"{BACKUP_DIR}/{stamp}{path}"
        dest = self.host(rel)
        self._mkdirs(dest.parent, 0o700)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return rel

    def diff(self, path: str, old: bytes | None, new: bytes, secret: bool) -> str:
        def text(b: bytes | None) -> list[str]:
            if b is None:
                return []
            if secret:
                return [f"{HIDDEN} ({len(b)} bytes)\n"]
            try:
                return b.decode("utf-8").splitlines(keepends=True)
            except UnicodeDecodeError:
                return [f"<binary, {len(b)} bytes, sha256 {sha256(b)[:12]}>\n"]

        lines = difflib.unified_diff(
            text(old), text(new), fromfile=f"a{path}" if old is not None else "/dev/null", tofile=f"b{path}"
        )
        body = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
        return "\n".join("    " + line for line in self.redact(body).rstrip("\n").splitlines())

    def ensure_dir(self, path: str, mode: int, why: str = "") -> bool:
        target = self.host(path)
        if target.is_dir():
            if (target.stat().st_mode & 0o777) == mode:
                self.unchanged(f"{path}/ exists")
                return False
            self.change(f"chmod {mode:04o} {path}/" + (f": {why}" if why else ""))
            if not self.dry_run:
                os.chmod(target, mode)
            return True
        self.change(f"create directory {path}/ ({mode:04o})" + (f": {why}" if why else ""))
        if not self.dry_run:
            self._mkdirs(target, mode)
            self.state.setdefault("dirs", [])
            if path not in self.state["dirs"]:
                self.state["dirs"].append(path)
            self.save_state()
        return True

    def remove_file(self, path: str, why: str = "") -> bool:
        target = self.host(path)
        if not target.exists():
            return False
        self.change(f"remove {path}" + (f": {why}" if why else ""))
        if not self.dry_run:
            target.unlink()
        return True

    def restore_file(self, path: str, backup: str) -> None:
        data = self.read(backup)
        if data is None:
            raise BootstrapError(f"backup {backup} of {path} is missing; leaving {path} as it is")
        self.change(f"restore {path} from {backup}")
        if not self.dry_run:
            target = self.host(path)
            tmp = target.with_name(f".{target.name}.edgeguard-tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)

    # ---- commands --------------------------------------------------------
    def query(
        self, argv: list[str], *, input: str | None = None, env: dict | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """A read-only command: it runs even in --dry-run (never with --image)."""
        if self.image:
            return subprocess.CompletedProcess(argv, 125, "", f"{argv[0]}: not run (--image)")
        return self._exec(argv, input=input, env=env, timeout=timeout)

    def run(
        self,
        argv: list[str],
        *,
        why: str = "",
        input: str | None = None,
        env: dict | None = None,
        timeout: float = 900,
        check: bool = True,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess | None:
        """A command that changes the node or cluster: only printed in --dry-run."""
        shown = " ".join(shlex.quote(a) for a in argv)
        if env:
            shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shown
        if self.image:
            host_paths = self.redact(shown.replace(str(self.root).rstrip("/") + "/", "/"))
            self.say(f"  [first boot] {host_paths}" + (f"  ({why})" if why else ""))
            self.deferred.append(host_paths)
            return None
        self.change(f"run: {shown}" + (f"  ({why})" if why else ""))
        if self.dry_run:
            return None
        proc = self._exec(argv, input=input, env=env, timeout=timeout, cwd=cwd)
        if check and proc.returncode != 0:
            detail = self.tail(proc.stderr or proc.stdout, 800)
            raise BootstrapError(self.redact(f"`{shown}` failed with exit status {proc.returncode}: {detail}"))
        return proc

    def tool(self, argv: list[str], *, cwd: str, why: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
        """A local tool that writes only into the private directory `cwd` (openssl making keys): it changes
        nothing on the node by itself, so it runs for real and with --image (its files go into the image);
        callers do not call it in --dry-run. Its output is never shown (it may hold key material)."""
        shown = " ".join(shlex.quote(a) for a in argv)
        self.say(f"  [run] {self.redact(shown)}" + (f"  ({why})" if why else ""))
        proc = self._exec(argv, timeout=timeout, cwd=cwd)
        if proc.returncode != 0:
            raise BootstrapError(
                f"`{self.redact(shown)}` failed with exit status {proc.returncode}: {self.tail(proc.stderr, 300)}"
            )
        return proc

    def _exec(self, argv, *, input=None, env=None, timeout=120, cwd=None) -> subprocess.CompletedProcess:
        full_env = dict(self.env)
        if env:
            full_env.update(env)
        return self.executor.run(argv, input=input, env=full_env, timeout=timeout, cwd=cwd)

    def http_get(self, url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
        """A read-only HTTP GET (also in --dry-run): (status, body), status 0 when unreachable."""
        return self.executor.http_get(url, headers, timeout)

    def https_get(
        self, url: str, headers: dict, ca_pem: bytes, server_name: str | None, timeout: float = 10
    ) -> tuple[int, bytes]:
        return self.executor.https_get(url, headers, ca_pem, server_name, timeout)

    def which(self, name: str) -> str | None:
        return self.executor.which(name, self.env.get("PATH", os.defpath))

    def confirm(self, question: str) -> bool:
        if self.yes:
            return True
        if self.dry_run:
            return False
        try:
            tty = self.stdin.isatty()
        except (AttributeError, ValueError):
            tty = False
        if not tty:
            return False
        print(self.redact(f"{question} [y/N] "), end="", file=self.out, flush=True)
        answer = self.stdin.readline().strip().lower()
        return answer in ("y", "yes")

    # ---- state (for revert) ---------------------------------------------
    def _load_state(self) -> dict:
        raw = self.read(STATE_FILE)
        state = {"version": 1, "files": {}, "actions": []}
        if raw:
            try:
                loaded = json.loads(raw)
                if isinstance(loaded, dict):
                    state.update(loaded)
            except ValueError:
                raise BootstrapError(f"{STATE_FILE} is not valid JSON; move it away to start afresh") from None
        return state

    def record(self, action: dict) -> None:
        """Remember something to undo (deduplicated); kept across runs."""
        if action not in self.state["actions"]:
            self.state["actions"].append(action)
            self.save_state()

    def forget(self, action: dict) -> None:
        if action in self.state["actions"]:
            self.state["actions"].remove(action)
            self.save_state()

    def save_state(self) -> None:
        if self.dry_run:
            return
        target = self.host(STATE_FILE)
        self._mkdirs(target.parent, 0o700)
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (json.dumps(self.state, indent=1, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)
        os.replace(tmp, target)


def print_table(ctx: Ctx, checks: list[Check]) -> None:
    width = max([len(c.name) for c in checks] + [5])
    ctx.say(f"  {'check'.ljust(width)}  result  detail")
    for c in checks:
        first, *rest = (c.detail or "").splitlines() or [""]
        ctx.say(f"  {c.name.ljust(width)}  {c.status.upper():<6}  {first}")
        for line in rest:
            ctx.say(f"  {' ' * width}          {line}")
