"""ConfigMap/Secret specifics: immutability, stringData, key validation."""

from __future__ import annotations

import base64

from tests.kubeemu.helpers import api_error


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_immutable_configmap_data_change_is_422_forbidden(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"k": "v"}, "immutable": True})
    exc = api_error(core.patch_namespaced_config_map, "c", "default", {"data": {"k": "w"}})
    assert exc.status == 422 and exc.status_body["reason"] == "Invalid"
    assert exc.status_body["message"] == (
        'ConfigMap "c" is invalid: data: Forbidden: field is immutable when `immutable` is set'
    )
    assert exc.status_body["details"]["causes"] == [
        {
            "reason": "FieldValueForbidden",
            "field": "data",
            "message": "Forbidden: field is immutable when `immutable` is set",
        }
    ]
    exc = api_error(
        core.replace_namespaced_config_map, "c", "default", {"metadata": {"name": "c"}, "data": {"k": "v"}}
    )  # drops immutable
    assert exc.status == 422 and "immutable: Forbidden" in exc.status_body["message"]
    assert emu.get("configmaps", "default", "c")["data"] == {"k": "v"}


def test_immutable_configmap_metadata_may_still_change_and_delete_works(kube_clients):
    emu, core, _ = kube_clients
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"k": "v"}, "immutable": True})
    out = core.patch_namespaced_config_map("c", "default", {"metadata": {"annotations": {"scrubbed": "no"}}})
    assert out.metadata.annotations == {"scrubbed": "no"}
    core.delete_namespaced_config_map("c", "default")
    assert emu.get("configmaps", "default", "c") is None


def test_immutable_secret_rejects_data_and_string_data_changes(kube_clients):
    _, core, _ = kube_clients
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}, "data": {"k": _b64("v")}, "immutable": True})
    assert api_error(core.patch_namespaced_secret, "s", "default", {"stringData": {"k": "w"}}).status == 422
    assert api_error(core.patch_namespaced_secret, "s", "default", {"immutable": False}).status == 422
    assert api_error(core.patch_namespaced_secret, "s", "default", {"data": {"new": _b64("x")}}).status == 422


def test_secret_string_data_is_merged_into_data_as_base64_and_dropped(kube_clients):
    emu, core, _ = kube_clients
    s = core.create_namespaced_secret(
        "default", {"metadata": {"name": "s"}, "data": {"a": _b64("1")}, "stringData": {"b": "two", "a": "one"}}
    )
    assert s.data == {"a": _b64("one"), "b": _b64("two")}
    assert s.string_data is None
    stored = emu.get("secrets", "default", "s")
    assert "stringData" not in stored and stored["type"] == "Opaque"
    out = core.patch_namespaced_secret("s", "default", {"stringData": {"c": "3"}})
    assert out.data == {"a": _b64("one"), "b": _b64("two"), "c": _b64("3")}


def test_secret_type_is_immutable(kube_clients):
    _, core, _ = kube_clients
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}, "type": "Opaque"})
    exc = api_error(core.patch_namespaced_secret, "s", "default", {"type": "kubernetes.io/tls"})
    assert exc.status == 422 and "field is immutable" in exc.status_body["message"]


def test_secret_data_must_be_base64(kube_clients):
    _, core, _ = kube_clients
    exc = api_error(core.create_namespaced_secret, "default", {"metadata": {"name": "s"}, "data": {"k": "not b64!"}})
    assert exc.status == 400


def test_invalid_config_keys_and_data_binary_overlap_are_422(kube_clients):
    _, core, _ = kube_clients
    exc = api_error(core.create_namespaced_config_map, "default", {"metadata": {"name": "c"}, "data": {"bad key": "v"}})
    assert exc.status == 422 and exc.status_body["details"]["causes"][0]["field"] == "data[bad key]"
    exc = api_error(
        core.create_namespaced_config_map,
        "default",
        {"metadata": {"name": "c"}, "data": {"k": "v"}, "binaryData": {"k": _b64("v")}},
    )
    assert exc.status == 422


def test_configmap_over_one_mebibyte_is_422(kube_clients):
    _, core, _ = kube_clients
    exc = api_error(
        core.create_namespaced_config_map,
        "default",
        {"metadata": {"name": "c"}, "data": {"k": "x" * (1024 * 1024 + 1)}},
    )
    assert exc.status == 422 and "Too long" in exc.status_body["message"]


def test_typed_secrets_need_their_keys(kube_clients):
    _, core, _ = kube_clients
    exc = api_error(
        core.create_namespaced_secret,
        "default",
        {"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x"}},
    )
    assert exc.status == 422 and exc.status_body["details"]["causes"][0]["field"] == "data[tls.key]"
    core.create_namespaced_secret(
        "default",
        {"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x", "tls.key": "y"}},
    )
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "b"}, "type": "kubernetes.io/basic-auth", "stringData": {"password": "p"}}
    )
    core.create_namespaced_secret(
        "kube-system",
        {
            "metadata": {"name": "bootstrap-token-abcdef"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {"token-id": "abcdef"},
        },
    )  # no apiserver rules
