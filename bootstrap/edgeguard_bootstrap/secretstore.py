"""The node-local copy of the bundle's secrets.

The k3s webhook kubeconfig needs audit-ingest's token and Falco's URL needs
alert-forwarder's, so the values must exist on the node, not only in
OpenFaaS. They live in one 0700 directory, one 0600 file per secret, named
like the OpenFaaS secret. Values are never printed; only these paths are.
"""

from __future__ import annotations

import re
import secrets

from .engine import BootstrapError, Ctx

STORE = "/var/lib/edgeguard/secrets"

TOKENS = (
    "audit-ingest-token",
    "alert-forwarder-token",
    "configmap-secret-scrubber-token",
    "node-enroll-admin-token",
    # Read-only: GET /metrics of every function (edgeguard/auth.require_metrics_reader), for Prometheus.
    "edgeguard-metrics-token",
)
# HMAC keys. The scrubber's fingerprint key is its own value, never its bearer token: others hold that.
KEYS = ("node-enroll-key", "configmap-secret-scrubber-fingerprint-key")
PLACEHOLDERS = {
    # A comment-only YAML document loads as "no extra rules".
    "audit-ingest-extra-rules": (
        "# Extra Falco rules for audit-ingest (Falco rules YAML), empty on purpose.\n"
        "# Edit this file, then: faas-cli secret update audit-ingest-extra-rules --from-file=<this file>\n"
    ),
    "alert-forwarder-destinations": (
        "# Secret settings of alert-forwarder's destinations (webhook URLs, tokens), none yet.\n"
        "# See docs/alert-forwarder.md; then:\n"
        "#   faas-cli secret update alert-forwarder-destinations --from-file=<this file>\n"
        "{}\n"
    ),
}
KUBECONFIGS = ("configmap-secret-scrubber-kubeconfig", "node-enroll-kubeconfig", "alert-forwarder-kubeconfig")
ALL = TOKENS + KEYS + tuple(PLACEHOLDERS) + KUBECONFIGS


def path(name: str) -> str:
    return f"{STORE}/{name}"


def generate(name: str) -> bytes:
    if name in TOKENS:
        return secrets.token_urlsafe(32).encode()
    if name in KEYS:
        # HMAC-SHA256 key: 256 random bits, hex so it survives copy and paste.
        return secrets.token_hex(32).encode()
    if name in PLACEHOLDERS:
        return PLACEHOLDERS[name].encode()
    raise ValueError(f"no generator for {name}")


_TOKEN_LINE = re.compile(r"^\s*token:\s*[\"']?([^\s\"']+)", re.M)


def register(ctx: Ctx, name: str, value: bytes | None) -> None:
    """Mask this value in all output, and for a kubeconfig also the bearer token inside it: a failing CLI
    may print the token alone."""
    if value is None:
        return
    ctx.add_secret(value)
    if name in KUBECONFIGS:
        for token in _TOKEN_LINE.findall(value.decode("utf-8", "replace")):
            ctx.add_secret(token)


def local(ctx: Ctx, name: str) -> bytes | None:
    """This run's value (planned or written) else the stored file."""
    planned = ctx.memo.get("secrets", {}).get(name)
    if planned is not None:
        return planned
    value = ctx.read(path(name))
    register(ctx, name, value)
    return value


def store(ctx: Ctx, name: str, value: bytes, why: str = "") -> bool:
    ctx.memo.setdefault("secrets", {})[name] = value
    register(ctx, name, value)
    if not ctx.memo.get("store_dir"):
        ctx.ensure_dir(STORE, 0o700, "node-local copies of the bundle's secrets")
        ctx.memo["store_dir"] = True
    return ctx.write_file(path(name), value, secret=True, why=why, dir_mode=0o700)


def require_token(ctx: Ctx, name: str) -> str:
    value = local(ctx, name)
    if not value or not value.strip():
        raise BootstrapError(
            f"{name} is not in {STORE}; run `edgeguard-bootstrap openfaas` first "
            "(it creates the function secrets and keeps a node-local copy)"
        )
    return value.decode("utf-8").strip()
