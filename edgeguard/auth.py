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
import threading
import time

from . import config, log
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
        creds = basic_credentials(event)
        return creds[1] if creds else None
    return None


def basic_credentials(event) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header, or None."""
    auth = header(event, "Authorization")
    if not auth:
        return None
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep and password else None


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# Rotation without a gap: callers that cache a token (Falco keeps it in its URL until it restarts) still send the
# old one for a while after `--rotate` updated the secret. The previous value is accepted for
# config.token_grace_seconds() after the change this process saw, and every such use is counted per secret.
_clock = time.time  # tests move it
_grace_lock = threading.Lock()
_previous_accepted: dict[str, int] = {}
_last_warned: dict[str, float] = {}


def _grace() -> float:
    try:
        return config.token_grace_seconds()
    except config.ConfigError as exc:
        raise HTTPError(503, f"authentication is misconfigured: {exc}", misconfigured=True) from None


def token_matches(got: str, secret_name: str) -> bool:
    """``got`` is the secret's current value, or its previous one within the rotation grace. Constant time."""
    expected = expected_token(secret_name)
    if tokens_equal(got, expected):
        return True
    prev = config.previous_secret(secret_name)
    if prev is None or _clock() - prev[1] > _grace():
        return False
    if not tokens_equal(got, prev[0]):
        return False
    now = _clock()
    with _grace_lock:
        _previous_accepted[secret_name] = _previous_accepted.get(secret_name, 0) + 1
        warn = now - _last_warned.get(secret_name, 0.0) >= 60.0
        if warn:
            _last_warned[secret_name] = now
    if warn:  # once a minute, not per alert: Falco may send hundreds a second with the old token
        log.warning(
            "auth.previous_token",
            of=secret_name,
            rotated_s_ago=round(now - prev[1], 1),
            grace_left_s=round(_grace() - (now - prev[1]), 1),
            hint="a caller still uses the token from before the rotation; update it before the grace ends",
        )
    return True


def rotation_status(secret_name: str) -> dict:
    """For metrics and status pages: previous-token uses so far, and seconds of grace left (0: none)."""
    prev = config.previous_secret(secret_name)
    left = 0.0
    if prev is not None:
        try:
            left = max(0.0, config.token_grace_seconds() - (_clock() - prev[1]))
        except config.ConfigError:
            left = 0.0
    with _grace_lock:
        used = _previous_accepted.get(secret_name, 0)
    return {"previous_token_accepted": used, "grace_seconds_left": round(left, 3)}


# What every function adds to its metrics definitions to report rotation (see rotation_metrics).
ROTATION_METRICS = {
    "token_previous_accepted_total": (
        "counter",
        "Requests authenticated with a token's previous value during the "
        "rotation grace (token_grace_seconds), by secret.",
        ("secret",),
    ),
    "token_rotation_grace_seconds": (
        "gauge",
        "Seconds left in which a rotated token's previous value is still accepted (0: none), by secret.",
        ("secret",),
    ),
}


def rotation_metrics(m, secret_names) -> None:
    """A metrics collector: fill ROTATION_METRICS for ``secret_names`` (register with Metrics.add_collector)."""
    for name in secret_names:
        st = rotation_status(name)
        m.set("token_previous_accepted_total", st["previous_token_accepted"], {"secret": name})
        m.set("token_rotation_grace_seconds", st["grace_seconds_left"], {"secret": name})


def require_bearer(event, secret_name: str, *, allow_basic: bool = False) -> None:
    """Raise HTTPError 401/503 unless the request carries the token stored in ``secret_name`` (or, within the
    rotation grace, the value it had before).

    ``allow_basic``: also take it as the password of HTTP Basic auth (for Falco's http_output).
    """
    expected_token(secret_name)  # 503 when the secret is missing, before anything else
    how = "an 'Authorization: Bearer <token>' header" + (
        " or Basic auth with the token as password (a URL like http://falco:<token>@host/...)" if allow_basic else ""
    )
    if query(event, "token") is not None:
        raise _unauthorized(
            f"a token in the query string is refused: of-watchdog writes request URLs to the function's log; send {how}"
        )
    got = presented_token(event, allow_basic=allow_basic)
    if got is None:
        raise _unauthorized(f"authentication required: send {how}")
    if not token_matches(got, secret_name):
        raise _unauthorized("invalid token")


METRICS_SECRET = "edgeguard-metrics-token"


def require_metrics_reader(event, secret_name: str) -> None:
    """``GET /metrics``: the function's own token, or the read-only ``edgeguard-metrics-token`` when mounted.

    Prometheus then holds one credential that can read every function's metrics and do nothing else (the
    functions' own tokens can forge alerts or start scrubber runs).
    """
    reader = config.read_secret(METRICS_SECRET)
    got = presented_token(event)
    if reader and got is not None and token_matches(got, METRICS_SECRET):
        return
    require_bearer(event, secret_name)
