"""The k8saudit event source: payloads to audit events, as the plugin's ``source.go`` reads them.

A JSON array is walked recursively, an ``EventList`` gives its items, an
``Event`` is one event, anything else is "data not recognized as a k8s audit
event". Each event needs an RFC 3339 ``stageTimestamp``, which becomes the
alert time. Events larger than the plugin's ``maxEventSize`` are dropped; the
raw size known from decoding spares most events the re-encoding that measures
them.
"""

from __future__ import annotations

import calendar
import gc
import json
import re
import threading
import types
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from .fields import AuditEvent

_orjson: types.ModuleType | None
try:  # optional: a faster decoder for JSON lines (pip install edgeguard[fast])
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by the tests that force the json path
    _orjson = None

NOT_AUDIT = "data not recognized as a k8s audit event"
DEFAULT_MAX_EVENT_BYTES = 262144  # the plugin's maxEventSize default (sdk.DefaultEvtSize)

_TS = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})\Z")
_sec_cache: dict = {}


def stage_timestamp_ns(text) -> int:
    """Go ``time.Parse(time.RFC3339Nano)`` of stageTimestamp, to Unix ns; ValueError if unusable."""
    if not isinstance(text, str):
        raise ValueError("can't read stageTimestamp")
    m = _TS.match(text)
    if not m:
        raise ValueError(f"can't parse stageTimestamp {text[:40]!r}")
    base, frac, tz = m.groups()
    k = base + tz
    secs = _sec_cache.get(k)
    if secs is None:
        y, mo, d = int(base[0:4]), int(base[5:7]), int(base[8:10])
        h, mi, s = int(base[11:13]), int(base[14:16]), int(base[17:19])
        if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
            raise ValueError(f"can't parse stageTimestamp {text[:40]!r}")
        secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
        if tz != "Z":
            off = int(tz[1:3]) * 3600 + int(tz[4:6]) * 60
            secs -= off if tz[0] == "+" else -off
        if len(_sec_cache) > 10000:
            _sec_cache.clear()
        _sec_cache[k] = secs
    return secs * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


def _not_json(name: str):
    # Python accepts NaN/Infinity; JSON (and the plugin's Go decoder, and edgeguard.http) does not.
    raise ValueError(f"{name} is not valid JSON")


# Whitespace between JSON tokens. The pattern matches the empty string, so match() never returns None.
_ws = cast("Callable[[str, int], re.Match[str]]", re.compile(r"[ \t\n\r]*").match)
_DEC = json.JSONDecoder(parse_constant=_not_json)


def decode_payload(text: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
    """``json.loads(text)`` plus the ids of the audit items whose raw text is known to fit ``max_event_bytes``.

    The plugin's size limit applies to each event's compact JSON, which is never longer than its
    raw text, so an item whose raw text fits needs no re-encoding to be measured. Items are decoded
    one by one with the C decoder, which is as fast as decoding the whole document. Invalid JSON
    raises ``json.JSONDecodeError`` as ``json.loads`` does; NaN and Infinity raise ValueError.
    """
    fits: set = set()
    try:
        obj, end = _scan(text, _ws(text, 0).end(), fits, max_event_bytes, 0)
        if _ws(text, end).end() != len(text):
            raise ValueError("extra data")
        return obj, fits
    except (ValueError, IndexError):
        # the standard error for invalid JSON, or the plain result
        return json.loads(text, parse_constant=_not_json), set()


def _fits(text, start, end, limit):
    n = end - start
    return n * 4 <= limit or (n <= limit and len(text[start:end].encode("utf-8")) <= limit)


def _after_element(text, i, close):
    """After an array element or object member: (start of the next one, True), or (after ``close``, False)."""
    i = _ws(text, i).end()
    if text[i] == ",":
        return _ws(text, i + 1).end(), True
    if text[i] == close:
        return i + 1, False
    raise ValueError(f"expected ',' or {close!r}")


def _scan_array(text, i, fits, limit, depth):
    """An array at ``text[i]``: nested arrays are walked, every other element decoded whole and measured."""
    out: list[Any] = []
    i = _ws(text, i + 1).end()
    if text[i] == "]":
        return out, i + 1
    while True:
        start = i
        if text[i] == "[" and depth < 4:
            el, i = _scan_array(text, i, fits, limit, depth + 1)
        elif text[i] == "{" and depth == 0:
            el, i = _scan_object(text, i, fits, limit)  # a top-level array may hold EventLists
        else:
            el, i = _DEC.raw_decode(text, i)
        if type(el) is dict and _fits(text, start, i, limit):
            fits.add(id(el))
        out.append(el)
        i, more = _after_element(text, i, "]")
        if not more:
            return out, i


def _scan_object(text, i, fits, limit):
    """An object whose ``items`` array (an EventList's) is decoded item by item; other values whole."""
    obj: dict = {}
    i = _ws(text, i + 1).end()
    if text[i] == "}":
        return obj, i + 1
    while True:
        if text[i] != '"':
            raise ValueError("bad key")
        key, i = _DEC.raw_decode(text, i)
        i = _ws(text, i).end()
        if text[i] != ":":
            raise ValueError("bad object")
        i = _ws(text, i + 1).end()
        if key == "items" and text[i] == "[":
            val, i = _scan_array(text, i, fits, limit, 4)  # depth 4: items are decoded whole
        else:
            val, i = _DEC.raw_decode(text, i)
        obj[key] = val
        i, more = _after_element(text, i, "}")
        if not more:
            return obj, i


def _scan(text, i, fits, limit, depth):
    c = text[i]
    if c == "[":
        return _scan_array(text, i, fits, limit, depth)
    if c == "{":
        return _scan_object(text, i, fits, limit)
    return _DEC.raw_decode(text, i)


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def loads_line(raw: bytes, *, fast: bool = True):
    """``json.loads`` of one JSON line, the same result, faster when orjson is installed.

    orjson differs from json in three ways, each sent back to json.loads here so nothing changes:
    integers beyond 64 bits (orjson turns them into floats: any run of 19+ digits takes the json path),
    lone surrogate escapes like ``"\\ud800"`` (orjson refuses them) and NaN/Infinity/1e400 (orjson refuses
    them; json.loads takes them, as replay always did). Invalid UTF-8 raises UnicodeDecodeError, invalid
    JSON json.JSONDecodeError.
    """
    if fast and _orjson is not None and _LONG_NUMBER not in raw.translate(_DIGITS_TO_ZERO):
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(raw.decode("utf-8"))


@dataclass
class Batch:
    events: list = field(default_factory=list)
    skipped: int = 0  # payload objects that are not audit events
    dropped: int = 0  # audit items without a usable stageTimestamp
    errors: list = field(default_factory=list)

    @property
    def oversize(self) -> int:
        """Events dropped for exceeding the plugin's maxEventSize (known once evaluated, see Engine.match)."""
        return sum(1 for e in self.events if e.oversize)


def _split(obj, items: list, batch: Batch):
    if isinstance(obj, list):
        for x in obj:
            _split(x, items, batch)
        return
    if isinstance(obj, dict):
        kind = obj.get("kind")
        if kind == "EventList":
            its = obj.get("items")
            if isinstance(its, list):
                items.extend(its)
                return
            batch.skipped += 1
            batch.errors.append("EventList without an 'items' array")
            return
        if kind == "Event":
            items.append(obj)
            return
    batch.skipped += 1
    batch.errors.append(NOT_AUDIT)


def split_payload(
    obj,
    *,
    batch: Batch | None = None,
    raw_size: int | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    start_num: int = 0,
    fits=frozenset(),
) -> Batch:
    """Turn one decoded payload into events (appended to ``batch``); ``fits`` comes from decode_payload."""
    batch = batch or Batch()
    items: list = []
    _split(obj, items, batch)
    # An item can only exceed the limit if the whole payload does; otherwise no event needs measuring.
    limit = max_event_bytes if (raw_size is None or raw_size > max_event_bytes) else 0
    num = start_num + len(batch.events)
    for it in items:
        evt = audit_event(it, num + 1, 0 if id(it) in fits else limit)
        if isinstance(evt, str):
            batch.dropped += 1
            batch.errors.append(evt)
            continue
        num += 1
        batch.events.append(evt)
    return batch


def audit_event(item, num: int, limit: int) -> AuditEvent | str:
    """One decoded item as the plugin's event, or why the plugin drops it (every event needs a readable
    stageTimestamp: it is the event's time)."""
    if not isinstance(item, dict):
        return "can't read stageTimestamp"
    try:
        ts = stage_timestamp_ns(item.get("stageTimestamp"))
    except ValueError as exc:
        return str(exc)
    return AuditEvent(item, ts, num, None, limit)


def too_large(evt) -> bool:
    """Whether a matched event exceeds the plugin's maxEventSize (its compact JSON, in UTF-8 bytes)."""
    s = evt.compact
    return len(s) > evt.limit or (len(s) * 4 > evt.limit and len(s.encode("utf-8")) > evt.limit)


_gc_lock = threading.Lock()
_gc_batches = 0  # batches running now, on any thread
_gc_was_enabled = False  # the GC's state when the first of them started


@contextmanager
def batch_gc_paused():
    """Pause the cyclic GC while decoded batches are processed.

    Audit JSON is acyclic, so reference counting frees it; full collections
    would otherwise walk the whole decoded batch again and again. The GC switch
    is process-wide and batches overlap on the server's threads, so it is
    counted: the first batch to start turns it off, the last to end turns it
    back on (only if it was on before).
    """
    global _gc_batches, _gc_was_enabled
    with _gc_lock:
        if _gc_batches == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_batches += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_batches -= 1
            if _gc_batches == 0 and _gc_was_enabled:
                gc.enable()
