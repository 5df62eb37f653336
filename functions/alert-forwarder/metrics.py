"""Prometheus counters and gauges in text exposition format 0.0.4, without a client library.

Only ``requests``/``pyyaml`` may ship in the image, and a dozen labelled
counters do not justify ``prometheus_client``.
"""
from __future__ import annotations

import threading
from typing import Callable

PREFIX = "edgeguard_alert_forwarder_"

# name -> (type, help, label names)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "alerts_total": ("counter", "Alerts accepted, by priority, rule and source.", ("priority", "rule", "source")),
    "requests_total": ("counter", "HTTP requests by endpoint and status code.", ("endpoint", "code")),
    "rejected_total": ("counter", "Requests refused before anything was forwarded, by reason.", ("reason",)),
    "filtered_total": ("counter", "Alerts dropped below the global min_priority.", ("priority",)),
    "unrouted_total": ("counter", "Alerts that matched no route and the default route has no destination.", ()),
    "routed_total": ("counter", "Alerts handed to a route's destinations, by route.", ("route",)),
    "dedup_suppressed_total": ("counter", "Repeats suppressed by a route's dedup window.", ("route",)),
    "dedup_summaries_total": ("counter", "'N repeats suppressed' summaries emitted.", ("route",)),
    "throttled_total": ("counter", "Alerts held back by a route's throttle (max per window).", ("route",)),
    "throttle_summaries_total": ("counter", "Digests of throttled alerts emitted.", ("route",)),
    "delivered_total": ("counter", "Deliveries acknowledged by the destination.", ("destination",)),
    "failed_total": ("counter", "Delivery attempts that failed (transport error or HTTP error).", ("destination",)),
    "retried_total": ("counter", "Delivery attempts that were retries of an earlier failure.", ("destination",)),
    "spooled_total": ("counter", "Deliveries left in the durable spool for a later retry.", ("destination",)),
    "dropped_total": ("counter", "Deliveries given up: spool_full, expired, rejected (4xx) or disabled.",
                      ("destination", "reason")),
    "spool_depth": ("gauge", "Entries waiting in the durable spool.", ()),
    "spool_depth_by_destination": ("gauge", "Entries waiting in the durable spool, by destination.", ("destination",)),
    "spool_oldest_age_seconds": ("gauge", "Age of the oldest spooled entry.", ()),
    "queue_depth": ("gauge", "Deliveries waiting in memory for a worker, by destination.", ("destination",)),
    "destination_up": ("gauge", "1 unless the destination is in back-off after failures.", ("destination",)),
    "delivery_seconds": ("histogram", "Time from alert receipt to acknowledged delivery.", ("destination",)),
}

# Labels whose values come from callers (any rule name, any source): past MAX_SERIES distinct series of such a
# metric, new combinations are counted under "other" so a flood of made-up rule names cannot grow the
# exposition (and this process's memory) without bound.
CALLER_LABELS: dict[str, tuple[str, ...]] = {"alerts_total": ("rule", "source")}
MAX_SERIES = 200
OTHER = "other"

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple, float]] = {name: {} for name in DEFINITIONS}
        self._hist: dict[tuple, list] = {}
        self._collectors: list[Callable[["Metrics"], None]] = []

    def _labels(self, name: str, labels: dict | None) -> tuple:
        names = DEFINITIONS[name][2]
        labels = labels or {}
        return tuple(str(labels.get(n, "")) for n in names)

    def inc(self, name: str, labels: dict | None = None, value: float = 1.0) -> None:
        key = self._labels(name, labels)
        with self._lock:
            series = self._values[name]
            capped = CALLER_LABELS.get(name)
            if capped and key not in series and len(series) >= MAX_SERIES:
                names = DEFINITIONS[name][2]
                key = tuple(OTHER if n in capped else v for n, v in zip(names, key))
            series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, labels: dict | None = None) -> None:
        key = self._labels(name, labels)
        with self._lock:
            self._values[name][key] = float(value)

    def observe(self, name: str, value: float, labels: dict | None = None) -> None:
        key = (name, self._labels(name, labels))
        with self._lock:
            h = self._hist.get(key)
            if h is None:
                h = self._hist[key] = [[0] * len(BUCKETS), 0, 0.0]
            for i, b in enumerate(BUCKETS):
                if value <= b:
                    h[0][i] += 1
            h[1] += 1
            h[2] += value

    def total(self, name: str, **match) -> float:
        names = DEFINITIONS[name][2]
        with self._lock:
            return sum(v for k, v in self._values[name].items()
                       if all(k[names.index(n)] == str(val) for n, val in match.items()))

    def add_collector(self, fn: Callable[["Metrics"], None]) -> None:
        """Called before rendering, to refresh gauges (spool depth, queue depth)."""
        self._collectors.append(fn)

    def render(self) -> str:
        for fn in self._collectors:
            fn(self)
        lines = []
        with self._lock:
            for name, (mtype, help_, label_names) in DEFINITIONS.items():
                full = PREFIX + name
                lines.append(f"# HELP {full} {help_}")
                lines.append(f"# TYPE {full} {mtype}")
                if mtype == "histogram":
                    for (hname, key), (counts, count, total) in sorted(self._hist.items()):
                        if hname != name:
                            continue
                        base = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(label_names, key))
                        sep = "," if base else ""
                        for b, c in zip(BUCKETS, counts):
                            lines.append(f'{full}_bucket{{{base}{sep}le="{b:g}"}} {c}')
                        lines.append(f'{full}_bucket{{{base}{sep}le="+Inf"}} {count}')
                        lines.append(f"{full}_sum{{{base}}} {total:.6f}" if base else f"{full}_sum {total:.6f}")
                        lines.append(f"{full}_count{{{base}}} {count}" if base else f"{full}_count {count}")
                    continue
                series = self._values[name]
                if not label_names and not series:
                    lines.append(f"{full} 0")
                for key, value in sorted(series.items()):
                    labels = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(label_names, key))
                    num = int(value) if float(value).is_integer() else value
                    lines.append(f"{full}{{{labels}}} {num}" if labels else f"{full} {num}")
        return "\n".join(lines) + "\n"
