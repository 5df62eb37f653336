"""The function's HTTP contract: auth, input forms, bad input, endpoints, start-up validation."""

from __future__ import annotations

import base64
import json
import re

import pytest

from edgeguard.falco.alert import dumps


def body_of(resp):
    return json.loads(resp["body"])


def post(mod, h, body, headers=None, query=None, path="/"):
    return h.call(mod, "POST", path, body, headers=headers, query=query)


def count(mod, name, **labels):
    return mod.FORWARDER.metrics.total(name, **labels)


# ----------------------------------------------------------------------------- auth


def test_falco_http_output_post_with_the_token_in_the_url_user_part_is_accepted_and_routed(load_handler, h):
    mod = load_handler()
    al = h.falco_alert(priority="Warning")
    # As http_output sends it with url http://falco:<token>@.../function/alert-forwarder: the compact JSON, no
    # trailing newline, and libcurl's Basic header made from the URL's user part.
    creds = base64.b64encode(f"falco:{h.TOKEN}".encode()).decode()
    resp = post(
        mod,
        h,
        dumps(al).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Basic {creds}",
            "User-Agent": "falcosecurity/falco",
        },
    )
    assert resp["statusCode"] == 202
    out = body_of(resp)
    assert out["accepted"] == 1
    assert out["alerts"][0]["destinations"] == ["console"]  # the action-centre route matched but is not configured
    assert out["alerts"][0]["routes"] == ["action-centre", "console-warning"]
    h.wait_until(lambda: count(mod, "outputs_total", destination="console", status="ok") == 1)


@pytest.mark.parametrize(
    "headers, query, status",
    [
        ({"Content-Type": "application/json"}, None, 401),
        ({"Content-Type": "application/json", "Authorization": "Bearer wrong-token"}, None, 401),
        ({"Content-Type": "application/json"}, {"token": "wrong-token"}, 401),
        ({"Content-Type": "application/json"}, {"token": "af-test-token-0123456789"}, 401),  # the right one, logged
        ({"Content-Type": "application/json", "Authorization": "Basic YWRtaW46YWRtaW4="}, None, 401),
    ],
)
def test_unauthenticated_posts_are_refused_and_nothing_is_forwarded(load_handler, h, headers, query, status):
    mod = load_handler()
    resp = post(mod, h, h.falco_alert(priority="Critical"), headers=headers, query=query)
    assert resp["statusCode"] == status
    assert count(mod, "falco_events_total") == 0 and mod.FORWARDER.spool.depth() == 0
    assert count(mod, "rejected_total", reason="unauthorized") == 1


def test_basic_auth_is_only_for_the_falco_ingest_endpoint(load_handler, h):
    mod = load_handler()
    creds = {"Authorization": "Basic " + base64.b64encode(f"falco:{h.TOKEN}".encode()).decode()}
    for method, path in (("GET", "/metrics"), ("GET", "/"), ("POST", "/flush"), ("POST", "/test")):
        resp = h.call(mod, method, path, headers=creds)
        assert resp["statusCode"] == 401, path
        resp = h.call(mod, method, path, headers={}, query={"token": h.TOKEN})
        assert resp["statusCode"] == 401, path


def test_missing_token_secret_fails_closed(load_handler, h):
    mod = load_handler()
    (mod.secrets_dir / "alert-forwarder-token").unlink()
    resp = post(mod, h, h.falco_alert())
    assert resp["statusCode"] == 503 and "alert-forwarder-token" in body_of(resp)["error"]


def test_tokens_and_destination_secrets_never_reach_logs_or_responses(load_handler, h, capfd):
    secrets = {
        "alert-forwarder-destinations": "action-centre:\n  url: http://127.0.0.1:9/hook?apikey=url-secret-xyz123\n"
        "  insecure_http: true\n"
        "  hmac_key: hmac-secret-abc987\n  token: bearer-secret-def456\n"
    }
    mod = load_handler(secrets=secrets)
    falco = "Basic " + base64.b64encode(f"falco:{h.TOKEN}".encode()).decode()
    guess = "Basic " + base64.b64encode(f"falco:guess-{h.TOKEN}".encode()).decode()
    post(
        mod, h, h.falco_alert(priority="Critical"), headers={"Content-Type": "application/json", "Authorization": falco}
    )
    post(mod, h, h.falco_alert(), headers={"Content-Type": "application/json", "Authorization": guess})
    status = h.call(mod, "GET", "/")
    metrics = h.call(mod, "GET", "/metrics")
    h.wait_until(lambda: count(mod, "spooled_total", destination="action-centre") >= 1, what="delivery attempt")
    captured = capfd.readouterr()
    text = captured.out + captured.err + status["body"] + metrics["body"]
    for secret in (h.TOKEN, "url-secret-xyz123", "hmac-secret-abc987", "bearer-secret-def456"):
        assert secret not in text
    st = body_of(status)
    assert st["destinations"]["action-centre"]["enabled"] is True
    assert st["destinations"]["action-centre"]["signed"] is True


# ----------------------------------------------------------------------------- input forms


def test_json_array_batch_from_audit_ingest(load_handler, h):
    mod = load_handler()
    batch = [
        h.falco_alert(priority=p, **{"k8s.pod.name": f"pod-{i}"}) for i, p in enumerate(["Warning", "Error", "Notice"])
    ]
    resp = post(mod, h, batch)
    assert resp["statusCode"] == 202 and body_of(resp)["accepted"] == 3
    assert [a["destinations"] for a in body_of(resp)["alerts"]] == [["console"], ["console"], []]
    assert count(mod, "falco_events_total") == 3


def test_ndjson_batch(load_handler, h):
    mod = load_handler()
    lines = "\n".join(dumps(h.falco_alert(priority="Error", **{"k8s.pod.name": f"p{i}"})) for i in range(4)) + "\n"
    resp = post(mod, h, lines.encode(), headers=h.auth_headers({"Content-Type": "application/x-ndjson"}))
    assert resp["statusCode"] == 202 and body_of(resp)["accepted"] == 4


def test_priority_is_case_insensitive_and_normalised(load_handler, h):
    mod = load_handler()
    resp = post(mod, h, h.falco_alert(priority="warning"))
    assert body_of(resp)["alerts"][0]["priority"] == "Warning"


# ----------------------------------------------------------------------------- bad input


def _alert_without(h, key):
    a = h.falco_alert()
    del a[key]
    return a


@pytest.mark.parametrize(
    "make_body, content_type, status, reason",
    [
        (lambda h: b'{"rule": "x", ', "application/json", 400, "invalid JSON"),
        (lambda h: b"", "application/json", 400, "empty"),
        (
            lambda h: json.dumps(_alert_without(h, "rule")).encode(),
            "application/json",
            400,
            "missing the required key 'rule'",
        ),
        (lambda h: json.dumps(_alert_without(h, "time")).encode(), "application/json", 400, "'time'"),
        (
            lambda h: json.dumps({**h.falco_alert(), "priority": "warn"}).encode(),
            "application/json",
            400,
            "unknown priority 'warn'",
        ),
        (
            lambda h: json.dumps({**h.falco_alert(), "priority": 4}).encode(),
            "application/json",
            400,
            "'priority' must be",
        ),
        (lambda h: json.dumps({**h.falco_alert(), "time": "yesterday"}).encode(), "application/json", 400, "RFC 3339"),
        (lambda h: json.dumps({**h.falco_alert(), "tags": "shell"}).encode(), "application/json", 400, "tags"),
        (
            lambda h: json.dumps({**h.falco_alert(), "output_fields": [1]}).encode(),
            "application/json",
            400,
            "output_fields",
        ),
        (lambda h: json.dumps([]).encode(), "application/json", 400, "empty batch"),
        (lambda h: json.dumps(["x"]).encode(), "application/json", 400, "alert[0]"),
        (lambda h: json.dumps(h.falco_alert()).encode(), "text/plain", 415, "Content-Type"),
        (lambda h: json.dumps({**h.falco_alert(), "output": "x" * 5000}).encode(), "application/json", 413, "limit"),
    ],
)
def test_bad_input_gets_a_4xx_reason_and_nothing_is_forwarded(load_handler, h, make_body, content_type, status, reason):
    mod = load_handler(env={"max_body_bytes": "4096"})
    resp = post(mod, h, make_body(h), headers=h.auth_headers({"Content-Type": content_type}))
    assert resp["statusCode"] == status
    assert reason in body_of(resp)["error"]
    assert count(mod, "falco_events_total") == 0 and mod.FORWARDER.spool.depth() == 0
    assert "Traceback" not in resp["body"]


def test_one_bad_alert_in_a_batch_rejects_the_whole_batch(load_handler, h, receiver):
    r = receiver()
    mod = load_handler(
        secrets={"alert-forwarder-destinations": f"action-centre: {{url: '{r.url}', insecure_http: true}}\n"}
    )
    batch = [h.falco_alert(priority="Critical"), {**h.falco_alert(), "priority": "Severe"}]
    resp = post(mod, h, batch)
    assert resp["statusCode"] == 400
    out = body_of(resp)
    assert out["index"] == 1 and out["error"].startswith("alert[1]: unknown priority 'Severe'")
    assert "nothing was forwarded" in out["error"]
    import time

    time.sleep(0.3)
    assert r.requests == [] and mod.FORWARDER.spool.depth() == 0


def test_unknown_path_and_method(load_handler, h):
    mod = load_handler()
    assert h.call(mod, "GET", "/nope")["statusCode"] == 404
    resp = h.call(mod, "DELETE", "/metrics")
    assert resp["statusCode"] == 405


# ----------------------------------------------------------------------------- endpoints


def test_get_root_reports_health_and_config_without_secrets(load_handler, h):
    mod = load_handler()
    resp = h.call(mod, "GET", "/")
    assert resp["statusCode"] == 200
    st = body_of(resp)
    assert st["status"] == "ok" and st["routes_source"] == "routes.yaml" and st["ack_mode"] == "durable"
    assert [r["name"] for r in st["routes"]] == [
        "scrub-configmap-credentials",
        "action-centre",
        "console-warning",
        "default",
    ]
    ac = st["destinations"]["action-centre"]
    assert ac["enabled"] is False and "alert-forwarder-destinations" in ac["disabled_reason"]
    assert st["spool"]["depth"] == 0


def test_metrics_endpoint_is_prometheus_text(load_handler, h):
    mod = load_handler()
    post(mod, h, h.falco_alert(priority="Error"))
    post(mod, h, b"{", headers=h.auth_headers())
    h.wait_until(lambda: count(mod, "outputs_total", destination="console", status="ok") == 1)
    resp = h.call(mod, "GET", "/metrics")
    assert resp["statusCode"] == 200 and resp["headers"]["Content-Type"].startswith("text/plain; version=0.0.4")
    text = resp["body"]
    assert (
        'edgeguard_alert_forwarder_falco_events_total{priority="Error",rule="Terminal shell in container",'
        'source="syscall",hostname="edge-node-1"} 1'
    ) in text
    assert 'edgeguard_alert_forwarder_outputs_total{destination="console",status="ok"} 1' in text
    # falcosidekick's names where the meaning is the same (inputs: one per request to the input endpoint)
    assert 'edgeguard_alert_forwarder_inputs_total{source="requests",status="accepted"} 1' in text
    assert 'edgeguard_alert_forwarder_inputs_total{source="requests",status="rejected"} 1' in text
    assert 'edgeguard_alert_forwarder_rejected_total{reason="invalid"} 1' in text
    assert 'edgeguard_alert_forwarder_dropped_total{destination="action-centre",reason="disabled"} 1' in text
    assert "# TYPE edgeguard_alert_forwarder_spool_depth gauge" in text
    assert "edgeguard_alert_forwarder_spool_depth 0" in text


def test_metrics_accept_the_read_only_metrics_token_and_nothing_else_does(load_handler, h):
    """Prometheus holds edgeguard-metrics-token, which reads every function's /metrics and can do nothing else:
    with it, / , /flush, /test and the alert input all answer 401."""
    mod = load_handler(secrets={"edgeguard-metrics-token": "metrics-reader-0123456789\n"})
    reader = {"Authorization": "Bearer metrics-reader-0123456789", "Content-Type": "application/json"}
    resp = h.call(mod, "GET", "/metrics", headers=reader)
    assert resp["statusCode"] == 200 and "edgeguard_alert_forwarder_falco_events_total" in resp["body"]
    assert h.call(mod, "GET", "/metrics")["statusCode"] == 200  # the function's own token still works
    for method, path in (("GET", "/"), ("POST", "/flush"), ("POST", "/test"), ("POST", "/")):
        body = h.falco_alert() if path == "/" and method == "POST" else b""
        assert h.call(mod, method, path, body, headers=reader)["statusCode"] == 401, (method, path)
    assert count(mod, "falco_events_total") == 0


def test_test_endpoint_sends_a_test_alert_through_the_routes(load_handler, h):
    mod = load_handler()
    dry = h.call(mod, "POST", "/test", query={"dry_run": "1"})
    assert dry["statusCode"] == 200 and body_of(dry)["destinations"] == ["console"]
    assert count(mod, "falco_events_total") == 0
    resp = h.call(mod, "POST", "/test")
    assert resp["statusCode"] == 202
    assert body_of(resp)["alerts"][0]["rule"] == "Test rule"
    h.wait_until(lambda: count(mod, "outputs_total", destination="console", status="ok") == 1)
    low = h.call(mod, "POST", "/test", query={"priority": "Debug", "dry_run": "1"})
    assert body_of(low)["destinations"] == []
    bad = h.call(mod, "POST", "/test", query={"priority": "loud"})
    assert bad["statusCode"] == 400


def test_flush_endpoint_and_cron_connector_call(load_handler, h, receiver):
    r = receiver()
    port = r.port
    r.stop()
    mod = load_handler(
        env={"cron_flush": "true", "retry_tick_seconds": "3600"},
        secrets={
            "alert-forwarder-destinations": f"action-centre: {{url: 'http://127.0.0.1:{port}', insecure_http: true}}\n"
        },
    )
    post(mod, h, h.falco_alert(priority="Notice"))
    h.wait_until(lambda: count(mod, "spooled_total", destination="action-centre") == 1)
    assert h.call(mod, "POST", "/flush", headers={})["statusCode"] == 401
    back = receiver(port=port)
    # What cron-connector sends: POST to the function root, empty body, no credentials.
    resp = h.call(mod, "POST", "/", headers={"User-Agent": "Go-http-client/1.1"})
    assert resp["statusCode"] == 200
    assert body_of(resp)["flush"]["delivered"] == 1
    assert len(back.requests) == 1
    again = h.call(mod, "POST", "/", headers={})
    assert body_of(again)["flush"] == "skipped"  # unauthenticated flushes are rate-limited
    resp = h.call(mod, "POST", "/flush")
    assert resp["statusCode"] == 200 and body_of(resp)["flush"]["spool_depth"] == 0


def test_cron_flush_is_off_unless_enabled(load_handler, h):
    mod = load_handler(env={"cron_flush": "false"})
    resp = h.call(mod, "POST", "/", headers={})
    assert resp["statusCode"] == 401


def _count_calls(obj, name):
    calls = []
    real = getattr(obj, name)

    def wrapper(*a, **kw):
        calls.append(name)
        return real(*a, **kw)

    setattr(obj, name, wrapper)
    return calls


@pytest.mark.parametrize(
    "method, path", [("POST", "/"), ("GET", "/"), ("GET", "/metrics"), ("POST", "/flush"), ("POST", "/test")]
)
def test_anonymous_requests_get_401_and_cause_no_flush_or_tick(load_handler, h, receiver, method, path):
    r = receiver()
    port = r.port
    r.stop()
    # Default settings (what stack.yml now deploys): no cron_flush. The background tick is parked so only a
    # request could drive the spool.
    mod = load_handler(
        env={"retry_tick_seconds": "3600"},
        secrets={
            "alert-forwarder-destinations": f"action-centre: {{url: 'http://127.0.0.1:{port}', insecure_http: true}}\n"
        },
    )
    post(mod, h, h.falco_alert(priority="Notice"))
    h.wait_until(lambda: count(mod, "spooled_total", destination="action-centre") == 1)
    back = receiver(port=port)
    mod.FORWARDER._last_tick = -1e9  # a tick would be due now, if anything triggered one
    work = _count_calls(mod.FORWARDER, "flush")
    ticks = _count_calls(mod.FORWARDER, "maybe_tick")
    resp = h.call(mod, method, path, headers={"User-Agent": "Go-http-client/1.1"})
    assert resp["statusCode"] == 401
    assert work == [] and ticks == []
    assert mod.FORWARDER.spool.depth() == 1 and back.requests == []


def test_stack_yml_does_not_enable_the_anonymous_cron_flush():
    from pathlib import Path

    import yaml

    stack = yaml.safe_load((Path(__file__).resolve().parents[2] / "stack.yml").read_text())
    fn = stack["functions"]["alert-forwarder"]
    assert str((fn.get("environment") or {}).get("cron_flush", "false")).lower() not in ("true", "1", "yes", "on")
    # Without cron_flush a cron-connector call could only ever be refused, so no schedule is deployed.
    assert "schedule" not in (fn.get("annotations") or {})


def test_shipped_route_sends_configmap_credentials_alert_to_the_scrubber(load_handler, h, receiver):
    gw = receiver()
    gw.default = h.Reply(202, body=b"")
    mod = load_handler(
        env={"gateway_url": gw.url}, secrets={"configmap-secret-scrubber-token": "scrubber-token-0000111\n"}
    )
    al = h.falco_alert(rule="Create/Modify Configmap With Private Credentials", priority="Warning", source="k8s_audit")
    resp = post(mod, h, al)
    assert body_of(resp)["alerts"][0]["destinations"] == ["configmap-secret-scrubber", "console"]
    [req] = gw.wait_for(1)
    assert req.path == "/function/configmap-secret-scrubber"
    assert req.headers["Authorization"] == "Bearer scrubber-token-0000111"
    assert json.loads(req.body) == al


# ----------------------------------------------------------------------------- start-up validation


def misconfigured(mod, h) -> str:
    """Every request, whatever its route, answers 503 with the reason; nothing is accepted (config.Startup)."""
    reasons = set()
    for method, path in (("GET", "/"), ("POST", "/"), ("GET", "/metrics"), ("POST", "/flush")):
        body = json.dumps(h.falco_alert()).encode() if method == "POST" and path == "/" else b""
        resp = h.call(mod, method, path, body)
        assert resp["statusCode"] == 503, (method, path, resp)
        reasons.add(body_of(resp)["error"])
    [reason] = reasons
    assert reason.startswith("alert-forwarder is misconfigured: ")
    return reason.removeprefix("alert-forwarder is misconfigured: ")


def test_bad_routes_secret_makes_every_request_a_503_naming_the_place(load_handler, h, capfd):
    bad = (
        "destinations: {c: {type: console}}\nroutes:\n  - {to: [c]}\n  - {to: [c]}\n"
        "  - matchers: [{priority: warn}]\n    to: [c]\n"
    )
    mod = load_handler(secrets={"alert-forwarder-routes": bad})
    assert misconfigured(mod, h).startswith(
        "secret alert-forwarder-routes: routes[2].matchers[0]: unknown priority 'warn'"
    )
    assert "config.invalid" in capfd.readouterr().err


def test_bad_destinations_secret_makes_every_request_a_503(load_handler, h):
    mod = load_handler(secrets={"alert-forwarder-destinations": "action-centre: {url: 'gopher://x', colour: red}\n"})
    reason = misconfigured(mod, h)
    assert "alert-forwarder-destinations.action-centre" in reason and "gopher://x" not in reason


def test_routes_secret_replaces_the_shipped_routes(load_handler, h):
    mod = load_handler(
        secrets={
            "alert-forwarder-routes": (
                "destinations: {out: {type: console}}\nroutes:\n  - {name: everything, to: [out]}\n"
            )
        }
    )
    st = body_of(h.call(mod, "GET", "/"))
    assert st["routes_source"] == "secret alert-forwarder-routes"
    assert body_of(post(mod, h, h.falco_alert(priority="Debug")))["alerts"][0]["destinations"] == ["out"]


def test_empty_routes_secret_falls_back_to_the_shipped_routes(load_handler, h):
    mod = load_handler(secrets={"alert-forwarder-routes": "\n"})
    st = body_of(h.call(mod, "GET", "/"))
    assert st["routes_source"] == "routes.yaml"


def test_invalid_environment_makes_every_request_a_503(load_handler, h):
    mod = load_handler(env={"ack_mode": "eventually"})
    assert "ack_mode" in misconfigured(mod, h)


def test_falco_gets_its_answer_while_the_destination_hangs(load_handler, h, receiver):
    import threading

    r = receiver()
    hold = threading.Event()
    r.default = h.Reply(200, gate=hold)
    mod = load_handler(
        secrets={"alert-forwarder-destinations": f"action-centre: {{url: '{r.url}', insecure_http: true}}\n"}
    )
    for i in range(5):
        resp = post(mod, h, h.falco_alert(priority="Notice", **{"proc.pid": i}))
        assert resp["statusCode"] == 202
    # Every 202 came back while the receiver was holding every answer.
    assert not hold.is_set() and r.requests == []
    h.wait_until(lambda: r.arrived >= 1)
    hold.set()
    h.wait_until(lambda: count(mod, "outputs_total", destination="action-centre", status="ok") == 5)


def test_configuring_the_action_centre_url_switches_it_on_without_a_restart(load_handler, h, receiver, capfd):
    r = receiver()
    mod = load_handler(env={"retry_tick_seconds": "0.1"})
    status = lambda: body_of(h.call(mod, "GET", "/"))  # noqa: E731
    assert status()["destinations"]["action-centre"]["enabled"] is False
    secret = mod.secrets_dir / "alert-forwarder-destinations"
    secret.write_text("action-centre: {url: 'not a url'}\n")  # a bad edit is refused, the old settings stay
    h.wait_until(lambda: "config.reload_failed" in capfd.readouterr().err, what="reload failure logged")
    assert status()["destinations"]["action-centre"]["enabled"] is False
    secret.write_text(f"action-centre:\n  url: {r.url}/ac\n  insecure_http: true\n  hmac_key: rotated-key-000111\n")
    h.wait_until(lambda: status()["destinations"]["action-centre"]["enabled"], what="reload")
    post(mod, h, h.falco_alert(priority="Notice"))
    [req] = r.wait_for(1)
    assert req.path == "/ac" and req.headers["X-Edgeguard-Signature"].startswith("sha256=")
    assert "rotated-key-000111" not in capfd.readouterr().err


def test_routes_secret_edits_apply_live_and_bad_edits_are_refused(load_handler, h, receiver, capfd):
    r = receiver()
    mod = load_handler(env={"retry_tick_seconds": "0.1"})
    status = lambda: body_of(h.call(mod, "GET", "/"))  # noqa: E731
    (mod.secrets_dir / "alert-forwarder-destinations").write_text(
        f"hook: {{url: '{r.url}/new', insecure_http: true}}\n"
    )
    (mod.secrets_dir / "alert-forwarder-routes").write_text(
        "destinations: {hook: {type: webhook}}\nroutes:\n  - {name: all-to-hook, to: [hook]}\n"
    )
    h.wait_until(lambda: status()["routes_source"] == "secret alert-forwarder-routes", what="routes reload")
    st = status()
    assert [x["name"] for x in st["routes"]] == ["all-to-hook", "default"]
    assert st["destinations"]["hook"]["enabled"] is True
    assert st["destinations"]["console"]["enabled"] is False  # no longer declared
    out = body_of(post(mod, h, h.falco_alert(priority="Debug")))
    assert out["alerts"][0]["destinations"] == ["hook"]
    assert r.wait_for(1)[0].path == "/new"
    (mod.secrets_dir / "alert-forwarder-routes").write_text(
        "routes:\n  - matchers: [{priority: warn}]\n    to: [hook]\n"
    )
    h.wait_until(
        lambda: "routes[0].matchers[0]: unknown priority 'warn'" in capfd.readouterr().err, what="refused reload logged"
    )
    assert [x["name"] for x in status()["routes"]] == ["all-to-hook", "default"]


def test_falcosidekick_enriched_payload_is_accepted_and_forwarded_intact(load_handler, h, receiver):
    r = receiver()
    mod = load_handler(
        secrets={"alert-forwarder-destinations": f"action-centre: {{url: '{r.url}', insecure_http: true}}\n"}
    )
    al = h.falco_alert(priority="Critical")
    al["uuid"] = "0c6d2f5e-9a55-4e0c-bd5f-0d2e0c1b7c11"  # added by falcosidekick
    al["message"] = "A shell was spawned"  # json_include_message_property
    resp = post(mod, h, al)
    assert resp["statusCode"] == 202
    got = r.wait_for(1)[0].json()
    assert got == al


def test_plain_http_action_centre_url_is_refused_at_start_up_and_opt_in_logs_a_warning(load_handler, h, capfd):
    mod = load_handler(secrets={"alert-forwarder-destinations": "action-centre: {url: 'http://ac.example/x'}\n"})
    assert re.search(r"action-centre.url.*insecure_http", misconfigured(mod, h))
    capfd.readouterr()
    mod = load_handler(
        secrets={"alert-forwarder-destinations": "action-centre: {url: 'http://ac.example/x', insecure_http: true}\n"}
    )
    assert mod.FORWARDER.destinations["action-centre"].enabled
    err = capfd.readouterr().err
    assert '"event": "config.insecure_http"' in err and '"destination": "action-centre"' in err


def test_live_edit_to_a_plain_http_url_is_refused_and_the_last_good_config_kept(load_handler, h, receiver, capfd):
    mod = load_handler(secrets={"alert-forwarder-destinations": "action-centre: {url: 'https://ac.example/x'}\n"})
    (mod.secrets_dir / "alert-forwarder-destinations").write_text("action-centre: {url: 'http://ac.example/x'}\n")
    mod.FORWARDER.tick()
    assert mod.FORWARDER.destinations["action-centre"].opts["url"] == "https://ac.example/x"
    assert '"event": "config.reload_failed"' in capfd.readouterr().err


def test_caller_chosen_rule_names_cannot_grow_metrics_series_without_bound(load_handler, h):
    mod = load_handler()
    batch = [h.falco_alert(rule=f"made-up rule {i}", priority="Debug", source=f"src-{i}") for i in range(500)]
    assert post(mod, h, batch)["statusCode"] == 202
    text = h.call(mod, "GET", "/metrics")["body"]
    text = text.decode() if isinstance(text, bytes) else text
    series = [ln for ln in text.splitlines() if ln.startswith("edgeguard_alert_forwarder_falco_events_total{")]
    assert len(series) <= 201
    assert count(mod, "falco_events_total") == 500  # nothing lost, only grouped
    assert count(mod, "falco_events_total", rule="other", source="other") == 300
    assert count(mod, "falco_events_total", rule="made-up rule 0", source="src-0") == 1
