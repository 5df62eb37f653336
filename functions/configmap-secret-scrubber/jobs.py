"""Runs accepted now and done in the background: a bounded queue, one worker, idempotent submission.

alert-forwarder calls the scrubber synchronously through the gateway (OpenFaaS CE's async queue would log
its token, and never retries), so the scrubber answers 202 with a job id at once and moves in the
background; ``GET /jobs/<id>`` shows the result. of-watchdog (http mode) does not stop a thread the
request left behind: the job outlives the request and the watchdog's exec_timeout/write_timeout
(tests/scrubber/test_served.py shows it on the real watchdog).

Idempotent: a job with the same ``Idempotency-Key`` (alert-forwarder sends the alert's hash) is the same
job whatever its state; a target already waiting in the queue is that job too (it has read nothing yet,
so it sees every change). A target whose job is *running* gets one new job after it, since the ConfigMap
may have changed after the running one read it; a re-run of a converged ConfigMap writes nothing.

Bounded: at most ``max_queued`` jobs wait (the next is refused: the caller retries after Retry-After),
one runs at a time (so moves never race each other), and the last ``KEEP`` finished jobs are kept for
their status. Jobs live in this process only: a restart forgets the queue (the ConfigMap still holds the
credential; the next alert or sweep finds it).
"""

from __future__ import annotations

import collections
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

KEEP = 64  # finished jobs kept for GET /jobs/<id>
IDLE_SECONDS = 30  # the worker thread ends when nothing came for this long; the next job starts it again


class Full(Exception):
    """The queue holds max_queued jobs already."""


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


@dataclass
class Job:
    id: str
    target: dict
    mode: str
    trigger: str
    key: str | None  # the caller's Idempotency-Key
    state: str = "queued"  # queued | running | done | failed
    accepted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: dict | None = None
    error: dict | None = None  # {"status": HTTP status to answer, "error": reason}
    duplicates: int = 0
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def coalesce_key(self) -> tuple:
        return (self.mode, tuple(sorted(self.target.items())))

    def public(self, with_result: bool = True) -> dict:
        out = {
            "id": self.id,
            "state": self.state,
            "trigger": self.trigger,
            "mode": self.mode,
            "target": self.target,
            "accepted_at": _iso(self.accepted),
            "started_at": _iso(self.started),
            "finished_at": _iso(self.finished),
            "duplicates": self.duplicates,
        }
        if with_result and self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class Jobs:
    """``run(job)`` returns the result dict or raises JobFailed; anything else is logged by ``on_crash``."""

    def __init__(
        self,
        run: Callable[[Job], dict],
        *,
        max_queued: int,
        on_crash: Callable[[Job, Exception], None],
        idle_seconds: float = IDLE_SECONDS,
    ):
        self._run, self._on_crash = run, on_crash
        self.max_queued = max_queued
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._queued: dict[tuple, Job] = {}  # coalesce key -> waiting job
        self._by_key: dict[str, Job] = {}  # Idempotency-Key -> job (while kept)
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._running: Job | None = None
        self._worker: threading.Thread | None = None

    def existing(self, target: dict, mode: str, trigger: str, key: str | None) -> Job | None:
        """The job this submission would be (same Idempotency-Key, or the same target waiting), else None."""
        probe = Job("", target, mode, trigger, key)
        with self._lock:
            return self._existing(probe)

    def _existing(self, probe: Job) -> Job | None:
        if probe.key and probe.key in self._by_key:
            return self._by_key[probe.key]
        return self._queued.get(probe.coalesce_key)

    def submit(self, target: dict, mode: str, trigger: str, key: str | None = None) -> tuple[Job, bool]:
        """(the job, True if it is new). Raises Full."""
        job = Job(secrets.token_hex(8), target, mode, trigger, key)
        with self._lock:
            same = self._existing(job)
            if same is not None:
                same.duplicates += 1
                return same, False
            if len(self._queued) >= self.max_queued:
                raise Full()
            self._queued[job.coalesce_key] = job
            if key:
                self._by_key[key] = job
            self._jobs[job.id] = job
            self._forget_old()
            self._queue.put(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="scrubber-jobs", daemon=True)
                self._worker.start()
        return job, True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    def depth(self) -> tuple[int, int]:
        """(waiting, running)."""
        with self._lock:
            return len(self._queued), int(self._running is not None)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in ("done", "failed")]
        for old in finished[: max(0, len(finished) - KEEP)]:
            del self._jobs[old.id]
            if old.key and self._by_key.get(old.key) is old:
                del self._by_key[old.key]

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            with self._lock:
                self._queued.pop(job.coalesce_key, None)
                self._running = job
                job.state, job.started = "running", time.time()
            try:
                result, error = self._run(job), None
            except JobFailed as failed:
                result, error = None, {"status": failed.status, "error": failed.reason, **failed.extra}
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one job
                self._on_crash(job, exc)
                result, error = None, {"status": 500, "error": "internal error"}
            with self._lock:
                job.result, job.error = result, error
                job.state, job.finished = ("failed" if error else "done"), time.time()
                self._running = None
                self._forget_old()
            job.done.set()


class JobFailed(Exception):
    """A run that could not start (no credentials, the listing failed): the status a synchronous caller gets."""

    def __init__(self, status: int, reason: str, **extra):
        super().__init__(reason)
        self.status, self.reason, self.extra = status, reason, extra
