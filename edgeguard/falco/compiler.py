"""Compile a macro-resolved condition AST into Python closures, once, at load time.

A compiled condition is ``fn(evt) -> bool``. Field values come from the event's
cache, so every field is extracted at most once per event however many rules
use it. Semantics follow libsinsp (``filter_compare.cpp``, ``sinsp_filtercheck.cpp``):
an absent field makes every comparison false, list fields only allow
``in``/``intersects``/``exists``, string ``<``/``>`` are byte-wise.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter

from . import fields as F

STR_FIELD_OPS = {
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "contains",
    "icontains",
    "startswith",
    "endswith",
    "glob",
    "iglob",
    "pmatch",
    "in",
    "intersects",
    "regex",
    "exists",
}
NUM_FIELD_OPS = {"=", "==", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists"}
LIST_FIELD_OPS = {"in", "intersects", "exists"}


class CompileError(ValueError):
    pass


@dataclass
class FieldExpr:
    fetch: Callable  # evt -> value | None
    is_list: bool
    type: str
    text: str  # token text, e.g. "tolower(ka.user.name)"
    base_key: str  # the untransformed field key (output_fields uses it)
    base_fetch: Callable
    string_xf: bool  # a string transformer was applied (libsinsp appends a NUL: see _in_never)
    plugin: bool


def _fetcher(key: str, ex):
    """The field's value from the event's cache (extracted on first use): a C-level getter."""
    F.EXTRACTORS.setdefault(key, ex)
    return itemgetter(key)


_LOWER = {i: i + 32 for i in range(65, 91)}
_UPPER = {i + 32: i for i in range(65, 91)}


def ascii_lower(s: str) -> str:
    return s.translate(_LOWER)


def _b64(s: str):
    raw = s.encode("utf-8", "surrogateescape")
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None


def _basename(s: str) -> str:
    return s.rsplit("/", 1)[-1]


def _apply_elementwise(fn):
    def apply(v):
        if v is None:
            return None
        if isinstance(v, tuple):
            out = []
            for x in v:
                y = fn(x)
                if y is None:
                    return None
                out.append(y)
            return tuple(out)
        return fn(v)

    return apply


def compile_field(node, exists_only=False) -> FieldExpr:
    kind = node[0]
    if kind == "field":
        try:
            fdef, key, ex = F.resolve(node[1], node[2])
        except F.FieldError as exc:
            raise CompileError(str(exc)) from None
        f = _fetcher(key, ex)
        disp = node[1] if node[2] is None else f"{node[1]}[{node[2]}]"
        return FieldExpr(f, fdef.is_list, fdef.type, disp, disp, f, False, fdef.plugin)
    if kind == "xf":
        tname, inner = node[1], node[2]
        sub = compile_field(inner)
        if sub.type != F.STR:
            raise CompileError(f"can't add field transformer: '{tname}' does not accept a numeric field ({sub.text})")
        src = sub.fetch
        text = f"{tname}({sub.text})"
        if tname == "len":

            def fetch_len(e, src=src):
                v = src(e)
                if v is None:
                    return None
                return len(v) if isinstance(v, tuple) else len(v.encode("utf-8", "surrogateescape"))

            return FieldExpr(fetch_len, False, F.U64, text, sub.base_key, sub.base_fetch, False, sub.plugin)
        fn = {"tolower": ascii_lower, "toupper": lambda s: s.translate(_UPPER), "b64": _b64, "basename": _basename}[
            tname
        ]
        apply = _apply_elementwise(fn)

        def fetch(e, src=src, apply=apply):
            return apply(src(e))

        return FieldExpr(fetch, sub.is_list, sub.type, text, sub.base_key, sub.base_fetch, True, sub.plugin)
    raise CompileError(f"unexpected node {kind}")


# ---- glob / regex / pmatch ---------------------------------------------------------------------------
def glob_to_regex(pattern: str, casefold: bool = False):
    """glibc fnmatch(pattern, s, 0): '*' and '?' also match '/', '[!..]'/'[^..]' negate, '\\' escapes."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = i + 1
            neg = False
            if j < n and pattern[j] in "!^":
                neg = True
                j += 1
            k = j
            if k < n and pattern[k] == "]":
                k += 1
            while k < n and pattern[k] != "]":
                k += 1
            if k >= n:
                out.append(re.escape("["))  # unclosed bracket is a literal
            else:
                body = pattern[j:k].replace("\\", "\\\\")
                if body.startswith("]"):
                    body = "\\" + body
                out.append("[" + ("^" if neg else "") + body.replace("[", "\\[") + "]")
                i = k
        else:
            out.append(re.escape(c))
        i += 1
    flags = re.DOTALL | (re.IGNORECASE | re.ASCII if casefold else 0)
    return re.compile("".join(out), flags)


_PERL_ONLY = re.compile(r"\\[dDwWsSbBAzZpPQE0-9]|\(\?|[*+?}]\?")


_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v",
    "blank": " \\t",
    "xdigit": "0-9A-Fa-f",
    "word": "0-9A-Za-z_",
    "punct": "!-/:-@\\[-`{-~",
    "cntrl": "\\x00-\\x1f\\x7f",
    "print": " -~",
    "graph": "!-~",
}
_POSIX_RX = re.compile(r"\[:([a-z]+):\]")


def compile_regex(pattern: str):
    """RE2 POSIX syntax, full match. In libs 0.21 an invalid pattern loads but never matches."""
    if _PERL_ONLY.search(pattern):
        return None
    bad = [m.group(1) for m in _POSIX_RX.finditer(pattern) if m.group(1) not in _POSIX_CLASSES]
    if bad:
        return None
    translated = _POSIX_RX.sub(lambda m: _POSIX_CLASSES[m.group(1)], pattern)
    try:
        return re.compile(translated, re.DOTALL)
    except re.error:
        return None


def _components(path: str):
    return [c for c in path.split("/") if c]


def _fnmatch0(pattern: str, s: str) -> bool:
    return glob_to_regex(pattern).fullmatch(s) is not None


def make_pmatch(paths):
    """libsinsp path_prefix_search: component-wise prefix match; components with ?*[ are globbed."""
    compiled = []
    for p in paths:
        comps = _components(p)
        compiled.append([(c, any(ch in c for ch in "?*[")) for c in comps])

    def match(value: str) -> bool:
        vc = _components(value)
        for comps in compiled:
            if len(comps) > len(vc):
                continue
            ok = True
            for (c, is_glob), v in zip(comps, vc):
                if is_glob:
                    if not _fnmatch0(c, v):
                        ok = False
                        break
                elif c != v:
                    ok = False
                    break
            if ok:
                return True
        return False

    return match


# ---- checks ------------------------------------------------------------------------------------------
def _parse_uint(text: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise CompileError(f"could not parse numeric value '{text}' (a decimal integer is required)")
    v = int(text)
    return v % (1 << 64)


def _const(text: str, ftype: str):
    if ftype == F.U64:
        return _parse_uint(text)
    return F._cstr(text)


def _scalar_op(op: str, R):
    """Return pred(v) for a scalar value v and constant R."""
    if op in ("=", "=="):
        return lambda v: v == R
    if op == "!=":
        return lambda v: v != R
    if op == "<":
        return lambda v: v < R
    if op == "<=":
        return lambda v: v <= R
    if op == ">":
        return lambda v: v > R
    if op == ">=":
        return lambda v: v >= R
    if op == "contains":
        return lambda v: R in v
    if op == "icontains":
        r = ascii_lower(R)
        return lambda v: r in ascii_lower(v)
    if op == "startswith":
        return lambda v: v.startswith(R)
    if op == "endswith":
        return lambda v: v.endswith(R)
    if op in ("glob", "iglob"):
        rx = glob_to_regex(R, casefold=(op == "iglob")).fullmatch
        return lambda v: rx(v) is not None
    if op == "regex":
        rx = compile_regex(R)
        if rx is None:
            return lambda v: False
        m = rx.fullmatch
        return lambda v: m(v) is not None
    raise CompileError(f"operator '{op}' is not supported here")


def compile_check(node):
    _, lhs_node, op, rhs_node = node
    lhs = compile_field(lhs_node)
    fetch = lhs.fetch
    if " " in op:
        return _compile_modified(lhs, op, rhs_node)
    if op == "exists":
        return lambda e: fetch(e) is not None
    if op in ("bcontains", "bstartswith"):
        raise CompileError(
            f"'{op}' operator not supported on field '{lhs.text}' of type '{lhs.type}' "
            "(only byte-buffer fields accept it; every k8s_audit field is a string)"
        )
    if lhs.is_list and op not in LIST_FIELD_OPS:
        raise CompileError(f"'{op}' operator not supported list filters ({lhs.text})")
    allowed = NUM_FIELD_OPS if lhs.type == F.U64 else STR_FIELD_OPS
    if op not in allowed:
        raise CompileError(f"'{op}' operator not supported on field '{lhs.text}' of type '{lhs.type}'")
    kind = rhs_node[0]

    if kind in ("val", "xf"):
        if op in ("pmatch", "regex"):
            raise CompileError(f"'{op}' operator does not support a field on its right-hand side")
        rhs = compile_field(rhs_node[1] if kind == "val" else rhs_node)
        if rhs.type != lhs.type or rhs.is_list != lhs.is_list:
            raise CompileError(f"field '{rhs.text}' has incompatible type with '{lhs.text}'")
        rfetch = rhs.fetch
        if op in ("in", "intersects"):
            if rhs.string_xf or (lhs.is_list and lhs.string_xf):
                # Quirk (libs 0.21): transformed strings carry a trailing NUL that set membership keeps.
                return lambda e: False
            any_of = op == "intersects" or not lhs.is_list

            def check_set(e):
                v = fetch(e)
                if v is None:
                    return False
                r = rfetch(e)
                if r is None:
                    return False
                s = set(r) if isinstance(r, tuple) else {r}
                if isinstance(v, tuple):
                    return any(x in s for x in v) if any_of else all(x in s for x in v)
                return v in s

            return check_set
        if op in ("=", "=="):
            pred = lambda v, r: v == r  # noqa: E731
        else:
            import operator as _o

            pred = {
                "!=": _o.ne,
                "<": _o.lt,
                "<=": _o.le,
                ">": _o.gt,
                ">=": _o.ge,
                "contains": lambda v, r: r in v,
                "icontains": lambda v, r: ascii_lower(r) in ascii_lower(v),
                "startswith": lambda v, r: v.startswith(r),
                "endswith": lambda v, r: v.endswith(r),
                "glob": lambda v, r: glob_to_regex(r).fullmatch(v) is not None,
                "iglob": lambda v, r: glob_to_regex(r, True).fullmatch(v) is not None,
            }[op]

        def check_field(e):
            v = fetch(e)
            if v is None:
                return False
            r = rfetch(e)
            if r is None:
                return False
            return pred(v, r)

        return check_field

    # constants
    if kind == "value":
        consts = [rhs_node[1]]
    else:
        consts = list(rhs_node[1])
        if op not in ("in", "intersects", "pmatch"):
            raise CompileError(f"'{op}' operator does not accept a list of values")
    values = [_const(c, lhs.type) for c in consts]

    if op in ("in", "intersects"):
        if lhs.is_list and lhs.string_xf:
            return lambda e: False  # same NUL quirk as above
        s = frozenset(values)
        if lhs.is_list:
            if op == "in":

                def check_in_all(e):
                    v = fetch(e)
                    if v is None:
                        return False
                    for x in v:
                        if x not in s:
                            return False
                    return True

                return check_in_all

            def check_any(e):
                v = fetch(e)
                if v is None:
                    return False
                for x in v:
                    if x in s:
                        return True
                return False

            return check_any

        def check_member(e):
            v = fetch(e)
            return v is not None and v in s

        return check_member
    if op == "pmatch":
        m = make_pmatch(values)

        def check_pmatch(e):
            v = fetch(e)
            return v is not None and m(v)

        return check_pmatch

    R = values[0]
    if op in ("=", "=="):

        def check_eq(e):
            return fetch(e) == R  # None never equals a string constant

        return check_eq
    pred = _scalar_op(op, R)

    def check(e):
        v = fetch(e)
        return v is not None and pred(v)

    return check


def _compile_modified(lhs: FieldExpr, op: str, rhs_node):
    """``f startswith oneof (a, b)``: sugar for the plain check against each value, combined by the modifier:
    ``anyof`` at least one holds, ``allof`` every one holds, ``oneof`` exactly one holds."""
    base, mod = op.split()
    if base in ("bcontains", "bstartswith"):
        raise CompileError(
            f"'{base}' operator not supported on field '{lhs.text}' of type '{lhs.type}' "
            "(only byte-buffer fields accept it; every k8s_audit field is a string)"
        )
    if lhs.is_list:
        raise CompileError(f"'{op}' operator not supported list filters ({lhs.text})")
    if lhs.type != F.STR:
        raise CompileError(f"'{op}' operator not supported on field '{lhs.text}' of type '{lhs.type}'")
    fetch = lhs.fetch
    values = [_const(c, lhs.type) for c in rhs_node[1]]
    if base in ("=", "==") and mod == "anyof":
        members = frozenset(values)
        return lambda e: fetch(e) in members  # None is never a member
    preds = tuple(_scalar_op(base, R) for R in values)
    if mod == "anyof":

        def check(e):
            v = fetch(e)
            return v is not None and any(p(v) for p in preds)
    elif mod == "allof":

        def check(e):
            v = fetch(e)
            return v is not None and all(p(v) for p in preds)
    else:

        def check(e):
            v = fetch(e)
            return v is not None and sum(1 for p in preds if p(v)) == 1

    return check


def compile_node(node, memo: dict | None = None):
    """AST -> closure. ``memo`` shares closures of identical (macro) subtrees by identity."""
    if memo is not None:
        hit = memo.get(id(node))
        if hit is not None:
            return hit[1]
    kind = node[0]
    if kind == "and":
        fns = [compile_node(c, memo) for c in node[1]]
        if len(fns) == 2:
            a, b = fns
            fn = lambda e: a(e) and b(e)  # noqa: E731
        elif len(fns) == 3:
            a, b, c = fns
            fn = lambda e: a(e) and b(e) and c(e)  # noqa: E731
        else:

            def fn(e, fns=tuple(fns)):
                for f in fns:
                    if not f(e):
                        return False
                return True
    elif kind == "or":
        fns = [compile_node(c, memo) for c in node[1]]
        if len(fns) == 2:
            a, b = fns
            fn = lambda e: a(e) or b(e)  # noqa: E731
        else:

            def fn(e, fns=tuple(fns)):
                for f in fns:
                    if f(e):
                        return True
                return False
    elif kind == "not":
        inner = compile_node(node[1], memo)
        fn = lambda e: not inner(e)  # noqa: E731
    elif kind == "check":
        fn = compile_check(node)
    elif kind == "id":
        raise CompileError(f"Undefined macro '{node[1]}' used in filter.")
    else:
        raise CompileError(f"unexpected node {kind}")
    if memo is not None:
        memo[id(node)] = (node, fn)  # keep node alive so its id stays unique
    return fn


# ---- cheap pre-filter ------------------------------------------------------------------------------
INDEX_FIELDS = ("jevt.value[stage]", "ka.stage", "ka.verb", "ka.target.resource", "ka.target.subresource")


def constraints(node) -> dict:
    """Conditions every match must satisfy: {field key: allowed values}, from top-level conjuncts.

    Only exact-equality checks of low-cardinality scalar fields are used, so an
    event failing a constraint is certain not to match the rule.
    """
    kind = node[0]
    if kind == "check":
        _, lhs, op, rhs = node
        if lhs[0] != "field" or rhs is None or rhs[0] not in ("value", "list"):
            return {}
        if op not in ("=", "==", "in", "intersects"):
            return {}
        try:
            fdef, key, _ = F.resolve(lhs[1], lhs[2])
        except F.FieldError:
            return {}
        if key not in INDEX_FIELDS or fdef.is_list:
            return {}
        vals = [rhs[1]] if rhs[0] == "value" else rhs[1]
        return {key: frozenset(F._cstr(v) for v in vals)}
    if kind == "and":
        out: dict = {}
        for c in node[1]:
            for k, v in constraints(c).items():
                out[k] = out[k] & v if k in out else v
        return out
    if kind == "or":
        parts = [constraints(c) for c in node[1]]
        common = set(parts[0]) if parts else set()
        for p in parts[1:]:
            common &= set(p)
        return {k: frozenset().union(*(p[k] for p in parts)) for k in common}
    return {}


def index_fetchers():
    out = []
    for key in INDEX_FIELDS:
        name, _, rest = key.partition("[")
        arg = rest[:-1] if rest else None
        _, k, ex = F.resolve(name, arg)
        out.append((k, _fetcher(k, ex)))
    return out
