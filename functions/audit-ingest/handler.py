"""audit-ingest: Falco k8s_audit detection for the Kubernetes audit webhook.

POST an Event, EventList or JSON array (or NDJSON). Every event is checked
against Falco's rules (rules.py: bundled upstream set + rules.d/*.yaml + the
optional extra rules secret); alerts go to alert-forwarder as JSON arrays. The
reply is 2xx only after that hand-off succeeded, so the API server's retries
give at-least-once delivery; handoff.py keeps retried batches duplicate-free.
One batch at a time is decoded and evaluated; hand-offs run concurrently.
``?dry_run=1`` returns the alerts instead of forwarding them. GET returns
health, ruleset facts and counters. Settings are read once (settings.py).
"""
from __future__ import annotations

import json
import threading
import time

from . import handoff, rules, settings
from .edgeguard import auth, config, gateway, http, log
from .edgeguard.falco.alert import format_time
from .edgeguard.falco.source import NOT_AUDIT, batch_gc_paused, decode_payload, split_payload

TOKEN_SECRET = "audit-ingest-token"
FORWARD_TOKEN_SECRET = "alert-forwarder-token"
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


class _Function:
    """What lives as long as the process, built from the settings read at start-up."""

    def __init__(self, s: settings.Settings):
        self.settings = s
        self.rules = rules.RulesCache(s)
        self.ledger = handoff.HandoffLedger(s.dedup_max_events)
        # A 12 MiB batch decodes to ~60 MB: a decoded batch per server thread would exceed the pod's memory,
        # and the GIL gives no speed-up anyway. The API server retries a 503.
        self.slots = threading.BoundedSemaphore(s.max_concurrent_batches)
        # Synchronous: alert-forwarder answers 2xx once the alerts are in its durable spool, so audit-ingest's
        # 2xx means the same. Never /async-function/: CE's queue-worker logs each message's headers (the
        # bearer token), never retries, and runs one call at a time.
        self.route = gateway.Gateway(s.forward_function, async_=False, token_secret=FORWARD_TOKEN_SECRET,
                                     timeout=s.forward_timeout)


COUNTERS = Counters()
STARTUP = config.Startup("audit-ingest", lambda: _Function(settings.load()))


def engine():
    try:
        return STARTUP.get().rules.get()
    except rules.RulesUnavailable as exc:
        raise http.HTTPError(503, exc.reason) from None


def _health(fn: _Function):
    try:
        eng = engine()
    except http.HTTPError as err:
        return http.json_response({"status": "error", "error": err.reason, "counters": COUNTERS.snapshot()}, 503)
    return http.json_response({
        "status": "ok",
        "function": "audit-ingest",
        "started": format_time(_STARTED_NS),
        "ruleset": eng.facts(),
        "engine": _engine_facts(eng.config),
        "counters": COUNTERS.snapshot(),
        "dedup_remembered": fn.ledger.remembered(),
        "forward_function": fn.settings.forward_function,
    })


def _engine_facts(c) -> dict:
    """The effective falco.yaml-like settings: where they came from, and the selection in falco.yaml's form."""
    return {"origins": list(c.origins), "rule_matching": c.rule_matching, "priority": c.priority,
            "rules": [{"enable" if s.enable else "disable": {k: v for k, v in (("rule", s.rule), ("tag", s.tag)) if v}}
                      for s in c.rules],
            "append_output": len(c.append_output)}


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
    batch until its retries run out, then drop it, and every other event's alerts with it."""
    try:
        return [handoff.Alert(r.name, eng.alert_json(r, evt)) for r in eng.match(evt)]
    except Exception as exc:  # noqa: BLE001
        COUNTERS.count(evaluation_errors=1)
        aid = evt.obj.get("auditID")
        log.error("event.evaluation_failed", error=type(exc).__name__, message=str(exc)[:200],
                  audit_id=aid if isinstance(aid, str) else None)
        return []


def _evaluate_batch(event, eng, s: settings.Settings):
    """Decode and evaluate one request body: (summary, alert groups, events repeated within the batch).

    An event that comes twice in one batch is evaluated once; whether it was handed off before is the
    ledger's one check, at hand-off.
    """
    try:
        payload, raw_size, fits = _decode(event, s.max_body_bytes, s.max_event_bytes)
    except http.HTTPError:
        COUNTERS.count(rejected=1)
        raise
    batch = split_payload(payload, raw_size=raw_size, max_event_bytes=s.max_event_bytes, fits=fits)
    del payload
    COUNTERS.count(skipped_not_audit=batch.skipped, dropped=batch.dropped)
    if not batch.events and not batch.dropped and batch.skipped:
        COUNTERS.count(rejected=1)
        raise http.HTTPError(400, NOT_AUDIT, skipped=batch.skipped)
    groups, seen, repeated, n_alerts = [], set(), 0, 0
    for e in batch.events:
        k = handoff.dedup_key(e)
        if k is not None:
            if k in seen:
                repeated += 1
                continue
            seen.add(k)
        alerts = _evaluate(eng, e)
        n_alerts += len(alerts)
        groups.append(handoff.Group(k, alerts))
    oversize = batch.oversize
    summary = {"events": len(batch.events), "skipped": batch.skipped, "dropped": batch.dropped + oversize}
    errors = list(batch.errors) + ["event larger than maxEventSize"] * (1 if oversize else 0)
    if errors:
        summary["errors"] = sorted(set(errors))[:10]
    COUNTERS.count(events=len(batch.events) - repeated, alerts=n_alerts, dropped=oversize)
    return summary, groups, repeated


def _sender(fn: _Function):
    name = fn.settings.forward_function

    def send(body: str) -> None:
        """One part to alert-forwarder through the gateway; errors name what went wrong, never a value."""
        try:
            res = fn.route.invoke(body)
        except config.ConfigError as exc:
            # Not a transient failure: say what to fix instead of a bare 502 the API server retries blindly.
            raise handoff.HandoffNotConfigured(f"alert hand-off to {name} is not configured: {exc}") from None
        except gateway.TransportError as exc:  # "timeout: ..." or "connect: <error type>", never a value
            raise handoff.HandoffError(f"alert hand-off to {name} failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any transport failure means "not handed off"
            raise handoff.HandoffError(f"alert hand-off to {name} failed: {type(exc).__name__}") from None
        if not 200 <= res.status < 300:
            raise handoff.HandoffError(f"alert hand-off to {name} failed: HTTP {res.status}", status=res.status)
    return send


def _busy(reason: str, wait: float):
    COUNTERS.count(busy=1)
    return http.HTTPError(503, reason, headers={"Retry-After": str(max(1, int(wait + 0.999)))})


def _hand_off(fn: _Function, groups, deadline: float) -> handoff.Delivery:
    s = fn.settings
    try:
        done = fn.ledger.deliver(groups, _sender(fn), part_bytes=s.forward_max_bytes, part_alerts=s.forward_max_alerts,
                                 wait=s.batch_wait_seconds, deadline=deadline, part_time=s.forward_timeout)
    except handoff.Undelivered as exc:
        COUNTERS.count(alerts_forwarded=exc.forwarded, duplicates=exc.duplicates)
        if isinstance(exc, (handoff.HandoffBusy, handoff.HandoffOutOfTime)):
            raise _busy(exc.reason, s.batch_wait_seconds) from None
        COUNTERS.count(forward_failures=1)
        if isinstance(exc, handoff.HandoffNotConfigured):
            raise http.HTTPError(503, exc.reason) from None
        extra = {"forward_status": exc.status} if exc.status is not None else {}
        raise http.HTTPError(502, exc.reason, **extra) from None
    COUNTERS.count(alerts_forwarded=done.forwarded, duplicates=done.duplicates)
    return done


@http.guarded
def handle(event, context):
    COUNTERS.count(requests=1)
    try:
        m = http.require_method(event, ("GET", "POST"))
        auth.require_bearer(event, TOKEN_SECRET)
    except http.HTTPError as err:
        COUNTERS.count(rejected=1)
        if err.status == 401:
            COUNTERS.count(**{"unauthenticated" if auth.presented_token(event) is None else "invalid_token": 1})
        raise
    if m == "POST":
        COUNTERS.count(authenticated_batches=1)
    fn = STARTUP.get()
    if m == "GET":
        return _health(fn)
    return _batch(event, fn)


def _batch(event, fn: _Function):
    deadline = time.monotonic() + fn.settings.answer_within
    eng = engine()
    wait = fn.settings.batch_wait_seconds
    if not fn.slots.acquire(timeout=wait):
        raise _busy("busy: another batch is being decoded and evaluated; retry", wait)
    try:
        with batch_gc_paused():
            summary, groups, repeated = _evaluate_batch(event, eng, fn.settings)
    finally:
        fn.slots.release()
    if http.query_flag(event, "dry_run"):
        alerts = [json.loads(a.json) for g in groups for a in g.alerts]
        return http.json_response({**summary, "dry_run": True, "alert_count": len(alerts), "alerts": alerts})
    # Only the alerts are kept from here on; the hand-off runs outside the batch slot.
    done = _hand_off(fn, groups, deadline)
    dups = repeated + done.duplicates
    COUNTERS.count(duplicates=repeated)
    log.info("batch.done", events=summary["events"], alerts=done.forwarded, duplicates=dups,
             skipped=summary["skipped"], dropped=summary["dropped"])
    return http.json_response({**summary, "alert_count": done.forwarded, "duplicates": dups,
                               "forwarded": done.forwarded, "rules": sorted(done.rules)})
