"""The compiled ruleset: the bundled upstream rules, rules.d in byte order, then the extra-rules secret.

Recompiled only when a rules file or the secret changes: the signature of the sources (file
stats, the secret's hash) is cheap to check on every request, so a rotated secret applies without a restart.
"""
from __future__ import annotations

import gc
import hashlib
import threading
from pathlib import Path

from .edgeguard import config, log
from .edgeguard.falco import loader
from .edgeguard.falco.engine import DEFAULT_RULES, Engine
from .settings import Settings

EXTRA_RULES_SECRET = "audit-ingest-extra-rules"


class RulesUnavailable(Exception):
    """No ruleset can be served; ``reason`` says why (a rules error names the file and item)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def plan(load_default_rules: bool, rules_d: Path):
    """(signature, sources) of the rule sources: bundled set, rules.d in byte order, then the extra-rules secret."""
    files: list = []
    if load_default_rules:
        files.append(("bundled:" + DEFAULT_RULES.name, DEFAULT_RULES))
    if rules_d.is_dir():
        files.extend((f"rules.d/{p.name}", p) for p in loader.rules_paths([rules_d]))
    extra = config.read_secret_bytes(EXTRA_RULES_SECRET)
    if extra is not None and not extra.strip():
        extra = None  # an empty secret means "no extra rules"
    sig = []
    for name, path in files:
        try:
            st = path.stat()
            sig.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append((name, None, None))
    sig.append(hashlib.sha256(extra).hexdigest() if extra is not None else None)

    def sources():
        out = []
        for name, path in files:
            try:
                out.append((name, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise loader.RulesLoadError(name, "file", "LOAD_ERR_FILE_READ", str(exc)) from None
        if extra is not None:
            try:
                out.append((f"secret:{EXTRA_RULES_SECRET}", extra.decode("utf-8")))
            except UnicodeDecodeError:
                raise loader.RulesLoadError(f"secret:{EXTRA_RULES_SECRET}", "file", "LOAD_ERR_FILE_READ",
                                            "the extra rules secret is not UTF-8 text") from None
        return out
    return tuple(sig), sources


class RulesCache:
    """The engine for the current sources. A failure leaves no engine: serving the previous ruleset would
    silently ignore the operator's change. A rules error is remembered for its signature; any other error is
    retried on the next request, as it may be transient and no rules change would ever clear it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.lock = threading.Lock()
        self.engine: Engine | None = None
        self.error: str | None = None
        self.signature = None

    def get(self) -> Engine:
        sig, sources = plan(self.settings.load_default_rules, self.settings.rules_d)
        with self.lock:
            if sig == self.signature:
                if self.engine is None:
                    raise RulesUnavailable(f"rules failed to load: {self.error}")
                return self.engine
            try:
                ruleset = loader.load(sources())
                eng = Engine(ruleset, config=self.settings.engine)
            except (loader.RulesLoadError, ValueError) as exc:
                self._failed(sig, str(exc))
            except Exception as exc:  # noqa: BLE001 - whatever broke, the caller gets a reason, not stale rules
                self._failed(None, f"unexpected {type(exc).__name__}: {str(exc)[:300]}")
            for w in ruleset.warnings:
                log.warning("rules.warning", file=w.file, item=w.item, code=w.code, message=w.message)
            self.signature, self.engine, self.error = sig, eng, None
            gc.collect()
            gc.freeze()  # compiled rules live as long as the process: keep them out of future collections
            log.info("rules.loaded", rules=len(ruleset.rules), enabled=len(eng.rules),
                     files=[f["name"] for f in ruleset.files])
            return eng

    def _failed(self, sig, reason: str):
        """Drop the engine, record ``reason`` (for ``sig``, or for no signature so the next request retries)."""
        self.signature, self.engine, self.error = sig, None, reason
        log.error("rules.load_failed", reason=reason)
        raise RulesUnavailable(f"rules failed to load: {reason}")
