"""Per-node alert tokens (issue 12 §7): a stolen edge node leaks its own token, not the fleet's.

node-enroll mints a token per node at enrollment and keeps only its hash, in one Secret shared by format:
``edgeguard-node-alert-tokens`` in namespace ``edgeguard-enroll``, data key = node name, value =
``sha256:<hex SHA-256 of the token>`` (the token: 32 random bytes, base64url). Falco on that node sends
Basic auth user=<node name>, password=<token>. Revoking the node deletes its key.

The Secret is watched (list + watch, never get: see kubesecret), so a revocation applies within about a second.
While the watch is down the last copy is trusted for ``ttl`` seconds after it was last known current, then node
tokens are refused (fail closed) until the API server answers again; the fleet token keeps working throughout.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable

from .kubesecret import SecretClient, Watcher, decode_data

_DUMMY = "sha256:" + "0" * 64


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


class NodeTokens:
    def __init__(self, client: SecretClient, *, ttl: float, log_warning: Callable[..., None]):
        self.client = client
        self.ttl = ttl
        self.log_warning = log_warning
        self._hashes: dict[str, str] = {}
        self._lock = threading.Lock()
        self.malformed: list[str] = []
        self.watcher = Watcher(client, self._on_change, name=client.name, log_error=log_warning)

    def start(self) -> NodeTokens:
        self.watcher.start()
        return self

    def stop(self) -> None:
        self.watcher.stop()

    def _on_change(self, secret: dict | None) -> None:
        hashes, bad = {}, []
        for node, value in decode_data(secret).items():
            text = value.decode("ascii", "replace").strip()
            if text.startswith("sha256:") and len(text) == 71 and all(c in "0123456789abcdef" for c in text[7:]):
                hashes[node] = text
            else:
                bad.append(node)  # never accepted; named (never its value) so the operator can fix it
        with self._lock:
            self._hashes = hashes
            if bad != self.malformed:
                self.malformed = bad
                if bad:
                    self.log_warning(
                        "node_tokens.malformed",
                        object=f"secrets/{self.client.name}",
                        nodes=bad[:20],
                        expected="sha256:<64 hex digits>",
                    )

    def verify(self, node: str, token: str) -> bool:
        """``token`` is ``node``'s current token (constant time in the token; unknown nodes cost the same)."""
        if not self.watcher.in_sync_for(self.ttl):
            return False
        with self._lock:
            stored = self._hashes.get(node)
        ok = hmac.compare_digest(stored or _DUMMY, token_hash(token))
        return ok and stored is not None

    def status(self) -> dict:
        with self._lock:
            n = len(self._hashes)
        w = self.watcher
        return {
            "secret": f"{self.client.namespace}/{self.client.name}",
            "nodes": n,
            "in_sync": w.in_sync_for(self.ttl),
            "watching": w.watching,
            "ttl_s": self.ttl,
            "errors": w.errors,
            "last_error": w.last_error or None,
            "malformed_entries": list(self.malformed),
        }
