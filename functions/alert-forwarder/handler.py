"""alert-forwarder: route Falco alerts to people, to the action centre and to remediation, and lose none.

Endpoints (all need the `alert-forwarder-token` bearer token; POST / also takes it as the password of Basic
auth, because Falco's http_output cannot set headers: its URL carries it as http://falco:<token>@host/...,
which libcurl sends as Basic. Never `?token=`: of-watchdog logs request URLs):

  POST /         one Falco alert, a JSON array of alerts, or NDJSON; 202 once routed (and spooled)
  POST /flush    retry spooled deliveries now, one probe per failing destination (`?due_only=1`: only those
                 whose back-off has passed)
  POST /test     send a test alert through the routes (`?dry_run=1` only explains where it would go)
  GET  /metrics  Prometheus text
  GET  /         health and configuration, without secrets

OpenFaaS CE's cron-connector can only send `POST /` with an empty body and no credentials. By default that is a
401 like any anonymous request. Only if the `cron_flush` environment variable is deliberately set to true is
that one request shape treated as a flush (it carries no data, returns only counts, and runs at most once per
10 s); the background tick already retries the spool every second while the pod runs.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import cast

from . import startup, ui
from .edgeguard import auth, config, http, jsonsafe, log, metrics
from .edgeguard.falco.alert import format_time, parse_alert
from .forwarder import Forwarder
from .history import FilterError
from .startup import TOKEN_SECRET

# Read once at start-up; a bad setting makes every request a 503 naming it (config.Startup), as in every function.
STARTUP = config.Startup("alert-forwarder", startup.load)
if STARTUP.error is None:
    _RUN = STARTUP.get()
    FORWARDER, NODE_TOKENS, SESSIONS, SHUTDOWN = _RUN.forwarder, _RUN.node_tokens, _RUN.sessions, _RUN.shutdown
    MAX_BODY, MAX_BATCH, CRON_FLUSH = _RUN.max_body, _RUN.max_batch, _RUN.cron_flush
else:  # handle() answers the 503 before anything below reads these
    FORWARDER = cast(Forwarder, None)
    NODE_TOKENS, SESSIONS, SHUTDOWN = None, cast(ui.Sessions, None), (0.0, 0.0)
    MAX_BODY, MAX_BATCH, CRON_FLUSH = 0, 0, False
_cron_lock = threading.Lock()


def _on_sigterm(signum, frame) -> None:
    """of-watchdog passes SIGTERM on at once and keeps serving for healthcheck_interval; the kubelet kills the pod
    at terminationGracePeriodSeconds (30 s on CE). Drain and hand over in a thread and keep serving: exiting
    now would make the watchdog answer every further request with 500 (exit 0) or drop them (exit != 0), and
    Falco counts both as delivered."""
    if FORWARDER.terminating is None:
        threading.Thread(target=_shutdown, name="shutdown", daemon=True).start()


def _shutdown() -> None:
    import os

    watchdog = os.getppid()
    try:
        FORWARDER.shutdown(drain_seconds=SHUTDOWN[0], deadline_seconds=SHUTDOWN[1])
    except Exception as exc:  # noqa: BLE001 - whatever happens, the log says it
        log.error("shutdown.crashed", error=type(exc).__name__, message=str(exc)[:200])
    # Serve (and hand over) for as long as the watchdog proxies to us; once it has exited nothing can reach this
    # process any more. In a pod the container's end kills us anyway; outside one (make up, tests) we must not
    # outlive it as an orphan.
    while os.getppid() == watchdog:
        time.sleep(0.2)
    os._exit(0)  # no log line: stderr was the watchdog's pipe, and a write to it now fails


def _under_the_template() -> bool:
    """Imported by the python3-http template's index.py (a pod, or the real watchdog in tests), not by a test
    process, whose own SIGTERM handling must stay as it is."""
    import sys

    main = sys.modules.get("__main__")
    return Path(getattr(main, "__file__", "") or "").name == "index.py" and hasattr(main, "Flask")


if STARTUP.error is None and _under_the_template() and threading.current_thread() is threading.main_thread():
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
_cron_last = [0.0]


def _validate(doc) -> list[dict]:
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise http.HTTPError(400, "empty batch: send one alert object or a non-empty array")
    if len(items) > MAX_BATCH:
        raise http.HTTPError(413, f"batch of {len(items)} alerts is over the limit of {MAX_BATCH}")
    # Every alert of the batch is checked before any of them is routed: a batch refused for its 7th alert must
    # not have opened dedup windows (or counted, or spooled) for the first six.
    alerts = []
    for i, obj in enumerate(items):
        where = f"alert[{i}]: " if isinstance(doc, list) else ""
        try:
            alert = parse_alert(obj).to_dict()
            _check_output_fields(
                alert["output_fields"], f"$[{i}].output_fields" if isinstance(doc, list) else "$.output_fields"
            )
        except jsonsafe.UnsafeJSON as exc:
            raise http.HTTPError(
                400, f"{where}invalid value at {exc.where}: {exc.what}; nothing was forwarded", index=i, path=exc.where
            ) from None
        except ValueError as exc:
            raise http.HTTPError(400, f"{where}{exc}; nothing was forwarded", index=i) from None
        alerts.append(alert)
    return alerts


def _check_output_fields(fields: dict, root: str) -> None:
    """Falco's output_fields hold scalars, or flat arrays of scalars for list fields (ka.req.pod.containers.image):
    anything deeper is not an alert Falco could send, and would break dedup keys and chat formats."""
    jsonsafe.scalar_fields({k: v for k, v in fields.items() if not isinstance(v, list)}, fields, root=root)
    for name, value in fields.items():
        if isinstance(value, list):
            jsonsafe.scalar_fields(dict(enumerate(value)), range(len(value)), root=jsonsafe.key_path(root, name))


def _sender(event) -> str:
    """Who posts: ``fleet`` (the alert-forwarder-token: audit-ingest, Falco DaemonSets) or ``node:<name>``
    (a host-mode Falco with its own per-node token, Basic user=<node>). Raises the 401/503 otherwise."""
    try:
        auth.require_bearer(event, TOKEN_SECRET, allow_basic=True)
        return "fleet"
    except http.HTTPError as err:
        creds = auth.basic_credentials(event)
        if err.status != 401 or NODE_TOKENS is None or creds is None or http.query(event, "token") is not None:
            raise
        if NODE_TOKENS.verify(*creds):
            return f"node:{creds[0]}"
        raise


def _viewer(event) -> None:
    """Read-only access (GET /alerts, the page's data): a bearer token (ours or edgeguard-metrics-token), or a
    session the page's login started. Never a token in the URL."""
    if http.header(event, "Authorization") or http.query(event, "token") is not None:
        auth.require_metrics_reader(event, TOKEN_SECRET)
        return
    if SESSIONS.get(event) is None:
        raise http.HTTPError(
            401,
            "sign in on the page (ui), or send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="edgeguard"'},
        )


def _alerts(event) -> dict:
    _viewer(event)
    params = {
        k: http.query(event, k)
        for k in ("priority", "rule", "source", "hostname", "destination", "state", "since", "after")
    }
    raw_limit = http.query(event, "limit")
    try:
        limit = min(1000, max(1, int("200" if raw_limit is None else raw_limit)))
    except ValueError:
        raise http.HTTPError(400, "limit must be an integer", parameter="limit") from None
    try:
        return http.json_response(FORWARDER.history.query(params, limit=limit))
    except FilterError as exc:
        raise http.HTTPError(400, str(exc)) from None


def _summary(event) -> dict:
    _viewer(event)
    st = FORWARDER.status()
    dests = {
        n: {
            k: d.get(k)
            for k in (
                "type",
                "state",
                "last_error",
                "consecutive_failures",
                "queued",
                "last_success_s_ago",
                "disabled_reason",
            )
        }
        for n, d in st["destinations"].items()
    }
    return http.json_response(
        {
            "status": st["status"],
            "problems": st["problems"],
            "spool": st["spool"],
            "destinations": dests,
            "counts": FORWARDER.history.counts(60),
            "terminating": st["terminating"],
        }
    )


def _page(event, m: str) -> dict:
    if m in ("GET", "HEAD"):
        sess = SESSIONS.get(event)
        return ui.app_page(sess) if sess else ui.login_page()
    http.require_method(event, ("GET", "POST"))
    if not ui.same_origin(event):
        raise http.HTTPError(403, "cross-site form posts are refused")
    fields = ui.form(event)
    if fields.get("action") == "logout":
        sess = SESSIONS.get(event)
        if sess is None or not ui.csrf_ok(sess, fields.get("csrf")):
            raise http.HTTPError(403, "sign out needs the page's CSRF token")
        SESSIONS.drop(event)
        return http.text_response(
            "", 303, headers={"Location": "ui", "Set-Cookie": ui.set_cookie(event, "", 0), **ui.SECURITY_HEADERS}
        )
    if SESSIONS.logins.take():
        return {**ui.login_page("too many sign-in attempts; wait a minute", 429)}
    given = fields.get("token", "")
    ok = bool(given) and any(_token_ok(given, name) for name in (TOKEN_SECRET, auth.METRICS_SECRET))
    if not ok:
        log.warning("ui.login_refused")
        return ui.login_page("that token is not accepted", 401)
    sid, _ = SESSIONS.create("viewer")
    log.info("ui.login", sessions=SESSIONS.count())
    return http.text_response(
        "",
        303,
        headers={"Location": "ui", "Set-Cookie": ui.set_cookie(event, sid, int(SESSIONS.ttl)), **ui.SECURITY_HEADERS},
    )


def _token_ok(given: str, secret_name: str) -> bool:
    if not config.read_secret(secret_name):
        return False
    return auth.token_matches(given, secret_name)


def _ingest(event) -> dict:
    sender = _sender(event)
    FORWARDER.metrics.inc("senders_total", {"sender": sender.split(":", 1)[0]})
    try:
        doc = http.parse_json(event, max_bytes=MAX_BODY, allow_ndjson=True, allow_gzip=True)
    except http.HTTPError as err:
        if err.status == 415 and http.media_type(event) == "text/plain":
            # What Falco's http_output sends with json_output: false: one formatted line, no fields to route on.
            err.reason += "; Falco sends text/plain unless falco.yaml has json_output: true (set json_output: true)"
        raise
    alerts = _validate(doc)
    report = FORWARDER.ingest(alerts, sender=sender)
    report["spool_depth"] = FORWARDER.spool.depth()
    return http.json_response(report, 202)


def _cron_flush(event) -> dict:
    now = time.monotonic()
    with _cron_lock:
        # Unauthenticated, so at most one per 10 s: it must not become a way to hammer receivers.
        if now - _cron_last[0] < 10.0:
            return http.json_response({"flush": "skipped", "reason": "flushed less than 10s ago"}, 200)
        _cron_last[0] = now
    counts = FORWARDER.flush(ignore_schedule=True)
    log.info("spool.cron_flush", **counts)
    return http.json_response({"flush": counts}, 200)


def _is_cron_call(event) -> bool:
    body = getattr(event, "body", b"") or b""
    return (
        CRON_FLUSH
        and not body.strip()
        and http.header(event, "Authorization") is None
        and http.query(event, "token") is None
    )


def _authenticated(event) -> None:
    """Bearer check, then the opportunistic retry tick: an anonymous request must cause no spool work."""
    auth.require_bearer(event, TOKEN_SECRET)
    FORWARDER.maybe_tick()  # ingest ticks itself, after routing


def _test(event, context) -> dict:
    _authenticated(event)
    overrides = (
        http.parse_json(event, max_bytes=MAX_BODY, allow_empty=True)
        if (getattr(event, "body", b"") or b"").strip()
        else None
    )
    now_ns = time.time_ns()
    priority = http.query(event, "priority", "Warning")
    alert = {
        "hostname": getattr(context, "hostname", None) or "alert-forwarder",
        "output_fields": {"test": "true"},
        "priority": priority,
        "rule": "Test rule",
        "source": "internal",
        "tags": ["example", "test"],
        "time": format_time(now_ns),
    }
    alert["output"] = f"{format_time(now_ns)[11:29]}: {priority} This is a test from edgeguard alert-forwarder"
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise http.HTTPError(400, "the /test body must be a JSON object of alert fields to override")
        alert.update(overrides)
    [alert] = _validate(alert)
    if http.query_flag(event, "dry_run"):
        return http.json_response({"dry_run": True, "alert": alert, **FORWARDER.explain(alert)}, 200)
    report = FORWARDER.ingest([alert])
    return http.json_response({"test": True, **report}, 202)


@http.guarded
def handle(event, context):
    if STARTUP.error is not None:
        STARTUP.get()  # the 503 naming the setting to fix
    m = http.method(event)
    p = http.path(event).rstrip("/") or "/"
    endpoint = p if p in ("/", "/flush", "/test", "/metrics", "/alerts", "/alerts/summary", "/ui") else "other"
    resp = None
    try:
        if p == "/" and m == "POST":
            resp = _cron_flush(event) if _is_cron_call(event) else _ingest(event)
        elif p == "/" and m in ("GET", "HEAD"):
            _authenticated(event)
            resp = http.json_response(
                {
                    **FORWARDER.status(),
                    "token_rotation": auth.rotation_status(TOKEN_SECRET),
                    "node_tokens": NODE_TOKENS.status()
                    if NODE_TOKENS
                    else {
                        "enabled": False,
                        "why": "no alert-forwarder-kubeconfig secret, or node_tokens=false: only the fleet token works",
                    },
                }
            )
        elif p == "/metrics":
            http.require_method(event, ("GET",))
            # The read-only edgeguard-metrics-token (Prometheus) or our own token; no spool work for a scrape.
            auth.require_metrics_reader(event, TOKEN_SECRET)
            resp = http.text_response(FORWARDER.metrics.render(), content_type=metrics.CONTENT_TYPE)
        elif p == "/flush":
            http.require_method(event, ("POST",))
            _authenticated(event)
            resp = http.json_response(
                {"flush": FORWARDER.flush(ignore_schedule=not http.query_flag(event, "due_only"))}
            )
        elif p == "/test":
            http.require_method(event, ("POST",))
            resp = _test(event, context)
        elif p == "/alerts":
            http.require_method(event, ("GET",))
            resp = _alerts(event)
        elif p == "/alerts/summary":
            http.require_method(event, ("GET",))
            resp = _summary(event)
        elif p == "/ui":
            resp = _page(event, m)
        elif p == "/":
            http.require_method(event, ("GET", "POST"))
        else:
            raise http.HTTPError(404, f"no such endpoint {p[:80]}; use /, /flush, /test, /metrics, /alerts or /ui")
        return resp
    except http.HTTPError as err:
        FORWARDER.metrics.inc("requests_total", {"endpoint": endpoint, "code": err.status})
        if 400 <= err.status < 500:
            FORWARDER.metrics.inc("rejected_total", {"reason": _reason(err)})
            if p == "/" and m == "POST":
                FORWARDER.metrics.inc("inputs_total", {"source": "requests", "status": "rejected"})
        raise
    finally:
        if resp is not None:
            FORWARDER.metrics.inc("requests_total", {"endpoint": endpoint, "code": resp["statusCode"]})
            if p == "/" and m == "POST" and resp["statusCode"] == 202:
                FORWARDER.metrics.inc("inputs_total", {"source": "requests", "status": "accepted"})


def _reason(err: http.HTTPError) -> str:
    return {
        401: "unauthorized",
        405: "method",
        413: "too_large",
        415: "content_type",
        404: "not_found",
        503: "unconfigured",
    }.get(err.status, "invalid")
