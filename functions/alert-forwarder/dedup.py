"""Per-route suppression of repeated alerts, with a summary of what was held back.

The first alert of a key opens a window and passes. Repeats inside the window
are counted, not sent. When the window closes (noticed by the periodic tick, or
by the next alert of that key) a summary alert "N repeats suppressed" is
emitted, so the count of what happened is never lost (see falco#1456: keep the
evidence, trim the noise). The clock is injectable so windows can be tested
without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .edgeguard.falco.alert import PRIORITIES, format_time, priority_number
from .edgeguard.routing.fields import alert_value

SUMMARY_TAG = "edgeguard_dedup_summary"


@dataclass
class _Window:
    start: float
    end: float
    first: dict
    last_time: str
    suppressed: int = 0


@dataclass
class Summary:
    route: str
    alert: dict


def dedup_key(alert: dict, fields: tuple[str, ...]) -> tuple:
    out = []
    for f in fields:
        v = alert_value(alert, f)
        out.append(
            tuple(v) if isinstance(v, list) else (v if isinstance(v, (str, int, float, bool)) or v is None else repr(v))
        )
    return tuple(out)


class Deduper:
    def __init__(self, clock: Callable[[], float] = time.time, max_keys: int = 20000):
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        # Insertion order is opening order (a window is only ever added when it opens), so the oldest window is
        # always first: evicting it at max_keys is O(1), under the lock every ingest takes.
        self._windows: OrderedDict[tuple, _Window] = OrderedDict()

    def check(self, route: str, window: float, key_fields: tuple[str, ...], alert: dict) -> tuple[bool, list[Summary]]:
        """(send this alert?, summaries of windows that closed for this key)."""
        now = self.clock()
        k = (route, key_fields, dedup_key(alert, key_fields))
        summaries: list[Summary] = []
        with self._lock:
            w = self._windows.get(k)
            if w is not None and now >= w.end:
                if w.suppressed:
                    summaries.append(self._summary(route, key_fields, w, now))
                del self._windows[k]
                w = None
            if w is None:
                if len(self._windows) >= self.max_keys:
                    summaries.extend(self._evict_oldest(now))
                self._windows[k] = _Window(start=now, end=now + window, first=alert, last_time=alert.get("time", ""))
                return True, summaries
            w.suppressed += 1
            w.last_time = alert.get("time", w.last_time)
            return False, summaries

    def expire(self) -> list[Summary]:
        """Close every window whose time is up; summaries for those that suppressed something."""
        now = self.clock()
        out = []
        with self._lock:
            done = [k for k, w in self._windows.items() if now >= w.end]
            for k in done:
                w = self._windows.pop(k)
                if w.suppressed:
                    out.append(self._summary(k[0], k[1], w, now))
        return out

    def open_windows(self) -> int:
        with self._lock:
            return len(self._windows)

    def export_windows(self) -> list[dict]:
        """Move the open windows out (for the pod that takes over): they are removed here, so a later export
        cannot hand the same suppressed repeats over twice."""
        with self._lock:
            items, self._windows = list(self._windows.items()), OrderedDict()
        return [
            {
                "route": k[0],
                "key_fields": list(k[1]),
                "key": [list(v) if isinstance(v, tuple) else v for v in k[2]],
                "start": w.start,
                "end": w.end,
                "first": w.first,
                "last_time": w.last_time,
                "suppressed": w.suppressed,
            }
            for k, w in items
        ]

    def merge_windows(self, windows: list[dict]) -> int:
        """Adopt windows another pod had open. A key open here too (both pods saw its first alert during the
        rollout overlap, and each sent it once) keeps one window that counts both pods' repeats."""
        now = self.clock()
        n = 0
        with self._lock:
            for w in windows:
                try:
                    k = (
                        w["route"],
                        tuple(w["key_fields"]),
                        tuple(tuple(v) if isinstance(v, list) else v for v in w["key"]),
                    )
                    start, end, suppressed = float(w["start"]), float(w["end"]), int(w["suppressed"])
                except (KeyError, TypeError, ValueError):
                    continue
                if end <= now and not suppressed:
                    continue
                mine = self._windows.get(k)
                if mine is None:
                    if len(self._windows) >= self.max_keys:
                        continue
                    self._windows[k] = _Window(
                        start=start,
                        end=end,
                        first=w.get("first") or {},
                        last_time=w.get("last_time", ""),
                        suppressed=suppressed,
                    )
                else:
                    mine.suppressed += suppressed
                    mine.start = min(mine.start, start)
                    mine.last_time = max(mine.last_time, w.get("last_time", ""))
                n += 1
        return n

    def _evict_oldest(self, now: float) -> list[Summary]:
        k, w = self._windows.popitem(last=False)
        return [self._summary(k[0], k[1], w, now)] if w.suppressed else []

    @staticmethod
    def _summary(route: str, key_fields: tuple[str, ...], w: _Window, now: float) -> Summary:
        first = w.first
        window = w.end - w.start
        fields = {}
        for f in key_fields:
            if f.startswith("output_fields."):
                v = alert_value(first, f)
                if v is not None:
                    fields[f[len("output_fields.") :]] = v
        fields.update(
            {
                "edgeguard.suppressed": w.suppressed,
                "edgeguard.window_seconds": round(window, 3),
                "edgeguard.route": route,
                "edgeguard.first_time": first.get("time"),
                "edgeguard.last_time": w.last_time,
            }
        )
        rule = first.get("rule", "")
        n = w.suppressed
        output = (
            f"{format_time(int(now * 1e9))[11:29]}: {first.get('priority', '')} {n} repeat"
            f'{"s" if n != 1 else ""} of "{rule}" suppressed by route {route} within {window:g}s '
            f"(first {first.get('time')}, last {w.last_time})"
        )
        alert = {
            "hostname": first.get("hostname", ""),
            "output": output,
            "output_fields": fields,
            "priority": first.get("priority", "Informational"),
            "rule": rule,
            "source": first.get("source", ""),
            "tags": sorted(set(first.get("tags") or []) | {SUMMARY_TAG}),
            "time": format_time(int(now * 1e9)),
        }
        return Summary(route=route, alert=alert)


THROTTLE_TAG = "edgeguard_throttle_summary"


@dataclass
class _Bucket:
    start: float
    end: float
    sent: int = 0
    suppressed: int = 0
    top_priority: int = 7
    by_rule: dict[str, int] = field(default_factory=dict)
    hostnames: set[str] = field(default_factory=set)
    max: int = 0


class Throttler:
    """At most ``max`` alerts per route per window, whatever their key; the rest become one digest.

    Dedup folds repeats of one thing; this caps a flood of different things (a scan, a misbehaving node)
    so a chat channel stays readable. The digest says how many alerts of which rules were held back.
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def check(self, route: str, max_: int, window: float, alert: dict) -> tuple[bool, list[Summary]]:
        now = self.clock()
        out: list[Summary] = []
        with self._lock:
            b = self._buckets.get(route)
            if b is not None and now >= b.end:
                if b.suppressed:
                    out.append(self._summary(route, max_, b, now))
                b = None
            if b is None:
                b = self._buckets[route] = _Bucket(start=now, end=now + window)
            if b.sent < max_:
                b.sent += 1
                return True, out
            b.suppressed += 1
            b.by_rule[alert.get("rule", "")] = b.by_rule.get(alert.get("rule", ""), 0) + 1
            if alert.get("hostname"):
                b.hostnames.add(alert["hostname"])
            try:
                b.top_priority = min(b.top_priority, priority_number(alert.get("priority", "Debug")))
            except ValueError:
                pass
            b.max = max_
            return False, out

    def expire(self) -> list[Summary]:
        now = self.clock()
        out = []
        with self._lock:
            for route in [r for r, b in self._buckets.items() if now >= b.end]:
                b = self._buckets.pop(route)
                if b.suppressed:
                    out.append(self._summary(route, b.max, b, now))
        return out

    @staticmethod
    def _summary(route: str, max_: int, b: _Bucket, now: float) -> Summary:
        window = b.end - b.start
        prio = PRIORITIES[b.top_priority]
        rules = ", ".join(f"{r} x{n}" for r, n in sorted(b.by_rule.items(), key=lambda kv: (-kv[1], kv[0])))
        n = b.suppressed
        output = (
            f"{format_time(int(now * 1e9))[11:29]}: {prio} {n} alert{'s' if n != 1 else ''} held back by "
            f"route {route} (at most {max_} per {window:g}s): {rules}"
        )
        alert = {
            "hostname": sorted(b.hostnames)[0] if len(b.hostnames) == 1 else "",
            "output": output,
            "output_fields": {
                "edgeguard.suppressed": n,
                "edgeguard.window_seconds": round(window, 3),
                "edgeguard.route": route,
                "edgeguard.max": max_,
                "edgeguard.by_rule": dict(sorted(b.by_rule.items())),
                "edgeguard.hostnames": sorted(b.hostnames),
            },
            "priority": prio,
            "rule": f"edgeguard: route {route} throttled",
            "source": "internal",
            "tags": [THROTTLE_TAG],
            "time": format_time(int(now * 1e9)),
        }
        return Summary(route=route, alert=alert)
