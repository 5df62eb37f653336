"""Scenario 1: the seed's anonymous ``create namespace foo`` audit event raises "Anonymous Request Allowed".

Posted exactly as a user would with curl: ``?dry_run=1`` returns the alerts
instead of handing them to alert-forwarder, so this scenario stays independent of
the other functions.
"""

from __future__ import annotations

import json

from . import NotBuilt

SEED_EVENT = (
    '{"kind":"Event","apiVersion":"audit.k8s.io/v1beta1","metadata":{"creationTimestamp":"2018-10-25T13:58:49Z"},'
    '"level":"Request","timestamp":"2018-10-25T13:58:49Z","auditID":"841d3e6d-90d2-43df-8da4-684738bee3d5",'
    '"stage":"ResponseComplete","requestURI":"/api/v1/namespaces","verb":"create","user":{"username":'
    '"system:anonymous","groups":["system:masters","system:authenticated"]},"sourceIPs":["192.168.99.1"],'
    '"objectRef":{"resource":"namespaces","name":"foo","apiVersion":"v1"},"responseStatus":{"metadata":{},'
    '"code":201},"requestObject":{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"foo",'
    '"creationTimestamp":null},"spec":{},"status":{"phase":"Active"}},"requestReceivedTimestamp":'
    '"2018-10-25T13:58:49.730588Z","stageTimestamp":"2018-10-25T13:58:49.736141Z","annotations":'
    '{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}'
)
EXPECTED_RULE = "Anonymous Request Allowed"


def run(ctx) -> None:
    import requests

    url = ctx.gateway + "/function/audit-ingest?dry_run=1"
    ctx.say(f"POST {url}  (the seed's anonymous 'create namespace foo' event, bearer token audit-ingest-token)")
    r = requests.post(
        url,
        data=SEED_EVENT.encode(),
        timeout=30,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ctx.token('audit-ingest-token')}"},
    )
    if r.status_code == 501:
        raise NotBuilt("audit-ingest is not built yet")
    try:
        reply = r.json()
    except ValueError:
        ctx.fail(f"audit-ingest answered HTTP {r.status_code} with a non-JSON body: {r.text[:200]!r}")
        return
    if r.status_code != 200:
        ctx.fail(f"audit-ingest answered HTTP {r.status_code}: {reply.get('error', reply)}")
        return
    alerts = reply.get("alerts") or []
    hits = [a for a in alerts if a.get("rule") == EXPECTED_RULE]
    if not hits:
        ctx.show("reply", reply)
        ctx.fail(f"no '{EXPECTED_RULE}' alert; got {[a.get('rule') for a in alerts]}")
        return
    alert = hits[0]
    ctx.show("Falco alert (as json_output/http_output would send it)", json.dumps(alert, indent=2, ensure_ascii=False))
    message = alert["output"].split(f" {alert['priority']} ", 1)[-1]
    ctx.ok(f"{alert['priority']}: {alert['rule']} \u2014 {message}")
