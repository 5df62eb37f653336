"""Falco's alert token: never in a Falco config file, rotated without a gap, per-node for host agents."""

from __future__ import annotations

import io
import os
import re
import urllib.parse

import pytest
import yaml

from edgeguard_bootstrap import falco, k3s_audit, rotation, secretstore

NODE_TOKEN = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5"  # 44 base64url characters, like node-enroll's


@pytest.fixture(autouse=True)
def _fast_rotation_poll(monkeypatch):
    monkeypatch.setattr(rotation, "POLL", 0.01)


def falco_expands(value: str, env: dict) -> str:
    """Falco's get_scalar (0.35+, falcosecurity/falco#2562): each ${VAR} in a value is replaced from the
    environment; an unset variable becomes empty."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), value)


def env_of(path) -> dict:
    """What systemd's EnvironmentFile= gives the unit."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def files_holding(root, value: str) -> dict[str, int]:
    """Files holding the value as it is or base64-encoded (a Secret manifest's data), with their modes."""
    import base64

    forms = (value.encode(), base64.b64encode(value.encode()))
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            data = open(p, "rb").read()
            if any(form in data for form in forms):
                found["/" + os.path.relpath(p, root)] = os.stat(p).st_mode & 0o777
    return found


def test_helm_mode_no_values_or_config_file_holds_the_token_and_falco_expands_it_from_a_secret(node):
    node.seed_tokens()
    code, out = node.run("falco")
    assert code == 0, out
    token = node.secret("alert-forwarder-token").decode()
    release = node.world()["releases"]["falco"]
    assert token not in yaml.safe_dump(release["values"])  # helm get values, the falco/falco ConfigMap
    assert files_holding(node.root, token) == {
        secretstore.path("alert-forwarder-token"): 0o600,
        falco.TOKEN_SECRET_MANIFEST: 0o600,
    }
    # The chart puts the Secret's key into the pod's environment; Falco expands the URL with it.
    env = {falco.TOKEN_ENV: node.world()["falco_secret_token"]}
    url = urllib.parse.urlsplit(falco_expands(release["values"]["falco"]["http_output"]["url"], env))
    assert (url.username, urllib.parse.unquote(url.password), url.query) == ("falco", token, "")


def test_host_mode_dropin_is_world_readable_without_the_token_and_the_unit_env_file_is_root_only(node):
    node.seed_tokens()
    code, out = node.run("falco", "--mode", "host")
    assert code == 0, out
    token = node.secret("alert-forwarder-token").decode()
    assert node.path(falco.DROPIN).stat().st_mode & 0o777 == 0o644
    assert files_holding(node.root, token) == {secretstore.path("alert-forwarder-token"): 0o600, falco.ENV_FILE: 0o600}
    url = yaml.safe_load(node.path(falco.DROPIN).read_text())["http_output"]["url"]
    parts = urllib.parse.urlsplit(falco_expands(url, env_of(node.path(falco.ENV_FILE))))
    assert (parts.username, urllib.parse.unquote(parts.password)) == ("falco", token)


def test_a_token_that_is_not_url_safe_is_percent_encoded_in_the_environment():
    text = falco.env_file("a@b:c/d%e")
    env = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    url = urllib.parse.urlsplit(falco_expands(falco.env_url("http://gw:8080"), env))
    assert (url.hostname, urllib.parse.unquote(url.password)) == ("gw", "a@b:c/d%e")


def deployed_with(node, lag: int) -> None:
    """alert-forwarder runs with the current token and sees a secret update only after `lag` more requests."""
    node.update_world(fwd={"seen": node.world()["secrets"]["alert-forwarder-token"], "lag": lag}, falco_starts=[])


@pytest.mark.parametrize("mode", ["helm", "host"])
def test_rotation_gives_falco_the_new_token_only_once_alert_forwarder_accepts_it(node, mode):
    code, out = node.run("all", "--yes", "--check-timeout", "5", "--mode", mode)
    assert code == 0, out
    old = node.secret("alert-forwarder-token").decode()
    # The function's mounted secret shows the update only after three more requests (kubelet sync).
    deployed_with(node, lag=3)
    node.clear_calls()
    code, out = node.run("openfaas", "--rotate", "alert-forwarder-token")
    assert code == 0, out
    new = node.secret("alert-forwarder-token").decode()
    assert new != old
    world = node.world()
    # Every Falco start used a token alert-forwarder took at that moment: none of its alerts was refused.
    assert world["falco_starts"] == ["accepted"]
    restart = (
        ["kubectl", "rollout", "restart", "daemonset/falco", "-n", "falco"]
        if mode == "helm"
        else ["systemctl", "restart", "falco-modern-bpf.service"]
    )
    calls = node.mutating_calls()
    update = ["faas-cli", "secret", "update", "alert-forwarder-token"]
    assert [c[:4] for c in calls].index(update) < calls.index(restart)
    assert "alert-forwarder accepts the new token" in out
    held = world["falco_secret_token"] if mode == "helm" else env_of(node.path(falco.ENV_FILE))[falco.TOKEN_ENV]
    assert held == new
    if mode == "helm":
        assert ["kubectl", "rollout", "status", "daemonset/falco", "-n", "falco", "--timeout", "5m"] in calls
    else:
        every = node.calls()
        assert ["systemctl", "is-active", "falco-modern-bpf.service"] in every[every.index(restart) :]
    assert old not in out and new not in out


def test_rotation_leaves_falco_on_the_old_token_when_alert_forwarder_never_takes_the_new_one(node):
    code, out = node.run("all", "--yes", "--check-timeout", "5", "--mode", "host")
    assert code == 0, out
    old = node.secret("alert-forwarder-token").decode()
    deployed_with(node, lag=10**6)
    node.clear_calls()
    code, out = node.run("openfaas", "--rotate", "alert-forwarder-token", "--rotation-timeout", "0.2")
    assert code == 2
    assert "Falco was left on the previous token" in out
    assert env_of(node.path(falco.ENV_FILE))[falco.TOKEN_ENV] == old
    assert node.world()["falco_starts"] == []


def test_rotation_dry_run_plans_the_wait_and_changes_nothing(node):
    code, out = node.run("all", "--yes", "--check-timeout", "5", "--mode", "host")
    assert code == 0, out
    node.clear_calls()
    code, out = node.run("openfaas", "--rotate", "alert-forwarder-token", "--dry-run")
    assert code == 0, out
    assert "wait until" in out and "accepts the new token" in out
    assert node.mutating_calls() == []


def join(node, *extra, stdin=NODE_TOKEN + "\n"):
    return node.run("falco", "--mode", "host", *extra, stdin=io.StringIO(stdin))


def test_host_join_with_a_node_token_from_stdin_sends_basic_auth_as_that_node(node):
    # An agent node: no fleet token on it at all.
    code, out = join(node, "--node-name", "pi-07", "--alert-token-stdin")
    assert code == 0, out
    assert NODE_TOKEN not in out
    url = yaml.safe_load(node.path(falco.DROPIN).read_text())["http_output"]["url"]
    parts = urllib.parse.urlsplit(falco_expands(url, env_of(node.path(falco.ENV_FILE))))
    assert (parts.username, parts.password) == ("pi-07", NODE_TOKEN)
    assert files_holding(node.root, NODE_TOKEN) == {falco.ENV_FILE: 0o600}
    # A later run without stdin keeps the node's own token (there is no fleet token to fall back on).
    node.clear_calls()
    code, out = node.run("falco", "--mode", "host")
    assert code == 0, out
    assert env_of(node.path(falco.ENV_FILE))[falco.TOKEN_ENV] == NODE_TOKEN and "no changes" in out


@pytest.mark.parametrize(
    "args, stdin, why",
    [
        (("--node-name", "Pi_07", "--alert-token-stdin"), NODE_TOKEN, "not a Kubernetes node name"),
        (("--alert-token-stdin",), NODE_TOKEN, "needs --node-name"),
        (("--node-name", "pi-07", "--alert-token-stdin"), "short\n", "expected one line"),
        (("--node-name", "pi-07", "--alert-token-stdin"), "", "expected one line"),
    ],
)
def test_host_join_refuses_bad_identity_input_before_changing_anything(node, args, stdin, why):
    code, out = join(node, *args, stdin=stdin)
    assert code == 2 and why in out
    assert node.mutating_calls() == [] and not node.path(falco.ENV_FILE).exists()


def test_node_identity_is_refused_in_helm_mode(node):
    node.seed_tokens()
    code, out = node.run("falco", "--node-name", "pi-07")
    assert code == 2 and "are for --mode host" in out and node.mutating_calls() == []


def test_rotating_the_audit_token_restarts_k3s_only_once_audit_ingest_accepts_it(node):
    """The API server gives up on a batch audit-ingest refuses: the webhook gets the new audit-ingest-token only
    after audit-ingest's mounted secret shows it."""
    code, out = node.run("all", "--yes", "--check-timeout", "5", "--mode", "host")
    assert code == 0, out
    old = node.secret("audit-ingest-token").decode()
    node.update_world(ingest={"seen": node.world()["secrets"]["audit-ingest-token"], "lag": 3}, k3s_starts=[])
    node.clear_calls()
    code, out = node.run("all", "--yes", "--check-timeout", "5", "--mode", "host", "--rotate", "audit-ingest-token")
    assert code == 0, out
    new = node.secret("audit-ingest-token").decode()
    assert new != old and new in node.path(k3s_audit.WEBHOOK).read_text()
    assert node.world()["k3s_starts"] == ["accepted"]
    assert "audit-ingest accepts the new token" in out
    assert old not in out and new not in out


def test_the_webhook_keeps_the_old_audit_token_when_audit_ingest_never_takes_the_new_one(node):
    code, out = node.run("all", "--yes", "--check-timeout", "5", "--mode", "host")
    assert code == 0, out
    old = node.secret("audit-ingest-token").decode()
    node.update_world(ingest={"seen": node.world()["secrets"]["audit-ingest-token"], "lag": 10**6}, k3s_starts=[])
    code, out = node.run(
        "all",
        "--yes",
        "--check-timeout",
        "5",
        "--mode",
        "host",
        "--rotate",
        "audit-ingest-token",
        "--rotation-timeout",
        "0.2",
    )
    assert code == 2
    assert "webhook kubeconfig was left on the previous token" in out
    assert old in node.path(k3s_audit.WEBHOOK).read_text()
    assert node.world()["k3s_starts"] == []
