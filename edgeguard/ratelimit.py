"""Token-bucket rate limits, per caller key and overall, with bounded memory."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``take()`` returns 0.0 or the seconds until a token is due."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate, self.burst, self._clock = rate, float(burst), clock
        self._tokens, self._stamp = float(burst), clock()
        self._lock = threading.Lock()

    def take(self, now: float | None = None) -> float:
        with self._lock:
            return self._take_locked(self._clock() if now is None else now)

    def _take_locked(self, now: float) -> float:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate if self.rate > 0 else float("inf")


class KeyedRateLimiter:
    """One bucket per key (e.g. source address) plus an overall bucket.

    At most ``max_keys`` keys are remembered; forgetting the least recently seen
    one only gives it a full bucket again, and the overall bucket still holds.
    """

    def __init__(
        self,
        *,
        per_key_rate: float,
        per_key_burst: float,
        overall_rate: float | None = None,
        overall_burst: float | None = None,
        max_keys: int = 4096,
        clock=time.monotonic,
    ):
        self._clock = clock
        self._per = (per_key_rate, per_key_burst)
        self._overall: TokenBucket | None = None
        if overall_rate is not None:
            if overall_burst is None:
                raise TypeError("overall_rate needs overall_burst")
            self._overall = TokenBucket(overall_rate, overall_burst, clock)
        self._keys: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max = max_keys
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0.0 when allowed (one token charged to the key and overall), else the seconds to wait."""
        now = self._clock()
        with self._lock:
            bucket = self._keys.get(key)
            if bucket is None:
                bucket = self._keys[key] = TokenBucket(*self._per, clock=self._clock)
                if len(self._keys) > self._max:
                    self._keys.popitem(last=False)
            else:
                self._keys.move_to_end(key)
            wait = bucket._take_locked(now)
            if wait or self._overall is None:
                return wait
            return self._overall.take(now)
