"""Where every alert went (issue 15 §3): the last N alerts with their route, destinations and delivery state.

falcosidekick-ui keeps events in Redis; here the last ``history_max`` alerts (1,000 by default, ~1-2 kB each)
stay in memory, newest first, with for each destination its state (``pending``, ``delivered``, ``retrying``,
``rejected``, ``dropped``, ``handed_over``), attempts and last error. A restart starts it empty; the spool, not
this, is what makes delivery durable. Counts per minute and priority are kept apart for 24 h so the chart is
not limited to N.

Never a secret value: every string passes the log redactor (tokens, URLs and keys read from secrets are masked),
output and field values are cut to a bounded length, and destination errors are the sender's own messages,
which name no URL or header.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from .edgeguard import log
from .edgeguard.falco.alert import PRIORITIES, parse_time, priority_number

OUTPUT_CHARS = 2000
FIELD_CHARS = 200
MAX_FIELDS = 40
BUCKET_SECONDS = 60
BUCKETS = 24 * 60
STATES = ("pending", "delivered", "retrying", "rejected", "dropped", "handed_over")
_COMPARATOR = re.compile(r"^\s*(>=|<=|>|<|=|!=)?\s*([A-Za-z]+)\s*$")


def _cut(value, limit: int):
    if isinstance(value, str):
        text = log.scrub(value)
        return text if len(text) <= limit else text[:limit] + f"…[{len(text) - limit} more]"
    if isinstance(value, list):
        return [_cut(v, limit) for v in value[:20]]
    return value


class FilterError(ValueError):
    """A query parameter of GET /alerts that cannot be used (400 naming it)."""


class History:
    def __init__(self, max_items: int = 1000, *, clock: Callable[[], float] = time.time):
        self.max_items = max_items
        self.clock = clock
        self._lock = threading.Lock()
        self._records: OrderedDict[int, dict] = OrderedDict()  # seq -> record, oldest first
        self._by_entry: dict[str, tuple[int, str]] = {}  # spool entry id -> (seq, destination)
        self._seq = itertools.count(1)
        self._buckets: deque = deque(maxlen=BUCKETS)  # [minute start, {priority: n}]

    def __len__(self) -> int:
        return len(self._records)

    # -- recording (the forwarder and delivery call these) ----------------------------------------
    def record(self, alert: dict, *, key: str, sender: str, kind: str = "alert") -> int:
        now = self.clock()
        fields = alert.get("output_fields") or {}
        rec = {
            "seq": 0,
            "received": now,
            "kind": kind,
            "sender": sender,
            "idempotency_key": key,
            "time": alert.get("time"),
            "priority": alert.get("priority"),
            "rule": _cut(alert.get("rule", ""), 300),
            "source": _cut(alert.get("source", ""), 100),
            "hostname": _cut(alert.get("hostname", ""), 200),
            "tags": _cut(list(alert.get("tags") or []), 100),
            "output": _cut(alert.get("output", ""), OUTPUT_CHARS),
            "output_fields": {_cut(k, 100): _cut(v, FIELD_CHARS) for k, v in list(fields.items())[:MAX_FIELDS]},
            "routes": [],
            "decision": None,
            "destinations": {},
        }
        with self._lock:
            seq = next(self._seq)
            rec["seq"] = seq
            self._records[seq] = rec
            while len(self._records) > self.max_items:
                _, old = self._records.popitem(last=False)
                for eid in old.get("_entries", ()):
                    self._by_entry.pop(eid, None)
            minute = int(now // BUCKET_SECONDS) * BUCKET_SECONDS
            if not self._buckets or self._buckets[-1][0] != minute:
                self._buckets.append([minute, {}])
            counts = self._buckets[-1][1]
            counts[rec["priority"]] = counts.get(rec["priority"], 0) + 1
        return seq

    def routed(self, seq: int, routes: list[str], decision: str | None) -> None:
        with self._lock:
            rec = self._records.get(seq)
            if rec is not None:
                rec["routes"], rec["decision"] = list(routes), decision

    def submitted(self, seq: int, entry_id: str, destination: str) -> None:
        with self._lock:
            rec = self._records.get(seq)
            if rec is None:
                return
            rec["destinations"][destination] = {
                "state": "pending",
                "attempts": 0,
                "last_error": None,
                "updated": self.clock(),
            }
            rec.setdefault("_entries", []).append(entry_id)
            self._by_entry[entry_id] = (seq, destination)

    def update(self, entry_id: str, state: str, *, attempts: int | None = None, error: str | None = None) -> None:
        with self._lock:
            hit = self._by_entry.get(entry_id)
            if hit is None:
                return
            rec = self._records.get(hit[0])
            if rec is None:
                return
            d = rec["destinations"].get(hit[1])
            if d is None:
                return
            d["state"] = state
            d["updated"] = self.clock()
            if attempts is not None:
                d["attempts"] = attempts
            if error:
                d["last_error"] = log.scrub(error)[:300]
            if state in ("delivered", "rejected", "dropped", "handed_over"):
                self._by_entry.pop(entry_id, None)

    # -- reading ----------------------------------------------------------------------------------
    def query(self, params: dict, *, limit: int = 200) -> dict:
        """Newest first, filtered (each filter is documented in docs/alert-forwarder.md, "GET /alerts")."""
        pred = _predicate(params, self.clock())
        after = _int(params.get("after"), "after", 0)
        with self._lock:
            recs = list(self._records.values())
            total = len(recs)
        out = []
        for rec in reversed(recs):
            if rec["seq"] <= after:
                break
            if pred(rec):
                out.append({k: v for k, v in rec.items() if not k.startswith("_")})
                if len(out) >= limit:
                    break
        return {
            "alerts": out,
            "returned": len(out),
            "held": total,
            "max": self.max_items,
            "last_seq": recs[-1]["seq"] if recs else 0,
        }

    def counts(self, minutes: int = 60) -> list[dict]:
        """Alerts per minute and priority for the last ``minutes`` (empty minutes included, oldest first)."""
        now_minute = int(self.clock() // BUCKET_SECONDS) * BUCKET_SECONDS
        with self._lock:
            have = {m: dict(c) for m, c in self._buckets}
        return [
            {"t": m, "counts": have.get(m, {})}
            for m in range(now_minute - (minutes - 1) * BUCKET_SECONDS, now_minute + 1, BUCKET_SECONDS)
        ]


def _int(raw, name: str, default: int) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(f"{name}={raw[:40]!r} is not an integer") from None
    if value < 0:
        raise FilterError(f"{name} must not be negative")
    return value


def _since(raw: str, now: float) -> float:
    text = raw.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h|d)", text)
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    try:
        return parse_time(text) / 1e9
    except ValueError:
        raise FilterError(f"since={raw[:40]!r} is not a Unix time, an RFC 3339 time or a duration like 15m") from None


def _predicate(params: dict, now: float) -> Callable[[dict], bool]:
    tests = []
    if params.get("priority"):
        m = _COMPARATOR.match(params["priority"])
        want = None
        if m:
            try:
                want = priority_number(m.group(2))
            except ValueError:
                pass
        if m is None or want is None:
            raise FilterError(
                f"priority={params['priority'][:40]!r}: expected a Falco priority, optionally with "
                f">=, <=, >, <, != (e.g. >=Warning); one of {', '.join(PRIORITIES)}"
            )
        op = m.group(1) or "="
        # Falco's numbers run the other way: 0 is Emergency, so ">=Warning" means number <= Warning's.
        cmp = {
            "=": lambda n: n == want,
            "!=": lambda n: n != want,
            ">=": lambda n: n <= want,
            "<=": lambda n: n >= want,
            ">": lambda n: n < want,
            "<": lambda n: n > want,
        }[op]
        tests.append(lambda r: cmp(priority_number(r["priority"])))
    if params.get("rule"):
        needle = params["rule"].lower()
        tests.append(lambda r: needle in r["rule"].lower())
    if params.get("source"):
        sources = {s.strip() for s in params["source"].split(",") if s.strip()}
        tests.append(lambda r: r["source"] in sources)
    if params.get("hostname"):
        hosts = {s.strip() for s in params["hostname"].split(",") if s.strip()}
        tests.append(lambda r: r["hostname"] in hosts)
    if params.get("destination"):
        dest = params["destination"]
        tests.append(lambda r: dest in r["destinations"])
    if params.get("state"):
        states = {s.strip() for s in params["state"].split(",") if s.strip()}
        bad = states - set(STATES) - {"none"}
        if bad:
            raise FilterError(
                f"state={sorted(bad)[0][:40]!r}: expected one of {', '.join(STATES)} or none (reached no destination)"
            )
        dest = params.get("destination")
        tests.append(
            lambda r: (
                ("none" in states and not r["destinations"])
                or any(d["state"] in states for n, d in r["destinations"].items() if dest is None or n == dest)
            )
        )
    if params.get("since"):
        t = _since(params["since"], now)
        tests.append(lambda r: r["received"] >= t)
    return lambda r: all(t(r) for t in tests)
