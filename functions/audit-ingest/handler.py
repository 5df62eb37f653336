"""audit-ingest: Falco k8s_audit detection for the Kubernetes audit webhook.

POST an Event, EventList or JSON array (or NDJSON). Every event is checked
against Falco's rules (bundled upstream set + rules.d/*.yaml + the optional
extra rules secret); alerts go to alert-forwarder as one JSON array. The reply
is 2xx only after that hand-off succeeded, so the API server's retries give
at-least-once delivery; handed-off (auditID, stage) pairs are remembered
(bounded) so a retried batch does not alert twice. ``?dry_run=1`` returns the
alerts instead of forwarding them. GET returns health, ruleset facts and counters.
"""
from __future__ import annotations

import gc
import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path

from .edgeguard import auth, config, gateway, http, log
from .edgeguard.falco import loader
from .edgeguard.falco.alert import format_time
from .edgeguard.falco.engine import (DEFAULT_RULES, NOT_AUDIT, Engine, batch_gc_paused, decode_payload,
                                     split_payload)

TOKEN_SECRET = "audit-ingest-token"
FORWARD_TOKEN_SECRET = "alert-forwarder-token"
EXTRA_RULES_SECRET = "audit-ingest-extra-rules"
HERE = Path(__file__).resolve().parent
_STARTED_NS = time.time_ns()


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.handoff_lock = threading.Lock()
        self.engine: Engine | None = None
        self.error: str | None = None
        self.signature = None
        self.handed: OrderedDict = OrderedDict()
        self.counters = {k: 0 for k in ("requests", "events", "alerts", "alerts_forwarded", "skipped_not_audit",
                                        "dropped", "duplicates", "forward_failures", "rejected",
                                        "evaluation_errors")}

    def count(self, **inc):
        with self.lock:
            for k, v in inc.items():
                self.counters[k] += v


STATE = _State()


def _rules_plan():
    """(signature, loader) of the rule sources: bundled set, rules.d in byte order, then the extra-rules secret.

    The signature uses file stats and the secret's hash, so checking it per request is cheap; the
    ruleset is recompiled only when it changes (e.g. the secret was rotated).
    """
    files: list = []
    if config.env_bool("load_default_rules", True):
        files.append(("bundled:" + DEFAULT_RULES.name, DEFAULT_RULES))
    rules_d = Path(config.env_str("rules_d", str(HERE / "rules.d")))
    if rules_d.is_dir():
        files.extend((f"rules.d/{p.name}", p) for p in loader.rules_paths([rules_d]))
    extra = config.read_secret_bytes(EXTRA_RULES_SECRET)
    if extra is not None and not extra.strip():
        extra = None  # an empty secret means "no extra rules"
    sig = []
    for name, path in files:
        try:
            st = path.stat()
            sig.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append((name, None, None))
    sig.append(hashlib.sha256(extra).hexdigest() if extra is not None else None)
    sig.append((config.env_str("rule_matching", "first"), config.env_str("min_priority", "debug")))

    def sources():
        out = []
        for name, path in files:
            try:
                out.append((name, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise loader.RulesLoadError(name, "file", "LOAD_ERR_FILE_READ", str(exc)) from None
        if extra is not None:
            try:
                out.append((f"secret:{EXTRA_RULES_SECRET}", extra.decode("utf-8")))
            except UnicodeDecodeError:
                raise loader.RulesLoadError(f"secret:{EXTRA_RULES_SECRET}", "file", "LOAD_ERR_FILE_READ",
                                            "the extra rules secret is not UTF-8 text") from None
        return out
    return tuple(sig), sources


def engine() -> Engine:
    """The compiled ruleset; recompiled only when a rules file, the extra-rules secret or a setting changes."""
    sig, sources = _rules_plan()
    with STATE.lock:
        if sig == STATE.signature:
            if STATE.engine is None:
                raise http.HTTPError(503, f"rules failed to load: {STATE.error}")
            return STATE.engine
        STATE.signature = sig
        try:
            ruleset = loader.load(sources())
            eng = Engine(ruleset, rule_matching=config.env_str("rule_matching", "first"),
                         min_priority=config.env_str("min_priority", "debug"))
        except (loader.RulesLoadError, ValueError) as exc:
            STATE.engine, STATE.error = None, str(exc)
            log.error("rules.load_failed", reason=str(exc))
            raise http.HTTPError(503, f"rules failed to load: {exc}") from None
        for w in ruleset.warnings:
            log.warning("rules.warning", file=w.file, item=w.item, code=w.code, message=w.message)
        STATE.engine, STATE.error = eng, None
        gc.collect()
        gc.freeze()  # compiled rules live as long as the process: keep them out of future collections
        log.info("rules.loaded", rules=len(ruleset.rules), enabled=len(eng.rules),
                 files=[f["name"] for f in ruleset.files])
        return eng


def _dedup_key(evt):
    o = evt.obj
    aid = o.get("auditID")
    if not isinstance(aid, str) or not aid:
        return None
    stage = o.get("stage")
    return f"{aid}\x00{stage if isinstance(stage, str) else ''}"


def _remember(keys):
    limit = config.env_int("dedup_max_events", 50000, minimum=0)
    handed = STATE.handed
    for k in keys:
        handed[k] = None
        handed.move_to_end(k)
    while len(handed) > limit:
        handed.popitem(last=False)


def _health():
    try:
        eng = engine()
    except http.HTTPError as err:
        return http.json_response({"status": "error", "error": err.reason, "counters": dict(STATE.counters)}, 503)
    with STATE.lock:
        counters = dict(STATE.counters)
        remembered = len(STATE.handed)
    return http.json_response({
        "status": "ok",
        "function": "audit-ingest",
        "started": format_time(_STARTED_NS),
        "ruleset": eng.facts(),
        "counters": counters,
        "dedup_remembered": remembered,
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
        STATE.count(evaluation_errors=1)
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


def _chunks(alerts, limit: int):
    """JSON-array bodies of at most ``limit`` bytes (OpenFaaS CE's queue refuses async bodies over 256,000)."""
    cur, size = [], 2
    for a in alerts:
        j = a.to_json()
        n = len(j.encode("utf-8")) + 1
        if cur and size + n > limit:
            yield "[" + ",".join(cur) + "]"
            cur, size = [], 2
        cur.append(j)
        size += n
    if cur:
        yield "[" + ",".join(cur) + "]"


def _forward(alerts) -> int:
    """Hand the alerts to alert-forwarder; raise HTTPError 502 unless every part was accepted."""
    fn = config.env_str("forward_function", "alert-forwarder")
    async_ = config.env_bool("forward_async", True)
    limit = config.env_int("forward_max_bytes", 250_000, minimum=1024)
    calls = 0
    for body in _chunks(alerts, limit):
        # A single alert too big for the async queue goes through the synchronous route instead.
        use_async = async_ and len(body.encode("utf-8")) <= limit
        try:
            res = gateway.invoke(fn, body, token_secret=FORWARD_TOKEN_SECRET, async_=use_async,
                                 timeout=config.env_float("forward_timeout", 10.0))
        except Exception as exc:  # noqa: BLE001 - any transport failure means "not handed off"
            raise http.HTTPError(502, f"alert hand-off to {fn} failed: {type(exc).__name__}") from None
        if not 200 <= res.status < 300:
            raise http.HTTPError(502, f"alert hand-off to {fn} failed: HTTP {res.status}",
                                 forward_status=res.status)
        calls += 1
    return calls


@http.guarded
def handle(event, context):
    with batch_gc_paused():
        return _handle(event, context)


def _handle(event, context):
    STATE.count(requests=1)
    try:
        m = http.require_method(event, ("GET", "POST"))
        auth.require_bearer(event, TOKEN_SECRET)
    except http.HTTPError:
        STATE.count(rejected=1)
        raise
    if m == "GET":
        return _health()
    eng = engine()
    max_body = config.env_int("max_body_bytes", 12582912, minimum=1)
    max_event = config.env_int("max_event_bytes", 262144, minimum=1)
    try:
        payload, raw_size, fits = _decode(event, max_body, max_event)
    except http.HTTPError:
        STATE.count(rejected=1)
        raise
    batch = split_payload(payload, raw_size=raw_size, max_event_bytes=max_event, fits=fits)
    STATE.count(skipped_not_audit=batch.skipped, dropped=batch.dropped)
    if not batch.events and not batch.dropped and batch.skipped:
        STATE.count(rejected=1)
        raise http.HTTPError(400, NOT_AUDIT, skipped=batch.skipped)
    dry_run = http.query_flag(event, "dry_run")
    summary = {"events": len(batch.events), "skipped": batch.skipped, "dropped": batch.dropped}

    if dry_run:
        alerts = [a for e in batch.events for a in _evaluate(eng, e)]
        _finish_summary(summary, batch)
        STATE.count(events=len(batch.events), alerts=len(alerts), dropped=summary["dropped"] - batch.dropped)
        summary.update(dry_run=True, alert_count=len(alerts), alerts=[a.to_dict() for a in alerts])
        return http.json_response(summary)

    # Check, hand off and remember under one lock so concurrent retries of a batch cannot both forward.
    with STATE.handoff_lock:
        alerts, keys, dups = [], [], 0
        with STATE.lock:
            handed = STATE.handed
            fresh = []
            for e in batch.events:
                k = _dedup_key(e)
                if k is not None and k in handed:
                    dups += 1
                    continue
                fresh.append(e)
                if k is not None:
                    keys.append(k)
        for e in fresh:
            alerts.extend(_evaluate(eng, e))
        _finish_summary(summary, batch)
        STATE.count(events=len(fresh), alerts=len(alerts), duplicates=dups, dropped=summary["dropped"] - batch.dropped)
        if alerts:
            try:
                _forward(alerts)
            except http.HTTPError:
                STATE.count(forward_failures=1)
                raise
            STATE.count(alerts_forwarded=len(alerts))
        with STATE.lock:
            _remember(keys)
    log.info("batch.done", events=len(batch.events), alerts=len(alerts), duplicates=dups,
             skipped=batch.skipped, dropped=summary["dropped"])
    summary.update(alert_count=len(alerts), duplicates=dups, forwarded=len(alerts),
                   rules=sorted({a.rule for a in alerts}))
    return http.json_response(summary)
