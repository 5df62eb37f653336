"""The compiled ruleset: the bundled upstream rules, rules.d in byte order, then the extra-rules secret.

The secret is a YAML stream, as a rules file is. Its list documents are rules; a mapping document is
engine settings with falco.yaml's keys (settings.ENGINE_KEYS: rule selection, append_output, priority,
rule_matching), applied after the environment's, so an operator can change the selection without a
redeploy. Recompiled only when a rules file or the secret changes: the signature of the sources (file
stats, the secret's hash) is cheap to check on every request, so a rotated secret applies without a restart.
"""

from __future__ import annotations

import gc
import hashlib
import threading
from pathlib import Path

import yaml

from .edgeguard import config, log
from .edgeguard.falco import loader
from .edgeguard.falco.configuration import ConfigError as EngineConfigError
from .edgeguard.falco.configuration import EngineConfig
from .edgeguard.falco.engine import DEFAULT_RULES, Engine, load_engine
from .settings import Settings, engine_document

EXTRA_RULES_SECRET = "audit-ingest-extra-rules"
SECRET_ORIGIN = f"secret:{EXTRA_RULES_SECRET}"


class RulesUnavailable(Exception):
    """No ruleset can be served; ``reason`` says why (a rules error names the file and item)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def split_secret(text: str) -> tuple[EngineConfig, str | None]:
    """(the settings of the secret's mapping documents, the rules text or None if it holds no rules).

    The settings documents are blanked out of the rules text character for character, so the loader's
    line numbers still point into the secret. Text that is not valid YAML is all rules: the loader
    reports the parse error the way Falco does.
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return EngineConfig(), text
    cfg, chars, has_rules = EngineConfig(), list(text), False
    for n in nodes:
        if isinstance(n, yaml.MappingNode):
            doc = yaml.SafeLoader(text[n.start_mark.index : n.end_mark.index]).get_single_data()
            where = SECRET_ORIGIN + (f":{n.start_mark.line + 1}" if n.start_mark.line else "")
            cfg = cfg.merged(engine_document(doc, where))
            for i in range(n.start_mark.index, n.end_mark.index):
                if chars[i] not in "\r\n":
                    chars[i] = " "
        elif not (isinstance(n, yaml.ScalarNode) and n.tag == "tag:yaml.org,2002:null"):
            has_rules = True  # a list, or a scalar the loader refuses with Falco's message
    return cfg, ("".join(chars) if has_rules else None)


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
    sig: list[tuple[str, int | None, int | None] | str | None] = []
    for name, path in files:
        try:
            st = path.stat()
            sig.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append((name, None, None))
    sig.append(hashlib.sha256(extra).hexdigest() if extra is not None else None)

    def sources() -> tuple[list, EngineConfig]:
        out = []
        for name, path in files:
            try:
                out.append((name, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise loader.RulesLoadError(name, "file", "LOAD_ERR_FILE_READ", str(exc)) from None
        secret_cfg = EngineConfig()
        if extra is not None:
            try:
                text = extra.decode("utf-8")
            except UnicodeDecodeError:
                raise loader.RulesLoadError(
                    SECRET_ORIGIN, "file", "LOAD_ERR_FILE_READ", "the extra rules secret is not UTF-8 text"
                ) from None
            secret_cfg, rules_text = split_secret(text)
            if rules_text is not None:
                out.append((SECRET_ORIGIN, rules_text))
        return out, secret_cfg

    return tuple(sig), sources


class RulesCache:
    """The engine for the current sources. A failure leaves no engine: serving the previous ruleset would
    silently ignore the operator's change. A rules or settings error is remembered for its signature; any
    other error is retried on the next request, as it may be transient and no rules change would clear it."""

    def __init__(self, settings: Settings, on_load=lambda result: None):
        self.settings = settings
        self.on_load = on_load  # called with "ok" or "error" after each compilation
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
                files, secret_cfg = sources()
                eng = load_engine(files, self.settings.engine.merged(secret_cfg), hostname=self.settings.hostname)
            except loader.RulesLoadError as exc:
                _log_warnings(exc.warnings)  # Falco reports the warnings given before the error with it
                self._failed(sig, str(exc))
            except (EngineConfigError, ValueError) as exc:
                self._failed(sig, str(exc))
            except Exception as exc:  # noqa: BLE001 - whatever broke, the caller gets a reason, not stale rules
                self._failed(None, f"unexpected {type(exc).__name__}: {str(exc)[:300]}")
            _log_warnings(eng.ruleset.warnings)
            self.signature, self.engine, self.error = sig, eng, None
            self.on_load("ok")
            gc.collect()
            gc.freeze()  # compiled rules live as long as the process: keep them out of future collections
            c = eng.config
            log.info(
                "rules.loaded",
                rules=len(eng.ruleset.rules),
                enabled=len(eng.rules),
                files=[f["name"] for f in eng.ruleset.files],
                rule_matching=c.rule_matching,
                priority=c.priority,
                selection=len(c.rules),
                append_output=len(c.append_output),
            )
            return eng

    def _failed(self, sig, reason: str):
        """Drop the engine, record ``reason`` (for ``sig``, or for no signature so the next request retries)."""
        self.signature, self.engine, self.error = sig, None, reason
        self.on_load("error")
        log.error("rules.load_failed", reason=reason)
        raise RulesUnavailable(f"rules failed to load: {reason}")


def _log_warnings(warnings) -> None:
    for w in warnings:
        log.warning("rules.warning", file=w.file, item=w.item, code=w.code, message=w.message)
