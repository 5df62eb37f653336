"""Delivery: each destination's worker threads, attempts, retries with backoff, rescheduling and flush.

The forwarder decides what goes where; this is its retry stage (as Alertmanager's
RetryStage wraps one integration): it queues the forwarder's entries to their
destination's workers, sends them with the destination's sender, retries inline
within the destination's budget, and leaves what still failed in the spool with
a next-attempt time, for the tick (``enqueue_due``) or ``flush``. A worker only
ever holds up its own destination.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .destinations import Result, Sender, make_sender
from .edgeguard import log
from .edgeguard.falco.alert import priority_number
from .edgeguard.metrics import Metrics
from .edgeguard.routing import insecure_url
from .edgeguard.routing.destinations import TYPES
from .spool import Entry, Spool

if TYPE_CHECKING:
    from .forwarder import Settings


class Destination:
    """One destination: its options and sender, its queue, its health. Delivery defaults live here only."""

    DEFAULTS = {"timeout": 5.0, "retries": 3, "backoff": 0.2, "backoff_max": 10.0, "budget": 10.0, "concurrency": 2}

    def __init__(self, name: str, opts: dict, *, queue_max: int):
        self.name = name
        self.queue: queue.Queue = queue.Queue(maxsize=queue_max)
        self.down_until = 0.0
        self.consecutive_failures = 0
        self.last_error = ""
        self.last_success = 0.0
        self.workers = 0
        # The health fields above are written by every worker thread of this destination, by flush and by
        # reconfigure: read-modify-writes (+= 1, max()) must not interleave.
        self.lock = threading.Lock()
        self.apply(opts)

    def apply(self, opts: dict) -> Sender | None:
        """Take (new) resolved options with a sender built for them; return the sender they replace, to close."""
        timeout = float(opts.get("timeout", self.DEFAULTS["timeout"]))
        old: Sender | None = getattr(self, "sender", None)  # None the first time, from __init__
        self.sender: Sender = make_sender(self.name, opts, timeout=timeout)
        self.opts = opts
        self.enabled = opts["enabled"]
        self.disabled_reason = opts["disabled_reason"]
        self.timeout = timeout
        self.retries = int(opts.get("retries", self.DEFAULTS["retries"]))
        self.backoff = float(opts.get("backoff", self.DEFAULTS["backoff"]))
        self.backoff_max = float(opts.get("backoff_max", self.DEFAULTS["backoff_max"]))
        self.budget = float(opts.get("budget", self.DEFAULTS["budget"]))
        self.concurrency = int(opts.get("concurrency", self.DEFAULTS["concurrency"]))
        self.min_priority = priority_number(opts["min_priority"]) if opts.get("min_priority") else None
        if TYPES[opts["type"]].needs_url and opts.get("url") and insecure_url(opts["url"]):
            log.warning(
                "config.insecure_http",
                destination=self.name,
                problem="insecure_http: true: alerts, tokens and signatures go out in cleartext",
            )
        return old

    def record_success(self, now: float) -> None:
        with self.lock:
            self.consecutive_failures = 0
            self.down_until = 0.0
            self.last_success = now

    def record_error(self, error: str) -> None:
        with self.lock:
            self.last_error = error

    def record_backoff(self, until: float) -> None:
        with self.lock:
            self.consecutive_failures += 1
            self.down_until = max(self.down_until, until)

    def reset_health(self) -> None:
        with self.lock:
            self.down_until = 0.0
            self.last_error = ""


class Delivery:
    def __init__(
        self,
        destinations: dict[str, Destination],
        spool: Spool,
        metrics: Metrics,
        settings: Settings,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        history=None,
    ):
        self.destinations = destinations  # the forwarder's, updated in place by reconfigure
        self.history = history  # history.History: each delivery's state for GET /alerts
        self.spool, self.metrics, self.settings = spool, metrics, settings
        self.clock, self.sleep = clock, sleep
        self.running = False
        self.accepting = True  # False after stop_workers: deliveries are only made durable (for the handover)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.running = True
        for dest in self.destinations.values():
            if dest.enabled:
                self.start_workers(dest)

    def start_workers(self, dest: Destination) -> None:
        for i in range(dest.workers, dest.concurrency):
            t = threading.Thread(target=self._worker, args=(dest,), name=f"deliver-{dest.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        dest.workers = max(dest.workers, dest.concurrency)

    def stop_workers(self, deadline: float) -> bool:
        """Stop delivering (shutdown handover): no new attempts; wait for the ones in flight until ``deadline``
        (time.monotonic()). From now on ``commit`` only makes deliveries durable. True when all workers ended."""
        self._end_workers(deadline)
        # Queued entries were claimed for the workers that are gone: they go back to the spool's pool.
        for dest in self.destinations.values():
            while True:
                try:
                    entry = dest.queue.get_nowait()
                except queue.Empty:
                    break
                if entry is not None:
                    self.spool.release(entry.id)
        return not any(t.is_alive() for t in self._threads)

    def _end_workers(self, deadline: float) -> None:
        """No new attempts; a stop marker for every worker; wait for them until ``deadline``."""
        self.accepting = False
        self._stop.set()
        for dest in self.destinations.values():
            for _ in range(dest.workers):
                try:
                    dest.queue.put_nowait(None)
                except queue.Full:
                    pass
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def close(self, deadline: float) -> None:
        """Stop the workers (waiting until ``deadline``, a time.monotonic() value) and close the senders."""
        self._end_workers(deadline)
        for dest in self.destinations.values():
            dest.sender.close()

    def commit(self, pending: list[tuple[Destination, Entry]]) -> None:
        """Make one request's deliveries durable with one journal write (and one fsync), then queue them."""
        if not pending:
            return
        if not self.accepting:
            self.spool.put_many([e for _, e in pending])
            return
        now = self.clock()
        durable = self.settings.ack_mode == "durable"
        parked, claimed, direct = [], [], []
        for dest, entry in pending:
            if dest.down_until > now:
                # Known to be failing: don't spend a worker on it, the tick retries it when the back-off ends.
                entry.next_attempt = dest.down_until
                parked.append((dest, entry))
            elif durable:
                claimed.append((dest, entry))
            else:
                direct.append((dest, entry))
        if parked:
            self.spool.put_many([e for _, e in parked])
            for dest, _ in parked:
                self.metrics.inc("spooled_total", {"destination": dest.name})
        if claimed:
            self.spool.put_many([e for _, e in claimed], claim=True)
        for dest, entry in claimed + direct:
            try:
                dest.queue.put_nowait(entry)
            except queue.Full:
                if durable:
                    self.spool.release(entry.id)
                else:
                    self.spool.put(entry)
                self.metrics.inc("spooled_total", {"destination": dest.name})

    def _worker(self, dest: Destination) -> None:
        while not self._stop.is_set():
            entry = dest.queue.get()
            if entry is None:
                return
            if self._stop.is_set():  # stopped while it waited: it stays in the spool (for the handover)
                self.spool.release(entry.id)
                dest.queue.task_done()
                return
            if self.settings.ack_mode == "durable" and not self.spool.contains(entry.id):
                dest.queue.task_done()  # dropped from a full spool while it waited: counted there
                continue
            try:
                self._deliver(dest, entry, inline_retries=entry.attempts == 0)
            except Exception as exc:  # noqa: BLE001 - a worker must survive any one bad delivery
                log.error("delivery.crashed", destination=dest.name, error=type(exc).__name__)
                self._reschedule(dest, entry, Result(False, None, True, None, type(exc).__name__))
            finally:
                dest.queue.task_done()

    def _attempt(self, dest: Destination, entry: Entry) -> Result:
        if entry.attempts > 0:
            self.metrics.inc("retried_total", {"destination": dest.name})
        entry.attempts += 1
        res = dest.sender.send(entry.payload, entry.key)
        if self.history is not None:
            self.history.update(
                entry.id,
                "delivered" if res.ok else "rejected" if not res.retryable else "retrying",
                attempts=entry.attempts,
                error=None if res.ok else res.error,
            )
        if res.ok:
            dest.record_success(self.clock())
            self.metrics.inc("outputs_total", {"destination": dest.name, "status": "ok"})
            self.metrics.observe("delivery_seconds", max(0.0, self.clock() - entry.created), {"destination": dest.name})
        else:
            self.metrics.inc("outputs_total", {"destination": dest.name, "status": "error"})
            dest.record_error(res.error)
        return res

    def _deliver(self, dest: Destination, entry: Entry, *, inline_retries: bool) -> bool:
        """Send one entry; retry inline within the destination's budget; spool it if that is not enough."""
        start = self.clock()
        tries = 0
        while True:
            down_until = dest.down_until
            if tries == 0 and down_until > self.clock():
                # Another delivery just found it failing: wait for the back-off instead of piling on.
                return self._reschedule(dest, entry, None, wait=down_until - self.clock())
            res = self._attempt(dest, entry)
            tries += 1
            if res.ok:
                self._finish(entry)
                return True
            if not res.retryable:
                log.warning(
                    "delivery.rejected",
                    destination=dest.name,
                    status=res.status,
                    error=res.error,
                    idempotency_key=entry.key,
                )
                self.metrics.inc("dropped_total", {"destination": dest.name, "reason": "rejected"})
                self._finish(entry)
                return False
            wait = res.retry_after if res.retry_after is not None else self._backoff(dest, tries)
            remaining = dest.budget - (self.clock() - start)
            if not inline_retries or tries > dest.retries or wait > remaining or self._stop.is_set():
                return self._reschedule(dest, entry, res, wait=wait)
            self.sleep(wait)

    def _backoff(self, dest: Destination, attempt: int) -> float:
        # Full jitter: spreads retries of many alerts so a recovering receiver is not stampeded.
        cap = min(dest.backoff_max, dest.backoff * (2 ** (attempt - 1)))
        return random.uniform(cap / 2, cap)

    def _reschedule(self, dest: Destination, entry: Entry, res: Result | None, *, wait: float | None = None) -> bool:
        """Leave ``entry`` in the spool for a later attempt; ``res`` is None when no attempt was made."""
        now = self.clock()
        if res is not None:
            spool_wait = min(self.settings.spool_backoff_max, dest.backoff * (2 ** min(entry.attempts, 20)))
            spool_wait = random.uniform(spool_wait / 2, spool_wait)
            wait = max(wait or 0.0, spool_wait)
            entry.last_error = res.error
        wait = max(wait or 0.0, 0.0)
        entry.next_attempt = now + wait
        if res is not None and res.retry_after is not None:
            entry.not_before = now + res.retry_after
        if res is not None:
            dest.record_backoff(entry.next_attempt)
        if self.spool.contains(entry.id):
            self.spool.update(entry)
            self.spool.release(entry.id)
        elif self.settings.ack_mode == "durable":
            return False  # dropped from a full spool meanwhile (and counted there): don't resurrect it
        else:
            self.spool.put(entry)
        self.metrics.inc("spooled_total", {"destination": dest.name})
        if res is not None:
            log.warning(
                "delivery.deferred",
                destination=dest.name,
                error=res.error,
                status=res.status,
                attempts=entry.attempts,
                retry_in=round(wait, 3),
                idempotency_key=entry.key,
            )
        return False

    def _finish(self, entry: Entry) -> None:
        self.spool.remove(entry.id)

    def enqueue_due(self) -> int:
        if not self.accepting:
            return 0
        usable = {
            n for n, d in self.destinations.items() if d.enabled and d.down_until <= self.clock() and not d.queue.full()
        }
        if not usable:
            return 0
        n = 0
        for entry in self.spool.claim_due(accept=lambda dname: dname in usable, limit=self.settings.queue_max):
            dest = self.destinations.get(entry.destination)
            if dest is None or not dest.enabled:
                self.spool.release(entry.id)
                continue
            try:
                dest.queue.put_nowait(entry)
                n += 1
            except queue.Full:
                self.spool.release(entry.id)
        return n

    def flush(self, *, ignore_schedule: bool = False) -> dict:
        """Try spooled deliveries now, in the calling thread, within ``flush_budget``."""
        deadline = time.monotonic() + self.settings.flush_budget
        counts = {"attempted": 0, "delivered": 0, "deferred": 0, "rejected": 0, "skipped_destination_down": 0}
        failed_now: set[str] = set()
        entries = self.spool.claim_due(
            ignore_schedule=ignore_schedule, accept=lambda d: d in self.destinations and self.destinations[d].enabled
        )
        for entry in entries:
            dest = self.destinations[entry.destination]
            if time.monotonic() > deadline or entry.destination in failed_now:
                # One failed probe per destination per flush: the rest would fail the same way.
                self.spool.release(entry.id)
                counts["skipped_destination_down"] += entry.destination in failed_now
                continue
            counts["attempted"] += 1
            res = self._attempt(dest, entry)
            if res.ok:
                self._finish(entry)
                counts["delivered"] += 1
            elif not res.retryable:
                self.metrics.inc("dropped_total", {"destination": dest.name, "reason": "rejected"})
                self._finish(entry)
                counts["rejected"] += 1
            else:
                failed_now.add(entry.destination)
                self._reschedule(dest, entry, res, wait=res.retry_after)
                counts["deferred"] += 1
        counts["spool_depth"] = self.spool.depth()
        return counts
