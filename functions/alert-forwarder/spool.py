"""A bounded, durable spool of pending deliveries: one JSON file per (alert, destination).

Files are written to a temporary name, fsync'd and renamed into place, so a
crash leaves either the old entry or the new one, never half of one. On start
the directory is scanned, so entries survive a process restart. When the spool
is full the oldest entries are dropped (and reported to ``on_drop``), because at
the edge the newest alerts are the ones an operator can still act on.

An in-memory claim set keeps one entry in one worker at a time, so a flush and
the background retry never deliver the same entry twice.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Entry:
    id: str
    destination: str
    key: str                      # idempotency key sent to the receiver
    payload: dict                 # the alert (or dedup summary) as sent
    kind: str = "alert"
    route: str = ""
    created: float = field(default_factory=time.time)
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "Entry":
        obj = json.loads(data)
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})


def new_entry_id(created: float) -> str:
    # Time first so a directory listing sorts oldest first.
    return f"{int(created * 1e6):017d}-{uuid.uuid4().hex[:12]}"


@dataclass
class _Meta:
    destination: str
    created: float
    next_attempt: float


class Spool:
    def __init__(self, directory: str | os.PathLike, *, max_entries: int = 10000, max_age: float = 86400.0,
                 fsync: bool = True, on_drop: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.dir = Path(directory)
        self.max_entries = max_entries
        self.max_age = max_age
        self.fsync = fsync
        self.on_drop = on_drop or (lambda destination, reason: None)
        self.clock = clock
        self._lock = threading.Lock()
        self._index: OrderedDict[str, _Meta] = OrderedDict()
        self._claimed: set[str] = set()
        self.corrupt = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self._load()

    # -- start-up -------------------------------------------------------------------------
    def _load(self) -> None:
        metas = []
        for p in self.dir.iterdir():
            if p.name.startswith(".tmp-"):
                p.unlink(missing_ok=True)  # a write that never reached its rename
                continue
            if not p.name.endswith(".json"):
                continue
            try:
                e = Entry.from_json(p.read_bytes())
            except (OSError, ValueError, TypeError):
                self.corrupt += 1
                p.rename(p.with_suffix(".corrupt"))
                continue
            metas.append((p.stem, _Meta(e.destination, e.created, e.next_attempt)))
        for eid, meta in sorted(metas):
            self._index[eid] = meta

    # -- writing --------------------------------------------------------------------------
    def _path(self, eid: str) -> Path:
        return self.dir / f"{eid}.json"

    def _write(self, entry: Entry) -> None:
        tmp = self.dir / f".tmp-{entry.id}-{threading.get_ident()}"
        data = entry.to_json()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path(entry.id))
        if self.fsync:
            self._fsync_dir()

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

    def put(self, entry: Entry, *, claim: bool = False) -> None:
        """Store ``entry`` durably; make room by dropping the oldest unclaimed entries."""
        self._make_room(1)
        self._write(entry)
        with self._lock:
            self._index[entry.id] = _Meta(entry.destination, entry.created, entry.next_attempt)
            if claim:
                self._claimed.add(entry.id)

    def update(self, entry: Entry) -> None:
        """Rewrite an entry (attempt count, next attempt time) if it is still spooled."""
        with self._lock:
            if entry.id not in self._index:
                return
        self._write(entry)
        with self._lock:
            if entry.id in self._index:
                self._index[entry.id] = _Meta(entry.destination, entry.created, entry.next_attempt)

    def remove(self, eid: str) -> bool:
        with self._lock:
            present = self._index.pop(eid, None) is not None
            self._claimed.discard(eid)
        if present:
            self._path(eid).unlink(missing_ok=True)
        return present

    def _make_room(self, n: int) -> None:
        victims = []
        with self._lock:
            excess = len(self._index) + n - self.max_entries
            if excess <= 0:
                return
            # Prefer entries nobody is working on; if every entry is in a worker's hands the bound still holds.
            for pass_claimed in (False, True):
                for eid, meta in self._index.items():
                    if len(victims) >= excess:
                        break
                    if (eid in self._claimed) == pass_claimed:
                        victims.append((eid, meta.destination))
            for eid, _ in victims:
                del self._index[eid]
                self._claimed.discard(eid)
        for eid, dest in victims:
            self._path(eid).unlink(missing_ok=True)
            self.on_drop(dest, "spool_full")

    # -- reading --------------------------------------------------------------------------
    def load(self, eid: str) -> Entry | None:
        try:
            return Entry.from_json(self._path(eid).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            self.corrupt += 1
            self.remove(eid)
            return None

    def claim_due(self, *, now: float | None = None, ignore_schedule: bool = False, limit: int | None = None,
                  accept: Callable[[str], bool] | None = None) -> list[Entry]:
        """Claim and return entries whose next attempt is due, oldest first; expire old ones."""
        now = self.clock() if now is None else now
        expired, chosen = [], []
        with self._lock:
            for eid, meta in self._index.items():
                if eid in self._claimed:
                    continue
                if self.max_age and now - meta.created > self.max_age:
                    expired.append((eid, meta.destination))
                    continue
                if not ignore_schedule and meta.next_attempt > now:
                    continue
                if accept is not None and not accept(meta.destination):
                    continue
                chosen.append(eid)
                self._claimed.add(eid)
                if limit is not None and len(chosen) >= limit:
                    break
            for eid, _ in expired:
                del self._index[eid]
        for eid, dest in expired:
            self._path(eid).unlink(missing_ok=True)
            self.on_drop(dest, "expired")
        entries = []
        for eid in chosen:
            e = self.load(eid)
            if e is None:
                self.release(eid)
            else:
                entries.append(e)
        return entries

    def release(self, eid: str) -> None:
        with self._lock:
            self._claimed.discard(eid)

    def contains(self, eid: str) -> bool:
        with self._lock:
            return eid in self._index

    def depth(self) -> int:
        with self._lock:
            return len(self._index)

    def depth_by_destination(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for meta in self._index.values():
                out[meta.destination] = out.get(meta.destination, 0) + 1
        return out

    def oldest_age(self) -> float:
        with self._lock:
            if not self._index:
                return 0.0
            first = next(iter(self._index.values()))
        return max(0.0, self.clock() - first.created)
