"""labelSelector / fieldSelector parsing and matching with the apiserver's grammar."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .resources import Resource

Matcher = Callable[[dict], bool]


class SelectorError(ValueError):
    """Unparseable or unsupported selector (-> 400 BadRequest)."""


_KEY = r"(?:[a-z0-9A-Z.\-]+/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_terms(text: str) -> list[str]:
    # Commas separate requirements except inside the parentheses of a set.
    terms: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]


def parse_labels(text: str | None) -> Matcher:
    if not text or not text.strip():
        return lambda obj: True
    reqs: list[Callable[..., bool]] = []
    for term in _split_terms(text):
        if m := _SET_RE.match(term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if not values:
                raise SelectorError(f"unable to parse requirement: {term.strip()!r}: values set can't be empty")
            if op == "in":
                reqs.append(lambda labels, k=key, vs=values: k in labels and labels[k] in vs)
            else:
                reqs.append(lambda labels, k=key, vs=values: k not in labels or labels[k] not in vs)
        elif m := _CMP_RE.match(term):
            key, op, value = m.groups()
            if op == "!=":
                reqs.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                reqs.append(lambda labels, k=key, v=value: k in labels and labels[k] == v)
        elif m := _EXISTS_RE.match(term):
            neg, key = m.groups()
            if neg:
                reqs.append(lambda labels, k=key: k not in labels)
            else:
                reqs.append(lambda labels, k=key: k in labels)
        else:
            raise SelectorError(f"unable to parse requirement: {term.strip()!r}")

    def match(obj: dict) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return match


def _field_value(obj: dict, label: str) -> str:
    cur: Any = obj
    for part in label.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        # Unset booleans select as "false" (spec.unschedulable), other unset fields as "".
        return "false" if label in ("spec.unschedulable", "spec.hostNetwork") else ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_fields(text: str | None, res: Resource) -> Matcher:
    if not text or not text.strip():
        return lambda obj: True
    reqs: list[Callable[..., bool]] = []
    for term in text.split(","):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", term)
        if not m:
            raise SelectorError(f"invalid selector: {text!r}; can't understand {term!r}")
        label, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if not res.selectable(label):
            raise SelectorError(f"field label not supported: {label}")
        if op == "!=":
            reqs.append(lambda o, lb=label, v=value: _field_value(o, lb) != v)
        else:
            reqs.append(lambda o, lb=label, v=value: _field_value(o, lb) == v)
    return lambda obj: all(r(obj) for r in reqs)


def match_label_selector(sel: dict, labels: dict) -> bool:
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in sel.get("matchExpressions") or []:
        k, op, vals = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True
