"""The direct (no HTTP) accessors, scale subresource, server-side apply, events."""

from __future__ import annotations

import kubernetes

from tests.kubeemu.helpers import api_error, deployment


def test_get_and_list_accept_kind_plural_short_and_group_qualified_names(kube_emulator):
    kube_emulator.seed(deployment("d") | {"metadata": {"name": "d", "namespace": "default"}})
    for ref in ("deployments", "Deployment", "deploy", "deployments.apps", "apps/v1/deployments"):
        assert kube_emulator.get(ref, "default", "d")["metadata"]["name"] == "d", ref
    assert [o["metadata"]["name"] for o in kube_emulator.list("Namespace")] == [
        "default",
        "kube-node-lease",
        "kube-public",
        "kube-system",
    ]
    assert kube_emulator.get("configmaps", "default", "missing") is None


def test_get_returns_a_copy(kube_emulator):
    kube_emulator.seed(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v"}}
    )
    kube_emulator.get("configmaps", "default", "c")["data"]["k"] = "changed"
    assert kube_emulator.get("configmaps", "default", "c")["data"] == {"k": "v"}


def test_scale_subresource_reads_and_writes_replicas(kube_clients):
    emu, _, apps = kube_clients
    apps.create_namespaced_deployment("default", deployment("web", replicas=2))
    assert apps.read_namespaced_deployment_scale("web", "default").spec.replicas == 2
    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 0}})
    d = emu.get("deployments", "default", "web")
    assert d["spec"]["replicas"] == 0 and d["metadata"]["generation"] == 2


def test_server_side_apply_creates_then_merges(kube_emulator):
    import requests

    url = f"{kube_emulator.url}/api/v1/namespaces/default/configmaps/applied?fieldManager=t"
    hdr = {"Content-Type": "application/apply-patch+yaml", "Authorization": "Bearer x"}
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: '1'\n"
    assert requests.patch(url, data=doc, headers=hdr, timeout=5).status_code == 200
    requests.patch(url, data=doc.replace("a: '1'", "b: '2'"), headers=hdr, timeout=5)
    assert kube_emulator.get("configmaps", "default", "applied")["data"] == {"a": "1", "b": "2"}


def test_core_and_events_k8s_io_events_can_be_created_and_listed(kube_emulator):
    client = kube_emulator.api_client()
    core, ev = kubernetes.client.CoreV1Api(client), kubernetes.client.EventsV1Api(client)
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "e1"},
            "reason": "Scrubbed",
            "type": "Normal",
            "involvedObject": {"kind": "ConfigMap", "name": "c", "namespace": "default"},
        },
    )
    ev.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "e2"},
            "reason": "Scrubbed",
            "action": "Move",
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "edgeguard",
            "reportingInstance": "x",
            "regarding": {"kind": "ConfigMap", "name": "c"},
            "type": "Normal",
        },
    )
    assert [
        e.reason
        for e in core.list_namespaced_event(
            "default", field_selector="involvedObject.kind=ConfigMap,involvedObject.name=c"
        ).items
    ] == ["Scrubbed"]
    assert [e.metadata.name for e in ev.list_namespaced_event("default", field_selector="reason=Scrubbed").items] == [
        "e2"
    ]
    client.close()


def test_kind_mismatch_in_body_is_400(kube_clients):
    _, core, _ = kube_clients
    exc = api_error(
        core.create_namespaced_config_map, "default", {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "x"}}
    )
    assert exc.status == 400


def test_unsupported_content_type_is_415(kube_emulator):
    import requests

    r = requests.post(
        f"{kube_emulator.url}/api/v1/namespaces/default/configmaps",
        data=b"x",
        headers={"Content-Type": "text/plain"},
        timeout=5,
    )
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"


def test_service_account_token_secret_is_filled_and_authenticates_as_the_service_account(kube_emulator):
    import base64

    from local.kubeemu import KubeEmulator

    with KubeEmulator(rbac=True, strict_auth=True) as emu:
        admin = emu.api_client()
        core = kubernetes.client.CoreV1Api(admin)
        core.create_namespaced_service_account("default", {"metadata": {"name": "scrubber"}})
        core.create_namespaced_secret(
            "default",
            {
                "metadata": {
                    "name": "scrubber-token",
                    "annotations": {"kubernetes.io/service-account.name": "scrubber"},
                },
                "type": "kubernetes.io/service-account-token",
            },
        )
        secret = core.read_namespaced_secret("scrubber-token", "default")
        assert set(secret.data) == {"token", "ca.crt", "namespace"}
        assert base64.b64decode(secret.data["namespace"]) == b"default"
        token = base64.b64decode(secret.data["token"]).decode()
        as_sa = kubernetes.client.CoreV1Api(emu.api_client(user_token=token))
        exc = api_error(as_sa.list_namespaced_config_map, "default")
        assert exc.status == 403 and "system:serviceaccount:default:scrubber" in exc.status_body["message"]
        missing = api_error(
            core.create_namespaced_secret,
            "default",
            {"metadata": {"name": "bad"}, "type": "kubernetes.io/service-account-token"},
        )
        assert missing.status == 422
        admin.close()


def test_token_request_mints_a_service_account_token(kube_emulator):
    client = kube_emulator.api_client()
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespaced_service_account("default", {"metadata": {"name": "sa"}})
    tr = core.create_namespaced_service_account_token("sa", "default", {"spec": {"expirationSeconds": 3600}})
    assert tr.status.token and tr.status.expiration_timestamp
    assert api_error(core.create_namespaced_service_account_token, "nope", "default", {"spec": {}}).status == 404
    client.close()


def test_csr_approval_subresource_updates_conditions(kube_emulator):
    client = kube_emulator.api_client()
    certs = kubernetes.client.CertificatesV1Api(client)
    certs.create_certificate_signing_request(
        {
            "metadata": {"name": "node-csr-1"},
            "spec": {
                "request": "LS0t",
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["client auth"],
            },
        }
    )
    csr = kube_emulator.get("certificatesigningrequests", None, "node-csr-1")
    csr["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "EdgeguardEnroll"}]}
    certs.replace_certificate_signing_request_approval("node-csr-1", csr)
    got = certs.read_certificate_signing_request("node-csr-1")
    assert got.status.conditions[0].type == "Approved"
    client.close()


def test_edgeguard_kube_client_reaches_the_emulator_through_a_kubeconfig_secret(kube_emulator, tmp_path, monkeypatch):
    from edgeguard import kube

    kube_emulator.write_kubeconfig(tmp_path / "configmap-secret-scrubber-kubeconfig", user_token="sa-token")
    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(tmp_path))
    kube.reset()
    try:
        client = kube.api_client("configmap-secret-scrubber-kubeconfig")
        kubernetes.client.CoreV1Api(client).create_namespaced_config_map("default", {"metadata": {"name": "via"}})
    finally:
        kube.reset()
    assert kube_emulator.get("configmaps", "default", "via") is not None


def test_custom_resource_definition_makes_its_type_servable(kube_emulator):
    client = kube_emulator.api_client()
    ext = kubernetes.client.ApiextensionsV1Api(client)
    ext.create_custom_resource_definition(
        {
            "metadata": {"name": "rules.falco.example"},
            "spec": {
                "group": "falco.example",
                "scope": "Namespaced",
                "names": {"plural": "rules", "singular": "rule", "kind": "Rule", "shortNames": ["fr"]},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                ],
            },
        }
    )
    crd = ext.read_custom_resource_definition("rules.falco.example")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    custom = kubernetes.client.CustomObjectsApi(client)
    custom.create_namespaced_custom_object(
        "falco.example",
        "v1",
        "default",
        "rules",
        {"apiVersion": "falco.example/v1", "kind": "Rule", "metadata": {"name": "r1"}, "spec": {"x": 1}},
    )
    got = custom.get_namespaced_custom_object("falco.example", "v1", "default", "rules", "r1")
    assert got["metadata"]["generation"] == 1 and got["spec"] == {"x": 1}
    assert kube_emulator.get("fr", "default", "r1") is not None
    groups = {g.name for g in kubernetes.client.ApisApi(client).get_api_versions().groups}
    assert "falco.example" in groups
    client.close()


def test_register_resource_serves_a_custom_type(kube_emulator):
    kube_emulator.register_resource("edgeguard.io", "v1alpha1", "enrollments", "Enrollment", namespaced=False)
    client = kube_emulator.api_client()
    custom = kubernetes.client.CustomObjectsApi(client)
    assert custom.list_cluster_custom_object("edgeguard.io", "v1alpha1", "enrollments")["items"] == []
    custom.create_cluster_custom_object(
        "edgeguard.io",
        "v1alpha1",
        "enrollments",
        {"apiVersion": "edgeguard.io/v1alpha1", "kind": "Enrollment", "metadata": {"name": "n1"}},
    )
    assert kube_emulator.get("enrollments", None, "n1")["metadata"]["uid"]
    client.close()


def test_module_cli_serves_seeded_manifests_until_sigterm(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: seeded, namespace: demo}\n")
    kc = tmp_path / "kc"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.kubeemu", "--kubeconfig", str(kc), str(manifest)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "kubeemu serving" in proc.stdout.readline()
        client = kubernetes.config.new_client_from_config(str(kc))
        assert kubernetes.client.CoreV1Api(client).read_namespaced_config_map("seeded", "demo").metadata.uid
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(10) == 0 and time.monotonic() - t0 < 5
