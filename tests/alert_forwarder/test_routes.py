"""Route tree: parsing errors name their exact place; matching follows Alertmanager + Falco priority order."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from edgeguard.routing import (
    RoutesError,
    load_routes_text,
    parse_destination_secrets,
    parse_routes,
    resolve_destinations,
)
from edgeguard.routing import cli as routes_cli

SHIPPED = Path(__file__).resolve().parents[2] / "functions" / "alert-forwarder" / "routes.yaml"


def alert(
    rule="Terminal shell in container", priority="Warning", source="syscall", hostname="edge-1", tags=(), **fields
):
    return {
        "rule": rule,
        "priority": priority,
        "source": source,
        "hostname": hostname,
        "tags": list(tags),
        "output": "x",
        "time": "2024-05-01T10:11:12.123456789Z",
        "output_fields": fields,
    }


def table(doc: str):
    return load_routes_text(textwrap.dedent(doc))


DESTS = "destinations: {a: {type: console}, b: {type: console}, c: {type: console}}\n"


# ----------------------------------------------------------------------------- errors name the place


@pytest.mark.parametrize(
    "doc, where, problem",
    [
        (
            "routes:\n  - {matchers: [{priority: '>=Warning'}], to: [a]}\n  - {matchers: [{rule: x}], to: [a]}\n"
            "  - matchers: [{priority: warn}]\n    to: [a]\n" + DESTS,
            "routes[2].matchers[0]",
            "unknown priority 'warn'",
        ),
        (
            "routes:\n  - matchers: [{priority: '=>Warning'}]\n    to: [a]\n" + DESTS,
            "routes[0].matchers[0]",
            "is not of the form",
        ),
        (
            "routes:\n  - matchers: [{rule: {regex: '(unclosed'}}]\n    to: [a]\n" + DESTS,
            "routes[0].matchers[0]",
            "invalid regex",
        ),
        (
            "routes:\n  - matchers: [{rulez: x}]\n    to: [a]\n" + DESTS,
            "routes[0].matchers[0]",
            "unknown matcher 'rulez'",
        ),
        (
            "routes:\n  - matchers: [{rule: x, priority: Warning}]\n    to: [a]\n" + DESTS,
            "routes[0].matchers[0]",
            "exactly one",
        ),
        ("routes:\n  - to: [nope]\n" + DESTS, "routes[0].to[0]", "unknown destination 'nope'"),
        (
            "routes:\n  - to: [a]\n    routes:\n      - {to: [b]}\n      - {matchers: [{tags: {some: [x]}}], to: [b]}\n"
            + DESTS,
            "routes[0].routes[1].matchers[0]",
            "tags",
        ),
        ("routes:\n  - to: [a]\n    contine: true\n" + DESTS, "routes[0].contine", "unknown key"),
        ("routes:\n  - to: [a]\n    continue: yes please\n" + DESTS, "routes[0].continue", "true or false"),
        ("routes:\n  - matchers: []\n" + DESTS, "routes[0]", "needs 'to'"),
        ("routes:\n  - to: [a]\n    dedup: {window: soon}\n" + DESTS, "routes[0].dedup.window", "duration"),
        (
            "routes:\n  - to: [a]\n    dedup: {window: 5m, key: [rule, pod]}\n" + DESTS,
            "routes[0].dedup.key[1]",
            "unknown key field 'pod'",
        ),
        ("min_priority: warn\n" + DESTS, "min_priority", "unknown priority 'warn'"),
        (
            "destinations:\n  hook: {type: webhook, url: 'https://example.invalid/x'}\n",
            "destinations.hook.url",
            "alert-forwarder-destinations",
        ),
        ("destinations:\n  hook: {type: smoke-signal}\n", "destinations.hook.type", "unknown destination type"),
        ("destinations:\n  hook: {type: slack, method: PUT}\n", "destinations.hook.method", "unknown option"),
        ("destinations:\n  fn: {type: openfaas}\n", "destinations.fn.function", "function"),
        (
            "destinations:\n  hook: {type: webhook, body: template, template: {t: '{{ nope }}'}}\n",
            "destinations.hook.template.t",
            "unknown template variable 'nope'",
        ),
        ("destinations:\n  hook: {type: webhook, timeout: fast}\n", "destinations.hook.timeout", "duration"),
        ("routes:\n  - {name: same, to: [a]}\n  - {name: same, to: [b]}\n" + DESTS, "routes[1].name", "already used"),
        ("default: {to: [zz]}\n" + DESTS, "default.to[0]", "unknown destination"),
        ("routs: []\n", "routs", "unknown top-level key"),
        ("routes:\n  - to: [a]\n    throttle: {max: 0, window: 1m}\n" + DESTS, "routes[0].throttle.max", ">= 1"),
        ("routes:\n  - to: [a]\n    throttle: {max: 5}\n" + DESTS, "routes[0].throttle", "'window' is required"),
        (
            "default: {to: [a], throttle: {max: 5, window: 1m, burst: 2}}\n" + DESTS,
            "default.throttle.burst",
            "unknown key",
        ),
    ],
)
def test_bad_routes_name_the_exact_place(doc, where, problem):
    with pytest.raises(RoutesError) as ei:
        load_routes_text(doc, "routes.yaml")
    assert ei.value.where == f"routes.yaml: {where}"
    assert problem in ei.value.problem
    assert str(ei.value).startswith(f"routes.yaml: {where}: ")


def test_unknown_priority_message_matches_documented_form():
    doc = "routes:\n  - {to: [a]}\n  - {to: [a]}\n  - matchers:\n      - priority: '>=warn'\n    to: [a]\n" + DESTS
    with pytest.raises(RoutesError) as ei:
        parse_routes(yaml.safe_load(doc))
    assert str(ei.value).startswith("routes[2].matchers[0]: unknown priority 'warn'")


def test_yaml_syntax_error_reports_line():
    with pytest.raises(RoutesError) as ei:
        load_routes_text("routes:\n  - to: [a\n", "r.yaml")
    assert "not valid YAML at line" in str(ei.value)


def test_shipped_routes_file_is_valid_and_routes_as_promised():
    t = load_routes_text(SHIPPED.read_text(), "routes.yaml")
    resolved = resolve_destinations(t, {})
    assert resolved["action-centre"]["enabled"] is False
    assert "no url" in resolved["action-centre"]["disabled_reason"]
    assert resolved["configmap-secret-scrubber"]["type"] == "openfaas"
    assert resolved["configmap-secret-scrubber"]["token_secret"] == "configmap-secret-scrubber-token"
    assert resolved["configmap-secret-scrubber"]["async"] is False  # /function/, never CE's queue

    def dests(a):
        return sorted({d for r in t.match(a) for d in r.to})

    cm = alert(rule="Create/Modify Configmap With Private Credentials", priority="Warning", source="k8s_audit")
    assert dests(cm) == ["action-centre", "configmap-secret-scrubber", "console"]
    assert dests(alert(priority="Critical")) == ["action-centre", "console"]
    assert dests(alert(priority="Notice")) == ["action-centre"]
    assert dests(alert(priority="Informational")) == []
    # Configured later: the action-centre switches on once its URL is in the secret.
    assert resolve_destinations(t, {"action-centre": {"url": "https://ac.example/x"}})["action-centre"]["enabled"]


# ----------------------------------------------------------------------------- matching table

MATCH_DOC = """
min_priority: Informational
destinations: {a: {type: console}, b: {type: console}, c: {type: console}, d: {type: console}, z: {type: console}}
routes:
  - name: shell-regex
    matchers:
      - rule: {regex: "Terminal shell.*"}
      - output_fields: {k8s.ns.name: {not_in: [kube-system, falco]}}
    to: [a]
    continue: true
  - name: audit
    matchers:
      - source: k8s_audit
    to: [b]
    routes:
      - name: audit-critical
        matchers: [{priority: ">=Critical"}]
        to: [c]
      - name: audit-secrets
        matchers: [{tags: {all: [k8s, secrets]}}]
        to: [d]
  - name: host-and-tags
    matchers:
      - hostname: {in: [edge-7, edge-8]}
      - tags: {any: [mitre_exfiltration, network]}
    to: [c]
  - name: low-only
    matchers: [{priority: "<=Notice"}, {priority: "!=Debug"}]
    to: [d]
  - name: exact-field
    matchers: [{output_fields: {fd.sport: 22, proc.name: {exists: true}}}]
    to: [b]
default: {to: [z]}
"""


@pytest.mark.parametrize(
    "a, expected_routes",
    [
        (alert(), ["shell-regex"]),
        (alert(**{"k8s.ns.name": "kube-system"}), ["default"]),
        (alert(rule="Terminal shell in container", priority="Notice"), ["shell-regex", "low-only"]),
        (alert(rule="Other", source="k8s_audit", priority="Warning"), ["audit"]),
        (alert(rule="Other", source="k8s_audit", priority="Emergency"), ["audit-critical"]),
        (alert(rule="Other", source="k8s_audit", priority="Critical"), ["audit-critical"]),
        (alert(rule="Other", source="k8s_audit", priority="Error", tags=["k8s", "secrets"]), ["audit-secrets"]),
        (alert(rule="Other", source="k8s_audit", priority="Error", tags=["k8s"]), ["audit"]),
        (alert(rule="Other", hostname="edge-7", tags=["network"], priority="Error"), ["host-and-tags"]),
        (alert(rule="Other", hostname="edge-9", tags=["network"], priority="Error"), ["default"]),
        (alert(rule="Other", hostname="edge-8", tags=["x"], priority="Error"), ["default"]),
        (alert(rule="Other", priority="Informational"), ["low-only"]),
        (alert(rule="Other", priority="Debug"), []),  # below min_priority: dropped before routing
        (alert(rule="Other", priority="Error", **{"fd.sport": 22, "proc.name": "sshd"}), ["exact-field"]),
        (alert(rule="Other", priority="Error", **{"fd.sport": 22}), ["default"]),
        (alert(rule="Other", priority="Error", **{"fd.sport": "22", "proc.name": "sshd"}), ["exact-field"]),
        (
            alert(rule="Terminal shell in container", source="k8s_audit", priority="Alert"),
            ["shell-regex", "audit-critical"],
        ),
    ],
)
def test_route_matching_table(a, expected_routes):
    t = table(MATCH_DOC)
    assert [r.name for r in t.match(a)] == expected_routes


@pytest.mark.parametrize(
    "expr, prio, expected",
    [
        (">=Warning", "Warning", True),
        (">=Warning", "Error", True),
        (">=Warning", "Emergency", True),
        (">=Warning", "Notice", False),
        ("<=Warning", "Notice", True),
        ("<=Warning", "Error", False),
        ("=Warning", "Warning", True),
        ("=Warning", "warning", True),
        ("Warning", "Error", False),
        (">Warning", "Warning", False),
        (">Warning", "Error", True),
        ("<Warning", "Debug", True),
        ("!=Debug", "Debug", False),
        (">=info", "Informational", True),
        (">=Informational", "Debug", False),
    ],
)
def test_priority_comparators_use_falco_order(expr, prio, expected):
    t = table(f"routes:\n  - matchers: [{{priority: '{expr}'}}]\n    to: [a]\n" + DESTS)
    assert (t.match(alert(priority=prio))[0].name != "default") is expected


def test_first_match_wins_without_continue_and_continue_keeps_going():
    t = table("routes:\n  - {name: one, to: [a]}\n  - {name: two, to: [b]}\n" + DESTS)
    assert [r.name for r in t.match(alert())] == ["one"]
    t = table("routes:\n  - {name: one, to: [a], continue: true}\n  - {name: two, to: [b]}\n" + DESTS)
    assert [r.name for r in t.match(alert())] == ["one", "two"]


def test_parent_decides_when_no_child_matches():
    t = table(
        "routes:\n  - name: p\n    to: [a]\n    routes:\n      - {name: k, matchers: [{rule: nope}], to: [b]}\n" + DESTS
    )
    assert [r.name for r in t.match(alert())] == ["p"]


def test_rule_exact_is_not_a_substring_or_regex_match():
    t = table("routes:\n  - matchers: [{rule: 'Terminal shell'}]\n    to: [a]\n" + DESTS)
    assert t.match(alert(rule="Terminal shell in container"))[0].name == "default"
    t = table("routes:\n  - matchers: [{rule: 'a.c'}]\n    to: [a]\n" + DESTS)
    assert t.match(alert(rule="abc"))[0].name == "default"
    assert t.match(alert(rule="a.c"))[0].name == "routes[0]"


def test_list_output_field_matches_falco_rendering():
    t = table(
        "routes:\n  - matchers: [{output_fields: {ka.req.pod.containers.image: {regex: '.*busybox.*'}}}]\n"
        "    to: [a]\n" + DESTS
    )
    a = alert(**{"ka.req.pod.containers.image": ["nginx:1.25", "busybox"]})
    assert t.match(a)[0].name == "routes[0]"


# ----------------------------------------------------------------------------- destinations secret


def test_destination_secret_entries_are_validated_without_echoing_values():
    with pytest.raises(RoutesError) as ei:
        parse_destination_secrets("hook: {url: 'ftp://s3cr3t-host/x'}\n")
    assert ei.value.where == "alert-forwarder-destinations.hook.url"
    assert "s3cr3t" not in str(ei.value)
    with pytest.raises(RoutesError) as ei:
        parse_destination_secrets("hook: {url: 'https://h/x', client_cert: 'PEM'}\n")
    assert "client_key" in str(ei.value)
    with pytest.raises(RoutesError) as ei:
        parse_destination_secrets("hook: {url: 'https://h/x', passwd: 'hunter2hunter2'}\n")
    assert "hunter2" not in str(ei.value) and ei.value.where.endswith("hook.passwd")
    with pytest.raises(RoutesError) as ei:
        parse_destination_secrets("hook: {url: 'https://h/x'\n  token: 'tok-abcdef-123456'\n")
    assert "tok-abcdef" not in str(ei.value)
    assert parse_destination_secrets('{"hook": {"url": " https://h/x \\n"}}') == {"hook": {"url": "https://h/x"}}


# ----------------------------------------------------------------------------- CLI


def test_cli_validate_ok_and_error(tmp_path, capsys):
    assert routes_cli.main(["validate", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "action-centre [webhook]: disabled" in out
    bad = tmp_path / "routes.yaml"
    bad.write_text("routes:\n  - {to: [a]}\n  - {to: [a]}\n  - matchers: [{priority: warn}]\n    to: [a]\n" + DESTS)
    assert routes_cli.main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: routes[2].matchers[0]: unknown priority 'warn'" in err


def test_cli_validate_with_destinations_secret_enables_and_hides_values(tmp_path, capsys):
    sec = tmp_path / "dest.yaml"
    sec.write_text(
        "action-centre:\n  url: https://ac.example.invalid/hook?key=topsecretvalue\n  hmac_key: k3y-s3cret\n"
        "stray: {url: 'https://x.invalid'}\n"
    )
    assert routes_cli.main(["validate", str(SHIPPED), "--destinations", str(sec)]) == 0
    cap = capsys.readouterr()
    assert "action-centre [webhook]: enabled" in cap.out
    assert "topsecretvalue" not in cap.out + cap.err and "k3y-s3cret" not in cap.out + cap.err
    assert "stray" in cap.err


def test_cli_explain(tmp_path, capsys):
    import json

    f = tmp_path / "a.json"
    f.write_text(json.dumps(alert(rule="Create/Modify Configmap With Private Credentials", source="k8s_audit")))
    assert routes_cli.main(["explain", str(SHIPPED), str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["routes"] == ["scrub-configmap-credentials", "action-centre", "console-warning"]


def test_cli_explain_does_not_list_disabled_destinations_as_targets(tmp_path, capsys):
    """Issue 15 §7: the shipped action-centre webhook has no URL until the destinations secret gives one, so a
    Notice alert reaches nobody: explain must say so instead of naming action-centre as a target."""
    import json

    f = tmp_path / "a.json"
    f.write_text(json.dumps(alert(priority="Notice")))
    assert routes_cli.main(["explain", str(SHIPPED), str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["routes"] == ["action-centre"]
    assert out["destinations"] == []
    assert "alert-forwarder-destinations" in out["disabled_destinations"]["action-centre"]
    dests = tmp_path / "d.yaml"
    dests.write_text("action-centre: {url: 'https://ac.example.com/in'}\n")
    assert routes_cli.main(["explain", str(SHIPPED), str(f), "--destinations", str(dests)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["destinations"] == ["action-centre"] and out["disabled_destinations"] == {}
    assert "ac.example.com" not in json.dumps(out)  # secret values are never printed


def test_console_script_is_declared():
    import tomllib

    data = tomllib.loads((SHIPPED.parents[2] / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["edgeguard-routes"] == "edgeguard.routing.cli:main"


def test_template_rendering_keeps_types_and_interpolates_text():
    from edgeguard.routing import render_template

    a = alert(**{"k8s.ns.name": "prod", "proc.pid": 7, "fd.ports": [80, 443]})
    tpl = {
        "t": "{{ priority }} in {{ output_fields.k8s.ns.name }} pid={{ output_fields.proc.pid }} "
        "ports={{ output_fields.fd.ports }} missing=[{{ output_fields.nope }}]",
        "pid": "{{ output_fields.proc.pid }}",
        "fields": "{{ output_fields }}",
        "key": "{{ idempotency_key }}",
        "nested": ["{{ rule }}", {"x": "{{ tags }}"}],
        "text_obj": "f={{ output_fields }}",
    }
    out = render_template(tpl, a, {"idempotency_key": "abc"})
    assert out["t"] == "Warning in prod pid=7 ports=(80,443) missing=[]"
    assert out["pid"] == 7 and out["fields"] == a["output_fields"] and out["key"] == "abc"
    assert out["nested"] == ["Terminal shell in container", {"x": []}]
    assert out["text_obj"].startswith('f={"fd.ports":[80,443]')


# ----------------------------------------------------------------------------- cleartext webhooks


@pytest.mark.parametrize("dtype", ["slack", "teams", "discord", "webhook"])
def test_plain_http_webhook_url_is_refused_unless_insecure_http_is_set(dtype):
    t = table(f"destinations: {{d: {{type: {dtype}}}}}\nroutes: [{{to: [d]}}]\n")
    with pytest.raises(RoutesError) as exc:
        resolve_destinations(t, {"d": {"url": "http://hooks.example/s3cr3t-path"}})
    assert "d.url" in str(exc.value) and "insecure_http" in str(exc.value) and "s3cr3t" not in str(exc.value)
    assert resolve_destinations(t, {"d": {"url": "https://hooks.example/x"}})["d"]["enabled"]
    # Explicit opt-in, either on the destination in the routes or next to the URL in the secret.
    opted = table(f"destinations: {{d: {{type: {dtype}, insecure_http: true}}}}\nroutes: [{{to: [d]}}]\n")
    assert resolve_destinations(opted, {"d": {"url": "http://hooks.example/x"}})["d"]["enabled"]
    assert resolve_destinations(t, {"d": {"url": "HTTP://hooks.example/x", "insecure_http": True}})["d"]["enabled"]


def test_insecure_http_must_be_a_boolean():
    with pytest.raises(RoutesError, match=r"destinations.d.insecure_http"):
        table('destinations: {d: {type: webhook, insecure_http: "yes"}}\n')
    with pytest.raises(RoutesError, match=r"d.insecure_http"):
        parse_destination_secrets("d: {url: 'http://h/x', insecure_http: 'yes'}\n")


def test_openfaas_destination_goes_to_the_in_cluster_gateway_over_http():
    t = table("destinations: {f: {type: openfaas, function: configmap-secret-scrubber}}\nroutes: [{to: [f]}]\n")
    assert resolve_destinations(t, {})["f"]["enabled"]


@pytest.mark.parametrize("url", ["https://user:pa55word@hooks.example/x", "https://token-only@hooks.example/x"])
def test_credentials_in_a_destination_url_are_refused_without_echoing_them(url):
    with pytest.raises(RoutesError) as exc:
        parse_destination_secrets(f"hook: {{url: '{url}'}}\n")
    assert "hook.url" in str(exc.value) and "user:pass@" in str(exc.value)
    assert "pa55word" not in str(exc.value) and "token-only" not in str(exc.value)


def test_demo_scenario_alert_says_the_priority_it_sends():
    """Issue 15 §7: demo scenario 3 printed a Notice alert and sent Warning. Falco writes the priority into the
    output line ("<time>: <Priority> <message>"); the two must agree."""
    from local.scenarios.alert_forwarder import FALCO_ALERT

    assert FALCO_ALERT["output"].split(" ", 2)[1] == FALCO_ALERT["priority"]
