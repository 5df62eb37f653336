"""One request body evaluated: each audit item becomes an event, is checked against the rules, and only its
alerts are kept (intake.walk hands the items over one by one, so the decoded batch is never in memory).

Events are dropped and counted as the k8saudit plugin drops them: without an RFC 3339 ``stageTimestamp``,
or larger than ``max_event_bytes`` (measured only when a rule matched: for other events dropping changes
nothing; an item whose raw bytes fit is known to fit). An event that comes twice in one body is evaluated
once. Whether an event was handed off before is the ledger's one check, at hand-off (handoff.py).
"""

from __future__ import annotations

from .edgeguard import log
from .edgeguard.falco.alert import PRIORITIES
from .edgeguard.falco.source import audit_event
from .handoff import Alert, Group, dedup_key
from .intake import Sink, walk


class Batch:
    def __init__(self, engine, max_event_bytes: int):
        self.engine = engine
        self.max_event_bytes = max_event_bytes
        self.groups: list[Group] = []
        self.sink = Sink(self._item)
        self.events = 0  # audit items with a usable timestamp, repeats included
        self.repeated = 0  # events already in this body (same auditID and stage)
        self.dropped = 0  # no usable stageTimestamp
        self.oversize = 0  # larger than max_event_bytes
        self.alerts = 0
        self.evaluation_errors = 0
        self._drop_reasons: set = set()
        self._seen: set = set()

    def _item(self, obj, raw_bytes: int) -> None:
        evt = audit_event(obj, self.events + 1, 0 if raw_bytes <= self.max_event_bytes else self.max_event_bytes)
        if isinstance(evt, str):
            self.dropped += 1
            self._drop_reasons.add(evt)
            return
        self.events += 1
        key = dedup_key(evt)
        if key is not None:
            if key in self._seen:
                self.repeated += 1
                return
            self._seen.add(key)
        alerts = self._evaluate(evt)
        if evt.oversize:
            self.oversize += 1
        self.alerts += len(alerts)
        if alerts or key is not None:  # a keyed event without alerts is still remembered as handed off
            self.groups.append(Group(key, alerts))

    def _evaluate(self, evt) -> list:
        """One event's alerts. A failure is logged and counted, never a 5xx: the API server would resend the
        batch until its retries run out, then drop it, and every other event's alerts with it."""
        eng = self.engine
        try:
            return [Alert(r.name, PRIORITIES[r.priority], eng.alert_json(r, evt)) for r in eng.match(evt)]
        except Exception as exc:  # noqa: BLE001
            self.evaluation_errors += 1
            aid = evt.obj.get("auditID")
            log.error(
                "event.evaluation_failed",
                error=type(exc).__name__,
                message=str(exc)[:200],
                audit_id=aid if isinstance(aid, str) else None,
            )
            return []

    @property
    def skipped(self) -> int:
        return self.sink.skipped

    def summary(self) -> dict:
        out: dict[str, int | list[str]] = {
            "events": self.events,
            "skipped": self.skipped,
            "dropped": self.dropped + self.oversize,
        }
        oversize = {"event larger than maxEventSize"} if self.oversize else set()
        errors = self.sink.errors | self._drop_reasons | oversize
        if errors:
            out["errors"] = sorted(set(errors))[:10]
        return out


def evaluate(body: bytes, ndjson: bool, engine, max_event_bytes: int) -> Batch:
    """The body's events evaluated; intake.BadBody when it is not valid (then nothing of it counts)."""
    batch = Batch(engine, max_event_bytes)
    walk(body, batch.sink, ndjson=ndjson)
    return batch
