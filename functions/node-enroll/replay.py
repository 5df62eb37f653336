"""Replay and clock-skew protection for signed enrollment requests, across restarts too.

A signature is only accepted once (by nonce) and only while its timestamp is at most ``max_skew`` seconds
behind this pod's clock and at most ``max_ahead`` seconds ahead of it. Seen nonces are kept exactly as
long as a request carrying them could still pass the skew check, so the cache is bounded by the request
rate. When it is full of still-live nonces the guard refuses new requests instead of forgetting one,
because forgetting would reopen a replay window.

A restart must not forget them either (issue 17 §1: a request signed 240 s ahead was accepted again after
a restart, 201 with a new join token). Two rules hold it:

* requests signed before this process started are refused, so what was accepted before the restart and
  signed earlier is dead at once;
* what remains (a request signed ahead of the clock, or in the second the process started) is covered by
  ``PersistedWindow``: every accepted nonce is written, before anything is issued for it, to a Secret in
  node-enroll's own namespace, and a new process loads that window before it accepts its first request.
  ``max_ahead`` (30 s by default) keeps that window, and so the Secret, small.

Clients simply re-sign.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable


class ReplayRejected(Exception):
    def __init__(self, status: int, reason: str, code: str = "replay"):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code  # the metric's reason (metrics.py)


class ReplayGuard:
    def __init__(
        self,
        *,
        max_skew: int = 300,
        max_ahead: int = 30,
        max_entries: int = 10000,
        clock=time.time,
        started_at: float | None = None,
    ):
        self.max_skew = max_skew
        self.max_ahead = min(max_ahead, max_skew)
        self.max_entries = max_entries
        self._clock = clock
        self.started_at = clock() if started_at is None else started_at
        self._seen: dict[str, float] = {}  # nonce -> forget-after
        self._expiry: list[tuple[float, str]] = []  # min-heap of (forget-after, nonce)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def check_time(self, timestamp: int) -> None:
        """Raise ReplayRejected unless ``timestamp`` is inside the skew window and after the process started."""
        now = self._clock()
        skew = timestamp - now
        if skew > self.max_ahead or -skew > self.max_skew:
            direction, limit = ("ahead of", self.max_ahead) if skew > 0 else ("behind", self.max_skew)
            raise ReplayRejected(
                401,
                f"request timestamp is {abs(int(skew))}s {direction} the server clock "
                f"(limit {limit}s); check the node's time sync and sign again",
                "clock_skew",
            )
        if timestamp < int(self.started_at):
            raise ReplayRejected(
                401, "request was signed before the service (re)started; sign it again", "signed_before_start"
            )

    def check_and_record(self, timestamp: int, nonce: str) -> float:
        """Raise ReplayRejected unless (timestamp, nonce) is fresh; otherwise remember the nonce and return the
        time after which it may be forgotten."""
        self.check_time(timestamp)
        now = self._clock()
        with self._lock:
            self._expire(now)
            if nonce in self._seen:
                raise ReplayRejected(401, "replayed request: this nonce was already used")
            if len(self._seen) >= self.max_entries:
                raise ReplayRejected(
                    503, "too many recent enrollment requests to track safely; retry in a minute", "nonce_cache_full"
                )
            # A nonce can be replayed for as long as its timestamp passes the skew check.
            until = max(timestamp + self.max_skew, now) + 1
            self._seen[nonce] = until
            heapq.heappush(self._expiry, (until, nonce))
            return until

    def restore(self, window: dict[str, float]) -> None:
        """Remember nonces an earlier process accepted (their forget-after times), as if seen here."""
        now = self._clock()
        with self._lock:
            for nonce, until in window.items():
                if until >= now and until > self._seen.get(nonce, 0):
                    self._seen[nonce] = until
                    heapq.heappush(self._expiry, (until, nonce))

    def _expire(self, now: float) -> None:
        # Forget-after depends on each client's timestamp, so arrival order is not
        # expiry order: a heap keeps this O(log n) per forgotten nonce.
        while self._expiry and self._expiry[0][0] < now:
            until, nonce = heapq.heappop(self._expiry)
            if self._seen.get(nonce) == until:
                del self._seen[nonce]


class PersistedWindow:
    """The accepted nonces, kept where the next process finds them.

    ``read()`` returns the stored {nonce: forget-after}; ``write(add, drop)`` stores the ``add`` entries and
    removes the ``drop`` nonces in one call (the store makes it atomic). Nothing is cached as loaded until a
    read succeeded, so a process that cannot read the window accepts nothing (the caller answers 5xx).
    """

    PRUNE = 64  # expired entries dropped per write, so the stored window never grows past the live one for long

    def __init__(
        self,
        guard: ReplayGuard,
        read: Callable[[], dict[str, float]],
        write: Callable[[dict[str, float], list[str]], None],
        clock=time.time,
    ):
        self.guard = guard
        self._read, self._write, self._clock = read, write, clock
        self._known: dict[str, float] | None = None
        self._lock = threading.Lock()

    def ensure_loaded(self) -> None:
        with self._lock:
            if self._known is None:
                known = self._read()
                self.guard.restore(known)
                self._known = dict(known)

    def record(self, nonce: str, until: float) -> None:
        """Store ``nonce`` before anything is done for its request; raises what ``write`` raises."""
        self.ensure_loaded()
        now = self._clock()
        with self._lock:
            known = self._known if self._known is not None else {}
            expired = [n for n, u in known.items() if u < now][: self.PRUNE]
        self._write({nonce: until}, expired)
        with self._lock:
            known = self._known if self._known is not None else {}
            for n in expired:
                known.pop(n, None)
            known[nonce] = until
