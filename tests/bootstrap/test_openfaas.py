"""openfaas: secrets, ServiceAccount credentials, manifests, cron-connector, deploy."""

from __future__ import annotations

import base64
import ssl
import subprocess
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from edgeguard_bootstrap import openfaas, secretstore

K8S_VERSION = kubernetes_validate.latest_version()


def store_path(node, name):
    return node.path(secretstore.path(name))


def test_creates_every_secret_with_faas_cli_from_0600_files_and_prints_none(node):
    code, out = node.run("openfaas")
    assert code == 0, out
    creates = [c for c in node.mutating_calls() if c[:3] == ["faas-cli", "secret", "create"]]
    assert [c[3] for c in creates] == list(
        secretstore.TOKENS + secretstore.KEYS + tuple(secretstore.PLACEHOLDERS) + secretstore.KUBECONFIGS
    )
    for c in creates:
        assert c == [
            "faas-cli",
            "secret",
            "create",
            c[3],
            f"--from-file={store_path(node, c[3])}",
            "--gateway",
            node.gateway,
        ]
    for name in secretstore.ALL:
        p = store_path(node, name)
        assert p.stat().st_mode & 0o777 == 0o600
        value = node.secret(name)
        assert p.read_bytes() == value
        assert value.decode() not in out
        assert f"{name}: stored in /var/lib/edgeguard/secrets/{name} and as OpenFaaS secret openfaas-fn/{name}" in out
    assert node.path(secretstore.STORE).stat().st_mode & 0o777 == 0o700


def test_tokens_are_random_and_strong(node):
    node.run("openfaas")
    values = [node.secret(n) for n in secretstore.TOKENS + secretstore.KEYS]
    assert len(set(values)) == len(values)
    for v in values:
        assert len(v) >= 43
    assert len(bytes.fromhex(node.secret("node-enroll-key").decode())) == 32


def test_placeholders_are_harmless_yaml(node):
    node.run("openfaas")
    assert yaml.safe_load(node.secret("audit-ingest-extra-rules")) is None
    assert yaml.safe_load(node.secret("alert-forwarder-destinations")) == {}


def test_applies_rbac_then_token_secrets_and_builds_loadable_kubeconfigs(node):
    from kubernetes import config as kconfig

    code, out = node.run("openfaas")
    assert code == 0, out
    manifest = str(node.path(openfaas.SA_TOKENS_MANIFEST))
    applies = [c for c in node.mutating_calls() if c[:2] == ["kubectl", "apply"]]
    assert applies == [
        ["kubectl", "apply", "-f", str(node.repo / "deploy/rbac/configmap-secret-scrubber.yaml")],
        ["kubectl", "apply", "-f", str(node.repo / "deploy/rbac/node-enroll.yaml")],
        ["kubectl", "apply", "-f", str(node.repo / "deploy/rbac/alert-forwarder.yaml")],
        # after node-enroll.yaml, which declares the namespace edgeguard-enroll it grants in
        ["kubectl", "apply", "-f", str(node.repo / "deploy/rbac/node-tokens-alert-forwarder.yaml")],
        ["kubectl", "apply", "-f", manifest],
    ]
    assert list(openfaas.SERVICE_ACCOUNTS) == ["configmap-secret-scrubber", "node-enroll", "alert-forwarder"]
    for sa, secret_name in openfaas.SERVICE_ACCOUNTS.items():
        assert ["kubectl", "get", "secret", f"{sa}-sa-token", "-n", "openfaas-fn", "-o", "json"] in node.calls()
        path = store_path(node, secret_name)
        client = kconfig.new_client_from_config(config_file=str(path))
        assert client.configuration.host == "https://kubernetes.default.svc:443"
        assert client.configuration.api_key["BearerToken"] == f"Bearer eyJfake-{sa}-token-value"
        doc = yaml.safe_load(path.read_text())
        assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]).startswith(b"-----BEGIN")
        assert doc["contexts"][0]["context"]["namespace"] == "openfaas-fn"
        assert f"eyJfake-{sa}-token-value" not in out


def test_service_account_token_manifest_validates_against_kubernetes_schemas(node):
    docs = [d for d in yaml.safe_load_all(openfaas.sa_token_manifest()) if d]
    assert [d["metadata"]["name"] for d in docs] == [
        "configmap-secret-scrubber-sa-token",
        "node-enroll-sa-token",
        "alert-forwarder-sa-token",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["type"] == "kubernetes.io/service-account-token"
        assert doc["metadata"]["name"] not in secretstore.ALL  # must not clash with an OpenFaaS secret
    # And the schema check is not a rubber stamp:
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dict(docs[0], typo=True), K8S_VERSION, strict=True)


def test_second_run_changes_nothing(node):
    node.run("openfaas")
    node.clear_calls()
    code, out = node.run("openfaas")
    assert code == 0 and "no changes" in out
    assert node.mutating_calls() == []
    assert ["kubectl", "diff", "-f", str(node.repo / "deploy/rbac/node-enroll.yaml")] in node.calls()


def test_existing_openfaas_secret_is_kept_and_copied_to_the_node(node):
    node.update_world(secrets={"audit-ingest-token": base64.b64encode(b"operator-chosen-token").decode()})
    code, out = node.run("openfaas")
    assert code == 0, out
    assert store_path(node, "audit-ingest-token").read_bytes() == b"operator-chosen-token"
    assert not any(c[3:4] == ["audit-ingest-token"] for c in node.mutating_calls() if c[0] == "faas-cli")
    assert "operator-chosen-token" not in out
    assert "kept from OpenFaaS" in out


def test_a_changed_service_account_token_updates_the_kubeconfig_secret(node):
    node.run("openfaas")
    w = node.world()
    w["sa_tokens"]["node-enroll-sa-token"] = "eyJrotated"
    node.set_world(w)
    node.clear_calls()
    code, out = node.run("openfaas")
    assert code == 0, out
    path = str(store_path(node, "node-enroll-kubeconfig"))
    assert node.mutating_calls() == [
        ["faas-cli", "secret", "update", "node-enroll-kubeconfig", f"--from-file={path}", "--gateway", node.gateway]
    ]
    assert b"eyJrotated" in node.secret("node-enroll-kubeconfig")
    assert "eyJrotated" not in out


def test_refuses_when_rbac_manifests_are_missing(node):
    (node.repo / "deploy/rbac/node-enroll.yaml").unlink()
    code, out = node.run("openfaas")
    assert code == 1 and "rbac manifests" in out and "node-enroll.yaml" in out
    assert node.mutating_calls() == []
    assert not node.path(secretstore.STORE).exists()


def test_refuses_when_faas_cli_is_not_logged_in(node):
    node.update_world(faas_login=False)
    code, out = node.run("openfaas")
    assert code == 1 and "faas-cli login" in out
    assert node.mutating_calls() == []


def test_token_secret_never_filled_is_an_error_naming_the_service_account(node):
    (node.repo / "deploy/rbac/node-enroll.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: edgeguard-enroll}\n---\n"
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n"
        "metadata: {name: x, namespace: openfaas-fn}\nrules: []\n"
    )
    # The fake's token controller, like the real one, never fills a token for a missing ServiceAccount.
    code, out = node.run("openfaas", "--token-timeout", "1")
    assert code == 2
    assert "does ServiceAccount openfaas-fn/node-enroll exist" in out


def test_cron_connector_explained_or_installed(node):
    code, out = node.run("openfaas")
    assert "arkade install cron-connector" in out and "edgeguard does not need it" in out
    # stack.yml gives alert-forwarder no cron annotations (cron-connector cannot send a token):
    assert "cron-function" not in (Path(__file__).resolve().parents[2] / "stack.yml").read_text()
    assert "already annotates" not in out
    assert not any(c[0] == "arkade" for c in node.calls())
    node.clear_calls()
    code, out = node.run("openfaas", "--cron-connector")
    assert code == 0
    assert node.mutating_calls() == [["arkade", "install", "cron-connector"]]
    node.clear_calls()
    code, out = node.run("openfaas", "--cron-connector")
    assert node.mutating_calls() == [] and "cron-connector installed" in out


def test_deploy_runs_faas_cli_up_in_the_repo_with_the_gateway(node):
    node.update_world(deployments=[])
    code, out = node.run("openfaas", "--deploy")
    assert code == 0, out
    up = [r for r in node.call_records() if r["argv"][:2] == ["faas-cli", "up"]]
    assert len(up) == 1
    assert up[0]["argv"] == ["faas-cli", "up", "-f", str(node.repo / "stack.yml")]
    assert up[0]["env"]["OPENFAAS_URL"] == node.gateway
    assert up[0]["cwd"] == str(node.repo)
    # Secrets exist before the deploy that needs them.
    calls = node.calls()
    last_secret = max(i for i, c in enumerate(calls) if c[:3] == ["faas-cli", "secret", "create"])
    assert calls.index(up[0]["argv"]) > last_secret


def test_token_secret_shipped_in_a_functions_rbac_file_is_not_created_twice(node):
    rbac = node.repo / "deploy/rbac/configmap-secret-scrubber.yaml"
    rbac.write_text(
        rbac.read_text()
        + (
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: configmap-secret-scrubber-sa-token\n"
            "  namespace: openfaas-fn\n  annotations:\n"
            "    kubernetes.io/service-account.name: configmap-secret-scrubber\n"
            "type: kubernetes.io/service-account-token\n"
        )
    )
    code, out = node.run("openfaas")
    assert code == 0, out
    docs = [d for d in yaml.safe_load_all(node.path(openfaas.SA_TOKENS_MANIFEST).read_text()) if d]
    assert [d["metadata"]["name"] for d in docs] == ["node-enroll-sa-token", "alert-forwarder-sa-token"]
    assert "comes with deploy/rbac/configmap-secret-scrubber.yaml" in out
    assert b"eyJfake-configmap-secret-scrubber-token-value" in node.secret("configmap-secret-scrubber-kubeconfig")
    node.clear_calls()
    code, out = node.run("openfaas")
    assert "no changes" in out and node.mutating_calls() == []


@pytest.mark.parametrize("sa", list(openfaas.SERVICE_ACCOUNTS))
def test_the_repos_rbac_manifests_define_the_service_accounts_bootstrap_uses(sa):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "deploy" / "rbac" / f"{sa}.yaml"
    if not path.exists():
        pytest.skip(f"{path.name} not on this branch yet (written by the function's helper)")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    accounts = {(d["metadata"]["name"], d["metadata"].get("namespace")) for d in docs if d["kind"] == "ServiceAccount"}
    assert (sa, "openfaas-fn") in accounts


def test_missing_faas_cli_is_installed_with_arkade_first(node):
    (node.bin / "faas-cli").rename(node.tmp / "faas-cli-real")
    code, out = node.run("openfaas")
    assert code == 0, out
    assert node.mutating_calls()[0] == ["arkade", "get", "faas-cli"]
    assert node.path("/usr/local/bin/faas-cli").stat().st_mode & 0o777 == 0o755
    assert ["faas-cli", "secret", "list", "--gateway", node.gateway] in node.calls()


def test_with_the_repos_real_rbac_manifests_openfaas_converges(node):
    import shutil
    from pathlib import Path

    real = Path(__file__).resolve().parents[2] / "deploy" / "rbac"
    for rel in openfaas.RBAC_FILES:
        shutil.copy(real.parents[1] / rel, node.repo / rel)
    code, out = node.run("openfaas")
    assert code == 0, out
    for sa, secret_name in openfaas.SERVICE_ACCOUNTS.items():
        assert f"eyJfake-{sa}-token-value".encode() in node.secret(secret_name)
    node.clear_calls()
    code, out = node.run("openfaas")
    assert "no changes" in out and node.mutating_calls() == []


def test_placeholders_load_in_the_functions_own_parsers():
    from edgeguard.falco import loader
    from edgeguard.routing import parse_destination_secrets

    assert parse_destination_secrets(secretstore.generate("alert-forwarder-destinations").decode()) == {}
    placeholder = secretstore.generate("audit-ingest-extra-rules").decode()
    ruleset = loader.load([("secret:audit-ingest-extra-rules", placeholder)])
    assert ruleset is not None


def test_function_kubeconfigs_are_accepted_by_the_functions_own_loader(node, monkeypatch):
    """What bootstrap stores is what edgeguard.kube (inside the functions) loads and connects with."""
    from edgeguard import kube

    node.run("openfaas")
    # A real PEM, so the client's TLS set-up is exercised too (the fake's CA is only a header line).
    with tempfile.TemporaryDirectory() as d:
        key, crt = f"{d}/k.pem", f"{d}/c.pem"
        made = subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key,
                "-out",
                crt,
                "-days",
                "1",
                "-subj",
                "/CN=edgeguard-test-ca",
            ],
            capture_output=True,
        )
        if made.returncode != 0:
            pytest.skip("openssl not available")
        ca_b64 = base64.b64encode(open(crt, "rb").read()).decode()
    secrets_dir = node.tmp / "fn-secrets"
    secrets_dir.mkdir()
    for sa, secret_name in openfaas.SERVICE_ACCOUNTS.items():
        text = openfaas.function_kubeconfig(sa, f"eyJ-{sa}", ca_b64)
        (secrets_dir / secret_name).write_text(text)
    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(secrets_dir))
    kube.reset()
    for sa, secret_name in openfaas.SERVICE_ACCOUNTS.items():
        doc = kube.load_kubeconfig(secret_name)
        assert doc["current-context"] == sa
        client = kube.api_client(secret_name)
        assert client.configuration.host == "https://kubernetes.default.svc:443"
        assert client.configuration.verify_ssl is True
        assert client.configuration.api_key["BearerToken"] == f"Bearer eyJ-{sa}"
        ssl.create_default_context(cafile=client.configuration.ssl_ca_cert)  # the CA file it wrote is a real CA
    kube.reset()
    # And the very bytes bootstrap handed to faas-cli load the same way.
    for secret_name in openfaas.SERVICE_ACCOUNTS.values():
        (secrets_dir / secret_name).write_bytes(node.secret(secret_name))
        assert kube.load_kubeconfig(secret_name)["users"][0]["user"]["token"].startswith("eyJfake-")
    kube.reset()


def test_creates_exactly_the_secrets_every_function_in_stack_yml_lists(node):
    """stack.yml is the contract: `faas-cli up` fails on any listed secret that does not exist."""
    from pathlib import Path

    stack = yaml.safe_load((Path(__file__).resolve().parents[2] / "stack.yml").read_text())
    listed = {name for fn in stack["functions"].values() for name in fn.get("secrets") or ()}
    code, out = node.run("openfaas")
    assert code == 0, out
    created = {c[3] for c in node.mutating_calls() if c[:3] == ["faas-cli", "secret", "create"]}
    assert created == listed
    assert set(secretstore.ALL) == listed


def test_scrubber_fingerprint_key_is_a_separate_random_key(node):
    node.run("openfaas")
    key = node.secret("configmap-secret-scrubber-fingerprint-key")
    assert len(bytes.fromhex(key.decode())) == 32  # >= 16 bytes, as the scrubber requires
    assert key != node.secret("configmap-secret-scrubber-token")
    assert store_path(node, "configmap-secret-scrubber-fingerprint-key").stat().st_mode & 0o777 == 0o600


def test_an_rbac_file_that_creates_its_own_namespace_is_applied_then_stays_unchanged(node):
    """kubectl diff cannot dry-run objects in a namespace the same file creates (kubernetes#114141)."""
    rbac = node.repo / "deploy/rbac/node-enroll.yaml"
    rbac.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: edgeguard-enroll\n---\n"
        + rbac.read_text()
        + "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: records\n"
        "  namespace: edgeguard-enroll\nrules: []\n"
    )
    code, out = node.run("openfaas")
    assert code == 0, out
    assert "namespace edgeguard-enroll does not exist yet, so kubectl diff cannot compare" in out
    assert ["kubectl", "apply", "-f", str(rbac)] in node.mutating_calls()
    assert "edgeguard-enroll" in node.world()["namespaces"]
    node.clear_calls()
    code, out = node.run("openfaas")
    assert code == 0 and "no changes" in out and node.mutating_calls() == []


def test_an_rbac_file_for_a_namespace_nobody_creates_fails_with_kubectls_error(node):
    rbac = node.repo / "deploy/rbac/node-enroll.yaml"
    rbac.write_text(
        rbac.read_text() + "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n"
        "  name: records\n  namespace: nowhere\nrules: []\n"
    )
    code, out = node.run("openfaas")
    assert code == 2
    assert f"`kubectl apply -f {rbac}` failed with exit status 1" in out and 'namespaces "nowhere" not found' in out


def test_the_repos_node_enroll_manifest_applies_on_a_fresh_cluster_converges_and_reverts(node):
    import shutil
    from pathlib import Path

    real = Path(__file__).resolve().parents[2] / "deploy" / "rbac" / "node-enroll.yaml"
    target = node.repo / "deploy" / "rbac" / "node-enroll.yaml"
    shutil.copy(real, target)
    namespaces = {
        d["metadata"]["namespace"] for d in yaml.safe_load_all(real.read_text()) if d and d["metadata"].get("namespace")
    }
    code, out = node.run("openfaas")
    assert code == 0, out
    assert ["kubectl", "diff", "-f", str(target)] in node.calls()
    assert ["kubectl", "apply", "-f", str(target)] in node.mutating_calls()
    assert namespaces <= set(node.world()["namespaces"])
    assert b"eyJfake-node-enroll-token-value" in node.secret("node-enroll-kubeconfig")
    node.clear_calls()
    code, out = node.run("openfaas")
    assert "no changes" in out and node.mutating_calls() == []
    node.clear_calls()
    code, out = node.run("revert", "--yes")
    assert code == 0, out
    assert ["kubectl", "delete", "--ignore-not-found", "-f", str(target)] in node.mutating_calls()
