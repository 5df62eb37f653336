"""The engine's settings, read from a falco.yaml-like mapping as Falco's ``configuration.cpp`` reads them.

Four falco.yaml keys shape what the engine does: ``rules`` (enable/disable entries by rule name wildcard or
by tag, applied in order after loading), ``append_output`` (extra output text and fields for the rules a
``match`` selects, applied at compile time), ``priority`` (the minimum rule priority) and ``rule_matching``
(``first`` or ``all``). Every other key is ignored, so a whole falco.yaml can be given. The command-line
options ``-D``/``-T``/``-t`` become ``rules`` entries after the configured ones, as in Falco.

A bad value raises ConfigError naming where it is (``rules[2].enable``) and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import yaml

from .alert import priority_number

RULE_MATCHING = ("first", "all")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Selection:
    """One ``rules:`` entry: enable or disable the rules whose name matches ``rule`` and/or that carry ``tag``."""

    enable: bool
    rule: str = ""
    tag: str = ""


@dataclass(frozen=True)
class ExtraField:
    """An ``append_output`` extra field: ``{key: format}`` (rendered text) or a bare field name (``raw``: typed)."""

    key: str
    format: str
    raw: bool


@dataclass(frozen=True)
class AppendOutput:
    source: str = ""
    tags: tuple = ()
    rule: str = ""
    extra_output: str = ""
    extra_fields: tuple = ()

    def applies_to(self, name: str, source: str, tags) -> bool:
        """Falco's match: source and rule empty or equal, and every listed tag on the rule."""
        return (
            (not self.source or self.source == source)
            and set(self.tags) <= set(tags)
            and (not self.rule or self.rule == name)
        )


@dataclass(frozen=True)
class EngineConfig:
    rule_matching: str = "first"
    priority: str = "debug"
    rules: tuple = ()
    append_output: tuple = ()
    origins: tuple = field(default=(), compare=False)
    given: frozenset = field(default=frozenset(), compare=False)  # the scalar keys a mapping set

    @classmethod
    def from_mapping(cls, m, origin: str = "config") -> EngineConfig:
        if m is None:
            return cls()
        if not isinstance(m, Mapping):
            raise ConfigError(f"{origin}: a falco.yaml-like mapping is required, not {type(m).__name__}")
        kw: dict = {"origins": (origin,)}
        if m.get("rule_matching") is not None:
            kw["rule_matching"] = _rule_matching(m["rule_matching"], f"{origin}: rule_matching")
        if m.get("priority") is not None:
            kw["priority"] = _priority(m["priority"], f"{origin}: priority")
        kw["given"] = frozenset(k for k in ("rule_matching", "priority") if k in kw)
        if m.get("rules") is not None:
            kw["rules"] = tuple(_selections(m["rules"], f"{origin}: rules"))
        if m.get("append_output") is not None:
            kw["append_output"] = tuple(_append_outputs(m["append_output"], f"{origin}: append_output"))
        return cls(**kw)

    @classmethod
    def from_yaml(cls, text: str, origin: str = "config") -> EngineConfig:
        try:
            doc = yaml.safe_load(text) if text and text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{origin}: not valid YAML: {str(exc).splitlines()[0]}") from None
        return cls.from_mapping(doc, origin)

    def merged(self, later: EngineConfig) -> EngineConfig:
        """``later`` on top of this: the scalars it sets win, its ``rules``/``append_output`` entries come after."""
        kw: dict = {
            "rules": self.rules + later.rules,
            "append_output": self.append_output + later.append_output,
            "origins": self.origins + later.origins,
            "given": self.given | later.given,
        }
        for key in ("rule_matching", "priority"):
            kw[key] = getattr(later if key in later.given else self, key)
        return replace(self, **kw)

    def with_cli_selection(self, disable_substrings=(), disable_tags=(), enable_tags=()) -> EngineConfig:
        """Falco's ``-D``, ``-T`` and ``-t``, which it turns into ``rules`` entries after the configured ones.

        ``-D s`` disables the rules whose name contains ``s``; ``-T t`` disables the rules tagged ``t``; ``-t t``
        first disables every rule, then enables the rules tagged ``t``. ``-t`` cannot be mixed with ``-D``/``-T``.
        """
        if enable_tags and (disable_substrings or disable_tags):
            raise ConfigError("You can not specify both disabled (-D/-T) and enabled (-t) rules")
        extra = [Selection(False, rule=f"*{s}*") for s in disable_substrings]
        extra += [Selection(False, tag=t) for t in disable_tags]
        if enable_tags:
            extra.append(Selection(False, rule="*"))
            extra += [Selection(True, tag=t) for t in enable_tags]
        return replace(self, rules=self.rules + tuple(extra))


def _rule_matching(v, where):
    if v not in RULE_MATCHING:
        raise ConfigError(f"{where}: must be 'first' or 'all', not {v!r}")
    return v


def _priority(v, where):
    try:
        priority_number(v)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return v


def _str(v, where, *, empty=True):
    if not isinstance(v, str) or (not empty and not v):
        raise ConfigError(f"{where}: a {'non-empty ' if not empty else ''}string is required, not {v!r}")
    return v


def _selections(entries, where):
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: a list of enable/disable entries is required")
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping) or not entry:
            raise ConfigError(f"{at}: an entry is a map with an 'enable' or a 'disable' key")
        unknown = sorted(set(entry) - {"enable", "disable"})
        if unknown:
            raise ConfigError(f"{at}: unknown key '{unknown[0]}' (an entry has 'enable' or 'disable')")
        if len(entry) != 1:
            raise ConfigError(f"{at}: give 'enable' and 'disable' in separate entries, which apply in order")
        ((op, target),) = entry.items()
        if not isinstance(target, Mapping) or not target:
            raise ConfigError(f"{at}.{op}: a map with 'rule' (a name, '*' as wildcard) and/or 'tag' is required")
        unknown = sorted(set(target) - {"rule", "tag"})
        if unknown:
            raise ConfigError(f"{at}.{op}: unknown key '{unknown[0]}' (only 'rule' and 'tag')")
        yield Selection(
            op == "enable",
            rule=_str(target.get("rule", ""), f"{at}.{op}.rule"),
            tag=_str(target.get("tag", ""), f"{at}.{op}.tag"),
        )


def _append_outputs(entries, where):
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: a list of entries is required")
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: an entry is a map (match, extra_output, extra_fields, suggested_output)")
        unknown = sorted(set(entry) - {"match", "extra_output", "extra_fields", "suggested_output"})
        if unknown:
            raise ConfigError(f"{at}: unknown key '{unknown[0]}'")
        match = entry.get("match") or {}
        if not isinstance(match, Mapping):
            raise ConfigError(f"{at}.match: a map with source, tags and/or rule is required")
        unknown = sorted(set(match) - {"source", "tags", "rule"})
        if unknown:
            raise ConfigError(f"{at}.match: unknown key '{unknown[0]}'")
        tags = match.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{at}.match.tags: a list of strings is required")
        suggested = entry.get("suggested_output", False)
        if not isinstance(suggested, bool):
            raise ConfigError(f"{at}.suggested_output: true or false is required")
        # suggested_output adds the fields a plugin suggests: k8saudit and json suggest none, so it adds nothing.
        yield AppendOutput(
            source=_str(match.get("source", ""), f"{at}.match.source"),
            tags=tuple(tags),
            rule=_str(match.get("rule", ""), f"{at}.match.rule"),
            extra_output=_str(entry.get("extra_output", ""), f"{at}.extra_output"),
            extra_fields=tuple(_extra_fields(entry.get("extra_fields") or [], f"{at}.extra_fields")),
        )


def _extra_fields(items, where):
    if not isinstance(items, list):
        raise ConfigError(f"{where}: a list is required")
    for i, it in enumerate(items):
        if isinstance(it, str) and it:
            yield ExtraField(it, "%" + it, True)
        elif isinstance(it, Mapping) and len(it) == 1:
            ((key, fmt),) = it.items()
            yield ExtraField(_str(key, f"{where}[{i}]", empty=False), _str(fmt, f"{where}[{i}].{key}"), False)
        else:
            raise ConfigError(f"{where}[{i}]: a field name or a one-key map {{key: format}} is required")


def matches_wildcard(pattern: str, s: str) -> bool:
    """Falco's ``falco::utils::matches_wildcard``: only ``*`` is special; each literal run after a ``*`` is matched
    at its leftmost occurrence, without backtracking (so ``*ab`` does not match ``abab``)."""
    star = pattern.find("*")
    if star < 0:
        return pattern == s
    if star == 0:
        rest = pattern.lstrip("*")
        if not rest:
            return True
        literal = rest.split("*", 1)[0]
        pos = s.find(literal)
        if pos < 0:
            return False
        return matches_wildcard(rest[len(literal) :], s[pos + len(literal) :])
    if pattern[:star] != s[:star]:
        return False
    return matches_wildcard(pattern[star:], s[star:])
