"""What k3s and the kube-apiserver check about a join token and its Secret, written from their documented rules.

Sources (k3s pkg/kubeadm/utils.go BootstrapTokenToSecret, pkg/kubeadm/token.go; Kubernetes bootstrap-tokens docs):
- k3s pkg/clientaccess/token.go: ``K10<64 hex>::<id>.<secret>``; the hash is compared with the server CA.
- k8s bootstrap token authenticator: Secret ``kube-system/bootstrap-token-<id>``, type
  ``bootstrap.kubernetes.io/token``, token-id equal to the id, token-secret equal, not expired,
  ``usage-bootstrap-authentication: "true"``, extra groups matching ``system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]``.
- k3s token create (BootstrapTokenToSecret): the keys it writes, and no others.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime

K3S_SECRET_KEYS = {
    "token-id",
    "token-secret",
    "expiration",
    "usage-bootstrap-authentication",
    "usage-bootstrap-signing",
    "auth-extra-groups",
    "description",
}
TOKEN_RE = re.compile(r"^K10(?P<hash>[0-9a-f]{64})::(?P<id>[a-z0-9]{6})\.(?P<secret>[a-z0-9]{16})\Z")
GROUP_RE = re.compile(r"^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\Z")


def decoded(secret: dict) -> dict:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def rejection(secret: dict | None, token: str, ca_pem: bytes, now: datetime | None = None) -> str | None:
    """Why a k3s agent presenting ``token`` would be refused, or None if it would be accepted."""
    now = now or datetime.now(UTC)
    m = TOKEN_RE.match(token)
    if not m:
        return "token is not in the secure K10<hash>::<id>.<secret> form"
    if m["hash"] != hashlib.sha256(ca_pem).hexdigest():
        return "CA hash does not match the server CA"
    if secret is None:
        return "no Secret for this token id"
    meta = secret.get("metadata") or {}
    if meta.get("namespace") != "kube-system" or meta.get("name") != f"bootstrap-token-{m['id']}":
        return "Secret is not kube-system/bootstrap-token-<id>"
    if secret.get("type") != "bootstrap.kubernetes.io/token":
        return "Secret type is not bootstrap.kubernetes.io/token"
    data = decoded(secret)
    if set(data) - K3S_SECRET_KEYS:
        return f"unexpected keys {sorted(set(data) - K3S_SECRET_KEYS)}"
    if data.get("token-id") != m["id"] or data.get("token-secret") != m["secret"]:
        return "token-id/token-secret do not match"
    exp = data.get("expiration")
    if exp is not None:
        try:
            when = datetime.strptime(exp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "expiration is not RFC3339 UTC"
        if when <= now:
            return "expired"
    if data.get("usage-bootstrap-authentication") != "true":
        return 'usage-bootstrap-authentication is not "true"'
    for g in (data.get("auth-extra-groups") or "").split(","):
        if g and not GROUP_RE.match(g):
            return f"invalid extra group {g!r}"
    return None
