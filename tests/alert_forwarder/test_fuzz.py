"""Property tests of every alert-forwarder route (issue 17): whatever arrives, no 5xx, no traceback, no state
change on a rejection, and /metrics still answers. Derandomized (tests/conftest.py profiles: 300 examples per
route in make test, 2,000 under EDGEGUARD_HYPOTHESIS_PROFILE=bench)."""

from __future__ import annotations

import json

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzzing import fuzz_route

pytestmark = pytest.mark.fuzz

VALID = {"Authorization": "Bearer af-test-token-0123456789"}
# Mostly authenticated, so that the bodies are what gets fuzzed; the rest probes the auth paths.
TOKEN_HEADERS = st.sampled_from(
    [VALID] * 8
    + [
        None,
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic ZmFsY286YWYtdGVzdC10b2tlbi0wMTIzNDU2Nzg5"},  # falco:<the token>
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer"},
        {"Authorization": "\x85\xa0"},
    ]
)
CONTENT_TYPES = st.sampled_from(
    ["application/json"] * 6
    + [
        "application/x-ndjson",
        "text/plain",
        "",
        "application/foo+json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ]
)
ENCODINGS = st.sampled_from([None, "gzip", "br", "identity", "x-gzip"])
TEXT = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(["\\ud800", "x\\udfff", "1e400"])
# What an HTTP header can carry at all (no CR/LF; latin-1 after the server decoded it).
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=30)
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | TEXT
JSONISH = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4), max_leaves=12)


@st.composite
def alerts(draw):
    al = {
        "hostname": "edge-1",
        "output": "10:11:12.1: Warning x",
        "output_fields": {"k8s.pod.name": "p"},
        "priority": "Warning",
        "rule": "Terminal shell in container",
        "source": "syscall",
        "tags": ["a"],
        "time": "2024-05-01T10:11:12.123456789Z",
    }
    for key in draw(st.lists(st.sampled_from(sorted(al) + ["x", "uuid"]), max_size=3, unique=True)):
        if draw(st.booleans()):
            al.pop(key, None)
        else:
            al[key] = draw(JSONISH)
    if draw(st.booleans()):
        al["output_fields"] = draw(st.dictionaries(TEXT, JSONISH, max_size=4))
    return al


def _raw(value) -> bytes:
    """JSON text in which the sampled escape strings stay escapes (lone surrogates, 1e400 as a number)."""
    text = json.dumps(value)
    return text.replace('"1e400"', "1e400").replace("\\\\ud800", "\\ud800").replace("\\\\udfff", "\\udfff").encode()


BODIES = (
    alerts().map(_raw)
    | st.lists(alerts(), max_size=4).map(_raw)
    | JSONISH.map(_raw)
    | st.binary(max_size=64)
    | st.just(b"")
    | st.just(b"\x1f\x8b\x08\x00garbage")
)


ROUTES = ("/", "/test", "/flush", "/metrics", "/alerts", "/alerts/summary", "/ui")


def state(mod):
    """What a request changes synchronously. (Spool depth and delivery counts move on their own while the
    workers deliver what earlier requests accepted; every accepted alert is in the history and the counters.)"""
    f = mod.FORWARDER
    return (
        f.metrics.total("falco_events_total"),
        len(f.history),
        f.dedup.open_windows(),
        f.metrics.total("routed_total"),
        f.metrics.total("dropped_total", reason="disabled"),
    )


@pytest.fixture
def fuzz_handler(load_handler):
    return load_handler(
        env={"spool_fsync": "false", "retry_tick_seconds": "3600"},
        secrets={"edgeguard-metrics-token": "metrics-reader-0123456789"},
    )


def check(mod, h, method, path, body, headers, query, *, route: str):
    from tests.conftest import make_event

    fuzz_route("alert-forwarder", route)  # bench/fuzz.py reports requests per route
    before = state(mod)
    resp = mod.handle(make_event(method, path, body, headers or {}, query), h.CTX)
    code = resp["statusCode"]
    event(f"{path if path in ROUTES else 'other'} -> {code}")
    text = resp["body"] if isinstance(resp["body"], str) else resp["body"].decode("utf-8", "replace")
    assert code < 500, (code, text[:300])
    assert "Traceback" not in text
    text.encode("utf-8")  # what the template sends must be encodable
    if code >= 400:
        assert state(mod) == before, (method, path, code, text[:200])
        if resp["headers"].get("Content-Type", "").startswith("application/json"):
            assert json.loads(text)["status"] == code
    m = mod.handle(make_event("GET", "/metrics", b"", {"Authorization": "Bearer af-test-token-0123456789"}), h.CTX)
    assert m["statusCode"] == 200 and "edgeguard_alert_forwarder_falco_events_total" in m["body"]
    return code


def _headers(auth, ctype, encoding):
    hdr = dict(auth or {})
    if ctype:
        hdr["Content-Type"] = ctype
    if encoding:
        hdr["Content-Encoding"] = encoding
    return hdr


QUERIES = st.dictionaries(
    st.sampled_from(
        [
            "priority",
            "rule",
            "source",
            "since",
            "state",
            "destination",
            "limit",
            "after",
            "dry_run",
            "due_only",
            "token",
            "hostname",
        ]
    ),
    TEXT,
    max_size=3,
)


@given(body=BODIES, auth=TOKEN_HEADERS, ctype=CONTENT_TYPES, encoding=ENCODINGS, query=QUERIES)
def test_post_root(fuzz_handler, h, body, auth, ctype, encoding, query):
    if encoding in ("gzip", "x-gzip") and body[:2] != b"\x1f\x8b":
        import gzip

        body = gzip.compress(body)
    check(fuzz_handler, h, "POST", "/", body, _headers(auth, ctype, encoding), query, route="POST /")


@given(body=BODIES, auth=TOKEN_HEADERS, ctype=CONTENT_TYPES, query=QUERIES)
def test_post_test(fuzz_handler, h, body, auth, ctype, query):
    check(fuzz_handler, h, "POST", "/test", body, _headers(auth, ctype, None), query, route="POST /test")


@given(body=BODIES, auth=TOKEN_HEADERS, query=QUERIES)
def test_post_flush(fuzz_handler, h, body, auth, query):
    check(fuzz_handler, h, "POST", "/flush", body, _headers(auth, None, None), query, route="POST /flush")


@pytest.mark.parametrize("path", ["/", "/metrics", "/alerts", "/alerts/summary", "/ui"])
@given(auth=TOKEN_HEADERS, query=QUERIES, method=st.sampled_from(["GET"] * 4 + ["HEAD", "DELETE", "PUT", "PATCH"]))
def test_reads(fuzz_handler, h, path, auth, query, method):
    check(
        fuzz_handler, h, method, path, b"", _headers(auth, None, None), query, route=f"GET {path} (and other methods)"
    )


@given(
    form=st.dictionaries(st.sampled_from(["action", "token", "csrf", "x"]), TEXT, max_size=4) | st.binary(max_size=64),
    ctype=st.sampled_from(["application/x-www-form-urlencoded"] * 4) | CONTENT_TYPES,
    cookie=st.none() | HEADER_TEXT,
    origin=st.none() | HEADER_TEXT,
)
def test_ui_form(fuzz_handler, h, form, ctype, cookie, origin):
    import urllib.parse

    body = form if isinstance(form, bytes) else urllib.parse.urlencode(form).encode()
    hdr = _headers(None, ctype, None)
    if cookie is not None:
        hdr["Cookie"] = f"edgeguard_af_session={cookie}"
    if origin is not None:
        hdr["Origin"] = origin
    check(fuzz_handler, h, "POST", "/ui", body, hdr, {}, route="POST /ui")


@given(path=TEXT.map(lambda t: "/" + t), method=st.sampled_from(["GET", "POST", "OPTIONS"]), body=BODIES)
def test_unknown_paths(fuzz_handler, h, path, method, body):
    check(
        fuzz_handler,
        h,
        method,
        path,
        body,
        {"Authorization": "Bearer af-test-token-0123456789"},
        {},
        route="other paths",
    )
