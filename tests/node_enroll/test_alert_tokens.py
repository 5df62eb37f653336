"""Per-node alert tokens (issue 12 §7): minted at enrollment in host mode, stored as a hash, revoked with the node.

The format is the one alert-forwarder accepts (/work WAVE3 convention, docs/node-enroll.md): Secret
edgeguard-enroll/edgeguard-node-alert-tokens, data key = node name, value = sha256:<hex SHA-256 of the token>,
the token 32 random bytes base64url; Falco sends Basic auth user=<node>, password=<token>.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from tests.node_enroll.helpers import admin, call, enroll, enroll_doc, sub
from tests.node_enroll.scriptrun import run_script

HOST = {"falco_mode": "host", "public_gateway_url": "https://gw.edge.example:31112"}
SECRET = ("secrets", "edgeguard-enroll", "edgeguard-node-alert-tokens")


def stored(emu) -> dict:
    obj = emu.get(*SECRET)
    return {k: base64.b64decode(v).decode() for k, v in ((obj or {}).get("data") or {}).items()}


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_host_mode_enrollment_hands_out_a_token_once_and_keeps_only_its_hash(kenroll, make_event):
    fn, emu = kenroll(env=HOST)
    status, _, doc = enroll(fn, make_event)
    assert status == 201, doc
    token = doc["alert_token"]
    assert doc["alert_user"] == "pi-north-01"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token) and len(base64.urlsafe_b64decode(token + "=")) == 32
    assert stored(emu) == {"pi-north-01": digest(token)}
    assert token not in json.dumps(emu.get(*SECRET)) and token not in fn.log_buffer.getvalue()
    # GET /nodes says the node has one, never what it is
    status, _, listing = call(fn, make_event, method="GET", path="/nodes", headers=admin())
    assert listing["nodes"][0]["alert_token"] is True and token not in json.dumps(listing)


def test_re_enrollment_rotates_the_alert_token(kenroll, make_event):
    fn, emu = kenroll(env=HOST)
    _, _, first = enroll(fn, make_event)
    status, _, again = enroll(fn, make_event)
    assert status == 200 and again["reused"] is True and again["token"] == first["token"]
    assert again["alert_token"] != first["alert_token"]
    assert stored(emu) == {"pi-north-01": digest(again["alert_token"])}


def test_the_join_script_pipes_the_token_whose_hash_is_stored(kenroll, make_event, tmp_path):
    fn, emu = kenroll(env=HOST)
    status, _, script = enroll(fn, make_event, query={"format": "sh"})
    assert status == 201
    run = run_script(script, tmp_path)
    assert run.rc == 0, run.stderr
    piped = run.env["BOOTSTRAP_STDIN"].strip()
    assert stored(emu) == {"pi-north-01": digest(piped)}
    assert run.calls[-1][-4:] == ["--node-name", "pi-north-01", "--alert-token-stdin", "--yes"]
    assert piped not in fn.log_buffer.getvalue()


def test_revoking_a_node_deletes_its_key_and_only_its_key(kenroll, make_event):
    fn, emu = kenroll(env=HOST)
    enroll(fn, make_event)
    _, _, other = enroll(fn, make_event, enroll_doc(hostname="pi-2", machine_id="2" * 32))
    status, _, res = call(fn, make_event, method="DELETE", path="/nodes/pi-north-01", headers=admin())
    assert status == 200 and res["alert_token_revoked"] is True, res
    assert stored(emu) == {"pi-2": digest(other["alert_token"])}
    # a node whose enrollment is long gone but whose alert token remains is still revocable
    for e in sub(fn, "store").Store().list_enrollments():
        sub(fn, "store").Store().revoke(e)
    status, _, res = call(fn, make_event, method="DELETE", path="/nodes/pi-2", headers=admin())
    assert status == 200 and res == {"node": "pi-2", "revoked": [], "alert_token_revoked": True}
    assert stored(emu) == {}
    assert call(fn, make_event, method="DELETE", path="/nodes/pi-2", headers=admin())[0] == 404


def test_helm_mode_mints_no_alert_token(kenroll, make_event):
    fn, emu = kenroll()
    status, _, doc = enroll(fn, make_event)
    assert status == 201 and "alert_token" not in doc
    assert emu.get(*SECRET) is None


def test_a_concurrent_change_to_the_secret_is_not_lost(kenroll, make_event):
    """The patch carries the resourceVersion it read; a write in between makes it 409, and it reads again."""
    fn, emu = kenroll(env=HOST)
    enroll(fn, make_event, enroll_doc(hostname="pi-2", machine_id="2" * 32))
    store_mod = sub(fn, "store")
    real = store_mod.Store._alert_tokens
    raced = []

    def read_then_race(self):
        current = real(self)
        if not raced:  # someone else (another enrollment, an operator) changes it right after our read
            raced.append(1)
            obj = emu.get(*SECRET)
            obj["data"]["pi-3"] = base64.b64encode(digest("x").encode()).decode()
            emu.store.update(emu.resource("secrets"), "edgeguard-enroll", "edgeguard-node-alert-tokens", obj)
        return current

    store_mod.Store._alert_tokens = read_then_race
    try:
        status, _, doc = enroll(fn, make_event)
    finally:
        store_mod.Store._alert_tokens = real
    assert status == 201, doc
    assert set(stored(emu)) == {"pi-north-01", "pi-2", "pi-3"}
    assert stored(emu)["pi-north-01"] == digest(doc["alert_token"])
    assert [v for v, p, s in emu.requests if "edgeguard-node-alert-tokens" in p and s == 409] == ["patch"]


def test_an_api_failure_storing_the_hash_hands_out_no_alert_token(kenroll, make_event):
    fn, emu = kenroll(env=HOST)
    enroll(fn, make_event, enroll_doc(hostname="pi-2", machine_id="2" * 32))
    emu.fail("patch", "secrets", status=500, times=1, namespace="edgeguard-enroll", name="edgeguard-node-alert-tokens")
    status, _, doc = enroll(fn, make_event)
    assert status == 502 and "alert_token" not in doc, doc
    status, _, doc = enroll(fn, make_event)  # the node retries: same bootstrap token, and now its alert token
    assert status == 200 and stored(emu)["pi-north-01"] == digest(doc["alert_token"])
