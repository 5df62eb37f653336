"""The hand-off of alerts to alert-forwarder, and the ledger that keeps retried batches duplicate-free.

The API server resends a whole batch when it did not get a 2xx, so an event may come back after its alerts
were handed off. The ledger remembers, per (auditID, stage) key, that an event's alerts were all accepted
(DONE) or which of its rules were accepted so far (a hand-off in parts that failed part-way), in a bounded
LRU. A key being handed off right now is reserved by its request (the owner), so a concurrent retry of the
same batch waits for the outcome instead of sending the alerts a second time.

Nothing here knows HTTP: ``deliver`` takes a ``send(body)`` callable, and failures are exceptions the
handler turns into answers.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

DONE = None  # the ledger value of an event whose alerts were all handed off


class Undelivered(Exception):
    """The batch's alerts were not all handed off; ``forwarded``/``duplicates`` say what happened before."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.forwarded = 0
        self.duplicates = 0


class HandoffError(Undelivered):
    """alert-forwarder did not accept a part: a transport failure, or a non-2xx answer (``status``)."""

    def __init__(self, reason: str, *, status: int | None = None):
        super().__init__(reason)
        self.status = status


class HandoffNotConfigured(HandoffError):
    """The hand-off cannot be attempted (alert-forwarder's token secret is missing): not transient."""


class HandoffOutOfTime(Undelivered):
    """Parts were left because another would not finish before the request must answer."""

    def __init__(self, left: int):
        super().__init__(f"{left} alerts of this batch were not handed off before the request had to answer; retry")
        self.left = left


class HandoffBusy(Undelivered):
    """Some events are being handed off by another request, which did not finish within the wait."""

    def __init__(self, pending: int):
        super().__init__(f"{pending} events of this batch are being handed off by another request; retry")
        self.pending = pending


@dataclass
class Delivery:
    forwarded: int = 0
    duplicates: int = 0
    rules: set = field(default_factory=set)


class Alert(NamedTuple):
    rule: str
    priority: str
    json: str  # the alert as Falco's json_output writes it


class Group:
    """The alerts of one event (key None: an event without auditID, which is never remembered)."""

    __slots__ = ("key", "alerts", "prior")

    def __init__(self, key, alerts):
        self.key = key
        self.alerts = alerts
        self.prior: frozenset[str] = frozenset()  # rules already handed off by an earlier, partly failed request


def dedup_key(evt):
    o = evt.obj
    aid = o.get("auditID")
    if not isinstance(aid, str) or not aid:
        return None
    stage = o.get("stage")
    return f"{aid}\x00{stage if isinstance(stage, str) else ''}"


def chunks(groups, limit: int, max_alerts: int):
    """(JSON-array body, [(key, rule) in it]) parts of at most ``limit`` bytes and ``max_alerts`` alerts.

    The limits are alert-forwarder's (a bigger body gets a 413). An event's alerts stay in one part when
    they fit, so a part-way failure rarely leaves an event half handed off. A single alert bigger than
    ``limit`` is sent alone: alert-forwarder's refusal then names the problem.
    """
    cur: list[str] = []
    parts: list[tuple[str | None, str]] = []
    size = 2
    for g in groups:
        js = [(a.rule, a.json) for a in g.alerts]
        sizes = [len(j.encode("utf-8")) + 1 for _, j in js]
        if cur and (size + sum(sizes) > limit or len(cur) + len(js) > max_alerts):
            yield "[" + ",".join(cur) + "]", parts
            cur, parts, size = [], [], 2
        for (rule, j), n in zip(js, sizes):
            if cur and (size + n > limit or len(cur) >= max_alerts):
                yield "[" + ",".join(cur) + "]", parts
                cur, parts, size = [], [], 2
            cur.append(j)
            parts.append((g.key, rule))
            size += n
    if cur:
        yield "[" + ",".join(cur) + "]", parts


class HandoffLedger:
    """Which events' alerts were handed off (bounded LRU of ``limit`` keys), and which are being handed off now."""

    def __init__(self, limit: int, clock=time.monotonic):
        self.limit = limit
        self.clock = clock
        # Guards ``handed`` and ``inflight`` only; held for check-and-reserve, never across a hand-off.
        self.cond = threading.Condition()
        # key -> DONE, or the frozenset of rules whose alerts were handed off so far.
        self.handed: OrderedDict = OrderedDict()
        # key -> owner token of the request handing that event's alerts off right now.
        self.inflight: dict = {}

    def remembered(self) -> int:
        with self.cond:
            return len(self.handed)

    def deliver(
        self,
        groups,
        send,
        *,
        part_bytes: int,
        part_alerts: int = 10000,
        wait: float,
        deadline: float = float("inf"),
        part_time: float = 0.0,
    ) -> Delivery:
        """Hand off the alerts of the groups no earlier request handed off, part by part with ``send(body)``.

        The one "already handed off?" check is the claim: events handed off before are duplicates, the
        others are reserved for this request. Groups another request is handing off right now are waited
        for (up to ``wait`` s): if it succeeded they are duplicates, if it failed this request sends them.
        A part is started only if ``part_time`` (the hand-off's timeout) still fits before ``deadline``
        (the ledger's clock, time.monotonic); else HandoffOutOfTime, and the API server's retry resumes from there.
        Raises Undelivered (HandoffError from ``send``, HandoffBusy, HandoffOutOfTime) carrying what was done.
        """
        owner = object()
        done = Delivery()
        pending = list(groups)
        try:
            while pending:
                with self.cond:
                    mine, pending = self._claim(pending, owner, done)
                    wait_until = min(self.clock() + wait, deadline - part_time)
                    while not mine and pending:
                        left = wait_until - self.clock()
                        if left <= 0:
                            raise HandoffBusy(len(pending))
                        self.cond.wait(left)
                        mine, pending = self._claim(pending, owner, done)
                if mine:
                    self._forward(mine, owner, send, (part_bytes, part_alerts), (deadline, part_time), done)
                    done.rules.update(a.rule for g in mine for a in g.alerts)
        except Undelivered as exc:
            exc.forwarded, exc.duplicates = done.forwarded, done.duplicates
            raise
        return done

    def _remember(self, key, rules=DONE):
        """Record (under ``cond``) that ``key``'s alerts were handed off: all of them, or ``rules`` so far."""
        handed = self.handed
        handed[key] = rules
        handed.move_to_end(key)
        while len(handed) > self.limit:
            handed.popitem(last=False)

    def _claim(self, pending, owner, done: Delivery):
        """Under ``cond``: reserve the groups no other request is handing off; (mine, still pending).

        Alerts already handed off by an earlier request are removed; an event left with none is
        remembered as done, an event already done counts as a duplicate.
        """
        mine, still = [], []
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
                done.duplicates += 1
                continue
            if prior:
                g.prior = prior
                g.alerts = [a for a in g.alerts if a.rule not in prior]
            if not g.alerts:
                self._remember(k)
                continue
            inflight[k] = owner
            mine.append(g)
        return mine, still

    def _forward(self, groups, owner, send, limits, timing, done: Delivery) -> None:
        """What each accepted part carried is remembered at once, so when a later part fails, the API server's
        retry sends only the remainder. Reservations are released whatever happens."""
        (deadline, part_time), total = timing, sum(len(g.alerts) for g in groups)
        by_key = {g.key: g for g in groups if g.key is not None}
        sent: dict = {}
        try:
            for body, parts in chunks(groups, *limits):
                if self.clock() + part_time > deadline:
                    raise HandoffOutOfTime(total)
                send(body)
                total -= len(parts)
                done.forwarded += len(parts)
                with self.cond:
                    for k, rule in parts:
                        if k is not None:
                            sent.setdefault(k, set()).add(rule)
                    for k in {k for k, _ in parts if k is not None}:
                        g = by_key[k]
                        if sent[k] >= {a.rule for a in g.alerts}:
                            self._remember(k)
                            del self.inflight[k]
                        else:
                            self._remember(k, g.prior | sent[k])
                    self.cond.notify_all()
        finally:
            with self.cond:
                for g in groups:
                    if g.key is not None and self.inflight.get(g.key) is owner:
                        del self.inflight[g.key]
                self.cond.notify_all()
