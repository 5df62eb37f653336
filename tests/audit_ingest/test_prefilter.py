"""The rule pre-filter (index on stage/verb/resource/subresource) never changes which rules match."""

from __future__ import annotations

import itertools
import json

import pytest

from bench.audit_ingest import corpus  # one reader of the regression traces and samples
from edgeguard.falco import loader
from edgeguard.falco.compiler import constraints
from edgeguard.falco.engine import DEFAULT_RULES, Engine
from edgeguard.falco.fields import AuditEvent
from edgeguard.falco.parser import parse


def variants():
    stages = ["ResponseComplete", "ResponseStarted", "RequestReceived", None]
    verbs = ["create", "get", "delete", "patch", None]
    resources = ["pods", "configmaps", "clusterroles", "namespaces", None]
    subresources = [None, "exec", "portforward", "ephemeralcontainers"]
    for i, (obj, st, vb, rs, sub) in enumerate(
        itertools.product(corpus()[:12], stages, verbs, resources, subresources)
    ):
        if i % 7:  # a deterministic spread of the 12 * 400 combinations
            continue
        o = json.loads(json.dumps(obj))
        for key, val in (("stage", st), ("verb", vb)):
            if val is None:
                o.pop(key, None)
            else:
                o[key] = val
        ref = dict(o.get("objectRef") or {})
        for key, val in (("resource", rs), ("subresource", sub)):
            if val is None:
                ref.pop(key, None)
            else:
                ref[key] = val
        o["objectRef"] = ref
        yield o


@pytest.mark.parametrize("mode", ["first", "all"])
def test_prefilter_matches_brute_force_on_the_default_ruleset(mode):
    rs = loader.load([DEFAULT_RULES])
    engine = Engine(rs, rule_matching=mode)
    checked = 0
    for obj in list(variants()) + corpus():
        indexed = [r.name for r in engine.match(AuditEvent(obj, 1))]
        brute = []
        evt = AuditEvent(obj, 1)
        for r in engine.rules:
            if r.fn(evt):
                brute.append(r.name)
                if mode == "first":
                    break
        assert indexed == brute, obj
        checked += 1
    assert checked > 600


def test_constraints_are_only_taken_from_required_conjuncts():
    c = constraints(
        parse(
            "ka.verb = create and (ka.target.resource = pods or ka.target.resource in (a, b)) "
            "and not ka.stage = x and (ka.verb = get or ka.user.name = bob)"
        )
    )
    assert c == {"ka.verb": frozenset({"create"}), "ka.target.resource": frozenset({"pods", "a", "b"})}
    assert constraints(parse("ka.verb != create")) == {}
    assert constraints(parse("tolower(ka.verb) = create")) == {}
    assert constraints(parse("jevt.value[/stage] in (A) and json.value[stage] = A")) == {
        "jevt.value[stage]": frozenset({"A"})
    }
