"""Rate limits for POST /enroll, keyed on what node-enroll can really know about a caller.

Not its address. The real of-watchdog drops X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto and
Forwarded before the handler sees a request (tests/foundation/test_watchdog_behaviour.py), and waitress
would drop X-Forwarded-For too: a limit "per source address" was one shared bucket in every deployment.
What is known after the signature has verified is the node the signed body names. Three buckets:

* unsigned: every request whose signature fails shares one bucket; when empty such requests get 429
  instead of 401. Nothing they claim is trusted, so nothing else is charged for them;
* per node: verified requests, per the (normalised) hostname they enroll, so one node in a retry loop
  cannot use up the budget of the others;
* global: verified requests together, so a holder of the fleet key naming ever new nodes cannot mint
  tokens faster than this, and unsigned floods cannot use up what real nodes need.

``source_address`` is X-Real-Ip, the one client-address header the watchdog passes on (Traefik writes it
in front of the gateway; a client reaching the gateway directly writes whatever it likes). It is logged
and recorded as what that header said, and no decision depends on it.
"""

from __future__ import annotations

import ipaddress
import math
import time

from .edgeguard.ratelimit import KeyedRateLimiter, TokenBucket

SOURCE_HEADER = "X-Real-Ip"


def source_address(x_real_ip: str | None) -> str | None:
    """The address X-Real-Ip names, normalised; None when absent or not an address."""
    if not x_real_ip:
        return None
    try:
        return str(ipaddress.ip_address(x_real_ip.strip()))
    except ValueError:
        return None


class EnrollLimits:
    """The three buckets; each method answers 0 if allowed, otherwise whole seconds to wait (>= 1)."""

    def __init__(
        self,
        *,
        per_minute: float,
        global_per_minute: float,
        unsigned_per_minute: float,
        max_keys: int = 4096,
        clock=time.monotonic,
    ):
        # At most max_keys nodes are remembered; forgetting one only gives it a full
        # bucket again, and the global bucket still holds.
        self._per_node = KeyedRateLimiter(
            per_key_rate=per_minute / 60.0, per_key_burst=per_minute, max_keys=max_keys, clock=clock
        )
        self._global = TokenBucket(global_per_minute / 60.0, global_per_minute, clock)
        self._unsigned = TokenBucket(unsigned_per_minute / 60.0, unsigned_per_minute, clock)

    def node(self, hostname: str) -> int:
        return _seconds(self._per_node.take(hostname))

    def overall(self) -> int:
        return _seconds(self._global.take())

    def unsigned(self) -> int:
        return _seconds(self._unsigned.take())


def _seconds(wait: float) -> int:
    if not wait:
        return 0
    if math.isinf(wait):
        return 60
    return max(1, math.ceil(wait))
