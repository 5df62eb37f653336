"""Property tests for every node-enroll route (issue 17): whatever arrives, no 5xx, no traceback, nothing minted
on a refusal, and /metrics still answers. Profiles (tests/fuzzing.py): 300 requests per route in make test,
2,000 in make bench (bench/fuzz.py)."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import fuzz_route
from tests.node_enroll.helpers import ADMIN, KEY, call, records_of, signed

pytestmark = pytest.mark.fuzz

ENV = {
    "rate_limit_per_minute": "1000000",
    "rate_limit_global_per_minute": "1000000",
    "rate_limit_unsigned_per_minute": "1000000",
    "max_outstanding_tokens": "100000",
    "falco_mode": "host",
    "public_gateway_url": "https://gw.edge.example",
}
_nonce = itertools.count()

# What an HTTP header value can carry (no CR/LF/NUL), and header names clients send.
header_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=80)
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=20), kids, max_size=4),
    max_leaves=12,
)
hostnames = st.one_of(
    st.sampled_from(["pi-north-01", "PI-North-02", "pi.edge.example", "pi-1\n", " pi-2 ", "", "pi-\ud800", "a" * 254]),
    st.text(max_size=70),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}[a-z0-9]", fullmatch=True),
)
# Strings at the edges of the rules: a final newline (issue 17 §5), spaces, quotes, lengths 63/64, a lone surrogate.
edgy = st.sampled_from(
    ["north", "north\n", "\nnorth", "no\nrth", "a b", "a'b", "$(id)", "x" * 63, "x" * 64, "é", "\ud800", "", "-x", "x-"]
)
labels = st.dictionaries(
    st.sampled_from(
        [
            "node.edgeguard.io/site",
            "node.edgeguard.io/x\n",
            "node.edgeguard.io/" + "k" * 64,
            "node-role.kubernetes.io/worker",
            "team",
        ]
    )
    | st.text(max_size=30),
    edgy | json_values,
    min_size=1,
    max_size=3,
)
requests_docs = st.fixed_dictionaries(
    {},
    optional={
        "hostname": hostnames | json_values,
        "arch": st.sampled_from(["aarch64", "arm64", "x86_64", "sparc", ""]) | json_values,
        "machine_id": st.sampled_from(["0123456789abcdef0123456789abcdef", "short"]) | st.text(max_size=140),
        "labels": labels | json_values,
        "rotate": st.booleans() | json_values,
        "surprise": json_values,
    },
)
# Mostly valid requests with one or two fields changed: these get past parsing into the policy and issuing paths.
VALID = {"hostname": "pi-north-01", "arch": "aarch64", "machine_id": "0123456789abcdef0123456789abcdef"}
near_valid_docs = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from([VALID, {**VALID, "labels": {"node.edgeguard.io/site": "north"}}]),
    st.fixed_dictionaries(
        {},
        optional={
            "hostname": hostnames,
            "labels": labels,
            "rotate": st.booleans() | json_values,
            "machine_id": st.sampled_from(["f" * 32, "0123456789abcdef0123456789abcdef"]),
        },
    ),
)
raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b'{"\\ud800":1}',
            b'{"hostname":"\\udfff"}',
            b'{"a":1e400}',
            b"[" * 64,
            b'{"hostname":"pi","arch":"arm64","machine_id":"0123456789abcdef","x":NaN}',
        ]
    ),
)


@pytest.fixture
def fuzz_fn(kenroll):
    fn, emu = kenroll(env=ENV)
    minted = lambda: (
        len(list(emu.list("secrets", "kube-system"))),
        len(records_of(emu)),  # noqa: E731
        json.dumps(
            (emu.get("secrets", "edgeguard-enroll", "edgeguard-node-alert-tokens") or {}).get("data"), sort_keys=True
        ),
    )
    return fn, emu, minted


def healthy(fn, make_event, status):
    assert status < 500, status
    logs = fn.log_buffer.getvalue()
    assert "Traceback" not in logs and "request.crashed" not in logs, logs[-2000:]


def metrics_answer(fn, make_event):
    status, _, text = call(fn, make_event, method="GET", path="/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert status == 200 and "edgeguard_node_enroll_requests_total" in text


def test_post_enroll_unsigned_or_badly_signed(fuzz_fn, make_event):
    fn, emu, minted = fuzz_fn
    before = minted()

    @given(
        body=raw_bodies | requests_docs.map(lambda d: json.dumps(d).encode()),
        headers=st.dictionaries(
            st.sampled_from(
                [
                    "X-Enroll-Timestamp",
                    "X-Enroll-Nonce",
                    "X-Enroll-Signature",
                    "Content-Type",
                    "Accept",
                    "Content-Length",
                    "X-Real-Ip",
                ]
            ),
            header_text,
            max_size=5,
        ),
        query=st.dictionaries(st.sampled_from(["format", "token", "x"]), header_text, max_size=2),
    )
    def run(body, headers, query):
        fuzz_route("node-enroll", "POST /enroll unsigned")
        status, _, doc = call(fn, make_event, body=body, headers=headers, query=query)
        healthy(fn, make_event, status)
        assert status in (400, 401, 413, 415, 429), (status, doc)
        assert minted() == before

    run()
    metrics_answer(fn, make_event)


def test_post_enroll_signed_with_the_fleet_key(fuzz_fn, make_event):
    fn, emu, minted = fuzz_fn
    outcomes = {200: 0, 201: 0}

    @given(
        body=st.one_of(near_valid_docs, near_valid_docs, requests_docs).map(lambda d: json.dumps(d).encode())
        | raw_bodies,
        query=st.just({})
        | st.dictionaries(st.just("format"), st.sampled_from(["sh", "json", "xml", ""]) | header_text, max_size=1),
        accept=st.sampled_from(["", "text/x-shellscript", "application/json", "*/*"]),
        ctype=st.just("application/json") | st.sampled_from(["application/json; charset=utf-8", "text/plain", ""]),
        skew=st.just(0) | st.sampled_from([-299, 29, 31, -301, 240]),
    )
    def run(body, query, accept, ctype, skew):
        fuzz_route("node-enroll", "POST /enroll signed")
        before = minted()
        n = next(_nonce)
        if body.startswith(b'{"hostname": "pi-north-01"'):  # a fresh machine each time, so most reach issuing
            body = body.replace(b'"pi-north-01"', f'"fz-{n}"'.encode(), 1)
            body = body.replace(b'"0123456789abcdef0123456789abcdef"', f'"{n:032x}"'.encode())
        _, headers = signed(body, timestamp=int(time.time()) + skew, nonce=f"fuzz-nonce-{n:012d}")
        headers.update({"Content-Type": ctype, "Accept": accept})
        status, _, doc = call(fn, make_event, body=body, headers=headers, query=query)
        healthy(fn, make_event, status)
        if status >= 400:
            assert minted() == before, (status, doc)
        else:
            assert status in (200, 201)
            outcomes[status] += 1

    run()
    assert outcomes[201] >= 10, outcomes  # the generator does reach the issuing path
    metrics_answer(fn, make_event)


@pytest.mark.parametrize("route", ["/nodes", "/metrics"])
def test_get_nodes_and_get_metrics(fuzz_fn, make_event, route):
    fn, emu, minted = fuzz_fn
    before = minted()

    @given(
        slash=st.booleans(),
        method=st.sampled_from(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        auth=st.sampled_from([f"Bearer {ADMIN}", f"Bearer {ADMIN}x", "Bearer", f"Basic {ADMIN}", ""]) | header_text,
        query=st.dictionaries(st.sampled_from(["token", "drain", "x"]), header_text, max_size=2),
    )
    def run(slash, method, auth, query):
        fuzz_route("node-enroll", f"GET {route}")
        status, _, _ = call(
            fn,
            make_event,
            method=method,
            path=route + ("/" if slash else ""),
            headers={"Authorization": auth},
            query=query,
        )
        healthy(fn, make_event, status)
        assert minted() == before

    run()
    metrics_answer(fn, make_event)


def test_delete_nodes_name(fuzz_fn, make_event):
    fn, emu, minted = fuzz_fn
    before = minted()

    @given(
        name=hostnames | st.text(max_size=300),
        drain=st.sampled_from([None, "true", "1", "no", ""]),
        auth=st.sampled_from([f"Bearer {ADMIN}", "Bearer nope", ""]),
    )
    def run(name, drain, auth):
        fuzz_route("node-enroll", "DELETE /nodes/<name>")
        status, _, doc = call(
            fn,
            make_event,
            method="DELETE",
            path=f"/nodes/{name}",
            headers={"Authorization": auth},
            query={} if drain is None else {"drain": drain},
        )
        healthy(fn, make_event, status)
        # nothing is enrolled: nothing to revoke (405: an empty name is /nodes, which is GET only)
        assert status in (400, 401, 404, 405), (status, doc)
        assert minted() == before

    run()
    metrics_answer(fn, make_event)


def test_any_other_route_or_method(fuzz_fn, make_event):
    fn, emu, minted = fuzz_fn
    before = minted()

    @given(
        path=st.text(max_size=60).map(lambda p: "/" + p),
        method=st.sampled_from(["GET", "POST", "PUT", "OPTIONS"]),
        body=st.binary(max_size=100),
    )
    def run(path, method, body):
        fuzz_route("node-enroll", "other routes")
        status, _, _ = call(
            fn,
            make_event,
            method=method,
            path=path,
            body=body,
            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        )
        healthy(fn, make_event, status)
        if not (path.rstrip("/") in ("", "/enroll") and method == "POST"):
            assert minted() == before

    run()
    metrics_answer(fn, make_event)


def test_the_fleet_key_itself_never_appears_in_an_answer_or_log(fuzz_fn, make_event):
    fn, emu, _ = fuzz_fn
    body, headers = signed({"hostname": KEY, "arch": KEY, "machine_id": KEY})
    status, _, doc = call(fn, make_event, body=body, headers=headers)
    assert status == 400 and KEY not in json.dumps(doc) and KEY not in fn.log_buffer.getvalue()


@pytest.mark.parametrize("length", ["¹", "٣", "1²", " 7 "])
def test_a_content_length_of_unicode_digits_is_no_crash(fuzz_fn, make_event, length):
    """bench fuzz found it: '¹'.isdigit() is True but int('¹') raises, and POST /enroll answered 500."""
    fn, emu, minted = fuzz_fn
    before = minted()
    status, _, doc = call(fn, make_event, body=b"\x00\x00", headers={"Content-Length": length})
    healthy(fn, make_event, status)
    assert status in (400, 401, 415), (status, doc)
    assert minted() == before
    metrics_answer(fn, make_event)
