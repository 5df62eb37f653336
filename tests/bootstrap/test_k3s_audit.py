"""k3s-audit: policy, webhook kubeconfig, drop-in, restart rules, delivery check."""
from __future__ import annotations

import io
import re
from pathlib import Path

import yaml

from edgeguard_bootstrap import audit_policy, k3s_audit

DATA = Path(__file__).resolve().parents[1] / "data" / "k3s"

# Flag names kube-apiserver accepts (k8s options/audit.go), as listed in the reference.
KNOWN_FLAGS = {
    "audit-policy-file", "audit-log-path", "audit-log-maxage", "audit-log-maxbackup", "audit-log-maxsize",
    "audit-log-format", "audit-webhook-config-file", "audit-webhook-initial-backoff", "audit-webhook-mode",
    "audit-webhook-batch-buffer-size", "audit-webhook-batch-max-size", "audit-webhook-batch-max-wait",
    "audit-webhook-batch-throttle-enable", "audit-webhook-batch-throttle-qps", "audit-webhook-batch-throttle-burst",
    "audit-webhook-truncate-enabled", "audit-webhook-truncate-max-batch-size",
    "audit-webhook-truncate-max-event-size", "audit-webhook-version",
}


def with_tokens(node):
    """The node copies of the tokens that `openfaas` writes (tested in test_openfaas.py)."""
    node.seed_tokens()


def test_writes_policy_webhook_and_dropin_then_restarts_and_sees_an_event(node):
    with_tokens(node)
    code, out = node.run("k3s-audit", "--yes", "--check-timeout", "5")
    assert code == 0, out
    assert node.path(k3s_audit.POLICY).read_bytes() == audit_policy.edge_policy()
    assert "audit events reach audit-ingest: counts.events 0 -> 1" in out
    calls = node.calls()
    assert ["systemctl", "restart", "k3s"] in calls
    restart = calls.index(["systemctl", "restart", "k3s"])
    after = calls[restart + 1:]
    assert after[0] == ["kubectl", "get", "--raw", "/readyz"]
    probe = [c for c in after if c[:2] == ["kubectl", "create"]][0]
    assert re.fullmatch(r"edgeguard-audit-probe-[0-9a-f]{8}", probe[3])
    assert probe == ["kubectl", "create", "configmap", probe[3], "-n", "default",
                     "--from-literal=probe=edgeguard-bootstrap"]
    assert ["kubectl", "delete", "configmap", probe[3], "-n", "default", "--wait=false"] in after
    for p in (k3s_audit.POLICY, k3s_audit.WEBHOOK, k3s_audit.DROPIN):
        assert node.path(p).stat().st_mode & 0o777 == 0o600
    assert node.path(k3s_audit.LOG_DIR).stat().st_mode & 0o777 == 0o700


def test_dropin_appends_known_flags_with_edge_batch_settings(node):
    with_tokens(node)
    node.run("k3s-audit", "--yes", "--skip-check")
    doc = yaml.safe_load(node.path(k3s_audit.DROPIN).read_text())
    assert list(doc) == ["kube-apiserver-arg+"]
    args = dict(a.split("=", 1) for a in doc["kube-apiserver-arg+"])
    assert set(args) <= KNOWN_FLAGS
    assert not any(a.startswith("-") for a in doc["kube-apiserver-arg+"])
    assert args["audit-policy-file"] == k3s_audit.POLICY
    assert args["audit-webhook-config-file"] == k3s_audit.WEBHOOK
    assert args["audit-webhook-mode"] == "batch"
    assert int(args["audit-webhook-batch-max-size"]) < 400      # default 400
    assert args["audit-webhook-batch-max-wait"] == "5s"         # default 30s
    assert args["audit-log-path"].startswith(k3s_audit.LOG_DIR + "/")


def test_policy_is_the_upstream_falco_policy():
    doc = yaml.safe_load(k3s_audit.TEMPLATE.read_text())
    assert doc["apiVersion"] == "audit.k8s.io/v1" and doc["kind"] == "Policy"
    assert doc["rules"] and doc["omitStages"] == ["RequestReceived"]
    assert k3s_audit.TEMPLATE.read_bytes() == (DATA / "audit-policy.yaml").read_bytes()


def test_webhook_kubeconfig_loads_with_the_kubernetes_client_loader(node):
    from kubernetes import config as kconfig

    with_tokens(node)
    node.run("k3s-audit", "--yes", "--skip-check")
    token = node.secret("audit-ingest-token").decode()
    client = kconfig.new_client_from_config(config_file=str(node.path(k3s_audit.WEBHOOK)))
    assert client.configuration.host == f"{node.gateway}/function/audit-ingest"
    assert client.configuration.api_key["BearerToken"] == f"Bearer {token}"
    assert token not in node.run("k3s-audit", "--dry-run")[1]


def test_audit_url_override_goes_into_the_kubeconfig(node):
    with_tokens(node)
    node.run("k3s-audit", "--yes", "--skip-check", "--audit-url", "http://10.0.0.5:31112/function/audit-ingest")
    doc = yaml.safe_load(node.path(k3s_audit.WEBHOOK).read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "http://10.0.0.5:31112/function/audit-ingest"
    assert doc["contexts"][0]["context"]["user"] == doc["users"][0]["name"]


def test_no_restart_without_yes_or_terminal_and_it_stays_pending(node):
    with_tokens(node)
    code, out = node.run("k3s-audit")
    assert code == 0
    assert "k3s NOT restarted" in out
    assert ["systemctl", "restart", "k3s"] not in node.calls()
    # Files are in place; the next run with --yes performs the pending restart.
    code, out = node.run("k3s-audit", "--yes", "--check-timeout", "5")
    assert code == 0, out
    assert ["systemctl", "restart", "k3s"] in node.calls()
    assert "audit events reach audit-ingest" in out
    node.clear_calls()
    code, out = node.run("k3s-audit", "--yes")
    assert "no changes" in out and node.mutating_calls() == []


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_terminal_prompt_yes_restarts(node):
    with_tokens(node)
    code, out = node.run("k3s-audit", "--check-timeout", "5", stdin=_Tty("y\n"))
    assert code == 0, out
    assert "Restart now? [y/N]" in out
    assert ["systemctl", "restart", "k3s"] in node.calls()


def test_terminal_prompt_no_does_not_restart(node):
    with_tokens(node)
    code, out = node.run("k3s-audit", stdin=_Tty("n\n"))
    assert ["systemctl", "restart", "k3s"] not in node.calls()
    assert "k3s NOT restarted" in out


def test_delivery_check_fails_clearly_when_no_event_arrives(node):
    with_tokens(node)
    node.update_world(audit_on_restart=False)
    node.files({k3s_audit.LOG: ""})
    code, out = node.run("k3s-audit", "--yes", "--check-timeout", "1")
    assert code == 2
    assert "no audit event reached audit-ingest" in out
    assert "the local audit log does not have the probe either" in out


def test_delivery_check_needs_audit_ingest_to_accept_the_token(node):
    with_tokens(node)
    w = node.world()
    w["secrets"]["audit-ingest-token"] = "b3RoZXItdG9rZW4="  # OpenFaaS holds another token than the node copy
    node.set_world(w)
    code, out = node.run("k3s-audit", "--yes", "--check-timeout", "1")
    assert code == 2 and "answered 401" in out


def test_refuses_on_an_agent_node_and_writes_nothing(node):
    with_tokens(node)
    node.update_world(active={"k3s-agent": True})
    code, out = node.run("k3s-audit", "--yes")
    assert code == 1 and "refusing to continue" in out and "agent node" in out
    assert not node.path(k3s_audit.DROPIN).exists()
    assert node.mutating_calls() == []


def test_refuses_on_conflicting_cli_args_unless_forced(node):
    with_tokens(node)
    node.files({"/etc/systemd/system/k3s.service": "ExecStart=/usr/local/bin/k3s server --kube-apiserver-arg=x=y\n"})
    code, out = node.run("k3s-audit", "--yes")
    assert code == 1 and not node.path(k3s_audit.DROPIN).exists()
    code, out = node.run("k3s-audit", "--yes", "--force", "--skip-check")
    assert code == 0 and node.path(k3s_audit.DROPIN).exists()
    assert "continuing despite failed checks" in out


def test_without_the_openfaas_step_it_says_what_to_run(node):
    code, out = node.run("k3s-audit", "--yes")
    assert code == 2
    assert "audit-ingest-token is not in /var/lib/edgeguard/secrets" in out
    assert "edgeguard-bootstrap openfaas" in out


def test_existing_dropin_of_the_same_name_is_backed_up(node):
    with_tokens(node)
    node.files({k3s_audit.DROPIN: "kube-apiserver-arg+:\n  - audit-log-path=/old\n"})
    code, out = node.run("k3s-audit", "--yes", "--skip-check")
    assert code == 0
    backups = list(node.path("/var/lib/edgeguard/backups").rglob("60-edgeguard-audit.yaml"))
    assert len(backups) == 1 and backups[0].read_text().endswith("audit-log-path=/old\n")
    assert "-  - audit-log-path=/old" in out


def test_probe_is_skipped_with_advice_when_audit_ingest_is_not_deployed(node):
    with_tokens(node)
    node.update_world(deployments=["alert-forwarder"])
    code, out = node.run("k3s-audit", "--yes")
    assert code == 0, out
    assert "audit-ingest is not deployed" in out and "k3s-audit --check" in out
    assert not any(c[:2] == ["kubectl", "create"] for c in node.calls())
    node.update_world(deployments=["audit-ingest"])
    code, out = node.run("k3s-audit", "--check", "--check-timeout", "5")
    assert code == 0 and "audit events reach audit-ingest" in out


def test_policy_uses_only_valid_levels_stages_and_rule_keys():
    # kubernetes-validate has no schema for audit.k8s.io/v1 Policy (not an API resource), so check the
    # shape against the Policy type (k8s apiserver/pkg/apis/audit/v1/types.go) directly.
    import kubernetes_validate
    policy = yaml.safe_load(audit_policy.edge_policy())
    try:
        kubernetes_validate.validate(policy, kubernetes_validate.latest_version(), strict=True)
        raise AssertionError("kubernetes-validate gained an audit Policy schema: use it here instead")
    except kubernetes_validate.SchemaNotFoundError:
        pass
    levels = {"None", "Metadata", "Request", "RequestResponse"}
    stages = {"RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"}
    rule_keys = {"level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs",
                 "omitStages", "omitManagedFields"}
    assert set(policy) <= {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
    assert set(policy["omitStages"]) <= stages
    assert policy["rules"], "a policy with 0 rules is illegal"
    for rule in policy["rules"]:
        assert set(rule) <= rule_keys and rule["level"] in levels
        assert set(rule.get("omitStages", [])) <= stages
        for res in rule.get("resources", []):
            assert set(res) <= {"group", "resources", "resourceNames"}


def test_unreachable_gateway_only_blocks_when_the_probe_would_need_it(node):
    with_tokens(node)
    node.gateway = "http://127.0.0.1:9"  # nothing listens there
    code, out = node.run("k3s-audit", "--yes")
    assert code == 1 and "gateway" in out and "refusing" in out
    code, out = node.run("k3s-audit", "--yes", "--skip-check")
    assert code == 0, out
    assert "only the skipped delivery probe needs it" in out
