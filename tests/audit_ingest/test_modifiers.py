"""String operators with list modifiers (oneof/anyof/allof), in conditions and in exception comps (Falco 0.44)."""

from __future__ import annotations

import pytest

from edgeguard.falco import loader
from edgeguard.falco.loader import RulesLoadError, exceptions_condition
from edgeguard.falco.parser import parse, to_text

from .conftest import engine_for, event, matches, rule_text

EVT = {
    "kind": "Event",
    "auditID": "m",
    "stage": "ResponseComplete",
    "verb": "create",
    "user": {"username": "alice-admin", "groups": ["system:masters"]},
    "objectRef": {"resource": "pods", "namespace": "default", "name": "web-1"},
}


def test_a_modifier_before_a_list_makes_one_check():
    assert parse("ka.user.name startswith oneof (a, b)") == (
        "check",
        ("field", "ka.user.name", None),
        "startswith oneof",
        ("list", ["a", "b"]),
    )
    assert to_text(parse("ka.verb != allof(a,b)")) == "ka.verb != allof (a, b)"


def test_the_word_without_a_list_is_still_a_plain_value():
    assert parse("ka.verb = oneof") == ("check", ("field", "ka.verb", None), "=", ("value", "oneof"))


@pytest.mark.parametrize(
    "cond,expected",
    [
        ("ka.user.name startswith anyof (bob, alice)", True),  # at least one holds
        ("ka.user.name startswith anyof (bob, carol)", False),
        ("ka.user.name contains allof (alice, admin)", True),  # every one holds
        ("ka.user.name contains allof (alice, root)", False),
        ("ka.user.name startswith oneof (alice, bob)", True),  # exactly one holds
        ("ka.user.name startswith oneof (alice, al)", False),
        ("ka.user.name = anyof (bob, alice-admin)", True),
        ("ka.user.name != anyof (alice-admin, bob)", True),  # sugar: != a or != b
        ("ka.user.name != allof (alice-admin, bob)", False),
        ("ka.user.name glob anyof ('*-admin', 'x*')", True),
        ("ka.impuser.name startswith anyof (a, b)", False),  # an absent field makes every check false
    ],
)
def test_modifier_semantics(cond, expected):
    assert matches(cond, EVT) is expected


def test_a_list_field_takes_no_modifier():
    with pytest.raises(RulesLoadError) as exc:
        engine_for(rule_text("ka.user.groups startswith anyof (system)"))
    assert exc.value.code == "LOAD_ERR_COMPILE_CONDITION"


# ---- exceptions ---------------------------------------------------------------------------------------
def test_exception_conditions_are_built_as_falco_builds_them():
    cond = "ka.verb=create"
    assert (
        exceptions_condition(
            cond,
            [{"name": "e", "fields": ["ka.user.name"], "comps": ["startswith oneof"], "values": [[["bob", "alice"]]]}],
        )
        == "(ka.verb=create) and not (( ka.user.name startswith oneof (bob, alice)))"
    )
    # a scalar value after a modified operator is parenthesised, as for in/intersects/pmatch
    assert (
        exceptions_condition(
            cond, [{"name": "e", "fields": ["ka.user.name"], "comps": ["startswith anyof"], "values": [["alice"]]}]
        )
        == "(ka.verb=create) and not (( ka.user.name startswith anyof (alice)))"
    )
    assert (
        exceptions_condition(
            cond, [{"name": "e", "fields": "ka.user.name", "comps": "startswith anyof", "values": ["bob", "alice"]}]
        )
        == "(ka.verb=create) and not (ka.user.name startswith anyof (bob, alice))"
    )


def load_exc(exc_yaml):
    return loader.load([("t.yaml", rule_text("ka.verb=create", extra_keys="  exceptions:\n" + exc_yaml))])


def test_modified_exception_comps_suppress_matching_events():
    rs = load_exc(
        "    - name: admins\n      fields: ka.user.name\n      comps: endswith anyof\n"
        "      values: [-admin, -root]\n"
        "    - name: webs\n      fields: [ka.target.name, ka.verb]\n      comps: [startswith oneof, =]\n"
        "      values:\n        - [[api-, db-], create]\n"
    )
    eng = engine_for_ruleset(rs)
    assert eng.match(event(EVT)) == []  # alice-admin is excepted
    assert [r.name for r in eng.match(event(dict(EVT, user={"username": "carol"})))] == ["T"]
    carol_db = dict(EVT, user={"username": "carol"}, objectRef=dict(EVT["objectRef"], name="db-1"))
    assert eng.match(event(carol_db)) == []


def engine_for_ruleset(rs):
    from edgeguard.falco.engine import Engine

    return Engine(rs)


def test_comps_with_surrounding_blanks_are_trimmed_as_falco_does():
    rs = load_exc(
        "    - name: e\n      fields: [ka.user.name]\n      comps: ['  startswith oneof  ']\n"
        "      values: [[[alice]]]\n"
    )
    assert engine_for_ruleset(rs).match(event(EVT)) == []


@pytest.mark.parametrize(
    "exc_yaml,reason",
    [
        (
            "    - name: e\n      fields: [ka.user.name]\n      comps: [in oneof]\n      values: [[[a]]]\n",
            "'in oneof' is not a supported comparison operator",
        ),
        (
            "    - name: e\n      fields: [ka.user.name]\n      comps: ['>= anyof']\n      values: [[[a]]]\n",
            "'>= anyof' is not a supported comparison operator",
        ),
        (
            "    - name: e\n      fields: [ka.user.name]\n      comps: [startswith someof]\n      values: [[[a]]]\n",
            "'startswith someof' is not a supported comparison operator",
        ),
        (
            "    - name: e\n      fields: ka.user.name\n      comps: startswith\n      values: [a]\n",
            "When fields is a single value, comps must be one of (in, pmatch, intersects) or a modifier operator "
            "(e.g. startswith oneof)",
        ),
        (
            "    - name: e\n      fields: ka.user.name\n      comps: [startswith oneof]\n      values: [a]\n",
            "Fields and comps must both be strings",
        ),
    ],
)
def test_malformed_combinations_are_rejected_as_falco_rejects_them(exc_yaml, reason):
    with pytest.raises(RulesLoadError) as exc:
        load_exc(exc_yaml)
    assert exc.value.code == "LOAD_ERR_VALIDATE" and exc.value.reason == reason
