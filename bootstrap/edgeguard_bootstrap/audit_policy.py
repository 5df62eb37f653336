"""The audit policy bootstrap installs: Falco's recommended policy with edgeguard's noise rules first.

The API server applies the first rule that matches, so `level: None` rules placed before the
upstream ones drop only the requests they name; every other request gets exactly the level the
upstream policy gives it. The upstream text follows unchanged, so it stays comparable with
falcosecurity/plugins' file byte for byte (tests/bootstrap/test_audit_policy.py).
"""

from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
UPSTREAM = TEMPLATES / "audit-policy.yaml"
EDGE_RULES = TEMPLATES / "audit-policy-edge-none.yaml"
RULES_LINE = b"rules:\n"


def edge_policy() -> bytes:
    upstream = UPSTREAM.read_bytes()
    at = upstream.find(RULES_LINE)
    if at < 0 or upstream.count(RULES_LINE) != 1:
        raise ValueError(f"{UPSTREAM} has no single top-level `rules:` line to insert edgeguard's rules after")
    at += len(RULES_LINE)
    return upstream[:at] + EDGE_RULES.read_bytes() + upstream[at:]
