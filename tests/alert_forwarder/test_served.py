"""The function served over real HTTP in its own process: curl in, every destination type out; spool across restart."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time

import pytest
import requests

from edgeguard.falco.alert import dumps

ALL_TYPES_ROUTES = """
destinations:
  console: {type: console}
  slack: {type: slack}
  teams: {type: teams}
  discord: {type: discord}
  hook: {type: webhook}
  scrubber: {type: openfaas, function: configmap-secret-scrubber, token_secret: configmap-secret-scrubber-token}
routes:
  - {name: everywhere, to: [console, slack, teams, discord, hook, scrubber]}
"""


def idem(alert):
    return hashlib.sha256(dumps(alert).encode()).hexdigest()[:32]


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="needs real component: curl (libcurl, what Falco's http_output sends with)"
)
def test_alert_posted_with_curl_reaches_every_destination_type(serve_function, receiver, h, tmp_path):
    r = receiver()
    r.default = h.Reply(202, body=b"")
    dests = {n: {"url": f"{r.url}/{n}", "insecure_http": True} for n in ("slack", "teams", "discord", "hook")}
    sf = serve_function(
        "alert-forwarder",
        env={"spool_dir": str(tmp_path / "spool"), "gateway_url": r.url},
        secrets={
            "alert-forwarder-token": h.TOKEN,
            "alert-forwarder-routes": ALL_TYPES_ROUTES,
            "alert-forwarder-destinations": json.dumps(dests),
            "configmap-secret-scrubber-token": "scrubber-token-55555",
        },
    )
    al = h.falco_alert(priority="Error")
    f = tmp_path / "alert.json"
    f.write_text(dumps(al))
    # Falco's http_output is libcurl given a URL: the token rides in its user part, which curl sends as Basic.
    url = sf.url.replace("http://", f"http://falco:{h.TOKEN}@") + "/"
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", f"@{f}", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    resp = json.loads(out.stdout)
    assert resp["accepted"] == 1
    assert sorted(resp["alerts"][0]["destinations"]) == sorted(
        ["console", "slack", "teams", "discord", "hook", "scrubber"]
    )
    reqs = {q.path: q for q in r.wait_for(5)}
    assert set(reqs) == {"/slack", "/teams", "/discord", "/hook", "/function/configmap-secret-scrubber"}
    assert all(q.headers["Idempotency-Key"] == idem(al) for q in reqs.values())
    assert reqs["/hook"].json() == al
    assert json.loads(reqs["/function/configmap-secret-scrubber"].body) == al
    assert reqs["/function/configmap-secret-scrubber"].headers["Authorization"] == "Bearer scrubber-token-55555"
    h.wait_until(lambda: '"event": "alert"' in sf.logs(), what="console line")
    console = [rec for rec in sf.log_records() if rec["event"] == "alert"]
    assert console[0]["rule"] == al["rule"] and console[0]["idempotency_key"] == idem(al)
    assert h.TOKEN not in sf.logs()


def test_spooled_alert_survives_a_restart_and_is_delivered_exactly_once(serve_function, receiver, h, tmp_path):
    """Done-when: receiver down -> alert in the spool -> function restarted -> receiver back -> delivered once."""
    r = receiver()
    port = r.port
    r.stop()  # the action centre is unreachable
    spool = tmp_path / "spool"
    sf = serve_function(
        "alert-forwarder",
        env={"spool_dir": str(spool), "retry_tick_seconds": "0.2"},
        secrets={
            "alert-forwarder-token": h.TOKEN,
            "alert-forwarder-destinations": (
                f"action-centre: {{url: 'http://127.0.0.1:{port}/ac', insecure_http: true}}\n"
            ),
        },
    )
    auth = {"Authorization": f"Bearer {h.TOKEN}"}
    al = h.falco_alert(priority="Notice")
    resp = requests.post(
        sf.url + "/", data=dumps(al), auth=("falco", h.TOKEN), headers={"Content-Type": "application/json"}, timeout=5
    )
    assert resp.status_code == 202

    def spooled():
        m = requests.get(sf.url + "/metrics", headers=auth, timeout=5).text
        return 'edgeguard_alert_forwarder_spooled_total{destination="action-centre"}' in m

    h.wait_until(spooled, timeout=15, what="alert spooled")
    records = [json.loads(line) for line in (spool / "spool.wal").read_text().splitlines()]
    [entry] = [r["e"] for r in records if r["op"] == "put"]
    assert entry["destination"] == "action-centre" and entry["key"] == idem(al) and entry["payload"] == al

    first_pid = sf.proc.pid
    sf.stop(kill=True)  # SIGKILL: no shutdown hook gets to save anything
    back = receiver(port=port)  # the receiver returns while the function is down
    sf.start()
    assert sf.proc.pid != first_pid
    status = requests.get(sf.url + "/", headers=auth, timeout=5).json()
    assert status["spool"]["depth"] in (0, 1)  # the background retry may already have run
    back.wait_for(1, timeout=20)
    h.wait_until(
        lambda: requests.get(sf.url + "/", headers=auth, timeout=5).json()["spool"]["depth"] == 0,
        timeout=10,
        what="spool emptied",
    )
    time.sleep(1.0)  # further ticks must not send it again
    assert len(back.requests) == 1
    req = back.requests[0]
    assert req.path == "/ac" and req.headers["Idempotency-Key"] == idem(al) and req.json() == al
    assert requests.get(sf.url + "/", headers=auth, timeout=5).json()["spool"]["depth"] == 0


def test_bad_routes_make_the_served_function_answer_503_with_the_place(serve_function, h, tmp_path):
    """Under the real watchdog: the function stays up and every caller (Falco's log, curl) reads what to fix."""
    sf = serve_function(
        "alert-forwarder",
        env={"spool_dir": str(tmp_path / "s")},
        secrets={
            "alert-forwarder-token": h.TOKEN,
            "alert-forwarder-routes": "destinations: {c: {type: console}}\nroutes:\n  - {to: [c]}\n  - {to: [c]}\n"
            "  - matchers: [{priority: warn}]\n    to: [c]\n",
        },
    )
    r = requests.post(sf.url + "/", json=h.falco_alert(), headers={"Authorization": f"Bearer {h.TOKEN}"}, timeout=10)
    assert r.status_code == 503
    assert "routes[2].matchers[0]: unknown priority 'warn'" in r.json()["error"]
    assert requests.get(sf.url + "/", timeout=10).status_code == 503


def test_an_alert_too_long_for_one_watchdog_log_line_does_not_wedge_the_function(serve_function, h, tmp_path):
    """of-watchdog reads the function's stderr line by line with a 64 KiB scanner; one longer line and it stops
    reading, so every later log write blocks once the pipe is full and the function hangs (504s). The console
    destination logs the alert's output: a 100 kB output must not take the function down."""
    sf = serve_function(
        "alert-forwarder",
        env={"spool_dir": str(tmp_path / "spool")},
        secrets={
            "alert-forwarder-token": h.TOKEN,
            "alert-forwarder-routes": "destinations: {c: {type: console}}\nroutes:\n  - {to: [c]}\n",
        },
    )
    auth = {"Authorization": f"Bearer {h.TOKEN}", "Content-Type": "application/json"}
    huge = h.falco_alert(priority="Error", **{"proc.cmdline": "x" * 100_000})
    assert requests.post(sf.url + "/", data=dumps(huge), headers=auth, timeout=10).status_code == 202
    for i in range(12):  # well past the 64 KiB pipe buffer if lines were no longer read
        al = h.falco_alert(priority="Error", **{"proc.cmdline": f"sh -c {i}" + " y" * 3000})
        assert requests.post(sf.url + "/", data=dumps(al), headers=auth, timeout=10).status_code == 202, i
    h.wait_until(
        lambda: sum(r.get("event") == "alert" for r in sf.log_records()) == 13, timeout=10, what="13 console lines"
    )
    longest = max(len(line) for line in sf.logs().splitlines())
    assert longest < 64 * 1024, longest
    assert "Error reading stderr" not in sf.logs()
