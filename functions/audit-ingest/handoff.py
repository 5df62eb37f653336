"""The hand-off of alerts to alert-forwarder, and the ledger that keeps retried batches duplicate-free.

The API server resends a whole batch when it did not get a 2xx, so an event may come back after its alerts
were handed off. The ledger remembers, per (auditID, stage) key, that an event's alerts were all accepted
(DONE) or which of its rules were accepted so far (a hand-off in parts that failed part-way), in a bounded
LRU. A key being handed off right now is reserved by its request (the owner), so a concurrent retry of the
same batch waits for the outcome instead of sending the alerts a second time.

Nothing here knows HTTP: ``forward`` takes a ``send(body)`` callable and failures are exceptions the handler
turns into answers.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

DONE = None  # the ledger value of an event whose alerts were all handed off


class HandoffError(Exception):
    """alert-forwarder did not accept a part (transport failure or a non-2xx answer); ``accepted`` went before."""

    def __init__(self, reason: str, *, status: int | None = None, accepted: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.accepted = accepted


class HandoffNotConfigured(HandoffError):
    """The hand-off cannot be attempted (alert-forwarder's token secret is missing): not transient."""


class Group:
    """The alerts of one event (key None: an event without auditID, which is never remembered)."""
    __slots__ = ("key", "alerts", "prior")

    def __init__(self, key, alerts):
        self.key = key
        self.alerts = alerts
        self.prior = frozenset()  # rules already handed off by an earlier, partly failed request


def dedup_key(evt):
    o = evt.obj
    aid = o.get("auditID")
    if not isinstance(aid, str) or not aid:
        return None
    stage = o.get("stage")
    return f"{aid}\x00{stage if isinstance(stage, str) else ''}"


def chunks(groups, limit: int):
    """(JSON-array body, [(key, rule) in it]) parts of at most ``limit`` bytes.

    OpenFaaS CE's queue refuses async bodies over 256,000 bytes. An event's alerts stay in one part
    when they fit, so a part-way failure rarely leaves an event half handed off.
    """
    cur, parts, size = [], [], 2
    for g in groups:
        js = [(a.rule, a.to_json()) for a in g.alerts]
        sizes = [len(j.encode("utf-8")) + 1 for _, j in js]
        if cur and size + sum(sizes) > limit:
            yield "[" + ",".join(cur) + "]", parts
            cur, parts, size = [], [], 2
        for (rule, j), n in zip(js, sizes):
            if cur and size + n > limit:
                yield "[" + ",".join(cur) + "]", parts
                cur, parts, size = [], [], 2
            cur.append(j)
            parts.append((g.key, rule))
            size += n
    if cur:
        yield "[" + ",".join(cur) + "]", parts


class HandoffLedger:
    def __init__(self):
        # Guards ``handed`` and ``inflight`` only; held for check-and-reserve, never across a hand-off.
        self.cond = threading.Condition()
        # key -> DONE, or the frozenset of rules whose alerts were handed off so far. Bounded LRU.
        self.handed: OrderedDict = OrderedDict()
        # key -> owner token of the request handing that event's alerts off right now.
        self.inflight: dict = {}

    def remembered(self) -> int:
        with self.cond:
            return len(self.handed)

    def remember(self, key, rules=DONE, *, limit: int):
        """Record (under ``cond``) that ``key``'s alerts were handed off: all of them, or ``rules`` so far."""
        handed = self.handed
        handed[key] = rules
        handed.move_to_end(key)
        while len(handed) > limit:
            handed.popitem(last=False)

    def fresh(self, events):
        """[(key, event)] of the events not already handed off (nor repeated in ``events``), and the duplicates."""
        fresh, seen, dups = [], set(), 0
        with self.cond:
            handed = self.handed
            for e in events:
                k = dedup_key(e)
                if k is not None and (k in seen or handed.get(k, frozenset()) is DONE):
                    dups += 1
                    continue
                if k is not None:
                    seen.add(k)
                fresh.append((k, e))
        return fresh, dups

    def claim(self, pending, owner, *, limit: int):
        """Under ``cond``: reserve the groups no other request is handing off.

        Returns (mine, still pending, duplicates). Alerts already handed off by an earlier request are
        removed; an event left with none is remembered as done.
        """
        mine, still, dups = [], [], 0
        handed, inflight = self.handed, self.inflight
        for g in pending:
            k = g.key
            if k is None:
                mine.append(g)
                continue
            if inflight.get(k, owner) is not owner:
                still.append(g)
                continue
            prior = handed.get(k, frozenset())
            if prior is DONE:
                dups += 1
                continue
            if prior:
                g.prior = prior
                g.alerts = [a for a in g.alerts if a.rule not in prior]
            if not g.alerts:
                self.remember(k, limit=limit)
                continue
            inflight[k] = owner
            mine.append(g)
        return mine, still, dups

    def accepted(self, parts, by_key, sent, *, limit: int):
        """A part was accepted: remember what it carried at once, so a later failure resends only the rest."""
        with self.cond:
            for k, rule in parts:
                if k is not None:
                    sent.setdefault(k, set()).add(rule)
            for k in {k for k, _ in parts if k is not None}:
                g = by_key[k]
                if sent[k] >= {a.rule for a in g.alerts}:
                    self.remember(k, limit=limit)
                    del self.inflight[k]
                else:
                    self.remember(k, g.prior | sent[k], limit=limit)
            self.cond.notify_all()

    def release(self, groups, owner):
        with self.cond:
            for g in groups:
                if g.key is not None and self.inflight.get(g.key) is owner:
                    del self.inflight[g.key]
            self.cond.notify_all()


def forward(ledger: HandoffLedger, groups, owner, send, *, part_bytes: int, limit: int) -> int:
    """Hand the groups' alerts off part by part with ``send(body, fits)``; the number of alerts accepted.

    ``fits`` says whether the body is within ``part_bytes``. What each accepted part carried is remembered at
    once, so when a later part fails, the API server's retry sends only the remainder. Reservations are
    released whatever happens.
    """
    by_key = {g.key: g for g in groups if g.key is not None}
    sent: dict = {}
    accepted = 0
    try:
        for body, parts in chunks(groups, part_bytes):
            try:
                send(body, len(body.encode("utf-8")) <= part_bytes)
            except HandoffError as exc:
                exc.accepted = accepted
                raise
            accepted += len(parts)
            ledger.accepted(parts, by_key, sent, limit=limit)
    finally:
        ledger.release(groups, owner)
    return accepted
