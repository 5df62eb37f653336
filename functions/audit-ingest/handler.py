"""audit-ingest: Falco k8s_audit detection for the Kubernetes audit webhook.

POST an Event, EventList or JSON array (or NDJSON). Every event is checked
against Falco's rules (bundled upstream set + rules.d/*.yaml + the optional
extra rules secret); alerts go to alert-forwarder as one JSON array. The reply
is 2xx only after that hand-off succeeded, so the API server's retries give
at-least-once delivery; handed-off (auditID, stage) pairs are remembered
(bounded), part by part, so a retried batch does not alert twice, even after a
hand-off that failed part-way. One batch at a time is decoded and evaluated (a
12 MiB batch is ~60 MB in memory); hand-offs run concurrently. ``?dry_run=1``
returns the alerts instead of forwarding them. GET returns health, ruleset facts
and counters.
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
from .edgeguard.falco.engine import DEFAULT_RULES, Engine
from .edgeguard.falco.source import NOT_AUDIT, batch_gc_paused, decode_payload, split_payload

TOKEN_SECRET = "audit-ingest-token"
FORWARD_TOKEN_SECRET = "alert-forwarder-token"
EXTRA_RULES_SECRET = "audit-ingest-extra-rules"
HERE = Path(__file__).resolve().parent
_STARTED_NS = time.time_ns()


_DONE = None  # the value in STATE.handed of an event whose alerts were all handed off


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.engine: Engine | None = None
        self.error: str | None = None
        self.signature = None
        # Guards ``handed`` and ``inflight`` only; held for check-and-reserve, never across a hand-off.
        self.handoff = threading.Condition()
        # (auditID, stage) key -> _DONE, or the frozenset of rules whose alerts were handed off so far
        # (an event's alerts can span parts of a hand-off that failed part-way). Bounded LRU.
        self.handed: OrderedDict = OrderedDict()
        # key -> owner token of the request handing that event's alerts off right now, so a concurrent
        # retry of the same batch waits for the outcome instead of sending them a second time.
        self.inflight: dict = {}
        self.slots: threading.BoundedSemaphore | None = None
        # authenticated_batches / unauthenticated / invalid_token let bootstrap's delivery probe tell an
        # authenticated webhook batch from one the API server sent without credentials (client-go sends
        # the kubeconfig's token only to an https server).
        self.counters = {k: 0 for k in ("requests", "events", "alerts", "alerts_forwarded", "skipped_not_audit",
                                        "dropped", "duplicates", "forward_failures", "rejected",
                                        "evaluation_errors", "busy", "authenticated_batches",
                                        "unauthenticated", "invalid_token")}

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
    """The compiled ruleset; recompiled only when a rules file, the extra-rules secret or a setting changes.

    The signature is recorded together with the outcome, so an engine is never paired with rules it
    was not built from. Any failure leaves no engine (503 with the reason; the API server retries):
    serving the previous ruleset would silently ignore the operator's change. A rules error is
    remembered for its signature; any other error is retried on the next request, as it may be
    transient and no rules change would ever clear it.
    """
    sig, sources = _rules_plan()
    with STATE.lock:
        if sig == STATE.signature:
            if STATE.engine is None:
                raise http.HTTPError(503, f"rules failed to load: {STATE.error}")
            return STATE.engine
        try:
            ruleset = loader.load(sources())
            eng = Engine(ruleset, rule_matching=config.env_str("rule_matching", "first"),
                         min_priority=config.env_str("min_priority", "debug"))
        except (loader.RulesLoadError, ValueError) as exc:
            _load_failed(sig, str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever broke, the caller gets a reason, not stale rules
            _load_failed(None, f"unexpected {type(exc).__name__}: {str(exc)[:300]}")
        for w in ruleset.warnings:
            log.warning("rules.warning", file=w.file, item=w.item, code=w.code, message=w.message)
        STATE.signature, STATE.engine, STATE.error = sig, eng, None
        gc.collect()
        gc.freeze()  # compiled rules live as long as the process: keep them out of future collections
        log.info("rules.loaded", rules=len(ruleset.rules), enabled=len(eng.rules),
                 files=[f["name"] for f in ruleset.files])
        return eng


def _load_failed(sig, reason: str):
    """Drop the engine, record ``reason`` (for ``sig``, or for no signature so the next request retries), 503."""
    STATE.signature, STATE.engine, STATE.error = sig, None, reason
    log.error("rules.load_failed", reason=reason)
    raise http.HTTPError(503, f"rules failed to load: {reason}")


def _dedup_key(evt):
    o = evt.obj
    aid = o.get("auditID")
    if not isinstance(aid, str) or not aid:
        return None
    stage = o.get("stage")
    return f"{aid}\x00{stage if isinstance(stage, str) else ''}"


def _remember(key, rules=_DONE, limit: int | None = None):
    """Record (under STATE.handoff) that ``key``'s alerts were handed off: all of them, or ``rules`` so far."""
    if limit is None:
        limit = config.env_int("dedup_max_events", 50000, minimum=0)
    handed = STATE.handed
    handed[key] = rules
    handed.move_to_end(key)
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


class _Group:
    """The alerts of one event (key None: an event without auditID, which is never remembered)."""
    __slots__ = ("key", "alerts", "prior")

    def __init__(self, key, alerts):
        self.key = key
        self.alerts = alerts
        self.prior = frozenset()  # rules already handed off by an earlier, partly failed request


def _chunks(groups, limit: int):
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


def _claim(pending, owner):
    """Under STATE.handoff: reserve the groups no other request is handing off.

    Returns (mine, still pending, duplicates). Alerts already handed off by an earlier request are
    removed; an event left with none is remembered as done.
    """
    mine, still, dups = [], [], 0
    handed, inflight = STATE.handed, STATE.inflight
    limit = config.env_int("dedup_max_events", 50000, minimum=0)
    for g in pending:
        k = g.key
        if k is None:
            mine.append(g)
            continue
        if inflight.get(k, owner) is not owner:
            still.append(g)
            continue
        prior = handed.get(k, frozenset())
        if prior is _DONE:
            dups += 1
            continue
        if prior:
            g.prior = prior
            g.alerts = [a for a in g.alerts if a.rule not in prior]
        if not g.alerts:
            _remember(k, limit=limit)
            continue
        inflight[k] = owner
        mine.append(g)
    return mine, still, dups


def _release(groups, owner):
    with STATE.handoff:
        for g in groups:
            if g.key is not None and STATE.inflight.get(g.key) is owner:
                del STATE.inflight[g.key]
        STATE.handoff.notify_all()


def _forward(groups, owner) -> int:
    """Hand the groups' alerts to alert-forwarder, part by part; the number of alerts accepted.

    What each accepted part carried is remembered at once, so when a later part fails (502), the
    API server's retry sends only the remainder. Reservations are released whatever happens.
    """
    fn = config.env_str("forward_function", "alert-forwarder")
    async_ = config.env_bool("forward_async", True)
    limit = config.env_int("forward_max_bytes", 250_000, minimum=1024)
    timeout = config.env_float("forward_timeout", 10.0)
    by_key = {g.key: g for g in groups if g.key is not None}
    sent: dict = {}
    accepted = 0
    try:
        for body, parts in _chunks(groups, limit):
            # A single alert too big for the async queue goes through the synchronous route instead.
            use_async = async_ and len(body.encode("utf-8")) <= limit
            try:
                res = gateway.invoke(fn, body, token_secret=FORWARD_TOKEN_SECRET, async_=use_async, timeout=timeout)
            except config.ConfigError as exc:
                # Not a transient failure: say what to fix instead of a bare 502 the API server retries blindly.
                raise http.HTTPError(503, f"alert hand-off to {fn} is not configured: {exc}") from None
            except gateway.TransportError as exc:  # "timeout: ..." or "connect: <error type>", never a value
                raise http.HTTPError(502, f"alert hand-off to {fn} failed: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - any transport failure means "not handed off"
                raise http.HTTPError(502, f"alert hand-off to {fn} failed: {type(exc).__name__}") from None
            if not 200 <= res.status < 300:
                raise http.HTTPError(502, f"alert hand-off to {fn} failed: HTTP {res.status}",
                                     forward_status=res.status)
            accepted += len(parts)
            STATE.count(alerts_forwarded=len(parts))
            with STATE.handoff:
                for k, rule in parts:
                    if k is not None:
                        sent.setdefault(k, set()).add(rule)
                for k in {k for k, _ in parts if k is not None}:
                    g = by_key[k]
                    if sent[k] >= {a.rule for a in g.alerts}:
                        _remember(k)
                        del STATE.inflight[k]
                    else:
                        _remember(k, g.prior | sent[k])
                STATE.handoff.notify_all()
    except http.HTTPError:
        STATE.count(forward_failures=1)
        raise
    finally:
        _release(groups, owner)
    return accepted


def _busy(reason: str, wait: float):
    STATE.count(busy=1)
    return http.HTTPError(503, reason, headers={"Retry-After": str(max(1, int(wait + 0.999)))})


def _slots() -> threading.BoundedSemaphore:
    with STATE.lock:
        if STATE.slots is None:
            STATE.slots = threading.BoundedSemaphore(config.env_int("max_concurrent_batches", 1, minimum=1))
        return STATE.slots


@http.guarded
def handle(event, context):
    return _handle(event, context)


def _handle(event, context):
    STATE.count(requests=1)
    try:
        m = http.require_method(event, ("GET", "POST"))
        auth.require_bearer(event, TOKEN_SECRET)
    except http.HTTPError as err:
        STATE.count(rejected=1)
        if err.status == 401:
            STATE.count(**{"unauthenticated" if auth.presented_token(event) is None else "invalid_token": 1})
        raise
    if m == "GET":
        return _health()
    STATE.count(authenticated_batches=1)
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
    pending, forwarded, rules = groups, 0, set()
    while pending:
        with STATE.handoff:
            mine, pending, d = _claim(pending, owner)
            dups += d
            deadline = time.monotonic() + wait
            while not mine and pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _busy(f"{len(pending)} events of this batch are being handed off by another "
                                "request; retry", wait)
                STATE.handoff.wait(left)
                mine, pending, d = _claim(pending, owner)
                dups += d
        if mine:
            forwarded += _forward(mine, owner)
            rules.update(a.rule for g in mine for a in g.alerts)
    STATE.count(duplicates=dups)
    log.info("batch.done", events=summary["events"], alerts=forwarded, duplicates=dups,
             skipped=summary["skipped"], dropped=summary["dropped"])
    summary.update(alert_count=forwarded, duplicates=dups, forwarded=forwarded, rules=sorted(rules))
    return http.json_response(summary)


def _evaluate_batch(event, eng):
    """Decode and evaluate one request body: (summary, alert groups of events not yet handed off, duplicates)."""
    max_body = config.env_int("max_body_bytes", 12582912, minimum=1)
    max_event = config.env_int("max_event_bytes", 262144, minimum=1)
    try:
        payload, raw_size, fits = _decode(event, max_body, max_event)
    except http.HTTPError:
        STATE.count(rejected=1)
        raise
    batch = split_payload(payload, raw_size=raw_size, max_event_bytes=max_event, fits=fits)
    del payload
    STATE.count(skipped_not_audit=batch.skipped, dropped=batch.dropped)
    if not batch.events and not batch.dropped and batch.skipped:
        STATE.count(rejected=1)
        raise http.HTTPError(400, NOT_AUDIT, skipped=batch.skipped)
    summary = {"events": len(batch.events), "skipped": batch.skipped, "dropped": batch.dropped}

    if http.query_flag(event, "dry_run"):
        alerts = [a for e in batch.events for a in _evaluate(eng, e)]
        _finish_summary(summary, batch)
        STATE.count(events=len(batch.events), alerts=len(alerts), dropped=summary["dropped"] - batch.dropped)
        summary.update(dry_run=True, alert_count=len(alerts), alerts=[a.to_dict() for a in alerts])
        return summary, [], 0

    # Check only (cheap, under the lock): events already handed off are not evaluated again.
    fresh, seen, dups = [], set(), 0
    with STATE.handoff:
        handed = STATE.handed
        for e in batch.events:
            k = _dedup_key(e)
            if k is not None and (k in seen or handed.get(k, frozenset()) is _DONE):
                dups += 1
                continue
            if k is not None:
                seen.add(k)
            fresh.append((k, e))
    groups, n_alerts = [], 0
    for k, e in fresh:
        alerts = _evaluate(eng, e)
        n_alerts += len(alerts)
        groups.append(_Group(k, alerts))
    _finish_summary(summary, batch)
    STATE.count(events=len(fresh), alerts=n_alerts, dropped=summary["dropped"] - batch.dropped)
    return summary, groups, dups
