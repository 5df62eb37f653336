"""audit-ingest's settings: stack.yml ``environment``, read once at start-up and validated (config.Startup)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .edgeguard import config
from .edgeguard.falco.configuration import ConfigError as EngineConfigError
from .edgeguard.falco.configuration import EngineConfig

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Settings:
    forward_function: str
    forward_async: bool
    forward_timeout: float
    forward_max_bytes: int
    max_body_bytes: int
    max_event_bytes: int
    dedup_max_events: int
    max_concurrent_batches: int
    batch_wait_seconds: float
    load_default_rules: bool
    rules_d: Path
    engine: EngineConfig


def _engine_config() -> EngineConfig:
    given = {"rule_matching": config.env_str("rule_matching"), "priority": config.env_str("min_priority")}
    try:
        return EngineConfig.from_mapping({k: v for k, v in given.items() if v is not None}, "environment")
    except EngineConfigError as exc:
        # "environment: priority: ..." names Falco's key; say which variable holds it.
        raise config.ConfigError(str(exc).replace("environment: priority", "environment variable min_priority")
                                 .replace("environment: rule_matching", "environment variable rule_matching")) from None


def load() -> Settings:
    return Settings(
        forward_function=config.env_str("forward_function", "alert-forwarder"),
        forward_async=config.env_bool("forward_async", True),
        forward_timeout=config.env_float("forward_timeout", 10.0),
        forward_max_bytes=config.env_int("forward_max_bytes", 250_000, minimum=1024),
        max_body_bytes=config.env_int("max_body_bytes", 12582912, minimum=1),
        max_event_bytes=config.env_int("max_event_bytes", 262144, minimum=1),
        dedup_max_events=config.env_int("dedup_max_events", 50000, minimum=0),
        max_concurrent_batches=config.env_int("max_concurrent_batches", 1, minimum=1),
        batch_wait_seconds=max(0.0, config.env_float("batch_wait_seconds", 5.0)),
        load_default_rules=config.env_bool("load_default_rules", True),
        rules_d=Path(config.env_str("rules_d", str(HERE / "rules.d"))),
        engine=_engine_config(),
    )
