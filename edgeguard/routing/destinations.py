"""The ``destinations`` section of a routes document: one spec per destination type.

A destination declares its non-secret options here; URLs, tokens and keys come
from the ``alert-forwarder-destinations`` secret (``secret.py``), never from the
routes file (a secret-looking key here is an error).

``TYPES`` is the one list of destination types. Each entry says which options the
type accepts, whether it needs a URL from the secret, the defaults of its options
and its own checks; alert-forwarder has exactly one sender per entry
(``destinations.SENDERS``, held equal by a test). Adding a type is one entry here
plus one sender there, as falcosidekick adds one output file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..falco.alert import PRIORITIES, priority_number
from .document import RoutesError, parse_duration
from .templates import validate_template


@dataclass(frozen=True)
class DestinationType:
    options: frozenset[str] = frozenset()  # accepted in routes.yaml besides COMMON_OPTIONS
    needs_url: bool = False  # the URL comes from the destinations secret; disabled until it is there
    defaults: Mapping[str, Any] = field(default_factory=dict)  # options the routes left out
    check: Callable[[dict, str], None] | None = None  # validates (and may normalise) the options


def _check_openfaas(out: dict, where: str) -> None:
    fn = out.get("function")
    if not isinstance(fn, str) or not re.fullmatch(r"[-a-zA-Z_0-9.]+", fn or ""):
        raise RoutesError(f"{where}.function", "an openfaas destination needs a valid 'function' name")
    # OpenFaaS CE's queue-worker logs every queued message with its headers (the callee's bearer token) and never
    # retries a failed call: remediation functions are called synchronously and answer 202 themselves.
    if out.get("async") is True:
        raise RoutesError(
            f"{where}.async",
            "async: true would send the callee's token through OpenFaaS CE's queue, "
            "whose queue-worker logs it, and CE never retries a queued call; "
            "openfaas destinations are called through /function/<name> (the "
            "callee answers 202 when it works in the background): remove async",
        )
    if "callback_url" in out:
        raise RoutesError(
            f"{where}.callback_url",
            "X-Callback-Url only works with OpenFaaS's async queue, which "
            "openfaas destinations no longer use: remove callback_url",
        )


def _check_webhook(out: dict, where: str) -> None:
    method = str(out["method"]).upper()
    if method not in ("POST", "PUT", "PATCH"):
        raise RoutesError(f"{where}.method", f"expected POST, PUT or PATCH, got {out['method']!r}")
    out["method"] = method
    if out["body"] not in ("alert", "template"):
        raise RoutesError(f"{where}.body", f"expected 'alert' or 'template', got {out['body']!r}")
    if out["body"] == "template" and "template" not in out:
        raise RoutesError(where, "body: template needs a 'template'")
    if "template" in out:
        validate_template(out["template"], f"{where}.template")
    if "headers" in out:
        h = out["headers"]
        if not isinstance(h, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in h.items()):
            raise RoutesError(f"{where}.headers", "expected a mapping of header name to string value")


def _check_teams(out: dict, where: str) -> None:
    if out["format"] not in ("adaptive", "messagecard"):
        raise RoutesError(f"{where}.format", "expected 'adaptive' or 'messagecard'")


TYPES: dict[str, DestinationType] = {
    "console": DestinationType(),
    "slack": DestinationType(
        frozenset({"channel", "username", "icon_url", "fields", "insecure_http"}),
        needs_url=True,
        defaults={"username": "edgeguard"},
    ),
    "teams": DestinationType(
        frozenset({"format", "fields", "insecure_http"}),
        needs_url=True,
        defaults={"format": "adaptive"},
        check=_check_teams,
    ),
    "discord": DestinationType(
        frozenset({"username", "fields", "insecure_http"}), needs_url=True, defaults={"username": "edgeguard"}
    ),
    "webhook": DestinationType(
        frozenset({"method", "body", "template", "headers", "signature_header", "ca_file", "insecure_http"}),
        needs_url=True,
        defaults={"method": "POST", "body": "alert", "signature_header": "X-Edgeguard-Signature"},
        check=_check_webhook,
    ),
    "openfaas": DestinationType(
        frozenset({"function", "async", "token_secret", "callback_url", "path"}),
        defaults={"async": False, "path": ""},
        check=_check_openfaas,
    ),
}
DESTINATION_TYPES = tuple(TYPES)

# Keys that hold secret material: only the destinations secret may carry them.
SECRET_KEYS = (
    "url",
    "webhook_url",
    "token",
    "hmac_key",
    "password",
    "ca_cert",
    "client_cert",
    "client_key",
    "secret_headers",
)

# Options every type accepts: the type itself, and delivery tuning (defaults: delivery.Destination).
COMMON_OPTIONS = frozenset(
    {"type", "enabled", "timeout", "retries", "backoff", "backoff_max", "budget", "concurrency", "min_priority"}
)


def parse_destination(name: str, spec: Any, where: str) -> dict:
    if not isinstance(spec, dict):
        raise RoutesError(where, "a destination must be a mapping with at least 'type'")
    dtype = spec.get("type")
    if dtype not in TYPES:
        raise RoutesError(
            f"{where}.type", f"unknown destination type {dtype!r} (expected one of {', '.join(DESTINATION_TYPES)})"
        )
    kind = TYPES[dtype]
    for key in spec:
        if key in SECRET_KEYS:
            raise RoutesError(
                f"{where}.{key}",
                "secret values (URLs, tokens, keys, certificates) belong in the "
                "OpenFaaS secret 'alert-forwarder-destinations', not in the routes file",
            )
        if key not in COMMON_OPTIONS and key not in kind.options:
            allowed = sorted((COMMON_OPTIONS | kind.options) - {"type"})
            raise RoutesError(
                f"{where}.{key}", f"unknown option for a {dtype} destination (allowed: {', '.join(allowed)})"
            )
    out = {**kind.defaults, **spec}
    for key in ("timeout", "backoff", "backoff_max", "budget"):
        if key in out:
            out[key] = parse_duration(out[key], f"{where}.{key}")
    for key, lo in (("retries", 0), ("concurrency", 1)):
        if key in out and (not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < lo):
            raise RoutesError(f"{where}.{key}", f"expected an integer >= {lo}, got {out[key]!r}")
    if "min_priority" in out:
        try:
            out["min_priority"] = PRIORITIES[priority_number(out["min_priority"])]
        except ValueError:
            raise RoutesError(f"{where}.min_priority", f"unknown priority {out['min_priority']!r}") from None
    for key in ("enabled", "async", "insecure_http"):
        if key in out and not isinstance(out[key], bool):
            raise RoutesError(f"{where}.{key}", f"expected true or false, got {out[key]!r}")
    if kind.check is not None:
        kind.check(out, where)
    if "fields" in out and (not isinstance(out["fields"], list) or not all(isinstance(f, str) for f in out["fields"])):
        raise RoutesError(f"{where}.fields", "expected a list of output field names")
    out["name"] = name
    return out
