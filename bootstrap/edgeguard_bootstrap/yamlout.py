"""A small YAML writer for the files bootstrap generates.

PyYAML is not part of the standard library and not guaranteed on a fresh node,
and bootstrap must run on the system python3 before anything is installed. We
only ever *write* YAML from plain dicts/lists/scalars, so a conservative
block-style emitter is enough: any string that could be read back as something
else is written double-quoted with JSON escapes, which are valid YAML
double-quoted escapes.
"""

from __future__ import annotations

import json
import re

# Plain (unquoted) scalars are only used when they cannot be misread by a
# YAML 1.1 or 1.2 parser: start with a letter or '/', no ': ' or ' #', no
# flow/indicator characters, and not a boolean/null word.
_PLAIN = re.compile(r"^[A-Za-z/][A-Za-z0-9_./=+@-]*(:[A-Za-z0-9_./=+@-]+)*$")
_RESERVED = {
    "y",
    "n",
    "yes",
    "no",
    "true",
    "false",
    "on",
    "off",
    "null",
    "~",
}


def quote(text: str) -> str:
    """A YAML double-quoted scalar. JSON's escapes are valid YAML, but JSON
    writes astral characters as surrogate pairs, which YAML does not join."""
    out = []
    for ch in json.dumps(text, ensure_ascii=False)[1:-1]:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) > 0xFFFF:
            out.append(f"\\U{ord(ch):08x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return '"' + "".join(out) + '"'


def scalar(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED:
            return value
        return quote(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _lines(obj, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError("YAML keys must be strings here")
            k = scalar(key)
            if isinstance(value, (dict, list)) and value:
                out.append(f"{pad}{k}:")
                # Sequences under a key are indented like kubectl writes them.
                out.extend(_lines(value, indent + 2))
            else:
                out.append(f"{pad}{k}: {_inline(value)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = _lines(item, indent + 2)
                # First line of the item shares the line with the dash.
                out.append(f"{pad}- {sub[0][indent + 2 :]}")
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {_inline(item)}")
    else:
        out.append(pad + scalar(obj))
    return out


def _inline(value) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return scalar(value)


def dump(obj, header: str = "") -> str:
    """YAML text for ``obj``; ``header`` lines are written as comments on top."""
    head = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) if header else ""
    return head + "\n".join(_lines(obj, 0)) + "\n"
