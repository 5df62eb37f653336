"""Falco's JSON alert, exactly as ``json_output``/``http_output`` write it.

Key order, separators, time format and priority names follow Falco 0.41
(``formats.cpp``): keys sorted, compact, UTF-8 unescaped, ``time`` in UTC with
nanoseconds and ``Z``.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

# Most severe first; the index is Falco's priority number.
PRIORITIES = ("Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug")
_BY_LOWER = {p.lower(): i for i, p in enumerate(PRIORITIES)}
_BY_LOWER["info"] = PRIORITIES.index("Informational")  # the one alias Falco accepts


def priority_number(name: str) -> int:
    """Falco's number for a priority name (0 = Emergency); case-insensitive, ``info`` accepted."""
    if not isinstance(name, str) or name.strip().lower() not in _BY_LOWER:
        raise ValueError(f"unknown priority {name!r}; expected one of {', '.join(PRIORITIES)}")
    return _BY_LOWER[name.strip().lower()]


def priority_name(name_or_number) -> str:
    if isinstance(name_or_number, int):
        return PRIORITIES[name_or_number]
    return PRIORITIES[priority_number(name_or_number)]


def at_least(priority: str, minimum: str) -> bool:
    """True when ``priority`` is as severe as ``minimum`` or more."""
    return priority_number(priority) <= priority_number(minimum)


def format_time(ns: int) -> str:
    secs, frac = divmod(int(ns), 1_000_000_000)
    return f"{_strftime(secs)}.{frac:09d}Z"


def _strftime(secs: int) -> str:
    import time as _t

    return _t.strftime("%Y-%m-%dT%H:%M:%S", _t.gmtime(secs))


_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})$")


def parse_time(text: str) -> int:
    """RFC 3339 text (any fraction up to ns, Z or offset) to Unix nanoseconds."""
    m = _RFC3339.match(text or "")
    if not m:
        raise ValueError(f"time {text!r} is not RFC 3339 (e.g. 2024-05-01T10:11:12.123456789Z)")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def default_hostname() -> str:
    return os.environ.get("FALCO_HOSTNAME") or os.environ.get("FALCO_GRPC_HOSTNAME") or socket.gethostname()


def dumps(obj: object) -> str:
    """Serialise like Falco's nlohmann ``dump()``: sorted keys, no spaces, UTF-8 kept.

    NaN and Infinity raise ValueError: they are not JSON and no receiver would take them.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass
class Alert:
    rule: str
    priority: str
    output: str
    time: str
    source: str = "syscall"
    hostname: str = ""
    tags: list[str] = field(default_factory=list)
    output_fields: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys Falco may add (message, uuid from sidekick…)

    @property
    def priority_number(self) -> int:
        return priority_number(self.priority)

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update(
            hostname=self.hostname,
            output=self.output,
            output_fields=self.output_fields,
            priority=self.priority,
            rule=self.rule,
            source=self.source,
            tags=self.tags,
            time=self.time,
        )
        return d

    def to_json(self) -> str:
        return dumps(self.to_dict())


def make_alert(
    *,
    rule: str,
    priority: str,
    output: str,
    time_ns: int,
    source: str,
    output_fields: dict | None = None,
    tags=(),
    hostname: str | None = None,
) -> Alert:
    return Alert(
        rule=rule,
        priority=priority_name(priority),
        output=output,
        time=format_time(time_ns),
        source=source,
        hostname=hostname if hostname is not None else default_hostname(),
        tags=sorted(set(tags)),
        output_fields=dict(output_fields or {}),
    )


def _finite(value, depth: int = 0) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 32:
        return True
    if isinstance(value, dict):
        return all(_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v, depth + 1) for v in value)
    return True


_KNOWN = {"rule", "priority", "output", "time", "source", "hostname", "tags", "output_fields"}


def parse_alert(obj: Any) -> Alert:
    """Validate a decoded Falco alert; raise ValueError naming the first problem."""
    if not isinstance(obj, dict):
        raise ValueError(f"an alert must be a JSON object, got {type(obj).__name__}")
    for key in ("rule", "priority", "output", "time"):
        if key not in obj:
            raise ValueError(f"alert is missing the required key '{key}'")
        if not isinstance(obj[key], str):
            raise ValueError(f"alert key '{key}' must be a string")
    if not obj["rule"].strip():
        raise ValueError("alert key 'rule' is empty")
    priority = priority_name(obj["priority"])  # raises on unknown names
    parse_time(obj["time"])
    source = obj.get("source", "syscall")
    hostname = obj.get("hostname", "")
    tags = obj.get("tags", [])
    fields = obj.get("output_fields", {})
    if not isinstance(source, str):
        raise ValueError("alert key 'source' must be a string")
    if not isinstance(hostname, str):
        raise ValueError("alert key 'hostname' must be a string")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("alert key 'tags' must be a list of strings")
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise ValueError("alert key 'output_fields' must be an object")
    if not _finite(fields):
        raise ValueError("alert key 'output_fields' holds NaN or Infinity, which JSON cannot carry")
    extra = {k: v for k, v in obj.items() if k not in _KNOWN}
    return Alert(
        rule=obj["rule"],
        priority=priority,
        output=obj["output"],
        time=obj["time"],
        source=source,
        hostname=hostname,
        tags=list(tags),
        output_fields=fields,
        extra=extra,
    )
