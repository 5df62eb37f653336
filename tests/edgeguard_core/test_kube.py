"""Kubernetes credentials from an OpenFaaS secret: refused when unsafe, rebuilt when rotated, never leaked."""

import io
import json
import os
import time

import pytest
import yaml

from edgeguard import kube, log


def kubeconfig(server="http://127.0.0.1:1", token="sa-token-abcdef", **cluster):
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }


@pytest.fixture
def secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube.reset()

    def write(doc):
        p = tmp_path / "fn-kubeconfig"
        p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
        later = time.time_ns() + 10**9 * (len(list(tmp_path.iterdir())) + int(time.time() % 7) + 1)
        os.utime(p, ns=(later, later))

    yield write
    kube.reset()


def test_client_comes_from_the_secret_and_is_cached(secrets):
    secrets(kubeconfig())
    c1 = kube.api_client("fn-kubeconfig")
    assert c1.configuration.host == "http://127.0.0.1:1"
    assert kube.api_client("fn-kubeconfig") is c1


def test_rotated_credentials_rebuild_the_client(secrets):
    secrets(kubeconfig(token="first-token-xyz"))
    c1 = kube.api_client("fn-kubeconfig")
    secrets(kubeconfig(token="second-token-xyz"))
    c2 = kube.api_client("fn-kubeconfig")
    assert c2 is not c1
    assert c2.configuration.api_key["BearerToken"].endswith("second-token-xyz")


@pytest.mark.parametrize(
    "doc,words",
    [
        ("clusters: [", "not valid YAML"),
        ("just a string", "not a kubeconfig"),
        ({"clusters": [], "users": []}, "not a usable kubeconfig"),
        (kubeconfig(server="https://127.0.0.1:1", **{"certificate-authority-data": "!!not base64!!"}), "not a usable"),
        (kubeconfig(**{"insecure-skip-tls-verify": True}), "insecure-skip-tls-verify"),
    ],
)
def test_unusable_kubeconfigs_raise_a_named_error_without_content(secrets, doc, words):
    secrets(doc)
    with pytest.raises(kube.KubeConfigError, match=words) as e:
        kube.api_client("fn-kubeconfig")
    assert "fn-kubeconfig" in str(e.value) and "sa-token" not in str(e.value)


def test_no_secret_and_not_in_cluster_is_a_clear_error(secrets):
    with pytest.raises(kube.KubeConfigError, match="no Kubernetes credentials"):
        kube.api_client("fn-kubeconfig")


def test_kubeconfig_credentials_are_redacted_from_logs(secrets, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(log, "_stream", buf)
    secrets(kubeconfig(token="leaky-sa-token-123456"))
    kube.api_client("fn-kubeconfig")
    log.error("k8s.failed", detail="401 for token leaky-sa-token-123456")
    assert "leaky-sa-token-123456" not in buf.getvalue()
    assert json.loads(buf.getvalue())["detail"] == "401 for token [redacted]"
