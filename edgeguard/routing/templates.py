"""Webhook body templates: ``{{ var }}`` placeholders, checked when the routes load and filled per alert."""

from __future__ import annotations

import json
import re
from typing import Any

from .document import RoutesError
from .fields import alert_value, as_text

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
TEMPLATE_VARS = (
    "alert",
    "rule",
    "priority",
    "priority_number",
    "source",
    "hostname",
    "output",
    "time",
    "tags",
    "output_fields",
    "idempotency_key",
)


def validate_template(tpl: Any, where: str) -> None:
    if isinstance(tpl, dict):
        for k, v in tpl.items():
            validate_template(v, f"{where}.{k}")
    elif isinstance(tpl, list):
        for i, v in enumerate(tpl):
            validate_template(v, f"{where}[{i}]")
    elif isinstance(tpl, str):
        for m in _PLACEHOLDER.finditer(tpl):
            var = m.group(1)
            if var not in TEMPLATE_VARS and not var.startswith("output_fields."):
                raise RoutesError(
                    where,
                    f"unknown template variable {var!r} (expected one of "
                    f"{', '.join(TEMPLATE_VARS)} or output_fields.<name>)",
                )


def render_template(tpl: Any, alert: dict, extra: dict) -> Any:
    """Fill ``{{ var }}`` placeholders; a string that is only a placeholder keeps the value's JSON type."""
    if isinstance(tpl, dict):
        return {k: render_template(v, alert, extra) for k, v in tpl.items()}
    if isinstance(tpl, list):
        return [render_template(v, alert, extra) for v in tpl]
    if not isinstance(tpl, str):
        return tpl

    def value(var: str) -> Any:
        if var == "alert":
            return alert
        if var in extra:
            return extra[var]
        return alert_value(alert, var)

    whole = _PLACEHOLDER.fullmatch(tpl.strip())
    if whole:
        return value(whole.group(1))

    def sub(m):
        v = value(m.group(1))
        if v is None:
            return ""
        if isinstance(v, dict):
            return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return as_text(v)

    return _PLACEHOLDER.sub(sub, tpl)
