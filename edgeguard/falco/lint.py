"""Warnings about conditions that load but are probably mistakes: a pass over the macro-resolved AST.

Falco runs its ``filter_warning_resolver`` (the unsafe ``<NA>`` comparison) and
libsinsp's filter compiler (a constant that looks like a field or a
transformer) next to, not inside, compiling a condition; so does edgeguard,
plus a hint for a regex with no special characters.
"""
from __future__ import annotations

import re

from . import fields as F
from .parser import to_text

NA_CHECK_OPS = {"=", "==", "!=", "in", "intersects", "pmatch"}
_TRANSFORMER_CALL = re.compile(r"(?:val|tolower|toupper|b64|basename|len)\(.*\)")
_TRIM = " \t\n\r\f\v"
_PLAIN_REGEX = re.compile(r"\^?\.?\*?[A-Za-z0-9_/:. -]*(?:\.\*)?\$?")


def condition_warnings(node, skip=()) -> list[tuple[str, str]]:
    """(code, message) for each suspicious check in ``node``, in condition order.

    Subtrees whose id is in ``skip`` (the compiler's memo of shared macro subtrees
    already compiled) or that were already visited are not reported again, so a
    macro's warnings are given once, where it is first compiled.
    """
    out: list = []
    _visit(node, out, skip, set())
    return out


def _visit(node, out, skip, seen):
    if id(node) in skip or id(node) in seen:
        return
    kind = node[0]
    if kind in ("and", "or"):
        for c in node[1]:
            _visit(c, out, skip, seen)
    elif kind == "not":
        _visit(node[1], out, skip, seen)
    elif kind == "check":
        _check(node, out)
    seen.add(id(node))


def _base_key(lhs) -> str:
    while lhs[0] == "xf":
        lhs = lhs[2]
    return to_text(lhs)


def _check(node, out):
    _, lhs, op, rhs = node
    if rhs is None or rhs[0] not in ("value", "list"):
        return
    consts = [rhs[1]] if rhs[0] == "value" else list(rhs[1])
    text = to_text(lhs)
    if _base_key(lhs).startswith(("ka.", "jevt.", "json.")) and op in NA_CHECK_OPS and "<NA>" in consts:
        out.append(("LOAD_UNSAFE_NA_CHECK",
                    f"'{text} {op} <NA>': comparing a field with <NA> is unsafe and never matches "
                    "an absent value; use 'exists'"))
    for c in consts:
        c = c.strip(_TRIM)      # libsinsp trims the value before asking whether it names a field
        if c in F.FIELDS or c.split("[", 1)[0] in F.FIELDS:
            out.append(("LOAD_COMPILE_CONDITION", f"string '{c}' may be a valid field misused as a const string value"))
        elif _TRANSFORMER_CALL.fullmatch(c):
            out.append(("LOAD_COMPILE_CONDITION",
                        f"string '{c}' may be a valid field transformer misused as a const string value"))
    if op == "regex" and consts and _PLAIN_REGEX.fullmatch(consts[0]):
        out.append(("LOAD_COMPILE_CONDITION",
                    f"regex '{consts[0]}' has no special characters: '=', 'contains', 'startswith' or "
                    "'endswith' is faster"))
