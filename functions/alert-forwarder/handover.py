"""The spool across redeploys and evictions (issue 11 §3): what a terminating pod could not deliver outlives it.

OpenFaaS CE gives a function pod only an emptyDir at /tmp, deleted with the pod: every `faas-cli up` that changes
the spec (CE rolls with maxSurge 1 / maxUnavailable 0), every drain and every eviction would delete the
undelivered alerts. So on SIGTERM (of-watchdog passes it on at once, then keeps serving for healthcheck_interval;
the kubelet kills at terminationGracePeriodSeconds, 30 s on CE) the forwarder drains what it can, stops its
workers, and *moves* what is left into the Secret ``alert-forwarder-spool-handover`` in its own namespace:
written with the resourceVersion it read (a concurrent writer gets 409 and merges again), then removed from
the local spool. Alerts that still reach the terminating pod are written through the same way before their 2xx.

Every running pod watches that Secret; one that finds entries written by another process imports them into its
own durable spool, merges the open dedup windows, then clears the Secret (again conditional on the
resourceVersion it imported). Entries keep their ids, so an entry seen twice (a clear that lost a race) is
imported once. The only duplicates possible are the documented ones: a crash of the importing pod between its
import and its clear, or of the exporting pod between the API write and its local removal; every delivery
carries the same Idempotency-Key either way.

Payload: gzip'd JSON in the Secret's data (``entries``, ``dedup``) plus ``meta`` (writer, time, counts). A
Secret holds at most 1 MiB of data; ``MAX_PAYLOAD`` keeps a margin, and what does not fit (the oldest entries)
stays in the local spool, counted, and is lost if the pod is deleted.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .kubesecret import KubeError, SecretClient, Watcher, decode_data
from .spool import Entry

if TYPE_CHECKING:
    from .forwarder import Forwarder

MAX_PAYLOAD = 900_000


def _pack(obj) -> bytes:
    return gzip.compress(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), 6)


def _unpack(data: bytes | None, default):
    if not data:
        return default
    return json.loads(gzip.decompress(data))


def encode(
    entries: list[dict], windows: list[dict], writer: str, *, limit: int = MAX_PAYLOAD
) -> tuple[dict[str, str], list[str]]:
    """(Secret data, ids left out because the payload would pass ``limit``: the oldest go first)."""
    import base64

    entries = sorted(entries, key=lambda e: (e["created"], e["id"]))
    dedup = _pack(windows)
    keep = len(entries)
    while True:
        body = _pack(entries[len(entries) - keep :])
        if len(body) + len(dedup) <= limit or keep == 0:
            break
        # shrink in proportion to the overshoot, at least one entry per round
        keep = min(keep - 1, int(keep * (limit - len(dedup)) / max(1, len(body)) * 0.98))
        keep = max(0, keep)
    kept = entries[len(entries) - keep :]
    left = [e["id"] for e in entries[: len(entries) - keep]]
    meta = {
        "writer": writer,
        "written_at": time.time(),
        "entries": len(kept),
        "windows": len(windows),
        "bytes": len(body) + len(dedup),
    }
    data = {"entries": body, "dedup": dedup, "meta": json.dumps(meta).encode()}
    return {k: base64.b64encode(v).decode("ascii") for k, v in data.items()}, left


def decode(secret: dict | None) -> tuple[list[dict], list[dict], dict]:
    data = decode_data(secret)
    meta = json.loads(data["meta"]) if data.get("meta") else {}
    return _unpack(data.get("entries"), []), _unpack(data.get("dedup"), []), meta


class Handover:
    def __init__(self, client: SecretClient, fwd: Forwarder, *, log: Callable[..., None], identity: str | None = None):
        self.client = client
        self.fwd = fwd
        self.log = log
        # The pod name (a pod's hostname) plus this process: a restarted container in the same pod takes its
        # predecessor's handover like any new pod would.
        self.me = identity or f"{socket.gethostname()}/{os.getpid()}-{secrets.token_hex(3)}"
        self.taking = True
        self.imported: set[str] = set()
        self.lock = threading.Lock()  # one import or export at a time
        self.stats: dict[str, Any] = {"imported": 0, "exported": 0, "left_behind": 0, "errors": 0, "last_error": ""}
        self.watcher = Watcher(client, self._on_change, name=client.name, log_error=log)

    def start(self) -> Handover:
        self.watcher.start()
        return self

    def stop(self) -> None:
        self.watcher.stop()

    # -- the new pod ----------------------------------------------------------------------------
    def _on_change(self, secret: dict | None) -> None:
        if not self.taking or secret is None:
            return
        try:
            entries, windows, meta = decode(secret)
        except (ValueError, OSError, EOFError) as exc:  # damaged payload: leave it for a human, say so
            self._error(f"the handover Secret's data cannot be read: {type(exc).__name__}")
            return
        if not entries and not windows:
            return
        if meta.get("writer") == self.me:
            return
        with self.lock:
            if not self.taking:
                return
            fresh = [Entry.from_dict(e) for e in entries if e.get("id") not in self.imported]
            fresh = [e for e in fresh if not self.fwd.spool.contains(e.id)]
            known = [e for e in fresh if e.destination in self.fwd.destinations]
            for e in fresh:
                if e.destination not in self.fwd.destinations:
                    self.fwd.metrics.inc(
                        "dropped_total", {"destination": e.destination, "reason": "unknown_destination"}
                    )
            self.fwd.spool.put_many(known)  # durable here before the Secret is cleared
            self.imported.update(e["id"] for e in entries if "id" in e)
            merged = self.fwd.dedup.merge_windows(windows)
            self.stats["imported"] += len(known)
            self.fwd.metrics.inc("handover_total", {"direction": "in"}, len(known))
            self.log(
                "handover.imported",
                entries=len(known),
                dedup_windows=merged,
                writer=meta.get("writer"),
                written_s_ago=round(time.time() - float(meta.get("written_at", time.time())), 1),
            )
            self._clear(secret)

    def _clear(self, secret: dict) -> None:
        data, _ = encode([], [], self.me)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": secret.get("type", "Opaque"),
            "metadata": _keep_meta(secret),
            "data": data,
        }
        try:
            self.client.update(body)
        except KubeError as exc:
            # 409: the old pod wrote again meanwhile; its write arrives as a watch event and is imported then
            # (already-imported ids are skipped). Anything else: retried with the next event or relist.
            if exc.status != 409:
                self._error(str(exc))

    # -- the terminating pod --------------------------------------------------------------------
    def stop_taking(self) -> None:
        with self.lock:
            self.taking = False

    def export(self, entries: list[Entry], windows: list[dict], *, deadline: float) -> tuple[list[str], list[str]]:
        """Write ``entries`` and ``windows`` into the Secret, merged with whatever is there and not yet taken.
        Returns (ids written, ids that did not fit). Raises KubeError if the deadline passes first."""
        wait = 0.1
        with self.lock:
            current = self.watcher.latest
            while True:
                try:
                    if current is None:
                        current = self.watcher.relist()
                        if current is None:
                            raise KubeError(
                                f"secrets/{self.client.name} does not exist (deploy/rbac/"
                                "alert-forwarder.yaml declares it)",
                                404,
                            )
                    theirs, their_windows, _ = decode(current)
                    ours = {e.id: e.to_dict() for e in entries}
                    merged = [e for e in theirs if e.get("id") not in ours] + list(ours.values())
                    data, left = encode(merged, their_windows + windows, self.me)
                    body = {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "type": current.get("type", "Opaque"),
                        "metadata": _keep_meta(current),
                        "data": data,
                    }
                    self.client.update(body)
                    left_set = set(left)
                    written = [i for i in ours if i not in left_set]
                    self.stats["exported"] += len(written)
                    self.stats["left_behind"] += len([i for i in ours if i in left_set])
                    return written, [i for i in ours if i in left_set]
                except KubeError as exc:
                    if time.monotonic() > deadline:
                        self._error(str(exc))
                        raise
                    if exc.status != 409:
                        self._error(str(exc))
                        time.sleep(wait)
                        wait = min(2.0, wait * 2)
                    current = None  # read it again (409: someone wrote since; else: try afresh)
                except (ValueError, OSError, EOFError) as exc:
                    self._error(f"the handover Secret's data cannot be read: {type(exc).__name__}")
                    raise KubeError("the handover Secret holds data this version cannot read") from None

    def _error(self, text: str) -> None:
        self.stats["errors"] += 1
        self.stats["last_error"] = text[:200]
        self.fwd.metrics.inc("handover_errors_total")
        self.log("handover.failed", error=text[:200])

    def status(self) -> dict:
        w = self.watcher
        return {
            "secret": f"{self.client.namespace}/{self.client.name}",
            "identity": self.me,
            "taking": self.taking,
            "watching": w.watching,
            **self.stats,
        }


def _keep_meta(secret: dict) -> dict:
    md = secret.get("metadata") or {}
    out = {"name": md.get("name"), "namespace": md.get("namespace"), "resourceVersion": md.get("resourceVersion")}
    for k in ("labels", "annotations"):
        if md.get(k):
            out[k] = md[k]
    return out
