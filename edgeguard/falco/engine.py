"""Evaluate audit events against a compiled ruleset and build Falco alerts.

Input handling follows the k8saudit plugin (``source.go``): a JSON array is
walked recursively, an ``EventList`` gives its items, an ``Event`` is one
event, anything else is "data not recognized as a k8s audit event". Each event
needs an RFC 3339 ``stageTimestamp``, which becomes the alert time.

Matching keeps Falco's semantics (definition order; ``first`` stops at the
first match, ``all`` reports every match). To be fast, rules are pre-filtered
by the exact-value constraints of their top-level conjuncts (stage, verb,
resource, subresource) so most rules are rejected by one dict lookup per event.
"""
from __future__ import annotations

import calendar
import gc
import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import loader
import time as _time

from .alert import PRIORITIES, Alert, default_hostname, format_time, priority_number
from .compiler import index_fetchers
from .fields import AuditEvent, _local_hms

NOT_AUDIT = "data not recognized as a k8s audit event"
DEFAULT_MAX_EVENT_BYTES = 262144  # the plugin's maxEventSize default (sdk.DefaultEvtSize)
RULES_DIR = Path(__file__).with_name("rules")
DEFAULT_RULES = RULES_DIR / "k8s_audit_rules.yaml"

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


_WS = re.compile(r"[ \t\n\r]*")
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
        obj, end = _scan(text, _WS.match(text, 0).end(), fits, max_event_bytes, 0)
        if _WS.match(text, end).end() != len(text):
            raise ValueError("extra data")
        return obj, fits
    except (ValueError, IndexError):
        # the standard error for invalid JSON, or the plain result
        return json.loads(text, parse_constant=_not_json), set()


def _fits(text, start, end, limit):
    n = end - start
    return n * 4 <= limit or (n <= limit and len(text[start:end].encode("utf-8")) <= limit)


def _scan_array(text, i, fits, limit, depth):
    """An array at ``text[i]``: nested arrays are walked, every other element decoded whole and measured."""
    out = []
    i = _WS.match(text, i + 1).end()
    if text[i] == "]":
        return out, i + 1
    while True:
        start = i
        if text[i] == "[" and depth < 4:
            el, i = _scan_array(text, i, fits, limit, depth + 1)
        elif text[i] == "{" and depth == 0:
            el, i = _scan_object(text, i, fits, limit)   # a top-level array may hold EventLists
        else:
            el, i = _DEC.raw_decode(text, i)
        if type(el) is dict and _fits(text, start, i, limit):
            fits.add(id(el))
        out.append(el)
        i = _WS.match(text, i).end()
        if text[i] == ",":
            i = _WS.match(text, i + 1).end()
            continue
        if text[i] == "]":
            return out, i + 1
        raise ValueError("bad array")


def _scan_object(text, i, fits, limit):
    """An object whose ``items`` array (an EventList's) is decoded item by item; other values whole."""
    obj: dict = {}
    i = _WS.match(text, i + 1).end()
    if text[i] == "}":
        return obj, i + 1
    while True:
        if text[i] != '"':
            raise ValueError("bad key")
        key, i = _DEC.raw_decode(text, i)
        i = _WS.match(text, i).end()
        if text[i] != ":":
            raise ValueError("bad object")
        i = _WS.match(text, i + 1).end()
        if key == "items" and text[i] == "[":
            val, i = _scan_array(text, i, fits, limit, 4)   # depth 4: items are decoded whole
        else:
            val, i = _DEC.raw_decode(text, i)
        obj[key] = val
        i = _WS.match(text, i).end()
        if text[i] == ",":
            i = _WS.match(text, i + 1).end()
            continue
        if text[i] == "}":
            return obj, i + 1
        raise ValueError("bad object")


def _scan(text, i, fits, limit, depth):
    c = text[i]
    if c == "[":
        return _scan_array(text, i, fits, limit, depth)
    if c == "{":
        return _scan_object(text, i, fits, limit)
    return _DEC.raw_decode(text, i)


@dataclass
class Batch:
    events: list = field(default_factory=list)
    skipped: int = 0              # payload objects that are not audit events
    dropped: int = 0              # audit items without a usable stageTimestamp
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


def split_payload(obj, *, batch: Batch | None = None, raw_size: int | None = None,
                  max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, start_num: int = 0, fits=frozenset()) -> Batch:
    """Turn one decoded payload into events (appended to ``batch``); ``fits`` comes from decode_payload."""
    batch = batch or Batch()
    items: list = []
    _split(obj, items, batch)
    # An item can only exceed the limit if the whole payload does; otherwise no event needs measuring.
    limit = max_event_bytes if (raw_size is None or raw_size > max_event_bytes) else 0
    num = start_num + len(batch.events)
    for it in items:
        if not isinstance(it, dict):
            batch.dropped += 1
            batch.errors.append("can't read stageTimestamp")
            continue
        try:
            ts = stage_timestamp_ns(it.get("stageTimestamp"))
        except ValueError as exc:
            batch.dropped += 1
            batch.errors.append(str(exc))
            continue
        num += 1
        batch.events.append(AuditEvent(it, ts, num, None, 0 if id(it) in fits else limit))
    return batch


def _too_large(evt) -> bool:
    s = evt.compact
    return len(s) > evt.limit or (len(s) * 4 > evt.limit and len(s.encode("utf-8")) > evt.limit)


_gc_lock = threading.Lock()
_gc_batches = 0          # batches running now, on any thread
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


_time_cache: dict = {}


def _times(ns: int):
    """(local HH:MM:SS.nnnnnnnnn, UTC alert time) for an event timestamp; the second-resolution parts cached."""
    secs, frac = divmod(ns, 1_000_000_000)
    key = (secs, _time.timezone, _time.daylight)
    hit = _time_cache.get(key)
    if hit is None:
        if len(_time_cache) > 4096:
            _time_cache.clear()
        hit = _time_cache[key] = (_local_hms(secs * 1_000_000_000)[:8], format_time(secs * 1_000_000_000)[:19])
    return f"{hit[0]}.{frac:09d}", f"{hit[1]}.{frac:09d}Z"


class Engine:
    def __init__(self, ruleset: loader.Ruleset, *, rule_matching: str = "first", min_priority: str = "debug",
                 hostname: str | None = None):
        if rule_matching not in ("first", "all"):
            raise ValueError(f"rule_matching must be 'first' or 'all', not {rule_matching!r}")
        self.ruleset = ruleset
        self.rule_matching = rule_matching
        self.first = rule_matching == "first"
        threshold = priority_number(min_priority)
        self.rules = [r for r in ruleset.rules if r.enabled and r.priority <= threshold]
        self.hostname = hostname if hostname is not None else default_hostname()
        used = set()
        for r in self.rules:
            used.update(r.constraints)
        self._keys = [(k, f) for k, f in index_fetchers() if k in used]
        self._key_names = tuple(k for k, _ in self._keys)
        self._fetch = tuple(f for _, f in self._keys)
        self._cand: dict = {}

    @classmethod
    def from_files(cls, paths=None, **kw) -> "Engine":
        return cls(loader.load(loader.rules_paths(paths) if paths else [DEFAULT_RULES]), **kw)

    def candidates(self, evt) -> tuple:
        key = tuple([f(evt) for f in self._fetch])
        cand = self._cand.get(key)
        if cand is None:
            vals = dict(zip(self._key_names, key))
            cand = tuple(r for r in self.rules
                         if all(vals[k] is not None and vals[k] in allowed for k, allowed in r.constraints.items()))
            if len(self._cand) > 4096:
                self._cand.clear()
            self._cand[key] = cand
        return cand

    def match(self, evt) -> list:
        out = []
        for r in self.candidates(evt):
            if r.fn(evt):
                out.append(r)
                if self.first:
                    break
        # The plugin drops events larger than maxEventSize before any rule sees them. Measuring costs a
        # re-encoding, so it is done only when a rule matched: for other events dropping changes nothing.
        if out and evt.limit and _too_large(evt):
            evt.oversize = True
            return []
        return out

    def alert(self, rule, evt):
        message = rule.output.render(evt)
        pname = PRIORITIES[rule.priority]
        output_fields = {"evt.time": evt.ts}
        output_fields.update(rule.output.fields(evt))
        local, utc = _times(evt.ts)
        # Same object make_alert() builds (tags already sorted/unique), with the time texts cached per second.
        return Alert(rule=rule.name, priority=pname, output=f"{local}: {pname} {message}", time=utc,
                     source="k8s_audit", hostname=self.hostname, tags=list(rule.tags), output_fields=output_fields)

    def evaluate(self, evt) -> list:
        return [self.alert(r, evt) for r in self.match(evt)]

    def facts(self) -> dict:
        rs = self.ruleset
        return {
            "rules_loaded": len(rs.rules),
            "rules_enabled": len(self.rules),
            "rules_other_source_skipped": rs.skipped_other_source,
            "macros": rs.macros,
            "lists": rs.lists,
            "files": rs.files,
            "required_engine_version": rs.required_engine_version,
            "required_plugin_versions": rs.required_plugin_versions,
            "engine_version": ".".join(map(str, loader.ENGINE_VERSION)),
            "plugins": {k: ".".join(map(str, v)) for k, v in loader.PLUGINS.items()},
            "rule_matching": self.rule_matching,
            "warnings": len(rs.warnings),
        }
