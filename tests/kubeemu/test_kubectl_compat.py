"""kubectl (a second, Go-based client) against the emulator: discovery, apply, drain. Skipped without kubectl."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


@pytest.fixture
def kubectl(kube_emulator, tmp_path):
    kc = kube_emulator.write_kubeconfig(tmp_path / "kc")

    def run(*args, stdin=None):
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kc), *args], capture_output=True, text=True, timeout=60, input=stdin
        )

    return run


def test_kubectl_get_apply_and_delete(kubectl, kube_emulator):
    assert "kube-system" in kubectl("get", "ns").stdout
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  k: v\n"
    assert kubectl("apply", "--validate=false", "-f", "-", stdin=manifest).returncode == 0
    assert kubectl("apply", "--validate=false", "-f", "-", stdin=manifest.replace("k: v", "k: w")).returncode == 0
    assert kube_emulator.get("cm", "default", "cfg")["data"] == {"k": "w"}
    assert kubectl("delete", "cm", "cfg").returncode == 0
    assert kube_emulator.get("cm", "default", "cfg") is None


def test_kubectl_drain_cordons_and_evicts_all_but_daemonset_pods(kubectl, kube_emulator):
    emu = kube_emulator
    emu.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    ds = emu.seed(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "falco", "namespace": "falco"},
            "spec": {
                "selector": {"matchLabels": {"a": "f"}},
                "template": {"metadata": {"labels": {"a": "f"}}, "spec": {"containers": [{"name": "f", "image": "f"}]}},
            },
        }
    )
    rs = emu.seed(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"a": "w"}},
                "template": {"metadata": {"labels": {"a": "w"}}, "spec": {"containers": [{"name": "w", "image": "w"}]}},
            },
        }
    )
    for name, ns, owner, kind in (("falco-x", "falco", ds, "DaemonSet"), ("web-x", "default", rs, "ReplicaSet")):
        emu.seed(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": kind,
                            "name": owner["metadata"]["name"],
                            "uid": owner["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running"},
            }
        )
    out = kubectl("drain", "n1", "--ignore-daemonsets", "--timeout=20s")
    assert out.returncode == 0, out.stderr
    assert emu.get("nodes", None, "n1")["spec"]["unschedulable"] is True
    assert emu.get("pods", "default", "web-x") is None
    assert emu.get("pods", "falco", "falco-x") is not None
    assert ("create", "/api/v1/namespaces/default/pods/web-x/eviction", 201) in emu.requests


def test_kubectl_create_generators_send_protobuf_that_is_decoded(kubectl, kube_emulator):
    out = kubectl(
        "create",
        "configmap",
        "aws-creds",
        "--from-literal=aws_access_key_id=AKIA1234",
        "--from-literal=region=eu-west-1",
    )
    assert out.returncode == 0, out.stderr
    assert kube_emulator.get("cm", "default", "aws-creds")["data"] == {
        "aws_access_key_id": "AKIA1234",
        "region": "eu-west-1",
    }
    assert kubectl("create", "secret", "generic", "s", "--from-literal=password=p@ss").returncode == 0
    assert kube_emulator.get("secrets", "default", "s")["data"] == {"password": "cEBzcw=="}
    assert kubectl("create", "namespace", "shop").returncode == 0
    assert kubectl("create", "serviceaccount", "bot", "-n", "shop").returncode == 0
    assert kube_emulator.get("sa", "shop", "bot") is not None
    refused = kubectl("create", "deployment", "web", "--image=nginx")
    assert refused.returncode != 0 and "not decoded by the emulator" in refused.stderr


@pytest.mark.parametrize("tls", [True, False])
def test_kubectl_sends_its_token_only_to_the_https_api(tmp_path, tls):
    """Issue 15 §2: over http kubectl (client-go) sends no credentials, so its requests were audited as
    system:anonymous; the emulator serving https with its CA in the kubeconfig gets the admin's token."""
    from local import localca
    from local.kubeemu import KubeEmulator

    if tls and not localca.available():
        pytest.skip("openssl is not on PATH")
    cert = localca.LocalCA(tmp_path / "ca").issue("kubeemu") if tls else None
    with KubeEmulator(tls=cert) as emu:
        emu.enable_audit()
        kc = emu.write_kubeconfig(tmp_path / "kc")
        assert emu.url.startswith("https://" if tls else "http://")
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(kc), "create", "configmap", "aws-creds", "--from-literal", "k=v"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        users = {e["user"]["username"] for e in emu.audit_events if e["verb"] == "create"}
    assert users == ({"system:admin"} if tls else {"system:anonymous"})
