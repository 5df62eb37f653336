"""The stdlib YAML writer must read back exactly (PyYAML is the judge here)."""

from __future__ import annotations

import pytest
import yaml

from edgeguard_bootstrap import yamlout

TRICKY = [
    "",
    " ",
    "yes",
    "No",
    "ON",
    "off",
    "y",
    "n",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "1",
    "1.0",
    "0x1F",
    "1e3",
    "08",
    "0o17",
    "1:30",
    ".inf",
    "-",
    "- x",
    "a: b",
    "a:b",
    "key:",
    "#x",
    "a #b",
    "@at",
    "*ref",
    "&anchor",
    "!tag",
    "|",
    ">",
    "%dir",
    "`x`",
    "{x}",
    "[x]",
    "x,y",
    "'q'",
    '"dq"',
    "tab\there",
    "line\nbreak",
    "trailing ",
    "ünïcode",
    "emoji 🚀",
    "\\back",
    "http://gw:8080/function/x?token=a_b-c",
    "audit-log-maxage=7",
    "/var/lib/x",
    "node-role.kubernetes.io/control-plane",
    "5s",
    "2026-01-01",
    "2026-01-01T00:00:00Z",
    "=",
    "falcosecurity/falco",
    "?q",
    "a?b",
    "<<",
    "---",
    "...",
    "\u2028sep",
    "nul\x00",
    "del\x7f",
    "nb\u00a0sp",
    "\ufeffbom",
]


@pytest.mark.parametrize("value", TRICKY)
def test_every_tricky_string_reads_back_as_the_same_string(value):
    doc = {"k": value, "list": [value], "nested": {value or "empty": value}}
    assert yaml.safe_load(yamlout.dump(doc)) == doc


def test_nested_structures_and_scalars_read_back_identically():
    doc = {
        "a": 1,
        "b": 0.1,
        "c": True,
        "d": False,
        "e": None,
        "f": [],
        "g": {},
        "h": [{"x": 1, "y": [1, 2, {"z": "w"}]}, [1, [2, 3]], "s", {}],
        "i": {"j": {"k": {"l": ["m"]}}},
        "kube-apiserver-arg+": ["audit-policy-file=/x", "audit-webhook-batch-max-wait=5s"],
    }
    text = yamlout.dump(doc, "header line one\nline two")
    assert text.startswith("# header line one\n# line two\n")
    assert yaml.safe_load(text) == doc


def test_unsupported_types_are_refused_not_written_wrongly():
    with pytest.raises(TypeError):
        yamlout.dump({"a": object()})
    with pytest.raises(TypeError):
        yamlout.dump({1: "int key"})
