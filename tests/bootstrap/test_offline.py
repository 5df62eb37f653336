"""offline: the files bootstrap writes for an offline restart, the commands, and the "offline ready" check.

What is exercised: everything below runs against the recording fakes (k3s, kubectl, helm, systemctl) and a
--root directory. No k3s, containerd or embedded registry has run here, so that an Always pull is
answered from the node's own store with the uplink down is the k3s documentation's and k3s-io/k3s#12799's
claim, not something this suite has seen.
"""

from __future__ import annotations

import io
import json

import pytest
import yaml

from edgeguard_bootstrap import falco, offline
from edgeguard_bootstrap.engine import Ctx

FUNCTION_IMAGES = [
    f"ghcr.io/edgeguard/{n}:0.1.0"
    for n in ("alert-forwarder", "audit-ingest", "configmap-secret-scrubber", "node-enroll")
]


def workload(kind, name, ns, containers, init=()):
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": {"spec": {"containers": list(containers), "initContainers": list(init)}}},
    }


OPENFAAS = [
    workload(
        "Deployment",
        "gateway",
        "openfaas",
        [
            {"name": "gateway", "image": "ghcr.io/openfaas/gateway:0.27.14", "imagePullPolicy": "IfNotPresent"},
            {"name": "faas-netes", "image": "ghcr.io/openfaas/faas-netes:0.18.17", "imagePullPolicy": "IfNotPresent"},
        ],
    ),
    workload(
        "Deployment",
        "nats",
        "openfaas",
        [{"name": "nats", "image": "nats-streaming:0.25.6", "imagePullPolicy": "IfNotPresent"}],
    ),
]
FALCO = [
    workload(
        "DaemonSet",
        "falco",
        "falco",
        [{"name": "falco", "image": "docker.io/falcosecurity/falco:0.44.1", "imagePullPolicy": "IfNotPresent"}],
    )
]


def ctx_for(node):
    return Ctx(str(node.root), out=io.StringIO(), env=node.env())


@pytest.mark.parametrize(
    "ref,normal",
    [
        ("nats-streaming:0.25.6", "docker.io/library/nats-streaming:0.25.6"),
        ("falcosecurity/falco:0.44.1", "docker.io/falcosecurity/falco:0.44.1"),
        ("ghcr.io/openfaas/gateway:0.27.14", "ghcr.io/openfaas/gateway:0.27.14"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("registry.local:5000/team/app", "registry.local:5000/team/app:latest"),
        ("ghcr.io/a/b@sha256:" + "1" * 64, "ghcr.io/a/b@sha256:" + "1" * 64),
    ],
)
def test_image_names_as_containerd_stores_them(ref, normal):
    assert offline.normalize(ref) == normal


def test_stack_images_expand_like_faas_cli(node):
    assert sorted(offline.stack_images(node.repo, {})) == FUNCTION_IMAGES
    env = {"REGISTRY": "registry.site:5000/edge", "TAG": "0.2.0"}
    assert offline.stack_images(node.repo, env)[0] == "registry.site:5000/edge/audit-ingest:0.2.0"


@pytest.mark.parametrize(
    "text,want",
    [
        ("mirrors:\n  docker.io:\n  ghcr.io:\n    endpoint:\n      - https://m.example\n", {"docker.io", "ghcr.io"}),
        ('mirrors:\n  "*":\nconfigs:\n  "registry.example:5000":\n    auth: {username: u}\n', {"*"}),
        ("configs:\n  ghcr.io:\n    tls: {insecure_skip_verify: true}\n", set()),
        (
            "mirrors:\n  registry.local:5000:\n    endpoint: [\"http://registry.local:5000\"]\n  'quay.io': {}\n",
            {"registry.local:5000", "quay.io"},
        ),
    ],
)
def test_mirrored_registries_are_read_from_registries_yaml(node, text, want):
    node.files({offline.REGISTRIES: text})
    assert offline.mirrored(ctx_for(node)) == want


def test_offline_writes_exact_files_restarts_k3s_once_and_waits_for_pinned_images(node):
    node.update_world(workloads={"openfaas": OPENFAAS, "falco": FALCO})
    code, out = node.run("offline", "--yes")
    assert code == 0, out
    assert node.path(offline.REGISTRIES).read_text() == (
        "# Written by edgeguard-bootstrap offline: these registries are mirrored through k3s's embedded\n"
        "# registry (embedded-registry: true), so an Always pull of an image this node holds resolves\n"
        "# from its own store when the uplink is down. An empty entry = no extra endpoint; the\n"
        "# registry itself stays the fallback.\n"
        "mirrors:\n"
        "  ghcr.io: {}\n"
    )
    assert node.path(offline.REGISTRIES).stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(node.path(offline.REGISTRIES).read_text()) == {"mirrors": {"ghcr.io": {}}}
    assert node.path(offline.DROPIN).read_text() == (
        "# Written by edgeguard-bootstrap offline; undo with: edgeguard-bootstrap revert\nembedded-registry: true\n"
    )
    assert node.path(offline.PREIMPORT).read_text() == (
        "# edgeguard-bootstrap offline: k3s pulls and pins these images\n"
        "docker.io/falcosecurity/falco:0.44.1\n"
        "docker.io/library/nats-streaming:0.25.6\n"
        "ghcr.io/edgeguard/alert-forwarder:0.1.0\n"
        "ghcr.io/edgeguard/audit-ingest:0.1.0\n"
        "ghcr.io/edgeguard/configmap-secret-scrubber:0.1.0\n"
        "ghcr.io/edgeguard/node-enroll:0.1.0\n"
        "ghcr.io/openfaas/faas-netes:0.18.17\n"
        "ghcr.io/openfaas/gateway:0.27.14\n"
    )
    assert node.mutating_calls() == [["systemctl", "restart", "k3s"]]
    assert "all 8 images are in the store and pinned" in out
    node.clear_calls()
    code, out = node.run("offline", "--yes")
    assert code == 0 and "no changes" in out and node.mutating_calls() == []


def test_preflight_names_exactly_what_would_need_the_internet_and_passes_after_offline_and_falco(node):
    node.seed_tokens()
    # Falco installed by an earlier version of bootstrap: falcoctl on; one image pulled but not pinned.
    node.update_world(
        workloads={"openfaas": OPENFAAS, "falco": FALCO},
        releases={
            "falco": {
                "namespace": "falco",
                "status": "deployed",
                "chart": "falco-9.1.0",
                "values": {"driver": {"kind": "modern_ebpf"}},
            }
        },
        images={"ghcr.io/openfaas/gateway:0.27.14": False},
    )
    code, out = node.run("preflight")
    assert code == 0, out
    detail = out[out.index("offline ready") :]
    for expected in (
        "ghcr.io/edgeguard/audit-ingest:0.1.0: not in this node's image store "
        "(openfaas-fn/deployment/audit-ingest); "
        "pulled from ghcr.io",
        "ghcr.io/edgeguard/audit-ingest:0.1.0: imagePullPolicy Always (openfaas-fn/deployment/audit-ingest) "
        "resolves the tag at ghcr.io on every start: ghcr.io is not mirrored through k3s's embedded registry",
        "ghcr.io/openfaas/gateway:0.27.14: in the store but not pinned",
        "docker.io/library/nats-streaming:0.25.6: not in this node's image store (openfaas/deployment/nats); "
        "pulled from docker.io",
        "Falco's falcoctl install and follow enabled (helm release falco)",
        "fix: edgeguard-bootstrap offline",
    ):
        assert expected in detail, expected
    assert "WARN" in out[out.index("offline ready") :].splitlines()[0]
    assert node.run("falco")[0] == 0
    assert node.run("offline", "--yes")[0] == 0
    code, out = node.run("preflight")
    line = out[out.index("offline ready") :].splitlines()[0]
    assert "PASS" in line and "8 images in the store and pinned" in line, out[out.index("offline ready") :]


def test_an_operators_registries_yaml_is_left_alone_and_the_missing_entries_are_named(node):
    own = (
        "mirrors:\n  docker.io:\n    endpoint:\n      - https://mirror.site\n"
        "configs:\n  mirror.site:\n    auth: {username: u, password: p}\n"
    )
    node.files({offline.REGISTRIES: own})
    code, out = node.run("offline", "--yes")
    assert code == 0, out
    assert node.path(offline.REGISTRIES).read_text() == own
    assert "is not bootstrap's (it may hold credentials); add under `mirrors:`\n    ghcr.io:" in out
    node.files({offline.REGISTRIES: own.replace("mirrors:\n", "mirrors:\n  ghcr.io:\n")})
    code, out = node.run("offline", "--yes")
    assert "mirrors ghcr.io" in out


def test_embedded_registry_already_set_by_the_operator_needs_no_dropin(node):
    node.files({offline.CONFIG: "write-kubeconfig-mode: '0600'\nembedded-registry: true\n"})
    code, out = node.run("offline", "--yes")
    assert code == 0, out
    assert not node.path(offline.DROPIN).exists()
    assert "embedded-registry already enabled" in out


def test_k3s_too_old_to_pin_an_image_list_is_refused(node):
    node.update_world(k3s_version="k3s version v1.30.4+k3s1 (98262b5d)")
    code, out = node.run("offline", "--yes")
    assert code == 1 and "does not pull and pin the images of a list" in out
    assert node.mutating_calls() == [] and not node.path(offline.PREIMPORT).exists()


def test_a_k3s_older_than_the_observed_self_serving_release_is_named_in_preflight(node):
    node.update_world(k3s_version="k3s version v1.31.5+k3s1 (x)")
    assert node.run("offline", "--yes")[0] == 0
    code, out = node.run("preflight")
    assert "older than v1.32.5+k3s1, the first release seen serving a node's own Always pulls" in out


def test_the_restart_waits_for_yes_and_is_remembered(node):
    code, out = node.run("offline")
    assert code == 0 and "k3s NOT restarted" in out
    assert ["systemctl", "restart", "k3s"] not in node.calls()
    code, out = node.run("offline", "--yes")
    assert ["systemctl", "restart", "k3s"] in node.calls()


def test_images_k3s_has_not_pulled_yet_are_named_after_the_timeout(node):
    node.update_world(registry_reachable=False)
    code, out = node.run("offline", "--yes", "--offline-timeout", "0")
    assert code == 0, out
    assert "4 of 4 images not pulled and pinned yet after 0s" in out


def test_dry_run_plans_the_files_and_the_restart_without_touching_anything(node):
    code, out = node.run("offline", "--dry-run")
    assert code == 0, out
    for planned in (
        f"+++ b{offline.REGISTRIES}",
        f"+++ b{offline.DROPIN}",
        f"+++ b{offline.PREIMPORT}",
        "run: systemctl restart k3s",
    ):
        assert planned in out
    assert node.mutating_calls() == [] and not node.path(offline.REGISTRIES).exists()


def test_revert_removes_the_offline_files_and_restarts_k3s(node):
    assert node.run("offline", "--yes")[0] == 0
    node.clear_calls()
    code, out = node.run("revert", "--yes")
    assert code == 0, out
    for p in (offline.REGISTRIES, offline.DROPIN, offline.PREIMPORT):
        assert not node.path(p).exists(), p
    assert node.mutating_calls()[-1] == ["systemctl", "restart", "k3s"]


def test_falcoctl_state_is_read_from_the_helm_release_and_the_host_unit(node):
    ctx = ctx_for(node)
    assert offline.falcoctl_problem(ctx) is None  # no Falco at all: nothing fetches
    node.update_world(enabled={falco.FALCOCTL_UNIT: True})
    assert falco.FALCOCTL_UNIT in offline.falcoctl_problem(ctx_for(node))
    values = falco.helm_values("modern_ebpf", "u")
    node.update_world(
        releases={
            "falco": {
                "namespace": "falco",
                "status": "deployed",
                "chart": "falco-9.1.0",
                "values": json.loads(json.dumps(values)),
            }
        }
    )
    assert offline.falcoctl_problem(ctx_for(node)) is None


def test_image_mode_writes_the_files_for_first_boot_and_runs_nothing(node):
    code, out = node.run("offline", "--image")
    assert code == 0, out
    assert node.calls() == []
    assert node.path(offline.PREIMPORT).read_text().splitlines()[1:] == FUNCTION_IMAGES
    assert node.path(offline.DROPIN).exists() and node.path(offline.REGISTRIES).exists()
    assert "only stack.yml's images" in out
