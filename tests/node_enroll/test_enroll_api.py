"""POST /enroll end to end: the real kubernetes client against the in-process API emulator."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.node_enroll import k3s_model
from tests.node_enroll.helpers import (
    ADMIN,
    CA_HASH,
    CA_PEM,
    KEY,
    SERVER,
    call,
    enroll,
    enroll_doc,
    kubeconfig_with_ca,
    records_of,
    seed_enrollment,
    signed,
    sub,
)
from tests.node_enroll.scriptrun import run_script


def secrets_of(emu):
    return [s for s in emu.list("secrets", "kube-system") if s["metadata"]["name"].startswith("bootstrap-token-")]


def the_secret(emu, token_id):
    return emu.get("secrets", "kube-system", f"bootstrap-token-{token_id}")


def test_enroll_writes_a_bootstrap_token_secret_that_k3s_accepts_key_by_key(kenroll, make_event):
    fn, emu = kenroll()
    status, headers, doc = enroll(fn, make_event)
    assert status == 201, doc
    secret = the_secret(emu, doc["token_id"])
    assert k3s_model.rejection(secret, doc["token"], CA_PEM) is None
    data = k3s_model.decoded(secret)
    assert set(data) == k3s_model.K3S_SECRET_KEYS
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["metadata"]["name"] == "bootstrap-token-" + data["token-id"]
    assert data["usage-bootstrap-authentication"] == "true"
    assert data["usage-bootstrap-signing"] == "true"
    assert data["auth-extra-groups"] == "system:bootstrappers:k3s:default-node-token"
    assert data["description"] == "edgeguard node-enroll token for node pi-north-01 (arm64)"
    expires = datetime.strptime(data["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((expires - datetime.now(UTC)) - timedelta(hours=1)) < timedelta(seconds=10)
    assert doc["expires_at"] == data["expiration"]
    assert headers["Cache-Control"] == "no-store"


def test_response_carries_secure_token_server_labels_taints_and_expiry(kenroll, make_event):
    fn, emu = kenroll()
    status, _, doc = enroll(fn, make_event, enroll_doc(labels={"node.edgeguard.io/site": "north"}))
    assert status == 201
    assert k3s_model.TOKEN_RE.match(doc["token"]) and doc["token"].startswith("K10" + CA_HASH + "::")
    assert doc["server"] == SERVER and doc["ca_hash"] == CA_HASH and doc["ca_hash_source"] == "k3s_ca_file"
    assert doc["labels"] == {"node.edgeguard.io/site": "north", "edgeguard.io/enrolled-by": "node-enroll"}
    assert doc["taints"] == [] and doc["reused"] is False and doc["node"] == "pi-north-01" and doc["arch"] == "arm64"
    assert doc["install"]["INSTALL_K3S_EXEC"].startswith("agent --node-name pi-north-01 ")


def test_kube_system_secrets_are_only_ever_created_or_deleted_never_read(kenroll, make_event):
    fn, emu = kenroll()
    emu.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "k3s-serving", "namespace": "kube-system"},
            "type": "kubernetes.io/tls",
            "data": {"tls.key": "c2VjcmV0"},
        }
    )
    emu.clear_requests()
    status, _, doc = enroll(fn, make_event)
    assert status == 201
    assert enroll(fn, make_event)[0] == 200
    assert enroll(fn, make_event, enroll_doc(rotate=True))[0] == 201
    secret_calls = [(v, p) for v, p, _ in emu.requests if "/secrets" in p]
    in_kube_system = [(v, p) for v, p in secret_calls if p.startswith("/api/v1/namespaces/kube-system/secrets")]
    elsewhere = [(v, p) for v, p in secret_calls if (v, p) not in in_kube_system]
    assert in_kube_system and {v for v, _ in in_kube_system} <= {"create", "delete"}
    assert all(p.startswith("/api/v1/namespaces/edgeguard-enroll/secrets") for _, p in elsewhere)
    assert not any("k3s-serving" in p for _, p in secret_calls)
    assert "c2VjcmV0" not in json.dumps(doc)


def test_enrollment_is_recorded_in_the_records_namespace_and_reuse_comes_from_the_record(kenroll, make_event):
    fn, emu = kenroll()
    _, _, doc = enroll(fn, make_event)
    (record,) = records_of(emu)
    assert record["metadata"]["name"] == f"enroll-{doc['token_id']}"
    assert record["type"] == "edgeguard.io/node-enroll-record"
    assert k3s_model.decoded(record)["token-secret"] == doc["token"].rsplit(".", 1)[1]
    # The kube-system copy is not read back: even gone, the record answers the re-enrollment...
    emu.store.delete(emu.resource("secrets"), "kube-system", f"bootstrap-token-{doc['token_id']}")
    status, _, again = enroll(fn, make_event)
    assert status == 200 and again["token"] == doc["token"]
    # ...and the token k3s needs is put back, so a crash between the two writes converges.
    assert k3s_model.rejection(the_secret(emu, doc["token_id"]), doc["token"], CA_PEM) is None


def test_crash_after_the_record_before_the_token_converges_on_re_enrollment(kenroll, make_event):
    fn, emu = kenroll()
    emu.fail("create", "secrets", status=500, times=1, namespace="kube-system")
    assert enroll(fn, make_event)[0] == 502
    assert len(records_of(emu)) == 1 and secrets_of(emu) == []
    status, _, doc = enroll(fn, make_event)
    assert status == 200 and doc["reused"] is True
    assert k3s_model.rejection(the_secret(emu, doc["token_id"]), doc["token"], CA_PEM) is None


def test_token_id_taken_in_kube_system_by_a_foreign_secret_is_not_used(kenroll, make_event):
    fn, emu = kenroll()
    emu.fail("create", "secrets", status=409, times=1, namespace="kube-system")
    status, _, doc = enroll(fn, make_event)
    assert status == 201
    (record,) = records_of(emu)
    assert record["metadata"]["name"] == f"enroll-{doc['token_id']}"
    assert k3s_model.rejection(the_secret(emu, doc["token_id"]), doc["token"], CA_PEM) is None


def test_long_expired_records_are_removed(kenroll, make_event):
    fn, emu = kenroll()
    past = datetime.now(UTC) - timedelta(days=3)
    seed_enrollment(
        emu,
        fn,
        token_id="old333",
        token_secret="c" * 16,
        hostname="pi-gone",
        arch="arm64",
        machine_id="3" * 32,
        labels={},
        taints=[],
        expires_at=past + timedelta(hours=1),
        now=past,
        source=None,
    )
    assert enroll(fn, make_event)[0] == 201
    assert [r["metadata"]["name"] for r in records_of(emu)] != [] and "enroll-old333" not in [
        r["metadata"]["name"] for r in records_of(emu)
    ]
    assert the_secret(emu, "old333") is None


@pytest.mark.parametrize("how", ["accept", "query"])
def test_script_answer_installs_agent_with_the_same_token(kenroll, make_event, tmp_path, how):
    fn, emu = kenroll()
    _, _, first = enroll(fn, make_event)
    kw = {"headers": {"Accept": "text/x-shellscript"}} if how == "accept" else {"query": {"format": "sh"}}
    status, headers, script = enroll(fn, make_event, **kw)
    assert status == 200 and headers["Content-Type"].startswith("text/x-shellscript")
    run = run_script(script, tmp_path)
    assert run.rc == 0, run.stderr
    assert run.env["K3S_TOKEN"] == first["token"] and run.env["K3S_URL"] == SERVER
    assert run.env["INSTALL_K3S_EXEC"] == first["install"]["INSTALL_K3S_EXEC"]
    assert [c[0] for c in run.calls] == ["id", "curl", "sh", "systemctl"]
    assert len(secrets_of(emu)) == 1


def test_host_mode_script_runs_bootstrap_falco_against_the_public_gateway(kenroll, make_event, tmp_path):
    fn, _ = kenroll(env={"falco_mode": "host", "public_gateway_url": "https://gw.edge.example:31112"})
    status, _, script = enroll(fn, make_event, query={"format": "sh"})
    assert status == 201
    run = run_script(script, tmp_path)
    assert run.rc == 0, run.stderr
    assert run.calls[-1] == [
        "edgeguard-bootstrap",
        "falco",
        "--mode",
        "host",
        "--gateway",
        "https://gw.edge.example:31112",
        "--node-name",
        "pi-north-01",
        "--alert-token-stdin",
        "--yes",
    ]


def test_host_mode_without_public_gateway_is_a_config_error_and_creates_nothing(kenroll, make_event):
    fn, emu = kenroll(env={"falco_mode": "host"})
    status, _, doc = enroll(fn, make_event, query={"format": "sh"})
    assert status == 503 and "public_gateway_url" in doc["error"]
    assert secrets_of(emu) == []


# ------------------------------------------------------------------ authentication


def test_replayed_request_is_refused_and_creates_nothing_new(kenroll, make_event):
    fn, emu = kenroll()
    body, h = signed(enroll_doc())
    assert call(fn, make_event, body=body, headers=h)[0] == 201
    status, _, doc = call(fn, make_event, body=body, headers=h)
    assert status == 401 and "replayed" in doc["error"]
    assert len(secrets_of(emu)) == 1


def test_a_captured_request_is_useless_after_a_restart(kenroll, enroll_fn, make_event, kube_emulator):
    """issue 17 §1, the reproducer: signed ahead of the clock, replayed after a restart. It got 201 and a new join
    token; the accepted nonce is now in edgeguard-enroll/edgeguard-enroll-nonces before anything is issued."""
    fn, emu = kenroll()
    body, h = signed(enroll_doc(), timestamp=int(time.time()) + 20)
    assert call(fn, make_event, body=body, headers=h)[0] == 201
    stored = emu.get("secrets", "edgeguard-enroll", "edgeguard-enroll-nonces")
    assert h["X-Enroll-Nonce"] in stored["data"]
    restarted = enroll_fn(secrets={"node-enroll-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict())})
    before = [s["metadata"]["name"] for s in secrets_of(emu)]
    status, _, doc = call(restarted, make_event, body=body, headers=h)
    assert status == 401 and "replayed" in doc["error"], doc
    assert [s["metadata"]["name"] for s in secrets_of(emu)] == before
    assert enroll(restarted, make_event, enroll_doc(rotate=True))[0] == 201  # freshly signed requests still pass


def test_the_issues_240_s_ahead_request_is_refused_outright(kenroll, make_event):
    fn, emu = kenroll()
    status, _, doc = enroll(fn, make_event, timestamp=int(time.time()) + 240)
    assert status == 401 and "ahead of the server clock (limit 30s)" in doc["error"], doc
    assert nothing_minted(emu) and emu.requests == []


@pytest.mark.parametrize("verb", ["list", "patch"])
def test_a_replay_window_the_api_will_not_read_or_write_issues_nothing(kenroll, make_event, verb):
    fn, emu = kenroll()
    emu.fail(verb, "secrets", status=500, times=3, namespace="edgeguard-enroll")
    status, _, doc = enroll(fn, make_event)
    assert status == 502, doc
    assert secrets_of(emu) == []


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("wrong_key", "signature does not match"),
        ("tampered_body", "signature does not match"),
        ("old", "behind the server clock"),
        ("future", "ahead of the server clock"),
        ("no_signature", "signed request required"),
        ("bad_nonce", "X-Enroll-Nonce"),
        ("bad_sig_format", "v1=<64 lowercase hex>"),
    ],
)
def test_forged_stale_or_unsigned_requests_are_refused(kenroll, make_event, case, fragment):
    fn, emu = kenroll()
    doc = enroll_doc()
    kw = {}
    if case == "wrong_key":
        kw["key"] = KEY + "-not"
    if case == "old":
        kw["timestamp"] = int(time.time()) - 301
    if case == "future":
        kw["timestamp"] = int(time.time()) + 400
    if case == "bad_nonce":
        kw["nonce"] = "short"
    body, h = signed(doc, **kw)
    if case == "tampered_body":
        body = body.replace(b"pi-north-01", b"pi-evil-666")
    if case == "no_signature":
        del h["X-Enroll-Signature"]
    if case == "bad_sig_format":
        h["X-Enroll-Signature"] = "sha256=abc"
    status, headers, answer = call(fn, make_event, body=body, headers=h)
    assert status == 401 and fragment in answer["error"], answer
    assert "WWW-Authenticate" in headers
    assert secrets_of(emu) == []
    assert emu.requests == []  # refused before the cluster is even asked


def test_missing_enrollment_key_fails_closed_and_names_it_only_in_the_log(kenroll, make_event):
    fn, emu = kenroll(secrets={"node-enroll-key": None})
    status, _, doc = enroll(fn, make_event)
    assert status == 503 and "node-enroll-key" not in json.dumps(doc)
    assert "node-enroll-key" in fn.log_buffer.getvalue()
    assert secrets_of(emu) == []


@pytest.mark.parametrize(
    "env,detail",
    [
        ({"k3s_server_url": ""}, "k3s_server_url"),
        ({"k3s_ca_file": "/nonexistent/ca.crt"}, "/nonexistent/ca.crt"),
        ({"token_ttl": "forever"}, "token_ttl"),
        ({"allowlist": "- {labels: {a.example.com/b: c}}"}, "hostname pattern"),
        ({"rate_limit_per_minute": "lots"}, "rate_limit_per_minute"),
    ],
)
def test_unauthenticated_callers_get_a_generic_503_without_configuration_details(kenroll, make_event, env, detail):
    fn, emu = kenroll(env=env)
    unsigned = (b"{}", {"Content-Type": "application/json"})
    for body, headers in (signed(enroll_doc(), key="wrong-key-wrong-key"), unsigned):
        status, _, doc = call(fn, make_event, body=body, headers=headers)
        assert status in (401, 503), doc
        assert detail not in json.dumps(doc) and "misconfigured:" not in json.dumps(doc)
    assert secrets_of(emu) == []


def test_signed_callers_still_get_the_misconfiguration_detail(kenroll, make_event):
    fn, _ = kenroll(env={"k3s_server_url": ""})
    body, h = signed(enroll_doc(), key="wrong-key-wrong-key")
    assert call(fn, make_event, body=body, headers=h)[0] == 401
    status, _, doc = enroll(fn, make_event)
    assert status == 503 and "k3s_server_url" in doc["error"]


def test_settings_are_read_once_at_start_up(kenroll, make_event, monkeypatch):
    fn, emu = kenroll(env={"token_ttl": "2h"})
    # a changed environment only takes effect with a new process, as in a pod
    monkeypatch.setenv("k3s_server_url", "")
    monkeypatch.setenv("token_ttl", "forever")
    monkeypatch.setenv("rate_limit_per_minute", "lots")
    status, _, doc = enroll(fn, make_event)
    assert status == 201 and doc["server"] == SERVER, doc
    expires = datetime.strptime(doc["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((expires - datetime.now(UTC)) - timedelta(hours=2)) < timedelta(seconds=10)


def test_a_bad_setting_is_a_503_naming_it_for_an_admin(kenroll, make_event):
    fn, _ = kenroll(env={"token_ttl": "forever"})
    status, _, doc = call(fn, make_event, method="GET", path="/nodes", headers={"Authorization": f"Bearer {ADMIN}"})
    assert status == 503 and doc["error"].startswith("node-enroll is misconfigured: ") and "token_ttl" in doc["error"]
    assert doc.get("misconfigured") is True


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "doc,status,fragment",
    [
        ({"hostname": "pi-1"}, 400, "missing field"),
        (enroll_doc(hostname="Not A Name"), 400, "valid node name"),
        (enroll_doc(arch="sparc"), 400, "unsupported arch"),
        (enroll_doc(labels={"node-role.kubernetes.io/worker": "true"}), 422, "node-role"),
        (enroll_doc(labels={"team": "a"}), 422, "allowed prefix"),
        (enroll_doc(surprise=1), 400, "unknown field"),
        ("[1, 2", 400, "invalid JSON"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_nothing_is_created(kenroll, make_event, doc, status, fragment):
    fn, emu = kenroll()
    body, h = signed(doc)
    got, _, answer = call(fn, make_event, body=body, headers=h)
    assert got == status and fragment in answer["error"], answer
    assert secrets_of(emu) == []


def nothing_minted(emu):
    return secrets_of(emu) == [] and records_of(emu) == []


@pytest.mark.parametrize("fmt", [{}, {"format": "sh"}])
@pytest.mark.parametrize(
    "labels",
    [
        {"node.edgeguard.io/site": "north\n"},  # issue 17 §5: Python's $ matched before the final newline
        {"node.edgeguard.io/site\n": "north"},
        {"node.edgeguard.io\n/site": "north"},
    ],
)
def test_a_trailing_newline_in_a_label_is_a_422_and_mints_nothing(kenroll, make_event, fmt, labels):
    fn, emu = kenroll()
    status, _, doc = enroll(fn, make_event, enroll_doc(labels=labels), query=fmt)
    assert status == 422 and "label" in doc["error"], doc
    assert "misconfigured" not in doc["error"]
    assert nothing_minted(emu)
    assert enroll(fn, make_event)[0] == 201  # and the function is fine afterwards


@pytest.mark.parametrize("field,value", [("hostname", "pi-north-01\n\n"), ("machine_id", "0" * 32 + "\n\n")])
def test_other_fields_with_trailing_newlines_are_normalised_or_refused_before_minting(
    kenroll, make_event, field, value
):
    fn, emu = kenroll()
    status, _, doc = enroll(fn, make_event, enroll_doc(**{field: value}))
    # surrounding whitespace is stripped from these two, as before; what remains must fully match
    assert status == 201, doc
    assert "\n" not in json.dumps(doc["install"]) and doc["node"] == "pi-north-01"


@pytest.mark.parametrize(
    "raw,where",
    [
        # issue 17 §3: valid JSON text, lone surrogates once decoded; this got an HTML 500
        (
            b'{"hostname":"pi-north-01","arch":"aarch64","machine_id":"0123456789abcdef0123456789abcdef","\\ud800":1}',
            "$",
        ),
        (b'{"hostname":"pi-\\ud800","arch":"aarch64","machine_id":"0123456789abcdef0123456789abcdef"}', "$.hostname"),
        (
            b'{"hostname":"pi-north-01","arch":"aarch64","machine_id":"0123456789abcdef0123456789abcdef",'
            b'"labels":{"node.edgeguard.io/site":"\\udfff"}}',
            "$.labels",
        ),
    ],
)
def test_a_signed_body_with_a_lone_surrogate_is_a_400_naming_where(kenroll, make_event, raw, where):
    fn, emu = kenroll()
    body, h = signed(raw)
    status, headers, doc = call(fn, make_event, body=body, headers=h)
    assert status == 400 and headers["Content-Type"] == "application/json", doc
    assert doc["path"].startswith(where) and "surrogate" in doc["error"]
    assert nothing_minted(emu)


def test_wrong_content_type_and_oversized_bodies_are_refused(kenroll, make_event):
    fn, emu = kenroll(env={"max_body_bytes": "2048"})
    body, h = signed(enroll_doc())
    h["Content-Type"] = "text/plain"
    assert call(fn, make_event, body=body, headers=h)[0] == 415
    big, h = signed(enroll_doc(labels={f"node.edgeguard.io/k{i}": "v" * 60 for i in range(40)}))
    assert call(fn, make_event, body=big, headers=h)[0] == 413
    assert secrets_of(emu) == []


def test_unknown_route_and_wrong_method(kenroll, make_event):
    fn, _ = kenroll()
    assert call(fn, make_event, method="GET", path="/enroll")[0] == 405
    assert call(fn, make_event, method="GET", path="/nope")[0] == 404


# ------------------------------------------------------------------ allowlist

ALLOWLIST = json.dumps(
    [
        {
            "hostname": "pi-north-*",
            "labels": {"edge.example.com/site": "north"},
            "taints": ["edge.example.com/dedicated=edge:NoSchedule"],
        },
    ]
)


def test_allowlist_maps_the_node_to_labels_and_taints_everywhere(kenroll, make_event, tmp_path):
    fn, emu = kenroll(env={"allowlist": ALLOWLIST})
    status, _, doc = enroll(fn, make_event)
    assert status == 201
    assert doc["labels"]["edge.example.com/site"] == "north"
    assert doc["taints"] == ["edge.example.com/dedicated=edge:NoSchedule"]
    ann = the_secret(emu, doc["token_id"])["metadata"]["annotations"]
    assert json.loads(ann["node-enroll.edgeguard.io/taints"]) == doc["taints"]
    _, _, script = enroll(fn, make_event, query={"format": "sh"})
    run = run_script(script, tmp_path)
    assert "--node-label edge.example.com/site=north" in run.env["INSTALL_K3S_EXEC"]
    assert "--node-taint edge.example.com/dedicated=edge:NoSchedule" in run.env["INSTALL_K3S_EXEC"]


def test_node_outside_the_allowlist_is_refused(kenroll, make_event):
    fn, emu = kenroll(env={"allowlist": ALLOWLIST})
    status, _, doc = enroll(fn, make_event, enroll_doc(hostname="rogue-1"))
    assert status == 403 and "allowlist" in doc["error"]
    assert secrets_of(emu) == []


def test_allowlist_file_is_read(kenroll, make_event, tmp_path):
    f = tmp_path / "allow.yaml"
    f.write_text(yaml.safe_dump(json.loads(ALLOWLIST)))
    fn, _ = kenroll(env={"allowlist_file": str(f)})
    assert enroll(fn, make_event, enroll_doc(hostname="south-1"))[0] == 403


def test_broken_allowlist_is_reported_as_misconfiguration(kenroll, make_event):
    fn, emu = kenroll(env={"allowlist": "- {labels: {a.example.com/b: c}}"})
    status, _, doc = enroll(fn, make_event)
    assert status == 503 and "needs a hostname pattern" in doc["error"]


# ------------------------------------------------------------------ idempotency, rotation, caps


def test_same_machine_within_ttl_gets_its_existing_token_back(kenroll, make_event):
    fn, emu = kenroll()
    s1, _, first = enroll(fn, make_event)
    s2, _, again = enroll(fn, make_event)
    assert (s1, s2) == (201, 200)
    assert again["token"] == first["token"] and again["reused"] is True
    assert len(secrets_of(emu)) == 1


def test_rotate_issues_a_new_token_and_revokes_the_old_one(kenroll, make_event):
    fn, emu = kenroll()
    _, _, first = enroll(fn, make_event)
    status, _, rotated = enroll(fn, make_event, enroll_doc(rotate=True))
    assert status == 201 and rotated["token"] != first["token"]
    assert rotated["revoked"] == [first["token_id"]]
    assert the_secret(emu, first["token_id"]) is None
    assert k3s_model.rejection(None, first["token"], CA_PEM) == "no Secret for this token id"
    assert k3s_model.rejection(the_secret(emu, rotated["token_id"]), rotated["token"], CA_PEM) is None


def test_same_machine_asking_for_other_settings_must_rotate(kenroll, make_event):
    fn, emu = kenroll()
    enroll(fn, make_event)
    status, _, doc = enroll(fn, make_event, enroll_doc(labels={"node.edgeguard.io/site": "b"}))
    assert status == 409 and "rotate" in doc["error"]
    assert len(secrets_of(emu)) == 1


def test_another_machine_cannot_take_a_hostname_with_an_outstanding_token(kenroll, make_event):
    fn, emu = kenroll()
    enroll(fn, make_event)
    status, _, doc = enroll(fn, make_event, enroll_doc(machine_id="f" * 32))
    assert status == 409 and "another machine" in doc["error"]
    assert len(secrets_of(emu)) == 1


def test_hostname_of_an_existing_node_is_refused(kenroll, make_event):
    fn, emu = kenroll()
    emu.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "pi-north-01"}})
    status, _, doc = enroll(fn, make_event)
    assert status == 409 and "already in the cluster" in doc["error"]
    assert secrets_of(emu) == []


def test_expired_token_is_not_reused_and_does_not_count(kenroll, make_event):
    fn, emu = kenroll(env={"max_outstanding_tokens": "1"})
    past = datetime.now(UTC) - timedelta(hours=2)
    seed_enrollment(
        emu,
        fn,
        token_id="old111",
        token_secret="a" * 16,
        hostname="pi-north-01",
        arch="arm64",
        machine_id=enroll_doc()["machine_id"],
        labels={},
        taints=[],
        expires_at=past + timedelta(hours=1),
        now=past,
        source=None,
    )
    status, _, doc = enroll(fn, make_event)
    assert status == 201 and doc["token_id"] != "old111" and doc["reused"] is False


def test_cap_on_outstanding_tokens(kenroll, make_event):
    fn, emu = kenroll(env={"max_outstanding_tokens": "2"})
    for i in range(2):
        assert enroll(fn, make_event, enroll_doc(hostname=f"pi-{i}", machine_id=f"{i}" * 32))[0] == 201
    status, headers, doc = enroll(fn, make_event, enroll_doc(hostname="pi-9", machine_id="9" * 32))
    assert status == 429 and "outstanding" in doc["error"] and headers["Retry-After"]
    assert len(secrets_of(emu)) == 2


def test_token_of_a_joined_node_is_consumed(kenroll, make_event):
    fn, emu = kenroll()
    _, _, first = enroll(fn, make_event)
    emu.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "pi-north-01"}})
    assert enroll(fn, make_event, enroll_doc(hostname="pi-2", machine_id="2" * 32))[0] == 201
    assert the_secret(emu, first["token_id"]) is None


def test_rate_limit_per_node_whatever_address_headers_say(kenroll, make_event):
    """issue 17 §6: the real watchdog drops X-Forwarded-For, so a per-address limit was one shared bucket; the
    limit is per node the signed body names, and no header moves a request into another bucket."""
    fn, emu = kenroll(env={"rate_limit_per_minute": "2"})
    results = [
        enroll(
            fn,
            make_event,
            enroll_doc(rotate=True),
            headers={"X-Forwarded-For": f"198.51.100.{i}", "X-Real-Ip": f"203.0.113.{i}"},
        )[0]
        for i in range(3)
    ]
    assert results == [201, 201, 429]
    # other nodes are not held back by this one
    assert [enroll(fn, make_event, enroll_doc(hostname=f"pi-{i}", machine_id=f"{i}" * 32))[0] for i in range(2)] == [
        201,
        201,
    ]
    limited = [json.loads(line) for line in fn.log_buffer.getvalue().splitlines() if "enroll.rate_limited" in line]
    assert [(r["scope"], r["node"]) for r in limited] == [("node", "pi-north-01")]


def test_global_limit_holds_across_node_names(kenroll, make_event):
    fn, emu = kenroll(env={"rate_limit_global_per_minute": "3", "rate_limit_per_minute": "100"})
    results = [enroll(fn, make_event, enroll_doc(hostname=f"pi-{i}", machine_id=f"{i}" * 32))[0] for i in range(5)]
    assert results == [201, 201, 201, 429, 429]
    assert len(secrets_of(emu)) == 3


def test_unsigned_requests_naming_a_node_cannot_drain_its_bucket(kenroll, make_event):
    fn, _ = kenroll(env={"rate_limit_per_minute": "2"})
    for _ in range(5):  # an attacker without the key names the real node, and its address
        body, h = signed(enroll_doc(), key="wrong-key-xxxxxxxx", extra={"X-Real-Ip": "192.0.2.10"})
        assert call(fn, make_event, body=body, headers=h)[0] == 401
    assert enroll(fn, make_event)[0] == 201  # the node still enrolls


def test_the_record_says_which_header_named_the_source_and_nothing_else_is_taken(kenroll, make_event):
    fn, emu = kenroll()
    _, _, doc = enroll(fn, make_event, headers={"X-Real-Ip": "203.0.113.7", "X-Forwarded-For": "198.51.100.1"})
    ann = records_of(emu)[0]["metadata"]["annotations"]
    assert ann["node-enroll.edgeguard.io/source-address"] == "203.0.113.7"
    assert ann["node-enroll.edgeguard.io/source-address-from"] == "X-Real-Ip header, unverified"
    _, _, other = enroll(fn, make_event, enroll_doc(hostname="pi-2", machine_id="2" * 32))  # X-Forwarded-For only
    rec = next(r for r in records_of(emu) if r["metadata"]["name"] == f"enroll-{other['token_id']}")
    assert not any(k.startswith("node-enroll.edgeguard.io/source-address") for k in rec["metadata"]["annotations"])


def test_unsigned_requests_share_one_bucket_whatever_address_they_claim(kenroll, make_event):
    fn, emu = kenroll(env={"rate_limit_unsigned_per_minute": "3", "rate_limit_per_minute": "100"})
    results = []
    for i in range(5):
        body, h = signed(enroll_doc(), key="wrong-key-xxxxxxxx", extra={"X-Real-Ip": f"203.0.113.{i}"})
        status, headers, _ = call(fn, make_event, body=body, headers=h)
        results.append(status)
    assert results == [401, 401, 401, 429, 429] and int(headers["Retry-After"]) >= 1
    assert enroll(fn, make_event)[0] == 201  # signed requests are not charged to it
    limited = [json.loads(line) for line in fn.log_buffer.getvalue().splitlines() if "enroll.rate_limited" in line]
    assert [r["scope"] for r in limited] == ["unsigned", "unsigned"]


def test_unsigned_floods_do_not_use_up_the_global_budget(kenroll, make_event):
    fn, _ = kenroll(env={"rate_limit_global_per_minute": "2", "rate_limit_per_minute": "100"})
    for i in range(5):
        body, h = signed(enroll_doc(), key="wrong-key-xxxxxxxx", extra={"X-Real-Ip": f"203.0.113.{i}"})
        assert call(fn, make_event, body=body, headers=h)[0] == 401
    assert enroll(fn, make_event)[0] == 201


# ------------------------------------------------------------------ CA, API failures, logs


def test_ca_hash_comes_from_the_kubeconfig_secret_when_not_configured(kenroll, kube_emulator, make_event):
    kc = yaml.safe_load(kubeconfig_with_ca(server=kube_emulator.url))
    kc["users"] = kube_emulator.kubeconfig_dict()["users"]
    kc["contexts"][0]["context"]["user"] = kc["users"][0]["name"]
    fn, _ = kenroll(env={"k3s_ca_file": ""}, kubeconfig=yaml.safe_dump(kc))
    status, _, doc = enroll(fn, make_event)
    assert status == 201, doc
    assert doc["ca_hash"] == CA_HASH and doc["ca_hash_source"] == "secret node-enroll-kubeconfig"


def test_no_ca_anywhere_fails_closed_without_a_token(kenroll, make_event):
    fn, emu = kenroll(env={"k3s_ca_file": ""})
    status, _, doc = enroll(fn, make_event)
    assert status == 503 and "k3s_ca_hash" in doc["error"]
    assert secrets_of(emu) == []


def test_missing_server_url_is_reported(kenroll, make_event):
    fn, emu = kenroll(env={"k3s_server_url": ""})
    status, _, doc = enroll(fn, make_event)
    assert status == 503 and "k3s_server_url" in doc["error"]


def test_api_refusal_is_a_502_with_an_rbac_hint(kenroll, make_event):
    fn, emu = kenroll()
    emu.deny("create", "secrets")
    status, _, doc = enroll(fn, make_event)
    assert status == 502 and "403" in doc["error"] and "rbac" in doc["error"].lower()


def test_missing_records_namespace_is_a_502_naming_the_manifest(enroll_fn, kube_emulator, make_event):
    fn = enroll_fn(secrets={"node-enroll-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict())})
    status, _, doc = enroll(fn, make_event)
    assert status == 502 and "edgeguard-enroll" in doc["error"] and "deploy/rbac/node-enroll.yaml" in doc["error"]
    assert secrets_of(kube_emulator) == []


def test_token_id_collision_is_retried(kenroll, make_event):
    fn, emu = kenroll()
    emu.fail("create", "secrets", status=409, times=1)
    status, _, doc = enroll(fn, make_event)
    assert status == 201 and len(secrets_of(emu)) == 1


def test_audit_log_names_the_enrollment_but_never_a_token(kenroll, make_event):
    fn, emu = kenroll()
    _, _, doc = enroll(fn, make_event)
    _, _, again = enroll(fn, make_event)
    _, _, script = enroll(fn, make_event, query={"format": "sh"})
    body, h = signed(enroll_doc(), key="nope-nope-nope")
    call(fn, make_event, body=body, headers=h)
    logs = fn.log_buffer.getvalue()
    records = [json.loads(line) for line in logs.splitlines()]
    events = [r["event"] for r in records]
    assert "enroll.issued" in events and "enroll.reused" in events and "enroll.refused" in events
    issued = next(r for r in records if r["event"] == "enroll.issued")
    assert issued["node"] == "pi-north-01" and issued["bootstrap_id"] == doc["token_id"]
    secret_half = doc["token"].rsplit(".", 1)[1]
    assert secret_half not in logs and doc["token"] not in logs and KEY not in logs


def test_no_kubernetes_credentials_is_a_clear_503(enroll_fn, make_event, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    fn = enroll_fn()
    status, _, doc = enroll(fn, make_event)
    assert status == 503 and "node-enroll-kubeconfig" in doc["error"]


def test_nearly_expired_token_is_replaced_rather_than_reused(kenroll, make_event):
    fn, emu = kenroll()
    now = datetime.now(UTC)
    seed_enrollment(
        emu,
        fn,
        token_id="old222",
        token_secret="b" * 16,
        hostname="pi-north-01",
        arch="arm64",
        machine_id=enroll_doc()["machine_id"],
        labels={"edgeguard.io/enrolled-by": "node-enroll"},
        taints=[],
        expires_at=now + timedelta(seconds=60),
        now=now - timedelta(minutes=59),
        source=None,
    )
    status, _, doc = enroll(fn, make_event)
    assert status == 201 and doc["revoked"] == ["old222"] and doc["token_id"] != "old222"
    assert the_secret(emu, "old222") is None


def test_concurrent_enrollments_of_one_machine_yield_one_token(kenroll, make_event):
    from concurrent.futures import ThreadPoolExecutor

    fn, emu = kenroll()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: enroll(fn, make_event), range(8)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200] * 7 + [201]
    assert len({r[2]["token"] for r in results}) == 1
    assert len(secrets_of(emu)) == 1


def test_kubernetes_is_imported_only_when_a_request_needs_the_cluster(tmp_path, make_event):
    import subprocess
    import sys

    from local import buildctx, stackfile

    stack = stackfile.load()
    ctx = buildctx.assemble(stack.functions["node-enroll"], stack, tmp_path)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import function.handler as h; "
        "from types import SimpleNamespace as N; "
        "r = h.handle(N(body=b'{}', headers={'Content-Type': 'application/json'}, method='POST', path='/enroll', "
        "query={}), None); "
        "print(r['statusCode'], 'kubernetes' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(ctx)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "EDGEGUARD_SECRETS_DIR": str(tmp_path / "none")},
    )
    assert out.stdout.split() == ["503", "False"], out.stderr  # unsigned request refused, no kubernetes import


def test_a_whole_enrollment_never_imports_the_kubernetes_package(tmp_path, kube_emulator):
    """issue 12 §2: importing the kubernetes package cost node-enroll ~20 MiB and 0.2-0.4 s of its first answer;
    edgeguard.kube.connection() builds the connection for the kubeconfig bootstrap writes without it."""
    import subprocess
    import sys
    from pathlib import Path

    from local import buildctx, stackfile
    from tests.conftest import write_secrets
    from tests.node_enroll.helpers import BASE_ENV, seed_records_namespace

    seed_records_namespace(kube_emulator)
    stack = stackfile.load()
    ctx = buildctx.assemble(stack.functions["node-enroll"], stack, tmp_path / "ctx")
    secrets = write_secrets(
        tmp_path / "secrets",
        {"node-enroll-key": KEY, "node-enroll-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict())},
    )
    probe = (
        "import sys; sys.path[:0] = sys.argv[1:3]; import function.handler as h; "
        "from tests.node_enroll.helpers import signed, enroll_doc; from types import SimpleNamespace as N; "
        "body, headers = signed(enroll_doc()); "  # signed after the start, as a node would be
        "r = h.handle(N(body=body, headers=headers, method='POST', path='/enroll', query={}), None); "
        "print(r['statusCode'], sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "EDGEGUARD_SECRETS_DIR": str(secrets),
        **stack.functions["node-enroll"].environment,
        **BASE_ENV,
    }
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", probe, str(ctx), str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: str(v) for k, v in env.items()},
    )
    assert out.stdout.split(maxsplit=1) == ["201", "[]\n"], out.stderr[-2000:]


# ------------------------------------------------------------------ shared code (edgeguard.config / kube)


def test_kubernetes_pin_is_the_client_generation_the_dev_env_tests():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pin = next(
        line.split("#")[0].strip()
        for line in (root / "requirements-dev.txt").read_text().splitlines()
        if line.startswith("kubernetes>") or line.startswith("kubernetes=")
    )
    reqs = (root / "functions" / "node-enroll" / "requirements.txt").read_text().splitlines()
    assert [line for line in reqs if line.startswith("kubernetes")] == [pin]


@pytest.mark.parametrize("ttl,seconds", [("2d", 2 * 86400), ("1h30m", 5400), ("900", 900)])
def test_token_ttl_accepts_the_shared_duration_forms(kenroll, make_event, ttl, seconds):
    fn, _ = kenroll(env={"token_ttl": ttl})
    before = datetime.now(UTC)
    status, _, doc = enroll(fn, make_event)
    assert status == 201
    expires = datetime.strptime(doc["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((expires - before).total_seconds() - seconds) < 5


def test_ca_hash_kubeconfig_is_read_through_the_shared_loader(kenroll, kube_emulator, make_event):
    kc = yaml.safe_load(kubeconfig_with_ca(server=kube_emulator.url))
    kc["users"] = kube_emulator.kubeconfig_dict()["users"]
    kc["contexts"][0]["context"]["user"] = kc["users"][0]["name"]
    fn, _ = kenroll(env={"k3s_ca_file": ""}, kubeconfig=yaml.safe_dump(kc))
    calls = []
    kube = sub(fn, "edgeguard.kube")
    real = kube.load_kubeconfig
    settings = sub(fn, "settings")
    settings.kube.load_kubeconfig = lambda name: calls.append(name) or real(name)
    try:
        status, _, doc = enroll(fn, make_event)
    finally:
        settings.kube.load_kubeconfig = real
    assert status == 201 and doc["ca_hash"] == CA_HASH
    assert calls and calls[0] == "node-enroll-kubeconfig"
