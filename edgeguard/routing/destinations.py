"""The ``destinations`` section of a routes document: which types exist and the options each accepts.

A destination declares its non-secret options here; URLs, tokens and keys come
from the ``alert-forwarder-destinations`` secret (``secret.py``), never from the
routes file (a secret-looking key here is an error).
"""
from __future__ import annotations

import re
from typing import Any

from ..falco.alert import PRIORITIES, priority_number
from .errors import RoutesError, parse_duration
from .templates import validate_template

DESTINATION_TYPES = ("console", "slack", "teams", "discord", "webhook", "openfaas")

# Keys that hold secret material: only the destinations secret may carry them.
SECRET_KEYS = ("url", "webhook_url", "token", "hmac_key", "password", "ca_cert", "client_cert", "client_key",
               "secret_headers")

# Options each destination type accepts in routes.yaml (besides `type`, `enabled`, delivery tuning).
_COMMON_OPTS = {"type", "enabled", "timeout", "retries", "backoff", "backoff_max", "budget", "concurrency",
                "min_priority"}
_TYPE_OPTS = {
    "console": set(),
    "slack": {"channel", "username", "icon_url", "fields", "insecure_http"},
    "teams": {"format", "fields", "insecure_http"},
    "discord": {"username", "fields", "insecure_http"},
    "webhook": {"method", "body", "template", "headers", "signature_header", "ca_file", "insecure_http"},
    "openfaas": {"function", "async", "token_secret", "callback_url", "path"},
}


def parse_destination(name: str, spec: Any, where: str) -> dict:
    if not isinstance(spec, dict):
        raise RoutesError(where, "a destination must be a mapping with at least 'type'")
    dtype = spec.get("type")
    if dtype not in DESTINATION_TYPES:
        raise RoutesError(f"{where}.type", f"unknown destination type {dtype!r} (expected one of {', '.join(DESTINATION_TYPES)})")
    for key in spec:
        if key in SECRET_KEYS:
            raise RoutesError(f"{where}.{key}", "secret values (URLs, tokens, keys, certificates) belong in the "
                                                "OpenFaaS secret 'alert-forwarder-destinations', not in the routes file")
        if key not in _COMMON_OPTS and key not in _TYPE_OPTS[dtype]:
            allowed = sorted((_COMMON_OPTS | _TYPE_OPTS[dtype]) - {"type"})
            raise RoutesError(f"{where}.{key}", f"unknown option for a {dtype} destination (allowed: {', '.join(allowed)})")
    out = dict(spec)
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
    if dtype == "openfaas":
        fn = out.get("function")
        if not isinstance(fn, str) or not re.fullmatch(r"[-a-zA-Z_0-9.]+", fn or ""):
            raise RoutesError(f"{where}.function", "an openfaas destination needs a valid 'function' name")
    if dtype == "webhook":
        method = str(out.get("method", "POST")).upper()
        if method not in ("POST", "PUT", "PATCH"):
            raise RoutesError(f"{where}.method", f"expected POST, PUT or PATCH, got {out.get('method')!r}")
        out["method"] = method
        body = out.get("body", "alert")
        if body not in ("alert", "template"):
            raise RoutesError(f"{where}.body", f"expected 'alert' or 'template', got {body!r}")
        if body == "template" and "template" not in out:
            raise RoutesError(where, "body: template needs a 'template'")
        if "template" in out:
            validate_template(out["template"], f"{where}.template")
    if dtype in ("webhook",) and "headers" in out:
        h = out["headers"]
        if not isinstance(h, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in h.items()):
            raise RoutesError(f"{where}.headers", "expected a mapping of header name to string value")
    if dtype == "teams" and out.get("format", "adaptive") not in ("adaptive", "messagecard"):
        raise RoutesError(f"{where}.format", "expected 'adaptive' or 'messagecard'")
    if "fields" in out and (not isinstance(out["fields"], list) or not all(isinstance(f, str) for f in out["fields"])):
        raise RoutesError(f"{where}.fields", "expected a list of output field names")
    out["name"] = name
    return out

