"""node-enroll: zero-touch enrollment of edge nodes with short-lived k3s bootstrap tokens.

Routes (sub-paths of /function/node-enroll):
  POST   /enroll (or /)   signed with the fleet key (see signing.py); JSON answer, or a join
                          script with ``Accept: text/x-shellscript`` / ``?format=sh``
  GET    /nodes           admin bearer token; enrollments and their nodes
  DELETE /nodes/<name>    admin bearer token; revoke tokens, ``?drain=true`` also cordons,
                          evicts and deletes the Node
  GET    /metrics         Prometheus text; the admin token or the read-only edgeguard-metrics-token
The server token is never read or returned: nodes only ever get bootstrap tokens.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from . import enrollment, joinscript, policy, ratelimit, settings, signing, tokens
from . import metrics as enroll_metrics
from .edgeguard import auth, config, http, kube, log, metrics
from .edgeguard.config import ConfigError
from .edgeguard.http import HTTPError
from .edgeguard.kubeapi import KubeError
from .replay import PersistedWindow, ReplayGuard, ReplayRejected
from .store import Store

SCRIPT_TYPE = enrollment.SCRIPT_TYPE
NO_STORE = enrollment.NO_STORE

METRICS = enroll_metrics.REGISTRY
_STARTED = time.time()  # requests signed before this process existed are refused (see replay.py)
# One replica, four waitress threads: enrollments are serialised so that the
# list-then-create below cannot hand one machine two tokens or overshoot the cap.
_enroll_lock = threading.Lock()

# Settings are read once, here. PROTECTION is what checking a signature needs; a bad value there
# leaves nothing to check callers with, so every enrollment gets the generic 503 (see _unavailable).
PROTECTION = config.Startup("node-enroll", settings.load_protection)
SETTINGS = config.Startup("node-enroll", settings.load)
_guard: ReplayGuard | None = None
_window: PersistedWindow | None = None
_limiter: ratelimit.EnrollLimits | None = None
if PROTECTION.error is None:
    _p = PROTECTION.get()
    _guard = ReplayGuard(
        max_skew=_p.max_clock_skew, max_ahead=_p.max_clock_ahead, max_entries=_p.nonce_cache_size, started_at=_STARTED
    )
    _limiter = ratelimit.EnrollLimits(
        per_minute=_p.rate_limit_per_minute,
        global_per_minute=_p.rate_limit_global_per_minute,
        unsigned_per_minute=_p.rate_limit_unsigned_per_minute,
    )


def _replay_window(guard: ReplayGuard) -> PersistedWindow:
    """The nonces earlier processes accepted (replay.py); built on first use, after a signature verified."""
    global _window
    with _window_lock:
        if _window is None:
            _window = PersistedWindow(
                guard, lambda: Store().read_nonces(), lambda add, drop: Store().write_nonces(add, drop)
            )
        return _window


_window_lock = threading.Lock()


def _now() -> datetime:
    return datetime.now(UTC)


def _refresh_outstanding(registry) -> None:
    """Before a scrape: tokens_outstanding from the records, listed at most once a minute (an enrollment or a
    listing refreshes it too). A failure keeps the last figure and is counted; the scrape still answers."""
    if time.monotonic() - enrollment.OUTSTANDING_AT[0] < 60 or SETTINGS.error is not None:
        return
    try:
        enrollment.outstanding(Store().list_enrollments(), _now(), SETTINGS.get())
    except KubeError as exc:
        registry.inc("api_errors_total", {"status": exc.status or "none"})
    except kube.KubeConfigError:
        pass  # no credentials: every enrollment says so; the figure stays unknown


METRICS.add_collector(_refresh_outstanding)
METRICS.set("tokens_outstanding", float("nan"))  # unknown until the records were listed once, not "0"


def handle(event, context):
    path = http.path(event).rstrip("/") or "/"
    resp = _handle(event, context)
    code = resp.get("statusCode", 200)
    route = enroll_metrics.route_label(path)
    METRICS.inc("requests_total", {"route": route, "code": code})
    if route == "/enroll" and http.method(event) == "POST":
        outcome = {201: "issued", 200: "reused"}.get(code) or ("refused" if code < 500 else "failed")
        METRICS.inc("enrollments_total", {"outcome": outcome})
    return resp


@http.guarded
def _handle(event, context):
    route = http.path(event).rstrip("/") or "/"
    try:
        if route in ("/enroll", "/"):  # "/" so that POST /function/node-enroll enrolls too
            http.require_method(event, ("POST",))
            return _counting_rejections(enroll, event)
        if route == "/metrics":
            http.require_method(event, ("GET",))
            auth.require_metrics_reader(event, settings.ADMIN_SECRET)
            return http.text_response(METRICS.render(), 200, metrics.CONTENT_TYPE)
        if route == "/nodes":
            http.require_method(event, ("GET",))
            auth.require_bearer(event, settings.ADMIN_SECRET)
            return list_nodes(event)
        if route.startswith("/nodes/"):
            http.require_method(event, ("DELETE",))
            auth.require_bearer(event, settings.ADMIN_SECRET)
            return delete_node(event, route[len("/nodes/") :])
    except ConfigError as exc:
        raise HTTPError(503, f"node-enroll is misconfigured: {exc}") from None
    except kube.KubeConfigError as exc:
        raise HTTPError(503, f"node-enroll cannot reach Kubernetes: {exc}") from None
    except policy.PolicyError as exc:
        raise HTTPError(exc.status, exc.reason, **exc.extra) from None
    except KubeError as exc:
        METRICS.inc("api_errors_total", {"status": exc.status or "none"})
        hint = ""
        if exc.forbidden:
            hint = " (check deploy/rbac/node-enroll.yaml)"
        elif exc.not_found and tokens.RECORD_NAMESPACE in exc.what:
            hint = f" (namespace {tokens.RECORD_NAMESPACE} missing? kubectl apply -f deploy/rbac/node-enroll.yaml)"
        raise HTTPError(
            502,
            f"Kubernetes API: {exc.verb} {exc.what} failed with {exc.status or 'no answer'} {exc.reason}{hint}",
            api_status=exc.status,
        ) from None
    raise HTTPError(404, f"no route {route}; use POST /enroll, GET /nodes, DELETE /nodes/<name> or GET /metrics")


def _counting_rejections(fn, event):
    """rejections_total by reason for every 4xx of POST /enroll."""
    try:
        return fn(event)
    except HTTPError as err:
        if 400 <= err.status < 500:
            reason = getattr(err, "metric_reason", None) or enroll_metrics.BY_STATUS.get(err.status, "other")
            METRICS.inc("rejections_total", {"reason": reason})
        raise
    except policy.PolicyError as exc:
        METRICS.inc("rejections_total", {"reason": enroll_metrics.BY_STATUS.get(exc.status, "other")})
        raise


# ------------------------------------------------------------------ POST /enroll


def _unavailable(exc: Exception) -> HTTPError:
    # The caller is not authenticated yet: the detail goes to the operator's log, not to them.
    log.error("enroll.misconfigured", reason=str(exc))
    return HTTPError(503, "enrollment is unavailable: node-enroll is misconfigured (the reason is in its log)")


def _verify_signature(event, body: bytes, key: str, guard: ReplayGuard) -> tuple[str, float]:
    """(nonce, forget-after) of a fresh, correctly signed request; raises _Refused (the caller answers 401) or
    HTTPError for a full replay cache (or KubeError when the persisted replay window cannot be read)."""
    ts = http.header(event, signing.TIMESTAMP_HEADER)
    nonce = http.header(event, signing.NONCE_HEADER)
    sig = http.header(event, signing.SIGNATURE_HEADER)
    if not (ts and nonce and sig):
        raise _Refused(
            f"signed request required: send {signing.TIMESTAMP_HEADER}, "
            f"{signing.NONCE_HEADER} and {signing.SIGNATURE_HEADER}"
        )
    ts, nonce, sig = ts.strip(), nonce.strip(), sig.strip()
    if not signing.TIMESTAMP_RE.fullmatch(ts):
        raise _Refused(f"{signing.TIMESTAMP_HEADER} must be unix seconds")
    if not signing.NONCE_RE.fullmatch(nonce):
        raise _Refused(f"{signing.NONCE_HEADER} must be 16-128 characters of [A-Za-z0-9_-]")
    if not signing.SIGNATURE_RE.fullmatch(sig):
        raise _Refused(f"{signing.SIGNATURE_HEADER} must be v1=<64 lowercase hex>")
    if not signing.signature_matches(key, ts, nonce, body, sig):
        raise _Refused("signature does not match")
    # Only signatures made with the key reach the replay cache, so nobody without
    # the key can fill it (or make us read or write the persisted window).
    try:
        guard.check_time(int(ts))  # stale or early requests are refused without asking the cluster
        _replay_window(guard).ensure_loaded()
        return nonce, guard.check_and_record(int(ts), nonce)
    except ReplayRejected as exc:
        if exc.status == 401:
            raise _Refused(exc.reason, exc.code) from None
        raise HTTPError(exc.status, exc.reason, headers={"Retry-After": "60"}) from None


class _Refused(Exception):
    def __init__(self, reason: str, code: str = enroll_metrics.SIGNATURE):
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _rate_limited(scope: str, wait: int, what: str, **fields) -> HTTPError:
    log.warning("enroll.rate_limited", scope=scope, retry_after=wait, **fields)
    err = HTTPError(429, f"{what}; retry in {wait}s", headers={"Retry-After": str(wait)})
    err.metric_reason = f"rate_limit_{scope}"  # type: ignore[attr-defined]
    return err


def _wants_script(event) -> bool:
    fmt = (http.query(event, "format") or "").strip().lower()
    if fmt:
        if fmt in ("sh", "shell", "script"):
            return True
        if fmt == "json":
            return False
        raise HTTPError(400, f"format must be 'json' or 'sh' (got {fmt[:16]!r})")
    accept = (http.header(event, "Accept", "") or "").lower()
    return any(part.split(";", 1)[0].strip() == SCRIPT_TYPE for part in accept.split(","))


def enroll(event):
    # Only what checking the signature needs is used before it; everything else (SETTINGS, the CA
    # hash) comes after, so an unauthenticated caller learns nothing about the configuration.
    if PROTECTION.error is not None or _guard is None or _limiter is None:
        raise _unavailable(ConfigError(PROTECTION.error or "protections not set up"))
    protection, guard, limiter = PROTECTION.get(), _guard, _limiter
    key = config.read_secret(settings.KEY_SECRET)
    if not key:
        raise _unavailable(ConfigError(f"OpenFaaS secret '{settings.KEY_SECRET}' is missing or empty"))
    source = ratelimit.source_address(http.header(event, ratelimit.SOURCE_HEADER))  # advisory, see ratelimit.py
    body = http.read_body(event, max_bytes=protection.max_body_bytes)
    try:
        nonce, forget_after = _verify_signature(event, body, key, guard)
    except _Refused as refused:
        # One shared bucket: nothing an unsigned request claims can be trusted, so nothing else is charged.
        wait = limiter.unsigned()
        if wait:
            raise _rate_limited(
                "unsigned", wait, "too many unauthenticated enrollment requests", source=source
            ) from None
        log.warning("enroll.refused", source=source, reason=refused.reason)
        err = HTTPError(
            401, refused.reason, headers={"WWW-Authenticate": 'EdgeguardEnroll realm="edgeguard", scheme="v1"'}
        )
        err.metric_reason = refused.code  # type: ignore[attr-defined]
        raise err from None
    # Verified: the node the body names is who the limits are about.
    req = policy.parse_request(http.parse_json(event, max_bytes=protection.max_body_bytes))
    wait = limiter.node(req.hostname)
    if wait:
        raise _rate_limited(
            "node", wait, f"too many enrollment requests for node {req.hostname!r}", node=req.hostname, source=source
        )
    wait = limiter.overall()
    if wait:
        raise _rate_limited("global", wait, "too many enrollments right now", node=req.hostname, source=source)
    # Stored before anything is decided or issued: after a restart this request is still a replay.
    _replay_window(guard).record(nonce, forget_after)
    cfg = SETTINGS.get()
    as_script = _wants_script(event)
    decision = policy.decide(req, allowlist=cfg.allowlist, allowed_prefixes=cfg.allowed_prefixes)
    # Everything the answer will need is checked before anything is minted: a refusal leaves no token.
    try:
        joinscript.agent_exec(req.hostname, decision.labels, decision.taints, cfg.script.extra_agent_args)
    except ValueError as exc:
        raise HTTPError(422, f"{exc}; nothing was issued") from None
    server = cfg.server_url
    ca, ca_source = settings.ca_hash(cfg)

    with _enroll_lock:
        return enrollment.issue(req, decision, cfg, source, as_script, server, ca, ca_source)


# ------------------------------------------------------------------ GET /nodes


def _node_summary(node: dict | None) -> dict:
    if node is None:
        return {"joined": False, "ready": None, "arch": None, "kubelet_version": None, "unschedulable": None}
    status = node.get("status") or {}
    info = status.get("nodeInfo") or {}
    ready = next((c.get("status") == "True" for c in status.get("conditions") or [] if c.get("type") == "Ready"), False)
    return {
        "joined": True,
        "ready": ready,
        "arch": info.get("architecture"),
        "kubelet_version": info.get("kubeletVersion"),
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
    }


def list_nodes(event):
    cfg = SETTINGS.get()
    store = Store()
    now = _now()
    enrollments = store.list_enrollments()
    enrollment.outstanding(enrollments, now, cfg)
    nodes: dict[str, dict] = {}
    for n in store.list_nodes():
        node_name = (n.get("metadata") or {}).get("name")
        if isinstance(node_name, str):  # the API server names every Node
            nodes[node_name] = n
    alert_nodes = store.alert_token_nodes()
    falco = {}
    falco_error = None
    if cfg.script.falco_mode == "helm":
        try:
            for pod in store.pods(label_selector=cfg.falco_pod_selector):
                spec, meta, st = pod.get("spec") or {}, pod.get("metadata") or {}, pod.get("status") or {}
                if spec.get("nodeName"):
                    ready = next(
                        (c.get("status") == "True" for c in st.get("conditions") or [] if c.get("type") == "Ready"),
                        False,
                    )
                    falco[spec["nodeName"]] = {
                        "pod": f"{meta.get('namespace')}/{meta.get('name')}",
                        "phase": st.get("phase"),
                        "ready": ready,
                    }
        except KubeError as exc:
            METRICS.inc("api_errors_total", {"status": exc.status or "none"})
            falco_error = f"could not list Falco pods: {exc.status} {exc.reason}"

    by_name: dict[str, list] = {}
    for e in enrollments:
        by_name.setdefault(e.hostname, []).append(e)
    enrolled_label = policy.ENROLLED_LABEL
    for name, n in nodes.items():
        if ((n.get("metadata") or {}).get("labels") or {}).get(enrolled_label[0]) == enrolled_label[1]:
            by_name.setdefault(name, [])
    for name in alert_nodes:  # an alert token outlives the node's enrollment until DELETE /nodes/<name>
        by_name.setdefault(name, [])

    items = []
    for name in sorted(by_name):
        es = sorted(by_name[name], key=lambda e: e.expires_at or now)
        latest = es[-1] if es else None
        item = {"name": name, **_node_summary(nodes.get(name))}
        if item["arch"] is None and latest is not None:
            item["arch"] = latest.arch
        item["falco"] = falco.get(name) if cfg.script.falco_mode == "helm" else {"mode": cfg.script.falco_mode}
        item["token"] = (
            None
            if latest is None
            else {
                "id": latest.token_id,
                "expires_at": tokens.rfc3339(latest.expires_at) if latest.expires_at else None,
                "expired": latest.expired(now),
            }
        )
        item["outstanding_tokens"] = sum(1 for e in es if not e.expired(now))
        item["alert_token"] = name in alert_nodes
        if latest is not None:
            item.update(labels=latest.labels, taints=latest.taints, enrolled_at=latest.created_at)
        items.append(item)
    doc = {"nodes": items, "count": len(items)}
    if falco_error:
        doc["falco_error"] = falco_error
    return http.json_response(doc, 200, NO_STORE)


# ------------------------------------------------------------------ DELETE /nodes/<name>


def delete_node(event, name: str):
    name = name.strip().lower()
    if not policy.valid_node_name(name):
        raise HTTPError(400, "node name must be a lowercase DNS subdomain")
    drain = http.query_flag(event, "drain")
    store = Store()
    revoked = []
    with _enroll_lock:  # not while an enrollment of this node is half done
        enrollments = store.list_enrollments()
        for e in enrollments:
            if e.hostname == name and store.revoke(e):
                revoked.append(e.token_id)
        enrollment.outstanding([e for e in enrollments if e.hostname != name], _now())
        alert_revoked = store.remove_alert_token(name)
    METRICS.inc("revocations_total", {"reason": "deleted"}, len(revoked))
    if alert_revoked:
        METRICS.inc("alert_tokens_revoked_total")
    node = store.get_node(name)
    if not revoked and not alert_revoked and node is None:
        raise HTTPError(404, f"no enrollment token, no alert token and no node named {name!r}")
    result: dict[str, Any] = {"node": name, "revoked": revoked, "alert_token_revoked": alert_revoked}
    if revoked or alert_revoked:
        log.info("node.revoked", node=name, revoked=revoked, alert_token=alert_revoked)
    if drain and node is not None:
        store.cordon(name)
        ev = store.evict_pods(name)
        result["drain"] = {"cordoned": True, "evicted": ev.evicted, "skipped": ev.skipped, "failed": ev.failed}
        if ev.failed:
            log.warning("node.drain_incomplete", node=name, failed=len(ev.failed))
            result["drain"]["deleted"] = False
            raise HTTPError(
                409,
                f"node {name!r} is cordoned but {len(ev.failed)} pod(s) could not be evicted "
                "(a PodDisruptionBudget?); it was not deleted. Retry later",
                **result,
            )
        store.delete_node(name)
        result["drain"]["deleted"] = True
        log.info("node.removed", node=name, evicted=len(ev.evicted), skipped=len(ev.skipped))
    elif drain:
        result["drain"] = {"cordoned": False, "deleted": False, "note": "no Node object with that name"}
    elif not revoked and not alert_revoked:
        result["note"] = "no outstanding token (already used or expired); add ?drain=true to remove the node"
    return http.json_response(result, 200)
