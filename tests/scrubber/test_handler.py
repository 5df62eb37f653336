"""configmap-secret-scrubber over its HTTP contract, against the in-process Kubernetes API emulator."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from .conftest import FINGERPRINT_KEY, TOKEN, bare_pod, configmap, deployment, pod_spec, submodule, workload, writes

SEED_VALUE = "AKES20LNOA"
CREDS = {
    "DB_PASSWORD": "IfWqrAz2KrHhSyrntT1L",
    "GITHUB_TOKEN": "ghp_DcArQZclrjt92jX1DcKyWwFvL0DEcY7E30M4",
    "LOG_LEVEL": "info",
    "SECRET_NAME": "app-credentials",
}
ALERT_RULE = "Create/Modify Configmap With Private Credentials"


def alert(name, ns=None, with_data=True):
    fields = {
        "ka.user.name": "admin",
        "ka.verb": "create",
        "ka.target.resource": "configmaps",
        "ka.req.configmap.name": name,
    }
    if ns:
        fields["ka.target.namespace"] = ns
    if with_data:  # older rulesets put the data into the output: it must never come back out
        fields["ka.req.configmap.obj"] = json.dumps({"aws_access_key_id": SEED_VALUE})
    return {
        "output": f"K8s configmap with private credential (user=admin verb=create configmap={name})",
        "priority": "Warning",
        "rule": ALERT_RULE,
        "time": "2026-11-26T14:00:00.000000000Z",
        "source": "k8s_audit",
        "tags": ["k8s"],
        "hostname": "edge-1",
        "output_fields": fields,
    }


def seed_aws(emu, ns="demo"):
    emu.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE, "region": "eu-west-1"}, ns=ns))
    emu.seed(deployment("web", ns=ns, spec=pod_spec(env=True, env_from=True, volume=True)))


SECRET_VALUES = (SEED_VALUE, *CREDS.values())


def assert_no_values(text: str, values=SECRET_VALUES):
    for v in values:
        if len(v) >= 6 and v not in ("info", "app-credentials"):
            assert v not in text


# --- auth and input -------------------------------------------------------------------------------


def test_requests_without_the_bearer_token_are_refused(scrubber_fn, call, kube_emulator):
    mod = scrubber_fn()
    assert call(mod, "GET", query={"namespace": "demo"}, token=None)[0] == 401
    assert call(mod, "GET", query={"namespace": "demo"}, token="wrong")[0] == 401
    assert call(mod, "POST", {"namespace": "demo"}, token="wrong")[0] == 401
    assert kube_emulator.requests == []


def test_missing_token_secret_fails_closed(load_function, call, make_event):
    mod = load_function("configmap-secret-scrubber", secrets={})
    status, body, _ = call(mod, "GET", query={"namespace": "demo"})
    assert status == 503 and "configmap-secret-scrubber-token" in body["error"]


@pytest.mark.parametrize(
    "body,raw,ctype,status,fragment",
    [
        (None, b"{not json", "application/json", 400, "invalid JSON"),
        (None, b"{}", "text/plain", 415, "Content-Type"),
        ([1, 2], None, "application/json", 400, "JSON object"),
        ({}, None, "application/json", 400, "say what to scan"),
        ({"namespace": "demo", "nmae": "x"}, None, "application/json", 400, "unknown field"),
        ({"namespace": "Demo_NS"}, None, "application/json", 400, "namespace"),
        ({"namespace": "demo", "name": "../etc"}, None, "application/json", 400, "name"),
        ({"all_namespaces": "yes"}, None, "application/json", 400, "all_namespaces"),
        ({"all_namespaces": True, "namespace": "demo"}, None, "application/json", 400, "cannot be combined"),
        (
            {"rule": ALERT_RULE, "output_fields": {"ka.target.namespace": "demo"}},
            None,
            "application/json",
            400,
            "names no ConfigMap",
        ),
    ],
)
def test_bad_input_gets_a_4xx_with_a_reason_and_changes_nothing(
    scrubber_fn, call, kube_emulator, body, raw, ctype, status, fragment
):
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move")
    got, answer, _ = call(mod, "POST", body, raw=raw, content_type=ctype)
    assert got == status and fragment in answer["error"]
    assert writes(kube_emulator) == []


def test_wrong_method_is_405(scrubber_fn, call):
    status, body, resp = call(scrubber_fn(), "DELETE", {"namespace": "demo"})
    assert status == 405 and resp["headers"]["Allow"] == "GET, POST"


def test_invalid_mode_setting_is_reported_not_guessed(scrubber_fn, call, kube_emulator):
    status, body, _ = call(scrubber_fn(scrub_mode="yolo"), "POST", {"namespace": "demo"})
    # 503 since settings are read once at start-up (issue 14 §5; it was a 500 at request time)
    assert status == 503 and "scrub_mode" in body["error"] and writes(kube_emulator) == []


@pytest.mark.parametrize(
    "env,variable",
    [
        ({"max_moves_per_run": "ten"}, "max_moves_per_run"),
        ({"rollout_timeout_seconds": "soon"}, "rollout_timeout_seconds"),
        ({"secret_name_template": "fixed-name"}, "secret_name_template"),
        ({"replacement_name_template": "v2"}, "replacement_name_template"),
        ({"allow_immutable": "maybe"}, "allow_immutable"),
    ],
)
def test_a_bad_setting_is_a_503_naming_it_before_the_cluster_is_read(scrubber_fn, call, kube_emulator, env, variable):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": "AKES20LNOA"}))
    mod = scrubber_fn(**env)
    for method, body, query in (("POST", {"namespace": "demo"}, None), ("GET", None, {"namespace": "demo"})):
        status, answer, _ = call(mod, method, body, query=query)
        assert status == 503 and answer["misconfigured"] is True, answer
        assert answer["error"].startswith("configmap-secret-scrubber is misconfigured: "), answer
        assert variable in answer["error"], answer
    assert kube_emulator.requests == []


# --- report mode ----------------------------------------------------------------------------------


def test_get_reports_key_names_detectors_and_fingerprints_and_changes_nothing(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("app-env", CREDS))
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move")  # even in move mode, GET only reports
    status, body, resp = call(mod, "GET", query={"namespace": "demo", "name": "app-env"})
    assert status == 200 and body["mode"] == "report"
    (cm,) = body["configmaps"]
    keys = {k["key"]: k for k in cm["keys"]}
    assert set(keys) == {"DB_PASSWORD", "GITHUB_TOKEN"}
    assert "gitleaks:github-pat" in keys["GITHUB_TOKEN"]["detectors"]
    assert keys["DB_PASSWORD"]["fingerprint"].startswith("hmac-sha256:") and keys["DB_PASSWORD"]["tier"] == "high"
    assert cm["status"] == "would_move"
    assert_no_values(resp["body"])
    assert writes(kube_emulator) == []
    # a namespace sweep by GET too
    status, body, resp = call(mod, "GET", query={"namespace": "demo"})
    assert {c["name"] for c in body["configmaps"]} == {"app-env", "aws-creds"}
    assert_no_values(resp["body"])
    assert writes(kube_emulator) == []


def test_fingerprints_are_keyed_with_the_dedicated_secret_not_the_bearer_token(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("app-env", CREDS))
    status, body, _ = call(scrubber_fn(), "GET", query={"namespace": "demo", "name": "app-env"})
    fp = {k["key"]: k["fingerprint"] for k in body["configmaps"][0]["keys"]}["DB_PASSWORD"]
    value = CREDS["DB_PASSWORD"].encode()
    assert fp == "hmac-sha256:" + hmac.new(FINGERPRINT_KEY.encode(), value, hashlib.sha256).hexdigest()[:12]
    for guess_key in (TOKEN.encode(), b"configmap-secret-scrubber"):  # the caller token, the old public fallback
        assert fp != "hmac-sha256:" + hmac.new(guess_key, value, hashlib.sha256).hexdigest()[:12]


@pytest.mark.parametrize(
    "key,fragment",
    [
        (None, "missing or empty"),
        ("\n", "missing or empty"),
        ("short-key", "shorter than 16 bytes"),
        (TOKEN + "\n", "must not equal the caller token"),
    ],
)
def test_fingerprint_key_missing_empty_short_or_equal_to_the_token_fails_closed_with_503(
    load_function, call, kube_emulator, key, fragment
):
    import yaml

    seed_aws(kube_emulator)
    secrets = {
        "configmap-secret-scrubber-token": TOKEN,
        "configmap-secret-scrubber-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict()),
    }
    if key is not None:
        secrets["configmap-secret-scrubber-fingerprint-key"] = key
    mod = load_function(
        "configmap-secret-scrubber", env={"scrub_mode": "move", "rate_limit_per_minute": "1000"}, secrets=secrets
    )
    for method, body, query in (("GET", None, {"namespace": "demo"}), ("POST", alert("aws-creds", "demo"), None)):
        status, answer, resp = call(mod, method, body, query=query)
        assert status == 503 and "configmap-secret-scrubber-fingerprint-key" in answer["error"], answer
        assert fragment in answer["error"]
        assert TOKEN not in resp["body"]
    assert kube_emulator.requests == []


def test_default_mode_is_report(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    status, body, _ = call(scrubber_fn(), "POST", {"namespace": "demo", "name": "aws-creds"})
    assert status == 200 and body["mode"] == "report"
    assert body["configmaps"][0]["status"] == "would_move"
    assert writes(kube_emulator) == []


def test_dry_run_request_reports_even_in_move_mode(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    status, body, _ = call(
        scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo", "name": "aws-creds", "dry_run": True}
    )
    assert body["mode"] == "report" and writes(kube_emulator) == []


# --- move -------------------------------------------------------------------------------------------


def test_seed_aws_creds_key_moves_to_a_secret_and_the_deployment_reads_it_from_there(
    scrubber_fn, call, kube_emulator, capsys
):
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move")
    status, body, resp = call(mod, "POST", alert("aws-creds", "demo"))
    assert status == 200, body
    (cm_report,) = body["configmaps"]
    assert cm_report["status"] == "moved" and cm_report["secret"] == "aws-creds-credentials"
    (key,) = cm_report["keys"]
    assert key["key"] == "aws_access_key_id" and key["action"] == "moved" and key["rotate"] is True
    assert body["summary"]["rotate"] == ["demo/aws-creds:aws_access_key_id"]
    assert [s["step"] for s in cm_report["steps"]] == [1, 2, 3, 4, 5]

    cm = kube_emulator.get("configmaps", "demo", "aws-creds")
    assert cm["data"] == {"region": "eu-west-1"}
    assert cm["metadata"]["annotations"]["scrubber.edgeguard.io/moved-keys"] == "aws_access_key_id"
    assert cm["metadata"]["annotations"]["scrubber.edgeguard.io/target-secret"] == "aws-creds-credentials"
    sec = kube_emulator.get("secrets", "demo", "aws-creds-credentials")
    assert sec["type"] == "Opaque" and base64.b64decode(sec["data"]["aws_access_key_id"]) == SEED_VALUE.encode()
    assert sec["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "configmap-secret-scrubber"
    ann = sec["metadata"]["annotations"]
    assert ann["scrubber.edgeguard.io/source-uid"] == cm["metadata"]["uid"]
    assert ann["scrubber.edgeguard.io/rotate"] == "true" and "moved-at" in " ".join(ann)
    assert not sec["metadata"].get("ownerReferences")

    dep = kube_emulator.get("deployments", "demo", "web")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["env"][0]["valueFrom"] == {"secretKeyRef": {"name": "aws-creds-credentials", "key": "aws_access_key_id"}}
    assert c["env"][1] == {"name": "PLAIN", "value": "x"}
    assert c["envFrom"] == [
        {"configMapRef": {"name": "aws-creds"}, "prefix": "CM_"},
        {"secretRef": {"name": "aws-creds-credentials"}, "prefix": "CM_"},
    ]
    vol = dep["spec"]["template"]["spec"]["volumes"][0]
    assert vol == {
        "name": "conf",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"configMap": {"name": "aws-creds", "defaultMode": 0o440}},
                {
                    "secret": {
                        "name": "aws-creds-credentials",
                        "items": [{"key": "aws_access_key_id", "path": "aws_access_key_id"}],
                    }
                },
            ],
        },
    }
    assert c["volumeMounts"][1]["subPath"] == "aws_access_key_id"  # same file path as before
    assert dep["status"]["observedGeneration"] >= dep["metadata"]["generation"]
    assert dep["status"]["updatedReplicas"] == 2

    events = kube_emulator.list("events", "demo")
    assert [e["reason"] for e in events] == ["CredentialsMoved"]
    assert events[0]["involvedObject"]["name"] == "aws-creds"
    out = capsys.readouterr()
    assert_no_values(resp["body"] + out.err + out.out + json.dumps(events))


def test_rerun_after_a_move_changes_nothing(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move")
    call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    kube_emulator.clear_requests()
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "clean"
    assert writes(kube_emulator) == []


def test_binary_data_keys_move_with_their_exact_bytes(scrubber_fn, call, kube_emulator):
    raw = b"[db]\npassword = Zq8wLm3nTr5v\n\xff\xfe"  # not UTF-8: stays binaryData, copied as-is
    text = b"[db]\npassword = Zq8wLm3nTr5v\n"
    kube_emulator.seed(
        configmap(
            "bin",
            {"a": "1"},
            binary={"creds.ini": base64.b64encode(text).decode(), "blob.bin": base64.b64encode(raw).decode()},
        )
    )
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo", "name": "bin"})
    assert body["configmaps"][0]["status"] == "moved"
    sec = kube_emulator.get("secrets", "demo", "bin-credentials")
    assert base64.b64decode(sec["data"]["creds.ini"]) == text
    cm = kube_emulator.get("configmaps", "demo", "bin")
    assert "creds.ini" not in cm.get("binaryData", {}) and "blob.bin" in cm["binaryData"]


def test_suspect_keys_are_reported_but_never_moved(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("weird", {"DB_PASSWORD": "abc", "LOG_LEVEL": "debug"}))
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo", "name": "weird"})
    (cm,) = body["configmaps"]
    assert cm["status"] == "suspect" and cm["keys"][0]["tier"] == "suspect"
    assert writes(kube_emulator) == []


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet", "CronJob"])
def test_other_controllers_are_rewired_too(scrubber_fn, call, kube_emulator, kind):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}))
    kube_emulator.seed(
        workload(
            kind,
            "w",
            pod_spec(env=True, volume=True, items=[{"key": "aws_access_key_id", "path": "aws/key", "mode": 0o400}]),
        )
    )
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved", body
    obj = kube_emulator.get(kind.lower() + "s", "demo", "w")
    template = obj["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else obj["spec"]["template"]
    spec = template["spec"]
    assert spec["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "aws-creds-credentials"
    # the only item was the moved key: the volume now projects it from the Secret at the same path and mode
    assert spec["volumes"][0]["projected"]["sources"] == [
        {
            "secret": {
                "name": "aws-creds-credentials",
                "items": [{"key": "aws_access_key_id", "path": "aws/key", "mode": 0o400}],
            }
        }
    ]


def test_projected_volume_gets_a_secret_source_next_to_the_configmap(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE, "region": "x"}))
    kube_emulator.seed(deployment(spec=pod_spec(env=False, projected=True)))
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved"
    spec = kube_emulator.get("deployments", "demo", "web")["spec"]["template"]["spec"]
    srcs = spec["volumes"][0]["projected"]["sources"]
    assert [list(s) for s in srcs] == [["configMap"], ["secret"], ["downwardAPI"]]


def test_unrelated_workloads_are_left_alone(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE, "region": "x"}))
    kube_emulator.seed(deployment("other", spec=pod_spec(cm="other-cm", key="k")))
    kube_emulator.seed(deployment("region-only", spec=pod_spec(key="region")))
    before = {
        n: kube_emulator.get("deployments", "demo", n)["metadata"]["resourceVersion"] for n in ("other", "region-only")
    }
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved"
    after = {n: kube_emulator.get("deployments", "demo", n)["metadata"]["resourceVersion"] for n in before}
    assert before == after


# --- blocked ----------------------------------------------------------------------------------------


def _blocked(kube_emulator, scrubber_fn, call, fragment, name="aws-creds"):
    snapshot = {
        (r, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
        for r in ("configmaps", "secrets", "deployments")
        for o in kube_emulator.list(r, "demo")
    }
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo", "name": name})
    (cm,) = body["configmaps"]
    assert cm["status"] == "blocked", cm
    assert any(fragment in r for r in cm["reasons"]), cm["reasons"]
    assert all(k["action"].startswith("kept") for k in cm["keys"])
    after = {
        (r, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
        for r in ("configmaps", "secrets", "deployments")
        for o in kube_emulator.list(r, "demo")
    }
    assert after == snapshot
    return cm


def test_bare_pod_consumer_blocks_the_move(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    kube_emulator.seed(bare_pod())
    _blocked(kube_emulator, scrubber_fn, call, "bare Pod")


def test_finished_bare_pod_does_not_block(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    kube_emulator.seed(bare_pod(phase="Succeeded"))
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved"


@pytest.mark.parametrize(
    "labels,annotations,who",
    [
        ({"app.kubernetes.io/managed-by": "Helm"}, {"meta.helm.sh/release-name": "r"}, "Helm"),
        ({}, {"argocd.argoproj.io/tracking-id": "app:/ConfigMap:demo/aws-creds"}, "Argo CD"),
        ({"kustomize.toolkit.fluxcd.io/name": "apps"}, {}, "Flux"),
    ],
)
def test_configmap_managed_by_a_deployment_tool_is_only_reported(
    scrubber_fn, call, kube_emulator, labels, annotations, who
):
    kube_emulator.seed(
        configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}, labels=labels, annotations=annotations)
    )
    _blocked(kube_emulator, scrubber_fn, call, who)


def test_operator_owned_configmap_is_only_reported(scrubber_fn, call, kube_emulator):
    cm = configmap("aws-creds", {"aws_access_key_id": SEED_VALUE})
    cm["metadata"]["ownerReferences"] = [
        {"apiVersion": "example.com/v1", "kind": "Database", "name": "db", "uid": "1234", "controller": True}
    ]
    kube_emulator.seed(cm)
    _blocked(kube_emulator, scrubber_fn, call, "owner Database/db")


def test_helm_managed_consumer_blocks_the_move(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}))
    kube_emulator.seed(deployment(labels={"app.kubernetes.io/managed-by": "Helm"}))
    _blocked(kube_emulator, scrubber_fn, call, "Deployment web: managed by Helm")


def test_immutable_configmap_is_blocked_without_opt_in(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}, immutable=True))
    _blocked(kube_emulator, scrubber_fn, call, "immutable")


def test_running_job_blocks_and_finished_job_does_not(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}))
    job = workload("Job", "once", pod_spec())
    kube_emulator.seed(job)
    _blocked(kube_emulator, scrubber_fn, call, "running Job")


def test_foreign_secret_with_the_target_name_blocks(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}))
    kube_emulator.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "aws-creds-credentials", "namespace": "demo"},
            "data": {"other": base64.b64encode(b"x").decode()},
        }
    )
    _blocked(kube_emulator, scrubber_fn, call, "not created by this function")


# --- triggers, scope and limits -----------------------------------------------------------------------


def test_alert_without_namespace_searches_allowed_namespaces_by_name(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator, ns="team-a")
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}, ns="kube-system"))
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}, ns="secret-ns"))
    mod = scrubber_fn(scrub_mode="move", namespaces_deny="secret-ns")
    status, body, _ = call(mod, "POST", alert("aws-creds", ns=None))
    by_ns = {c["namespace"]: c for c in body["configmaps"]}
    assert by_ns["team-a"]["status"] == "moved"
    assert by_ns["kube-system"]["status"] == "would_move"  # system namespaces are report-only by default
    assert "report-only" in by_ns["kube-system"]["reasons"][0]
    assert "secret-ns" not in by_ns and body["skipped_by_namespace_policy"] == ["secret-ns/aws-creds"]
    assert "aws_access_key_id" in kube_emulator.get("configmaps", "kube-system", "aws-creds")["data"]
    assert "aws_access_key_id" in kube_emulator.get("configmaps", "secret-ns", "aws-creds")["data"]


def test_alert_for_another_rule_is_ignored(scrubber_fn, call, kube_emulator):
    a = alert("aws-creds", "demo")
    a["rule"] = "Anonymous Request Allowed"
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", a)
    assert status == 200 and body["ignored"] is True and kube_emulator.requests == []


def test_sweeps_cover_a_namespace_or_all_allowed_namespaces_within_limits(scrubber_fn, call, kube_emulator):
    for ns in ("a", "b"):
        for i in range(3):
            kube_emulator.seed(configmap(f"cm{i}", {"DB_PASSWORD": f"Pw{i}-q8ZtLm3nTr5v", "x": "y"}, ns=ns))
        kube_emulator.seed(configmap("clean", {"LOG_LEVEL": "info"}, ns=ns))
    mod = scrubber_fn(scrub_mode="move", max_moves_per_run="2", namespaces_allow="a,b")
    status, body, _ = call(mod, "POST", {"namespace": "a"})
    statuses = sorted(c["status"] for c in body["configmaps"])
    assert statuses == ["moved", "moved", "would_move"]
    assert body["summary"]["examined"] == 4
    status, body, _ = call(mod, "POST", {"all_namespaces": True})
    assert sorted((c["namespace"], c["status"]) for c in body["configmaps"]) == [
        ("a", "moved"),
        ("b", "moved"),
        ("b", "would_move"),
        ("b", "would_move"),
    ]
    mod = scrubber_fn(scrub_mode="report", max_configmaps_per_run="3")
    status, body, _ = call(mod, "GET", query={"all_namespaces": "true"})
    assert body["truncated"]["not_examined"] == 5 and body["summary"]["examined"] == 3


def test_rate_limit_answers_429_with_retry_after(scrubber_fn, call, kube_emulator):
    mod = scrubber_fn(rate_limit_per_minute="2")
    assert call(mod, "GET", query={"namespace": "demo"})[0] == 200
    assert call(mod, "GET", query={"namespace": "demo"})[0] == 200
    status, body, resp = call(mod, "GET", query={"namespace": "demo"})
    assert status == 429 and int(resp["headers"]["Retry-After"]) >= 1


@pytest.mark.parametrize("ns", ["kube-system", "kube-public", "kube-node-lease", "openfaas", "openfaas-fn"])
def test_system_and_openfaas_namespaces_are_report_only_by_default(scrubber_fn, call, kube_emulator, ns):
    seed_aws(kube_emulator, ns=ns)
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": ns, "name": "aws-creds"})
    (cm,) = body["configmaps"]
    assert cm["status"] == "would_move" and "report-only" in cm["reasons"][0], cm
    assert writes(kube_emulator) == []


def test_malformed_requests_and_ignored_alerts_do_not_use_up_the_rate_limit(scrubber_fn, call, kube_emulator):
    mod = scrubber_fn(rate_limit_per_minute="1")
    for _ in range(3):
        assert call(mod, "POST", raw=b"{not json")[0] == 400
        assert call(mod, "POST", {"namespace": "Demo_NS"})[0] == 400
        assert call(mod, "GET", query={"name": "../x"})[0] == 400
        assert call(mod, "POST", dict(alert("aws-creds", "demo"), rule="Some Other Rule"))[1]["ignored"] is True
    assert call(mod, "GET", query={"namespace": "demo"})[0] == 200  # the one token is still there
    status, _, resp = call(mod, "GET", query={"namespace": "demo"})
    assert status == 429 and int(resp["headers"]["Retry-After"]) >= 1


def test_api_forbidden_is_reported_without_changes(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    kube_emulator.deny("list", "deployments", namespace="demo")
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo", "name": "aws-creds"})
    (cm,) = body["configmaps"]
    assert cm["status"] == "error" and "403" in cm["reasons"][0]
    assert writes(kube_emulator) == []
    kube_emulator.deny("list", "configmaps")
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "demo"})
    assert status == 502 and "403" in body["error"]


def test_rollout_that_does_not_progress_keeps_the_keys_until_a_rerun(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    kube_emulator.hold_rollouts(True)
    mod = scrubber_fn(scrub_mode="move", rollout_timeout_seconds="0.3")
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    cm = body["configmaps"][0]
    assert cm["status"] == "pending_rollout" and "Deployment web" in cm["reasons"][0]
    assert SEED_VALUE == kube_emulator.get("configmaps", "demo", "aws-creds")["data"]["aws_access_key_id"]
    kube_emulator.hold_rollouts(False)
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved"
    assert "aws_access_key_id" not in kube_emulator.get("configmaps", "demo", "aws-creds")["data"]


def test_secret_name_template_is_configurable(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    call(
        scrubber_fn(scrub_mode="move", secret_name_template="moved-{configmap}"),
        "POST",
        {"namespace": "demo", "name": "aws-creds"},
    )
    assert kube_emulator.get("secrets", "demo", "moved-aws-creds") is not None


def test_run_budget_defers_the_rest_of_a_sweep_to_the_next_run(scrubber_fn, call, kube_emulator):
    for i in range(3):
        kube_emulator.seed(configmap(f"cm{i}", {"DB_PASSWORD": f"Pw{i}-q8ZtLm3nTr5v"}))
        kube_emulator.seed(deployment(f"web{i}", spec=pod_spec(cm=f"cm{i}", key="DB_PASSWORD")))
    kube_emulator.hold_rollouts(True)  # the first ConfigMap's rollout eats the whole budget
    mod = scrubber_fn(scrub_mode="move", run_budget_seconds="0.5", rollout_timeout_seconds="30")
    status, body, _ = call(mod, "POST", {"namespace": "demo"})
    assert [c["status"] for c in body["configmaps"]] == ["pending_rollout"]
    assert body["deferred"]["configmaps"] == ["demo/cm1", "demo/cm2"]
    kube_emulator.hold_rollouts(False)
    mod = scrubber_fn(scrub_mode="move")
    status, body, _ = call(mod, "POST", {"namespace": "demo"})
    assert sorted(c["status"] for c in body["configmaps"]) == ["moved", "moved", "moved"]


def test_immutable_configmap_is_replaced_when_opted_in(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(
        configmap(
            "aws-creds", {"aws_access_key_id": SEED_VALUE, "region": "eu-west-1"}, immutable=True, labels={"app": "web"}
        )
    )
    spec = pod_spec(env=True, env_from=True, volume=True)
    spec["containers"][0]["env"].append(
        {"name": "REGION", "valueFrom": {"configMapKeyRef": {"name": "aws-creds", "key": "region"}}}
    )
    kube_emulator.seed(deployment(spec=spec))
    status, body, resp = call(
        scrubber_fn(scrub_mode="move", allow_immutable="true"), "POST", {"namespace": "demo", "name": "aws-creds"}
    )
    (cm,) = body["configmaps"]
    assert cm["status"] == "moved", cm
    assert kube_emulator.get("configmaps", "demo", "aws-creds") is None
    new = kube_emulator.get("configmaps", "demo", "aws-creds-v2")
    assert new["immutable"] is True and new["data"] == {"region": "eu-west-1"}
    assert new["metadata"]["labels"]["app"] == "web"
    sec = kube_emulator.get("secrets", "demo", "aws-creds-credentials")
    assert base64.b64decode(sec["data"]["aws_access_key_id"]) == SEED_VALUE.encode()
    c = kube_emulator.get("deployments", "demo", "web")["spec"]["template"]["spec"]["containers"][0]
    assert c["env"][0]["valueFrom"] == {"secretKeyRef": {"name": "aws-creds-credentials", "key": "aws_access_key_id"}}
    assert c["env"][2]["valueFrom"] == {"configMapKeyRef": {"name": "aws-creds-v2", "key": "region"}}
    assert c["envFrom"] == [
        {"configMapRef": {"name": "aws-creds-v2"}, "prefix": "CM_"},
        {"secretRef": {"name": "aws-creds-credentials"}, "prefix": "CM_"},
    ]
    vol = kube_emulator.get("deployments", "demo", "web")["spec"]["template"]["spec"]["volumes"][0]
    assert [s.get("configMap", s.get("secret"))["name"] for s in vol["projected"]["sources"]] == [
        "aws-creds-v2",
        "aws-creds-credentials",
    ]
    assert_no_values(resp["body"])
    # re-run: the original is gone, the replacement is clean
    status, body, _ = call(scrubber_fn(scrub_mode="move", allow_immutable="true"), "POST", {"namespace": "demo"})
    assert body["summary"]["by_status"] == {"clean": 1}


@pytest.mark.parametrize(
    "kind,extra,fragment",
    [
        ("StatefulSet", {"updateStrategy": {"type": "OnDelete"}}, "OnDelete"),
        ("DaemonSet", {"updateStrategy": {"type": "OnDelete"}}, "OnDelete"),
    ],
)
def test_controllers_that_would_never_roll_block_the_move(scrubber_fn, call, kube_emulator, kind, extra, fragment):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}))
    kube_emulator.seed(workload(kind, "w", pod_spec(), **extra))
    _blocked(kube_emulator, scrubber_fn, call, fragment)


def test_paused_deployment_blocks_the_move(scrubber_fn, call, kube_emulator):
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}))
    d = deployment()
    d["spec"]["paused"] = True
    kube_emulator.seed(d)
    _blocked(kube_emulator, scrubber_fn, call, "paused")


def test_configmap_recreated_after_a_move_merges_into_the_same_secret(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move")
    assert call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})[1]["configmaps"][0]["status"] == "moved"
    # someone deletes and re-creates the ConfigMap with another credential: new uid, same name
    kube_emulator.store.delete(kube_emulator.resource("configmaps"), "demo", "aws-creds")
    kube_emulator.seed(configmap("aws-creds", {"DB_PASSWORD": "Zq8wLm3nTr5vXy"}))
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved", body
    sec = kube_emulator.get("secrets", "demo", "aws-creds-credentials")
    assert {k: base64.b64decode(v) for k, v in sec["data"].items()} == {
        "aws_access_key_id": SEED_VALUE.encode(),
        "DB_PASSWORD": b"Zq8wLm3nTr5vXy",
    }


def test_large_sweeps_are_listed_page_by_page(scrubber_fn, call, kube_emulator):
    for i in range(230):
        data = {"LOG_LEVEL": "info"} if i % 50 else {"API_TOKEN": f"tok-{i}-Zq8wLm3nTr5v"}
        kube_emulator.seed(configmap(f"c{i:03d}", data))
    status, body, _ = call(scrubber_fn(max_configmaps_per_run="1000"), "GET", query={"namespace": "demo"})
    assert body["summary"]["examined"] == 230
    assert body["summary"]["by_status"] == {"clean": 225, "would_move": 5}
    lists = [p for v, p, _ in kube_emulator.requests if v == "list" and "/configmaps" in p]
    assert len(lists) >= 3  # limit=100 pages


def test_without_kubernetes_credentials_the_answer_is_503_not_a_crash(load_function, call, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    mod = load_function(
        "configmap-secret-scrubber",
        env={"rate_limit_per_minute": "1000"},
        secrets={
            "configmap-secret-scrubber-token": TOKEN,
            "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
        },
    )
    status, body, _ = call(mod, "GET", query={"namespace": "demo"})
    assert status == 503 and "configmap-secret-scrubber-kubeconfig" in body["error"]


@pytest.mark.parametrize(
    "kubeconfig",
    [
        "{not: [yaml",
        "just a string\n",
        "apiVersion: v1\nkind: Config\n",
        "clusters: 3\ncontexts: []\ncurrent-context: x\n",
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n"
        "  cluster: {server: 'https://127.0.0.1:6443',"
        " insecure-skip-tls-verify: true}\n"
        "users:\n- name: u\n  user: {token: abc}\ncontexts:\n- name: c\n"
        "  context: {cluster: k, user: u}\n",
    ],
)
def test_malformed_kubeconfig_secret_answers_503_with_the_reason(load_function, call, kubeconfig):
    mod = load_function(
        "configmap-secret-scrubber",
        env={"rate_limit_per_minute": "1000"},
        secrets={
            "configmap-secret-scrubber-token": TOKEN,
            "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
            "configmap-secret-scrubber-kubeconfig": kubeconfig,
        },
    )
    for method, body, query in (("GET", None, {"namespace": "demo"}), ("POST", {"namespace": "demo"}, None)):
        status, answer, resp = call(mod, method, body, query=query)
        assert status == 503, answer
        assert "configmap-secret-scrubber-kubeconfig" in answer["error"]
        assert "Traceback" not in resp["body"]


def test_a_changed_kubeconfig_secret_is_used_by_the_next_request(
    scrubber_fn, call, kube_emulator, kube_emulator_factory
):
    import os

    import yaml

    other = kube_emulator_factory()
    kube_emulator.seed(configmap("on-the-first-cluster", {"LOG_LEVEL": "info"}))
    other.seed(configmap("on-the-second-cluster", {"LOG_LEVEL": "info"}))
    mod = scrubber_fn()
    status, body, _ = call(mod, "GET", query={"namespace": "demo", "name": "on-the-first-cluster"})
    assert body["configmaps"][0]["status"] == "clean", body
    path = mod.secrets_dir / "configmap-secret-scrubber-kubeconfig"
    path.write_text(yaml.safe_dump(other.kubeconfig_dict()))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a new mtime, as a secret update makes
    first_calls = len(kube_emulator.requests)
    status, body, _ = call(mod, "GET", query={"namespace": "demo", "name": "on-the-second-cluster"})
    assert body["configmaps"][0]["status"] == "clean", body
    assert len(kube_emulator.requests) == first_calls and other.requests


def test_trigger_rules_setting_chooses_which_falco_rules_start_a_run(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move", trigger_rules="My ConfigMap Rule")
    status, body, _ = call(mod, "POST", alert("aws-creds", "demo"))
    assert body == {"ignored": True, "reason": "rule is not one this function handles"}
    a = alert("aws-creds", "demo")
    a["rule"] = "My ConfigMap Rule"
    status, body, _ = call(mod, "POST", a)
    assert body["configmaps"][0]["status"] == "moved"


def test_a_move_decides_its_plan_once_and_rewires_each_pod_spec_once_per_listing(
    scrubber_fn, call, kube_emulator, monkeypatch
):
    """The plan is one value (issue 14 §1): a move with two rewired Deployments computes each new pod spec once
    from the run's listing and once from the fresh listing of the final check (it was five times per consumer),
    and patches each with the spec the plan holds."""
    kube_emulator.seed(configmap("aws-creds", {"aws_access_key_id": SEED_VALUE}))
    # envFrom keeps its configMapRef (a secretRef follows it), so the final check still finds both
    kube_emulator.seed(deployment("web", spec=pod_spec(env=True, env_from=True)))
    kube_emulator.seed(deployment("api", spec=pod_spec(env=True, env_from=True)))
    mod = scrubber_fn(scrub_mode="move")
    cons = submodule(mod, "consumers")
    computed = []
    real = cons.rewire
    monkeypatch.setattr(cons, "rewire", lambda spec, *a, **kw: computed.append(spec) or real(spec, *a, **kw))
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved", body
    assert len(computed) == 4  # two Deployments x (the plan, the final check)
