"""alert-forwarder demo: a Falco syscall alert posted exactly as http_output posts it, routed to the console."""

from __future__ import annotations

import base64
import json
import re
import time

FALCO_ALERT = {
    "hostname": "edge-node-1",
    "output": "10:11:12.123456789: Warning A shell was spawned in a container with an attached terminal "
    "(evt_type=execve user=root user_uid=0 user_loginuid=-1 process=bash proc_exepath=/bin/bash "
    "parent=runc command=bash terminal=34816 exe_flags=EXE_WRITABLE container_id=3ad7b26ded6d "
    "container_name=nginx)",
    "output_fields": {
        "container.id": "3ad7b26ded6d",
        "container.name": "nginx",
        "evt.time": 1714558272123456789,
        "evt.type": "execve",
        "k8s.ns.name": "default",
        "k8s.pod.name": "nginx-7c5ddbdf54-x2x9z",
        "proc.cmdline": "bash",
        "proc.exepath": "/bin/bash",
        "proc.name": "bash",
        "proc.pname": "runc",
        "proc.tty": 34816,
        "user.loginuid": -1,
        "user.name": "root",
        "user.uid": 0,
    },
    "priority": "Warning",
    "rule": "Terminal shell in container",
    "source": "syscall",
    "tags": ["T1059", "container", "maturity_stable", "mitre_execution", "shell"],
    "time": "2024-05-01T10:11:12.123456789Z",
}


def _falco_json(alert: dict) -> bytes:
    # Falco's json_output: sorted keys, no spaces, UTF-8 as is, no trailing newline.
    return json.dumps(alert, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _delivered(metrics_text: str, destination: str) -> int:
    m = re.search(
        r'^edgeguard_alert_forwarder_outputs_total\{destination="' + re.escape(destination) + r'",status="ok"\} (\d+)',
        metrics_text,
        re.M,
    )
    return int(m.group(1)) if m else 0


def run(ctx) -> None:
    token = ctx.token("alert-forwarder-token")
    metrics = ctx.call("alert-forwarder", "/metrics", method="GET", token_secret="alert-forwarder-token")
    before = _delivered(metrics.text, "console") if metrics.status_code == 200 else 0

    ctx.say(
        "Falco's http_output posts one JSON alert per request and cannot set headers, so the token rides in\n"
        "its URL's user part, http://falco:<token>@.../function/alert-forwarder, which libcurl sends as Basic\n"
        "auth (never ?token=: of-watchdog logs every request line)."
    )
    basic = base64.b64encode(f"falco:{token}".encode()).decode()
    r = ctx.call(
        "alert-forwarder",
        "",
        body=_falco_json(FALCO_ALERT),
        headers={
            "Content-Type": "application/json",
            "User-Agent": "falcosecurity/falco",
            "Authorization": f"Basic {basic}",
        },
    )
    if r.status_code != 202:
        ctx.fail(f"alert-forwarder answered {r.status_code}: {r.text[:300]}")
        return
    result = r.json()
    ctx.show("response (routing decided, delivery in the background)", result["alerts"][0])
    if "console" not in result["alerts"][0]["destinations"]:
        ctx.fail("the Warning alert was not routed to the console")
        return
    ctx.ok("Falco-format alert accepted (202) and routed to the console by route 'console-warning'")

    deadline = time.monotonic() + 10
    after = before
    while time.monotonic() < deadline:
        m = ctx.call("alert-forwarder", "/metrics", method="GET", token_secret="alert-forwarder-token")
        after = _delivered(m.text, "console")
        if after > before:
            break
        time.sleep(0.2)
    if after > before:
        ctx.ok(
            f'GET /metrics: edgeguard_alert_forwarder_outputs_total{{destination="console",status="ok"}} {after} '
            f"(was {before})"
        )
    else:
        ctx.fail("the console delivery did not show up in /metrics within 10 s")
        return

    wrong = base64.b64encode(b"falco:not-the-token").decode()
    r = ctx.call(
        "alert-forwarder",
        "",
        body=_falco_json(FALCO_ALERT),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {wrong}"},
    )
    if r.status_code == 401:
        ctx.ok("a wrong token is refused with 401 and nothing is forwarded")
    else:
        ctx.fail(f"a wrong token got {r.status_code}")

    status = ctx.call("alert-forwarder", "", method="GET", token_secret="alert-forwarder-token").json()
    ctx.show(
        "GET / (configuration, no secrets)",
        {
            "routes": [
                f"{x['name']}: {' and '.join(x['matchers']) or '(rest)'} -> {x['to']}" for x in status["routes"]
            ],
            "destinations": {n: d["state"] for n, d in status["destinations"].items()},
            "spool_depth": status["spool"]["depth"],
        },
    )
