"""Calling another function through the OpenFaaS gateway: audit-ingest's hand-off, alert-forwarder's openfaas
destinations.

One client for both, on edgeguard's standard-library HTTP client (``httpclient``): kept-alive connections, the
caller's timeout on connect and read, no proxies from the environment, and no call without the callee's token when
its secret is missing. ``python -c 'from bench.gateway import compare_clients; compare_clients()'`` measured it
against ``requests`` for this job (docs/alert-forwarder.md, "HTTP client").
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass

from . import config, httpclient
from .httpclient import TransportError

__all__ = ["Gateway", "Invocation", "TransportError", "invoke"]

USER_AGENT = "edgeguard/0.1"


@dataclass
class Invocation:
    status: int
    body: bytes  # at most httpclient.MAX_RESPONSE_BYTES of it
    headers: http.client.HTTPMessage  # case-insensitive
    call_id: str | None


class Gateway:
    """One function route (``/function/<name>`` or ``/async-function/<name>``), safe to share between threads."""

    def __init__(
        self,
        function: str,
        *,
        async_: bool = True,
        path: str = "",
        timeout: float = 10.0,
        token: str | None = None,
        token_secret: str | None = None,
        callback_url: str | None = None,
        user_agent: str = USER_AGENT,
    ):
        route = "async-function" if async_ else "function"
        self.function = function
        self.token = token
        self.token_secret = token_secret  # names the OpenFaaS secret holding the callee's bearer token
        self.callback_url = callback_url
        self.client = httpclient.Client(
            f"{config.gateway_url()}/{route}/{function}{path}", timeout=timeout, user_agent=user_agent
        )

    def _auth(self) -> dict:
        if self.token:  # a token given directly wins over token_secret
            return {"Authorization": f"Bearer {self.token}"}
        if not self.token_secret:
            return {}
        token = config.read_secret(self.token_secret)  # on every call: a rotated secret applies at once
        if not token:
            # Sending the call unauthenticated would only earn a 401 that looks like the callee's fault.
            raise config.ConfigError(
                f"OpenFaaS secret '{self.token_secret}' (the token for {self.function}) is missing or empty"
            )
        return {"Authorization": f"Bearer {token}"}

    def invoke(self, body: bytes | str, headers: dict | None = None) -> Invocation:
        """POST ``body``. Raises ``config.ConfigError`` before sending anything when the token secret is missing,
        ``TransportError`` when the gateway cannot be reached in time; HTTP errors are returned."""
        hdrs = {"Content-Type": "application/json", **(headers or {}), **self._auth()}
        if self.callback_url:
            hdrs["X-Callback-Url"] = self.callback_url
        resp = self.client.request("POST", body.encode("utf-8") if isinstance(body, str) else body, hdrs)
        return Invocation(resp.status, resp.body, resp.headers, resp.headers.get("X-Call-Id"))


_routes: dict[tuple, Gateway] = {}
_routes_lock = threading.Lock()


def invoke(
    function: str,
    body: bytes | str,
    *,
    token_secret: str | None = None,
    async_: bool = True,
    path: str = "",
    headers: dict | None = None,
    callback_url: str | None = None,
    timeout: float = 10.0,
) -> Invocation:
    """``Gateway(...).invoke(body, headers)``, keeping one Gateway (and its connections) per route and settings."""
    key = (config.gateway_url(), function, async_, path, timeout, token_secret, callback_url)
    with _routes_lock:
        gw = _routes.get(key)
        if gw is None:
            gw = _routes[key] = Gateway(
                function,
                async_=async_,
                path=path,
                timeout=timeout,
                token_secret=token_secret,
                callback_url=callback_url,
            )
    return gw.invoke(body, headers)
