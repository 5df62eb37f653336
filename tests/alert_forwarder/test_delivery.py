"""Delivery against real HTTP receivers on 127.0.0.1: failing, slow, 429, flapping, down; every destination type."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import textwrap
import threading
import time

import pytest

from edgeguard.falco.alert import dumps


@pytest.fixture
def make_fwd(pkg, tmp_path):
    made = []

    def make(routes: str, secrets: dict | None = None, clock=None, **settings):
        routes_mod = pkg.module("edgeguard.routing")
        fwd_mod = pkg.module("forwarder")
        table = routes_mod.load_routes_text(textwrap.dedent(routes))
        s = fwd_mod.Settings(spool_dir=str(tmp_path / f"spool-{len(made)}"), **settings)
        kw = {"clock": clock} if clock else {}
        f = fwd_mod.Forwarder(table, secrets or {}, s, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close(timeout=2)


def hook_routes(opts: str = "", route_extra: str = "") -> str:
    return f"""
    destinations:
      hook: {{type: webhook, insecure_http: true, timeout: 0.5s, retries: 3, backoff: 0.05s, budget: 3s{opts}}}
    routes:
      - {{name: all, to: [hook]{route_extra}}}
    """


def metric(fwd, name, **labels):
    return fwd.metrics.total(name, **labels)


def keys(reqs):
    return [r.headers.get("Idempotency-Key") for r in reqs]


def test_failing_receiver_is_retried_with_backoff_then_delivered_once(make_fwd, receiver, h):
    r = receiver()
    r.script = [h.Reply(500), h.Reply(502)]
    f = make_fwd(hook_routes(), {"hook": {"url": r.url + "/in"}})
    al = h.falco_alert()
    f.ingest([al])
    reqs = r.wait_for(3)
    h.wait_until(lambda: metric(f, "outputs_total", destination="hook", status="ok") == 1, what="delivered")
    time.sleep(0.2)
    assert len(r.requests) == 3
    assert len(set(keys(reqs))) == 1 and keys(reqs)[0] == hashlib.sha256(dumps(al).encode()).hexdigest()[:32]
    assert reqs[2].json() == al  # the alert exactly as Falco sent it
    assert metric(f, "outputs_total", destination="hook", status="error") == 2
    assert metric(f, "retried_total", destination="hook") == 2
    assert f.spool.depth() == 0


def test_slow_receiver_hits_the_timeout_and_the_alert_waits_in_the_spool(make_fwd, receiver, h):
    r = receiver()
    hold = threading.Event()  # the receiver never answers until the test is done with the timeouts
    r.default = h.Reply(200, gate=hold)
    f = make_fwd(
        hook_routes().replace("retries: 3", "retries: 1").replace("budget: 3s", "budget: 1s"),
        {"hook": {"url": r.url}},
        tick_interval=3600,
    )  # only the explicit flush retries here
    out = f.ingest([h.falco_alert()])
    assert not hold.is_set() and r.requests == []  # ingest returned before any answer could exist
    assert out["alerts"][0]["destinations"] == ["hook"]
    h.wait_until(lambda: metric(f, "spooled_total", destination="hook") == 1, what="spooled")
    assert r.arrived == 2 and r.requests == []  # both attempts reached it and were cut off by the 0.5 s timeout
    hold.set()
    assert metric(f, "outputs_total", destination="hook", status="error") == 2  # first try + one retry, both timed out
    assert f.spool.depth() == 1
    [e] = f.spool.claim_due(ignore_schedule=True)
    assert "timeout" in e.last_error and e.attempts == 2
    f.spool.release(e.id)
    r.default = h.Reply(200)
    assert f.flush(ignore_schedule=True)["delivered"] == 1
    assert f.spool.depth() == 0


def test_429_retry_after_is_honoured_before_retrying(make_fwd, receiver, h):
    r = receiver()
    r.script = [h.Reply(429, {"Retry-After": "1"})]
    f = make_fwd(hook_routes(), {"hook": {"url": r.url}})
    f.ingest([h.falco_alert()])
    reqs = r.wait_for(2, timeout=5)
    assert reqs[1].at - reqs[0].at >= 0.95
    h.wait_until(lambda: metric(f, "outputs_total", destination="hook", status="ok") == 1)


def test_retry_after_beyond_the_budget_spools_until_then(make_fwd, receiver, h):
    r = receiver()
    r.script = [h.Reply(503, {"Retry-After": "120"})]
    f = make_fwd(hook_routes(), {"hook": {"url": r.url}}, tick_interval=3600)
    f.ingest([h.falco_alert()])
    h.wait_until(lambda: f.spool.depth() == 1 and metric(f, "spooled_total", destination="hook") == 1)
    assert len(r.requests) == 1
    [e] = f.spool.snapshot()
    assert e.next_attempt - time.time() > 110 and e.not_before - time.time() > 110
    assert f.spool.claim_due() == []  # not due yet: the receiver asked for two minutes
    assert f.flush(ignore_schedule=True)["attempted"] == 0  # even a forced flush honours Retry-After
    # New alerts for a destination in back-off go straight to the spool: no hammering.
    f.ingest([h.falco_alert(rule="Other")])
    time.sleep(0.2)
    assert len(r.requests) == 1 and f.spool.depth() == 2
    st = f.status()
    assert st["destinations"]["hook"]["state"] == "backing_off"
    assert st["status"] == "degraded" and st["problems"] == ["destination hook is backing off after failures"]


def test_retry_after_http_date_is_understood(pkg):
    d = pkg.destinations
    now = 1_700_000_000.0
    assert d.parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == pytest.approx(20, abs=1)
    assert d.parse_retry_after("7") == 7.0
    assert d.parse_retry_after("soon") is None
    res = d.classify(429, {}, b'{"message": "You are being rate limited.", "retry_after": 0.25}')
    assert res.retryable and res.retry_after == 0.25  # Discord's JSON body form


def test_client_error_is_not_retried_and_is_counted_as_rejected(make_fwd, receiver, h):
    r = receiver()
    r.default = h.Reply(400, body=b"bad payload")
    f = make_fwd(hook_routes(), {"hook": {"url": r.url}})
    f.ingest([h.falco_alert()])
    h.wait_until(lambda: metric(f, "dropped_total", destination="hook", reason="rejected") == 1)
    time.sleep(0.2)
    assert len(r.requests) == 1 and f.spool.depth() == 0


def test_receiver_down_then_back_delivers_each_alert_exactly_once(make_fwd, receiver, h):
    r = receiver()
    port = r.port
    r.stop()
    f = make_fwd(hook_routes(), {"hook": {"url": f"http://127.0.0.1:{port}/in"}})
    alerts = [h.falco_alert(**{"proc.cmdline": f"bash -c {i}"}) for i in range(5)]
    f.ingest(alerts)
    h.wait_until(
        lambda: f.spool.depth() == 5 and all(not d.queue.qsize() for d in f.destinations.values()), what="all spooled"
    )
    h.wait_until(lambda: metric(f, "spooled_total", destination="hook") >= 5)
    back = receiver(port=port)
    res = f.flush(ignore_schedule=True)
    assert res["delivered"] == 5 and res["spool_depth"] == 0
    assert sorted(keys(back.requests)) == sorted(hashlib.sha256(dumps(a).encode()).hexdigest()[:32] for a in alerts)


def test_status_flapping_receiver_gets_every_alert_accepted_exactly_once(make_fwd, receiver, h):
    script = [503, 200, 503, 503, 200] * 8
    r = receiver()
    r.script = [h.Reply(st) for st in script]
    f = make_fwd(
        hook_routes().replace("backoff: 0.05s", "backoff: 0.02s"),
        {"hook": {"url": r.url}},
        tick_interval=0.05,
        spool_backoff_max=0.2,
    )
    alerts = [h.falco_alert(**{"proc.pid": i}) for i in range(12)]
    f.ingest(alerts)
    h.wait_until(
        lambda: metric(f, "outputs_total", destination="hook", status="ok") == 12 and f.spool.depth() == 0,
        timeout=20,
        what="all delivered",
    )
    time.sleep(0.2)
    # Replies were handed out in arrival order, so request i got script[i].
    statuses = script + [200] * len(r.requests)
    ok_keys = [req.headers["Idempotency-Key"] for req, st in zip(r.requests, statuses) if st == 200]
    assert sorted(ok_keys) == sorted(hashlib.sha256(dumps(a).encode()).hexdigest()[:32] for a in alerts)


def test_connection_flapping_receiver_loses_nothing(make_fwd, receiver, h):
    servers = [receiver()]
    port = servers[0].port
    f = make_fwd(
        hook_routes().replace("backoff: 0.05s", "backoff: 0.02s"),
        {"hook": {"url": servers[0].url}},
        tick_interval=0.05,
        spool_backoff_max=0.3,
    )
    alerts = [h.falco_alert(**{"proc.pid": i}) for i in range(30)]
    up = True
    for i in range(0, 30, 5):
        f.ingest(alerts[i : i + 5])
        time.sleep(0.05)
        if up:
            servers[-1].stop()
        else:
            servers.append(receiver(port=port))
        up = not up
    if not up:
        servers.append(receiver(port=port))
    h.wait_until(
        lambda: f.spool.depth() == 0 and metric(f, "outputs_total", destination="hook", status="ok") == 30,
        timeout=30,
        what="all delivered after flapping",
    )
    got = {k for s in servers for k in keys(s.requests)}
    assert got == {hashlib.sha256(dumps(a).encode()).hexdigest()[:32] for a in alerts}


def test_full_spool_drops_the_oldest_and_counts_it(make_fwd, h):
    f = make_fwd(hook_routes(), {"hook": {"url": "http://127.0.0.1:9/never"}}, spool_max_entries=3)
    f.ingest([h.falco_alert(**{"proc.pid": i}) for i in range(5)])
    h.wait_until(lambda: metric(f, "dropped_total", destination="hook", reason="spool_full") == 2, what="drops")
    assert f.spool.depth() == 3
    assert "edgeguard_alert_forwarder_spool_depth 3" in f.metrics.render()


def test_a_slow_destination_does_not_hold_up_another(make_fwd, receiver, h):
    slow, fast = receiver(), receiver()
    hold = threading.Event()
    slow.default = h.Reply(200, gate=hold)
    f = make_fwd(
        """
    destinations:
      slow: {type: webhook, insecure_http: true, timeout: 5s}
      fast: {type: webhook, insecure_http: true}
    routes:
      - {to: [slow, fast]}
    """,
        {"slow": {"url": slow.url}, "fast": {"url": fast.url}},
    )
    f.ingest([h.falco_alert(**{"proc.pid": i}) for i in range(6)])
    fast.wait_for(6)
    h.wait_until(lambda: metric(f, "outputs_total", destination="fast", status="ok") == 6)
    h.wait_until(lambda: slow.arrived >= 1)
    # All six reached "fast" while "slow" had answered nothing (its workers are still stuck in requests).
    assert slow.requests == [] and metric(f, "outputs_total", destination="slow", status="ok") == 0
    hold.set()
    h.wait_until(lambda: metric(f, "outputs_total", destination="slow", status="ok") == 6)


def test_idempotency_key_is_stable_and_distinct(pkg, h):
    k = pkg.destinations.idempotency_key
    a1 = h.falco_alert()
    assert k(a1) == k(json.loads(json.dumps(a1))) == k(dict(reversed(list(a1.items()))))
    assert k(a1) != k(h.falco_alert(**{"proc.pid": 2}))


# ----------------------------------------------------------------------------- webhook features


def test_webhook_hmac_signature_token_and_custom_headers(make_fwd, receiver, h):
    r = receiver()
    f = make_fwd(
        hook_routes(", headers: {X-Site: edge-7}, method: PUT"),
        {
            "hook": {
                "url": r.url,
                "hmac_key": "hmac-key-123456",
                "token": "bearer-abcdef-123",
                "headers": {"X-Api-Key": "apikey-987654"},
            }
        },
    )
    f.ingest([h.falco_alert()])
    [req] = r.wait_for(1)
    assert req.method == "PUT"
    assert req.headers["X-Site"] == "edge-7" and req.headers["X-Api-Key"] == "apikey-987654"
    assert req.headers["Authorization"] == "Bearer bearer-abcdef-123"
    ts = req.headers["X-Edgeguard-Timestamp"]
    want = hmac.new(b"hmac-key-123456", ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert req.headers["X-Edgeguard-Signature"] == "sha256=" + want
    assert abs(int(ts) - time.time()) < 10


def test_webhook_template_body(make_fwd, receiver, h):
    r = receiver()
    routes = """
    destinations:
      hook:
        type: webhook
        body: template
        template:
          summary: "[{{ priority }}] {{ rule }} on {{ hostname }}"
          namespace: "{{ output_fields.k8s.ns.name }}"
          pid: "{{ output_fields.proc.pid }}"
          tags: "{{ tags }}"
          event_id: "{{ idempotency_key }}"
          raw: "{{ alert }}"
    routes:
      - {to: [hook]}
    """
    f = make_fwd(routes, {"hook": {"url": r.url, "insecure_http": True}})
    al = h.falco_alert(**{"proc.pid": 4242})
    f.ingest([al])
    body = r.wait_for(1)[0].json()
    assert body["summary"] == "[Notice] Terminal shell in container on edge-node-1"
    assert body["namespace"] == "default" and body["pid"] == 4242 and body["tags"] == al["tags"]
    assert body["event_id"] == r.requests[0].headers["Idempotency-Key"]
    assert body["raw"] == al


def _tls_server_ctx(certs, require_client=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs / "srv.crt", certs / "srv.key")
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs / "ca.crt")
    return ctx


def test_tls_is_verified_and_a_private_ca_can_be_given(make_fwd, receiver, certs, h):
    r = receiver(tls=_tls_server_ctx(certs))
    untrusted = make_fwd(
        hook_routes().replace("retries: 3", "retries: 0"), {"hook": {"url": r.url}}, tick_interval=3600
    )
    untrusted.ingest([h.falco_alert()])
    h.wait_until(lambda: metric(untrusted, "spooled_total", destination="hook") == 1)
    [e] = untrusted.spool.claim_due(ignore_schedule=True)
    assert "TLS" in e.last_error
    assert r.requests == []
    trusted = make_fwd(hook_routes(), {"hook": {"url": r.url, "ca_cert": (certs / "ca.crt").read_text()}})
    trusted.ingest([h.falco_alert()])
    assert r.wait_for(1)[0].json()["rule"] == "Terminal shell in container"


def test_mutual_tls_client_certificate(make_fwd, receiver, certs, h):
    r = receiver(tls=_tls_server_ctx(certs, require_client=True))
    ca = (certs / "ca.crt").read_text()
    without = make_fwd(hook_routes().replace("retries: 3", "retries: 0"), {"hook": {"url": r.url, "ca_cert": ca}})
    without.ingest([h.falco_alert()])
    h.wait_until(lambda: metric(without, "outputs_total", destination="hook", status="error") == 1)
    assert r.requests == []
    with_cert = make_fwd(
        hook_routes(),
        {
            "hook": {
                "url": r.url,
                "ca_cert": ca,
                "client_cert": (certs / "cli.crt").read_text(),
                "client_key": (certs / "cli.key").read_text(),
            }
        },
    )
    with_cert.ingest([h.falco_alert()])
    r.wait_for(1)
    h.wait_until(lambda: metric(with_cert, "outputs_total", destination="hook", status="ok") == 1)


# ----------------------------------------------------------------------------- chat + function destinations


def test_every_destination_type_of_the_routing_spec_has_exactly_one_sender(pkg):
    # One place per type: edgeguard.routing's spec says what a type accepts, one sender here sends it.
    spec = pkg.module("edgeguard.routing.destinations").TYPES
    assert set(spec) == set(pkg.destinations.SENDERS)
    for name, kind in spec.items():
        assert set(kind.defaults) <= kind.options, f"{name}: a default for an option the type does not accept"


def test_slack_teams_discord_messages(make_fwd, receiver, h):
    r = receiver()
    f = make_fwd(
        """
    destinations:
      sl: {type: slack, channel: "#sec"}
      te: {type: teams}
      tm: {type: teams, format: messagecard}
      di: {type: discord}
    routes:
      - {to: [sl, te, tm, di]}
    """,
        {n: {"url": f"{r.url}/{n}", "insecure_http": True} for n in ("sl", "te", "tm", "di")},
    )
    f.ingest([h.falco_alert(priority="Critical")])
    reqs = {q.path.strip("/"): q.json() for q in r.wait_for(4)}
    sl = reqs["sl"]
    att = sl["attachments"][0]
    assert sl["channel"] == "#sec" and att["color"] == "#ff5400"
    titles = [x["title"] for x in att["fields"]]
    assert titles[:4] == ["rule", "priority", "source", "hostname"] and "k8s.pod.name" in titles
    assert att["text"].startswith("10:11:12.123456789: Critical A shell was spawned")
    te = reqs["te"]["attachments"][0]["content"]
    assert te["type"] == "AdaptiveCard" and te["body"][0]["text"] == "Critical: Terminal shell in container"
    assert {"title": "k8s.ns.name", "value": "default"} in te["body"][2]["facts"]
    assert reqs["tm"]["@type"] == "MessageCard" and reqs["tm"]["themeColor"] == "ff5400"
    emb = reqs["di"]["embeds"][0]
    assert emb["color"] == 0xFF5400 and emb["title"] == "Critical: Terminal shell in container"
    assert emb["timestamp"] == "2024-05-01T10:11:12.123456789Z"


def test_openfaas_destination_calls_the_function_synchronously_with_its_token(
    make_fwd, receiver, h, tmp_path, monkeypatch
):
    """Issue 11 §2: no token through CE's queue. The call goes to /function/<name> with the callee's token; a
    non-2xx is retried and the alert spooled as for any destination; the callee's 202 is a delivery."""
    gw = receiver()
    gw.script = [h.Reply(503, body=b"No endpoints available for: configmap-secret-scrubber.")]
    gw.default = h.Reply(202, body=b"")
    monkeypatch.setenv("gateway_url", gw.url)
    sec = tmp_path / "fsecrets"
    sec.mkdir()
    (sec / "configmap-secret-scrubber-token").write_text("scrubber-token-abcdef\n")
    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(sec))
    f = make_fwd("""
    destinations:
      scrub: {type: openfaas, function: configmap-secret-scrubber, token_secret: configmap-secret-scrubber-token,
              backoff: 0.05s}
      other: {type: openfaas, function: other-fn}
    routes:
      - {matchers: [{source: k8s_audit}], to: [scrub]}
      - {to: [other]}
    """)
    al = h.falco_alert(rule="Create/Modify Configmap With Private Credentials", source="k8s_audit")
    f.ingest([al])
    gw.wait_for(2)
    h.wait_until(lambda: metric(f, "outputs_total", status="ok") == 1)
    f.ingest([h.falco_alert()])
    reqs = gw.wait_for(3)
    h.wait_until(lambda: metric(f, "outputs_total", status="ok") == 2)
    paths = [q.path for q in reqs]
    assert sorted(paths) == [
        "/function/configmap-secret-scrubber",
        "/function/configmap-secret-scrubber",
        "/function/other-fn",
    ]
    assert not any(p.startswith("/async-function/") for p in paths)
    scrub = [q for q in reqs if q.path == "/function/configmap-secret-scrubber"]
    assert all(q.headers["Authorization"] == "Bearer scrubber-token-abcdef" for q in scrub)
    assert scrub[0].headers["Idempotency-Key"] == scrub[1].headers["Idempotency-Key"]  # the retry is the same call
    assert scrub[1].body == dumps(al).encode() and "X-Callback-Url" not in scrub[1].headers
    assert metric(f, "outputs_total", destination="scrub", status="error") == 1
    s = [q for q in reqs if q.path == "/function/other-fn"][0]
    assert "Authorization" not in s.headers
    assert f.spool.depth() == 0


@pytest.mark.parametrize(
    "spec, place",
    [
        ("{type: openfaas, function: fn, async: true}", "x.async"),
        ("{type: openfaas, function: fn, callback_url: 'http://gateway:8080/function/r'}", "x.callback_url"),
    ],
)
def test_openfaas_destinations_refuse_the_ce_async_queue(pkg, spec, place):
    routes = pkg.module("edgeguard.routing")
    with pytest.raises(routes.RoutesError) as ei:
        routes.load_routes_text(f"destinations:\n  x: {spec}\nroutes:\n  - {{to: [x]}}\n", "r.yaml")
    assert place in str(ei.value) and "queue" in str(ei.value)


def test_dedup_through_the_forwarder_sends_one_then_a_summary(make_fwd, receiver, h):
    r = receiver()
    now = [1_800_000_000.0]
    f = make_fwd(
        hook_routes(route_extra=", dedup: {window: 60s, key: [rule, output_fields.k8s.pod.name]}"),
        {"hook": {"url": r.url}},
        clock=lambda: now[0],
        start_threads=True,
    )
    for _ in range(3):
        out = f.ingest([h.falco_alert()])
    assert out["alerts"][0]["suppressed_by"] == ["all"]
    r.wait_for(1)
    now[0] += 61
    f.tick()
    reqs = r.wait_for(2)
    summary = reqs[1].json()
    assert summary["output_fields"]["edgeguard.suppressed"] == 2
    assert summary["rule"] == "Terminal shell in container"
    assert metric(f, "dedup_suppressed_total", route="all") == 2
    assert metric(f, "dedup_summaries_total", route="all") == 1


def test_fast_ack_mode_only_spools_failures(make_fwd, receiver, h):
    r = receiver()
    f = make_fwd(hook_routes(), {"hook": {"url": r.url}}, ack_mode="fast")
    f.ingest([h.falco_alert()])
    r.wait_for(1)
    h.wait_until(lambda: metric(f, "outputs_total", destination="hook", status="ok") == 1)
    assert f.spool.depth() == 0 and b'"op":"put"' not in (f.spool.dir / "spool.wal").read_bytes()
    r.stop()
    f.ingest([h.falco_alert(rule="x")])
    h.wait_until(lambda: f.spool.depth() == 1, what="failure spooled")


def test_disabled_destination_is_counted_not_sent(make_fwd, h):
    f = make_fwd("destinations: {ac: {type: webhook}}\nroutes:\n  - {to: [ac]}\n")
    out = f.ingest([h.falco_alert()])
    assert out["alerts"][0]["destinations"] == []
    assert metric(f, "dropped_total", destination="ac", reason="disabled") == 1
    assert f.spool.depth() == 0


def test_openfaas_token_from_the_destinations_secret_and_per_destination_min_priority(
    make_fwd, receiver, h, monkeypatch
):
    gw = receiver()
    monkeypatch.setenv("gateway_url", gw.url)
    f = make_fwd(
        """
    destinations:
      fn: {type: openfaas, function: responder, async: false, min_priority: Error}
    routes:
      - {to: [fn]}
    """,
        {"fn": {"token": "fn-token-from-secret-1"}},
    )
    out = f.ingest([h.falco_alert(priority="Warning"), h.falco_alert(priority="Critical")])
    assert [a["destinations"] for a in out["alerts"]] == [[], ["fn"]]
    [req] = gw.wait_for(1)
    assert req.path == "/function/responder" and req.headers["Authorization"] == "Bearer fn-token-from-secret-1"
    assert req.json()["priority"] == "Critical"


def test_route_with_disabled_destination_in_routes_file(make_fwd, h):
    f = make_fwd("destinations: {c: {type: console, enabled: false}}\nroutes:\n  - {to: [c]}\n")
    assert f.status()["destinations"]["c"]["disabled_reason"] == "disabled in routes"
    f.ingest([h.falco_alert()])
    assert metric(f, "dropped_total", destination="c", reason="disabled") == 1


def test_spooled_deliveries_for_a_removed_destination_are_dropped_at_start(make_fwd, h, tmp_path):
    f = make_fwd(hook_routes(), {"hook": {"url": "http://127.0.0.1:9/never"}}, tick_interval=3600)
    f.ingest([h.falco_alert()])
    h.wait_until(lambda: metric(f, "spooled_total", destination="hook") == 1)
    f.close()
    spool_dir = f.settings.spool_dir
    again = make_fwd("destinations: {c: {type: console}}\nroutes:\n  - {to: [c]}\n")
    again.spool.close()
    # Same directory, new routes without 'hook'.
    from importlib import import_module

    fwd_mod = import_module(type(again).__module__)
    third = fwd_mod.Forwarder(again.table, {}, fwd_mod.Settings(spool_dir=spool_dir, start_threads=False))
    try:
        assert third.spool.depth() == 0
        assert metric(third, "dropped_total", destination="hook", reason="unknown_destination") == 1
    finally:
        third.close()


def test_throttled_route_delivers_max_then_a_digest(make_fwd, receiver, h):
    r = receiver()
    now = [1_800_000_000.0]
    f = make_fwd(
        hook_routes(route_extra=", throttle: {max: 2, window: 30s}"), {"hook": {"url": r.url}}, clock=lambda: now[0]
    )
    out = f.ingest([h.falco_alert(**{"k8s.pod.name": f"p{i}"}) for i in range(5)])
    assert [a["throttled_by"] for a in out["alerts"]] == [[], [], ["all"], ["all"], ["all"]]
    r.wait_for(2)
    now[0] += 30
    f.tick()
    reqs = r.wait_for(3)
    digest = reqs[2].json()
    assert digest["rule"] == "edgeguard: route all throttled"
    assert digest["output_fields"]["edgeguard.suppressed"] == 3
    assert metric(f, "throttled_total", route="all") == 3 and metric(f, "throttle_summaries_total", route="all") == 1


def test_openfaas_destination_without_its_token_secret_keeps_the_alert_spooled(
    make_fwd, receiver, h, tmp_path, monkeypatch
):
    gw = receiver()
    monkeypatch.setenv("gateway_url", gw.url)
    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(tmp_path / "no-secrets"))
    f = make_fwd(
        """
    destinations:
      scrub: {type: openfaas, function: configmap-secret-scrubber, token_secret: configmap-secret-scrubber-token,
              retries: 0}
    routes:
      - {to: [scrub]}
    """,
        tick_interval=3600,
    )
    assert f.status()["destinations"]["scrub"]["token_configured"] is False
    f.ingest([h.falco_alert()])
    h.wait_until(lambda: metric(f, "spooled_total", destination="scrub") == 1)
    assert gw.requests == []  # never called unauthenticated
    [e] = f.spool.snapshot()
    assert "configmap-secret-scrubber-token" in e.last_error


def test_response_bodies_are_read_at_most_64_kib_and_the_connection_stays_usable(pkg, receiver, h):
    httpclient = pkg.module("edgeguard.httpclient")
    r = receiver()
    r.script = [h.Reply(status=200, body=b"x" * (3 * 1024 * 1024)), h.Reply(status=202, body=b"small")]
    c = httpclient.Client(r.url, timeout=5)
    big = c.request("POST", b"{}", {})
    assert big.status == 200 and len(big.body) == 64 * 1024
    small = c.request("POST", b"{}", {})  # not confused by the unread rest of the big body
    assert small.status == 202 and small.body == b"small"


def test_client_refuses_urls_with_credentials(pkg):
    httpclient = pkg.module("edgeguard.httpclient")
    with pytest.raises(ValueError, match="user:pass@"):
        httpclient.Client("https://u:p@hooks.example/x", timeout=1)


def test_failure_and_success_bookkeeping_wait_for_the_destination_lock(make_fwd, h, pkg):
    f = make_fwd(hook_routes(), {"hook": {"url": "http://127.0.0.1:9/never"}}, tick_interval=3600, start_threads=False)
    dest = f.destinations["hook"]
    Result = pkg.destinations.Result
    e = pkg.spool.Entry(
        id="e1",
        destination="hook",
        key="k",
        payload=h.falco_alert(),
        kind="alert",
        route="all",
        created=0.0,
        next_attempt=0.0,
    )
    f.spool.put(e)
    done = threading.Event()
    with dest.lock:  # as another worker updating the same destination would
        t = threading.Thread(
            target=lambda: (f.delivery._reschedule(dest, e, Result(False, None, True, None, "boom")), done.set())
        )
        t.start()
        assert not done.wait(0.2)
        assert dest.consecutive_failures == 0 and dest.down_until == 0.0  # nothing changed under our feet
    t.join(10)
    assert done.is_set() and dest.consecutive_failures == 1 and dest.down_until == e.next_attempt > 0


def test_concurrent_first_use_builds_one_http_client_per_sender(pkg, monkeypatch):
    destinations = pkg.destinations
    real = destinations.httpclient.Client
    built = []
    two_in = threading.Barrier(2, timeout=1.0)

    def slow_client(*a, **kw):
        built.append(1)
        try:
            two_in.wait()  # only passes if a second thread is constructing at the same time
        except threading.BrokenBarrierError:
            pass
        return real(*a, **kw)

    monkeypatch.setattr(destinations.httpclient, "Client", slow_client)
    sender = destinations.make_sender("hook", {"type": "webhook", "url": "https://hooks.example/x"}, timeout=5.0)
    got = []
    threads = [threading.Thread(target=lambda: got.append(sender.client())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(built) == 1 and got[0] is got[1]


def test_openfaas_and_webhook_destinations_share_one_http_stack_that_ignores_proxy_env(
    make_fwd, receiver, h, monkeypatch
):
    # One HTTP client for every destination type: same TLS, proxy and retry behaviour. Neither goes through a
    # proxy named in the environment (here a dead one), both reach the receiver directly.
    gw = receiver()
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("gateway_url", gw.url)
    f = make_fwd(
        """
    destinations:
      fn: {type: openfaas, function: other-fn, async: false, retries: 0}
      hook: {type: webhook, insecure_http: true, retries: 0}
    routes:
      - {to: [fn, hook]}
    """,
        {"fn": {"token": "fn-token-123456"}, "hook": {"url": gw.url + "/hook"}},
    )
    f.ingest([h.falco_alert()])
    reqs = {q.path: q for q in gw.wait_for(2)}
    assert set(reqs) == {"/function/other-fn", "/hook"}
    assert reqs["/function/other-fn"].headers["User-Agent"] == reqs["/hook"].headers["User-Agent"]
    assert reqs["/function/other-fn"].headers["Authorization"] == "Bearer fn-token-123456"


def test_status_stays_degraded_while_a_receiver_is_down_instead_of_flapping(make_fwd, h):
    """Issue 17 §8: between one failed retry and the next the back-off is over and the status read "ok" again."""
    port = h.free_port()  # nothing listens there: every attempt is refused
    f = make_fwd(
        hook_routes().replace("retries: 3", "retries: 0"),
        {"hook": {"url": f"http://127.0.0.1:{port}"}},
        tick_interval=0.05,
        spool_backoff_max=0.2,
    )
    f.ingest([h.falco_alert()])
    h.wait_until(lambda: metric(f, "outputs_total", destination="hook", status="error") >= 1, what="first failure")
    seen = set()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        st = f.status()
        seen.add((st["status"], st["destinations"]["hook"]["state"]))
        time.sleep(0.01)
    assert metric(f, "outputs_total", destination="hook", status="error") >= 4  # it kept retrying meanwhile
    assert {s for s, _ in seen} == {"degraded"}, seen
    assert {d for _, d in seen} <= {"backing_off", "failing"}, seen
    assert any("hook" in p for p in f.status()["problems"])


def test_spool_full_drops_show_up_in_problems(make_fwd, h):
    port = h.free_port()
    f = make_fwd(hook_routes(), {"hook": {"url": f"http://127.0.0.1:{port}"}}, spool_max_entries=2, tick_interval=3600)
    f.ingest([h.falco_alert(rule=f"r{i}") for i in range(5)])
    h.wait_until(lambda: metric(f, "dropped_total", destination="hook", reason="spool_full") == 3, what="3 dropped")
    st = f.status()
    assert st["status"] == "degraded"
    [p] = [p for p in st["problems"] if "spool_full" in p]
    assert "3 deliveries" in p and "hook" in p, p
