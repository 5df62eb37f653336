"""A bounded, durable spool of pending deliveries: an append-only journal under ``spool_dir``.

Every delivery the forwarder owes is a ``put`` record; success appends a
``del``, a failed attempt an ``upd`` (attempts, next attempt time). Only puts
are fsync'd, and concurrent puts share one fsync (group commit): the 2xx that
Falco waits for costs about one disk sync per burst instead of one per alert,
which is what lets a durable ack keep up with 1,000 alerts/s. A ``del``/``upd``
that was written but not synced can only be lost in a power cut, and then the
cost is one repeated delivery carrying the same idempotency key.

On start the journal is replayed (a torn last line from a crash is skipped and
counted), and rewritten with only the live entries: temp file, fsync, atomic
rename, directory fsync. The same compaction runs when dead records pile up.
When the spool is full the oldest entries are dropped and reported to
``on_drop``, because at the edge the newest alerts are the ones still
actionable. A claim set keeps each entry in one worker at a time, so a flush
and the background retry never deliver the same entry twice.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

JOURNAL = "spool.wal"


@dataclass
class Entry:
    id: str
    destination: str
    key: str  # idempotency key sent to the receiver
    payload: dict  # the alert (or dedup summary) as sent
    kind: str = "alert"
    route: str = ""
    created: float = field(default_factory=time.time)
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    not_before: float = 0.0  # from a receiver's Retry-After: even a forced flush waits for it

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, obj: dict) -> Entry:
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})


_PROCESS = uuid.uuid4().hex[:8]
_counter = itertools.count()


def new_entry_id(created: float) -> str:
    # Time first so ids sort oldest first; a per-process tag and counter keep them unique without
    # paying for os.urandom on every alert.
    return f"{int(created * 1e6):017d}-{_PROCESS}-{next(_counter):x}"


class SpoolBusy(RuntimeError):
    pass


def _line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class Spool:
    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_entries: int = 10000,
        max_age: float = 86400.0,
        fsync: bool = True,
        on_drop: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.dir = Path(directory)
        self.path = self.dir / JOURNAL
        self.max_entries = max_entries
        self.max_age = max_age
        self.fsync = fsync
        self.on_drop = on_drop or (lambda destination, reason, entry_id: None)
        self.clock = clock
        self._lock = threading.Lock()  # entries, claims, journal appends
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._claimed: set[str] = set()
        self._records = 0  # records in the journal file (for compaction)
        self.corrupt = 0
        self._sync_cv = threading.Condition()
        self._written = 0  # put records written (sequence numbers)
        self._synced = 0
        self._syncing = False
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = self._take_lock()
        self._replay()
        self._fd: int | None = None
        self._compact()

    def _take_lock(self) -> int:
        """One process per spool: two appenders would interleave and compact each other's journal away."""
        import fcntl

        fd = os.open(self.dir / "spool.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolBusy(f"spool directory {self.dir} is in use by another process") from None
        return fd

    # -- start-up -------------------------------------------------------------------------
    def _replay(self) -> None:
        (self.dir / (JOURNAL + ".tmp")).unlink(missing_ok=True)  # a compaction that never reached its rename
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                op = rec["op"]
                if op == "put":
                    e = Entry.from_dict(rec["e"])
                    self._entries[e.id] = e
                elif op == "upd":
                    known = self._entries.get(rec["id"])
                    if known is not None:
                        known.attempts, known.next_attempt = rec["attempts"], rec["next_attempt"]
                        known.last_error = rec["error"]
                        e.not_before = rec.get("not_before", 0.0)
                elif op == "del":
                    self._entries.pop(rec["id"], None)
            except (ValueError, KeyError, TypeError):
                self.corrupt += 1  # a torn last line from a crash mid-write, or damage: skip it
        self._entries = OrderedDict(sorted(self._entries.items(), key=lambda kv: (kv[1].created, kv[0])))

    def _compact(self) -> None:
        """Rewrite the journal with only live entries (caller holds no lock, or holds ``_lock``)."""
        tmp = self.dir / (JOURNAL + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"".join(_line({"op": "put", "e": e.to_dict()}) for e in self._entries.values()))
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self.fsync:
            self._fsync_dir()
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        self._records = len(self._entries)

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(self.dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # -- journal --------------------------------------------------------------------------
    def _append(self, data: bytes) -> None:
        # Called with _lock held. One os.write per record: no user-space buffer to lose on a crash.
        if self._fd is None:
            return  # closed at shutdown; what is live was already journalled
        os.write(self._fd, data)
        self._records += data.count(b"\n")
        if self._records > 1000 and self._records > 4 * len(self._entries):
            self._compact()

    def _wait_durable(self, seq: int) -> None:
        """Group commit: the first waiter fsyncs for everyone who wrote before it started."""
        with self._sync_cv:
            while self._synced < seq:
                if self._syncing:
                    self._sync_cv.wait()
                    continue
                self._syncing = True
                upto = self._written
                fd = self._fd
                self._sync_cv.release()
                try:
                    try:
                        if fd is not None:  # None: closed at shutdown, after its last fsync
                            os.fdatasync(fd)
                    except OSError:
                        # The fd was swapped by a compaction, which fsync'd everything itself.
                        pass
                finally:
                    self._sync_cv.acquire()
                    self._syncing = False
                    self._synced = max(self._synced, upto)
                    self._sync_cv.notify_all()

    # -- writing --------------------------------------------------------------------------
    def put(self, entry: Entry, *, claim: bool = False) -> None:
        """Store ``entry`` durably (returns after fsync); drop the oldest entries if full."""
        self.put_many([entry], claim=claim)

    def put_many(self, entries: list[Entry], *, claim: bool = False) -> None:
        if not entries:
            return
        dropped = []
        with self._lock:
            for e in entries:
                self._entries[e.id] = e
                if claim:
                    self._claimed.add(e.id)
            excess = len(self._entries) - self.max_entries
            if excess > 0:
                dropped = self._evict(excess)
            gone = {eid for eid, _ in dropped}
            new_ids = {e.id for e in entries}
            # A batch bigger than the whole spool keeps only its newest entries.
            data = b"".join(_line({"op": "put", "e": e.to_dict()}) for e in entries if e.id not in gone)
            data += b"".join(
                _line({"op": "del", "id": eid, "reason": "spool_full"}) for eid, _ in dropped if eid not in new_ids
            )
            with self._sync_cv:
                self._written += 1
                seq = self._written
            self._append(data)
        for eid, dest in dropped:
            self.on_drop(dest, "spool_full", eid)
        if self.fsync:
            self._wait_durable(seq)

    def _evict(self, n: int) -> list[tuple[str, str]]:
        # Prefer entries nobody is working on; if every entry is in a worker's hands the bound still holds.
        victims: list[tuple[str, str]] = []
        for want_claimed in (False, True):
            for eid, e in self._entries.items():
                if len(victims) >= n:
                    break
                if (eid in self._claimed) == want_claimed:
                    victims.append((eid, e.destination))
        for eid, _ in victims:
            del self._entries[eid]
            self._claimed.discard(eid)
        return victims

    def update(self, entry: Entry) -> None:
        """Record a failed attempt (count, next attempt time) if the entry is still spooled."""
        with self._lock:
            if entry.id not in self._entries:
                return
            self._entries[entry.id] = entry
            self._append(
                _line(
                    {
                        "op": "upd",
                        "id": entry.id,
                        "attempts": entry.attempts,
                        "next_attempt": entry.next_attempt,
                        "error": entry.last_error,
                        "not_before": entry.not_before,
                    }
                )
            )

    def remove(self, eid: str, reason: str = "delivered") -> bool:
        with self._lock:
            present = self._entries.pop(eid, None) is not None
            self._claimed.discard(eid)
            if present:
                self._append(_line({"op": "del", "id": eid, "reason": reason}))
        return present

    # -- reading --------------------------------------------------------------------------
    def claim_due(
        self,
        *,
        now: float | None = None,
        ignore_schedule: bool = False,
        limit: int | None = None,
        accept: Callable[[str], bool] | None = None,
    ) -> list[Entry]:
        """Claim and return entries whose next attempt is due, oldest first; expire old ones."""
        now = self.clock() if now is None else now
        expired, chosen = [], []
        with self._lock:
            for eid, e in self._entries.items():
                if eid in self._claimed:
                    continue
                if self.max_age and now - e.created > self.max_age:
                    expired.append((eid, e.destination))
                    continue
                if (not ignore_schedule and e.next_attempt > now) or e.not_before > now:
                    continue
                if accept is not None and not accept(e.destination):
                    continue
                chosen.append(e)
                self._claimed.add(eid)
                if limit is not None and len(chosen) >= limit:
                    break
            for eid, _ in expired:
                del self._entries[eid]
            if expired:
                self._append(b"".join(_line({"op": "del", "id": eid, "reason": "expired"}) for eid, _ in expired))
        for eid, dest in expired:
            self.on_drop(dest, "expired", eid)
        return chosen

    def release(self, eid: str) -> None:
        with self._lock:
            self._claimed.discard(eid)

    def contains(self, eid: str) -> bool:
        with self._lock:
            return eid in self._entries

    def depth(self) -> int:
        return len(self._entries)  # a single len() is atomic in CPython: no need to queue behind writers

    def depth_by_destination(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for e in self._entries.values():
                out[e.destination] = out.get(e.destination, 0) + 1
        return out

    def oldest_age(self) -> float:
        with self._lock:
            if not self._entries:
                return 0.0
            first = next(iter(self._entries.values()))
        return max(0.0, self.clock() - first.created)

    def unclaimed(self) -> list[Entry]:
        """Copies of the live entries no worker holds, oldest first."""
        with self._lock:
            return [Entry.from_dict(e.to_dict()) for eid, e in self._entries.items() if eid not in self._claimed]

    def claimed_count(self) -> int:
        with self._lock:
            return len(self._claimed)

    def snapshot(self) -> list[Entry]:
        """Copies of the live entries, oldest first (for status pages and tests)."""
        with self._lock:
            return [Entry.from_dict(e.to_dict()) for e in self._entries.values()]
