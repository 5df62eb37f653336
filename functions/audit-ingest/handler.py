"""audit-ingest: Falco k8s_audit detection for the Kubernetes audit webhook.

  POST /         an EventList (what the API server sends), Event, JSON array or NDJSON: every event is
                 checked against Falco's rules (rules.py) and the alerts are handed to alert-forwarder
                 synchronously (handoff.py); 200 only once it accepted them. ``?dry_run=1`` returns them.
  GET  /         health, ruleset facts, engine settings and counters (JSON)
  GET  /metrics  Prometheus text (metrics.py); the token or the read-only edgeguard-metrics-token

The handler parses, calls and answers: bodies are decoded item by item (intake.py) and evaluated
(batch.py) one batch at a time; requests are screened before the template reads their body (preauth);
settings are read once at start-up (settings.py).
"""

from __future__ import annotations

import json
import threading
import time

from . import batch, forward, handoff, intake, metrics, rules, settings
from .edgeguard import auth, config, http, log, preauth
from .edgeguard.falco.alert import format_time
from .edgeguard.falco.source import NOT_AUDIT, batch_gc_paused

TOKEN_SECRET = "audit-ingest-token"
_STARTED_NS = time.time_ns()
METRICS = metrics.registry()


class _Function:
    """What lives as long as the process, built from the settings read at start-up."""

    def __init__(self, s: settings.Settings):
        self.settings = s
        self.rules = rules.RulesCache(s, on_load=lambda result: METRICS.inc("rules_loads_total", {"result": result}))
        self.ledger = handoff.HandoffLedger(s.dedup_max_events)
        # Decoding and evaluating is CPU-bound under the GIL: one batch at a time is as fast, and bounds memory.
        self.slots = threading.BoundedSemaphore(s.max_concurrent_batches)
        # Request bodies in memory at once (the screen holds a slot until the answer): see _screen.
        self.bodies = threading.BoundedSemaphore(s.max_batches_in_memory)
        self.forwarder = forward.Forwarder(
            s.forward_function,
            s.forward_timeout,
            on_result=lambda status: METRICS.inc(
                "outputs_total", {"destination": s.forward_function, "status": status}
            ),
        )


STARTUP = config.Startup("audit-ingest", lambda: _Function(settings.load()))


def engine():
    try:
        return STARTUP.get().rules.get()
    except rules.RulesUnavailable as exc:
        raise http.HTTPError(503, exc.reason) from None


def _collect(m) -> None:
    """Gauges read when /metrics is rendered: the ruleset's state (loading it if a source changed), the ledger."""
    try:
        fn = STARTUP.get()
    except http.HTTPError:
        m.set("rules_loaded", 0)
        return
    m.set("dedup_remembered", fn.ledger.remembered())
    try:
        eng = fn.rules.get()
    except rules.RulesUnavailable:
        m.set("rules_loaded", 0)
        m.set("rules_enabled", 0)
        return
    m.set("rules_loaded", 1)
    m.set("rules_enabled", len(eng.rules))
    m.set("rules_warnings", len(eng.ruleset.warnings))


METRICS.add_collector(_collect)


# ---- routes and callers ------------------------------------------------------------------------
ROUTES = {"/": ("GET", "POST"), "/metrics": ("GET",)}


def _route(event) -> str:
    # Any other path is the webhook's: a URL written Falco's way (.../k8s-audit) still works.
    return "/metrics" if (http.path(event).rstrip("/") or "/") == "/metrics" else "/"


def _admit(event) -> str:
    """Route, method and caller checks from the request's headers alone: "METHOD /path", or HTTPError."""
    route = _route(event)
    m = http.require_method(event, ROUTES[route])
    if route == "/metrics":
        auth.require_metrics_reader(event, TOKEN_SECRET)
    else:
        auth.require_bearer(event, TOKEN_SECRET)
    return f"{m} {route}"


_REASONS = {405: "method", 413: "too_large", 415: "content_type", 503: "unconfigured"}


def _reject(event, err: http.HTTPError) -> None:
    if err.status == 401:
        reason = "unauthenticated" if auth.presented_token(event) is None else "invalid_token"
    else:
        reason = _REASONS.get(err.status, "invalid")
    METRICS.inc("rejected_total", {"reason": reason})


def _busy(reason: str, wait: float) -> http.HTTPError:
    METRICS.inc("busy_total")
    return http.HTTPError(503, reason, headers={"Retry-After": str(max(1, int(wait + 0.999)))})


@http.guarded
def _handle(event, context):
    try:
        what = _admit(event)
    except http.HTTPError as err:
        _reject(event, err)
        raise
    if what == "GET /metrics":  # answers even when misconfigured: that is when it is needed
        return http.text_response(METRICS.render(), content_type=metrics.CONTENT_TYPE)
    if what == "POST /":
        METRICS.inc("authenticated_batches_total")
    fn = STARTUP.get()
    if what == "GET /":
        return _health(fn)
    return _batch(event, fn)


def handle(event, context):
    res = _handle(event, context)
    METRICS.inc("requests_total", {"route": _route_label(event), "code": res["statusCode"]})
    return res


def _route_label(event) -> str:
    m = http.method(event)
    return f"{m if m in ('GET', 'HEAD', 'POST') else 'other'} {_route(event)}"


def _screen(req: preauth.Request):
    """Before the template reads the body (edgeguard.preauth): refuse what handle() would refuse from the headers
    alone (a missing or wrong token, a wrong route or method, a declared body over the limit), and let at most
    ``max_batches_in_memory`` authenticated batches have their body read at once; the others wait here, their
    bodies in waitress's temporary files, not in memory."""
    try:
        try:
            what = _admit(req)
        except http.HTTPError as err:
            _reject(req, err)
            raise
        if what != "POST /":
            return None
        fn = STARTUP.get()
        declared = http.declared_length(req)
        if declared is not None and declared > fn.settings.max_body_bytes:
            METRICS.inc("rejected_total", {"reason": "too_large"})
            raise _too_large(
                f"request body is larger than the limit of {fn.settings.max_body_bytes} bytes", fn.settings
            )
        wait = fn.settings.batch_wait_seconds
        if not fn.bodies.acquire(timeout=wait):
            raise _busy(f"busy: {fn.settings.max_batches_in_memory} batches are being received; retry", wait)
        return fn.bodies.release
    except http.HTTPError as err:
        METRICS.inc("refused_unread_total")
        METRICS.inc("requests_total", {"route": _route_label(req), "code": err.status})
        if err.status >= 500:
            log.error("request.failed", status=err.status, reason=err.reason, path=req.path)
        answer = http.error_response(err)
        raise preauth.Refuse(err.status, answer["headers"], answer["body"].encode("utf-8")) from None


# ---- GET / --------------------------------------------------------------------------------------
def _engine_facts(c) -> dict:
    """The effective falco.yaml-like settings: where they came from, and the selection in falco.yaml's form."""
    return {
        "origins": list(c.origins),
        "rule_matching": c.rule_matching,
        "priority": c.priority,
        "rules": [
            {"enable" if s.enable else "disable": {k: v for k, v in (("rule", s.rule), ("tag", s.tag)) if v}}
            for s in c.rules
        ],
        "append_output": len(c.append_output),
    }


def _counters() -> dict:
    c = metrics.counters(METRICS)
    c["requests"] += 1  # this one, counted once it is answered
    return c


def _health(fn: _Function):
    try:
        eng = engine()
    except http.HTTPError as err:
        return http.json_response({"status": "error", "error": err.reason, "counters": _counters()}, 503)
    return http.json_response(
        {
            "status": "ok",
            "function": "audit-ingest",
            "started": format_time(_STARTED_NS),
            "ruleset": eng.facts(),
            "engine": _engine_facts(eng.config),
            "counters": _counters(),
            "dedup_remembered": fn.ledger.remembered(),
            "forward_function": fn.settings.forward_function,
        }
    )


# ---- POST / -------------------------------------------------------------------------------------
def _too_large(reason: str, s: settings.Settings) -> http.HTTPError:
    # The API server sends what its flags allow: say which flag keeps batches under the limit.
    flag = max(1, s.max_body_bytes - settings.BATCH_OVERHEAD)
    return http.HTTPError(
        413,
        f"{reason} (max_body_bytes): the API server keeps its audit batches under it "
        f"with --audit-webhook-truncate-enabled=true and --audit-webhook-truncate-max-batch-"
        f"size={flag} or less (its default is 10485760)",
        limit=s.max_body_bytes,
    )


def _refused(event, exc: intake.BadBody, s: settings.Settings) -> http.HTTPError:
    err = _too_large(exc.reason, s) if exc.status == 413 else http.HTTPError(exc.status, exc.reason)
    _reject(event, err)
    return err


def _batch(event, fn: _Function):
    s = fn.settings
    deadline = time.monotonic() + s.answer_within
    eng = engine()
    try:
        body, ndjson = intake.read(event, s.max_body_bytes)
    except intake.BadBody as exc:
        raise _refused(event, exc, s) from None
    if not fn.slots.acquire(timeout=s.batch_wait_seconds):
        raise _busy("busy: another batch is being decoded and evaluated; retry", s.batch_wait_seconds)
    started = time.perf_counter()
    try:
        with batch_gc_paused():
            b = batch.evaluate(body, ndjson, eng, s.max_event_bytes)
    except intake.BadBody as exc:
        raise _refused(event, exc, s) from None
    finally:
        fn.slots.release()
    METRICS.observe("batch_seconds", time.perf_counter() - started)
    del body
    _count(b)
    if not b.events and not b.dropped and b.skipped:
        METRICS.inc("rejected_total", {"reason": "not_audit"})
        raise http.HTTPError(400, NOT_AUDIT, skipped=b.skipped)
    summary = b.summary()
    if http.query_flag(event, "dry_run"):
        alerts = [json.loads(a.json) for g in b.groups for a in g.alerts]
        return http.json_response({**summary, "dry_run": True, "alert_count": len(alerts), "alerts": alerts})
    # Only the alerts are kept from here on; the hand-off runs outside the batch slot.
    done = _hand_off(fn, b.groups, deadline)
    dups = b.repeated + done.duplicates
    log.info(
        "batch.done",
        events=summary["events"],
        alerts=done.forwarded,
        duplicates=dups,
        skipped=summary["skipped"],
        dropped=summary["dropped"],
    )
    return http.json_response(
        {
            **summary,
            "alert_count": done.forwarded,
            "duplicates": dups,
            "forwarded": done.forwarded,
            "rules": sorted(done.rules),
        }
    )


def _count(b: batch.Batch) -> None:
    m = METRICS
    m.inc("events_total", value=b.events - b.repeated)
    m.inc("skipped_total", value=b.skipped)
    m.inc("dropped_total", {"reason": "stage_timestamp"}, value=b.dropped)
    m.inc("dropped_total", {"reason": "oversize"}, value=b.oversize)
    m.inc("duplicates_total", value=b.repeated)
    m.inc("evaluation_errors_total", value=b.evaluation_errors)
    for g in b.groups:
        for a in g.alerts:
            m.inc("alerts_total", {"priority": a.priority, "rule": a.rule})


def _hand_off(fn: _Function, groups, deadline: float) -> handoff.Delivery:
    s = fn.settings
    try:
        done = fn.ledger.deliver(
            groups,
            fn.forwarder.send,
            part_bytes=s.forward_max_bytes,
            part_alerts=s.forward_max_alerts,
            wait=s.batch_wait_seconds,
            deadline=deadline,
            part_time=s.forward_timeout,
        )
    except handoff.Undelivered as exc:
        METRICS.inc("handoff_alerts_total", value=exc.forwarded)
        METRICS.inc("duplicates_total", value=exc.duplicates)
        if isinstance(exc, (handoff.HandoffBusy, handoff.HandoffOutOfTime)):
            raise _busy(exc.reason, s.batch_wait_seconds) from None
        if isinstance(exc, handoff.HandoffNotConfigured):
            raise http.HTTPError(503, exc.reason) from None
        # what is left is a HandoffError: a transport failure (no status) or alert-forwarder's non-2xx answer
        status = exc.status if isinstance(exc, handoff.HandoffError) else None
        if status is None:
            raise http.HTTPError(502, exc.reason) from None
        raise http.HTTPError(502, exc.reason, forward_status=status) from None
    METRICS.inc("handoff_alerts_total", value=done.forwarded)
    METRICS.inc("duplicates_total", value=done.duplicates)
    return done


def _waitress_options() -> dict:
    # A body's first 64 KiB stay in waitress's memory, the rest goes to a temporary file (default 512 KiB, per
    # connection); a declared body over twice the limit is refused by waitress from its headers, unreceived.
    try:
        limit = STARTUP.get().settings.max_body_bytes
    except http.HTTPError:
        return {"inbuf_overflow": 65536}
    return {"inbuf_overflow": 65536, "max_request_body_size": 2 * limit}


preauth.install(_screen, waitress=_waitress_options())
