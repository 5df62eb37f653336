"""Test controls: deny (403), fail (fault injection), before() hooks, request log."""

from __future__ import annotations

import threading

import kubernetes
import pytest
import urllib3

from tests.kubeemu.helpers import api_error


def test_deny_answers_403_forbidden_status_for_matching_requests_only(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    emu.deny("patch", "configmaps", namespace="default")
    exc = api_error(core.patch_namespaced_config_map, "c", "default", {"data": {"x": "1"}})
    assert exc.status == 403 and exc.status_body["reason"] == "Forbidden"
    assert 'cannot patch resource "configmaps" in API group "" in the namespace "default"' in exc.status_body["message"]
    assert emu.get("configmaps", "default", "c").get("data") is None
    core.read_namespaced_config_map("c", "default")  # other verbs unaffected


def test_deny_by_name_and_kind_alias(kube_clients):
    emu, core, _ = kube_clients
    for n in ("a", "b"):
        core.create_namespaced_secret("default", {"metadata": {"name": n}})
    emu.deny("get", "Secret", name="a")
    assert api_error(core.read_namespaced_secret, "a", "default").status == 403
    core.read_namespaced_secret("b", "default")


def test_deny_per_user_token(kube_emulator):
    kube_emulator.deny("list", "configmaps", user="scrubber-token")
    scrubber = kube_emulator.api_client(user_token="scrubber-token")
    admin = kube_emulator.api_client()
    assert api_error(kubernetes.client.CoreV1Api(scrubber).list_namespaced_config_map, "default").status == 403
    kubernetes.client.CoreV1Api(admin).list_namespaced_config_map("default")
    exc = api_error(kubernetes.client.CoreV1Api(scrubber).list_namespaced_config_map, "default")
    assert "scrubber-token" not in exc.body  # the token never shows up in messages
    scrubber.close()
    admin.close()


def test_deny_subresource_is_separate_from_the_resource(kube_clients):
    emu, core, _ = kube_clients
    emu.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
    )
    emu.deny("create", "pods/eviction")
    assert api_error(core.create_namespaced_pod_eviction, "p", "default", {"metadata": {"name": "p"}}).status == 403
    core.read_namespaced_pod("p", "default")


@pytest.mark.parametrize(
    "status,reason", [(409, "Conflict"), (500, "InternalError"), (503, "ServiceUnavailable"), (429, "TooManyRequests")]
)
def test_fail_injects_status_n_times_without_applying(kube_clients, status, reason):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"v": "0"}})
    fault = emu.fail("patch", "configmaps", status=status, times=2)
    for _ in range(2):
        exc = api_error(core.patch_namespaced_config_map, "c", "default", {"data": {"v": "1"}})
        assert exc.status == status and exc.status_body["reason"] == reason
    assert emu.get("configmaps", "default", "c")["data"] == {"v": "0"}
    assert core.patch_namespaced_config_map("c", "default", {"data": {"v": "1"}}).data == {"v": "1"}
    assert fault.hits == 2 and fault.remaining == 0


def test_fail_409_on_create_is_already_exists(kube_clients):
    emu, core, _ = kube_clients
    emu.fail("create", "configmaps", status=409)
    exc = api_error(core.create_namespaced_config_map, "default", {"metadata": {"name": "c"}})
    assert exc.status == 409 and exc.status_body["reason"] == "AlreadyExists"
    assert exc.status_body["details"]["name"] == "c"
    assert emu.get("configmaps", "default", "c") is None


def test_fail_applied_writes_then_loses_the_reply(kube_clients):
    emu, core, _ = kube_clients
    emu.fail("create", "secrets", status=500, applied=True)
    assert api_error(core.create_namespaced_secret, "default", {"metadata": {"name": "s"}}).status == 500
    assert emu.get("secrets", "default", "s") is not None
    assert api_error(core.create_namespaced_secret, "default", {"metadata": {"name": "s"}}).status == 409


def test_fail_timeout_hangs_past_the_client_timeout(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    # The client retries a timed-out GET (urllib3 Retry(total=3)), so every attempt must hang.
    # An hour-long hang: the call can only end because the client cut each attempt short.
    fault = emu.fail("get", "configmaps", status="timeout", delay=3600, name="c", times=None)
    raised = []

    def call():
        try:
            core.read_namespaced_config_map("c", "default", _request_timeout=0.3)
        except urllib3.exceptions.HTTPError as exc:
            raised.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(60)
    assert not caller.is_alive() and len(raised) == 1
    assert fault.hits >= 2
    emu.clear_faults()
    assert core.read_namespaced_config_map("c", "default").metadata.name == "c"


def test_fail_timeout_answers_504_after_the_delay(kube_clients):
    emu, core, _ = kube_clients
    emu.fail("list", "pods", status="timeout", delay=0.2)
    exc = api_error(core.list_namespaced_pod, "default")
    assert exc.status == 504


def test_before_hook_raising_aborts_the_request_with_500_and_applies_nothing(kube_clients):
    emu, core, _ = kube_clients
    seen = []

    def killer(verb, resource, namespace, name, body):
        seen.append((verb, resource, namespace, name))
        if verb == "create" and resource == "secrets":
            raise RuntimeError("process killed")

    emu.before(killer)
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    exc = api_error(core.create_namespaced_secret, "default", {"metadata": {"name": "s"}})
    assert exc.status == 500
    assert emu.get("secrets", "default", "s") is None
    assert ("create", "configmaps", "default", None) in seen


def test_before_hook_sees_the_request_body(kube_clients):
    emu, core, _ = kube_clients
    bodies = []
    emu.before(lambda verb, res, ns, name, body: bodies.append(body))
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"k": "v"}})
    assert bodies[-1]["data"] == {"k": "v"}


def test_clear_faults_removes_faults_denies_and_hooks(kube_clients):
    emu, core, _ = kube_clients
    emu.fail("list", "configmaps", times=None)
    emu.deny("get", "configmaps")
    emu.before(lambda *a: (_ for _ in ()).throw(RuntimeError("x")))
    emu.clear_faults()
    core.list_namespaced_config_map("default")


def test_requests_log_records_verb_path_and_status(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    api_error(core.read_namespaced_config_map, "x", "default")
    core.replace_namespaced_config_map("c", "default", {"metadata": {"name": "c"}})
    core.delete_namespaced_config_map("c", "default")
    assert emu.requests == [
        ("create", "/api/v1/namespaces/default/configmaps", 201),
        ("get", "/api/v1/namespaces/default/configmaps/x", 404),
        ("update", "/api/v1/namespaces/default/configmaps/c", 200),
        ("delete", "/api/v1/namespaces/default/configmaps/c", 200),
    ]


def test_strict_auth_rejects_unknown_tokens_with_401(kube_emulator_factory):
    emu = kube_emulator_factory(strict_auth=True)
    client = emu.api_client(user_token="who-knows")
    assert api_error(kubernetes.client.CoreV1Api(client).list_namespace).status == 401
    client.close()
    emu.add_user("good", "alice")
    client = emu.api_client(user_token="good")
    kubernetes.client.CoreV1Api(client).list_namespace()
    client.close()


def test_an_internal_emulator_error_is_answered_as_a_500_status(kube_clients, monkeypatch):
    emu, core, _ = kube_clients

    def broken(*args, **kwargs):
        raise ZeroDivisionError

    monkeypatch.setattr(emu, "_dispatch", broken)
    exc = api_error(core.list_namespaced_config_map, "default")
    assert exc.status == 500 and exc.status_body["kind"] == "Status"
    assert "Traceback" not in exc.body


def test_fail_reset_drops_the_connection_after_applying(kube_clients):
    emu, core, _ = kube_clients
    emu.fail("create", "secrets", status="reset", applied=True)
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    assert emu.get("secrets", "default", "s") is not None
    assert ("create", "/api/v1/namespaces/default/secrets", 0) in emu.requests
    core.list_namespaced_secret("default")  # the client recovers on a new connection


def test_request_bodies_over_3_mib_are_413_and_up_to_it_are_read(kube_emulator):
    import requests

    url = f"{kube_emulator.url}/api/v1/namespaces/default/configmaps"
    big = requests.post(url, json={"metadata": {"name": "big"}, "data": {"k": "x" * (3 * 1024 * 1024)}}, timeout=10)
    assert big.status_code == 413 and big.json()["reason"] == "RequestEntityTooLarge"
    # 2 MiB is read (and then refused by ConfigMap validation as over 1 MiB, not by the transport).
    mid = requests.post(url, json={"metadata": {"name": "mid"}, "data": {"k": "x" * (2 * 1024 * 1024)}}, timeout=10)
    assert mid.status_code == 422
