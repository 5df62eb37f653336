"""deploy/rbac/configmap-secret-scrubber.yaml grants exactly what the function uses.

Both directions, against the emulator with RBAC enforced: every flow (move with every kind of consumer,
sweeps, alert without namespace, blocked, conflicts) succeeds as the ServiceAccount, and the set of
(verb, resource) the function called equals the set the ClusterRole grants.
"""
from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

from local.kubeemu import KubeEmulator

from .conftest import FINGERPRINT_KEY, FN, TOKEN, bare_pod, configmap, deployment, pod_spec, workload

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "rbac" / "configmap-secret-scrubber.yaml"


def docs():
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def granted() -> set[tuple[str, str]]:
    (role,) = [d for d in docs() if d["kind"] == "ClusterRole"]
    return {(v, r) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}


def test_manifest_is_valid_and_binds_the_role_to_the_function_service_account():
    kinds = {d["kind"]: d for d in docs()}
    assert set(kinds) == {"ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding"}
    for d in docs():
        kubernetes_validate.validate(d, "1.30", strict=True)
    sa, crb = kinds["ServiceAccount"], kinds["ClusterRoleBinding"]
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                "namespace": sa["metadata"]["namespace"]}]
    assert crb["roleRef"]["name"] == kinds["ClusterRole"]["metadata"]["name"]
    verbs = {v for v, _ in granted()}
    assert not verbs & {"delete", "deletecollection", "update", "watch", "*", "escalate", "bind", "impersonate"}
    assert ("list", "secrets") not in granted()


def _resource_of(path: str) -> str:
    parts = path.split("?")[0].strip("/").split("/")
    # /api/v1/configmaps, /api/v1/namespaces/ns/configmaps[/name], /apis/apps/v1/namespaces/ns/deployments/x
    if "namespaces" in parts:
        i = parts.index("namespaces")
        return parts[i + 2]
    return parts[3] if parts[0] == "apis" else parts[2]


def test_function_works_with_exactly_the_granted_verbs_and_uses_all_of_them(load_function, call):
    emu = KubeEmulator(rbac=True)
    emu.start()
    try:
        for d in docs():
            if d["kind"] != "Secret":
                emu.seed(d)
        token = emu.service_account_token("openfaas-fn", "configmap-secret-scrubber")
        mod = load_function(FN, env={"mode": "move", "rollout_poll_seconds": "0.02", "rollout_timeout_seconds": "3",
                                     "rate_limit_per_minute": "1000"},
                            secrets={"configmap-secret-scrubber-token": TOKEN,"configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
                                     "configmap-secret-scrubber-kubeconfig": yaml.safe_dump(
                                         emu.kubeconfig_dict(user_token=token))})
        # every consumer kind, moved
        emu.seed(configmap("aws-creds", {"aws_access_key_id": "AKES20LNOA", "region": "x"}))
        emu.seed(deployment(spec=pod_spec(env=True, env_from=True, volume=True)))
        emu.seed(workload("StatefulSet", "db", pod_spec()))
        emu.seed(workload("DaemonSet", "agent", pod_spec()))
        emu.seed(workload("CronJob", "backup", pod_spec()))
        finished = workload("Job", "done", pod_spec())
        finished["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
        emu.seed(finished)
        emu.fail("patch", "cronjobs", status=409, times=1)      # re-read on conflict
        emu.fail("create", "events", status=409, times=1)       # not applied: the check finds no Event
        status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
        assert status == 200 and body["configmaps"][0]["status"] == "error", body
        status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
        assert body["configmaps"][0]["status"] == "moved", body
        # sweeps and an alert without a namespace, a blocked bare pod
        emu.seed(configmap("second", {"DB_PASSWORD": "Zq8wLm3nTr5vXy"}, ns="team"))
        emu.seed(bare_pod(ns="team", spec=pod_spec(cm="second", key="DB_PASSWORD")))
        assert call(mod, "POST", {"all_namespaces": True})[0] == 200
        assert call(mod, "GET", query={"namespace": "team"})[0] == 200
        alert = {"rule": "Create/Modify Configmap With Private Credentials", "priority": "Warning",
                 "output": "x", "output_fields": {"ka.req.configmap.name": "second"}}
        status, body, _ = call(mod, "POST", alert)
        assert status == 200 and body["configmaps"][0]["status"] == "blocked", body

        forbidden = [r for r in emu.requests if r[2] == 403]
        assert forbidden == [], forbidden
        used = {(verb, _resource_of(path)) for verb, path, _ in emu.requests}
        assert used == granted()
    finally:
        emu.stop()


IMMUTABLE = MANIFEST.with_name("configmap-secret-scrubber-immutable.yaml")


def test_immutable_opt_in_needs_exactly_the_extra_create_and_delete(load_function, call):
    extra_docs = [d for d in yaml.safe_load_all(IMMUTABLE.read_text()) if d]
    (extra_role,) = [d for d in extra_docs if d["kind"] == "ClusterRole"]
    extra = {(v, r) for rule in extra_role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert extra == {("create", "configmaps"), ("delete", "configmaps")}
    env = {"mode": "move", "allow_immutable": "true", "rollout_poll_seconds": "0.02", "rate_limit_per_minute": "1000"}
    for with_extra in (False, True):
        emu = KubeEmulator(rbac=True)
        emu.start()
        try:
            for d in docs() + (extra_docs if with_extra else []):
                if d["kind"] != "Secret":
                    emu.seed(d)
            token = emu.service_account_token("openfaas-fn", "configmap-secret-scrubber")
            mod = load_function(FN, env=env, secrets={
                "configmap-secret-scrubber-token": TOKEN,
                "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
                "configmap-secret-scrubber-kubeconfig": yaml.safe_dump(emu.kubeconfig_dict(user_token=token))})
            emu.seed(configmap("aws-creds", {"aws_access_key_id": "AKES20LNOA", "region": "x"}, immutable=True))
            emu.seed(deployment(spec=pod_spec(env=True, env_from=True)))
            status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
            if with_extra:
                assert body["configmaps"][0]["status"] == "moved", body
                assert [r for r in emu.requests if r[2] == 403] == []
                used = {(verb, _resource_of(path)) for verb, path, _ in emu.requests}
                assert extra <= used <= granted() | extra
            else:  # without the opt-in manifest the API refuses the replacement; nothing is lost
                assert body["configmaps"][0]["status"] == "error", body
                assert "403" in body["configmaps"][0]["reasons"][0]
                assert emu.get("configmaps", "demo", "aws-creds")["data"]["aws_access_key_id"] == "AKES20LNOA"
        finally:
            emu.stop()
