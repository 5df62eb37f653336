"""audit-ingest served over real HTTP from its assembled build context (as faas-cli would build the image)."""

from __future__ import annotations

import json
import time

import requests

from .conftest import FWD_TOKEN, SAMPLES, TOKEN


def test_served_function_detects_forwards_and_dedups(serve_function, forwarder):
    fn = serve_function(
        "audit-ingest",
        env={"gateway_url": forwarder.url, "FALCO_HOSTNAME": "edge-1"},
        secrets={"audit-ingest-token": TOKEN, "alert-forwarder-token": FWD_TOKEN},
    )
    hdrs = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = (SAMPLES / "eventlist_built_from_regression_traces.json").read_bytes()
    r = requests.post(fn.url + "/", data=body, headers=hdrs, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["forwarded"] == 3
    assert sorted(a["rule"] for a in forwarder.alerts()) == [
        "Attach/Exec Pod",
        "ClusterRole With Wildcard Created",
        "Create Privileged Pod",
    ]
    r = requests.post(fn.url + "/", data=body, headers=hdrs, timeout=30)  # the API server's retry
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

    fn = serve_function(
        "audit-ingest",
        env={"gateway_url": forwarder.url},
        secrets={"audit-ingest-token": TOKEN, "alert-forwarder-token": FWD_TOKEN},
    )
    ctx = _Ctx(fn.url, {"audit-ingest-token": TOKEN})
    scenario.run(ctx)
    assert ctx.results and ctx.results[0][0] == "ok", ctx.results
    assert "Anonymous Request Allowed" in ctx.results[0][1]
    assert forwarder.requests == []  # dry_run: nothing handed off
    ctx = _Ctx(fn.url, {"audit-ingest-token": "wrong"})
    scenario.run(ctx)
    assert ctx.results[0][0] == "fail" and "401" in ctx.results[0][1]


def test_the_audit_flow_writes_no_token_to_any_watchdog_or_gateway_log(tmp_path):
    """The API server's batches reach audit-ingest, whose alerts reach alert-forwarder, and no token is in any log.

    Under the real of-watchdog (when the tools are there) behind the local gateway, with the in-memory API
    sending its audit events as k3s's webhook does. The gateway's access log is written the way the real
    gateway logs a call: its method and full URL. The hand-off is synchronous, so no call goes through the
    CE queue (whose worker logs headers, the bearer token included).
    """
    from kubernetes import client

    from local import gateway

    ls = gateway.LocalStack(
        gateway.free_port(),
        state_dir=tmp_path / "state",
        kube="emulator",
        audit_webhook=True,
        functions=["audit-ingest", "alert-forwarder"],
    )
    ls.start()
    try:
        ingest_token, fwd_token = ls.secret("audit-ingest-token"), ls.secret("alert-forwarder-token")
        rbac = client.RbacAuthorizationV1Api(ls.kube_api_client())
        rbac.create_cluster_role(
            {
                "metadata": {"name": "edgeguard-wildcard-probe"},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
            }
        )
        assert ls.emulator.flush_audit(20)
        hdrs = {"Authorization": f"Bearer {ingest_token}"}
        deadline = time.monotonic() + 20
        counters: dict = {}
        while time.monotonic() < deadline:
            counters = requests.get(f"{ls.url}/function/audit-ingest", headers=hdrs, timeout=10).json()["counters"]
            if counters["alerts_forwarded"] >= 1:
                break
            time.sleep(0.2)
        assert counters["authenticated_batches"] >= 1 and counters["alerts_forwarded"] >= 1, counters
        fwd = requests.get(
            f"{ls.url}/function/alert-forwarder/metrics", headers={"Authorization": f"Bearer {fwd_token}"}, timeout=10
        ).text
        assert 'rule="ClusterRole With Wildcard Created"' in fwd
        # Refused callers, as a misconfigured webhook would be: still nothing secret in any line.
        requests.post(
            f"{ls.url}/function/audit-ingest",
            data=b"{}",
            timeout=10,
            headers={"Content-Type": "application/json", "Authorization": "Bearer wrong-token"},
        )
    finally:
        ls.stop()
    logs = {p.name: p.read_text(errors="replace") for p in ls.logs_dir.glob("*.log")}
    assert {"audit-ingest.log", "alert-forwarder.log", "gateway.log"} <= set(logs)
    # The gateway's access log, written as the real gateway's: "Forwarded [POST] to <full URL> - [status]".
    access = [line for line in logs["gateway.log"].splitlines() if " Forwarded [" in line]
    assert any("Forwarded [POST] to /function/alert-forwarder" in line for line in access), access
    assert not [line for line in access if "/async-function/" in line], access
    texts = logs
    for where, text in texts.items():
        for name, token in (("audit-ingest-token", ingest_token), ("alert-forwarder-token", fwd_token)):
            assert token not in text, f"{name} appears in the {where}"
