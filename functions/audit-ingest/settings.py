"""audit-ingest's settings: stack.yml ``environment``, read once at start-up and validated (config.Startup).

The engine's settings are falco.yaml's: ``rule_matching`` and ``min_priority`` (falco.yaml's ``priority``) as
plain variables, and ``falco_config``, a falco.yaml-like YAML document with the keys ENGINE_KEYS (rule
selection ``rules:``, ``append_output``, ``priority``, ``rule_matching``). A settings document in the extra-rules
secret (rules.py) is applied after these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from .edgeguard import config
from .edgeguard.falco.alert import default_hostname
from .edgeguard.falco.configuration import ConfigError as EngineConfigError
from .edgeguard.falco.configuration import EngineConfig

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Settings:
    forward_function: str
    forward_timeout: float
    forward_max_bytes: int
    forward_max_alerts: int
    max_body_bytes: int
    max_event_bytes: int
    dedup_max_events: int
    max_concurrent_batches: int
    max_batches_in_memory: int
    batch_wait_seconds: float
    load_default_rules: bool
    rules_d: Path
    engine: EngineConfig
    hostname: str
    # Seconds a batch may take before it must answer. Kept below the watchdog's exec_timeout (which this
    # code must not read: it is the watchdog's variable), so the function's own answer beats the 504.
    answer_within: float


ENGINE_KEYS = ("rules", "append_output", "priority", "rule_matching")
# The API server's truncating backend keeps a batch's events within --audit-webhook-truncate-max-batch-size;
# the EventList around them and the commas between them add "several hundreds of bytes" (its flag help).
BATCH_OVERHEAD = 64 * 1024


def engine_document(doc, origin: str) -> EngineConfig:
    """A falco.yaml-like mapping of ENGINE_KEYS as the engine's settings; EngineConfigError names what is wrong.

    Unlike a whole falco.yaml, any other key is an error: here a typo (``append_ouput``) would otherwise be
    silently ignored, and a rule written as a mapping instead of a list item would vanish.
    """
    if not isinstance(doc, Mapping):
        raise EngineConfigError(f"{origin}: a falco.yaml-like mapping ({', '.join(ENGINE_KEYS)}) is required")
    unknown = sorted(str(k) for k in doc if k not in ENGINE_KEYS)
    if unknown:
        raise EngineConfigError(
            f"{origin}: unknown key '{unknown[0]}': the settings take falco.yaml's "
            f"{', '.join(ENGINE_KEYS)} (a rules file is a YAML list: '- rule: ...')"
        )
    return EngineConfig.from_mapping(doc, origin)


def _engine_config() -> EngineConfig:
    given = {"rule_matching": config.env_str("rule_matching"), "priority": config.env_str("min_priority")}
    try:
        cfg = EngineConfig.from_mapping({k: v for k, v in given.items() if v is not None}, "environment")
    except EngineConfigError as exc:
        # "environment: priority: ..." names Falco's key; say which variable holds it.
        raise config.ConfigError(
            str(exc)
            .replace("environment: priority", "environment variable min_priority")
            .replace("environment: rule_matching", "environment variable rule_matching")
        ) from None
    text = config.env_str("falco_config")
    if text is None or not text.strip():
        return cfg
    origin = "environment variable falco_config"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise config.ConfigError(f"{origin}: not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return cfg.merged(engine_document(doc, origin))
    except EngineConfigError as exc:
        raise config.ConfigError(str(exc)) from None


def _no_async_hand_off() -> None:
    if config.env_bool("forward_async", False):
        raise config.ConfigError(
            "environment variable forward_async=true is no longer supported: OpenFaaS CE's queue logs each call's "
            "headers (the bearer token) and never retries, so alerts went missing; audit-ingest hands off "
            "synchronously. Remove forward_async from stack.yml"
        )


def _check_budget(s: Settings) -> Settings:
    need = 2 * s.batch_wait_seconds + s.forward_timeout
    if need > s.answer_within:
        raise config.ConfigError(
            f"answer_within_seconds={s.answer_within:g} is too short: a batch may wait batch_wait_seconds="
            f"{s.batch_wait_seconds:g} for its turn and as long for another request's hand-off, then "
            f"forward_timeout={s.forward_timeout:g} for alert-forwarder; raise it (and exec_timeout above it, "
            "both below the API server's 30s webhook timeout) or lower those"
        )
    return s


def load() -> Settings:
    _no_async_hand_off()
    return _check_budget(
        Settings(
            forward_function=config.env_str("forward_function", "alert-forwarder"),
            forward_timeout=config.env_float("forward_timeout", 10.0),
            # alert-forwarder's own limits (its max_body_bytes and max_batch): a bigger part would get a 413
            forward_max_bytes=config.env_int("forward_max_bytes", 4 * 1024 * 1024, minimum=1024),
            forward_max_alerts=config.env_int("forward_max_alerts", 10000, minimum=1),
            max_body_bytes=config.env_int("max_body_bytes", 10 * 1024 * 1024 + BATCH_OVERHEAD, minimum=1),
            max_event_bytes=config.env_int("max_event_bytes", 262144, minimum=1),
            dedup_max_events=config.env_int("dedup_max_events", 50000, minimum=0),
            max_concurrent_batches=config.env_int("max_concurrent_batches", 1, minimum=1),
            max_batches_in_memory=config.env_int("max_batches_in_memory", 2, minimum=1),
            batch_wait_seconds=max(0.0, config.env_float("batch_wait_seconds", 5.0)),
            load_default_rules=config.env_bool("load_default_rules", True),
            rules_d=Path(config.env_str("rules_d", str(HERE / "rules.d"))),
            engine=_engine_config(),
            hostname=default_hostname(),
            answer_within=config.env_float("answer_within_seconds", 24.0),
        )
    )
