"""The Grafana dashboard and the Prometheus scrape configuration in docs/metrics.md against what the
functions really export (their metrics.py DEFINITIONS)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "edgeguard.json"
DOC = REPO / "docs" / "metrics.md"
FUNCTIONS = ("audit-ingest", "alert-forwarder", "configmap-secret-scrubber", "node-enroll")
PREFIX = {fn: "edgeguard_" + fn.replace("-", "_") + "_" for fn in FUNCTIONS}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}


def definitions(fn: str) -> dict[str, tuple[str, tuple[str, ...]]] | None:
    """name -> (type, label names) from functions/<fn>/metrics.py's DEFINITIONS literal; None if absent."""
    path = REPO / "functions" / fn / "metrics.py"
    if not path.is_file():
        return None
    for node in ast.walk(ast.parse(path.read_text())):
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "DEFINITIONS" and isinstance(node.value, ast.Dict):
            out = {}
            for key, value in zip(node.value.keys, node.value.values):
                if key is None:  # **other: definitions shared from edgeguard (e.g. token rotation)
                    continue
                kind, _help, labels = ast.literal_eval(value)
                out[ast.literal_eval(key)] = (kind, tuple(labels))
            return out
    raise AssertionError(f"no DEFINITIONS dict literal in {path}")


def exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            found.append(target["expr"])
    return found


def metric_refs(expr: str) -> list[str]:
    return re.findall(r"\bedgeguard_[a-z0-9_]+", expr)


def grouping_labels(expr: str) -> set[str]:
    labels = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in group.split(",") if x.strip()}
    return labels


def resolve(fn: str, name: str, defs: dict) -> tuple[str, tuple[str, ...]] | None:
    base = name[len(PREFIX[fn]) :]
    if base in defs:
        return defs[base]
    for suffix in HISTOGRAM_SERIES:
        if base.endswith(suffix) and defs.get(base[: -len(suffix)], ("",))[0] == "histogram":
            return defs[base[: -len(suffix)]]
    return None


def test_every_dashboard_query_reads_an_edgeguard_metric_of_one_of_the_four_functions():
    all_exprs = exprs()
    assert len(all_exprs) >= 40
    for expr in all_exprs:
        refs = metric_refs(expr)
        assert refs, expr
        for name in refs:
            assert any(name.startswith(p) for p in PREFIX.values()), name


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_every_metric_and_label_the_dashboard_uses_is_one_the_function_defines(fn):
    used = [(e, n) for e in exprs() for n in metric_refs(e) if n.startswith(PREFIX[fn])]
    assert used, f"the dashboard has no panel for {fn}"
    defs = definitions(fn)
    if defs is None:
        pytest.skip(f"functions/{fn}/metrics.py is not in this tree yet (its owner's branch defines it)")
    for expr, name in used:
        found = resolve(fn, name, defs)
        assert found is not None, f"{name} ({expr}) is not in functions/{fn}/metrics.py"
        kind, labels = found
        allowed = set(labels) | ({"le"} if kind == "histogram" else set())
        assert grouping_labels(expr) <= allowed, f"{expr}: {fn} defines labels {sorted(allowed)}"
        if kind == "counter" or name.endswith(("_bucket", "_count", "_sum")):
            assert re.search(rf"(rate|increase)\(\s*{re.escape(name)}\b", expr), f"{expr}: a counter needs rate()"


def scrape_config() -> dict:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    configs = [yaml.safe_load(b) for b in blocks]
    configs = [c for c in configs if isinstance(c, dict) and "scrape_configs" in c]
    assert len(configs) == 1, "docs/metrics.md has one prometheus.yml example"
    return configs[0]


def test_the_scrape_configuration_reads_all_four_functions_through_the_gateway_with_a_token_file():
    jobs = scrape_config()["scrape_configs"]
    paths = {}
    for job in jobs:
        auth = job["authorization"]
        assert auth.get("type", "Bearer") == "Bearer" and auth["credentials_file"].startswith("/")
        assert "credentials" not in auth and "params" not in job  # never the token itself, never in the URL
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert targets == ["gateway.openfaas.svc.cluster.local:8080"]
        paths[job["job_name"]] = job["metrics_path"]
    assert paths == {f"edgeguard-{fn}": f"/function/{fn}/metrics" for fn in FUNCTIONS}


def test_openfaas_creates_the_read_only_metrics_token_apart_from_every_function_token(node):
    from edgeguard_bootstrap import secretstore

    code, out = node.run("openfaas")
    assert code == 0, out
    token = node.secret("edgeguard-metrics-token")
    assert len(token) == 43 and token not in out.encode()  # 32 random bytes, base64url
    assert node.path(secretstore.path("edgeguard-metrics-token")).read_bytes() == token
    assert node.path(secretstore.path("edgeguard-metrics-token")).stat().st_mode & 0o777 == 0o600
    assert all(node.secret(other) != token for other in secretstore.TOKENS if other != "edgeguard-metrics-token")
    node.clear_calls()
    code, out = node.run("openfaas", "--rotate", "edgeguard-metrics-token")
    assert code == 0, out
    assert node.secret("edgeguard-metrics-token") != token
    assert [c[:4] for c in node.mutating_calls() if c[:3] == ["faas-cli", "secret", "update"]] == [
        ["faas-cli", "secret", "update", "edgeguard-metrics-token"]
    ]


def test_the_dashboard_shows_alert_forwarders_falcosidekick_metrics_and_its_handover():
    """falco_events_total (by priority, by hostname) and outputs_total{destination,status}, the names
    falcosidekick's dashboards read, and the spool handover bootstrap now turns on."""
    wanted = {
        "edgeguard_alert_forwarder_falco_events_total": [{"priority"}, {"hostname"}],
        "edgeguard_alert_forwarder_outputs_total": [{"destination", "status"}],
        "edgeguard_alert_forwarder_handover_total": [{"direction"}],
        "edgeguard_alert_forwarder_handover_errors_total": [set()],
    }
    found = {name: [grouping_labels(e) for e in exprs() if name in metric_refs(e)] for name in wanted}
    for name, groupings in wanted.items():
        for labels in groupings:
            assert labels in found[name], f"no panel reads {name} by {sorted(labels)}: {found[name]}"
