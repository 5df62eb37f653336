"""Issue 17 for alert-forwarder: the exact inputs that got 500s, each a 400 with nothing changed, /metrics healthy.

Every case asserts the three things the issue asks for: a 4xx JSON answer with a reason, no state change (no alert
counted, nothing spooled, no dedup window opened), and `GET /metrics` still answering Prometheus text afterwards.
"""

from __future__ import annotations

import json

import pytest


def state(mod):
    f = mod.FORWARDER
    return (
        f.metrics.total("falco_events_total"),
        f.spool.depth(),
        f.dedup.open_windows(),
        f.metrics.total("routed_total"),
        len(getattr(f, "history", None) or ()),
    )


def metrics_ok(mod, h):
    resp = h.call(mod, "GET", "/metrics")
    assert resp["statusCode"] == 200, resp
    text = resp["body"]
    text.encode("utf-8")  # every label value encodable
    assert "# TYPE edgeguard_alert_forwarder_falco_events_total counter" in text
    return text


def raw(text: str) -> bytes:
    """A JSON body as bytes, keeping escapes such as \\ud800 exactly as the issue sent them."""
    return text.encode("utf-8")


def warning_alert(**over) -> dict:
    al = {
        "hostname": "edge-node-1",
        "output": "10:11:12.123456789: Warning x",
        "output_fields": {"k8s.pod.name": "p"},
        "priority": "Warning",
        "rule": "Terminal shell in container",
        "source": "syscall",
        "tags": ["shell"],
        "time": "2024-05-01T10:11:12.123456789Z",
    }
    al.update(over)
    return al


def with_raw(al: dict, key_path: str, raw_json: str) -> str:
    """``al`` as JSON text with the value at ``key_path`` (``a.b``) replaced by literal JSON text."""
    marker = "__RAW__"
    doc = json.loads(json.dumps(al))
    parts = key_path.split(".", 1) if key_path.startswith("output_fields.") else [key_path]
    if len(parts) == 2:
        doc[parts[0]][parts[1]] = marker
    else:
        doc[parts[0]] = marker
    return json.dumps(doc).replace(json.dumps(marker), raw_json)


SURROGATE = '"x\\ud800"'

# issue 17 §2 and §3: (what, endpoint, body text)
CASES = [
    ("surrogate in rule (§2)", "/", with_raw(warning_alert(), "rule", SURROGATE)),
    ("surrogate in output", "/", with_raw(warning_alert(), "output", SURROGATE)),
    ("surrogate in hostname", "/", with_raw(warning_alert(), "hostname", SURROGATE)),
    ("surrogate in tags", "/", with_raw(warning_alert(), "tags", f"[{SURROGATE}]")),
    ("surrogate in an output_fields value", "/", with_raw(warning_alert(), "output_fields.k8s.pod.name", SURROGATE)),
    ("surrogate in an extra key", "/", with_raw(warning_alert(), "x", SURROGATE)),
    ("surrogate as an extra key name", "/", json.dumps(warning_alert())[:-1] + ', "\\ud800": 1}'),
    (
        "output_fields container.id [[1]] at Warning",
        "/",
        json.dumps(warning_alert(output_fields={"container.id": [[1]]})),
    ),
    ("output_fields value an object", "/", json.dumps(warning_alert(output_fields={"k8s.pod.name": {"a": 1}}))),
    ("extra key 1e400", "/", with_raw(warning_alert(), "x", "1e400")),
    (
        "1e400 nested 40 levels deep in output_fields",
        "/",
        with_raw(warning_alert(), "output_fields.deep", "[" * 40 + "1e400" + "]" * 40),
    ),
    ("/test output_fields with a surrogate", "/test", '{"output_fields": {"a": "x\\ud800"}}'),
    ("/test items with 1e400", "/test", '{"items": [{"a": 1e400}]}'),
]


@pytest.mark.parametrize("what, path, body", CASES, ids=[c[0] for c in CASES])
def test_issue_17_input_gets_400_with_nothing_changed_and_metrics_healthy(load_handler, h, what, path, body):
    mod = load_handler()
    before = state(mod)
    resp = h.call(mod, "POST", path, raw(body))
    assert resp["statusCode"] == 400, (what, resp)
    out = json.loads(resp["body"])
    assert out["status"] == 400 and out["error"], out
    assert state(mod) == before, what
    metrics_ok(mod, h)


def test_container_id_list_field_at_notice_is_refused_too(load_handler, h):
    """The same alert at Notice used to get 202 (it skipped the dedup route): the schema rule does not depend on
    which route an alert would take."""
    mod = load_handler()
    resp = h.call(mod, "POST", "/", warning_alert(priority="Notice", output_fields={"container.id": [[1]]}))
    assert resp["statusCode"] == 400
    assert "output_fields" in json.loads(resp["body"])["path"]


def test_a_failed_batch_opens_no_dedup_window(load_handler, h):
    """Issue 17 §4: [valid Warning A, alert with a surrogate in output] is refused whole; A alone then passes."""
    mod = load_handler()
    good = warning_alert()
    batch = "[" + json.dumps(good) + "," + with_raw(warning_alert(rule="other"), "output", SURROGATE) + "]"
    resp = h.call(mod, "POST", "/", raw(batch))
    assert resp["statusCode"] == 400
    assert mod.FORWARDER.dedup.open_windows() == 0
    resp = h.call(mod, "POST", "/", good)
    assert resp["statusCode"] == 202
    [decision] = json.loads(resp["body"])["alerts"]
    assert decision["suppressed_by"] == [] and decision["destinations"] == ["console"]


def test_a_batch_whose_later_alert_is_schema_invalid_opens_no_dedup_window(load_handler, h):
    mod = load_handler()
    good = warning_alert()
    bad = warning_alert(rule="other", output_fields={"container.id": [[1]]})
    resp = h.call(mod, "POST", "/", [good, bad])
    assert resp["statusCode"] == 400 and json.loads(resp["body"])["index"] == 1
    assert mod.FORWARDER.dedup.open_windows() == 0 and mod.FORWARDER.metrics.total("falco_events_total") == 0
    assert json.loads(h.call(mod, "POST", "/", good)["body"])["alerts"][0]["suppressed_by"] == []


def test_list_fields_as_falco_renders_them_stay_accepted(load_handler, h):
    """Falco's typed output_fields carry list fields as flat arrays (ka.req.pod.containers.image); only deeper
    shapes are refused."""
    mod = load_handler()
    al = warning_alert(
        output_fields={"ka.req.pod.containers.image": ["nginx", "busybox"], "fd.sport": 22, "container.id": None}
    )
    resp = h.call(mod, "POST", "/", al)
    assert resp["statusCode"] == 202, resp
    assert json.loads(resp["body"])["alerts"][0]["destinations"] == ["console"]
