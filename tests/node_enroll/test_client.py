"""The node-side client (functions/node-enroll/client/edgeguard-enroll.py) against the function over real HTTP."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from tests.node_enroll import k3s_model
from tests.node_enroll.helpers import BASE_ENV, CA_PEM, KEY, seed_records_namespace, sub
from tests.node_enroll.scriptrun import run_script

CLIENT = Path(__file__).resolve().parents[2] / "functions" / "node-enroll" / "client" / "edgeguard-enroll.py"


@pytest.fixture(scope="module")
def client():
    spec = importlib.util.spec_from_file_location("edgeguard_enroll_client", CLIENT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_client_signature_is_accepted_by_the_function_verifier(client, enroll_fn):
    signing = sub(enroll_fn(), "signing")
    body, h = client.build_request(
        key=KEY,
        hostname="pi-1",
        arch="arm64",
        machine_id="m" * 32,
        labels={},
        rotate=False,
        now=1_700_000_000,
        nonce="abcdefghijklmnopqrstuvwx",
    )
    assert signing.signature_matches(KEY, h["X-Enroll-Timestamp"], h["X-Enroll-Nonce"], body, h["X-Enroll-Signature"])
    assert json.loads(body) == {"hostname": "pi-1", "arch": "arm64", "machine_id": "m" * 32}


def test_client_nonces_are_fresh_each_time(client):
    nonces = {
        client.build_request(key=KEY, hostname="a", arch="arm64", machine_id="m" * 32, labels={}, rotate=False)[1][
            "X-Enroll-Nonce"
        ]
        for _ in range(50)
    }
    assert len(nonces) == 50


def test_mask_hides_the_secret_half(client):
    assert client.mask("K10" + "a" * 64 + "::abc123.0123456789abcdef") == "K10" + "a" * 64 + "::abc123.****************"


@pytest.fixture
def served(serve_function, kube_emulator):
    seed_records_namespace(kube_emulator)
    fn = serve_function(
        "node-enroll",
        env=BASE_ENV,
        secrets={
            "node-enroll-key": KEY + "\n",
            "node-enroll-admin-token": "admin-xxxxxxxx",
            "node-enroll-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict()),
        },
    )
    return fn, kube_emulator


def test_client_enrolls_over_http_and_writes_a_runnable_join_script(client, served, tmp_path, capsys):
    fn, emu = served
    (tmp_path / "key").write_text(KEY + "\n")
    (tmp_path / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    out = tmp_path / "join.sh"
    rc = client.main(
        [
            "--url",
            fn.url + "/enroll",
            "--allow-http",
            "--key-file",
            str(tmp_path / "key"),
            "--hostname",
            "Pi-Client-1",
            "--arch",
            "aarch64",
            "--machine-id-file",
            str(tmp_path / "machine-id"),
            "--label",
            "node.edgeguard.io/site=north",
            "--script-out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert out.stat().st_mode & 0o777 == 0o700
    run = run_script(out.read_text(), tmp_path)
    assert run.rc == 0, run.stderr
    token = run.env["K3S_TOKEN"]
    tid = k3s_model.TOKEN_RE.match(token)["id"]
    assert k3s_model.rejection(emu.get("secrets", "kube-system", f"bootstrap-token-{tid}"), token, CA_PEM) is None
    assert "--node-name pi-client-1" in run.env["INSTALL_K3S_EXEC"]
    assert "--node-label node.edgeguard.io/site=north" in run.env["INSTALL_K3S_EXEC"]


def test_client_json_mode_prints_the_answer_with_the_token_masked(client, served, tmp_path, capsys):
    fn, _ = served
    (tmp_path / "key").write_text(KEY)
    (tmp_path / "mid").write_text("f" * 32)
    rc = client.main(
        [
            "--url",
            fn.url + "/enroll",
            "--allow-http",
            "--key-file",
            str(tmp_path / "key"),
            "--hostname",
            "pi-2",
            "--arch",
            "arm64",
            "--machine-id-file",
            str(tmp_path / "mid"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(out)
    assert doc["token"].endswith(".****************") and doc["node"] == "pi-2"


def test_client_reports_refusal_without_retrying_auth_failures(client, served, tmp_path, capsys):
    fn, emu = served
    (tmp_path / "key").write_text("not-the-fleet-key")
    (tmp_path / "mid").write_text("f" * 32)
    rc = client.main(
        [
            "--url",
            fn.url + "/enroll",
            "--allow-http",
            "--key-file",
            str(tmp_path / "key"),
            "--hostname",
            "pi-3",
            "--arch",
            "arm64",
            "--machine-id-file",
            str(tmp_path / "mid"),
        ]
    )
    assert rc == 1
    assert "HTTP 401" in capsys.readouterr().err
    assert emu.list("secrets", "kube-system") == []


def run_client(argv, tmp_path):
    """The client as a node runs it, in its own interpreter: (exit code, stdout, stderr)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(CLIENT), *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    return out.returncode, out.stdout, out.stderr


def test_without_key_file_the_default_path_is_named_without_a_traceback(tmp_path):
    """issue 15 §7: it printed a traceback for its undocumented default /etc/edgeguard/enroll.key."""
    (tmp_path / "mid").write_text("f" * 32)
    rc, out, err = run_client(
        [
            "--url",
            "https://gw.example/function/node-enroll/enroll",
            "--key-file",
            str(tmp_path / "absent.key"),
            "--machine-id-file",
            str(tmp_path / "mid"),
        ],
        tmp_path,
    )
    assert rc == 2 and "Traceback" not in err, err
    assert f"cannot read the fleet key {tmp_path / 'absent.key'} (No such file or directory)" in err
    assert "--key-file" in err
    rc, out, _ = run_client(["--help"], tmp_path)
    assert rc == 0 and "/etc/edgeguard/enroll.key" in out  # the default is documented


def test_connection_refused_is_named_not_http_0(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    (tmp_path / "key").write_text(KEY)
    (tmp_path / "mid").write_text("f" * 32)
    rc, _, err = run_client(
        [
            "--url",
            f"http://127.0.0.1:{port}/enroll",
            "--allow-http",
            "--retries",
            "0",
            "--key-file",
            "key",
            "--machine-id-file",
            "mid",
            "--hostname",
            "pi-1",
            "--arch",
            "arm64",
        ],
        tmp_path,
    )
    assert rc == 1 and "HTTP 0" not in err and "Traceback" not in err, err
    assert f"cannot reach http://127.0.0.1:{port}/enroll: Connection refused" in err


def test_plain_http_is_refused_unless_allowed_and_then_warned_about(tmp_path, served):
    fn, emu = served
    (tmp_path / "key").write_text(KEY)
    (tmp_path / "mid").write_text("e" * 32)
    args = [
        "--url",
        fn.url + "/enroll",
        "--key-file",
        "key",
        "--machine-id-file",
        "mid",
        "--hostname",
        "pi-h",
        "--arch",
        "arm64",
    ]
    rc, _, err = run_client(args, tmp_path)
    assert rc == 2 and "refusing plain http" in err and "--allow-http" in err, err
    assert emu.list("secrets", "kube-system") == []  # nothing was sent
    rc, out, err = run_client(args + ["--allow-http"], tmp_path)
    assert rc == 0 and "warning: plain http" in err, err
    assert json.loads(out)["node"] == "pi-h"


def test_json_output_masks_the_alert_token_too(client, serve_function, kube_emulator, tmp_path, capsys):
    seed_records_namespace(kube_emulator)
    fn = serve_function(
        "node-enroll",
        env={**BASE_ENV, "falco_mode": "host", "public_gateway_url": "https://gw"},
        secrets={
            "node-enroll-key": KEY + "\n",
            "node-enroll-admin-token": "admin-xxxxxxxx",
            "node-enroll-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict()),
        },
    )
    (tmp_path / "key").write_text(KEY)
    (tmp_path / "mid").write_text("d" * 32)
    rc = client.main(
        [
            "--url",
            fn.url + "/enroll",
            "--allow-http",
            "--key-file",
            str(tmp_path / "key"),
            "--hostname",
            "pi-a",
            "--arch",
            "arm64",
            "--machine-id-file",
            str(tmp_path / "mid"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and json.loads(out)["alert_token"] == "****"
    stored = kube_emulator.get("secrets", "edgeguard-enroll", "edgeguard-node-alert-tokens")["data"]["pi-a"]
    assert stored and stored not in out
