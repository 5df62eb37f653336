"""kube.connection(): the credentials kubeapi calls with, built without the kubernetes package for what bootstrap
writes, in-cluster config and every other static kubeconfig, by the package for the rest (exec plugins, auth
providers, proxies). Served by a loopback TLS server with its own test CA.

The same on the real kube-apiserver v1.24 (its CA, tls-server-name, client certificates of its CA and of another,
the ServiceAccount kubeconfigs bootstrap writes): test_kubeapi_cluster.py and node-enroll's cluster suites
(tests/node_enroll/test_real_rbac.py, test_real_cluster.py).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from edgeguard import kube, kubeapi
from local import localca

from . import certs

NAME = "kube.edgeguard.test"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA and another (local.localca), the server's certificate for 127.0.0.1 and NAME, a client's."""
    if not localca.available():
        pytest.skip("needs openssl to make a test CA")
    root = tmp_path_factory.mktemp("pki")
    ca, other = localca.LocalCA(root / "ca"), localca.LocalCA(root / "other-ca")
    server = ca.issue("server", dns=(NAME,))
    crt, key = certs.client_cert(root, "client", ca.dir)
    return SimpleNamespace(ca=ca.cert, other_ca=other.cert, server=server, client_crt=crt, client_key=key)


class Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        self.seen.append(
            {"path": self.path, "authorization": self.headers.get("Authorization"), "client_cert": bool(peer)}
        )
        body = json.dumps({"kind": "ConfigMap", "metadata": {"name": "x"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(pki):
    """factory(tls=True, require_client_cert=False) -> the server's URL; requests land in Recorder.seen."""
    servers = []
    Recorder.seen = []

    def start(tls: bool = True, require_client_cert: bool = False) -> str:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(pki.server.cert, pki.server.key)
            if require_client_cert:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(pki.ca)
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"{'https' if tls else 'http'}://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def secret(tmp_path, monkeypatch):
    """write(doc, name="kc") -> name: the kubeconfig secret, newer than the one it replaces."""
    d = tmp_path / "secrets"
    d.mkdir()
    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(d))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube.reset()

    def write(doc, name="kc"):
        p = d / name
        p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
        later = time.time_ns() + 10**9 * (len(list(d.iterdir())) + 1)
        os.utime(p, ns=(later, later))
        return name

    yield write
    kube.reset()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ca_data(ca: Path) -> dict:
    return {"certificate-authority-data": b64(ca.read_bytes())}


def kubeconfig(server: str, cluster: dict | None = None, user: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, **(cluster or {})}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": "sa-token-1"}}],
    }


def get(name: str = "kc") -> dict:
    return kubeapi.Client(kube.connection(name), timeout=5).get("ConfigMap", "demo", "x")


def test_token_and_ca_data_as_bootstrap_writes_them(pki, server, secret):
    name = secret(kubeconfig(server(), ca_data(pki.ca)))
    assert get(name)["metadata"]["name"] == "x"
    assert Recorder.seen == [
        {"path": "/api/v1/namespaces/demo/configmaps/x", "authorization": "Bearer sa-token-1", "client_cert": False}
    ]


@pytest.mark.parametrize("tls", [True, False])
def test_the_kubernetes_package_is_never_imported(pki, server, tmp_path, tls):
    """The point of building it here (issue 12 §2): bootstrap's kind of kubeconfig loads no kubernetes module."""
    d = tmp_path / "s"
    d.mkdir()
    (d / "kc").write_text(yaml.safe_dump(kubeconfig(server(tls=tls), ca_data(pki.ca) if tls else None)))
    code = (
        "import sys; from edgeguard import kube, kubeapi; "
        "kubeapi.Client(kube.connection('kc')).get('ConfigMap', 'demo', 'x'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EDGEGUARD_SECRETS_DIR": str(d)},
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]" and [s["authorization"] for s in Recorder.seen] == ["Bearer sa-token-1"]


def test_a_server_the_ca_did_not_sign_is_refused(pki, server, secret):
    name = secret(kubeconfig(server(), ca_data(pki.other_ca)))
    with pytest.raises(kubeapi.KubeError) as err:
        get(name)
    assert err.value.status is None and Recorder.seen == []


def test_ca_file_and_tls_server_name(pki, server, secret):
    url = server().replace("127.0.0.1", "localhost")  # not a name in the certificate...
    name = secret(kubeconfig(url, {"certificate-authority": str(pki.ca)}))
    with pytest.raises(kubeapi.KubeError):
        get(name)
    # ...but tls-server-name is, as kubectl would check it; and a wrong one is refused
    secret(kubeconfig(url, {"certificate-authority": str(pki.ca), "tls-server-name": NAME}))
    assert get(name)["metadata"]["name"] == "x"
    secret(kubeconfig(server(), {"certificate-authority": str(pki.ca), "tls-server-name": "other.test"}))
    with pytest.raises(kubeapi.KubeError):
        get(name)
    assert len(Recorder.seen) == 1


@pytest.mark.parametrize("as_data", [True, False])
def test_client_certificate_and_key(pki, server, secret, as_data):
    url = server(require_client_cert=True)
    if as_data:
        user = certs.as_user_data(pki.client_crt, pki.client_key)
    else:
        user = {"client-certificate": str(pki.client_crt), "client-key": str(pki.client_key)}
    name = secret(kubeconfig(url, ca_data(pki.ca), user))
    assert get(name)["metadata"]["name"] == "x"
    assert Recorder.seen[-1]["client_cert"] is True and Recorder.seen[-1]["authorization"] is None


def test_a_changed_secret_rebuilds_the_connection(pki, server, secret):
    url = server()
    name = secret(kubeconfig(url, ca_data(pki.ca), {"token": "first-token-xyz"}))
    get(name)
    first = kube.connection(name)
    assert kube.connection(name) is first
    secret(kubeconfig(url, ca_data(pki.ca), {"token": "second-token-xyz"}))
    get(name)
    assert kube.connection(name) is not first
    assert [s["authorization"] for s in Recorder.seen] == ["Bearer first-token-xyz", "Bearer second-token-xyz"]


def test_a_token_file_is_read_again_when_it_rotates_and_basic_auth_is_sent(pki, server, secret, tmp_path):
    url = server()
    token = tmp_path / "projected-token"
    token.write_text("projected-one\n")
    name = secret(kubeconfig(url, ca_data(pki.ca), {"tokenFile": str(token)}))
    get(name)
    token.write_text("projected-two\n")
    os.utime(token, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    get(name)
    basic = secret(kubeconfig(url, ca_data(pki.ca), {"username": "admin", "password": "pw-123456"}), name="basic")
    get(basic)
    assert [s["authorization"] for s in Recorder.seen] == [
        "Bearer projected-one",
        "Bearer projected-two",
        "Basic YWRtaW46cHctMTIzNDU2",
    ]


def test_in_cluster_config_reads_the_mounted_service_account_and_its_rotated_token(
    pki, server, secret, tmp_path, monkeypatch
):
    url = server()
    sa = tmp_path / "sa"
    sa.mkdir()
    shutil.copy(pki.ca, sa / "ca.crt")
    (sa / "token").write_text("pod-token-1")
    host, port = url.removeprefix("https://").split(":")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", str(sa))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    conn = kube.connection("absent-kubeconfig")
    assert kubeapi.Client(conn).get("ConfigMap", "demo", "x")["metadata"]["name"] == "x"
    (sa / "token").write_text("pod-token-2")
    os.utime(sa / "token", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    kubeapi.Client(conn).get("ConfigMap", "demo", "x")
    assert [s["authorization"] for s in Recorder.seen] == ["Bearer pod-token-1", "Bearer pod-token-2"]
    kube.reset()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")  # an IPv6 service address is bracketed
    assert kube.connection("absent-kubeconfig").host == f"https://[fd00::1]:{port}"
    kube.reset()
    (sa / "token").unlink()
    with pytest.raises(kube.KubeConfigError, match=r"in-cluster Kubernetes config failed \(FileNotFoundError\)"):
        kube.connection("absent-kubeconfig")


def test_no_secret_and_not_in_cluster_names_the_secret(secret):
    with pytest.raises(kube.KubeConfigError, match="no Kubernetes credentials: mount the OpenFaaS secret 'kc'"):
        kube.connection("kc")


H = "https://127.0.0.1:1"


@pytest.mark.parametrize(
    "doc,words",
    [
        ("clusters: [", "not valid YAML"),
        ("just a string", "not a kubeconfig"),
        (dict(kubeconfig(H), **{"current-context": None}), "not a usable kubeconfig (no current-context)"),
        (dict(kubeconfig(H), **{"current-context": "nope"}), "no context named by the current context"),
        (
            dict(kubeconfig(H), contexts=[{"name": "c", "context": {"cluster": "other", "user": "u"}}]),
            "no cluster named by the current context",
        ),
        (kubeconfig(H, {"certificate-authority-data": "!!not base64!!"}), "certificate-authority-data is not base64"),
        (kubeconfig(H, {"certificate-authority-data": "bm90IGEgY2VydA=="}), "SSLError"),
        (kubeconfig(H, {"certificate-authority": "/nonexistent/ca.crt"}), "FileNotFoundError"),
        (kubeconfig(H, None, {"token": "sa-token-1", "client-certificate-data": "Y2VydA=="}), "needs both"),
        (kubeconfig(H, None, {"token": "sa-token-1", "client-key-data": "%%%"}), "client-key-data is not base64"),
        (kubeconfig("127.0.0.1:1"), "no http(s) server"),
        (kubeconfig(H, {"insecure-skip-tls-verify": True}), "insecure-skip-tls-verify"),
    ],
)
def test_unusable_kubeconfigs_are_a_named_error_without_content(secret, doc, words):
    name = secret(doc)
    with pytest.raises(kube.KubeConfigError) as err:
        kube.connection(name)
    assert words in str(err.value) and f"'{name}'" in str(err.value) and "sa-token" not in str(err.value)


@pytest.mark.parametrize(
    "user,cluster",
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "get-token"}}, None),
        ({"auth-provider": {"name": "oidc"}}, None),
        (None, {"proxy-url": "http://127.0.0.1:3128"}),
    ],
)
def test_plugins_and_proxies_are_left_to_the_kubernetes_package(secret, monkeypatch, user, cluster):
    handed = []
    monkeypatch.setattr(kube, "_by_the_package", lambda name: handed.append(name) or "the package's connection")
    name = secret(kubeconfig(H, cluster, user))
    assert kube.connection(name) == "the package's connection" and handed == [name]


def test_an_exec_plugin_runs_through_the_kubernetes_package(server, secret, tmp_path):
    url = server(tls=False)
    plugin = tmp_path / "plugin"
    plugin.write_text(
        "#!/bin/sh\necho '"
        + json.dumps(
            {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "kind": "ExecCredential",
                "status": {"token": "exec-token-123"},
            }
        )
        + "'\n"
    )
    plugin.chmod(0o755)
    name = secret(
        kubeconfig(url, None, {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin)}})
    )
    get(name)
    assert [s["authorization"] for s in Recorder.seen] == ["Bearer exec-token-123"]
    assert name in kube._clients  # the package's client made it
