"""Evaluate audit events against a compiled ruleset and build Falco alerts.

Events come from the k8saudit source (``source.py``). Matching keeps Falco's
semantics (definition order; ``first`` stops at the first match, ``all``
reports every match). To be fast, rules are pre-filtered by the exact-value
constraints of their top-level conjuncts (stage, verb, resource, subresource)
so most rules are rejected by one dict lookup per event.
"""
from __future__ import annotations

import time as _time
from pathlib import Path

from . import loader
from .alert import PRIORITIES, Alert, default_hostname, format_time, priority_number
from .compiler import index_fetchers
from .fields import _local_hms
from .source import too_large

RULES_DIR = Path(__file__).with_name("rules")
DEFAULT_RULES = RULES_DIR / "k8s_audit_rules.yaml"


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
        if out and evt.limit and too_large(evt):
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
