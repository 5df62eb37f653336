"""GET /metrics (issue 15 §4): Prometheus text, for the admin token or the read-only metrics token."""

from __future__ import annotations

import math
import re
import time

from tests.node_enroll.helpers import ADMIN, admin, call, enroll, enroll_doc, signed

METRICS_TOKEN = "metrics-reader-token-0123456789abcdef"
LINE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(fn, make_event, token=ADMIN) -> dict:
    status, headers, text = call(
        fn, make_event, method="GET", path="/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200, text
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"not exposition format: {line!r}"
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m["labels"] or "")))
        out[(m["name"].removeprefix("edgeguard_node_enroll_"), labels)] = float(m["value"])
    return out


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def test_metrics_need_the_admin_or_the_read_only_metrics_token(kenroll, make_event):
    fn, _ = kenroll(secrets={"edgeguard-metrics-token": METRICS_TOKEN})
    assert scrape(fn, make_event) and scrape(fn, make_event, METRICS_TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert call(fn, make_event, method="GET", path="/metrics", headers=headers)[0] == 401
    status, _, doc = call(fn, make_event, method="GET", path="/metrics", query={"token": ADMIN})
    assert status == 401 and "query string" in doc["error"]
    # the metrics token reads metrics and nothing else
    assert (
        call(fn, make_event, method="GET", path="/nodes", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})[0]
        == 401
    )


def test_enrollment_outcomes_rejections_and_revocations_are_counted(kenroll, make_event):
    fn, emu = kenroll(env={"falco_mode": "host", "public_gateway_url": "https://gw", "rate_limit_per_minute": "3"})
    assert enroll(fn, make_event)[0] == 201
    assert enroll(fn, make_event)[0] == 200
    assert enroll(fn, make_event, enroll_doc(rotate=True))[0] == 201
    assert enroll(fn, make_event)[0] == 429  # the node's own bucket (3 per minute)
    body, h = signed(enroll_doc(hostname="pi-2", machine_id="2" * 32))
    assert call(fn, make_event, body=body, headers=h)[0] == 201
    assert call(fn, make_event, body=body, headers=h)[0] == 401  # replayed
    assert enroll(fn, make_event, enroll_doc(hostname="pi-3"), key="not-the-key-at-all")[0] == 401
    assert enroll(fn, make_event, enroll_doc(hostname="pi-3"), timestamp=int(time.time()) - 3600)[0] == 401
    assert enroll(fn, make_event, enroll_doc(hostname="pi-4", labels={"team": "a"}))[0] == 422
    assert call(fn, make_event, method="DELETE", path="/nodes/pi-north-01", headers=admin())[0] == 200
    m = scrape(fn, make_event)
    assert {o: value(m, "enrollments_total", outcome=o) for o in ("issued", "reused", "refused", "failed")} == {
        "issued": 3,
        "reused": 1,
        "refused": 5,
        "failed": 0,
    }
    assert {
        r: value(m, "rejections_total", reason=r)
        for r in ("rate_limit_node", "replay", "signature", "clock_skew", "refused_label")
    } == {"rate_limit_node": 1, "replay": 1, "signature": 1, "clock_skew": 1, "refused_label": 1}
    assert value(m, "revocations_total", reason="rotated") == 1 and value(m, "revocations_total", reason="deleted") == 1
    assert value(m, "alert_tokens_issued_total") == 4 and value(m, "alert_tokens_revoked_total") == 1
    assert value(m, "tokens_outstanding") == 1 and value(m, "tokens_outstanding_cap") == 20
    assert value(m, "requests_total", route="/enroll", code=201) == 3
    assert value(m, "requests_total", route="/nodes/<name>", code=200) == 1
    assert value(m, "requests_total", route="/metrics", code=200) == 0  # counted after it answered


def test_api_errors_are_counted_by_status(kenroll, make_event):
    fn, emu = kenroll()
    emu.deny("create", "secrets")
    assert enroll(fn, make_event)[0] == 502
    m = scrape(fn, make_event)
    assert value(m, "api_errors_total", status=403) == 1
    assert value(m, "enrollments_total", outcome="failed") == 1


def test_metrics_answer_while_the_function_is_misconfigured(kenroll, make_event):
    fn, emu = kenroll(env={"token_ttl": "forever"})
    assert enroll(fn, make_event)[0] == 503
    assert scrape(fn, make_event)[("enrollments_total", (("outcome", "failed"),))] == 1


def test_metrics_answer_while_the_api_is_down(kenroll, make_event):
    fn, emu = kenroll()
    emu.fail(["list"], "secrets", status=500, times=None)
    m = scrape(fn, make_event)
    assert value(m, "api_errors_total", status=500) == 1
    assert math.isnan(value(m, "tokens_outstanding"))  # unknown, not zero


def test_callers_cannot_add_series(kenroll, make_event):
    fn, _ = kenroll()
    before = len(scrape(fn, make_event))
    for i in range(30):
        body, h = signed(enroll_doc(hostname=f"made-up-{i}"), key="wrong-key-wrong-key")
        call(fn, make_event, method="POST", path=f"/enroll/{i}", body=body, headers=h)
        call(fn, make_event, method="GET", path=f"/made-up-{i}")
    m = scrape(fn, make_event)
    assert len(m) - before <= 4  # requests_total for route "other" and a few codes, not one series per caller
    assert not any("made-up" in str(k) for k in m)
