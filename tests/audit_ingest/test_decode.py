"""decode_payload: identical to json.loads, plus which EventList items are known to fit maxEventSize."""

from __future__ import annotations

import json

import pytest

from edgeguard.falco.source import decode_payload, split_payload

from .conftest import SAMPLES

DOCS = [
    '{"kind":"EventList","items":[{"a":1},{"b":[1,2,{"c":"\\u00e9\\n"}]}],"metadata":{}}',
    ' \n{ "items" : [ ] , "kind" : "EventList" } \n',
    '[{"kind":"EventList","items":[{"x":1}]}, [{"kind":"Event"}], 3, "s", null]',
    '{"kind":"Event","items":{"not":"a list"},"dup":1,"dup":2}',
    '"just a string"',
    "42",
    "[]",
    "{}",
    '{"items":[1,"two",null,true]}',
    '{"kind":"EventList","items":[{"nested":{"items":[{"deep":1}]}}]}',
    (SAMPLES / "eventlist_built_from_regression_traces.json").read_text(),
]


@pytest.mark.parametrize("doc", DOCS)
def test_decode_equals_json_loads(doc):
    obj, _ = decode_payload(doc)
    assert obj == json.loads(doc)
    assert json.dumps(obj) == json.dumps(json.loads(doc))  # same key order too


@pytest.mark.parametrize("doc", ['{"kind":"EventList","items":[{"a":1},]}', '{"a":1} x', "[1,2", '{"a" 1}', ""])
def test_invalid_json_raises_like_json_loads(doc):
    with pytest.raises(json.JSONDecodeError):
        decode_payload(doc)


def test_items_known_to_fit_skip_the_size_measurement():
    small = {"kind": "Event", "auditID": "s", "stageTimestamp": "2024-05-01T10:11:12Z"}
    big = dict(small, auditID="b", pad="x" * 5000)
    text = json.dumps({"kind": "EventList", "items": [small, big]})
    obj, fits = decode_payload(text, max_event_bytes=1000)
    batch = split_payload(obj, raw_size=len(text), max_event_bytes=1000, fits=fits)
    assert [e.limit for e in batch.events] == [0, 1000]


@pytest.mark.parametrize("const", ["NaN", "Infinity", "-Infinity"])
def test_decoder_refuses_nan_and_infinity_as_json_does_not_allow_them(const):
    for text in (f'{{"kind": "EventList", "items": [{{"a": {const}}}]}}', f"[{const}]", const):
        with pytest.raises(ValueError):
            decode_payload(text)
