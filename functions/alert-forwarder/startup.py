"""alert-forwarder's start-up: settings, routes, destination secrets and its own Kubernetes credential, read
once and validated (config.Startup: a bad value is a 503 naming it), and the watcher that applies later edits of
the two secrets. Moved out of the handler, which parses, calls and answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import ui
from .edgeguard import auth, config, log
from .edgeguard.routing import RoutesError, load_routes_text, parse_destination_secrets, unknown_secret_entries
from .forwarder import Forwarder, Settings
from .handover import Handover
from .kubesecret import Kubeconfig, KubeError, SecretClient
from .nodetokens import NodeTokens
from .spool import SpoolBusy

TOKEN_SECRET = "alert-forwarder-token"
DESTINATIONS_SECRET = "alert-forwarder-destinations"
HERE = Path(__file__).resolve().parent


def _settings() -> Settings:
    ack = (config.env_str("ack_mode", "durable") or "durable").lower()
    if ack not in ("durable", "fast"):
        raise config.ConfigError(f"environment variable ack_mode={ack!r} must be 'durable' or 'fast'")
    return Settings(
        spool_dir=config.env_str("spool_dir", "/tmp/edgeguard-spool"),
        spool_max_entries=config.env_int("spool_max_entries", 10000, minimum=1),
        spool_max_age=config.env_float("spool_max_age_seconds", 86400.0),
        spool_fsync=config.env_bool("spool_fsync", True),
        ack_mode=ack,
        queue_max=config.env_int("queue_max", 1000, minimum=1),
        tick_interval=max(0.05, config.env_float("retry_tick_seconds", 1.0)),
        flush_budget=config.env_float("flush_budget_seconds", 20.0),
        spool_backoff_max=max(0.1, config.env_float("spool_retry_max_seconds", 60.0)),
        history_max=config.env_int("history_max", 1000, minimum=1),
    )


def _parse_destination_secrets(raw: str | None) -> dict:
    secrets = parse_destination_secrets(raw, DESTINATIONS_SECRET)
    for entry in secrets.values():
        for key in ("url", "token", "hmac_key", "client_key"):
            if entry.get(key):
                log.register_secret(entry[key])
        for v in (entry.get("headers") or {}).values():
            log.register_secret(v)
    return secrets


def _routes_text() -> tuple[str, str]:
    """(where the routes come from, their text): the routes secret when mounted and not empty, else the file."""
    routes_secret = config.env_str("routes_secret", "alert-forwarder-routes")
    data = config.read_secret_bytes(routes_secret) if routes_secret else None
    if data is not None and data.strip():
        return f"secret {routes_secret}", data.decode("utf-8")
    # An empty secret (created as a placeholder) means "use the shipped routes".
    path = Path(config.env_str("routes_file", str(HERE / "routes.yaml")))
    source = str(path.name if path.parent == HERE else path)
    try:
        return source, path.read_text(encoding="utf-8")
    except OSError as exc:
        raise config.ConfigError(f"cannot read routes file {path}: {exc.strerror}") from None


def _routes_text_or_last() -> tuple[str, str]:
    try:
        return _routes_text()
    except (config.ConfigError, UnicodeDecodeError) as exc:
        return "unreadable", str(exc)  # parsing this fails and is logged as a refused reload


class ConfigWatcher:
    """Applies edits of the mounted routes and destinations secrets; refuses invalid ones, keeps the last good.

    OpenFaaS updates mounted secrets in place: watching them lets an operator switch on the action centre (or
    rotate a webhook URL) without restarting the function. The forwarder calls ``check`` on every tick.
    """

    def __init__(self, routes_raw: str, secrets_raw: str | None):
        self.routes_raw = routes_raw
        self.secrets_raw = secrets_raw

    def check(self, fwd: Forwarder) -> None:
        table, secrets, source, what = fwd.table, fwd.secrets, None, []
        where, raw = _routes_text_or_last()
        if raw != self.routes_raw:
            self.routes_raw = raw
            try:
                table, source = load_routes_text(raw, where), where
                what.append("routes")
            except ValueError as exc:
                log.error("config.reload_failed", what="routes", error=str(exc))
        secrets_raw = config.read_secret(DESTINATIONS_SECRET)
        if secrets_raw != self.secrets_raw:
            self.secrets_raw = secrets_raw
            try:
                secrets = _parse_destination_secrets(secrets_raw)
                what.append("destinations")
            except ValueError as exc:
                # The message names the place, never a value.
                log.error("config.reload_failed", what="destinations", error=str(exc))
        if not what:
            return
        try:
            changed = fwd.reconfigure(table, secrets, source=source)
        except ValueError as exc:
            # e.g. a plain http:// URL without insecure_http: refused before anything changed.
            log.error("config.reload_failed", what=what, error=str(exc))
            return
        log.info(
            "config.reloaded",
            what=what,
            changed=changed,
            enabled=sorted(n for n, d in fwd.destinations.items() if d.enabled),
        )


def _kubeconfig() -> Kubeconfig | None:
    """alert-forwarder's own least-privilege credential (deploy/rbac/alert-forwarder.yaml), when mounted."""
    name = config.env_str("kubeconfig_secret", "alert-forwarder-kubeconfig")
    text = config.read_secret(name)
    if not text:
        return None
    try:
        kc = Kubeconfig(text)
    except KubeError as exc:
        raise config.ConfigError(f"OpenFaaS secret '{name}': {exc}") from None
    if kc.token:
        log.register_secret(kc.token)
    return kc


def _node_tokens(kc: Kubeconfig | None) -> NodeTokens | None:
    if kc is None or not config.env_bool("node_tokens", True):
        return None
    client = SecretClient(
        kc,
        config.env_str("node_tokens_secret", "edgeguard-node-alert-tokens"),
        namespace=config.env_str("node_tokens_namespace", "edgeguard-enroll"),
    )
    ttl = config.parse_duration(config.env_str("node_tokens_ttl", "30s"), "node_tokens_ttl")
    return NodeTokens(client, ttl=ttl, log_warning=log.warning).start()


def build_forwarder(**kwargs) -> Forwarder:
    """Load routes (secret override, else the shipped file), destination secrets and settings.

    Any problem raises ConfigError/RoutesError naming the place (load() turns it into the 503 of every request).
    Later edits of either secret are applied live when valid (ConfigWatcher).
    """
    source, text = _routes_text()
    table = load_routes_text(text, source)
    raw = config.read_secret(DESTINATIONS_SECRET)
    secrets = _parse_destination_secrets(raw)
    for name in unknown_secret_entries(table, secrets):
        log.warning("config.unused_destination_secret", destination=name)
    fwd = Forwarder(
        table,
        secrets,
        kwargs.pop("settings", None) or _settings(),
        source=source,
        on_tick=ConfigWatcher(text, raw).check,
        **kwargs,
    )
    log.info(
        "config.loaded",
        routes=source,
        routes_count=len(table.all_routes()),
        enabled=sorted(n for n, d in fwd.destinations.items() if d.enabled),
        disabled=sorted(n for n, d in fwd.destinations.items() if not d.enabled),
        spool_depth=fwd.spool.depth(),
    )
    return fwd


@dataclass
class Running:
    """What a started alert-forwarder holds."""

    forwarder: Forwarder
    node_tokens: NodeTokens | None
    sessions: ui.Sessions
    shutdown: tuple[float, float]  # (drain, deadline) seconds after SIGTERM
    max_body: int
    max_batch: int
    cron_flush: bool


def load() -> Running:
    """Everything alert-forwarder needs, or ConfigError naming the setting (routes and spool problems included)."""
    try:
        max_body = config.env_int("max_body_bytes", 4 * 1024 * 1024, minimum=1024)
        max_batch = config.env_int("max_batch", 10000, minimum=1)
        cron_flush = config.env_bool("cron_flush", False)
        config.token_grace_seconds()  # validated now, not at the first rotation
        sessions = ui.Sessions(config.parse_duration(config.env_str("ui_session_ttl", "8h"), "ui_session_ttl"))
        # Both inside the watchdog's healthcheck_interval (stack.yml: 8s), after which it exits and the pod ends.
        shutdown = (
            config.parse_duration(config.env_str("shutdown_drain", "2s"), "shutdown_drain"),
            config.parse_duration(config.env_str("shutdown_deadline", "7s"), "shutdown_deadline"),
        )
        # Seen once at start-up, so that a rotation of the secret under the running process is noticed as one
        # (and its previous value gets the grace) even before the first request.
        config.read_secret(TOKEN_SECRET)
        config.read_secret(auth.METRICS_SECRET)
        kube = _kubeconfig()
        node_tokens = _node_tokens(kube)
        fwd = build_forwarder()
    except (RoutesError, SpoolBusy) as exc:
        raise config.ConfigError(str(exc)) from None
    if node_tokens is not None:
        fwd.on_close(node_tokens.stop)
    if kube is not None and config.env_bool("handover", True):
        fwd.attach_handover(
            Handover(
                SecretClient(
                    kube,
                    config.env_str("handover_secret", "alert-forwarder-spool-handover"),
                    namespace=config.env_str("handover_namespace"),
                ),
                fwd,
                log=log.info,
            ).start()
        )
    else:
        log.warning(
            "handover.off",
            why="no alert-forwarder-kubeconfig secret (or handover=false): undelivered alerts "
            "survive container restarts in /tmp, not the deletion of this pod",
        )
    # Rotation grace (edgeguard/auth.py): how often the previous token was used, and how long it still works.
    fwd.metrics.add_collector(lambda m: auth.rotation_metrics(m, (TOKEN_SECRET, auth.METRICS_SECRET)))
    return Running(fwd, node_tokens, sessions, shutdown, max_body, max_batch, cron_flush)
