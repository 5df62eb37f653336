"""edgeguard-rules loads what audit-ingest loads; list like falco -L; selection options; streaming replay."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeguard.falco import cli, rule_files, source

from .conftest import REGRESSION, SAMPLES, regression_tests, rule_text

RULES_D = rule_files.FUNCTION_RULES_D
ANON = REGRESSION / "events" / "anonymous_creates_namespace_foo.json"
CONFIGMAP_RULE = "Create/Modify Configmap With Private Credentials"


def run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_validate_works_on_the_shipped_rules_d(capsys):
    rc, out, err = run(["validate", str(RULES_D)], capsys)
    assert rc == 0, err
    assert out.splitlines() == [f"{p}: Ok" for p in sorted(RULES_D.glob("*.yaml"))]
    assert "loaded first, as audit-ingest does" in err and "k8s_audit_rules.yaml" in err
    # alone, its append has no rule to append to: why the defaults are loaded first
    rc, _, err = run(["validate", "--no-defaults", str(RULES_D)], capsys)
    assert rc == 2 and "no rule by that name already exists" in err


def test_validate_of_a_default_file_does_not_load_it_twice(capsys):
    rc, out, err = run(["validate", str(rule_files.BUNDLED), str(RULES_D)], capsys)
    assert rc == 0, err
    assert f"{rule_files.BUNDLED}: Ok" in out.splitlines()


def test_replay_rules_add_to_the_bundled_ruleset(tmp_path, capsys):
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        rule_text(
            "ka.verb=create and ka.target.resource=namespaces", name="Namespace made", output="ns=%ka.target.name"
        )
    )
    rc, out, _ = run(["replay", "--rule-matching", "all", "--rules", str(mine), str(ANON)], capsys)
    rules = [json.loads(line)["rule"] for line in out.splitlines()]
    assert rc == 0 and "Anonymous Request Allowed" in rules and "Namespace made" in rules
    rc, out, _ = run(["replay", "--no-defaults", "--rules", str(mine), str(ANON)], capsys)
    assert [json.loads(line)["rule"] for line in out.splitlines()] == ["Namespace made"]


def test_the_function_rules_d_is_loaded_by_default(capsys):
    configmap_event = REGRESSION / "events" / "create_configmap_sensitive_values.json"
    rc, out, _ = run(["replay", str(configmap_event)], capsys)
    alerts = [json.loads(line) for line in out.splitlines() if CONFIGMAP_RULE in line]
    assert rc == 0 and alerts
    assert all("ka.target.namespace" in a["output_fields"] for a in alerts)  # the rules.d append
    rc, out, _ = run(["replay", "--rules-d", "/nonexistent", str(configmap_event)], capsys)
    assert all(
        "ka.target.namespace" not in json.loads(line)["output_fields"]
        for line in out.splitlines()
        if CONFIGMAP_RULE in line
    )


def test_a_rule_that_can_never_fire_under_first_match_is_named(tmp_path, capsys):
    mine = tmp_path / "mine.yaml"
    # the bundled rule's condition, narrowed: every event it matches, "Anonymous Request Allowed" matches first
    mine.write_text(
        rule_text(
            'kevt and kcreate and ka.user.name=system:anonymous and ka.auth.decision="allow" '
            "and not health_endpoint and not live_endpoint and not ready_endpoint",
            name="Anonymous creates",
            output="x",
        )
    )
    rc, _, err = run(["validate", str(mine)], capsys)
    assert rc == 0
    (line,) = [w for w in err.splitlines() if "LOAD_RULE_NEVER_FIRES" in w]
    assert "rule 'Anonymous creates'" in line and "rule 'Anonymous Request Allowed'" in line
    rc, _, err = run(["validate", "--rule-matching", "all", str(mine)], capsys)
    assert "LOAD_RULE_NEVER_FIRES" not in err


def test_list_prints_falcos_rule_table(capsys):
    rc, out, _ = run(["list"], capsys)
    lines = out.splitlines()
    assert rc == 0 and lines[0] == f"{'Rule':<50} Description" and lines[1] == f"{'----':<50} -----------"
    row = next(line for line in lines if line.startswith("Disallowed K8s User "))
    assert row[50] == " " and row[51:].startswith("Detect any k8s operation by users outside")
    # the description wraps at 110 columns, continuation lines indented 51, and a blank line ends each rule
    i = lines.index(row)
    assert all(len(line) <= 111 for line in lines[i : i + 3])
    assert lines[i + 1].startswith(" " * 51) and lines[i + 2] == ""


def test_list_json_describes_rules_macros_and_lists(tmp_path, capsys):
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        rule_text(
            "ka.verb=create", name="Captured", extra_keys="  capture: true\n  capture_duration: 500\n  tags: [mine]\n"
        )
    )
    rc, out, _ = run(["list", "--json", "-D", "Anonymous", str(mine)], capsys)
    desc = json.loads(out)
    assert rc == 0 and desc["required_engine_version"] == "0.15.0"
    rules = {r["info"]["name"]: r for r in desc["rules"]}
    cap = rules["Captured"]
    assert cap["info"]["capture"] is True and cap["info"]["capture_duration"] == 500
    assert cap["info"]["priority"] == "Informational" and cap["info"]["tags"] == ["mine"]
    assert cap["details"]["condition_compiled"] == "ka.verb = create" and cap["details"]["plugins"] == ["k8saudit"]
    assert rules["Anonymous Request Allowed"]["details"]["evaluated"] is False  # -D
    macros = {m["info"]["name"]: m for m in desc["macros"]}
    assert macros["kcreate"] == {"info": {"name": "kcreate", "condition": "ka.verb=create"}, "details": {"used": True}}
    assert {"info": {"name": "k8s_audit_stages", "items": ["ResponseComplete"]}, "details": {"used": True}} in desc[
        "lists"
    ]


def test_selection_options_on_replay(capsys):
    def rules(*opts):
        rc, out, err = run(["replay", "--rule-matching", "all", *opts, str(ANON)], capsys)
        assert rc == 0, err
        return [json.loads(line)["rule"] for line in out.splitlines()]

    everything = rules()
    assert "Anonymous Request Allowed" in everything and len(everything) > 1
    assert "Anonymous Request Allowed" not in rules("-D", "Anonymous")
    tagged = rules("-t", "k8s")
    assert tagged and set(tagged) <= set(everything)
    rc, _, err = run(["replay", "-D", "x", "-t", "k8s", str(ANON)], capsys)
    assert rc == 2 and "You can not specify both disabled (-D/-T) and enabled (-t) rules" in err


def test_a_falco_yaml_config_selects_rules_and_appends_output(tmp_path, capsys):
    conf = tmp_path / "falco.yaml"
    conf.write_text(
        "rules:\n  - disable:\n      rule: '*'\n  - enable:\n      rule: Anonymous Request Allowed\n"
        "append_output:\n  - match:\n      source: k8s_audit\n    extra_output: 'uri=%ka.uri'\n"
        "    extra_fields:\n      - ka.verb\n"
    )
    rc, out, err = run(["replay", "--rule-matching", "all", "-c", str(conf), str(ANON)], capsys)
    (alert,) = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and alert["rule"] == "Anonymous Request Allowed"
    assert alert["output"].endswith("uri=/api/v1/namespaces") and alert["output_fields"]["ka.verb"] == "create"
    conf.write_text("rules:\n  - enable: everything\n")
    rc, _, err = run(["replay", "-c", str(conf), str(ANON)], capsys)
    assert rc == 2 and "rules[0].enable" in err


def test_replay_streams_stdin_writing_each_alert_before_the_next_line_is_sent():
    exe = [sys.executable, "-m", "edgeguard.falco.cli", "replay", "-"]
    line = ANON.read_text().strip().splitlines()[0] + "\n"
    proc = subprocess.Popen(exe, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):
            proc.stdin.write(line)
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["rule"] == "Anonymous Request Allowed"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0 and "events: 3, alerts: 3" in proc.stderr.read()


# ---- orjson ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        b'{"n":123456789012345678901234567890}',
        b'{"n":-9223372036854775809}',
        b'{"s":"\\ud800"}',
        b'{"s":"\\udc00x"}',
        b'{"f":NaN}',
        b'{"f":Infinity}',
        b'{"f":1e400}',
        b'{"a":1,"a":2}',
        b'{"f":0.30000000000000004,"g":-0.0,"h":1E5}',
        b'{"s":"caf\\u00e9 \\ud83d\\ude00"}',
        b"18446744073709551616",
    ],
)
def test_the_fast_decoder_gives_what_json_loads_gives(raw):
    assert repr(source.loads_line(raw)) == repr(json.loads(raw.decode()))


@pytest.mark.parametrize("raw", [b'{"a":1,}', b"\xef\xbb\xbf{}", b'{"a":"\x01"}', b"[1,2"])
def test_the_fast_decoder_refuses_what_json_refuses(raw):
    with pytest.raises(json.JSONDecodeError):
        source.loads_line(raw)


def test_alerts_are_byte_identical_with_and_without_orjson_on_every_regression_and_sample_file(capsys, monkeypatch):
    files = sorted({str(REGRESSION / t["events"]) for t in regression_tests(include_undetermined=True)})
    files += sorted(str(p) for p in SAMPLES.glob("*.json*"))
    outputs = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(source, "_orjson", None)
        for mode in ("first", "all"):
            assert cli.main(["replay", "--rule-matching", mode, *files]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") > 50
