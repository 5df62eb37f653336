"""k3s-audit: policy, webhook kubeconfig over https, the TLS front's CA/cert/Ingress, drop-in, restart rules,
and the delivery check (an *authenticated* batch must arrive)."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from edgeguard_bootstrap import audit_policy, audit_tls, k3s_audit
from edgeguard_bootstrap.engine import BootstrapError, Ctx
from local import tlsfront

DATA = Path(__file__).resolve().parents[1] / "data" / "k3s"

# Flag names kube-apiserver accepts (k8s options/audit.go), as listed in the reference.
KNOWN_FLAGS = {
    "audit-policy-file",
    "audit-log-path",
    "audit-log-maxage",
    "audit-log-maxbackup",
    "audit-log-maxsize",
    "audit-log-format",
    "audit-webhook-config-file",
    "audit-webhook-initial-backoff",
    "audit-webhook-mode",
    "audit-webhook-batch-buffer-size",
    "audit-webhook-batch-max-size",
    "audit-webhook-batch-max-wait",
    "audit-webhook-batch-throttle-enable",
    "audit-webhook-batch-throttle-qps",
    "audit-webhook-batch-throttle-burst",
    "audit-webhook-truncate-enabled",
    "audit-webhook-truncate-max-batch-size",
    "audit-webhook-truncate-max-event-size",
    "audit-webhook-version",
}


def with_tokens(node):
    """The node copies of the tokens that `openfaas` writes (tested in test_openfaas.py)."""
    node.seed_tokens()


def test_writes_policy_webhook_and_dropin_then_restarts_and_sees_an_event(node):
    with_tokens(node)
    code, out = node.run("k3s-audit", "--yes", "--check-timeout", "5")
    assert code == 0, out
    assert node.path(k3s_audit.POLICY).read_bytes() == audit_policy.edge_policy()
    assert "authenticated audit batches reach audit-ingest: authenticated_batches 0 -> 1" in out
    # The probe read audit-ingest's counters through the https front, with the CA and server name the
    # webhook uses, and the token in a header only.
    assert node.front.sni_seen[audit_tls.SERVER_NAME] >= 2 and node.front.without_authorization == 0
    calls = node.calls()
    assert ["systemctl", "restart", "k3s"] in calls
    restart = calls.index(["systemctl", "restart", "k3s"])
    after = calls[restart + 1 :]
    assert after[0] == ["kubectl", "get", "--raw", "/readyz"]
    probe = [c for c in after if c[:2] == ["kubectl", "create"]][0]
    assert re.fullmatch(r"edgeguard-audit-probe-[0-9a-f]{8}", probe[3])
    assert probe == [
        "kubectl",
        "create",
        "configmap",
        probe[3],
        "-n",
        "default",
        "--from-literal=probe=edgeguard-bootstrap",
    ]
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
    assert int(args["audit-webhook-batch-max-size"]) < 400  # default 400
    assert args["audit-webhook-batch-max-wait"] == "5s"  # default 30s
    assert args["audit-log-path"].startswith(k3s_audit.LOG_DIR + "/")


def test_policy_is_the_upstream_falco_policy():
    doc = yaml.safe_load(k3s_audit.TEMPLATE.read_text())
    assert doc["apiVersion"] == "audit.k8s.io/v1" and doc["kind"] == "Policy"
    assert doc["rules"] and doc["omitStages"] == ["RequestReceived"]
    assert k3s_audit.TEMPLATE.read_bytes() == (DATA / "audit-policy.yaml").read_bytes()


def test_webhook_kubeconfig_is_https_with_embedded_ca_server_name_and_token(node):
    from kubernetes import config as kconfig

    with_tokens(node)
    node.run("k3s-audit", "--yes", "--skip-check")
    token = node.secret("audit-ingest-token").decode()
    ca = node.path(audit_tls.CA_CERT).read_bytes()
    doc = yaml.safe_load(node.path(k3s_audit.WEBHOOK).read_text())
    assert doc["clusters"] == [
        {
            "name": "edgeguard-audit-ingest",
            "cluster": {
                "server": node.audit_url,
                "certificate-authority-data": base64.b64encode(ca).decode(),
                "tls-server-name": audit_tls.SERVER_NAME,
            },
        }
    ]
    assert doc["users"] == [{"name": "audit-ingest", "user": {"token": token}}]
    assert doc["contexts"][0]["context"] == {"cluster": "edgeguard-audit-ingest", "user": "audit-ingest"}
    assert doc["current-context"] == doc["contexts"][0]["name"]
    # No file paths in it: the file is read from wherever the API server's launcher copies it.
    assert "certificate-authority:" not in node.path(k3s_audit.WEBHOOK).read_text()
    client = kconfig.new_client_from_config(config_file=str(node.path(k3s_audit.WEBHOOK)))
    assert client.configuration.host == node.audit_url
    assert client.configuration.api_key["BearerToken"] == f"Bearer {token}"
    assert client.configuration.tls_server_name == audit_tls.SERVER_NAME
    assert Path(client.configuration.ssl_ca_cert).read_bytes() == ca
    assert token not in node.run("k3s-audit", "--dry-run")[1]


def test_default_url_is_traefik_on_the_nodes_port_443(node):
    with_tokens(node)
    node.audit_url = None
    code, out = node.run("k3s-audit", "--yes", "--skip-check")
    assert code == 0, out
    doc = yaml.safe_load(node.path(k3s_audit.WEBHOOK).read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1/function/audit-ingest" == audit_tls.DEFAULT_URL


def test_ca_and_serving_certificate_are_bootstraps_own_and_verify_for_the_server_name(node, tmp_path):
    with_tokens(node)
    node.run("k3s-audit", "--yes", "--skip-check")
    d = node.path(audit_tls.TLS_DIR)
    assert d.stat().st_mode & 0o777 == 0o700
    modes = {p.name: p.stat().st_mode & 0o777 for p in d.iterdir()}
    assert modes == {
        "ca.crt": 0o644,
        "ca.key": 0o600,
        "tls.crt": 0o644,
        "tls.key": 0o600,
        "secret.yaml": 0o600,
        "ingress.yaml": 0o600,
    }
    ca, cert = node.path(audit_tls.CA_CERT), node.path(audit_tls.CERT)
    ok = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(ca),
            "-verify_hostname",
            audit_tls.SERVER_NAME,
            "-purpose",
            "sslserver",
            str(cert),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True, text=True
    ).stdout
    assert f"DNS:{audit_tls.SERVER_NAME}" in text and "CA:FALSE" in text and "TLS Web Server Authentication" in text
    assert "Issuer: CN = edgeguard audit-ingest CA" in text
    ca_text = subprocess.run(
        ["openssl", "x509", "-in", str(ca), "-noout", "-text"], capture_output=True, text=True
    ).stdout
    assert "CA:TRUE" in ca_text and "Certificate Sign" in ca_text
    # The keys the run generated never reach its output.
    out = node.run("k3s-audit", "--yes", "--skip-check")[1]
    for key in (audit_tls.CA_KEY, audit_tls.KEY):
        pem = node.path(key).read_text()
        body = "".join(pem.strip().splitlines()[1:-1])
        assert body[:40] not in out and base64.b64encode(pem.encode()).decode()[:40] not in out


def test_secret_and_ingress_expose_only_the_audit_path_over_https(node):
    import kubernetes_validate

    with_tokens(node)
    code, out = node.run("k3s-audit", "--yes", "--skip-check")
    assert code == 0, out
    secret = yaml.safe_load(node.path(audit_tls.SECRET_MANIFEST).read_text())
    ingress = yaml.safe_load(node.path(audit_tls.INGRESS_MANIFEST).read_text())
    for doc in (secret, ingress):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": "edgeguard-audit-ingest",
            "namespace": "openfaas",
            "labels": {"app.kubernetes.io/managed-by": "edgeguard-bootstrap"},
        },
        "data": {
            "tls.crt": base64.b64encode(node.path(audit_tls.CERT).read_bytes()).decode(),
            "tls.key": base64.b64encode(node.path(audit_tls.KEY).read_bytes()).decode(),
        },
    }
    assert ingress == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "edgeguard-audit-ingest",
            "namespace": "openfaas",
            "labels": {"app.kubernetes.io/managed-by": "edgeguard-bootstrap"},
            "annotations": {
                "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
                "traefik.ingress.kubernetes.io/router.tls": "true",
            },
        },
        "spec": {
            "ingressClassName": "traefik",
            "tls": [{"hosts": ["audit-ingest.edgeguard.internal"], "secretName": "edgeguard-audit-ingest"}],
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": "/function/audit-ingest",
                                "pathType": "Exact",
                                "backend": {"service": {"name": "gateway", "port": {"number": 8080}}},
                            }
                        ]
                    }
                }
            ],
        },
    }
    assert ["kubectl", "apply", "-f", str(node.path(audit_tls.SECRET_MANIFEST))] in node.calls()
    assert ["kubectl", "apply", "-f", str(node.path(audit_tls.INGRESS_MANIFEST))] in node.calls()
    site = tlsfront.Site.from_manifests(node.path(audit_tls.SECRET_MANIFEST), node.path(audit_tls.INGRESS_MANIFEST))
    assert [r.path for r in site.routes] == ["/function/audit-ingest"]


def test_an_expiring_or_foreign_serving_certificate_is_reissued_by_the_same_ca_without_a_k3s_restart(node, tmp_path):
    with_tokens(node)
    node.run("k3s-audit", "--yes", "--skip-check")
    ca_before = node.path(audit_tls.CA_CERT).read_bytes()
    webhook_before = node.path(k3s_audit.WEBHOOK).read_bytes()
    # Someone replaced the serving certificate with one our CA did not sign.
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(tmp_path / "k"),
            "-out",
            str(node.path(audit_tls.CERT)),
            "-days",
            "1",
            "-subj",
            f"/CN={audit_tls.SERVER_NAME}",
        ],
        check=True,
        capture_output=True,
    )
    node.clear_calls()
    code, out = node.run("k3s-audit", "--yes", "--skip-check")
    assert code == 0, out
    assert node.path(audit_tls.CA_CERT).read_bytes() == ca_before
    assert node.path(k3s_audit.WEBHOOK).read_bytes() == webhook_before
    assert (
        subprocess.run(
            ["openssl", "verify", "-CAfile", str(node.path(audit_tls.CA_CERT)), str(node.path(audit_tls.CERT))],
            capture_output=True,
        ).returncode
        == 0
    )
    calls = node.mutating_calls()
    assert ["systemctl", "restart", "k3s"] not in calls
    assert ["kubectl", "apply", "-f", str(node.path(audit_tls.SECRET_MANIFEST))] in calls
    assert not any(c[:3] == ["openssl", "req", "-x509"] for c in calls)  # no new CA


def test_audit_url_override_goes_into_the_kubeconfig(node):
    with_tokens(node)
    node.run("k3s-audit", "--yes", "--skip-check", "--audit-url", "https://10.0.0.5/function/audit-ingest")
    doc = yaml.safe_load(node.path(k3s_audit.WEBHOOK).read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.0.0.5/function/audit-ingest"
    assert doc["clusters"][0]["cluster"]["tls-server-name"] == audit_tls.SERVER_NAME
    assert doc["contexts"][0]["context"]["user"] == doc["users"][0]["name"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:31112/function/audit-ingest", "http://10.0.0.5:31112/x"])
def test_an_http_audit_url_is_refused_because_client_go_would_send_no_token(node, url):
    with_tokens(node)
    code, out = node.run("k3s-audit", "--yes", "--audit-url", url)
    assert code == 2
    assert f"--audit-url {url} is plain http" in out and "sends the kubeconfig's token only to an https server" in out
    assert "--audit-ca" in out
    assert not node.path(k3s_audit.WEBHOOK).exists() and node.mutating_calls() == []


def test_own_front_with_audit_ca_embeds_that_ca_and_name_and_makes_no_ca_or_ingress(node, tmp_path):
    with_tokens(node)
    node.update_world(ingress_classes=[])  # --disable traefik: not needed with your own front
    ca = tmp_path / "my-ca.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(tmp_path / "k"),
            "-out",
            str(ca),
            "-days",
            "1",
            "-subj",
            "/CN=my CA",
        ],
        check=True,
        capture_output=True,
    )
    code, out = node.run(
        "k3s-audit",
        "--yes",
        "--skip-check",
        "--audit-url",
        "https://192.0.2.7:8443/function/audit-ingest",
        "--audit-ca",
        str(ca),
        "--audit-tls-server-name",
        "faas.example.internal",
    )
    assert code == 0, out
    cluster = yaml.safe_load(node.path(k3s_audit.WEBHOOK).read_text())["clusters"][0]["cluster"]
    assert cluster == {
        "server": "https://192.0.2.7:8443/function/audit-ingest",
        "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
        "tls-server-name": "faas.example.internal",
    }
    assert not node.path(audit_tls.TLS_DIR).exists()
    assert not any(c[0] == "openssl" or "ingressclass" in c for c in node.calls())


def test_audit_ca_must_be_a_pem_certificate_and_the_server_name_needs_it(node, tmp_path):
    with_tokens(node)
    bad = tmp_path / "not-a-cert"
    bad.write_text("hello\n")
    code, out = node.run("k3s-audit", "--yes", "--audit-ca", str(bad))
    assert code == 2 and "is not a PEM certificate" in out
    code, out = node.run("k3s-audit", "--yes", "--audit-ca", str(tmp_path / "missing.pem"))
    assert code == 2 and "missing.pem" in out
    code, out = node.run("k3s-audit", "--yes", "--audit-tls-server-name", "x.example")
    assert code == 2 and "--audit-tls-server-name goes with --audit-ca" in out
    assert node.mutating_calls() == [] and not node.path(k3s_audit.WEBHOOK).exists()


def test_without_traefik_it_refuses_and_says_what_to_pass_instead(node):
    with_tokens(node)
    node.update_world(ingress_classes=[])
    code, out = node.run("k3s-audit", "--yes")
    assert code == 1 and "refusing to continue" in out
    assert "--disable traefik" in out and "--audit-url https://" in out and "--audit-ca" in out
    assert node.mutating_calls() == [] and not node.path(k3s_audit.WEBHOOK).exists()


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
    assert "authenticated audit batches reach audit-ingest" in out
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
    assert "no authenticated audit batch reached audit-ingest within 1s" in out
    assert "the local audit log does not have the probe either" in out


def test_delivery_check_is_not_fooled_by_counters_its_own_gets_move(node):
    # audit-ingest's "requests" counter grows with the probe's own GETs: only authenticated_batches counts.
    with_tokens(node)
    node.update_world(audit_on_restart=False)
    code, out = node.run("k3s-audit", "--yes", "--check-timeout", "2")
    assert code == 2 and "no authenticated audit batch reached audit-ingest" in out
    assert node.world()["requests"] >= 2


def test_batches_without_credentials_fail_the_probe_and_name_the_cause(node):
    # The API server still posts with the old http:// kubeconfig because k3s was not restarted.
    with_tokens(node)
    node.update_world(audit_auth="none")
    code, out = node.run("k3s-audit")  # no terminal, no --yes: k3s NOT restarted
    assert "k3s NOT restarted" in out
    node.update_world(audit_enabled=True)
    code, out = node.run("k3s-audit", "--check", "--check-timeout", "5")
    assert code == 2
    assert "audit-ingest answered 401 to 1 audit batch(es) that came without credentials" in out
    assert "sends the kubeconfig's token only to an https:// server" in out
    assert "k3s has not been restarted" in out and "http://127.0.0.1:31112/function/audit-ingest" in out


def test_an_http_webhook_kubeconfig_on_the_node_is_named_as_the_cause(node):
    with_tokens(node)
    front = k3s_audit.Front("http://127.0.0.1:31112/function/audit-ingest", None, None, managed=False)
    node.files({k3s_audit.WEBHOOK: k3s_audit.webhook_kubeconfig(front.url, "t")})
    ctx = Ctx(str(node.root), env=node.env(), out=io.StringIO())
    text = k3s_audit.no_credentials(ctx, 3)
    assert "401 to 3 audit batch(es)" in text and f"points at the http URL {front.url}" in text


def test_batches_with_a_token_audit_ingest_rejects_fail_the_probe(node):
    with_tokens(node)
    node.update_world(audit_auth="wrong")
    code, out = node.run("k3s-audit", "--yes", "--check-timeout", "5")
    assert code == 2 and "whose token it does not accept" in out and "edgeguard-bootstrap openfaas" in out


def test_an_audit_ingest_without_the_authentication_counters_is_reported_as_too_old(node):
    with_tokens(node)
    node.update_world(legacy_counters=True)
    code, out = node.run("k3s-audit", "--yes", "--check-timeout", "5")
    assert code == 2 and "older than this bootstrap" in out and "faas-cli up" in out


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
    assert code == 0 and "authenticated audit batches reach audit-ingest" in out


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
    rule_keys = {
        "level",
        "users",
        "userGroups",
        "verbs",
        "resources",
        "namespaces",
        "nonResourceURLs",
        "omitStages",
        "omitManagedFields",
    }
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


def test_probe_against_the_real_audit_ingest_needs_an_authenticated_batch_not_just_its_own_gets(node, serve_function):
    # The real handler counts every request, the probe's own GETs included: the probe that compared "any
    # counter about requests" reported "audit events reach audit-ingest: counters.requests 1 -> 2" here,
    # with no API server at all.
    token = "probe-test-token-0123456789"
    fn = serve_function(
        "audit-ingest",
        secrets={"audit-ingest-token": token, "alert-forwarder-token": "x" * 20, "audit-ingest-extra-rules": ""},
    )
    front = k3s_audit.Front(fn.url + "/", None, None, managed=False)
    ctx = Ctx(str(node.root), env=node.env(), out=io.StringIO())
    with pytest.raises(BootstrapError, match="no authenticated audit batch reached audit-ingest within 2s"):
        k3s_audit.verify_delivery(ctx, front, token, timeout=2, poll=0.5)

    # A batch without a token, as the API server sends it to an http:// URL, right after the probe's
    # ConfigMap: the probe names it.
    def api_server_over_http():
        deadline = time.monotonic() + 10
        while not any(c[:3] == ["kubectl", "create", "configmap"] for c in node.calls()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        requests.post(
            fn.url + "/",
            data=b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}',
            headers={"Content-Type": "application/json"},
            timeout=10,
        )

    node.clear_calls()
    poster = threading.Thread(target=api_server_over_http)
    poster.start()
    with pytest.raises(BootstrapError, match=r"answered 401 to 1 audit batch\(es\) that came without credentials"):
        k3s_audit.verify_delivery(ctx, front, token, timeout=10, poll=0.2)
    poster.join()
    assert token not in ctx.out.getvalue() and token not in fn.logs()
