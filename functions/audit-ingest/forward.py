"""The one call audit-ingest makes: a part of alerts to alert-forwarder, synchronously through the gateway.

Synchronous (``/function/``): alert-forwarder answers 2xx once the alerts are in its durable spool, so
audit-ingest's 2xx means the same. Never ``/async-function/``: OpenFaaS CE's queue-worker logs each
message's headers (the bearer token), never retries, and runs one call at a time.
"""

from __future__ import annotations

from collections.abc import Callable

from .edgeguard import config, gateway
from .handoff import HandoffError, HandoffNotConfigured

TOKEN_SECRET = "alert-forwarder-token"


class Forwarder:
    def __init__(self, function: str, timeout: float, on_result: Callable[[str], None] = lambda status: None):
        self.function = function
        self.on_result = on_result  # "ok", "error" or "unconfigured", once per call
        self.route = gateway.Gateway(function, async_=False, token_secret=TOKEN_SECRET, timeout=timeout)

    def send(self, body: str) -> None:
        """Raises HandoffError / HandoffNotConfigured naming what went wrong, never a value."""
        name, status = self.function, "error"
        try:
            try:
                res = self.route.invoke(body)
            except config.ConfigError as exc:
                # Not a transient failure: say what to fix instead of a bare 502 the API server retries blindly.
                status = "unconfigured"
                raise HandoffNotConfigured(f"alert hand-off to {name} is not configured: {exc}") from None
            except gateway.TransportError as exc:  # "timeout: ..." or "connect: <error type>", never a value
                raise HandoffError(f"alert hand-off to {name} failed: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - any transport failure means "not handed off"
                raise HandoffError(f"alert hand-off to {name} failed: {type(exc).__name__}") from None
            if not 200 <= res.status < 300:
                raise HandoffError(f"alert hand-off to {name} failed: HTTP {res.status}", status=res.status)
            status = "ok"
        finally:
            self.on_result(status)
