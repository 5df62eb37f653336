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

# of-watchdog reads the function's stderr with a line scanner of 64 KiB (bufio.MaxScanTokenSize, its
# log_buffer_size): after one longer line it stops reading, the pipe fills, and every later write blocks,
# so the function hangs. Lines are kept well below that: long values are cut, with a note of how much.
MAX_LINE_BYTES = 16 * 1024
_KEEP = ("ts", "level", "fn", "event")

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
    line = _fit(record)
    stream = _stream or sys.stderr
    with _lock:
        stream.write(line + "\n")
        stream.flush()


def _shorten(value, limit: int):
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"…[{len(value) - limit} more chars]"
    if isinstance(value, dict):
        return {k: _shorten(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        items = [_shorten(v, limit) for v in value[: max(1, limit // 16)]]
        if len(value) > len(items):
            items.append(f"…[{len(value) - len(items)} more items]")
        return items
    return value


def _fit(record: dict) -> str:
    """The record as one JSON line of at most MAX_LINE_BYTES, long values cut first (longest budget first)."""
    line = json.dumps(record, ensure_ascii=False, default=str)
    limit = 4096
    while len(line.encode("utf-8")) > MAX_LINE_BYTES and limit >= 16:
        line = json.dumps(_shorten(record, limit), ensure_ascii=False, default=str)
        limit //= 4
    if len(line.encode("utf-8")) > MAX_LINE_BYTES:  # too many fields: keep the event, name what was dropped
        kept = {k: record[k] for k in _KEEP if k in record}
        kept["truncated_fields"] = [str(k)[:64] for k in record if k not in _KEEP][:64]
        line = json.dumps(_shorten(kept, 64), ensure_ascii=False, default=str)
    return line


def info(event: str, **fields) -> None:
    log(event, "info", **fields)


def warning(event: str, **fields) -> None:
    log(event, "warning", **fields)


def error(event: str, **fields) -> None:
    log(event, "error", **fields)
