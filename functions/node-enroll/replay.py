"""Replay and clock-skew protection for signed enrollment requests.

A signature is only accepted once (by nonce) and only within ``max_skew``
seconds of this pod's clock. Seen nonces are kept exactly as long as a request
carrying them could still pass the skew check, so the cache is bounded by the
request rate. When it is full of still-live nonces the guard refuses new
requests instead of forgetting one, because forgetting would reopen a replay
window.

The cache lives in the pod (node-enroll runs one replica). A restart would
empty it, so requests signed before this process started are refused: a
captured request cannot be replayed across a restart. Clients simply re-sign.
"""
from __future__ import annotations

import heapq
import threading
import time


class ReplayRejected(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ReplayGuard:
    def __init__(self, *, max_skew: int = 300, max_entries: int = 10000, clock=time.time, started_at: float | None = None):
        self.max_skew = max_skew
        self.max_entries = max_entries
        self._clock = clock
        self.started_at = clock() if started_at is None else started_at
        self._seen: dict[str, float] = {}  # nonce -> forget-after
        self._expiry: list[tuple[float, str]] = []  # min-heap of (forget-after, nonce)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def check_and_record(self, timestamp: int, nonce: str) -> None:
        """Raise ReplayRejected unless (timestamp, nonce) is fresh; otherwise remember the nonce."""
        now = self._clock()
        skew = timestamp - now
        if abs(skew) > self.max_skew:
            direction = "ahead of" if skew > 0 else "behind"
            raise ReplayRejected(401, f"request timestamp is {abs(int(skew))}s {direction} the server clock "
                                      f"(limit {self.max_skew}s); check the node's time sync and sign again")
        if timestamp < int(self.started_at):
            raise ReplayRejected(401, "request was signed before the service (re)started; sign it again")
        with self._lock:
            self._expire(now)
            if nonce in self._seen:
                raise ReplayRejected(401, "replayed request: this nonce was already used")
            if len(self._seen) >= self.max_entries:
                raise ReplayRejected(503, "too many recent enrollment requests to track safely; retry in a minute")
            # A nonce can be replayed for as long as its timestamp passes the skew check.
            until = max(timestamp + self.max_skew, now) + 1
            self._seen[nonce] = until
            heapq.heappush(self._expiry, (until, nonce))

    def _expire(self, now: float) -> None:
        # Forget-after depends on each client's timestamp, so arrival order is not
        # expiry order: a heap keeps this O(log n) per forgotten nonce.
        while self._expiry and self._expiry[0][0] < now:
            _, nonce = heapq.heappop(self._expiry)
            self._seen.pop(nonce, None)
