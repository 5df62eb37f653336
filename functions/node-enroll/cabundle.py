"""The CA hash k3s agents check, for server CA bundles with one or several certificates.

k3s (pkg/clientaccess/token.go, per the project reference) hashes the raw PEM bytes when
/cacerts holds one certificate, and otherwise the DER of the root that the first
certificate chains to. Finding that root only needs each certificate's issuer and subject,
so this reads just enough DER to get them; it verifies no signatures (k3s's choice of root
does not depend on them either).
"""

from __future__ import annotations

import base64
import hashlib
import re

_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


class CAError(ValueError):
    pass


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise CAError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise CAError("unsupported DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise CAError("truncated DER")
    return tag, pos, pos + length


def issuer_and_subject(der: bytes) -> tuple[bytes, bytes]:
    """Raw DER of a certificate's issuer and subject Names."""
    tag, start, _ = _tlv(der, 0)  # Certificate
    if tag != 0x30:
        raise CAError("not a certificate")
    tag, pos, _ = _tlv(der, start)  # tbsCertificate
    if tag != 0x30:
        raise CAError("not a certificate")
    fields: list[bytes] = []
    while len(fields) < 6:
        tag, vstart, vend = _tlv(der, pos)
        if not fields and tag == 0xA0:  # optional [0] version
            pos = vend
            continue
        fields.append(der[pos:vend])
        pos = vend
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    return fields[2], fields[4]


def certificates(bundle: bytes) -> list[bytes]:
    out = []
    for m in _PEM_RE.finditer(bundle):
        try:
            out.append(base64.b64decode(b"".join(m.group(1).split()), validate=True))
        except ValueError:
            raise CAError("a PEM certificate block is not valid base64") from None
    return out


def ca_hash(bundle: bytes) -> str:
    certs = certificates(bundle)
    if not certs:
        raise CAError("the CA data holds no PEM certificate")
    if len(certs) == 1:
        return hashlib.sha256(bundle).hexdigest()
    names = [issuer_and_subject(c) for c in certs]
    current = 0
    for _ in range(len(certs)):
        issuer, subject = names[current]
        if issuer == subject:
            return hashlib.sha256(certs[current]).hexdigest()
        parent = next((i for i, (_, s) in enumerate(names) if s == issuer and i != current), None)
        if parent is None:
            break
        current = parent
    raise CAError(
        f"the CA bundle holds {len(certs)} certificates but the first one does not chain to a "
        "self-signed root inside it; set k3s_ca_hash (see docs/node-enroll.md)"
    )
