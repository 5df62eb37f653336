"""alert-forwarder's state on the real kube-apiserver (v1.24), with exactly the rights of
deploy/rbac/alert-forwarder.yaml: per-node alert tokens (issue 12 §7) and the spool handover (issue 11 §3)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster


def node_token() -> tuple[str, str]:
    """What node-enroll mints: 32 random bytes base64url, stored as sha256:<hex>."""
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return token, "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def basic(user, password):
    return {
        "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
        "Content-Type": "application/json",
    }


def wait(pred, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_per_node_tokens_are_accepted_revoked_within_the_ttl_and_the_fleet_token_keeps_working(
    forwarder_kube, load_handler, h
):
    pi1, pi1_hash = node_token()
    pi2, pi2_hash = node_token()
    forwarder_kube.set_node_tokens({"pi-01": pi1_hash, "pi-02": pi2_hash})
    mod = load_handler(env={"node_tokens_ttl": "5s"}, secrets={"alert-forwarder-kubeconfig": forwarder_kube.kubeconfig})
    wait(lambda: mod.NODE_TOKENS.status()["nodes"] == 2, "the node tokens to be read")
    al = h.falco_alert(priority="Warning")
    assert h.call(mod, "POST", "/", al, headers=basic("pi-01", pi1))["statusCode"] == 202
    assert h.call(mod, "POST", "/", al, headers=basic("pi-02", pi1))["statusCode"] == 401  # another node's token
    assert h.call(mod, "POST", "/", al, headers=basic("pi-03", pi1))["statusCode"] == 401  # unknown node
    assert h.call(mod, "POST", "/", al, headers=basic("falco", h.TOKEN))["statusCode"] == 202  # the fleet token
    assert (
        h.call(mod, "POST", "/", al, headers={"Authorization": f"Bearer {pi1}", "Content-Type": "application/json"})[
            "statusCode"
        ]
        == 401
    )
    # Node tokens are for the alert input only.
    assert h.call(mod, "GET", "/metrics", headers=basic("pi-01", pi1))["statusCode"] == 401
    revoked_at = time.monotonic()
    forwarder_kube.set_node_tokens({"pi-02": pi2_hash})  # node-enroll revokes pi-01: its key goes
    wait(lambda: not mod.NODE_TOKENS.verify("pi-01", pi1), "pi-01's token to be refused", timeout=5)
    took = time.monotonic() - revoked_at
    assert h.call(mod, "POST", "/", al, headers=basic("pi-01", pi1))["statusCode"] == 401
    assert took < 5, took  # within the TTL (the watch makes it about a second)
    assert h.call(mod, "POST", "/", al, headers=basic("pi-02", pi2))["statusCode"] == 202
    assert h.call(mod, "POST", "/", al, headers=basic("falco", h.TOKEN))["statusCode"] == 202
    text = h.call(mod, "GET", "/metrics")["body"]
    assert 'edgeguard_alert_forwarder_senders_total{sender="node"} 2' in text
    assert 'edgeguard_alert_forwarder_senders_total{sender="fleet"} 2' in text
    st = json.loads(h.call(mod, "GET", "/")["body"])["node_tokens"]
    assert st["nodes"] == 1 and st["in_sync"] and pi2_hash not in json.dumps(st)


def test_node_tokens_fail_closed_when_the_secret_cannot_be_read(forwarder_kube, load_handler, h):
    """With a credential the API server refuses, node tokens are never accepted; the fleet token still is."""
    pi1, pi1_hash = node_token()
    forwarder_kube.set_node_tokens({"pi-01": pi1_hash})
    bad = forwarder_kube.kubeconfig.replace(forwarder_kube.token, "not-a-valid-token")
    mod = load_handler(env={"node_tokens_ttl": "1s"}, secrets={"alert-forwarder-kubeconfig": bad})
    time.sleep(1.0)
    al = h.falco_alert()
    assert h.call(mod, "POST", "/", al, headers=basic("pi-01", pi1))["statusCode"] == 401
    assert h.call(mod, "POST", "/", al, headers=basic("falco", h.TOKEN))["statusCode"] == 202
    st = json.loads(h.call(mod, "GET", "/")["body"])["node_tokens"]
    assert st["in_sync"] is False and "401" in st["last_error"]


def test_the_identity_reads_no_other_secret(forwarder_kube):
    """Least privilege, shown on the real RBAC: list/watch only by these names, no get, nothing else."""
    from tests.realkube import ALERT_FORWARDER_RIGHTS, alert_forwarder_rights

    api = forwarder_kube.cluster.api_client(forwarder_kube.kubeconfig)
    assert alert_forwarder_rights(api) == ALERT_FORWARDER_RIGHTS


# ----------------------------------------------------------------------------- the spool across pod replacement

HANDOVER_ROUTES = """
destinations:
  ac: {type: webhook, insecure_http: true, timeout: 1s, retries: 0, backoff: 0.1s}
routes:
  - {name: all, to: [ac]}
"""


def test_rolling_replacement_hands_every_spooled_alert_to_the_new_pod_exactly_once(
    forwarder_kube, serve_function, receiver, h, tmp_path
):
    """Issue 11 §3 done-when: N alerts spooled with the receiver down, the function process replaced as CE rolls
    it (new process up first, then the old one SIGTERMed: the watchdog, PID 1, gets it and passes it on), the
    receiver back: every alert delivered exactly once, by the new process, with the state on the real API
    server. Alerts that reach the old process after SIGTERM (it serves until healthcheck_interval ends) too."""
    import os
    import signal

    import requests

    forwarder_kube.clear_handover()
    port = h.free_port()  # the action centre is down
    secrets_ = {
        "alert-forwarder-token": h.TOKEN,
        "alert-forwarder-routes": HANDOVER_ROUTES,
        "alert-forwarder-destinations": json.dumps({"ac": {"url": f"http://127.0.0.1:{port}/in"}}),
        "alert-forwarder-kubeconfig": forwarder_kube.kubeconfig,
    }
    env = {"retry_tick_seconds": "0.2", "spool_retry_max_seconds": "1", "healthcheck_interval": "4s"}
    old = serve_function(
        "alert-forwarder",
        env={**env, "spool_dir": str(tmp_path / "old"), "HOSTNAME": "alert-forwarder-7d9f-old"},
        secrets=secrets_,
    )
    auth = {"Authorization": f"Bearer {h.TOKEN}"}
    sent = [h.falco_alert(rule=f"rule {i}", priority="Warning") for i in range(20)]
    for al in sent:
        assert requests.post(old.url + "/", json=al, headers=auth, timeout=5).status_code == 202
    wait(lambda: requests.get(old.url + "/", headers=auth, timeout=5).json()["spool"]["depth"] == 20, "20 spooled")

    new = serve_function(
        "alert-forwarder",
        env={**env, "spool_dir": str(tmp_path / "new"), "HOSTNAME": "alert-forwarder-7d9f-new"},
        secrets=secrets_,
    )
    # The watchdog's children, whichever of its (Go runtime) threads forked them: /proc/<pid>/task/<tid>/children
    # lists only what that one thread started.
    old_python = [
        int(c) for task in Path(f"/proc/{old.proc.pid}/task").iterdir() for c in (task / "children").read_text().split()
    ]
    assert old_python
    sigterm_at = time.monotonic()
    os.kill(old.proc.pid, signal.SIGTERM)  # to the watchdog only, as the kubelet signals PID 1
    wait(lambda: any(r.get("event") == "shutdown.handed_over" for r in old.log_records()), "the handover")
    handed_over_in = time.monotonic() - sigterm_at
    late = [h.falco_alert(rule=f"late {i}", priority="Warning") for i in range(5)]
    for al in late:  # the old pod is still an endpoint for a moment: these are written through
        assert requests.post(old.url + "/", json=al, headers=auth, timeout=5).status_code == 202
    old.proc.wait(15)  # the watchdog exits after healthcheck_interval
    # ... and the function with it (in a pod the container's end would kill it; here it must not linger)
    wait(
        lambda: (
            not any(
                Path(f"/proc/{pid}").exists()
                and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                for pid in old_python
            )
        ),
        "the old function to exit",
        timeout=5,
    )
    wait(
        lambda: requests.get(new.url + "/", headers=auth, timeout=5).json()["spool"]["depth"] == 25,
        "the new pod to hold all 25",
    )
    wait(
        lambda: (
            not (forwarder_kube.secret(*forwarder_kube.HANDOVER).data or {}).get("entries")
            or json.loads(base64.b64decode(forwarder_kube.secret(*forwarder_kube.HANDOVER).data["meta"]))["entries"]
            == 0
        ),
        "the handover Secret to be cleared",
    )

    back = receiver(port=port)
    back.wait_for(25, timeout=30)
    time.sleep(1.5)  # later retries must not send anything again
    keys = [r.headers["Idempotency-Key"] for r in back.requests]
    assert len(keys) == 25 and len(set(keys)) == 25, (len(keys), len(set(keys)))
    assert sorted(r.json()["rule"] for r in back.requests) == sorted(a["rule"] for a in sent + late)
    st = requests.get(new.url + "/", headers=auth, timeout=5).json()
    assert st["spool"]["depth"] == 0 and st["handover"]["imported"] == 25
    m = requests.get(new.url + "/metrics", headers=auth, timeout=5).text
    assert 'edgeguard_alert_forwarder_handover_total{direction="in"} 25' in m
    for sf in (old, new):
        assert h.TOKEN not in sf.logs() and forwarder_kube.token not in sf.logs()
    assert handed_over_in < 10, handed_over_in


def test_dedup_windows_split_by_the_rollout_overlap_are_merged_into_one_summary(forwarder_kube, load_handler, h):
    """During the surge both pods see repeats of one alert and each opens a window (each sends the first alert
    once: the documented duplicate of an overlap). The old pod hands its window over; the new pod's summary
    counts the repeats both saw."""
    forwarder_kube.clear_handover()
    kube = {"alert-forwarder-kubeconfig": forwarder_kube.kubeconfig}
    old = load_handler(secrets=kube)  # two processes' worth: each copy of the module has its own identity
    new = load_handler(secrets=kube)
    al = h.falco_alert(priority="Warning")
    for mod, repeats in ((old, 3), (new, 2)):
        outs = [json.loads(h.call(mod, "POST", "/", al)["body"])["alerts"][0] for _ in range(repeats + 1)]
        assert outs[0]["destinations"] == ["console"] and all(
            o["suppressed_by"] == ["console-warning"] for o in outs[1:]
        )
    done = old.FORWARDER.shutdown(drain_seconds=0.5, deadline_seconds=10)
    assert done["handed_over_at"] is not None and old.FORWARDER.dedup.open_windows() == 0
    wait(lambda: [w.suppressed for w in new.FORWARDER.dedup._windows.values()] == [5], "the merged window")
    assert new.FORWARDER.handover.stats["imported"] == 0  # no undelivered alerts: only the window moved
