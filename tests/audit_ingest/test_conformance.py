"""Falco's k8s-audit regression tests and the samples, through the engine, the CLI and the HTTP handler."""

from __future__ import annotations

import json

import pytest

from edgeguard.falco import cli, loader
from edgeguard.falco.engine import Engine
from edgeguard.falco.source import Batch, split_payload

from .conftest import REGRESSION, SAMPLE_EXPECT, SAMPLES, check_expectations, post, regression_tests, rules_files

TESTS = regression_tests()
IDS = [t["name"] for t in TESTS]


def _payloads(path):
    text = path.read_text()
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_corpus_is_complete():
    # 52 tests in tests.yaml; 2 are marked undetermined and excluded from pass/fail.
    assert len(TESTS) == 50
    assert len(regression_tests(include_undetermined=True)) - len(TESTS) == 2


@pytest.mark.parametrize("test", TESTS, ids=IDS)
def test_regression_engine(test):
    engine = Engine(loader.load(rules_files(test)))
    batch = Batch()
    for payload in _payloads(REGRESSION / test["events"]):
        split_payload(payload, batch=batch)
    alerts = [a.to_dict() for e in batch.events for a in engine.evaluate(e)]
    check_expectations(test, alerts, batch.errors)


@pytest.mark.parametrize("test", TESTS, ids=IDS)
def test_regression_cli(test, capsys):
    args = ["replay", "--no-defaults"]  # the test's own rules files only, as Falco loads them
    for r in rules_files(test):
        args += ["--rules", str(r)]
    rc = cli.main(args + [str(REGRESSION / test["events"])])
    out, err = capsys.readouterr()
    assert rc == 0, err
    alerts = [json.loads(line) for line in out.splitlines()]
    check_expectations(test, alerts, err.splitlines())


@pytest.mark.parametrize("test", TESTS, ids=IDS)
def test_regression_http_handler(test, ingest, make_event, forwarder):
    mod = ingest(rules=rules_files(test))
    body = (REGRESSION / test["events"]).read_bytes()
    status, reply = post(mod, make_event, body, content_type="application/x-ndjson")
    if test.get("expect_error"):
        assert status == 400 and test["expect_error"] in reply["error"]
        assert forwarder.requests == []
        return
    assert status == 200, reply
    alerts = forwarder.alerts()
    check_expectations(test, alerts, [])
    if alerts:
        assert len(forwarder.requests) == 1
        assert forwarder.requests[0]["path"] == "/function/alert-forwarder"
    else:
        assert forwarder.requests == []
    # The same batch through ?dry_run=1 gives the same alerts without a hand-off.
    before = len(forwarder.requests)
    status, dry = post(mod, make_event, body, content_type="application/x-ndjson", query={"dry_run": "1"})
    assert status == 200 and len(forwarder.requests) == before
    assert [a["rule"] for a in dry["alerts"]] == [a["rule"] for a in alerts]


@pytest.mark.parametrize("mode", ["first", "all"])
@pytest.mark.parametrize("name", sorted(SAMPLE_EXPECT))
def test_samples_engine_and_cli(name, mode, capsys):
    rc = cli.main(["replay", "--rule-matching", mode, str(SAMPLES / name)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    counts: dict = {}
    for line in out.splitlines():
        a = json.loads(line)
        counts[a["rule"]] = counts.get(a["rule"], 0) + 1
    assert counts == SAMPLE_EXPECT[name][mode]


@pytest.mark.parametrize("mode", ["first", "all"])
@pytest.mark.parametrize("name", sorted(SAMPLE_EXPECT))
def test_samples_http_handler(name, mode, ingest, make_event, forwarder):
    mod = ingest(env={"rule_matching": mode})
    counts: dict = {}
    for payload in _payloads(SAMPLES / name):  # each line is one webhook POST
        status, reply = post(mod, make_event, payload)
        assert status == 200, reply
    for a in forwarder.alerts():
        counts[a["rule"]] = counts.get(a["rule"], 0) + 1
    assert counts == SAMPLE_EXPECT[name][mode]


def test_webhook_sample_only_the_response_complete_item_alerts(ingest, make_event, forwarder):
    mod = ingest()
    first, second = _payloads(SAMPLES / "webhook_eventlist_v1_kubectl_run_pod_kube-system.jsonl")
    assert post(mod, make_event, first)[1]["alert_count"] == 0
    status, reply = post(mod, make_event, second)
    assert status == 200 and reply["alert_count"] == 1
    (alert,) = forwarder.alerts()
    assert alert["rule"] == "Pod Created in Kube Namespace" and alert["priority"] == "Warning"
    assert alert["output_fields"]["ka.target.namespace"] == "kube-system"
    assert alert["hostname"] == "edge-1" and alert["source"] == "k8s_audit"
