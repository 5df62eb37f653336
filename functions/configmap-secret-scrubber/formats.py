"""Structural checks of provider credential formats: checksums and decodable structure.

A prefix says which provider a token claims to come from; where the format carries a
checksum (GitHub's and npm's CRC32) or a decodable structure (a JWT's JSON header, a Basic
header's ``user:password``), the check tells a real credential from a made-up one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# GitHub (ghp_ gho_ ghu_ ghs_ ghr_) and npm (npm_) tokens: 30 random base62 + 6 base62 CRC32 of them
# https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/
CRC32_TOKEN = re.compile(r"\b(gh[pousr]|npm)_([A-Za-z0-9]{36})\b")


def _b62decode(s: str) -> int:
    n = 0
    for c in s:
        n = n * 62 + _B62.index(c)
    return n


def crc32_token_ok(token: str) -> bool:
    """True when a GitHub/npm token's last 6 characters are the CRC32 of the 30 before them."""
    m = CRC32_TOKEN.fullmatch(token) or CRC32_TOKEN.search(token)
    if not m:
        return False
    body = m.group(2)
    return zlib.crc32(body[:-6].encode()) == _b62decode(body[-6:])


def _b64json(part: str):
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


# the payload of the jwt.io sample token, copied into countless docs and tests
_JWT_SAMPLE_CLAIMS = {"name": "John Doe", "sub": "1234567890"}


def jwt_kind(token: str) -> str:
    """'jwt' for a decodable JWT, 'example' for the well-known sample, 'invalid' otherwise."""
    parts = token.split(".")
    if len(parts) < 2:
        return "invalid"
    header, payload = _b64json(parts[0]), _b64json(parts[1])
    if not isinstance(header, dict) or "alg" not in header or not isinstance(payload, dict):
        return "invalid"
    if any(payload.get(k) == v for k, v in _JWT_SAMPLE_CLAIMS.items()):
        return "example"
    return "jwt"


def basic_auth(b64: str) -> tuple[str, str] | None:
    """(user, password) from the base64 of an ``Authorization: Basic`` header, or None."""
    try:
        raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if ":" not in raw or not raw.isprintable():
        return None
    user, _, password = raw.partition(":")
    return user, password


def prefixed(keywords: tuple, secret: str) -> bool:
    """A gitleaks rule matched on the token's own prefix (``ghp_``, ``AKIA``, ``xoxb-``), not on a nearby word.

    gitleaks' keywords are the strings a match must contain: a provider prefix for format rules,
    the provider's name in the setting for context rules (``okta ... = <32 chars>``).
    """
    low = secret.lower()
    return any(k and k in low for k in keywords)


_TEST_MODE = re.compile(r"(?i)^(sk|pk|rk)_test_|_test_|^test_")


def test_mode(secret: str) -> bool:
    """Provider test-mode credentials (Stripe ``sk_test_``): a test fixture, not a production secret."""
    return bool(_TEST_MODE.search(secret))
