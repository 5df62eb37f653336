"""The one error type of a routes or destinations document: its message starts with the exact place."""
from __future__ import annotations

from typing import Any

from .. import config


class RoutesError(ValueError):
    """A routes document is unusable; the message starts with the exact place."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


def parse_duration(value: Any, where: str) -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"`` (edgeguard's one parser)."""
    try:
        return config.parse_duration(value, where)
    except config.ConfigError:
        raise RoutesError(where, f"expected a duration like 30s, 5m or 1h30m, got {value!r}") from None

