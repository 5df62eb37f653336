"""No secret value in any platform log: the check run after every demo flow and every served-function test.

The logs a cluster operator (or anyone with ``pods/log`` in ``openfaas``/``openfaas-fn``) can read are the
gateway's access log (it writes every URL, query string included), the queue-worker's (it writes every
queued message with its headers), and each function's watchdog log (every request URI, and the function's
own output). A token in any of them lets its reader forge calls, so the check looks for every secret value
the run mounted, as written and in the forms a log could carry it: percent-encoded (a URL) and base64 (the
queue-worker writes bodies base64-encoded inside its JSON).

A finding names the secret, the file and the line, never the value.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import yaml

# Shorter values would match by chance (and no secret the bundle creates is that short).
MIN_LEN = 12
# In a structured secret (a kubeconfig, the destinations document), the leaves whose key says they are secret.
_SENSITIVE_KEY = re.compile(r"token|password|passwd|secret|key|hmac|credential|url|authorization", re.I)


@dataclass(frozen=True)
class Leak:
    secret: str
    file: str
    line: int
    form: str  # "as written", "percent-encoded" or "base64"

    def __str__(self) -> str:
        return f"secret {self.secret} ({self.form}) in {self.file} line {self.line}"


def _leaves(doc, sensitive: bool = False):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, sensitive or bool(_SENSITIVE_KEY.search(str(k))))
    elif isinstance(doc, list):
        for v in doc:
            yield from _leaves(v, sensitive)
    elif isinstance(doc, str) and sensitive:
        yield doc


def values_of(text: str) -> list[str]:
    """The values worth looking for in one secret's text: itself, or a structured document's secret leaves."""
    text = text.strip()
    if not text:
        return []
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    if isinstance(doc, (dict, list)):
        found = [v.strip() for v in _leaves(doc) if len(v.strip()) >= MIN_LEN]
        for v in list(found):
            if v.startswith(("LS0t", "-----")):  # a PEM (or its base64): look for a line of its key material
                pem = base64.b64decode(v).decode("ascii", "replace") if v.startswith("LS0t") else v
                found += [ln for ln in pem.splitlines() if len(ln) >= 40 and not ln.startswith("-----")][:1]
        return found
    return [text] if len(text) >= MIN_LEN else []


def secrets_in(*dirs: Path) -> dict[str, list[str]]:
    """Secret name -> values, from folders of one file per secret (local/gateway.py's store, a test's secrets)."""
    out: dict[str, list[str]] = {}
    for d in dirs:
        if d is None or not Path(d).is_dir():
            continue
        for p in sorted(Path(d).iterdir()):
            if p.is_file():
                vals = values_of(p.read_bytes().decode("utf-8", "replace"))
                if vals:
                    out.setdefault(p.name, []).extend(vals)
    return out


def forms(value: str) -> list[tuple[str, str]]:
    """(form, text) a log line could carry ``value`` in."""
    out = [("as written", value)]
    quoted = quote(value, safe="")
    if quoted != value:
        out.append(("percent-encoded", quoted))
    raw = value.encode("utf-8")
    for shift in range(3):  # base64 of a longer stream: the characters that only the value's bits decide
        enc = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        piece = enc[-(-8 * shift // 6) : (8 * (shift + len(raw))) // 6]
        if len(piece) >= MIN_LEN:
            out.append(("base64", piece))
    return out


def scan(texts: dict[str, str], secrets: dict[str, list[str]]) -> list[Leak]:
    """Every place a value of ``secrets`` occurs in ``texts`` (name -> log text)."""
    needles = [(name, form, text) for name, values in secrets.items() for v in values for form, text in forms(v)]
    leaks = []
    for fname, text in texts.items():
        if not text:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for name, form, needle in needles:
                if needle in line:
                    leaks.append(Leak(name, fname, lineno, form))
    return leaks


def scan_files(paths, secrets: dict[str, list[str]], offsets: dict | None = None) -> list[Leak]:
    """``scan`` over log files; with ``offsets`` (path -> bytes already checked) only what was written since."""
    texts = {}
    for p in paths:
        p = Path(p)
        try:
            with open(p, "rb") as f:
                start = (offsets or {}).get(str(p), 0)
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            continue
        if offsets is not None:
            offsets[str(p)] = start + len(data)
        texts[p.name] = data.decode("utf-8", "replace")
    return scan(texts, secrets)


class LogWatch:
    """Logs and secrets of one run, checked incrementally: each ``check()`` reads what was written since the last."""

    def __init__(self, logs, secret_dirs):
        self._logs = logs  # a folder of *.log files, or a list of files
        self._secret_dirs = list(secret_dirs)
        self._offsets: dict = {}

    def files(self) -> list[Path]:
        if isinstance(self._logs, (str, Path)):
            return sorted(Path(self._logs).glob("*.log")) if Path(self._logs).is_dir() else []
        return [Path(p) for p in self._logs]

    def check(self) -> list[Leak]:
        return scan_files(self.files(), secrets_in(*self._secret_dirs), self._offsets)
