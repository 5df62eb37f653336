"""Property tests of every audit-ingest route (issue 17): whatever arrives, no 5xx, no traceback, nothing changes
when a request is refused, and /metrics still answers. Marked ``fuzz``: a few hundred requests per route in
``make test``, >= 2,000 with ``make bench`` (bench/fuzz.py)."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzzing import fuzz_route

from .conftest import FWD_TOKEN, TOKEN
from .test_handler import anon, eventlist

pytestmark = pytest.mark.fuzz

AUTHS = st.sampled_from(
    [
        None,
        f"Bearer {TOKEN}",
        "Bearer wrong",
        "Bearer ",
        "Basic YTpi",
        f"bearer {TOKEN}",
        f"Bearer {TOKEN}\x00",
        "Token x",
        f"Bearer {FWD_TOKEN}",
    ]
)
CTYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/x-ndjson",
        "text/plain",
        "application/foo+json",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
        "",
    ]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
VALID = json.dumps(eventlist(anon(1), anon(2)))


def _mutations():
    """A valid batch cut, spliced or with bytes put in; JSON documents of any shape; raw bytes."""
    cut = st.integers(0, len(VALID)).map(lambda i: VALID[:i])
    spliced = st.tuples(st.integers(0, len(VALID)), st.text(max_size=6)).map(
        lambda t: VALID[: t[0]] + t[1] + VALID[t[0] :]
    )
    shapes = json_values.map(json.dumps)
    payloads = st.lists(
        st.sampled_from(
            [
                anon(3),
                {"kind": "Event"},
                {"kind": "EventList", "items": 3},
                {"kind": "EventList", "items": [anon(4), 7, {"stageTimestamp": "x"}]},
                1,
                "s",
            ]
        ),
        max_size=4,
    ).map(json.dumps)
    text = st.one_of(cut, spliced, shapes, payloads, st.text(max_size=40))
    return st.one_of(text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=64))


@pytest.fixture
def fn(ingest):
    mod = ingest()
    mod.log._stream = io.StringIO()
    return mod


def _call(mod, make_event, method, path, body=b"", auth=None, ctype=None, query=None):
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    if ctype is not None:
        headers["Content-Type"] = ctype
    return mod.handle(make_event(method, path=path, body=body, headers=headers, query=query or {}), None)


def _state(mod, forwarder):
    fnc = mod.STARTUP.get()
    return (
        fnc.ledger.remembered(),
        len(forwarder.requests),
        mod.METRICS.total("events_total"),
        mod.METRICS.total("handoff_alerts_total"),
    )


def _check(mod, make_event, res, before, forwarder):
    assert res["statusCode"] < 500, res
    body = res["body"]
    assert "Traceback" not in body and "<html" not in body.lower()
    if res["headers"].get("Content-Type") == "application/json":
        json.loads(body)
    if res["statusCode"] >= 400:
        assert _state(mod, forwarder) == before, "a refused request changed the ledger, the hand-off or the counts"
    log = mod.log._stream.getvalue()
    assert "request.crashed" not in log and "Traceback" not in log
    scrape = _call(mod, make_event, "GET", "/metrics", auth=f"Bearer {TOKEN}")
    assert scrape["statusCode"] == 200 and "edgeguard_audit_ingest_requests_total" in scrape["body"]


@given(body=_mutations(), auth=AUTHS, ctype=CTYPES, dry=st.booleans())
@example(body=VALID.encode(), auth=f"Bearer {TOKEN}", ctype="application/json", dry=False)
@example(
    body=VALID.replace('"anon-1"', '"\\ud800"').encode(), auth=f"Bearer {TOKEN}", ctype="application/json", dry=False
)
@example(
    body=b'{"kind":"EventList","items":[{"stageTimestamp":"2018-10-25T13:58:49Z","x":1e400}]}',
    auth=f"Bearer {TOKEN}",
    ctype="application/json",
    dry=False,
)
def test_post_batch_never_5xx(fn, make_event, forwarder, body, auth, ctype, dry):
    fuzz_route("audit-ingest", "POST /")
    before = _state(fn, forwarder)
    res = _call(fn, make_event, "POST", "/", body, auth, ctype, {"dry_run": "1"} if dry else None)
    _check(fn, make_event, res, before, forwarder)


@given(
    auth=AUTHS,
    query=st.dictionaries(st.sampled_from(["dry_run", "token", "x"]), st.text(max_size=5), max_size=2),
    method=st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]),
)
def test_get_status_never_5xx(fn, make_event, forwarder, auth, query, method):
    fuzz_route("audit-ingest", "GET /")
    before = _state(fn, forwarder)
    res = _call(fn, make_event, method, "/", b"", auth, None, query)
    _check(fn, make_event, res, before, forwarder)
    if auth == f"Bearer {TOKEN}" and method in ("GET", "HEAD") and "token" not in query:
        assert res["statusCode"] == 200 and json.loads(res["body"])["status"] == "ok"


@given(
    auth=AUTHS,
    method=st.sampled_from(["GET", "POST", "PUT"]),
    body=st.binary(max_size=32),
    path=st.sampled_from(["/metrics", "/metrics/", "//metrics"]),
)
def test_metrics_never_5xx(fn, make_event, forwarder, auth, method, body, path):
    fuzz_route("audit-ingest", "GET /metrics")
    before = _state(fn, forwarder)
    res = _call(fn, make_event, method, path, body, auth)
    _check(fn, make_event, res, before, forwarder)


@given(
    headers=st.dictionaries(
        st.sampled_from(["HTTP_AUTHORIZATION", "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_X_A"]),
        st.text(max_size=20),
        max_size=4,
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "HEAD"]),
    path=st.sampled_from(["/", "/metrics", "/x"]),
    qs=st.text(max_size=12),
)
def test_the_screen_before_the_body_never_5xx(fn, forwarder, headers, method, path, qs):
    fuzz_route("audit-ingest", "screen (before the body)")
    before = _state(fn, forwarder)
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": qs, **headers}
    try:
        release = fn._screen(fn.preauth.Request(environ))
    except fn.preauth.Refuse as r:
        assert r.status < 500, r.body
        json.loads(r.body)
        assert _state(fn, forwarder) == before
    else:
        if release is not None:
            release()
