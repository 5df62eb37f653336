"""Per-source and global rate limits for POST /enroll.

The source address comes from X-Forwarded-For, which only proxies we run can
vouch for. The OpenFaaS gateway sets the header only when the request lacks
one, so without an ingress in front a client can put anything there. Hence:
the address is taken ``forwarded_for_hops`` entries from the right (0 = the
entry the outermost proxy we run added). Every request is charged to its
source; correctly signed ones are also charged to a global bucket, so a key
holder spoofing addresses cannot mint tokens at will, while unsigned floods
cannot use up the global budget that real nodes need.
"""
from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict

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


class TokenBucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float):
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """Token buckets: ``per_minute`` refill, ``burst`` capacity; at most ``max_keys`` sources remembered."""

    def __init__(self, *, per_minute: float, burst: int, global_per_minute: float, global_burst: int,
                 max_keys: int = 4096, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = burst
        self.global_rate = global_per_minute / 60.0
        self.global_burst = global_burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._global = TokenBucket(float(global_burst), clock())
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Charge the per-source bucket: 0.0 if allowed, otherwise the seconds to wait."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(float(self.burst), now)
                self._buckets[key] = bucket
                if len(self._buckets) > self.max_keys:
                    # Forgetting the least recently seen source only lets it start
                    # again with a full bucket; the global bucket still holds.
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            return self._take(bucket, self.rate, self.burst, now)

    def acquire_global(self) -> float:
        """Charge the bucket shared by all sources (signed requests only, so strangers cannot drain it)."""
        now = self._clock()
        with self._lock:
            return self._take(self._global, self.global_rate, self.global_burst, now)

    def _take(self, bucket: TokenBucket, rate: float, cap: int, now: float) -> float:
        self._refill(bucket, rate, cap, now)
        if bucket.tokens < 1:
            return _wait(bucket, rate)
        bucket.tokens -= 1
        return 0.0

    @staticmethod
    def _refill(bucket: TokenBucket, rate: float, cap: int, now: float) -> None:
        bucket.tokens = min(float(cap), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now


def _wait(bucket: TokenBucket, rate: float) -> float:
    if rate <= 0:
        return 60.0
    return max(1.0, math.ceil((1 - bucket.tokens) / rate))
