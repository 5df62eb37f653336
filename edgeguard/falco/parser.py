"""Falco condition grammar (falcosecurity/libs 0.21.0 ``filter/parser.cpp``) to a small tuple AST.

AST nodes:
  ("and", [children]) ("or", [children]) ("not", child) ("id", name)
  ("check", lhs, op, rhs)   lhs: ("field", name, arg|None) | ("xf", tname, inner)
                            rhs: None (exists) | ("value", str) | ("list", [str]) | ("val", field) | ("xf", ...)
The quirks of the reference parser are kept on purpose (see tests/audit_ingest/test_parser.py).
"""

from __future__ import annotations

import re

BLANKS = " \t\b\r\n"
TRANSFORMERS = ("tolower", "toupper", "b64", "basename", "len")
NUM_OPS = ("<=", "<", ">=", ">")
STR_OPS = (
    "==",
    "=",
    "!=",
    "glob",
    "iglob",
    "contains",
    "icontains",
    "bcontains",
    "startswith",
    "bstartswith",
    "endswith",
    "regex",
)
LIST_OPS = ("intersects", "in", "pmatch")
ALL_OPS = ("exists",) + NUM_OPS + STR_OPS + LIST_OPS
# List modifiers of the string operators (libs' s_binary_str_ops): ``startswith oneof (a, b)``.
MODIFIERS = ("oneof", "anyof", "allof")
MODIFIABLE_OPS = (
    "==",
    "=",
    "!=",
    "contains",
    "icontains",
    "bcontains",
    "startswith",
    "bstartswith",
    "endswith",
    "glob",
    "iglob",
    "regex",
)
_OPS_TEXT = ", ".join(f"'{o}'" for o in ALL_OPS)
_XF_TEXT = "'val', " + ", ".join(f"'{t}'" for t in TRANSFORMERS)

_FIELDNAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*(?:\.[a-zA-Z]+[a-zA-Z0-9_]*)+")
_IDENT = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
_ARG_BARE = re.compile(r"[^\]\[\"'\s]+")
_HEXNUM = re.compile(r"0[xX][0-9a-fA-F]+")
_NUM = re.compile(r"[+\-]?[0-9]+[.]?[0-9]*(?:[eE][+\-][0-9]+)?")
_BARESTR = re.compile(r"[^()\"'\s=,]+")

MAX_DEPTH = 1000


class ParseError(ValueError):
    def __init__(self, msg: str, pos: int):
        super().__init__(f"{msg} (at index {pos})")
        self.msg = msg
        self.pos = pos


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "\\": "\\", "/": "/"}


def unescape(raw: str, delim: str) -> str:
    out = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1] if i + 1 < n else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
        elif nxt == delim:
            out.append(delim)
        elif nxt == " ":
            out.append("\\")  # quirk: "\ " yields a lone backslash, the space is dropped
        else:
            raise ValueError(f"unsupported string escape sequence: \\{nxt}")
        i += 2
    return "".join(out)


class Parser:
    def __init__(self, text: str):
        self.s = text
        self.p = 0
        self.depth = 0
        self.last = ""

    # -- lexing helpers -------------------------------------------------------------------------------
    def err(self, msg):
        return ParseError(msg, self.p)

    def blank(self) -> bool:
        s, p = self.s, self.p
        while p < len(s) and s[p] in BLANKS:
            p += 1
        moved = p != self.p
        self.p = p
        return moved

    def lit(self, text: str) -> bool:
        if self.s.startswith(text, self.p):
            self.p += len(text)
            self.last = text
            return True
        return False

    def rx(self, regex):
        m = regex.match(self.s, self.p)
        if not m:
            return None
        self.p = m.end()
        self.last = m.group(0)
        return m.group(0)

    def quoted(self):
        s, p = self.s, self.p
        if p >= len(s) or s[p] not in "\"'":
            return None
        delim = s[p]
        j = p + 1
        while True:
            j = s.find(delim, j)
            if j < 0:
                return None
            if s[j - 1] != "\\":
                break
            j += 1
        raw = s[p + 1 : j]
        self.p = j + 1
        try:
            val = unescape(raw, delim)
        except ValueError as exc:
            raise self.err(str(exc)) from None
        self.last = val
        return val

    def push(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.err(f"exceeded max depth limit of {MAX_DEPTH}")

    # -- grammar --------------------------------------------------------------------------------------
    def parse(self):
        if self.s == "":
            raise ParseError("filter input string is empty", 0)
        try:
            node = self.parse_or()
        except RecursionError:
            raise ParseError("condition is nested too deeply", self.p) from None
        self.blank()
        if self.p != len(self.s):
            raise self.err(f"unexpected token after '{self.last}', expecting 'or', 'and'")
        return node

    def _binary(self, word, sub, kind):
        self.push()
        children = [sub()]
        while True:
            self.blank()
            if self.lit(word):
                if self.blank():
                    children.append(sub())
                elif self.lit("("):
                    children.append(self.embedded())
                else:
                    raise self.err(f"expected blank or '(' after '{word}'")
                continue
            break
        self.depth -= 1
        return children[0] if len(children) == 1 else (kind, children)

    def parse_or(self):
        return self._binary("or", self.parse_and, "or")

    def parse_and(self):
        return self._binary("and", self.parse_not, "and")

    def parse_not(self):
        self.push()
        self.blank()
        negate = False
        child = None
        while True:
            save = self.p
            if self.lit("not"):
                if self.blank():
                    negate = not negate
                    continue
                if self.lit("("):
                    negate = not negate
                    child = self.embedded()
                    break
                self.p = save
            break
        if child is None:
            child = self.parse_check()
        self.depth -= 1
        return ("not", child) if negate else child

    def embedded(self):
        node = self.parse_or()
        self.blank()
        if not self.lit(")"):
            raise self.err("expected a ')' token")
        return node

    def parse_check(self):
        self.blank()
        if self.lit("("):
            return self.embedded()
        start = self.p
        name = self.rx(_FIELDNAME)
        if name:
            return self.condition(self.field_rest(name))
        xf = self.transformer_name()
        if xf:
            return self.condition(self.transformer_rest(xf))
        self.p = start
        ident = self.rx(_IDENT)
        if ident:
            return ("id", ident)
        raise self.err("expected a '(' token, a field check, or an identifier")

    def field_rest(self, name):
        if not self.lit("["):
            return ("field", name, None)
        arg = self.quoted()
        if arg is None:
            arg = self.rx(_ARG_BARE)
            if arg is None:
                raise self.err("expected a valid field argument: a quoted string or a bare string")
        if not self.lit("]"):
            raise self.err("expected a ']' token")
        return ("field", name, arg)

    def transformer_name(self):
        for t in TRANSFORMERS:
            if self.s.startswith(t + "(", self.p):
                self.p += len(t) + 1
                self.last = t + "("
                return t
        return None

    def field_operand(self):
        """A field or a transformed field at the cursor, or None (nothing consumed) when there is none."""
        xf = self.transformer_name()
        if xf:
            return self.transformer_rest(xf)
        name = self.rx(_FIELDNAME)
        return self.field_rest(name) if name else None

    def transformer_rest(self, tname):
        self.blank()
        inner = self.field_operand()
        if inner is None:
            raise self.err(f"expected a field or a transformer inside '{tname}('")
        self.blank()
        if not self.lit(")"):
            raise self.err("expected a ')' token")
        return ("xf", tname, inner)

    def rhs_field(self):
        if self.s.startswith("val(", self.p):
            self.p += 4
            self.blank()
            name = self.rx(_FIELDNAME)
            if not name:
                raise self.err("expected a field inside 'val('")
            f = self.field_rest(name)
            self.blank()
            if not self.lit(")"):
                raise self.err("expected a ')' token")
            return ("val", f)
        xf = self.transformer_name()
        if xf:
            return self.transformer_rest(xf)
        return None

    def op(self, ops):
        """Match an operator; quirk of libs 0.21: a word operator without a following blank is consumed anyway."""
        for o in ops:
            if self.s.startswith(o, self.p):
                self.p += len(o)
                self.last = o
                if o[0].isalpha() and ops is not LIST_OPS:
                    if self.p >= len(self.s) or self.s[self.p] not in BLANKS:
                        return None
                return o
        return None

    def condition(self, lhs):
        self.blank()
        if self.lit("exists"):
            return ("check", lhs, "exists", None)
        o = self.op(NUM_OPS)
        if o:
            self.blank()
            v = self.rx(_HEXNUM) or self.rx(_NUM)
            if v is not None:
                return ("check", lhs, o, ("value", v))
            rhs = self.rhs_field()
            if rhs:
                return ("check", lhs, o, rhs)
            raise self.err(f"expected a number value or a field with a valid transformer: {_XF_TEXT}")
        o = self.op(STR_OPS)
        if o:
            self.blank()
            mod = self.modifier() if o in MODIFIABLE_OPS else None
            if mod:
                return ("check", lhs, f"{o} {mod}", ("list", self.list_rest()))
            rhs = self.rhs_field()
            if rhs:
                return ("check", lhs, o, rhs)
            v = self.quoted()
            if v is None:
                v = self.rx(_BARESTR)
            if v is not None:
                return ("check", lhs, o, ("value", v))
            raise self.err(f"expected a string value or a field with a valid transformer: {_XF_TEXT}")
        o = self.op(LIST_OPS)
        if o:
            self.blank()
            if self.lit("("):
                return ("check", lhs, o, ("list", self.list_rest()))
            rhs = self.rhs_field()
            if rhs:
                return ("check", lhs, o, rhs)
            ident = self.rx(_IDENT)
            if ident:
                return ("check", lhs, o, ("list", [ident]))
            raise self.err(f"expected a list or a field with a valid transformer: {_XF_TEXT}")
        raise self.err(f"expected a valid check operator: one of {_OPS_TEXT}")

    def modifier(self):
        """``oneof``/``anyof``/``allof`` before a parenthesised list (consumed with the '('), else None."""
        for m in MODIFIERS:
            if self.s.startswith(m, self.p):
                save = self.p
                self.p += len(m)
                self.blank()
                if self.lit("("):
                    return m
                self.p = save  # a plain string value that happens to be the word
        return None

    def list_rest(self):
        items: list[str] = []
        self.blank()
        if self.lit(")"):
            return items
        while True:
            self.blank()
            v = self.quoted()
            if v is None:
                v = self.rx(_BARESTR)
            if v is None:
                raise self.err("expected a list value: a quoted string or a bare string")
            items.append(v)
            self.blank()
            if self.lit(","):
                continue
            if self.lit(")"):
                return items
            raise self.err("expected a ',' or a ')' token in list")


def parse(text: str):
    return Parser(text).parse()


def parse_field(text: str):
    """The whole of ``text`` as one field check's left side: ``ka.user.name``, ``ka.req.pod.volumes.hostpath[/x]``,
    ``tolower(ka.verb)``. Exception ``fields`` are checked this way.

    Returns the field node, or None when ``text`` does not start with a field or has more after it.
    A malformed field (``ka.x[`` with no ``]``) raises ParseError.
    """
    p = Parser(text)
    node = p.field_operand()
    return node if node is not None and p.p == len(text) else None


def split_modifier(op: str):
    """(operator, modifier) of a modified string operator such as ``startswith oneof``, else None."""
    parts = op.split()
    if len(parts) == 2 and parts[0] in MODIFIABLE_OPS and parts[1] in MODIFIERS:
        return parts[0], parts[1]
    return None


def to_text(node) -> str:
    """Readable form of an AST (for messages and tests)."""
    kind = node[0]
    if kind in ("and", "or"):
        return "(" + f" {kind} ".join(to_text(c) for c in node[1]) + ")"
    if kind == "not":
        return "not " + to_text(node[1])
    if kind == "id":
        return node[1]
    if kind == "field":
        return node[1] if node[2] is None else f"{node[1]}[{node[2]}]"
    if kind == "xf":
        return f"{node[1]}({to_text(node[2])})"
    if kind == "val":
        return f"val({to_text(node[1])})"
    if kind == "value":
        return node[1]
    if kind == "list":
        return "(" + ", ".join(node[1]) + ")"
    _, lhs, op, rhs = node
    if rhs is None:
        return f"{to_text(lhs)} {op}"
    return f"{to_text(lhs)} {op} {to_text(rhs)}"


# ---- textual list substitution (rule_loader_compiler.cpp::resolve_list) -----------------------------------
_LBLANKS = " \t\n\r"
_DELIMS = _LBLANKS + "(),="


def quote_item(item: str) -> str:
    if " " in item and not item.startswith(('"', "'")):
        return f'"{item}"'
    return item


def substitute_list(cond: str, name: str, items) -> tuple[str, bool]:
    """Falco's context-free list substitution of one list into a condition string."""
    used = False
    sub = ", ".join(quote_item(i) for i in items)
    start = cond.find(name)
    while start != -1:
        end = start + len(name)
        if (start == 0 or cond[start - 1] in _DELIMS) and (end >= len(cond) or cond[end] in _DELIMS):
            while start > 0 and cond[start - 1] in _LBLANKS:
                start -= 1
            while end < len(cond) and cond[end] in _LBLANKS:
                end += 1
            if not sub:
                if start > 0 and cond[start - 1] == ",":
                    start -= 1
                elif end < len(cond) and cond[end] == ",":
                    end += 1
            new = (cond[:start] + " ") if start > 0 else ""
            new += sub + " " + cond[end:]
            cond = new
            start += len(sub) + 1
            used = True
        start = cond.find(name, start + 1)
    return cond, used
