"""Which rules files audit-ingest loads, in which order: the bundled upstream ruleset, then ``rules.d``, then
the extra-rules file. ``edgeguard-rules`` loads the same, so a file checked offline behaves as in the function.

Like ``falco -r a -r b``, a later file can append to or override anything in an earlier one; a directory
stands for its ``*.yaml``/``*.yml`` files in byte order of their names.
"""

from __future__ import annotations

from pathlib import Path

from .loader import RulesLoadError, rules_paths

BUNDLED = Path(__file__).with_name("rules") / "k8s_audit_rules.yaml"
# The function's own rules.d, when this package runs from a checkout (the function's build context has it too).
FUNCTION_RULES_D = Path(__file__).resolve().parents[2] / "functions" / "audit-ingest" / "rules.d"


def default_files(rules_d: Path | None = FUNCTION_RULES_D) -> list[Path]:
    out = [BUNDLED]
    if rules_d is not None and Path(rules_d).is_dir():
        out.extend(rules_paths([rules_d]))
    return out


def plan(extra=(), *, defaults: bool = True, rules_d: Path | None = FUNCTION_RULES_D) -> list[Path]:
    """The files to load: the defaults (unless ``defaults`` is false), then ``extra`` (files or directories).

    A given file that is already one of the defaults (``validate functions/audit-ingest/rules.d/``) is not
    loaded twice: appends are not idempotent.
    """
    files = default_files(rules_d) if defaults else []
    seen = {p.resolve() for p in files}
    for p in rules_paths(extra):
        if p.resolve() not in seen:
            seen.add(p.resolve())
            files.append(p)
    return files


def read(paths) -> list[tuple[str, str]]:
    """(name, text) of each file; an unreadable one raises RulesLoadError (LOAD_ERR_FILE_READ) naming it."""
    out = []
    for p in paths:
        try:
            out.append((str(p), Path(p).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesLoadError(str(p), "file", "LOAD_ERR_FILE_READ", str(exc)) from None
    return out
