"""edgeguard.jsonsafe and http.parse_json: one rule for every decoded body, a 400 that names the JSON path."""

from __future__ import annotations

import json

import pytest

from edgeguard import http, jsonsafe
from tests.conftest import make_event


def parse(body: bytes | str, **kw):
    return http.parse_json(make_event("POST", "/", body, {"Content-Type": "application/json"}), max_bytes=1 << 20, **kw)


def refused(body, **kw) -> http.HTTPError:
    with pytest.raises(http.HTTPError) as info:
        parse(body, **kw)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize(
    "body, path",
    [
        (r'{"rule":"x\ud800"}', "$.rule"),
        (r'{"output_fields":{"k8s.ns.name":"a\udc00b"}}', '$.output_fields["k8s.ns.name"]'),
        (r'{"tags":["ok","\ud800"]}', "$.tags[1]"),
        (r'[{"a":1},{"b":"\udfff"}]', "$[1].b"),
    ],
)
def test_a_lone_surrogate_anywhere_is_a_400_naming_its_path(body, path):
    err = refused(body)
    assert err.extra["path"] == path and "surrogate" in err.reason


def test_a_lone_surrogate_in_a_key_is_refused_and_the_path_is_printable():
    err = refused(r'{"\ud800":1}')
    assert "surrogate" in err.reason and "key" in err.reason
    json.dumps(err.extra).encode("utf-8")  # the answer itself must be encodable
    err.reason.encode("utf-8")


def test_a_surrogate_pair_is_a_real_character_and_passes():
    assert parse(r'{"e":"\ud83d\ude00"}') == {"e": "\U0001f600"}


@pytest.mark.parametrize(
    "body, path",
    [
        ('{"x":1e400}', "$.x"),
        ('{"x":-1e400}', "$.x"),
        ('{"items":[{"a":1e400}]}', "$.items[0].a"),
        ('{"n":123456789012345678901234567890}', "$.n"),
        ('{"n":-9223372036854775809}', "$.n"),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_refused(body, path):
    err = refused(body)
    assert err.extra["path"] == path


def test_numbers_falco_sends_pass():
    doc = parse('{"evt.time":1714558272123456789,"max":18446744073709551615,"min":-9223372036854775808,"f":1.5e300}')
    assert doc["evt.time"] == 1714558272123456789 and doc["max"] == 2**64 - 1


def test_nesting_deeper_than_the_limit_is_refused_and_shallower_passes():
    deep = '{"a":' * 40 + "1" + "}" * 40
    err = refused(deep)
    assert "deeper than 32" in err.reason
    assert parse('{"a":' * 31 + "1" + "}" * 31)
    assert refused('{"a":' * 11 + "1" + "}" * 11, max_depth=10)


def test_infinite_number_40_levels_deep_is_a_400_not_a_crash():
    refused('{"output_fields":' + '{"a":' * 40 + "1e400" + "}" * 41)


def test_ndjson_lines_are_checked_with_their_index():
    event = make_event("POST", "/", b'{"a":1}\n{"b":"\\ud800"}\n', {"Content-Type": "application/x-ndjson"})
    with pytest.raises(http.HTTPError) as info:
        http.parse_json(event, max_bytes=1024, allow_ndjson=True)
    assert info.value.status == 400 and info.value.extra["path"] == "$[1].b"


def test_prefilter_sees_what_the_walk_would_find_and_skips_clean_text():
    assert jsonsafe.prefilter(r'{"a":"\ud800"}') == (True, False)
    assert jsonsafe.prefilter('{"a":1e400}') == (False, True)
    assert jsonsafe.prefilter('{"a":"plain","b":12,"c":"\\u00e9"}') == (False, False)
    assert jsonsafe.prefilter(b'{"n":123456789012345678901}') == (False, True)


def test_scalar_fields_names_the_field_holding_a_container():
    with pytest.raises(jsonsafe.UnsafeJSON) as info:
        jsonsafe.scalar_fields({"container.id": [[1]]}, ["container.id"], root="$.output_fields")
    assert info.value.where == '$.output_fields["container.id"]' and "array" in info.value.what
    jsonsafe.scalar_fields({"container.id": "abc", "n": 1, "x": None}, ["container.id", "n", "x", "absent"])
