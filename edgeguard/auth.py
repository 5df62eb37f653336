"""Caller authentication for function routes, which OpenFaaS leaves public.

Tokens live in OpenFaaS secrets and are compared in constant time. A missing or
empty secret fails closed (503): an unconfigured function must not be open.
"""
from __future__ import annotations

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


def presented_token(event, *, allow_query_token: bool = False) -> str | None:
    auth = header(event, "Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    if allow_query_token:
        # Only for callers that cannot set headers (Falco's http_output). Never logged.
        return query(event, "token")
    return None


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def require_bearer(event, secret_name: str, *, allow_query_token: bool = False) -> None:
    """Raise HTTPError 401/503 unless the request carries the token stored in ``secret_name``."""
    expected = expected_token(secret_name)
    got = presented_token(event, allow_query_token=allow_query_token)
    if got is None:
        hint = "an 'Authorization: Bearer <token>' header" + (" or a 'token' query parameter" if allow_query_token else "")
        raise _unauthorized(f"authentication required: send {hint}")
    if not tokens_equal(got, expected):
        raise _unauthorized("invalid token")
