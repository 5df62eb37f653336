"""GET /metrics: audit-ingest's Prometheus text (issue 15 §4), read by the function's token or the metrics token."""

from __future__ import annotations

import re

from .conftest import TOKEN, post
from .test_handler import anon, eventlist, health

METRICS_TOKEN = "metrics-reader-token-789"
SAMPLE = re.compile(r'^(edgeguard_audit_ingest_[a-z_]+)(\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+|NaN)$')


def scrape(mod, make_event, token=TOKEN):
    res = mod.handle(make_event("GET", path="/metrics", headers={"Authorization": f"Bearer {token}"}), None)
    return res


def samples(text: str) -> dict:
    """name{labels} -> value, every line checked against the text exposition format."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not an exposition line: {line!r}"
        base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in typed or base in typed, f"{m.group(1)} has no TYPE line"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_metrics_are_prometheus_text_and_count_a_batch_by_route_rule_priority_and_hand_off(
    ingest, make_event, forwarder
):
    mod = ingest()
    assert post(mod, make_event, eventlist(anon(1), anon(2)))[0] == 200
    post(mod, make_event, eventlist(anon(3)), token="wrong")
    res = scrape(mod, make_event)
    assert res["statusCode"] == 200 and res["headers"]["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    s = samples(res["body"])
    p = "edgeguard_audit_ingest_"
    assert s[p + 'requests_total{route="POST /",code="200"}'] == 1
    assert s[p + 'requests_total{route="POST /",code="401"}'] == 1
    assert s[p + 'rejected_total{reason="invalid_token"}'] == 1
    assert s[p + "authenticated_batches_total"] == 1 and s[p + "events_total"] == 2
    assert s[p + 'alerts_total{priority="Warning",rule="Anonymous Request Allowed"}'] == 2
    assert s[p + 'outputs_total{destination="alert-forwarder",status="ok"}'] == 1
    assert s[p + "handoff_alerts_total"] == 2
    assert s[p + "rules_loaded"] == 1 and s[p + "rules_enabled"] == 48 and s[p + 'rules_loads_total{result="ok"}'] == 1
    assert s[p + "dedup_remembered"] == 2 and s[p + "batch_seconds_count"] == 1
    # GET / reports the same counts in its JSON, under the names bootstrap's probe reads.
    c = health(mod, make_event)[1]["counters"]
    assert (c["authenticated_batches"], c["invalid_token"], c["alerts"], c["alerts_forwarded"]) == (1, 1, 2, 2)


def test_a_failed_hand_off_and_a_dropped_event_are_counted(ingest, make_event, forwarder):
    mod = ingest()
    forwarder.status = 500
    bad = anon(5)
    del bad["stageTimestamp"]
    assert post(mod, make_event, eventlist(anon(4), bad))[0] == 502
    s = samples(scrape(mod, make_event)["body"])
    assert s['edgeguard_audit_ingest_outputs_total{destination="alert-forwarder",status="error"}'] == 1
    assert s['edgeguard_audit_ingest_requests_total{route="POST /",code="502"}'] == 1
    assert s['edgeguard_audit_ingest_dropped_total{reason="stage_timestamp"}'] == 1
    assert health(mod, make_event)[1]["counters"]["forward_failures"] == 1


def test_rules_that_fail_to_load_show_as_rules_loaded_0(ingest, make_event):
    mod = ingest(extra_rules="- rule: Broken\n  condition: ka.verb=\n")
    s = samples(scrape(mod, make_event)["body"])
    assert s["edgeguard_audit_ingest_rules_loaded"] == 0
    assert s['edgeguard_audit_ingest_rules_loads_total{result="error"}'] == 1


def test_metrics_need_the_token_or_the_read_only_metrics_token(ingest, make_event, forwarder):
    mod = ingest(secrets={"edgeguard-metrics-token": METRICS_TOKEN})
    assert scrape(mod, make_event, token="nope")["statusCode"] == 401
    assert mod.handle(make_event("GET", path="/metrics"), None)["statusCode"] == 401
    assert scrape(mod, make_event, token=METRICS_TOKEN)["statusCode"] == 200
    # The metrics token reads metrics and nothing else.
    assert post(mod, make_event, eventlist(anon(6)), token=METRICS_TOKEN)[0] == 401
    assert health(mod, make_event, token=METRICS_TOKEN)[0] == 401
    assert forwarder.requests == []
    res = mod.handle(make_event("POST", path="/metrics", headers={"Authorization": f"Bearer {TOKEN}"}), None)
    assert res["statusCode"] == 405


def test_metrics_answer_while_the_function_is_misconfigured(ingest, make_event):
    mod = ingest(env={"max_body_bytes": "lots"})
    res = scrape(mod, make_event)
    assert res["statusCode"] == 200 and samples(res["body"])["edgeguard_audit_ingest_rules_loaded"] == 0
