"""Configuration from environment variables and OpenFaaS secrets."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar, overload

from . import log

DEFAULT_SECRETS_DIR = "/var/openfaas/secrets"
T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is present but unusable; raised at start-up so the pod fails loudly."""


def secrets_dir() -> Path:
    # Overridable so the local gateway and tests can give each function its own folder.
    return Path(os.environ.get("EDGEGUARD_SECRETS_DIR", DEFAULT_SECRETS_DIR))


_cache: dict[Path, tuple[int, bytes]] = {}
_cache_lock = threading.Lock()
# path -> (the value before the last change, when it changed: Unix time): one rotation back, for auth's grace
_previous: dict[Path, tuple[bytes, float]] = {}


def read_secret_bytes(name: str) -> bytes | None:
    """Raw secret file content, or None when the secret is not mounted.

    Cached by mtime: OpenFaaS updates projected secrets in place, so a rotated
    token takes effect without a restart. The value it replaced is remembered
    (``previous_secret``) so that callers that still hold it get a grace period.
    """
    path = secrets_dir() / name
    try:
        mtime = path.stat().st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        with _cache_lock:
            _cache.pop(path, None)
            _previous.pop(path, None)  # a removed secret is no grace for its old value
        return None
    with _cache_lock:
        hit = _cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
    data = path.read_bytes()
    with _cache_lock:
        old = _cache.get(path)
        if old is not None and old[1] != data:
            # Rotated: from the file's own time (kubelet wrote it then), not from when we first noticed.
            _previous[path] = (old[1], min(time.time(), mtime / 1e9))
        _cache[path] = (mtime, data)
    return data


def previous_secret(name: str) -> tuple[str, float] | None:
    """(the value ``name`` held before its last rotation, when it rotated) if this process saw it rotate."""
    read_secret_bytes(name)  # notices a rotation that happened since the last read
    with _cache_lock:
        hit = _previous.get(secrets_dir() / name)
    if hit is None:
        return None
    value = hit[0].decode("utf-8", "replace").strip()
    return (value, hit[1]) if value else None


TOKEN_GRACE_ENV = "token_grace_seconds"
TOKEN_GRACE_DEFAULT = 600.0
_grace: list[float] = []


def token_grace_seconds() -> float:
    """How long a rotated token's previous value is still accepted (env ``token_grace_seconds``, default 600;
    0 turns it off). Read once: callers that cache tokens (Falco's URL) get the same window all along."""
    if not _grace:
        raw = os.environ.get("token_grace_seconds", "")  # TOKEN_GRACE_ENV, literal for the env-collision guard
        value = TOKEN_GRACE_DEFAULT if raw == "" else parse_duration(raw, TOKEN_GRACE_ENV)
        _grace.append(value)
    return _grace[0]


def read_secret(name: str) -> str | None:
    """A secret as text without surrounding whitespace.

    ``faas-cli secret create --from-file`` keeps the trailing newline, so it is
    always stripped. Values read here are registered with the log redactor.
    """
    data = read_secret_bytes(name)
    if data is None:
        return None
    value = data.decode("utf-8").strip()
    if value:
        log.register_secret(value)
    return value or None


@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: None = None) -> str | None: ...
def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"environment variable {name}={value} is below the minimum {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a number") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not a boolean (true/false)")


def gateway_url() -> str:
    """Base URL of the OpenFaaS gateway as seen from inside a function pod."""
    return env_str("gateway_url", "http://gateway.openfaas.svc.cluster.local:8080").rstrip("/")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value, name: str = "duration") -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"``.

    The forms of Go's durations that OpenFaaS users already write (exec_timeout,
    schedule windows), plus bare numbers meaning seconds. Negative or empty is an error.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not a duration like 30s, 5m or 1h30m")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{name}={value!r} must not be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    raise ConfigError(f"{name}={value!r} is not a duration like 30s, 5m or 1h30m")


class Startup(Generic[T]):
    """Settings read once, when the function starts; a bad value is a 503 naming it on every request.

    Every function reads its environment and settings secrets this one way: the loader runs at import,
    validates everything and raises ConfigError naming the variable. Crashing instead would only show up
    as a restart loop with the reason buried in the pod's log; a 503 tells every caller (curl, the API
    server's webhook log, Falco's retries) what to fix, and the function stays up to serve ``/metrics``.
    """

    def __init__(self, function: str, loader: Callable[[], T]):
        self.function = function
        self.error: str | None = None
        self._value: T | None = None
        try:
            self._value = loader()
        except ConfigError as exc:
            self.error = str(exc)
            log.error("config.invalid", error=self.error)

    def get(self) -> T:
        if self.error is not None:
            from .http import HTTPError  # http does not import config: no cycle, but keep the edge one-way

            raise HTTPError(503, f"{self.function} is misconfigured: {self.error}", misconfigured=True)
        return self._value  # type: ignore[return-value]
