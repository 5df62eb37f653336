"""audit-ingest served over real HTTP from its assembled build context (as faas-cli would build the image)."""
from __future__ import annotations

import json

import requests

from .conftest import FWD_TOKEN, SAMPLES, TOKEN


def test_served_function_detects_forwards_and_dedups(serve_function, forwarder):
    fn = serve_function("audit-ingest", env={"gateway_url": forwarder.url, "FALCO_HOSTNAME": "edge-1"},
                        secrets={"audit-ingest-token": TOKEN, "alert-forwarder-token": FWD_TOKEN})
    hdrs = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = (SAMPLES / "eventlist_built_from_regression_traces.json").read_bytes()
    r = requests.post(fn.url + "/", data=body, headers=hdrs, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["forwarded"] == 3
    assert sorted(a["rule"] for a in forwarder.alerts()) == ["Attach/Exec Pod", "ClusterRole With Wildcard Created",
                                                             "Create Privileged Pod"]
    r = requests.post(fn.url + "/", data=body, headers=hdrs, timeout=30)   # the API server's retry
    assert r.status_code == 200 and r.json()["duplicates"] == 3 and len(forwarder.requests) == 1
    r = requests.post(fn.url + "/", data=b"{}", headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 401 and "error" in r.json()
    r = requests.get(fn.url + "/", headers=hdrs, timeout=30)
    assert r.status_code == 200 and r.json()["ruleset"]["rules_loaded"] == 48
    assert TOKEN not in fn.logs() and FWD_TOKEN not in fn.logs()
    assert json.loads(forwarder.requests[0]["body"])[0]["hostname"] == "edge-1"


class _Ctx:
    """The scenario context's surface (local/scenarios/__init__.py) recording what the scenario reports."""

    def __init__(self, gateway, tokens):
        self.gateway, self._tokens, self.results, self.shown = gateway, tokens, [], []

    def token(self, name):
        return self._tokens[name]

    def say(self, text):
        pass

    def show(self, title, obj):
        self.shown.append((title, obj))

    def ok(self, msg):
        self.results.append(("ok", msg))

    def fail(self, msg):
        self.results.append(("fail", msg))


def test_demo_scenario_reports_the_anonymous_request_alert(serve_function, forwarder):
    from local.scenarios import audit_ingest as scenario

    fn = serve_function("audit-ingest", env={"gateway_url": forwarder.url},
                        secrets={"audit-ingest-token": TOKEN, "alert-forwarder-token": FWD_TOKEN})
    ctx = _Ctx(fn.url, {"audit-ingest-token": TOKEN})
    scenario.run(ctx)
    assert ctx.results and ctx.results[0][0] == "ok", ctx.results
    assert "Anonymous Request Allowed" in ctx.results[0][1]
    assert forwarder.requests == []          # dry_run: nothing handed off
    ctx = _Ctx(fn.url, {"audit-ingest-token": "wrong"})
    scenario.run(ctx)
    assert ctx.results[0][0] == "fail" and "401" in ctx.results[0][1]
