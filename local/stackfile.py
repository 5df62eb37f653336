"""Reading stack.yml the way faas-cli does: envsubst on the raw text, then YAML.

faas-cli uses drone/envsubst: ``${VAR}``, ``${VAR:-default}`` and ``${VAR:=default}``
are substituted (default when unset *or empty*), ``$$`` is a literal ``$``, a
bare ``$VAR`` is left alone and ``${VAR-default}`` is a parse error (even in a
comment). We reproduce exactly that subset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = ROOT / "stack.yml"

_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StackError(ValueError):
    pass


def envsubst(text: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env

    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        expr = m.group(1)
        for op in (":-", ":="):
            if op in expr:
                name, default = expr.split(op, 1)
                if not _NAME.match(name):
                    raise StackError(f"envsubst: bad variable name in ${{{expr}}}")
                value = env.get(name, "")
                return value if value != "" else default
        if not _NAME.match(expr):
            raise StackError(f"envsubst: unsupported expression ${{{expr}}} (faas-cli rejects it)")
        return env.get(expr, "")

    return _TOKEN.sub(repl, text)


@dataclass
class Function:
    name: str
    handler: Path
    image: str
    lang: str
    environment: dict = field(default_factory=dict)
    secrets: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)


@dataclass
class Stack:
    path: Path
    raw_text: str
    doc: dict
    copy: list
    functions: dict


def _scalar_text(value) -> str:
    """The text yaml.v3 would put in faas-cli's map[string]string (PyYAML has already typed it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load(path: Path = STACK_FILE, env: dict | None = None) -> Stack:
    raw_text = Path(path).read_text(encoding="utf-8")
    doc = yaml.safe_load(envsubst(raw_text, env))
    if not isinstance(doc, dict) or "functions" not in doc:
        raise StackError(f"{path}: no functions")
    base = Path(path).resolve().parent
    functions = {}
    for name, spec in doc["functions"].items():
        functions[name] = Function(
            name=name,
            handler=(base / spec["handler"]).resolve(),
            image=spec["image"],
            lang=spec["lang"],
            environment={k: _scalar_text(v) for k, v in (spec.get("environment") or {}).items()},
            secrets=list(spec.get("secrets") or []),
            labels=dict(spec.get("labels") or {}),
            annotations=dict(spec.get("annotations") or {}),
            raw=spec,
        )
    copy = list((doc.get("configuration") or {}).get("copy") or [])
    return Stack(path=Path(path), raw_text=raw_text, doc=doc, copy=copy, functions=functions)
