"""audit-ingest over the python3-http contract: auth, bad input, hand-off, retries, dry-run, health."""

from __future__ import annotations

import json
import socket

import pytest

from .conftest import FWD_TOKEN, REGRESSION, TOKEN, post

ANON = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1beta1",
    "metadata": {"creationTimestamp": "2018-10-25T13:58:49Z"},
    "level": "Request",
    "timestamp": "2018-10-25T13:58:49Z",
    "auditID": "841d3e6d-90d2-43df-8da4-684738bee3d5",
    "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces",
    "verb": "create",
    "user": {"username": "system:anonymous", "groups": ["system:masters", "system:authenticated"]},
    "sourceIPs": ["192.168.99.1"],
    "objectRef": {"resource": "namespaces", "name": "foo", "apiVersion": "v1"},
    "responseStatus": {"metadata": {}, "code": 201},
    "requestObject": {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "foo", "creationTimestamp": None},
        "spec": {},
        "status": {"phase": "Active"},
    },
    "requestReceivedTimestamp": "2018-10-25T13:58:49.730588Z",
    "stageTimestamp": "2018-10-25T13:58:49.736141Z",
    "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
}


def anon(i=0, **over):
    e = json.loads(json.dumps(ANON))
    e["auditID"] = f"anon-{i}"
    e.update(over)
    return e


def eventlist(*items, api="audit.k8s.io/v1"):
    its = []
    for it in items:
        it = dict(it)
        it.pop("kind", None)
        it.pop("apiVersion", None)  # the webhook backend sends bare items
        its.append(it)
    return {"kind": "EventList", "apiVersion": api, "metadata": {}, "items": its}


def health(mod, make_event, token=TOKEN):
    res = mod.handle(make_event("GET", headers={"Authorization": f"Bearer {token}"}), None)
    return res["statusCode"], json.loads(res["body"])


# ---- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_post_without_valid_bearer_token_is_401_and_nothing_forwarded(ingest, make_event, forwarder, token):
    mod = ingest()
    status, reply = post(mod, make_event, eventlist(anon()), token=token)
    assert status == 401 and "error" in reply
    assert TOKEN not in json.dumps(reply)
    assert forwarder.requests == []


def test_counters_tell_authenticated_batches_from_unauthenticated_and_wrong_token_ones(ingest, make_event, forwarder):
    # What bootstrap's delivery probe reads: a batch the API server posted without credentials (an http://
    # webhook URL, where client-go drops the token) must not look like a delivered one.
    mod = ingest()
    post(mod, make_event, eventlist(anon(1)), token=None)
    post(mod, make_event, eventlist(anon(2)), token="")
    post(mod, make_event, eventlist(anon(3)), headers={"Authorization": "Basic YTpi"}, token=None)
    post(mod, make_event, eventlist(anon(4)), token="wrong-token")
    c = health(mod, make_event)[1]["counters"]
    assert (c["unauthenticated"], c["invalid_token"], c["authenticated_batches"]) == (3, 1, 0)
    assert c["events"] == 0 and forwarder.requests == []
    post(mod, make_event, eventlist(anon(5)))
    post(mod, make_event, b"not json")  # authenticated, then refused: still an authenticated batch
    health(mod, make_event)  # GETs are not batches
    c = health(mod, make_event)[1]["counters"]
    assert (c["unauthenticated"], c["invalid_token"], c["authenticated_batches"]) == (3, 1, 2)
    assert c["events"] == 1


def test_get_requires_the_token_too(ingest, make_event):
    mod = ingest()
    res = mod.handle(make_event("GET"), None)
    assert res["statusCode"] == 401


def test_missing_token_secret_fails_closed_with_503(ingest, make_event, forwarder):
    mod = ingest(secrets={"audit-ingest-token": ""})
    status, reply = post(mod, make_event, eventlist(anon()))
    assert status == 503 and "audit-ingest-token" in reply["error"]
    assert forwarder.requests == []


def test_query_string_token_is_not_accepted(ingest, make_event, forwarder):
    mod = ingest()
    status, _ = post(mod, make_event, eventlist(anon()), token=None, query={"token": TOKEN})
    assert status == 401 and forwarder.requests == []


# ---- bad input: 4xx with a reason, nothing forwarded ---------------------------------------------
@pytest.mark.parametrize(
    "body,ctype,env,status,reason",
    [
        (b'{"kind":"EventList","items":[]}', "text/plain", {}, 415, "Content-Type"),
        (b'{"kind":"EventList","items":[]}', None, {}, 415, "Content-Type"),
        (b"x" * 200, "application/json", {"max_body_bytes": "100"}, 413, "larger than"),
        (b'{"kind": "EventList", "items": [', "application/json", {}, 400, "invalid JSON"),
        (b"", "application/json", {}, 400, "empty"),
        (b"\xff\xfe{}", "application/json", {}, 400, "UTF-8"),
        (b'{"kind": 0}', "application/json", {}, 400, "data not recognized as a k8s audit event"),
        (b'{"apiVersion": "v1", "kind": "Pod"}', "application/json", {}, 400, "data not recognized"),
        (b'"just a string"', "application/json", {}, 400, "data not recognized"),
        (b"[1, 2, 3]", "application/json", {}, 400, "data not recognized"),
        (b'{"kind":"Event"}\nnot json\n', "application/x-ndjson", {}, 400, "line 2"),
    ],
)
def test_bad_input_gets_4xx_with_reason_and_nothing_forwarded(
    ingest, make_event, forwarder, body, ctype, env, status, reason
):
    mod = ingest(env=env)
    got, reply = post(mod, make_event, body, content_type=ctype)
    assert got == status, reply
    assert reason in reply["error"]
    assert forwarder.requests == []


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(ingest, make_event, method):
    mod = ingest()
    res = mod.handle(make_event(method, headers={"Authorization": f"Bearer {TOKEN}"}), None)
    assert res["statusCode"] == 405


def test_non_audit_objects_in_an_array_are_skipped_and_counted(ingest, make_event, forwarder):
    mod = ingest()
    status, reply = post(mod, make_event, [{"kind": 0}, anon(1), {"hello": "world"}])
    assert status == 200 and reply["skipped"] == 2 and reply["events"] == 1 and reply["alert_count"] == 1
    _, h = health(mod, make_event)
    assert h["counters"]["skipped_not_audit"] == 2


def test_event_without_stage_timestamp_is_dropped_and_counted(ingest, make_event, forwarder):
    mod = ingest()
    bad = anon(2)
    del bad["stageTimestamp"]
    status, reply = post(mod, make_event, eventlist(bad, anon(3)))
    assert status == 200 and reply["dropped"] == 1 and reply["events"] == 1
    assert "can't read stageTimestamp" in reply["errors"]
    assert len(forwarder.alerts()) == 1


def test_event_larger_than_max_event_size_is_dropped_like_the_plugin(ingest, make_event, forwarder):
    mod = ingest(env={"max_event_bytes": "2000"})
    big = anon(80, requestObject={"metadata": {"name": "foo", "annotations": {"pad": "x" * 3000}}})
    status, reply = post(mod, make_event, eventlist(big, anon(81)))
    assert status == 200 and reply["events"] == 2 and reply["dropped"] == 1 and reply["forwarded"] == 1
    assert "event larger than maxEventSize" in reply["errors"]
    assert [a["rule"] for a in forwarder.alerts()] == ["Anonymous Request Allowed"]


@pytest.mark.parametrize("api", ["audit.k8s.io/v1", "audit.k8s.io/v1beta1", None])
def test_event_list_of_either_api_version_is_accepted(ingest, make_event, forwarder, api):
    mod = ingest()
    body = eventlist(anon(4), api=api)
    if api is None:
        del body["apiVersion"]
    status, reply = post(mod, make_event, body)
    assert status == 200 and reply["alert_count"] == 1


def test_single_event_array_and_ndjson_are_accepted(ingest, make_event, forwarder):
    mod = ingest()
    assert post(mod, make_event, anon(5))[1]["alert_count"] == 1
    assert post(mod, make_event, [anon(6), [eventlist(anon(7))]])[1]["alert_count"] == 2
    nd = "\n".join(json.dumps(anon(i)) for i in (8, 9)) + "\n"
    assert post(mod, make_event, nd, content_type="application/x-ndjson")[1]["alert_count"] == 2


def test_lone_surrogate_in_an_event_is_replaced_not_a_crash(ingest, make_event, forwarder):
    mod = ingest()
    body = json.dumps(eventlist(anon(90))).replace('"/api/v1/namespaces"', '"/api/v1/namespaces\\ud800"')
    status, reply = post(mod, make_event, body)
    assert status == 200 and reply["forwarded"] == 1
    (alert,) = forwarder.alerts()
    uri = alert["output_fields"]["ka.uri"]
    assert uri.startswith("/api/v1/namespaces") and set(uri[len("/api/v1/namespaces") :]) == {"\ufffd"}
    assert "uri=/api/v1/namespaces\ufffd" in alert["output"]


def test_an_event_that_breaks_evaluation_is_counted_not_retried_forever(ingest, make_event, forwarder, monkeypatch):
    mod = ingest()
    eng = mod.engine()
    real = eng.match
    monkeypatch.setattr(
        eng,
        "match",
        lambda e: (_ for _ in ()).throw(RuntimeError("boom")) if e.obj.get("auditID") == "anon-91" else real(e),
    )
    status, reply = post(mod, make_event, eventlist(anon(91), anon(92)))
    assert status == 200 and reply["forwarded"] == 1
    _, h = health(mod, make_event)
    assert h["counters"]["evaluation_errors"] == 1


# ---- hand-off -------------------------------------------------------------------------------------
def test_alerts_are_handed_to_alert_forwarder_as_one_json_array(ingest, make_event, forwarder):
    mod = ingest()
    status, reply = post(mod, make_event, eventlist(anon(10), anon(11)))
    assert status == 200 and reply["forwarded"] == 2 and reply["rules"] == ["Anonymous Request Allowed"]
    (req,) = forwarder.requests
    # Synchronously: the 2xx means the alerts are in alert-forwarder's spool, and no token crosses CE's queue.
    assert req["path"] == "/function/alert-forwarder"
    assert req["headers"]["Authorization"] == f"Bearer {FWD_TOKEN}"
    assert req["headers"]["Content-Type"] == "application/json"
    body = json.loads(req["body"])
    assert isinstance(body, list) and [a["rule"] for a in body] == ["Anonymous Request Allowed"] * 2
    a = body[0]
    assert sorted(a) == ["hostname", "output", "output_fields", "priority", "rule", "source", "tags", "time"]
    assert a["time"] == "2018-10-25T13:58:49.736141000Z" and a["source"] == "k8s_audit"
    assert a["output_fields"]["ka.user.name"] == "system:anonymous"
    assert a["output"].endswith(
        "Warning Request by anonymous user allowed (user=system:anonymous verb=create uri=/api/v1/namespaces reason=))"
    )


def test_large_hand_offs_are_split_under_forward_max_bytes(ingest, make_event, forwarder):
    mod = ingest(env={"forward_max_bytes": "2000"})
    status, reply = post(mod, make_event, eventlist(*[anon(100 + i) for i in range(7)]))
    assert status == 200 and reply["forwarded"] == 7
    assert len(forwarder.requests) > 1
    assert all(len(r["body"]) <= 2000 for r in forwarder.requests)
    assert all(r["path"] == "/function/alert-forwarder" for r in forwarder.requests)
    assert sorted(a["output_fields"]["evt.time"] for a in forwarder.alerts()) == [1540475929736141000] * 7


def test_hand_off_parts_hold_at_most_forward_max_alerts(ingest, make_event, forwarder):
    mod = ingest(env={"forward_max_alerts": "3"})
    status, reply = post(mod, make_event, eventlist(*[anon(120 + i) for i in range(7)]))
    assert status == 200 and reply["forwarded"] == 7
    assert [len(json.loads(r["body"])) for r in forwarder.requests] == [3, 3, 1]


def test_a_single_alert_over_forward_max_bytes_is_sent_alone(ingest, make_event, forwarder):
    mod = ingest(
        env={"forward_max_bytes": "1024", "rule_matching": "all"},
        extra_rules=EXTRA.replace("foo touched by %ka.user.name", "foo touched %jevt.obj"),
    )
    status, reply = post(mod, make_event, anon(110))
    assert status == 200 and "Namespace foo touched" in reply["rules"]
    (big,) = [r for r in forwarder.requests if len(r["body"]) > 1024]
    assert [a["rule"] for a in json.loads(big["body"])] == ["Namespace foo touched"]
    assert all(r["path"] == "/function/alert-forwarder" for r in forwarder.requests)
    assert len(forwarder.alerts()) == reply["forwarded"]


def test_the_async_hand_off_setting_is_refused_naming_why(ingest, make_event, forwarder):
    mod = ingest(env={"forward_async": "true"})
    status, reply = post(mod, make_event, anon(12))
    assert status == 503 and "forward_async=true is no longer supported" in reply["error"]
    assert "logs each call's headers" in reply["error"] and forwarder.requests == []


def test_no_alerts_means_no_hand_off(ingest, make_event, forwarder):
    mod = ingest()
    quiet = json.loads((REGRESSION / "events" / "create_nginx_pod_unprivileged.json").read_text())
    status, reply = post(mod, make_event, quiet)
    assert status == 200 and reply["alert_count"] == 0 and forwarder.requests == []


def test_failed_hand_off_is_5xx_so_the_apiserver_retries_then_delivers(ingest, make_event, forwarder):
    mod = ingest()
    forwarder.status = 500
    status, reply = post(mod, make_event, eventlist(anon(13)))
    assert status == 502 and "alert-forwarder" in reply["error"]
    forwarder.status = 202
    status, reply = post(mod, make_event, eventlist(anon(13)))  # the apiserver's retry
    assert status == 200 and reply["forwarded"] == 1 and reply["duplicates"] == 0
    assert len(forwarder.requests) == 2


def test_unreachable_gateway_is_502(ingest, make_event):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mod = ingest(env={"gateway_url": f"http://127.0.0.1:{port}", "forward_timeout": "2"})
    status, reply = post(mod, make_event, anon(14))
    assert status == 502 and "hand-off" in reply["error"]
    _, h = health(mod, make_event)
    assert h["counters"]["forward_failures"] == 1


def test_retried_batch_does_not_raise_duplicate_alerts(ingest, make_event, forwarder):
    mod = ingest()
    batch = eventlist(anon(20), anon(21))
    assert post(mod, make_event, batch)[1]["forwarded"] == 2
    status, reply = post(mod, make_event, batch)
    assert status == 200 and reply["duplicates"] == 2 and reply["forwarded"] == 0
    assert len(forwarder.requests) == 1
    # A new event in a partly retried batch is still delivered.
    status, reply = post(mod, make_event, eventlist(anon(21), anon(22)))
    assert reply["duplicates"] == 1 and reply["forwarded"] == 1


def test_same_audit_id_at_another_stage_is_not_a_duplicate(ingest, make_event, forwarder):
    mod = ingest()
    assert post(mod, make_event, anon(30))[1]["forwarded"] == 1
    started = anon(30, stage="ResponseStarted")
    assert post(mod, make_event, started)[1]["duplicates"] == 0


def test_duplicate_memory_is_bounded(ingest, make_event, forwarder):
    mod = ingest(env={"dedup_max_events": "2"})
    for i in (40, 41, 42):
        post(mod, make_event, anon(i))
    _, h = health(mod, make_event)
    assert h["dedup_remembered"] == 2
    assert post(mod, make_event, anon(40))[1]["forwarded"] == 1  # forgotten: oldest entry evicted
    assert post(mod, make_event, anon(42))[1]["duplicates"] == 1  # still remembered


def test_dry_run_returns_alerts_without_forwarding_or_remembering(ingest, make_event, forwarder):
    mod = ingest()
    status, reply = post(mod, make_event, eventlist(anon(50)), query={"dry_run": "1"})
    assert status == 200 and reply["dry_run"] is True and reply["alert_count"] == 1
    assert reply["alerts"][0]["rule"] == "Anonymous Request Allowed"
    assert forwarder.requests == []
    assert post(mod, make_event, eventlist(anon(50)))[1]["forwarded"] == 1


# ---- rules: local rule, extra rules secret -----------------------------------------------------
def test_local_rule_adds_the_namespace_to_the_configmap_alert(ingest, make_event, forwarder):
    mod = ingest()
    evt = (REGRESSION / "events" / "create_configmap_sensitive_values.json").read_text().splitlines()[0]
    status, reply = post(mod, make_event, evt, query={"dry_run": "1"})
    (alert,) = reply["alerts"]
    assert alert["rule"] == "Create/Modify Configmap With Private Credentials"
    assert alert["output_fields"]["ka.target.namespace"] == "default"
    assert alert["output"].endswith(" namespace=default")


EXTRA = """
- rule: Namespace foo touched
  desc: test rule from the extra-rules secret
  condition: ka.target.resource=namespaces and ka.target.name=foo
  output: foo touched by %ka.user.name
  priority: ERROR
  source: k8s_audit
  tags: [extra]
"""


def test_extra_rules_secret_is_loaded_last(ingest, make_event, forwarder):
    mod = ingest(extra_rules=EXTRA, env={"rule_matching": "all"})
    status, reply = post(mod, make_event, anon(60), query={"dry_run": "1"})
    # rule_matching all: every matching rule, in definition order; the secret's rule comes last.
    assert [a["rule"] for a in reply["alerts"]] == [
        "Anonymous Request Allowed",
        "Create Disallowed Namespace",
        "K8s Namespace Created",
        "Namespace foo touched",
    ]
    assert reply["alerts"][-1]["priority"] == "Error" and reply["alerts"][-1]["tags"] == ["extra"]
    _, h = health(mod, make_event)
    assert [f["name"] for f in h["ruleset"]["files"]][-1] == "secret:audit-ingest-extra-rules"
    assert h["ruleset"]["rules_loaded"] == 49


def test_empty_extra_rules_secret_means_none(ingest, make_event):
    mod = ingest(extra_rules="\n")
    _, h = health(mod, make_event)
    assert h["ruleset"]["rules_loaded"] == 48
    assert [f["name"] for f in h["ruleset"]["files"]] == [
        "bundled:k8s_audit_rules.yaml",
        "rules.d/50-edgeguard-local.yaml",
    ]


def test_broken_extra_rules_answer_503_naming_the_secret_and_item(ingest, make_event, forwarder):
    mod = ingest(
        extra_rules="- rule: Broken\n  desc: x\n  condition: ka.verb=\n  output: x\n  priority: INFO\n"
        "  source: k8s_audit\n"
    )
    status, reply = post(mod, make_event, anon(61))
    assert status == 503
    assert "secret:audit-ingest-extra-rules" in reply["error"] and "rule 'Broken'" in reply["error"]
    assert forwarder.requests == []
    status, h = health(mod, make_event)
    assert status == 503 and h["status"] == "error"


def test_rotating_the_extra_rules_secret_recompiles(ingest, make_event):
    mod = ingest(extra_rules="")
    assert health(mod, make_event)[1]["ruleset"]["rules_loaded"] == 48
    (mod.secrets_dir / "audit-ingest-extra-rules").write_text(EXTRA)
    assert health(mod, make_event)[1]["ruleset"]["rules_loaded"] == 49


def test_health_reports_ruleset_facts_and_counters(ingest, make_event, forwarder):
    mod = ingest()
    post(mod, make_event, eventlist(anon(70)))
    status, h = health(mod, make_event)
    assert status == 200 and h["status"] == "ok"
    rs = h["ruleset"]
    assert rs["rules_loaded"] == 48 and rs["rules_enabled"] == 48 and rs["macros"] == 45 and rs["lists"] == 18
    assert rs["required_engine_version"] == "0.15.0"
    names = {a["name"] for r in rs["required_plugin_versions"] for a in r["alternatives"]}
    assert {"k8saudit", "json"} <= names
    assert all(len(f["sha256"]) == 64 for f in rs["files"])
    c = h["counters"]
    assert c["events"] == 1 and c["alerts"] == 1 and c["alerts_forwarded"] == 1 and c["requests"] == 2
