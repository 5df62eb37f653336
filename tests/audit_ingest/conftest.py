"""Helpers for audit-ingest tests: the regression corpus and a fake alert-forwarder behind a fake gateway."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parent.parent / "data" / "falco"
REGRESSION = DATA / "regression"
SAMPLES = DATA / "samples"
TOKEN = "ingest-test-token-123"
FWD_TOKEN = "forwarder-test-token-456"


def regression_tests(include_undetermined=False):
    tests = yaml.safe_load((REGRESSION / "tests.yaml").read_text())["tests"]
    return [t for t in tests if include_undetermined or t.get("expect") != "undetermined"]


def rules_files(test) -> list[Path]:
    return [(REGRESSION / r).resolve() for r in test["rules"]]


# Expected detections of the samples (samples/README.md), per rule_matching mode.
SAMPLE_EXPECT = {
    "webhook_eventlist_v1_kubectl_run_pod_kube-system.jsonl": {
        "first": {"Pod Created in Kube Namespace": 1},
        "all": {"Pod Created in Kube Namespace": 1},
    },
    "elastic_integrations_test-audit.v1-events.jsonl": {"first": {}, "all": {}},
    "eventlist_built_from_regression_traces.json": {
        "first": {"Create Privileged Pod": 1, "Attach/Exec Pod": 1, "ClusterRole With Wildcard Created": 1},
        "all": {
            "Create Privileged Pod": 1,
            "Attach/Exec Pod": 1,
            "ClusterRole With Wildcard Created": 1,
            "K8s ClusterRole Created": 1,
        },
    },
}

PRIORITY_NAMES = {
    "WARNING": "Warning",
    "NOTICE": "Notice",
    "INFO": "Informational",
    "ERROR": "Error",
    "CRITICAL": "Critical",
    "DEBUG": "Debug",
    "ALERT": "Alert",
    "EMERGENCY": "Emergency",
}


def check_expectations(test, alerts: list[dict], errors: list[str]):
    counts: dict = {}
    for a in alerts:
        counts[a["rule"]] = counts.get(a["rule"], 0) + 1
    for rule, n in (test.get("expect_counts") or {}).items():
        assert counts.get(rule, 0) == n, f"{test['name']}: {rule} expected {n}, got {counts}"
    if test.get("expect_no_detections"):
        assert counts == {}, f"{test['name']}: expected no detections, got {counts}"
    if test.get("expect_priority"):
        want = PRIORITY_NAMES[test["expect_priority"]]
        assert any(a["priority"] == want for a in alerts), f"{test['name']}: no alert with priority {want}"
    if test.get("expect_error"):
        assert any(test["expect_error"] in e for e in errors), f"{test['name']}: errors {errors}"
        assert alerts == []


class FakeForwarder:
    """Stands in for the gateway + alert-forwarder: records every hand-off and answers ``status``."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 202
        self.statuses: list[int] = []  # if set, the answers of the next requests, in order (then ``status``)
        self.hold: threading.Event | None = None  # if set, requests wait for it before answering
        self.arrived = threading.Event()  # set when a request came in
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                status = outer.statuses.pop(0) if outer.statuses else outer.status
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body, "status": status}
                )
                outer.arrived.set()
                if outer.hold is not None:
                    outer.hold.wait(10)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Call-Id", f"call-{len(outer.requests)}")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def alerts(self, accepted_only: bool = False) -> list[dict]:
        out = []
        for r in self.requests:
            if not accepted_only or 200 <= r["status"] < 300:
                out.extend(json.loads(r["body"]))
        return out

    def close(self):
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def forwarder():
    f = FakeForwarder()
    yield f
    f.close()


@pytest.fixture
def ingest(load_function, forwarder, tmp_path):
    """Factory: the audit-ingest handler wired to the fake forwarder; ``rules`` replaces the rule files."""
    counter = [0]

    def make(
        rules: list[Path] | None = None,
        env: dict | None = None,
        extra_rules: str | None = None,
        secrets: dict | None = None,
    ):
        full_env = {"gateway_url": forwarder.url, "FALCO_HOSTNAME": "edge-1"}
        if rules is not None:
            counter[0] += 1
            d = tmp_path / f"rules-{counter[0]}"
            d.mkdir()
            for i, p in enumerate(rules):
                (d / f"{i:02d}-{p.name}").write_text(p.read_text())
            full_env.update(load_default_rules="false", rules_d=str(d))
        full_env.update(env or {})
        sec = {"audit-ingest-token": TOKEN + "\n", "alert-forwarder-token": FWD_TOKEN}
        if extra_rules is not None:
            sec["audit-ingest-extra-rules"] = extra_rules
        sec.update(secrets or {})
        return load_function("audit-ingest", env=full_env, secrets=sec)

    return make


def post(mod, make_event, body, *, query=None, token=TOKEN, content_type="application/json", headers=None):
    hdrs = {"Content-Type": content_type} if content_type else {}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.update(headers or {})
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    res = mod.handle(make_event("POST", body=body, headers=hdrs, query=query or {}), None)
    return res["statusCode"], json.loads(res["body"])


# ---- direct engine helpers -----------------------------------------------------------------------
def rule_text(cond: str, name="T", output="out", priority="INFO", extra_keys="") -> str:
    return (
        f"- rule: {name}\n  desc: test\n  condition: {json.dumps(cond)}\n  output: {json.dumps(output)}\n"
        f"  priority: {priority}\n  source: k8s_audit\n{extra_keys}"
    )


def engine_for(text: str, **kw):
    from edgeguard.falco import loader
    from edgeguard.falco.engine import Engine

    return Engine(loader.load([("test.yaml", text)]), **kw)


def event(obj: dict, ts: int = 1_700_000_000_123_456_789):
    from edgeguard.falco.fields import AuditEvent

    return AuditEvent(obj, ts)


def matches(cond: str, obj: dict, prelude: str = "") -> bool:
    return bool(engine_for(prelude + rule_text(cond)).match(event(obj)))
