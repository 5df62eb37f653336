"""Calling another function through the OpenFaaS gateway."""
from __future__ import annotations

from dataclasses import dataclass

from . import config


@dataclass
class Invocation:
    status: int
    body: bytes
    headers: dict
    call_id: str | None


def invoke(function: str, body: bytes | str, *, token_secret: str | None = None, async_: bool = True,
           path: str = "", headers: dict | None = None, callback_url: str | None = None,
           timeout: float = 10.0, session=None) -> Invocation:
    """POST ``body`` to ``/function/<name>`` or ``/async-function/<name>``.

    ``token_secret`` names the OpenFaaS secret holding the callee's bearer token.
    Raises ``requests.RequestException`` on transport failure and ``config.ConfigError``
    when the named token secret is missing; HTTP errors are returned.
    """
    import requests  # runtime dependency of every function

    route = "async-function" if async_ else "function"
    url = f"{config.gateway_url()}/{route}/{function}{path}"
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    if token_secret:
        token = config.read_secret(token_secret)
        if not token:
            # Sending the call unauthenticated would only earn a 401 that looks like the callee's fault.
            raise config.ConfigError(f"OpenFaaS secret '{token_secret}' (the token for {function}) is missing or empty")
        hdrs["Authorization"] = f"Bearer {token}"
    if callback_url:
        hdrs["X-Callback-Url"] = callback_url
    data = body.encode("utf-8") if isinstance(body, str) else body
    resp = (session or requests).post(url, data=data, headers=hdrs, timeout=timeout)
    return Invocation(resp.status_code, resp.content, dict(resp.headers), resp.headers.get("X-Call-Id"))
