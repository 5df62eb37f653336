"""The join script, run by bash with a fake PATH (curl, sh, systemctl, id, ...) that records every call."""

from __future__ import annotations

import re
import shlex
import shutil

import pytest

from tests.node_enroll.helpers import sub
from tests.node_enroll.scriptrun import run_script

TOKEN = "K10" + "a" * 64 + "::abc123.0123456789abcdef"
ALERT = "alert-Tok3n_only-for-pi-north-01-xxxxxxxxxx"  # 43 characters of base64url, as alerttokens.mint makes


@pytest.fixture
def js(enroll_fn):
    return sub(enroll_fn(), "joinscript")


def render(js, **settings):
    return js.render(
        node_name="pi-north-01",
        arch="arm64",
        server_url="https://10.0.0.1:6443",
        token=TOKEN,
        labels={"node.edgeguard.io/site": "north", "edgeguard.io/enrolled-by": "node-enroll"},
        taints=["edge.example.com/dedicated=edge:NoSchedule"],
        expires_at="2026-11-26T15:00:00Z",
        settings=js.ScriptSettings(**settings),
        alert_token=ALERT if settings.get("falco_mode") == "host" else None,
    )


SHELLS = ["bash"] + (["dash"] if shutil.which("dash") else [])  # nodes run `sh`, which is dash on Debian/Ubuntu


@pytest.mark.parametrize("shell", SHELLS)
def test_script_installs_the_k3s_agent_with_token_labels_and_taints(js, tmp_path, shell):
    run = run_script(render(js), tmp_path, shell=shutil.which(shell))
    assert run.rc == 0, run.stderr
    assert [c[0] for c in run.calls] == ["id", "curl", "sh", "systemctl"]
    assert run.calls[1] == ["curl", "-sfL", "https://get.k3s.io"]
    assert run.calls[2] == ["sh", "-s", "-"]
    assert run.calls[3] == ["systemctl", "is-active", "--quiet", "k3s-agent"]
    assert run.env["K3S_URL"] == "https://10.0.0.1:6443"
    assert run.env["K3S_TOKEN"] == TOKEN
    assert run.env["INSTALL_K3S_EXEC"] == (
        "agent --node-name pi-north-01 --node-label edgeguard.io/enrolled-by=node-enroll "
        "--node-label node.edgeguard.io/site=north --node-taint edge.example.com/dedicated=edge:NoSchedule"
    )
    assert run.env["STDIN"].startswith("#!/bin/sh\n# fake k3s installer")  # the downloaded installer is what runs
    assert "Falco runs as the falcosecurity/falco DaemonSet" in run.stdout
    assert TOKEN not in run.stdout + run.stderr  # the script never echoes its token


def test_pinned_k3s_version_is_passed_to_the_installer(js, tmp_path):
    run = run_script(
        render(js, k3s_version="v1.31.4+k3s1", install_url="https://mirror.example/k3s-install.sh"), tmp_path
    )
    assert run.rc == 0, run.stderr
    assert run.calls[1] == ["curl", "-sfL", "https://mirror.example/k3s-install.sh"]
    assert run.env["INSTALL_K3S_VERSION"] == "v1.31.4+k3s1"


def test_host_mode_runs_the_bootstrap_falco_step_after_k3s(js, tmp_path):
    run = run_script(render(js, falco_mode="host", public_gateway_url="https://gw.example:31112"), tmp_path)
    assert run.rc == 0, run.stderr
    assert [c[0] for c in run.calls] == ["id", "curl", "sh", "systemctl", "edgeguard-bootstrap"]
    assert run.calls[-1] == [
        "edgeguard-bootstrap",
        "falco",
        "--mode",
        "host",
        "--gateway",
        "https://gw.example:31112",
        "--node-name",
        "pi-north-01",
        "--alert-token-stdin",
        "--yes",
    ]
    # the node's own alert token reaches the Falco step on its stdin, and nowhere else
    assert run.env["BOOTSTRAP_STDIN"] == ALERT + "\n"
    assert not any(ALERT in word for call in run.calls for word in call)
    assert ALERT not in run.stdout + run.stderr and ALERT not in run.env["STDIN"]
    assert not [
        p
        for p in tmp_path.rglob("*")
        if p.is_file()
        and ALERT in p.read_text(errors="replace")
        and p.name not in ("join.sh", "sh-env.log.bootstrap-stdin")
    ]


def test_host_mode_without_an_alert_token_is_refused(js):
    with pytest.raises(ValueError, match="alert token"):
        js.render(
            node_name="pi",
            arch="arm64",
            server_url="https://h:6443",
            token=TOKEN,
            labels={},
            taints=[],
            expires_at="x",
            settings=js.ScriptSettings(falco_mode="host", public_gateway_url="https://gw"),
        )


def test_host_mode_command_is_configurable(js, tmp_path):
    template = (
        str(tmp_path / "fakebin" / "edgeguard-bootstrap")
        + " falco --mode host --gateway {gateway_url} --driver kmod --yes"
    )
    run = run_script(
        render(js, falco_mode="host", public_gateway_url="https://gw.example", falco_host_command=template), tmp_path
    )
    assert run.rc == 0, run.stderr
    assert run.calls[-1] == [
        "edgeguard-bootstrap",
        "falco",
        "--mode",
        "host",
        "--gateway",
        "https://gw.example",
        "--driver",
        "kmod",
        "--yes",
    ]
    assert js.falco_host_argv("x --host {node_name}", gateway_url="g", node_name="pi-1") == ["x", "--host", "pi-1"]


def test_falco_mode_none_skips_falco(js, tmp_path):
    run = run_script(render(js, falco_mode="none"), tmp_path)
    assert run.rc == 0 and [c[0] for c in run.calls] == ["id", "curl", "sh", "systemctl"]
    assert "Falco setup skipped" in run.stdout


def test_script_refuses_to_run_as_non_root(js, tmp_path):
    run = run_script(render(js), tmp_path, extra_env={"FAKE_UID": "1000"})
    assert run.rc == 1 and "run this script as root" in run.stderr
    assert [c[0] for c in run.calls] == ["id"]


def test_failed_installer_download_stops_before_anything_runs(js, tmp_path):
    run = run_script(render(js), tmp_path, extra_env={"FAKE_CURL_FAIL": "1"})
    assert run.rc != 0
    assert [c[0] for c in run.calls] == ["id", "curl"]


def test_failed_install_or_inactive_agent_fails_the_script(js, tmp_path):
    run = run_script(
        render(js, falco_mode="host", public_gateway_url="https://gw"), tmp_path, extra_env={"FAKE_SH_RC": "1"}
    )
    assert run.rc != 0 and "edgeguard-bootstrap" not in [c[0] for c in run.calls]
    run = run_script(render(js), tmp_path, extra_env={"FAKE_SYSTEMCTL_RC": "3"})
    assert run.rc == 1 and "k3s-agent is not running" in run.stderr


def test_script_quotes_every_interpolated_value(js):
    script = render(js)
    assert "\nK3S_TOKEN=" + shlex.quote(TOKEN) + "\n" in script
    odd = js.render(
        node_name="pi",
        arch="arm64",
        server_url="https://h:6443/x'y",
        token=TOKEN,
        labels={},
        taints=[],
        expires_at="x",
        settings=js.ScriptSettings(),
    )
    assert "K3S_URL='https://h:6443/x'\"'\"'y'" in odd
    assert re.search(r"^INSTALL_K3S_EXEC='agent --node-name pi-north-01 ", script, re.M)


def test_agent_arguments_that_would_break_word_splitting_are_refused(js):
    with pytest.raises(ValueError):
        js.agent_exec("pi", {}, [], ["--flag=a b"])
    with pytest.raises(ValueError, match="placeholder"):
        js.falco_host_argv("x {token}", gateway_url="g", node_name="n")
