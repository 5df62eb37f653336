"""Rule output formats (libs ``eventformatter.cpp``): ``%field``, ``%field[arg]``, ``%NNNfield``, transformers.

A format compiles once into literal text and tokens. Rendering gives the text
(absent → ``<NA>``, lists → ``(a,b)``) and Falco's typed ``output_fields``
(absent → null, lists → arrays, keyed by the token text without transformers).
"""

from __future__ import annotations

import re

from . import fields as F
from .compiler import CompileError, compile_field
from .parser import TRANSFORMERS

NA = "<NA>"
_WIDTH = re.compile(r"[0-9]+")
_LIST_MAX = 1023


class Token:
    __slots__ = ("expr", "width", "key", "base_fetch", "is_list")

    def __init__(self, expr, width):
        self.expr = expr
        self.width = width
        self.key = expr.base_key
        self.base_fetch = expr.base_fetch
        self.is_list = expr.is_list


def _render_value(v) -> str:
    if v is None:
        return NA
    if isinstance(v, tuple):
        s = "(" + ",".join(v) + ")"
        if len(s.encode("utf-8", "surrogateescape")) > _LIST_MAX:
            s = s.encode("utf-8", "surrogateescape")[:_LIST_MAX].decode("utf-8", "ignore")
        return s
    return str(v)


def typed_value(v):
    """A field value as output_fields carries it: lists as arrays."""
    if isinstance(v, tuple):
        return list(v)
    return v


_typed = typed_value


def _parse_token(fmt: str, pos: int):
    """Parse the token after a '%' at ``pos``; return (node, end)."""
    for t in TRANSFORMERS:
        if fmt.startswith(t + "(", pos):
            inner, end = _parse_token(fmt, pos + len(t) + 1)
            if end >= len(fmt) or fmt[end] != ")":
                raise CompileError(f"invalid formatting token {fmt[pos - 1 :]}: missing ')' after transformer '{t}'")
            return ("xf", t, inner), end + 1
    name = F.longest_field_prefix(fmt, pos)
    if name is None:
        raise CompileError(f"invalid formatting token {fmt[pos:].split(' ', 1)[0]}")
    end = pos + len(name)
    fdef = F.FIELDS[name][0]
    arg = None
    if fdef.plugin:
        # The plugin field parser looks for '[' in the rest of the token (up to the first space).
        word_end = fmt.find(" ", pos)
        word = fmt[pos : word_end if word_end >= 0 else len(fmt)]
        has_bracket = "[" in word
        if has_bracket:
            if end >= len(fmt) or fmt[end] != "[":
                raise CompileError(f"invalid formatting token {word}")
            close = fmt.find("]", end)
            if close < 0:
                raise CompileError(f"invalid formatting token {word}")
            arg = fmt[end + 1 : close]
            end = close + 1
    elif end < len(fmt) and fmt[end] == "[":
        close = fmt.find("]", end)
        if close >= 0:
            arg = fmt[end + 1 : close]
            end = close + 1
    return ("field", name, arg), end


class OutputFormat:
    def __init__(self, fmt: str):
        self.fmt = fmt
        self.parts: list = []  # str or Token
        i, n = 0, len(fmt)
        lit = []
        while i < n:
            ch = fmt[i]
            if ch != "%":
                lit.append(ch)
                i += 1
                continue
            if i + 1 >= n:
                raise CompileError("invalid formatting token: formatting cannot end with a %")
            j = i + 1
            width = 0
            m = _WIDTH.match(fmt, j)
            if m:
                width = int(m.group(0))
                j = m.end()
            node, end = _parse_token(fmt, j)
            try:
                expr = compile_field(node)
            except CompileError as exc:
                raise CompileError(f"invalid formatting token %{fmt[j:end]}: {exc}") from None
            if lit:
                self.parts.append("".join(lit))
                lit = []
            self.parts.append(Token(expr, width))
            i = end
        if lit:
            self.parts.append("".join(lit))
        self.tokens = [p for p in self.parts if isinstance(p, Token)]

        # The rendered text: the literals in place, each token's slot filled per event.
        self._template = [p if p.__class__ is str else "" for p in self.parts]
        self._slots = tuple((i, p.expr.fetch, p.width) for i, p in enumerate(self.parts) if p.__class__ is not str)

    def render(self, evt) -> str:
        out = self._template[:]
        for i, fetch, width in self._slots:
            v = fetch(evt)
            s = v if v.__class__ is str else _render_value(v)
            if width:
                s = s[:width].ljust(width)
            out[i] = s
        return "".join(out)

    def field_getters(self):
        """(output_fields key, getter of the untransformed value, whether it is a time field) per token."""
        return [(t.key, t.base_fetch, t.key in _TIME_FIELDS) for t in self.tokens]

    def fields(self, evt) -> dict:
        out = {}
        for t in self.tokens:
            # Time fields print as text but are typed as the event timestamp in ns.
            out[t.key] = evt.ts if t.key in _TIME_FIELDS else _typed(t.base_fetch(evt))
        return out


_TIME_FIELDS = frozenset({"evt.time", "evt.time.s", "evt.time.iso8601", "evt.datetime", "evt.datetime.s"})
