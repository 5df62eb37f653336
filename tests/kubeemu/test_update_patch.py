"""PUT replaces, PATCH flavours, and optimistic concurrency through the real client."""

from __future__ import annotations

import kubernetes

from tests.kubeemu.helpers import api_error, deployment


def test_put_replaces_the_whole_object_and_drops_missing_keys(kube_clients):
    _, core, _ = kube_clients
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"keep": "1", "drop": "2"}}
    )
    cm = core.read_namespaced_config_map("c", "default")
    cm.data = {"keep": "1"}
    cm.metadata.labels = None
    out = core.replace_namespaced_config_map("c", "default", cm)
    assert out.data == {"keep": "1"}
    assert out.metadata.labels is None
    assert int(out.metadata.resource_version) > int(cm.metadata.resource_version)


def test_put_with_stale_resource_version_is_409_conflict(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"v": "1"}})
    stale = core.read_namespaced_config_map("c", "default")
    core.patch_namespaced_config_map("c", "default", {"data": {"v": "2"}})
    stale.data = {"v": "3"}
    exc = api_error(core.replace_namespaced_config_map, "c", "default", stale)
    assert exc.status == 409 and exc.status_body["reason"] == "Conflict"
    assert "the object has been modified" in exc.status_body["message"]
    assert emu.get("configmaps", "default", "c")["data"] == {"v": "2"}


def test_put_without_resource_version_is_unconditional(kube_clients):
    _, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"v": "1"}})
    out = core.replace_namespaced_config_map("c", "default", {"metadata": {"name": "c"}, "data": {"v": "9"}})
    assert out.data == {"v": "9"}


def test_put_to_missing_object_is_404_and_name_mismatch_is_400(kube_clients):
    _, core, _ = kube_clients
    assert api_error(core.replace_namespaced_config_map, "c", "default", {"metadata": {"name": "c"}}).status == 404
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    assert api_error(core.replace_namespaced_config_map, "c", "default", {"metadata": {"name": "d"}}).status == 400


def test_put_keeps_uid_and_creation_timestamp(kube_clients):
    _, core, _ = kube_clients
    a = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    b = core.replace_namespaced_config_map("c", "default", {"metadata": {"name": "c"}, "data": {"x": "y"}})
    assert (a.metadata.uid, a.metadata.creation_timestamp) == (b.metadata.uid, b.metadata.creation_timestamp)


def test_noop_write_does_not_bump_resource_version(kube_clients):
    _, core, _ = kube_clients
    a = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"x": "y"}})
    b = core.patch_namespaced_config_map("c", "default", {"data": {"x": "y"}})
    assert a.metadata.resource_version == b.metadata.resource_version


def test_put_on_main_resource_ignores_status_and_status_subresource_ignores_spec(kube_clients):
    emu, _, apps = kube_clients
    apps.create_namespaced_deployment("default", deployment("d", replicas=1))
    d = apps.read_namespaced_deployment("d", "default").to_dict()
    body = kubernetes.client.ApiClient().sanitize_for_serialization(apps.read_namespaced_deployment("d", "default"))
    body["status"]["readyReplicas"] = 42
    apps.replace_namespaced_deployment("d", "default", body)
    assert emu.get("deployments", "default", "d")["status"]["readyReplicas"] == d["status"]["ready_replicas"]
    apps.patch_namespaced_deployment_status("d", "default", {"status": {"readyReplicas": 7}, "spec": {"replicas": 5}})
    stored = emu.get("deployments", "default", "d")
    assert stored["status"]["readyReplicas"] == 7 and stored["spec"]["replicas"] == 1


def test_merge_patch_null_deletes_keys(kube_clients):
    _, core, _ = kube_clients
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "c", "annotations": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}}
    )
    out = core.patch_namespaced_config_map(
        "c",
        "default",
        {"data": {"x": None, "z": "3"}, "metadata": {"annotations": {"a": None}}},
        _content_type="application/merge-patch+json",
    )
    assert out.data == {"y": "2", "z": "3"}
    assert out.metadata.annotations == {"b": "2"}


def test_merge_patch_with_stale_resource_version_is_409(kube_clients):
    emu, core, _ = kube_clients
    a = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"x": "1"}})
    core.patch_namespaced_config_map("c", "default", {"data": {"x": "2"}})
    for ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        exc = api_error(
            core.patch_namespaced_config_map,
            "c",
            "default",
            {"metadata": {"resourceVersion": a.metadata.resource_version}, "data": {"x": "3"}},
            _content_type=ctype,
        )
        assert exc.status == 409
    assert emu.get("configmaps", "default", "c")["data"] == {"x": "2"}
    cur = core.read_namespaced_config_map("c", "default").metadata.resource_version
    ok = core.patch_namespaced_config_map(
        "c",
        "default",
        {"metadata": {"resourceVersion": cur}, "data": {"x": "4"}},
        _content_type="application/merge-patch+json",
    )
    assert ok.data == {"x": "4"}


def test_strategic_merge_patch_merges_containers_env_and_volumes_by_name(kube_clients):
    emu, _, apps = kube_clients
    apps.create_namespaced_deployment(
        "default", deployment("web", volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}])
    )
    d = emu.get("deployments", "default", "web")
    d["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    d["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox"})
    apps.replace_namespaced_deployment("web", "default", d)
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "env": [
                                {"name": "B", "value": None, "valueFrom": {"secretKeyRef": {"name": "s", "key": "b"}}},
                                {"name": "C", "value": "3"},
                            ],
                            "volumeMounts": [{"name": "sec", "mountPath": "/etc/sec"}],
                        }
                    ],
                    "volumes": [{"name": "sec", "secret": {"secretName": "s"}}],
                }
            }
        }
    }
    apps.patch_namespaced_deployment("web", "default", patch)
    spec = emu.get("deployments", "default", "web")["spec"]["template"]["spec"]
    main, side = spec["containers"]
    assert (main["name"], main["image"], side["name"]) == ("main", "nginx:1.25", "side")
    assert [e["name"] for e in main["env"]] == ["A", "B", "C"]
    assert main["env"][1] == {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "b"}}}
    assert main["volumeMounts"] == [{"name": "sec", "mountPath": "/etc/sec"}]
    assert [v["name"] for v in spec["volumes"]] == ["cfg", "sec"]


def test_strategic_merge_keeping_value_next_to_value_from_is_422_like_the_apiserver(kube_clients):
    emu, _, apps = kube_clients
    body = deployment("web")
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "B", "value": "2"}]
    apps.create_namespaced_deployment("default", body)
    exc = api_error(
        apps.patch_namespaced_deployment,
        "web",
        "default",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "env": [{"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "b"}}}],
                            }
                        ]
                    }
                }
            }
        },
    )
    assert exc.status == 422
    assert exc.status_body["details"]["causes"][0]["field"] == "spec.template.spec.containers[0].env[0].valueFrom"
    assert emu.get("deployments", "default", "web")["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "B", "value": "2"}
    ]


def test_volume_mount_of_a_volume_missing_from_the_pod_is_422(kube_clients):
    _, _, apps = kube_clients
    apps.create_namespaced_deployment("default", deployment("web"))
    exc = api_error(
        apps.patch_namespaced_deployment,
        "web",
        "default",
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "main", "volumeMounts": [{"name": "sec", "mountPath": "/s"}]}]}
                }
            }
        },
    )
    assert exc.status == 422
    assert 'Not found: "sec"' in exc.status_body["message"]


def test_strategic_merge_patch_delete_directive_and_atomic_lists(kube_clients):
    emu, _, apps = kube_clients
    body = deployment("web", tolerations=[{"key": "a", "operator": "Exists"}])
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    body["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "one"}}]
    apps.create_namespaced_deployment("default", body)
    apps.patch_namespaced_deployment(
        "web",
        "default",
        {
            "spec": {
                "template": {
                    "spec": {
                        "tolerations": [{"key": "b", "operator": "Exists"}],
                        "containers": [
                            {
                                "name": "main",
                                "env": [{"name": "A", "$patch": "delete"}],
                                "envFrom": [{"secretRef": {"name": "two"}}],
                            }
                        ],
                    }
                }
            }
        },
    )
    spec = emu.get("deployments", "default", "web")["spec"]["template"]["spec"]
    assert spec["tolerations"] == [{"key": "b", "operator": "Exists"}]  # atomic list: replaced
    assert spec["containers"][0]["env"] == [{"name": "B", "value": "2"}]
    # envFrom has no patchMergeKey in the real API (listType=atomic): a strategic patch replaces it.
    assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "two"}}]


def test_json_patch_add_replace_remove_and_test(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}})
    out = core.patch_namespaced_config_map(
        "c",
        "default",
        [
            {"op": "test", "path": "/data/a", "value": "1"},
            {"op": "replace", "path": "/data/a", "value": "10"},
            {"op": "remove", "path": "/data/b"},
            {"op": "add", "path": "/metadata/labels", "value": {"x/y": "z"}},
        ],
    )
    assert out.data == {"a": "10"} and out.metadata.labels == {"x/y": "z"}
    exc = api_error(
        core.patch_namespaced_config_map,
        "c",
        "default",
        [{"op": "test", "path": "/data/a", "value": "1"}, {"op": "remove", "path": "/data/a"}],
    )
    assert exc.status == 422
    assert emu.get("configmaps", "default", "c")["data"] == {"a": "10"}


def test_json_patch_test_on_resource_version_is_an_atomic_precondition(kube_clients):
    _, core, _ = kube_clients
    a = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": a.metadata.resource_version},
        {"op": "remove", "path": "/data/a"},
    ]
    core.patch_namespaced_config_map("c", "default", ops)
    assert api_error(core.patch_namespaced_config_map, "c", "default", ops).status == 422


def test_malformed_patches_are_4xx_and_change_nothing(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    before = emu.get("configmaps", "default", "c")
    assert api_error(core.patch_namespaced_config_map, "c", "default", [{"op": "jump", "path": "/x"}]).status == 422
    assert (
        api_error(
            core.patch_namespaced_config_map,
            "c",
            "default",
            {"data": "not a map"},
            _content_type="application/json-patch+json",
        ).status
        == 400
    )
    assert (
        api_error(core.patch_namespaced_config_map, "c", "default", [{"op": "remove", "path": "/data/nope"}]).status
        == 422
    )
    assert api_error(core.patch_namespaced_config_map, "c", "default", {"metadata": {"name": "other"}}).status == 422
    assert emu.get("configmaps", "default", "c") == before


def test_patch_on_missing_object_is_404(kube_clients):
    _, core, _ = kube_clients
    assert api_error(core.patch_namespaced_config_map, "nope", "default", {"data": {}}).status == 404


def test_pod_spec_is_immutable_except_images_and_tolerations(kube_clients):
    emu, core, _ = kube_clients
    emu.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i:1", "env": [{"name": "A", "value": "1"}]}]},
        }
    )
    exc = api_error(
        core.patch_namespaced_pod,
        "p",
        "default",
        {"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "2"}]}]}},
    )
    assert exc.status == 422 and "pod updates may not change fields" in exc.status_body["message"]
    core.patch_namespaced_pod("p", "default", {"spec": {"containers": [{"name": "c", "image": "i:2"}]}})
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"a": "b"}}})
    assert emu.get("pods", "default", "p")["spec"]["containers"][0]["image"] == "i:2"


def test_job_template_and_workload_selectors_are_immutable(kube_clients):
    emu, _, apps = kube_clients
    client = emu.api_client()
    batch = kubernetes.client.BatchV1Api(client)
    batch.create_namespaced_job(
        "default",
        {
            "metadata": {"name": "j"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}]}],
                    }
                }
            },
        },
    )
    exc = api_error(
        batch.patch_namespaced_job,
        "j",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "2"}]}]}}}},
    )
    assert exc.status == 422 and exc.status_body["details"]["causes"][0]["field"] == "spec.template"
    apps.create_namespaced_deployment("default", deployment("web"))
    exc = api_error(
        apps.patch_namespaced_deployment, "web", "default", {"spec": {"selector": {"matchLabels": {"app": "other"}}}}
    )
    assert exc.status == 422
    client.close()


def test_statefulset_spec_outside_template_and_replicas_is_forbidden(kube_clients):
    _, _, apps = kube_clients
    sts = deployment("db")
    sts.update(kind="StatefulSet")
    sts["spec"]["serviceName"] = "db"
    apps.create_namespaced_stateful_set("default", sts)
    assert (
        api_error(apps.patch_namespaced_stateful_set, "db", "default", {"spec": {"serviceName": "other"}}).status == 422
    )
    apps.patch_namespaced_stateful_set("db", "default", {"spec": {"replicas": 3}})


def test_patch_with_unknown_content_type_is_415(kube_emulator):
    import requests

    kube_emulator.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}})
    r = requests.patch(
        f"{kube_emulator.url}/api/v1/namespaces/default/configmaps/c",
        data=b"not json",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"


def test_switching_a_volume_source_needs_retain_keys_like_the_apiserver(kube_clients):
    emu, _, apps = kube_clients
    body = deployment("web", volumes=[{"name": "cfg", "configMap": {"name": "app-env"}}])
    body["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "cfg", "mountPath": "/cfg"}]
    apps.create_namespaced_deployment("default", body)
    plain = {"spec": {"template": {"spec": {"volumes": [{"name": "cfg", "secret": {"secretName": "app-env"}}]}}}}
    assert api_error(apps.patch_namespaced_deployment, "web", "default", plain).status == 422  # two sources
    retained = {
        "spec": {
            "template": {
                "spec": {
                    "volumes": [{"name": "cfg", "secret": {"secretName": "app-env"}, "$retainKeys": ["name", "secret"]}]
                }
            }
        }
    }
    apps.patch_namespaced_deployment("web", "default", retained)
    assert emu.get("deployments", "default", "web")["spec"]["template"]["spec"]["volumes"] == [
        {"name": "cfg", "secret": {"secretName": "app-env"}}
    ]
