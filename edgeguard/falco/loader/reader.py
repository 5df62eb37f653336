"""Read a rules file's YAML items into the collector, as Falco's ``rule_loader_reader`` does.

The reader checks each item's structure (keys, scalar and sequence values,
``append``/``override`` combinations) and decodes it; the collector merges what
it decoded. Every error names the file, the item and its line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import yaml

from ..alert import priority_number
from .collector import Collector, ListInfo, MacroInfo, RuleInfo, parse_version
from .errors import ERROR_OVERRIDE_APPEND, WARNING_APPEND, WARNING_ENABLED, Diagnostics, ItemError, RulesLoadError, err


class _LineDict(dict):
    line: int = 0


if TYPE_CHECKING:  # CBaseLoader (libyaml) has BaseLoader's interface
    from yaml import BaseLoader as _BaseLoader
else:
    _BaseLoader = yaml.CBaseLoader if hasattr(yaml, "CBaseLoader") else yaml.BaseLoader


class _Loader(_BaseLoader):
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


def _uint(item, key):
    """An optional unsigned integer (yaml-cpp ``as<uint64_t>``): decimal digits only."""
    v = _val(item, key, optional=True)
    if v is None:
        return None
    if not re.fullmatch(r"[0-9]+", v) or int(v) >= 1 << 64:
        raise err(f"Can't decode YAML scalar value for key '{key}': '{v}' is not an unsigned integer")
    return int(v)


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
REPLACEABLE = (
    "condition",
    "output",
    "desc",
    "priority",
    "tags",
    "exceptions",
    "enabled",
    "warn_evttypes",
    "skip-if-unknown-filter",
    "capture",
    "capture_duration",
)
KNOWN_KEYS = {
    "list": ("list", "items", "append", "override"),
    "macro": ("macro", "condition", "append", "override"),
    "rule": (
        "rule",
        "condition",
        "output",
        "desc",
        "priority",
        "source",
        "enabled",
        "tags",
        "exceptions",
        "warn_evttypes",
        "skip-if-unknown-filter",
        "append",
        "override",
        "capture",
        "capture_duration",
    ),
}
_NAMING = {  # kind: (its value's key, valid names, warning code, warning)
    "list": (
        "items",
        re.compile(r"[^()\"'\s=,]+"),
        "LOAD_INVALID_LIST_NAME",
        "List has an invalid name. List names should match a regular expression: ([^()\"'[:space:]=,]+)",
    ),
    "macro": (
        "condition",
        re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*"),
        "LOAD_INVALID_MACRO_NAME",
        "Macro has an invalid name. Macro names should match a regular expression: ([a-zA-Z]+[a-zA-Z0-9_]*)",
    ),
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
            raise self._error(name, "rules content", "LOAD_ERR_YAML_PARSE", str(exc).replace("\n", " ")) from exc
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, list):
                reason = (
                    "Rules content is not yaml array of objects"
                    if isinstance(doc, dict)
                    else "Rules content is not yaml"
                )
                raise self._error(name, "rules content", "LOAD_ERR_YAML_VALIDATE", reason)
            for entry in doc:
                if entry is None:
                    continue
                if not isinstance(entry, dict):
                    raise self._error(
                        name,
                        "rules content",
                        "LOAD_ERR_YAML_VALIDATE",
                        "Unexpected element type. Each element should be a yaml associative array.",
                    )
                self.diag.item = _describe(entry)
                try:
                    self._read_item(entry)
                except ItemError as exc:
                    raise self._error(name, self.diag.item, exc.code, exc.reason, getattr(entry, "line", None)) from exc

    def _error(self, file, item, code, reason, line=None):
        """The load error, carrying every warning given before it (Falco reports both)."""
        exc = RulesLoadError(file, item, code, reason, line)
        exc.warnings = list(self.diag.warnings)
        return exc

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
            raise err("Value of required_plugin_versions must be a sequence")
        for r in reqs:
            if not isinstance(r, dict):
                raise err("Plugin version must be a mapping")
            group = [(_val(r, "name"), _val(r, "version"))]
            alts = r.get("alternatives")
            if alts is not None and not isinstance(alts, list):
                raise err("Value of plugin version alternatives must be a sequence")
            for alt in alts or []:
                if not isinstance(alt, dict):
                    raise err("Plugin version alternative must be a mapping")
                group.append((_val(alt, "name"), _val(alt, "version")))
            self.col.require_plugins(self.diag.file, group)

    def _unknown_keys(self, item, kind):
        for k in item:
            if k not in KNOWN_KEYS[kind]:
                self.warn("LOAD_UNKNOWN_KEY", f"Unknown key '{k}'")

    def _overrides(self, item, appendable, replaceable):
        """decode_overrides: the keys to append and to replace, in the order given."""
        ov = item.get("override")
        if ov is None:
            return [], []
        if not isinstance(ov, dict):
            raise err("Value is not a map (key 'override')")
        app, rep = [], []
        for k, op in ov.items():
            if op == "append":
                if k not in appendable:
                    raise err(f"Key '{k}' cannot be appended to, use 'replace' instead")
                app.append(k)
            elif op == "replace":
                if k not in replaceable:
                    raise err(f"Key '{k}' cannot be replaced")
                rep.append(k)
            else:
                allowed = ("append " if k in appendable else "") + ("replace " if k in replaceable else "")
                raise err(f"Invalid override operation for key '{k}': '{op}'. Allowed values are: {allowed}")
        return app, rep

    def _read_list_or_macro(self, item, line, kind):
        key, name_rx, code, message = _NAMING[kind]
        name = _val(item, kind)
        if not name_rx.fullmatch(name):
            self.warn(code, message)
        self._unknown_keys(item, kind)
        value = _seq(item, key) if kind == "list" else _val(item, key)
        append = _bool(item, "append", False)
        if append:
            self.warn("LOAD_DEPRECATED_ITEM", WARNING_APPEND)
        app, rep = self._overrides(item, (key,), (key,))
        if append and (app or rep):
            raise err(ERROR_OVERRIDE_APPEND)
        if append or app:
            (self.col.append_list if kind == "list" else self.col.append_macro)(name, value)
        elif kind == "list":
            self.col.define_list(ListInfo(name, self.diag.file, line, items=list(value)))
        else:
            self.col.define_macro(MacroInfo(name, self.diag.file, line, cond=value))

    # -- rules --------------------------------------------------------------------------------------
    def _read_exceptions(self, item, *, append: bool):
        """read_rule_exceptions: ``fields`` may be left out only when appending (values to an exception)."""
        raw = item.get("exceptions")
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise err("Rule exceptions must be a sequence")
        out: list[dict] = []
        for ex in raw:
            if not isinstance(ex, dict):
                raise err("Rule exception must be a mapping")
            name = _val(ex, "name")
            if any(e["name"] == name for e in out):
                self.warn(
                    "LOAD_EXCEPTION_NAME_NOT_UNIQUE", f"Multiple definitions of exception '{name}' in the same rule"
                )
            e = {"name": name, "fields": None, "comps": None, "values": None}
            if ex.get("fields") is not None:
                f = ex["fields"]
                e["fields"] = _seq(ex, "fields") if isinstance(f, list) else _val(ex, "fields")
            elif not append:
                raise err("Item has no mapping for key 'fields'")
            if ex.get("comps") is not None:
                c = ex["comps"]
                e["comps"] = _seq(ex, "comps") if isinstance(c, list) else _val(ex, "comps")
            if "values" in ex and ex["values"] is not None:
                vals = ex["values"]
                if not isinstance(vals, list):
                    raise err("Rule exception values must be a sequence")
                for v in vals:
                    if isinstance(v, dict):
                        raise err("Expected values array to contain a list of strings or lists")
                    if isinstance(v, list):
                        for x in v:
                            if isinstance(x, dict) or (
                                isinstance(x, list) and any(isinstance(y, (list, dict)) for y in x)
                            ):
                                raise err("Expected values array to contain a list of strings or lists")
                e["values"] = [
                    ([("" if y is None else y) for y in v] if isinstance(v, list) else ("" if v is None else v))
                    for v in vals
                ]
            elif append:
                self.warn("LOAD_APPEND_NO_VALUES", "Overriding/appending exception with no values")
            out.append(e)
        return out

    def _read_rule(self, item, line):
        name = _val(item, "rule")
        self._unknown_keys(item, "rule")
        append = _bool(item, "append", False)
        if append:
            self.warn("LOAD_DEPRECATED_ITEM", WARNING_APPEND)
        app, rep = self._overrides(item, APPENDABLE, REPLACEABLE)
        if append and (app or rep):
            raise err(ERROR_OVERRIDE_APPEND)
        # An update names the rule it changes; an empty source there means "any", as in Falco.
        source = item.get("source") if isinstance(item.get("source"), str) else ""
        if app or rep:
            expected = [k for k in item if k in APPENDABLE or k in REPLACEABLE]
            if app:
                self._update_rule(name, source, item, app, "append", expected)
            if rep:
                self._update_rule(name, source, item, rep, "replace", expected)
            for k in expected:
                raise err(f"Unexpected key '{k}': no corresponding entry under 'override' is defined.")
            return
        if append:
            self._update_rule(name, source, item, [k for k in ("condition", "exceptions") if k in item], "append")
            return
        if not any(k in item for k in ("condition", "output", "desc", "priority")):
            enabled = _bool(item, "enabled", None)
            if enabled is None:
                raise err("Item has no mapping for key 'enabled'")
            self.warn("LOAD_DEPRECATED_ITEM", WARNING_ENABLED)
            self.col.enable_rule(name, enabled)
            return
        info = RuleInfo(name, self.diag.file, line)
        info.cond = _val(item, "condition")
        info.output = _val(item, "output").strip()
        if not info.output:
            raise err("Value must be non-empty (key 'output')")
        info.desc = _val(item, "desc")
        info.priority = _priority(_val(item, "priority"))
        info.source = _val(item, "source", optional=True) or "syscall"
        info.enabled = _bool(item, "enabled", True)
        info.warn_evttypes = _bool(item, "warn_evttypes", True)
        info.skip_unknown = _bool(item, "skip-if-unknown-filter", False)
        info.capture = _bool(item, "capture", False)
        info.capture_duration = _uint(item, "capture_duration") or 0
        info.tags = set(_seq(item, "tags", optional=True) or [])
        info.exceptions = self._read_exceptions(item, append=False)
        self.col.define_rule(info)

    def _update_rule(self, name, source, item, keys, op, expected=None):
        """An ``append`` (also the legacy ``append: true``) or ``replace`` of ``keys`` of an existing rule.

        ``expected`` holds the overridable keys the item defines; each one used here is struck off it.
        """
        values = []
        for k in keys:
            if expected is not None:
                if k not in expected:
                    raise err(f"An {op} override for '{k}' was specified but '{k}' is not defined")
                expected.remove(k)
            values.append((k, self._update_value(item, k, op)))
        prev = self.col.existing_rule(name, source, op, bool(values))
        for k, value in values:
            if op == "append":
                self.col.append_to_rule(prev, k, value, self.diag)
            else:
                self.col.replace_in_rule(prev, k, value)
        self.col.updated(prev)

    def _update_value(self, item, k, op):
        if k in ("condition", "output", "desc"):
            return _val(item, k)
        if k == "tags":
            return set(_seq(item, "tags", optional=True) or [])
        if k == "exceptions":
            return self._read_exceptions(item, append=op == "append")
        if k == "priority":
            return _priority(_val(item, k))
        if k == "capture_duration":
            return _uint(item, k)
        return _bool(item, k, k != "skip-if-unknown-filter" and k != "capture")
