"""The built-in rollout controller for Deployments/StatefulSets/DaemonSets, and hold_rollouts()."""

from __future__ import annotations

import pytest

from tests.kubeemu.helpers import REAL_STUCK, deployment


def _template_patch(image):
    return {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}}}


def test_deployment_rollout_completes_after_template_change(kube_clients):
    _, _, apps = kube_clients
    apps.create_namespaced_deployment("default", deployment("web", replicas=3))
    out = apps.patch_namespaced_deployment("web", "default", _template_patch("nginx:2"))
    d = apps.read_namespaced_deployment("web", "default")
    assert int(d.metadata.resource_version) > int(out.metadata.resource_version)  # a separate status write
    assert d.status.observed_generation == d.metadata.generation == 2
    assert (d.status.updated_replicas, d.status.ready_replicas, d.status.available_replicas) == (3, 3, 3)
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("True", "NewReplicaSetAvailable")


def test_hold_rollouts_freezes_progress_until_released(kube_clients):
    emu, _, apps = kube_clients
    apps.create_namespaced_deployment("default", deployment("web", replicas=2))
    emu.hold_rollouts(True)
    apps.patch_namespaced_deployment("web", "default", _template_patch("nginx:2"))
    d = apps.read_namespaced_deployment("web", "default")
    assert d.metadata.generation == 2
    # maxSurge 25% of 2 -> 1 new pod, not ready; maxUnavailable 25% of 2 -> 0: both old pods stay
    assert (d.status.replicas, d.status.updated_replicas, d.status.available_replicas) == (3, 1, 2)
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert progressing.reason == "ReplicaSetUpdated"
    emu.hold_rollouts(False)
    d = apps.read_namespaced_deployment("web", "default")
    assert d.status.updated_replicas == 2 and d.status.observed_generation == 2


def test_stall_rollout_reports_progress_deadline_exceeded(kube_clients):
    emu, _, apps = kube_clients
    apps.create_namespaced_deployment("default", deployment("web"))
    emu.hold_rollouts(True)
    apps.patch_namespaced_deployment("web", "default", _template_patch("nginx:2"))
    emu.stall_rollout("default", "web")
    d = apps.read_namespaced_deployment("web", "default")
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")


def test_statefulset_and_daemonset_rollouts_complete(kube_clients):
    emu, _, apps = kube_clients
    for n in ("n1", "n2"):
        emu.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}})
    sts = deployment("db", replicas=2)
    sts.update(kind="StatefulSet")
    sts["spec"]["serviceName"] = "db"
    apps.create_namespaced_stateful_set("default", sts)
    apps.patch_namespaced_stateful_set("db", "default", _template_patch("pg:16"))
    s = apps.read_namespaced_stateful_set("db", "default")
    assert s.status.observed_generation == 2 and s.status.updated_replicas == 2 and s.status.ready_replicas == 2
    assert s.status.current_revision == s.status.update_revision
    ds = deployment("falco")
    ds.update(kind="DaemonSet")
    del ds["spec"]["replicas"]
    apps.create_namespaced_daemon_set("default", ds)
    apps.patch_namespaced_daemon_set("falco", "default", _template_patch("falco:0.41"))
    d = apps.read_namespaced_daemon_set("falco", "default")
    assert d.status.observed_generation == 2
    assert d.status.desired_number_scheduled == d.status.updated_number_scheduled == d.status.number_ready == 2


def test_metadata_only_change_does_not_trigger_a_rollout(kube_clients):
    _, _, apps = kube_clients
    apps.create_namespaced_deployment("default", deployment("web"))
    before = apps.read_namespaced_deployment("web", "default")
    out = apps.patch_namespaced_deployment("web", "default", {"metadata": {"annotations": {"a": "b"}}})
    after = apps.read_namespaced_deployment("web", "default")
    assert after.metadata.resource_version == out.metadata.resource_version  # no controller write followed
    assert after.metadata.generation == before.metadata.generation == 1


def test_hold_rollouts_for_one_workload_lets_the_others_complete(kube_clients):
    emu, _, apps = kube_clients
    for n in ("stuck", "fine"):
        apps.create_namespaced_deployment("default", deployment(n))
    emu.hold_rollouts(True, namespace="default", name="stuck")
    for n in ("stuck", "fine"):
        apps.patch_namespaced_deployment(n, "default", _template_patch("nginx:2"))
    assert apps.read_namespaced_deployment("stuck", "default").status.replicas == 3  # old ones still there
    assert apps.read_namespaced_deployment("fine", "default").status.updated_replicas == 2
    emu.hold_rollouts(False)
    assert apps.read_namespaced_deployment("stuck", "default").status.updated_replicas == 2


@pytest.mark.parametrize("kind,replicas,extra,real", REAL_STUCK, ids=lambda v: str(v)[:20])
def test_a_held_rollout_reports_the_counts_the_real_controllers_report(kube_clients, kind, replicas, extra, real):
    """Updated pods run ahead of ready ones (a StatefulSet, a DaemonSet or a Recreate Deployment can show every
    replica updated and none ready): code that decides "rolled out" must be tested against that, not against
    nothing updated at all."""
    emu, _, apps = kube_clients
    emu.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "sim-node-1"}})
    obj = deployment("w", replicas=replicas or 1)
    obj["kind"] = kind
    obj["spec"].update(extra)
    if kind == "StatefulSet":
        obj["spec"]["serviceName"] = "w"
    if kind == "DaemonSet":
        del obj["spec"]["replicas"]
    create = {
        "Deployment": apps.create_namespaced_deployment,
        "StatefulSet": apps.create_namespaced_stateful_set,
        "DaemonSet": apps.create_namespaced_daemon_set,
    }[kind]
    create("default", obj)
    emu.hold_rollouts(True)
    plural = kind.lower() + "s"
    patch = {
        "Deployment": apps.patch_namespaced_deployment,
        "StatefulSet": apps.patch_namespaced_stateful_set,
        "DaemonSet": apps.patch_namespaced_daemon_set,
    }[kind]
    patch("w", "default", _template_patch("nginx:2"))
    status = emu.get(plural, "default", "w")["status"]
    assert {k: status.get(k) for k in real} == real
    assert not {k for k in status if k.endswith(("Replicas", "Scheduled")) or k.startswith("number")} - set(real)
    if kind == "StatefulSet":
        assert status["currentRevision"] != status["updateRevision"]
