"""Caller authentication for function routes, which OpenFaaS leaves public.

Tokens live in OpenFaaS secrets and are compared in constant time. A missing or
empty secret fails closed (503): an unconfigured function must not be open.

Never in the query string: of-watchdog logs every request as
``POST /?token=... - 202 ACCEPTED``, so a token there lands in the pod's log. A
caller that cannot set headers (Falco's http_output) puts it in the URL's user part
instead (``http://falco:<token>@gateway...``): libcurl, like every HTTP client, sends
that as ``Authorization: Basic``, and no request line carries it.
"""
from __future__ import annotations

import base64
import binascii
import hmac

from . import config
from .http import HTTPError, header, query


def _unauthorized(reason: str) -> HTTPError:
    return HTTPError(401, reason, headers={"WWW-Authenticate": 'Bearer realm="edgeguard"'})


def expected_token(secret_name: str) -> str:
    token = config.read_secret(secret_name)
    if not token:
        raise HTTPError(503, f"authentication is not configured: OpenFaaS secret '{secret_name}' is missing or empty")
    return token


def presented_token(event, *, allow_basic: bool = False) -> str | None:
    auth = header(event, "Authorization")
    if not auth:
        return None
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if allow_basic and scheme.lower() == "basic":
        try:
            _user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            return None
        return password if sep and password else None
    return None


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def require_bearer(event, secret_name: str, *, allow_basic: bool = False) -> None:
    """Raise HTTPError 401/503 unless the request carries the token stored in ``secret_name``.

    ``allow_basic``: also take it as the password of HTTP Basic auth (for Falco's http_output).
    """
    expected = expected_token(secret_name)
    how = "an 'Authorization: Bearer <token>' header" + (
        " or Basic auth with the token as password (a URL like http://falco:<token>@host/...)" if allow_basic else "")
    if query(event, "token") is not None:
        raise _unauthorized("a token in the query string is refused: of-watchdog writes request URLs to the "
                            f"function's log; send {how}")
    got = presented_token(event, allow_basic=allow_basic)
    if got is None:
        raise _unauthorized(f"authentication required: send {how}")
    if not tokens_equal(got, expected):
        raise _unauthorized("invalid token")


METRICS_SECRET = "edgeguard-metrics-token"


def require_metrics_reader(event, secret_name: str) -> None:
    """``GET /metrics``: the function's own token, or the read-only ``edgeguard-metrics-token`` when mounted.

    Prometheus then holds one credential that can read every function's metrics and do nothing else (the
    functions' own tokens can forge alerts or start scrubber runs).
    """
    reader = config.read_secret(METRICS_SECRET)
    got = presented_token(event)
    if reader and got is not None and tokens_equal(got, reader):
        return
    require_bearer(event, secret_name)
