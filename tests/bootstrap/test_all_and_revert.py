"""`all` end to end on a fake node, idempotency, revert, and the launcher itself."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from edgeguard_bootstrap import audit_tls, falco, k3s_audit, openfaas, secretstore
from edgeguard_bootstrap.engine import STATE_FILE

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "bootstrap" / "edgeguard-bootstrap"
DATA = REPO / "tests" / "data"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dry_run_on_a_fresh_root_prints_the_complete_plan_and_changes_nothing(node):
    before = tree(node.root)
    code, out = node.run("all", "--dry-run")
    assert code == 0, out
    assert tree(node.root) == before
    assert node.mutating_calls() == []
    # Every step and every file it would write, with diffs.
    for section in ("== preflight", "== openfaas", "== k3s-audit", "== falco --mode helm"):
        assert section in out
    for path in [
        secretstore.path(n) for n in secretstore.TOKENS + secretstore.KEYS + tuple(secretstore.PLACEHOLDERS)
    ] + [openfaas.SA_TOKENS_MANIFEST, k3s_audit.POLICY, k3s_audit.WEBHOOK, k3s_audit.DROPIN, falco.VALUES]:
        assert f"+++ b{path}" in out, path
    for planned in (
        "run: faas-cli secret create audit-ingest-token",
        "run: kubectl apply -f",
        "build node-enroll-kubeconfig",
        "run: systemctl restart k3s",
        "run: helm upgrade --install falco falcosecurity/falco",
        "+kube-apiserver-arg+:",
    ):
        assert planned in out, planned
    assert "change(s) planned; nothing was changed (dry run)" in out


def test_dry_run_shows_the_plan_even_when_checks_fail(node):
    node.update_world(k3s_version=None)
    code, out = node.run("all", "--dry-run")
    assert code == 0
    assert "a real run stops here unless --force" in out
    assert "== falco --mode helm" in out
    code, out = node.run("all")
    assert code == 1 and "refusing to continue" in out and node.mutating_calls() == []


def test_real_run_writes_valid_files_and_the_second_run_reports_no_changes(node):
    code, out = node.run("all", "--yes", "--check-timeout", "5")
    assert code == 0, out
    assert "authenticated audit batches reach audit-ingest" in out
    # Valid files:
    manifest = list(yaml.safe_load_all(node.path(openfaas.SA_TOKENS_MANIFEST).read_text()))
    manifest += [
        yaml.safe_load(node.path(p).read_text()) for p in (audit_tls.SECRET_MANIFEST, audit_tls.INGRESS_MANIFEST)
    ]
    for doc in manifest:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    schema = json.loads((DATA / "falco-config-schema.json").read_text())
    jsonschema.validate(yaml.safe_load(node.path(falco.VALUES).read_text())["falco"], schema)
    assert yaml.safe_load(node.path(k3s_audit.DROPIN).read_text())["kube-apiserver-arg+"]
    from kubernetes import config as kconfig

    for p in (
        k3s_audit.WEBHOOK,
        secretstore.path("node-enroll-kubeconfig"),
        secretstore.path("configmap-secret-scrubber-kubeconfig"),
    ):
        kconfig.new_client_from_config(config_file=str(node.path(p)))
    # No secret value anywhere in the output.
    for name, value in node.world()["secrets"].items():
        assert base64.b64decode(value).decode() not in out, name
    # Second run: nothing to do.
    node.clear_calls()
    before = tree(node.root)
    code, out = node.run("all", "--yes")
    assert code == 0, out
    assert out.rstrip().endswith("no changes")
    assert "[change]" not in out
    assert node.mutating_calls() == []
    assert tree(node.root) == before


def test_revert_undoes_files_commands_and_restores_backups(node):
    original_cfg = "kube-apiserver-arg+:\n  - audit-log-path=/site\n"
    node.files({k3s_audit.DROPIN: original_cfg})
    code, out = node.run("all", "--yes", "--check-timeout", "5", "--cron-connector")
    assert code == 0, out
    created = [c[3] for c in node.calls() if c[:3] == ["faas-cli", "secret", "create"]]
    node.clear_calls()
    code, out = node.run("revert", "--yes")
    assert code == 0, out
    calls = node.mutating_calls()
    assert ["helm", "uninstall", "falco", "-n", "falco"] in calls
    assert ["helm", "uninstall", "cron-connector", "-n", "openfaas"] in calls
    assert ["kubectl", "delete", "--ignore-not-found", "-f", str(node.path(openfaas.SA_TOKENS_MANIFEST))] in calls
    assert [
        "kubectl",
        "delete",
        "--ignore-not-found",
        "-f",
        str(node.repo / "deploy/rbac/configmap-secret-scrubber.yaml"),
    ] in calls
    for manifest in (audit_tls.INGRESS_MANIFEST, audit_tls.SECRET_MANIFEST):  # the https front's objects
        assert ["kubectl", "delete", "--ignore-not-found", "-f", str(node.path(manifest))] in calls
    removed = [c[3] for c in calls if c[:3] == ["faas-cli", "secret", "remove"]]
    assert sorted(removed) == sorted(created)
    assert calls[-1] == ["systemctl", "restart", "k3s"]
    # Our files are gone, the site's drop-in is back.
    assert node.path(k3s_audit.DROPIN).read_text() == original_cfg
    for p in (
        k3s_audit.POLICY,
        k3s_audit.WEBHOOK,
        falco.VALUES,
        openfaas.SA_TOKENS_MANIFEST,
        secretstore.path("audit-ingest-token"),
    ):
        assert not node.path(p).exists(), p
    assert not node.path(secretstore.STORE).exists()
    assert not node.path(audit_tls.TLS_DIR).exists()  # CA, keys, certificate and manifests
    assert node.world()["secrets"] == {}
    state = json.loads(node.path(STATE_FILE).read_text())
    assert state["actions"] == [] and state["files"] == {}
    node.clear_calls()
    code, out = node.run("revert", "--yes")
    assert "nothing recorded" in out and node.mutating_calls() == []


def test_revert_leaves_files_edited_since_unless_forced(node):
    node.run("openfaas")
    node.run("k3s-audit", "--skip-check")
    node.path(k3s_audit.DROPIN).write_text("kube-apiserver-arg+:\n  - audit-log-maxage=99\n")
    node.clear_calls()
    code, out = node.run("revert", "--dry-run")
    assert "changed since bootstrap wrote it" in out
    assert node.path(k3s_audit.DROPIN).exists() and node.mutating_calls() == []
    code, out = node.run("revert", "--yes")
    assert node.path(k3s_audit.DROPIN).exists()
    code, out = node.run("revert", "--yes", "--force")
    assert not node.path(k3s_audit.DROPIN).exists()


def test_host_mode_revert_disables_the_unit_and_removes_the_package(node):
    node.run("openfaas")
    node.run("falco", "--mode", "host")
    node.clear_calls()
    code, out = node.run("revert", "--yes")
    assert code == 0, out
    calls = node.mutating_calls()
    assert calls.index(["systemctl", "disable", "--now", "falco-modern-bpf.service"]) < calls.index(
        ["apt-get", "remove", "-y", "falco"]
    )
    for p in (falco.DROPIN, falco.APT_SOURCE, falco.KEYRING):
        assert not node.path(p).exists(), p


def test_launcher_runs_on_system_python_with_the_standard_library_only(node, tmp_path):
    # -S: no site-packages at all, so nothing outside the standard library can be imported.
    env = dict(node.env(), PATH=f"{node.bin}:/usr/bin:/bin")
    proc = subprocess.run(
        [
            sys.executable,
            "-S",
            str(LAUNCHER),
            "all",
            "--dry-run",
            "--root",
            str(node.root),
            "--gateway",
            node.gateway,
            "--repo",
            str(node.repo),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "change(s) planned" in proc.stdout
    assert proc.stderr == ""


def _python(version: str) -> Path | None:
    import shutil

    for candidate in sorted(Path("/root/.pyenv/versions").glob(f"{version}.*/bin/python{version}")):
        return candidate
    found = shutil.which(f"python{version}")
    return Path(found) if found else None


@pytest.mark.parametrize("version", ["3.9", "3.10", "3.12", "3.13"])
def test_launcher_runs_all_for_real_then_idempotently_on_distribution_pythons(node, version):
    # 3.9: Raspberry Pi OS bullseye, 3.10: Ubuntu 22.04, 3.11: bookworm (the suite's own), 3.12: Ubuntu 24.04.
    exe = _python(version)
    if exe is None:
        pytest.skip(f"python{version} not available here")
    env = dict(node.env(), PATH=f"{node.bin}:/usr/bin:/bin")
    base = [
        str(exe),
        "-S",
        str(LAUNCHER),
        "all",
        "--yes",
        "--check-timeout",
        "10",
        "--root",
        str(node.root),
        "--gateway",
        node.gateway,
        "--repo",
        str(node.repo),
        "--audit-url",
        node.audit_url,
    ]
    first = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "authenticated audit batches reach audit-ingest" in first.stdout
    second = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 0 and second.stdout.rstrip().endswith("no changes"), second.stdout


def test_launcher_is_executable():
    assert os.access(LAUNCHER, os.X_OK)
    assert LAUNCHER.read_text().startswith("#!/usr/bin/env python3\n")


def test_revert_does_not_restart_k3s_for_audit_files_already_removed_by_hand(node):
    node.seed_tokens()
    node.run("k3s-audit", "--skip-check")
    for p in (k3s_audit.DROPIN, k3s_audit.POLICY, k3s_audit.WEBHOOK):
        node.path(p).unlink()
    node.clear_calls()
    code, out = node.run("revert", "--yes")
    assert code == 0, out
    assert "already gone" in out
    assert ["systemctl", "restart", "k3s"] not in node.calls()


def test_rotating_a_token_updates_openfaas_the_webhook_and_falco_in_one_run(node):
    code, out = node.run("all", "--yes", "--check-timeout", "5")
    assert code == 0, out
    old = node.secret("audit-ingest-token")
    old_fwd = node.secret("alert-forwarder-token")
    node.clear_calls()
    code, out = node.run(
        "all", "--yes", "--check-timeout", "5", "--rotate", "audit-ingest-token", "--rotate", "alert-forwarder-token"
    )
    assert code == 0, out
    new = node.secret("audit-ingest-token")
    new_fwd = node.secret("alert-forwarder-token")
    assert new != old and new_fwd != old_fwd
    assert node.path(secretstore.path("audit-ingest-token")).read_bytes() == new
    assert yaml.safe_load(node.path(k3s_audit.WEBHOOK).read_text())["users"][0]["user"]["token"] == new.decode()
    url = yaml.safe_load(node.path(falco.VALUES).read_text())["falco"]["http_output"]["url"]
    assert "://falco:${EDGEGUARD_ALERT_TOKEN}@" in url and "token=" not in url
    assert node.world()["falco_secret_token"] == new_fwd.decode()
    calls = node.mutating_calls()
    assert [c[:4] for c in calls if c[:3] == ["faas-cli", "secret", "update"]] == [
        ["faas-cli", "secret", "update", "audit-ingest-token"],
        ["faas-cli", "secret", "update", "alert-forwarder-token"],
    ]
    assert ["systemctl", "restart", "k3s"] in calls
    assert ["kubectl", "rollout", "restart", "daemonset/falco", "-n", "falco"] in calls
    for value in (old, new, old_fwd, new_fwd):
        assert value.decode() not in out
    assert "authenticated audit batches reach audit-ingest" in out


def test_rotate_refuses_names_it_cannot_generate(node):
    code, out = node.run("openfaas", "--rotate", "node-enroll-kubeconfig")
    assert code == 2 and "--rotate takes" in out and node.mutating_calls() == []
