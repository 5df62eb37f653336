"""No token in any URL or log line (issue 11 §1), shown on the real of-watchdog, which logs every request line
("POST /?token=... - 202 ACCEPTED"): every alert-forwarder flow, then the watchdog's log grepped for every token,
key and session id. Falco's side is its own libcurl calls replayed (falco_http.py): the token rides in the URL's
user part, which libcurl turns into Authorization: Basic, so no request line carries it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import time

import pytest
import requests

from edgeguard.falco.alert import dumps
from tests.alert_forwarder import falco_http

FLEET = "fleet-token-Zq81xkV3pQ0u9a"
READER = "metrics-reader-Hh27LmP0q4"
SCRUBBER = "scrubber-token-Kp39sQ2vN7"
AC_TOKEN = "ac-bearer-Tt50wR8yB1"
AC_HMAC = "ac-hmac-key-Yy62nD4cF9"
ROTATED = "fleet-token-rotated-Mm73jG5hL2"

ROUTES = """
destinations:
  console: {type: console}
  scrubber: {type: openfaas, function: configmap-secret-scrubber, token_secret: configmap-secret-scrubber-token}
  ac: {type: webhook, insecure_http: true}
routes:
  - {name: everywhere, to: [console, scrubber, ac]}
"""


@pytest.mark.skipif(falco_http.lib is None, reason="needs real component: libcurl (what Falco's http_output uses)")
def test_no_token_reaches_the_watchdog_log_in_any_flow(serve_function, receiver, h, tmp_path):
    r = receiver()
    r.default = h.Reply(202, body=b"")
    dests = {"ac": {"url": f"{r.url}/ac", "token": AC_TOKEN, "hmac_key": AC_HMAC}}
    sf = serve_function(
        "alert-forwarder",
        env={"spool_dir": str(tmp_path / "spool"), "gateway_url": r.url},
        secrets={
            "alert-forwarder-token": FLEET,
            "edgeguard-metrics-token": READER,
            "alert-forwarder-routes": ROUTES,
            "alert-forwarder-destinations": json.dumps(dests),
            "configmap-secret-scrubber-token": SCRUBBER,
        },
    )
    al = h.falco_alert(priority="Error")
    falco_url = sf.url.replace("http://", f"http://falco:{FLEET}@") + "/"
    bearer = {"Authorization": f"Bearer {FLEET}"}

    # Falco's http_output (json_output, and compress_uploads, which asks for a compressed *response*: TE: gzip)
    assert falco_http.post(falco_url, dumps(al).encode()) == 202
    assert falco_http.post(falco_url, dumps(h.falco_alert(rule="b")).encode(), compress_uploads=True) == 202
    assert falco_http.post(falco_url, b"10:11:12.1: Error text line", json_output=False) == 415
    # audit-ingest's hand-off (a JSON array, bearer), NDJSON, a gzip body
    assert (
        requests.post(
            sf.url + "/", json=[h.falco_alert(rule="c"), h.falco_alert(rule="d")], headers=bearer, timeout=5
        ).status_code
        == 202
    )
    assert (
        requests.post(
            sf.url + "/",
            data=gzip.compress(dumps(h.falco_alert(rule="e")).encode()),
            timeout=5,
            headers={**bearer, "Content-Type": "application/json", "Content-Encoding": "gzip"},
        ).status_code
        == 202
    )
    # refused: wrong token, and the right token in the query string (still refused, so it gets fixed)
    assert requests.post(sf.url + "/", json=al, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    refused = requests.post(sf.url + "/", json=al, params={"token": "not-the-token"}, timeout=5)
    assert refused.status_code == 401 and "Basic auth" in refused.json()["error"]
    # the other endpoints
    for method, path, headers in (
        ("POST", "/flush", bearer),
        ("POST", "/test", bearer),
        ("GET", "/", bearer),
        ("GET", "/metrics", bearer),
        ("GET", "/metrics", {"Authorization": f"Bearer {READER}"}),
        ("GET", "/alerts", bearer),
        ("GET", "/alerts/summary", bearer),
    ):
        assert requests.request(method, sf.url + path, headers=headers, timeout=10).status_code < 300, path
    # the page: sign in (the token in a form body), use the session, sign out
    s = requests.Session()
    login = s.post(sf.url + "/ui", data={"action": "login", "token": FLEET}, allow_redirects=False, timeout=5)
    assert login.status_code == 303
    session_id = s.cookies.get("edgeguard_af_session")
    page = s.get(sf.url + "/ui", timeout=5)
    assert s.get(sf.url + "/alerts", timeout=5).status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert (
        s.post(sf.url + "/ui", data={"action": "logout", "csrf": csrf}, allow_redirects=False, timeout=5).status_code
        == 303
    )
    # rotation: the new token and, within the grace, the old one
    path = sf.secrets_dir / "alert-forwarder-token"
    st = path.stat().st_mtime_ns
    path.write_text(ROTATED)
    os.utime(path, ns=(st + 2_000_000_000, st + 2_000_000_000))
    assert (
        requests.post(
            sf.url + "/", json=h.falco_alert(rule="f"), headers={"Authorization": f"Bearer {ROTATED}"}, timeout=5
        ).status_code
        == 202
    )
    assert falco_http.post(falco_url, dumps(h.falco_alert(rule="g")).encode()) == 202  # Falco not restarted yet

    h.wait_until(
        lambda: len([q for q in r.requests if q.path == "/function/configmap-secret-scrubber"]) >= 8,
        timeout=20,
        what="the scrubber calls",
    )
    time.sleep(0.5)
    log = sf.logs()
    assert "POST / - 202" in log and "GET /metrics - 200" in log  # the watchdog did log every request line
    leaks = {
        name: value
        for name, value in (
            ("fleet", FLEET),
            ("reader", READER),
            ("scrubber", SCRUBBER),
            ("ac token", AC_TOKEN),
            ("ac hmac", AC_HMAC),
            ("rotated", ROTATED),
            ("session", session_id),
            ("csrf", csrf),
        )
        if value in log
    }
    assert leaks == {}, leaks
    # Outbound: the callee's token only in a header, never in a request line.
    for q in r.requests:
        assert all(t not in q.path for t in (FLEET, SCRUBBER, AC_TOKEN, AC_HMAC))
    assert {q.headers["Authorization"] for q in r.requests if q.path.startswith("/function/")} == {f"Bearer {SCRUBBER}"}
    assert not any(q.path.startswith("/async-function/") for q in r.requests)


@pytest.mark.skipif(
    shutil.which("curl") is None or falco_http.lib is None,
    reason="needs real component: libcurl (what Falco's http_output uses)",
)
def test_falco_http_output_sends_the_url_user_part_as_basic_auth_and_not_in_the_request_line(receiver, h):
    """What Falco's libcurl calls put on the wire for url http://falco:<token>@host/function/alert-forwarder."""
    r = receiver()
    r.default = h.Reply(202, body=b"")
    url = r.url.replace("http://", f"http://falco:{FLEET}@") + "/function/alert-forwarder"
    assert falco_http.post(url, b'{"a":1}', compress_uploads=True) == 202
    [q] = r.wait_for(1)
    import base64

    assert q.path == "/function/alert-forwarder"
    assert q.headers["Authorization"] == "Basic " + base64.b64encode(f"falco:{FLEET}".encode()).decode()
    assert q.headers["User-Agent"] == "falcosecurity/falco" and q.headers["Content-Type"] == "application/json"
    # compress_uploads: libcurl asks for a compressed response and sends the body as it is
    assert q.headers["TE"] == "gzip" and "Content-Encoding" not in q.headers and q.body == b'{"a":1}'
