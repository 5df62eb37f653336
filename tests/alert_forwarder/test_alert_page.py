"""Every alert's fate (issue 15 §3): GET /alerts with filters, and the page's login (cookie, CSRF, expiry)."""

from __future__ import annotations

import json
import re
import time

import pytest


def body(resp):
    return json.loads(resp["body"])


def login(mod, h, token=None, **headers):
    hdr = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    return h.call(mod, "POST", "/ui", f"action=login&token={token or h.TOKEN}".encode(), headers=hdr)


def session_cookie(resp) -> str:
    set_cookie = resp["headers"]["Set-Cookie"]
    return set_cookie.split(";", 1)[0]


def test_alerts_keep_route_destinations_and_delivery_state_and_no_secret(load_handler, h, receiver):
    r = receiver()
    r.script = [h.Reply(503)]
    mod = load_handler(
        secrets={
            "alert-forwarder-destinations": json.dumps(
                {"action-centre": {"url": r.url + "/hook", "insecure_http": True, "token": "ac-bearer-secret-123456"}}
            )
        },
        env={"retry_tick_seconds": "0.1"},
    )
    notice = h.falco_alert(priority="Notice", rule="Notice rule")
    warning = h.falco_alert(priority="Warning", source="k8s_audit", rule="Warning rule")
    debug = h.falco_alert(priority="Debug", rule="Debug rule")
    for al in (notice, warning, debug):
        assert h.call(mod, "POST", "/", al)["statusCode"] == 202
    h.wait_until(
        lambda: (
            body(h.call(mod, "GET", "/alerts", query={"rule": "notice"}))["alerts"][0]["destinations"]["action-centre"][
                "state"
            ]
            == "delivered"
        ),
        what="delivered after one 503",
    )
    out = body(h.call(mod, "GET", "/alerts"))
    assert [a["rule"] for a in out["alerts"]] == ["Debug rule", "Warning rule", "Notice rule"]  # newest first
    n = next(a for a in out["alerts"] if a["rule"] == "Notice rule")
    assert n["routes"] == ["action-centre"] and n["decision"] == "delivering"
    assert n["destinations"]["action-centre"]["state"] == "delivered"
    assert n["sender"] == "fleet" and n["idempotency_key"]
    w = next(a for a in out["alerts"] if a["rule"] == "Warning rule")
    assert set(w["destinations"]) == {"action-centre", "console"}
    d = next(a for a in out["alerts"] if a["rule"] == "Debug rule")
    assert d["destinations"] == {} and d["decision"] == "no destination"
    # the first attempt of one of them failed with the 503
    attempts = [
        a["destinations"]["action-centre"]["attempts"] for a in out["alerts"] if "action-centre" in a["destinations"]
    ]
    assert sorted(attempts) == [1, 2]
    text = json.dumps(out)
    assert "ac-bearer-secret-123456" not in text and r.url not in text and h.TOKEN not in text


def test_a_disabled_destination_shows_as_dropped_with_the_reason(load_handler, h):
    """The README's Notice sample used to vanish (202, destinations: []); now it says where it did not go."""
    mod = load_handler()
    h.call(mod, "POST", "/", h.falco_alert(priority="Notice"))
    [a] = body(h.call(mod, "GET", "/alerts"))["alerts"]
    ac = a["destinations"]["action-centre"]
    assert ac["state"] == "dropped" and "no url in the alert-forwarder-destinations secret" in ac["last_error"]


@pytest.mark.parametrize(
    "query, rules",
    [
        ({"priority": ">=Warning"}, ["c", "b"]),
        ({"priority": "Notice"}, ["a"]),
        ({"priority": "<Warning"}, ["a"]),
        ({"rule": "B"}, ["b"]),
        ({"source": "k8s_audit"}, ["b"]),
        ({"source": "k8s_audit,syscall"}, ["c", "b", "a"]),
        ({"destination": "console"}, ["c", "b"]),
        ({"state": "delivered", "destination": "console"}, ["c", "b"]),
        ({"state": "dropped"}, ["c", "b", "a"]),  # the unconfigured action-centre
        ({"state": "none"}, []),
        ({"since": "10m"}, ["c", "b", "a"]),
        ({"since": str(int(time.time()) + 3600)}, []),
    ],
)
def test_alerts_filters(load_handler, h, query, rules):
    mod = load_handler()
    for rule, prio, src in (("a", "Notice", "syscall"), ("b", "Warning", "k8s_audit"), ("c", "Critical", "syscall")):
        h.call(mod, "POST", "/", h.falco_alert(rule=rule, priority=prio, source=src))
    h.wait_until(lambda: mod.FORWARDER.metrics.total("outputs_total", destination="console") == 2)
    assert [a["rule"] for a in body(h.call(mod, "GET", "/alerts", query=query))["alerts"]] == rules


@pytest.mark.parametrize(
    "query",
    [
        {"priority": "Severe"},
        {"priority": "=>Warning"},
        {"state": "gone"},
        {"since": "yesterday"},
        {"limit": "many"},
        {"after": "-1"},
    ],
)
def test_bad_filters_are_400_naming_them(load_handler, h, query):
    mod = load_handler()
    resp = h.call(mod, "GET", "/alerts", query=query)
    assert resp["statusCode"] == 400 and list(query)[0] in body(resp)["error"]


def test_history_is_bounded(load_handler, h):
    mod = load_handler(env={"history_max": "5"})
    h.call(mod, "POST", "/", [h.falco_alert(rule=f"r{i}", priority="Debug") for i in range(12)])
    out = body(h.call(mod, "GET", "/alerts"))
    assert out["held"] == 5 and out["max"] == 5 and [a["rule"] for a in out["alerts"]][0] == "r11"


def test_alerts_need_a_token_or_a_session(load_handler, h):
    mod = load_handler(secrets={"edgeguard-metrics-token": "metrics-reader-0123456789"})
    assert h.call(mod, "GET", "/alerts", headers={})["statusCode"] == 401
    assert h.call(mod, "GET", "/alerts", headers={}, query={"token": h.TOKEN})["statusCode"] == 401
    assert (
        h.call(mod, "GET", "/alerts", headers={"Authorization": "Bearer metrics-reader-0123456789"})["statusCode"]
        == 200
    )
    assert h.call(mod, "GET", "/alerts/summary", headers={})["statusCode"] == 401


def test_login_sets_an_httponly_samesite_strict_cookie_and_the_session_reads_only(load_handler, h):
    mod = load_handler()
    page = h.call(mod, "GET", "/ui", headers={})
    assert page["statusCode"] == 200 and 'id="login"' in page["body"] and "csrf" not in page["body"]
    assert "default-src 'none'" in page["headers"]["Content-Security-Policy"]
    resp = login(mod, h)
    assert resp["statusCode"] == 303 and resp["headers"]["Location"] == "ui"
    cookie = resp["headers"]["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=28800" in cookie
    assert h.TOKEN not in cookie and h.TOKEN not in json.dumps(resp)
    jar = {"Cookie": session_cookie(resp)}
    app = h.call(mod, "GET", "/ui", headers=jar)
    assert 'id="rows"' in app["body"] and h.TOKEN not in app["body"]
    assert h.call(mod, "GET", "/alerts", headers=jar)["statusCode"] == 200
    assert h.call(mod, "GET", "/alerts/summary", headers=jar)["statusCode"] == 200
    # read-only: a session cannot post alerts, flush, test or read /metrics
    for method, path in (("POST", "/"), ("POST", "/flush"), ("POST", "/test"), ("GET", "/metrics"), ("GET", "/")):
        assert (
            h.call(
                mod,
                method,
                path,
                h.falco_alert() if path == "/" else b"",
                headers={**jar, "Content-Type": "application/json"},
            )["statusCode"]
            == 401
        ), (method, path)
    # logout needs the CSRF token of the page
    csrf = re.search(r'name="csrf" value="([^"]+)"', app["body"]).group(1)
    form = {"Content-Type": "application/x-www-form-urlencoded", **jar}
    assert h.call(mod, "POST", "/ui", b"action=logout&csrf=wrong", headers=form)["statusCode"] == 403
    out = h.call(mod, "POST", "/ui", f"action=logout&csrf={csrf}".encode(), headers=form)
    assert out["statusCode"] == 303 and "Max-Age=0" in out["headers"]["Set-Cookie"]
    assert h.call(mod, "GET", "/alerts", headers=jar)["statusCode"] == 401


def test_login_refuses_wrong_tokens_cross_site_posts_and_guessing(load_handler, h):
    mod = load_handler()
    assert login(mod, h, token="wrong")["statusCode"] == 401
    assert login(mod, h, **{"Origin": "https://evil.example", "Host": "gw:8080"})["statusCode"] == 403
    assert login(mod, h, **{"Sec-Fetch-Site": "cross-site"})["statusCode"] == 403
    codes = [login(mod, h, token=f"guess-{i}")["statusCode"] for i in range(12)]
    assert 429 in codes  # one shared bucket of 10 a minute
    assert login(mod, h)["statusCode"] == 429  # even the right token waits: no oracle while limited


def test_sessions_expire(load_handler, h, monkeypatch):
    mod = load_handler(env={"ui_session_ttl": "2s"})
    jar = {"Cookie": session_cookie(login(mod, h))}
    assert h.call(mod, "GET", "/alerts", headers=jar)["statusCode"] == 200
    now = time.time() + 3
    monkeypatch.setattr(mod.SESSIONS, "clock", lambda: now)
    assert h.call(mod, "GET", "/alerts", headers=jar)["statusCode"] == 401
    assert 'id="login"' in h.call(mod, "GET", "/ui", headers=jar)["body"]
