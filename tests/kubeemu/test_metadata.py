"""Object metadata stamping and the Status errors of create/get."""

from __future__ import annotations

import re

import kubernetes

from tests.kubeemu.helpers import api_error, deployment


def test_create_stamps_uid_resource_version_timestamp_and_url_namespace(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespace({"metadata": {"name": "team"}})
    cm = core.create_namespaced_config_map("team", {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    assert re.fullmatch(r"[0-9a-f-]{36}", cm.metadata.uid)
    assert cm.metadata.resource_version.isdigit()
    assert cm.metadata.namespace == "team"
    assert cm.metadata.creation_timestamp is not None
    stored = emu.get("configmaps", "team", "cfg")
    assert stored["metadata"]["uid"] == cm.metadata.uid
    assert stored["kind"] == "ConfigMap" and stored["apiVersion"] == "v1"


def test_resource_version_is_one_global_counter_bumped_on_every_write(kube_clients):
    emu, core, _ = kube_clients
    a = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    b = core.create_namespaced_secret("default", {"metadata": {"name": "b"}})
    a2 = core.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
    rvs = [int(a.metadata.resource_version), int(b.metadata.resource_version), int(a2.metadata.resource_version)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert int(core.list_namespaced_config_map("default").metadata.resource_version) >= rvs[-1]


def test_client_supplied_uid_and_timestamp_are_overwritten(kube_clients):
    _, core, _ = kube_clients
    cm = core.create_namespaced_config_map(
        "default",
        {
            "metadata": {
                "name": "x",
                "uid": "11111111-1111-1111-1111-111111111111",
                "creationTimestamp": "2001-01-01T00:00:00Z",
            }
        },
    )
    assert cm.metadata.uid != "11111111-1111-1111-1111-111111111111"
    assert cm.metadata.creation_timestamp.year > 2001


def test_generation_starts_at_one_and_bumps_only_on_spec_change_of_apps_objects(kube_clients):
    _, core, apps = kube_clients
    d = apps.create_namespaced_deployment("default", deployment("web"))
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"tier": "front"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment(
        "web", "default", {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.26"}]}}}}
    )
    assert d.metadata.generation == 2
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    assert cm.metadata.generation is None  # ConfigMaps carry no generation on a real apiserver either


def test_duplicate_create_is_409_already_exists(kube_clients):
    _, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "dup"}})
    exc = api_error(core.create_namespaced_config_map, "default", {"metadata": {"name": "dup"}})
    assert exc.status == 409
    assert exc.status_body["kind"] == "Status"
    assert exc.status_body["reason"] == "AlreadyExists"
    assert exc.status_body["details"] == {"name": "dup", "kind": "configmaps"}


def test_get_missing_is_404_not_found_status(kube_clients):
    _, core, apps = kube_clients
    exc = api_error(core.read_namespaced_secret, "nope", "default")
    assert exc.status == 404
    assert exc.status_body["reason"] == "NotFound"
    assert exc.status_body["code"] == 404
    assert exc.status_body["message"] == 'secrets "nope" not found'
    exc = api_error(apps.read_namespaced_deployment, "nope", "default")
    assert exc.status_body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_create_in_missing_namespace_is_404(kube_clients):
    _, core, _ = kube_clients
    exc = api_error(core.create_namespaced_config_map, "ghost", {"metadata": {"name": "x"}})
    assert exc.status == 404
    assert exc.status_body["message"] == 'namespaces "ghost" not found'


def test_body_namespace_differing_from_url_is_400(kube_clients):
    _, core, _ = kube_clients
    exc = api_error(
        core.create_namespaced_config_map, "default", {"metadata": {"name": "x", "namespace": "kube-system"}}
    )
    assert exc.status == 400
    assert core.list_namespaced_config_map("kube-system").items == []


def test_create_with_resource_version_is_rejected_like_the_apiserver(kube_clients):
    _, core, _ = kube_clients
    exc = api_error(core.create_namespaced_config_map, "default", {"metadata": {"name": "x", "resourceVersion": "12"}})
    assert exc.status == 500
    assert "resourceVersion should not be set" in exc.status_body["message"]
    assert "reason" not in exc.status_body  # passed through unclassified, as the apiserver does


def test_invalid_name_is_422_invalid(kube_clients):
    _, core, _ = kube_clients
    exc = api_error(core.create_namespaced_config_map, "default", {"metadata": {"name": "Bad_Name"}})
    assert exc.status == 422 and exc.status_body["reason"] == "Invalid"
    assert exc.status_body["details"]["causes"][0]["field"] == "metadata.name"
    exc = api_error(core.create_namespaced_config_map, "default", {"metadata": {}})
    assert exc.status == 422


def test_generate_name_gets_a_random_suffix(kube_clients):
    _, core, _ = kube_clients
    a = core.create_namespaced_event(
        "default", {"metadata": {"generateName": "scrub-"}, "involvedObject": {"kind": "ConfigMap", "name": "x"}}
    )
    b = core.create_namespaced_event(
        "default", {"metadata": {"generateName": "scrub-"}, "involvedObject": {"kind": "ConfigMap", "name": "x"}}
    )
    assert a.metadata.name.startswith("scrub-") and len(a.metadata.name) == len("scrub-") + 5
    assert a.metadata.name != b.metadata.name


def test_system_namespaces_exist_at_start_and_cannot_be_deleted(kube_clients):
    _, core, _ = kube_clients
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public"} <= names
    assert core.read_namespace("kube-system").status.phase == "Active"
    exc = api_error(core.delete_namespace, "kube-system")
    assert exc.status == 403


def test_namespace_delete_removes_its_objects(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespace({"metadata": {"name": "tmp"}})
    core.create_namespaced_config_map("tmp", {"metadata": {"name": "x"}})
    core.delete_namespace("tmp")
    assert emu.get("configmaps", "tmp", "x") is None
    assert api_error(core.read_namespace, "tmp").status == 404


def test_seed_stamps_metadata_and_keeps_given_status(kube_emulator):
    obj = kube_emulator.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "apps"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"},
        }
    )
    assert obj["metadata"]["uid"] and obj["metadata"]["resourceVersion"]
    client = kube_emulator.api_client()
    pod = kubernetes.client.CoreV1Api(client).read_namespaced_pod("p", "apps")
    assert pod.status.phase == "Running"
    assert kube_emulator.get("namespaces", None, "apps") is not None  # auto-created for the seed
    client.close()


def test_unknown_resource_path_is_404(kube_emulator):
    import requests

    r = requests.get(f"{kube_emulator.url}/api/v1/namespaces/default/widgets", timeout=5)
    assert r.status_code == 404
    assert r.json()["kind"] == "Status"


def test_label_and_annotation_syntax_is_validated_like_the_apiserver(kube_clients):
    emu, core, _ = kube_clients
    for meta in (
        {"labels": {"edgeguard.io/fingerprint": "sha256:abc"}},  # ':' is not allowed in a value
        {"labels": {"a": "x" * 64}},
        {"labels": {"bad key!": "v"}},
        {"annotations": {"-bad": "v"}},
        {"annotations": {"big": "x" * (256 * 1024)}},
    ):
        exc = api_error(core.create_namespaced_config_map, "default", {"metadata": {"name": "c", **meta}})
        assert exc.status == 422, meta
    ok = core.create_namespaced_config_map(
        "default",
        {
            "metadata": {
                "name": "c",
                "labels": {"app.kubernetes.io/managed-by": "Helm", "empty": ""},
                "annotations": {"edgeguard.io/moved-keys": "AWS_KEY,token", "x": "any: text, even {json}"},
            }
        },
    )
    assert ok.metadata.labels["empty"] == ""


def test_core_event_involved_object_namespace_must_match(kube_clients):
    _, core, _ = kube_clients
    core.create_namespace({"metadata": {"name": "apps"}})
    exc = api_error(
        core.create_namespaced_event,
        "apps",
        {"metadata": {"name": "e"}, "reason": "R", "involvedObject": {"kind": "ConfigMap", "name": "c"}},
    )
    assert exc.status == 422 and exc.status_body["details"]["causes"][0]["field"] == "involvedObject.namespace"
    core.create_namespaced_event(
        "apps",
        {
            "metadata": {"name": "e"},
            "reason": "R",
            "involvedObject": {"kind": "ConfigMap", "name": "c", "namespace": "apps"},
        },
    )


def test_events_k8s_io_event_requires_the_new_api_fields(kube_emulator):
    client = kube_emulator.api_client()
    ev = kubernetes.client.EventsV1Api(client)
    exc = api_error(
        ev.create_namespaced_event,
        "default",
        {"metadata": {"name": "e"}, "reason": "R", "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Info"},
    )
    fields = {c["field"] for c in exc.status_body["details"]["causes"]}
    assert fields == {"reportingController", "reportingInstance", "action", "type"}
    client.close()


def test_seed_stores_content_the_api_would_refuse(kube_clients):
    emu, core, _ = kube_clients
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "legacy", "namespace": "kube-system"},
    }
    emu.seed(body)  # a fixture may need it; a real apiserver would answer 422
    assert emu.get("secrets", "kube-system", "legacy")["metadata"]["uid"]
    assert (
        api_error(core.create_namespaced_secret, "kube-system", {**body, "metadata": {"name": "fresh"}}).status == 422
    )
