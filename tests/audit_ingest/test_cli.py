"""edgeguard-rules validate / replay: output, summaries and exit status."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from edgeguard.falco import cli

from .conftest import DATA, REGRESSION, SAMPLES

RULES = DATA / "k8s_audit_rules.yaml"


def test_validate_ok_files(capsys):
    assert cli.main(["validate", str(RULES), str(REGRESSION / "rules" / "allow_nginx_container.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{RULES}: Ok", f"{REGRESSION / 'rules' / 'allow_nginx_container.yaml'}: Ok"]
    assert "48 k8s_audit rules" in err


def test_validate_load_error_exits_2_naming_file_and_item(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "- rule: Broken\n  desc: d\n  condition: ka.verb in\n  output: o\n  priority: INFO\n  source: k8s_audit\n"
    )
    assert cli.main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "rule 'Broken'" in err and "LOAD_ERR_COMPILE_CONDITION" in err


def test_validate_missing_file_exits_2(tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "LOAD_ERR_FILE_READ" in capsys.readouterr().err


def test_replay_prints_one_json_alert_per_line_and_a_summary(capsys):
    assert cli.main(["replay", str(SAMPLES / "eventlist_built_from_regression_traces.json")]) == 0
    out, err = capsys.readouterr()
    alerts = [json.loads(line) for line in out.splitlines()]
    assert [a["rule"] for a in alerts] == [
        "Create Privileged Pod",
        "Attach/Exec Pod",
        "ClusterRole With Wildcard Created",
    ]
    assert "events: 3, alerts: 3" in err


def test_replay_reads_stdin_and_reports_non_audit_data(monkeypatch, capsys):
    data = (REGRESSION / "events" / "anonymous_creates_namespace_foo.json").read_text() + '{"kind": 0}\nnot json\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    assert cli.main(["replay", "-"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["rule"] == "Anonymous Request Allowed"
    assert "data not recognized as a k8s audit event" in err and "invalid JSON" in err
    assert "skipped (not audit events): 2" in err


def test_replay_rule_matching_all(capsys):
    assert (
        cli.main(
            ["replay", "--rule-matching", "all", str(REGRESSION / "events" / "anonymous_creates_namespace_foo.json")]
        )
        == 0
    )
    rules = [json.loads(line)["rule"] for line in capsys.readouterr().out.splitlines()]
    assert rules[0] == "Anonymous Request Allowed" and len(rules) > 1


def test_replay_exit_2_on_bad_rules_or_unreadable_input(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- macro: m\n  condition: (\n")
    assert cli.main(["replay", "--rules", str(bad), str(SAMPLES / "eventlist_built_from_regression_traces.json")]) == 2
    assert cli.main(["replay", str(tmp_path / "missing.json")]) == 2
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert cli.main(["replay", str(binary)]) == 2


def test_cli_is_installed_as_a_console_script():
    exe = subprocess.run(
        [sys.executable, "-c", "import shutil; print(shutil.which('edgeguard-rules') or '')"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    cmd = [exe] if exe else [sys.executable, "-m", "edgeguard.falco.cli"]
    res = subprocess.run(
        cmd + ["replay", str(SAMPLES / "webhook_eventlist_v1_kubectl_run_pod_kube-system.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rule"] == "Pod Created in Kube Namespace"
