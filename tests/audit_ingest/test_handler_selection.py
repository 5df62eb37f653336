"""falco.yaml's rule selection (``rules:``) and ``append_output`` through audit-ingest's own settings.

Written from Falco's documentation of falco.yaml (0.44): ``rules:`` is a list of ``enable``/``disable``
entries that select rules by name (``*`` is a wildcard) or by ``tag``, applied in order after the rules
files are loaded, so they can enable a rule its file disables and the other way round; ``append_output``
appends ``extra_output`` to the output of the rules its ``match`` selects (by ``source``, ``tags`` (all of
them) and ``rule``) and adds ``extra_fields`` to ``output_fields`` only. audit-ingest takes both from the
``falco_config`` environment variable and from a settings document in the extra-rules secret.
"""

from __future__ import annotations

import json

import yaml

from .conftest import post
from .test_handler import anon, health

NS_RULES = ["Anonymous Request Allowed", "Create Disallowed Namespace", "K8s Namespace Created"]


def dry_rules(mod, make_event, evt=None):
    status, reply = post(mod, make_event, evt or anon(1), query={"dry_run": "1"})
    assert status == 200, reply
    return [a["rule"] for a in reply["alerts"]], reply["alerts"]


def cfg(doc) -> str:
    return yaml.safe_dump(doc)


def test_without_settings_every_rule_of_the_files_is_evaluated(ingest, make_event):
    assert dry_rules(ingest(env={"rule_matching": "all"}), make_event)[0] == NS_RULES


def test_disable_by_exact_name(ingest, make_event):
    mod = ingest(
        env={
            "rule_matching": "all",
            "falco_config": cfg({"rules": [{"disable": {"rule": "Anonymous Request Allowed"}}]}),
        }
    )
    assert dry_rules(mod, make_event)[0] == NS_RULES[1:]


def test_under_first_match_a_disabled_rule_lets_the_next_matching_rule_alert(ingest, make_event):
    mod = ingest(env={"falco_config": cfg({"rules": [{"disable": {"rule": "Anonymous Request Allowed"}}]})})
    assert dry_rules(mod, make_event)[0] == ["Create Disallowed Namespace"]


def test_name_wildcard_star_matches_any_run_and_other_characters_are_literal(ingest, make_event):
    mod = ingest(
        env={
            "rule_matching": "all",
            "falco_config": cfg(
                {"rules": [{"disable": {"rule": "*Namespace*"}}, {"disable": {"rule": "Anonymous Request Allow?"}}]}
            ),
        }
    )
    assert dry_rules(mod, make_event)[0] == ["Anonymous Request Allowed"]  # '?' is not a wildcard


def test_disable_by_tag_then_enable_one_rule_by_name(ingest, make_event):
    mod = ingest(
        env={
            "rule_matching": "all",
            "falco_config": cfg(
                {"rules": [{"disable": {"tag": "k8s"}}, {"enable": {"rule": "K8s Namespace Created"}}]}
            ),
        }
    )
    assert dry_rules(mod, make_event)[0] == ["K8s Namespace Created"]


def test_entries_apply_in_order_a_later_entry_wins(ingest, make_event):
    enable_then_disable = ingest(
        env={
            "rule_matching": "all",
            "falco_config": cfg({"rules": [{"enable": {"rule": "Anonymous*"}}, {"disable": {"rule": "Anonymous*"}}]}),
        }
    )
    assert "Anonymous Request Allowed" not in dry_rules(enable_then_disable, make_event)[0]
    disable_then_enable = ingest(
        env={
            "rule_matching": "all",
            "falco_config": cfg({"rules": [{"disable": {"rule": "Anonymous*"}}, {"enable": {"rule": "Anonymous*"}}]}),
        }
    )
    assert "Anonymous Request Allowed" in dry_rules(disable_then_enable, make_event)[0]


DISABLED_IN_FILE = """
- rule: Namespace foo created (off by default)
  desc: a rule its file disables
  condition: ka.target.resource=namespaces and ka.target.name=foo and ka.verb=create
  output: foo created by %ka.user.name
  priority: ERROR
  source: k8s_audit
  tags: [site]
  enabled: false
"""


def test_a_rule_disabled_in_its_file_is_enabled_by_selection_and_joins_the_end(ingest, make_event):
    off = ingest(env={"rule_matching": "all"}, extra_rules=DISABLED_IN_FILE)
    assert dry_rules(off, make_event)[0] == NS_RULES
    on = ingest(
        env={"rule_matching": "all", "falco_config": cfg({"rules": [{"enable": {"tag": "site"}}]})},
        extra_rules=DISABLED_IN_FILE,
    )
    assert dry_rules(on, make_event)[0] == NS_RULES + ["Namespace foo created (off by default)"]


def test_append_output_adds_text_to_the_output_and_fields_to_output_fields_only(ingest, make_event):
    mod = ingest(
        env={
            "falco_config": cfg(
                {
                    "append_output": [
                        {
                            "match": {"source": "k8s_audit"},
                            "extra_output": "site=north",
                            "extra_fields": ["ka.target.name", {"actor": "%ka.user.name via %ka.verb"}],
                        }
                    ]
                }
            )
        }
    )
    (rule,), (alert,) = dry_rules(mod, make_event)
    assert rule == "Anonymous Request Allowed"
    assert alert["output"].endswith(" site=north")
    assert "ka.target.name=" not in alert["output"] and "actor" not in alert["output"]
    assert alert["output_fields"]["ka.target.name"] == "foo"
    assert alert["output_fields"]["actor"] == "system:anonymous via create"


def test_append_output_match_by_rule_and_by_all_listed_tags(ingest, make_event):
    mod = ingest(
        env={
            "rule_matching": "all",
            "falco_config": cfg(
                {
                    "append_output": [
                        {"match": {"rule": "K8s Namespace Created"}, "extra_output": "[by-rule]"},
                        {"match": {"tags": ["k8s", "network"]}, "extra_output": "[by-tags]"},
                    ]
                }
            ),
        }
    )
    _, alerts = dry_rules(mod, make_event)
    out = {a["rule"]: a["output"] for a in alerts}
    assert out["K8s Namespace Created"].endswith(" [by-rule]")
    # No namespace rule carries both tags, so the second entry adds nothing to them.
    assert not any("[by-tags]" in o for o in out.values())
    assert not out["Anonymous Request Allowed"].endswith("[by-rule]")


def test_the_hand_off_carries_the_appended_output(ingest, make_event, forwarder):
    mod = ingest(env={"falco_config": cfg({"append_output": [{"match": {}, "extra_output": "site=north"}]})})
    status, reply = post(mod, make_event, anon(7))
    assert status == 200 and reply["forwarded"] == 1
    assert forwarder.alerts()[0]["output"].endswith(" site=north")


def test_priority_in_falco_config_wins_over_min_priority(ingest, make_event):
    mod = ingest(env={"rule_matching": "all", "min_priority": "debug", "falco_config": cfg({"priority": "warning"})})
    assert dry_rules(mod, make_event)[0] == NS_RULES[:2]  # K8s Namespace Created is INFO


# ---- the extra-rules secret may carry the same settings ------------------------------------------
SECRET_WITH_SETTINGS = (
    """\
# settings first (falco.yaml's keys), then rules: one YAML stream
rules:
  - enable: {rule: "Namespace foo created*"}
append_output:
  - match: {rule: "Namespace foo created (off by default)"}
    extra_output: "from-the-secret"
---
"""
    + DISABLED_IN_FILE
)


def test_secret_settings_document_applies_after_the_environment(ingest, make_event):
    mod = ingest(
        env={"rule_matching": "all", "falco_config": cfg({"rules": [{"disable": {"tag": "site"}}]})},
        extra_rules=SECRET_WITH_SETTINGS,
    )
    rules, alerts = dry_rules(mod, make_event)
    assert rules == NS_RULES + ["Namespace foo created (off by default)"]
    assert alerts[-1]["output"] == alerts[-1]["output"].rstrip() and alerts[-1]["output"].endswith(
        "foo created by system:anonymous from-the-secret"
    )
    _, h = health(mod, make_event)
    assert h["ruleset"]["rules_loaded"] == 49 and h["ruleset"]["files"][-1]["name"] == "secret:audit-ingest-extra-rules"
    assert h["engine"] == {
        "origins": ["environment", "environment variable falco_config", "secret:audit-ingest-extra-rules:2"],
        "rule_matching": "all",
        "priority": "debug",
        "append_output": 1,
        "rules": [{"disable": {"tag": "site"}}, {"enable": {"rule": "Namespace foo created*"}}],
    }


def test_a_secret_with_only_settings_loads_no_extra_rules_file(ingest, make_event):
    mod = ingest(env={"rule_matching": "all"}, extra_rules=cfg({"rules": [{"disable": {"rule": "K8s*"}}]}))
    assert dry_rules(mod, make_event)[0] == NS_RULES[:2]
    names = [f["name"] for f in health(mod, make_event)[1]["ruleset"]["files"]]
    assert names == ["bundled:k8s_audit_rules.yaml", "rules.d/50-edgeguard-local.yaml"]


def test_rotating_the_secret_changes_the_selection_without_a_restart(ingest, make_event):
    mod = ingest(env={"rule_matching": "all"}, extra_rules="")
    assert dry_rules(mod, make_event)[0] == NS_RULES
    (mod.secrets_dir / "audit-ingest-extra-rules").write_text(cfg({"rules": [{"disable": {"rule": "Create*"}}]}))
    assert dry_rules(mod, make_event)[0] == [NS_RULES[0], NS_RULES[2]]


def test_a_rules_error_after_a_settings_document_names_its_line_in_the_secret(ingest, make_event):
    broken = SECRET_WITH_SETTINGS.replace("condition: ka.target.resource=namespaces and", "condition: ka.verb= and")
    mod = ingest(extra_rules=broken)
    status, reply = post(mod, make_event, anon(3))
    line = broken.splitlines().index("- rule: Namespace foo created (off by default)") + 1
    assert status == 503 and f"secret:audit-ingest-extra-rules:{line}: rule 'Namespace foo created" in reply["error"]


# ---- bad settings: a 503 with the reason, in both places ------------------------------------------
def test_bad_selection_in_the_environment_is_a_503_naming_the_variable_and_entry(ingest, make_event, forwarder):
    mod = ingest(env={"falco_config": cfg({"rules": [{"disable": {"rule": "x"}}, {"enable": {"name": "y"}}]})})
    status, reply = post(mod, make_event, anon(4))
    assert status == 503
    assert reply["error"] == (
        "audit-ingest is misconfigured: environment variable falco_config: rules[1].enable: "
        "unknown key 'name' (only 'rule' and 'tag')"
    )
    assert forwarder.requests == []


def test_unknown_key_in_falco_config_is_refused_not_ignored(ingest, make_event):
    mod = ingest(env={"falco_config": cfg({"append_ouput": []})})
    status, reply = post(mod, make_event, anon(5))
    assert status == 503 and "unknown key 'append_ouput'" in reply["error"]


def test_falco_config_that_is_not_yaml_is_a_503(ingest, make_event):
    status, reply = post(ingest(env={"falco_config": "rules: [unclosed"}), make_event, anon(5))
    assert status == 503 and "falco_config: not valid YAML" in reply["error"]


def test_bad_settings_in_the_secret_are_a_503_until_fixed(ingest, make_event, forwarder):
    mod = ingest(extra_rules=cfg({"append_output": [{"match": {"tags": "k8s"}, "extra_output": "x"}]}))
    status, reply = post(mod, make_event, anon(6))
    assert status == 503 and reply["error"] == (
        "rules failed to load: secret:audit-ingest-extra-rules: append_output[0].match.tags: "
        "a list of strings is required"
    )
    assert health(mod, make_event)[0] == 503 and forwarder.requests == []
    (mod.secrets_dir / "audit-ingest-extra-rules").write_text(
        cfg({"append_output": [{"match": {"tags": ["k8s"]}, "extra_output": "x"}]})
    )
    status, reply = post(mod, make_event, anon(6))
    assert status == 200 and reply["forwarded"] == 1
    assert json.loads(forwarder.requests[0]["body"])[0]["output"].endswith(" x")


def test_a_rule_written_as_a_mapping_in_the_secret_is_an_error_not_ignored(ingest, make_event):
    mod = ingest(extra_rules="rule: Oops\ncondition: ka.verb=create\noutput: x\npriority: INFO\n")
    status, reply = post(mod, make_event, anon(8))
    assert status == 503 and "unknown key 'condition'" in reply["error"] and "YAML list" in reply["error"]
