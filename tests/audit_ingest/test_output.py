"""Rule outputs and the JSON alert, exactly as Falco's json_output/http_output write them."""

from __future__ import annotations

import time

import pytest

from edgeguard.falco import loader
from edgeguard.falco.compiler import CompileError
from edgeguard.falco.engine import DEFAULT_RULES, Engine
from edgeguard.falco.output import OutputFormat
from edgeguard.falco.source import split_payload

from .conftest import event

EVT = {
    "kind": "Event",
    "auditID": "x",
    "stage": "ResponseComplete",
    "verb": "create",
    "requestURI": "/api/v1/pods?command=ls",
    "user": {"username": "alice", "groups": ["a", "b"]},
    "objectRef": {"resource": "pods", "namespace": "default"},
    "requestObject": {"spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}},
}


@pytest.mark.parametrize(
    "fmt,expected",
    [
        ("user=%ka.user.name", "user=alice"),
        ("groups=%ka.user.groups", "groups=(a,b)"),
        ("imp=%ka.impuser.name", "imp=<NA>"),
        ("cmd=%ka.uri.param[command] x", "cmd=ls x"),
        ("img=%ka.req.pod.containers.image[0]", "img=(nginx:1.25)"),
        ("%ka.target.namespace/%ka.target.resource", "default/pods"),
        ("[%10ka.verb]", "[create    ]"),  # %NNN pads/truncates to exactly NNN
        ("[%3ka.verb]", "[cre]"),
        ("%ka.verbose", "createose"),  # the longest known field name wins
        ("%toupper(ka.user.name)!", "ALICE!"),
        ("stage=%jevt.value[/stage])", "stage=ResponseComplete)"),
        ("img=%jevt.value[/requestObject/spec/containers/0/image]", "img=nginx:1.25"),
        # a pointer step of Unicode digits ('¹'.isdigit() is True, int('¹') raises) indexes no array
        ("img=%jevt.value[/requestObject/spec/containers/¹/image]", "img=<NA>"),
        ("100% sure? no: %ka.verb", None),  # '%' must start a field: invalid token
    ],
)
def test_output_rendering(fmt, expected):
    if expected is None:
        with pytest.raises(CompileError):
            OutputFormat(fmt)
        return
    assert OutputFormat(fmt).render(event(EVT)) == expected


@pytest.mark.parametrize("fmt", ["ends with %", "%nosuch.field", "%ka.uri.param", "%ka.verb[3]"])
def test_invalid_formats_are_errors(fmt):
    with pytest.raises(CompileError):
        OutputFormat(fmt)


def test_quirk_plugin_field_token_must_end_at_a_space_before_a_bracket_token():
    # The plugin's '[' scan looks at the rest of the word: "%ka.user.name,%jevt.value[/x]" fails in Falco.
    with pytest.raises(CompileError) as exc:
        OutputFormat("%ka.user.name,%jevt.value[/stage]")
    assert "invalid formatting token" in str(exc.value)
    assert OutputFormat("%ka.user.name, %jevt.value[/stage]").render(event(EVT)) == "alice, ResponseComplete"


def test_output_fields_are_typed_and_keyed_by_token_text():
    f = OutputFormat(
        "%ka.user.name %ka.user.groups %ka.impuser.name %tolower(ka.verb) %jevt.value[/stage] %ka.uri.param[command]"
    )
    assert f.fields(event(EVT)) == {
        "ka.user.name": "alice",
        "ka.user.groups": ["a", "b"],
        "ka.impuser.name": None,
        "ka.verb": "create",
        "jevt.value[/stage]": "ResponseComplete",
        "ka.uri.param[command]": "ls",
    }


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_json_alert_matches_falco_byte_for_byte(utc, monkeypatch):
    # The reference's example (rules-language §5.3) with the v0.18.0 rule's extra init/ephemeral image fields.
    monkeypatch.setenv("FALCO_HOSTNAME", "falco-abc")
    obj = {
        "kind": "Event",
        "auditID": "a",
        "stage": "ResponseComplete",
        "verb": "create",
        "user": {"username": "alice"},
        "objectRef": {"resource": "pods", "namespace": "default"},
        "requestObject": {
            "spec": {
                "containers": [
                    {"name": "a", "image": "nginx:1.25", "securityContext": {"privileged": True}},
                    {"name": "b", "image": "busybox"},
                ]
            }
        },
        "responseObject": {"metadata": {"name": "nginx"}},
        "stageTimestamp": "2024-05-01T10:11:12.123456789Z",
    }
    engine = Engine(loader.load([DEFAULT_RULES]), rule_matching="all")  # alice also trips "Disallowed K8s User"
    (evt,) = split_payload(obj).events
    (alert,) = [a for a in engine.evaluate(evt) if a.rule == "Create Privileged Pod"]
    assert alert.to_json() == (
        '{"hostname":"falco-abc","output":"10:11:12.123456789: Warning Pod started with privileged container '
        "(user=alice pod=nginx resource=pods ns=default images=(nginx:1.25,busybox) init_images=<NA> "
        'ephemeral_images=<NA>)","output_fields":{"evt.time":1714558272123456789,'
        '"ka.req.pod.containers.image":["nginx:1.25","busybox"],"ka.req.pod.ephemeralContainers.image":null,'
        '"ka.req.pod.initContainers.image":null,"ka.resp.name":"nginx","ka.target.namespace":"default",'
        '"ka.target.resource":"pods","ka.user.name":"alice"},"priority":"Warning","rule":"Create Privileged Pod",'
        '"source":"k8s_audit","tags":["k8s"],"time":"2024-05-01T10:11:12.123456789Z"}'
    )


def test_stage_timestamp_with_offset_and_short_fraction(utc):
    from edgeguard.falco.source import stage_timestamp_ns

    assert stage_timestamp_ns("2024-05-01T12:11:12.5+02:00") == 1714558272_500000000
    for bad in ("2024-05-01 10:11:12Z", "yesterday", None, 12):
        with pytest.raises(ValueError):
            stage_timestamp_ns(bad)


def test_alert_time_texts_match_the_alert_helpers(utc):
    from edgeguard.falco.alert import format_time
    from edgeguard.falco.engine import _times

    for ns in (0, 1714558272123456789, 1714558272000000001, 1714558272999999999):
        assert _times(ns) == (
            time.strftime("%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}",
            format_time(ns),
        )
