"""gitleaks' default rules (shipped as data in data/gitleaks.toml) applied with Python ``re``.

gitleaks writes Go RE2 patterns; two constructs need translating for Python:
``\\z`` and a ``(?i)`` flag in the middle of a pattern (Python only accepts global
flags at the start, so the flag becomes a scoped group up to the end of the
enclosing group, reopened after each ``|`` because RE2 keeps the flag across
alternatives).
"""

from __future__ import annotations

import math
import re
import tomllib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

RULES_FILE = Path(__file__).with_name("data") / "gitleaks.toml"
_NEWLINE = re.compile("\n")


def translate(rx: str) -> str:
    rx = rx.replace("\\z", "\\Z")
    out: list[str] = []
    depth = 0
    # stack of depths at which a scoped (?i: is open
    open_at: list[int] = []
    i, n = 0, len(rx)
    in_class = False
    while i < n:
        c = rx[i]
        if c == "\\":
            out.append(rx[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            # a ']' right after '[' or '[^' is literal
            if rx[i + 1 : i + 2] == "^":
                out.append("^")
                i += 1
            if rx[i + 1 : i + 2] == "]":
                out.append("]")
                i += 1
            i += 1
            continue
        if rx.startswith("(?i)", i):
            if i == 0:
                out.append("(?i)")
            elif not (out and out[0] == "(?i)" and depth == 0 and not open_at):
                out.append("(?i:")
                open_at.append(depth)
            i += 4
            continue
        if c == "(":
            depth += 1
            out.append(c)
            i += 1
            continue
        if c == ")":
            while open_at and open_at[-1] == depth:
                out.append(")")
                open_at.pop()
            depth -= 1
            out.append(c)
            i += 1
            continue
        if c == "|" and open_at and open_at[-1] == depth:
            out.append(")|(?i:")
            i += 1
            continue
        out.append(c)
        i += 1
    while open_at:
        out.append(")")
        open_at.pop()
    return "".join(out)


def shannon(s: str) -> float:
    if not s:
        return 0.0
    counts = Counter(s)
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


@dataclass
class Allowlist:
    target: str = "secret"  # secret | match | line
    regexes: list = field(default_factory=list)
    stopwords: tuple = ()
    paths: list = field(default_factory=list)
    condition_and: bool = False

    def __post_init__(self):
        # one alternation instead of ~1,400 substring tests per candidate (generic-api-key)
        self._stop = re.compile("|".join(map(re.escape, self.stopwords))) if self.stopwords else None

    def allows(self, secret: str, match: str, line: str, path: str) -> bool:
        checks = []
        if self.regexes:
            subject = {"match": match, "line": line}.get(self.target, secret)
            checks.append(any(r.search(subject) for r in self.regexes))
        if self._stop is not None:  # compiled from the stopwords when there are any
            checks.append(self._stop.search(secret.lower()) is not None)
        if self.paths:
            checks.append(any(p.search(path) for p in self.paths))
        if not checks:
            return False
        return all(checks) if self.condition_and else any(checks)


@dataclass
class Rule:
    id: str
    regex: re.Pattern | None
    keywords: tuple
    entropy: float | None
    secret_group: int | None
    path: re.Pattern | None
    allowlists: list
    multiline: bool = False


@dataclass
class Hit:
    rule_id: str
    secret: str
    start: int
    end: int


def _compile(rx: str) -> re.Pattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "possible nested set" FutureWarnings from RE2-style classes
        return re.compile(translate(rx))


def _allowlist(spec: dict) -> Allowlist:
    return Allowlist(
        target=spec.get("regexTarget", "secret"),
        regexes=[_compile(r) for r in spec.get("regexes", [])],
        stopwords=tuple(w.lower() for w in spec.get("stopwords", [])),
        paths=[_compile(p) for p in spec.get("paths", [])],
        condition_and=spec.get("condition", "OR").upper() == "AND",
    )


class Ruleset:
    def __init__(self, doc: dict):
        glob = doc.get("allowlist") or {}
        # Global path allowlists describe repository files (lock files, vendored code) and
        # do not apply to ConfigMap keys, so only the value-shaped parts are kept.
        self.global_allow = _allowlist({k: v for k, v in glob.items() if k != "paths"})
        self.rules: list[Rule] = []
        self.path_rules: list[Rule] = []
        for spec in doc.get("rules", []):
            rule = Rule(
                id=spec["id"],
                regex=_compile(spec["regex"]) if spec.get("regex") else None,
                keywords=tuple(k.lower() for k in spec.get("keywords", [])),
                entropy=spec.get("entropy"),
                secret_group=spec.get("secretGroup"),
                path=_compile(spec["path"]) if spec.get("path") else None,
                allowlists=[_allowlist(a) for a in spec.get("allowlists", [])],
                # patterns that can span lines must see the whole value
                multiline=any(t in (spec.get("regex") or "") for t in ("(?s", "\\n", "\\r", "[\\s\\S")),
            )
            (self.rules if rule.regex is not None else self.path_rules).append(rule)
        # every distinct keyword once per scan, instead of once per rule that lists it
        self._keywords = sorted({k for r in self.rules for k in r.keywords})

    def scan(self, text: str, path: str = "") -> list[Hit]:
        """Hits of every rule. Single-line rules run only on windows around their keywords.

        Python's backtracking engine is not RE2: patterns like ``[\\w.-]{0,50}?(?i:[\\w.-]{0,50}?okta...``
        cost O(n * 2500) over a whole 1 MiB value, but nearly nothing on the few lines that hold
        the keyword, which gitleaks requires anyway.
        """
        low = text.lower()
        present = {k for k in self._keywords if k in low}
        hits: list[Hit] = []
        line_starts = None
        for rule in self.rules:
            regex = rule.regex
            assert regex is not None  # rules without one are path_rules
            if rule.keywords and present.isdisjoint(rule.keywords):
                continue
            if rule.path is not None and not rule.path.search(path):
                continue
            if rule.multiline or not rule.keywords:
                windows = [(0, len(text))]
            else:
                if line_starts is None:
                    line_starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]
                windows = _keyword_windows(low, rule.keywords, line_starts, len(text))
            seen = set()
            for a, b in windows:
                for m in regex.finditer(text, a, b):
                    secret, (s, e) = self._secret(rule, m)
                    if not secret or (s, e) in seen:
                        continue
                    seen.add((s, e))
                    if rule.entropy is not None and shannon(secret) <= rule.entropy:
                        continue
                    line = _line_of(text, m.start(), m.end())
                    if self.global_allow.allows(secret, m.group(0), line, path):
                        continue
                    if any(al.allows(secret, m.group(0), line, path) for al in rule.allowlists):
                        continue
                    hits.append(Hit(rule.id, secret, s, e))
        return hits

    def path_hits(self, path: str) -> list[str]:
        return [r.id for r in self.path_rules if r.path is not None and r.path.search(path)]

    @staticmethod
    def _secret(rule: Rule, m: re.Match) -> tuple[str, tuple[int, int]]:
        if rule.secret_group is not None and m.lastindex and rule.secret_group <= m.lastindex:
            g = rule.secret_group
            return m.group(g) or "", m.span(g)
        if m.lastindex:
            for g in range(1, m.lastindex + 1):
                if m.group(g):
                    return m.group(g), m.span(g)
        return m.group(0), m.span(0)


def _keyword_windows(low: str, keywords: tuple, line_starts: list[int], n: int) -> list[tuple[int, int]]:
    """Merged spans of the lines holding a keyword; very long lines are cut around the keyword."""
    import bisect

    spans = []
    for k in keywords:
        i = low.find(k)
        while i >= 0:
            li = bisect.bisect_right(line_starts, i) - 1
            a = line_starts[li]
            b = line_starts[li + 1] - 1 if li + 1 < len(line_starts) else n
            if b - a > 4096:  # a minified file on one line: a window is enough for any rule's match
                a, b = max(a, i - 512), min(b, i + 2048)
            spans.append((a, b))
            i = low.find(k, max(i + 1, b) if b - a <= 4096 else i + 1)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _line_of(text: str, start: int, end: int) -> str:
    a = text.rfind("\n", 0, start) + 1
    b = text.find("\n", end)
    return text[a : b if b >= 0 else len(text)]


_default: Ruleset | None = None


def default_ruleset() -> Ruleset:
    global _default
    if _default is None:
        with RULES_FILE.open("rb") as fh:
            _default = Ruleset(tomllib.load(fh))
    return _default
