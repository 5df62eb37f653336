"""falco.yaml settings through EngineConfig: rules selection (and -D/-t/-T), append_output, priority, rule_matching.

Written from Falco's docs ("Controlling Rules", "Alert Formatting") and its unit tests (test_extra_output.cpp,
test_configuration_rule_selection.cpp)."""

from __future__ import annotations

import json

import pytest

from edgeguard.falco import loader
from edgeguard.falco.configuration import ConfigError, EngineConfig, Selection, matches_wildcard
from edgeguard.falco.engine import DEFAULT_RULES, Engine, load_engine

from .conftest import event, rule_text

EVT = {
    "kind": "Event",
    "auditID": "s",
    "stage": "ResponseComplete",
    "verb": "create",
    "user": {"username": "alice"},
    "objectRef": {"resource": "pods", "namespace": "default", "name": "web"},
}

RULES = (
    rule_text("ka.verb=create", name="Netcat Remote Code Execution in Container", extra_keys="  tags: [network]\n")
    + rule_text("ka.verb=create", name="Delete or rename shell history", extra_keys="  tags: [filesystem]\n")
    + rule_text("ka.verb=create", name="k8s_noisy_rule", extra_keys="  tags: [network, noisy]\n")
    + rule_text("ka.verb=create", name="k8s_quiet_rule", extra_keys="  enabled: false\n  tags: [k8s]\n")
)


def evaluated(config, texts=RULES):
    rs = loader.load([("r.yaml", texts)], append_output=config.append_output)
    return [r.name for r in Engine(rs, config=config).rules]


def cfg(yaml_text):
    return EngineConfig.from_yaml(yaml_text, "falco.yaml")


def test_the_documented_example_enables_only_the_two_rules_named():
    c = cfg(
        'rules:\n  - disable:\n      rule: "*"\n'
        "  - enable:\n      rule: Netcat Remote Code Execution in Container\n"
        "  - enable:\n      rule: Delete or rename shell history\n"
    )
    assert evaluated(c) == ["Netcat Remote Code Execution in Container", "Delete or rename shell history"]


def test_entries_apply_in_order_and_override_enabled_in_the_files():
    c = cfg(
        "rules:\n  - enable:\n      tag: network\n  - enable:\n      rule: 'k8s_*'\n"
        "  - disable:\n      rule: k8s_noisy_rule\n"
    )
    # k8s_quiet_rule is `enabled: false` in its file: selection enables it all the same
    assert evaluated(c) == [
        "Netcat Remote Code Execution in Container",
        "Delete or rename shell history",
        "k8s_quiet_rule",
    ]
    assert "k8s_noisy_rule" not in evaluated(cfg("rules:\n  - disable:\n      tag: noisy\n"))


def test_a_rule_enabled_by_selection_joins_the_end_of_the_evaluation_list():
    c = cfg(
        "rules:\n  - disable:\n      rule: '*'\n  - enable:\n      rule: k8s_noisy_rule\n"
        "  - enable:\n      tag: network\n"
    )
    assert evaluated(c) == ["k8s_noisy_rule", "Netcat Remote Code Execution in Container"]
    # so under first-match the selection order decides which rule alerts
    rs = loader.load([("r.yaml", RULES)])
    assert [r.name for r in Engine(rs, config=c).match(event(EVT))] == ["k8s_noisy_rule"]


@pytest.mark.parametrize(
    "pattern,name,ok",
    [
        ("*", "anything", True),
        ("k8s_*", "k8s_noisy_rule", True),
        ("*noisy*", "k8s_noisy_rule", True),
        ("*rule", "k8s_noisy_rule", True),
        ("k8s_noisy_rule", "k8s_noisy_rule", True),
        ("k8s", "k8s_noisy_rule", False),
        ("*ab", "abab", False),  # leftmost occurrence, no backtracking (Falco's matches_wildcard)
        ("a*c", "abc", True),
        ("a?c", "abc", False),  # only * is special
    ],
)
def test_rule_names_match_falcos_wildcard(pattern, name, ok):
    assert matches_wildcard(pattern, name) is ok


def test_cli_options_d_t_and_t_become_entries_after_the_configured_ones():
    base = cfg("rules:\n  - enable:\n      rule: k8s_quiet_rule\n")
    assert "k8s_quiet_rule" not in evaluated(base.with_cli_selection(disable_substrings=["quiet"]))
    assert evaluated(base.with_cli_selection(disable_tags=["network"])) == [
        "Delete or rename shell history",
        "k8s_quiet_rule",
    ]
    # -t: only the rules with that tag, even one disabled in its file
    assert evaluated(EngineConfig().with_cli_selection(enable_tags=["k8s"])) == ["k8s_quiet_rule"]
    with pytest.raises(ConfigError, match=r"You can not specify both disabled \(-D/-T\) and enabled \(-t\) rules"):
        EngineConfig().with_cli_selection(disable_substrings=["x"], enable_tags=["k8s"])
    assert EngineConfig().with_cli_selection(enable_tags=["k8s"]).rules == (
        Selection(False, rule="*"),
        Selection(True, tag="k8s"),
    )


def test_rules_below_the_priority_threshold_cannot_be_enabled():
    texts = rule_text("ka.verb=create", name="Low", priority="DEBUG") + rule_text(
        "ka.verb=create", name="High", priority="ERROR"
    )
    c = cfg("priority: warning\nrules:\n  - enable:\n      rule: Low\n")
    assert evaluated(c, texts) == ["High"]


@pytest.mark.parametrize(
    "text,reason",
    [
        ("rules:\n  - enable:\n      rule: a\n    disable:\n      rule: b\n", "separate entries"),
        ("rules:\n  - allow:\n      rule: a\n", "unknown key 'allow'"),
        ("rules:\n  - enable:\n      name: a\n", "unknown key 'name'"),
        ("rules:\n  - enable: a\n", "a map with 'rule'"),
        ("rules: all\n", "a list of enable/disable entries"),
        ("priority: loud\n", "unknown priority"),
        ("rule_matching: some\n", "'first' or 'all'"),
        ("append_output:\n  - match:\n      sources: [k8s_audit]\n", "unknown key 'sources'"),
        ("append_output:\n  - extra_fields: [[a, b]]\n", "one-key map"),
        ("rules: [\n", "not valid YAML"),
    ],
)
def test_bad_settings_are_refused_with_the_place_and_the_reason(text, reason):
    with pytest.raises(ConfigError) as exc:
        cfg(text)
    assert reason in str(exc.value) and str(exc.value).startswith("falco.yaml")


def test_other_falco_yaml_keys_are_ignored():
    c = cfg("json_output: true\nhttp_output:\n  enabled: true\nrule_matching: all\n")
    assert c.rule_matching == "all" and c.rules == ()


def test_a_later_config_adds_entries_and_overrides_scalars():
    a = cfg("priority: notice\nrules:\n  - disable:\n      tag: noisy\n")
    b = cfg("rule_matching: all\nrules:\n  - enable:\n      rule: k8s_noisy_rule\n")
    m = a.merged(b)
    assert (m.priority, m.rule_matching) == ("notice", "all")
    # a later setting wins when it is given, even if it is the default
    assert m.merged(cfg("rule_matching: first\n")).rule_matching == "first"
    assert m.rules == (Selection(False, tag="noisy"), Selection(True, rule="k8s_noisy_rule"))


# ---- append_output (test_extra_output.cpp) ----------------------------------------------------------
OUT_RULES = (
    rule_text("ka.verb=create", name="legit_rule", output="out 1", extra_keys="  tags: [tag1]\n")
    + rule_text("ka.verb=create", name="another_rule", output="out 2", extra_keys="  tags: [tag1]\n")
    + rule_text("ka.verb=create", name="a_third_rule", output="out 3", extra_keys="  tags: [tag1, tag2]\n")
)


def outputs(config):
    rs = loader.load([("r.yaml", OUT_RULES)], append_output=config.append_output)
    return {r.name: r.output.fmt for r in rs.rules}


def test_extra_output_by_tag_and_rule_is_appended_in_order():
    c = cfg(
        "append_output:\n  - match:\n      tags: [tag1]\n    extra_output: extra 1\n"
        "  - match:\n      rule: another_rule\n    extra_output: extra 2\n"
        "  - match:\n      tags: [tag1, tag2]\n    extra_output: extra 3\n"
    )
    assert outputs(c) == {
        "legit_rule": "out 1 extra 1",
        "another_rule": "out 2 extra 1 extra 2",
        "a_third_rule": "out 3 extra 1 extra 3",
    }


def test_extra_output_for_all_rules_and_by_source():
    assert set(outputs(cfg("append_output:\n  - extra_output: 'verb=%ka.verb'\n")).values()) == {
        "out 1 verb=%ka.verb",
        "out 2 verb=%ka.verb",
        "out 3 verb=%ka.verb",
    }
    assert (
        outputs(cfg("append_output:\n  - match:\n      source: syscall\n    extra_output: x\n"))["legit_rule"]
        == "out 1"
    )


def test_extra_fields_go_to_output_fields_only():
    c = cfg(
        "append_output:\n  - match:\n      source: k8s_audit\n    extra_output: 'on %ka.target.resource'\n"
        "    extra_fields:\n      - who: 'user %ka.user.name'\n      - ka.verb\n"
        "      - ka.req.pod.containers.image\n"
    )
    eng = load_engine([("r.yaml", OUT_RULES)], c, hostname="h")
    (alert,) = [a for a in eng.evaluate(event(EVT)) if a.rule == "legit_rule"]
    assert alert.output.endswith(" Informational out 1 on pods")
    assert alert.output_fields["who"] == "user alice"  # a formatted field is its rendered text
    assert alert.output_fields["ka.verb"] == "create"  # a bare field is its typed value
    assert alert.output_fields["ka.req.pod.containers.image"] is None
    assert alert.output_fields["ka.target.resource"] == "pods"
    assert json.loads(eng.alert_json(eng.match(event(EVT))[0], event(EVT))) == alert.to_dict()


def test_an_invalid_extra_field_fails_the_load():
    c = cfg("append_output:\n  - extra_fields:\n      - bad: '%ka.nosuch'\n")
    with pytest.raises(loader.RulesLoadError) as exc:
        loader.load([("r.yaml", OUT_RULES)], append_output=c.append_output)
    assert exc.value.code == "LOAD_ERR_COMPILE_OUTPUT"


# ---- the fast alert JSON ----------------------------------------------------------------------------
def test_alert_json_is_byte_identical_to_the_alert_object_on_every_regression_and_sample_event():
    from bench.audit_ingest import corpus

    from .conftest import regression_tests, rules_files

    extra = cfg(
        "append_output:\n  - extra_output: 'u=%ka.user.name'\n    extra_fields:\n"
        "      - ka.verb\n      - t: '%evt.time %ka.target.name'\n      - evt.time\n"
    )
    sets = [[DEFAULT_RULES]] + [rules_files(t) for t in regression_tests()]
    checked = 0
    for files in sets:
        for c in (EngineConfig(rule_matching="all"), extra.merged(EngineConfig(rule_matching="all"))):
            try:
                eng = load_engine(files, c, hostname="edge-1")
            except loader.RulesLoadError:
                continue  # the tests that expect a load error
            for obj in corpus():
                for r in eng.match(event(obj)):
                    assert eng.alert_json(r, event(obj)) == eng.alert(r, event(obj)).to_json()
                    checked += 1
    assert checked > 1000
