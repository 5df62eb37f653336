"""edgeguard.kubeconn: kubeconfig and in-cluster credentials without the kubernetes package, on a loopback TLS server.

The same connection against the real kube-apiserver v1.24 (its ServiceAccount kubeconfig from bootstrap, and the
admin's) is exercised by node-enroll's cluster suites (tests/node_enroll/test_real_rbac.py, test_real_cluster.py).
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

import pytest
import yaml

from edgeguard import kube, kubeapi, kubeconn

NAME = "kube.edgeguard.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("needs openssl to make a test CA")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-new", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj",
            f"/CN={ca}", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    for leaf, ext in (("server", f"subjectAltName=DNS:{NAME},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        run("req", "-new", *ec, "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr", "-subj", f"/CN={leaf}")
        (d / f"{leaf}.cnf").write_text(ext)
        run("x509", "-req", "-in", f"{leaf}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "9", "-days",
            "2", "-extfile", f"{leaf}.cnf", "-out", f"{leaf}.crt")
    return d


class Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        self.seen.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                          "client_cert": bool(peer)})
        body = json.dumps({"kind": "ConfigMap", "metadata": {"name": "x"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def tls_server(pki):
    """factory(require_client_cert=False) -> https://127.0.0.1:<port>; requests land in Recorder.seen."""
    servers = []
    Recorder.seen = []

    def start(require_client_cert: bool = False) -> str:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(pki / "ca.crt")
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"https://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def secrets_dir(tmp_path, monkeypatch):
    d = tmp_path / "secrets"
    d.mkdir()
    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(d))
    kubeconn.reset()
    yield d
    kubeconn.reset()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(server: str, cluster: dict | None = None, user: dict | None = None) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, **(cluster or {})}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": "sa-token-1"}}],
    })


def get(name: str = "kc") -> dict:
    return kubeapi.Client(kubeconn.connection(name), timeout=5).get("ConfigMap", "demo", "x")


def test_token_and_ca_data_as_bootstrap_writes_them(pki, tls_server, secrets_dir):
    url = tls_server()
    (secrets_dir / "kc").write_text(kubeconfig(url, {"certificate-authority-data": b64((pki / "ca.crt").read_bytes())}))
    assert get()["metadata"]["name"] == "x"
    assert Recorder.seen[-1] == {"path": "/api/v1/namespaces/demo/configmaps/x",
                                 "authorization": "Bearer sa-token-1", "client_cert": False}


def test_a_server_the_ca_did_not_sign_is_refused(pki, tls_server, secrets_dir):
    url = tls_server()
    (secrets_dir / "kc").write_text(kubeconfig(url, {"certificate-authority-data":
                                                     b64((pki / "other-ca.crt").read_bytes())}))
    with pytest.raises(kubeapi.KubeError) as err:
        get()
    assert err.value.status is None and Recorder.seen == []


def test_ca_file_and_tls_server_name(pki, tls_server, secrets_dir):
    url = tls_server().replace("127.0.0.1", "localhost")  # not a name in the certificate...
    (secrets_dir / "kc").write_text(kubeconfig(url, {"certificate-authority": str(pki / "ca.crt")}))
    with pytest.raises(kubeapi.KubeError):
        get()
    kubeconn.reset()
    # ...but tls-server-name is, as kubectl would check it
    (secrets_dir / "kc").write_text(kubeconfig(url, {"certificate-authority": str(pki / "ca.crt"),
                                                     "tls-server-name": NAME}))
    assert get()["metadata"]["name"] == "x"


@pytest.mark.parametrize("as_data", [True, False])
def test_client_certificate_and_key(pki, tls_server, secrets_dir, as_data):
    url = tls_server(require_client_cert=True)
    if as_data:
        user = {"client-certificate-data": b64((pki / "client.crt").read_bytes()),
                "client-key-data": b64((pki / "client.key").read_bytes())}
    else:
        user = {"client-certificate": str(pki / "client.crt"), "client-key": str(pki / "client.key")}
    (secrets_dir / "kc").write_text(kubeconfig(url, {"certificate-authority-data": b64((pki / "ca.crt").read_bytes())},
                                               user))
    assert get()["metadata"]["name"] == "x"
    assert Recorder.seen[-1]["client_cert"] is True and Recorder.seen[-1]["authorization"] is None


def test_token_file_is_re_read_when_it_rotates(pki, tls_server, secrets_dir, tmp_path):
    url = tls_server()
    token = tmp_path / "token"
    token.write_text("first-token\n")
    (secrets_dir / "kc").write_text(kubeconfig(url, {"certificate-authority-data": b64((pki / "ca.crt").read_bytes())},
                                               {"tokenFile": str(token)}))
    get()
    token.write_text("second-token\n")
    os.utime(token, ns=(time.time_ns(), time.time_ns() + 10**9))
    get()
    assert [s["authorization"] for s in Recorder.seen] == ["Bearer first-token", "Bearer second-token"]


def test_in_cluster_credentials_when_no_kubeconfig_is_mounted(pki, tls_server, secrets_dir, tmp_path, monkeypatch):
    url = tls_server()
    sa = tmp_path / "sa"
    sa.mkdir()
    shutil.copy(pki / "ca.crt", sa / "ca.crt")
    (sa / "token").write_text("projected-1")
    host, port = url.removeprefix("https://").split(":")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    conn = kubeconn.connection("absent", sa_dir=sa)
    assert kubeapi.Client(conn).get("ConfigMap", "demo", "x")["metadata"]["name"] == "x"
    (sa / "token").write_text("projected-2")
    os.utime(sa / "token", ns=(time.time_ns(), time.time_ns() + 10**9))
    kubeapi.Client(conn).get("ConfigMap", "demo", "x")
    assert [s["authorization"] for s in Recorder.seen] == ["Bearer projected-1", "Bearer projected-2"]


def test_no_credentials_at_all_names_the_secret(secrets_dir, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kube.KubeConfigError, match="mount the OpenFaaS secret 'kc'"):
        kubeconn.connection("kc")


@pytest.mark.parametrize("doc,fragment", [
    ({"current-context": "nope"}, "no current-context"),
    ({"contexts": [{"name": "c", "context": {"cluster": "other", "user": "u"}}]}, "does not define"),
    ({"clusters": [{"name": "k", "cluster": {"server": "https://h", "insecure-skip-tls-verify": True}}]},
     "insecure-skip-tls-verify"),
    ({"clusters": [{"name": "k", "cluster": {"server": "https://h", "certificate-authority-data": "%%%"}}]},
     "not a usable kubeconfig"),
])
def test_unusable_kubeconfigs_are_refused_naming_the_secret_only(secrets_dir, doc, fragment):
    base = yaml.safe_load(kubeconfig("https://h"))
    base["users"][0]["user"]["token"] = "never-in-a-message"
    base.update(doc)
    (secrets_dir / "kc").write_text(yaml.safe_dump(base))
    with pytest.raises(kube.KubeConfigError) as err:
        kubeconn.connection("kc")
    assert fragment in str(err.value) and "never-in-a-message" not in str(err.value)


@pytest.mark.parametrize("user", [
    {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "get-token"}},
    {"auth-provider": {"name": "oidc"}},
    {"username": "a", "password": "b"},
])
def test_plugin_and_other_kubeconfigs_are_left_to_the_kubernetes_package(secrets_dir, monkeypatch, user):
    handed = []
    monkeypatch.setattr(kube, "connection", lambda name: handed.append(name) or "the package's connection")
    (secrets_dir / "kc").write_text(kubeconfig("https://h", user=user))
    assert kubeconn.connection("kc") == "the package's connection" and handed == ["kc"]


def test_a_changed_secret_rebuilds_the_connection(pki, tls_server, secrets_dir):
    url = tls_server()
    ca = {"certificate-authority-data": b64((pki / "ca.crt").read_bytes())}
    (secrets_dir / "kc").write_text(kubeconfig(url, ca, {"token": "old"}))
    first = kubeconn.connection("kc")
    assert kubeconn.connection("kc") is first
    (secrets_dir / "kc").write_text(kubeconfig(url, ca, {"token": "new"}))
    os.utime(secrets_dir / "kc", ns=(time.time_ns(), time.time_ns() + 10**9))
    get()
    assert Recorder.seen[-1]["authorization"] == "Bearer new"


def test_the_kubernetes_package_is_never_imported(pki, tls_server, tmp_path):
    """The point of the module (issue 12 §2): a call with bootstrap's kind of kubeconfig loads no kubernetes module."""
    url = tls_server()
    d = tmp_path / "s"
    d.mkdir()
    (d / "kc").write_text(kubeconfig(url, {"certificate-authority-data": b64((pki / "ca.crt").read_bytes())}))
    code = ("import sys; from edgeguard import kubeapi, kubeconn; "
            "kubeapi.Client(kubeconn.connection('kc')).get('ConfigMap', 'demo', 'x'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "EDGEGUARD_SECRETS_DIR": str(d)}, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
