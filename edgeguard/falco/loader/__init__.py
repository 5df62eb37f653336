"""Falco rules-file loading, on Falco's own seams: reader, collector and compiler (``rule_loader_*.cpp``).

Files load one at a time into one collector: the reader decodes each YAML item,
the collector merges the definitions (define, append, replace, enable), and
after each file everything collected so far is compiled again, as Falco does,
so the last successful compile is the ruleset. Conditions are parsed and turned
into closures once, at load time.
"""

from __future__ import annotations

from pathlib import Path

from ..alert import PRIORITIES
from ..parser import to_text
from .collector import ENGINE_VERSION, PLUGINS, SOURCE, Collector
from .compiler import CompiledRule, Ruleset, compile_ruleset, exceptions_condition
from .errors import Diagnostics, LoadWarning, RulesLoadError
from .reader import Reader


def rules_paths(paths) -> list[Path]:
    """Expand directories like Falco: regular *.yaml/*.yml files, byte-wise sorted."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(
                sorted(
                    (c for c in p.iterdir() if c.is_file() and c.suffix in (".yaml", ".yml")),
                    key=lambda c: c.name.encode(),
                )
            )
        else:
            out.append(p)
    return out


def load(sources, *, check_plugins: bool = True, append_output=()) -> Ruleset:
    """Load rules from ``sources``: paths, or (name, text) pairs, in order. Raises RulesLoadError.

    ``append_output`` (configuration.AppendOutput entries) adds extra output and fields at compile time.
    """
    col = Collector()
    diag = Diagnostics()
    reader = Reader(col, diag)
    ruleset = None
    for src in sources:
        if isinstance(src, tuple):
            name, text = src
        else:
            name = str(src)
            try:
                text = Path(src).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                err = RulesLoadError(name, "file", "LOAD_ERR_FILE_READ", str(exc))
                err.warnings = list(diag.warnings)
                raise err from None
        reader.read(name, text)
        ruleset = _compile(col, diag, append_output)
    if ruleset is None:
        ruleset = _compile(col, diag, append_output)
    if check_plugins:
        col.check_plugins()
    return ruleset


def _compile(col, diag, append_output):
    try:
        return compile_ruleset(col, diag.warnings, append_output)
    except RulesLoadError as exc:
        exc.warnings = list(diag.warnings)
        raise


__all__ = [
    "load",
    "Ruleset",
    "CompiledRule",
    "RulesLoadError",
    "LoadWarning",
    "rules_paths",
    "PRIORITIES",
    "exceptions_condition",
    "to_text",
    "ENGINE_VERSION",
    "PLUGINS",
    "SOURCE",
]
