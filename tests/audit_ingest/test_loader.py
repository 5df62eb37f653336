"""Rules-file loading: lists, macros, rules, exceptions, append/override, enabled, versions, errors, warnings."""

from __future__ import annotations

import pytest

from edgeguard.falco import loader
from edgeguard.falco.engine import Engine
from edgeguard.falco.loader import RulesLoadError, exceptions_condition

from .conftest import event, rule_text

EVT = {
    "kind": "Event",
    "auditID": "x",
    "stage": "ResponseComplete",
    "verb": "create",
    "user": {"username": "alice"},
    "objectRef": {"resource": "pods", "namespace": "default", "name": "web"},
    "stageTimestamp": "2024-05-01T10:11:12Z",
}


def load(*texts):
    return loader.load([(f"f{i}.yaml", t) for i, t in enumerate(texts)])


def fired(ruleset, obj=EVT, mode="all"):
    return [r.name for r in Engine(ruleset, rule_matching=mode).match(event(obj))]


def codes(ruleset):
    return [w.code for w in ruleset.warnings]


def err(*texts) -> RulesLoadError:
    with pytest.raises(RulesLoadError) as exc:
        load(*texts)
    return exc.value


R = rule_text


# ---- lists ------------------------------------------------------------------------------------------
def test_list_items_expand_lists_defined_earlier():
    rs = load("- list: inner\n  items: [alice]\n- list: outer\n  items: [inner, bob]\n" + R("ka.user.name in (outer)"))
    assert fired(rs) == ["T"]


def test_list_referencing_a_later_list_is_still_expanded_by_the_later_textual_pass():
    # outer's item "inner" stays a literal (inner is defined later), but conditions are rewritten list by
    # list in definition order, so the inserted text "inner" is then replaced by inner's items.
    rs = load("- list: outer\n  items: [inner]\n- list: inner\n  items: [alice]\n" + R("ka.user.name in (outer)"))
    assert fired(rs) == ["T"]
    assert fired(rs, dict(EVT, user={"username": "inner"})) == []


def test_undefined_list_name_is_a_literal_string():
    assert fired(load(R("ka.user.name in (nosuchlist, alice)"))) == ["T"]


@pytest.mark.parametrize("append_form", ["  append: true\n", "  override:\n    items: append\n"])
def test_list_append_adds_items(append_form):
    rs = load(
        "- list: users\n  items: [bob]\n" + R("ka.user.name in (users)"),
        "- list: users\n  items: [alice]\n" + append_form,
    )
    assert fired(rs) == ["T"]


def test_legacy_append_is_deprecated_with_a_warning():
    rs = load(
        "- list: users\n  items: [bob]\n- list: users\n  items: [alice]\n  append: true\n"
        + R("ka.user.name in (users)")
    )
    assert "LOAD_DEPRECATED_ITEM" in codes(rs)


def test_list_redefinition_replaces_items():
    rs = load(
        "- list: users\n  items: [alice]\n" + R("ka.user.name in (users)"),
        "- list: users\n  items: [bob]\n  override:\n    items: replace\n",
    )
    assert fired(rs) == []


def test_list_append_without_previous_list_is_an_error():
    e = err("- list: users\n  items: [alice]\n  append: true\n")
    assert e.code == "LOAD_ERR_VALIDATE" and "no list by that name already exists" in e.reason
    assert e.file == "f0.yaml" and e.item == "list 'users'" and e.line == 1


def test_append_and_override_together_is_an_error():
    e = err("- list: l\n  items: []\n- list: l\n  items: [a]\n  append: true\n  override:\n    items: append\n")
    assert "cannot be used together" in e.reason


def test_empty_list_in_a_condition():
    rs = load("- list: none\n  items: []\n" + R("ka.user.name in (bob, none)"))
    assert fired(rs) == [] and fired(rs, dict(EVT, user={"username": "bob"})) == ["T"]


def test_quirk_list_names_are_substituted_even_inside_quoted_strings():
    # '" who "' becomes '" alice "': the name is bounded by blanks, which are widened and re-inserted.
    rs = load("- list: who\n  items: [alice]\n" + R('ka.user.name = " who "'))
    assert fired(rs, dict(EVT, user={"username": " alice "})) == ["T"]


# ---- macros -----------------------------------------------------------------------------------------
def test_rule_may_reference_a_macro_defined_later_in_the_same_file():
    rs = load(R("is_alice") + "- macro: is_alice\n  condition: ka.user.name=alice\n")
    assert fired(rs) == ["T"]


def test_macro_may_only_reference_earlier_macros_even_when_unused():
    e = err("- macro: a\n  condition: b\n- macro: b\n  condition: ka.verb=create\n")
    assert e.code == "LOAD_ERR_VALIDATE" and "Undefined macro 'b'" in e.reason and e.item == "macro 'a'"


def test_macro_reference_loop_is_an_error():
    e = err(
        "- macro: a\n  condition: ka.verb=create\n- macro: b\n  condition: a\n"
        "- macro: a\n  condition: b\n  override:\n    condition: replace\n"
    )
    assert "reference loop in macro" in e.reason or "Undefined macro" in e.reason


def test_macros_behave_as_parenthesized():
    rs = load("- macro: m\n  condition: ka.verb=get or ka.verb=create\n" + R("m and ka.user.name=bob"))
    assert fired(rs) == []


def test_macro_append_concatenates_condition_text():
    rs = load(
        "- macro: m\n  condition: ka.verb=get\n" + R("m"),
        "- macro: m\n  condition: or ka.verb=create\n  override:\n    condition: append\n",
    )
    assert fired(rs) == ["T"]


def test_override_of_a_macro_in_a_later_file_changes_earlier_rules():
    rs = load(
        "- macro: allowed\n  condition: (jevt.rawtime exists)\n" + R("not allowed"),
        "- macro: allowed\n  condition: ka.user.name=bob\n",
    )
    assert fired(rs) == ["T"]


def test_earlier_file_cannot_use_a_macro_defined_only_in_a_later_file():
    e = err(R("later_macro"), "- macro: later_macro\n  condition: ka.verb=create\n")
    assert e.file == "f0.yaml" and "Undefined macro 'later_macro'" in e.reason


def test_invalid_macro_name_warns():
    rs = load("- macro: bad-name\n  condition: ka.verb=x\n")
    assert "LOAD_INVALID_MACRO_NAME" in codes(rs)


# ---- rules ------------------------------------------------------------------------------------------
def test_first_matching_reports_only_the_first_rule_in_definition_order():
    rs = load(R("ka.verb=create", name="A") + R("ka.verb=create", name="B"))
    assert fired(rs, mode="first") == ["A"] and fired(rs, mode="all") == ["A", "B"]


def test_redefined_rule_keeps_its_original_position():
    rs = load(R("ka.verb=get", name="A") + R("ka.verb=create", name="B"), R("ka.verb=create", name="A"))
    assert fired(rs) == ["A", "B"]


def test_disabled_rule_is_compiled_but_not_evaluated():
    rs = load(R("ka.verb=create", extra_keys="  enabled: false\n"))
    assert fired(rs) == [] and len(rs.rules) == 1
    e = err(R("ka.nosuchfield=create", extra_keys="  enabled: false\n"))
    assert e.code == "LOAD_ERR_COMPILE_CONDITION" and "nonexistent field" in e.reason


def test_enabling_a_rule_with_override_or_legacy_form():
    base = R("ka.verb=create", extra_keys="  enabled: false\n")
    assert fired(load(base, "- rule: T\n  enabled: true\n  override:\n    enabled: replace\n")) == ["T"]
    rs = load(base, "- rule: T\n  enabled: true\n")
    assert fired(rs) == ["T"] and "LOAD_DEPRECATED_ITEM" in codes(rs)


def test_override_append_condition_is_textual():
    # "A or B" + "and not C" = "A or (B and not C)": A alone still fires.
    rs = load(
        R("ka.verb=create or ka.verb=get"),
        "- rule: T\n  condition: and not ka.user.name=alice\n  override:\n    condition: append\n",
    )
    assert fired(rs) == ["T"]


def test_override_append_output_and_tags_and_replace_priority():
    rs = load(
        R("ka.verb=create", output="base", extra_keys="  tags: [b, a]\n"),
        "- rule: T\n  output: extra=%ka.verb\n  tags: [c, a]\n  priority: critical\n"
        "  override:\n    output: append\n    tags: append\n    priority: replace\n",
    )
    (r,) = rs.rules
    assert r.tags == ("a", "b", "c") and r.priority == 2
    assert r.output.render(event(EVT)) == "base extra=create"


def test_legacy_rule_append():
    rs = load(R("ka.verb=create"), "- rule: T\n  condition: and ka.user.name=bob\n  append: true\n")
    assert fired(rs) == []


@pytest.mark.parametrize(
    "item,reason",
    [
        ("- rule: T\n  priority: x\n  override:\n    priority: append\n", "cannot be appended to"),
        ("- rule: T\n  source: k8s_audit\n  override:\n    source: replace\n", "cannot be replaced"),
        ("- rule: T\n  override:\n    output: append\n", "'output' is not defined"),
        ("- rule: T\n  output: x\n  desc: y\n  override:\n    output: append\n", "Unexpected key 'desc'"),
        ("- rule: T\n  output: x\n  override:\n    output: merge\n", "Invalid override operation"),
        ("- rule: U\n  output: x\n  override:\n    output: append\n", "no rule by that name already exists"),
        ("- rule: U\n  output: x\n  override:\n    output: replace\n", "no rule by that name already exists"),
        ("- rule: T\n  append: true\n", "must have exceptions or condition"),
        ("- rule: T\n  desc: d\n  condition: ka.verb=get\n  output: o\n  priority: INFO\n", "different source"),
        (
            "- rule: T\n  desc: d\n  condition: ka.verb=get\n  output: o\n  priority: warn\n  source: k8s_audit\n",
            "Invalid priority",
        ),
        (
            "- rule: V\n  desc: d\n  condition: ka.verb=get\n  priority: INFO\n  source: k8s_audit\n",
            "no mapping for key 'output'",
        ),
        ("- rule: V\n  desc: d\n  condition:\n  output: o\n  priority: INFO\n", "Mapping for key 'condition' is empty"),
        ("- rule: V\n  enabled: true\n", "no rule by that name already exists"),
    ],
)
def test_rule_item_errors_name_the_item_and_reason(item, reason):
    e = err(R("ka.verb=create"), item)
    assert reason in e.reason
    assert e.file == "f1.yaml" and e.item.startswith("rule '")
    assert str(e).startswith("f1.yaml:1: rule '")


def test_priorities_are_case_insensitive_and_info_is_an_alias():
    rs = load(R("ka.verb=create", priority="info", name="A") + R("ka.verb=create", priority="wArNiNg", name="B"))
    assert [r.priority for r in rs.rules] == [6, 4]


def test_priority_threshold_drops_less_severe_rules():
    rs = load(R("ka.verb=create", priority="INFO", name="A") + R("ka.verb=create", priority="ERROR", name="B"))
    assert [r.name for r in Engine(rs, min_priority="warning").match(event(EVT))] == ["B"]


def test_rules_of_other_sources_are_skipped_and_counted():
    rs = load(
        "- macro: spawned\n  condition: evt.type=execve and proc.name=sh\n"
        "- rule: Shell\n  desc: d\n  condition: spawned\n  output: o\n  priority: INFO\n"
        "- rule: Other\n  desc: d\n  condition: x\n  output: o\n  priority: INFO\n  source: aws_cloudtrail\n"
        + R("ka.verb=create")
    )
    assert rs.skipped_other_source == 2 and [r.name for r in rs.rules] == ["T"]
    assert codes(rs).count("LOAD_UNKNOWN_SOURCE") == 2


def test_output_is_trimmed_and_tags_sorted_unique():
    rs = load(R("ka.verb=create", output="  hi  ", extra_keys="  tags: [z, a, z]\n"))
    assert rs.rules[0].output.fmt == "hi" and rs.rules[0].tags == ("a", "z")


def test_skip_if_unknown_filter_drops_the_rule_with_a_warning():
    rs = load(R("proc.name=sh", extra_keys="  skip-if-unknown-filter: true\n"))
    assert rs.rules == [] and "LOAD_UNKNOWN_FILTER" in codes(rs)


# ---- exceptions -------------------------------------------------------------------------------------
def test_exception_condition_text_matches_falco_unit_test():
    got = exceptions_condition(
        "proc.cmdline contains curl or proc.cmdline contains wget",
        [{"name": "e", "fields": ["proc.cmdline"], "comps": ["contains"], "values": [["curl 127.0.0.1"]]}],
    )
    assert got == (
        '(proc.cmdline contains curl or proc.cmdline contains wget) and not (( proc.cmdline contains "curl 127.0.0.1"))'
    )


EXC = """  exceptions:
    - name: known
      fields: [ka.user.name, ka.target.namespace]
      values:
        - [alice, default]
    - name: ns_list
      fields: ka.target.namespace
      values: [kube-system]
"""


def test_exceptions_suppress_matching_events():
    rs = load(R("ka.verb=create", extra_keys=EXC))
    assert fired(rs) == []
    assert fired(rs, dict(EVT, user={"username": "bob"})) == ["T"]
    assert fired(rs, dict(EVT, user={"username": "bob"}, objectRef={"namespace": "kube-system"})) == []


def test_exception_comps_and_list_values():
    rs = load(
        R(
            "ka.verb=create",
            extra_keys="  exceptions:\n    - name: e\n      fields: [ka.user.name]\n"
            "      comps: [in]\n      values:\n        - [[bob, alice]]\n",
        )
    )
    assert fired(rs) == []


def test_exception_values_appended_by_override():
    base = R("ka.verb=create", extra_keys=EXC)
    more = (
        "- rule: T\n  exceptions:\n    - name: known\n      values:\n        - [bob, default]\n"
        "  override:\n    exceptions: append\n"
    )
    rs = load(base, more)
    assert fired(rs, dict(EVT, user={"username": "bob"})) == []
    assert fired(rs, dict(EVT, user={"username": "carol"})) == ["T"]


def test_new_exception_appended_and_exceptions_replaced():
    base = R("ka.verb=create", extra_keys=EXC)
    add = (
        "- rule: T\n  exceptions:\n    - name: by_user\n      fields: [ka.user.name]\n      values: [[carol]]\n"
        "  override:\n    exceptions: append\n"
    )
    assert fired(load(base, add), dict(EVT, user={"username": "carol"})) == []
    rep = (
        "- rule: T\n  exceptions:\n    - name: only\n      fields: [ka.user.name]\n      comps: [=]\n"
        "      values: [[zed]]\n  override:\n    exceptions: replace\n"
    )
    assert fired(load(base, rep)) == ["T"]  # alice/default no longer excepted


def test_exception_replace_without_fields_errors_as_in_falco():
    base = R("ka.verb=create", extra_keys=EXC)
    e = err(
        base,
        "- rule: T\n  exceptions:\n    - name: known\n      values: [[a, b]]\n  override:\n    exceptions: replace\n",
    )
    assert "Item has no mapping for key 'fields'" in e.reason


@pytest.mark.parametrize(
    "exc,reason",
    [
        ("    - name: e\n      fields: [ka.user.name, ka.verb]\n      comps: [=]\n", "equal length"),
        ("    - name: e\n      fields: [ka.nosuch]\n", "not a supported filter field"),
        # Falco 0.44's wording (rule_loader_collector.cpp validate_exception_info)
        (
            "    - name: e\n      fields: ka.user.name\n      comps: '='\n",
            "comps must be one of (in, pmatch, intersects) or a modifier operator",
        ),
        ("    - name: e\n      fields: [ka.user.name]\n      comps: [like]\n", "not a supported comparison operator"),
        ("    - name: e\n      fields: [ka.user.name, ka.verb]\n      values: [[a]]\n", "Fields and values lists"),
    ],
)
def test_invalid_exceptions_are_errors(exc, reason):
    e = err(R("ka.verb=create", extra_keys="  exceptions:\n" + exc))
    assert reason in e.reason


def test_duplicate_exception_names_warn():
    rs = load(
        R(
            "ka.verb=create",
            extra_keys="  exceptions:\n    - name: e\n      fields: [ka.verb]\n"
            "    - name: e\n      fields: [ka.verb]\n",
        )
    )
    assert "LOAD_EXCEPTION_NAME_NOT_UNIQUE" in codes(rs)


# ---- versions, structure, warnings -----------------------------------------------------------------
# The engine is Falco 0.44's, 0.62.0.
@pytest.mark.parametrize(
    "v,ok",
    [("15", True), ("0.62.0", True), ("2", True), ("63", False), ("0.63.0", False), ("1.0.0", False), ("abc", False)],
)
def test_required_engine_version(v, ok):
    text = f"- required_engine_version: {v}\n"
    if ok:
        assert load(text)
    else:
        assert "engine version" in err(text).reason


@pytest.mark.parametrize(
    "name,ver,ok",
    [
        ("k8saudit", "0.18.0", True),
        ("k8saudit", "0.7.0", True),
        ("json", "0.7.0", True),
        ("k8saudit", "0.19.0", False),
        ("k8saudit", "1.0.0", False),
        ("cloudtrail", "0.1.0", False),
    ],
)
def test_required_plugin_versions(name, ver, ok):
    text = f"- required_plugin_versions:\n    - name: {name}\n      version: {ver}\n"
    if ok:
        assert load(text)
    else:
        assert "Plugin requirement not satisfied" in err(text).reason


def test_plugin_alternatives_satisfy_the_requirement():
    assert load(
        "- required_plugin_versions:\n    - name: k8saudit-eks\n      version: 0.12.0\n"
        "      alternatives:\n        - name: k8saudit\n          version: 0.18.0\n"
    )


@pytest.mark.parametrize(
    "text,code,reason",
    [
        ("- rule: [unclosed\n", "LOAD_ERR_YAML_PARSE", ""),
        ("rule: x\n", "LOAD_ERR_YAML_VALIDATE", "not yaml array of objects"),
        ("just text\n", "LOAD_ERR_YAML_VALIDATE", "not yaml"),
        ("- [a, b]\n", "LOAD_ERR_YAML_VALIDATE", "Each element should be a yaml associative array"),
        ("- list: x\n", "LOAD_ERR_YAML_VALIDATE", "no mapping for key 'items'"),
        ("- macro: x\n  condition: ka.verb=\n", "LOAD_ERR_COMPILE_CONDITION", "expected a string value"),
        (R("ka.verb=create", output="bad %nosuch.field"), "LOAD_ERR_COMPILE_OUTPUT", "invalid formatting token"),
    ],
)
def test_structural_errors(text, code, reason):
    e = err(text)
    assert e.code == code and reason in e.reason and e.file == "f0.yaml"


def test_loading_stops_at_the_first_error_in_a_file():
    e = err("- list: a\n  items: [x]\n  append: true\n- list: b\n")
    assert e.item == "list 'a'"


def test_warnings_unknown_item_unused_macro_and_list_and_na_check():
    rs = load(
        "- foo: bar\n- macro: unused\n  condition: ka.verb=x\n- list: spare\n  items: [a]\n" + R("ka.user.name = <NA>")
    )
    c = codes(rs)
    assert {"LOAD_UNKNOWN_ITEM", "LOAD_UNUSED_MACRO", "LOAD_UNUSED_LIST", "LOAD_UNSAFE_NA_CHECK"} <= set(c)


def test_multiple_yaml_documents_in_one_file():
    assert len(load("- list: a\n  items: [x]\n---\n" + R("ka.verb=create")).rules) == 1


def test_default_ruleset_loads_cleanly():
    rs = loader.load([loader.Path(__file__).resolve().parents[1] / "data" / "falco" / "k8s_audit_rules.yaml"])
    assert (len(rs.rules), rs.macros, rs.lists) == (48, 45, 18)
    assert rs.required_engine_version == "0.15.0"


def test_compile_warnings_for_misused_constants_and_plain_regex():
    rs = load(R("ka.user.name = ka.verb or ka.verb = 'tolower(x)' or ka.verb regex create"))
    msgs = [w.message for w in rs.warnings if w.code == "LOAD_COMPILE_CONDITION"]
    assert any("misused as a const string" in m and "ka.verb" in m for m in msgs)
    assert any("transformer" in m for m in msgs)
    assert any("regex 'create'" in m for m in msgs)
    assert not [w for w in load(R("ka.verb = create")).warnings if w.code == "LOAD_COMPILE_CONDITION"]


def test_container_info_is_removed_from_outputs_with_a_warning():
    rs = load(R("ka.verb=create", output="x %container.info"))
    assert rs.rules[0].output.fmt == "x" and "LOAD_DEPRECATED_ITEM" in codes(rs)
