"""Read a rules file's YAML items into the collector, as Falco's ``rule_loader_reader`` does.

The reader checks each item's structure (keys, scalar and sequence values,
``append``/``override`` combinations) and decodes it; the collector merges what
it decoded. Every error names the file, the item and its line.
"""
from __future__ import annotations

import re

import yaml

from ..alert import priority_number
from .collector import Collector, ListInfo, MacroInfo, RuleInfo, parse_version
from .errors import Diagnostics, ItemError, RulesLoadError, err


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


# ---- value decoding (decode_val / decode_seq) --------------------------------------------------------
def _val(item: dict, key: str, *, optional=False):
    if key not in item:
        if optional:
            return None
        raise err(f"Item has no mapping for key '{key}'")
    v = item[key]
    if v is None:
        if optional:
            return None
        raise err(f"Mapping for key '{key}' is empty")
    if isinstance(v, (list, dict)):
        raise err(f"Value is not a scalar value (key '{key}')")
    if v == "":
        raise err(f"Value must be non-empty (key '{key}')")
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
    raise err(f"Can't decode YAML scalar value for key '{key}': '{v}' is not a boolean")


def _seq(item, key, *, optional=False):
    if key not in item:
        if optional:
            return None
        raise err(f"Item has no mapping for key '{key}'")
    v = item[key]
    if v is None and optional:
        return None
    if not isinstance(v, list):
        raise err(f"Value is not a sequence (key '{key}')")
    out = []
    for x in v:
        if isinstance(x, (list, dict)):
            raise err(f"sequence value is not scalar (key '{key}')")
        out.append("" if x is None else x)
    return out


def _priority(text):
    try:
        if text.strip() != text:
            raise ValueError(text)  # Falco compares with strcasecmp: no trimming
        return priority_number(text)
    except ValueError:
        raise err(f"Invalid priority '{text}'") from None


def _describe(entry: dict) -> str:
    for kind in ("rule", "macro", "list"):
        if kind in entry:
            return f"{kind} '{entry[kind]}'"
    for kind in ("required_engine_version", "required_plugin_versions"):
        if kind in entry:
            return kind
    return "item"


APPENDABLE = ("condition", "output", "desc", "tags", "exceptions")
REPLACEABLE = ("condition", "output", "desc", "priority", "tags", "exceptions", "enabled", "warn_evttypes",
               "skip-if-unknown-filter")
_NAMING = {   # kind: (its value's key, valid names, warning code, warning)
    "list": ("items", re.compile(r"[^()\"'\s=,]+"), "LOAD_INVALID_LIST_NAME",
             "List has an invalid name. List names should match a regular expression: ([^()\"'[:space:]=,]+)"),
    "macro": ("condition", re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*"), "LOAD_INVALID_MACRO_NAME",
              "Macro has an invalid name. Macro names should match a regular expression: ([a-zA-Z]+[a-zA-Z0-9_]*)"),
}


class Reader:
    def __init__(self, col: Collector, diag: Diagnostics):
        self.col = col
        self.diag = diag

    def warn(self, code, msg):
        self.diag.warn(code, msg)

    def read(self, name: str, text: str):
        self.diag.file = name
        self.col.add_file(name, text)
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
                self.diag.item = _describe(entry)
                try:
                    self._read_item(entry)
                except ItemError as exc:
                    raise RulesLoadError(name, self.diag.item, exc.code, exc.reason, getattr(entry, "line", None))

    def _read_item(self, item):
        line = getattr(item, "line", 0)
        if "required_engine_version" in item:
            v = _val(item, "required_engine_version")
            ver = parse_version(v)
            if ver is None:
                raise err(f"Unable to parse engine version '{v}' as a semver string. Expected \"x.y.z\" semver format.")
            self.col.require_engine(ver)
            return
        if "required_plugin_versions" in item:
            return self._read_plugin_versions(item)
        if "list" in item:
            return self._read_list_or_macro(item, line, "list")
        if "macro" in item:
            return self._read_list_or_macro(item, line, "macro")
        if "rule" in item:
            return self._read_rule(item, line)
        self.warn("LOAD_UNKNOWN_ITEM", "Unknown top level item")

    def _read_plugin_versions(self, item):
        reqs = item["required_plugin_versions"]
        if not isinstance(reqs, list):
            raise err("Value is not a sequence (key 'required_plugin_versions')")
        for r in reqs:
            if not isinstance(r, dict):
                raise err("Unexpected element type in 'required_plugin_versions': a map with name and version "
                          "is required")
            group = [(_val(r, "name"), _val(r, "version"))]
            for alt in r.get("alternatives") or []:
                if not isinstance(alt, dict):
                    raise err("Unexpected element type in 'alternatives'")
                group.append((_val(alt, "name"), _val(alt, "version")))
            names = set()
            for n, v in group:
                if parse_version(v) is None or "." not in v:
                    raise err(f"Plugin version string {v} not valid")
                if n in names:
                    raise err(f"Defined multiple alternative version requirements for plugin {n}")
                names.add(n)
            self.col.require_plugins(self.diag.file, group)

    def _override_map(self, item, allowed_keys):
        ov = item.get("override")
        if ov is None:
            return None
        if not isinstance(ov, dict):
            raise err("Value is not a map (key 'override')")
        for k, op in ov.items():
            if op not in ("append", "replace"):
                raise err(f"Invalid override operation for key '{k}': '{op}'. Allowed values are: append, replace")
            if k not in allowed_keys:
                raise err(f"Unexpected key '{k}' under 'override'")
        return ov

    def _read_list_or_macro(self, item, line, kind):
        key, name_rx, code, message = _NAMING[kind]
        name = _val(item, kind)
        if not name_rx.fullmatch(name):
            self.warn(code, message)
        value = _seq(item, key) if kind == "list" else _val(item, key)
        append = _bool(item, "append", False)
        ov = self._override_map(item, (key,))
        if append and ov is not None:
            raise err("Keys 'override' and 'append: true' cannot be used together. Add an 'append' entry "
                      f"(e.g. '{key}: append') under 'override' instead.")
        if append:
            self.warn("LOAD_DEPRECATED_ITEM", f"The 'append' key is deprecated. Use 'override: {{{key}: append}}'.")
        if append or (ov and ov.get(key) == "append"):
            (self.col.append_list if kind == "list" else self.col.append_macro)(name, value)
        elif kind == "list":
            self.col.define_list(ListInfo(name, self.diag.file, line, items=list(value)))
        else:
            self.col.define_macro(MacroInfo(name, self.diag.file, line, cond=value))

    # -- rules --------------------------------------------------------------------------------------
    def _read_exceptions(self, item, rule_source, *, validate: bool):
        raw = item.get("exceptions")
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise err("Value is not a sequence (key 'exceptions')")
        out = []
        names = set()
        for ex in raw:
            if not isinstance(ex, dict):
                raise err("Unexpected element type in 'exceptions': each exception must be a map")
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
                    raise err("Value is not a sequence (key 'values')")
                for v in vals:
                    if isinstance(v, dict):
                        raise err("Expected values array to contain a list of strings or lists")
                    if isinstance(v, list):
                        for x in v:
                            if isinstance(x, dict) or (isinstance(x, list) and
                                                       any(isinstance(y, (list, dict)) for y in x)):
                                raise err("Expected values array to contain a list of strings or lists")
                e["values"] = [([("" if y is None else y) for y in v] if isinstance(v, list)
                                else ("" if v is None else v)) for v in vals]
            out.append(e)
            if validate:
                self.col.validate_exception(e, rule_source)
        return out

    def _read_rule(self, item, line):
        name = _val(item, "rule")
        source = _val(item, "source", optional=True) or ""
        ov = item.get("override")
        append = _bool(item, "append", False)
        if ov is not None:
            if append:
                raise err("Keys 'override' and 'append: true' cannot be used together. Add an 'append' entry "
                          "(e.g. 'condition: append') under 'override' instead.")
            if not isinstance(ov, dict):
                raise err("Value is not a map (key 'override')")
            for k, op in ov.items():
                if op not in ("append", "replace"):
                    raise err(f"Invalid override operation for key '{k}': '{op}'. Allowed values are: "
                              "append, replace")
                if op == "append" and k not in APPENDABLE:
                    raise err(f"Key '{k}' cannot be appended to, use 'replace' instead")
                if op == "replace" and k not in REPLACEABLE:
                    raise err(f"Key '{k}' cannot be replaced")
                if k not in item:
                    raise err(f"An {op} override for '{k}' was specified but '{k}' is not defined")
            for k in item:
                if k in set(APPENDABLE) | set(REPLACEABLE) and k not in ov:
                    raise err(f"Unexpected key '{k}': no corresponding entry under 'override' is defined.")
            app = [k for k, op in ov.items() if op == "append"]
            rep = [k for k, op in ov.items() if op == "replace"]
            if app:
                self._update_rule(name, source, item, app, "append")
            if rep:
                self._update_rule(name, source, item, rep, "replace")
            return
        if append:
            self.warn("LOAD_DEPRECATED_ITEM", "The 'append' key is deprecated. Use 'override' instead.")
            keys = [k for k in ("condition", "exceptions") if k in item]
            if not keys:
                raise err("Appended rule must have exceptions or condition property")
            self._update_rule(name, source, item, keys, "append")
            return
        if not any(k in item for k in ("condition", "output", "desc", "priority")):
            if "enabled" not in item:
                raise err("Item has no mapping for key 'condition'")
            self.warn("LOAD_DEPRECATED_ITEM", "The 'enabled' key without other keys is deprecated. Use "
                                              "'override: {enabled: replace}'.")
            self.col.enable_rule(name, _bool(item, "enabled", True))
            return
        info = RuleInfo(name, self.diag.file, line)
        info.cond = _val(item, "condition")
        info.output = _val(item, "output").strip()
        if not info.output:
            raise err("Value must be non-empty (key 'output')")
        info.desc = _val(item, "desc")
        info.priority = _priority(_val(item, "priority"))
        info.source = source or "syscall"
        info.enabled = _bool(item, "enabled", True)
        info.warn_evttypes = _bool(item, "warn_evttypes", True)
        info.skip_unknown = _bool(item, "skip-if-unknown-filter", False)
        info.tags = set(_seq(item, "tags", optional=True) or [])
        info.exceptions = self._read_exceptions(item, info.source, validate=True)
        self.col.define_rule(info)

    def _update_rule(self, name, source, item, keys, op):
        """An ``append`` (also the legacy ``append: true``) or ``replace`` of ``keys`` of an existing rule."""
        prev = self.col.existing_rule(name, source, _NO_RULE_TO_UPDATE[op])
        for k in keys:
            value = self._update_value(item, k, op, prev)
            if op == "append":
                self.col.append_to_rule(prev, k, value, self.diag)
            else:
                self.col.replace_in_rule(prev, k, value)
        self.col.updated(prev)

    def _update_value(self, item, k, op, prev):
        if k in ("condition", "output", "desc"):
            return (_val(item, k, optional=True) or "") if op == "append" else _val(item, k)
        if k == "tags":
            return set(_seq(item, "tags", optional=True) or [])
        if k == "exceptions":
            excs = self._read_exceptions(item, prev.source, validate=False)
            if op == "replace":
                for e in excs:
                    if e["fields"] is None:
                        raise err("Item has no mapping for key 'fields'")
            return excs
        if k == "priority":
            return _priority(_val(item, k))
        if k == "skip-if-unknown-filter":
            return _bool(item, k, False)
        return _bool(item, k, True)                 # enabled, warn_evttypes


_NO_RULE_TO_UPDATE = {
    "append": "Rule uses 'append' or 'override.<key>: append' but no rule by that name already exists",
    "replace": "An replace to a rule was requested but no rule by that name already exists",
}
