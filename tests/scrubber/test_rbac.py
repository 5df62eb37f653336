"""deploy/rbac/configmap-secret-scrubber*.yaml: cluster-wide reads, writes only where a RoleBinding allows.

Against the emulator with RBAC enforced, as the function's ServiceAccount:
* reports and sweeps of every namespace work with the read-only ClusterRole alone, and use all of it;
* moves work in namespaces where the per-namespace template is applied, with exactly its verbs;
* a move in kube-system (or any namespace without the RoleBinding) is refused by the API server even
  when the function's own report-only check is bypassed, and nothing changes there.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from local.kubeemu import KubeEmulator

from .conftest import FINGERPRINT_KEY, FN, TOKEN, bare_pod, configmap, deployment, pod_spec, workload

RBAC_DIR = Path(__file__).resolve().parents[2] / "deploy" / "rbac"
CLUSTER = RBAC_DIR / "configmap-secret-scrubber.yaml"
NAMESPACED = RBAC_DIR / "configmap-secret-scrubber-namespace.yaml"
IMMUTABLE = RBAC_DIR / "configmap-secret-scrubber-immutable.yaml"
PLACEHOLDER = "__NAMESPACE__"
SA = {"kind": "ServiceAccount", "name": "configmap-secret-scrubber", "namespace": "openfaas-fn"}
# namespaces that must never get the write Role (docs/configmap-secret-scrubber.md says so too)
NEVER_WRITE = ("kube-system", "kube-public", "kube-node-lease", "openfaas", "openfaas-fn")
READ_VERBS = {"get", "list"}
DANGEROUS = {"delete", "deletecollection", "update", "watch", "*", "escalate", "bind", "impersonate"}


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(path: Path, namespace: str) -> list[dict]:
    """What the docs tell bootstrap to do: replace the placeholder, once per namespace."""
    assert namespace not in NEVER_WRITE
    return [d for d in yaml.safe_load_all(path.read_text().replace(PLACEHOLDER, namespace)) if d]


def rules_of(docs: list[dict], kind: str) -> set[tuple[str, str]]:
    (role,) = [d for d in docs if d["kind"] == kind]
    return {(v, r) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}


CLUSTER_READS = rules_of(load(CLUSTER), "ClusterRole")
NAMESPACE_WRITES = rules_of(render(NAMESPACED, "x"), "Role")


def _resource_of(path: str) -> str:
    parts = path.split("?")[0].strip("/").split("/")
    # /api/v1/configmaps, /api/v1/namespaces/ns/configmaps[/name], /apis/apps/v1/namespaces/ns/deployments/x
    if "namespaces" in parts:
        i = parts.index("namespaces")
        return parts[i + 2]
    return parts[3] if parts[0] == "apis" else parts[2]


def used(emu) -> set[tuple[str, str | None, str]]:
    """(verb, namespace or None for cluster-wide, resource) of every request the function made."""
    return {(r.verb, r.namespace, _resource_of(r.path)) for r in emu.request_log}


def test_cluster_manifest_grants_reads_only_and_binds_them_to_the_function_service_account():
    docs = load(CLUSTER)
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding"}
    for d in docs:
        kubernetes_validate.validate(d, "1.30", strict=True)
    sa, crb = kinds["ServiceAccount"], kinds["ClusterRoleBinding"]
    assert {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]} == SA
    assert crb["subjects"] == [SA]
    assert crb["roleRef"]["name"] == kinds["ClusterRole"]["metadata"]["name"]
    assert {v for v, _ in CLUSTER_READS} <= READ_VERBS
    assert not {r for _, r in CLUSTER_READS} & {"secrets", "events"}


@pytest.mark.parametrize(
    "template,expected",
    [
        (NAMESPACED, None),
        (IMMUTABLE, {("create", "configmaps"), ("delete", "configmaps")}),
    ],
)
def test_namespace_templates_render_a_role_and_rolebinding_confined_to_that_namespace(template, expected):
    raw = load(template)
    assert {d["kind"] for d in raw} == {"Role", "RoleBinding"}  # nothing cluster-scoped
    assert all(d["metadata"]["namespace"] == PLACEHOLDER for d in raw)
    docs = render(template, "team-a")
    for d in docs:
        kubernetes_validate.validate(d, "1.30", strict=True)
        assert d["metadata"]["namespace"] == "team-a"
    (rb,) = [d for d in docs if d["kind"] == "RoleBinding"]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert rb["subjects"] == [SA]
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    granted = rules_of(docs, "Role")
    assert not {v for v, _ in granted} & (DANGEROUS - ({"delete"} if template == IMMUTABLE else set()))
    assert ("list", "secrets") not in granted
    if expected is not None:
        assert granted == expected
    else:
        assert not granted & CLUSTER_READS  # nothing granted twice


def start(rbac_docs, **env) -> tuple:
    emu = KubeEmulator(rbac=True)
    emu.start()
    for d in rbac_docs:
        if d["kind"] != "Secret":
            emu.seed(d)
    token = emu.service_account_token("openfaas-fn", "configmap-secret-scrubber")
    return (
        emu,
        {"rollout_poll_seconds": "0.02", "rollout_timeout_seconds": "3", "rate_limit_per_minute": "1000", **env},
        {
            "configmap-secret-scrubber-token": TOKEN,
            "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
            "configmap-secret-scrubber-kubeconfig": yaml.safe_dump(emu.kubeconfig_dict(user_token=token)),
        },
    )


def seed_everywhere(emu):
    for ns in ("demo", "team", "kube-system"):
        emu.seed(configmap("aws-creds", {"aws_access_key_id": "AKES20LNOA", "region": "x"}, ns=ns))
        emu.seed(deployment(ns=ns, spec=pod_spec(env=True, env_from=True, volume=True)))
        emu.seed(workload("StatefulSet", "db", pod_spec(), ns=ns))
        emu.seed(workload("DaemonSet", "agent", pod_spec(), ns=ns))
        emu.seed(workload("CronJob", "backup", pod_spec(), ns=ns))
        finished = workload("Job", "once", pod_spec(), ns=ns)
        finished["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
        emu.seed(finished)  # a running Job would block the move before any write
        emu.seed(bare_pod(ns=ns, spec=pod_spec(cm="other", key="x")))


def test_reports_and_sweeps_need_exactly_the_read_only_cluster_role(load_function, call):
    emu, env, secrets = start(load(CLUSTER), scrub_mode="move")  # GET and dry_run report even in move mode
    try:
        seed_everywhere(emu)
        mod = load_function(FN, env=env, secrets=secrets)
        status, body, _ = call(mod, "GET", query={"all_namespaces": "true"})
        assert status == 200 and {c["status"] for c in body["configmaps"]} == {"would_move"}, body
        assert {c["namespace"] for c in body["configmaps"]} == {"demo", "team", "kube-system"}
        assert call(mod, "GET", query={"namespace": "kube-system", "name": "aws-creds"})[0] == 200
        assert call(mod, "POST", {"namespace": "team", "dry_run": True})[0] == 200
        assert [r for r in emu.requests if r[2] == 403] == []
        assert {(v, r) for v, _, r in used(emu)} == CLUSTER_READS
    finally:
        emu.stop()


def test_moves_in_namespaces_with_the_rolebinding_work_with_exactly_the_granted_verbs(load_function, call):
    bound = ("demo", "team")
    emu, env, secrets = start(load(CLUSTER) + [d for ns in bound for d in render(NAMESPACED, ns)], scrub_mode="move")
    try:
        mod = load_function(FN, env=env, secrets=secrets)
        # every consumer kind, moved
        emu.seed(configmap("aws-creds", {"aws_access_key_id": "AKES20LNOA", "region": "x"}))
        emu.seed(deployment(spec=pod_spec(env=True, env_from=True, volume=True)))
        emu.seed(workload("StatefulSet", "db", pod_spec()))
        emu.seed(workload("DaemonSet", "agent", pod_spec()))
        emu.seed(workload("CronJob", "backup", pod_spec()))
        finished = workload("Job", "done", pod_spec())
        finished["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
        emu.seed(finished)
        emu.fail("patch", "cronjobs", status=409, times=1)  # re-read on conflict
        emu.fail("create", "events", status=409, times=1)  # not applied: the check finds no Event
        status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
        assert status == 200 and body["configmaps"][0]["status"] == "error", body
        status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
        assert body["configmaps"][0]["status"] == "moved", body
        # sweeps and an alert without a namespace, a blocked bare pod
        emu.seed(configmap("second", {"DB_PASSWORD": "Zq8wLm3nTr5vXy"}, ns="team"))
        emu.seed(bare_pod(ns="team", spec=pod_spec(cm="second", key="DB_PASSWORD")))
        assert call(mod, "POST", {"all_namespaces": True})[0] == 200
        assert call(mod, "GET", query={"namespace": "team"})[0] == 200
        alert = {
            "rule": "Create/Modify Configmap With Private Credentials",
            "priority": "Warning",
            "output": "x",
            "output_fields": {"ka.req.configmap.name": "second"},
        }
        status, body, _ = call(mod, "POST", alert)
        assert status == 200 and body["configmaps"][0]["status"] == "blocked", body

        assert [r for r in emu.requests if r[2] == 403] == []
        calls = used(emu)
        assert {(v, r) for v, _, r in calls} == CLUSTER_READS | NAMESPACE_WRITES
        # writes (and the reads only moves make) only in the bound namespaces, never cluster-wide
        assert {ns for v, ns, r in calls if (v, r) in NAMESPACE_WRITES} == {"demo"}
    finally:
        emu.stop()


@pytest.mark.parametrize("namespace", ["kube-system", "openfaas-fn", "unbound"])
def test_move_where_no_rolebinding_exists_is_refused_by_rbac_even_if_the_python_check_is_bypassed(
    load_function, call, monkeypatch, namespace
):
    emu, env, secrets = start(
        load(CLUSTER) + render(NAMESPACED, "demo"), scrub_mode="move", report_only_namespaces="none-at-all"
    )
    try:
        seed_everywhere(emu)
        for ns in ("openfaas-fn", "unbound"):
            emu.seed(configmap("aws-creds", {"aws_access_key_id": "AKES20LNOA", "region": "x"}, ns=ns))
            emu.seed(deployment(ns=ns, spec=pod_spec(env=True)))
        mod = load_function(FN, env=env, secrets=secrets)
        # the function's own guard, switched off: only RBAC stands between it and the namespace
        monkeypatch.setattr(mod.Settings, "report_only_reason", lambda self, ns: None)
        before_cm = emu.get("configmaps", namespace, "aws-creds")
        before_deploy = emu.get("deployments", namespace, "web")
        status, body, _ = call(mod, "POST", {"namespace": namespace, "name": "aws-creds"})
        assert status == 200, body
        (cm,) = body["configmaps"]
        assert cm["status"] == "error" and "403" in cm["reasons"][0], cm
        assert "configmap-secret-scrubber-namespace.yaml" in cm["reasons"][0]
        assert emu.get("configmaps", namespace, "aws-creds") == before_cm
        assert emu.get("deployments", namespace, "web") == before_deploy
        assert emu.get("secrets", namespace, "aws-creds-credentials") is None
        attempted = [r for r in emu.request_log if r.namespace == namespace and r.verb not in READ_VERBS]
        assert all(r.status == 403 for r in attempted)
        refused = [r for r in emu.request_log if r.status == 403]
        assert refused and all(r.namespace == namespace for r in refused)
    finally:
        emu.stop()


def test_immutable_opt_in_needs_exactly_the_extra_create_and_delete_in_that_namespace(load_function, call):
    extra = rules_of(render(IMMUTABLE, "demo"), "Role")
    for with_extra in (False, True):
        docs = load(CLUSTER) + render(NAMESPACED, "demo") + (render(IMMUTABLE, "demo") if with_extra else [])
        emu, env, secrets = start(docs, scrub_mode="move", allow_immutable="true")
        try:
            mod = load_function(FN, env=env, secrets=secrets)
            emu.seed(configmap("aws-creds", {"aws_access_key_id": "AKES20LNOA", "region": "x"}, immutable=True))
            emu.seed(deployment(spec=pod_spec(env=True, env_from=True)))
            status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
            if with_extra:
                assert body["configmaps"][0]["status"] == "moved", body
                assert [r for r in emu.requests if r[2] == 403] == []
                calls = {(v, r) for v, _, r in used(emu)}
                assert extra <= calls <= CLUSTER_READS | NAMESPACE_WRITES | extra
            else:  # without the opt-in Role the API refuses the replacement; nothing is lost
                assert body["configmaps"][0]["status"] == "error", body
                assert "403" in body["configmaps"][0]["reasons"][0]
                assert emu.get("configmaps", "demo", "aws-creds")["data"]["aws_access_key_id"] == "AKES20LNOA"
        finally:
            emu.stop()
