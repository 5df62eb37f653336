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

from . import batch, handoff, intake, rules, settings
from .edgeguard import auth, config, gateway, http, log, preauth
from .edgeguard.falco.alert import format_time
from .edgeguard.falco.source import NOT_AUDIT, batch_gc_paused

TOKEN_SECRET = "audit-ingest-token"
FORWARD_TOKEN_SECRET = "alert-forwarder-token"
_STARTED_NS = time.time_ns()


class Counters:
    # authenticated_batches / unauthenticated / invalid_token let bootstrap's delivery probe tell an
    # authenticated webhook batch from one the API server sent without credentials (client-go sends
    # the kubeconfig's token only to an https server).
    NAMES = ("requests", "events", "alerts", "alerts_forwarded", "skipped_not_audit", "dropped", "duplicates",
             "forward_failures", "rejected", "evaluation_errors", "busy", "authenticated_batches",
             "unauthenticated", "invalid_token", "refused_unread")

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
        # Request bodies in memory at once (the screen holds a slot until the answer): see _screen.
        self.bodies = threading.BoundedSemaphore(s.max_batches_in_memory)
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


def _admit(event) -> str:
    """The method and caller checks, from the request's headers alone: the method, or HTTPError."""
    m = http.require_method(event, ("GET", "POST"))
    auth.require_bearer(event, TOKEN_SECRET)
    return m


def _count_refusal(event, err: http.HTTPError) -> None:
    COUNTERS.count(rejected=1)
    if err.status == 401:
        COUNTERS.count(**{"unauthenticated" if auth.presented_token(event) is None else "invalid_token": 1})


@http.guarded
def handle(event, context):
    COUNTERS.count(requests=1)
    try:
        m = _admit(event)
    except http.HTTPError as err:
        _count_refusal(event, err)
        raise
    if m == "POST":
        COUNTERS.count(authenticated_batches=1)
    fn = STARTUP.get()
    if m == "GET":
        return _health(fn)
    return _batch(event, fn)


def _too_large(reason: str, s: settings.Settings) -> http.HTTPError:
    # The API server sends what its flags allow: say which flag keeps batches under the limit.
    flag = max(1, s.max_body_bytes - settings.BATCH_OVERHEAD)
    return http.HTTPError(413, f"{reason} (max_body_bytes): the API server keeps its audit batches under it "
                               f"with --audit-webhook-truncate-enabled=true and --audit-webhook-truncate-max-batch-"
                               f"size={flag} or less (its default is 10485760)", limit=s.max_body_bytes)


def _refused(exc: intake.BadBody, s: settings.Settings) -> http.HTTPError:
    COUNTERS.count(rejected=1)
    return _too_large(exc.reason, s) if exc.status == 413 else http.HTTPError(exc.status, exc.reason)


def _screen(req: preauth.Request):
    """Before the template reads the body (edgeguard.preauth): refuse what handle() would refuse from the headers
    alone (a missing or wrong token, a wrong method, a declared body over the limit), and let at most
    ``max_batches_in_memory`` authenticated batches have their body read at once; the others wait here, their
    bodies in waitress's temporary files, not in memory."""
    try:
        m = _admit(req)
        fn = STARTUP.get()
        if m != "POST":
            return None
        declared = http.header(req, "Content-Length")
        if declared and declared.isdigit() and int(declared) > fn.settings.max_body_bytes:
            COUNTERS.count(rejected=1)
            raise _too_large(f"request body is larger than the limit of {fn.settings.max_body_bytes} bytes",
                             fn.settings)
        wait = fn.settings.batch_wait_seconds
        if not fn.bodies.acquire(timeout=wait):
            raise _busy(f"busy: {fn.settings.max_batches_in_memory} batches are being received; retry", wait)
        return fn.bodies.release
    except http.HTTPError as err:
        COUNTERS.count(requests=1, refused_unread=1)
        if err.status in (401, 405):
            _count_refusal(req, err)
        if err.status >= 500:
            log.error("request.failed", status=err.status, reason=err.reason, path=req.path)
        answer = http.error_response(err)
        raise preauth.Refuse(err.status, answer["headers"], answer["body"].encode("utf-8")) from None


def _batch(event, fn: _Function):
    s = fn.settings
    deadline = time.monotonic() + s.answer_within
    eng = engine()
    try:
        body, ndjson = intake.read(event, s.max_body_bytes)
    except intake.BadBody as exc:
        raise _refused(exc, s) from None
    if not fn.slots.acquire(timeout=s.batch_wait_seconds):
        raise _busy("busy: another batch is being decoded and evaluated; retry", s.batch_wait_seconds)
    try:
        with batch_gc_paused():
            b = batch.evaluate(body, ndjson, eng, s.max_event_bytes)
    except intake.BadBody as exc:
        raise _refused(exc, s) from None
    finally:
        fn.slots.release()
    del body
    COUNTERS.count(skipped_not_audit=b.skipped, dropped=b.dropped + b.oversize, events=b.events - b.repeated,
                   alerts=b.alerts, evaluation_errors=b.evaluation_errors)
    if not b.events and not b.dropped and b.skipped:
        COUNTERS.count(rejected=1)
        raise http.HTTPError(400, NOT_AUDIT, skipped=b.skipped)
    summary = b.summary()
    if http.query_flag(event, "dry_run"):
        alerts = [json.loads(a.json) for g in b.groups for a in g.alerts]
        return http.json_response({**summary, "dry_run": True, "alert_count": len(alerts), "alerts": alerts})
    # Only the alerts are kept from here on; the hand-off runs outside the batch slot.
    done = _hand_off(fn, b.groups, deadline)
    dups = b.repeated + done.duplicates
    COUNTERS.count(duplicates=b.repeated)
    log.info("batch.done", events=summary["events"], alerts=done.forwarded, duplicates=dups,
             skipped=summary["skipped"], dropped=summary["dropped"])
    return http.json_response({**summary, "alert_count": done.forwarded, "duplicates": dups,
                               "forwarded": done.forwarded, "rules": sorted(done.rules)})


def _waitress_options() -> dict:
    # A body's first 64 KiB stay in waitress's memory, the rest goes to a temporary file (default 512 KiB, per
    # connection); a declared body over twice the limit is refused by waitress from its headers, unreceived.
    try:
        limit = STARTUP.get().settings.max_body_bytes
    except http.HTTPError:
        return {"inbuf_overflow": 65536}
    return {"inbuf_overflow": 65536, "max_request_body_size": 2 * limit}


preauth.install(_screen, waitress=_waitress_options())
