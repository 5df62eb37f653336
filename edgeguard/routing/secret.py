"""The destinations document: the ``alert-forwarder-destinations`` secret, and its merge with the routes.

Its values are secret: an error names the place (``alert-forwarder-destinations.hook.url``), never the value.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .destinations import TYPES
from .document import RoutesError, load_yaml

if TYPE_CHECKING:
    from .routes import RouteTable

_SECRET_ENTRY_KEYS = {"url", "token", "hmac_key", "headers", "ca_cert", "client_cert", "client_key", "insecure_http"}


def parse_destination_secrets(text: str | None, source: str = "alert-forwarder-destinations") -> dict[str, dict]:
    """The destinations secret: a YAML/JSON map of destination name to its secret values."""
    if text is None or not text.strip():
        return {}
    doc = load_yaml(text, source, secret=True)
    if not isinstance(doc, dict):
        raise RoutesError(source, "expected a mapping of destination name to {url, token, hmac_key, headers, ...}")
    out = {}
    for name, entry in doc.items():
        where = f"{source}.{name}"
        if not isinstance(entry, dict):
            raise RoutesError(
                where, "expected a mapping (url, token, hmac_key, headers, ca_cert, client_cert, client_key)"
            )
        for key, val in entry.items():
            if key not in _SECRET_ENTRY_KEYS:
                raise RoutesError(f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_SECRET_ENTRY_KEYS))})")
            if key == "insecure_http":
                if not isinstance(val, bool):
                    raise RoutesError(f"{where}.insecure_http", "expected true or false")
            elif key == "headers":
                if not isinstance(val, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in val.items()
                ):
                    raise RoutesError(f"{where}.headers", "expected a mapping of header name to string value")
            elif not isinstance(val, str) or not val.strip():
                raise RoutesError(f"{where}.{key}", "expected a non-empty string")
        if "url" in entry and not re.match(r"^https?://", entry["url"].strip()):
            raise RoutesError(f"{where}.url", "expected an http:// or https:// URL")
        if "url" in entry and "@" in urlsplit(entry["url"].strip()).netloc:
            # The client would not send them, and a URL is logged more readily than a header.
            raise RoutesError(
                f"{where}.url",
                "credentials in the URL (user:pass@) are not supported: put them in "
                "'token' or 'headers' of this secret entry",
            )
        if ("client_cert" in entry) != ("client_key" in entry):
            raise RoutesError(where, "mTLS needs both client_cert and client_key")
        out[str(name)] = {k: (v.strip() if isinstance(v, str) else v) for k, v in entry.items()}
    return out


def resolve_destinations(table: RouteTable, secrets: dict[str, dict]) -> dict[str, dict]:
    """Merge each declared destination with its secret values and decide whether it is usable.

    A destination whose type needs a URL and has none is disabled (not an error):
    the shipped action-centre webhook waits like that until someone configures it.
    """
    out = {}
    for name, spec in table.destinations.items():
        d = dict(spec)
        sec = secrets.get(name, {})
        d.update(sec)
        if "headers" in spec and "headers" in sec:
            d["headers"] = {**spec["headers"], **sec["headers"]}
        enabled = d.get("enabled", True)
        reason = None
        if not enabled:
            reason = "disabled in routes"
        elif TYPES[d["type"]].needs_url and not d.get("url"):
            enabled, reason = False, f"no url in the alert-forwarder-destinations secret for '{name}'"
        if (
            TYPES[d["type"]].needs_url
            and d.get("url")
            and insecure_url(d["url"])
            and d.get("insecure_http") is not True
        ):
            # Tokens, HMAC-signed bodies and the alerts themselves would cross the network in cleartext.
            raise RoutesError(
                f"{name}.url",
                "plain http:// sends the alert and any token or signature in "
                "cleartext; use https://, or set insecure_http: true on this "
                "destination to accept that",
            )
        d["enabled"] = enabled
        d["disabled_reason"] = reason
        out[name] = d
    return out


def insecure_url(url: str) -> bool:
    return url.strip().lower().startswith("http://")


def unknown_secret_entries(table: RouteTable, secrets: dict[str, dict]) -> list[str]:
    return sorted(set(secrets) - set(table.destinations))
