"""One rule for every decoded JSON body: values a function can pass on safely, or a 400 naming the place.

Python's ``json`` accepts documents that later break our own code or a receiver:
* a lone surrogate (``"\\ud800"``) decodes to a str that cannot be UTF-8 encoded, so the first log line,
  metric label or forwarded body that carries it raises ``UnicodeEncodeError``;
* ``1e400`` decodes to ``inf`` and huge integers to Python ints, which JSON receivers (and ``json.dumps``
  with ``allow_nan=False``) cannot take;
* deep nesting makes every recursive consumer (dedup keys, templates, copies) hit ``RecursionError``.

``check`` walks the decoded value once, without recursion, and raises ``UnsafeJSON`` with a JSONPath-like
location (``$.output_fields["k8s.ns.name"]``, ``$[3].tags[0]``). ``prefilter`` tells from the raw text,
at C speed, which of those walks can find anything at all, so large batches whose text holds no ``\\u``
surrogate escape, no long exponent and no long digit run skip the walk for those checks.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DEPTH = 32
# Integers outside the 64-bit range lose precision (or fail) in most JSON receivers; Falco's own fields are
# at most uint64 (e.g. evt.time in nanoseconds).
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_BIG_NUMBER = re.compile(r"[eE][+-]?\d{3,}|\d{19,}")


class UnsafeJSON(ValueError):
    def __init__(self, where: str, what: str):
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


def _key_path(parent: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    text = key if _is_clean(key) else key.encode("utf-8", "backslashreplace").decode("ascii")
    if text.isidentifier():
        return f"{parent}.{text}"
    return f'{parent}["{text}"]'


def key_path(parent: str, key: Any) -> str:
    """The JSONPath-like place of ``parent``'s member ``key``, as UnsafeJSON names it (``$.a["b.c"][0]``)."""
    return _key_path(parent, key)


def _is_clean(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def prefilter(text: str | bytes) -> tuple[bool, bool]:
    """(may hold a lone surrogate, may hold an out-of-range number), judged from the raw JSON text.

    A surrogate can only reach a decoded str through a ``\\uD8xx``-``\\uDFxx`` escape (raw surrogates are
    not valid UTF-8), and an infinite float or an out-of-range integer needs a 3-digit exponent or a
    19-digit run. False means the walk for that check can be skipped.
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("latin-1")
    return bool(_SURROGATE_ESCAPE.search(text)), bool(_BIG_NUMBER.search(text))


def check(
    value: Any, *, max_depth: int = MAX_DEPTH, surrogates: bool = True, numbers: bool = True, root: str = "$"
) -> None:
    """Raise UnsafeJSON at the first lone surrogate, non-finite or out-of-range number, or level past max_depth."""
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, str):
            if surrogates and not _is_clean(node):
                raise UnsafeJSON(where, "a lone surrogate (\\ud800-\\udfff) is not a Unicode character")
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, float):
            if numbers and not math.isfinite(node):
                raise UnsafeJSON(where, "a number out of the range of a double (e.g. 1e400)")
        elif isinstance(node, int):
            if numbers and not INT_MIN <= node <= INT_MAX:
                raise UnsafeJSON(where, "an integer outside the 64-bit range")
        elif isinstance(node, (dict, list)):
            if depth >= max_depth:
                raise UnsafeJSON(where, f"nested deeper than {max_depth} levels")
            if isinstance(node, dict):
                for k, v in node.items():
                    if surrogates and not _is_clean(k):
                        raise UnsafeJSON(_key_path(where, k), "a lone surrogate (\\ud800-\\udfff) in a key")
                    stack.append((v, _key_path(where, k), depth + 1))
            else:
                for i, v in enumerate(node):
                    stack.append((v, _key_path(where, i), depth + 1))


def scalar_fields(obj: dict, names, *, root: str = "$") -> None:
    """Raise UnsafeJSON where one of ``names`` holds an object or an array instead of a scalar."""
    for name in names:
        if name in obj and isinstance(obj[name], (dict, list)):
            raise UnsafeJSON(
                _key_path(root, name),
                f"must be a string, number, boolean or null, not "
                f"{'an object' if isinstance(obj[name], dict) else 'an array'}",
            )
