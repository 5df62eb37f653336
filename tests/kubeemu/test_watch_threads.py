"""Watch streams through kubernetes.watch.Watch, and use of one emulator from several threads."""

from __future__ import annotations

import threading

import kubernetes

from local.kubeemu import KubeEmulator


def _collect(fn, n, **kwargs):
    w = kubernetes.watch.Watch()
    out = []
    for ev in w.stream(fn, **kwargs):
        out.append((ev["type"], ev["object"].metadata.name))
        if len(out) >= n:
            w.stop()
    return out


def test_watch_streams_existing_then_live_events(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    result = []
    t = threading.Thread(
        target=lambda: result.extend(
            _collect(core.list_namespaced_config_map, 4, namespace="default", timeout_seconds=5)
        )
    )
    t.start()
    emu.wait_for_watchers(1)
    emu.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "default"}})
    core.patch_namespaced_config_map("a", "default", {"data": {"x": "1"}})
    core.delete_namespaced_config_map("b", "default")
    t.join(10)
    assert result == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_watch_from_resource_version_replays_only_later_events(kube_clients):
    _, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    core.create_namespaced_secret("default", {"metadata": {"name": "other-type"}})
    got = _collect(core.list_namespaced_config_map, 1, namespace="default", resource_version=rv, timeout_seconds=2)
    assert got == [("ADDED", "b")]


def test_watch_with_label_selector_reports_objects_leaving_the_selection_as_deleted(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "a", "labels": {"sel": "yes"}}})
    result = []
    t = threading.Thread(
        target=lambda: result.extend(
            _collect(
                core.list_namespaced_config_map, 2, namespace="default", label_selector="sel=yes", timeout_seconds=5
            )
        )
    )
    t.start()
    emu.wait_for_watchers(1)
    core.create_namespaced_config_map("default", {"metadata": {"name": "unrelated"}})
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"sel": "no"}}})
    t.join(10)
    assert result == [("ADDED", "a"), ("DELETED", "a")]


def test_watch_timeout_seconds_ends_the_stream(kube_clients):
    _, core, _ = kube_clients
    w = kubernetes.watch.Watch()
    assert list(w.stream(core.list_namespaced_config_map, namespace="default", timeout_seconds=1)) == []


def test_concurrent_clients_and_direct_access_from_threads_keep_state_consistent(kube_emulator):
    errors = []

    def worker(i):
        client = kube_emulator.api_client()
        try:
            core = kubernetes.client.CoreV1Api(client)
            for j in range(10):
                core.create_namespaced_config_map("default", {"metadata": {"name": f"t{i}-{j}"}})
                kube_emulator.seed(
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{i}-{j}", "namespace": "default"}}
                )
                core.patch_namespaced_config_map(f"t{i}-{j}", "default", {"data": {"n": str(j)}})
                assert kube_emulator.get("configmaps", "default", f"t{i}-{j}")["data"] == {"n": str(j)}
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    cms = kube_emulator.list("configmaps", "default")
    assert len(cms) == 60 and len(kube_emulator.list("secrets", "default")) == 60
    rvs = [int(c["metadata"]["resourceVersion"]) for c in cms]
    assert len(set(rvs)) == 60  # every write got its own resourceVersion


def test_start_stop_and_context_manager_give_fresh_state_on_a_new_port():
    with KubeEmulator() as a:
        a.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}})
        url_a = a.url
    with KubeEmulator() as b:
        assert b.url != url_a or b.get("configmaps", "default", "x") is None
        assert b.get("configmaps", "default", "x") is None


def test_stop_is_prompt_with_an_open_watch_and_a_hung_request(kube_emulator):
    core_client = kube_emulator.api_client()
    core = kubernetes.client.CoreV1Api(core_client)
    # An hour-long hang: if stop() waited for it, its 10 s join would give up with the server thread alive.
    fault = kube_emulator.fail("list", "secrets", status="timeout", delay=3600)
    threading.Thread(
        target=lambda: list(kubernetes.watch.Watch().stream(core.list_namespaced_config_map, namespace="default")),
        daemon=True,
    ).start()

    def hung():
        try:
            core.list_namespaced_secret("default")
        except Exception:
            pass

    requester = threading.Thread(target=hung, daemon=True)
    requester.start()
    for _ in range(1000):  # until the request is inside the hang
        if fault.hits:
            break
        threading.Event().wait(0.01)
    assert fault.hits == 1
    server = kube_emulator._thread
    kube_emulator.stop()
    assert not server.is_alive()  # the hour-long hang and the open watch were ended, not waited out
    requester.join(30)
    assert not requester.is_alive()  # the hung caller got its answer (an error) instead of hanging on
    core_client.close()


def test_kubeconfig_file_works_with_the_client(tmp_path, kube_emulator):
    path = kube_emulator.write_kubeconfig(tmp_path / "kubeconfig", user_token="t")
    client = kubernetes.config.new_client_from_config(str(path))
    assert {n.metadata.name for n in kubernetes.client.CoreV1Api(client).list_namespace().items} >= {"default"}
    client.close()


def test_discovery_lists_served_groups(kube_emulator):
    client = kube_emulator.api_client()
    groups = {g.name for g in kubernetes.client.ApisApi(client).get_api_versions().groups}
    assert {"apps", "batch", "rbac.authorization.k8s.io", "events.k8s.io", "policy"} <= groups
    res = kubernetes.client.CoreV1Api(client).get_api_resources()
    assert {"configmaps", "pods/eviction", "nodes"} <= {r.name for r in res.resources}
    eviction = next(r for r in res.resources if r.name == "pods/eviction")
    assert (eviction.kind, eviction.group, eviction.verbs, eviction.short_names) == (
        "Eviction",
        "policy",
        ["create"],
        None,
    )
    assert kubernetes.client.VersionApi(client).get_code().git_version.startswith("v1.")
    client.close()
    import requests

    assert requests.get(kube_emulator.url + "/readyz", timeout=5).text == "ok"


def test_watch_from_a_compacted_resource_version_gets_410_expired(kube_clients):
    import collections

    import pytest

    emu, core, _ = kube_clients
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    emu.store.log = collections.deque(emu.store.log, maxlen=3)
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
    with pytest.raises(kubernetes.client.ApiException) as info:
        list(
            kubernetes.watch.Watch().stream(
                core.list_namespaced_config_map, namespace="default", resource_version=rv, timeout_seconds=2
            )
        )
    assert info.value.status == 410


def test_restart_keeps_the_stored_state_like_an_apiserver_restart():
    emu = KubeEmulator().start()
    try:
        emu.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept", "namespace": "default"}})
        emu.stop()
        emu.start()
        client = emu.api_client()
        assert kubernetes.client.CoreV1Api(client).read_namespaced_config_map("kept", "default").metadata.uid
        client.close()
    finally:
        emu.stop()
