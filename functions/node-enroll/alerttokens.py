"""Per-node alert tokens for host-mode Falco agents (issue 12 §7): one stolen node leaks its own token only.

The format is shared with alert-forwarder, which accepts them: Secret ``edgeguard-node-alert-tokens`` in
namespace ``edgeguard-enroll``, data key = node name, value = ``sha256:<hex SHA-256 of the token>``; the
token is 32 random bytes, base64url. Falco on the node sends Basic auth user=<node name>, password=<token>
(http_output's URL user part). node-enroll mints one at every enrollment answer in falco_mode=host (so
re-enrolling rotates it), keeps only the hash, hands the token out once (the JSON answer's alert_token, or
the join script, which pipes it to `edgeguard-bootstrap falco --mode host --node-name <node>
--alert-token-stdin`), and deletes the node's key when the node is revoked.
"""

from __future__ import annotations

import hashlib
import secrets

SECRET = "edgeguard-node-alert-tokens"


def mint() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()
