"""Evaluate audit events against a compiled ruleset and build Falco alerts.

Events come from the k8saudit source (``source.py``). Which rules are evaluated, and in which order, follows
Falco's ruleset: rules at or above the ``priority`` threshold, enabled in definition order, then the
configured ``rules:`` selection applied entry by entry (a rule enabled by selection joins the end of the
evaluation list). ``first`` stops at the first match, ``all`` reports every match. To be fast, rules are
pre-filtered by the exact-value constraints of their top-level conjuncts (stage, verb, resource,
subresource), so most rules are rejected by one dict lookup per event.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Callable
from dataclasses import replace
from operator import itemgetter
from pathlib import Path
from typing import Any

from . import loader
from .alert import PRIORITIES, Alert, default_hostname, dumps, format_time, priority_number
from .compiler import index_fetchers
from .configuration import EngineConfig, matches_wildcard
from .fields import _local_hms
from .output import _render_value, typed_value
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


def load_engine(
    sources, config: EngineConfig | None = None, *, hostname: str | None = None, check_plugins: bool = True
) -> Engine:
    """Load rules from ``sources`` (paths or (name, text) pairs, in order) and build the engine ``config`` asks for."""
    config = config or EngineConfig()
    ruleset = loader.load(sources, check_plugins=check_plugins, append_output=config.append_output)
    return Engine(ruleset, config=config, hostname=hostname)


def evaluation_order(rules, config: EngineConfig) -> list:
    """The rules Falco evaluates, in its order: see the module docstring."""
    threshold = priority_number(config.priority)
    eligible = [r for r in rules if r.priority <= threshold]  # less severe rules are not added at all
    order = [r for r in eligible if r.enabled]
    for sel in config.rules:
        hit = [
            r for r in eligible if (sel.rule and matches_wildcard(sel.rule, r.name)) or (sel.tag and sel.tag in r.tags)
        ]
        if sel.enable:
            have = {id(r) for r in order}
            order.extend(r for r in hit if id(r) not in have)
        else:
            drop = {id(r) for r in hit}
            order = [r for r in order if id(r) not in drop]
    return order


_enc = json.encoder.encode_basestring  # the escaping json.dumps(ensure_ascii=False) applies to strings


def _json_value(v) -> str:
    """``dumps(v)`` for the values alerts carry, without building a document."""
    if v.__class__ is str:
        return _enc(v)
    if v is None:
        return "null"
    if v.__class__ is list:
        return "[" + ",".join([_enc(x) if x.__class__ is str else _json_value(x) for x in v]) + "]"
    if v.__class__ is int:
        return int.__repr__(v)
    return dumps(v)


class _RuleOutput:
    """What a rule's alerts are built from, prepared once: its output_fields plan and its fixed JSON parts."""

    __slots__ = ("fmt", "pname", "tags", "plan", "json_fields", "head", "tail", "to_json")

    def __init__(self, rule, hostname: str):
        self.fmt = rule.output
        self.pname = PRIORITIES[rule.priority]
        self.tags = list(rule.tags)
        # output_fields as Falco writes it: evt.time, the output's tokens, then the append_output extra fields.
        plan: dict = {"evt.time": ("ts", None)}
        for key, getter, is_time in rule.output.field_getters():
            plan[key] = ("ts", None) if is_time else ("typed", getter)
        for key, fmt, raw in rule.extra_fields:
            if raw:
                getter = next((g for k, g, t in fmt.field_getters() if k == key and not t), None)
                plan[key] = (
                    ("ts", None)
                    if any(k == key and t for k, _, t in fmt.field_getters())
                    else ("typed", getter)
                    if getter is not None
                    else ("none", None)
                )
            else:
                plan[key] = ("text", fmt.render)
        self.plan = tuple((k, kind, g) for k, (kind, g) in plan.items())
        self.json_fields = tuple((_enc(k) + ":", kind, g) for k, kind, g in sorted(self.plan, key=lambda x: x[0]))
        self.head = '{"hostname":' + _enc(hostname) + ',"output":'
        self.tail = (
            ',"priority":' + _enc(self.pname) + ',"rule":' + _enc(rule.name) + ',"source":"k8s_audit",'
            '"tags":' + dumps(self.tags) + ',"time":"'
        )
        self.to_json = self._compile_json()

    def _compile_json(self):
        """One straight-line function that renders the output and writes the alert JSON: each field fetched once,
        no loops or branches on the plan (alerts are most of replay's work)."""
        ns: dict[str, Any] = {
            "_enc": _enc,
            "_jv": _json_value,
            "_tv": typed_value,
            "_rv": _render_value,
            "_times": _times,
        }
        getters: dict = {}

        def var(getter):
            if id(getter) not in getters:
                getters[id(getter)] = (f"_g{len(getters)}", getter)
            return getters[id(getter)][0]

        lines, fetched, pieces = [], set(), []
        for i, part in enumerate(self.fmt.parts):
            if part.__class__ is str:
                ns[f"_L{i}"] = part
                pieces.append(f"_L{i}")
                continue
            g = var(part.expr.fetch)
            if g not in fetched:
                lines.append(f"    v{g} = {g}(evt)")
                fetched.add(g)
            lines.append(f"    s{i} = v{g} if v{g}.__class__ is str else _rv(v{g})")
            if part.width:
                lines.append(f"    s{i} = s{i}[:{part.width}].ljust({part.width})")
            pieces.append(f"s{i}")
        fields = []
        for j, (prefix, kind, g) in enumerate(self.json_fields):
            ns[f"_K{j}"] = prefix
            if kind == "typed":
                name = var(g)
                if name not in fetched:
                    lines.append(f"    v{name} = {name}(evt)")
                    fetched.add(name)
                fields.append(f"_K{j} + (_enc(v{name}) if v{name}.__class__ is str else _jv(_tv(v{name})))")
            elif kind == "ts":
                fields.append(f"_K{j} + int.__repr__(evt.ts)")
            elif kind == "text":
                ns[f"_T{j}"] = g
                fields.append(f"_K{j} + _enc(_T{j}(evt))")
            else:
                fields.append(f"_K{j} + 'null'")
        for name, getter in getters.values():
            ns[name] = getter
        ns.update(_HEAD=self.head + "", _TAIL=self.tail, _PNAME=": " + self.pname + " ")
        src = [
            "def to_json(evt):",
            "    local, utc = _times(evt.ts)",
            *lines,
            "    msg = " + (" + ".join(pieces) if pieces else "''"),
            "    return (_HEAD + _enc(local + _PNAME + msg) + ',\"output_fields\":{' + "
            + (" + ',' + ".join(fields) if fields else "''")
            + " + '}' + _TAIL + utc + '\"}')",
        ]
        exec("\n".join(src), ns)  # noqa: S102 - source built above from the rule's own parts only
        return ns["to_json"]

    def fields(self, evt) -> dict:
        out = {}
        for key, kind, g in self.plan:
            out[key] = (
                evt.ts
                if kind == "ts"
                else typed_value(g(evt))
                if kind == "typed"
                else g(evt)
                if kind == "text"
                else None
            )
        return out

    def json_fields_text(self, evt) -> str:
        parts = []
        for prefix, kind, g in self.json_fields:
            if kind == "typed":
                v = g(evt)
                parts.append(prefix + (_enc(v) if v.__class__ is str else _json_value(typed_value(v))))
            elif kind == "ts":
                parts.append(prefix + int.__repr__(evt.ts))
            elif kind == "text":
                parts.append(prefix + _enc(g(evt)))
            else:
                parts.append(prefix + "null")
        return ",".join(parts)


class Engine:
    def __init__(
        self,
        ruleset: loader.Ruleset,
        *,
        rule_matching: str | None = None,
        min_priority: str | None = None,
        hostname: str | None = None,
        config: EngineConfig | None = None,
    ):
        config = config or EngineConfig()
        rule_matching = rule_matching if rule_matching is not None else config.rule_matching
        if rule_matching not in ("first", "all"):
            raise ValueError(f"rule_matching must be 'first' or 'all', not {rule_matching!r}")
        if min_priority is not None:
            priority_number(min_priority)
        config = replace(
            config, rule_matching=rule_matching, priority=min_priority if min_priority is not None else config.priority
        )
        self.config = config
        self.ruleset = ruleset
        self.rule_matching = rule_matching
        self.first = rule_matching == "first"
        self.rules = evaluation_order(ruleset.rules, config)
        self.hostname = hostname if hostname is not None else default_hostname()
        self._out = {id(r): _RuleOutput(r, self.hostname) for r in self.rules}
        used = set()
        for r in self.rules:
            used.update(r.constraints)
        self._key_names = tuple(k for k, _ in index_fetchers() if k in used)
        self._index_key: Callable[[Any], tuple]
        if len(self._key_names) > 1:
            self._index_key = itemgetter(*self._key_names)
        elif self._key_names:
            only = itemgetter(self._key_names[0])
            self._index_key = lambda e: (only(e),)
        else:
            self._index_key = lambda e: ()
        self._cand: dict = {}

    def candidates(self, evt) -> tuple:
        key = self._index_key(evt)
        cand = self._cand.get(key)
        if cand is None:
            vals = dict(zip(self._key_names, key))
            cand = tuple(
                r
                for r in self.rules
                if all(vals[k] is not None and vals[k] in allowed for k, allowed in r.constraints.items())
            )
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

    def _message(self, ro, evt):
        local, utc = _times(evt.ts)
        return f"{local}: {ro.pname} {ro.fmt.render(evt)}", utc

    def alert(self, rule, evt):
        ro = self._out.get(id(rule)) or _RuleOutput(rule, self.hostname)
        output, utc = self._message(ro, evt)
        # Same object make_alert() builds (tags already sorted/unique), with the time texts cached per second.
        return Alert(
            rule=rule.name,
            priority=ro.pname,
            output=output,
            time=utc,
            source="k8s_audit",
            hostname=self.hostname,
            tags=list(ro.tags),
            output_fields=ro.fields(evt),
        )

    def alert_json(self, rule, evt) -> str:
        """``alert(rule, evt).to_json()``, byte for byte, built straight from the prepared parts."""
        ro = self._out.get(id(rule)) or _RuleOutput(rule, self.hostname)
        return ro.to_json(evt)

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
