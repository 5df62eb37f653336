"""An alert's values by path (``rule``, ``output_fields.<key>``), and their text as Falco renders it.

Matchers, templates and dedup keys all read alerts this way, so the three agree on what a field is.
"""

from __future__ import annotations

from typing import Any


def alert_value(alert: dict, path: str) -> Any:
    """Value of ``rule``/``priority``/... or ``output_fields.<key>`` (the key may contain dots)."""
    if path.startswith("output_fields."):
        fields = alert.get("output_fields") or {}
        return fields.get(path[len("output_fields.") :])
    if path == "tags":
        return alert.get("tags") or []
    return alert.get(path)


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        # Falco renders list fields as "(a,b)" in output; match on that same text.
        return "(" + ",".join(str(v) for v in value) + ")"
    return str(value)
