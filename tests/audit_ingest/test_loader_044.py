"""Loader behaviour of Falco 0.44 (rule_loader_reader/_collector/_compiler, rule_loading_messages.h)."""

from __future__ import annotations

import pytest

from edgeguard.falco import loader
from edgeguard.falco.engine import Engine
from edgeguard.falco.loader import RulesLoadError

from .conftest import event, rule_text

R = rule_text
EVT = {
    "kind": "Event",
    "auditID": "x",
    "stage": "ResponseComplete",
    "verb": "create",
    "user": {"username": "alice"},
    "objectRef": {"resource": "pods", "namespace": "default", "name": "web"},
}


def load(*texts):
    return loader.load([(f"f{i}.yaml", t) for i, t in enumerate(texts)])


def err(*texts) -> RulesLoadError:
    with pytest.raises(RulesLoadError) as exc:
        load(*texts)
    return exc.value


def warnings(rs, code):
    return [w.message for w in rs.warnings if w.code == code]


# ---- unknown keys ---------------------------------------------------------------------------------
def test_unknown_key_on_a_rule_a_list_and_a_macro_gives_falcos_warning():
    rs = load(
        "- list: l\n  items: [alice]\n  colour: red\n"
        "- macro: m\n  condition: ka.user.name in (l)\n  descr: typo\n" + R("m", extra_keys="  priorty: INFO\n")
    )
    assert warnings(rs, "LOAD_UNKNOWN_KEY") == ["Unknown key 'colour'", "Unknown key 'descr'", "Unknown key 'priorty'"]
    assert [w.item for w in rs.warnings if w.code == "LOAD_UNKNOWN_KEY"] == ["list 'l'", "macro 'm'", "rule 'T'"]


def test_the_bundled_ruleset_has_no_unknown_keys():
    rs = loader.load([loader.Path(__file__).resolve().parents[2] / "edgeguard/falco/rules/k8s_audit_rules.yaml"])
    assert warnings(rs, "LOAD_UNKNOWN_KEY") == []


# ---- capture and capture_duration -----------------------------------------------------------------
def test_capture_keys_are_read_and_shown_on_the_loaded_rule():
    (r,) = load(R("ka.verb=create", extra_keys="  capture: true\n  capture_duration: 2000\n")).rules
    assert (r.capture, r.capture_duration) == (True, 2000)
    assert r.info["capture"] is True and r.info["capture_duration"] == 2000
    (r,) = load(R("ka.verb=create")).rules
    assert (r.capture, r.capture_duration) == (False, 0)


@pytest.mark.parametrize("value", ["5s", "-1", "1.5", "soon"])
def test_a_non_numeric_capture_duration_is_an_error(value):
    e = err(R("ka.verb=create", extra_keys=f"  capture_duration: '{value}'\n"))
    assert e.code == "LOAD_ERR_YAML_VALIDATE" and "capture_duration" in e.reason
    assert "Can't decode YAML scalar value" in e.reason


def test_capture_is_a_boolean():
    assert "capture" in err(R("ka.verb=create", extra_keys="  capture: maybe\n")).reason


def test_capture_keys_can_be_replaced_but_not_appended():
    rs = load(
        R("ka.verb=create"),
        "- rule: T\n  capture: true\n  capture_duration: 300\n"
        "  override:\n    capture: replace\n    capture_duration: replace\n",
    )
    assert (rs.rules[0].capture, rs.rules[0].capture_duration) == (True, 300)
    e = err(R("ka.verb=create"), "- rule: T\n  capture: true\n  override:\n    capture: append\n")
    assert e.reason == "Key 'capture' cannot be appended to, use 'replace' instead"


# ---- loader details -------------------------------------------------------------------------------
def test_an_append_item_with_an_empty_source_loads():
    rs = load(
        R("ka.verb=create"),
        '- rule: T\n  source: ""\n  condition: and ka.user.name=bob\n  override:\n    condition: append\n',
    )
    assert [r.name for r in Engine(rs).match(event(EVT))] == []  # alice is not bob: the append applied
    rs = load(R("ka.verb=create"), '- rule: T\n  source: ""\n  condition: and ka.user.name=bob\n  append: true\n')
    assert [r.name for r in Engine(rs).match(event(dict(EVT, user={"username": "bob"})))] == ["T"]


def test_the_deprecated_append_warning_is_given_even_when_the_item_then_fails():
    # Falco's unit test rule_incorrect_append_override: the warning and the error are both reported.
    e = err(
        R("ka.verb=create"),
        "- rule: T\n  condition: and ka.verb=get\n  append: true\n  override:\n    condition: append\n",
    )
    assert e.reason == loader.errors.ERROR_OVERRIDE_APPEND
    assert [(w.code, w.message) for w in e.warnings] == [("LOAD_DEPRECATED_ITEM", loader.errors.WARNING_APPEND)]
    e = err("- list: l\n  items: [a]\n  append: true\n")  # no list to append to
    assert e.reason == loader.errors.ERROR_NO_PREVIOUS_LIST and e.warnings[0].code == "LOAD_DEPRECATED_ITEM"


def test_a_field_name_with_spaces_used_as_an_exception_value_is_warned_about_as_libsinsp_trims():
    rs = load(
        R(
            "ka.verb=create",
            extra_keys="  exceptions:\n    - name: e\n      fields: [ka.target.name]\n"
            "      values: [[' ka.user.name ']]\n",
        )
    )
    assert "string 'ka.user.name' may be a valid field misused as a const string value" in warnings(
        rs, "LOAD_COMPILE_CONDITION"
    )


@pytest.mark.parametrize(
    "texts,reason",
    [
        (
            (R("ka.verb=create"), "- rule: U\n  output: x\n  override:\n    output: replace\n"),
            "An 'override.<key>: replace' to a rule was requested but no rule by that name already exists",
        ),
        (
            (R("ka.verb=create"), "- rule: T\n  priority: x\n  override:\n    priority: merge\n"),
            "Invalid override operation for key 'priority': 'merge'. Allowed values are: replace ",
        ),
        (
            ("- list: l\n  items: [a]\n  override:\n    colour: append\n",),
            "Key 'colour' cannot be appended to, use 'replace' instead",
        ),
        (
            (
                R("ka.verb=create"),
                "- rule: T\n  exceptions:\n    - name: new\n      values: [[a]]\n  override:\n    exceptions: append\n",
            ),
            "Rule exception must have fields property with a list of fields",
        ),
        (
            (
                R(
                    "ka.verb=create",
                    extra_keys="  exceptions:\n    - name: e\n      fields: [ka.verb]\n      values: [[x]]\n",
                ),
                "- rule: T\n  exceptions:\n    - name: e\n      comps: [=]\n      values: [[y]]\n"
                "  override:\n    exceptions: append\n",
            ),
            "Can not append exception comps to existing exception, only values",
        ),
        (
            ("- required_plugin_versions:\n    - name: k8saudit\n      version: latest\n",),
            "Invalid required version 'latest' for plugin 'k8saudit'",
        ),
        ((R("ka.verb=create"), "- rule: T\n"), "Item has no mapping for key 'enabled'"),
    ],
)
def test_messages_follow_falco_044(texts, reason):
    assert err(*texts).reason == reason


def test_appending_an_exception_without_values_warns():
    rs = load(
        R("ka.verb=create", extra_keys="  exceptions:\n    - name: e\n      fields: [ka.verb]\n      values: [[x]]\n"),
        "- rule: T\n  exceptions:\n    - name: e\n  override:\n    exceptions: append\n",
    )
    assert warnings(rs, "LOAD_APPEND_NO_VALUES") == ["Overriding/appending exception with no values"]


def test_standalone_enabled_is_deprecated_with_falcos_wording():
    rs = load(R("ka.verb=create", extra_keys="  enabled: false\n"), "- rule: T\n  enabled: true\n")
    assert warnings(rs, "LOAD_DEPRECATED_ITEM") == [loader.errors.WARNING_ENABLED]


def test_engine_version_is_falco_044s():
    assert loader.ENGINE_VERSION == (0, 62, 0)
    assert load("- required_engine_version: 0.62.0\n")
