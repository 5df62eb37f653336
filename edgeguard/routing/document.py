"""Reading a routes or destinations document: YAML, durations, and the one error type naming the exact place."""

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


def load_yaml(text: str, source: str, *, secret: bool = False) -> Any:
    """The YAML (or JSON) document in ``text``. A syntax error names its position, and the problem too unless the
    text is ``secret`` (YAML's message can quote the content)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if secret:
            raise RoutesError(source, "not valid YAML/JSON" + (f" at line {mark.line + 1}" if mark else "")) from None
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise RoutesError(source, f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
