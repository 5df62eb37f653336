"""configmap-secret-scrubber's per-namespace write access: --scrubber-namespaces, the immutable opt-in,
the old cluster-wide opt-in removed on upgrade, refusals, idempotency and revert."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from edgeguard_bootstrap import scrubber_rbac

K8S_VERSION = kubernetes_validate.latest_version()
REPO = Path(__file__).resolve().parents[2]
LEGACY_GET = [
    "kubectl",
    "get",
    "clusterrolebinding,clusterrole",
    "edgeguard:configmap-secret-scrubber-immutable",
    "-o",
    "name",
    "--ignore-not-found",
]
LEGACY_DELETE = [
    "kubectl",
    "delete",
    "clusterrolebinding,clusterrole",
    "edgeguard:configmap-secret-scrubber-immutable",
    "--ignore-not-found",
]


def rendered(node, kind, ns):
    return node.path(scrubber_rbac.manifest_path(kind, ns))


def applies(node):
    return [c[3] for c in node.mutating_calls() if c[:3] == ["kubectl", "apply", "-f"]]


@pytest.fixture
def cluster(node):
    w = node.world()
    w["namespaces"] += ["demo", "shop"]
    node.set_world(w)
    return node


def test_without_scrubber_namespaces_it_applies_no_write_role_and_the_plan_says_report_only(node):
    code, out = node.run("openfaas", "--dry-run")
    assert code == 0, out
    assert "configmap-secret-scrubber can only REPORT" in out
    code, out = node.run("openfaas")
    assert code == 0, out
    assert "configmap-secret-scrubber can only REPORT" in out
    assert not any("configmap-secret-scrubber-write-" in f or "-immutable" in f for f in applies(node))
    assert not node.path(scrubber_rbac.MANIFEST_DIR).joinpath("configmap-secret-scrubber-write-default.yaml").exists()


def test_write_role_is_rendered_diffed_and_applied_once_per_namespace(cluster):
    node = cluster
    code, out = node.run("openfaas", "--scrubber-namespaces", "demo,shop")
    assert code == 0, out
    calls = node.calls()
    for ns in ("demo", "shop"):
        assert ["kubectl", "get", "namespace", ns, "-o", "name"] in calls
        path = str(rendered(node, "write", ns))
        diff = calls.index(["kubectl", "diff", "-f", path])
        assert calls.index(["kubectl", "apply", "-f", path]) == diff + 1
    assert applies(node) == [
        str(node.repo / "deploy/rbac/configmap-secret-scrubber.yaml"),
        str(node.repo / "deploy/rbac/node-enroll.yaml"),
        str(node.repo / "deploy/rbac/alert-forwarder.yaml"),
        str(node.repo / "deploy/rbac/node-tokens-alert-forwarder.yaml"),
        str(rendered(node, "write", "demo")),
        str(rendered(node, "write", "shop")),
        str(node.path("/var/lib/edgeguard/manifests/serviceaccount-tokens.yaml")),
    ]
    assert not rendered(node, "immutable", "demo").exists()
    assert "can only REPORT" not in out


@pytest.mark.parametrize("kind,template", list(scrubber_rbac.KINDS.items()))
def test_rendered_manifests_validate_and_only_name_their_namespace(cluster, kind, template):
    node = cluster
    code, out = node.run("openfaas", "--scrubber-namespaces", "demo", "--scrubber-immutable-namespaces", "demo")
    assert code == 0, out
    text = rendered(node, kind, "demo").read_text()
    assert "__NAMESPACE__" not in text
    assert text.split("\n", 1)[1] == (REPO / template).read_text().replace("__NAMESPACE__", "demo")
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs] == ["Role", "RoleBinding"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "demo"
    binding = docs[1]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": docs[0]["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "configmap-secret-scrubber", "namespace": "openfaas-fn"}
    ]


def test_immutable_opt_in_is_applied_only_where_asked(cluster):
    node = cluster
    code, out = node.run(
        "openfaas",
        "--scrubber-namespaces",
        "demo",
        "--scrubber-namespaces",
        "shop",
        "--scrubber-immutable-namespaces",
        "shop",
    )
    assert code == 0, out
    assert [f for f in applies(node) if "manifests/configmap-secret-scrubber-" in f] == [
        str(rendered(node, "write", "demo")),
        str(rendered(node, "write", "shop")),
        str(rendered(node, "immutable", "shop")),
    ]
    assert not rendered(node, "immutable", "demo").exists()


def test_second_run_with_the_same_namespaces_changes_nothing(cluster):
    node = cluster
    args = ("openfaas", "--scrubber-namespaces", "demo,shop", "--scrubber-immutable-namespaces", "demo")
    node.run(*args)
    node.clear_calls()
    code, out = node.run(*args)
    assert code == 0 and "no changes" in out
    assert node.mutating_calls() == []
    assert ["kubectl", "diff", "-f", str(rendered(node, "immutable", "demo"))] in node.calls()


@pytest.mark.parametrize("ns", scrubber_rbac.REFUSED)
@pytest.mark.parametrize("option", ["--scrubber-namespaces", "--scrubber-immutable-namespaces"])
@pytest.mark.parametrize("command", ["openfaas", "all"])
def test_system_and_openfaas_namespaces_are_refused_before_anything_runs(node, ns, option, command):
    extra = (
        ("--scrubber-namespaces", f"demo,{ns}")
        if option == "--scrubber-namespaces"
        else ("--scrubber-namespaces", "demo", option, ns)
    )
    code, out = node.run(command, *extra)
    assert code == 2
    assert f"error: {option}: refusing {ns}: the scrubber must never change" in out
    assert node.calls() == []
    assert not node.path(scrubber_rbac.MANIFEST_DIR).exists()


@pytest.mark.parametrize("bad", ["Demo", "a_b", "-x", "a" * 64])
def test_invalid_namespace_names_are_refused(node, bad):
    code, out = node.run("openfaas", f"--scrubber-namespaces={bad}")
    assert code == 2 and "is not a namespace name" in out and node.calls() == []


def test_immutable_namespace_must_also_get_the_write_role(cluster):
    code, out = cluster.run("openfaas", "--scrubber-namespaces", "demo", "--scrubber-immutable-namespaces", "shop")
    assert code == 2
    assert "--scrubber-immutable-namespaces shop: give it in --scrubber-namespaces too" in out
    assert cluster.calls() == []


def test_a_namespace_that_does_not_exist_fails_the_check_before_any_change(cluster):
    code, out = cluster.run("openfaas", "--scrubber-namespaces", "demo,nope")
    assert code == 1
    assert "namespace nope" in out and 'namespaces "nope" not found' in out
    assert cluster.mutating_calls() == []


def test_the_old_cluster_wide_immutable_opt_in_is_deleted_on_upgrade(node):
    node.update_world(
        cluster_objects=[
            "clusterrolebinding/edgeguard:configmap-secret-scrubber-immutable",
            "clusterrole/edgeguard:configmap-secret-scrubber-immutable",
        ]
    )
    code, out = node.run("openfaas", "--dry-run")
    assert code == 0
    assert "run: kubectl delete clusterrolebinding,clusterrole edgeguard:configmap-secret-scrubber-immutable" in out
    assert LEGACY_DELETE not in node.calls()
    code, out = node.run("openfaas")
    assert code == 0, out
    assert LEGACY_GET in node.calls()
    assert node.mutating_calls().count(LEGACY_DELETE) == 1
    assert node.world()["cluster_objects"] == []
    node.clear_calls()
    code, out = node.run("openfaas")
    assert "no changes" in out and node.mutating_calls() == []
    # Revert does not bring back a cluster-wide grant.
    node.clear_calls()
    node.run("revert", "--yes")
    assert not any("clusterrole" in " ".join(c) for c in node.mutating_calls())


def test_legacy_name_is_the_one_the_immutable_template_now_uses_per_namespace():
    docs = [d for d in yaml.safe_load_all((REPO / scrubber_rbac.IMMUTABLE_TEMPLATE).read_text()) if d]
    assert {d["metadata"]["name"] for d in docs} == {scrubber_rbac.LEGACY}
    assert {d["kind"] for d in docs} == {"Role", "RoleBinding"}


def test_revert_deletes_the_rendered_roles_then_their_files(cluster):
    node = cluster
    node.run("openfaas", "--scrubber-namespaces", "demo,shop", "--scrubber-immutable-namespaces", "shop")
    node.clear_calls()
    code, out = node.run("revert", "--yes")
    assert code == 0, out
    deletes = [c[4] for c in node.mutating_calls() if c[:4] == ["kubectl", "delete", "--ignore-not-found", "-f"]]
    ours = [d for d in deletes if "manifests/configmap-secret-scrubber-" in d]
    assert ours == [
        str(rendered(node, "immutable", "shop")),
        str(rendered(node, "write", "shop")),
        str(rendered(node, "write", "demo")),
    ]
    for kind, ns in (("write", "demo"), ("write", "shop"), ("immutable", "shop")):
        assert not rendered(node, kind, ns).exists()


def test_a_namespace_dropped_later_keeps_its_role_and_the_run_says_how_to_withdraw_it(cluster):
    node = cluster
    node.run("openfaas", "--scrubber-namespaces", "demo,shop")
    node.clear_calls()
    code, out = node.run("openfaas", "--scrubber-namespaces", "demo")
    assert code == 0 and node.mutating_calls() == []
    path = scrubber_rbac.manifest_path("write", "shop")
    assert f"{path} (applied by an earlier run) is not in this run's namespaces and stays in force" in out
    assert f"kubectl delete -f {path}" in out


def test_all_takes_the_scrubber_options_and_the_dry_run_shows_the_rendered_file(cluster):
    code, out = cluster.run("all", "--dry-run", "--scrubber-namespaces", "demo")
    assert code == 0, out
    path = scrubber_rbac.manifest_path("write", "demo")
    assert f"+++ b{path}" in out and "+  namespace: demo" in out
    assert f"run: kubectl apply -f {cluster.path(path)}" in out
    assert cluster.mutating_calls() == []
