"""Compile the collected definitions into a ruleset, in Falco's ``rule_loader_compiler`` phases.

Lists are expanded, macros parsed and resolved (a macro sees only the macros
defined before it), then each rule's condition is built as text (exceptions
and lists are textual in Falco), parsed, resolved and compiled into a closure.
Identical macro subtrees share one closure. Unused lists and macros are
reported last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..compiler import CompileError, compile_node, constraints
from ..lint import condition_warnings
from ..output import OutputFormat
from ..parser import ParseError, parse, quote_item, split_modifier, substitute_list
from .collector import SOURCE, Collector, RuleInfo, vtext
from .errors import ItemError, LoadWarning, RulesLoadError


@dataclass
class CompiledRule:
    name: str
    index: int
    priority: int
    source: str
    tags: tuple
    enabled: bool
    desc: str
    fn: Any
    output: OutputFormat
    constraints: dict
    condition: str
    file: str
    ast: Any = None  # the macro-resolved condition
    extra_fields: tuple = ()  # (key, OutputFormat, raw) from append_output
    capture: bool = False
    capture_duration: int = 0
    info: dict = field(default_factory=dict)  # the rule as written (for edgeguard-rules list)


@dataclass
class Ruleset:
    rules: list  # CompiledRule, in evaluation (definition) order, all k8s_audit rules
    skipped_other_source: int
    files: list  # [{name, sha256}]
    required_engine_version: str | None
    required_plugin_versions: list
    warnings: list
    lists: int
    macros: int
    list_infos: list = field(default_factory=list)  # [{name, items, used}] in definition order
    macro_infos: list = field(default_factory=list)  # [{name, condition, used}]


class _Lists:
    """compile_list_infos: each list's items with earlier lists expanded, and textual substitution."""

    def __init__(self, col: Collector):
        self.by_index = sorted(col.lists.values(), key=lambda x: x.index)
        for li in self.by_index:
            li.used = False
        self.expanded = []
        for li in self.by_index:
            items = []
            for it in li.items:
                ref = col.lists.get(it)
                if ref is not None and ref is not li and ref.index < li.visibility:
                    ref.used = True
                    items.extend(ref.items)
                else:
                    items.append(it)
            self.expanded.append((li, items))

    def substitute(self, text):
        for li, items in self.expanded:
            if li.name in text:
                text, used = substitute_list(text, li.name, items)
                if used:
                    li.used = True
        return text


class _Macros:
    """compile_macros_infos: every macro parsed and resolved; then ``resolve`` inlines them into conditions."""

    def __init__(self, col: Collector, lists: _Lists):
        self.col = col
        self.by_index = sorted(col.macros.values(), key=lambda x: x.index)
        self.raw_ast: dict = {}
        self.resolved: dict = {}
        for m in self.by_index:
            m.used = False
            try:
                self.raw_ast[m.name] = parse(lists.substitute(m.cond))
            except ParseError as exc:
                where = f"macro '{m.name}'"
                raise RulesLoadError(m.file, where, "LOAD_ERR_COMPILE_CONDITION", str(exc), m.line) from exc
        for m in self.by_index:
            if m.name not in self.resolved:
                try:
                    self.resolved[m.name] = self._resolve(
                        self.raw_ast[m.name], lambda o, v=m.visibility: o.index < v, (m.name,)
                    )
                except CompileError as exc:
                    raise RulesLoadError(m.file, f"macro '{m.name}'", "LOAD_ERR_VALIDATE", str(exc), m.line) from exc
        for m in self.by_index:
            m.used = False  # only references from rules count as use

    def resolve(self, ast):
        """A rule's condition with its macros inlined (every macro is visible to rules)."""
        return self._resolve(ast, lambda o: True, ())

    def _resolve(self, node, visible, path):
        kind = node[0]
        if kind == "id":
            name = node[1]
            mac = self.col.macros.get(name)
            if mac is None or not visible(mac):
                raise CompileError(f"Undefined macro '{name}' used in filter.")
            mac.used = True
            if name in path:
                raise CompileError(f"reference loop in macro '{name}'")
            if name not in self.resolved:
                self.resolved[name] = self._resolve(
                    self.raw_ast[name], lambda o, v=mac.visibility: o.index < v, path + (name,)
                )
            return self.resolved[name]
        if kind in ("and", "or"):
            return (kind, [self._resolve(c, visible, path) for c in node[1]])
        if kind == "not":
            return ("not", self._resolve(node[1], visible, path))
        return node

    def mark_used_transitively(self):
        """A macro used by a rule uses the macros it references (resolve stops at already-resolved macros)."""
        stack = [m.name for m in self.by_index if m.used]
        while stack:
            for ref in _identifiers(self.raw_ast[stack.pop()]):
                mac = self.col.macros.get(ref)
                if mac is not None and not mac.used:
                    mac.used = True
                    stack.append(ref)


def compile_ruleset(col: Collector, read_warnings: list, append_output=()) -> Ruleset:
    warnings: list = []
    lists = _Lists(col)
    macros = _Macros(col, lists)
    memo: dict = {}
    compiled = []
    skipped = 0
    for r in sorted(col.rules.values(), key=lambda x: x.index):
        if r.source != SOURCE:
            skipped += 1
            warnings.append(
                LoadWarning(r.file, f"rule '{r.name}'", "LOAD_UNKNOWN_SOURCE", f"Unknown source {r.source}, skipping")
            )
            continue
        rule = _compile_rule(r, lists, macros, memo, warnings, append_output)
        if rule is not None:
            compiled.append(rule)
    macros.mark_used_transitively()
    for m in macros.by_index:
        if not m.used:
            warnings.append(
                LoadWarning(
                    m.file, f"macro '{m.name}'", "LOAD_UNUSED_MACRO", "Macro not referred to by any other rule/macro"
                )
            )
    for li in lists.by_index:
        if not li.used:
            warnings.append(
                LoadWarning(
                    li.file, f"list '{li.name}'", "LOAD_UNUSED_LIST", "List not referred to by any other rule/macro"
                )
            )
    return Ruleset(
        compiled,
        skipped,
        list(col.files),
        vtext(col.required_engine) if col.required_engine else None,
        [{"file": f, "alternatives": [{"name": n, "version": v} for n, v in g]} for f, g in col.plugin_reqs],
        read_warnings + warnings,
        len(col.lists),
        len(col.macros),
        [{"name": li.name, "items": list(li.items), "used": li.used} for li in lists.by_index],
        [{"name": m.name, "condition": m.cond, "used": m.used} for m in macros.by_index],
    )


def _compile_rule(r: RuleInfo, lists: _Lists, macros: _Macros, memo: dict, warnings: list, append_output=()):
    """compile_rule_infos for one rule: None when skip-if-unknown-filter drops it."""
    item = f"rule '{r.name}'"
    output = r.output
    extra_fields: dict = {}
    for extra in append_output:
        if extra.applies_to(r.name, r.source, r.tags):
            if extra.extra_output:
                output = output + " " + extra.extra_output
            for ef in extra.extra_fields:
                extra_fields[ef.key] = ef
    if "%container.info" in output:
        output = output.replace("%container.info", "").strip()
        warnings.append(
            LoadWarning(
                r.file,
                item,
                "LOAD_DEPRECATED_ITEM",
                "%container.info is deprecated and no "
                "more useful, and will be dropped by Falco 1.0.0. The container plugin will "
                "automatically add required fields to the output message.",
            )
        )
    try:
        fmt = OutputFormat(output)
    except CompileError as exc:
        if r.skip_unknown and _unknown_filter(str(exc)):
            warnings.append(LoadWarning(r.file, item, "LOAD_UNKNOWN_FILTER", str(exc)))
            return None
        raise RulesLoadError(r.file, item, "LOAD_ERR_COMPILE_OUTPUT", str(exc), r.line) from exc
    extras = []
    for ef in extra_fields.values():
        try:
            extras.append((ef.key, OutputFormat(ef.format), ef.raw))
        except CompileError as exc:
            raise RulesLoadError(r.file, item, "LOAD_ERR_COMPILE_OUTPUT", str(exc), r.line) from exc
    try:
        text = lists.substitute(exceptions_condition(r.cond, r.exceptions))
    except ItemError as exc:
        raise RulesLoadError(r.file, item, exc.code, exc.reason, r.line) from exc
    try:
        ast = parse(text)
    except ParseError as exc:
        raise RulesLoadError(r.file, item, "LOAD_ERR_COMPILE_CONDITION", str(exc), r.line) from exc
    try:
        ast = macros.resolve(ast)
    except CompileError as exc:
        raise RulesLoadError(r.file, item, "LOAD_ERR_VALIDATE", str(exc), r.line) from exc
    rule_warnings = condition_warnings(ast, skip=memo)
    try:
        fn = compile_node(ast, memo)
    except CompileError as exc:
        if r.skip_unknown and _unknown_filter(str(exc)):
            warnings.append(LoadWarning(r.file, item, "LOAD_UNKNOWN_FILTER", str(exc)))
            return None
        raise RulesLoadError(r.file, item, "LOAD_ERR_COMPILE_CONDITION", str(exc), r.line) from exc
    for code, msg in rule_warnings:
        warnings.append(LoadWarning(r.file, item, code, msg))
    info = {
        "name": r.name,
        "condition": r.cond,
        "description": r.desc,
        "output": r.output,
        "priority": r.priority,
        "source": r.source,
        "enabled": r.enabled,
        "tags": sorted(r.tags),
        "exceptions": [dict(e) for e in r.exceptions],
        "capture": r.capture,
        "capture_duration": r.capture_duration,
    }
    return CompiledRule(
        r.name,
        r.index,
        r.priority,
        r.source,
        tuple(sorted(r.tags)),
        r.enabled,
        r.desc,
        fn,
        fmt,
        constraints(ast),
        text,
        r.file,
        ast,
        tuple(extras),
        r.capture,
        r.capture_duration,
        info,
    )


def _identifiers(node):
    kind = node[0]
    if kind == "id":
        yield node[1]
    elif kind in ("and", "or"):
        for c in node[1]:
            yield from _identifiers(c)
    elif kind == "not":
        yield from _identifiers(node[1])


def _unknown_filter(msg: str) -> bool:
    return any(s in msg for s in ("invalid formatting token", "nonexistent field", "unknown event type"))


def exceptions_condition(cond: str, excs: list) -> str:
    """Falco builds exceptions as condition TEXT: (cond) and not ((f c v and ...) or ...)."""
    if not excs:
        return cond
    out = "(" + cond + ")"
    for e in excs:
        fields, comps, values = e["fields"], e["comps"], e["values"] or []
        icond = ""
        if isinstance(fields, str):
            if values:
                for v in values:
                    if isinstance(v, list):
                        raise ItemError("LOAD_ERR_VALIDATE", "Expected values array to contain a list of strings")
                icond = "(" + fields + " " + (comps or "") + " (" + ", ".join(quote_item(v) for v in values) + "))"
        else:
            comps = comps or []
            if len(comps) != len(fields):
                raise ItemError("LOAD_ERR_VALIDATE", "Fields and comps lists must have equal length")
            tuples = []
            for tup in values:
                if not isinstance(tup, list) or len(tup) != len(fields):
                    raise ItemError("LOAD_ERR_VALIDATE", "Fields and values lists must have equal length")
                terms = []
                for f, c, it in zip(fields, comps, tup):
                    if isinstance(it, list):
                        s = "(" + ", ".join(quote_item(x) for x in it) + ")"
                    elif c in ("in", "intersects", "pmatch") or split_modifier(c):
                        s = it if it.startswith("(") else "(" + it + ")"
                    else:
                        s = quote_item(it)
                    terms.append(" " + f + " " + c + " " + s)
                tuples.append("(" + " and ".join(terms) + ")")
            if tuples:
                icond = "(" + " or ".join(tuples) + ")"
        if icond:
            out += " and not " + icond
    return out
