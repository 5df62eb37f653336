"""Falco's JSON alert format and priority order, as Falco 0.41 writes them."""

import json

import pytest

from edgeguard.falco import alert

# Falco 0.41.3's json_output for this event (falcosecurity/falco userspace/engine/formats.cpp, format_event).
REFERENCE = (
    '{"hostname":"falco-abc","output":"10:11:12.123456789: Warning Pod started with privileged container '
    '(user=alice pod=nginx resource=pods ns=default images=(nginx:1.25,busybox))","output_fields":'
    '{"evt.time":1714558272123456789,"ka.req.pod.containers.image":["nginx:1.25","busybox"],'
    '"ka.resp.name":"nginx","ka.target.namespace":"default","ka.target.resource":"pods",'
    '"ka.user.name":"alice"},"priority":"Warning","rule":"Create Privileged Pod","source":"k8s_audit",'
    '"tags":["k8s"],"time":"2024-05-01T10:11:12.123456789Z"}'
)


def test_serialisation_matches_falco_byte_for_byte():
    ns = alert.parse_time("2024-05-01T10:11:12.123456789Z")
    a = alert.make_alert(
        rule="Create Privileged Pod",
        priority="warning",
        source="k8s_audit",
        time_ns=ns,
        hostname="falco-abc",
        tags=["k8s"],
        output="10:11:12.123456789: Warning Pod started with privileged container (user=alice pod=nginx "
        "resource=pods ns=default images=(nginx:1.25,busybox))",
        output_fields={
            "ka.user.name": "alice",
            "ka.resp.name": "nginx",
            "ka.target.resource": "pods",
            "ka.target.namespace": "default",
            "evt.time": 1714558272123456789,
            "ka.req.pod.containers.image": ["nginx:1.25", "busybox"],
        },
    )
    assert a.to_json() == REFERENCE
    assert alert.parse_alert(json.loads(REFERENCE)).to_json() == REFERENCE


def test_time_is_utc_with_nanoseconds_and_z():
    assert alert.format_time(1714558272123456789) == "2024-05-01T10:11:12.123456789Z"
    assert alert.format_time(0) == "1970-01-01T00:00:00.000000000Z"
    assert alert.parse_time("2024-05-01T12:11:12.5+02:00") == 1714558272500000000


def test_priority_order_names_and_info_alias():
    assert alert.PRIORITIES[0] == "Emergency" and alert.PRIORITIES[-1] == "Debug"
    assert alert.priority_name("info") == "Informational" and alert.priority_name("WARNING") == "Warning"
    assert alert.at_least("Critical", "Warning") and not alert.at_least("Notice", "Warning")
    for bad in ("warn", "err", "crit", "", None):
        with pytest.raises(ValueError):
            alert.priority_number(bad)


def test_hostname_follows_falcos_environment_order(monkeypatch):
    monkeypatch.setenv("FALCO_GRPC_HOSTNAME", "grpc-host")
    assert alert.default_hostname() == "grpc-host"
    monkeypatch.setenv("FALCO_HOSTNAME", "falco-host")
    assert alert.default_hostname() == "falco-host"


@pytest.mark.parametrize(
    "obj,words",
    [
        ([], "JSON object"),
        ({"priority": "Warning", "output": "o", "time": "2024-05-01T10:11:12Z"}, "'rule'"),
        ({"rule": "r", "priority": "warn", "output": "o", "time": "2024-05-01T10:11:12Z"}, "unknown priority"),
        ({"rule": "r", "priority": "Warning", "output": "o", "time": "yesterday"}, "RFC 3339"),
        (
            {"rule": "r", "priority": "Warning", "output": 5, "time": "2024-05-01T10:11:12Z"},
            "'output' must be a string",
        ),
        ({"rule": "r", "priority": "Warning", "output": "o", "time": "2024-05-01T10:11:12Z", "tags": "k8s"}, "'tags'"),
        (
            {"rule": "r", "priority": "Warning", "output": "o", "time": "2024-05-01T10:11:12Z", "output_fields": []},
            "'output_fields'",
        ),
    ],
)
def test_parse_alert_names_the_problem(obj, words):
    with pytest.raises(ValueError, match=words):
        alert.parse_alert(obj)


def test_non_finite_numbers_are_refused_on_the_way_in_and_out():
    good = {"rule": "r", "priority": "Warning", "output": "o", "time": "2024-05-01T10:11:12Z"}
    with pytest.raises(ValueError, match="NaN or Infinity"):
        alert.parse_alert({**good, "output_fields": {"n": {"deep": [float("nan")]}}})
    with pytest.raises(ValueError):
        alert.dumps({"n": float("inf")})
