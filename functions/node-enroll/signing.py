"""Request signatures for POST /enroll: HMAC-SHA256 with the fleet enrollment key.

Canonical string (UTF-8, fields joined by a single LF, no trailing LF):

    edgeguard-enroll-v1
    <timestamp: unix seconds, decimal>
    <nonce: 16-128 chars of [A-Za-z0-9_-]>
    <lowercase hex SHA-256 of the exact request body bytes>

Headers: ``X-Enroll-Timestamp``, ``X-Enroll-Nonce`` and
``X-Enroll-Signature: v1=<lowercase hex HMAC-SHA256(key, canonical)>``.
The key is the content of the ``node-enroll-key`` secret without surrounding
whitespace. Hashing the body (rather than embedding it) keeps the canonical
string small and lets any client sign a file it streams.

Stdlib only: the node-side client carries its own copy of these few lines, and
tests check the two agree.
"""

from __future__ import annotations

import hashlib
import hmac
import re

SCHEME = "edgeguard-enroll-v1"
TIMESTAMP_HEADER = "X-Enroll-Timestamp"
NONCE_HEADER = "X-Enroll-Nonce"
SIGNATURE_HEADER = "X-Enroll-Signature"
SIGNATURE_PREFIX = "v1="

NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
SIGNATURE_RE = re.compile(r"v1=[0-9a-f]{64}")


def canonical(timestamp: str, nonce: str, body: bytes) -> bytes:
    return "\n".join((SCHEME, timestamp, nonce, hashlib.sha256(body).hexdigest())).encode("utf-8")


def sign(key: str, timestamp: str, nonce: str, body: bytes) -> str:
    mac = hmac.new(key.encode("utf-8"), canonical(timestamp, nonce, body), hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def signature_matches(key: str, timestamp: str, nonce: str, body: bytes, presented: str) -> bool:
    return hmac.compare_digest(sign(key, timestamp, nonce, body).encode("ascii"), presented.encode("ascii"))
