"""Structured logs: one JSON object per line on stderr, never a secret value.

Two layers keep secrets out: field names that look sensitive are replaced, and
every secret read through ``config.read_secret`` (or registered explicitly) is
masked wherever it appears in a value.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time

_SENSITIVE_KEY = re.compile(r"(?i)(token|secret|password|passwd|authorization|api[-_]?key|private[-_]?key|credential)")
REDACTED = "[redacted]"

_secrets: set[str] = set()
_lock = threading.Lock()
_stream = None  # tests may point this at a buffer


def register_secret(value: str) -> None:
    """Mask this exact value in every later log line, however short: a leak matters more than noise."""
    if value:
        with _lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


def _clean(value, depth=0):
    if depth > 6:
        return "…"
    if isinstance(value, dict):
        return {str(k): (REDACTED if _SENSITIVE_KEY.search(str(k)) else _clean(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return scrub(str(value))


def log(event: str, level: str = "info", **fields) -> None:
    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
        "level": level,
        "fn": os.environ.get("OPENFAAS_NAME") or os.environ.get("EDGEGUARD_FUNCTION", ""),
        "event": event,
    }
    record.update(_clean(fields))
    line = json.dumps(record, ensure_ascii=False, default=str)
    stream = _stream or sys.stderr
    with _lock:
        stream.write(line + "\n")
        stream.flush()


def info(event: str, **fields) -> None:
    log(event, "info", **fields)


def warning(event: str, **fields) -> None:
    log(event, "warning", **fields)


def error(event: str, **fields) -> None:
    log(event, "error", **fields)
