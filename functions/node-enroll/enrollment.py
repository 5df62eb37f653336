"""POST /enroll after the request is verified and decided: issue (or re-issue) the node's token, and the answer.

The handler authenticates, parses and decides; this module works out what the cluster already holds for
this machine (consumed, reusable, rotated, capped), writes the record and the kube-system token, and
renders the JSON answer or the join script.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from . import alerttokens, joinscript, tokens
from .edgeguard import http, log
from .edgeguard.config import ConfigError
from .edgeguard.http import HTTPError
from .metrics import REGISTRY as METRICS
from .store import Store

SCRIPT_TYPE = "text/x-shellscript"
RECORD_RETENTION = timedelta(days=1)
NO_STORE = {"Cache-Control": "no-store"}


def _now() -> datetime:
    return datetime.now(UTC)


OUTSTANDING_AT = [float("-inf")]  # time.monotonic() of the last tokens_outstanding figure


def outstanding(enrollments: list, now: datetime, cfg=None) -> None:
    """tokens_outstanding (and its cap) from a fresh list of the records."""
    METRICS.set("tokens_outstanding", sum(1 for e in enrollments if not e.expired(now)))
    if cfg is not None:
        METRICS.set("tokens_outstanding_cap", cfg.max_outstanding)
    OUTSTANDING_AT[0] = time.monotonic()


def issue(req, decision, cfg, source, as_script, server, ca, ca_source):
    store = Store()
    now = _now()
    mhash = tokens.machine_hash(req.machine_id)
    nodes = {(n.get("metadata") or {}).get("name"): n for n in store.list_nodes()}
    enrollments = store.list_enrollments()
    live = [e for e in enrollments if not e.expired(now)]

    # One-time use: a token whose node has joined is no longer needed, so it goes.
    consumed = [e for e in live if e.hostname in nodes]
    for e in consumed:
        if store.revoke(e):
            METRICS.inc("revocations_total", {"reason": "consumed"})
        log.info("enroll.token_consumed", node=e.hostname, bootstrap_id=e.token_id)
    live = [e for e in live if e not in consumed]
    # Nothing else deletes our records; expired ones are kept a while so GET /nodes can show them.
    for e in enrollments:
        if e.expires_at is not None and e.expires_at + RECORD_RETENTION <= now and store.revoke(e):
            METRICS.inc("revocations_total", {"reason": "expired"})
    outstanding(live, now, cfg)

    if req.hostname in nodes:
        raise HTTPError(
            409,
            f"a node named {req.hostname!r} is already in the cluster; k3s refuses a second host "
            f"under that name. DELETE /nodes/{req.hostname}?drain=true first if it was re-imaged",
            node=req.hostname,
        )
    mine = sorted((e for e in live if e.machine_hash == mhash), key=lambda e: e.expires_at or now)
    taken = [e for e in live if e.hostname == req.hostname and e.machine_hash != mhash]
    if taken:
        raise HTTPError(
            409,
            f"another machine holds an outstanding token for node {req.hostname!r}; "
            "revoke it with DELETE /nodes/<name> or wait for it to expire",
            node=req.hostname,
        )

    # A token about to expire would die halfway through the k3s install: replace it instead.
    min_left = timedelta(seconds=min(300, cfg.ttl // 4))
    fresh = [e for e in mine if e.expires_at - now >= min_left]
    if fresh and not req.rotate:
        current = fresh[-1]
        if (current.hostname, current.labels, current.taints) != (req.hostname, decision.labels, list(decision.taints)):
            raise HTTPError(
                409,
                f"this machine already holds an outstanding token for node {current.hostname!r} "
                'with other settings; send "rotate": true to replace it',
                node=current.hostname,
            )
        # The record is written before the kube-system Secret, so a crash in between leaves a
        # record whose token k3s does not know: re-create it. 409 means a Secret with this id
        # exists; without `get` there we cannot and do not check more than that (see docs).
        if store.publish(current):
            log.warning("enroll.token_restored", node=req.hostname, bootstrap_id=current.token_id)
        alert = _alert_token(store, req.hostname, cfg)
        log.info(
            "enroll.reused",
            node=req.hostname,
            arch=req.arch,
            bootstrap_id=current.token_id,
            expires_at=tokens.rfc3339(current.expires_at),
            source=source,
            alert_token_rotated=alert is not None,
        )
        return answer(as_script, current, ca, ca_source, server, cfg, reused=True, revoked=[], alert_token=alert)

    revoked = []
    if mine:  # rotate asked for, or only nearly expired tokens left
        for e in mine:
            if store.revoke(e):
                revoked.append(e.token_id)
                METRICS.inc("revocations_total", {"reason": "rotated"})
        live = [e for e in live if e not in mine]
    if len(live) >= cfg.max_outstanding:
        log.warning(
            "enroll.cap_reached", node=req.hostname, outstanding=len(live), cap=cfg.max_outstanding, source=source
        )
        raise HTTPError(
            429,
            f"{len(live)} enrollment tokens are outstanding (cap {cfg.max_outstanding}); "
            "wait for nodes to join or tokens to expire, or revoke some",
            headers={"Retry-After": "300"},
        )

    expires = tokens.ttl_expiry(now, cfg.ttl)
    created = None
    for _ in range(5):  # a 6-character id can collide; k3s refuses to overwrite, so do we
        tid, tsecret = tokens.new_token_id(), tokens.new_token_secret()
        log.register_secret(tsecret)
        body = tokens.build_secret(
            token_id=tid,
            token_secret=tsecret,
            hostname=req.hostname,
            arch=req.arch,
            machine_id=req.machine_id,
            labels=decision.labels,
            taints=list(decision.taints),
            expires_at=expires,
            now=now,
            source=source,
            groups=cfg.bootstrap_groups,
        )
        # Record first, token second: if we die in between, the record is there to count against
        # the cap and to be re-published (or revoked) later; the reverse would leave a live token
        # that nothing of ours can see, since we may not read kube-system.
        record = tokens.build_record(body)
        if not store.create_record(record):
            continue
        candidate = tokens.enrollment_from_secret(record)
        assert candidate is not None  # build_record writes what enrollment_from_secret reads back
        if not store.publish(candidate):
            # A fresh id taken in kube-system is someone else's token (ours always have a record).
            store.revoke_record_only(candidate)
            continue
        created = candidate
        break
    if created is None:
        raise HTTPError(503, "could not find a free bootstrap token id; retry")
    outstanding(live + [created], now, cfg)
    alert = _alert_token(store, req.hostname, cfg)
    log.info(
        "enroll.issued",
        node=req.hostname,
        arch=req.arch,
        bootstrap_id=created.token_id,
        expires_at=tokens.rfc3339(expires),
        labels=decision.labels,
        taints=list(decision.taints),
        allowlist=decision.matched,
        rotated=revoked,
        source=source,
        alert_token_rotated=alert is not None,
    )
    return answer(as_script, created, ca, ca_source, server, cfg, reused=False, revoked=revoked, alert_token=alert)


def _alert_token(store: Store, node: str, cfg) -> str | None:
    """Host mode: a fresh per-node alert token, its hash stored (replacing the node's old one) before it is
    handed out; None in the other modes, where Falco is not the node's own to configure."""
    if cfg.script.falco_mode != "host":
        return None
    token = alerttokens.mint()
    log.register_secret(token)
    store.set_alert_token(node, alerttokens.digest(token))
    METRICS.inc("alert_tokens_issued_total")
    return token


def answer(
    as_script, e: tokens.Enrollment, ca, ca_source, server, cfg, *, reused, revoked, alert_token: str | None = None
):
    token = tokens.secure_token(ca, e.token_id, e.token_secret)
    log.register_secret(token)
    expires = tokens.rfc3339(e.expires_at)
    if as_script:
        try:
            script = joinscript.render(
                node_name=e.hostname,
                arch=e.arch or "",
                server_url=server,
                token=token,
                labels=e.labels,
                taints=e.taints,
                expires_at=expires,
                settings=cfg.script,
                alert_token=alert_token,
            )
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
        **({"alert_token": alert_token, "alert_user": e.hostname} if alert_token else {}),
        "install": {
            "K3S_URL": server,
            "INSTALL_K3S_EXEC": joinscript.agent_exec(e.hostname, e.labels, e.taints, cfg.script.extra_agent_args),
            "falco_mode": cfg.script.falco_mode,
        },
    }
    return http.json_response(doc, 201 if not reused else 200, NO_STORE)
