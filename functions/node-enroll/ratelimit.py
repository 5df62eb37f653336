"""Rate limits for POST /enroll, and the (advisory) source address they are keyed on.

The source address comes from X-Forwarded-For, which only proxies we run can
vouch for. The OpenFaaS gateway sets the header only when the request lacks
one, so without an ingress in front a client can put anything there: the
address is advisory. Hence nothing is charged to it before the signature has
verified (else anyone could drain a real node's bucket by writing its address),
and it is taken ``forwarded_for_hops`` entries from the right (0 = the entry the
outermost proxy we run added). Three buckets:

* unsigned: every request whose signature fails shares one bucket, whatever
  address it claims; when empty such requests get 429 instead of 401;
* per source: correctly signed requests, per address;
* global: correctly signed requests together, so a key holder spoofing
  addresses cannot mint tokens at will, while unsigned floods cannot use up
  the budget real nodes need.
"""
from __future__ import annotations

import ipaddress
import math
import time

from .edgeguard.ratelimit import KeyedRateLimiter, TokenBucket

UNKNOWN = "unknown"


def client_address(forwarded_for: str | None, hops: int = 0) -> str:
    """The caller's address as our proxies recorded it, normalised; ``unknown`` if absent or unparsable."""
    if not forwarded_for:
        return UNKNOWN
    entries = [e.strip() for e in forwarded_for.split(",") if e.strip()]
    if not entries:
        return UNKNOWN
    index = len(entries) - 1 - hops
    raw = entries[max(index, 0)]
    return _normalise(raw)


def _normalise(raw: str) -> str:
    candidate = raw
    if candidate.startswith("["):  # [v6]:port
        candidate = candidate[1:].split("]", 1)[0]
    elif candidate.count(":") == 1:  # v4:port (the gateway writes RemoteAddr with its port)
        candidate = candidate.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return UNKNOWN


class EnrollLimits:
    """The three buckets; each method answers 0 if allowed, otherwise whole seconds to wait (>= 1)."""

    def __init__(self, *, per_minute: float, global_per_minute: float, unsigned_per_minute: float,
                 max_keys: int = 4096, clock=time.monotonic):
        # At most max_keys sources are remembered; forgetting one only gives it a full
        # bucket again, and the global bucket still holds.
        self._per_source = KeyedRateLimiter(per_key_rate=per_minute / 60.0, per_key_burst=per_minute,
                                            max_keys=max_keys, clock=clock)
        self._global = TokenBucket(global_per_minute / 60.0, global_per_minute, clock)
        self._unsigned = TokenBucket(unsigned_per_minute / 60.0, unsigned_per_minute, clock)

    def source(self, key: str) -> int:
        return _seconds(self._per_source.take(key))

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
