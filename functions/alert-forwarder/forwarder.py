"""The forwarding engine: route, dedup and throttle, then hand each delivery to the spool and ``delivery.py``.

Falco waits for our answer on its single output thread and never retries, so
``ingest`` only routes and records: in ``durable`` ack mode every delivery is
first written to the spool (fsync'd), then handed to that destination's worker
threads; the 2xx goes back before any destination is contacted. A delivery
that fails within its budget stays in the spool with a next-attempt time and is
retried by the background tick, by later requests and by ``flush``. One slow or
dead destination only ever holds up its own workers (``delivery.Delivery``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .dedup import Deduper, Throttler
from .delivery import Delivery, Destination
from .destinations import idempotency_key
from .edgeguard import config, log, metrics
from .edgeguard.falco.alert import priority_number
from .edgeguard.routing import RouteTable, explain, resolve_destinations
from .history import History
from .metrics import Metrics
from .spool import Entry, Spool, new_entry_id

if TYPE_CHECKING:
    from .handover import Handover

# spool_full/expired drops stay in status() problems this long after the last one
DROP_PROBLEM_SECONDS = 3600.0


@dataclass
class Settings:
    spool_dir: str = "/tmp/edgeguard-spool"
    spool_max_entries: int = 10000
    spool_max_age: float = 86400.0
    spool_fsync: bool = True
    ack_mode: str = "durable"  # durable: spool before 2xx; fast: spool only what failed
    queue_max: int = 1000
    tick_interval: float = 1.0
    flush_budget: float = 20.0
    spool_backoff_max: float = 60.0  # longest wait between retries of a spooled delivery
    history_max: int = 1000  # alerts kept for GET /alerts and the page (history.py)
    start_threads: bool = True


class Forwarder:
    def __init__(
        self,
        table: RouteTable,
        dest_secrets: dict[str, dict],
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        source: str = "routes.yaml",
        on_tick: Callable[[Forwarder], None] | None = None,
    ):
        self.table = table
        self.settings = settings or Settings()
        self.clock = clock
        self.sleep = sleep
        self.source = source
        self.metrics = Metrics()
        self.history = History(self.settings.history_max, clock=clock)
        self.dedup = Deduper(clock=clock)
        self.throttle = Throttler(clock=clock)
        self.secrets = dest_secrets
        self.on_tick = on_tick  # e.g. the handler's config watcher, which calls reconfigure
        # (destination, reason) -> (deliveries dropped, when the last was): shown in status() problems for an hour
        self._recent_drops: dict[tuple[str, str], tuple[int, float]] = {}
        self._drops_lock = threading.Lock()
        self._reconfig_lock = threading.Lock()
        self.reloads = 0
        self.handover: Handover | None = None  # when the kubeconfig allows one
        self.terminating: dict | None = None  # set by shutdown()
        self._handover_lock = threading.Lock()
        self.destinations: dict[str, Destination] = {}
        for name, opts in resolve_destinations(table, dest_secrets).items():
            self.destinations[name] = Destination(name, opts, queue_max=self.settings.queue_max)
        self.spool = Spool(
            self.settings.spool_dir,
            max_entries=self.settings.spool_max_entries,
            max_age=self.settings.spool_max_age,
            fsync=self.settings.spool_fsync,
            on_drop=self._on_spool_drop,
            clock=clock,
        )
        self.delivery = Delivery(
            self.destinations, self.spool, self.metrics, self.settings, clock=clock, sleep=sleep, history=self.history
        )
        self._drop_orphans()
        self.metrics.add_collector(self._collect)
        self._stop = threading.Event()
        self._close_hooks: list[Callable[[], None]] = []
        self._threads: list[threading.Thread] = []
        self._last_tick = 0.0
        self._tick_lock = threading.Lock()
        self.started = clock()
        if self.settings.start_threads:
            self.start()

    def reconfigure(self, table: RouteTable, secrets: dict[str, dict], *, source: str | None = None) -> list[str]:
        """Switch to new routes (read from ``source``) and/or destination secrets; return the destinations that
        changed. A ValueError (e.g. a plain http:// URL without insecure_http) is raised before anything changed.

        Destinations are updated in place (their queues and spooled entries carry over); one that the new
        routes no longer declare is disabled, and its spooled deliveries wait for it to come back or expire.
        """
        changed = []
        with self._reconfig_lock:
            resolved = resolve_destinations(table, secrets)
            for name, opts in resolved.items():
                dest = self.destinations.get(name)
                if dest is not None and opts == dest.opts:
                    continue
                if dest is None:
                    dest, old = Destination(name, opts, queue_max=self.settings.queue_max), None
                else:
                    old = dest.apply(opts)
                dest.reset_health()
                self.destinations[name] = dest
                if old is not None:
                    old.close()
                if self.delivery.running and dest.enabled:
                    self.delivery.start_workers(dest)
                changed.append(name)
            for name, dest in self.destinations.items():
                if name not in resolved and dest.enabled:
                    dest.enabled, dest.disabled_reason = False, "no longer declared in the routes"
                    changed.append(name)
            self.table = table
            self.secrets = secrets
            if source is not None:
                self.source = source
            self.reloads += 1
        return changed

    def _drop_orphans(self) -> None:
        """Spooled deliveries for destinations the (new) routes no longer declare can never be sent."""
        for e in self.spool.snapshot():
            if e.destination not in self.destinations and self.spool.remove(e.id, reason="unknown_destination"):
                self.metrics.inc("dropped_total", {"destination": e.destination, "reason": "unknown_destination"})
                log.warning(
                    "spool.dropped", destination=e.destination, reason="unknown_destination", idempotency_key=e.key
                )

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.delivery.start()
        t = threading.Thread(target=self._ticker, name="forwarder-tick", daemon=True)
        t.start()
        self._threads.append(t)

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the forwarder closes (the handler's watchers of Kubernetes state)."""
        self._close_hooks.append(fn)

    def close(self, timeout: float = 5.0) -> None:
        for fn in self._close_hooks:
            fn()
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.delivery.close(deadline)
        self.spool.close()

    # -- ingest ---------------------------------------------------------------------------
    def ingest(self, alerts: list[dict], *, detail_limit: int = 100, sender: str = "fleet") -> dict:
        """Route already-validated alerts; return what happened to each (up to ``detail_limit``)."""
        details = []
        pending: list[tuple[Destination, Entry]] = []
        for i, alert in enumerate(alerts):
            d = self._route_one(alert, pending, sender)
            if i < detail_limit:
                details.append(d)
        self.delivery.commit(pending)
        if self.terminating is not None and self.terminating.get("handing_over"):
            # Past the handover, this pod delivers nothing: what it acknowledges goes to the next pod first.
            self.hand_over(deadline=time.monotonic() + 5.0)
        self.maybe_tick()
        return {"accepted": len(alerts), "alerts": details, "details_truncated": len(alerts) > detail_limit}

    # -- redeploys and evictions (handover.py) ----------------------------------------------------
    def attach_handover(self, handover) -> None:
        self.handover = handover
        self.on_close(handover.stop)

    def shutdown(self, *, drain_seconds: float, deadline_seconds: float) -> dict:
        """SIGTERM: deliver what can be delivered within ``drain_seconds``, then stop delivering and move the rest
        (and the open dedup windows) to the handover Secret; keep serving, handing over write-through, until the
        watchdog and the kubelet end the process. Returns what happened (also in status())."""
        started = time.monotonic()
        deadline = started + deadline_seconds
        self.terminating = {"since": self.clock(), "drained": None, "handed_over_at": None, "left_in_pod": None}
        if self.handover is not None:
            self.handover.stop_taking()
        log.info(
            "shutdown.started",
            spool_depth=self.spool.depth(),
            drain_s=drain_seconds,
            handover=self.handover is not None,
        )
        drained = {}
        if self.spool.depth():
            saved = self.settings.flush_budget
            self.settings.flush_budget = max(0.0, drain_seconds)
            try:
                drained = self.delivery.flush(ignore_schedule=True)
            finally:
                self.settings.flush_budget = saved
        # In-flight attempts get until half the time left; one still hanging then is handed over all the same
        # (a possible duplicate, with the same Idempotency-Key, rather than a loss).
        self.delivery.stop_workers(time.monotonic() + max(0.5, (deadline - time.monotonic()) / 2))
        self.terminating["drained"] = drained.get("delivered", 0)
        if self.handover is None:
            self.terminating["left_in_pod"] = self.spool.depth()
            log.warning(
                "shutdown.no_handover",
                spool_depth=self.spool.depth(),
                why="no alert-forwarder-kubeconfig: what is left lives only in this pod's /tmp",
            )
            return dict(self.terminating)
        self.terminating["handing_over"] = True  # from here on ingest hands over before it answers
        self.hand_over(deadline=deadline, windows=True)
        self.terminating["handed_over_at"] = self.clock()
        self.terminating["left_in_pod"] = self.spool.depth()
        log.info("shutdown.handed_over", took_s=round(time.monotonic() - started, 3), **self.handover.stats)
        return dict(self.terminating)

    def hand_over(self, *, deadline: float, windows: bool = False) -> int:
        """Move every unclaimed spooled delivery (and, with ``windows``, the dedup windows) to the next pod."""
        handover = self.handover
        if handover is None:
            return 0
        with self._handover_lock:  # snapshot, export and local removal as one step
            return self._hand_over(handover, deadline, windows)

    def _hand_over(self, handover: Handover, deadline: float, windows: bool) -> int:
        # The workers are stopped: an entry still claimed belongs to an attempt that did not end in time.
        entries = self.spool.snapshot()
        wins = self.dedup.export_windows() if windows else []
        if not entries and not wins:
            return 0
        try:
            written, left = handover.export(entries, wins, deadline=deadline)
        except Exception as exc:  # noqa: BLE001 - the entries stay in the local spool; say so and go on
            log.error(
                "handover.export_failed", error=type(exc).__name__, message=str(exc)[:200], left_in_pod=len(entries)
            )
            if wins:
                self.dedup.merge_windows(wins)
            return 0
        for eid in written:
            self.spool.remove(eid, reason="handed_over")
            self.history.update(eid, "handed_over", error="moved to the next pod (alert-forwarder-spool-handover)")
        self.metrics.inc("handover_total", {"direction": "out"}, len(written))
        if left:
            self.metrics.inc("handover_left_behind_total", None, len(left))
            log.error(
                "handover.too_big",
                handed_over=len(written),
                left_in_pod=len(left),
                why="the handover Secret holds at most ~900 kB of gzip'd alerts",
            )
        return len(written)

    def explain(self, alert: dict) -> dict:
        state = {
            n: {**d.opts, "enabled": d.enabled, "disabled_reason": d.disabled_reason}
            for n, d in self.destinations.items()
        }
        return explain(self.table, state, alert)

    def _route_one(self, alert: dict, pending: list, sender: str = "fleet") -> dict:
        out = self._route(alert, pending, self.history.record(alert, key=idempotency_key(alert), sender=sender))
        decision = (
            "filtered"
            if out.get("filtered")
            else "delivering"
            if out["destinations"]
            else "suppressed"
            if out["suppressed_by"]
            else "throttled"
            if out["throttled_by"]
            else "no destination"
        )
        self.history.routed(out["seq"], out["routes"], decision)
        return out

    def _route(self, alert: dict, pending: list, seq: int) -> dict:
        m = self.metrics
        m.inc(
            "falco_events_total",
            {
                "priority": alert["priority"],
                "rule": alert["rule"],
                "source": alert.get("source", ""),
                "hostname": alert.get("hostname", ""),
            },
        )
        key = idempotency_key(alert)
        out = {
            "rule": alert["rule"],
            "priority": alert["priority"],
            "idempotency_key": key,
            "seq": seq,
            "routes": [],
            "destinations": [],
            "suppressed_by": [],
            "throttled_by": [],
        }
        if not self.table.passes_min_priority(alert):
            m.inc("filtered_total", {"priority": alert["priority"]})
            out["filtered"] = f"below min_priority {self.table.min_priority}"
            return out
        routes = self.table.match(alert)
        sent_to: set[str] = set()
        for route in routes:
            out["routes"].append(route.name)
            if route.dedup is not None:
                send, summaries = self.dedup.check(route.name, route.dedup.window, route.dedup.key, alert)
                for s in summaries:
                    self._emit_summary(s.route, s.alert, pending)
                if not send:
                    m.inc("dedup_suppressed_total", {"route": route.name})
                    out["suppressed_by"].append(route.name)
                    continue
            if route.throttle is not None:
                send, summaries = self.throttle.check(route.name, route.throttle.max, route.throttle.window, alert)
                for s in summaries:
                    self._emit_summary(s.route, s.alert, pending, kind="throttle")
                if not send:
                    m.inc("throttled_total", {"route": route.name})
                    out["throttled_by"].append(route.name)
                    continue
            if route.to:
                m.inc("routed_total", {"route": route.name})
            elif route is self.table.default:
                m.inc("unrouted_total")
            for dname in route.to:
                if dname in sent_to:  # two matching routes naming one destination: deliver once
                    continue
                sent_to.add(dname)
                if self._submit(dname, alert, key, "alert", route.name, pending, seq):
                    out["destinations"].append(dname)
        return out

    def _emit_summary(self, route_name: str, alert: dict, pending: list, kind: str = "dedup") -> None:
        route = next((r for r in self.table.all_routes() if r.name == route_name), None)
        if route is None:
            return
        self.metrics.inc(f"{kind}_summaries_total", {"route": route_name})
        key = idempotency_key(alert)
        seq = self.history.record(alert, key=key, sender="edgeguard", kind=f"{kind}_summary")
        self.history.routed(seq, [route_name], "delivering")
        for dname in route.to:
            self._submit(dname, alert, key, "summary", route_name, pending, seq)

    def _submit(self, dname: str, alert: dict, key: str, kind: str, route: str, pending: list, seq: int = 0) -> bool:
        dest = self.destinations[dname]
        now = self.clock()
        eid = new_entry_id(now)
        if not dest.enabled:
            self.metrics.inc("dropped_total", {"destination": dname, "reason": "disabled"})
            self.history.submitted(seq, eid, dname)
            self.history.update(eid, "dropped", error=f"destination disabled: {dest.disabled_reason}")
            return False
        if dest.min_priority is not None:
            try:
                if priority_number(alert["priority"]) > dest.min_priority:
                    return False
            except ValueError:
                return False
        pending.append(
            (
                dest,
                Entry(
                    id=eid,
                    destination=dname,
                    key=key,
                    payload=alert,
                    kind=kind,
                    route=route,
                    created=now,
                    next_attempt=now,
                ),
            )
        )
        self.history.submitted(seq, eid, dname)
        return True

    def _on_spool_drop(self, destination: str, reason: str, entry_id: str = "") -> None:
        self.metrics.inc("dropped_total", {"destination": destination, "reason": reason})
        self.history.update(entry_id, "dropped", error=reason)
        with self._drops_lock:
            n, _ = self._recent_drops.get((destination, reason), (0, 0.0))
            self._recent_drops[(destination, reason)] = (n + 1, self.clock())
        log.warning("spool.dropped", destination=destination, reason=reason)

    # -- background -----------------------------------------------------------------------
    def _ticker(self) -> None:
        while not self._stop.wait(self.settings.tick_interval):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the retry loop must keep running
                log.error("tick.crashed", error=type(exc).__name__, message=str(exc)[:200])

    def maybe_tick(self) -> None:
        """Cheap enough to call on every request: at most one tick per tick_interval."""
        now = self.clock()
        if now - self._last_tick >= self.settings.tick_interval:
            self.tick()

    def tick(self) -> None:
        if not self._tick_lock.acquire(blocking=False):
            return
        try:
            self._last_tick = self.clock()
            if self.on_tick is not None:
                self.on_tick(self)
            pending: list = []
            for s in self.dedup.expire():
                self._emit_summary(s.route, s.alert, pending)
            for s in self.throttle.expire():
                self._emit_summary(s.route, s.alert, pending, kind="throttle")
            self.delivery.commit(pending)
            self.delivery.enqueue_due()
        finally:
            self._tick_lock.release()

    def flush(self, *, ignore_schedule: bool = False) -> dict:
        return self.delivery.flush(ignore_schedule=ignore_schedule)

    # -- status ---------------------------------------------------------------------------
    def _collect(self, m: metrics.Metrics) -> None:
        m.set("spool_depth", self.spool.depth())
        by = self.spool.depth_by_destination()
        now = self.clock()
        for name, dest in self.destinations.items():
            m.set("spool_depth_by_destination", by.get(name, 0), {"destination": name})
            m.set("queue_depth", dest.queue.qsize(), {"destination": name})
            m.set("destination_up", 1 if self._state(dest, now) == "ok" else 0, {"destination": name})
        m.set("spool_oldest_age_seconds", round(self.spool.oldest_age(), 3))

    @staticmethod
    def _state(d: Destination, now: float) -> str:
        """ok, backing_off (waiting out a back-off), failing (between retries: failed since its last success) or
        disabled. Failing is not ok: between two retries of a dead receiver the back-off is over, and a status that
        said ok then would flap every few seconds."""
        if not d.enabled:
            return "disabled"
        if d.down_until > now:
            return "backing_off"
        return "failing" if d.consecutive_failures > 0 else "ok"

    def status(self) -> dict:
        now = self.clock()
        dests = {}
        for name, d in self.destinations.items():
            info = {
                "type": d.opts["type"],
                "enabled": d.enabled,
                "timeout_s": d.timeout,
                "retries": d.retries,
                "budget_s": d.budget,
                "concurrency": d.concurrency,
                "state": self._state(d, now),
                "queued": d.queue.qsize(),
                "last_error": d.last_error or None,
                "consecutive_failures": d.consecutive_failures,
                "last_success_s_ago": round(now - d.last_success, 1) if d.last_success else None,
            }
            if d.disabled_reason:
                info["disabled_reason"] = d.disabled_reason
            if d.opts["type"] == "openfaas":
                ts = d.opts.get("token_secret")
                info.update(
                    function=d.opts["function"],
                    route=f"/function/{d.opts['function']}{d.opts['path']}",
                    token_secret=ts,
                    token_configured=bool(d.opts.get("token")) or bool(ts and config.read_secret(ts)),
                )
            if d.opts["type"] == "webhook":
                info.update(
                    body=d.opts["body"],
                    signed=bool(d.opts.get("hmac_key")),
                    custom_ca=d.opts.get("ca_cert") is not None or d.opts.get("ca_file") is not None,
                    mtls=bool(d.opts.get("client_cert")),
                    header_names=sorted(set(d.opts.get("headers") or {})),
                )
            dests[name] = info
        routes = [
            {
                "name": r.name,
                "at": r.where,
                "matchers": [m.text for m in r.matchers],
                "to": r.to,
                "continue": r.cont,
                "dedup": ({"window_s": r.dedup.window, "key": list(r.dedup.key)} if r.dedup else None),
                "throttle": ({"max": r.throttle.max, "window_s": r.throttle.window} if r.throttle else None),
            }
            for r in self.table.all_routes()
        ]
        problems = []
        for n, shown in dests.items():
            if shown["state"] == "backing_off":
                problems.append(f"destination {n} is backing off after failures")
            elif shown["state"] == "failing":
                problems.append(
                    f"destination {n} is failing: {shown['consecutive_failures']} deliveries deferred since "
                    f"its last success (last error: {shown['last_error']}); retrying"
                )
        oldest = self.spool.oldest_age()
        if oldest > 300:
            problems.append(f"oldest spooled delivery is {oldest:.0f}s old")
        with self._drops_lock:
            for (dest, reason), (count, last) in sorted(self._recent_drops.items()):
                if now - last <= DROP_PROBLEM_SECONDS:
                    problems.append(
                        f"{count} deliveries to {dest} dropped ({reason}) since start, the last {now - last:.0f}s ago"
                    )
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "routes_source": self.source,
            "min_priority": self.table.min_priority,
            "ack_mode": self.settings.ack_mode,
            "routes": routes,
            "destinations": dests,
            "spool": {
                "dir": self.settings.spool_dir,
                "depth": self.spool.depth(),
                "max_entries": self.settings.spool_max_entries,
                "max_age_s": self.settings.spool_max_age,
                "oldest_age_s": round(self.spool.oldest_age(), 3),
                "corrupt_entries": self.spool.corrupt,
            },
            "dedup_open_windows": self.dedup.open_windows(),
            "config_reloads": self.reloads,
            "handover": self.handover.status()
            if self.handover
            else {
                "enabled": False,
                "why": "no alert-forwarder-kubeconfig secret: the spool lives only as long as this pod",
            },
            "terminating": self.terminating,
            "uptime_s": round(now - self.started, 1),
        }
