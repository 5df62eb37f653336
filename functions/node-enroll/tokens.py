"""k3s bootstrap tokens: generation, the kube-system Secret that backs them, our own record of each
token, and the secure join token.

Layout follows what ``k3s token create`` writes (k3s pkg/kubeadm BootstrapTokenToSecret):
Secret ``kube-system/bootstrap-token-<id>`` of type ``bootstrap.kubernetes.io/token`` with
token-id, token-secret, expiration (RFC3339 UTC), usage-bootstrap-authentication,
usage-bootstrap-signing, auth-extra-groups and description.

node-enroll may only create and delete Secrets in kube-system (reading there would expose
every Secret of the cluster's control plane), so everything it needs to read back lives in
a record: Secret ``edgeguard-enroll/enroll-<id>`` holding the same data plus our
bookkeeping (hostname, machine-id digest, labels, taints) in annotations. The record is
the source of truth; the kube-system Secret is derived from it (``bootstrap_from_record``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import cabundle

NAMESPACE = "kube-system"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
NAME_PREFIX = "bootstrap-token-"
RECORD_NAMESPACE = "edgeguard-enroll"
RECORD_TYPE = "edgeguard.io/node-enroll-record"
RECORD_PREFIX = "enroll-"
MANAGED_LABEL = ("app.kubernetes.io/managed-by", "edgeguard-node-enroll")
MANAGED_SELECTOR = f"{MANAGED_LABEL[0]}={MANAGED_LABEL[1]}"
DEFAULT_GROUP = "system:bootstrappers:k3s:default-node-token"

ANN = "node-enroll.edgeguard.io/"
ANN_HOSTNAME = ANN + "hostname"
ANN_ARCH = ANN + "arch"
ANN_MACHINE = ANN + "machine-id-sha256"
ANN_LABELS = ANN + "labels"
ANN_TAINTS = ANN + "taints"
ANN_CREATED = ANN + "created-at"
ANN_SOURCE = ANN + "source-address"
ANN_SOURCE_FROM = ANN + "source-address-from"
# Where source-address came from: no decision depends on it (see ratelimit.py).
SOURCE_FROM = "X-Real-Ip header, unverified"

TOKEN_ID_RE = re.compile(r"[a-z0-9]{6}")
TOKEN_SECRET_NAME_RE = re.compile(r"bootstrap-token-[a-z0-9]{6}")
TOKEN_SECRET_RE = re.compile(r"[a-z0-9]{16}")
CA_HASH_RE = re.compile(r"[0-9a-f]{64}")
GROUP_RE = re.compile(r"system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]")
_ALPHABET = string.ascii_lowercase + string.digits


class CAError(ValueError):
    pass


def new_token_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(6))


def new_token_secret() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(16))


def ca_hash(ca_bundle: bytes) -> str:
    """The hash k3s agents compare against GET /cacerts (see cabundle.py)."""
    try:
        return cabundle.ca_hash(ca_bundle)
    except cabundle.CAError as exc:
        raise CAError(str(exc)) from None


def secure_token(ca_hash_hex: str, token_id: str, token_secret: str) -> str:
    return f"K10{ca_hash_hex}::{token_id}.{token_secret}"


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unb64(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass
class Enrollment:
    token_id: str
    token_secret: str  # enrollment_from_secret returns None rather than an Enrollment without one
    hostname: str
    arch: str | None
    machine_hash: str | None
    labels: dict
    taints: list
    expires_at: datetime  # as token_secret: never None
    created_at: str | None
    source: str | None
    # The Secret it was read from, to rebuild the kube-system Secret without reading kube-system.
    record: dict | None = field(default=None, repr=False, compare=False)

    @property
    def secret_name(self) -> str:
        return NAME_PREFIX + self.token_id

    @property
    def record_name(self) -> str:
        return RECORD_PREFIX + self.token_id

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def machine_hash(machine_id: str) -> str:
    # machine-id(5) asks that the raw id not leak; store only a digest.
    return hashlib.sha256(machine_id.encode("utf-8")).hexdigest()


def build_secret(
    *,
    token_id: str,
    token_secret: str,
    hostname: str,
    arch: str,
    machine_id: str,
    labels: dict,
    taints: list,
    expires_at: datetime,
    now: datetime,
    source: str | None,
    groups: str = DEFAULT_GROUP,
) -> dict:
    data = {
        "token-id": token_id,
        "token-secret": token_secret,
        "expiration": rfc3339(expires_at),
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": groups,
        "description": f"edgeguard node-enroll token for node {hostname} ({arch})",
    }
    annotations = {
        ANN_HOSTNAME: hostname,
        ANN_ARCH: arch,
        ANN_MACHINE: machine_hash(machine_id),
        ANN_LABELS: json.dumps(labels, sort_keys=True, separators=(",", ":")),
        ANN_TAINTS: json.dumps(list(taints), separators=(",", ":")),
        ANN_CREATED: rfc3339(now),
    }
    if source:
        annotations[ANN_SOURCE] = source
        annotations[ANN_SOURCE_FROM] = SOURCE_FROM
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": NAME_PREFIX + token_id,
            "namespace": NAMESPACE,
            "labels": {MANAGED_LABEL[0]: MANAGED_LABEL[1]},
            "annotations": annotations,
        },
        "type": SECRET_TYPE,
        "data": {k: _b64(v) for k, v in data.items()},
    }


def build_record(bootstrap: dict) -> dict:
    """Our record of a bootstrap-token Secret: same data and annotations, in our own namespace."""
    meta = bootstrap["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": RECORD_PREFIX + meta["name"][len(NAME_PREFIX) :],
            "namespace": RECORD_NAMESPACE,
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "type": RECORD_TYPE,
        "data": dict(bootstrap["data"]),
    }


def bootstrap_from_record(record: dict) -> dict:
    """The kube-system Secret k3s needs, rebuilt from our record (re-creating a lost one)."""
    meta = record["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": NAME_PREFIX + meta["name"][len(RECORD_PREFIX) :],
            "namespace": NAMESPACE,
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "type": SECRET_TYPE,
        "data": dict(record["data"]),
    }


def is_record(obj: dict) -> bool:
    """One of our records: our type, our label, in our namespace, named enroll-<token-id>."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    return (
        obj.get("type") == RECORD_TYPE
        and meta.get("namespace", RECORD_NAMESPACE) == RECORD_NAMESPACE
        and (meta.get("labels") or {}).get(MANAGED_LABEL[0]) == MANAGED_LABEL[1]
        and name.startswith(RECORD_PREFIX)
        and bool(TOKEN_ID_RE.fullmatch(name[len(RECORD_PREFIX) :]))
    )


def enrollment_from_secret(obj: dict) -> Enrollment | None:
    """Read back one of our records or bootstrap-token Secrets (as a plain dict); None if unusable."""
    meta = obj.get("metadata") or {}
    kind = obj.get("type")
    prefix = {SECRET_TYPE: NAME_PREFIX, RECORD_TYPE: RECORD_PREFIX}.get(kind) if isinstance(kind, str) else None
    if prefix is None:
        return None
    data = {k: _unb64(v) for k, v in (obj.get("data") or {}).items()}
    tid, tsecret = data.get("token-id"), data.get("token-secret")
    if not tid or not TOKEN_ID_RE.fullmatch(tid) or meta.get("name") != prefix + tid:
        return None
    if not tsecret or not TOKEN_SECRET_RE.fullmatch(tsecret):
        return None
    expires_at = parse_rfc3339(data.get("expiration") or "")
    if expires_at is None:  # ours always expire; anything else was not written by us
        return None
    ann = meta.get("annotations") or {}
    try:
        labels = json.loads(ann.get(ANN_LABELS) or "{}")
        taints = json.loads(ann.get(ANN_TAINTS) or "[]")
    except ValueError:
        labels, taints = {}, []
    return Enrollment(
        token_id=tid,
        token_secret=tsecret,
        hostname=ann.get(ANN_HOSTNAME) or "",
        arch=ann.get(ANN_ARCH),
        machine_hash=ann.get(ANN_MACHINE),
        labels=labels if isinstance(labels, dict) else {},
        taints=taints if isinstance(taints, list) else [],
        expires_at=expires_at,
        created_at=ann.get(ANN_CREATED),
        source=ann.get(ANN_SOURCE),
        record=obj,
    )


def ttl_expiry(now: datetime, ttl_seconds: int) -> datetime:
    return (now + timedelta(seconds=ttl_seconds)).replace(microsecond=0)
