"""Hostile input on every route (issue 17): a 4xx with a reason, nothing changed, no traceback, /metrics still
answering. The exact reproducer first, then property tests (hypothesis, marked fuzz; derandomized: 300
requests per route in make test, 2,000 under make bench) in scrub_mode=move with a movable ConfigMap seeded,
so a rejection that slipped through would show as a write."""

from __future__ import annotations

import json
import string
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import make_event
from tests.fuzzing import fuzz_route

from .conftest import FN, TOKEN, writes
from .test_handler import ALERT_RULE, SEED_VALUE, seed_aws


@pytest.fixture
def target(scrubber_fn, kube_emulator, capfd):
    """(the handler in move mode over a seeded emulator, a checker run after each request)."""
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move", rate_limit_per_minute="1000000", max_queued_jobs="1000000", wait_seconds="10")

    def idle():
        """Jobs an earlier request started are finished: they must not write during the next one's check."""
        deadline = time.monotonic() + 30
        while mod._jobs().depth() != (0, 0):
            assert time.monotonic() < deadline, "jobs did not finish"
            time.sleep(0.005)

    def send(method="POST", path="/", body=b"", headers=None, query=None, token=TOKEN):
        idle()
        hdrs = dict(headers or {})
        if token is not None:
            hdrs.setdefault("Authorization", f"Bearer {token}")
        before = (len(writes(kube_emulator)), len(mod._jobs().recent()))
        resp = mod.handle(make_event(method=method, path=path, body=body, headers=hdrs, query=query or {}), None)
        status = resp["statusCode"]
        assert status < 500, (status, resp["body"][:500])
        doc = json.loads(resp["body"]) if resp["headers"].get("Content-Type") == "application/json" else None
        if status >= 400:
            assert isinstance(doc, dict) and doc.get("error"), resp
            assert (len(writes(kube_emulator)), len(mod._jobs().recent())) == before, "a rejection changed state"
        assert SEED_VALUE not in resp["body"]
        return status, doc

    def healthy():
        metrics = mod.handle(
            make_event(method="GET", path="/metrics", headers={"Authorization": f"Bearer {TOKEN}"}), None
        )
        assert metrics["statusCode"] == 200 and "requests_total" in metrics["body"]
        err = capfd.readouterr().err
        assert "Traceback" not in err and "request.crashed" not in err and "job.crashed" not in err, err[-2000:]

    yield send, healthy
    idle()  # nothing of this test may run on into the next one's emulator


def test_a_lone_surrogate_as_an_unknown_field_name_is_a_400_and_changes_nothing(target, kube_emulator):
    """Issue 17's reproducer, byte for byte: `{"\\ud800":1}` (valid JSON) got an HTML 500 and a traceback."""
    send, healthy = target
    cm_before = kube_emulator.get("configmaps", "demo", "aws-creds")
    for query in ({}, {"wait": "1"}):
        status, doc = send("POST", body=b'{"\\ud800":1}', headers={"Content-Type": "application/json"}, query=query)
        assert status == 400 and doc["path"] == '$["\\ud800"]' and "surrogate" in doc["error"], doc
    assert kube_emulator.get("configmaps", "demo", "aws-creds") == cm_before and writes(kube_emulator) == []
    healthy()


def test_an_unknown_field_is_named_but_never_echoed_at_length(target):
    send, healthy = target
    status, doc = send(
        "POST",
        body=json.dumps({"x" * 100000: 1, "namespace": "demo"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and "unknown field" in doc["error"] and len(doc["error"]) < 400, doc["error"][:500]
    healthy()


# --- property tests ---------------------------------------------------------------------------------------------

NAMES = st.sampled_from(["demo", "aws-creds", "default", "kube-system", "Demo", "a" * 64, "-x", "x.y", "", "<NA>"])
TEXT = st.text(max_size=40) | NAMES
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT
JSONISH = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)
FIELDS = st.sampled_from(["namespace", "name", "all_namespaces", "dry_run", "rule", "output_fields", "x"])
REQUEST = st.dictionaries(FIELDS, JSONISH | NAMES, max_size=4)
ALERT = st.fixed_dictionaries(
    {
        "rule": st.sampled_from([ALERT_RULE, "Other", ""]) | JSONISH,
        "output_fields": st.dictionaries(
            st.sampled_from(["ka.req.configmap.name", "ka.target.name", "ka.target.namespace", "ka.req.configmap.obj"])
            | TEXT,
            JSONISH | NAMES,
            max_size=4,
        )
        | JSONISH,
    }
)
BODY = (
    (REQUEST | ALERT | JSONISH).map(lambda d: json.dumps(d, allow_nan=True).encode())
    | st.binary(max_size=200)
    | st.sampled_from(
        [
            b'{"\\ud800":1}',
            b'{"namespace":"\\udfff"}',
            b'{"namespace":"demo","name":1e400}',
            b"[" * 40 + b"]" * 40,
            b'{"namespace":"demo"} trailing',
            b"\xff\xfe",
        ]
    )
)
CTYPE = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/cloudevents+json",
        "text/plain",
        "",
        "application/x-ndjson",
    ]
)
QUERY = st.dictionaries(
    st.sampled_from(["namespace", "name", "all_namespaces", "wait", "token", "dry_run"]) | TEXT, TEXT, max_size=3
)
HEADER_VALUE = st.text(alphabet=string.printable.strip() + " ", max_size=60)
TOKENS = st.sampled_from([TOKEN, None, "wrong", TOKEN + " ", ""])


@pytest.mark.fuzz
@given(body=BODY, ctype=CTYPE, query=QUERY, key=st.none() | HEADER_VALUE, token=TOKENS)
def test_post_root_never_5xx_and_a_rejection_changes_nothing(target, body, ctype, query, key, token):
    send, healthy = target
    fuzz_route(FN, "POST /")
    headers = {"Content-Type": ctype} if ctype else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    send("POST", body=body, headers=headers, query=query, token=token)
    healthy()


@pytest.mark.fuzz
@given(
    query=QUERY | st.dictionaries(st.sampled_from(["namespace", "name", "all_namespaces"]), NAMES, max_size=3),
    token=TOKENS,
    method=st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]),
)
def test_get_root_never_5xx_and_changes_nothing(target, kube_emulator, query, token, method):
    send, healthy = target
    fuzz_route(FN, "GET /")
    send(method, query=query, token=token)
    assert writes(kube_emulator) == []  # a report never writes
    healthy()


@pytest.mark.fuzz
@given(
    suffix=st.sampled_from(["", "/"])
    | st.text(max_size=30).map(lambda s: "/" + s)
    | st.text(alphabet="0123456789abcdef", min_size=15, max_size=17).map(lambda s: "/" + s),
    token=TOKENS,
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    body=BODY,
)
def test_jobs_routes_never_5xx_and_change_nothing(target, kube_emulator, suffix, token, method, body):
    send, healthy = target
    fuzz_route(FN, "GET /jobs")
    send(method, path="/jobs" + suffix, body=body, headers={"Content-Type": "application/json"}, token=token)
    assert writes(kube_emulator) == []
    healthy()


@pytest.mark.fuzz
@given(
    token=TOKENS | HEADER_VALUE,
    scheme=st.sampled_from(["Bearer", "Basic", "bearer", "Token", ""]),
    query=QUERY,
    method=st.sampled_from(["GET", "HEAD", "POST"]),
)
def test_metrics_never_5xx_and_change_nothing(target, kube_emulator, token, scheme, query, method):
    send, healthy = target
    fuzz_route(FN, "GET /metrics")
    headers = {"Authorization": f"{scheme} {token}".strip()} if token is not None else {}
    status, _ = send(method, path="/metrics", headers=headers, query=query, token=None)
    assert status in (200, 401, 405), status
    assert writes(kube_emulator) == []
    healthy()


@pytest.mark.fuzz
@given(path=st.text(max_size=40).map(lambda s: "/" + s), method=st.sampled_from(["GET", "POST", "PUT"]), body=BODY)
def test_any_other_path_never_5xx_and_changes_nothing(target, kube_emulator, path, method, body):
    send, healthy = target
    fuzz_route(FN, "other paths")
    send(method, path=path, body=body, headers={"Content-Type": "application/json"})
    healthy()
