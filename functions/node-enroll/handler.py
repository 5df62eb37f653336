"""node-enroll: zero-touch enrollment of edge nodes with short-lived k3s bootstrap tokens.

Routes (sub-paths of /function/node-enroll):
  POST   /enroll (or /)   signed with the fleet key (see signing.py); JSON answer, or a join
                          script with ``Accept: text/x-shellscript`` / ``?format=sh``
  GET    /nodes           admin bearer token; enrollments and their nodes
  DELETE /nodes/<name>    admin bearer token; revoke tokens, ``?drain=true`` also cordons,
                          evicts and deletes the Node
The server token is never read or returned: nodes only ever get bootstrap tokens.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from .edgeguard import auth, config, http, kube, log
from .edgeguard.config import ConfigError
from .edgeguard.http import HTTPError
from . import joinscript, policy, ratelimit, settings, signing, tokens
from .replay import ReplayGuard, ReplayRejected
from .store import KubeFailure, Store

SCRIPT_TYPE = "text/x-shellscript"
RECORD_RETENTION = timedelta(days=1)
NO_STORE = {"Cache-Control": "no-store"}

_STARTED = time.time()  # requests signed before this process existed are refused (see replay.py)
_lock = threading.Lock()
# One replica, four waitress threads: enrollments are serialised so that the
# list-then-create below cannot hand one machine two tokens or overshoot the cap.
_enroll_lock = threading.Lock()
_guard: ReplayGuard | None = None
_limiter: ratelimit.EnrollLimits | None = None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _protections() -> tuple[ReplayGuard, ratelimit.EnrollLimits]:
    global _guard, _limiter
    with _lock:
        if _guard is None:
            _guard = ReplayGuard(max_skew=config.env_int("max_clock_skew", 300, minimum=1),
                                 max_entries=config.env_int("nonce_cache_size", 10000, minimum=10),
                                 started_at=_STARTED)
        if _limiter is None:
            _limiter = ratelimit.EnrollLimits(
                per_minute=config.env_int("rate_limit_per_minute", 10, minimum=1),
                global_per_minute=config.env_int("rate_limit_global_per_minute", 60, minimum=1),
                unsigned_per_minute=config.env_int("rate_limit_unsigned_per_minute", 60, minimum=1))
        return _guard, _limiter


@http.guarded
def handle(event, context):
    route = http.path(event).rstrip("/") or "/"
    try:
        if route in ("/enroll", "/"):  # "/" so that POST /function/node-enroll enrolls too
            http.require_method(event, ("POST",))
            return enroll(event)
        if route == "/nodes":
            http.require_method(event, ("GET",))
            auth.require_bearer(event, settings.ADMIN_SECRET)
            return list_nodes(event)
        if route.startswith("/nodes/"):
            http.require_method(event, ("DELETE",))
            auth.require_bearer(event, settings.ADMIN_SECRET)
            return delete_node(event, route[len("/nodes/"):])
    except ConfigError as exc:
        raise HTTPError(503, f"node-enroll is misconfigured: {exc}") from None
    except kube.KubeConfigError as exc:
        raise HTTPError(503, f"node-enroll cannot reach Kubernetes: {exc}") from None
    except policy.PolicyError as exc:
        raise HTTPError(exc.status, exc.reason, **exc.extra) from None
    except KubeFailure as exc:
        hint = ""
        if exc.status == 403:
            hint = " (check deploy/rbac/node-enroll.yaml)"
        elif exc.status == 404 and "record" in exc.action:
            hint = f" (namespace {tokens.RECORD_NAMESPACE} missing? kubectl apply -f deploy/rbac/node-enroll.yaml)"
        raise HTTPError(502, f"Kubernetes API: {exc.action} failed with {exc.status or 'no answer'} "
                             f"{exc.reason}{hint}", api_status=exc.status) from None
    raise HTTPError(404, f"no route {route}; use POST /enroll, GET /nodes or DELETE /nodes/<name>")


# ------------------------------------------------------------------ POST /enroll

def _unavailable(exc: Exception) -> HTTPError:
    # The caller is not authenticated yet: the detail goes to the operator's log, not to them.
    log.error("enroll.misconfigured", reason=str(exc))
    return HTTPError(503, "enrollment is unavailable: node-enroll is misconfigured (the reason is in its log)")


def _verify_signature(event, body: bytes, key: str, guard: ReplayGuard) -> None:
    """Raises _Refused (the caller answers 401) or HTTPError for a full replay cache."""
    ts = http.header(event, signing.TIMESTAMP_HEADER)
    nonce = http.header(event, signing.NONCE_HEADER)
    sig = http.header(event, signing.SIGNATURE_HEADER)
    if not (ts and nonce and sig):
        raise _Refused(f"signed request required: send {signing.TIMESTAMP_HEADER}, "
                       f"{signing.NONCE_HEADER} and {signing.SIGNATURE_HEADER}")
    ts, nonce, sig = ts.strip(), nonce.strip(), sig.strip()
    if not signing.TIMESTAMP_RE.match(ts):
        raise _Refused(f"{signing.TIMESTAMP_HEADER} must be unix seconds")
    if not signing.NONCE_RE.match(nonce):
        raise _Refused(f"{signing.NONCE_HEADER} must be 16-128 characters of [A-Za-z0-9_-]")
    if not signing.SIGNATURE_RE.match(sig):
        raise _Refused(f"{signing.SIGNATURE_HEADER} must be v1=<64 lowercase hex>")
    if not signing.signature_matches(key, ts, nonce, body, sig):
        raise _Refused("signature does not match")
    # Only signatures made with the key reach the replay cache, so nobody without
    # the key can fill it.
    try:
        guard.check_and_record(int(ts), nonce)
    except ReplayRejected as exc:
        if exc.status == 401:
            raise _Refused(exc.reason) from None
        raise HTTPError(exc.status, exc.reason, headers={"Retry-After": "60"}) from None


class _Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _rate_limited(source: str, scope: str, wait: int, what: str) -> HTTPError:
    log.warning("enroll.rate_limited", source=source, scope=scope, retry_after=wait)
    return HTTPError(429, f"{what}; retry in {wait}s", headers={"Retry-After": str(wait)})


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
    # Only what checking the signature needs is read before it; everything else (settings.load,
    # the CA hash) comes after, so an unauthenticated caller learns nothing about the configuration.
    try:
        key = config.read_secret(settings.KEY_SECRET)
        if not key:
            raise ConfigError(f"OpenFaaS secret '{settings.KEY_SECRET}' is missing or empty")
        max_body = settings.max_body_bytes()
        hops = settings.forwarded_for_hops()
        guard, limiter = _protections()
    except ConfigError as exc:
        raise _unavailable(exc) from None
    source = ratelimit.client_address(http.header(event, "X-Forwarded-For"), hops)  # advisory, see ratelimit.py
    body = http.read_body(event, max_bytes=max_body)
    try:
        _verify_signature(event, body, key, guard)
    except _Refused as refused:
        # Charged to the one shared bucket, never to the claimed address: that could be a real node's.
        wait = limiter.unsigned()
        if wait:
            raise _rate_limited(source, "unsigned", wait, "too many unauthenticated enrollment requests") from None
        log.warning("enroll.refused", source=source, reason=refused.reason)
        raise HTTPError(401, refused.reason,
                        headers={"WWW-Authenticate": 'EdgeguardEnroll realm="edgeguard", scheme="v1"'}) from None
    wait = limiter.source(source)
    if wait:
        raise _rate_limited(source, "source", wait, "too many enrollment requests")
    wait = limiter.overall()
    if wait:
        raise _rate_limited(source, "global", wait, "too many enrollments right now")
    cfg = settings.load()
    as_script = _wants_script(event)
    req = policy.parse_request(http.parse_json(event, max_bytes=cfg.max_body_bytes))
    decision = policy.decide(req, allowlist=cfg.allowlist, allowed_prefixes=cfg.allowed_prefixes)
    server = settings.server_url()
    ca, ca_source = settings.ca_hash()

    with _enroll_lock:
        return _issue(req, decision, cfg, source, as_script, server, ca, ca_source)


def _issue(req, decision, cfg, source, as_script, server, ca, ca_source):
    store = Store()
    now = _now()
    mhash = tokens.machine_hash(req.machine_id)
    nodes = {(n.get("metadata") or {}).get("name"): n for n in store.list_nodes()}
    enrollments = store.list_enrollments()
    live = [e for e in enrollments if not e.expired(now)]

    # One-time use: a token whose node has joined is no longer needed, so it goes.
    consumed = [e for e in live if e.hostname in nodes]
    for e in consumed:
        store.revoke(e)
        log.info("enroll.token_consumed", node=e.hostname, bootstrap_id=e.token_id)
    live = [e for e in live if e not in consumed]
    # Nothing else deletes our records; expired ones are kept a while so GET /nodes can show them.
    for e in enrollments:
        if e.expires_at is not None and e.expires_at + RECORD_RETENTION <= now:
            store.revoke(e)

    if req.hostname in nodes:
        raise HTTPError(409, f"a node named {req.hostname!r} is already in the cluster; k3s refuses a second host "
                             f"under that name. DELETE /nodes/{req.hostname}?drain=true first if it was re-imaged",
                        node=req.hostname)
    mine = sorted((e for e in live if e.machine_hash == mhash), key=lambda e: e.expires_at or now)
    taken = [e for e in live if e.hostname == req.hostname and e.machine_hash != mhash]
    if taken:
        raise HTTPError(409, f"another machine holds an outstanding token for node {req.hostname!r}; "
                             "revoke it with DELETE /nodes/<name> or wait for it to expire", node=req.hostname)

    # A token about to expire would die halfway through the k3s install: replace it instead.
    min_left = timedelta(seconds=min(300, cfg.ttl // 4))
    fresh = [e for e in mine if e.expires_at - now >= min_left]
    if fresh and not req.rotate:
        current = fresh[-1]
        if (current.hostname, current.labels, current.taints) != (req.hostname, decision.labels, list(decision.taints)):
            raise HTTPError(409, f"this machine already holds an outstanding token for node {current.hostname!r} "
                                 "with other settings; send \"rotate\": true to replace it", node=current.hostname)
        # The record is written before the kube-system Secret, so a crash in between leaves a
        # record whose token k3s does not know: re-create it. 409 means a Secret with this id
        # exists; without `get` there we cannot and do not check more than that (see docs).
        if store.publish(current):
            log.warning("enroll.token_restored", node=req.hostname, bootstrap_id=current.token_id)
        log.info("enroll.reused", node=req.hostname, arch=req.arch, bootstrap_id=current.token_id,
                 expires_at=tokens.rfc3339(current.expires_at), source=source)
        return _answer(as_script, current, ca, ca_source, server, cfg, reused=True, revoked=[])

    revoked = []
    if mine:  # rotate asked for, or only nearly expired tokens left
        for e in mine:
            if store.revoke(e):
                revoked.append(e.token_id)
        live = [e for e in live if e not in mine]
    if len(live) >= cfg.max_outstanding:
        log.warning("enroll.cap_reached", node=req.hostname, outstanding=len(live), cap=cfg.max_outstanding,
                    source=source)
        raise HTTPError(429, f"{len(live)} enrollment tokens are outstanding (cap {cfg.max_outstanding}); "
                             "wait for nodes to join or tokens to expire, or revoke some", headers={"Retry-After": "300"})

    expires = tokens.ttl_expiry(now, cfg.ttl)
    created = None
    for _ in range(5):  # a 6-character id can collide; k3s refuses to overwrite, so do we
        tid, tsecret = tokens.new_token_id(), tokens.new_token_secret()
        log.register_secret(tsecret)
        body = tokens.build_secret(token_id=tid, token_secret=tsecret, hostname=req.hostname, arch=req.arch,
                                   machine_id=req.machine_id, labels=decision.labels, taints=list(decision.taints),
                                   expires_at=expires, now=now, source=source if source != ratelimit.UNKNOWN else None,
                                   groups=cfg.bootstrap_groups)
        # Record first, token second: if we die in between, the record is there to count against
        # the cap and to be re-published (or revoked) later; the reverse would leave a live token
        # that nothing of ours can see, since we may not read kube-system.
        record = tokens.build_record(body)
        if not store.create_record(record):
            continue
        candidate = tokens.enrollment_from_secret(record)
        if not store.publish(candidate):
            # A fresh id taken in kube-system is someone else's token (ours always have a record).
            store.revoke_record_only(candidate)
            continue
        created = candidate
        break
    if created is None:
        raise HTTPError(503, "could not find a free bootstrap token id; retry")
    log.info("enroll.issued", node=req.hostname, arch=req.arch, bootstrap_id=created.token_id,
             expires_at=tokens.rfc3339(expires), labels=decision.labels, taints=list(decision.taints),
             allowlist=decision.matched, rotated=revoked, source=source)
    return _answer(as_script, created, ca, ca_source, server, cfg, reused=False, revoked=revoked)


def _answer(as_script, e: tokens.Enrollment, ca, ca_source, server, cfg, *, reused, revoked):
    token = tokens.secure_token(ca, e.token_id, e.token_secret)
    log.register_secret(token)
    expires = tokens.rfc3339(e.expires_at)
    if as_script:
        try:
            script = joinscript.render(node_name=e.hostname, arch=e.arch or "", server_url=server, token=token,
                                       labels=e.labels, taints=e.taints, expires_at=expires, settings=cfg.script)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return http.text_response(script, 201 if not reused else 200, f"{SCRIPT_TYPE}; charset=utf-8", NO_STORE)
    doc = {
        "node": e.hostname,
        "arch": e.arch,
        "token": token,
        "token_id": e.token_id,
        "server": server,
        "ca_hash": ca,
        "ca_hash_source": ca_source,
        "labels": e.labels,
        "taints": e.taints,
        "expires_at": expires,
        "reused": reused,
        "revoked": revoked,
        "install": {
            "K3S_URL": server,
            "INSTALL_K3S_EXEC": joinscript.agent_exec(e.hostname, e.labels, e.taints, cfg.script.extra_agent_args),
            "falco_mode": cfg.script.falco_mode,
        },
    }
    return http.json_response(doc, 201 if not reused else 200, NO_STORE)


# ------------------------------------------------------------------ GET /nodes

def _node_summary(node: dict | None) -> dict:
    if node is None:
        return {"joined": False, "ready": None, "arch": None, "kubelet_version": None, "unschedulable": None}
    status = node.get("status") or {}
    info = status.get("nodeInfo") or {}
    ready = next((c.get("status") == "True" for c in status.get("conditions") or [] if c.get("type") == "Ready"), False)
    return {"joined": True, "ready": ready, "arch": info.get("architecture"),
            "kubelet_version": info.get("kubeletVersion"),
            "unschedulable": bool((node.get("spec") or {}).get("unschedulable"))}


def list_nodes(event):
    cfg = settings.load()
    store = Store()
    now = _now()
    enrollments = store.list_enrollments()
    nodes = {(n.get("metadata") or {}).get("name"): n for n in store.list_nodes()}
    falco = {}
    falco_error = None
    if cfg.script.falco_mode == "helm":
        try:
            for pod in store.pods(label_selector=cfg.falco_pod_selector):
                spec, meta, st = pod.get("spec") or {}, pod.get("metadata") or {}, pod.get("status") or {}
                if spec.get("nodeName"):
                    ready = next((c.get("status") == "True" for c in st.get("conditions") or []
                                  if c.get("type") == "Ready"), False)
                    falco[spec["nodeName"]] = {"pod": f"{meta.get('namespace')}/{meta.get('name')}",
                                               "phase": st.get("phase"), "ready": ready}
        except KubeFailure as exc:
            falco_error = f"could not list Falco pods: {exc.status} {exc.reason}"

    by_name: dict[str, list] = {}
    for e in enrollments:
        by_name.setdefault(e.hostname, []).append(e)
    enrolled_label = policy.ENROLLED_LABEL
    for name, n in nodes.items():
        if ((n.get("metadata") or {}).get("labels") or {}).get(enrolled_label[0]) == enrolled_label[1]:
            by_name.setdefault(name, [])

    items = []
    for name in sorted(by_name):
        es = sorted(by_name[name], key=lambda e: e.expires_at or now)
        latest = es[-1] if es else None
        item = {"name": name, **_node_summary(nodes.get(name))}
        if item["arch"] is None and latest is not None:
            item["arch"] = latest.arch
        item["falco"] = falco.get(name) if cfg.script.falco_mode == "helm" else {"mode": cfg.script.falco_mode}
        item["token"] = None if latest is None else {
            "id": latest.token_id,
            "expires_at": tokens.rfc3339(latest.expires_at) if latest.expires_at else None,
            "expired": latest.expired(now),
        }
        item["outstanding_tokens"] = sum(1 for e in es if not e.expired(now))
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
    for e in store.list_enrollments():
        if e.hostname == name and store.revoke(e):
            revoked.append(e.token_id)
    node = store.get_node(name)
    if not revoked and node is None:
        raise HTTPError(404, f"no enrollment token and no node named {name!r}")
    result = {"node": name, "revoked": revoked}
    if revoked:
        log.info("node.revoked", node=name, revoked=revoked)
    if drain and node is not None:
        store.cordon(name)
        ev = store.evict_pods(name)
        result["drain"] = {"cordoned": True, "evicted": ev.evicted, "skipped": ev.skipped, "failed": ev.failed}
        if ev.failed:
            log.warning("node.drain_incomplete", node=name, failed=len(ev.failed))
            result["drain"]["deleted"] = False
            raise HTTPError(409, f"node {name!r} is cordoned but {len(ev.failed)} pod(s) could not be evicted "
                                 "(a PodDisruptionBudget?); it was not deleted. Retry later", **result)
        store.delete_node(name)
        result["drain"]["deleted"] = True
        log.info("node.removed", node=name, evicted=len(ev.evicted), skipped=len(ev.skipped))
    elif drain:
        result["drain"] = {"cordoned": False, "deleted": False, "note": "no Node object with that name"}
    elif not revoked:
        result["note"] = "no outstanding token (already used or expired); add ?drain=true to remove the node"
    return http.json_response(result, 200)
