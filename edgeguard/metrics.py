"""Prometheus counters, gauges and histograms in text exposition format 0.0.4, without a client library.

Every function declares its own metrics (name -> type, help, label names) and gets a ``Metrics`` registry
for them. Only ``requests``/``pyyaml`` may ship in the image, and a few dozen labelled counters do not
justify ``prometheus_client``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# Labels whose values come from callers (any rule name, any source): past MAX_SERIES distinct series of such a
# metric, new combinations are counted under "other" so a flood of made-up values cannot grow the
# exposition (and the process's memory) without bound.
MAX_SERIES = 200
OTHER = "other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(v: str) -> str:
    # A label value must stay encodable whatever a caller sent (a lone surrogate would break every scrape).
    text = str(v).encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


Definitions = dict[str, tuple[str, str, tuple[str, ...]]]


class Metrics:
    """One function's metrics: ``definitions`` maps name -> (type, help, label names), all under ``prefix``.

    ``caller_labels`` names, per metric, the labels whose values callers choose (capped at MAX_SERIES).
    """

    def __init__(self, prefix: str, definitions: Definitions, caller_labels: dict[str, tuple[str, ...]] | None = None):
        self.prefix = prefix
        self.definitions = definitions
        self.caller_labels = caller_labels or {}
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple, float]] = {name: {} for name in definitions}
        self._hist: dict[tuple, list] = {}
        self._collectors: list[Callable[[Metrics], None]] = []

    def _labels(self, name: str, labels: dict | None) -> tuple:
        names = self.definitions[name][2]
        labels = labels or {}
        return tuple(str(labels.get(n, "")) for n in names)

    def inc(self, name: str, labels: dict | None = None, value: float = 1.0) -> None:
        key = self._labels(name, labels)
        with self._lock:
            series = self._values[name]
            capped = self.caller_labels.get(name)
            if capped and key not in series and len(series) >= MAX_SERIES:
                names = self.definitions[name][2]
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
        names = self.definitions[name][2]
        with self._lock:
            return sum(
                v
                for k, v in self._values[name].items()
                if all(k[names.index(n)] == str(val) for n, val in match.items())
            )

    def add_collector(self, fn: Callable[[Metrics], None]) -> None:
        """Called before rendering, to refresh gauges (spool depth, queue depth)."""
        self._collectors.append(fn)

    def render(self) -> str:
        for fn in self._collectors:
            fn(self)
        lines = []
        with self._lock:
            for name, (mtype, help_, label_names) in self.definitions.items():
                full = self.prefix + name
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
