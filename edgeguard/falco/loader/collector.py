"""The definitions read so far, merged as Falco's ``rule_loader_collector`` merges them.

A redefinition keeps the original's position (``index``) and becomes visible
from its own place on (``visibility``): a macro sees only what was defined
before it. Appends and replaces change an existing definition in place.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..compiler import CompileError, compile_field
from ..parser import ALL_OPS, ParseError, parse_field, split_modifier
from .errors import (
    ERROR_NO_PREVIOUS_LIST,
    ERROR_NO_PREVIOUS_MACRO,
    ERROR_NO_PREVIOUS_RULE_APPEND,
    ERROR_NO_PREVIOUS_RULE_REPLACE,
    Diagnostics,
    RulesLoadError,
    err,
)

ENGINE_VERSION = (0, 62, 0)  # the rules engine version of Falco 0.44
PLUGINS = {"k8saudit": (0, 18, 0), "json": (0, 7, 4)}
SOURCE = "k8s_audit"


def parse_version(text: str):
    if re.fullmatch(r"[0-9]+", text):
        return (0, int(text), 0)
    m = re.fullmatch(r"([0-9]+)\.([0-9]+)\.([0-9]+)", text)
    if not m:
        return None
    return tuple(int(x) for x in m.groups())


def vtext(v):
    return ".".join(map(str, v))


def compatible(have, need):
    return have[0] == need[0] and have >= need


@dataclass
class Info:
    name: str
    file: str
    line: int
    index: int = 0
    visibility: int = 0
    used: bool = False


@dataclass
class ListInfo(Info):
    items: list = field(default_factory=list)


@dataclass
class MacroInfo(Info):
    cond: str = ""


@dataclass
class RuleInfo(Info):
    cond: str = ""
    output: str = ""
    desc: str = ""
    priority: int = 7
    source: str = "syscall"
    tags: set = field(default_factory=set)
    enabled: bool = True
    exceptions: list = field(default_factory=list)
    warn_evttypes: bool = True
    skip_unknown: bool = False
    capture: bool = False
    capture_duration: int = 0  # ms; 0: the capture configuration's default


class Collector:
    def __init__(self):
        self.lists: dict[str, ListInfo] = {}
        self.macros: dict[str, MacroInfo] = {}
        self.rules: dict[str, RuleInfo] = {}
        self.counter = 0
        self.required_engine: tuple | None = None
        self.plugin_reqs: list = []
        self.files: list = []

    def add_file(self, name: str, text: str):
        self.files.append({"name": name, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})

    def _next(self):
        self.counter += 1
        return self.counter

    def _define(self, table: dict, info: Info):
        n = self._next()
        prev = table.get(info.name)
        info.index = prev.index if prev else n
        info.visibility = n
        table[info.name] = info

    # -- versions -----------------------------------------------------------------------------------
    def require_engine(self, ver):
        if not compatible(ENGINE_VERSION, ver):
            raise err(
                f"Rules require engine version {vtext(ver)}, but engine version is {vtext(ENGINE_VERSION)}",
                "LOAD_ERR_VALIDATE",
            )
        if self.required_engine is None or ver > self.required_engine:
            self.required_engine = ver

    def require_plugins(self, file, group):
        names = set()
        for n, v in group:
            if parse_version(v) is None or "." not in v:
                raise err(f"Invalid required version '{v}' for plugin '{n}'", "LOAD_ERR_VALIDATE")
            if n in names:
                raise err(f"Defined multiple alternative version requirements for plugin '{n}'", "LOAD_ERR_VALIDATE")
            names.add(n)
        self.plugin_reqs.append((file, group))

    def check_plugins(self):
        for file, group in self.plugin_reqs:
            ok = False
            for n, v in group:
                have = PLUGINS.get(n)
                need = parse_version(v)
                if have and need and compatible(have, need):
                    ok = True
            if not ok:
                alts = ", ".join(f"{n} (>= {v})" for n, v in group)
                raise RulesLoadError(
                    file,
                    "required_plugin_versions",
                    "LOAD_ERR_VALIDATE",
                    f"Plugin requirement not satisfied, must load one of: {alts}",
                )

    # -- lists and macros ---------------------------------------------------------------------------
    def define_list(self, info: ListInfo):
        self._define(self.lists, info)

    def append_list(self, name, items):
        prev = self._previous(self.lists, name, ERROR_NO_PREVIOUS_LIST)
        prev.items = prev.items + items
        self.updated(prev)

    def define_macro(self, info: MacroInfo):
        self._define(self.macros, info)

    def append_macro(self, name, cond):
        prev = self._previous(self.macros, name, ERROR_NO_PREVIOUS_MACRO)
        prev.cond = prev.cond + " " + cond
        self.updated(prev)

    @staticmethod
    def _previous(table: dict, name, missing):
        prev = table.get(name)
        if prev is None:
            raise err(missing, "LOAD_ERR_VALIDATE")
        return prev

    # -- rules --------------------------------------------------------------------------------------
    def define_rule(self, info: RuleInfo):
        prev = self.rules.get(info.name)
        if prev is not None and prev.source and prev.source != info.source:
            raise err("Rule has been re-defined with a different source", "LOAD_ERR_VALIDATE")
        for e in info.exceptions:
            self.validate_exception(e, info.source)
        self._define(self.rules, info)

    def existing_rule(self, name, source, op, has_values=True):
        """The rule an append or replace item changes (find_prev_rule, then Falco's checks of the update)."""
        prev = self.rules.get(name)
        if prev is not None and source and prev.source and source != prev.source:
            raise err("Rule has been re-defined with a different source", "LOAD_ERR_VALIDATE")
        if prev is None:
            raise err(
                ERROR_NO_PREVIOUS_RULE_APPEND if op == "append" else ERROR_NO_PREVIOUS_RULE_REPLACE, "LOAD_ERR_VALIDATE"
            )
        if not has_values:
            raise err(
                "Appended rule must have exceptions or condition property"
                if op == "append"
                else "The rule must have at least one field that can be replaced",
                "LOAD_ERR_VALIDATE",
            )
        return prev

    def append_to_rule(self, prev: RuleInfo, key, value, diag: Diagnostics):
        if key in ("condition", "output", "desc"):
            attr = "cond" if key == "condition" else key
            if value:
                setattr(prev, attr, getattr(prev, attr) + " " + value)
        elif key == "tags":
            prev.tags |= set(value)
        elif key == "exceptions":
            for e in value:
                self._append_exception(prev, e, diag)

    def _append_exception(self, prev: RuleInfo, e, diag: Diagnostics):
        same = next((x for x in prev.exceptions if x["name"] == e["name"]), None)
        if same is not None:
            if e["fields"] is not None:
                raise err("Can not append exception fields to existing exception, only values", "LOAD_ERR_VALIDATE")
            if e["comps"] is not None:
                raise err("Can not append exception comps to existing exception, only values", "LOAD_ERR_VALIDATE")
            same["values"] = (same["values"] or []) + (e["values"] or [])
        else:
            if e["fields"] is None:
                raise err("Rule exception must have fields property with a list of fields", "LOAD_ERR_VALIDATE")
            if not e["values"]:
                raise err("Rule exception must have values property with a list of values", "LOAD_ERR_VALIDATE")
            self.validate_exception(e, prev.source)
            prev.exceptions.append(e)

    def replace_in_rule(self, prev: RuleInfo, key, value):
        attr = {"condition": "cond", "skip-if-unknown-filter": "skip_unknown"}.get(key, key)
        setattr(prev, attr, value)

    def updated(self, prev: Info):
        prev.visibility = self._next()

    def enable_rule(self, name, enabled):
        prev = self.rules.get(name)
        if prev is None:
            raise err("Rule has 'enabled' key but no rule by that name already exists", "LOAD_ERR_VALIDATE")
        prev.enabled = enabled

    # -- exceptions ---------------------------------------------------------------------------------
    def validate_exception(self, e, source):
        """validate_exception_info: default comps, comps trimmed and checked, fields checked for the source."""
        if isinstance(e["fields"], list):
            if e["comps"] is None:
                e["comps"] = ["="] * len(e["fields"])
            if not isinstance(e["comps"], list) or len(e["comps"]) != len(e["fields"]):
                raise err("Fields and comps lists must have equal length", "LOAD_ERR_VALIDATE")
            e["comps"] = [_normalize_comp(c) for c in e["comps"]]
            for c in e["comps"]:
                if c not in ALL_OPS and not _is_modifier_op(c):
                    raise err(f"'{c}' is not a supported comparison operator", "LOAD_ERR_VALIDATE")
            flds = e["fields"]
        else:
            if e["comps"] is None:
                e["comps"] = "in"
            if isinstance(e["comps"], list):
                raise err("Fields and comps must both be strings", "LOAD_ERR_VALIDATE")
            e["comps"] = _normalize_comp(e["comps"])
            if e["comps"] not in ("in", "pmatch", "intersects") and not _is_modifier_op(e["comps"]):
                raise err(
                    "When fields is a single value, comps must be one of (in, pmatch, intersects) or a "
                    "modifier operator (e.g. startswith oneof)",
                    "LOAD_ERR_VALIDATE",
                )
            flds = [e["fields"]]
        if source == SOURCE:
            for f in flds:
                _check_lhs_field(f)


def _normalize_comp(c: str) -> str:
    return c.strip(" \t\r\n")


def _is_modifier_op(c: str) -> bool:
    """A string operator with a list modifier (``startswith oneof``), as libsinsp's parser takes it."""
    return split_modifier(c) is not None


def _check_lhs_field(text: str):
    try:
        node = parse_field(text)
        if node is None:
            raise err(f"'{text}' is not a supported filter field", "LOAD_ERR_VALIDATE")
        compile_field(node)
    except (ParseError, CompileError):
        raise err(f"'{text}' is not a supported filter field", "LOAD_ERR_VALIDATE") from None
