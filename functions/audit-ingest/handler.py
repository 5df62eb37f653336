"""audit-ingest: Falco k8s_audit detection for the Kubernetes audit webhook.

POST an Event, EventList or JSON array (or NDJSON). Every event is checked
against Falco's rules (bundled upstream set + rules.d/*.yaml + the optional
extra rules secret, see rules.py); alerts go to alert-forwarder as one JSON
array. The reply is 2xx only after that hand-off succeeded, so the API server's
retries give at-least-once delivery; handoff.py keeps retried batches
duplicate-free. One batch at a time is decoded and evaluated (a 12 MiB batch is
~60 MB in memory); hand-offs run concurrently. ``?dry_run=1`` returns the alerts
instead of forwarding them. GET returns health, ruleset facts and counters.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from . import handoff, rules
from .edgeguard import auth, config, gateway, http, log
from .edgeguard.falco.alert import format_time
from .edgeguard.falco.source import NOT_AUDIT, batch_gc_paused, decode_payload, split_payload

TOKEN_SECRET = "audit-ingest-token"
FORWARD_TOKEN_SECRET = "alert-forwarder-token"
HERE = Path(__file__).resolve().parent
_STARTED_NS = time.time_ns()


class Counters:
    # authenticated_batches / unauthenticated / invalid_token let bootstrap's delivery probe tell an
    # authenticated webhook batch from one the API server sent without credentials (client-go sends
    # the kubeconfig's token only to an https server).
    NAMES = ("requests", "events", "alerts", "alerts_forwarded", "skipped_not_audit", "dropped", "duplicates",
             "forward_failures", "rejected", "evaluation_errors", "busy", "authenticated_batches",
             "unauthenticated", "invalid_token")

    def __init__(self):
        self.lock = threading.Lock()
        self.values = {k: 0 for k in self.NAMES}

    def count(self, **inc):
        with self.lock:
            for k, v in inc.items():
                self.values[k] += v

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.values)


COUNTERS = Counters()
RULES = rules.RulesCache(HERE / "rules.d")
LEDGER = handoff.HandoffLedger()
_slots_lock = threading.Lock()
_slot: list = []


def engine():
    try:
        return RULES.get()
    except rules.RulesUnavailable as exc:
        raise http.HTTPError(503, exc.reason) from None


def _dedup_limit() -> int:
    return config.env_int("dedup_max_events", 50000, minimum=0)


def _health():
    try:
        eng = engine()
    except http.HTTPError as err:
        return http.json_response({"status": "error", "error": err.reason, "counters": COUNTERS.snapshot()}, 503)
    return http.json_response({
        "status": "ok",
        "function": "audit-ingest",
        "started": format_time(_STARTED_NS),
        "ruleset": eng.facts(),
        "counters": COUNTERS.snapshot(),
        "dedup_remembered": LEDGER.remembered(),
        "forward_function": config.env_str("forward_function", "alert-forwarder"),
        "forward_async": config.env_bool("forward_async", True),
    })


def _decode(event, max_body: int, max_event: int):
    """The JSON body with per-item raw sizes (see decode_payload); NDJSON and every error via http.parse_json."""
    body = http.read_body(event, max_bytes=max_body)
    if http.media_type(event) in http.JSON_TYPES and body.strip():
        try:
            payload, fits = decode_payload(body.decode("utf-8"), max_event)
            return payload, len(body), fits
        except (UnicodeDecodeError, ValueError, RecursionError):
            pass  # http.parse_json below answers with the precise 400
    return http.parse_json(event, max_bytes=max_body, allow_ndjson=True), len(body), frozenset()


def _evaluate(eng, evt) -> list:
    """One event's alerts. A failure is logged and counted, never a 5xx: the API server would resend the
    same batch forever and block every later event behind it."""
    try:
        return eng.evaluate(evt)
    except Exception as exc:  # noqa: BLE001
        COUNTERS.count(evaluation_errors=1)
        aid = evt.obj.get("auditID")
        log.error("event.evaluation_failed", error=type(exc).__name__, message=str(exc)[:200],
                  audit_id=aid if isinstance(aid, str) else None)
        return []


def _finish_summary(summary, batch):
    oversize = batch.oversize
    errors = list(batch.errors) + ["event larger than maxEventSize"] * (1 if oversize else 0)
    summary["dropped"] = batch.dropped + oversize
    if errors:
        summary["errors"] = sorted(set(errors))[:10]


def _send(body: str, fits: bool) -> None:
    """One part to alert-forwarder through the gateway; raises handoff errors naming what went wrong, never a value."""
    fn = config.env_str("forward_function", "alert-forwarder")
    # A single alert too big for the async queue goes through the synchronous route instead.
    async_ = config.env_bool("forward_async", True) and fits
    timeout = config.env_float("forward_timeout", 10.0)
    try:
        res = gateway.invoke(fn, body, token_secret=FORWARD_TOKEN_SECRET, async_=async_, timeout=timeout)
    except config.ConfigError as exc:
        # Not a transient failure: say what to fix instead of a bare 502 the API server retries blindly.
        raise handoff.HandoffNotConfigured(f"alert hand-off to {fn} is not configured: {exc}") from None
    except gateway.TransportError as exc:  # "timeout: ..." or "connect: <error type>", never a value
        raise handoff.HandoffError(f"alert hand-off to {fn} failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any transport failure means "not handed off"
        raise handoff.HandoffError(f"alert hand-off to {fn} failed: {type(exc).__name__}") from None
    if not 200 <= res.status < 300:
        raise handoff.HandoffError(f"alert hand-off to {fn} failed: HTTP {res.status}", status=res.status)


def _forward(groups, owner) -> int:
    limit = config.env_int("forward_max_bytes", 250_000, minimum=1024)
    try:
        accepted = handoff.forward(LEDGER, groups, owner, _send, part_bytes=limit, limit=_dedup_limit())
    except handoff.HandoffNotConfigured as exc:
        COUNTERS.count(alerts_forwarded=exc.accepted, forward_failures=1)
        raise http.HTTPError(503, exc.reason) from None
    except handoff.HandoffError as exc:
        COUNTERS.count(alerts_forwarded=exc.accepted, forward_failures=1)
        extra = {"forward_status": exc.status} if exc.status is not None else {}
        raise http.HTTPError(502, exc.reason, **extra) from None
    COUNTERS.count(alerts_forwarded=accepted)
    return accepted


def _busy(reason: str, wait: float):
    COUNTERS.count(busy=1)
    return http.HTTPError(503, reason, headers={"Retry-After": str(max(1, int(wait + 0.999)))})


def _slots() -> threading.BoundedSemaphore:
    with _slots_lock:
        if not _slot:
            _slot.append(threading.BoundedSemaphore(config.env_int("max_concurrent_batches", 1, minimum=1)))
        return _slot[0]


@http.guarded
def handle(event, context):
    return _handle(event, context)


def _handle(event, context):
    COUNTERS.count(requests=1)
    try:
        m = http.require_method(event, ("GET", "POST"))
        auth.require_bearer(event, TOKEN_SECRET)
    except http.HTTPError as err:
        COUNTERS.count(rejected=1)
        if err.status == 401:
            COUNTERS.count(**{"unauthenticated" if auth.presented_token(event) is None else "invalid_token": 1})
        raise
    if m == "GET":
        return _health()
    COUNTERS.count(authenticated_batches=1)
    eng = engine()
    wait = config.env_float("batch_wait_seconds", 5.0)
    # A 12 MiB batch decodes to ~60 MB: a decoded batch per server thread would exceed the pod's memory,
    # and the GIL gives no speed-up anyway. The API server retries a 503.
    slots = _slots()
    if not slots.acquire(timeout=max(0.0, wait)):
        raise _busy("busy: another batch is being decoded and evaluated; retry", wait)
    try:
        with batch_gc_paused():
            summary, groups, dups = _evaluate_batch(event, eng)
    finally:
        slots.release()
    if summary.get("dry_run"):
        return http.json_response(summary)

    # Only the alerts are kept from here on; the hand-off runs outside the batch slot.
    owner = object()
    pending, forwarded, rule_names = groups, 0, set()
    limit = _dedup_limit()
    while pending:
        with LEDGER.cond:
            mine, pending, d = LEDGER.claim(pending, owner, limit=limit)
            dups += d
            deadline = time.monotonic() + wait
            while not mine and pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _busy(f"{len(pending)} events of this batch are being handed off by another "
                                "request; retry", wait)
                LEDGER.cond.wait(left)
                mine, pending, d = LEDGER.claim(pending, owner, limit=limit)
                dups += d
        if mine:
            forwarded += _forward(mine, owner)
            rule_names.update(a.rule for g in mine for a in g.alerts)
    COUNTERS.count(duplicates=dups)
    log.info("batch.done", events=summary["events"], alerts=forwarded, duplicates=dups,
             skipped=summary["skipped"], dropped=summary["dropped"])
    summary.update(alert_count=forwarded, duplicates=dups, forwarded=forwarded, rules=sorted(rule_names))
    return http.json_response(summary)


def _evaluate_batch(event, eng):
    """Decode and evaluate one request body: (summary, alert groups of events not yet handed off, duplicates)."""
    max_body = config.env_int("max_body_bytes", 12582912, minimum=1)
    max_event = config.env_int("max_event_bytes", 262144, minimum=1)
    try:
        payload, raw_size, fits = _decode(event, max_body, max_event)
    except http.HTTPError:
        COUNTERS.count(rejected=1)
        raise
    batch = split_payload(payload, raw_size=raw_size, max_event_bytes=max_event, fits=fits)
    del payload
    COUNTERS.count(skipped_not_audit=batch.skipped, dropped=batch.dropped)
    if not batch.events and not batch.dropped and batch.skipped:
        COUNTERS.count(rejected=1)
        raise http.HTTPError(400, NOT_AUDIT, skipped=batch.skipped)
    summary = {"events": len(batch.events), "skipped": batch.skipped, "dropped": batch.dropped}

    if http.query_flag(event, "dry_run"):
        alerts = [a for e in batch.events for a in _evaluate(eng, e)]
        _finish_summary(summary, batch)
        COUNTERS.count(events=len(batch.events), alerts=len(alerts), dropped=summary["dropped"] - batch.dropped)
        summary.update(dry_run=True, alert_count=len(alerts), alerts=[a.to_dict() for a in alerts])
        return summary, [], 0

    # Check only (cheap, under the lock): events already handed off are not evaluated again.
    fresh, dups = LEDGER.fresh(batch.events)
    groups, n_alerts = [], 0
    for k, e in fresh:
        alerts = _evaluate(eng, e)
        n_alerts += len(alerts)
        groups.append(handoff.Group(k, alerts))
    _finish_summary(summary, batch)
    COUNTERS.count(events=len(fresh), alerts=n_alerts, dropped=summary["dropped"] - batch.dropped)
    return summary, groups, dups
