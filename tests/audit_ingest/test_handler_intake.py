"""Request bodies are decoded item by item (intake.py): the same events as decoding the whole body, less memory.

The reference is what the plugin-faithful whole-body path gives: ``split_payload(json.loads(body))``
(edgeguard.falco.source). Whatever the payload's shape, the item-by-item walk yields the same events in the
same order, skips the same objects and drops the same items, without building the decoded batch.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeguard.falco.source import split_payload

from .conftest import REGRESSION, SAMPLES, post
from .test_handler import anon, eventlist


def _intake():
    import importlib
    import sys
    from pathlib import Path

    from local import buildctx, stackfile

    if "_ai_intake_ctx" not in sys.modules:
        stack = stackfile.load()
        import tempfile

        ctx = buildctx.assemble(stack.functions["audit-ingest"], stack, Path(tempfile.mkdtemp()) / "build")
        spec = importlib.util.spec_from_file_location(
            "_ai_intake_ctx", ctx / "function" / "__init__.py", submodule_search_locations=[str(ctx / "function")]
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_ai_intake_ctx"] = mod
        spec.loader.exec_module(mod)
    return importlib.import_module("_ai_intake_ctx.intake")


class _Collect:
    def __init__(self, intake):
        self.items: list = []
        self.sink = intake.Sink(lambda obj, n: self.items.append(obj))


def walked(raw: bytes, ndjson: bool = False):
    intake = _intake()
    c = _Collect(intake)
    intake.walk(raw, c.sink, ndjson=ndjson)
    return c.items, c.sink.skipped


def reference(raw: bytes, ndjson: bool = False):
    """The whole-body decode: every item split_payload takes (events and dropped items), and the skipped count."""
    docs = [json.loads(line) for line in raw.splitlines() if line.strip()] if ndjson else [json.loads(raw)]
    items, skipped = [], 0
    for doc in docs:
        b = split_payload(doc)
        skipped += b.skipped
        items += [e.obj for e in b.events]
    return items, skipped


def events_of(items):
    """The items split_payload keeps as events (the others it drops for their stageTimestamp)."""
    return [split_payload({"kind": "EventList", "items": [i]}).events for i in items]


@pytest.mark.parametrize(
    "path", sorted((REGRESSION / "events").glob("*.json")) + sorted(SAMPLES.glob("*.json*")), ids=lambda p: p.name
)
def test_every_corpus_file_walks_to_the_events_of_the_whole_body_decode(path):
    raw = path.read_bytes()
    try:
        json.loads(raw)
        ndjson = False
    except json.JSONDecodeError:
        ndjson = True
    items, skipped = walked(raw, ndjson)
    ref_events, ref_skipped = reference(raw, ndjson)
    kept = [i for i, evs in zip(items, events_of(items)) if evs]
    assert kept == ref_events and skipped == ref_skipped


TS = "2024-05-01T10:11:12.123456Z"
event_items = st.fixed_dictionaries(
    {
        "auditID": st.text(min_size=1, max_size=8),
        "verb": st.sampled_from(["get", "create"]),
        "objectRef": st.fixed_dictionaries({"name": st.text(max_size=6)}),
    },
    optional={"stageTimestamp": st.sampled_from([TS, TS, TS, "yesterday", 5])},
)
junk = st.one_of(
    st.integers(),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.dictionaries(st.sampled_from(["kind", "a", "items"]), st.sampled_from(["Pod", 1, "x"]), max_size=3),
)


def _docs():
    event = event_items.map(lambda e: dict(e, kind="Event"))
    elist = st.builds(
        lambda items, kind_last, meta: (
            {"items": items, "metadata": meta, "kind": "EventList"}
            if kind_last
            else {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": meta, "items": items}
        ),
        st.lists(st.one_of(event_items, junk), max_size=4),
        st.booleans(),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
    return st.recursive(st.one_of(event, elist, junk), lambda inner: st.lists(inner, max_size=4), max_leaves=12)


@pytest.mark.fuzz
@given(doc=_docs(), ascii_only=st.booleans(), pretty=st.booleans())
def test_any_payload_shape_walks_to_the_same_events_and_skips(doc, ascii_only, pretty):
    raw = json.dumps(doc, ensure_ascii=ascii_only, indent=2 if pretty else None).encode("utf-8")
    items, skipped = walked(raw)
    ref_events, ref_skipped = reference(raw)
    kept = [i for i, evs in zip(items, events_of(items)) if evs]
    assert kept == ref_events and skipped == ref_skipped


def test_non_ascii_text_decodes_as_utf8_and_reaches_the_alert(ingest, make_event, forwarder):
    mod = ingest()
    e = anon(1, requestURI="/api/v1/namespaces?sélection=ünïcode-\U0001f600")
    body = json.dumps(eventlist(anon(0), e), ensure_ascii=False).encode("utf-8")
    assert not body.isascii()
    status, reply = post(mod, make_event, body, query={"dry_run": "1"})
    assert status == 200 and reply["alert_count"] == 2
    assert reply["alerts"][1]["output_fields"]["ka.uri"] == "/api/v1/namespaces?sélection=ünïcode-\U0001f600"


def test_invalid_utf8_inside_an_item_is_a_400_naming_the_byte(ingest, make_event, forwarder):
    mod = ingest()
    body = json.dumps(eventlist(anon(0), anon(1))).encode().replace(b'"anon-1"', b'"anon-\xc3("')
    status, reply = post(mod, make_event, body)
    at = body.index(b"\xc3")
    assert status == 400 and reply["error"] == f"request body is not valid UTF-8 (byte {at})"
    assert forwarder.requests == []


def test_a_bad_item_after_good_ones_hands_nothing_off(ingest, make_event, forwarder):
    mod = ingest()
    body = json.dumps(eventlist(anon(0), anon(1), anon(2)))
    bad = body.replace('"anon-2"', '"anon-2" "oops"')
    status, reply = post(mod, make_event, bad)
    assert status == 400 and reply["error"].startswith("invalid JSON: Expecting ',' delimiter at line 1 column ")
    assert forwarder.requests == []
    assert post(mod, make_event, body)[1]["forwarded"] == 3  # nothing was remembered from the refused body


def test_kind_after_items_still_streams_the_items_as_events(ingest, make_event, forwarder):
    mod = ingest()
    body = f'{{"items": [{json.dumps(anon(0))}, {json.dumps(anon(1))}], "metadata": {{}}, "kind": "EventList"}}'
    status, reply = post(mod, make_event, body)
    assert status == 200 and reply["events"] == 2 and reply["forwarded"] == 2


def test_two_kind_keys_around_streamed_items_are_refused_not_guessed(ingest, make_event, forwarder):
    mod = ingest()
    body = f'{{"kind": "EventList", "items": [{json.dumps(anon(0))}], "kind": "Event"}}'
    status, reply = post(mod, make_event, body)
    assert status == 400 and "Duplicate 'kind' in an EventList" in reply["error"] and forwarder.requests == []


def test_arrays_of_payloads_nested_too_deep_are_refused(ingest, make_event):
    status, reply = post(ingest(), make_event, "[" * 40 + json.dumps(anon(0)) + "]" * 40)
    assert status == 400 and "nested more than 32 deep" in reply["error"]
    assert post(ingest(), make_event, "[" * 20 + json.dumps(anon(0)) + "]" * 20)[0] == 200


def test_ndjson_errors_name_the_line_and_nothing_is_handed_off(ingest, make_event, forwarder):
    mod = ingest()
    body = json.dumps(anon(0)) + "\n\n" + json.dumps(eventlist(anon(1)))[:-1] + "\n"
    status, reply = post(mod, make_event, body, content_type="application/x-ndjson")
    assert status == 400 and reply["error"].startswith("line 3: invalid JSON") and forwarder.requests == []


def test_a_batch_over_the_limit_is_a_413_naming_the_api_server_flag(ingest, make_event, forwarder):
    mod = ingest(env={"max_body_bytes": str(200_000)})
    status, reply = post(mod, make_event, json.dumps(eventlist(anon(0))) + " " * 200_000)
    assert status == 413 and reply["limit"] == 200_000
    assert (
        "--audit-webhook-truncate-enabled=true and --audit-webhook-truncate-max-batch-size=134464 or less"
        in reply["error"]
    )


def test_the_default_limit_takes_the_largest_batch_bootstrap_lets_the_api_server_send():
    """bootstrap writes batch-max-size 100 and truncation on, with the truncating backend's defaults: events of
    at most 100 KiB, batches of at most 10 MiB of events (k8s apiserver/plugin/pkg/audit/truncate)."""
    import sys
    from pathlib import Path

    from local import stackfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bootstrap"))
    from edgeguard_bootstrap.k3s_audit import WEBHOOK_ARGS

    args = dict(a.split("=", 1) for a in WEBHOOK_ARGS)
    assert args["audit-webhook-truncate-enabled"] == "true" and args["audit-webhook-batch-max-size"] == "100"
    batch_max = int(args.get("audit-webhook-truncate-max-batch-size", 10 * 1024 * 1024))
    event_max = int(args.get("audit-webhook-truncate-max-event-size", 100 * 1024))
    largest_events = min(batch_max, 100 * event_max)
    wrapper = len(b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[]}') + 99
    limit = int(stackfile.load().functions["audit-ingest"].environment["max_body_bytes"])
    assert largest_events + wrapper <= limit <= batch_max + 64 * 1024


def test_walking_a_big_eventlist_never_holds_the_decoded_batch():
    items = [dict(anon(i), requestObject={"data": {f"k{j}": f"v{j}" for j in range(400)}}) for i in range(800)]
    raw = json.dumps(eventlist(*items)).encode()
    intake = _intake()
    tracemalloc.start()
    try:
        json.loads(raw)
        whole = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        count = []
        intake.walk(raw, intake.Sink(lambda obj, n: count.append(1)))
        streamed = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(count) == 800
    # A window of the body as text plus one item: not even one copy of the body, let alone the decoded batch.
    assert streamed < len(raw) / 2 and streamed < whole / 10, (streamed, len(raw), whole)


@pytest.mark.fuzz
@given(doc=_docs(), ascii_only=st.booleans(), pretty=st.booleans(), window=st.sampled_from([8, 16, 64]))
def test_items_cut_by_the_text_window_walk_the_same(doc, ascii_only, pretty, window, monkeypatch):
    """With a tiny window every value is cut somewhere (numbers included), and the walk still matches."""
    intake = _intake()
    monkeypatch.setattr(intake._Text, "WINDOW", window)
    raw = json.dumps(doc, ensure_ascii=ascii_only, indent=2 if pretty else None).encode("utf-8")
    items, skipped = walked(raw)
    ref_events, ref_skipped = reference(raw)
    kept = [i for i, evs in zip(items, events_of(items)) if evs]
    assert kept == ref_events and skipped == ref_skipped


def test_a_number_cut_by_the_window_is_read_whole(monkeypatch):
    intake = _intake()
    monkeypatch.setattr(intake._Text, "WINDOW", 8)
    items, skipped = walked(b'[1234567890123, 42, {"kind": "EventList", "items": [{"n": 98765432109876}]}]')
    assert items == [{"n": 98765432109876}] and skipped == 2


def test_an_error_position_counts_lines_and_columns_of_the_whole_body(monkeypatch):
    intake = _intake()
    monkeypatch.setattr(intake._Text, "WINDOW", 16)
    with pytest.raises(intake.BadBody) as err:
        walked(b'{"kind": "EventList",\n "items": [\n  {"a": 1},\n  {"b": 2} {"c": 3}]}')
    assert err.value.reason == "invalid JSON: Expecting ',' delimiter at line 4 column 12"
