"""node-enroll's ValidatingAdmissionPolicy: schema, CEL logic, and when bootstrap applies it.

What is and is not exercised: the manifest is validated offline against the Kubernetes 1.30 and latest
OpenAPI schemas (kubernetes-validate, strict); its CEL expressions are evaluated with cel-python (a
dynamic CEL evaluator with RE2 regular expressions, as the API server's cel-go uses) on the request
shapes the API server hands a policy (`object` null on DELETE, `oldObject` null on CREATE). The test
control plane is Kubernetes 1.24, which predates the API: there the test shows that bootstrap detects
its absence and that the API server refuses the manifest. No API server has enforced the policy here.
"""

from __future__ import annotations

import io
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from edgeguard_bootstrap import admission
from edgeguard_bootstrap.engine import Ctx

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / admission.MANIFEST
DOCS = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
POLICY = next(d for d in DOCS if d["kind"] == "ValidatingAdmissionPolicy")
BINDING = next(d for d in DOCS if d["kind"] == "ValidatingAdmissionPolicyBinding")
SA = "system:serviceaccount:openfaas-fn:node-enroll"


@pytest.mark.parametrize("version", ["1.30", kubernetes_validate.latest_version()])
def test_manifest_validates_strictly_against_the_kubernetes_schema(version):
    for doc in DOCS:
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_check_would_catch_a_misspelt_field():
    bad = yaml.safe_load(yaml.safe_dump(BINDING))
    bad["spec"]["validationAction"] = bad["spec"].pop("validationActions")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.30", strict=True)


def test_binding_denies_and_the_policy_fails_closed_on_kube_system_secret_writes():
    assert BINDING["spec"] == {"policyName": POLICY["metadata"]["name"], "validationActions": ["Deny"]}
    spec = POLICY["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
    }
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["secrets"] and rule["apiGroups"] == [""]
    assert {"CREATE", "DELETE"} <= set(rule["operations"])


celpy = pytest.importorskip("celpy", reason="cel-python (requirements-dev.txt) evaluates the policy's CEL")


def _program(expr: str):
    env = celpy.Environment()
    return env.program(env.compile(expr))


VALIDATE = _program(POLICY["spec"]["validations"][0]["expression"])
MATCH = _program(POLICY["spec"]["matchConditions"][0]["expression"])


def allowed(operation: str, obj: dict | None = None, old: dict | None = None, user: str = SA) -> bool:
    """The policy's verdict: True when the request is let through (not matched, or valid)."""
    request = celpy.json_to_cel({"operation": operation, "userInfo": {"username": user}, "namespace": "kube-system"})
    act = {"request": request, "object": celpy.json_to_cel(obj), "oldObject": celpy.json_to_cel(old)}
    if not bool(MATCH.evaluate(act)):
        return True
    return bool(VALIDATE.evaluate(act))


def secret(name: str, type_: str | None = "bootstrap.kubernetes.io/token") -> dict:
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "kube-system"}}
    if type_ is not None:
        doc["type"] = type_
    return doc


def test_node_enroll_may_create_and_delete_bootstrap_token_secrets():
    assert allowed("CREATE", obj=secret("bootstrap-token-abc123"))
    assert allowed("DELETE", old=secret("bootstrap-token-abc123"))


@pytest.mark.parametrize(
    "name,type_",
    [
        ("k3s-serving", "kubernetes.io/tls"),
        ("pi-01.node-password.k3s", "Opaque"),
        ("bootstrap-token-abc123", "Opaque"),  # right name, wrong type
        ("bootstrap-token-ABC123", "bootstrap.kubernetes.io/token"),  # token-id is [a-z0-9]
        ("bootstrap-token-abc1234", "bootstrap.kubernetes.io/token"),  # token-id is 6 characters
        ("x-bootstrap-token-abc123", "bootstrap.kubernetes.io/token"),
        ("bootstrap-token-abc123", None),  # no type at all
    ],
)
def test_node_enroll_may_not_create_or_delete_any_other_secret(name, type_):
    assert not allowed("CREATE", obj=secret(name, type_))
    # On DELETE the policy sees the stored object: a node password cannot be deleted either.
    assert not allowed("DELETE", old=secret(name, type_))
    assert not allowed("UPDATE", obj=secret(name, type_), old=secret(name, type_))


def test_other_users_are_not_matched_by_the_policy():
    assert allowed("DELETE", old=secret("pi-01.node-password.k3s", "Opaque"), user="system:admin")
    assert allowed(
        "CREATE", obj=secret("anything", "Opaque"), user="system:serviceaccount:openfaas-fn:configmap-secret-scrubber"
    )


# ---- what bootstrap does with it ---------------------------------------------------------------------


def test_openfaas_applies_the_policy_where_the_api_serves_it(node):
    node.update_world(vap=True)
    code, out = node.run("openfaas")
    assert code == 0, out
    manifest = str(node.repo / admission.MANIFEST)
    assert ["kubectl", "apply", "-f", manifest] in node.mutating_calls()
    assert ["kubectl", "get", "--raw", admission.API] in node.calls()
    code, out = node.run("preflight")
    assert "node-enroll policy" in out and f"{admission.POLICY} confines node-enroll" in out
    node.clear_calls()
    code, out = node.run("openfaas")
    assert ["kubectl", "apply", "-f", manifest] not in node.calls()


def test_openfaas_warns_and_applies_nothing_on_a_cluster_older_than_1_30(node):
    code, out = node.run("openfaas")
    assert code == 0, out
    assert "has no ValidatingAdmissionPolicy" in out
    assert not any(admission.MANIFEST in " ".join(c) for c in node.calls())
    code, out = node.run("preflight")
    assert code == 0, out
    line = next(row for row in out.splitlines() if "node-enroll policy" in row)
    assert "WARN" in line


def test_on_the_real_1_24_api_server_the_api_is_absent_and_the_manifest_is_refused(real_cluster):
    cluster, _ = real_cluster
    import os

    ctx = Ctx("/", out=io.StringIO(), env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), HOME=str(cluster.dir)))
    assert admission.served(ctx) is False
    check = admission.check(ctx)
    assert check.status == "warn" and "has no ValidatingAdmissionPolicy" in check.detail
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", str(MANIFEST), check=False)
    assert proc.returncode != 0 and "ValidatingAdmissionPolicy" in proc.stderr
