"""Falco rules-file loader: reader, collector and compiler (Falco 0.41 ``rule_loader_*.cpp``).

Files load one at a time into one collector; after each file everything collected
so far is recompiled, as Falco does, so the last successful compile is the
ruleset. Conditions are parsed and turned into closures here, once.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .alert import PRIORITIES, priority_number
from .compiler import CompileError, compile_field, compile_node, constraints
from .lint import condition_warnings
from .output import OutputFormat
from .parser import ALL_OPS, ParseError, parse, parse_field, quote_item, substitute_list, to_text

ENGINE_VERSION = (0, 50, 0)          # the rules engine version of Falco 0.41
PLUGINS = {"k8saudit": (0, 18, 0), "json": (0, 7, 4)}
SOURCE = "k8s_audit"

_TITLES = {
    "LOAD_ERR_FILE_READ": "Could not read file",
    "LOAD_ERR_YAML_PARSE": "Invalid yaml",
    "LOAD_ERR_YAML_VALIDATE": "Error validating internal structure of YAML file",
    "LOAD_ERR_COMPILE_CONDITION": "Error compiling condition",
    "LOAD_ERR_COMPILE_OUTPUT": "Error compiling output",
    "LOAD_ERR_VALIDATE": "Error validating rule/macro/list/exception objects",
}


class RulesLoadError(Exception):
    """A load error naming the file, the item and the reason."""

    def __init__(self, file: str, item: str, code: str, reason: str, line: int | None = None):
        self.file, self.item, self.code, self.reason, self.line = file, item, code, reason, line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {item}: {code} ({_TITLES.get(code, code)}): {reason}")


@dataclass
class LoadWarning:
    file: str
    item: str
    code: str
    message: str

    def __str__(self):
        return f"{self.file}: {self.item}: {self.code}: {self.message}"


# ---- YAML reading -----------------------------------------------------------------------------------
class _LineDict(dict):
    line: int = 0


class _Loader(yaml.CBaseLoader if hasattr(yaml, "CBaseLoader") else yaml.BaseLoader):
    """All scalars stay text (like yaml-cpp), null is None, maps remember their line."""

    def construct_scalar(self, node):
        if node.style in (None, "") and node.value in ("", "~", "null", "Null", "NULL"):
            return None
        return node.value

    def construct_mapping(self, node, deep=False):
        d = _LineDict()
        d.line = node.start_mark.line + 1
        for k_node, v_node in node.value:
            d[self.construct_object(k_node, deep=True)] = self.construct_object(v_node, deep=True)
        return d

    def construct_sequence(self, node, deep=False):
        return [self.construct_object(c, deep=True) for c in node.value]


class _ItemError(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code, self.reason = code, reason


def _err(reason, code="LOAD_ERR_YAML_VALIDATE"):
    return _ItemError(code, reason)


def _val(item: dict, key: str, *, optional=False):
    if key not in item:
        if optional:
            return None
        raise _err(f"Item has no mapping for key '{key}'")
    v = item[key]
    if v is None:
        if optional:
            return None
        raise _err(f"Mapping for key '{key}' is empty")
    if isinstance(v, (list, dict)):
        raise _err(f"Value is not a scalar value (key '{key}')")
    if v == "":
        raise _err(f"Value must be non-empty (key '{key}')")
    return v


_TRUE = {"true", "yes", "on", "y"}
_FALSE = {"false", "no", "off", "n"}


def _bool(item, key, default):
    v = _val(item, key, optional=True)
    if v is None:
        return default
    low = v.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _err(f"Can't decode YAML scalar value for key '{key}': '{v}' is not a boolean")


def _seq(item, key, *, optional=False):
    if key not in item:
        if optional:
            return None
        raise _err(f"Item has no mapping for key '{key}'")
    v = item[key]
    if v is None and optional:
        return None
    if not isinstance(v, list):
        raise _err(f"Value is not a sequence (key '{key}')")
    out = []
    for x in v:
        if isinstance(x, (list, dict)):
            raise _err(f"sequence value is not scalar (key '{key}')")
        out.append("" if x is None else x)
    return out


def parse_version(text: str):
    if re.fullmatch(r"[0-9]+", text):
        return (0, int(text), 0)
    m = re.fullmatch(r"([0-9]+)\.([0-9]+)\.([0-9]+)", text)
    if not m:
        return None
    return tuple(int(x) for x in m.groups())


def _vtext(v):
    return ".".join(map(str, v))


def _compatible(have, need):
    return have[0] == need[0] and have >= need


# ---- collector ------------------------------------------------------------------------------------
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


APPENDABLE = ("condition", "output", "desc", "tags", "exceptions")
REPLACEABLE = ("condition", "output", "desc", "priority", "tags", "exceptions", "enabled", "warn_evttypes",
               "skip-if-unknown-filter")
_LIST_NAME = re.compile(r"[^()\"'\s=,]+")
_MACRO_NAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")


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


@dataclass
class Ruleset:
    rules: list                     # CompiledRule, in evaluation (definition) order, all k8s_audit rules
    skipped_other_source: int
    files: list                     # [{name, sha256}]
    required_engine_version: str | None
    required_plugin_versions: list
    warnings: list
    lists: int
    macros: int


class Collector:
    def __init__(self):
        self.lists: dict[str, ListInfo] = {}
        self.macros: dict[str, MacroInfo] = {}
        self.rules: dict[str, RuleInfo] = {}
        self.counter = 0
        self.required_engine: tuple | None = None
        self.plugin_reqs: list = []
        self.warnings: list[LoadWarning] = []
        self.files: list = []
        self._file = ""
        self._item = ""

    # -- reading ----------------------------------------------------------------------------------
    def warn(self, code, msg, item=None):
        self.warnings.append(LoadWarning(self._file, item or self._item, code, msg))

    def read(self, name: str, text: str):
        self._file = name
        self.files.append({"name": name, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
        try:
            docs = list(yaml.load_all(text, Loader=_Loader))
        except yaml.YAMLError as exc:
            raise RulesLoadError(name, "rules content", "LOAD_ERR_YAML_PARSE", str(exc).replace("\n", " "))
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, list):
                reason = "Rules content is not yaml array of objects" if isinstance(doc, dict) \
                    else "Rules content is not yaml"
                raise RulesLoadError(name, "rules content", "LOAD_ERR_YAML_VALIDATE", reason)
            for entry in doc:
                if entry is None:
                    continue
                if not isinstance(entry, dict):
                    raise RulesLoadError(name, "rules content", "LOAD_ERR_YAML_VALIDATE",
                                         "Unexpected element type. Each element should be a yaml associative array.")
                self._item = _describe(entry)
                try:
                    self._read_item(entry)
                except _ItemError as exc:
                    raise RulesLoadError(name, self._item, exc.code, exc.reason, getattr(entry, "line", None))

    def _next(self):
        self.counter += 1
        return self.counter

    def _define(self, table: dict, info: Info):
        n = self._next()
        prev = table.get(info.name)
        info.index = prev.index if prev else n
        info.visibility = n
        table[info.name] = info

    def _read_item(self, item):
        line = getattr(item, "line", 0)
        if "required_engine_version" in item:
            v = _val(item, "required_engine_version")
            ver = parse_version(v)
            if ver is None:
                raise _err(f"Unable to parse engine version '{v}' as a semver string. Expected \"x.y.z\" semver format.")
            if not _compatible(ENGINE_VERSION, ver):
                raise _err(f"Rules require engine version {_vtext(ver)}, but engine version is "
                           f"{_vtext(ENGINE_VERSION)}", "LOAD_ERR_VALIDATE")
            if self.required_engine is None or ver > self.required_engine:
                self.required_engine = ver
            return
        if "required_plugin_versions" in item:
            reqs = item["required_plugin_versions"]
            if not isinstance(reqs, list):
                raise _err("Value is not a sequence (key 'required_plugin_versions')")
            for r in reqs:
                if not isinstance(r, dict):
                    raise _err("Unexpected element type in 'required_plugin_versions': a map with name and version "
                               "is required")
                group = [(_val(r, "name"), _val(r, "version"))]
                for alt in r.get("alternatives") or []:
                    if not isinstance(alt, dict):
                        raise _err("Unexpected element type in 'alternatives'")
                    group.append((_val(alt, "name"), _val(alt, "version")))
                names = set()
                for n, v in group:
                    if parse_version(v) is None or "." not in v:
                        raise _err(f"Plugin version string {v} not valid")
                    if n in names:
                        raise _err(f"Defined multiple alternative version requirements for plugin {n}")
                    names.add(n)
                self.plugin_reqs.append((self._file, group))
            return
        if "list" in item:
            return self._read_list(item, line)
        if "macro" in item:
            return self._read_macro(item, line)
        if "rule" in item:
            return self._read_rule(item, line)
        self.warn("LOAD_UNKNOWN_ITEM", "Unknown top level item")

    def _override_map(self, item, allowed_keys):
        ov = item.get("override")
        if ov is None:
            return None
        if not isinstance(ov, dict):
            raise _err("Value is not a map (key 'override')")
        for k, op in ov.items():
            if op not in ("append", "replace"):
                raise _err(f"Invalid override operation for key '{k}': '{op}'. Allowed values are: append, replace")
            if k not in allowed_keys:
                raise _err(f"Unexpected key '{k}' under 'override'")
        return ov

    def _read_list(self, item, line):
        name = _val(item, "list")
        if not _LIST_NAME.fullmatch(name):
            self.warn("LOAD_INVALID_LIST_NAME", "List has an invalid name. List names should match a regular "
                                                "expression: ([^()\"'[:space:]=,]+)")
        items = _seq(item, "items")
        append = _bool(item, "append", False)
        ov = self._override_map(item, ("items",))
        if append and ov is not None:
            raise _err("Keys 'override' and 'append: true' cannot be used together. Add an 'append' entry "
                       "(e.g. 'items: append') under 'override' instead.")
        if append:
            self.warn("LOAD_DEPRECATED_ITEM", "The 'append' key is deprecated. Use 'override: {items: append}'.")
        if append or (ov and ov.get("items") == "append"):
            prev = self.lists.get(name)
            if prev is None:
                raise _err("List uses 'append' or 'override.items: append' but no list by that name already exists",
                           "LOAD_ERR_VALIDATE")
            prev.items = prev.items + items
            prev.visibility = self._next()
            return
        self._define(self.lists, ListInfo(name, self._file, line, items=list(items)))

    def _read_macro(self, item, line):
        name = _val(item, "macro")
        if not _MACRO_NAME.fullmatch(name):
            self.warn("LOAD_INVALID_MACRO_NAME", "Macro has an invalid name. Macro names should match a regular "
                                                 "expression: ([a-zA-Z]+[a-zA-Z0-9_]*)")
        cond = _val(item, "condition")
        append = _bool(item, "append", False)
        ov = self._override_map(item, ("condition",))
        if append and ov is not None:
            raise _err("Keys 'override' and 'append: true' cannot be used together. Add an 'append' entry "
                       "(e.g. 'condition: append') under 'override' instead.")
        if append:
            self.warn("LOAD_DEPRECATED_ITEM", "The 'append' key is deprecated. Use 'override: {condition: append}'.")
        if append or (ov and ov.get("condition") == "append"):
            prev = self.macros.get(name)
            if prev is None:
                raise _err("Macro uses 'append' or 'override.condition: append' but no macro by that name already "
                           "exists", "LOAD_ERR_VALIDATE")
            prev.cond = prev.cond + " " + cond
            prev.visibility = self._next()
            return
        self._define(self.macros, MacroInfo(name, self._file, line, cond=cond))

    # -- rules --------------------------------------------------------------------------------------
    def _read_exceptions(self, item, rule_source, *, validate: bool):
        raw = item.get("exceptions")
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise _err("Value is not a sequence (key 'exceptions')")
        out = []
        names = set()
        for ex in raw:
            if not isinstance(ex, dict):
                raise _err("Unexpected element type in 'exceptions': each exception must be a map")
            name = _val(ex, "name")
            if name in names:
                self.warn("LOAD_EXCEPTION_NAME_NOT_UNIQUE", f"Multiple definitions of exception '{name}' in the "
                                                            "same rule")
            names.add(name)
            e = {"name": name, "fields": None, "comps": None, "values": None}
            if "fields" in ex and ex["fields"] is not None:
                f = ex["fields"]
                e["fields"] = _seq(ex, "fields") if isinstance(f, list) else _val(ex, "fields")
            if "comps" in ex and ex["comps"] is not None:
                c = ex["comps"]
                e["comps"] = _seq(ex, "comps") if isinstance(c, list) else _val(ex, "comps")
            if "values" in ex and ex["values"] is not None:
                vals = ex["values"]
                if not isinstance(vals, list):
                    raise _err("Value is not a sequence (key 'values')")
                for v in vals:
                    if isinstance(v, dict):
                        raise _err("Expected values array to contain a list of strings or lists")
                    if isinstance(v, list):
                        for x in v:
                            if isinstance(x, dict) or (isinstance(x, list) and
                                                       any(isinstance(y, (list, dict)) for y in x)):
                                raise _err("Expected values array to contain a list of strings or lists")
                e["values"] = [([("" if y is None else y) for y in v] if isinstance(v, list)
                                else ("" if v is None else v)) for v in vals]
            out.append(e)
            if validate:
                self._validate_exception(e, rule_source)
        return out

    def _validate_exception(self, e, source):
        if e["fields"] is None:
            raise _err("Item has no mapping for key 'fields'")
        if isinstance(e["fields"], list):
            if e["comps"] is None:
                e["comps"] = ["="] * len(e["fields"])
            if not isinstance(e["comps"], list) or len(e["comps"]) != len(e["fields"]):
                raise _err("Fields and comps lists must have equal length", "LOAD_ERR_VALIDATE")
            for c in e["comps"]:
                if c not in ALL_OPS:
                    raise _err(f"'{c}' is not a supported comparison operator", "LOAD_ERR_VALIDATE")
            flds = e["fields"]
        else:
            if e["comps"] is None:
                e["comps"] = "in"
            if isinstance(e["comps"], list) or e["comps"] not in ("in", "pmatch", "intersects"):
                raise _err(f"'{e['comps']}' is not a supported comparison operator for a single field exception: "
                           "use in, pmatch or intersects", "LOAD_ERR_VALIDATE")
            flds = [e["fields"]]
        if source == SOURCE:
            for f in flds:
                _check_lhs_field(f)

    def _read_rule(self, item, line):
        name = _val(item, "rule")
        source = _val(item, "source", optional=True) or ""
        ov = item.get("override")
        append = _bool(item, "append", False)
        if ov is not None:
            if append:
                raise _err("Keys 'override' and 'append: true' cannot be used together. Add an 'append' entry "
                           "(e.g. 'condition: append') under 'override' instead.")
            if not isinstance(ov, dict):
                raise _err("Value is not a map (key 'override')")
            for k, op in ov.items():
                if op not in ("append", "replace"):
                    raise _err(f"Invalid override operation for key '{k}': '{op}'. Allowed values are: "
                               "append, replace")
                if op == "append" and k not in APPENDABLE:
                    raise _err(f"Key '{k}' cannot be appended to, use 'replace' instead")
                if op == "replace" and k not in REPLACEABLE:
                    raise _err(f"Key '{k}' cannot be replaced")
                if k not in item:
                    raise _err(f"An {op} override for '{k}' was specified but '{k}' is not defined")
            for k in item:
                if k in set(APPENDABLE) | set(REPLACEABLE) and k not in ov:
                    raise _err(f"Unexpected key '{k}': no corresponding entry under 'override' is defined.")
            app = [k for k, op in ov.items() if op == "append"]
            rep = [k for k, op in ov.items() if op == "replace"]
            if app:
                self._append_rule(name, source, item, app)
            if rep:
                self._replace_rule(name, source, item, rep)
            return
        if append:
            self.warn("LOAD_DEPRECATED_ITEM", "The 'append' key is deprecated. Use 'override' instead.")
            keys = [k for k in ("condition", "exceptions") if k in item]
            if not keys:
                raise _err("Appended rule must have exceptions or condition property")
            self._append_rule(name, source, item, keys)
            return
        if not any(k in item for k in ("condition", "output", "desc", "priority")):
            if "enabled" not in item:
                raise _err("Item has no mapping for key 'condition'")
            self.warn("LOAD_DEPRECATED_ITEM", "The 'enabled' key without other keys is deprecated. Use "
                                              "'override: {enabled: replace}'.")
            prev = self.rules.get(name)
            if prev is None:
                raise _err("Rule has 'enabled' key but no rule by that name already exists", "LOAD_ERR_VALIDATE")
            prev.enabled = _bool(item, "enabled", True)
            return
        info = RuleInfo(name, self._file, line)
        info.cond = _val(item, "condition")
        info.output = _val(item, "output").strip()
        if not info.output:
            raise _err("Value must be non-empty (key 'output')")
        info.desc = _val(item, "desc")
        info.priority = self._priority(_val(item, "priority"))
        info.source = source or "syscall"
        info.enabled = _bool(item, "enabled", True)
        info.warn_evttypes = _bool(item, "warn_evttypes", True)
        info.skip_unknown = _bool(item, "skip-if-unknown-filter", False)
        info.tags = set(_seq(item, "tags", optional=True) or [])
        info.exceptions = self._read_exceptions(item, info.source, validate=True)
        prev = self.rules.get(name)
        if prev is not None and prev.source and prev.source != info.source:
            raise _err("Rule has been re-defined with a different source", "LOAD_ERR_VALIDATE")
        self._define(self.rules, info)

    @staticmethod
    def _priority(text):
        try:
            if text.strip() != text:
                raise ValueError(text)  # Falco compares with strcasecmp: no trimming
            return priority_number(text)
        except ValueError:
            raise _err(f"Invalid priority '{text}'") from None

    def _prev_rule(self, name, source, msg):
        prev = self.rules.get(name)
        if prev is None:
            raise _err(msg, "LOAD_ERR_VALIDATE")
        if source and prev.source and source != prev.source:
            raise _err("Rule has been re-defined with a different source", "LOAD_ERR_VALIDATE")
        return prev

    def _append_rule(self, name, source, item, keys):
        prev = self._prev_rule(name, source, "Rule uses 'append' or 'override.<key>: append' but no rule by that "
                                             "name already exists")
        for k in keys:
            if k in ("condition", "output", "desc"):
                new = _val(item, k, optional=True) or ""
                attr = "cond" if k == "condition" else k
                if new:
                    setattr(prev, attr, getattr(prev, attr) + " " + new)
            elif k == "tags":
                prev.tags |= set(_seq(item, "tags", optional=True) or [])
            elif k == "exceptions":
                for e in self._read_exceptions(item, prev.source, validate=False):
                    same = next((x for x in prev.exceptions if x["name"] == e["name"]), None)
                    if same is not None:
                        if e["fields"] is not None or e["comps"] is not None:
                            raise _err("Can not append exception fields/comps to existing exception, only values",
                                       "LOAD_ERR_VALIDATE")
                        if not e["values"]:
                            self.warn("LOAD_APPEND_NO_VALUES", f"Overriding/appending exception '{e['name']}' with "
                                                               "no values")
                            continue
                        same["values"] = (same["values"] or []) + e["values"]
                    else:
                        if e["fields"] is None:
                            raise _err("Item has no mapping for key 'fields'")
                        if not e["values"]:
                            raise _err(f"Appended exception '{e['name']}' must have values", "LOAD_ERR_VALIDATE")
                        self._validate_exception(e, prev.source)
                        prev.exceptions.append(e)
        prev.visibility = self._next()

    def _replace_rule(self, name, source, item, keys):
        prev = self._prev_rule(name, source, "An replace to a rule was requested but no rule by that name already "
                                             "exists")
        for k in keys:
            if k == "condition":
                prev.cond = _val(item, k)
            elif k in ("output", "desc"):
                setattr(prev, k, _val(item, k))
            elif k == "priority":
                prev.priority = self._priority(_val(item, k))
            elif k == "tags":
                prev.tags = set(_seq(item, "tags", optional=True) or [])
            elif k == "exceptions":
                excs = self._read_exceptions(item, prev.source, validate=False)
                for e in excs:
                    if e["fields"] is None:
                        raise _err("Item has no mapping for key 'fields'")
                prev.exceptions = excs
            elif k == "enabled":
                prev.enabled = _bool(item, k, True)
            elif k == "warn_evttypes":
                prev.warn_evttypes = _bool(item, k, True)
            elif k == "skip-if-unknown-filter":
                prev.skip_unknown = _bool(item, k, False)
        prev.visibility = self._next()

    # -- compile ------------------------------------------------------------------------------------
    def compile(self) -> Ruleset:
        warnings: list = []
        lists_by_index = sorted(self.lists.values(), key=lambda x: x.index)
        for li in lists_by_index:
            li.used = False
        expanded = []
        for li in lists_by_index:
            items = []
            for it in li.items:
                ref = self.lists.get(it)
                if ref is not None and ref is not li and ref.index < li.visibility:
                    ref.used = True
                    items.extend(ref.items)
                else:
                    items.append(it)
            expanded.append((li, items))

        def subst(text):
            for li, items in expanded:
                if li.name in text:
                    text, used = substitute_list(text, li.name, items)
                    if used:
                        li.used = True
            return text

        macros_by_index = sorted(self.macros.values(), key=lambda x: x.index)
        raw_ast = {}
        for m in macros_by_index:
            m.used = False
            try:
                raw_ast[m.name] = parse(subst(m.cond))
            except ParseError as exc:
                raise RulesLoadError(m.file, f"macro '{m.name}'", "LOAD_ERR_COMPILE_CONDITION", str(exc), m.line)
        resolved: dict = {}

        def resolve(node, visible, path):
            kind = node[0]
            if kind == "id":
                name = node[1]
                mac = self.macros.get(name)
                if mac is None or not visible(mac):
                    raise CompileError(f"Undefined macro '{name}' used in filter.")
                mac.used = True
                if name in path:
                    raise CompileError(f"reference loop in macro '{name}'")
                if name not in resolved:
                    resolved[name] = resolve(raw_ast[name], lambda o, v=mac.visibility: o.index < v,
                                             path + (name,))
                return resolved[name]
            if kind in ("and", "or"):
                return (kind, [resolve(c, visible, path) for c in node[1]])
            if kind == "not":
                return ("not", resolve(node[1], visible, path))
            return node

        for m in macros_by_index:
            if m.name not in resolved:
                try:
                    resolved[m.name] = resolve(raw_ast[m.name], lambda o, v=m.visibility: o.index < v, (m.name,))
                except CompileError as exc:
                    raise RulesLoadError(m.file, f"macro '{m.name}'", "LOAD_ERR_VALIDATE", str(exc), m.line)
        for m in macros_by_index:
            m.used = False  # only references from rules count as use

        memo: dict = {}
        compiled = []
        skipped = 0
        for r in sorted(self.rules.values(), key=lambda x: x.index):
            if r.source != SOURCE:
                skipped += 1
                warnings.append(LoadWarning(r.file, f"rule '{r.name}'", "LOAD_UNKNOWN_SOURCE",
                                            f"Unknown source {r.source}, skipping"))
                continue
            item = f"rule '{r.name}'"
            output = r.output
            if "%container.info" in output:
                output = output.replace("%container.info", "").strip()
                warnings.append(LoadWarning(r.file, item, "LOAD_DEPRECATED_ITEM", "%container.info is deprecated "
                                            "and was removed from the output"))
            try:
                fmt = OutputFormat(output)
            except CompileError as exc:
                if r.skip_unknown and _unknown_filter(str(exc)):
                    warnings.append(LoadWarning(r.file, item, "LOAD_UNKNOWN_FILTER", str(exc)))
                    continue
                raise RulesLoadError(r.file, item, "LOAD_ERR_COMPILE_OUTPUT", str(exc), r.line)
            try:
                text = subst(exceptions_condition(r.cond, r.exceptions))
            except _ItemError as exc:
                raise RulesLoadError(r.file, item, exc.code, exc.reason, r.line)
            try:
                ast = parse(text)
            except ParseError as exc:
                raise RulesLoadError(r.file, item, "LOAD_ERR_COMPILE_CONDITION", str(exc), r.line)
            try:
                ast = resolve(ast, lambda o: True, ())
            except CompileError as exc:
                raise RulesLoadError(r.file, item, "LOAD_ERR_VALIDATE", str(exc), r.line)
            rule_warnings = condition_warnings(ast, skip=memo)
            try:
                fn = compile_node(ast, memo)
            except CompileError as exc:
                if r.skip_unknown and _unknown_filter(str(exc)):
                    warnings.append(LoadWarning(r.file, item, "LOAD_UNKNOWN_FILTER", str(exc)))
                    continue
                raise RulesLoadError(r.file, item, "LOAD_ERR_COMPILE_CONDITION", str(exc), r.line)
            for code, msg in rule_warnings:
                warnings.append(LoadWarning(r.file, item, code, msg))
            compiled.append(CompiledRule(r.name, r.index, r.priority, r.source, tuple(sorted(r.tags)), r.enabled,
                                         r.desc, fn, fmt, constraints(ast), text, r.file))
        stack = [m.name for m in macros_by_index if m.used]
        while stack:
            for ref in _identifiers(raw_ast[stack.pop()]):
                mac = self.macros.get(ref)
                if mac is not None and not mac.used:
                    mac.used = True
                    stack.append(ref)
        for m in macros_by_index:
            if not m.used:
                warnings.append(LoadWarning(m.file, f"macro '{m.name}'", "LOAD_UNUSED_MACRO", "Macro not referred to "
                                            "by any other rule/macro"))
        for li in lists_by_index:
            if not li.used:
                warnings.append(LoadWarning(li.file, f"list '{li.name}'", "LOAD_UNUSED_LIST", "List not referred to "
                                            "by any other rule/macro"))
        return Ruleset(compiled, skipped, list(self.files),
                       _vtext(self.required_engine) if self.required_engine else None,
                       [{"file": f, "alternatives": [{"name": n, "version": v} for n, v in g]}
                        for f, g in self.plugin_reqs],
                       self.warnings + warnings, len(self.lists), len(self.macros))

    def check_plugins(self):
        for file, group in self.plugin_reqs:
            ok = False
            for n, v in group:
                have = PLUGINS.get(n)
                need = parse_version(v)
                if have and need and _compatible(have, need):
                    ok = True
            if not ok:
                alts = ", ".join(f"{n} (>= {v})" for n, v in group)
                raise RulesLoadError(file, "required_plugin_versions", "LOAD_ERR_VALIDATE",
                                     f"Plugin requirement not satisfied, must load one of: {alts}")


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


def _describe(entry: dict) -> str:
    for kind in ("rule", "macro", "list"):
        if kind in entry:
            return f"{kind} '{entry[kind]}'"
    for kind in ("required_engine_version", "required_plugin_versions"):
        if kind in entry:
            return kind
    return "item"


def _check_lhs_field(text: str):
    try:
        node = parse_field(text)
        if node is None:
            raise _err(f"'{text}' is not a supported filter field", "LOAD_ERR_VALIDATE")
        compile_field(node)
    except (ParseError, CompileError) as exc:
        raise _err(f"'{text}' is not a supported filter field: {exc}", "LOAD_ERR_VALIDATE") from None


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
                        raise _ItemError("LOAD_ERR_VALIDATE", "Expected values array to contain a list of strings")
                icond = "(" + fields + " " + (comps or "") + " (" + ", ".join(quote_item(v) for v in values) + "))"
        else:
            comps = comps or []
            if len(comps) != len(fields):
                raise _ItemError("LOAD_ERR_VALIDATE", "Fields and comps lists must have equal length")
            tuples = []
            for tup in values:
                if not isinstance(tup, list) or len(tup) != len(fields):
                    raise _ItemError("LOAD_ERR_VALIDATE", "Fields and values lists must have equal length")
                terms = []
                for f, c, it in zip(fields, comps, tup):
                    if isinstance(it, list):
                        s = "(" + ", ".join(quote_item(x) for x in it) + ")"
                    elif c in ("in", "intersects", "pmatch"):
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


def rules_paths(paths) -> list[Path]:
    """Expand directories like Falco: regular *.yaml/*.yml files, byte-wise sorted."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted((c for c in p.iterdir() if c.is_file() and c.suffix in (".yaml", ".yml")),
                              key=lambda c: c.name.encode()))
        else:
            out.append(p)
    return out


def load(sources, *, check_plugins: bool = True) -> Ruleset:
    """Load rules from ``sources``: paths, or (name, text) pairs, in order. Raises RulesLoadError."""
    col = Collector()
    ruleset = None
    for src in sources:
        if isinstance(src, tuple):
            name, text = src
        else:
            name = str(src)
            try:
                text = Path(src).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RulesLoadError(name, "file", "LOAD_ERR_FILE_READ", str(exc)) from None
        col.read(name, text)
        ruleset = col.compile()
    if ruleset is None:
        ruleset = col.compile()
    if check_plugins:
        col.check_plugins()
    return ruleset


__all__ = ["load", "Ruleset", "CompiledRule", "RulesLoadError", "LoadWarning", "rules_paths", "PRIORITIES",
           "exceptions_condition", "to_text"]
