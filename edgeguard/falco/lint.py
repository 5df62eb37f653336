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
        out.append(
            (
                "LOAD_UNSAFE_NA_CHECK",
                f"'{text} {op} <NA>': comparing a field with <NA> is unsafe and never matches "
                "an absent value; use 'exists'",
            )
        )
    for c in consts:
        c = c.strip(_TRIM)  # libsinsp trims the value before asking whether it names a field
        if c in F.FIELDS or c.split("[", 1)[0] in F.FIELDS:
            out.append(("LOAD_COMPILE_CONDITION", f"string '{c}' may be a valid field misused as a const string value"))
        elif _TRANSFORMER_CALL.fullmatch(c):
            out.append(
                (
                    "LOAD_COMPILE_CONDITION",
                    f"string '{c}' may be a valid field transformer misused as a const string value",
                )
            )
    if op == "regex" and consts and _PLAIN_REGEX.fullmatch(consts[0]):
        out.append(
            (
                "LOAD_COMPILE_CONDITION",
                f"regex '{consts[0]}' has no special characters: '=', 'contains', 'startswith' or 'endswith' is faster",
            )
        )


# ---- rules that can never fire under rule_matching: first -------------------------------------------
def shadowed_rules(rules) -> list[tuple]:
    """(rule, earlier rule) for each rule whose every match an earlier rule in ``rules`` (the evaluation order)
    also matches: under ``rule_matching: first`` the earlier rule always alerts instead.

    The test is syntactic and sound: it only claims what it can prove from the conditions (after macro
    resolution), e.g. the later rule repeats the earlier rule's conjuncts and adds more.
    """
    out = []
    for i, later in enumerate(rules):
        for earlier in rules[:i]:
            if later.ast is not None and earlier.ast is not None and _implies(later.ast, earlier.ast):
                out.append((later, earlier))
                break
    return out


_EQ_OPS = ("=", "==")


def _implies(b, a) -> bool:
    """Every event satisfying ``b`` satisfies ``a``."""
    if b is a or b == a:
        return True
    if a[0] == "and":
        return all(_implies(b, c) for c in a[1])
    if a[0] == "or":
        if b[0] == "or":
            return all(_implies(c, a) for c in b[1])
        return any(_implies(b, c) for c in a[1])
    if b[0] == "and":
        return any(_implies(c, a) for c in b[1])
    if b[0] == "or":
        return all(_implies(c, a) for c in b[1])
    return _atom_implies(b, a)


def _atom_implies(b, a) -> bool:
    if b[0] != "check" or a[0] != "check" or b[1] != a[1] or b[1][0] != "field":
        return False
    _, _, bop, brhs = b
    _, _, aop, arhs = a
    if aop == "exists":
        return True  # any check on an absent field is false
    bvals = _values(bop, brhs)
    avals = _values(aop, arhs)
    if bvals is None or avals is None:
        return False
    if aop in _EQ_OPS + ("in",) and bop in _EQ_OPS + ("in",):
        return bvals <= avals  # scalar: one of; list field: every element in (both read as subsets)
    if aop == "intersects" and bop in ("intersects", "in") + _EQ_OPS:
        return bvals <= avals and bool(bvals)
    if bop in _EQ_OPS and aop in ("startswith", "endswith", "contains"):
        (pat,) = avals if len(avals) == 1 else (None,)
        test = {"startswith": str.startswith, "endswith": str.endswith, "contains": str.__contains__}[aop]
        return pat is not None and all(test(v, pat) for v in bvals)
    return False


def _values(op, rhs):
    if rhs is None or rhs[0] not in ("value", "list") or " " in op:
        return None
    return frozenset([rhs[1]] if rhs[0] == "value" else rhs[1])
